// The admin API client: one `request` that always resolves to data or throws an `ApiError`
// whose message is fit to show as is. The session is the HttpOnly cookie set by /api/login.

export type ProviderType = 'openai' | 'anthropic' | 'openai-compatible';
export type Tier = 'gpu' | 'cli' | 'cloud';
export const TIERS: Tier[] = ['gpu', 'cli', 'cloud'];
export const TIER_LABELS: Record<Tier, string> = { gpu: 'GPU workers', cli: 'CLI workers', cloud: 'Cloud providers' };

export interface Provider {
  id: string;
  name: string;
  type: ProviderType;
  base_url: string;
  key_hint: string;
  model_count: number;
  models_fetched_at: string | null;
  enabled: boolean;
  priority: number;
  created_at: string;
  updated_at: string;
  /** Set while the dispatcher rests the provider after failures (absent in older builds). */
  cooldown_until?: string | null;
  cooldown_reason?: string | null;
  limited_until?: string | null;
}

export interface Model {
  id: string;
  display_name?: string;
  provider_id: string;
  provider: string;
  provider_type: ProviderType;
  provider_enabled: boolean;
  fetched_at: string;
}

export interface Alias {
  name: string;
  gpu: string | null;
  cli: string | null;
  cloud: string | null;
}

export interface Worker {
  id: string;
  token_id?: string;
  kind: 'gpu' | 'cli';
  name: string;
  version: string;
  models: string[];
  slots_total: number;
  slots_in_use: number;
  jobs_served: number;
  connected_at: string;
  last_heartbeat: string;
  status: 'idle' | 'busy' | 'offline';
  /** The worker process's id: the same worker has the same one on every router of a fleet. */
  instance_id?: string | null;
  /** The routers it dials (by the URL it uses) and whether each connection is up. */
  routers?: { url: string; connected: boolean }[];
  /** Connected to the router that answered (absent in builds without the fleet view). */
  connected_here?: boolean;
  /** Every router of the fleet it is connected to, by router name, as each sees it. */
  connections?: WorkerConnection[];
  cooldown_until?: string | null;
  cooldown_reason?: string | null;
  limited_until?: string | null;
}

/** One router a worker is connected to, and the worker as that router sees it. */
export interface WorkerConnection {
  router: string;
  /** The router that answered the list. */
  here: boolean;
  worker_id: string;
  status: 'idle' | 'busy';
  slots_in_use: number;
  slots_in_use_here: number;
  jobs_served: number;
  connected_at: string;
  last_heartbeat: string;
}

/** `GET /api/workers`: the fleet's workers, and why other routers' could not be read. */
export interface WorkerList {
  data: Worker[];
  fleet_error?: string;
}

export interface WorkerToken {
  id: string;
  name: string;
  kind: 'gpu' | 'cli';
  prefix: string;
  created_at: string;
  /** A CLI worker's fixed subscription, shown beside its usage. */
  monthly_price_usd?: number | null;
  /** Models the worker may offer; empty or absent: any (absent in builds without it). */
  allowed_models?: string[] | null;
}

export interface ApiKey {
  id: string;
  name: string;
  role: 'admin' | 'client';
  prefix: string;
  created_at: string;
  rpm_limit?: number | null;
  tpm_limit?: number | null;
  monthly_spend_cap_usd?: number | null;
  allowed_models?: string[];
  allowed_tiers?: Tier[];
  expires_at?: string | null;
  expired?: boolean;
  spent_this_month_usd?: number;
  requests_this_month?: number;
  last_used_at?: string | null;
}

export type AdminRole = 'admin' | 'viewer';

export interface AdminAccount {
  username: string;
  role: AdminRole;
  created_at: string;
}

