// API tokens in the browser. On a server with NETLAPSE_AUTH_REQUIRED the API answers 401 without a token;
// the top bar then asks for one, keeps it in localStorage, and api.js sends it as `Authorization: Bearer`.
// Browsers cannot set headers on a WebSocket, so for the live event stream api.js first trades the token for a
// single-use, short-lived ticket (`POST /api/ws-ticket` → `?ticket=`): the token itself never goes in a URL.
// "Sign out" forgets it.

import { h, setChildren } from "./ui.js";

export const TOKEN_KEY = "netlapse_token";
const NEEDED = "API token needed";
const REJECTED = "Token not accepted (unknown or revoked)";
const HOW = "The server's admin creates a token with `netlapse user add NAME`.";

function defaultStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null; // storage disabled (privacy settings): no token is kept
  }
}

/** What a user pasted → the token: surrounding whitespace and an optional "Bearer " prefix removed. */
export function normalizeToken(raw) {
  return String(raw ?? "")
    .trim()
    .replace(/^bearer\s+/i, "")
    .trim();
}

/** The stored token, or null. */
export function readToken(storage = defaultStorage()) {
  try {
    return normalizeToken(storage?.getItem(TOKEN_KEY)) || null;
  } catch {
    return null;
  }
}

/** Store a token (an empty one clears it); returns what was stored, or null. */
export function writeToken(token, storage = defaultStorage()) {
  const t = normalizeToken(token);
  try {
    if (t) storage?.setItem(TOKEN_KEY, t);
    else storage?.removeItem(TOKEN_KEY);
  } catch {
    return null;
  }
  return t || null;
}

/** Forget the stored token. */
export function clearToken(storage = defaultStorage()) {
  try {
    storage?.removeItem(TOKEN_KEY);
  } catch {
    // nothing stored, nothing to clear
  }
}

/** Request headers carrying a token (none without one). */
export function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/**
 * The top-bar sign-in control. States (on `[data-testid=auth]` as `data-state`):
 * "off" (auth not required: hidden), "ask" (form `token-form` with `token-input`, `token-save`, message
 * `token-message`), "signed-in" (`auth-user` and the `sign-out` button).
 *
 * @param {HTMLElement} container the top-bar slot
 * @param {{api: {me: Function}, storage?: Storage|null, onChange?: Function}} opts
 *   `onChange()` runs after a sign-in or sign-out so the current view reloads its data.
 */
export function createAuthBar(container, { api, storage = defaultStorage(), onChange = () => {} }) {
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "current-password",
    placeholder: "API token",
    "aria-label": "API token",
    "data-testid": "token-input",
  });
  const message = h("span.auth-message", {
    "data-testid": "token-message",
    role: "status",
    "aria-live": "polite",
  });
  const form = h(
    "form.auth-form",
    { "data-testid": "token-form", novalidate: true },
    input,
    h("button.small", { type: "submit", "data-testid": "token-save" }, "Sign in"),
    message,
  );
  const user = h("span.auth-user", { "data-testid": "auth-user" });
  const signOutButton = h("button.small", { type: "button", "data-testid": "sign-out" }, "Sign out");
  const signedIn = h("span.auth-signed-in", {}, user, signOutButton);
  container.dataset.testid = "auth";
  container.setAttribute("data-testid", "auth");
  let state = "off";

  function show(next, { name, msg, detail } = {}) {
    // The form is built once and only shown/hidden, so a 401 from a background call never wipes what is typed.
    if (next !== state)
      setChildren(container, next === "ask" ? form : next === "signed-in" ? signedIn : null);
    state = next;
    container.dataset.state = next;
    container.hidden = next === "off";
    if (next === "signed-in") {
      user.textContent = name ?? "";
      user.title = `signed in as ${name}`;
    }
    if (next === "ask") {
      message.textContent = msg ?? NEEDED;
      message.title = detail ?? HOW;
    }
  }

  /** Ask the server who we are and show the matching state. */
  async function check() {
    try {
      const me = await api.me();
      if (me?.auth_required) show("signed-in", { name: me.user });
      else show("off");
      return true;
    } catch (e) {
      if (e?.status === 401) {
        show("ask", { detail: e.message });
        return false;
      }
      show("off"); // server unreachable or an old server without /api/me: the health badge says so
      return true;
    }
  }

  /** api.js calls this on every 401 with the token that request sent: it was rejected (revoked), or none was sent. */
  function unauthorized(err, sent = null) {
    const current = readToken(storage);
    if (current && current !== sent) return; // an answer to a request from before this token was saved
    if (current) clearToken(storage);
    show("ask", { msg: sent ? REJECTED : NEEDED, detail: err?.message });
  }

  async function save(raw) {
    const token = writeToken(raw, storage);
    if (!token) {
      show("ask", { msg: "Paste the token that `netlapse user add NAME` printed." });
      return false;
    }
    const ok = await check();
    if (ok) {
      input.value = "";
      onChange();
    } else {
      clearToken(storage);
      show("ask", { msg: REJECTED });
    }
    return ok;
  }

  function signOut() {
    clearToken(storage);
    show("ask", { msg: "Signed out." });
    onChange();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    save(input.value);
  });
  signOutButton.addEventListener("click", signOut);
  show("off");

  return {
    check,
    unauthorized,
    save,
    signOut,
    get state() {
      return state;
    },
  };
}
