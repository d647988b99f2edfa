// The landing page: what is configured, what is online, and what to do next.
import { ApiError, api, type ApiKey, type Model, type Provider, type RoutingSettings, type UsageReport, type Worker } from '../api';
import { CodeBox, ErrorMessage, Loading, Page, Section, Usd, formatInt, formatMs, useResource, useVisibleInterval } from '../components';
import { HBarChart } from '../charts';
import { Link } from '../router';

interface Summary {
  providers: Provider[];
  models: Model[];
  workers: Worker[];
  keys: ApiKey[];
  routing: RoutingSettings;
  /** The last 24 hours by tier; null on a server without usage accounting. */
  day: UsageReport | null;
}

export function OverviewPage() {
  const summary = useResource<Summary>(async () => {
    const now = new Date();
    const query = new URLSearchParams({ from: new Date(now.getTime() - 86_400_000).toISOString(), to: now.toISOString(), group_by: 'tier' });
    const [providers, models, workers, keys, settings, day] = await Promise.all([
      api.list<Provider>('/api/providers'),
      api.list<Model>('/api/models'),
      api.list<Worker>('/api/workers'),
      api.list<ApiKey>('/api/api-keys'),
      api.get<{ routing: RoutingSettings }>('/api/settings'),
      api.get<UsageReport>(`/api/usage?${query}`).catch((e) => {
        if (e instanceof ApiError && e.status === 404) return null;
        throw e;
      }),
    ]);
    return { providers, models, workers, keys, routing: settings.routing, day };
  });
  useVisibleInterval(() => void summary.reload(), 15_000);
  const origin = window.location.origin;
  const data = summary.data;
  const online = data?.workers.filter((w) => w.status !== 'offline') ?? [];
  return (
    <Page title="Overview" intro="auxot sends each request to the cheapest tier that can take it now: GPU workers, then CLI workers, then cloud providers.">
      <ErrorMessage title="The overview could not be loaded." error={summary.error} onRetry={() => void summary.reload()} />
      {!data && summary.loading && <Loading what="the overview" />}
      {data && (
        <>
          {data.day && <LastDay report={data.day} workers={data.workers} />}
          <div class="stats">
            <Stat label="Cloud providers" value={`${data.providers.filter((p) => p.enabled).length} / ${data.providers.length}`} note="enabled / added" href="/settings/providers" />
            <Stat label="Cloud models" value={formatInt(data.models.length)} note="cached from providers" href="/settings/models" />
            <Stat
              label="Workers online"
              value={formatInt(online.length)}
              note={`${online.reduce((n, w) => n + w.slots_in_use, 0)} of ${online.reduce((n, w) => n + w.slots_total, 0)} slots busy`}
              href="/workers"
            />
            <Stat label="API keys" value={formatInt(data.keys.length)} note="for clients and admins" href="/api-keys" />
          </div>
          <div class="grid-2">
            <Section title="Getting started">
              <ol class="checklist">
                <Step done={data.providers.length > 0}>
                  <Link href="/settings/providers">Add a cloud provider</Link> (OpenAI, Anthropic or any OpenAI-compatible API): the always-available fallback.
                </Step>
                <Step done={data.workers.length > 0}>
                  <Link href="/workers">Connect a GPU or CLI worker</Link> to serve requests at no extra cost (optional).
                </Step>
                <Step done={data.keys.length > 0}>
                  <Link href="/api-keys">Create an API key</Link> for each tool or person that calls auxot.
                </Step>
              </ol>
              <p class="hint">
                Routing order now: <strong>{data.routing.default_order.join(' → ') || 'none'}</strong> (<Link href="/settings/routing">change</Link>).
              </p>
            </Section>
            <Section title="Point your clients here">
              <p>OpenAI SDKs and tools (base URL includes /v1):</p>
              <CodeBox label="OpenAI base URL" value={`${origin}/v1`} />
              <p>Anthropic SDKs and Claude Code (ANTHROPIC_BASE_URL, no /v1):</p>
              <CodeBox label="Anthropic base URL" value={origin} />
              <p class="hint">
                Use an auxot API key as the SDK’s API key. The model “auto” takes whatever a worker serves; give it a cloud model under{' '}
                <Link href="/settings/models">Models → Aliases</Link> to let it reach the cloud too.
              </p>
            </Section>
          </div>
        </>
      )}
    </Page>
  );
}

