// pages/pairing.ts: the pairing page: every app the pairing hub (CRSocket, docs/PROTOCOL.md §16)
// knows, its clients, their role and transport, and who is paired with whom; GET /v1/pairing
// every 2 s while shown.

import { getPairing, type Pairing, type PairingClient } from "../api";
import { h, replace, setText } from "../dom";
import type { Page } from "../router";
import { poll } from "./poll";

function stateOf(c: PairingClient): string {
  if (!c.connected) return "disconnected";
  if (c.partner === null) return "unpaired";
  return c.active ? "paired" : "partner silent";
}

/** Builds the pairing page. */
export function pairingPage(): Page {
  const tbody = h("tbody");
  const summary = h("span", { class: "muted" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const empty = h("p", { class: "empty", "data-testid": "pairing-empty", hidden: true }, "No pairing apps: the server runs without --app, or none is configured.");
  const table = h(
    "table",
    { class: "table pairing", hidden: true },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        h("th", null, "App"),
        h("th", null, "Client"),
        h("th", null, "Role"),
        h("th", null, "Transport"),
        h("th", null, "Partner"),
        h("th", null, "State"),
      ),
    ),
    tbody,
  );
  const el = h(
    "section",
    { class: "page pairing" },
    h("header", { class: "page-header" }, h("h1", null, "Pairing"), summary),
    error,
    empty,
    table,
  );

  const show = (p: Pairing): void => {
    error.hidden = true;
    empty.hidden = p.apps.length > 0;
    table.hidden = p.apps.length === 0;
    let clients = 0;
    let paired = 0;
    const rows: HTMLElement[] = [];
    for (const app of p.apps) {
      if (app.clients.length === 0) {
        rows.push(h("tr", { class: "empty-row" }, h("td", { "data-col": "app" }, app.app), h("td", { colspan: 5, class: "muted" }, "no clients")));
      }
      for (const c of app.clients) {
        clients++;
        if (c.partner !== null && c.connected) paired++;
        const state = stateOf(c);
        rows.push(
          h(
            "tr",
            { "data-pairing-client": c.clientId },
            h("td", { "data-col": "app" }, app.app),
            h("td", { "data-col": "client", class: "mono" }, c.clientId),
            h("td", { "data-col": "role" }, c.role),
            h("td", { "data-col": "transport" }, c.transport),
            h("td", { "data-col": "partner", class: "mono" }, c.partner ?? "–"),
            h("td", { "data-col": "state" }, h("span", { class: `pill ${state.replace(" ", "-")}` }, state)),
          ),
        );
      }
    }
    replace(tbody, rows);
    setText(summary, `${p.apps.length} app${p.apps.length === 1 ? "" : "s"}, ${clients} client${clients === 1 ? "" : "s"}, ${paired} paired`);
  };
  const fail = (message: string): void => {
    error.hidden = false;
    setText(error, `Could not load pairing: ${message}`);
  };
  return { el, dispose: poll(getPairing, show, fail) };
}
