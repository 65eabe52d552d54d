// URL-hash state: every view keeps what it shows in `#/path?key=value`, so links are shareable.

/**
 * Parse `#/runs/abc/explore?tensor=conv1.weight&from=0` into {path, segments, params}.
 * Unknown or empty hashes become the runs list.
 */
export function parseHash(hash) {
  let h = (hash ?? "").replace(/^#/, "");
  if (!h.startsWith("/")) h = "/" + h;
  const q = h.indexOf("?");
  const rawPath = q >= 0 ? h.slice(0, q) : h;
  const query = q >= 0 ? h.slice(q + 1) : "";
  const segments = rawPath
    .split("/")
    .filter(Boolean)
    .map((s) => decodeURIComponent(s));
  const params = {};
  for (const [k, v] of new URLSearchParams(query)) params[k] = v;
  return { path: "/" + segments.map(encodeURIComponent).join("/"), segments, params };
}

/** Build a hash from path segments and params; null/undefined/"" params are left out. */
export function buildHash(segments, params = {}) {
  const path = "/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    qs.set(k, String(v));
  }
  const q = qs.toString();
  return "#" + path + (q ? "?" + q : "");
}

/** Routes of the app: [pattern segments, view name]. `:id` captures. */
export const ROUTES = [
  [[], "runs"],
  [["runs"], "runs"],
  [["new"], "newrun"],
  [["runs", ":id"], "live"],
  [["runs", ":id", "explore"], "explorer"],
  [["runs", ":id", "overview"], "overview"],
  [["runs", ":id", "scatter"], "scatter"],
  [["runs", ":id", "activations"], "activations"],
  [["runs", ":id", "health"], "health"],
  [["compare"], "compare"],
];

/** Match parsed segments against ROUTES → {view, routeParams} or null. */
export function matchRoute(segments, routes = ROUTES) {
  for (const [pattern, view] of routes) {
    if (pattern.length !== segments.length) continue;
    const routeParams = {};
    let ok = true;
    for (let i = 0; i < pattern.length; i++) {
      if (pattern[i].startsWith(":")) routeParams[pattern[i].slice(1)] = segments[i];
      else if (pattern[i] !== segments[i]) {
        ok = false;
        break;
      }
    }
    if (ok) return { view, routeParams };
  }
  return null;
}

/** Read an integer param; `fallback` when missing or not an integer. */
export function intParam(params, key, fallback) {
  const v = params[key];
  if (v === undefined || v === "") return fallback;
  const n = Number(v);
  return Number.isInteger(n) ? n : fallback;
}

/** Read a boolean param: "1"/"true" → true, "0"/"false" → false. */
export function boolParam(params, key, fallback) {
  const v = params[key];
  if (v === "1" || v === "true") return true;
  if (v === "0" || v === "false") return false;
  return fallback;
}

/**
 * Replace the current hash's params without a navigation (no re-mount, no history entry).
 * Pass a `win` for tests.
 */
export function replaceParams(segments, params, win = globalThis.window) {
  const hash = buildHash(segments, params);
  if (win && win.location.hash !== hash) win.history.replaceState(null, "", hash);
  return hash;
}
