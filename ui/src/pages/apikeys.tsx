// API keys: what clients (and admin scripts) use to call auxot. Shown once, stored hashed.
import { useState } from 'preact/hooks';
import { api, ApiError, describeError, seg, TIERS, type Alias, type ApiKey, type Model, type Tier } from '../api';
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
  const aliases = useResource(() => api.list<Alias>('/api/aliases'));
  const [name, setName] = useState('');
  const [role, setRole] = useState<'client' | 'admin'>('client');
  const [policy, setPolicy] = useState<PolicyDraft>(() => draftOf(null));
  const known = [...new Set([...(aliases.data ?? []).map((a) => a.name), ...(models.data ?? []).map((m) => m.id)])];
  const [created, setCreated] = useState<CreatedKey | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const [limitsOf, setLimitsOf] = useState<ApiKey | null>(null);
  const action = useAction();
  const nameTaken = action.error instanceof ApiError && action.error.status === 409 ? describeError(action.error) : null;

  const create = (event: Event) => {
    event.preventDefault();
    setNotice(null);
    void action.run(async () => {
      const key = await api.post<CreatedKey>('/api/api-keys', { name: name.trim(), role, ...policyBody(policy) });
      setCreated(key);
      setName('');
      setPolicy(draftOf(null));
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
        <form class="form-grid" onSubmit={create}>
          <Field label="Key name" hint="Who or what uses it, e.g. “ci” or “alice-laptop”. Names are unique, whatever their case." error={nameTaken ? nameTaken : undefined}>
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
          <PolicyFields draft={policy} onChange={setPolicy} known={known} />
          <div class="form-footer">
            {!nameTaken && <ErrorMessage title="The key was not created." error={action.error} />}
            <div class="button-row">
              <button type="submit" class="primary" disabled={action.busy}>
                {action.busy ? 'Creating…' : 'Create key'}
              </button>
            </div>
          </div>
        </form>
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
              {
                label: 'Name · role',
                render: (k) => (
                  <>
                    <strong class="break">{k.name}</strong>
                    <div>
                      <Pill kind={k.role === 'admin' ? 'busy' : 'ok'}>{k.role}</Pill>
                    </div>
                  </>
                ),
              },
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
          known={known}
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

function LimitsForm(props: { apiKey: ApiKey; known: string[]; onClose: () => void; onSaved: (key: ApiKey) => void }) {
  const k = props.apiKey;
  const [draft, setDraft] = useState<PolicyDraft>(() => draftOf(k));
  const action = useAction();
  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async () => {
      const saved = await api.patch<ApiKey>(`/api/api-keys/${seg(k.id)}`, policyBody(draft));
      props.onSaved(saved);
    });
  };
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
        <PolicyFields draft={draft} onChange={setDraft} known={props.known} />
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

/** What the governance fields hold while edited: text as typed, checked on submit. */
interface PolicyDraft {
  rpm: string;
  tpm: string;
  cap: string;
  models: string;
  tiers: Tier[];
  expires: string;
}

function draftOf(k: ApiKey | null): PolicyDraft {
  return {
    rpm: k?.rpm_limit == null ? '' : String(k.rpm_limit),
    tpm: k?.tpm_limit == null ? '' : String(k.tpm_limit),
    cap: k?.monthly_spend_cap_usd == null ? '' : String(k.monthly_spend_cap_usd),
    models: (k?.allowed_models ?? []).join(', '),
    tiers: k?.allowed_tiers ?? [],
    expires: k?.expires_at ? k.expires_at.slice(0, 10) : '',
  };
}

function modelsOf(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((m) => m.trim())
    .filter(Boolean);
}

/** The policy fields of POST and PATCH /api/api-keys; throws a readable error for bad input. */
function policyBody(d: PolicyDraft) {
  return {
    rpm_limit: optionalNumber(d.rpm, 'Requests per minute', true),
    tpm_limit: optionalNumber(d.tpm, 'Tokens per minute', true),
    monthly_spend_cap_usd: optionalNumber(d.cap, 'The monthly spend cap'),
    allowed_models: modelsOf(d.models),
    allowed_tiers: d.tiers,
    expires_at: expiryOf(d.expires),
  };
}

/** Limits, allow-lists and expiry: the same fields when a key is created and when it is edited. */
function PolicyFields(props: { draft: PolicyDraft; onChange: (d: PolicyDraft) => void; known: string[] }) {
  const d = props.draft;
  const set = (patch: Partial<PolicyDraft>) => props.onChange({ ...d, ...patch });
  const chosen = modelsOf(d.models);
  const suggestions = props.known.filter((m) => !chosen.includes(m)).slice(0, 8);
  const toggleTier = (tier: Tier, on: boolean) => set({ tiers: TIERS.filter((t) => (t === tier ? on : d.tiers.includes(t))) });
  return (
    <>
      <Field label="Requests per minute" optional hint="Over it, requests get 429 with Retry-After. Empty: no limit.">
        {(p) => <input {...p} name="rpm_limit" type="text" inputMode="numeric" value={d.rpm} onInput={(e) => set({ rpm: inputValue(e) })} />}
      </Field>
      <Field label="Tokens per minute" optional hint="Input + output tokens, counted as answers end. Empty: no limit.">
        {(p) => <input {...p} name="tpm_limit" type="text" inputMode="numeric" value={d.tpm} onInput={(e) => set({ tpm: inputValue(e) })} />}
      </Field>
      <Field label="Monthly cloud spend cap (USD)" optional hint="Counts cloud cost only; resets each calendar month (UTC). Empty: no cap.">
        {(p) => <input {...p} name="monthly_spend_cap_usd" type="text" inputMode="decimal" value={d.cap} onInput={(e) => set({ cap: inputValue(e) })} />}
      </Field>
      <Field label="Expires on" optional hint="The key stops working at the end of that day (your time). Empty: never.">
        {(p) => <input {...p} name="expires_at" type="date" value={d.expires} onInput={(e) => set({ expires: inputValue(e) })} />}
      </Field>
      <Field
        label="Allowed models"
        optional
        hint={
          <>
            Aliases, models or agent:NAME, separated by commas; claude-* allows a family. Empty: any model.
            {suggestions.length > 0 && (
              <span class="suggestions">
                {' '}
                Add:{' '}
                {suggestions.map((m) => (
                  <button type="button" class="chip-button" aria-label={`Allow ${m}`} onClick={() => set({ models: [...chosen, m].join(', ') })}>
                    + {m}
                  </button>
                ))}
              </span>
            )}
          </>
        }
      >
        {(p) => <input {...p} name="allowed_models" type="text" autoComplete="off" placeholder="auto, claude-*" value={d.models} onInput={(e) => set({ models: inputValue(e) })} />}
      </Field>
      <fieldset class="field checks">
        <legend>Allowed tiers (none ticked: any)</legend>
        {TIERS.map((t) => (
          <label class="check-label">
            <input type="checkbox" name={`tier_${t}`} checked={d.tiers.includes(t)} onChange={(e) => toggleTier(t, (e.target as HTMLInputElement).checked)} /> {t}
          </label>
        ))}
      </fieldset>
    </>
  );
}
