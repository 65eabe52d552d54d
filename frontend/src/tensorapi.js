// Requests of the explorer beyond api.js: heatmap tiles (.npy + metadata header), exact windows, trajectories,
// and the run overview's per-tensor changes. Each takes the app's `api` (createApi) and uses its request().

import { decodeNpy } from "./npy.js";

const enc = encodeURIComponent;
const NPY = "application/x-npy";

/** Bytes received by the tile / window requests of this page (what the explorer downloaded for its views). */
export const traffic = { bytes: 0, requests: 0 };

async function npyWithMeta(res) {
  const buf = await res.arrayBuffer();
  traffic.bytes += buf.byteLength;
  traffic.requests++;
  const arr = decodeNpy(buf);
  const raw = res.headers.get("X-Netlapse-Meta");
  return { arr, meta: raw ? JSON.parse(raw) : {} };
}

/**
 * Heatmap tiles of a tensor: values at `step`, or the difference `from` → `to`; a `rows`×`cols` grid over
 * `window` ([r0, c0, r1, c1] of the tensor's 2-D view; null = all). → {...meta, values: Float32Array}.
 */
export async function heatmapTiles(
  api,
  id,
  name,
  { step = null, from = null, to = null, rows, cols, window = null },
  o = {},
) {
  const query = { rows, cols, mean: "false", window: window ? window.join(",") : null };
  if (step !== null) query.step = step;
  else Object.assign(query, { from, to });
  const res = await api.request("GET", `runs/${enc(id)}/heatmap/${enc(name)}`, {
    ...o,
    query,
    accept: NPY,
    raw: true,
  });
  const { arr, meta } = await npyWithMeta(res);
  return { ...meta, values: arr.data };
}

/**
 * Exact values of a window of a tensor's 2-D view: at `step`, or at `from` and `to` with their difference.
 * → {indices: number[] (-1 = gap), shape: [h, w], values?|from_values, to_values, data (diff)}.
 */
export async function exactWindow(api, id, name, { step = null, from = null, to = null, window }, o = {}) {
  const query = { window: window.join(",") };
  if (step !== null) query.step = step;
  else Object.assign(query, { from, to });
  const res = await api.request("GET", `runs/${enc(id)}/tensors/${enc(name)}`, { ...o, query, raw: true });
  const text = await res.text();
  traffic.bytes += text.length;
  traffic.requests++;
  return JSON.parse(text);
}

/** Values of chosen flat elements at every captured step → {steps, indices, values: [[...per index] per step]}. */
export function trajectory(api, id, name, indices, o = {}) {
  return api.request("GET", `runs/${enc(id)}/trajectory/${enc(name)}`, {
    ...o,
    query: { index: indices.join(",") },
  });
}

/** Per tensor: how much it changed between two steps → {from, to, tensors: [{name, shape, numel, l2, max_abs, rel, ...}]}. */
export function tensorChanges(api, id, from, to, o = {}) {
  return api.request("GET", `runs/${enc(id)}/changes`, { ...o, query: { from, to } });
}
