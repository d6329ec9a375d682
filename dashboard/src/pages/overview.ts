// pages/overview.ts: the overview page: the server's current numbers from the latest `stats`
// event (levels, counters as totals, rates per second) and live charts of the last five minutes.

import { lineChart, type Chart, type Point } from "../charts";
import { h, setText } from "../dom";
import { int, rate } from "../format";
import type { Page } from "../router";
import { samples, watch, type Sample } from "../stats";

interface Stat {
  id: string;
  label: string;
  hint: string;
  wide?: boolean;
  value(s: Sample): string;
}

const STATS: Stat[] = [
  { id: "connections", label: "Connections", hint: "WebSockets open", value: (s) => int(s.stats.connections) },
  { id: "sessions", label: "Sessions", hint: "open now", value: (s) => int(s.stats.sessions) },
  { id: "members", label: "Members", hint: "in all sessions", value: (s) => int(s.stats.members) },
  { id: "joins-per-s", label: "Joins / s", hint: "members joining", value: (s) => (s.rates ? rate(s.rates.joins) : "–") },
  { id: "frames-in-per-s", label: "Frames in / s", hint: "from clients", value: (s) => (s.rates ? rate(s.rates.framesIn) : "–") },
  { id: "frames-out-per-s", label: "Frames out / s", hint: "to clients", value: (s) => (s.rates ? rate(s.rates.framesOut) : "–") },
  { id: "slow-drops", label: "Slow-consumer drops", hint: "since start: clients too slow to keep up", wide: true, value: (s) => int(s.stats.slowConsumerDrops) },
  { id: "heartbeat-timeouts", label: "Heartbeat timeouts", hint: "since start: members removed for silence", wide: true, value: (s) => int(s.stats.heartbeatTimeouts) },
  { id: "resumes", label: "Resumes", hint: "since start", wide: true, value: (s) => int(s.stats.resumes) },
];

/** Builds the overview page. */
export function overviewPage(): Page {
  const values = new Map<string, HTMLElement>();
  const hints = new Map<string, HTMLElement>();
  const cards = STATS.map((st) => {
    const v = h("div", { class: "stat-value", "data-testid": `stat-${st.id}` }, "–");
    const hint = h("div", { class: "stat-hint" }, st.hint);
    values.set(st.id, v);
    hints.set(st.id, hint);
    return h("div", { class: st.wide ? "stat wide" : "stat" }, h("div", { class: "stat-label" }, st.label), v, hint);
  });

  const charts: { chart: Chart; pick(s: Sample): (number | null)[] }[] = [
    {
      chart: lineChart("connections", "Connections and members", [
        { label: "connections", cls: "s1" },
        { label: "members", cls: "s2" },
        { label: "sessions", cls: "s3" },
      ], true),
      pick: (s) => [s.stats.connections, s.stats.members, s.stats.sessions],
    },
    {
      chart: lineChart("joins", "Joins / s", [{ label: "joins", cls: "s1" }]),
      pick: (s) => [s.rates ? s.rates.joins : null],
    },
    {
      chart: lineChart("frames", "Frames / s", [
        { label: "in", cls: "s1" },
        { label: "out", cls: "s2" },
      ]),
      pick: (s) => [s.rates ? s.rates.framesIn : null, s.rates ? s.rates.framesOut : null],
    },
    {
      chart: lineChart("problems", "Drops and timeouts / s", [
        { label: "slow-consumer drops", cls: "s4" },
        { label: "heartbeat timeouts", cls: "s3" },
      ]),
      pick: (s) => [s.rates ? s.rates.slowConsumerDrops : null, s.rates ? s.rates.heartbeatTimeouts : null],
    },
    {
      chart: lineChart("resumes", "Resumes / s", [
        { label: "resumed", cls: "s2" },
        { label: "failed", cls: "s4" },
      ]),
      pick: (s) => [s.rates ? s.rates.resumes : null, s.rates ? s.rates.resumeFailures : null],
    },
  ];

  const waiting = h("p", { class: "muted" }, "Waiting for the first stats event…");
  const el = h(
    "section",
    { class: "page overview" },
    h("header", { class: "page-header" }, h("h1", null, "Overview"), waiting),
    h("div", { class: "stats" }, cards),
    h("div", { class: "charts" }, charts.map((c) => c.chart.el)),
  );

  const draw = (): void => {
    const all = samples();
    const last = all[all.length - 1];
    if (!last) return;
    waiting.hidden = true;
    for (const st of STATS) setText(values.get(st.id)!, st.value(last));
    setText(
      hints.get("resumes")!,
      `since start; ${int(last.stats.resumeFailures)} failed`,
    );
    const now = last.stats.at;
    for (const c of charts) {
      const points: Point[] = all.map((s) => ({ t: s.stats.at, values: c.pick(s) }));
      c.chart.update(points, now);
    }
  };
  draw();
  const unwatch = watch(draw);
  return { el, dispose: unwatch };
}
