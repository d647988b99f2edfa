// Usage: requests and tokens over time and per tier, spend per provider, and the cloud spend
// the GPU and CLI tiers avoided. Reads GET /api/usage; a build without it answers 404.
import { useState } from 'preact/hooks';
import { ApiError, api, type ApiKey, type LatencyRow, type Provider, type UsageFigures, type UsageGroup, type UsageGroupBy, type UsageReport } from '../api';
import { ErrorMessage, Estimated, Loading, Page, Section, Usd, formatCompact, formatInt, formatMs, formatUsd, useResource } from '../components';
import { BarChart, HBarChart, LineChart, type Bar } from '../charts';
import { EquivalentsEditor } from './equivalents';
import { PricesEditor } from './prices';

type Range = '24h' | '7d' | '30d' | '90d';
const RANGES: { value: Range; label: string; days: number }[] = [
  { value: '24h', label: '24 hours', days: 1 },
  { value: '7d', label: '7 days', days: 7 },
  { value: '30d', label: '30 days', days: 30 },
  { value: '90d', label: '90 days', days: 90 },
];

const GROUPINGS: { value: UsageGroupBy; label: string }[] = [
  { value: 'tier', label: 'Tier' },
  { value: 'provider', label: 'Provider' },
  { value: 'model', label: 'Model' },
  { value: 'api_key', label: 'API key' },
  { value: 'agent', label: 'Agent' },
  { value: 'day', label: 'Day' },
];

const DAY_MS = 86_400_000;

/** `from`/`to` for a range: whole UTC days for the multi-day ranges, so daily bars are full. */
export function rangeBounds(range: Range, now = new Date()): { from: Date; to: Date } {
  const days = RANGES.find((r) => r.value === range)?.days ?? 7;
  const to = now;
  if (days === 1) return { from: new Date(to.getTime() - DAY_MS), to };
  const todayStart = Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), to.getUTCDate());
  return { from: new Date(todayStart - (days - 1) * DAY_MS), to };
}

interface Reports {
  byDay: UsageReport;
  /** Per day and tier (`2026-11-29/gpu`, failures as `failed`); null on a server without it. */
  byDayTier: UsageReport | null;
  byModel: UsageReport;
  byKey: UsageReport;
  byTier: UsageReport;
  byProvider: UsageReport;
  table: UsageReport;
  /** Names of the configured providers: the provider grouping also lists worker routes. */
  providerNames: Set<string>;
  /** API key id → name, for the table grouped by API key. */
  keyNames: Map<string, string>;
}

type Loaded = { available: false } | ({ available: true } & Reports);

async function fetchReport(groupBy: UsageGroupBy, from: Date, to: Date): Promise<UsageReport> {
  const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), group_by: groupBy });
  return api.get<UsageReport>(`/api/usage?${query}`);
}

