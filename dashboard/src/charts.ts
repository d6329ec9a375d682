// charts.ts: small SVG line charts of the last five minutes (no chart library: axes, a grid,
// one polyline per series and a legend are all the overview needs). Values are numbers; labels
// are text nodes.

import { h, replace, svg } from "./dom";
import { WINDOW_MS } from "./stats";

/** One line of a chart. */
export interface Series {
  /** Legend text. */
  label: string;
  /** CSS class of the line and its legend swatch (`s1`..`s4`, colours in style.css). */
  cls: string;
}

/** One point in time: a value per series (null: a gap). */
export interface Point {
  t: number;
  values: (number | null)[];
}

/** A chart: its element, and `update` to redraw it for the window ending at `now`. */
export interface Chart {
  el: HTMLElement;
  update(points: readonly Point[], now: number): void;
}

const H = 170;
const PAD_L = 44;
const PAD_R = 10;
const PAD_T = 10;
const PAD_B = 22;

/** A "nice" grid step (1, 2, 2.5 or 5 × 10^k) for a y axis reaching `max` in about 4 steps. */
export function niceStep(max: number): number {
  const raw = max > 0 ? max / 4 : 0.25;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function fmtTick(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v % 1e6 === 0 ? 0 : 1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v % 1e3 === 0 ? 0 : 1)}k`;
  return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(2)));
}

/** Creates a chart named `name` (`svg[data-chart="<name>"]`); `wide` for one spanning the row. */
export function lineChart(name: string, title: string, series: Series[], wide = false): Chart {
  const W = wide ? 1200 : 560;
  const plot = svg("svg", {
    "data-chart": name,
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": `${title}, last 5 minutes`,
    preserveAspectRatio: "none",
  });
  const legend = h(
    "div",
    { class: "legend" },
    series.map((s) => h("span", { class: "legend-item" }, h("i", { class: `swatch ${s.cls}` }), s.label)),
  );
  const current = h("span", { class: "chart-current" });
  const el = h(
    "figure",
    { class: "chart" },
    h("figcaption", null, h("span", { class: "chart-title" }, title), current),
    plot,
    legend,
  );

  function update(points: readonly Point[], now: number): void {
    const t0 = now - WINDOW_MS;
    const inWindow = points.filter((p) => p.t >= t0 - 2000);
    let max = 0;
    for (const p of inWindow) for (const v of p.values) if (v !== null && v > max) max = v;
    const step = max <= 4 && Number.isInteger(max) ? 1 : niceStep(max);
    const steps = Math.max(1, Math.ceil(max / step - 1e-9));
    const top = step * steps;
    const x = (t: number): number => PAD_L + ((t - t0) / WINDOW_MS) * (W - PAD_L - PAD_R);
    const y = (v: number): number => PAD_T + (1 - v / top) * (H - PAD_T - PAD_B);
    const nodes: SVGElement[] = [];
    for (let i = 0; i <= steps; i++) {
      const v = step * i;
      const yy = y(v);
      nodes.push(svg("line", { class: "grid", x1: PAD_L, x2: W - PAD_R, y1: yy, y2: yy }));
      nodes.push(svg("text", { class: "tick", x: PAD_L - 6, y: yy + 4, "text-anchor": "end" }, fmtTick(v)));
    }
    for (let m = 0; m <= 5; m++) {
      const xx = x(t0 + m * 60000);
      const label = m === 5 ? "now" : `-${5 - m}m`;
      nodes.push(svg("text", { class: "tick", x: xx, y: H - 6, "text-anchor": m === 0 ? "start" : m === 5 ? "end" : "middle" }, label));
    }
    series.forEach((s, i) => {
      // One polyline per unbroken run of values.
      let run: string[] = [];
      const flush = (): void => {
        if (run.length > 0) nodes.push(svg("polyline", { class: `line ${s.cls}`, points: run.join(" ") }));
        run = [];
      };
      for (const p of inWindow) {
        const v = p.values[i];
        if (v === null || v === undefined) {
          flush();
          continue;
        }
        run.push(`${Math.max(PAD_L, x(p.t)).toFixed(1)},${y(v).toFixed(1)}`);
      }
      flush();
    });
    replace(plot, nodes);
    const last = inWindow[inWindow.length - 1];
    current.textContent = last
      ? last.values.map((v) => (v === null || v === undefined ? "–" : fmtValue(v))).join(" / ")
      : "no data yet";
  }

  update([], Date.now());
  return { el, update };
}

function fmtValue(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
