// Settings → Providers: the cloud tier. Keys are write-only: the page shows a hint at most.
import { useState } from 'preact/hooks';
import { api, seg, type Provider, type ProviderType } from '../api';
import {
  Checkbox,
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
  cooldownNote,
} from '../components';

const TYPE_LABELS: Record<ProviderType, string> = {
  openai: 'OpenAI',
  anthropic: 'Anthropic',
  'openai-compatible': 'OpenAI-compatible',
};

const BASE_URL_HINTS: Record<ProviderType, string> = {
  openai: 'Leave empty for https://api.openai.com/v1. As in the OpenAI SDK, the base URL includes /v1.',
  anthropic: 'Leave empty for https://api.anthropic.com. As in the Anthropic SDK, the base URL does not include /v1.',
  'openai-compatible': 'Required. The server’s OpenAI-style base URL, including /v1, e.g. http://10.0.0.5:8000/v1 for vLLM or llama.cpp.',
};

/** The server gives up on a provider's model list after this long (registry.rs caps it at 30 s). */
const VALIDATION_LIMIT_S = 30;

export function ProvidersPage() {
  const providers = useResource(() => api.list<Provider>('/api/providers'));
  const [adding, setAdding] = useState(false);
  const [editing, setEditing] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [refreshing, setRefreshing] = useState<string | null>(null);

  const refreshAction = useCancellableAction();
  const refresh = (provider: Provider) => {
    setRefreshing(provider.id);
    setNotice(null);
    void refreshAction.run(async (signal) => {
      try {
        const view = await api.post<Provider>(`/api/providers/${seg(provider.id)}/refresh-models`, {}, signal);
        setNotice(`Refreshed the models of “${view.name}”: ${view.model_count} model${view.model_count === 1 ? '' : 's'}.`);
        await providers.reload();
      } finally {
        setRefreshing(null);
      }
    });
  };

  const list = providers.data ?? [];
  const current = list.find((p) => p.id === editing);
  return (
    <Page
      title="Providers"
      intro="Cloud providers are the always-available fallback tier. Each key is checked against the provider’s model list, then sealed; it is never shown again."
      actions={
        !adding && (
          <button
            type="button"
            class="primary"
            onClick={() => {
              setAdding(true);
              setEditing(null);
              setNotice(null);
            }}
          >
            Add provider
          </button>
        )
      }
    >
      {notice && <Notice kind="success">{notice}</Notice>}
      {refreshAction.busy && (
        <SlowProgress elapsed={refreshAction.elapsed} limit={30} onCancel={refreshAction.cancel} cancelLabel="Cancel the refresh">
          Refreshing the models of “{list.find((p) => p.id === refreshing)?.name ?? 'the provider'}”…
        </SlowProgress>
      )}
      {refreshAction.cancelled && <Notice>Refresh cancelled; the cached model list is kept.</Notice>}
      <ErrorMessage title="Refreshing the models failed." error={refreshAction.error} />
      {adding && (
        <AddProviderForm
          onCancel={() => setAdding(false)}
          onAdded={(view) => {
            setAdding(false);
            setNotice(`Added “${view.name}”. The key works: the provider listed ${view.model_count} model${view.model_count === 1 ? '' : 's'}.`);
            void providers.reload();
          }}
        />
      )}
      <Section title="Configured providers">
        <ErrorMessage title="The providers could not be loaded." error={providers.error} onRetry={() => void providers.reload()} />
        {!providers.data && providers.loading ? (
          <Loading what="providers" />
        ) : (
          <DataTable
            caption="Configured providers"
            rows={list}
            rowKey={(p) => p.id}
            empty="No provider yet. Add one to give auxot a cloud fallback."
            columns={[
              {
                label: 'Name',
                render: (p) => (
                  <>
                    <strong>{p.name}</strong>
                    <div class="muted small break">{p.base_url}</div>
                  </>
                ),
              },
              { label: 'Type', render: (p) => TYPE_LABELS[p.type] ?? p.type },
              { label: 'Key', render: (p) => (p.key_hint ? <code class="nowrap">{p.key_hint}</code> : <span class="muted">none</span>) },
              {
                label: 'Models',
                render: (p) => (
                  <>
                    {p.model_count}
                    <div class="muted small">
                      fetched <Time iso={p.models_fetched_at} />
                    </div>
                  </>
                ),
              },
              {
                label: 'Status',
                render: (p) => (
                  <>
                    {p.enabled ? <Pill kind="ok">enabled</Pill> : <Pill kind="off">disabled</Pill>}
                    {cooldownNote(p)}
                  </>
                ),
              },
              { label: 'Priority', class: 'num', render: (p) => p.priority },
              {
                label: 'Actions',
                class: 'actions',
                render: (p) => (
                  <div class="button-row">
                    <button
                      type="button"
                      class="secondary small"
                      aria-label={`Edit ${p.name}`}
                      onClick={() => {
                        setEditing(p.id);
                        setAdding(false);
                        setNotice(null);
                      }}
                    >
                      Edit
                    </button>
                    <button type="button" class="secondary small" aria-label={`Refresh models of ${p.name}`} disabled={refreshing !== null} onClick={() => void refresh(p)}>
                      {refreshing === p.id ? 'Refreshing…' : 'Refresh models'}
                    </button>
                  </div>
                ),
              },
            ]}
          />
        )}
        <p class="hint">Lower priority numbers are tried first; providers with the same priority share the load.</p>
      </Section>
      {current && (
        <EditProvider
          key={current.id}
          provider={current}
          onClose={() => setEditing(null)}
          onChanged={() => void providers.reload()}
          onDeleted={(name) => {
            setEditing(null);
            setNotice(`Deleted “${name}”.`);
            void providers.reload();
          }}
        />
      )}
    </Page>
  );
}

