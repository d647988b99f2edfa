// API keys: what clients (and admin scripts) use to call auxot. Shown once, stored hashed.
import { useState } from 'preact/hooks';
import { api, describeError, seg, TIERS, type ApiKey, type Model, type Tier } from '../api';
import {
  CodeBox,
  DataTable,
  ErrorMessage,
  Field,
  FocusedSection,
  Loading,
  Notice,
  Page,
  Pill,
  Section,
  Time,
  confirmAction,
  formatInt,
  formatUsd,
  inputValue,
  optionalNumber,
  useAction,
  useResource,
  Usd,
} from '../components';

interface CreatedKey extends ApiKey {
  key: string;
}

export function ApiKeysPage() {
  const keys = useResource(() => api.list<ApiKey>('/api/api-keys'));
  // Only to make the example request use a model that exists; `auto` when none is cached.
  const models = useResource(() => api.list<Model>('/api/models'));
  const exampleModel = models.data?.find((m) => m.provider_enabled)?.id ?? 'auto';
  const [name, setName] = useState('');
  const [role, setRole] = useState<'client' | 'admin'>('client');
  const [created, setCreated] = useState<CreatedKey | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const [limitsOf, setLimitsOf] = useState<ApiKey | null>(null);
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
      if (limitsOf?.id === key.id) setLimitsOf(null);
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
              value={`curl ${window.location.origin}/v1/chat/completions -H "Authorization: Bearer ${created.key}" -H 'content-type: application/json' -d '{"model":"${exampleModel}","messages":[{"role":"user","content":"Hello"}]}'`}
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
              { label: 'Limits', render: (k) => describeLimits(k) },
              { label: 'May use', render: (k) => describeGrant(k) },
              {
                label: 'This month',
                render: (k) =>
                  k.requests_this_month == null ? (
                    <span class="muted">—</span>
                  ) : (
                    <span data-testid="key-month">
                      {formatInt(k.requests_this_month)} req · <Usd value={k.spent_this_month_usd} />
                    </span>
                  ),
              },
              { label: 'Last used', render: (k) => <Time iso={k.last_used_at} never="not this month" /> },
              {
                label: 'Expires',
                render: (k) => (k.expired ? <Pill kind="error">expired</Pill> : k.expires_at ? <Time iso={k.expires_at} /> : <span class="muted">never</span>),
              },
              {
                label: 'Actions',
                class: 'actions',
                render: (k) => (
                  <div class="button-row">
                    <button
                      type="button"
                      class="secondary small"
                      aria-label={`Limits of API key ${k.name}`}
                      onClick={() => {
                        setLimitsOf(k);
                        setNotice(null);
                      }}
                    >
                      Limits
                    </button>
                    <button type="button" class="secondary small danger-text" aria-label={`Revoke API key ${k.name}`} onClick={() => void revoke(k)}>
                      Revoke
                    </button>
                  </div>
                ),
              },
            ]}
          />
        )}
      </Section>
      {limitsOf && (
        <LimitsForm
          key={limitsOf.id}
          apiKey={limitsOf}
          onClose={() => setLimitsOf(null)}
          onSaved={(saved) => {
            setLimitsOf(null);
            setNotice(`Saved the limits of “${saved.name}”: ${describeLimitsText(saved)}.`);
            void keys.reload();
          }}
        />
      )}
    </Page>
  );
}

function describeGrant(k: ApiKey) {
  const models = k.allowed_models ?? [];
  const tiers = k.allowed_tiers ?? [];
  if (!models.length && !tiers.length) return <span class="muted">any model, any tier</span>;
  return (
    <span class="break">
      {models.length ? models.join(', ') : 'any model'}
      {tiers.length ? <span class="muted"> on {tiers.join(', ')}</span> : null}
    </span>
  );
}

function describeLimitsText(k: ApiKey): string {
  const parts: string[] = [];
  if (k.rpm_limit != null) parts.push(`${formatInt(k.rpm_limit)} requests/min`);
  if (k.tpm_limit != null) parts.push(`${formatInt(k.tpm_limit)} tokens/min`);
  if (k.monthly_spend_cap_usd != null) parts.push(`${formatUsd(k.monthly_spend_cap_usd)}/month cloud spend`);
  return parts.length ? parts.join(', ') : 'no limits';
}

