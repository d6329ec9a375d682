// dashboard.test.mjs: the operator dashboard (issue 15) in headless Chromium against a real
// `loudsync serve` on loopback with real members (the TypeScript SDK over `ws`). What it checks,
// through the DOM contract the dashboard keeps (data-testid / data-col / data-action selectors):
// the routes and their security headers; the overview's live counters (sessions, members,
// connections the test created, from the next `stats` event); the sessions list, its search and
// a session opening and closing live; a session page's members (a hostile name shown as text),
// state document, version and term; kick, handoff and close from the page, each seen by the
// members' clients; the login form with --admin-token (wrong token, right token, the cookie, the
// CSRF Origin check, logout); the pairing page with a paired controller and responder; the media
// page disabled, and with --media-listen a stream with a publisher and a subscriber (support:
// media.mjs); a name with a bidi override not reordering the log; the event stream across a
// server restart (reconnecting, live again, lists reloaded); a member's dropped connection
// resumed (status, log, the resumes counter). Every page is screenshotted into
// dashboard/test/out/. Every wait is bounded.
// Run: `node --test dashboard/test/` after `cargo build --release --bin loudsync`,
// `cd dashboard && npm ci`, and `cd clients/typescript && npm ci && npm run build`
// (.ci/dashboard.sh does all of it). LOUDSYNC_BIN overrides the binary, CHROMIUM the browser.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import {
  startServer, launchBrowser, openPage, waitInPage, screenshot, members, getJson,
  record, within, sdk, WebSocket, WAIT_MS, startProxy,
} from "./support.mjs";
import { publish, subscribe } from "./media.mjs";

const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; " +
  "connect-src 'self'; frame-ancestors 'none'";
/** A member name that would create elements (and run script) if the page used innerHTML. */
const HOSTILE = `<b>bold</b><img src=x onerror="window.__pwned=1">\u202Eevil & "quoted"`;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

// ---------------------------------------------------------------------------------------------
// In the page (serialised into it by waitForFunction / evaluate).

/** Every page's final checks: no console or page errors, no 4xx/5xx, nothing but its own origin asked for. */
function assertClean(page, base) {
  assert.deepEqual(page.problems, [], `the page had problems:\n${page.problems.join("\n")}`);
  const foreign = page.requested.filter((line) => {
    const url = line.slice(line.indexOf(" ") + 1);
    return !url.startsWith(`${base}/`) && !url.startsWith("data:");
  });
  assert.deepEqual(foreign, [], "the page asked another origin for something");
}

/** Waits for the connection indicator to say `live`. */
async function waitLive(page, server) {
  await waitInPage(page, "the connection indicator saying live",
    () => document.querySelector('[data-testid="live"]')?.textContent.trim() === "live", undefined, server);
}

/** The cells of member row `id` on a session page, by data-col. */
function memberCells(page, id) {
  return page.evaluate((memberId) => {
    const row = document.querySelector(`tr[data-member-id="${CSS.escape(memberId)}"]`);
    if (!row) return null;
    const cells = {};
    for (const cell of row.querySelectorAll("[data-col]")) cells[cell.dataset.col] = cell.textContent.trim();
    return cells;
  }, id);
}

// ---------------------------------------------------------------------------------------------

/** Whether the element `selector` is there and rendered (not hidden). In the page. */
const isShown = (selector) => {
  const element = document.querySelector(selector);
  return !!element && !element.hidden && element.getClientRects().length > 0;
};

/** Whether the visible rows of `selector` (by `attribute`) are exactly `ids` (sorted). In the page. */
const rowsAre = ([selector, attribute, ids]) => JSON.stringify(ids) === JSON.stringify(
  [...document.querySelectorAll(selector)].filter((row) => row.getClientRects().length > 0)
    .map((row) => row.getAttribute(attribute)).sort());

/** Whether some `li` of the event log matches `pattern` (a RegExp source, case-insensitive). In the page. */
const logMatches = (pattern) => [...document.querySelectorAll('ol[data-testid="event-log"] > li')]
  .some((li) => new RegExp(pattern, "i").test(li.textContent));

