// Requests: the request log, newest first, refreshed every 3 s while the tab is visible and no
// older page is open. Each row: where the request went, what it cost, how long it took, and
// on expand the failover trail. Never any prompt or answer text (the API has none).
import { useEffect, useState } from 'preact/hooks';
import { ApiError, api, TIERS, type ApiKey, type RequestPage, type RequestRow } from '../api';
import { ErrorMessage, Estimated, Field, Loading, Page, Section, Time, Usd, formatInt, formatMs, inputValue, useResource, useVisibleInterval } from '../components';
import { navigate } from '../router';
import { EQUIVALENT_SOURCE } from './equivalents';

const REFRESH_MS = 3000;
const PAGE = 50;

export interface RequestFilters {
  from: string;
  to: string;
  tier: string;
  route: string;
  model: string;
  api_key: string;
  agent: string;
  session: string;
  outcome: string;
  status: string;
}

const EMPTY: RequestFilters = { from: '', to: '', tier: '', route: '', model: '', api_key: '', agent: '', session: '', outcome: '', status: '' };

/** Filters from the address bar, so a link from the Overview (`/requests?tier=cloud`) opens filtered. */
function filtersFromLocation(): RequestFilters {
  const query = new URLSearchParams(window.location.search);
  const out = { ...EMPTY };
  for (const key of Object.keys(EMPTY) as (keyof RequestFilters)[]) out[key] = query.get(key) ?? '';
  return out;
}

function queryOf(filters: RequestFilters, cursor?: string | null): string {
  const query = new URLSearchParams({ limit: String(PAGE) });
  for (const [key, value] of Object.entries(filters)) {
    if (!value) continue;
    // datetime-local has no zone: it is the browser's local time.
    query.set(key, key === 'from' || key === 'to' ? new Date(value).toISOString() : value);
  }
  if (cursor) query.set('cursor', cursor);
  return query.toString();
}

type Loaded = { available: false } | { available: true; page: RequestPage };

