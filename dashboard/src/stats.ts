// stats.ts: the last five minutes of `stats` events, kept for the whole page (so the overview's
// charts are full when it is opened), and the per-second rates computed from the cumulative
// counters of consecutive events.

import { listen, type Stats } from "./events";

/** How far back the charts look, in ms. */
export const WINDOW_MS = 5 * 60 * 1000;

/** One point of history: the stats event and the rates since the one before it. */
export interface Sample {
  stats: Stats;
  /** Per-second rates since the previous sample; null for the first one or after a restart. */
  rates: Rates | null;
}

/** Per-second rates of the cumulative counters. */
export interface Rates {
  joins: number;
  framesIn: number;
  framesOut: number;
  slowConsumerDrops: number;
  heartbeatTimeouts: number;
  resumes: number;
  resumeFailures: number;
}

const history: Sample[] = [];
const watchers = new Set<() => void>();

/** Rates per second between two stats events; null if time did not advance or a counter fell. */
export function ratesBetween(a: Stats, b: Stats): Rates | null {
  const secs = (b.at - a.at) / 1000;
  if (!(secs > 0)) return null;
  const r = (k: keyof Rates): number => (b[k] - a[k]) / secs;
  const rates: Rates = {
    joins: r("joins"),
    framesIn: r("framesIn"),
    framesOut: r("framesOut"),
    slowConsumerDrops: r("slowConsumerDrops"),
    heartbeatTimeouts: r("heartbeatTimeouts"),
    resumes: r("resumes"),
    resumeFailures: r("resumeFailures"),
  };
  // A counter going down means a restarted server: no rate across it.
  return Object.values(rates).some((v) => v < 0 || !Number.isFinite(v)) ? null : rates;
}

function add(s: Stats): void {
  const prev = history[history.length - 1];
  history.push({ stats: s, rates: prev ? ratesBetween(prev.stats, s) : null });
  const cutoff = s.at - WINDOW_MS - 5000;
  while (history.length > 0 && history[0]!.stats.at < cutoff) history.shift();
  for (const w of [...watchers]) w();
}

/** Starts recording (once, at page start). */
export function record(): void {
  listen({ stats: add });
}

/** The samples of the last five minutes, oldest first (do not modify). */
export function samples(): readonly Sample[] {
  return history;
}

/** Calls `fn` after each new sample; returns the function that stops it. */
export function watch(fn: () => void): () => void {
  watchers.add(fn);
  return () => watchers.delete(fn);
}