describe("a server without --admin-token (loopback), with --app alpha", () => {
  let server;
  let peers;
  /** The test's members by device id: { client, log, id, name }. */
  const m = {};
  before(async () => {
    server = await startServer(["--app", "alpha", "--latency-interval", "200ms", "--handoff-timeout", "5s"]);
    peers = members();
  });
  after(async () => {
    await peers?.closeAll();
    await server?.stop();
  });

  test("routes: /dashboard redirects, the page and its assets carry their types and security headers", async () => {
    const redirect = await fetch(`${server.http}/dashboard`, { redirect: "manual", signal: AbortSignal.timeout(WAIT_MS) });
    assert.equal(redirect.status, 302);
    assert.match(redirect.headers.get("location"), /^(http:\/\/127\.0\.0\.1:\d+)?\/dashboard\/$/);
    for (const [path, type] of [
      ["/dashboard/", /^text\/html/],
      ["/dashboard/app.js", /^(text|application)\/javascript/],
      ["/dashboard/app.css", /^text\/css/],
    ]) {
      const response = await fetch(server.http + path, { signal: AbortSignal.timeout(WAIT_MS) });
      assert.equal(response.status, 200, path);
      assert.match(response.headers.get("content-type"), type, `${path} Content-Type`);
      assert.equal(response.headers.get("cache-control"), "no-cache", `${path} Cache-Control`);
      assert.equal(response.headers.get("x-content-type-options"), "nosniff", `${path} X-Content-Type-Options`);
      assert.equal(response.headers.get("content-security-policy"), CSP, `${path} Content-Security-Policy`);
      assert.equal(response.headers.get("referrer-policy"), "no-referrer", `${path} Referrer-Policy`);
      assert.ok((await response.arrayBuffer()).byteLength > 0, `${path} is empty`);
    }
  });

  test("overview: the live counters show the sessions, members and connections the test created", async () => {
    // Two sessions: dash-alpha (host + 2), dash-beta (host + 1): 2 sessions, 5 members, 5 sockets.
    m.desk = await peers.connect(server.ws, "dash-alpha", "desk", "Desk", "host", { sessionName: "Alpha party" });
    m.phone = await peers.connect(server.ws, "dash-alpha", "phone", "Phone");
    m.evil = await peers.connect(server.ws, "dash-alpha", "evil", HOSTILE);
    m.tv = await peers.connect(server.ws, "dash-beta", "tv", "Living-room TV", "host", { sessionName: "Beta night" });
    m.tablet = await peers.connect(server.ws, "dash-beta", "tablet", "Tablet");

    const page = await openPage(browser, server.http);
    await waitLive(page, server);
    // The levels from the latest stats event; the rates once two have come (the members'
    // heartbeats make frames in > 0).
    await waitInPage(page, "the overview showing 2 sessions, 5 members, 5 connections and frames coming in", () => {
      const stat = (name) => document.querySelector(`[data-testid="stat-${name}"]`)?.textContent.trim();
      return stat("sessions") === "2" && stat("members") === "5" && stat("connections") === "5" &&
        Number(stat("frames-in-per-s")) > 0 && /^[0-9]/.test(stat("joins-per-s") ?? "");
    }, undefined, server);
    const stats = await page.evaluate(() => Object.fromEntries(
      ["connections", "sessions", "members", "joins-per-s", "frames-in-per-s", "frames-out-per-s",
        "slow-drops", "heartbeat-timeouts", "resumes"]
        .map((name) => [name, document.querySelector(`[data-testid="stat-${name}"]`)?.textContent.trim() ?? null])));
    for (const [name, text] of Object.entries(stats)) {
      assert.notEqual(text, null, `no [data-testid="stat-${name}"]`);
      assert.ok(Number.isFinite(Number(text.replace(/[,\s]|\/s$/g, ""))), `stat-${name} is not a number: ${JSON.stringify(text)}`);
    }
    for (const name of ["slow-drops", "heartbeat-timeouts", "resumes"]) assert.equal(stats[name], "0", `stat-${name}`);
    const charts = await page.evaluate(() => [...document.querySelectorAll("svg[data-chart], canvas[data-chart]")].map((c) => c.dataset.chart));
    assert.ok(charts.length >= 1, "no svg[data-chart] / canvas[data-chart] on the overview");
    // An SVG chart draws its lines as the samples come (a canvas one cannot be read back here).
    await waitInPage(page, "a chart drawing a line", () => [...document.querySelectorAll("svg[data-chart]")]
      .some((chart) => [...chart.querySelectorAll("polyline, path")].some((line) =>
        (line.getAttribute("points") ?? line.getAttribute("d") ?? "").trim().split(/\s+/).length >= 2)) ||
      document.querySelector("canvas[data-chart]") !== null, undefined, server);

    // A member joins and leaves: the counters follow without a reload.
    const watch = await peers.connect(server.ws, "dash-beta", "watch", "Watch");
    await waitInPage(page, "the overview showing 6 members", () =>
      document.querySelector('[data-testid="stat-members"]')?.textContent.trim() === "6", undefined, server);
    await within(watch.client.leave(), WAIT_MS, "watch leaving");
    await waitInPage(page, "the overview back at 5 members", () =>
      document.querySelector('[data-testid="stat-members"]')?.textContent.trim() === "5", undefined, server);
    await screenshot(page, "overview");
    assertClean(page, server.http);
    await page.context().close();
  });

  test("sessions: the list, its search, a session appearing and going live, a row's link", async () => {
    const page = await openPage(browser, server.http, "/dashboard/#/sessions");
    await waitLive(page, server);
    await waitInPage(page, "the sessions list showing dash-alpha and dash-beta", rowsAre,
      ["tr[data-session-id]", "data-session-id", ["dash-alpha", "dash-beta"]], server);
    const cells = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll(
      'tr[data-session-id="dash-alpha"] [data-col]')].map((c) => [c.dataset.col, c.textContent.trim()])));
    assert.equal(cells.id, "dash-alpha");
    assert.equal(cells.name, "Alpha party");
    assert.match(cells.members, /^3\b/);
    assert.match(cells.host, /Desk/);
    assert.ok(cells.age?.length > 0, `empty age cell: ${JSON.stringify(cells)}`);

    // The search: by id, by name, by host, case-insensitive.
    const search = page.locator('input[data-testid="session-search"]');
    for (const [query, expected] of [["ALPHA", ["dash-alpha"]], ["beta NIGHT", ["dash-beta"]], ["living-ROOM", ["dash-beta"]],
      ["Dash-", ["dash-alpha", "dash-beta"]], ["no such thing", []]]) {
      await search.fill(query);
      await waitInPage(page, `the search ${JSON.stringify(query)} showing ${expected.join(", ") || "nothing"}`, rowsAre,
        ["tr[data-session-id]", "data-session-id", expected], server);
    }
    await search.fill("");

    // A session opened now appears without a reload; when it ends it goes.
    const gamma = await peers.connect(server.ws, "dash-gamma", "laptop", "Laptop", "host");
    await waitInPage(page, "dash-gamma appearing live", rowsAre,
      ["tr[data-session-id]", "data-session-id", ["dash-alpha", "dash-beta", "dash-gamma"]], server);
    await screenshot(page, "sessions");
    await within(gamma.client.closeSession(), WAIT_MS, "closing dash-gamma");
    await waitInPage(page, "dash-gamma disappearing live", rowsAre,
      ["tr[data-session-id]", "data-session-id", ["dash-alpha", "dash-beta"]], server);

    // Each row links to its session page.
    await page.locator('tr[data-session-id="dash-alpha"] [data-col="id"]').click();
    await waitInPage(page, "the row's link leading to #/sessions/dash-alpha",
      () => location.hash === "#/sessions/dash-alpha" && !!document.querySelector('[data-testid="session-title"]'), undefined, server);
    assertClean(page, server.http);
    await page.context().close();
  });

  test("a session page: members (a hostile name stays text), the state document, version and term", async () => {
    // The server refuses a name with a control character (ESC) outright, so none can reach the page.
    const refused = new sdk.Client({ url: server.ws, sessionId: "dash-alpha", WebSocket,
      device: { id: "esc", name: "esc\u001b[2Jname", type: "client" }, reconnect: { attempts: 0, delayMs: 100 }, resume: false });
    await assert.rejects(within(refused.connect(), WAIT_MS, "a join with ESC in its name"));
    await within(Promise.resolve().then(() => refused.disconnect()), 3_000, "disconnect").catch(() => {});

    // The host sets a state; a member declares itself ready.
    m.desk.client.setState({ track: "Blue in Green", pos: 7 }, 0);
    await m.desk.log.waitFor("sessionState", (event) => event.version === 1);
    m.phone.client.setReady(true);
    await m.phone.log.waitFor("roleChanged", (event) => event.role === "handoff_ready");

    const page = await openPage(browser, server.http, "/dashboard/#/sessions/dash-alpha");
    await waitLive(page, server);
    await waitInPage(page, "the three members listed", rowsAre,
      ["tr[data-member-id]", "data-member-id", [m.desk.id, m.phone.id, m.evil.id].sort()], server);
    assert.match(await page.locator('[data-testid="session-title"]').innerText(), /Alpha party|dash-alpha/);

    // Latency: the server measures it every 200 ms here; the page shows it (as it refreshes).
    await waitInPage(page, "Desk's latency in ms", (id) => /[0-9]/.test(document.querySelector(
      `tr[data-member-id="${CSS.escape(id)}"] [data-col="latency"]`)?.textContent ?? ""), m.desk.id, server);
    const desk = await memberCells(page, m.desk.id);
    const phone = await memberCells(page, m.phone.id);
    const evil = await memberCells(page, m.evil.id);
    assert.match(desk.name, /^Desk/);
    assert.match(desk.device, /desk/);
    assert.equal(desk.dialect, "loudsync");
    assert.equal(desk.status, "connected");
    assert.match(phone.name, /^Phone/);
    assert.match(phone.device, /phone/);
    assert.ok("latency" in desk, `no latency cell: ${JSON.stringify(desk)}`);
    assert.notEqual(desk.host, phone.host, "the host's host cell reads like a member's");
    assert.equal(phone.host, evil.host, "two members' host cells differ");
    assert.notEqual(phone.ready, evil.ready, "a ready member's ready cell reads like an unready one's");

    // The hostile name: exactly its text; no element made from it, no script run.
    const hostile = await page.evaluate((id) => {
      const cell = document.querySelector(`tr[data-member-id="${CSS.escape(id)}"] [data-col="name"]`);
      return { text: cell.textContent, elements: cell.querySelectorAll("b, img, script").length,
        anywhere: document.querySelectorAll("#app b, #app img").length, pwned: window.__pwned === 1 };
    }, m.evil.id);
    assert.ok(hostile.text.includes(HOSTILE), `the name cell reads ${JSON.stringify(hostile.text)}`);
    assert.equal(hostile.elements, 0, "the name made elements in its cell");
    assert.equal(hostile.anywhere, 0, "the name made elements in the page");
    assert.equal(hostile.pwned, false, "the name's onerror ran");

    // The state document (pretty JSON), its version and term, as the API has them.
    const detail = await getJson(server.http, "/v1/sessions/dash-alpha");
    assert.equal(await page.locator('[data-testid="state-version"]').innerText(), String(detail.version));
    assert.equal(await page.locator('[data-testid="state-term"]').innerText(), String(detail.term));
    const doc = await page.locator('pre[data-testid="state-doc"]').innerText();
    assert.deepEqual(JSON.parse(doc), { track: "Blue in Green", pos: 7 });
    assert.match(doc, /\n/, "the state document is not pretty-printed");
    await screenshot(page, "session");
    assertClean(page, server.http);
    await page.context().close();
  });

  test("kick from the session page: the member's client gets kicked, its row goes, the log shows it", async () => {
    const page = await openPage(browser, server.http, "/dashboard/#/sessions/dash-alpha");
    await waitLive(page, server);
    const kickButton = page.locator(`button[data-action="kick"][data-member-id="${m.phone.id}"]`);
    // Dismissing the confirm() calls nothing; accepting it calls the admin API once.
    page.dismissNext = true;
    await kickButton.click({ timeout: WAIT_MS });
    assert.equal(page.dialogs.length, 1, "kick did not ask confirm()");
    await kickButton.click({ timeout: WAIT_MS });
    const kicked = await m.phone.log.waitFor("kicked");
    assert.ok(kicked.reason.length > 0);
    await waitInPage(page, "Phone's row going", rowsAre,
      ["tr[data-member-id]", "data-member-id", [m.desk.id, m.evil.id].sort()], server);
    await waitInPage(page, "the event log showing the kick", logMatches, "kick", server);
    await waitInPage(page, "the action result saying kicked Phone",
      () => /kicked/i.test(document.querySelector('[data-testid="action-result"]')?.textContent ?? "") &&
        /Phone/.test(document.querySelector('[data-testid="action-result"]')?.textContent ?? ""), undefined, server);
    assert.equal(page.dialogs.length, 2, `confirm() asked: ${page.dialogs.join(" | ")}`);
    assert.match(page.dialogs[1], /^confirm: .*Phone/);
    const kicks = page.requested.filter((line) => line.startsWith("POST ") && line.includes(`/members/${m.phone.id}/kick`));
    assert.equal(kicks.length, 1, `kick requests: ${kicks.join(", ")}`);

    // The hostile member too: the result names it as text.
    await page.locator(`button[data-action="kick"][data-member-id="${m.evil.id}"]`).click({ timeout: WAIT_MS });
    await m.evil.log.waitFor("kicked");
    await waitInPage(page, "the hostile member's row going", rowsAre, ["tr[data-member-id]", "data-member-id", [m.desk.id]], server);
    await waitInPage(page, "the action result naming the hostile member",
      (name) => (document.querySelector('[data-testid="action-result"]')?.textContent ?? "").includes(name), HOSTILE, server);
    assert.equal(await page.evaluate(() => document.querySelectorAll("#app b, #app img").length), 0);
    await screenshot(page, "session-kick");
    assertClean(page, server.http);
    await page.context().close();
  });

  test("a name with a bidi override does not reorder the event log's text after it", async (t) => {
    // The server takes U+202E (RIGHT-TO-LEFT OVERRIDE) in a name: it is not a control character.
    const host = await peers.connect(server.ws, "dash-bidi", "bidi-host", "Bidi host", "host");
    t.after(() => within(host.client.closeSession(), WAIT_MS, "closing dash-bidi"));
    const page = await openPage(browser, server.http, "/dashboard/#/sessions/dash-bidi");
    t.after(() => page.context().close());
    await waitLive(page, server);
    const eve = await peers.connect(server.ws, "dash-bidi", "eve", "\u202EEve");
    await waitInPage(page, "the log line of Eve joining", logMatches, "joined", server);
    await waitInPage(page, "Eve's row", rowsAre, ["tr[data-member-id]", "data-member-id", [host.id, eve.id].sort()], server);
    await within(eve.client.leave(), WAIT_MS, "eve leaving");
    await waitInPage(page, "the log line of Eve leaving", logMatches, "left", server);
    // The letters of "left" (after the name) must run left to right on screen.
    const xs = await page.evaluate(() => {
      const li = [...document.querySelectorAll('ol[data-testid="event-log"] > li')].find((l) => /left/.test(l.textContent));
      const walker = document.createTreeWalker(li, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const at = node.data.lastIndexOf("left");
        if (at < 0) continue;
        return [0, 1, 2, 3].map((i) => {
          const range = document.createRange();
          range.setStart(node, at + i);
          range.setEnd(node, at + i + 1);
          return range.getBoundingClientRect().left;
        });
      }
      return null;
    });
    assert.ok(xs, "no text node with \"left\" in the log line");
    assert.deepEqual([...xs].sort((a, b) => a - b), xs, `"left" drawn out of order (x: ${xs.join(", ")})`);
  });

  test("hand control to a member from the page: it gets handoff_request, accepts, the page shows it as host", async () => {
    const page = await openPage(browser, server.http, "/dashboard/#/sessions/dash-beta");
    await waitLive(page, server);
    await waitInPage(page, "the two members of dash-beta", rowsAre,
      ["tr[data-member-id]", "data-member-id", [m.tv.id, m.tablet.id].sort()], server);
    const before = { tv: await memberCells(page, m.tv.id), tablet: await memberCells(page, m.tablet.id) };
    assert.notEqual(before.tv.host, before.tablet.host);
    const handTo = (member) => page.locator(`button[data-action="handoff"][data-member-id="${member.id}"]`).click({ timeout: WAIT_MS });

    // A first request, declined by the target: the log says it failed; the host keeps control.
    await handTo(m.tablet);
    const declined = await m.tablet.log.waitFor("handoffRequested");
    m.tablet.client.declineHandoff(declined.handoffId, "not now");
    await waitInPage(page, "the log showing the declined handoff", logMatches, "handoff failed.*declined", server);

    // A second one, left pending for a moment: a third request meanwhile gets the API's refusal.
    const speaker = await peers.connect(server.ws, "dash-beta", "speaker", "Speaker");
    await waitInPage(page, "Speaker listed", isShown, `tr[data-member-id="${speaker.id}"]`, server);
    await handTo(m.tablet);
    const request = await m.tablet.log.waitFor("handoffRequested", (event) => event.handoffId !== declined.handoffId);
    page.expectedStatus.add(409); // the refusal below
    await handTo(speaker);
    await waitInPage(page, "the action result showing the API's busy refusal", () =>
      /already pending/.test(document.querySelector('[data-testid="action-result"]')?.textContent ?? ""), undefined, server);
    assert.equal(request.fromId, m.tv.id);
    m.tablet.client.acceptHandoff(request.handoffId);
    await m.tablet.log.waitFor("hostChanged", (event) => event.hostId === m.tablet.id);
    await waitInPage(page, "the page showing Tablet as host", ([tv, tablet, tvWas, tabletWas]) => {
      const hostCell = (id) => document.querySelector(`tr[data-member-id="${CSS.escape(id)}"] [data-col="host"]`)?.textContent.trim();
      return hostCell(tablet) === tvWas && hostCell(tv) === tabletWas;
    }, [m.tv.id, m.tablet.id, before.tv.host, before.tablet.host], server);
    await waitInPage(page, "the event log showing the handoff", logMatches, "handoff|host", server);
    assert.ok((await page.locator('[data-testid="action-result"]').innerText()).length > 0, "no action result");
    await waitInPage(page, "the term shown as 2", () => document.querySelector('[data-testid="state-term"]')?.textContent.trim() === "2",
      undefined, server);
    await screenshot(page, "session-handoff");
    assertClean(page, server.http);
    await page.context().close();
  });

  test("close the session from the page: its members get session_closed, the page says it ended", async () => {
    const page = await openPage(browser, server.http, "/dashboard/#/sessions/dash-beta");
    await waitLive(page, server);
    // The page may look the session up again as it closes: 404 session_not_found then is expected.
    page.expectedStatus.add(404);
    await page.locator('button[data-action="close-session"]').click({ timeout: WAIT_MS });
    for (const member of [m.tv, m.tablet]) {
      const closed = await member.log.waitFor("sessionClosed");
      assert.match(closed.reason, /administrator/);
    }
    await waitInPage(page, "the page saying the session ended", isShown, '[data-testid="session-ended"]', server);
    assert.equal(page.dialogs.length, 1);
    await screenshot(page, "session-ended");
    // The list no longer has it.
    await page.locator('a[data-nav="sessions"]').click();
    await waitInPage(page, "the list with dash-alpha, without dash-beta",
      () => !!document.querySelector('tr[data-session-id="dash-alpha"]') && !document.querySelector('tr[data-session-id="dash-beta"]'),
      undefined, server);
    assertClean(page, server.http);
    await page.context().close();
  });

  test("pairing: a WebSocket controller paired with a responder, both listed with role, transport and partner", async () => {
    const open = [];
    try {
      const pairing = async (role) => {
        const client = new sdk.PairingClient({ url: server.ws, app: "alpha", role, accessToken: "tok", WebSocket,
          aliveIntervalMs: 300, reconnectDelayMs: 100, pacingMs: 50 });
        open.push(client);
        const log = record(client);
        await within(client.connect(), WAIT_MS, `${role} connecting`);
        return { client, log, id: client.clientId() };
      };
      const responder = await pairing("responder");
      const controller = await pairing("controller");
      controller.client.assignPartner(responder.id);
      await controller.log.waitFor("stateChanged", (u) => u.state === "interacting");
      await responder.log.waitFor("stateChanged", (u) => u.state === "interacting");

      const page = await openPage(browser, server.http, "/dashboard/#/pairing");
      await waitInPage(page, "both pairing clients listed", rowsAre,
        ["tr[data-pairing-client]", "data-pairing-client", [controller.id, responder.id].sort()], server);
      const cells = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll("tr[data-pairing-client]")].map((row) =>
        [row.dataset.pairingClient, Object.fromEntries([...row.querySelectorAll("[data-col]")].map((c) => [c.dataset.col, c.textContent.trim()]))])));
      assert.deepEqual(
        { app: cells[controller.id].app, role: cells[controller.id].role, transport: cells[controller.id].transport },
        { app: "alpha", role: "controller", transport: "ws" });
      assert.deepEqual(
        { app: cells[responder.id].app, role: cells[responder.id].role, transport: cells[responder.id].transport },
        { app: "alpha", role: "responder", transport: "ws" });
      assert.match(cells[controller.id].partner, new RegExp(responder.id));
      assert.ok(cells[controller.id].state.length > 0 && cells[responder.id].state.length > 0, JSON.stringify(cells));
      await screenshot(page, "pairing");
      assertClean(page, server.http);
      await page.context().close();
    } finally {
      await Promise.all(open.map((client) => within(client.close(), 3_000, "pairing close").catch(() => {})));
    }
  });

  test("media page without --media-listen says the relay is disabled", async () => {
    const page = await openPage(browser, server.http, "/dashboard/#/media");
    await waitInPage(page, "media-disabled shown", isShown, '[data-testid="media-disabled"]', server);
    await screenshot(page, "media-disabled");
    assertClean(page, server.http);
    await page.context().close();
  });
});

