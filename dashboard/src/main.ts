// main.ts: the dashboard's entry point: builds the frame (nav, live indicator, main area),
// checks access (a 401 shows the login form), opens the admin event stream first and then
// routes to the pages, which load their lists after subscribing (docs/PROTOCOL.md §17.3).

import { listSessions, logout, onUnauthorized, ApiError } from "./api";
import { h, replace } from "./dom";
import * as events from "./events";
import { forgetSignIn, loginForm, signedIn } from "./login";
import { mediaPage } from "./pages/media";
import { overviewPage } from "./pages/overview";
import { pairingPage } from "./pages/pairing";
import { sessionPage } from "./pages/session";
import { sessionsPage } from "./pages/sessions";
import { startRouter, type Page, type Route } from "./router";
import * as stats from "./stats";

function render(route: Route): Page {
  switch (route.name) {
    case "overview":
      return overviewPage();
    case "sessions":
      return sessionsPage();
    case "session":
      return sessionPage(route.id);
    case "pairing":
      return pairingPage();
    case "media":
      return mediaPage();
  }
}

function boot(): void {
  const root = document.getElementById("app");
  if (!root) return;

  const live = h("span", { class: "live", "data-testid": "live", role: "status" }, "reconnecting");
  const logoutBtn = h("button", { type: "button", class: "link", hidden: !signedIn() }, "Sign out");
  const nav = h(
    "nav",
    { class: "nav", "aria-label": "Dashboard" },
    h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }), "LoudSync"),
    h("a", { href: "#/overview", "data-nav": "overview" }, "Overview"),
    h("a", { href: "#/sessions", "data-nav": "sessions" }, "Sessions"),
    h("a", { href: "#/pairing", "data-nav": "pairing" }, "Pairing"),
    h("a", { href: "#/media", "data-nav": "media" }, "Media"),
    h("div", { class: "nav-foot" }, live, logoutBtn),
  );
  const main = h("main", { class: "main" });
  replace(root, h("aside", { class: "sidebar" }, nav), main);

  events.listen({
    status: (isLive) => {
      live.textContent = isLive ? "live" : "reconnecting";
      live.classList.toggle("on", isLive);
    },
  });
  stats.record();

  let stopRouter: (() => void) | null = null;
  let showingLogin = false;

  const showApp = (): void => {
    showingLogin = false;
    document.body.classList.remove("locked");
    logoutBtn.hidden = !signedIn();
    events.start();
    stopRouter?.();
    stopRouter = startRouter(main, render);
  };

  const showLogin = (): void => {
    if (showingLogin) return;
    showingLogin = true;
    stopRouter?.();
    stopRouter = null;
    events.stop();
    forgetSignIn();
    logoutBtn.hidden = true;
    document.body.classList.add("locked");
    replace(main, loginForm(showApp));
  };

  onUnauthorized(showLogin);
  logoutBtn.addEventListener("click", () => {
    void logout()
      .catch(() => undefined)
      .then(() => {
        forgetSignIn();
        showLogin();
      });
  });

  listSessions()
    .then(showApp)
    .catch((e: unknown) => {
      if (e instanceof ApiError && e.status === 401) showLogin();
      else showApp();
    });
}

boot();
