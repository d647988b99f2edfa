// How "spend avoided" is valued: the cloud model a GPU/CLI answer is priced as, per worker, per
// model, or by default (GET/PUT /api/usage/equivalents). Shown on the Usage page beside the figure.
import { useState } from 'preact/hooks';
import { api, type Price, type Worker, type WorkerToken } from '../api';
import { ErrorMessage, Field, Loading, Notice, Section, formatUsd, inputValue, useAction, useResource } from '../components';

export interface EquivalentSettings {
  default_model: string | null;
  by_worker: Record<string, string>;
  by_model: Record<string, string>;
  builtin_default: string;
}

/** Why a request was priced as its cloud model (the request log's `cloud_equivalent_source`). */
export const EQUIVALENT_SOURCE: Record<string, string> = {
  alias: 'the alias’s cloud model',
  worker: 'the worker’s setting',
  model: 'the model’s setting',
  same_model: 'the same model’s cloud price',
  default: 'your default',
  cheapest_enabled: 'the cheapest enabled cloud model, of its family if any',
  builtin_default: 'the built-in default',
};

type Pair = { name: string; model: string };

const pairsOf = (map: Record<string, string>): Pair[] => Object.entries(map).map(([name, model]) => ({ name, model }));

function mapOf(pairs: Pair[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const name = p.name.trim();
    const model = p.model.trim();
    if (!name && !model) continue;
    if (!name || !model) throw new Error(`Each ${what} setting needs both a ${what} and a cloud model.`);
    if (out[name] !== undefined) throw new Error(`The ${what} “${name}” is listed twice.`);
    out[name] = model;
  }
  return out;
}

function priceText(prices: Price[], model: string): string {
  const bare = model.split('/').pop() ?? model;
  const price = prices.find((p) => p.model === bare);
  return price ? `${formatUsd(price.input_per_mtok)} in / ${formatUsd(price.output_per_mtok)} out per million tokens` : 'no price set';
}

export function EquivalentsEditor(props: { pricesVersion: number }) {
  const settings = useResource(() => api.get<EquivalentSettings>('/api/usage/equivalents'));
  const prices = useResource(() => api.list<Price>('/api/prices'), [props.pricesVersion]);
  // Kept here: the form below is rebuilt from the saved settings after each save.
  const [saved, setSaved] = useState<string | null>(null);
  const names = useResource(async () => {
    const [workers, tokens] = await Promise.all([api.list<Worker>('/api/workers').catch(() => [] as Worker[]), api.list<WorkerToken>('/api/worker-tokens').catch(() => [] as WorkerToken[])]);
    return {
      workers: [...new Set([...workers.map((w) => w.name), ...tokens.map((t) => t.name)])],
      models: [...new Set(workers.flatMap((w) => w.models))],
    };
  });
  if (!settings.data) {
    return (
      <Section title="How spend avoided is priced">
        <ErrorMessage title="The pricing settings could not be loaded." error={settings.error} onRetry={() => void settings.reload()} />
        {settings.loading && <Loading what="pricing settings" />}
      </Section>
    );
  }
  return (
    <EquivalentsForm
      key={JSON.stringify(settings.data)}
      settings={settings.data}
      prices={prices.data ?? []}
      workerNames={names.data?.workers ?? []}
      modelNames={names.data?.models ?? []}
      saved={saved}
      onSaved={(message) => {
        setSaved(message);
        void settings.reload();
      }}
    />
  );
}

