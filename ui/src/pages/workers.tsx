// Workers: the live GPU and CLI tiers, refreshed every 2 s while visible, and the tokens
// that let a worker connect.
import { useState } from 'preact/hooks';
import { api, describeError, seg, type Worker, type WorkerToken } from '../api';
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
  useVisibleInterval,
} from '../components';

const REFRESH_MS = 2000;

export function WorkersPage() {
  return (
    <Page title="Workers" intro="GPU workers run beside a local model server; CLI workers run Claude Code, Codex or a custom command. Both dial out to auxot, so they work behind NAT.">
      <LiveWorkers />
      <WorkerTokens />
    </Page>
  );
}

function LiveWorkers() {
  const workers = useResource(() => api.list<Worker>('/api/workers'));
  const [updatedAt, setUpdatedAt] = useState(() => Date.now());
  useVisibleInterval(() => {
    void workers.reload().then((ok) => ok && setUpdatedAt(Date.now()));
  }, REFRESH_MS);

  const list = workers.data ?? [];
  return (
    <Section
      title="Connected workers"
      actions={
        <span class="muted small" aria-live="off">
          Updates every 2 s{workers.data ? ` · last ${new Date(updatedAt).toLocaleTimeString()}` : ''}
        </span>
      }
    >
      {workers.error ? <ErrorMessage title={workers.data ? 'The list could not be refreshed; it may be out of date. Retrying every 2 s.' : 'The workers could not be loaded.'} error={workers.error} /> : null}
      {!workers.data && workers.loading ? (
        <Loading what="workers" />
      ) : (
        <DataTable
          caption="Connected workers"
          rows={list}
          rowKey={(w) => w.id}
          rowClass={(w) => (w.status === 'offline' ? 'dim' : '')}
          empty="No worker has connected yet. Create a token below and start a worker with the command it shows."
          columns={[
            {
              label: 'Name',
              render: (w) => (
                <>
                  <strong>{w.name}</strong>
                  <div class="muted small">v{w.version}</div>
                </>
              ),
            },
            { label: 'Kind', render: (w) => <span class={`tier-badge tier-${w.kind}`}>{w.kind}</span> },
            { label: 'Status', render: (w) => <Pill kind={w.status === 'idle' ? 'ok' : w.status === 'busy' ? 'busy' : 'off'}>{w.status}</Pill> },
            {
              label: 'Slots in use',
              render: (w) => (
                <span class="slots">
                  <meter max={w.slots_total} value={w.slots_in_use} aria-hidden="true" />
                  {w.slots_in_use} / {w.slots_total}
                </span>
              ),
            },
            { label: 'Models', render: (w) => (w.models.length ? <span class="break">{w.models.join(', ')}</span> : <span class="muted">none</span>) },
            { label: 'Last heartbeat', render: (w) => <Time iso={w.last_heartbeat} /> },
            { label: 'Jobs served', class: 'num', render: (w) => formatInt(w.jobs_served) },
          ]}
        />
      )}
    </Section>
  );
}

interface CreatedToken extends WorkerToken {
  token: string;
}

export function workerCommand(token: string, kind: 'gpu' | 'cli', origin: string): string {
  return kind === 'gpu'
    ? `AUXOT_WORKER_TOKEN=${token} auxot worker gpu --server ${origin} --upstream http://127.0.0.1:8000/v1`
    : `AUXOT_WORKER_TOKEN=${token} auxot worker cli --server ${origin} --cli claude`;
}

