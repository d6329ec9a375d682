// pages/sessions.ts: the sessions list: id, name, member count, host and age of every session,
// searchable by id, name or host; loaded from GET /v1/sessions and kept live by the event
// stream (sessions appear and disappear, member counts and hosts change without a reload).

import { errorText, listSessions, type Member, type Session } from "../api";
import { h, replace, setText } from "../dom";
import { listen, type StreamEvent } from "../events";
import { age, int } from "../format";
import { sessionHref, type Page } from "../router";

interface Row {
  id: string;
  name: string;
  hostId: string | null;
  hostName: string | null;
  maxMembers: number;
  members: Map<string, Member>;
  /** When the session opened, if known (its `session_opened`), else its first member's join. */
  openedAt: number | null;
}

function fromSession(s: Session, openedAt: number | null): Row {
  const members = new Map(s.members.map((m) => [m.id, m]));
  let first: number | null = openedAt;
  if (first === null) for (const m of s.members) if (first === null || m.joinedAt < first) first = m.joinedAt;
  return { id: s.id, name: s.name, hostId: s.hostId, hostName: s.hostName ?? null, maxMembers: s.maxMembers, members, openedAt: first };
}

function hostOf(r: Row): string {
  if (r.hostId) return r.members.get(r.hostId)?.name ?? r.hostName ?? r.hostId;
  return r.hostName ? `${r.hostName} (not joined)` : "";
}

/** Applies one stream event to the rows (idempotent, as §17.3 asks). Exported for tests. */
export function applyEvent(rows: Map<string, Row>, e: StreamEvent): void {
  const d = e.data;
  if (e.kind === "session_opened") {
    const prev = rows.get(e.data.session);
    rows.set(e.data.session, {
      id: e.data.session,
      name: e.data.name,
      hostId: e.data.hostId,
      hostName: e.data.hostName,
      maxMembers: e.data.maxMembers,
      members: prev?.members ?? new Map(),
      openedAt: e.data.at,
    });
    return;
  }
  if (d.session === null) return;
  const row = rows.get(d.session);
  if (!row) return;
  switch (e.kind) {
    case "session_closed":
      rows.delete(e.data.session);
      break;
    case "member_joined":
      row.members.set(e.data.member.id, e.data.member);
      if (e.data.member.isHost) row.hostId = e.data.member.id;
      if (row.openedAt === null) row.openedAt = e.data.member.joinedAt;
      break;
    case "member_updated":
      row.members.set(e.data.member.id, { ...row.members.get(e.data.member.id), ...e.data.member });
      break;
    case "member_left":
      row.members.delete(e.data.memberId);
      if (row.hostId === e.data.memberId) row.hostId = null;
      break;
    case "host_changed":
      row.hostId = e.data.hostId;
      break;
    default:
      break;
  }
}

/** Builds the sessions page. */
export function sessionsPage(): Page {
  const rows = new Map<string, Row>();
  const search = h("input", {
    type: "search",
    "data-testid": "session-search",
    placeholder: "Search by id, name or host",
    "aria-label": "Search sessions",
    autocomplete: "off",
    spellcheck: "false",
  });
  const tbody = h("tbody");
  const count = h("span", { class: "muted" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const empty = h("p", { class: "empty", hidden: true });
  const table = h(
    "table",
    { class: "table sessions" },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        h("th", null, "Id"),
        h("th", null, "Name"),
        h("th", { class: "num" }, "Members"),
        h("th", null, "Host"),
        h("th", { class: "num" }, "Age"),
      ),
    ),
    tbody,
  );
  const el = h(
    "section",
    { class: "page sessions" },
    h("header", { class: "page-header" }, h("h1", null, "Sessions"), count),
    h("div", { class: "toolbar" }, search),
    error,
    table,
    empty,
  );

  const ageCells = new Map<string, HTMLElement>();
  const render = (): void => {
    const q = search.value.trim().toLowerCase();
    const list = [...rows.values()]
      .filter((r) => q === "" || [r.id, r.name, hostOf(r)].some((f) => f.toLowerCase().includes(q)))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    ageCells.clear();
    replace(
      tbody,
      list.map((r) => {
        const href = sessionHref(r.id);
        const ageCell = h("td", { "data-col": "age", class: "num" }, r.openedAt === null ? "–" : age(Date.now() - r.openedAt));
        ageCells.set(r.id, ageCell);
        const tr = h(
          "tr",
          {
            "data-session-id": r.id,
            class: "link-row",
            onclick: (ev: Event) => {
              if ((ev.target as Element).closest("a")) return;
              location.hash = href;
            },
          },
          h("td", { "data-col": "id", class: "mono" }, h("a", { href }, r.id)),
          h("td", { "data-col": "name" }, r.name),
          h("td", { "data-col": "members", class: "num" }, `${int(r.members.size)} / ${int(r.maxMembers)}`),
          h("td", { "data-col": "host" }, hostOf(r)),
          ageCell,
        );
        return tr;
      }),
    );
    setText(count, `${rows.size} open${q && list.length !== rows.size ? `, ${list.length} shown` : ""}`);
    empty.hidden = list.length > 0;
    setText(empty, rows.size === 0 ? "No sessions are open." : "No session matches the search.");
  };

  let loadSeq = 0;
  let eventsSince = 0;
  const load = async (): Promise<void> => {
    const mine = ++loadSeq;
    const before = eventsSince;
    try {
      const sessions = await listSessions();
      if (mine !== loadSeq) return;
      const opened = new Map([...rows.values()].map((r) => [r.id, r.openedAt]));
      const seen = new Set<string>();
      for (const s of sessions) {
        seen.add(s.id);
        rows.set(s.id, fromSession(s, opened.get(s.id) ?? null));
      }
      for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
      error.hidden = true;
      render();
      // Events that came while the list was on its way may be older or newer than it: ask again.
      if (eventsSince !== before) void load();
    } catch (e) {
      if (mine !== loadSeq) return;
      error.hidden = false;
      setText(error, `Could not load the sessions: ${errorText(e)}`);
    }
  };

  search.addEventListener("input", render);
  const unlisten = listen({
    reload: () => void load(),
    event: (e) => {
      eventsSince++;
      applyEvent(rows, e);
      render();
    },
  });
  const tick = setInterval(() => {
    for (const [id, cell] of ageCells) {
      const r = rows.get(id);
      if (r && r.openedAt !== null) setText(cell, age(Date.now() - r.openedAt));
    }
  }, 1000);
  render();
  void load();
  return {
    el,
    dispose: () => {
      unlisten();
      clearInterval(tick);
      loadSeq++;
    },
  };
}
