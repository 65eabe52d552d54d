// netlapse web UI: hash router mounting one view module per route.

import "./styles.css";
import { createApi } from "./api.js";
import { createAuthBar } from "./auth.js";
import { parseHash, matchRoute } from "./state.js";
import { h, setChildren, errorBanner } from "./ui.js";
import * as runs from "./views/runs.js";
import * as newrun from "./views/newrun.js";
import * as live from "./views/live.js";
import * as explorer from "./views/explorer.js";
import * as scatter from "./views/scatter.js";
import * as activations from "./views/activations.js";
import * as overview from "./views/overview.js";
import * as compare from "./views/compare.js";
import * as healthView from "./views/health.js";
import { setHook } from "./hooks.js";

const VIEWS = { runs, newrun, live, explorer, scatter, activations, overview, compare, health: healthView };

// The sign-in control hears every 401; a sign-in or sign-out re-mounts the current view so it reloads.
let authBar = null;
const api = createApi({ onUnauthorized: (err, sent) => authBar?.unauthorized(err, sent) });
authBar = createAuthBar(document.querySelector("[data-testid=auth]"), { api, onChange: () => route() });
const main = document.getElementById("main");
let current = null;
let currentKey = null;

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  const { segments, params } = parseHash(location.hash);
  const match = matchRoute(segments);
  current?.destroy?.();
  current = null;
  for (const a of document.querySelectorAll("[data-nav]")) {
    const on =
      (match?.view === "runs" && a.dataset.nav === "runs") ||
      (match?.view === "newrun" && a.dataset.nav === "new");
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!match) {
    setChildren(
      main,
      errorBanner(new Error(`No page at ${location.hash}`)),
      h("p", {}, h("a", { href: "#/runs" }, "Go to the runs list")),
    );
    return;
  }
  const key = match.view + "/" + (match.routeParams.id ?? "");
  const root = h("div.view", { "data-view": match.view });
  setChildren(main, root);
  document.body.dataset.view = match.view;
  try {
    current = VIEWS[match.view].mount(root, {
      api,
      params,
      routeParams: match.routeParams,
      segments,
      navigate,
    });
  } catch (e) {
    setChildren(root, errorBanner(e));
  }
  if (key !== currentKey) window.scrollTo(0, 0);
  currentKey = key;
}

async function health() {
  const el = document.querySelector("[data-testid=health]");
  try {
    const r = await api.health();
    const bad = Object.entries(r ?? {}).filter(
      ([k, v]) => ["status", "api", "redis", "store"].includes(k) && v !== "ok",
    );
    el.textContent = bad.length ? `degraded: ${bad.map(([k, v]) => `${k} ${v}`).join(", ")}` : "server ok";
    el.dataset.state = bad.length ? "degraded" : "ok";
  } catch (e) {
    el.textContent = e.status ? `server: ${e.message}` : "server unreachable";
    el.dataset.state = "down";
  }
}

// The skip link must not touch the hash: "#main" is not a route, the router would show "No page".
document.querySelector(".skip-link")?.addEventListener("click", (ev) => {
  ev.preventDefault();
  main.focus();
});

setHook("navigate", navigate);
window.addEventListener("hashchange", route);
route();
health();
authBar.check();
