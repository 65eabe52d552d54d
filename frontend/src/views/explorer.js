// Parameter explorer: pick a tensor and two steps on the loss timeline; see the values at a
// step or the difference between the two as heatmaps on the one diverging scale (0 = white).

import { h, setChildren, spinner, errorBanner, showTooltip, hideTooltip } from "../ui.js";
import { fmtNum, fmtExact, fmtShape, unravel, fmtPct } from "../format.js";
import { buildHash, intParam, boolParam, replaceParams } from "../state.js";
import { emptyMetrics, mergeMetrics, metricsArrays } from "../events.js";
import { symmetricExtent } from "../colors.js";
import { chartFigure, fileStem } from "../export.js";
import { clearHeatmaps } from "../hooks.js";
import * as heatmap from "../charts/heatmap.js";
import * as legend from "../charts/legend.js";
import * as timeline from "../charts/timeline.js";
import { snapStep } from "../charts/timeline.js";

/** Above this many elements the diff is computed in the browser from the two tensors (sent as .npy). */
export const DIFF_ENDPOINT_LIMIT = 262144;

/** b − a elementwise and the stats the diff endpoint reports. */
export function diffStats(a, b, shape) {
  const n = a.length;
  const d = new Float32Array(n);
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let sumAbs = 0;
  let inc = 0;
  let dec = 0;
  let same = 0;
  for (let i = 0; i < n; i++) {
    const v = b[i] - a[i];
    d[i] = v;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
    sumAbs += Math.abs(v);
    if (v > 0) inc++;
    else if (v < 0) dec++;
    else same++;
  }
  const stats = { min, max, mean: sum / n, mean_abs: sumAbs / n, increased: inc, decreased: dec, unchanged: same };
  if (shape.length >= 3) {
    const per = n / shape[0];
    stats.per_filter_l2 = Array.from({ length: shape[0] }, (_, f) => {
      let s = 0;
      for (let i = f * per; i < (f + 1) * per; i++) s += d[i] * d[i];
      return Math.sqrt(s);
    });
  }
  return { data: d, stats };
}

/** Pick the default tensor: the first conv weight, else the first weight, else the first. */
export function defaultTensor(tensors) {
  return (
    tensors.find((t) => t.shape?.length === 4 && (t.role === "weight" || t.name.endsWith(".weight"))) ??
    tensors.find((t) => t.role === "weight" || t.name.endsWith(".weight")) ??
    tensors[0]
  );
}

