// Workers: the live GPU and CLI tiers, refreshed every 2 s while visible, and the tokens
// that let a worker connect.
import { useState } from 'preact/hooks';
import { api, describeError, seg, sentence, type Worker, type WorkerList, type WorkerToken } from '../api';
import { cooldownNote, type Resource } from '../components';
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
      <WorkersAndTokens />
    </Page>
  );
}

/** One live list feeds both cards, so a token's row turns "connected" as its worker appears. */
function WorkersAndTokens() {
  const workers = useResource(() => api.get<WorkerList>('/api/workers'));
  const [updatedAt, setUpdatedAt] = useState(() => Date.now());
  useVisibleInterval(() => {
    void workers.reload().then((ok) => ok && setUpdatedAt(Date.now()));
  }, REFRESH_MS);
  return (
    <>
      <LiveWorkers workers={workers} updatedAt={updatedAt} />
      <WorkerTokens workers={workers.data?.data ?? []} />
    </>
  );
}

function LiveWorkers(props: { workers: Resource<WorkerList>; updatedAt: number }) {
  const { workers, updatedAt } = props;

  const list = workers.data?.data ?? [];
  // A fleet: some worker is connected to a router other than this one.
  const fleet = list.some((w) => (w.connections ?? []).some((c) => !c.here));
  return (
    <Section
      title="Connected workers"
      actions={
        <span class="muted small" aria-live="off">
          Updates every 2 s{workers.data ? ` · last ${new Date(updatedAt).toLocaleTimeString()}` : ''}
        </span>
      }
    >
      {workers.data?.fleet_error ? <Notice>{sentence(workers.data.fleet_error)} Only this router's workers are listed.</Notice> : null}
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
                  {fleetNote(w)}
                </>
              ),
            },
            { label: 'Kind', render: (w) => <span class={`tier-badge tier-${w.kind}`}>{w.kind}</span> },
            ...(fleet ? [{ label: 'Routers', render: (w: Worker) => routersCell(w) }] : []),
            {
              label: 'Status',
              render: (w) => (
                <>
                  <Pill kind={w.status === 'idle' ? 'ok' : w.status === 'busy' ? 'busy' : 'off'}>{w.status}</Pill>
                  {cooldownNote(w)}
                </>
              ),
            },
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

/** The routers of the fleet a worker is connected to, each with the worker as it sees it. */
function routersCell(w: Worker) {
  const connections = w.connections ?? [];
  if (!connections.length) return <span class="muted">none</span>;
  return (
    <ul class="plain-list" aria-label={`Routers ${w.name} is connected to`}>
      {connections.map((c) => (
        <li key={c.router + c.worker_id} data-testid="worker-router">
          <strong>{c.router}</strong>
          {c.here ? <span class="muted small"> (this router)</span> : null}
          <div class="muted small">
            {c.status} · {c.slots_in_use} / {w.slots_total} slots · {formatInt(c.jobs_served)} jobs
          </div>
        </li>
      ))}
    </ul>
  );
}

/** A worker shared by several routers: where it is connected (a single router says nothing). */
function fleetNote(w: Worker) {
  const routers = w.routers ?? [];
  if (routers.length < 2) return null;
  const up = routers.filter((r) => r.connected).length;
  return (
    <div class="muted small" title={routers.map((r) => `${r.url}: ${r.connected ? 'connected' : 'not connected'}`).join('\n')}>
      connected to {up} of {routers.length} routers
      {routers
        .filter((r) => !r.connected)
        .map((r) => (
          <div key={r.url} class="break">
            not connected: {r.url}
          </div>
        ))}
    </div>
  );
}

interface CreatedToken extends WorkerToken {
  token: string;
}

/** What the form asked, kept beside the created token to render its command. */
export interface WorkerSetup {
  kind: 'gpu' | 'cli';
  name: string;
  upstream: string;
  cli: 'claude' | 'codex';
  slots: number;
}

/** Single-quotes a value for a POSIX shell when it needs it. */
export function shellQuote(value: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/** The command that starts the worker, every flag filled in; the token goes in the environment (flags show in `ps`). */
export function workerCommand(token: string, setup: WorkerSetup, origin: string): string {
  const common = `--server ${shellQuote(origin)} --name ${shellQuote(setup.name)} --slots ${setup.slots}`;
  return setup.kind === 'gpu'
    ? `AUXOT_WORKER_TOKEN=${token} auxot worker gpu ${common} --upstream ${shellQuote(setup.upstream)}`
    : `AUXOT_WORKER_TOKEN=${token} auxot worker cli ${common} --cli ${setup.cli}`;
}

/** The same, as the env file of the systemd unit `auxot-worker@NAME`. */
export function workerEnvFile(token: string, setup: WorkerSetup, origin: string): string {
  const lines = [
    `AUXOT_WORKER_KIND=${setup.kind}`,
    `AUXOT_SERVER=${origin}`,
    `AUXOT_WORKER_TOKEN=${token}`,
    `AUXOT_WORKER_NAME=${setup.name}`,
    `AUXOT_SLOTS=${setup.slots}`,
    setup.kind === 'gpu' ? `AUXOT_UPSTREAM=${setup.upstream}` : `AUXOT_CLI=${setup.cli}`,
  ];
  return lines.join('\n');
}

/** A file name for the unit instance: letters, digits, dashes. */
function unitName(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '') || 'worker';
}

function modelsCheck(upstream: string): string {
  return `curl -fsS ${shellQuote(upstream.replace(/\/+$/, '') + '/models')}`;
}

function WorkerTokens(props: { workers: Worker[] }) {
  const tokens = useResource(() => api.list<WorkerToken>('/api/worker-tokens'));
  const [name, setName] = useState('');
  const [kind, setKind] = useState<'gpu' | 'cli'>('gpu');
  const [upstream, setUpstream] = useState('');
  const [cli, setCli] = useState<'claude' | 'codex'>('claude');
  const [slots, setSlots] = useState('1');
  const [allowed, setAllowed] = useState('');
  const [created, setCreated] = useState<{ token: CreatedToken; setup: WorkerSetup } | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const [pricing, setPricing] = useState<WorkerToken | null>(null);
  const action = useAction();

  const create = (event: Event) => {
    event.preventDefault();
    setNotice(null);
    void action.run(async () => {
      const slotCount = Number(slots);
      if (!Number.isInteger(slotCount) || slotCount < 1 || slotCount > 256) throw new Error('Slots must be a whole number from 1 to 256.');
      if (kind === 'gpu' && !/^https?:\/\/[^\s]+$/.test(upstream.trim())) throw new Error('The model server URL must start with http:// or https://, e.g. http://127.0.0.1:8080/v1.');
      const allowedModels = allowed
        .split(/[\s,]+/)
        .map((m) => m.trim())
        .filter(Boolean);
      const body: Record<string, unknown> = { name: name.trim(), kind };
      // Sent only when set: a server without model allow-lists for workers would refuse the field.
      if (allowedModels.length) body.allowed_models = allowedModels;
      const token = await api.post<CreatedToken>('/api/worker-tokens', body);
      setCreated({ token, setup: { kind, name: token.name, upstream: upstream.trim(), cli, slots: slotCount } });
      setName('');
      setAllowed('');
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
      if (created?.token.id === token.id) setCreated(null);
      if (pricing?.id === token.id) setPricing(null);
      setNotice(`Revoked the worker token “${token.name}”.`);
      await tokens.reload();
    } catch (e) {
      setRevokeError(`The token “${token.name}” was not revoked: ${describeError(e)}`);
    }
  };

  const connectedTo = (t: WorkerToken) => props.workers.filter((w) => w.token_id === t.id && w.status !== 'offline');
  const origin = window.location.origin;

  return (
    <Section title="Worker tokens">
      <form class="form-grid" onSubmit={create} aria-label="New worker token">
        <Field label="Kind">
          {(p) => (
            <select {...p} name="kind" value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value as 'gpu' | 'cli')}>
              <option value="gpu">GPU worker (local model server)</option>
              <option value="cli">CLI worker (Claude Code, Codex)</option>
            </select>
          )}
        </Field>
        <Field label="Worker name" hint="Shown in the workers list; the worker carries it.">
          {(p) => <input {...p} name="worker_name" required maxLength={64} autoComplete="off" placeholder="gpu-box-1" value={name} onInput={(e) => setName(inputValue(e))} />}
        </Field>
        {kind === 'gpu' ? (
          <Field label="Model server URL" hint="Its OpenAI base URL as the worker machine sees it, with /v1 (llama.cpp, vLLM, Ollama: http://127.0.0.1:11434/v1).">
            {(p) => <input {...p} name="upstream" required autoComplete="off" placeholder="http://127.0.0.1:8000/v1" value={upstream} onInput={(e) => setUpstream(inputValue(e))} />}
          </Field>
        ) : (
          <Field label="CLI" hint="Logged in on the worker machine under the user that runs the worker.">
            {(p) => (
              <select {...p} name="cli" value={cli} onChange={(e) => setCli((e.target as HTMLSelectElement).value as 'claude' | 'codex')}>
                <option value="claude">Claude Code (claude)</option>
                <option value="codex">Codex (codex)</option>
              </select>
            )}
          </Field>
        )}
        <Field label="Slots" hint="Requests it runs at once.">
          {(p) => <input {...p} name="slots" type="text" inputMode="numeric" required value={slots} onInput={(e) => setSlots(inputValue(e))} />}
        </Field>
        <Field label="Allowed models" optional hint="Only these models may be offered with this token (spaces or commas). Empty: any.">
          {(p) => <input {...p} name="allowed_models" autoComplete="off" placeholder="qwen2.5-7b-instruct" value={allowed} onInput={(e) => setAllowed(inputValue(e))} />}
        </Field>
        <div class="form-footer">
          <button type="submit" class="primary" disabled={action.busy}>
            {action.busy ? 'Creating…' : 'Create token'}
          </button>
        </div>
      </form>
      <ErrorMessage title="The token was not created." error={action.error} />
      {created && (
        <div class="once" role="region" aria-label="New worker token">
          <p>
            <strong>Copy the token for “{created.token.name}” now.</strong> It is shown only this once.
          </p>
          <CodeBox label="Worker token" value={created.token.token} testId="worker-token" />
          <ol class="steps">
            <li>
              Install auxot on the worker machine, the same version as this server: the <code>.deb</code> (<code>sudo apt install ./auxot_*.deb</code>) or the install script from the
              release (<code>sudo sh packaging/install.sh</code>); either puts <code>auxot</code> in <code>/usr/bin</code>.
            </li>
            {created.setup.kind === 'gpu' ? (
              <li>
                Check that the model server answers there (it must list its models):
                <CodeBox label="Check the model server" value={modelsCheck(created.setup.upstream)} testId="upstream-check" />
              </li>
            ) : (
              <li>
                Check that <code>{created.setup.cli}</code> runs and is logged in for that user: <code>{created.setup.cli} --version</code>.
              </li>
            )}
            <li>
              Start the worker:
              <CodeBox label="Worker command" value={workerCommand(created.token.token, created.setup, origin)} copyLabel="Copy command" testId="worker-command" />
            </li>
            <li>
              Or run it as a service: save this as <code>/etc/auxot/worker-{unitName(created.setup.name)}.env</code> (mode 0600), then{' '}
              <code>sudo systemctl enable --now auxot-worker@{unitName(created.setup.name)}</code>.
              <CodeBox label="systemd env file" value={workerEnvFile(created.token.token, created.setup, origin)} copyLabel="Copy env file" testId="worker-env" />
            </li>
          </ol>
          <p data-testid="worker-wait">
            {connectedTo(created.token).length ? (
              <Pill kind="ok">connected</Pill>
            ) : (
              <>
                <span class="spinner" aria-hidden="true" /> Waiting for the worker to connect…
              </>
            )}
          </p>
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
            {
              label: 'Worker',
              render: (t) => {
                const live = connectedTo(t);
                return live.length ? (
                  <span data-testid="token-status">
                    <Pill kind="ok">connected</Pill> <span class="muted small">{live.map((w) => w.name).join(', ')}</span>
                  </span>
                ) : (
                  <span class="muted" data-testid="token-status">
                    waiting for the worker
                  </span>
                );
              },
            },
            { label: 'Token', render: (t) => <code class="nowrap">{t.prefix}…</code> },
            {
              label: 'Models',
              render: (t) => (t.allowed_models && t.allowed_models.length ? <span class="break">{t.allowed_models.join(', ')}</span> : <span class="muted">any</span>),
            },
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
