// Small building blocks shared by the pages: page frame, messages, fields, tables,
// the confirmation dialog, copy buttons, times and numbers.
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useId, useRef, useState } from 'preact/hooks';
import { hasNavigated } from './router';
import { ApiError, describeError, TIERS, TIER_LABELS, type Tier } from './api';

/* ---------- page frame ---------- */

export function Page(props: { title: string; intro?: ComponentChildren; actions?: ComponentChildren; children: ComponentChildren }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${props.title} · auxot`;
  }, [props.title]);
  useEffect(() => {
    // After a route change, start keyboard and screen-reader users at the new page's title.
    // Not on the first page after a load: there the skip link comes first, as usual.
    if (hasNavigated()) heading.current?.focus({ preventScroll: true });
  }, []);
  return (
    <div class="page">
      <div class="page-head">
        <div>
          <h1 tabIndex={-1} ref={heading}>
            {props.title}
          </h1>
          {props.intro && <p class="intro">{props.intro}</p>}
        </div>
        {props.actions && <div class="page-actions">{props.actions}</div>}
      </div>
      {props.children}
    </div>
  );
}

export function Section(props: { title: string; actions?: ComponentChildren; children: ComponentChildren }) {
  const id = useId();
  return (
    <section class="card" aria-labelledby={id}>
      <div class="card-head">
        <h2 id={id}>{props.title}</h2>
        {props.actions && <div class="card-actions">{props.actions}</div>}
      </div>
      {props.children}
    </section>
  );
}

/** A card that takes focus when it appears, so keyboard users land in the form they opened. */
export function FocusedSection(props: { title: string; actions?: ComponentChildren; children: ComponentChildren }) {
  const heading = useRef<HTMLHeadingElement>(null);
  const id = useId();
  useEffect(() => {
    heading.current?.focus({ preventScroll: true });
    heading.current?.scrollIntoView({ block: 'nearest' });
  }, []);
  return (
    <section class="card focus-card" aria-labelledby={id}>
      <div class="card-head">
        <h2 tabIndex={-1} ref={heading} id={id}>
          {props.title}
        </h2>
        {props.actions && <div class="card-actions">{props.actions}</div>}
      </div>
      {props.children}
    </section>
  );
}

/* ---------- messages ---------- */

export function ErrorMessage(props: { error: unknown; title?: string; onRetry?: () => void }) {
  if (!props.error) return null;
  const detail = props.error instanceof ApiError ? props.error.detail : undefined;
  return (
    <div class="message error" role="alert">
      {props.title && <strong>{props.title} </strong>}
      <span>{typeof props.error === 'string' ? props.error : describeError(props.error)}</span>
      {props.onRetry && (
        <button type="button" class="link-button" onClick={props.onRetry}>
          Try again
        </button>
      )}
      {detail && (
        <details class="error-details">
          <summary>Details</summary>
          <code class="break">{detail}</code>
        </details>
      )}
    </div>
  );
}

export function Notice(props: { children: ComponentChildren; kind?: 'success' | 'info' }) {
  return (
    <div class={`message ${props.kind ?? 'info'}`} role="status">
      {props.children}
    </div>
  );
}

export function Loading(props: { what?: string }) {
  return (
    <p class="loading" role="status">
      <span class="spinner" aria-hidden="true" /> Loading{props.what ? ` ${props.what}` : ''}…
    </p>
  );
}

export function Progress(props: { children: ComponentChildren }) {
  return (
    <p class="progress" role="status">
      <span class="spinner" aria-hidden="true" /> {props.children}
    </p>
  );
}

/* ---------- data loading ---------- */

export interface Resource<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  /** Resolves true when the data was loaded, false when it failed (the error is in `error`). */
  reload: () => Promise<boolean>;
}

/** Loads once on mount (and on `reload`); keeps the last data while reloading. */
export function useResource<T>(load: () => Promise<T>, deps: unknown[] = []): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const mounted = useRef(true);
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);
  const reload = useCallback(async () => {
    const mine = ++generation.current;
    setLoading(true);
    try {
      const value = await load();
      if (mounted.current && mine === generation.current) {
        setData(value);
        setError(null);
      }
      return true;
    } catch (e) {
      if (mounted.current && mine === generation.current) setError(e);
      return false;
    } finally {
      if (mounted.current && mine === generation.current) setLoading(false);
    }
  }, deps);
  useEffect(() => {
    void reload();
  }, [reload]);
  return { data, error, loading, reload };
}

/** Runs `tick` every `ms` while the tab is visible, and at once when it becomes visible again. */
export function useVisibleInterval(tick: () => void, ms: number): void {
  const saved = useRef(tick);
  saved.current = tick;
  useEffect(() => {
    let timer: number | undefined;
    const start = () => {
      if (timer === undefined && document.visibilityState === 'visible') {
        timer = window.setInterval(() => saved.current(), ms);
      }
    };
    const stop = () => {
      if (timer !== undefined) window.clearInterval(timer);
      timer = undefined;
    };
    const onVisibility = () => {
      if (document.visibilityState === 'visible') {
        saved.current();
        start();
      } else {
        stop();
      }
    };
    start();
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      stop();
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [ms]);
}

/** A form action: `busy` while it runs, its error kept for display. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = useCallback(async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, setError, run };
}

/**
 * A slow form action the user can give up on: `run` hands the action an AbortSignal, `cancel`
 * fires it (the fetch is dropped, so the server stops too), and `elapsed` counts whole
 * seconds while it runs. A cancelled run ends with no error.
 */
export function useCancellableAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [elapsed, setElapsed] = useState(0);
  const [cancelled, setCancelled] = useState(false);
  const controller = useRef<AbortController | null>(null);
  useEffect(() => () => controller.current?.abort(), []);
  const run = useCallback(async (action: (signal: AbortSignal) => Promise<void>) => {
    const mine = new AbortController();
    controller.current = mine;
    const started = Date.now();
    setBusy(true);
    setError(null);
    setCancelled(false);
    setElapsed(0);
    const timer = window.setInterval(() => setElapsed(Math.floor((Date.now() - started) / 1000)), 250);
    try {
      await action(mine.signal);
    } catch (e) {
      if (mine.signal.aborted) setCancelled(true);
      else setError(e);
    } finally {
      window.clearInterval(timer);
      if (controller.current === mine) controller.current = null;
      setBusy(false);
    }
  }, []);
  const cancel = useCallback(() => controller.current?.abort(), []);
  return { busy, error, elapsed, cancelled, setError, run, cancel };
}

/** Progress of a slow call: what is happening, for how long, and its Cancel button. */
export function SlowProgress(props: { elapsed: number; limit?: number; onCancel: () => void; cancelLabel?: string; children: ComponentChildren }) {
  const share = props.limit ? Math.min(1, props.elapsed / props.limit) : undefined;
  return (
    <div class="slow-progress" data-testid="slow-progress">
      <Progress>
        {props.children}{' '}
        <span class="nowrap" data-testid="elapsed">
          {props.elapsed} s{props.limit ? ` of at most ${props.limit} s` : ''}
        </span>
      </Progress>
      {share !== undefined && <progress max={1} value={share} aria-label="Time spent waiting" />}
      <button type="button" class="secondary small" onClick={props.onCancel}>
        {props.cancelLabel ?? 'Cancel'}
      </button>
    </div>
  );
}

/* ---------- form fields ---------- */

export interface FieldProps {
  id: string;
  'aria-describedby'?: string;
  'aria-invalid'?: boolean;
}

export function Field(props: { label: string; hint?: ComponentChildren; optional?: boolean; error?: string; children: (p: FieldProps) => ComponentChildren }) {
  const id = useId();
  const hintId = id + '-hint';
  const errorId = id + '-error';
  const described = [props.error ? errorId : null, props.hint ? hintId : null].filter(Boolean).join(' ');
  return (
    <div class={props.error ? 'field invalid' : 'field'}>
      <label for={id}>
        {props.label}
        {props.optional && <span class="optional"> (optional)</span>}
      </label>
      {props.children({ id, 'aria-describedby': described || undefined, 'aria-invalid': props.error ? true : undefined })}
      {props.error && (
        <p class="field-error" id={errorId} role="alert">
          {props.error}
        </p>
      )}
      {props.hint && (
        <p class="hint" id={hintId}>
          {props.hint}
        </p>
      )}
    </div>
  );
}

export function Checkbox(props: { label: string; checked: boolean; onChange: (value: boolean) => void; hint?: string }) {
  const id = useId();
  return (
    <div class="field checkbox">
      <input id={id} type="checkbox" checked={props.checked} onChange={(e) => props.onChange((e.target as HTMLInputElement).checked)} />
      <label for={id}>{props.label}</label>
      {props.hint && <p class="hint">{props.hint}</p>}
    </div>
  );
}

export const inputValue = (e: Event) => (e.target as HTMLInputElement).value;

/** An optional number field: empty → null; anything else must be a number ≥ 0 (whole if asked). */
export function optionalNumber(text: string, what: string, whole = false): number | null {
  const trimmed = text.trim();
  if (trimmed === '') return null;
  const value = Number(trimmed);
  if (!Number.isFinite(value) || value < 0 || (whole && !Number.isInteger(value))) {
    throw new Error(`${what} must be ${whole ? 'a whole number' : 'a number'} of 0 or more, or empty for none.`);
  }
  return value;
}

/* ---------- tables ---------- */

export interface Column<T> {
  label: string;
  render: (row: T) => ComponentChildren;
  class?: string;
}

/** A table that turns into labelled cards on narrow screens (each cell carries its label). */
export function DataTable<T>(props: { caption: string; columns: Column<T>[]; rows: T[]; rowKey: (row: T) => string; empty: ComponentChildren; rowClass?: (row: T) => string }) {
  if (props.rows.length === 0) return <p class="empty">{props.empty}</p>;
  return (
    <div class="table-wrap">
      <table class="data">
        <caption class="visually-hidden">{props.caption}</caption>
        <thead>
          <tr>
            {props.columns.map((c) => (
              <th scope="col" class={c.class}>
                {c.label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {props.rows.map((row) => (
            <tr key={props.rowKey(row)} class={props.rowClass?.(row)}>
              {props.columns.map((c) => (
                <td data-label={c.label} class={c.class}>
                  <div class="cell">{c.render(row)}</div>
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/* ---------- confirmation dialog ---------- */

interface ConfirmRequest {
  title: string;
  body: ComponentChildren;
  confirmLabel: string;
  resolve: (ok: boolean) => void;
}

let showConfirm: ((request: ConfirmRequest) => void) | null = null;

/** Asks before a destructive action; resolves true only on an explicit yes. */
export function confirmAction(title: string, body: ComponentChildren, confirmLabel: string): Promise<boolean> {
  return new Promise((resolve) => {
    if (showConfirm) showConfirm({ title, body, confirmLabel, resolve });
    else resolve(window.confirm(title));
  });
}

export function ConfirmHost() {
  const [request, setRequest] = useState<ConfirmRequest | null>(null);
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    showConfirm = setRequest;
    return () => {
      showConfirm = null;
    };
  }, []);
  useEffect(() => {
    if (request && dialog.current && !dialog.current.open) dialog.current.showModal();
  }, [request]);
  const finish = (ok: boolean) => {
    dialog.current?.close();
    request?.resolve(ok);
    setRequest(null);
  };
  return (
    <dialog
      ref={dialog}
      class="confirm"
      aria-labelledby="confirm-title"
      aria-describedby="confirm-body"
      onCancel={(e) => {
        e.preventDefault();
        finish(false);
      }}
    >
      {request && (
        <form
          method="dialog"
          onSubmit={(e) => {
            e.preventDefault();
            finish(true);
          }}
        >
          <h2 id="confirm-title">{request.title}</h2>
          <div id="confirm-body" class="confirm-body">
            {request.body}
          </div>
          <div class="button-row end">
            <button type="button" class="secondary" autoFocus onClick={() => finish(false)}>
              Cancel
            </button>
            <button type="submit" class="danger">
              {request.confirmLabel}
            </button>
          </div>
        </form>
      )}
    </dialog>
  );
}

/* ---------- copying ---------- */

async function copyText(text: string): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // Denied or unavailable: fall through to the selection-based copy.
  }
  const active = document.activeElement as HTMLElement | null;
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.remove();
  active?.focus();
  return ok;
}

export function CopyButton(props: { text: string; label?: string }) {
  const [state, setState] = useState<'idle' | 'copied' | 'failed'>('idle');
  useEffect(() => {
    if (state !== 'copied') return;
    const timer = window.setTimeout(() => setState('idle'), 2500);
    return () => window.clearTimeout(timer);
  }, [state]);
  return (
    <span class="copy">
      <button type="button" class="secondary small" onClick={async () => setState((await copyText(props.text)) ? 'copied' : 'failed')}>
        {props.label ?? 'Copy'}
      </button>
      <span class={`copy-status ${state}`} role="status">
        {state === 'copied' ? 'Copied.' : state === 'failed' ? 'Copying is blocked here: select the text and press Ctrl+C.' : ''}
      </span>
    </span>
  );
}

/** A value that is readable once and can be copied: a new key, a worker token, a command. */
export function CodeBox(props: { value: string; label: string; copyLabel?: string; testId?: string }) {
  return (
    <div class="code-box">
      <code aria-label={props.label} data-testid={props.testId}>
        {props.value}
      </code>
      <CopyButton text={props.value} label={props.copyLabel} />
    </div>
  );
}

/* ---------- tier order ---------- */

/** Picks a subset of the tiers in order: keyboard-usable up/down/remove/add buttons. */
export function TierOrderEditor(props: { value: Tier[]; onChange: (order: Tier[]) => void; label: string; emptyText: string }) {
  const { value, onChange } = props;
  const move = (index: number, by: number) => {
    const next = [...value];
    const [tier] = next.splice(index, 1);
    next.splice(index + by, 0, tier);
    onChange(next);
  };
  const unused = TIERS.filter((t) => !value.includes(t));
  return (
    <fieldset class="tier-order">
      <legend>{props.label}</legend>
      {value.length === 0 ? (
        <p class="hint">{props.emptyText}</p>
      ) : (
        <ol>
          {value.map((tier, index) => (
            <li key={tier}>
              <span class={`tier-badge tier-${tier}`}>{tier}</span>
              <span class="tier-name">{TIER_LABELS[tier]}</span>
              <span class="button-row">
                <button type="button" class="secondary small" disabled={index === 0} onClick={() => move(index, -1)} aria-label={`Move ${tier} up`}>
                  ↑
                </button>
                <button type="button" class="secondary small" disabled={index === value.length - 1} onClick={() => move(index, 1)} aria-label={`Move ${tier} down`}>
                  ↓
                </button>
                <button type="button" class="secondary small" onClick={() => onChange(value.filter((t) => t !== tier))} aria-label={`Remove ${tier}`}>
                  Remove
                </button>
              </span>
            </li>
          ))}
        </ol>
      )}
      {unused.length > 0 && (
        <div class="button-row">
          {unused.map((tier) => (
            <button type="button" class="secondary small" aria-label={`Add ${tier}`} onClick={() => onChange([...value, tier])}>
              + {tier}
            </button>
          ))}
        </div>
      )}
    </fieldset>
  );
}

/* ---------- times and numbers ---------- */

export function formatDateTime(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function relativeTime(iso: string, now = Date.now()): string {
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return iso;
  const seconds = Math.round((now - then) / 1000);
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return new Date(iso).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

export function Time(props: { iso: string | null | undefined; never?: string }) {
  if (!props.iso) return <span class="muted">{props.never ?? 'never'}</span>;
  return (
    <time dateTime={props.iso} title={formatDateTime(props.iso)}>
      {relativeTime(props.iso)}
    </time>
  );
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
export const formatInt = (n: number) => integer.format(n);

const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
export const formatCompact = (n: number) => compact.format(n);

/** Dollars with cents; amounts under a cent (one cheap request) keep two significant digits. */
export function formatUsd(n: number): string {
  const abs = Math.abs(n);
  if (abs < 0.0000005) return '$0.00';
  const sign = n < 0 ? '−$' : '$';
  if (abs < 0.01) return sign + abs.toLocaleString(undefined, { maximumSignificantDigits: 2 });
  return sign + abs.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

/** A provider's or worker's rest after failures, or its usage limit, while it lasts (fields absent on servers without them). */
export function cooldownNote(w: { cooldown_until?: string | null; cooldown_reason?: string | null; limited_until?: string | null }) {
  const now = Date.now();
  const until = (iso: string | null | undefined) => (iso && new Date(iso).getTime() > now ? iso : null);
  const cool = until(w.cooldown_until);
  const limited = until(w.limited_until);
  if (!cool && !limited) return null;
  return (
    <div class="small warn-text" data-testid="cooldown">
      {cool && (
        <>
          resting until <Time iso={cool} />
          {w.cooldown_reason ? `: ${w.cooldown_reason}` : ''}
        </>
      )}
      {limited && (
        <>
          {cool ? '; ' : ''}usage limit until <Time iso={limited} />
        </>
      )}
    </div>
  );
}

/** Money for humans: "< $0.01" for a fraction of a cent, the exact amount on hover. */
/** Marks token counts auxot estimated from the text's size because the upstream reported none. */
export function Estimated(props: { count?: number; of?: number }) {
  const what =
    props.count !== undefined && props.of !== undefined
      ? `${formatInt(props.count)} of ${formatInt(props.of)} requests had no usage from the upstream: their tokens were estimated from the size of the request and the answer (about 4 bytes a token). No cloud cost is charged on an estimate; spend avoided by GPU/CLI workers uses it.`
      : "The upstream reported no usage: these tokens were estimated from the size of the request and the answer (about 4 bytes a token). No cloud cost is charged on an estimate; spend avoided by a GPU/CLI worker uses it.";
  return (
    <span class="estimated" title={what} data-testid="estimated">
      {' '}≈ estimated
      <span class="visually-hidden">. {what}</span>
    </span>
  );
}

export function Usd(props: { value: number | null | undefined; testId?: string }) {
  const n = props.value ?? 0;
  const abs = Math.abs(n);
  const exact = '$' + n.toLocaleString(undefined, { maximumFractionDigits: 8 });
  const text = abs === 0 ? '$0.00' : abs < 0.01 ? '< $0.01' : formatUsd(n);
  return (
    <span class="usd" title={exact} data-testid={props.testId}>
      {text}
    </span>
  );
}

/** Milliseconds for humans: "840 ms", "2.4 s". */
export function formatMs(ms: number | null | undefined): string {
  if (ms == null || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function Pill(props: { kind: string; children: ComponentChildren }) {
  return <span class={`pill pill-${props.kind}`}>{props.children}</span>;
}