export function RequestsPage() {
  const [filters, setFilters] = useState<RequestFilters>(filtersFromLocation);
  const [draft, setDraft] = useState<RequestFilters>(filters);
  const [older, setOlder] = useState<RequestRow[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [olderError, setOlderError] = useState<unknown>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [updatedAt, setUpdatedAt] = useState(() => Date.now());
  const keys = useResource(() => api.list<ApiKey>('/api/api-keys').catch(() => [] as ApiKey[]));

  const log = useResource<Loaded>(async () => {
    try {
      return { available: true, page: await api.get<RequestPage>(`/api/requests?${queryOf(filters)}`) };
    } catch (e) {
      if (e instanceof ApiError && e.status === 404 && e.code === 'not_found' && /endpoint/i.test(e.message)) return { available: false };
      throw e;
    }
  }, [filters]);

  // New rows arrive on the first page; an open older page would shift under the reader.
  useVisibleInterval(() => {
    if (older.length === 0) void log.reload().then((ok) => ok && setUpdatedAt(Date.now()));
  }, REFRESH_MS);

  useEffect(() => {
    setOlder([]);
    setCursor(null);
  }, [filters]);

  const apply = (event: Event) => {
    event.preventDefault();
    setFilters({ ...draft });
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(draft)) if (v) query.set(k, v);
    navigate(`/requests${query.toString() ? '?' + query : ''}`, { replace: true });
  };
  const clear = () => {
    setDraft({ ...EMPTY });
    setFilters({ ...EMPTY });
    navigate('/requests', { replace: true });
  };

  const loadOlder = async () => {
    const next = cursor ?? (log.data?.available ? log.data.page.next_cursor : null);
    if (!next) return;
    setLoadingOlder(true);
    setOlderError(null);
    try {
      const page = await api.get<RequestPage>(`/api/requests?${queryOf(filters, next)}`);
      setOlder((rows) => [...rows, ...page.requests]);
      setCursor(page.next_cursor);
    } catch (e) {
      setOlderError(e);
    } finally {
      setLoadingOlder(false);
    }
  };

  const data = log.data;
  const rows = data?.available ? [...data.page.requests, ...older] : [];
  const more = older.length > 0 ? cursor : data?.available ? data.page.next_cursor : null;
  const set = (key: keyof RequestFilters) => (e: Event) => setDraft({ ...draft, [key]: inputValue(e) });
  const keyName = new Map((keys.data ?? []).map((k) => [k.id, k.name]));

  return (
    <Page title="Requests" intro="Every request: the tier and route it took, what it cost and how long it took. Prompts and answers are never recorded.">
      <Section title="Filters">
        <form class="filters" onSubmit={apply} aria-label="Filter requests">
          <Field label="From" optional>
            {(p) => <input {...p} type="datetime-local" name="from" value={draft.from} onInput={set('from')} />}
          </Field>
          <Field label="To" optional>
            {(p) => <input {...p} type="datetime-local" name="to" value={draft.to} onInput={set('to')} />}
          </Field>
          <Field label="Tier">
            {(p) => (
              <select {...p} name="tier" value={draft.tier} onChange={set('tier')}>
                <option value="">any</option>
                {TIERS.map((t) => (
                  <option value={t}>{t}</option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Outcome">
            {(p) => (
              <select {...p} name="outcome" value={draft.outcome} onChange={set('outcome')}>
                <option value="">any</option>
                <option value="ok">ok</option>
                <option value="error">failed</option>
                <option value="cancelled">cancelled</option>
              </select>
            )}
          </Field>
          <Field label="API key">
            {(p) => (
              <select {...p} name="api_key" value={draft.api_key} onChange={set('api_key')}>
                <option value="">any</option>
                {(keys.data ?? []).map((k) => (
                  <option value={k.id}>{k.name}</option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Model" optional>
            {(p) => <input {...p} name="model" autoComplete="off" placeholder="auto" value={draft.model} onInput={set('model')} />}
          </Field>
          <Field label="Route" optional>
            {(p) => <input {...p} name="route" autoComplete="off" placeholder="provider or worker" value={draft.route} onInput={set('route')} />}
          </Field>
          <Field label="Agent" optional>
            {(p) => <input {...p} name="agent" autoComplete="off" value={draft.agent} onInput={set('agent')} />}
          </Field>
          <Field label="Session" optional>
            {(p) => <input {...p} name="session" autoComplete="off" value={draft.session} onInput={set('session')} />}
          </Field>
          <Field label="Status" optional>
            {(p) => <input {...p} name="status" inputMode="numeric" autoComplete="off" placeholder="429" value={draft.status} onInput={set('status')} />}
          </Field>
          <div class="button-row filter-actions">
            <button type="submit" class="primary">
              Apply filters
            </button>
            <button type="button" class="secondary" onClick={clear}>
              Clear
            </button>
          </div>
        </form>
      </Section>
      <Section
        title="Recent requests"
        actions={
          <span class="muted small" aria-live="off">
            {older.length ? 'Paused while older requests are open' : `Live · every 3 s${data ? ` · ${new Date(updatedAt).toLocaleTimeString()}` : ''}`}
          </span>
        }
      >
        {log.error ? <ErrorMessage title={data ? 'The log could not be refreshed; retrying.' : 'The requests could not be loaded.'} error={log.error} onRetry={() => void log.reload()} /> : null}
        {!data && log.loading && <Loading what="requests" />}
        {data && !data.available && (
          <p data-testid="requests-unavailable">
            This auxot server has no request log (<code>/api/requests</code>) yet. Requests are still routed and counted on the Usage page; this page fills in once the server is upgraded.
          </p>
        )}
        {data?.available && rows.length === 0 && <p class="empty">No requests match. Send one through the Playground, or clear the filters.</p>}
        {rows.length > 0 && <RequestTable rows={rows} keyName={keyName} />}
        <ErrorMessage title="Older requests could not be loaded." error={olderError} onRetry={() => void loadOlder()} />
        {more && (
          <button type="button" class="secondary" onClick={() => void loadOlder()} disabled={loadingOlder}>
            {loadingOlder ? 'Loading…' : 'Load older requests'}
          </button>
        )}
      </Section>
    </Page>
  );
}

function outcomeKind(row: RequestRow): string {
  if (row.outcome === 'ok') return 'ok';
  if (row.outcome === 'cancelled') return 'off';
  return 'error';
}

function RequestTable(props: { rows: RequestRow[]; keyName: Map<string, string> }) {
  const [open, setOpen] = useState<Set<string>>(new Set());
  const toggle = (id: string) => {
    const next = new Set(open);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setOpen(next);
  };
  return (
    <div class="table-wrap">
      <table class="data requests" data-testid="requests-table">
        <caption class="visually-hidden">Recent requests, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Tier · route</th>
            <th scope="col">Model</th>
            <th scope="col">Status</th>
            <th scope="col" class="num">
              Tokens
            </th>
            <th scope="col" class="num">
              Cost
            </th>
            <th scope="col" class="num">
              TTFB
            </th>
            <th scope="col" class="num">
              Total
            </th>
            <th scope="col" class="num">
              Queue
            </th>
            <th scope="col">
              <span class="visually-hidden">Details</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((r) => {
            const expanded = open.has(r.id);
            const failovers = r.attempts.filter((a) => a.error).length;
            return (
              <>
                <tr key={r.id} class={outcomeKind(r) === 'error' ? 'row-error' : ''} data-testid="request-row">
                  <td data-label="Time">
                    <div class="cell">
                      <Time iso={r.time} />
                      <div class="muted small">{r.api_key_name ?? (r.api_key_id ? props.keyName.get(r.api_key_id) ?? r.api_key_id.slice(0, 8) : r.agent ? `agent ${r.agent}` : 'no key')}</div>
                    </div>
                  </td>
                  <td data-label="Tier · route">
                    <div class="cell">
                      {r.tier ? <span class={`tier-badge tier-${r.tier}`}>{r.tier}</span> : <span class="tier-badge tier-none">none</span>} <span class="break">{r.route ?? '—'}</span>
                    </div>
                  </td>
                  <td data-label="Model">
                    <div class="cell break">
                      {r.model_asked || <span class="muted">—</span>}
                      {r.model_served && r.model_served !== r.model_asked && <span class="muted"> → {r.model_served}</span>}
                    </div>
                  </td>
                  <td data-label="Status">
                    <div class="cell">
                      <span class={`pill pill-${outcomeKind(r)}`}>{r.status}</span> <span class="muted small">{r.outcome}</span>
                      {failovers > 0 && <div class="small">{failovers} failover{failovers > 1 ? 's' : ''}</div>}
                    </div>
                  </td>
                  <td data-label="Tokens" class="num">
                    <div class="cell">
                      {formatInt(r.input_tokens)} / {formatInt(r.output_tokens)}
                      {r.estimated && <Estimated />}
                    </div>
                  </td>
                  <td data-label="Cost" class="num">
                    <div class="cell">
                      <Usd value={r.cost_usd} />
                      {r.tier !== 'cloud' && r.cloud_equivalent_usd > 0 && (
                        <div class="muted small">
                          saved <Usd value={r.cloud_equivalent_usd} />
                        </div>
                      )}
                    </div>
                  </td>
                  <td data-label="TTFB" class="num">
                    <div class="cell">{formatMs(r.ttfb_ms)}</div>
                  </td>
                  <td data-label="Total" class="num">
                    <div class="cell">{formatMs(r.total_ms)}</div>
                  </td>
                  <td data-label="Queue" class="num">
                    <div class="cell">{formatMs(r.queue_ms)}</div>
                  </td>
                  <td data-label="Details" class="actions">
                    <div class="cell">
                      <button type="button" class="secondary small" aria-expanded={expanded} aria-controls={`req-${r.id}`} onClick={() => toggle(r.id)}>
                        {expanded ? 'Hide' : 'Trail'}
                      </button>
                    </div>
                  </td>
                </tr>
                {expanded && (
                  <tr class="trail-row" id={`req-${r.id}`}>
                    <td colSpan={10}>
                      <Trail row={r} />
                    </td>
                  </tr>
                )}
              </>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

/** The log lists the failed attempts; the target that answered is the row's own tier and route. */
function servedLast(r: RequestRow): boolean {
  if (r.outcome !== 'ok' || !r.tier || !r.route) return false;
  const last = r.attempts[r.attempts.length - 1];
  return !last || Boolean(last.error) || last.route !== r.route;
}

function Trail(props: { row: RequestRow }) {
  const r = props.row;
  return (
    <div class="trail" data-testid="request-trail">
      <ol>
        {r.attempts.length === 0 && !servedLast(r) && <li class="muted">No target was tried (refused before dispatch: {r.outcome}).</li>}
        {r.attempts.map((a, i) => (
          <li class={a.error ? 'failed' : 'served'}>
            <span class={`tier-badge tier-${a.tier}`}>{a.tier}</span> {a.route}: {a.error ? <span class="danger-text">{a.error}</span> : i === r.attempts.length - 1 && r.outcome === 'ok' ? 'served it' : r.outcome}
          </li>
        ))}
        {servedLast(r) && (
          <li class="served">
            <span class={`tier-badge tier-${r.tier}`}>{r.tier}</span> {r.route}: served it
          </li>
        )}
      </ol>
      <p class="muted small">
        {r.agent && <>Agent {r.agent} · </>}
        {r.session && <>Session {r.session} · </>}
        {r.cache_read_tokens ? <>{formatInt(r.cache_read_tokens)} cached input tokens · </> : null}
        {r.reasoning_tokens ? <>{formatInt(r.reasoning_tokens)} reasoning tokens · </> : null}
        {r.cloud_equivalent_model && r.tier !== 'cloud' && (
          <>
            <span data-testid="request-equivalent">
              Spend avoided priced as {r.cloud_equivalent_model}
              {r.cloud_equivalent_source && EQUIVALENT_SOURCE[r.cloud_equivalent_source] ? ` (${EQUIVALENT_SOURCE[r.cloud_equivalent_source]})` : ''}: <Usd value={r.cloud_equivalent_usd} />
            </span>{' '}
            ·{' '}
          </>
        )}
        Request id <code>{r.id}</code>
      </p>
    </div>
  );
}