function WorkerTokens() {
  const tokens = useResource(() => api.list<WorkerToken>('/api/worker-tokens'));
  const [name, setName] = useState('');
  const [kind, setKind] = useState<'gpu' | 'cli'>('gpu');
  const [created, setCreated] = useState<CreatedToken | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const [pricing, setPricing] = useState<WorkerToken | null>(null);
  const action = useAction();

  const create = (event: Event) => {
    event.preventDefault();
    setNotice(null);
    void action.run(async () => {
      const token = await api.post<CreatedToken>('/api/worker-tokens', { name: name.trim(), kind });
      setCreated(token);
      setName('');
      await tokens.reload();
    });
  };

  const revoke = async (token: WorkerToken) => {
    setRevokeError(null);
    setNotice(null);
    const ok = await confirmAction(`Revoke the worker token “${token.name}”?`, <p>A worker using it is disconnected at once and cannot reconnect with it.</p>, 'Revoke token');
    if (!ok) return;
    try {
      await api.delete(`/api/worker-tokens/${seg(token.id)}`);
      if (created?.id === token.id) setCreated(null);
      if (pricing?.id === token.id) setPricing(null);
      setNotice(`Revoked the worker token “${token.name}”.`);
      await tokens.reload();
    } catch (e) {
      setRevokeError(`The token “${token.name}” was not revoked: ${describeError(e)}`);
    }
  };

  return (
    <Section title="Worker tokens">
      <form class="inline-form" onSubmit={create}>
        <Field label="Worker name" hint="For your own records, e.g. the machine's name.">
          {(p) => <input {...p} name="worker_name" required maxLength={64} autoComplete="off" placeholder="gpu-box-1" value={name} onInput={(e) => setName(inputValue(e))} />}
        </Field>
        <Field label="Kind">
          {(p) => (
            <select {...p} name="kind" value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value as 'gpu' | 'cli')}>
              <option value="gpu">GPU worker (local model server)</option>
              <option value="cli">CLI worker (Claude Code, Codex…)</option>
            </select>
          )}
        </Field>
        <button type="submit" class="primary" disabled={action.busy}>
          {action.busy ? 'Creating…' : 'Create token'}
        </button>
      </form>
      <ErrorMessage title="The token was not created." error={action.error} />
      {created && (
        <div class="once" role="region" aria-label="New worker token">
          <p>
            <strong>Copy the token for “{created.name}” now.</strong> It is shown only this once.
          </p>
          <CodeBox label="Worker token" value={created.token} testId="worker-token" />
          <p>
            Then run this on the worker machine{' '}
            {created.kind === 'gpu' ? 'next to its model server (change --upstream to its OpenAI URL, with /v1):' : '(logged in to Claude Code; or use --cli codex):'}
          </p>
          <CodeBox label="Worker command" value={workerCommand(created.token, created.kind, window.location.origin)} copyLabel="Copy command" testId="worker-command" />
          <button type="button" class="secondary small" onClick={() => setCreated(null)}>
            I have copied it
          </button>
        </div>
      )}
      {notice && <Notice kind="success">{notice}</Notice>}
      <ErrorMessage error={revokeError} />
      <ErrorMessage title="The tokens could not be loaded." error={tokens.error} onRetry={() => void tokens.reload()} />
      {!tokens.data && tokens.loading ? (
        <Loading what="tokens" />
      ) : (
        <DataTable
          caption="Worker tokens"
          rows={tokens.data ?? []}
          rowKey={(t) => t.id}
          empty="No worker tokens."
          columns={[
            { label: 'Name', render: (t) => <strong>{t.name}</strong> },
            { label: 'Kind', render: (t) => <span class={`tier-badge tier-${t.kind}`}>{t.kind}</span> },
            { label: 'Token', render: (t) => <code class="nowrap">{t.prefix}…</code> },
            {
              label: 'Subscription',
              render: (t) => (t.kind !== 'cli' ? <span class="muted">—</span> : t.monthly_price_usd == null ? <span class="muted">not set</span> : `${formatUsd(t.monthly_price_usd)}/month`),
            },
            { label: 'Created', render: (t) => <Time iso={t.created_at} /> },
            {
              label: 'Actions',
              class: 'actions',
              render: (t) => (
                <div class="button-row">
                  {t.kind === 'cli' && (
                    <button
                      type="button"
                      class="secondary small"
                      aria-label={`Subscription price of worker token ${t.name}`}
                      onClick={() => {
                        setPricing(t);
                        setNotice(null);
                      }}
                    >
                      Price
                    </button>
                  )}
                  <button type="button" class="secondary small danger-text" aria-label={`Revoke worker token ${t.name}`} onClick={() => void revoke(t)}>
                    Revoke
                  </button>
                </div>
              ),
            },
          ]}
        />
      )}
      {pricing && (
        <PriceForm
          key={pricing.id}
          token={pricing}
          onClose={() => setPricing(null)}
          onSaved={(saved) => {
            setPricing(null);
            setNotice(saved.monthly_price_usd == null ? `Cleared the subscription price of “${saved.name}”.` : `“${saved.name}” costs ${formatUsd(saved.monthly_price_usd)}/month.`);
            void tokens.reload();
          }}
        />
      )}
    </Section>
  );
}

/** A CLI worker's fixed monthly subscription, shown beside its usage. */
function PriceForm(props: { token: WorkerToken; onClose: () => void; onSaved: (token: WorkerToken) => void }) {
  const [price, setPrice] = useState(props.token.monthly_price_usd == null ? '' : String(props.token.monthly_price_usd));
  const action = useAction();
  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async () => {
      const saved = await api.patch<WorkerToken>(`/api/worker-tokens/${seg(props.token.id)}`, { monthly_price_usd: optionalNumber(price, 'The price') });
      props.onSaved(saved);
    });
  };
  return (
    <FocusedSection
      title={`Subscription of “${props.token.name}”`}
      actions={
        <button type="button" class="secondary small" onClick={props.onClose}>
          Close
        </button>
      }
    >
      <form class="inline-form" onSubmit={submit}>
        <Field label="Monthly price (USD)" optional hint="What the CLI's subscription costs (e.g. 20). Shown beside the worker's usage. Empty: not set.">
          {(p) => <input {...p} name="monthly_price_usd" type="text" inputMode="decimal" value={price} onInput={(e) => setPrice(inputValue(e))} />}
        </Field>
        <button type="submit" class="primary" disabled={action.busy}>
          {action.busy ? 'Saving…' : 'Save price'}
        </button>
      </form>
      <ErrorMessage title="The price was not saved." error={action.error} />
    </FocusedSection>
  );
}
