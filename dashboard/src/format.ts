// format.ts: how numbers, durations and times read on the dashboard.

/** An integer, plainly (no thousands separators: scripts and tests read these numbers too). */
export function int(n: number): string {
  return String(Math.round(n));
}

/** A rate per second: one decimal below 100, whole numbers above. */
export function rate(n: number): string {
  return n < 100 ? n.toFixed(1) : int(n);
}

/** A duration in ms as "3s", "4m 05s", "2h 10m", "3d 4h". */
export function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 24) return `${hrs}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hrs / 24)}d ${hrs % 24}h`;
}

/** A wall-clock time of day (HH:MM:SS, local). */
export function clock(ms: number): string {
  const d = new Date(ms);
  const p = (n: number): string => String(n).padStart(2, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
