// Fetch wrapper for the netlapse REST API. 4xx/5xx bodies `{"detail": ...}` become ApiError,
// whose `fields` carry the field path each validation message concerns ("training.lr").

import { decodeNpy } from "./npy.js";
import { authHeaders, readToken } from "./auth.js";

export class ApiError extends Error {
  /**
   * @param {string} message human-readable summary
   * @param {{status?: number, detail?: any, fields?: {path: string, loc: any[], msg: string}[]}} info
   */
  constructor(message, { status = 0, detail = null, fields = [] } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.fields = fields;
  }
}

/** FastAPI `loc` → dotted field path: ["body","training","lr"] → "training.lr". */
export function locToPath(loc) {
  if (!Array.isArray(loc)) return String(loc ?? "");
  const parts = loc.slice();
  if (["body", "query", "path", "header"].includes(parts[0])) parts.shift();
  return parts.map(String).join(".");
}

/** Build an ApiError from an HTTP status and the parsed (or raw text) body. */
export function errorFromBody(status, body) {
  const detail = body && typeof body === "object" && "detail" in body ? body.detail : body;
  if (Array.isArray(detail)) {
    const fields = detail.map((d) => ({
      loc: d?.loc ?? [],
      path: locToPath(d?.loc ?? []),
      msg: d?.msg ?? String(d),
    }));
    const message = fields.map((f) => (f.path ? `${f.path}: ${f.msg}` : f.msg)).join("; ");
    return new ApiError(message || `Request failed (${status})`, { status, detail, fields });
  }
  if (typeof detail === "string" && detail.trim()) return new ApiError(detail, { status, detail });
  if (detail && typeof detail === "object") {
    const msg = detail.message ?? detail.msg ?? JSON.stringify(detail);
    return new ApiError(String(msg), { status, detail });
  }
  const generic = status >= 500 ? `Server error (${status})` : `Request failed (${status})`;
  return new ApiError(generic, { status, detail });
}

const NPY_TYPES = ["application/x-npy", "application/octet-stream", "application/npy"];

function isNpy(contentType) {
  return NPY_TYPES.some((t) => (contentType || "").includes(t));
}

/** Normalise a tensor-ish JSON payload so `data` is a Float32Array/Float64Array. */
export function decodeTensorPayload(obj) {
  if (!obj || !Array.isArray(obj.data)) return obj;
  const Typed = obj.dtype === "float64" ? Float64Array : Float32Array;
  const data = Typed.from(obj.data, (v) => (v === null ? NaN : v));
  return { ...obj, data };
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(new DOMException("aborted", "AbortError"));
    });
  });
}

/**
 * @param {{base?: string, fetch?: typeof fetch, pendingTimeoutMs?: number, getToken?: () => string|null,
 *          onUnauthorized?: (err: ApiError, sentToken: string|null) => void}} opts
 * base defaults to "api/" (relative, so the app works at `/` and under a prefix). `getToken` (default: the one in
 * localStorage) is sent as `Authorization: Bearer`; `onUnauthorized` hears every 401 before it is thrown.
 */
