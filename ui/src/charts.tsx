// Small hand-drawn SVG charts (stacked bars, horizontal bars, lines). They are drawn at the container's real pixel width (not
// scaled), so labels stay readable from 360 px phones to wide desktops.
import { useEffect, useRef, useState } from 'preact/hooks';

function useWidth<T extends HTMLElement>(fallback: number) {
  const ref = useRef<T>(null);
  const [width, setWidth] = useState(fallback);
  useEffect(() => {
    const element = ref.current;
    if (!element) return;
    const measure = () => setWidth(Math.max(200, Math.floor(element.getBoundingClientRect().width)));
    measure();
    if (typeof ResizeObserver === 'undefined') return;
    const observer = new ResizeObserver(measure);
    observer.observe(element);
    return () => observer.disconnect();
  }, []);
  return { ref, width };
}

/** The smallest 1/2/5 × 10^k at or above `value`, so the axis reads in round numbers. */
export function niceCeiling(value: number): number {
  if (value <= 0) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value * (1 - 1e-9)) return step * power;
  }
  return 10 * power;
}

/** Axis ticks from 0 to a round top: about four steps of 1/2/5 × 10^k (whole steps for counts). */
export function axisTicks(max: number, wholeNumbers: boolean): number[] {
  let step = niceCeiling(Math.max(max, 0) / 4 || 0.25);
  if (wholeNumbers) step = Math.max(1, step);
  const top = Math.max(step, Math.ceil(max / step - 1e-9) * step);
  const ticks: number[] = [];
  for (let t = 0; t <= top + step / 2; t += step) ticks.push(t);
  return ticks;
}

export interface Segment {
  value: number;
  class: string;
  name: string;
}

export interface Bar {
  label: string;
  segments: Segment[];
}

const HEIGHT = 200;
const PAD = { top: 10, right: 8, bottom: 26, left: 48 };

/** Vertical bars, one per label, segments stacked bottom-up. */
export function BarChart(props: { bars: Bar[]; title: string; format: (n: number) => string }) {
  const { ref, width } = useWidth<HTMLDivElement>(600);
  const totals = props.bars.map((b) => b.segments.reduce((n, s) => n + s.value, 0));
  const ticks = axisTicks(Math.max(0, ...totals), true);
  const top = ticks[ticks.length - 1];
  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const n = Math.max(1, props.bars.length);
  const slot = plotW / n;
  const barW = Math.max(2, Math.min(48, slot * 0.7));
  const y = (v: number) => PAD.top + plotH - (v / top) * plotH;
  // Show at most one label per ~46 px.
  const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / 46))));
  const peak = totals.reduce((best, v, i) => (v > totals[best] ? i : best), 0);
  const summary = totals.some((v) => v > 0) ? `${props.title}. Highest: ${props.format(totals[peak])} on ${props.bars[peak]?.label}.` : `${props.title}: nothing in this period.`;
  return (
    <div class="chart" ref={ref}>
      <svg width={width} height={HEIGHT} role="img" aria-label={summary}>
        {ticks.map((t) => (
          <g key={t}>
            <line class="grid" x1={PAD.left} x2={width - PAD.right} y1={y(t)} y2={y(t)} />
            <text class="axis" x={PAD.left - 6} y={y(t)} dy="0.32em" text-anchor="end">
              {props.format(t)}
            </text>
          </g>
        ))}
        {props.bars.map((bar, i) => {
          const x = PAD.left + slot * i + (slot - barW) / 2;
          let base = 0;
          return (
            <g key={bar.label + i}>
              <title>{`${bar.label}: ${bar.segments.map((s) => `${props.format(s.value)} ${s.name}`).join(', ')}`}</title>
              <rect class="hit" x={PAD.left + slot * i} y={PAD.top} width={slot} height={plotH} />
              {bar.segments.map((s) => {
                const y0 = y(base);
                base += s.value;
                const y1 = y(base);
                return s.value > 0 ? <rect class={s.class} x={x} y={y1} width={barW} height={Math.max(1, y0 - y1)} rx={2} /> : null;
              })}
              {i % every === 0 && (
                <text class="axis" x={x + barW / 2} y={HEIGHT - 8} text-anchor="middle">
                  {bar.label}
                </text>
              )}
            </g>
          );
        })}
        <line class="baseline" x1={PAD.left} x2={width - PAD.right} y1={y(0)} y2={y(0)} />
      </svg>
    </div>
  );
}

export interface HBarRow {
  label: string;
  value: number;
  class: string;
  text: string;
}

const ROW_H = 28;

