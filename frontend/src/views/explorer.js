// Parameter explorer: pick a tensor and two steps on the loss timeline; see the values at a step or the
// difference between the two as heatmaps on the one diverging scale (0 = white).
// Small tensors come whole (one cell per element). Large ones come as server-pooled tiles of their 2-D view
// (each cell = the signed value of largest |value| of its block), at most a canvas' worth of cells, so one view
// downloads a few MB at most however large the layer; zoom and pan fetch tiles of the visible window, and
// hovering fetches the exact elements of the block under the pointer.

import { h, setChildren, spinner, errorBanner, showTooltip, hideTooltip, debounce } from "../ui.js";
import { fmtNum, fmtExact, fmtShape, unravel, fmtPct } from "../format.js";
import { buildHash, intParam, boolParam, replaceParams } from "../state.js";
import { metricsArrays } from "../events.js";
import { symmetricExtent } from "../colors.js";
import { chartFigure, fileStem } from "../export.js";
import { clearHeatmaps } from "../hooks.js";
import { bootstrapRunView, defaultTensor, settleSteps } from "../runview.js";
import { createTensorPicker } from "../tensortree.js";
import { viewOf, argMaxAbs, clampWindow, zoomWindow } from "../tensorview.js";
import { heatmapTiles, exactWindow, trajectory } from "../tensorapi.js";
import * as heatmap from "../charts/heatmap.js";
import * as tiles from "../charts/tiles.js";
import * as legend from "../charts/legend.js";
import * as lines from "../charts/lines.js";
import * as timeline from "../charts/timeline.js";
import { snapStep } from "../charts/timeline.js";

export { defaultTensor };

/** Up to this many elements a tensor is fetched whole (≤ 1 MB as float32; a diff view needs three of them). */
export const EXACT_LIMIT = 262144;
/** Largest block fetched exactly for a tooltip (zoom in for blocks larger than this). */
export const MAX_EXACT_BLOCK = 65536;

const numel = (m) => (m?.shape ?? []).reduce((a, b) => a * b, 1);

/** "r0,c0,r1,c1" → [r0, c0, r1, c1] clamped into the view, or null. */
export function parseWin(raw, view) {
  if (!raw || !view) return null;
  const p = String(raw).split(",").map(Number);
  if (p.length !== 4 || p.some((v) => !Number.isInteger(v))) return null;
  const w = clampWindow(view, p);
  return w[0] === 0 && w[1] === 0 && w[2] === view.rows && w[3] === view.cols ? null : w;
}