export function mount(root, { api, routeParams, params }) {
  const id = routeParams.id;
  const ctl = new AbortController();
  let destroyed = false;
  const cache = new Map(); // `${name}@${step}` → Promise<tensor>
  let tensors = [];
  let steps = [];
  let run = null;
  const metrics = emptyMetrics();
  const st = {
    tensor: params.tensor ?? null,
    from: intParam(params, "from", null),
    to: intParam(params, "to", null),
    mode: params.mode === "values" ? "values" : "diff",
    step: intParam(params, "step", null),
    side: boolParam(params, "side", null),
  };
  let loadToken = 0;
  let playing = false;
  let shown = null; // what the heatmaps show: {meta, from, to, fromT, toT, diff, values, step}
  let tl = null;

  root.setAttribute("data-testid", "explorer");
  root.dataset.state = "loading";
  const banner = h("div");
  const head = h("div.page-head");
  const controls = h("div.controls");
  const timelineBox = h("div.timeline-box");
  const playBox = h("div.play-box");
  const figures = h("div.figures");
  const statsBox = h("div.stats-box");
  setChildren(root, head, banner, controls, timelineBox, playBox, figures, statsBox);
  figures.append(spinner("Loading…"));

  const meta = () => tensors.find((t) => t.name === st.tensor);
  const numel = (m) => (m?.shape ?? []).reduce((a, b) => a * b, 1);

  function syncUrl() {
    replaceParams(["runs", id, "explore"], { tensor: st.tensor, from: st.from, to: st.to, mode: st.mode, step: st.mode === "values" ? st.step : null, side: st.side === null ? null : st.side ? 1 : 0 });
    for (const a of head.querySelectorAll("a[data-link]")) {
      a.href = buildHash(["runs", id, a.dataset.link], a.dataset.link === "scatter" ? { tensor: st.tensor, from: st.from, to: st.to } : { step: st.to });
    }
  }

  function getTensor(name, step) {
    const key = `${name}@${step}`;
    if (!cache.has(key)) {
      const p = api.tensor(id, name, step, { signal: ctl.signal });
      p.catch(() => cache.delete(key));
      cache.set(key, p);
      const limit = Math.max(4, Math.min(200, Math.floor(60e6 / (numel(meta()) * 4 || 1))));
      while (cache.size > limit) cache.delete(cache.keys().next().value);
    }
    return cache.get(key);
  }

  // ---- controls
  function renderHead() {
    setChildren(
      head,
      h("div", {}, h("h1", {}, "Parameter explorer"), h("p.lede", {}, h("a", { href: buildHash(["runs", id]) }, run?.name ?? id), ` · ${steps.length} captured steps`)),
      h("nav.head-actions", { "aria-label": "Other analyses" }, h("a.button", { "data-link": "scatter", href: "#" }, "Initial value vs change"), h("a.button", { "data-link": "activations", href: "#" }, "Activations")),
    );
  }

  function renderControls() {
    const sel = h(
      "select",
      {
        "data-testid": "tensor-select",
        id: "tensor-select",
        onchange: (e) => {
          st.tensor = e.target.value;
          cache.clear();
          st.side = null;
          load();
        },
      },
      tensors.map((t) => h("option", { value: t.name, selected: t.name === st.tensor }, `${t.name}  (${fmtShape(t.shape)})`)),
    );
    sel.value = st.tensor;
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
      h("label.inline", { for: "tensor-select" }, "Tensor"),
      sel,
      h("div.segmented", { role: "group", "aria-label": "Mode" }, modeBtn("values", "Values at step"), modeBtn("diff", "Difference")),
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
    const play = h("button", { type: "button", "data-testid": "play-button", "aria-pressed": playing ? "true" : "false", onclick: () => (playing ? stopPlay() : startPlay()) }, playing ? "❚❚ Pause" : "▶ Play");
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

  // ---- data + heatmaps
  async function load({ quiet = false } = {}) {
    const token = ++loadToken;
    const m = meta();
    if (!m) return;
    syncUrl();
    root.dataset.state = "loading";
    if (!quiet) {
      setChildren(figures, spinner("Computing…"));
      setChildren(statsBox);
    }
    try {
      let next;
      if (st.mode === "values") {
        const t = await getTensor(m.name, st.step);
        next = { meta: m, mode: "values", step: st.step, values: t.data, shape: t.shape ?? m.shape };
      } else {
        const small = numel(m) <= DIFF_ENDPOINT_LIMIT;
        const [fromT, toT, diff] = await Promise.all([
          getTensor(m.name, st.from),
          getTensor(m.name, st.to),
          small ? api.diff(id, m.name, st.from, st.to, { signal: ctl.signal }) : Promise.resolve(null),
        ]);
        const local = diff ? null : diffStats(fromT.data, toT.data, m.shape);
        next = {
          meta: m,
          mode: "diff",
          from: st.from,
          to: st.to,
          fromT,
          toT,
          shape: diff?.shape ?? m.shape,
          values: diff ? diff.data : local.data,
          stats: diff ? diff.stats : local.stats,
          statsSource: diff ? "server" : "browser",
        };
      }
      if (token !== loadToken || destroyed) return;
      shown = next;
      draw();
      root.dataset.state = "ready";
    } catch (e) {
      if (token !== loadToken || destroyed || e.name === "AbortError") return;
      playing = false;
      root.dataset.state = "error";
      setChildren(figures, errorBanner(e, { onRetry: () => load() }));
    }
  }

  function tooltipFor(i, block) {
    const s = shown;
    const idx = unravel(i, s.shape);
    const lines = [`${s.meta.name}[${idx.join(",")}]  (flat ${i})`];
    if (s.mode === "values") lines.push(`value at step ${s.step}: ${fmtExact(s.values[i])}`);
    else {
      lines.push(`at from (step ${s.from}): ${fmtExact(s.fromT.data[i])}`);
      lines.push(`at to (step ${s.to}): ${fmtExact(s.toT.data[i])}`);
      lines.push(`difference: ${fmtExact(s.values[i])}`);
    }
    if (block) lines.push(`(block rows ${block.r0}–${block.r1 - 1}, cols ${block.c0}–${block.c1 - 1}; largest |value| shown)`);
    return lines;
  }

  function heatFigure({ title, testid, values, shape, exportName, csv, npy, maxWidth }) {
    const fig = chartFigure({ title, chart: testid, exportSpec: { name: () => exportName, csv, npy, onError: (e) => setChildren(banner, errorBanner(e)) } });
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
    hm.canvas.dataset.mode = shown.mode;
    if (shown.mode === "diff") {
      hm.canvas.dataset.from = String(shown.from);
      hm.canvas.dataset.to = String(shown.to);
    } else hm.canvas.dataset.step = String(shown.step);
    legend.render(fig.plot, { domain: hm.handle.domain }, { label: testid === "heatmap-diff" ? "change: red = decreased, white = 0, blue = increased" : "value: red < 0, white = 0, blue > 0", width: Math.max(260, Math.min(420, hm.layout.width)) });
    const l = hm.layout;
    fig.caption.textContent = `${fmtShape(shape)} · ${l.kind === "filters" ? `one tile per output filter (${shape[0]}), in-channels × ${shape[2]}×${shape[3] ?? 1} kernel cells` : l.exact ? "one cell per element" : `downsampled: each pixel = ${l.blockRows}×${l.blockCols} elements (largest |value|); hover for exact values`} · scale ±${fmtNum(hm.handle.domain, 3)}`;
    return fig.figure;
  }

  function draw() {
    clearHeatmaps();
    const s = shown;
    const name = s.meta.name;
    const idxCols = s.shape.map((_, d) => `i${d}`);
    const stem = fileStem(run?.name ?? id, name, s.mode === "diff" ? `diff_${s.from}-${s.to}` : `step${s.step}`);
    if (s.mode === "values") {
      setChildren(
        figures,
        heatFigure({
          title: `${name} at step ${s.step}`,
          testid: "heatmap-values",
          values: s.values,
          shape: s.shape,
          exportName: stem,
          maxWidth: 880,
          csv: () => ({ columns: ["index", ...idxCols, "value"], rows: Array.from(s.values, (v, i) => [i, ...unravel(i, s.shape), v]) }),
          npy: () => ({ values: s.values, shape: s.shape }),
        }),
      );
      statsBox.replaceChildren(valueStats(s.values));
      return;
    }
    const side = sideBySide();
    const csv = () => ({
      columns: ["index", ...idxCols, `value_step${s.from}`, `value_step${s.to}`, "difference"],
      rows: Array.from(s.values, (v, i) => [i, ...unravel(i, s.shape), s.fromT.data[i], s.toT.data[i], v]),
    });
    const diffFig = heatFigure({
      title: `Difference ${name}: step ${s.to} − step ${s.from}`,
      testid: "heatmap-diff",
      values: s.values,
      shape: s.shape,
      exportName: stem,
      maxWidth: side ? 560 : 880,
      csv,
      npy: () => ({ values: s.values, shape: s.shape }),
    });
    const parts = [];
    if (side) {
      parts.push(
        heatFigure({
          title: `${name} at step ${s.from}`,
          testid: "heatmap-from",
          values: s.fromT.data,
          shape: s.shape,
          exportName: fileStem(run?.name ?? id, name, `step${s.from}`),
          maxWidth: 560,
          csv: () => ({ columns: ["index", ...idxCols, "value"], rows: Array.from(s.fromT.data, (v, i) => [i, ...unravel(i, s.shape), v]) }),
          npy: () => ({ values: s.fromT.data, shape: s.shape }),
        }),
      );
    }
    parts.push(diffFig);
    setChildren(figures, h("div.figures-row", {}, parts));
    statsBox.replaceChildren(diffStatsTable(s.stats, s.statsSource, s.values.length));
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
    return h("p.stats", { "data-testid": "value-stats" }, `min ${fmtNum(min)} · max ${fmtNum(max)} · mean ${fmtNum(sum / values.length)} · max |v| ${fmtNum(symmetricExtent(values))}`);
  }

  function diffStatsTable(stats, source, n) {
    if (!stats) return h("div");
    const cell = (k, v) => h("div.stat", { "data-key": k }, h("span.k", {}, k), h("span.v", {}, v));
    const l2 = stats.per_filter_l2;
    let top = null;
    if (Array.isArray(l2) && l2.length) {
      const order = l2.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]);
      top = `most changed filters (L2): ${order
        .slice(0, 5)
        .map(([v, i]) => `#${i} ${fmtNum(v, 3)}`)
        .join(", ")}`;
    }
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
      top ? h("p.hint", {}, top) : null,
      source === "browser" ? h("p.hint", {}, "Large tensor: difference and stats computed in the browser from the two snapshots.") : null,
    );
  }

  (async () => {
    try {
      const [r, t, s, m] = await Promise.all([
        api.getRun(id, { signal: ctl.signal }),
        api.tensors(id, { signal: ctl.signal }),
        api.steps(id, { signal: ctl.signal }),
        api.metrics(id, { signal: ctl.signal }).catch(() => null),
      ]);
      if (destroyed) return;
      run = r;
      tensors = t?.tensors ?? [];
      steps = (s?.steps ?? []).slice().sort((a, b) => a - b);
      if (m) mergeMetrics(metrics, m);
      renderHead();
      if (!tensors.length || !steps.length) {
        setChildren(figures, h("p.empty", {}, "Nothing captured yet for this run."));
        root.dataset.state = "empty";
        return;
      }
      if (!tensors.some((x) => x.name === st.tensor)) st.tensor = defaultTensor(tensors).name;
      st.from = st.from === null ? steps[0] : snapStep(steps, st.from);
      st.to = st.to === null ? steps[steps.length - 1] : snapStep(steps, st.to);
      if (st.from > st.to) [st.from, st.to] = [st.to, st.from];
      if (st.step === null) st.step = st.mode === "values" ? st.to : null;
      else st.step = snapStep(steps, st.step);
      renderControls();
      renderTimeline();
      renderPlay();
      load();
    } catch (e) {
      if (!destroyed && e.name !== "AbortError") {
        setChildren(figures);
        setChildren(banner, errorBanner(e));
        root.dataset.state = "error";
      }
    }
  })();

  return {
    destroy() {
      destroyed = true;
      playing = false;
      ctl.abort();
      hideTooltip();
      clearHeatmaps();
    },
  };
}