export function UsagePage() {
  const [range, setRange] = useState<Range>('7d');
  const [grouping, setGrouping] = useState<UsageGroupBy>('tier');
  const [pricesVersion, setPricesVersion] = useState(0);
  const [metric, setMetric] = useState<'requests' | 'tokens'>('requests');

  const usage = useResource<Loaded>(async () => {
    const { from, to } = rangeBounds(range);
    try {
      const [byDay, byTier, byProvider, byModel, byKey, providers, keys, byDayTier] = await Promise.all([
        fetchReport('day', from, to),
        fetchReport('tier', from, to),
        fetchReport('provider', from, to),
        fetchReport('model', from, to),
        fetchReport('api_key', from, to),
        api.list<Provider>('/api/providers'),
        api.list<ApiKey>('/api/api-keys'),
        fetchReport('day_tier', from, to).catch((e) => {
          if (e instanceof ApiError && e.status === 400) return null;
          throw e;
        }),
      ]);
      const reuse: Partial<Record<UsageGroupBy, UsageReport>> = { day: byDay, tier: byTier, provider: byProvider, model: byModel, api_key: byKey };
      const table = reuse[grouping] ?? (await fetchReport(grouping, from, to));
      return {
        available: true,
        byDay,
        byDayTier,
        byModel,
        byKey,
        byTier,
        byProvider,
        table,
        providerNames: new Set(providers.map((p) => p.name)),
        keyNames: new Map(keys.map((k) => [k.id, k.name])),
      };
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return { available: false };
      throw e;
    }
  }, [range, grouping]);

  const data = usage.data;
  return (
    <Page
      title="Usage"
      intro="What auxot served, on which tier, and what it cost."
      actions={
        <button type="button" class="secondary" onClick={() => void usage.reload()} disabled={usage.loading}>
          {usage.loading ? 'Refreshing…' : 'Refresh'}
        </button>
      }
    >
      <ErrorMessage title="Usage could not be loaded." error={usage.error} onRetry={() => void usage.reload()} />
      {!data && usage.loading && <Loading what="usage" />}
      {data && !data.available && (
        <Section title="Usage accounting is not available in this build">
          <p data-testid="usage-unavailable">
            This auxot server has no usage API (<code>/api/usage</code>) yet, so there is nothing to show here. Requests are still routed and served as usual; this page fills in
            once the server is upgraded to a version that records usage.
          </p>
        </Section>
      )}
      {data && data.available && (
        <>
          <fieldset class="segmented" aria-label="Time range">
            <legend class="visually-hidden">Time range</legend>
            {RANGES.map((r) => (
              <label class={range === r.value ? 'checked' : ''}>
                <input type="radio" name="range" value={r.value} checked={range === r.value} onChange={() => setRange(r.value)} />
                {r.label}
              </label>
            ))}
          </fieldset>
          <Totals totals={data.byDay.totals} />
          <div class="grid-2">
            <Section
              title={metric === 'requests' ? 'Requests per day' : 'Tokens per day'}
              actions={
                <fieldset class="segmented small" aria-label="Chart shows">
                  <legend class="visually-hidden">Chart shows</legend>
                  {(['requests', 'tokens'] as const).map((m) => (
                    <label class={metric === m ? 'checked' : ''}>
                      <input type="radio" name="metric" value={m} checked={metric === m} onChange={() => setMetric(m)} />
                      {m}
                    </label>
                  ))}
                </fieldset>
              }
            >
              <DailyChart report={data.byDay} byTier={data.byDayTier} metric={metric} />
            </Section>
            <Section title="Per tier">
              <TierChart report={data.byTier} />
            </Section>
            <Section title="Spend and spend avoided per day">
              <SpendChart report={data.byDay} />
            </Section>
            <Section title="Latency per tier">
              <LatencyOverTime report={data.byDay} />
              <Latency rows={data.byTier.latency} />
            </Section>
            <Section title="Top models">
              <TopChart report={data.byModel} label={(k) => k} />
            </Section>
            <Section title="Top API keys">
              <TopChart report={data.byKey} label={(k) => (k === 'none' ? 'admin session' : data.keyNames.get(k) ?? `revoked ${k.slice(0, 8)}`)} />
            </Section>
            <Section title="Spend per provider">
              <ProviderSpend report={data.byProvider} providerNames={data.providerNames} />
            </Section>
            <Section title="Cloud spend the GPU/CLI tiers avoided">
              <p class="big-number">
                <Usd value={data.byTier.totals.saved_usd} testId="saved-usd" />
              </p>
              <p class="hint">
                What the requests served by GPU and CLI workers would have cost at cloud prices ({formatUsd(data.byTier.totals.cloud_equivalent_usd)} cloud-equivalent in all, {formatUsd(data.byTier.totals.cost_usd)}{' '}
                actually spent), valued as described under “How spend avoided is priced” below.
              </p>
              {data.byTier.subscriptions && data.byTier.subscriptions.length > 0 && (
                <p class="hint">
                  Fixed subscriptions, not counted above:{' '}
                  {data.byTier.subscriptions.map((sub) => `${sub.name} ${formatUsd(sub.monthly_price_usd)}/month`).join(', ')}.
                </p>
              )}
            </Section>
          </div>
          <Section
            title="Details"
            actions={
              <>
                <div class="field inline">
                  <label for="usage-group">Group by</label>
                  <select id="usage-group" value={grouping} onChange={(e) => setGrouping((e.target as HTMLSelectElement).value as UsageGroupBy)}>
                    {GROUPINGS.map((g) => (
                      <option value={g.value}>{g.label}</option>
                    ))}
                  </select>
                </div>
                <a class="button-link" href={`/api/usage?${new URLSearchParams({ from: data.table.from, to: data.table.to, group_by: data.table.group_by, format: 'csv' })}`} download="auxot-usage.csv">
                  Download CSV
                </a>
              </>
            }
          >
            <UsageTable report={data.table} label={GROUPINGS.find((g) => g.value === data.table.group_by)?.label ?? 'Group'} keyNames={data.keyNames} />
          </Section>
          <EquivalentsEditor pricesVersion={pricesVersion} />
          <PricesEditor onChanged={() => setPricesVersion((v) => v + 1)} />
        </>
      )}
    </Page>
  );
}

