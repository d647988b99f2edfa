// Agents: a name clients call as model `agent:NAME`, with its own system prompt, model and
// tier order.
import { useState } from 'preact/hooks';
import { api, describeError, seg, type Agent, type Alias, type Model, type Tier } from '../api';
import {
  DataTable,
  ErrorMessage,
  Field,
  FocusedSection,
  Loading,
  Notice,
  Page,
  Section,
  TierOrderEditor,
  confirmAction,
  formatInt,
  inputValue,
  useAction,
  useResource,
} from '../components';

export function AgentsPage() {
  const agents = useResource(() => api.list<Agent>('/api/agents'));
  const suggestions = useResource(async () => {
    const [aliases, models] = await Promise.all([api.list<Alias>('/api/aliases'), api.list<Model>('/api/models')]);
    return Array.from(new Set([...aliases.map((a) => a.name), ...models.map((m) => m.id), ...models.map((m) => `${m.provider}/${m.id}`)])).sort();
  });
  const [editing, setEditing] = useState<Agent | 'new' | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [deleteError, setDeleteError] = useState<string | null>(null);

  const remove = async (agent: Agent) => {
    setNotice(null);
    setDeleteError(null);
    const ok = await confirmAction(`Delete the agent “${agent.name}”?`, <p>Clients that call the model “agent:{agent.name}” will get an unknown-model error.</p>, 'Delete agent');
    if (!ok) return;
    try {
      await api.delete(`/api/agents/${seg(agent.name)}`);
      if (editing !== 'new' && editing?.name === agent.name) setEditing(null);
      setNotice(`Deleted the agent “${agent.name}”.`);
      await agents.reload();
    } catch (e) {
      setDeleteError(`The agent “${agent.name}” was not deleted: ${describeError(e)}`);
    }
  };

  return (
    <Page
      title="Agents"
      intro={
        <>
          An agent is a named preset: clients call the model <code>agent:NAME</code> and get its system prompt, model and tier order.
        </>
      }
      actions={
        <button
          type="button"
          class="primary"
          onClick={() => {
            setEditing('new');
            setNotice(null);
          }}
        >
          New agent
        </button>
      }
    >
      {notice && <Notice kind="success">{notice}</Notice>}
      <ErrorMessage error={deleteError} />
      {editing && (
        <AgentForm
          key={editing === 'new' ? 'new' : editing.name}
          agent={editing === 'new' ? null : editing}
          suggestions={suggestions.data ?? []}
          suggestionsError={suggestions.error}
          onClose={() => setEditing(null)}
          onSaved={(agent, created) => {
            setEditing(null);
            setNotice(created ? `Created the agent “${agent.name}”. Call it with the model agent:${agent.name}.` : `Saved the agent “${agent.name}”.`);
            void agents.reload();
          }}
        />
      )}
      <Section title="Agents">
        <ErrorMessage title="The agents could not be loaded." error={agents.error} onRetry={() => void agents.reload()} />
        {!agents.data && agents.loading ? (
          <Loading what="agents" />
        ) : (
          <DataTable
            caption="Agents"
            rows={agents.data ?? []}
            rowKey={(a) => a.name}
            empty="No agents yet."
            columns={[
              {
                label: 'Name',
                render: (a) => (
                  <>
                    <strong>{a.name}</strong>
                    <div class="muted small">
                      <code>agent:{a.name}</code>
                    </div>
                  </>
                ),
              },
              { label: 'Model', render: (a) => <code class="break">{a.model}</code> },
              { label: 'Tier order', render: (a) => (a.tier_order?.length ? a.tier_order.join(' → ') : <span class="muted">default</span>) },
              { label: 'Queue timeout', render: (a) => (a.queue_timeout_ms == null ? <span class="muted">default</span> : `${formatInt(a.queue_timeout_ms)} ms`) },
              { label: 'System prompt', render: (a) => (a.system_prompt ? <span class="clamp">{a.system_prompt}</span> : <span class="muted">none</span>) },
              {
                label: 'Actions',
                class: 'actions',
                render: (a) => (
                  <div class="button-row">
                    <button
                      type="button"
                      class="secondary small"
                      aria-label={`Edit agent ${a.name}`}
                      onClick={() => {
                        setEditing(a);
                        setNotice(null);
                      }}
                    >
                      Edit
                    </button>
                    <button type="button" class="secondary small danger-text" aria-label={`Delete agent ${a.name}`} onClick={() => void remove(a)}>
                      Delete
                    </button>
                  </div>
                ),
              },
            ]}
          />
        )}
      </Section>
    </Page>
  );
}

