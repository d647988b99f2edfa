// Playground: send one test chat through any alias, model or tier and see where it went
// (X-Auxot-Tier, X-Auxot-Route), how long it took, and what came back. Uses an API key the
// operator pastes (the client API takes keys, not the console's session); it is never stored.
import { useRef, useState } from 'preact/hooks';
import { api, plainWords, TIERS, type Alias, type Model, type Worker } from '../api';
import { ErrorMessage, Field, Page, Progress, Section, formatMs, inputValue, useResource } from '../components';
import { Link } from '../router';

interface Result {
  status: number;
  tier: string | null;
  route: string | null;
  ttfbMs: number;
  totalMs: number;
  text: string;
  error: string | null;
}

export function PlaygroundPage() {
  const choices = useResource(async () => {
    const [aliases, models, workers] = await Promise.all([
      api.list<Alias>('/api/aliases').catch(() => [] as Alias[]),
      api.list<Model>('/api/models').catch(() => [] as Model[]),
      api.list<Worker>('/api/workers').catch(() => [] as Worker[]),
    ]);
    const workerModels = workers.filter((w) => w.status !== 'offline').flatMap((w) => w.models);
    return { aliases: aliases.map((a) => a.name), models: [...new Set([...workerModels, ...models.map((m) => m.id)])] };
  });
  const [key, setKey] = useState('');
  const [model, setModel] = useState('auto');
  const [tier, setTier] = useState('');
  const [prompt, setPrompt] = useState('Say hello in five words.');
  const [running, setRunning] = useState(false);
  const [elapsed, setElapsed] = useState(0);
  const [result, setResult] = useState<Result | null>(null);
  const [error, setError] = useState<string | null>(null);
  const abort = useRef<AbortController | null>(null);

  const send = async (event: Event) => {
    event.preventDefault();
    setResult(null);
    setError(null);
    const controller = new AbortController();
    abort.current = controller;
    setRunning(true);
    const started = performance.now();
    const ticker = window.setInterval(() => setElapsed(performance.now() - started), 200);
    try {
      const headers: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${key.trim()}` };
      if (tier) headers['x-auxot-tier'] = tier;
      const response = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers,
        credentials: 'omit',
        signal: controller.signal,
        body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: prompt }] }),
      });
      const reader = response.body?.getReader();
      let ttfb = performance.now() - started;
      let raw = '';
      if (reader) {
        const decoder = new TextDecoder();
        let first = true;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (first) {
            ttfb = performance.now() - started;
            first = false;
          }
          raw += decoder.decode(value, { stream: true });
        }
      }
      const json = (response.headers.get('content-type') ?? '').includes('json');
      const { text, error: streamError } = !response.ok ? { text: '', error: readError(raw) ?? `HTTP ${response.status}` } : json ? readJson(raw) : readStream(raw);
      setResult({
        status: response.status,
        tier: response.headers.get('x-auxot-tier'),
        route: response.headers.get('x-auxot-route'),
        ttfbMs: ttfb,
        totalMs: performance.now() - started,
        text,
        error: streamError,
      });
    } catch (e) {
      if (e instanceof DOMException && e.name === 'AbortError') setError('Cancelled. Nothing more is sent or charged for this request once the server notices.');
      else setError('Could not reach the auxot server. Check that it is running and reachable, then try again.');
    } finally {
      window.clearInterval(ticker);
      setRunning(false);
      abort.current = null;
    }
  };

  const options = choices.data;
  return (
    <Page title="Playground" intro="Send a test chat through any alias, model or tier, and see where auxot sent it and how long it took.">
      <Section title="Test request">
        <form class="form-grid" onSubmit={(e) => void send(e)}>
          <Field label="API key" hint={<>A client or admin key (<Link href="/api-keys">create one</Link>). Used for this request only, never stored.</>}>
            {(p) => <input {...p} name="playground_key" type="password" required autoComplete="off" value={key} onInput={(e) => setKey(inputValue(e))} />}
          </Field>
          <Field label="Model or alias">
            {(p) => (
              <>
                <input {...p} name="playground_model" list="playground-models" required autoComplete="off" value={model} onInput={(e) => setModel(inputValue(e))} />
                <datalist id="playground-models">
                  {options?.aliases.map((a) => (
                    <option value={a}>alias</option>
                  ))}
                  {options?.models.map((m) => (
                    <option value={m} />
                  ))}
                </datalist>
              </>
            )}
          </Field>
          <Field label="Tier" hint="Sent as X-Auxot-Tier; “routing order” lets auxot choose.">
            {(p) => (
              <select {...p} name="playground_tier" value={tier} onChange={(e) => setTier((e.target as HTMLSelectElement).value)}>
                <option value="">routing order</option>
                {TIERS.map((t) => (
                  <option value={t}>{t} only</option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Message">
            {(p) => <textarea {...p} name="playground_prompt" rows={3} required value={prompt} onInput={(e) => setPrompt((e.target as HTMLTextAreaElement).value)} />}
          </Field>
          <div class="form-footer">
            <div class="button-row">
              <button type="submit" class="primary" disabled={running}>
                {running ? 'Sending…' : 'Send'}
              </button>
              {running && (
                <button type="button" class="secondary" onClick={() => abort.current?.abort()}>
                  Cancel
                </button>
              )}
            </div>
            {running && <Progress>Waiting for the answer… {formatMs(elapsed)}</Progress>}
          </div>
        </form>
        <ErrorMessage error={error} />
      </Section>
      {result && (
        <Section title="Result">
          <dl class="facts" data-testid="playground-result">
            <dt>Status</dt>
            <dd>
              <span class={`pill pill-${result.status < 400 ? 'ok' : 'error'}`}>{result.status}</span>
            </dd>
            <dt>X-Auxot-Tier</dt>
            <dd data-testid="playground-tier">{result.tier ? <span class={`tier-badge tier-${result.tier}`}>{result.tier}</span> : <span class="muted">none</span>}</dd>
            <dt>X-Auxot-Route</dt>
            <dd data-testid="playground-route">{result.route ?? <span class="muted">none</span>}</dd>
            <dt>First byte</dt>
            <dd>{formatMs(result.ttfbMs)}</dd>
            <dt>Total</dt>
            <dd>{formatMs(result.totalMs)}</dd>
          </dl>
          {result.error && <ErrorMessage title="The request failed." error={plainWords(result.error) ?? result.error} />}
          {result.text && <pre class="answer">{result.text}</pre>}
          <p class="hint">
            It also shows on the <Link href="/requests">Requests</Link> page.
          </p>
        </Section>
      )}
    </Page>
  );
}

/** The text of an OpenAI SSE stream, and its error event if one came. */
function readStream(raw: string): { text: string; error: string | null } {
  let text = '';
  let error: string | null = null;
  for (const line of raw.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const data = line.slice(5).trim();
    if (!data || data === '[DONE]') continue;
    try {
      const event = JSON.parse(data);
      if (event.error) error = event.error.message ?? 'the stream ended with an error';
      text += event.choices?.[0]?.delta?.content ?? '';
    } catch {
      // A partial line at a chunk edge: ignore.
    }
  }
  return { text, error };
}

/** A whole (non-streamed) answer: some upstreams answer JSON even when asked to stream. */
function readJson(raw: string): { text: string; error: string | null } {
  try {
    const body = JSON.parse(raw);
    return { text: body?.choices?.[0]?.message?.content ?? '', error: body?.error?.message ?? null };
  } catch {
    return { text: '', error: 'The answer could not be read.' };
  }
}

function readError(raw: string): string | null {
  try {
    return JSON.parse(raw)?.error?.message ?? null;
  } catch {
    return raw.trim() || null;
  }
}
