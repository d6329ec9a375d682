// login.ts: the login form shown when the server has an admin token and the page holds no valid
// cookie (the API answered 401). It posts the token to /dashboard/login, which sets the HttpOnly
// admin cookie; the token itself is never stored by the page.

import { errorText, login } from "./api";
import { h, setText } from "./dom";

/** Builds the login form; `done` runs after a successful login. */
export function loginForm(done: () => void): HTMLElement {
  const input = h("input", {
    type: "password",
    name: "token",
    id: "login-token",
    autocomplete: "current-password",
    required: true,
    autofocus: true,
  });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const message = h("p", { class: "error", role: "alert", hidden: true });
  const form = h(
    "form",
    { "data-testid": "login", class: "login card" },
    h("h1", null, "Sign in"),
    h("p", { class: "muted" }, "This server needs its admin token (the ", h("code", null, "--admin-token"), " it was started with)."),
    // A username for password managers and Chromium's form check; only the token is sent.
    h("input", { type: "text", name: "username", autocomplete: "username", value: "admin", hidden: true, tabindex: -1, "aria-hidden": "true" }),
    h("label", { for: "login-token" }, "Admin token"),
    input,
    message,
    button,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    button.disabled = true;
    message.hidden = true;
    login(input.value)
      .then(() => {
        input.value = "";
        try {
          sessionStorage.setItem("loudsync-dashboard-login", "1");
        } catch {
          // storage may be off; only the logout button depends on it
        }
        done();
      })
      .catch((e: unknown) => {
        message.hidden = false;
        setText(message, errorText(e));
        input.select();
      })
      .finally(() => {
        button.disabled = false;
      });
  });
  return h("div", { class: "login-wrap" }, form);
}

/** Whether this tab signed in with a token (so a logout button makes sense). */
export function signedIn(): boolean {
  try {
    return sessionStorage.getItem("loudsync-dashboard-login") === "1";
  } catch {
    return false;
  }
}

/** Forgets the tab's signed-in mark. */
export function forgetSignIn(): void {
  try {
    sessionStorage.removeItem("loudsync-dashboard-login");
  } catch {
    // nothing to forget
  }
}