/** One row of the request log: where a request went, what it cost, how long it took. Never its text. */
export interface RequestRow {
  id: string;
  time: string;
  api_key_id: string | null;
  api_key_name: string | null;
  agent: string | null;
  session: string | null;
  model_asked: string;
  model_served: string | null;
  tier: Tier | null;
  route: string | null;
  status: number;
  outcome: string;
  estimated: boolean;
  input_tokens: number;
  output_tokens: number;
  cache_read_tokens?: number;
  cache_write_5m_tokens?: number;
  cache_write_1h_tokens?: number;
  reasoning_tokens?: number;
  cost_usd: number;
  cloud_equivalent_usd: number;
  cloud_equivalent_model?: string | null;
  /** Why that model: alias, worker, model, same_model, default or builtin_default. */
  cloud_equivalent_source?: string | null;
  ttfb_ms: number | null;
  total_ms: number;
  queue_ms: number | null;
  attempts: { tier: string; route: string; error: string | null }[];
}

export interface RequestPage {
  requests: RequestRow[];
  next_cursor: string | null;
}

export interface DayLatency {
  day: string;
  tier: string;
  ttfb_p95_ms: number | null;
  total_p50_ms: number | null;
  total_p95_ms: number | null;
  requests: number;
}

export interface LatencyRow {
  tier: string;
  route: string;
  ttfb_p50_ms: number | null;
  ttfb_p95_ms: number | null;
  ttfb_p99_ms: number | null;
  total_p50_ms: number | null;
  total_p95_ms: number | null;
  total_p99_ms: number | null;
  requests: number;
}

export interface Agent {
  name: string;
  system_prompt: string | null;
  model: string;
  tier_order: Tier[] | null;
  queue_timeout_ms: number | null;
  created_at: string;
  updated_at: string;
}

export interface RoutingSettings {
  default_order: Tier[];
  queue_timeout_ms: number;
}

export interface Price {
  model: string;
  input_per_mtok: number;
  output_per_mtok: number;
}

export interface ConversationSummary {
  id: string;
  title: string;
  updated_at: string;
}

/** A stored message of the admin agent, in OpenAI's chat format. */
export interface StoredMessage {
  role: 'user' | 'assistant' | 'tool' | 'system';
  content?: string | null;
  tool_calls?: { id: string; type?: string; function: { name: string; arguments: string } }[];
  tool_call_id?: string;
  name?: string;
}

export interface Conversation extends ConversationSummary {
  created_at: string;
  messages: StoredMessage[];
  pending_confirmation: boolean;
}

export type UsageGroupBy = 'tier' | 'provider' | 'model' | 'api_key' | 'agent' | 'day' | 'day_tier';

export interface UsageFigures {
  requests: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
  cloud_equivalent_usd: number;
  saved_usd: number;
  /** Requests whose token counts were estimated (no upstream reported any). */
  estimated?: number;
}

export interface UsageGroup extends UsageFigures {
  key: string;
}

export interface UsageSubscription {
  worker_token_id: string;
  name: string;
  kind: 'gpu' | 'cli';
  monthly_price_usd: number;
}

export interface UsageReport {
  from: string;
  to: string;
  group_by: UsageGroupBy;
  groups: UsageGroup[];
  totals: UsageFigures;
  /** CLI workers' fixed monthly prices, when any are set. */
  subscriptions?: UsageSubscription[];
  /** Latency percentiles per tier and route (absent in builds without them). */
  latency?: LatencyRow[];
  /** p50/p95 per UTC day and tier, for latency over time (absent in builds without it). */
  latency_by_day?: DayLatency[];
}

/** An error whose `message` can be shown to the user as is. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** Technical detail (the browser's own error, the method and path), behind a "details" toggle. */
  readonly detail?: string;

  constructor(status: number, code: string, message: string, detail?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** Thrown when the user cancelled a call (its AbortSignal fired). */
export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === 'AbortError';
}

/** Called when an authenticated call answers 401: the session ended under us. */
let onSessionLost: (() => void) | null = null;
export function setSessionLostHandler(handler: (() => void) | null): void {
  onSessionLost = handler;
}

const PUBLIC_PATHS = new Set(['/api/setup', '/api/login', '/api/session']);

