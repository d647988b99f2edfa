// Model prices (USD per million tokens), used by Usage for cloud spend and for what local
// requests would have cost in the cloud. Shown on the Usage page.
import { useState } from 'preact/hooks';
import { api, describeError, seg, type Price } from '../api';
import { DataTable, ErrorMessage, Field, Loading, Notice, Section, confirmAction, inputValue, useAction, useResource } from '../components';

const perMtok = (n: number) => '$' + n.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 4 });

/** A price field: a number ≥ 0, required. */
function priceNumber(text: string, what: string): number {
  const trimmed = text.trim();
  const value = Number(trimmed);
  if (trimmed === '' || !Number.isFinite(value) || value < 0) throw new Error(`${what} must be a number of 0 or more (USD per million tokens), e.g. 2.5.`);
  return value;
}

/** `onChanged` tells the page a price was saved or removed (the pricing settings show prices too). */
export function PricesEditor(props: { onChanged?: () => void } = {}) {
  const prices = useResource(() => api.list<Price>('/api/prices'));
  const [model, setModel] = useState('');
  const [input, setInput] = useState('');
  const [output, setOutput] = useState('');
  const [notice, setNotice] = useState<string | null>(null);
  const [deleteError, setDeleteError] = useState<string | null>(null);
  const action = useAction();

  const submit = (event: Event) => {
    event.preventDefault();
    setNotice(null);
    setDeleteError(null);
    void action.run(async () => {
      const name = model.trim();
      if (!name) throw new Error('Enter the model the price is for, e.g. gpt-4o-mini.');
      const body = { input_per_mtok: priceNumber(input, 'The input price'), output_per_mtok: priceNumber(output, 'The output price') };
      const saved = await api.put<Price>(`/api/prices/${seg(name)}`, body);
      setNotice(`Saved the price of “${saved.model}”: ${perMtok(saved.input_per_mtok)} in, ${perMtok(saved.output_per_mtok)} out per million tokens.`);
      setModel('');
      setInput('');
      setOutput('');
      await prices.reload();
      props.onChanged?.();
    });
  };

  const edit = (p: Price) => {
    setModel(p.model);
    setInput(String(p.input_per_mtok));
    setOutput(String(p.output_per_mtok));
    setNotice(null);
    action.setError(null);
  };

  const remove = async (p: Price) => {
    setNotice(null);
    setDeleteError(null);
    const ok = await confirmAction(`Delete the price of “${p.model}”?`, <p>Requests to “{p.model}” are then priced by the longest other matching name (e.g. “gpt-4o” for “gpt-4o-mini”), or not at all. Past usage is not recounted.</p>, 'Delete price');
    if (!ok) return;
    try {
      await api.delete(`/api/prices/${seg(p.model)}`);
      setNotice(`Deleted the price of “${p.model}”.`);
      await prices.reload();
      props.onChanged?.();
    } catch (e) {
      setDeleteError(`The price of “${p.model}” was not deleted: ${describeError(e)}`);
    }
  };

  return (
    <Section title="Prices">
      <p class="hint">USD per million tokens. Usage uses them for cloud spend and for what requests served locally would have cost in the cloud. A model is priced by the longest matching name (“gpt-4o” also prices “gpt-4o-2024-08-06”); setting a name again replaces its price.</p>
      <form class="inline-form" onSubmit={submit}>
        <Field label="Price model">
          {(p) => <input {...p} name="price_model" type="text" autoComplete="off" placeholder="gpt-4o-mini" value={model} onInput={(e) => setModel(inputValue(e))} />}
        </Field>
        <Field label="Input (USD / M tokens)">
          {(p) => <input {...p} name="input_per_mtok" type="text" inputMode="decimal" value={input} onInput={(e) => setInput(inputValue(e))} />}
        </Field>
        <Field label="Output (USD / M tokens)">
          {(p) => <input {...p} name="output_per_mtok" type="text" inputMode="decimal" value={output} onInput={(e) => setOutput(inputValue(e))} />}
        </Field>
        <button type="submit" class="primary" disabled={action.busy}>
          {action.busy ? 'Saving…' : 'Save price'}
        </button>
      </form>
      <ErrorMessage title="The price was not saved." error={action.error} />
      {notice && <Notice kind="success">{notice}</Notice>}
      <ErrorMessage error={deleteError} />
      <ErrorMessage title="The prices could not be loaded." error={prices.error} onRetry={() => void prices.reload()} />
      {!prices.data && prices.loading ? (
        <Loading what="prices" />
      ) : (
        <DataTable
          caption="Prices"
          rows={prices.data ?? []}
          rowKey={(p) => p.model}
          empty="No prices set."
          columns={[
            { label: 'Model', render: (p) => <code class="break">{p.model}</code> },
            { label: 'Input / M tokens', class: 'num', render: (p) => perMtok(p.input_per_mtok) },
            { label: 'Output / M tokens', class: 'num', render: (p) => perMtok(p.output_per_mtok) },
            {
              label: 'Actions',
              class: 'actions',
              render: (p) => (
                <div class="button-row">
                  <button type="button" class="secondary small" aria-label={`Edit price of ${p.model}`} onClick={() => edit(p)}>
                    Edit
                  </button>
                  <button type="button" class="secondary small danger-text" aria-label={`Delete price of ${p.model}`} onClick={() => void remove(p)}>
                    Delete
                  </button>
                </div>
              ),
            },
          ]}
        />
      )}
    </Section>
  );
}