export function createApi({
  base = "api/",
  fetch: fetchImpl = globalThis.fetch?.bind(globalThis),
  pendingTimeoutMs = 300000,
  getToken = () => readToken(),
  onUnauthorized = () => {},
} = {}) {
  const root = base.endsWith("/") ? base : base + "/";

  async function request(method, path, { body, query, signal, accept, raw = false } = {}) {
    let url = root + path.replace(/^\//, "");
    if (query) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) qs.set(k, String(v));
      const s = qs.toString();
      if (s) url += (url.includes("?") ? "&" : "?") + s;
    }
    const token = getToken();
    const headers = { Accept: accept ?? "application/json", ...authHeaders(token) };
    // The server takes POST/PUT/PATCH only as JSON (its guard against cross-site requests), body or not.
    if (body !== undefined || ["POST", "PUT", "PATCH"].includes(method))
      headers["Content-Type"] = "application/json";
    const started = Date.now();
    // Analyzer-backed endpoints may answer 202 while they compute; poll until the result is there.
    for (let attempt = 0; ; attempt++) {
      let res;
      try {
        res = await fetchImpl(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal,
        });
      } catch (e) {
        if (e?.name === "AbortError") throw e;
        throw new ApiError("Cannot reach the netlapse server", { status: 0, detail: String(e) });
      }
      // 429 with Retry-After: the server bounds analyses in flight per user (NETLAPSE_USER_MAX_ANALYSES); wait, retry.
      const retryable = res.status === 202 || (res.status === 429 && res.headers.get("Retry-After"));
      if (retryable && Date.now() - started < pendingTimeoutMs) {
        const ra = Number(res.headers.get("Retry-After"));
        await sleep(Number.isFinite(ra) && ra > 0 ? ra * 1000 : Math.min(2000, 250 * 2 ** attempt), signal);
        continue;
      }
      const ct = res.headers.get("Content-Type") || "";
      if (!res.ok) {
        let parsed = null;
        const text = await res.text().catch(() => "");
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch {
          parsed = text.slice(0, 300) || null;
        }
        const err = errorFromBody(res.status, parsed);
        if (res.status === 401) onUnauthorized(err, token);
        throw err;
      }
      if (raw) return res;
      if (res.status === 204) return null;
      if (isNpy(ct)) return decodeNpy(await res.arrayBuffer());
      const text = await res.text();
      return text ? JSON.parse(text) : null;
    }
  }

  const enc = encodeURIComponent;
  let catalog = null;
  /** Any analysis the server registers (GET /api/analyses), by name: path fields filled from `params`, the rest
   * sent as the query (GET) or the JSON body (POST). Field names or their aliases ("from") both work. */
  async function analysis(name, params = {}, o = {}) {
    catalog ??= request("GET", "analyses").then(
      (r) => Object.fromEntries(r.analyses.map((a) => [a.name, a])),
      (e) => {
        catalog = null; // a failed look-up is retried on the next call
        throw e;
      },
    );
    const a = (await catalog)[name];
    if (!a) throw new ApiError(`unknown analysis ${name}`, { status: 404 });
    const rest = {};
    for (const [k, v] of Object.entries(params)) rest[a.aliases?.[k] ?? k] = v;
    const path = a.path.replace(/\{(\w+)\}/g, (_, f) => {
      const v = rest[f];
      delete rest[f];
      return enc(String(v));
    });
    return a.method === "POST"
      ? request("POST", path, { ...o, body: rest })
      : request("GET", path, { ...o, query: rest });
  }
  return {
    request,
    analysis,
    /** The events WebSocket URL; with a token, first trades it for a single-use ticket (a Promise of the URL). */
    eventsUrl: async (runId, since, loc = globalThis.location) => {
      const ticket = getToken() ? (await request("POST", "ws-ticket", { body: {} }))?.ticket : null;
      return eventsUrl(runId, since, loc, root, ticket);
    },
    /** Report a 401 seen outside fetch (the WebSocket's 4401 close) like one from a request. */
    unauthorized: (message) => onUnauthorized(new ApiError(message, { status: 401 }), getToken()),
    health: (o) => request("GET", "health", o),
    /** `{user, auth_required}`; 401 when the server needs a token and has none valid. */
    me: (o) => request("GET", "me", o),
    presets: (o) => request("GET", "presets", o),
    datasets: (o) => request("GET", "datasets", o),
    samples: (name, { split = "test", indices }, o) =>
      request("GET", `datasets/${enc(name)}/samples`, {
        ...o,
        query: { split, indices: indices.join(",") },
      }).then((r) => (r?.inputs ? { ...r, inputs: decodeTensorPayload(r.inputs) } : r)),
    listRuns: (o) => request("GET", "runs", o),
    getRun: (id, o) => request("GET", `runs/${enc(id)}`, o),
    createRun: (body, o) => request("POST", "runs", { ...o, body }),
    cancelRun: (id, o) => request("POST", `runs/${enc(id)}/cancel`, o),
    deleteRun: (id, o) => request("DELETE", `runs/${enc(id)}`, o),
    metrics: (id, o) => request("GET", `runs/${enc(id)}/metrics`, o),
    steps: (id, o) => request("GET", `runs/${enc(id)}/steps`, o),
    tensors: (id, o) => request("GET", `runs/${enc(id)}/tensors`, o),
    /** A tensor at a step; asks for .npy bytes (falls back to JSON if the server sends JSON). */
    tensor: (id, name, step, o) =>
      request("GET", `runs/${enc(id)}/tensors/${enc(name)}`, {
        ...o,
        query: { step },
        accept: "application/x-npy, application/json;q=0.9",
      }).then((r) => (r && !ArrayBuffer.isView(r.data) ? decodeTensorPayload(r) : { name, step, ...r })),
    diff: (id, name, from, to, o) =>
      request("GET", `runs/${enc(id)}/diff/${enc(name)}`, { ...o, query: { from, to } }).then(
        decodeTensorPayload,
      ),
    scatter: (id, name, { from, to, maxPoints = 20000 }, o) =>
      request("GET", `runs/${enc(id)}/scatter/${enc(name)}`, {
        ...o,
        query: { from, to, max_points: maxPoints },
      }),
    activations: (id, body, o) => request("POST", `runs/${enc(id)}/activations`, { ...o, body }),
    compareActivations: (id, body, o) =>
      request("POST", `runs/${enc(id)}/activations/compare`, { ...o, body }),
    featuremaps: (id, { step, layer, split = "test", index, point = "post" }, o) =>
      request("GET", `runs/${enc(id)}/featuremaps`, {
        ...o,
        query: { step, layer, split, index, point },
      }).then((r) => r && { ...r, input: decodeTensorPayload(r.input), maps: decodeTensorPayload(r.maps) }),
  };
}

/** ws:// or wss:// URL for a run's event stream, matching the page's scheme. The API token never goes in a URL:
 * a signed-in page passes a single-use `ticket` from `POST /api/ws-ticket` (see `api.eventsUrl`). */
export function eventsUrl(runId, since, loc = globalThis.location, base = "api/", ticket = null) {
  const u = new URL(`${base}runs/${encodeURIComponent(runId)}/events`, loc.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  if (since) u.searchParams.set("since", since);
  if (ticket) u.searchParams.set("ticket", ticket);
  return u.toString();
}
