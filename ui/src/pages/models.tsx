// Settings → Models: every model auxot can route to, per tier, and the aliases that map one
// name to a model per tier.
import { useState } from 'preact/hooks';
import { api, describeError, seg, type Alias, type Model, type Provider, type Worker } from '../api';
import {
  DataTable,
  ErrorMessage,
  Field,
  FocusedSection,
  Loading,
  Notice,
  Page,
  Pill,
  Section,
  SlowProgress,
  Time,
  confirmAction,
  inputValue,
  useAction,
  useCancellableAction,
  useResource,
} from '../components';
import { Link } from '../router';

interface Row {
  key: string;
  id: string;
  tier: 'gpu' | 'cli' | 'cloud';
  servedBy: string;
  type: string;
  fetched: string | null;
  active: boolean;
}

interface Catalog {
  models: Model[];
  providers: Provider[];
  workers: Worker[];
}

export function ModelsPage() {
  const catalog = useResource<Catalog>(async () => {
    const [models, providers, workers] = await Promise.all([api.list<Model>('/api/models'), api.list<Provider>('/api/providers'), api.list<Worker>('/api/workers')]);
    return { models, providers, workers };
  });
  const [filter, setFilter] = useState('');
  const [refreshing, setRefreshing] = useState<string | null>(null);
  const [refreshNotice, setRefreshNotice] = useState<string | null>(null);

  const refreshAction = useCancellableAction();
  const refresh = (provider: Provider) => {
    setRefreshing(provider.id);
    setRefreshNotice(null);
    void refreshAction.run(async (signal) => {
      try {
        const view = await api.post<Provider>(`/api/providers/${seg(provider.id)}/refresh-models`, {}, signal);
        setRefreshNotice(`Refreshed “${view.name}”: ${view.model_count} model${view.model_count === 1 ? '' : 's'}.`);
        await catalog.reload();
      } finally {
        setRefreshing(null);
      }
    });
  };

  const data = catalog.data;
  const rows: Row[] = [];
  if (data) {
    for (const w of data.workers) {
      for (const id of w.models) {
        rows.push({ key: `w:${w.id}:${id}`, id, tier: w.kind, servedBy: w.name, type: `${w.kind} worker`, fetched: null, active: w.status !== 'offline' });
      }
    }
    for (const m of data.models) {
      rows.push({ key: `p:${m.provider_id}:${m.id}`, id: m.id, tier: 'cloud', servedBy: m.provider, type: m.provider_type, fetched: m.fetched_at, active: m.provider_enabled });
    }
  }
  const needle = filter.trim().toLowerCase();
  const shown = needle ? rows.filter((r) => r.id.toLowerCase().includes(needle) || r.servedBy.toLowerCase().includes(needle)) : rows;
  const suggestions = Array.from(new Set([...rows.map((r) => r.id), ...(data?.models.map((m) => `${m.provider}/${m.id}`) ?? [])])).sort();

  return (
    <Page title="Models" intro="Everything auxot can route to: models advertised by live workers and the model lists cached from each provider.">
      <Section title="Refresh provider model lists">
        <ErrorMessage title="The models could not be loaded." error={catalog.error} onRetry={() => void catalog.reload()} />
        {refreshNotice && <Notice kind="success">{refreshNotice}</Notice>}
        {refreshAction.busy && (
          <SlowProgress elapsed={refreshAction.elapsed} limit={30} onCancel={refreshAction.cancel} cancelLabel="Cancel the refresh">
            Refreshing the models of “{data?.providers.find((p) => p.id === refreshing)?.name ?? 'the provider'}”…
          </SlowProgress>
        )}
        {refreshAction.cancelled && <Notice>Refresh cancelled; the cached model list is kept.</Notice>}
        <ErrorMessage title="Refreshing the models failed." error={refreshAction.error} />
        {data && data.providers.length === 0 && (
          <p class="empty">
            No provider yet. <Link href="/settings/providers">Add one</Link> to see its models here.
          </p>
        )}
        {data && data.providers.length > 0 && (
          <ul class="refresh-list">
            {data.providers.map((p) => (
              <li key={p.id}>
                <span>
                  <strong>{p.name}</strong>{' '}
                  <span class="muted">
                    {p.model_count} model{p.model_count === 1 ? '' : 's'}, fetched <Time iso={p.models_fetched_at} />
                  </span>
                </span>
                <button type="button" class="secondary small" aria-label={`Refresh models of ${p.name}`} disabled={refreshing !== null} onClick={() => void refresh(p)}>
                  {refreshing === p.id ? 'Refreshing…' : 'Refresh'}
                </button>
              </li>
            ))}
          </ul>
        )}
        <p class="hint">Lists are also re-read every 6 hours, and whenever a key is replaced.</p>
      </Section>

      <Section
        title="All models"
        actions={
          <div class="field inline">
            <label for="model-filter" class="visually-hidden">
              Filter models
            </label>
            <input id="model-filter" type="search" placeholder="Filter models" value={filter} onInput={(e) => setFilter(inputValue(e))} />
          </div>
        }
      >
        {!data && catalog.loading ? (
          <Loading what="models" />
        ) : (
          <DataTable
            caption="All models"
            rows={shown}
            rowKey={(r) => r.key}
            empty={rows.length === 0 ? 'No models yet: add a provider or connect a worker.' : 'No model matches the filter.'}
            columns={[
              { label: 'Model', render: (r) => <code class="break">{r.id}</code> },
              { label: 'Tier', render: (r) => <span class={`tier-badge tier-${r.tier}`}>{r.tier}</span> },
              { label: 'Served by', render: (r) => r.servedBy },
              { label: 'Type', render: (r) => r.type },
              {
                label: 'Fetched',
                render: (r) => (r.tier === 'cloud' ? <Time iso={r.fetched} /> : <span class="muted">live</span>),
              },
              {
                label: 'Status',
                render: (r) => (r.active ? <Pill kind="ok">{r.tier === 'cloud' ? 'enabled' : 'online'}</Pill> : <Pill kind="off">{r.tier === 'cloud' ? 'provider disabled' : 'offline'}</Pill>),
              },
            ]}
          />
        )}
      </Section>

      <AliasesEditor suggestions={suggestions} />
    </Page>
  );
}

