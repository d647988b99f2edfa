// Usage: requests and tokens over time and per tier, spend per provider, and the cloud spend
// the GPU and CLI tiers avoided. Reads GET /api/usage; a build without it answers 404.
import { useState } from 'preact/hooks';
import { ApiError, api, type ApiKey, type Provider, type UsageFigures, type UsageGroup, type UsageGroupBy, type UsageReport } from '../api';
import { ErrorMessage, Loading, Page, Section, formatCompact, formatInt, formatUsd, useResource } from '../components';
import { BarChart, HBarChart, type Bar } from '../charts';
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
  const [metric, setMetric] = useState<'requests' | 'tokens'>('requests');

  const usage = useResource<Loaded>(async () => {
    const { from, to } = rangeBounds(range);
    try {
      const [byDay, byTier, byProvider, providers] = await Promise.all([
        fetchReport('day', from, to),
        fetchReport('tier', from, to),
        fetchReport('provider', from, to),
        api.list<Provider>('/api/providers'),
      ]);
      const reuse: Partial<Record<UsageGroupBy, UsageReport>> = { day: byDay, tier: byTier, provider: byProvider };
      const table = reuse[grouping] ?? (await fetchReport(grouping, from, to));
      const keys = grouping === 'api_key' ? await api.list<ApiKey>('/api/api-keys') : [];
      return {
        available: true,
        byDay,
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
              <DailyChart report={data.byDay} metric={metric} />
            </Section>
            <Section title="Per tier">
              <TierChart report={data.byTier} />
            </Section>
            <Section title="Spend per provider">
              <ProviderSpend report={data.byProvider} providerNames={data.providerNames} />
            </Section>
            <Section title="Cloud spend the GPU/CLI tiers avoided">
              <p class="big-number" data-testid="saved-usd">
                {formatUsd(data.byTier.totals.saved_usd)}
              </p>
              <p class="hint">
                What the requests served by GPU and CLI workers would have cost at cloud prices ({formatUsd(data.byTier.totals.cloud_equivalent_usd)} cloud-equivalent in all, {formatUsd(data.byTier.totals.cost_usd)}{' '}
                actually spent).
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
          <PricesEditor />
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
        </span>
      </div>
      <div class="stat">
        <span class="stat-label">Cloud spend</span>
        <span class="stat-value">{formatUsd(t.cost_usd)}</span>
        <span class="stat-note">paid to providers</span>
      </div>
      <div class="stat highlight">
        <span class="stat-label">Saved</span>
        <span class="stat-value">{formatUsd(t.saved_usd)}</span>
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

function DailyChart(props: { report: UsageReport; metric: 'requests' | 'tokens' }) {
  const series = dailySeries(props.report);
  const bars: Bar[] = series.map((g) => ({
    label: dayLabel(g.key),
    segments:
      props.metric === 'requests'
        ? [{ value: g.requests, class: 'fill-requests', name: 'requests' }]
        : [
            { value: g.input_tokens, class: 'fill-input', name: 'input tokens' },
            { value: g.output_tokens, class: 'fill-output', name: 'output tokens' },
          ],
  }));
  return (
    <>
      <BarChart bars={bars} format={props.metric === 'requests' ? formatInt : formatCompact} title={props.metric === 'requests' ? 'Requests per day' : 'Tokens per day'} />
      {props.metric === 'tokens' && (
        <p class="legend">
          <span class="swatch fill-input" /> input <span class="swatch fill-output" /> output
        </p>
      )}
      <p class="hint">Days are UTC.</p>
    </>
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