function describeLimits(k: ApiKey) {
  const text = describeLimitsText(k);
  return text === 'no limits' ? <span class="muted">none</span> : text;
}

/** `2026-12-31` (a date input, local midnight) → RFC 3339, or null. */
function expiryOf(date: string): string | null {
  if (!date) return null;
  const at = new Date(date + 'T23:59:59');
  if (Number.isNaN(at.getTime())) throw new Error('The expiry must be a date.');
  return at.toISOString();
}

function LimitsForm(props: { apiKey: ApiKey; onClose: () => void; onSaved: (key: ApiKey) => void }) {
  const k = props.apiKey;
  const [rpm, setRpm] = useState(k.rpm_limit == null ? '' : String(k.rpm_limit));
  const [tpm, setTpm] = useState(k.tpm_limit == null ? '' : String(k.tpm_limit));
  const [cap, setCap] = useState(k.monthly_spend_cap_usd == null ? '' : String(k.monthly_spend_cap_usd));
  const [models, setModels] = useState((k.allowed_models ?? []).join(', '));
  const [tiers, setTiers] = useState<Tier[]>(k.allowed_tiers ?? []);
  const [expires, setExpires] = useState(k.expires_at ? k.expires_at.slice(0, 10) : '');
  const action = useAction();
  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async () => {
      const body = {
        rpm_limit: optionalNumber(rpm, 'Requests per minute', true),
        tpm_limit: optionalNumber(tpm, 'Tokens per minute', true),
        monthly_spend_cap_usd: optionalNumber(cap, 'The monthly spend cap'),
        allowed_models: models
          .split(/[\s,]+/)
          .map((m) => m.trim())
          .filter(Boolean),
        allowed_tiers: tiers,
        expires_at: expiryOf(expires),
      };
      const saved = await api.patch<ApiKey>(`/api/api-keys/${seg(k.id)}`, body);
      props.onSaved(saved);
    });
  };
  const toggleTier = (tier: Tier, on: boolean) => setTiers(TIERS.filter((t) => (t === tier ? on : tiers.includes(t))));
  return (
    <FocusedSection
      title={`Limits of “${k.name}”`}
      actions={
        <button type="button" class="secondary small" onClick={props.onClose}>
          Close
        </button>
      }
    >
      <form class="form-grid" onSubmit={submit}>
        <Field label="Requests per minute" optional hint="Over it, requests get 429 with Retry-After. Empty: no limit.">
          {(p) => <input {...p} name="rpm_limit" type="text" inputMode="numeric" value={rpm} onInput={(e) => setRpm(inputValue(e))} />}
        </Field>
        <Field label="Tokens per minute" optional hint="Input + output tokens, counted as answers end. Empty: no limit.">
          {(p) => <input {...p} name="tpm_limit" type="text" inputMode="numeric" value={tpm} onInput={(e) => setTpm(inputValue(e))} />}
        </Field>
        <Field label="Monthly cloud spend cap (USD)" optional hint="Counts cloud cost only; resets each calendar month (UTC). Empty: no cap.">
          {(p) => <input {...p} name="monthly_spend_cap_usd" type="text" inputMode="decimal" value={cap} onInput={(e) => setCap(inputValue(e))} />}
        </Field>
        <Field label="Allowed models" optional hint="Aliases, models or agent:NAME, separated by commas; claude-* allows a family. Empty: any model.">
          {(p) => <input {...p} name="allowed_models" type="text" autoComplete="off" placeholder="auto, claude-*" value={models} onInput={(e) => setModels(inputValue(e))} />}
        </Field>
        <fieldset class="field checks">
          <legend>Allowed tiers (none ticked: any)</legend>
          {TIERS.map((t) => (
            <label class="check">
              <input type="checkbox" name={`tier_${t}`} checked={tiers.includes(t)} onChange={(e) => toggleTier(t, (e.target as HTMLInputElement).checked)} /> {t}
            </label>
          ))}
        </fieldset>
        <Field label="Expires on" optional hint="The key stops working at the end of that day (your time). Empty: never.">
          {(p) => <input {...p} name="expires_at" type="date" value={expires} onInput={(e) => setExpires(inputValue(e))} />}
        </Field>
        <div class="form-footer">
          <ErrorMessage title="The limits were not saved." error={action.error} />
          <div class="button-row">
            <button type="submit" class="primary" disabled={action.busy}>
              {action.busy ? 'Saving…' : 'Save limits'}
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