function AliasesEditor(props: { suggestions: string[] }) {
  const aliases = useResource(() => api.list<Alias>('/api/aliases'));
  const [editing, setEditing] = useState<Alias | 'new' | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [deleteError, setDeleteError] = useState<string | null>(null);

  const remove = async (alias: Alias) => {
    setNotice(null);
    setDeleteError(null);
    const ok = await confirmAction(`Delete the alias “${alias.name}”?`, <p>Clients that ask for the model “{alias.name}” will get an unknown-model error.</p>, 'Delete alias');
    if (!ok) return;
    try {
      await api.delete(`/api/aliases/${seg(alias.name)}`);
      setNotice(`Deleted the alias “${alias.name}”.`);
      if (editing !== 'new' && editing?.name === alias.name) setEditing(null);
      await aliases.reload();
    } catch (e) {
      setDeleteError(`The alias “${alias.name}” was not deleted: ${describeError(e)}`);
    }
  };

  const model = (value: string | null) => (value ? <code class="break">{value}</code> : <span class="muted">—</span>);

  return (
    <>
      <Section
        title="Aliases"
        actions={
          <button
            type="button"
            class="secondary small"
            onClick={() => {
              setEditing('new');
              setNotice(null);
            }}
          >
            New alias
          </button>
        }
      >
        <p class="hint">
          An alias is one model name that means a different model on each tier, e.g. “coder” → a local Qwen on GPU workers, “sonnet” on CLI workers, “openai/gpt-4o-mini” in the cloud. An empty tier is skipped; for
          “auto” an empty GPU or CLI tier takes whatever a worker serves.
        </p>
        {notice && <Notice kind="success">{notice}</Notice>}
        <ErrorMessage error={deleteError} />
        <ErrorMessage title="The aliases could not be loaded." error={aliases.error} onRetry={() => void aliases.reload()} />
        {!aliases.data && aliases.loading ? (
          <Loading what="aliases" />
        ) : (
          <DataTable
            caption="Aliases"
            rows={aliases.data ?? []}
            rowKey={(a) => a.name}
            empty="No aliases."
            columns={[
              { label: 'Alias', render: (a) => <strong>{a.name}</strong> },
              { label: 'GPU model', render: (a) => (a.name === 'auto' && !a.gpu ? <span class="muted">any</span> : model(a.gpu)) },
              { label: 'CLI model', render: (a) => (a.name === 'auto' && !a.cli ? <span class="muted">any</span> : model(a.cli)) },
              { label: 'Cloud model', render: (a) => model(a.cloud) },
              {
                label: 'Actions',
                class: 'actions',
                render: (a) => (
                  <div class="button-row">
                    <button
                      type="button"
                      class="secondary small"
                      aria-label={`Edit alias ${a.name}`}
                      onClick={() => {
                        setEditing(a);
                        setNotice(null);
                      }}
                    >
                      Edit
                    </button>
                    {a.name !== 'auto' && (
                      <button type="button" class="secondary small danger-text" aria-label={`Delete alias ${a.name}`} onClick={() => void remove(a)}>
                        Delete
                      </button>
                    )}
                  </div>
                ),
              },
            ]}
          />
        )}
      </Section>
      {editing && (
        <AliasForm
          key={editing === 'new' ? 'new' : editing.name}
          alias={editing === 'new' ? null : editing}
          suggestions={props.suggestions}
          onClose={() => setEditing(null)}
          onSaved={(saved, created) => {
            setEditing(null);
            setNotice(created ? `Created the alias “${saved.name}”.` : `Saved the alias “${saved.name}”.`);
            void aliases.reload();
          }}
        />
      )}
    </>
  );
}