/** Horizontal bars with the label on the left and the value after the bar. */
export function HBarChart(props: { rows: HBarRow[]; title: string; showTitle?: boolean }) {
  const { ref, width } = useWidth<HTMLDivElement>(400);
  const labelW = Math.min(140, Math.round(width * 0.3));
  // Room for the longest value text ("1,840 · $12.40") at about 7 px a character, so it is never cut off.
  const valueW = Math.min(Math.round(width * 0.45), Math.max(72, 8 + 7 * Math.max(0, ...props.rows.map((r) => r.text.length))));
  const plotW = Math.max(20, width - labelW - valueW - 8);
  const max = Math.max(0, ...props.rows.map((r) => r.value));
  const height = props.rows.length * ROW_H + 4;
  const summary = `${props.title}: ${props.rows.map((r) => `${r.label} ${r.text}`).join(', ')}.`;
  return (
    <div class="chart" ref={ref}>
      {props.showTitle !== false && <p class="chart-title">{props.title}</p>}
      <svg width={width} height={height} role="img" aria-label={summary}>
        {props.rows.map((row, i) => {
          const w = max > 0 ? (row.value / max) * plotW : 0;
          const yTop = 2 + i * ROW_H;
          return (
            <g key={row.label}>
              <title>{`${row.label}: ${row.text}`}</title>
              <text class="label" x={labelW - 8} y={yTop + ROW_H / 2} dy="0.32em" text-anchor="end">
                {row.label.length > 18 ? row.label.slice(0, 17) + '…' : row.label}
              </text>
              <rect class="track" x={labelW} y={yTop + 5} width={plotW} height={ROW_H - 10} rx={3} />
              {w > 0 && <rect class={row.class} x={labelW} y={yTop + 5} width={Math.max(2, w)} height={ROW_H - 10} rx={3} />}
              <text class="value" x={labelW + Math.max(2, w) + 6} y={yTop + ROW_H / 2} dy="0.32em">
                {row.text}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}

export interface Line {
  name: string;
  /** A `line-…` class: the stroke colour. */
  class: string;
  /** One value per label; null where there is nothing (the line breaks there). */
  values: (number | null)[];
}

/** Lines over the same labels as the daily bar charts, with a dot on every value. */
export function LineChart(props: { labels: string[]; lines: Line[]; title: string; format: (n: number) => string }) {
  const { ref, width } = useWidth<HTMLDivElement>(600);
  const all = props.lines.flatMap((l) => l.values.filter((v): v is number => v != null));
  const ticks = axisTicks(Math.max(0, ...all), false);
  const top = ticks[ticks.length - 1] || 1;
  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const n = Math.max(1, props.labels.length);
  const slot = plotW / n;
  const x = (i: number) => PAD.left + slot * i + slot / 2;
  const y = (v: number) => PAD.top + plotH - (v / top) * plotH;
  const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / 46))));
  const worst = props.lines
    .map((l) => ({ name: l.name, max: Math.max(...l.values.filter((v): v is number => v != null)) }))
    .filter((l) => Number.isFinite(l.max))
    .map((l) => `${l.name} up to ${props.format(l.max)}`);
  const summary = worst.length ? `${props.title}: ${worst.join(', ')}.` : `${props.title}: nothing in this period.`;
  return (
    <div class="chart" ref={ref}>
      <svg width={width} height={HEIGHT} role="img" aria-label={summary}>
        {ticks.map((t) => (
          <g key={t}>
            <line class="grid" x1={PAD.left} x2={width - PAD.right} y1={y(t)} y2={y(t)} />
            <text class="axis" x={PAD.left - 6} y={y(t)} dy="0.32em" text-anchor="end">
              {props.format(t)}
            </text>
          </g>
        ))}
        {props.lines.map((line) => {
          // Runs of consecutive values, so a day with nothing breaks the line.
          const runs: string[] = [];
          let run = '';
          line.values.forEach((v, i) => {
            if (v == null) {
              if (run) runs.push(run);
              run = '';
            } else run += `${run ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
          });
          if (run) runs.push(run);
          return (
            <g key={line.name} class={line.class}>
              {runs.map((d) => (
                <path d={d} class="line" />
              ))}
              {line.values.map((v, i) =>
                v == null ? null : (
                  <circle cx={x(i)} cy={y(v)} r={3} class="dot">
                    <title>{`${props.labels[i]}, ${line.name}: ${props.format(v)}`}</title>
                  </circle>
                ),
              )}
            </g>
          );
        })}
        {props.labels.map((label, i) =>
          i % every === 0 ? (
            <text class="axis" x={x(i)} y={HEIGHT - 8} text-anchor="middle">
              {label}
            </text>
          ) : null,
        )}
        <line class="baseline" x1={PAD.left} x2={width - PAD.right} y1={y(0)} y2={y(0)} />
      </svg>
    </div>
  );
}
