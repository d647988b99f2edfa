// What the Assistant needs to run, said for the state this server is in: the model it uses
// (editable here), and when nothing can answer, the one step that fixes it, with a link.
import { useState } from 'preact/hooks';
import { api, type Alias, type Provider, type Worker } from '../api';
import { ErrorMessage, Field, Notice, inputValue, useAction, useResource } from '../components';
import { Link } from '../router';

interface State {
  model: string;
  providers: Provider[];
  workers: Worker[];
  aliases: Alias[];
}

/** The fix for "no model is reachable" in this state, in words and a link. */
export function diagnose(s: State): { text: string; href: string; link: string } {
  const enabled = s.providers.filter((p) => p.enabled);
  const online = s.workers.filter((w) => w.status !== 'offline');
  const alias = s.aliases.find((a) => a.name === s.model);
  if (enabled.length === 0 && online.length === 0) {
    return { text: 'Nothing can answer yet: no cloud provider is enabled and no worker is connected. Add a provider (or connect a worker) first.', href: '/settings/providers', link: 'Add a provider' };
  }
  if (alias) {
    if (enabled.length > 0 && !alias.cloud) {
      return { text: `The Assistant uses the alias “${alias.name}”, and it has no cloud model, so your provider is never tried. Give “${alias.name}” a cloud model.`, href: '/settings/models', link: `Set a cloud model for “${alias.name}”` };
    }
    return { text: `The alias “${alias.name}” points at models nothing serves right now. Check its models, or pick another model for the Assistant below.`, href: '/settings/models', link: 'Check the aliases' };
  }
  return { text: `No provider or worker serves the model “${s.model}”. Pick a model that one serves for the Assistant below.`, href: '/settings/models', link: 'See the models' };
}

export function AssistantModel(props: { failed: boolean }) {
  const state = useResource<State>(async () => {
    const [settings, providers, workers, aliases] = await Promise.all([
      api.get<{ admin_agent?: { model?: string } }>('/api/settings'),
      api.list<Provider>('/api/providers'),
      api.list<Worker>('/api/workers'),
      api.list<Alias>('/api/aliases'),
    ]);
    return { model: settings.admin_agent?.model ?? 'auto', providers, workers, aliases };
  }, [props.failed]);
  const [model, setModel] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  const action = useAction();
  const s = state.data;
  const value = model ?? s?.model ?? '';
  const save = (event: Event) => {
    event.preventDefault();
    setSaved(false);
    void action.run(async () => {
      await api.put('/api/settings', { admin_agent: { model: value.trim() } });
      setSaved(true);
      await state.reload();
    });
  };
  const advice = s && props.failed ? diagnose(s) : null;
  return (
    <div class="assistant-model">
      {advice && (
        <div class="message error" role="alert" data-testid="assistant-advice">
          <span>{advice.text}</span> <Link href={advice.href}>{advice.link}</Link>
        </div>
      )}
      <form class="inline-form" onSubmit={save}>
        <Field label="The Assistant's model" hint="An alias (such as auto) or a model a provider or worker serves.">
          {(p) => <input {...p} name="admin_agent_model" required list="assistant-models" autoComplete="off" value={value} onInput={(e) => setModel(inputValue(e))} />}
        </Field>
        <datalist id="assistant-models">
          {s?.aliases.map((a) => (
            <option value={a.name}>alias</option>
          ))}
        </datalist>
        <button type="submit" class="secondary" disabled={action.busy || !s}>
          {action.busy ? 'Saving…' : 'Save model'}
        </button>
      </form>
      {saved && <Notice kind="success">The Assistant now uses “{s?.model}”.</Notice>}
      <ErrorMessage title="The model was not saved." error={action.error} />
      <ErrorMessage error={state.error} />
    </div>
  );
}