function Totals(props: { totals: UsageFigures }) {
  const t = props.totals;
  return (
    <div class="stats">
      <div class="stat">
        <span class="stat-label">Requests</span>
        <span class="stat-value" data-testid="total-requests">
          {formatInt(t.requests)}
        </span>
        <span class="stat-note">{t.errors ? `${formatInt(t.errors)} failed` : 'none failed'}</span>
      </div>
      <div class="stat">
        <span class="stat-label">Tokens</span>
        <span class="stat-value">{formatCompact(t.input_tokens + t.output_tokens)}</span>
        <span class="stat-note">
          {formatInt(t.input_tokens)} in · {formatInt(t.output_tokens)} out
          {t.estimated ? <Estimated count={t.estimated} of={t.requests} /> : null}
        </span>
      </div>
      <div class="stat">
        <span class="stat-label">Cloud spend</span>
        <span class="stat-value">
          <Usd value={t.cost_usd} />
        </span>
        <span class="stat-note">paid to providers</span>
      </div>
      <div class="stat highlight">
        <span class="stat-label">Saved</span>
        <span class="stat-value">
          <Usd value={t.saved_usd} />
        </span>
        <span class="stat-note">cloud spend avoided</span>
      </div>
    </div>
  );
}

/** Every UTC day of the report, zeros where nothing was served. */
function dailySeries(report: UsageReport): UsageGroup[] {
  const byKey = new Map(report.groups.map((g) => [g.key.slice(0, 10), g]));
  const from = new Date(report.from);
  const to = new Date(report.to);
  const days: UsageGroup[] = [];
  if (!Number.isNaN(from.getTime()) && !Number.isNaN(to.getTime()) && to > from) {
    let day = Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate());
    while (day <= to.getTime() && days.length < 400) {
      const key = new Date(day).toISOString().slice(0, 10);
      days.push(byKey.get(key) ?? { key, ...zero() });
      byKey.delete(key);
      day += DAY_MS;
    }
  }
  // Keys that are not dates in the range (should not happen) are still shown, at the end.
  return [...days, ...byKey.values()];
}

function zero(): UsageFigures {
  return { requests: 0, errors: 0, input_tokens: 0, output_tokens: 0, cost_usd: 0, cloud_equivalent_usd: 0, saved_usd: 0 };
}

