// Test hooks on window.__netlapse: explicit, documented handles for e2e tests (see README).
// The app never reads them; they only expose what is drawn.

function root() {
  const w = globalThis.window;
  if (!w) return null;
  w.__netlapse ??= {
    heatmaps: {},
    exports: [],
    lastExport: null,
    /** Centre of flat index i on heatmap `testid` (default "heatmap-diff"): CSS px relative to the canvas and to the page viewport. */
    cellCenter(i, testid = "heatmap-diff") {
      const hm = w.__netlapse.heatmaps[testid];
      return hm ? hm.cellCenter(i) : null;
    },
    /** [r, g, b, a] drawn at the centre of flat index i on heatmap `testid`. */
    readCell(i, testid = "heatmap-diff") {
      const hm = w.__netlapse.heatmaps[testid];
      return hm ? hm.readCell(i) : null;
    },
  };
  return w.__netlapse;
}

export function registerHeatmap(testid, handle) {
  const r = root();
  if (r) r.heatmaps[testid] = handle;
}

export function unregisterHeatmap(testid, handle) {
  const r = root();
  if (r && r.heatmaps[testid] === handle) delete r.heatmaps[testid];
}

/** Forget all registered heatmaps (a view is about to redraw or unmount). */
export function clearHeatmaps() {
  const r = root();
  if (r) r.heatmaps = {};
}

export function recordExport(info) {
  const r = root();
  if (!r) return;
  r.lastExport = info;
  r.exports.push(info);
}

export function setHook(name, value) {
  const r = root();
  if (r) r[name] = value;
}