describe("a server without apps: the pairing page says so", () => {
  test("pairing-empty", async (t) => {
    const server = await startServer();
    t.after(() => server.stop());
    const page = await openPage(browser, server.http, "/dashboard/#/pairing");
    await waitInPage(page, "pairing-empty shown", isShown, '[data-testid="pairing-empty"]', server);
    await screenshot(page, "pairing-empty");
    assertClean(page, server.http);
    await page.context().close();
  });
});

describe("a server with --admin-token: the login form, the cookie, the Origin check", () => {
  const TOKEN = "dashboard-test-token-0123456789";
  let server;
  let peers;
  before(async () => {
    server = await startServer(["--admin-token", TOKEN]);
    peers = members();
  });
  after(async () => {
    await peers?.closeAll();
    await server?.stop();
  });

  test("a wrong token is refused, the right one logs in and the overview is live; logout", async () => {
    await peers.connect(server.ws, "tok-one", "desk", "Desk", "host");
    await peers.connect(server.ws, "tok-one", "phone", "Phone");
    await peers.connect(server.ws, "tok-two", "tv", "TV", "host");

    const page = await openPage(browser, server.http, "/dashboard/", { expectedStatus: [401] });
    await waitInPage(page, "the login form", isShown, 'form[data-testid="login"] input[name="token"]', server);
    const formText = await page.locator('form[data-testid="login"]').innerText();
    await screenshot(page, "login");

    const submit = async (token) => {
      await page.locator('form[data-testid="login"] input[name="token"]').fill(token);
      const answer = page.waitForResponse((r) => r.url().endsWith("/dashboard/login") && r.request().method() === "POST", { timeout: WAIT_MS });
      await page.locator('form[data-testid="login"] [type="submit"], form[data-testid="login"] button').first().click();
      return (await answer).status();
    };
    assert.equal(await submit("not-the-token"), 401);
    // Some message appears in the form (whatever its words: the server's error text).
    await waitInPage(page, "the login form showing an error", (before) => {
      const form = document.querySelector('form[data-testid="login"]');
      return !!form && form.getClientRects().length > 0 && form.innerText.trim().length > before.trim().length;
    }, formText, server);
    assert.deepEqual(await page.context().cookies(), [], "a wrong token set a cookie");
    await screenshot(page, "login-wrong");

    assert.equal(await submit(TOKEN), 204);
    const cookies = await page.context().cookies();
    assert.equal(cookies.length, 1, JSON.stringify(cookies));
    assert.deepEqual({ name: cookies[0].name, value: cookies[0].value, httpOnly: cookies[0].httpOnly, sameSite: cookies[0].sameSite, path: cookies[0].path },
      { name: "loudsync_admin", value: TOKEN, httpOnly: true, sameSite: "Strict", path: "/" });
    await waitLive(page, server);
    await waitInPage(page, "the overview showing 2 sessions and 3 members", () => {
      const stat = (name) => document.querySelector(`[data-testid="stat-${name}"]`)?.textContent.trim();
      const form = document.querySelector('form[data-testid="login"]');
      return (!form || form.getClientRects().length === 0) && stat("sessions") === "2" && stat("members") === "3";
    }, undefined, server);
    await page.locator('a[data-nav="sessions"]').click();
    await waitInPage(page, "the sessions list", rowsAre, ["tr[data-session-id]", "data-session-id", ["tok-one", "tok-two"]], server);
    await screenshot(page, "token-sessions");

    // The cookie: a state-changing request needs the page's own Origin (CSRF); bearer requests do not.
    const request = page.context().request;
    const origin = server.http;
    const noSession = `${server.http}/v1/sessions/no-such-session`;
    const foreign = await request.delete(noSession, { headers: { Origin: "http://evil.example" }, timeout: WAIT_MS });
    assert.equal(foreign.status(), 403);
    assert.equal((await foreign.json()).code, "forbidden_origin");
    const bare = await request.delete(noSession, { timeout: WAIT_MS });
    assert.equal(bare.status(), 403, "a cookie DELETE without Origin was let through");
    const own = await request.delete(noSession, { headers: { Origin: origin }, timeout: WAIT_MS });
    assert.equal(own.status(), 404, "a cookie DELETE from the page's own origin was not let through");
    const bearer = await fetch(noSession, { method: "DELETE", headers: { Authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(WAIT_MS) });
    assert.equal(bearer.status, 404);
    const nothing = await fetch(`${server.http}/v1/sessions`, { signal: AbortSignal.timeout(WAIT_MS) });
    assert.equal(nothing.status, 401);

    // Logout clears the cookie; the page asks for the token again.
    const out = await request.post(`${server.http}/dashboard/logout`, { headers: { Origin: origin }, timeout: WAIT_MS });
    assert.ok(out.status() < 300, `logout answered ${out.status()}`);
    assert.deepEqual((await page.context().cookies()).filter((c) => c.name === "loudsync_admin" && c.value), []);
    await page.reload({ timeout: WAIT_MS });
    await waitInPage(page, "the login form after logout", isShown, 'form[data-testid="login"]', server);
    assertClean(page, server.http);
    await page.context().close();
  });
});

describe("a server with --media-listen: a stream with a publisher and a subscriber", () => {
  let server;
  let peers;
  const tuples = [];
  before(async () => {
    server = await startServer(["--media-listen", "127.0.0.1:0"]);
    peers = members();
  });
  after(async () => {
    for (const tuple of tuples) tuple.close();
    await peers?.closeAll();
    await server?.stop();
  });

  test("the media page lists the stream: publisher, subscriber, relayed, lost, jitter", async () => {
    const host = await peers.connect(server.ws, "dash-media", "cam", "Camera", "host");
    const viewer = await peers.connect(server.ws, "dash-media", "screen", "Screen");
    const subscriber = await subscribe(await within(viewer.client.mediaToken(), WAIT_MS, "subscribe token"));
    tuples.push(subscriber);
    // Sequence number 5 is never sent: the relay counts one frame lost.
    const publisher = await publish(await within(host.client.mediaToken(), WAIT_MS, "publish token"), { everyMs: 20, skip: [5] });
    tuples.push(publisher);
    const deadline = Date.now() + WAIT_MS;
    while (subscriber.received < 20) {
      if (Date.now() > deadline) throw new Error(`the subscriber got ${subscriber.received} datagrams of ${publisher.sent}`);
      await new Promise((tick) => setTimeout(tick, 50));
    }
    const api = await getJson(server.http, "/v1/media");
    assert.equal(api.enabled, true, JSON.stringify(api));

    const page = await openPage(browser, server.http, "/dashboard/#/media");
    await waitLive(page, server);
    await waitInPage(page, "the stream of dash-media listed", isShown, 'tr[data-media-stream="dash-media"]', server);
    const cells = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('tr[data-media-stream="dash-media"] [data-col]')]
      .map((c) => [c.dataset.col, c.textContent.trim()])));
    // Who publishes and who subscribes: the member (id or name) and the tuple's address.
    assert.match(cells.publisher, new RegExp(`${host.id}|Camera`), JSON.stringify(cells));
    assert.ok(cells.publisher.includes(publisher.address), `publisher ${cells.publisher}, expected ${publisher.address}`);
    assert.match(cells.subscribers, new RegExp(`${viewer.id}|Screen`), JSON.stringify(cells));
    assert.ok(cells.subscribers.includes(subscriber.address), `subscribers ${cells.subscribers}, expected ${subscriber.address}`);
    const relayed = Number(cells.relayed.replace(/[,\s]/g, ""));
    assert.ok(relayed >= 20, `relayed: ${cells.relayed}`);
    assert.equal(cells.lost, "1", "sequence number 5 was never sent: one frame lost");
    // The relay computes jitter (RFC 3550) when it can; the API says which.
    const stream = api.streams.find((s) => s.sessionId === "dash-media");
    if (stream?.jitterMs === null) assert.ok(cells.jitter.length > 0, "empty jitter cell");
    else assert.match(cells.jitter, /^[0-9]+(\.[0-9]+)?\s*ms$/, `jitter: ${cells.jitter}`);
    // The page follows the stream: the relayed count rises while the publisher sends.
    await waitInPage(page, "the relayed count rising", (before) => Number(document.querySelector(
      'tr[data-media-stream="dash-media"] [data-col="relayed"]')?.textContent.replace(/[,\s]/g, "")) > before, relayed, server);
    await screenshot(page, "media");
    assertClean(page, server.http);

    // The server goes away: the indicator says so.
    for (const tuple of tuples.splice(0)) tuple.close();
    await server.stop();
    await waitInPage(page, "the connection indicator saying reconnecting",
      () => document.querySelector('[data-testid="live"]')?.textContent.trim() === "reconnecting");
    await page.context().close();
  });
});

