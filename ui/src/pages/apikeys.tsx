// API keys: what clients (and admin scripts) use to call auxot. Shown once, stored hashed.
import { useState } from 'preact/hooks';
import { api, describeError, seg, type ApiKey } from '../api';
import { CodeBox, DataTable, ErrorMessage, Field, Loading, Notice, Page, Pill, Section, Time, confirmAction, inputValue, useAction, useResource } from '../components';

interface CreatedKey extends ApiKey {
  key: string;
}

export function ApiKeysPage() {
  const keys = useResource(() => api.list<ApiKey>('/api/api-keys'));
  const [name, setName] = useState('');
  const [role, setRole] = useState<'client' | 'admin'>('client');
  const [created, setCreated] = useState<CreatedKey | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const action = useAction();

  const create = (event: Event) => {
    event.preventDefault();
    setNotice(null);
    void action.run(async () => {
      const key = await api.post<CreatedKey>('/api/api-keys', { name: name.trim(), role });
      setCreated(key);
      setName('');
      await keys.reload();
    });
  };

  const revoke = async (key: ApiKey) => {
    setRevokeError(null);
    setNotice(null);
    const ok = await confirmAction(`Revoke the API key “${key.name}”?`, <p>Every client using it is refused from now on. This cannot be undone.</p>, 'Revoke key');
    if (!ok) return;
    try {
      await api.delete(`/api/api-keys/${seg(key.id)}`);
      if (created?.id === key.id) setCreated(null);
      setNotice(`Revoked the API key “${key.name}”.`);
      await keys.reload();
    } catch (e) {
      setRevokeError(`The key “${key.name}” was not revoked: ${describeError(e)}`);
    }
  };

  return (
    <Page title="API keys" intro="Give each tool or person its own key. Client keys call the OpenAI and Anthropic APIs; admin keys can also manage auxot through /api/.">
      <Section title="Create a key">
        <form class="inline-form" onSubmit={create}>
          <Field label="Key name" hint="Who or what uses it, e.g. “ci” or “alice-laptop”.">
            {(p) => <input {...p} name="key_name" required maxLength={64} autoComplete="off" value={name} onInput={(e) => setName(inputValue(e))} />}
          </Field>
          <Field label="Role">
            {(p) => (
              <select {...p} name="role" value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value as 'client' | 'admin')}>
                <option value="client">client: model calls only</option>
                <option value="admin">admin: model calls and the admin API</option>
              </select>
            )}
          </Field>
          <button type="submit" class="primary" disabled={action.busy}>
            {action.busy ? 'Creating…' : 'Create key'}
          </button>
        </form>
        <ErrorMessage title="The key was not created." error={action.error} />
        {created && (
          <div class="once" role="region" aria-label="New API key">
            <p>
              <strong>Copy the key “{created.name}” now.</strong> It is shown only this once; auxot keeps only a hash of it.
            </p>
            <CodeBox label="New API key" value={created.key} testId="new-api-key" />
            <p>Try it:</p>
            <CodeBox
              label="Example request"
              copyLabel="Copy command"
              value={`curl ${window.location.origin}/v1/chat/completions -H "Authorization: Bearer ${created.key}" -H 'content-type: application/json' -d '{"model":"auto","messages":[{"role":"user","content":"Hello"}]}'`}
            />
            <button type="button" class="secondary small" onClick={() => setCreated(null)}>
              I have copied it
            </button>
          </div>
        )}
      </Section>
      <Section title="Keys">
        {notice && <Notice kind="success">{notice}</Notice>}
        <ErrorMessage error={revokeError} />
        <ErrorMessage title="The keys could not be loaded." error={keys.error} onRetry={() => void keys.reload()} />
        {!keys.data && keys.loading ? (
          <Loading what="keys" />
        ) : (
          <DataTable
            caption="API keys"
            rows={keys.data ?? []}
            rowKey={(k) => k.id}
            empty="No API keys yet."
            columns={[
              { label: 'Name', render: (k) => <strong>{k.name}</strong> },
              { label: 'Role', render: (k) => <Pill kind={k.role === 'admin' ? 'busy' : 'ok'}>{k.role}</Pill> },
              { label: 'Key', render: (k) => <code class="nowrap">{k.prefix}…</code> },
              { label: 'Created', render: (k) => <Time iso={k.created_at} /> },
              {
                label: 'Actions',
                class: 'actions',
                render: (k) => (
                  <button type="button" class="secondary small danger-text" aria-label={`Revoke API key ${k.name}`} onClick={() => void revoke(k)}>
                    Revoke
                  </button>
                ),
              },
            ]}
          />
        )}
      </Section>
    </Page>
  );
}