export function mount(root, { api, routeParams, params }) {
  const id = routeParams.id;
  const ctl = new AbortController();
  let destroyed = false;
  const cache = new Map(); // exact: `${name}@${step}` → Promise<tensor>; tiles: request key → Promise<tiles>
  let tensors = [];
  let steps = [];
  let run = null;
  let metrics = null;
  const st = {
    tensor: params.tensor ?? null,
    from: intParam(params, "from", null),
    to: intParam(params, "to", null),
    mode: params.mode === "values" ? "values" : "diff",
    step: intParam(params, "step", null),
    side: boolParam(params, "side", null),
    win: params.win ?? null, // zoom window of a tiled tensor's view, "r0,c0,r1,c1"
  };
  let loadToken = 0;
  let playing = false;
  let shown = null;
  let tl = null;
  let picker = null;
  let fullScale = null; // colour bound of the whole (unzoomed) tiled view, kept while zooming

  root.setAttribute("data-testid", "explorer");
  root.dataset.state = "loading";
  const banner = h("div");
  const head = h("div.page-head");
  const controls = h("div.controls");
  const timelineBox = h("div.timeline-box");
  const playBox = h("div.play-box");
  const figures = h("div.figures");
  const statsBox = h("div.stats-box");
  const trajBox = h("section.trajectory-box", { "data-testid": "trajectory", "aria-live": "polite" });
  setChildren(root, head, banner, controls, timelineBox, playBox, figures, statsBox, trajBox);
  figures.append(spinner("Loading…"));

  const meta = () => tensors.find((t) => t.name === st.tensor);
  const tiled = (m) => numel(m) > EXACT_LIMIT;

  function syncUrl() {
    replaceParams(["runs", id, "explore"], {
      tensor: st.tensor,
      from: st.from,
      to: st.to,
      mode: st.mode,
      step: st.mode === "values" ? st.step : null,
      side: st.side === null ? null : st.side ? 1 : 0,
      win: st.win,
    });
    for (const a of head.querySelectorAll("a[data-link]")) {
      const l = a.dataset.link;
      a.href = buildHash(
        ["runs", id, l],
        l === "scatter"
          ? { tensor: st.tensor, from: st.from, to: st.to }
          : l === "overview"
            ? { from: st.from, to: st.to }
            : { step: st.to },
      );
    }
  }

  function remember(key, make, limit) {
    if (!cache.has(key)) {
      const p = make();
      p.catch(() => cache.delete(key));
      cache.set(key, p);
      while (cache.size > limit) cache.delete(cache.keys().next().value);
    }
    return cache.get(key);
  }

  function getTensor(name, step) {
    const limit = Math.max(4, Math.min(200, Math.floor(60e6 / (numel(meta()) * 4 || 1))));
    return remember(`${name}@${step}`, () => api.tensor(id, name, step, { signal: ctl.signal }), limit);
  }

  // A new picture replaces the one still on its way: its tile request is aborted (the server counts a user's
  // analyses in flight, and a fast zoom would otherwise pile them up).
  let tilesCtl = null;
  const tilesSignal = () =>
    typeof AbortSignal.any === "function" ? AbortSignal.any([ctl.signal, tilesCtl.signal]) : ctl.signal;

  const inflight = new Set(); // keys of tile requests on their way (dropped from the cache when aborted)
  function getTiles(name, q, grid, win) {
    const key = JSON.stringify([name, q, grid.rows, grid.cols, win]);
    return remember(
      key,
      () => {
        inflight.add(key);
        const p = heatmapTiles(
          api,
          id,
          name,
          { ...q, rows: grid.rows, cols: grid.cols, window: win },
          { signal: tilesSignal() },
        );
        p.finally(() => inflight.delete(key)).catch(() => {});
        return p;
      },
      12,
    );
  }

  // ---- controls
  function selectTensor(name) {
    if (name === st.tensor) return;
    st.tensor = name;
    st.side = null;
    st.win = null;
    fullScale = null;
    cache.clear();
    setChildren(trajBox);
    load();
  }

  function renderControls() {
    if (!picker) picker = createTensorPicker({ tensors, selected: st.tensor, onSelect: selectTensor });
    else picker.setSelected(st.tensor);
    const modeBtn = (mode, label) =>
      h(
        "button.seg",
        {
          type: "button",
          "data-testid": `mode-${mode}`,
          "aria-pressed": st.mode === mode ? "true" : "false",
          onclick: () => {
            if (st.mode === mode) return;
            stopPlay();
            st.mode = mode;
            fullScale = null;
            if (mode === "values" && st.step === null) st.step = st.from;
            renderControls();
            renderPlay();
            load();
          },
        },
        label,
      );
    const stepInput = (key, testid, label) =>
      h(
        "label.inline",
        {},
        label,
        h("input", {
          type: "number",
          step: 1,
          min: steps[0] ?? 0,
          max: steps[steps.length - 1] ?? 0,
          value: st[key],
          "data-testid": testid,
          onchange: (e) => {
            const v = snapStep(steps, Number(e.target.value));
            e.target.value = v;
            st[key] = v;
            if (st.from > st.to) [st.from, st.to] = [st.to, st.from];
            fullScale = null;
            tl?.setSelection(st.from, st.to);
            renderControls();
            load();
          },
        }),
      );
    const side = h("input", {
      type: "checkbox",
      "data-testid": "side-by-side",
      checked: sideBySide(),
      onchange: (e) => {
        st.side = e.target.checked;
        load();
      },
    });
    setChildren(
      controls,
      h("span.inline", { id: "tensor-picker-label" }, "Tensor"),
      picker.el,
      h(
        "div.segmented",
        { role: "group", "aria-label": "Mode" },
        modeBtn("values", "Values at step"),
        modeBtn("diff", "Difference"),
      ),
      stepInput("from", "from-input", "from"),
      stepInput("to", "to-input", "to"),
      st.mode === "diff" ? h("label.inline", {}, side, "values beside the difference") : null,
    );
  }

  function sideBySide() {
    if (st.side !== null) return st.side;
    const m = meta();
    return !!m && m.shape.length >= 3 && numel(m) <= 20000;
  }

  function renderTimeline() {
    setChildren(timelineBox);
    const { steps: pts } = metricsArrays(metrics);
    tl = timeline.render(
      timelineBox,
      { points: pts.map((p) => ({ x: p.step, y: p.loss })), steps },
      {
        from: st.from,
        to: st.to,
        width: 1180,
        onChange: (a, b) => {
          st.from = a;
          st.to = b;
          fullScale = null;
          if (st.mode === "values") st.step = a;
          renderControls();
          renderPlay();
          load();
        },
      },
    );
    if (st.mode === "values") tl.setCursor(st.step);
  }

  function renderPlay() {
    if (st.mode !== "values") {
      setChildren(playBox);
      tl?.setCursor(null);
      return;
    }
    const idx = Math.max(0, steps.indexOf(st.step));
    const label = h("span.step-label", { "data-testid": "step-label" }, `step ${st.step}`);
    const slider = h("input", {
      type: "range",
      min: 0,
      max: Math.max(0, steps.length - 1),
      step: 1,
      value: idx,
      "data-testid": "step-slider",
      "aria-label": "Step",
      oninput: (e) => {
        stopPlay();
        st.step = steps[Number(e.target.value)];
        label.textContent = `step ${st.step}`;
        tl?.setCursor(st.step);
        load();
      },
    });
    const play = h(
      "button",
      {
        type: "button",
        "data-testid": "play-button",
        "aria-pressed": playing ? "true" : "false",
        onclick: () => (playing ? stopPlay() : startPlay()),
      },
      playing ? "❚❚ Pause" : "▶ Play",
    );
    setChildren(playBox, play, slider, label, h("span.hint", {}, "plays the steps between from and to"));
    tl?.setCursor(st.step);
  }

  async function startPlay() {
    playing = true;
    renderPlay();
    const lo = steps.indexOf(st.from);
    const hi = steps.indexOf(st.to);
    let i = steps.indexOf(st.step);
    if (i < lo || i >= hi) i = lo;
    while (playing && !destroyed && i <= hi) {
      st.step = steps[i];
      const t0 = performance.now();
      if (!tiled(meta()))
        for (let k = 1; k <= 3 && i + k <= hi; k++) getTensor(st.tensor, steps[i + k]).catch(() => {});
      await load({ quiet: true });
      const slider = playBox.querySelector("[data-testid=step-slider]");
      if (slider) slider.value = String(i);
      const label = playBox.querySelector("[data-testid=step-label]");
      if (label) label.textContent = `step ${st.step}`;
      tl?.setCursor(st.step);
      const wait = 150 - (performance.now() - t0);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      i++;
    }
    playing = false;
    if (!destroyed) renderPlay();
  }

  function stopPlay() {
    if (!playing) return;
    playing = false;
    renderPlay();
  }

  // ---- data
  async function loadExact(m) {
    if (st.mode === "values") {
      const t = await getTensor(m.name, st.step);
      return {
        meta: m,
        kind: "exact",
        mode: "values",
        step: st.step,
        values: t.data,
        shape: t.shape ?? m.shape,
      };
    }
    const [fromT, toT, diff] = await Promise.all([
      getTensor(m.name, st.from),
      getTensor(m.name, st.to),
      api.diff(id, m.name, st.from, st.to, { signal: ctl.signal }),
    ]);
    return {
      meta: m,
      kind: "exact",
      mode: "diff",
      from: st.from,
      to: st.to,
      fromT,
      toT,
      shape: diff.shape ?? m.shape,
      values: diff.data,
      stats: diff.stats,
    };
  }

  async function loadTiles(m) {
    const view = viewOf(m.shape);
    const win = parseWin(st.win, view);
    st.win = win ? win.join(",") : null;
    const w = win ?? [0, 0, view.rows, view.cols];
    const side = st.mode === "diff" && sideBySide();
    const grid = tiles.tileGrid(w[2] - w[0], w[3] - w[1], { maxWidth: side ? 560 : 880 });
    const q = st.mode === "values" ? { step: st.step } : { from: st.from, to: st.to };
    const [main, fromTiles] = await Promise.all([
      getTiles(m.name, q, grid, win),
      side ? getTiles(m.name, { step: st.from }, grid, win) : null,
    ]);
    if (!win || fullScale === null) fullScale = win ? null : main.scale;
    return {
      meta: m,
      kind: "tiles",
      mode: st.mode,
      step: st.step,
      from: st.from,
      to: st.to,
      view,
      window: w,
      grid,
      tiles: main,
      fromTiles,
      shape: m.shape,
      stats: main.stats,
    };
  }

  async function load({ quiet = false } = {}) {
    const token = ++loadToken;
    for (const k of inflight) cache.delete(k);
    inflight.clear();
    tilesCtl?.abort();
    tilesCtl = new AbortController();
    const m = meta();
    if (!m) return;
    syncUrl();
    root.dataset.state = "loading";
    if (!quiet) {
      setChildren(figures, spinner("Computing…"));
      setChildren(statsBox);
    }
    try {
      const next = tiled(m) ? await loadTiles(m) : await loadExact(m);
      if (token !== loadToken || destroyed) return;
      shown = next;
      syncUrl();
      draw();
      root.dataset.state = "ready";
      performance.mark?.("netlapse:explorer-ready"); // the e2e splits open times by it (tests/e2e/explorer_wide)
    } catch (e) {
      if (token !== loadToken || destroyed || e.name === "AbortError") return;
      playing = false;
      root.dataset.state = "error";
      setChildren(figures, errorBanner(e, { onRetry: () => load() }));
    }
  }

  // ---- exact elements: tooltips and trajectories
  function tooltipFor(i, block) {
    const s = shown;
    const idx = unravel(i, s.shape);
    const lines_ = [`${s.meta.name}[${idx.join(",")}]  (flat ${i})`];
    if (s.mode === "values") lines_.push(`value at step ${s.step}: ${fmtExact(s.values[i])}`);
    else {
      lines_.push(`at from (step ${s.from}): ${fmtExact(s.fromT.data[i])}`);
      lines_.push(`at to (step ${s.to}): ${fmtExact(s.toT.data[i])}`);
      lines_.push(`difference: ${fmtExact(s.values[i])}`);
    }
    if (block)
      lines_.push(
        `(block rows ${block.r0}–${block.r1 - 1}, cols ${block.c0}–${block.c1 - 1}; largest |value| shown)`,
      );
    return lines_;
  }

  /** The exact elements of a tile cell's block → its largest-|value| element {flat, value, from, to}. */
  function blockElement(cell, s = shown) {
    const win = [cell.r0, cell.c0, cell.r1, cell.c1];
    if ((cell.r1 - cell.r0) * (cell.c1 - cell.c0) > MAX_EXACT_BLOCK) return Promise.resolve(null);
    const q = s.mode === "values" ? { step: s.step } : { from: s.from, to: s.to };
    const key = JSON.stringify(["win", s.meta.name, q, win]);
    return remember(
      key,
      async () => {
        const w = await exactWindow(api, id, s.meta.name, { ...q, window: win }, { signal: ctl.signal });
        const vals = s.mode === "values" ? w.values : w.data;
        const k = argMaxAbs(vals);
        if (k < 0) return null;
        return {
          flat: w.indices[k],
          value: vals[k],
          from: w.from_values?.[k],
          to: w.to_values?.[k],
          n: vals.filter((v) => v !== null).length,
          mean: vals.reduce((a, v) => a + (v ?? 0), 0) / Math.max(1, vals.filter((v) => v !== null).length),
        };
      },
      400,
    );
  }

  function tileTooltip(cell, el) {
    const s = shown;
    const lines_ = [];
    if (el) {
      lines_.push(`${s.meta.name}[${unravel(el.flat, s.shape).join(",")}]  (flat ${el.flat})`);
      if (s.mode === "values") lines_.push(`value at step ${s.step}: ${fmtExact(el.value)}`);
      else {
        lines_.push(`at from (step ${s.from}): ${fmtExact(el.from)}`);
        lines_.push(`at to (step ${s.to}): ${fmtExact(el.to)}`);
        lines_.push(`difference: ${fmtExact(el.value)}`);
      }
      lines_.push(
        `largest |value| of ${el.n.toLocaleString()} elements (block mean ${fmtNum(el.mean)}); click for its trajectory`,
      );
    } else
      lines_.push(
        `largest |value| in block: ${fmtExact(cell.value)}`,
        el === null ? "zoom in to see the exact elements of this block" : "fetching the exact element…",
      );
    lines_.push(`view rows ${cell.r0}–${cell.r1 - 1}, cols ${cell.c0}–${cell.c1 - 1}`);
    return lines_;
  }

  let hoverSeq = 0;
  const fetchHover = debounce((cell, pos, seq) => {
    blockElement(cell)
      .then((el) => {
        if (seq === hoverSeq && !destroyed) showTooltip(pos.pageX, pos.pageY, tileTooltip(cell, el));
      })
      .catch(() => {});
  }, 120);

  function onTileHover(cell, pos) {
    const seq = ++hoverSeq;
    if (!cell) return hideTooltip();
    showTooltip(pos.pageX, pos.pageY, tileTooltip(cell, undefined));
    fetchHover(cell, pos, seq);
  }

  async function showTrajectory(flat) {
    const s = shown;
    setChildren(trajBox, spinner("Loading the trajectory…"));
    try {
      const r = await trajectory(api, id, s.meta.name, [flat], { signal: ctl.signal });
      if (destroyed) return;
      const pts = r.steps.map((step, k) => ({ x: step, y: r.values[k][0] }));
      const fig = chartFigure({
        title: `${s.meta.name}[${unravel(flat, s.shape).join(",")}] over all steps`,
        chart: "trajectory",
        exportSpec: {
          name: () => fileStem(run?.name ?? id, s.meta.name, `trajectory_${flat}`),
          csv: () => ({ columns: ["step", "value"], rows: pts.map((p) => [p.x, p.y]) }),
          onError: (e) => setChildren(banner, errorBanner(e)),
        },
      });
      lines.render(
        fig.plot,
        { series: [{ name: "value", color: "#2563eb", points: pts }] },
        { width: 760, height: 220, yLabel: "value", testid: "trajectory-chart" },
      );
      fig.figure.dataset.index = String(flat);
      fig.caption.textContent = `element ${flat} (flat index) at every captured step`;
      setChildren(trajBox, fig.figure);
    } catch (e) {
      if (!destroyed && e.name !== "AbortError") setChildren(trajBox, errorBanner(e));
    }
  }

  function onWindow(change) {
    const s = shown;
    if (!s || s.kind !== "tiles") return;
    let w;
    if (Array.isArray(change)) w = clampWindow(s.view, change);
    else if (change.reset) w = null;
    else
      w = zoomWindow(
        s.view,
        parseWin(st.win, s.view) ?? [0, 0, s.view.rows, s.view.cols],
        change.zoom,
        change.at[0],
        change.at[1],
      );
    const full = !w || (w[0] === 0 && w[1] === 0 && w[2] === s.view.rows && w[3] === s.view.cols);
    st.win = full ? null : w.join(","); // the latest request: wheel steps add up before the tiles arrive
    hideTooltip();
    loadSoon();
  }
  const loadSoon = debounce(() => load({ quiet: true }), 120);

  // ---- heatmaps
  function exactFigure({ title, testid, values, shape, exportName, csv, npy, maxWidth }) {
    const fig = chartFigure({
      title,
      chart: testid,
      exportSpec: { name: () => exportName, csv, npy, onError: (e) => setChildren(banner, errorBanner(e)) },
    });
    const hm = heatmap.render(
      fig.plot,
      { values, shape },
      {
        testid,
        label: title,
        layout: { maxWidth },
        onHover: (i, info) => {
          if (i === null) return hideTooltip();
          showTooltip(info.pageX, info.pageY, tooltipFor(i, info.block));
        },
      },
    );
    hm.canvas.addEventListener("click", (ev) => {
      const { index } = hm.indexAtPoint(...canvasPoint(hm.canvas, ev));
      if (index !== null && index !== undefined) showTrajectory(index);
    });
    markCanvas(hm.canvas);
    legend.render(
      fig.plot,
      { domain: hm.handle.domain },
      { label: legendLabel(testid), width: Math.max(260, Math.min(420, hm.layout.width)) },
    );
    const l = hm.layout;
    fig.caption.textContent = `${fmtShape(shape)} · ${l.kind === "filters" ? `one tile per output filter (${shape[0]}), in-channels × ${shape[2]}×${shape[3] ?? 1} kernel cells` : l.exact ? "one cell per element" : `downsampled: each pixel = ${l.blockRows}×${l.blockCols} elements (largest |value|); hover for exact values`} · scale ±${fmtNum(hm.handle.domain, 3)}`;
    return fig.figure;
  }

  function canvasPoint(canvas, ev) {
    const r = canvas.getBoundingClientRect();
    return [Math.floor(ev.clientX - r.left), Math.floor(ev.clientY - r.top)];
  }

  function markCanvas(canvas) {
    canvas.dataset.mode = shown.mode;
    if (shown.mode === "diff") {
      canvas.dataset.from = String(shown.from);
      canvas.dataset.to = String(shown.to);
    } else canvas.dataset.step = String(shown.step);
  }

  const legendLabel = (testid) =>
    testid === "heatmap-diff"
      ? "change: red = decreased, white = 0, blue = increased"
      : "value: red < 0, white = 0, blue > 0";

  function tileFigure({ title, testid, t, exportName, interactive }) {
    const s = shown;
    const fig = chartFigure({
      title,
      chart: testid,
      exportSpec: {
        name: () => exportName,
        // The data behind a tiled picture is its cells: one row per block of the view.
        csv: () => ({
          columns: [
            "cell_row",
            "cell_col",
            "view_row0",
            "view_row1",
            "view_col0",
            "view_col1",
            "largest_abs_value",
          ],
          rows: Array.from(t.values, (v, k) => {
            const c = hm.handle.cellAt((k % t.cols) * s.grid.cellW, Math.floor(k / t.cols) * s.grid.cellH);
            return [c.i, c.j, c.r0, c.r1, c.c0, c.c1, v];
          }),
        }),
        npy: () => ({ values: t.values, shape: [t.rows, t.cols] }),
        onError: (e) => setChildren(banner, errorBanner(e)),
      },
    });
    const domain = interactive ? (fullScale ?? t.scale) : t.scale; // the values beside keep their own scale
    const hm = tiles.render(
      fig.plot,
      { ...t, view: s.view },
      {
        testid,
        label: title,
        grid: s.grid,
        domain,
        onHover: onTileHover,
        onClick: (cell) => blockElement(cell, s).then((el) => el && showTrajectory(el.flat)),
        onWindow: interactive ? onWindow : null,
      },
    );
    markCanvas(hm.canvas);
    legend.render(
      fig.plot,
      { domain },
      { label: legendLabel(testid), width: Math.max(260, Math.min(420, s.grid.width)) },
    );
    const [r0, c0, r1, c1] = s.window;
    const zoomed = r1 - r0 < s.view.rows || c1 - c0 < s.view.cols;
    const br = (r1 - r0) / t.rows;
    const bc = (c1 - c0) / t.cols;
    fig.caption.textContent = `${fmtShape(s.shape)} (${numel(s.meta).toLocaleString()} elements) · ${s.view.kind === "filters" ? "filters as tiles (no gaps drawn)" : "matrix"} · ${br <= 1 && bc <= 1 ? "one cell per element" : `each cell = largest |value| of ≈${fmtNum(br, 3)}×${fmtNum(bc, 3)} elements`} · ${zoomed ? `zoomed: view rows ${r0}–${r1 - 1}, cols ${c0}–${c1 - 1}` : "whole tensor"} · scale ±${fmtNum(domain, 3)}`;
    const tools = interactive
      ? h(
          "div.zoom-tools",
          {},
          h(
            "button.small",
            {
              type: "button",
              "data-testid": "zoom-in",
              onclick: () => onWindow({ zoom: 0.5, at: [(r0 + r1) / 2, (c0 + c1) / 2] }),
            },
            "Zoom in",
          ),
          h(
            "button.small",
            {
              type: "button",
              "data-testid": "zoom-out",
              onclick: () => onWindow({ zoom: 2, at: [(r0 + r1) / 2, (c0 + c1) / 2] }),
            },
            "Zoom out",
          ),
          h(
            "button.small",
            {
              type: "button",
              "data-testid": "zoom-reset",
              disabled: !zoomed,
              onclick: () => onWindow({ reset: true }),
            },
            "Whole tensor",
          ),
          h("span.hint", {}, "wheel to zoom, drag to pan, click a cell for its largest element's trajectory"),
        )
      : null;
    fig.figure.prepend(...(tools ? [tools] : []));
    return fig.figure;
  }

  function draw() {
    clearHeatmaps();
    const s = shown;
    const name = s.meta.name;
    const stem = fileStem(
      run?.name ?? id,
      name,
      s.mode === "diff" ? `diff_${s.from}-${s.to}` : `step${s.step}`,
    );
    if (s.kind === "tiles") {
      const parts = [];
      if (s.fromTiles)
        parts.push(
          tileFigure({
            title: `${name} at step ${s.from}`,
            testid: "heatmap-from",
            t: s.fromTiles,
            exportName: fileStem(run?.name ?? id, name, `step${s.from}`),
            interactive: false,
          }),
        );
      parts.push(
        tileFigure({
          title:
            s.mode === "diff"
              ? `Difference ${name}: step ${s.to} − step ${s.from}`
              : `${name} at step ${s.step}`,
          testid: s.mode === "diff" ? "heatmap-diff" : "heatmap-values",
          t: s.tiles,
          exportName: stem,
          interactive: true,
        }),
      );
      setChildren(figures, parts.length > 1 ? h("div.figures-row", {}, parts) : parts[0]);
      statsBox.replaceChildren(
        s.mode === "diff"
          ? diffStatsTable(s.stats, numel(s.meta))
          : h(
              "p.stats",
              { "data-testid": "value-stats" },
              `in view: min ${fmtNum(s.tiles.min)} · max ${fmtNum(s.tiles.max)} · max |v| ${fmtNum(s.tiles.scale)}`,
            ),
      );
      return;
    }
    const idxCols = s.shape.map((_, d) => `i${d}`);
    if (s.mode === "values") {
      setChildren(
        figures,
        exactFigure({
          title: `${name} at step ${s.step}`,
          testid: "heatmap-values",
          values: s.values,
          shape: s.shape,
          exportName: stem,
          maxWidth: 880,
          csv: () => ({
            columns: ["index", ...idxCols, "value"],
            rows: Array.from(s.values, (v, i) => [i, ...unravel(i, s.shape), v]),
          }),
          npy: () => ({ values: s.values, shape: s.shape }),
        }),
      );
      statsBox.replaceChildren(valueStats(s.values));
      return;
    }
    const side = sideBySide();
    const parts = [];
    if (side) {
      parts.push(
        exactFigure({
          title: `${name} at step ${s.from}`,
          testid: "heatmap-from",
          values: s.fromT.data,
          shape: s.shape,
          exportName: fileStem(run?.name ?? id, name, `step${s.from}`),
          maxWidth: 560,
          csv: () => ({
            columns: ["index", ...idxCols, "value"],
            rows: Array.from(s.fromT.data, (v, i) => [i, ...unravel(i, s.shape), v]),
          }),
          npy: () => ({ values: s.fromT.data, shape: s.shape }),
        }),
      );
    }
    parts.push(
      exactFigure({
        title: `Difference ${name}: step ${s.to} − step ${s.from}`,
        testid: "heatmap-diff",
        values: s.values,
        shape: s.shape,
        exportName: stem,
        maxWidth: side ? 560 : 880,
        csv: () => ({
          columns: ["index", ...idxCols, `value_step${s.from}`, `value_step${s.to}`, "difference"],
          rows: Array.from(s.values, (v, i) => [
            i,
            ...unravel(i, s.shape),
            s.fromT.data[i],
            s.toT.data[i],
            v,
          ]),
        }),
        npy: () => ({ values: s.values, shape: s.shape }),
      }),
    );
    setChildren(figures, h("div.figures-row", {}, parts));
    statsBox.replaceChildren(diffStatsTable(s.stats, s.values.length));
  }

  function valueStats(values) {
    let min = Infinity;
    let max = -Infinity;
    let sum = 0;
    for (const v of values) {
      if (v < min) min = v;
      if (v > max) max = v;
      sum += v;
    }
    return h(
      "p.stats",
      { "data-testid": "value-stats" },
      `min ${fmtNum(min)} · max ${fmtNum(max)} · mean ${fmtNum(sum / values.length)} · max |v| ${fmtNum(symmetricExtent(values))}`,
    );
  }

  function diffStatsTable(stats, n) {
    if (!stats) return h("div");
    const cell = (k, v) => h("div.stat", { "data-key": k }, h("span.k", {}, k), h("span.v", {}, v));
    let top = null;
    const l2 = stats.per_filter_l2;
    if (Array.isArray(l2) && l2.length) {
      const order = l2.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]);
      top = order.slice(0, 5);
    } else if (Array.isArray(stats.top_filters) && Array.isArray(stats.top_filters_l2))
      top = stats.top_filters.slice(0, 5).map((f, k) => [stats.top_filters_l2[k], f]);
    return h(
      "div.stats",
      { "data-testid": "diff-stats" },
      h(
        "div.stat-grid",
        {},
        cell("min", fmtNum(stats.min)),
        cell("max", fmtNum(stats.max)),
        cell("mean", fmtNum(stats.mean)),
        cell("mean |Δ|", fmtNum(stats.mean_abs)),
        cell("increased", `${stats.increased?.toLocaleString() ?? "—"} (${fmtPct(stats.increased / n)})`),
        cell("decreased", `${stats.decreased?.toLocaleString() ?? "—"} (${fmtPct(stats.decreased / n)})`),
        cell("unchanged", stats.unchanged?.toLocaleString() ?? "—"),
      ),
      top
        ? h(
            "p.hint",
            {},
            `most changed filters (L2): ${top.map(([v, i]) => `#${i} ${fmtNum(v, 3)}`).join(", ")}`,
          )
        : null,
    );
  }

  bootstrapRunView({
    root,
    api,
    id,
    signal: ctl.signal,
    head,
    body: figures,
    banner,
    withMetrics: true,
    alive: () => !destroyed,
    headSpec: (d) => ({
      title: "Parameter explorer",
      lede: `${d.steps.length} captured steps · ${d.tensors.length} tensors`,
      links: [
        ["overview", "All tensors"],
        ["scatter", "Initial value vs change"],
        ["activations", "Activations"],
      ],
    }),
    ready: (d) => {
      ({ run, tensors, steps, metrics } = d);
      if (!tensors.some((x) => x.name === st.tensor)) st.tensor = defaultTensor(tensors).name;
      ({ from: st.from, to: st.to } = settleSteps(steps, st.from, st.to));
      if (st.step === null) st.step = st.mode === "values" ? st.to : null;
      else st.step = snapStep(steps, st.step);
      renderControls();
      renderTimeline();
      renderPlay();
      load();
    },
  });

  return {
    destroy() {
      destroyed = true;
      playing = false;
      ctl.abort();
      hideTooltip();
      clearHeatmaps();
      picker?.close();
    },
  };
}