describe("the event stream across a server restart", () => {
  test("the indicator says reconnecting, then live again, and the lists are reloaded", async (t) => {
    const first = await startServer();
    const port = first.port;
    t.after(() => first.stop());
    const peers = members();
    t.after(() => peers.closeAll());
    await peers.connect(first.ws, "before-restart", "desk", "Desk", "host");
    const page = await openPage(browser, first.http, "/dashboard/#/sessions");
    t.after(() => page.context().close());
    await waitLive(page, first);
    await waitInPage(page, "the session before the restart", rowsAre,
      ["tr[data-session-id]", "data-session-id", ["before-restart"]], first);

    await first.stop();
    await waitInPage(page, "the indicator saying reconnecting",
      () => document.querySelector('[data-testid="live"]')?.textContent.trim() === "reconnecting");
    const second = await startServer([], { port });
    t.after(() => second.stop());
    await waitLive(page, second);
    // The new process has another stream id: the page reloads its list (the old session is gone)
    // and follows the new stream (a session opened now appears).
    await peers.connect(second.ws, "after-restart", "tv", "TV", "host");
    await waitInPage(page, "the list of the new process", rowsAre,
      ["tr[data-session-id]", "data-session-id", ["after-restart"]], second);
    // While the server was away the browser logged failed connections; nothing else went wrong.
    assert.deepEqual(page.problems.filter((p) => !/ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|Failed to load resource|net::/.test(p)), []);
    await screenshot(page, "sessions-after-restart");
  });
});