function EquivalentsForm(props: {
  settings: EquivalentSettings;
  prices: Price[];
  workerNames: string[];
  modelNames: string[];
  saved: string | null;
  onSaved: (message: string) => void;
}) {
  const s = props.settings;
  const [defaultModel, setDefaultModel] = useState(s.default_model ?? '');
  const [byWorker, setByWorker] = useState<Pair[]>(pairsOf(s.by_worker));
  const [byModel, setByModel] = useState<Pair[]>(pairsOf(s.by_model));
  const [edited, setEdited] = useState(false);
  const action = useAction();

  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async () => {
      await api.put('/api/usage/equivalents', {
        default_model: defaultModel.trim() || null,
        by_worker: mapOf(byWorker, 'worker'),
        by_model: mapOf(byModel, 'model'),
      });
      props.onSaved('Saved. New requests are valued this way; past ones keep the value they were given.');
    });
  };

  return (
    <Section title="How spend avoided is priced">
      <p class="hint">
        A request served by a GPU or CLI worker is valued at what a cloud model would have charged for the same tokens. auxot uses, in order: the alias’s cloud model (when the request named an
        alias that has one), the worker’s setting, the model’s setting, the served model’s own cloud price, your default, then the cheapest cloud model your enabled providers serve
        (of the same family when there is one, e.g. a local Qwen against the cheapest Qwen). Each request’s choice is shown on the Requests page.
      </p>
      <p data-testid="equivalent-default">
        {s.default_model ? (
          <>
            Your default: <strong>{s.default_model}</strong> ({priceText(props.prices, s.default_model)}).
          </>
        ) : (
          <>
            No default set: the cheapest enabled cloud model applies; with no provider enabled, <strong>{s.builtin_default}</strong> ({priceText(props.prices, s.builtin_default)}).
          </>
        )}
      </p>
      <form class="stack" onSubmit={submit} onInput={() => setEdited(true)} aria-label="Cloud-equivalent models">
        <datalist id="priced-models">
          {props.prices.map((p) => (
            <option value={p.model} />
          ))}
        </datalist>
        <datalist id="worker-names">
          {props.workerNames.map((n) => (
            <option value={n} />
          ))}
        </datalist>
        <datalist id="served-models">
          {props.modelNames.map((n) => (
            <option value={n} />
          ))}
        </datalist>
        <Field label="Default cloud model" optional hint="Any model with a price (see Prices below). Empty: the cheapest enabled cloud model.">
          {(p) => <input {...p} name="default_model" list="priced-models" autoComplete="off" placeholder={s.builtin_default} value={defaultModel} onInput={(e) => setDefaultModel(inputValue(e))} />}
        </Field>
        <PairList title="Per worker" what="worker" pairs={byWorker} onChange={setByWorker} nameList="worker-names" prices={props.prices} />
        <PairList title="Per model" what="model" pairs={byModel} onChange={setByModel} nameList="served-models" prices={props.prices} />
        <ErrorMessage title="Not saved." error={action.error} />
        {props.saved && !edited && <Notice kind="success">{props.saved}</Notice>}
        <div class="button-row">
          <button type="submit" class="primary" disabled={action.busy}>
            {action.busy ? 'Saving…' : 'Save pricing'}
          </button>
        </div>
      </form>
    </Section>
  );
}

function PairList(props: { title: string; what: 'worker' | 'model'; pairs: Pair[]; onChange: (p: Pair[]) => void; nameList: string; prices: Price[] }) {
  const set = (i: number, patch: Partial<Pair>) => props.onChange(props.pairs.map((p, j) => (j === i ? { ...p, ...patch } : p)));
  const label = props.what === 'worker' ? 'Worker' : 'Served model';
  return (
    <fieldset class="pair-list">
      <legend>{props.title}</legend>
      {props.pairs.length === 0 && <p class="muted small">None: {props.what === 'worker' ? 'no worker has its own setting' : 'no model has its own setting'}.</p>}
      {props.pairs.map((p, i) => (
        <div class="pair-row">
          <Field label={`${label} ${i + 1}`}>
            {(f) => <input {...f} list={props.nameList} autoComplete="off" value={p.name} onInput={(e) => set(i, { name: inputValue(e) })} />}
          </Field>
          <Field label={`Priced as (${props.what} ${i + 1})`} hint={p.model.trim() ? priceText(props.prices, p.model.trim()) : undefined}>
            {(f) => <input {...f} list="priced-models" autoComplete="off" placeholder="gpt-4o" value={p.model} onInput={(e) => set(i, { model: inputValue(e) })} />}
          </Field>
          <button type="button" class="secondary small" aria-label={`Remove ${props.what} setting ${i + 1}`} onClick={() => props.onChange(props.pairs.filter((_, j) => j !== i))}>
            Remove
          </button>
        </div>
      ))}
      <div class="button-row">
        <button type="button" class="secondary small" onClick={() => props.onChange([...props.pairs, { name: '', model: '' }])}>
          Add a {props.what} setting
        </button>
      </div>
    </fieldset>
  );
}