const TIER_ORDER = ['gpu', 'cli', 'cloud'];

function LastDay(props: { report: UsageReport; workers: Worker[] }) {
  const t = props.report.totals;
  const groups = [...props.report.groups].sort((a, b) => (TIER_ORDER.indexOf(a.key) + 1 || 9) - (TIER_ORDER.indexOf(b.key) + 1 || 9));
  const p95 = (props.report.latency ?? []).reduce<number | null>((worst, r) => (r.total_p95_ms != null && (worst == null || r.total_p95_ms > worst) ? r.total_p95_ms : worst), null);
  const online = props.workers.filter((w) => w.status !== 'offline');
  const busy = online.reduce((n, w) => n + w.slots_in_use, 0);
  const slots = online.reduce((n, w) => n + w.slots_total, 0);
  return (
    <Section title="Last 24 hours" actions={<Link href="/requests">See every request →</Link>}>
      <div class="stats" data-testid="last-24h">
        <Link href="/requests" class="stat">
          <span class="stat-label">Requests</span>
          <span class="stat-value">{formatInt(t.requests)}</span>
          <span class="stat-note">{t.errors ? `${formatInt(t.errors)} failed` : 'none failed'}</span>
        </Link>
        <Link href="/usage" class="stat">
          <span class="stat-label">Cloud spend</span>
          <span class="stat-value">
            <Usd value={t.cost_usd} />
          </span>
          <span class="stat-note">paid to providers</span>
        </Link>
        <Link href="/usage" class="stat highlight">
          <span class="stat-label">Avoided</span>
          <span class="stat-value">
            <Usd value={t.saved_usd} />
          </span>
          <span class="stat-note">served by your workers</span>
        </Link>
        <Link href="/usage" class="stat">
          <span class="stat-label">p95 latency</span>
          <span class="stat-value">{formatMs(p95)}</span>
          <span class="stat-note">{p95 == null ? 'not reported by this server' : 'slowest tier, total time'}</span>
        </Link>
        <Link href="/workers" class="stat">
          <span class="stat-label">Workers busy</span>
          <span class="stat-value">
            {formatInt(busy)} / {formatInt(slots)}
          </span>
          <span class="stat-note">slots in use now</span>
        </Link>
      </div>
      {groups.length > 0 ? (
        <HBarChart
          title="Requests per tier, last 24 hours"
          rows={groups.map((g) => ({ label: g.key === 'none' ? 'not routed' : g.key, value: g.requests, class: `fill-tier-${g.key}`, text: formatInt(g.requests) }))}
        />
      ) : (
        <p class="empty">No requests in the last 24 hours.</p>
      )}
      {groups.length > 0 && (
        <p class="tier-links" data-testid="last-24h-links">
          Open in Requests:{' '}
          {groups
            .filter((g) => TIER_ORDER.includes(g.key))
            .map((g) => (
              <>
                <Link href={`/requests?tier=${g.key}`}>
                  {g.key} ({formatInt(g.requests)})
                </Link>{' '}
                ·{' '}
              </>
            ))}
          <Link href="/requests?outcome=error">failed ({formatInt(t.errors)})</Link>
        </p>
      )}
    </Section>
  );
}

function Stat(props: { label: string; value: string; note: string; href: string }) {
  return (
    <Link href={props.href} class="stat">
      <span class="stat-label">{props.label}</span>
      <span class="stat-value">{props.value}</span>
      <span class="stat-note">{props.note}</span>
    </Link>
  );
}

function Step(props: { done: boolean; children: preact.ComponentChildren }) {
  return (
    <li class={props.done ? 'done' : ''}>
      <span class="check" aria-hidden="true">
        {props.done ? '✓' : ''}
      </span>
      <span>
        {props.children}
        {props.done && <span class="visually-hidden"> (done)</span>}
      </span>
    </li>
  );
}