describe("a resumable member whose connection drops", () => {
  test("the session page shows it reconnecting, then resumed; the overview counts the resume", async (t) => {
    const server = await startServer(["--resume-window", "10s"]);
    t.after(() => server.stop());
    const proxy = await startProxy(server.port);
    t.after(() => proxy.close());
    const peers = members();
    t.after(() => peers.closeAll());
    await peers.connect(server.ws, "dash-resume", "desk", "Desk", "host");
    const phone = await peers.connect(proxy.ws, "dash-resume", "phone", "Phone", "client",
      { resume: true, reconnect: { attempts: 10, delayMs: 300 } });

    const page = await openPage(browser, server.http, "/dashboard/#/sessions/dash-resume");
    t.after(() => page.context().close());
    await waitLive(page, server);
    await waitInPage(page, "Phone listed", isShown, `tr[data-member-id="${phone.id}"]`, server);

    assert.ok(proxy.cutAll() >= 1, "Phone's connection was not open");
    await phone.log.waitFor("resumed");
    await waitInPage(page, "the log showing Phone resumed", logMatches, "resumed", server);
    const lines = await page.evaluate(() => [...document.querySelectorAll('ol[data-testid="event-log"] > li')].map((li) => li.textContent));
    const away = lines.findIndex((line) => /Phone.*reconnecting/.test(line));
    const back = lines.findIndex((line) => /Phone.*resumed/.test(line));
    assert.ok(away >= 0 && away < back, `the log, newest last: ${JSON.stringify(lines)}`);
    await waitInPage(page, "Phone connected again", (id) => document.querySelector(
      `tr[data-member-id="${CSS.escape(id)}"] [data-col="status"]`)?.textContent.trim() === "connected", phone.id, server);
    await screenshot(page, "session-resume");
    assertClean(page, server.http);

    await page.locator('a[data-nav="overview"]').click();
    await waitInPage(page, "the overview counting one resume",
      () => document.querySelector('[data-testid="stat-resumes"]')?.textContent.trim() === "1", undefined, server);
  });
});