function dayLabel(key: string): string {
  const date = new Date(key + 'T00:00:00Z');
  return Number.isNaN(date.getTime()) ? key : date.toLocaleDateString(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
}

/** The stacks of the daily chart, bottom-up: the cheap tiers first, failures on top. */
export const STACK: { key: string; label: string; class: string }[] = [
  { key: 'gpu', label: 'GPU', class: 'fill-tier-gpu' },
  { key: 'cli', label: 'CLI', class: 'fill-tier-cli' },
  { key: 'cloud', label: 'cloud', class: 'fill-tier-cloud' },
  { key: 'failed', label: 'failed', class: 'fill-failed' },
  { key: 'none', label: 'not routed', class: 'fill-none' },
];

export function Legend(props: { items: { label: string; class: string }[] }) {
  return (
    <p class="legend" data-testid="chart-legend">
      {props.items.map((item) => (
        <span class="legend-item">
          <span class={`swatch ${item.class}`} aria-hidden="true" /> {item.label}
        </span>
      ))}
    </p>
  );
}

function DailyChart(props: { report: UsageReport; byTier: UsageReport | null; metric: 'requests' | 'tokens' }) {
  const series = dailySeries(props.report);
  const value = (g: UsageFigures) => (props.metric === 'requests' ? g.requests : g.input_tokens + g.output_tokens);
  const title = props.metric === 'requests' ? 'Requests per day by tier' : 'Tokens per day by tier';
  const format = props.metric === 'requests' ? formatInt : formatCompact;
  if (!props.byTier) {
    // A server without per-day tiers: one series, no tier colours that would mislead.
    const bars: Bar[] = series.map((g) => ({ label: dayLabel(g.key), segments: [{ value: value(g), class: 'fill-requests', name: props.metric }] }));
    return (
      <>
        <BarChart bars={bars} format={format} title={props.metric === 'requests' ? 'Requests per day' : 'Tokens per day'} />
        <p class="hint">Days are UTC.</p>
      </>
    );
  }
  const cells = new Map(props.byTier.groups.map((g) => [g.key, g]));
  const present = STACK.filter((s) => series.some((day) => (cells.get(`${day.key.slice(0, 10)}/${s.key}`)?.requests ?? 0) > 0));
  const bars: Bar[] = series.map((day) => ({
    label: dayLabel(day.key),
    segments: STACK.map((s) => {
      const cell = cells.get(`${day.key.slice(0, 10)}/${s.key}`);
      return { value: cell ? value(cell) : 0, class: s.class, name: s.label };
    }),
  }));
  return (
    <>
      <BarChart bars={bars} format={format} title={title} />
      <Legend items={present.length ? present : STACK.slice(0, 4)} />
      <p class="hint">Days are UTC. “Failed” are requests that got an error, whatever tier they reached{present.some((s) => s.key === 'none') ? '; “not routed” never reached a target' : ''}.</p>
    </>
  );
}

function SpendChart(props: { report: UsageReport }) {
  const series = dailySeries(props.report);
  const bars: Bar[] = series.map((g) => ({
    label: dayLabel(g.key),
    segments: [
      { value: g.cost_usd, class: 'fill-tier-cloud', name: 'spent' },
      { value: g.saved_usd, class: 'fill-saved', name: 'avoided' },
    ],
  }));
  return (
    <>
      <BarChart bars={bars} format={formatUsd} title="Cloud spend and spend avoided per day" />
      <Legend
        items={[
          { label: 'spent on cloud providers', class: 'fill-tier-cloud' },
          { label: 'avoided by GPU/CLI workers', class: 'fill-saved' },
        ]}
      />
    </>
  );
}

/** p95 total time per tier and day: is any tier getting slower? */
function LatencyOverTime(props: { report: UsageReport }) {
  const days = props.report.latency_by_day;
  if (!days || days.length === 0) return null;
  const labels = dailySeries(props.report).map((g) => g.key.slice(0, 10));
  const lines = ['gpu', 'cli', 'cloud']
    .filter((tier) => days.some((d) => d.tier === tier))
    .map((tier) => ({
      name: tier,
      class: `line-tier-${tier}`,
      values: labels.map((day) => days.find((d) => d.day === day && d.tier === tier)?.total_p95_ms ?? null),
    }));
  return (
    <>
      <LineChart labels={labels.map(dayLabel)} lines={lines} format={(ms) => formatMs(ms)} title="p95 total time per day by tier" />
      <Legend items={lines.map((l) => ({ label: `${l.name} p95`, class: `fill-tier-${l.name}` }))} />
    </>
  );
}

function Latency(props: { rows: LatencyRow[] | undefined }) {
  if (!props.rows) return <p class="empty">This server does not report latency percentiles yet.</p>;
  if (props.rows.length === 0) return <p class="empty">No requests in this period.</p>;
  const order = ['gpu', 'cli', 'cloud'];
  const rows = [...props.rows].sort((a, b) => order.indexOf(a.tier) - order.indexOf(b.tier) || b.requests - a.requests);
  return (
    <div class="table-wrap">
      <table class="data compact" data-testid="latency-table">
        <caption class="visually-hidden">Latency percentiles per tier and route</caption>
        <thead>
          <tr>
            <th scope="col">Tier · route</th>
            <th scope="col" class="num">
              TTFB
              <span class="th-sub">p50 / p95 / p99</span>
            </th>
            <th scope="col" class="num">
              Total
              <span class="th-sub">p50 / p95 / p99</span>
            </th>
            <th scope="col" class="num">
              Requests
            </th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.tier + r.route}>
              <th scope="row" data-label="Tier · route">
                <span class={`tier-badge tier-${r.tier}`}>{r.tier}</span> <span class="break">{r.route}</span>
              </th>
              <td class="num" data-label="TTFB p50 / p95 / p99">
                {formatMs(r.ttfb_p50_ms)} / {formatMs(r.ttfb_p95_ms)} / {formatMs(r.ttfb_p99_ms)}
              </td>
              <td class="num" data-label="Total p50 / p95 / p99">
                {formatMs(r.total_p50_ms)} / {formatMs(r.total_p95_ms)} / {formatMs(r.total_p99_ms)}
              </td>
              <td class="num" data-label="Requests">
                {formatInt(r.requests)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function TopChart(props: { report: UsageReport; label: (key: string) => string }) {
  const top = [...props.report.groups].sort((a, b) => b.requests - a.requests).slice(0, 5);
  if (top.length === 0) return <p class="empty">No requests in this period.</p>;
  return (
    <HBarChart
      title="Requests"
      showTitle={false}
      rows={top.map((g) => ({ label: props.label(g.key), value: g.requests, class: 'fill-requests', text: `${formatInt(g.requests)} · ${formatUsd(g.cost_usd)}` }))}
    />
  );
}

function TierChart(props: { report: UsageReport }) {
  const order = ['gpu', 'cli', 'cloud'];
  const groups = [...props.report.groups].sort((a, b) => {
    const ia = order.indexOf(a.key);
    const ib = order.indexOf(b.key);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.key.localeCompare(b.key);
  });
  if (groups.length === 0) return <p class="empty">No requests in this period.</p>;
  return (
    <div class="stack">
      <HBarChart title="Requests per tier" rows={groups.map((g) => ({ label: g.key, value: g.requests, class: `fill-tier-${g.key}`, text: formatInt(g.requests) }))} />
      <HBarChart
        title="Tokens per tier"
        rows={groups.map((g) => ({ label: g.key, value: g.input_tokens + g.output_tokens, class: `fill-tier-${g.key}`, text: formatCompact(g.input_tokens + g.output_tokens) }))}
      />
    </div>
  );
}

function ProviderSpend(props: { report: UsageReport; providerNames: Set<string> }) {
  // Grouping by provider groups by route, which for the worker tiers is a worker's name.
  const groups = props.report.groups.filter((g) => props.providerNames.has(g.key) || (g.cost_usd > 0 && g.key !== 'none')).sort((a, b) => b.cost_usd - a.cost_usd);
  if (groups.length === 0) return <p class="empty">Nothing was sent to a cloud provider in this period.</p>;
  return (
    <>
      <HBarChart title="Spend per provider" showTitle={false} rows={groups.map((g) => ({ label: g.key, value: g.cost_usd, class: 'fill-tier-cloud', text: formatUsd(g.cost_usd) }))} />
      <p class="hint">Total {formatUsd(props.report.totals.cost_usd)}.</p>
    </>
  );
}

function groupLabel(key: string, groupBy: UsageGroupBy, keyNames: Map<string, string>) {
  if (!key || key === 'none') return <span class="muted">(none)</span>;
  if (groupBy === 'api_key') {
    const name = keyNames.get(key);
    return name ? <span title={key}>{name}</span> : <span class="muted" title={key}>revoked key {key.slice(0, 8)}</span>;
  }
  return key;
}

function UsageTable(props: { report: UsageReport; label: string; keyNames: Map<string, string> }) {
  const groups = props.report.group_by === 'day' ? [...props.report.groups].sort((a, b) => a.key.localeCompare(b.key)) : [...props.report.groups].sort((a, b) => b.requests - a.requests);
  if (groups.length === 0) return <p class="empty">No requests in this period.</p>;
  const t = props.report.totals;
  const cells = (f: UsageFigures) => (
    <>
      <td class="num" data-label="Requests">
        {formatInt(f.requests)}
      </td>
      <td class="num" data-label="Errors">
        {formatInt(f.errors)}
      </td>
      <td class="num" data-label="Input tokens">
        {formatInt(f.input_tokens)}
      </td>
      <td class="num" data-label="Output tokens">
        {formatInt(f.output_tokens)}
        {f.estimated ? <Estimated count={f.estimated} of={f.requests} /> : null}
      </td>
      <td class="num" data-label="Cost">
        {formatUsd(f.cost_usd)}
      </td>
      <td class="num" data-label="Cloud equivalent">
        {formatUsd(f.cloud_equivalent_usd)}
      </td>
      <td class="num" data-label="Saved">
        {formatUsd(f.saved_usd)}
      </td>
    </>
  );
  return (
    <div class="table-wrap">
      <table class="data" data-testid="usage-table">
        <caption class="visually-hidden">Usage by {props.label.toLowerCase()}</caption>
        <thead>
          <tr>
            <th scope="col">{props.label}</th>
            <th scope="col" class="num">
              Requests
            </th>
            <th scope="col" class="num">
              Errors
            </th>
            <th scope="col" class="num">
              Input tokens
            </th>
            <th scope="col" class="num">
              Output tokens
            </th>
            <th scope="col" class="num">
              Cost
            </th>
            <th scope="col" class="num">
              Cloud equivalent
            </th>
            <th scope="col" class="num">
              Saved
            </th>
          </tr>
        </thead>
        <tbody>
          {groups.map((g) => (
            <tr key={g.key}>
              <th scope="row" data-label={props.label}>
                {groupLabel(g.key, props.report.group_by, props.keyNames)}
              </th>
              {cells(g)}
            </tr>
          ))}
        </tbody>
        <tfoot>
          <tr>
            <th scope="row" data-label={props.label}>
              Total
            </th>
            {cells(t)}
          </tr>
        </tfoot>
      </table>
    </div>
  );
}