function AddProviderForm(props: { onAdded: (view: Provider) => void; onCancel: () => void }) {
  const [type, setType] = useState<ProviderType>('openai');
  const [name, setName] = useState('openai');
  const [nameTouched, setNameTouched] = useState(false);
  const [baseUrl, setBaseUrl] = useState('');
  const [apiKey, setApiKey] = useState('');
  const action = useCancellableAction();
  const compatible = type === 'openai-compatible';

  const changeType = (next: ProviderType) => {
    setType(next);
    if (!nameTouched) setName(next === 'openai-compatible' ? 'local' : next);
  };

  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async (signal) => {
      const body: Record<string, unknown> = { name: name.trim(), type };
      if (apiKey.trim()) body.api_key = apiKey.trim();
      if (baseUrl.trim()) body.base_url = baseUrl.trim();
      const view = await api.post<Provider>('/api/providers', body, signal);
      setApiKey('');
      props.onAdded(view);
    });
  };

  return (
    <FocusedSection title="Add a provider">
      <form class="form-grid" onSubmit={submit}>
        <Field label="Type">
          {(p) => (
            <select {...p} name="type" value={type} onChange={(e) => changeType((e.target as HTMLSelectElement).value as ProviderType)}>
              <option value="openai">OpenAI</option>
              <option value="anthropic">Anthropic</option>
              <option value="openai-compatible">OpenAI-compatible (vLLM, llama.cpp, Ollama, others)</option>
            </select>
          )}
        </Field>
        <Field label="Name" hint="Letters, digits, “.”, “_” or “-”. Clients can pin it as name/model.">
          {(p) => (
            <input
              {...p}
              name="name"
              required
              maxLength={64}
              autoComplete="off"
              value={name}
              onInput={(e) => {
                setName(inputValue(e));
                setNameTouched(true);
              }}
            />
          )}
        </Field>
        <Field label="Base URL" optional={!compatible} hint={BASE_URL_HINTS[type]}>
          {(p) => (
            <input
              {...p}
              name="base_url"
              type="url"
              inputMode="url"
              required={compatible}
              placeholder={type === 'anthropic' ? 'https://api.anthropic.com' : type === 'openai' ? 'https://api.openai.com/v1' : 'http://10.0.0.5:8000/v1'}
              value={baseUrl}
              onInput={(e) => setBaseUrl(inputValue(e))}
            />
          )}
        </Field>
        <Field
          label="API key"
          optional={compatible}
          hint={compatible ? 'Only if the server asks for one. It is checked before anything is saved.' : 'Checked against the provider before anything is saved, then stored sealed.'}
        >
          {(p) => <input {...p} name="api_key" type="password" autoComplete="new-password" spellcheck={false} required={!compatible} value={apiKey} onInput={(e) => setApiKey(inputValue(e))} />}
        </Field>
        <div class="form-footer">
          {action.busy && (
            <SlowProgress elapsed={action.elapsed} limit={VALIDATION_LIMIT_S} onCancel={action.cancel} cancelLabel="Cancel the check">
              Validating key: auxot is asking the provider for its model list.
            </SlowProgress>
          )}
          {action.cancelled && <Notice>Cancelled. Nothing was saved; change the details and try again.</Notice>}
          <ErrorMessage title="The provider was not added." error={action.error} />
          <div class="button-row">
            <button type="submit" class="primary" disabled={action.busy}>
              {action.busy ? 'Validating key…' : 'Add provider'}
            </button>
            <button type="button" class="secondary" onClick={action.busy ? action.cancel : props.onCancel}>
              Cancel
            </button>
          </div>
        </div>
      </form>
    </FocusedSection>
  );
}

