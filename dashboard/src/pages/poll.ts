// pages/poll.ts: polls a GET endpoint every 2 s while a page is shown (pairing and media have no
// stream events), and stops when the page goes.

import { errorText } from "../api";

/** Polls `load` now and every `everyMs`; `show` gets each answer, `fail` each error's text. */
export function poll<T>(
  load: () => Promise<T>,
  show: (value: T) => void,
  fail: (message: string) => void,
  everyMs = 2000,
): () => void {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const run = async (): Promise<void> => {
    try {
      const value = await load();
      if (!stopped) show(value);
    } catch (e) {
      if (!stopped) fail(errorText(e));
    }
    if (!stopped) timer = setTimeout(() => void run(), everyMs);
  };
  void run();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