function AgentForm(props: { agent: Agent | null; suggestions: string[]; suggestionsError: unknown; onClose: () => void; onSaved: (agent: Agent, created: boolean) => void }) {
  const creating = props.agent === null;
  const [name, setName] = useState(props.agent?.name ?? '');
  const [model, setModel] = useState(props.agent?.model ?? 'auto');
  const [prompt, setPrompt] = useState(props.agent?.system_prompt ?? '');
  const [order, setOrder] = useState<Tier[]>(props.agent?.tier_order ?? []);
  const [timeout, setTimeoutMs] = useState(props.agent?.queue_timeout_ms == null ? '' : String(props.agent.queue_timeout_ms));
  const action = useAction();

  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async () => {
      let queue_timeout_ms: number | null = null;
      if (timeout.trim() !== '') {
        queue_timeout_ms = Number(timeout);
        if (!Number.isInteger(queue_timeout_ms) || queue_timeout_ms < 0) throw new Error('The queue timeout must be a whole number of milliseconds, or empty for the default.');
      }
      const body = {
        name: name.trim(),
        model: model.trim(),
        system_prompt: prompt.trim() ? prompt : null,
        tier_order: order.length ? order : null,
        queue_timeout_ms,
      };
      const saved = creating ? await api.post<Agent>('/api/agents', body) : await api.put<Agent>(`/api/agents/${seg(body.name)}`, body);
      props.onSaved(saved, creating);
    });
  };

  return (
    <FocusedSection
      title={creating ? 'New agent' : `Edit the agent “${props.agent?.name}”`}
      actions={
        <button type="button" class="secondary small" onClick={props.onClose}>
          Close
        </button>
      }
    >
      <form class="form-grid" onSubmit={submit}>
        <datalist id="agent-model-suggestions">
          {props.suggestions.map((s) => (
            <option value={s} />
          ))}
        </datalist>
        <Field label="Agent name" hint={creating ? 'Letters, digits, “.”, “_” or “-”.' : 'An agent cannot be renamed.'}>
          {(p) => <input {...p} name="agent_name" required maxLength={64} readOnly={!creating} autoComplete="off" value={name} onInput={(e) => setName(inputValue(e))} />}
        </Field>
        <Field
          label="Model"
          hint={props.suggestionsError ? `A model, an alias such as “auto”, or provider/model. (Suggestions are unavailable: ${describeError(props.suggestionsError)})` : 'A model, an alias such as “auto”, or provider/model.'}
        >
          {(p) => <input {...p} name="model" required list="agent-model-suggestions" autoComplete="off" value={model} onInput={(e) => setModel(inputValue(e))} />}
        </Field>
        <div class="span-2">
          <Field label="System prompt" optional hint="Put before the client’s own messages.">
            {(p) => <textarea {...p} name="system_prompt" rows={5} value={prompt} onInput={(e) => setPrompt((e.target as HTMLTextAreaElement).value)} />}
          </Field>
        </div>
        <TierOrderEditor label="Tier order" value={order} onChange={setOrder} emptyText="None chosen: the agent uses the default routing order." />
        <Field label="Queue timeout (ms)" optional hint="How long a request waits for a free slot. Empty: the default.">
          {(p) => <input {...p} name="queue_timeout_ms" type="text" inputMode="numeric" value={timeout} onInput={(e) => setTimeoutMs(inputValue(e))} />}
        </Field>
        <div class="form-footer">
          <ErrorMessage title="The agent was not saved." error={action.error} />
          <div class="button-row">
            <button type="submit" class="primary" disabled={action.busy}>
              {action.busy ? 'Saving…' : creating ? 'Create agent' : 'Save agent'}
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
