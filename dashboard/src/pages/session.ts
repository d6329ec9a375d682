// pages/session.ts: one session's page: its members (name, device, dialect, status, latency,
// host, handoff-ready), its state document with version and term, a live log of its joins,
// leaves, kicks, handoffs and resumes, and the operator's actions (kick a member, hand control
// to a member, close the session). GET /v1/sessions/{id} loads it, the event stream keeps it live,
// and it is fetched again on state-ish events and every 2 s while shown.

import {
  ApiError,
  closeSession,
  errorText,
  getSession,
  handoff,
  kickMember,
  type Member,
  type SessionDetail,
} from "../api";
import { h, replace, setText, type Child } from "../dom";
import { listen, type StreamEvent } from "../events";
import { clock, int } from "../format";
import type { Page } from "../router";

/** How often the page fetches the session again while it is shown. */
const REFRESH_MS = 2000;
/** The most log lines kept. */
const LOG_MAX = 500;

/** A session id as the server compares them: any case, with or without dashes. */
function canon(id: string): string {
  return id.replace(/-/g, "").toLowerCase();
}

/** Builds the page of session `id`. */
export function sessionPage(id: string): Page {
  let detail: SessionDetail | null = null;
  let members = new Map<string, Member>();
  const names = new Map<string, string>();
  let ended = false;
  let disposed = false;
  let closedHere = false;

  const title = h("h1", { "data-testid": "session-title" }, id);
  const crumbId = h("span", { class: "mono" }, id);
  const subtitle = h("p", { class: "muted" });
  const endedBanner = h("div", { class: "banner ended", "data-testid": "session-ended", hidden: true });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const result = h("div", { class: "action-result", "data-testid": "action-result", role: "status", "aria-live": "polite" });
  const closeBtn = h("button", { type: "button", class: "danger", "data-action": "close-session" }, "Close session");
  const tbody = h("tbody");
  const stateDoc = h("pre", { class: "state-doc", "data-testid": "state-doc" }, "");
  const version = h("span", { class: "num", "data-testid": "state-version" }, "–");
  const term = h("span", { class: "num", "data-testid": "state-term" }, "–");
  const log = h("ol", { class: "event-log", "data-testid": "event-log" });
  const logEmpty = h("p", { class: "muted" }, "Nothing yet: joins, leaves, kicks, handoffs and resumes appear here as they happen.");

  const el = h(
    "section",
    { class: "page session" },
    h("p", { class: "crumbs" }, h("a", { href: "#/sessions" }, "Sessions"), " / ", crumbId),
    h("header", { class: "page-header" }, h("div", null, title, subtitle), h("div", { class: "actions" }, closeBtn)),
    endedBanner,
    error,
    result,
    h(
      "div",
      { class: "card" },
      h("h2", null, "Members"),
      h(
        "table",
        { class: "table members" },
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            h("th", null, "Name"),
            h("th", null, "Device"),
            h("th", null, "Dialect"),
            h("th", null, "Status"),
            h("th", { class: "num" }, "Latency"),
            h("th", null, "Host"),
            h("th", null, "Ready"),
            h("th", { class: "actions-col" }, "Actions"),
          ),
        ),
        tbody,
      ),
    ),
    h(
      "div",
      { class: "split" },
      h(
        "div",
        { class: "card" },
        h("h2", null, "State ", h("span", { class: "meta" }, "version ", version, " · term ", term)),
        stateDoc,
      ),
      h("div", { class: "card" }, h("h2", null, "Event log"), logEmpty, log),
    ),
  );

  const nameOf = (memberId: string | null | undefined): string =>
    memberId ? (members.get(memberId)?.name ?? names.get(memberId) ?? memberId) : "nobody";

  /** A name, bidi-isolated: a name with a direction override cannot reorder the text after it. */
  const bdi = (name: string): HTMLElement => h("bdi", null, name);
  const who = (memberId: string | null | undefined): HTMLElement => bdi(nameOf(memberId));

  const addLog = (at: number, parts: Child[], cls: string): void => {
    logEmpty.hidden = true;
    log.appendChild(h("li", { class: cls }, h("time", null, clock(at)), " ", parts));
    while (log.childElementCount > LOG_MAX) log.firstElementChild?.remove();
    log.scrollTop = log.scrollHeight;
  };

  const showResult = (parts: Child[], ok: boolean): void => {
    result.className = `action-result ${ok ? "ok" : "fail"}`;
    replace(result, parts);
  };

  /** Asks, runs an action, shows its outcome; then fetches the session again if it is still open. */
  const act = async (question: string, run: () => Promise<Child[]>, refetch = true): Promise<void> => {
    if (!window.confirm(question)) return;
    let ok = false;
    try {
      showResult(await run(), true);
      ok = true;
    } catch (e) {
      showResult([errorText(e)], false);
    }
    if (refetch || !ok) void refresh();
  };

  const renderMembers = (): void => {
    const list = [...members.values()].sort((a, b) =>
      a.isHost !== b.isHost ? (a.isHost ? -1 : 1) : a.joinedAt - b.joinedAt,
    );
    replace(
      tbody,
      list.map((m) =>
        h(
          "tr",
          { "data-member-id": m.id, class: m.connectionStatus === "connected" ? "" : "away" },
          h("td", { "data-col": "name", title: m.id }, m.name),
          h("td", { "data-col": "device", class: "mono" }, m.deviceId ?? ""),
          h("td", { "data-col": "dialect" }, m.dialect ?? ""),
          h("td", { "data-col": "status" }, h("span", { class: `pill ${m.connectionStatus}` }, m.connectionStatus)),
          h("td", { "data-col": "latency", class: "num" }, typeof m.latency === "number" ? `${int(m.latency)} ms` : "–"),
          h("td", { "data-col": "host" }, m.isHost ? h("span", { class: "pill host" }, "host") : ""),
          h("td", { "data-col": "ready" }, m.handoffReady ? h("span", { class: "pill ready" }, "ready") : ""),
          h(
            "td",
            { class: "actions-col" },
            m.isHost
              ? null
              : [
                  h(
                    "button",
                    {
                      type: "button",
                      "data-action": "handoff",
                      "data-member-id": m.id,
                      disabled: ended,
                      title: `Ask the host to hand control to ${m.name}`,
                      onclick: () =>
                        void act(`Hand control of this session to ${m.name}?`, async () => {
                          const r = await handoff(detail?.id ?? id, m.id);
                          return ["handoff to ", bdi(m.name), ` started (${r.handoffId})`];
                        }),
                    },
                    "Hand control",
                  ),
                  h(
                    "button",
                    {
                      type: "button",
                      class: "danger",
                      "data-action": "kick",
                      "data-member-id": m.id,
                      disabled: ended,
                      onclick: () =>
                        void act(`Kick ${m.name} from this session?`, async () => {
                          await kickMember(detail?.id ?? id, m.id);
                          return ["kicked ", bdi(m.name)];
                        }),
                    },
                    "Kick",
                  ),
                ],
          ),
        ),
      ),
    );
    if (list.length === 0) {
      tbody.appendChild(h("tr", { class: "empty-row" }, h("td", { colspan: 8 }, ended ? "The session has ended." : "No members.")));
    }
  };

  const renderHeader = (): void => {
    if (!detail) return;
    setText(title, detail.name);
    setText(crumbId, detail.id);
    replace(
      subtitle,
      `${detail.id} · ${members.size} of ${detail.maxMembers} members · host: `,
      detail.hostId ? who(detail.hostId) : "no host",
      detail.passwordProtected ? " · password protected" : "",
    );
    setText(version, detail.version === undefined ? "–" : String(detail.version));
    setText(term, detail.term === undefined ? "–" : String(detail.term));
    let doc: string;
    try {
      doc = JSON.stringify(detail.state === undefined ? null : detail.state, null, 2) ?? "null";
    } catch {
      doc = String(detail.state);
    }
    setText(stateDoc, doc);
  };

  const end = (reason: string): void => {
    if (ended) return;
    ended = true;
    endedBanner.hidden = false;
    setText(endedBanner, `This session has ended: ${reason}`);
    closeBtn.disabled = true;
    members = new Map();
    renderMembers();
    if (detail) setText(subtitle, `${detail.id} · ended`);
  };

  let fetchSeq = 0;
  let eventSeq = 0;
  let inFlight = false;
  const refresh = async (): Promise<void> => {
    if (ended || disposed || inFlight || closedHere) return;
    inFlight = true;
    const mine = ++fetchSeq;
    const before = eventSeq;
    let stale = false;
    try {
      const d = await getSession(detail?.id ?? id);
      if (disposed || ended || mine !== fetchSeq) return;
      error.hidden = true;
      detail = d;
      if (eventSeq === before || members.size === 0) {
        // Only when no event came while it was on its way: else it may be older than them.
        members = new Map(d.members.map((m) => [m.id, m]));
        for (const m of d.members) names.set(m.id, m.name);
      } else {
        stale = true;
      }
      renderHeader();
      renderMembers();
    } catch (e) {
      if (disposed || mine !== fetchSeq) return;
      if (e instanceof ApiError && e.code === "session_not_found") {
        end("it is not open on this server (closed, or never existed).");
        return;
      }
      error.hidden = false;
      setText(error, `Could not load the session: ${errorText(e)}`);
    } finally {
      inFlight = false;
      if (stale && !disposed && !ended && !closedHere) setTimeout(() => void refresh(), 250);
    }
  };

  const mine = (session: string | null): boolean =>
    session !== null && canon(session) === canon(detail?.id ?? id);

  const onEvent = (e: StreamEvent): void => {
    if (!mine(e.data.session) || ended) return;
    eventSeq++;
    switch (e.kind) {
      case "session_opened":
        break;
      case "session_closed":
        addLog(e.data.at, [`session closed: ${e.data.reason}`], "closed");
        end(e.data.reason);
        return;
      case "member_joined": {
        const m = e.data.member;
        names.set(m.id, m.name);
        members.set(m.id, m);
        addLog(e.data.at, [bdi(m.name), ` joined${m.isHost ? " as host" : ""} (`, bdi(m.deviceId ?? "?"), `, ${m.dialect ?? "?"})`], "joined");
        break;
      }
      case "member_left": {
        const name = who(e.data.memberId);
        members.delete(e.data.memberId);
        const why = e.data.reason === "kicked" ? "was kicked" : e.data.reason === "left" ? "left" : `left (${e.data.reason})`;
        addLog(e.data.at, [name, ` ${why}`], e.data.reason === "kicked" ? "kicked" : "left");
        break;
      }
      case "member_updated": {
        const m = e.data.member;
        const prev = members.get(m.id);
        names.set(m.id, m.name);
        members.set(m.id, { ...prev, ...m });
        if (prev && prev.connectionStatus !== m.connectionStatus) {
          addLog(e.data.at, [bdi(m.name), ` is ${m.connectionStatus}`], "updated");
        } else if (prev && prev.handoffReady !== m.handoffReady) {
          addLog(e.data.at, [bdi(m.name), m.handoffReady ? " is ready to take control" : " withdrew its readiness"], "updated");
        }
        break;
      }
      case "host_changed": {
        for (const [mid, m] of members) {
          const isHost = mid === e.data.hostId;
          const ready = mid === e.data.previousHostId && e.data.reason === "handoff" ? true : isHost ? false : m.handoffReady;
          members.set(mid, { ...m, isHost, handoffReady: ready });
        }
        if (detail) detail = { ...detail, hostId: e.data.hostId, term: e.data.term };
        addLog(
          e.data.at,
          ["host changed to ", who(e.data.hostId), ` (${e.data.reason === "handoff" ? "handoff" : "host lost"}), term ${e.data.term}`],
          "host",
        );
        break;
      }
      case "handoff":
        if (e.data.outcome === "started") {
          addLog(e.data.at, ["handoff started: ", who(e.data.hostId), " → ", who(e.data.targetId)], "handoff");
        } else {
          addLog(e.data.at, ["handoff failed", e.data.targetId ? [" (to ", who(e.data.targetId), ")"] : null, `: ${e.data.reason ?? "unknown"}`], "handoff failed");
        }
        break;
      case "resume":
        addLog(
          e.data.at,
          e.data.outcome === "resumed"
            ? [who(e.data.memberId), " resumed"]
            : [who(e.data.memberId), ` could not resume: ${e.data.reason ?? e.data.outcome}`],
          e.data.outcome === "resumed" ? "resumed" : "failed",
        );
        break;
    }
    renderHeader();
    renderMembers();
    if (e.kind !== "member_joined" && e.kind !== "member_left") void refresh();
  };

  closeBtn.addEventListener("click", () =>
    void act(
      "Close this session for all its members?",
      async () => {
        await closeSession(detail?.id ?? id);
        // No fetch after this (it would be a 404): the session_closed event ends the page, or
        // this does if the stream is down.
        closedHere = true;
        setTimeout(() => end("Session closed by the server administrator"), 3000);
        return ["session closed"];
      },
      false,
    ),
  );

  const unlisten = listen({ event: onEvent, reload: () => void refresh() });
  const timer = setInterval(() => void refresh(), REFRESH_MS);
  renderMembers();
  void refresh();
  return {
    el,
    dispose: () => {
      disposed = true;
      unlisten();
      clearInterval(timer);
    },
  };
}
