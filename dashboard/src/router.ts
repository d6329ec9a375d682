// router.ts: hash routes of the dashboard (#/overview, #/sessions, #/sessions/<id>, #/pairing,
// #/media). It mounts one page at a time into the main area and disposes the previous one (its
// timers and stream listeners), and marks the current nav link.

/** A mounted page: its root element and what stops its timers and listeners. */
export interface Page {
  el: HTMLElement;
  dispose(): void;
}

/** A parsed route. */
export type Route =
  | { name: "overview" }
  | { name: "sessions" }
  | { name: "session"; id: string }
  | { name: "pairing" }
  | { name: "media" };

/** Parses a location hash; anything unknown is the overview. */
export function parseHash(hash: string): Route {
  const path = hash.replace(/^#\/?/, "");
  const parts = path.split("/").filter((p) => p !== "");
  const [first, second] = parts;
  if (first === "sessions" && second !== undefined) {
    let id = second;
    try {
      id = decodeURIComponent(second);
    } catch {
      // keep it as written
    }
    return { name: "session", id };
  }
  if (first === "sessions") return { name: "sessions" };
  if (first === "pairing") return { name: "pairing" };
  if (first === "media") return { name: "media" };
  return { name: "overview" };
}

/** The hash of a session's page. */
export function sessionHref(id: string): string {
  return `#/sessions/${encodeURIComponent(id)}`;
}

/** Starts routing: `render` builds the page of a route; it is called now and on every hash change. */
export function startRouter(outlet: HTMLElement, render: (r: Route) => Page): () => void {
  let current: Page | null = null;
  const go = (): void => {
    const route = parseHash(location.hash);
    current?.dispose();
    current = null;
    const nav = route.name === "session" ? "sessions" : route.name;
    for (const a of document.querySelectorAll<HTMLAnchorElement>("a[data-nav]")) {
      if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    current = render(route);
    outlet.replaceChildren(current.el);
    window.scrollTo(0, 0);
  };
  window.addEventListener("hashchange", go);
  go();
  return () => {
    window.removeEventListener("hashchange", go);
    current?.dispose();
    current = null;
  };
}
