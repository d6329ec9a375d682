// pages/media.ts: the media page: the UDP relay's streams (docs/PROTOCOL.md §12), each with its
// publisher, subscribers (by name, from GET /v1/sessions, and UDP address), datagrams relayed,
// frames lost and jitter; GET /v1/media every 2 s while shown.

import { getMedia, listSessions, type Media, type MediaPeer } from "../api";
import { h, replace, setText } from "../dom";
import { int } from "../format";
import type { Page } from "../router";
import { poll } from "./poll";

/** The media answer and the members' names (memberId → name) of the sessions open now. */
interface View {
  media: Media;
  names: Map<string, string>;
}

async function load(): Promise<View> {
  const media = await getMedia();
  const names = new Map<string, string>();
  if (media.enabled && media.streams.length > 0) {
    try {
      for (const s of await listSessions()) for (const m of s.members) names.set(m.id, m.name);
    } catch {
      // names are a nicety: ids alone still say who
    }
  }
  return { media, names };
}

function peer(p: MediaPeer, names: Map<string, string>): HTMLElement {
  const name = names.get(p.memberId);
  return h("span", { title: p.memberId }, h("bdi", null, name ?? p.memberId), " ", h("span", { class: "muted mono" }, p.address));
}

/** Builds the media page. */
export function mediaPage(): Page {
  const tbody = h("tbody");
  const summary = h("span", { class: "muted" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const disabled = h(
    "p",
    { class: "empty", "data-testid": "media-disabled", hidden: true },
    "The media relay is off: start the server with --media-listen to relay media streams.",
  );
  const empty = h("p", { class: "empty", hidden: true }, "No media streams right now.");
  const table = h(
    "table",
    { class: "table media", hidden: true },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        h("th", null, "Session"),
        h("th", null, "Publisher"),
        h("th", null, "Subscribers"),
        h("th", { class: "num" }, "Relayed"),
        h("th", { class: "num" }, "Lost"),
        h("th", { class: "num" }, "Jitter"),
      ),
    ),
    tbody,
  );
  const el = h(
    "section",
    { class: "page media" },
    h("header", { class: "page-header" }, h("h1", null, "Media"), summary),
    error,
    disabled,
    table,
    empty,
  );

  const show = ({ media: m, names }: View): void => {
    error.hidden = true;
    disabled.hidden = m.enabled;
    if (!m.enabled) {
      table.hidden = true;
      empty.hidden = true;
      setText(summary, "relay off");
      return;
    }
    table.hidden = m.streams.length === 0;
    empty.hidden = m.streams.length > 0;
    setText(summary, `UDP port ${m.port}, ${m.streams.length} stream${m.streams.length === 1 ? "" : "s"}`);
    replace(
      tbody,
      m.streams.map((s) =>
        h(
          "tr",
          { "data-media-stream": s.sessionId },
          h("td", { "data-col": "session", class: "mono" }, s.sessionId),
          h("td", { "data-col": "publisher" }, s.publisher ? peer(s.publisher, names) : "–"),
          h(
            "td",
            { "data-col": "subscribers" },
            s.subscribers.length === 0 ? "none" : s.subscribers.map((p, i) => [i > 0 ? h("br") : null, peer(p, names)]),
          ),
          h("td", { "data-col": "relayed", class: "num" }, int(s.datagramsRelayed)),
          h("td", { "data-col": "lost", class: "num" }, int(s.framesLost)),
          h("td", { "data-col": "jitter", class: "num" }, s.jitterMs === null ? "–" : `${s.jitterMs.toFixed(2)} ms`),
        ),
      ),
    );
  };
  const fail = (message: string): void => {
    error.hidden = false;
    setText(error, `Could not load media: ${message}`);
  };
  return { el, dispose: poll(load, show, fail) };
}