export async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: { accept: 'application/json' }, signal };
  if (body !== undefined) {
    init.headers = { ...init.headers, 'content-type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  let response: Response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiError(0, 'network', 'Could not reach the auxot server. Check that it is running and that this machine can reach it, then try again.', `${method} ${path}: ${String(e)}`);
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (!response.ok) throw failure(response, path, data);
  if (data === undefined) {
    throw new ApiError(response.status, 'bad_response', 'The server sent a reply this page cannot read. Reload the page; if it keeps happening, check the server log.');
  }
  return data as T;
}

/** The `ApiError` for a failed answer (its JSON body already parsed, if any). */
function failure(response: Response, path: string, data: unknown): ApiError {
  const error = (data as { error?: { code?: string; message?: string } } | undefined)?.error;
  const raw = error?.message ? sentence(error.message) : `The server answered ${response.status} ${response.statusText || ''}`.trim() + '.';
  const plain = plainWords(raw);
  if (response.status === 401 && !PUBLIC_PATHS.has(path) && onSessionLost) onSessionLost();
  return new ApiError(response.status, error?.code ?? 'http_' + response.status, plain ?? raw, plain ? raw : undefined);
}

/** Low-level network failures (a provider's host unreachable, say) as words for a person; the original stays in the details. */
export function plainWords(message: string): string | null {
  const m = message.toLowerCase();
  if (/os error 111|connection refused/.test(m)) return 'Nothing answered at that address: the connection was refused. Check the URL and port, and that the service is running.';
  if (/dns error|failed to lookup|name or service not known|no such host/.test(m)) return 'That host name could not be found. Check the URL for typos.';
  if (/timed out|timeout|deadline/.test(m)) return 'The other side took too long to answer. Check the URL, or try again later.';
  if (/certificate|tls|ssl/.test(m)) return 'A secure connection could not be made (TLS certificate problem). Check the URL uses the right scheme and host.';
  if (/os error 113|no route to host|network is unreachable|os error 101/.test(m)) return 'That address cannot be reached from the auxot server (no route). Check the URL and the network.';
  return null;
}

/** One server-sent event: its name and its JSON data. */
export interface StreamEvent {
  event: string;
  data: unknown;
}

/**
 * POSTs `body` and calls `onEvent` for each server-sent event of the answer, in order, until
 * the stream ends. A refused request (4xx/5xx before any event) throws an `ApiError`, like
 * `request`. POST rules out EventSource, so the stream is read with fetch.
 */
export async function postStream(path: string, body: unknown, onEvent: (event: StreamEvent) => void): Promise<void> {
  let response: Response;
  try {
    response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { accept: 'text/event-stream', 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network', 'Could not reach the auxot server. Check that it is running and that this machine can reach it, then try again.');
  }
  if (!response.ok) {
    const text = await response.text().catch(() => '');
    let data: unknown = undefined;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    throw failure(response, path, data);
  }
  if (!response.body) throw new ApiError(response.status, 'bad_response', 'The server sent a reply this page cannot read. Reload the page and try again.');
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const dispatch = (frame: string) => {
    let event = 'message';
    const data: string[] = [];
    for (const line of frame.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0 && event === 'message') return;
    const text = data.join('\n');
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = text;
    }
    onEvent({ event, data: parsed });
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch {
    throw new ApiError(0, 'network', 'The connection to the server broke off mid-answer. What already ran is kept: reopen the conversation to see it.');
  }
  buffer += decoder.decode();
  if (buffer.trim()) dispatch(buffer);
}

/** Server messages are lower-case fragments ("provider not found"): make them sentences. */
function sentence(message: string): string {
  const trimmed = message.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : capital + '.';
}

/** Turns anything thrown into words for the user. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error && error.message) return error.message;
  return 'Something went wrong. Reload the page and try again.';
}

export const api = {
  get: <T>(path: string) => request<T>('GET', path),
  post: <T>(path: string, body?: unknown, signal?: AbortSignal) => request<T>('POST', path, body ?? {}, signal),
  put: <T>(path: string, body: unknown) => request<T>('PUT', path, body),
  patch: <T>(path: string, body: unknown, signal?: AbortSignal) => request<T>('PATCH', path, body, signal),
  delete: (path: string) => request<void>('DELETE', path),
  list: async <T>(path: string): Promise<T[]> => (await request<{ data: T[] }>('GET', path)).data,
};

export const seg = encodeURIComponent;

export { sentence };
