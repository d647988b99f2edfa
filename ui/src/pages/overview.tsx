// The landing page: what is configured, what is online, and what to do next.
import { api, type ApiKey, type Model, type Provider, type RoutingSettings, type Worker } from '../api';
import { CodeBox, ErrorMessage, Loading, Page, Section, formatInt, useResource } from '../components';
import { Link } from '../router';

interface Summary {
  providers: Provider[];
  models: Model[];
  workers: Worker[];
  keys: ApiKey[];
  routing: RoutingSettings;
}

export function OverviewPage() {
  const summary = useResource<Summary>(async () => {
    const [providers, models, workers, keys, settings] = await Promise.all([
      api.list<Provider>('/api/providers'),
      api.list<Model>('/api/models'),
      api.list<Worker>('/api/workers'),
      api.list<ApiKey>('/api/api-keys'),
      api.get<{ routing: RoutingSettings }>('/api/settings'),
    ]);
    return { providers, models, workers, keys, routing: settings.routing };
  });
  const origin = window.location.origin;
  const data = summary.data;
  const online = data?.workers.filter((w) => w.status !== 'offline') ?? [];
  return (
    <Page title="Overview" intro="auxot sends each request to the cheapest tier that can take it now: GPU workers, then CLI workers, then cloud providers.">
      <ErrorMessage title="The overview could not be loaded." error={summary.error} onRetry={() => void summary.reload()} />
      {!data && summary.loading && <Loading what="the overview" />}
      {data && (
        <>
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