function AliasForm(props: { alias: Alias | null; suggestions: string[]; onClose: () => void; onSaved: (alias: Alias, created: boolean) => void }) {
  const [name, setName] = useState(props.alias?.name ?? '');
  const [gpu, setGpu] = useState(props.alias?.gpu ?? '');
  const [cli, setCli] = useState(props.alias?.cli ?? '');
  const [cloud, setCloud] = useState(props.alias?.cloud ?? '');
  const action = useAction();
  const creating = props.alias === null;

  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async () => {
      const body = { name: name.trim(), gpu: gpu.trim() || null, cli: cli.trim() || null, cloud: cloud.trim() || null };
      const saved = creating ? await api.post<Alias>('/api/aliases', body) : await api.put<Alias>(`/api/aliases/${seg(body.name)}`, body);
      props.onSaved(saved, creating);
    });
  };

  return (
    <FocusedSection
      title={creating ? 'New alias' : `Edit the alias “${props.alias?.name}”`}
      actions={
        <button type="button" class="secondary small" onClick={props.onClose}>
          Close
        </button>
      }
    >
      <form class="form-grid" onSubmit={submit}>
        <datalist id="model-suggestions">
          {props.suggestions.map((s) => (
            <option value={s} />
          ))}
        </datalist>
        <Field label="Alias name" hint={creating ? 'Letters, digits, “.”, “_” or “-”. Clients use it as the model.' : 'An alias cannot be renamed.'}>
          {(p) => <input {...p} name="alias_name" required maxLength={64} readOnly={!creating} value={name} onInput={(e) => setName(inputValue(e))} />}
        </Field>
        <Field label="GPU model" optional hint="A model a GPU worker serves.">
          {(p) => <input {...p} name="gpu" list="model-suggestions" autoComplete="off" value={gpu} onInput={(e) => setGpu(inputValue(e))} />}
        </Field>
        <Field label="CLI model" optional hint="A model a CLI worker serves, e.g. claude-code.">
          {(p) => <input {...p} name="cli" list="model-suggestions" autoComplete="off" value={cli} onInput={(e) => setCli(inputValue(e))} />}
        </Field>
        <Field label="Cloud model" optional hint="A provider model, or provider/model to pin one provider.">
          {(p) => <input {...p} name="cloud" list="model-suggestions" autoComplete="off" value={cloud} onInput={(e) => setCloud(inputValue(e))} />}
        </Field>
        <div class="form-footer">
          <ErrorMessage title="The alias was not saved." error={action.error} />
          <div class="button-row">
            <button type="submit" class="primary" disabled={action.busy}>
              {action.busy ? 'Saving…' : creating ? 'Create alias' : 'Save alias'}
            </button>
            <button type="button" class="secondary" onClick={props.onClose}>
              Cancel
            </button>
          </div>
        </div>
      </form>
    </FocusedSection>
  );
}