function EditProvider(props: { provider: Provider; onClose: () => void; onChanged: () => void; onDeleted: (name: string) => void }) {
  const { provider } = props;
  const [name, setName] = useState(provider.name);
  const [priority, setPriority] = useState(String(provider.priority));
  const [enabled, setEnabled] = useState(provider.enabled);
  const [saved, setSaved] = useState<string | null>(null);
  const details = useAction();

  const [newKey, setNewKey] = useState('');
  const [newBaseUrl, setNewBaseUrl] = useState('');
  const [rotated, setRotated] = useState<string | null>(null);
  const rotation = useCancellableAction();

  const deletion = useAction();

  const saveDetails = (event: Event) => {
    event.preventDefault();
    setSaved(null);
    void details.run(async () => {
      const patch: Record<string, unknown> = {};
      if (name.trim() !== provider.name) patch.name = name.trim();
      if (enabled !== provider.enabled) patch.enabled = enabled;
      const prio = Number(priority);
      if (!Number.isInteger(prio) || priority.trim() === '') throw new Error('Priority must be a whole number, e.g. 100.');
      if (prio !== provider.priority) patch.priority = prio;
      if (Object.keys(patch).length === 0) {
        setSaved('Nothing to save: no field changed.');
        return;
      }
      const view = await api.patch<Provider>(`/api/providers/${seg(provider.id)}`, patch);
      setSaved(`Saved “${view.name}”.`);
      props.onChanged();
    });
  };

  const rotateKey = (event: Event) => {
    event.preventDefault();
    setRotated(null);
    void rotation.run(async (signal) => {
      const patch: Record<string, unknown> = { api_key: newKey.trim() };
      if (newBaseUrl.trim()) patch.base_url = newBaseUrl.trim();
      const view = await api.patch<Provider>(`/api/providers/${seg(provider.id)}`, patch, signal);
      setNewKey('');
      setNewBaseUrl('');
      setRotated(`Key replaced. The new key works: the provider listed ${view.model_count} model${view.model_count === 1 ? '' : 's'}. It now shows as ${view.key_hint || 'no key'}.`);
      props.onChanged();
    });
  };

  const remove = async () => {
    const ok = await confirmAction(
      `Delete the provider “${provider.name}”?`,
      <p>Its sealed key and cached models are removed. Requests that only this provider could serve will fail. This cannot be undone.</p>,
      'Delete provider',
    );
    if (!ok) return;
    void deletion.run(async () => {
      await api.delete(`/api/providers/${seg(provider.id)}`);
      props.onDeleted(provider.name);
    });
  };

  return (
    <FocusedSection
      title={`Edit “${provider.name}”`}
      actions={
        <button type="button" class="secondary small" onClick={props.onClose}>
          Close
        </button>
      }
    >
      <div class="edit-grid">
        <form class="stack" onSubmit={saveDetails}>
          <h3>Details</h3>
          <Field label="Name">{(p) => <input {...p} name="name" required maxLength={64} value={name} onInput={(e) => setName(inputValue(e))} />}</Field>
          <Field label="Priority" hint="Lower is tried first. Default 100.">
            {(p) => <input {...p} name="priority" type="text" value={priority} onInput={(e) => setPriority(inputValue(e))} />}
          </Field>
          <Checkbox label="Enabled: route requests to this provider" checked={enabled} onChange={setEnabled} />
          <ErrorMessage title="Not saved." error={details.error} />
          {saved && <Notice kind="success">{saved}</Notice>}
          <div class="button-row">
            <button type="submit" class="primary" disabled={details.busy}>
              {details.busy ? 'Saving…' : 'Save changes'}
            </button>
          </div>
        </form>
        <form class="stack" onSubmit={rotateKey}>
          <h3>Rotate the API key</h3>
          <p class="hint">
            Current key: {provider.key_hint ? <code>{provider.key_hint}</code> : 'none'}. The stored key is never shown. A new key is checked before it replaces the old one; a rejected key changes nothing.
          </p>
          <Field label="New API key">
            {(p) => <input {...p} name="new_api_key" type="password" autoComplete="new-password" spellcheck={false} required value={newKey} onInput={(e) => setNewKey(inputValue(e))} />}
          </Field>
          <Field label="New base URL" optional hint={`Leave empty to keep ${provider.base_url}. A different host needs its key given here too.`}>
            {(p) => <input {...p} name="new_base_url" type="url" inputMode="url" value={newBaseUrl} onInput={(e) => setNewBaseUrl(inputValue(e))} />}
          </Field>
          {rotation.busy && (
            <SlowProgress elapsed={rotation.elapsed} limit={VALIDATION_LIMIT_S} onCancel={rotation.cancel} cancelLabel="Cancel the check">
              Validating the new key…
            </SlowProgress>
          )}
          {rotation.cancelled && <Notice>Cancelled. The old key stays in place.</Notice>}
          <ErrorMessage title="The key was not replaced." error={rotation.error} />
          {rotated && <Notice kind="success">{rotated}</Notice>}
          <div class="button-row">
            <button type="submit" class="primary" disabled={rotation.busy}>
              {rotation.busy ? 'Validating key…' : 'Replace key'}
            </button>
          </div>
        </form>
      </div>
      <div class="danger-zone">
        <div>
          <h3>Delete this provider</h3>
          <p class="hint">Removes the provider, its sealed key and its cached models.</p>
        </div>
        <button type="button" class="danger" onClick={() => void remove()} disabled={deletion.busy}>
          {deletion.busy ? 'Deleting…' : 'Delete provider'}
        </button>
      </div>
      <ErrorMessage title="The provider was not deleted." error={deletion.error} />
    </FocusedSection>
  );
}
