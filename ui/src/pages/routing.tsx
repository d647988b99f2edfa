// Settings → Routing: the default tier order and how long a request may wait for a slot.
import { useState } from 'preact/hooks';
import { api, type RoutingSettings, type Tier } from '../api';
import { ErrorMessage, Field, Loading, Notice, Page, Section, TierOrderEditor, inputValue, useAction, useResource } from '../components';

export function RoutingPage() {
  const settings = useResource(async () => (await api.get<{ routing: RoutingSettings }>('/api/settings')).routing);
  return (
    <Page title="Routing" intro="The order in which tiers are tried when neither the request nor its agent says otherwise.">
      <ErrorMessage title="The routing settings could not be loaded." error={settings.error} onRetry={() => void settings.reload()} />
      {!settings.data && settings.loading && <Loading what="settings" />}
      {settings.data && <RoutingForm settings={settings.data} />}
      <Section title="Overrides">
        <ul class="plain">
          <li>
            Header <code>X-Auxot-Tier: cloud</code> or an order such as <code>cli,cloud</code>.
          </li>
          <li>
            Header <code>X-Auxot-Provider: NAME</code>, or the model <code>NAME/model</code>, pins one provider.
          </li>
          <li>
            The model <code>agent:NAME</code> uses that agent’s order. A request beats its agent, which beats this default.
          </li>
        </ul>
      </Section>
    </Page>
  );
}

function RoutingForm(props: { settings: RoutingSettings }) {
  const [order, setOrder] = useState<Tier[]>(props.settings.default_order);
  const [timeout, setTimeoutMs] = useState(String(props.settings.queue_timeout_ms));
  const [saved, setSaved] = useState<string | null>(null);
  const action = useAction();

  const submit = (event: Event) => {
    event.preventDefault();
    setSaved(null);
    void action.run(async () => {
      if (order.length === 0) throw new Error('Choose at least one tier.');
      const ms = Number(timeout);
      if (timeout.trim() === '' || !Number.isInteger(ms) || ms < 0) throw new Error('The queue timeout must be a whole number of milliseconds, e.g. 60000.');
      const next = await api.put<{ routing: RoutingSettings }>('/api/settings', { routing: { default_order: order, queue_timeout_ms: ms } });
      setOrder(next.routing.default_order);
      setTimeoutMs(String(next.routing.queue_timeout_ms));
      setSaved('Saved. New requests use this order.');
    });
  };

  return (
    <Section title="Default order">
      <form class="stack narrow" onSubmit={submit}>
        <TierOrderEditor label="Tiers, first tried first" value={order} onChange={setOrder} emptyText="No tier chosen: add at least one." />
        <Field label="Queue timeout (ms)" hint="When every eligible worker and provider is full, a request waits this long for a free slot, then gets 503.">
          {(p) => <input {...p} name="queue_timeout_ms" type="text" inputMode="numeric" required value={timeout} onInput={(e) => setTimeoutMs(inputValue(e))} />}
        </Field>
        <ErrorMessage title="Not saved." error={action.error} />
        {saved && <Notice kind="success">{saved}</Notice>}
        <div class="button-row">
          <button type="submit" class="primary" disabled={action.busy}>
            {action.busy ? 'Saving…' : 'Save routing'}
          </button>
        </div>
      </form>
    </Section>
  );
}
