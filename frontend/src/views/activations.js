// Per-label feature-map activations (the paper's Eq. 1): one bar chart per filter, x = label,
// y = normalized activation; compare two steps side by side; click a filter for its feature maps.

import { h, setChildren, spinner, errorBanner, showTooltip, hideTooltip, debounce } from "../ui.js";
import { fmtNum, fmtExact } from "../format.js";
import { intParam, boolParam, replaceParams } from "../state.js";
import { chartFigure, fileStem } from "../export.js";
import { clearHeatmaps } from "../hooks.js";
import * as bars from "../charts/bars.js";
import { labelSpread, filterMaxima } from "../charts/bars.js";
import * as heatmap from "../charts/heatmap.js";
import * as legend from "../charts/legend.js";
import * as featuremaps from "../charts/featuremaps.js";
import { snapStep } from "../charts/timeline.js";
import { bootstrapRunView } from "../runview.js";

/** Conv layers of a run from its tensor list (kind "conv2d"), in order of appearance. */
export function convLayers(tensors) {
  const seen = [];
  for (const t of tensors) {
    const isConv = t.kind === "conv2d" || (t.kind === undefined && t.shape?.length === 4);
    const layer = t.layer ?? t.name.split(".").slice(0, -1).join(".");
    if (isConv && !seen.includes(layer)) seen.push(layer);
  }
  return seen;
}

/** Mean spread (std/mean across labels) over the filters of an activation matrix. */
export function meanSpread(activation) {
  const v = activation.map(labelSpread).filter(Number.isFinite);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
}

/** One sample index per label (the first), for feature maps. */
export function sampleForLabels(result, max = 10) {
  const out = [];
  (result?.labels ?? []).forEach((lab, j) => {
    const idx = result.sample_indices?.[j]?.[0];
    if (idx !== undefined && out.length < max) out.push({ index: idx, label: lab });
  });
  return out;
}

export function mount(root, { api, routeParams, params }) {
  const id = routeParams.id;
  const ctl = new AbortController();
  let destroyed = false;
  let run = null;
  let steps = [];
  let layers = [];
  let token = 0;
  let fmToken = 0;
  let data = null; // {single} | {from, to, difference}
  const fmCache = new Map(); // `${layer}@${step}#${index}@${point}` → Promise
  const st = {
    layer: params.layer ?? null,
    step: intParam(params, "step", null),
    compare: boolParam(params, "compare", false),
    from: intParam(params, "from", null),
    perLabel: intParam(params, "per_label", 100),
    point: params.point === "pre" ? "pre" : "post",
    split: params.split === "train" ? "train" : "test",
    shared: boolParam(params, "shared", false),
    filter: intParam(params, "filter", null),
  };

  root.setAttribute("data-testid", "activations-view");
  root.dataset.state = "loading";
  const banner = h("div");
  const head = h("div.page-head");
  const controls = h("div.controls");
  const body = h("div.activations-body");
  const fmBox = h("section.fm-box", { "aria-live": "polite" });
  setChildren(root, head, banner, controls, body, fmBox);
  body.append(spinner("Loading…"));

  function syncUrl() {
    replaceParams(["runs", id, "activations"], {
      layer: st.layer,
      step: st.step,
      compare: st.compare ? 1 : 0,
      from: st.compare ? st.from : null,
      per_label: st.perLabel !== 100 ? st.perLabel : null,
      point: st.point !== "post" ? st.point : null,
      split: st.split !== "test" ? st.split : null,
      shared: st.shared ? 1 : null,
      filter: st.filter,
    });
  }

  const reload = debounce(() => load(), 250);

  function renderControls() {
    const num = (key, testid, label, { snap = true, min } = {}) =>
      h(
        "label.inline",
        {},
        label,
        h("input", {
          type: "number",
          step: 1,
          min,
          value: st[key],
          "data-testid": testid,
          onchange: (e) => {
            const v = Number(e.target.value);
            st[key] = snap ? snapStep(steps, v) : Math.max(1, Math.round(v) || 1);
            e.target.value = st[key];
            reload();
          },
        }),
      );
    const layerSel = h(
      "select",
      {
        id: "layer-select",
        "data-testid": "layer-select",
        onchange: (e) => ((st.layer = e.target.value), (st.filter = null), load()),
      },
      layers.map((l) => h("option", { value: l, selected: l === st.layer }, l)),
    );
    layerSel.value = st.layer;
    const compare = h("input", {
      type: "checkbox",
      "data-testid": "compare-toggle",
      checked: st.compare,
      onchange: (e) => {
        st.compare = e.target.checked;
        if (st.compare && st.from === null) st.from = steps[0];
        renderControls();
        load();
      },
    });
    const pointSel = h(
      "select",
      {
        "data-testid": "point-select",
        "aria-label": "Feature map point",
        onchange: (e) => ((st.point = e.target.value), load()),
      },
      h("option", { value: "post", selected: st.point === "post" }, "after activation"),
      h("option", { value: "pre", selected: st.point === "pre" }, "before activation"),
    );
    const shared = h("input", {
      type: "checkbox",
      "data-testid": "shared-scale",
      checked: st.shared,
      onchange: (e) => ((st.shared = e.target.checked), syncUrl(), draw()),
    });
    setChildren(
      controls,
      h("label.inline", { for: "layer-select" }, "Layer"),
      layerSel,
      num("step", "step-input", "step"),
      h("label.inline", {}, compare, "compare with step"),
      st.compare ? num("from", "compare-from-input", "") : null,
      num("perLabel", "per-label-input", "inputs per label", { snap: false, min: 1 }),
      pointSel,
      h("label.inline", {}, shared, "one y scale for all filters"),
    );
  }

  async function load() {
    const my = ++token;
    syncUrl();
    root.dataset.state = "loading";
    setChildren(body, spinner("Computing…"));
    const req = { layer: st.layer, per_label: st.perLabel, point: st.point, split: st.split };
    try {
      let r;
      if (st.compare)
        r = await api.compareActivations(id, { ...req, from: st.from, to: st.step }, { signal: ctl.signal });
      else r = { single: await api.activations(id, { ...req, step: st.step }, { signal: ctl.signal }) };
      if (my !== token || destroyed) return;
      if (r.single) r.single.step ??= st.step;
      if (r.from) r.from.step ??= st.from;
      if (r.to) r.to.step ??= st.step;
      data = r;
      draw();
      root.dataset.state = "ready";
      if (st.filter !== null) showFeatureMaps(st.filter);
    } catch (e) {
      if (my !== token || destroyed || e.name === "AbortError") return;
      root.dataset.state = "error";
      setChildren(body, errorBanner(e, { onRetry: load }));
    }
  }

  function panelFigure(result, role, yDomains) {
    const step = result.step;
    const testid = role === "single" ? "activation-panel" : `activation-panel-${role}`;
    const fig = chartFigure({
      title: `${result.layer ?? st.layer} at step ${step}`,
      chart: testid,
      exportSpec: {
        name: () => fileStem(run?.name ?? id, st.layer, `activations_step${step}`, st.point),
        csv: () => ({
          columns: ["filter", "label", "activation", "numerator", "denominator", "count"],
          rows: result.activation.flatMap((vals, f) =>
            result.labels.map((lab, j) => [
              f,
              lab,
              vals[j],
              result.numerator?.[f]?.[j],
              result.denominator?.[j],
              result.counts?.[j],
            ]),
          ),
        }),
        npy: () => ({
          values: Float32Array.from(result.activation.flat(), (v) => v ?? NaN),
          shape: [result.activation.length, result.labels.length],
        }),
        onError: (e) => setChildren(banner, errorBanner(e)),
      },
    });
    bars.render(
      fig.plot,
      { labels: result.labels, activation: result.activation },
      { testid, yDomains, shared: st.shared, selected: st.filter, onSelect: (f) => showFeatureMaps(f) },
    );
    fig.plot.firstElementChild.dataset.step = String(step);
    fig.plot.firstElementChild.dataset.role = role;
    const counts = result.counts?.length ? `inputs per label: ${result.counts.join(", ")}` : "";
    fig.caption.textContent = `mean spread across labels (std/mean): ${fmtNum(meanSpread(result.activation), 3)} · ${counts}`;
    if (result.note) fig.caption.append(h("div.note", { "data-testid": "activation-note" }, result.note));
    return fig.figure;
  }

  function draw() {
    if (!data) return;
    clearHeatmaps();
    if (!st.compare || !data.from) {
      const r = data.single;
      setChildren(body, panelFigure(r, "single", null));
      return;
    }
    const yd = filterMaxima(data.from.activation, data.to.activation);
    const parts = [
      h("div.compare-row", {}, panelFigure(data.from, "from", yd), panelFigure(data.to, "to", yd)),
    ];
    if (Array.isArray(data.difference) && data.difference.length) {
      const F = data.difference.length;
      const L = data.difference[0].length;
      const labels = data.to.labels;
      // drawn with labels as rows and filters as columns (wide, like the panels); null (no inputs) → NaN → grey
      const byLabel = new Float32Array(F * L);
      for (let f = 0; f < F; f++)
        for (let j = 0; j < L; j++) byLabel[j * F + f] = data.difference[f][j] ?? NaN;
      const fig = chartFigure({
        title: `Difference: step ${data.to.step} − step ${data.from.step} (rows = labels, columns = filters)`,
        chart: "activation-diff",
        exportSpec: {
          name: () =>
            fileStem(run?.name ?? id, st.layer, `activations_diff_${data.from.step}-${data.to.step}`),
          csv: () => ({
            columns: ["filter", "label", "difference"],
            rows: data.difference.flatMap((row, f) => row.map((v, j) => [f, labels[j], v])),
          }),
          npy: () => ({ values: Float32Array.from(data.difference.flat(), (v) => v ?? NaN), shape: [F, L] }),
        },
      });
      const hm = heatmap.render(
        fig.plot,
        { values: byLabel, shape: [L, F] },
        {
          testid: "activation-diff",
          label: "activation difference per label and filter",
          layout: { maxWidth: 1100, maxHeight: 400, maxCell: 28 },
          onHover: (i, info) => {
            if (i === null) return hideTooltip();
            const f = i % F;
            const j = Math.floor(i / F);
            showTooltip(info.pageX, info.pageY, [
              `filter ${f}, label ${labels[j]}`,
              `difference: ${fmtExact(byLabel[i])}`,
            ]);
          },
        },
      );
      legend.render(
        fig.plot,
        { domain: hm.handle.domain },
        { width: 460, label: "red = lower at the later step, blue = higher, grey = no inputs at one step" },
      );
      parts.push(fig.figure);
    }
    setChildren(body, parts);
  }

  async function showFeatureMaps(f) {
    st.filter = f;
    syncUrl();
    for (const b of body.querySelectorAll("[data-testid=activation-filter]")) {
      const on = Number(b.dataset.filter) === f;
      b.classList.toggle("selected", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
    const result = st.compare ? data?.to : data?.single;
    if (!result) return;
    const samples = sampleForLabels(result);
    const my = ++fmToken;
    setChildren(
      fmBox,
      h(
        "div.chart-head",
        {},
        h("h3", {}, `Feature maps of filter ${f} (${st.layer}, step ${result.step})`),
        h(
          "button.small",
          { type: "button", "data-testid": "close-featuremaps", onclick: closeFeatureMaps },
          "Close",
        ),
      ),
      spinner("Computing…"),
    );
    if (!samples.length) {
      setChildren(fmBox, h("p.empty", {}, "No sample inputs were used for this result."));
      return;
    }
    try {
      const items = await Promise.all(
        samples.map(({ index }) => {
          const key = `${st.layer}@${result.step}#${index}@${st.point}@${st.split}`;
          if (!fmCache.has(key)) {
            const p = api.featuremaps(
              id,
              { step: result.step, layer: st.layer, split: st.split, index, point: st.point },
              { signal: ctl.signal },
            );
            p.catch(() => fmCache.delete(key));
            fmCache.set(key, p);
          }
          return fmCache.get(key);
        }),
      );
      if (my !== fmToken || destroyed) return;
      const fig = chartFigure({
        title: `Feature maps of filter ${f} (${st.layer}, step ${result.step}, ${st.point === "pre" ? "before" : "after"} activation)`,
        chart: "featuremaps",
        exportSpec: {
          name: () => fileStem(run?.name ?? id, st.layer, `filter${f}_featuremaps_step${result.step}`),
          csv: () => ({
            columns: ["index", "label", "y", "x", "value"],
            rows: items.flatMap((it) => {
              const c = featuremaps.channel(it.maps.data, it.maps.shape, f);
              return Array.from(c.values, (v, k) => [it.index, it.label, Math.floor(k / c.W), k % c.W, v]);
            }),
          }),
          npy: () => {
            const chans = items.map((it) => featuremaps.channel(it.maps.data, it.maps.shape, f));
            const vals = new Float32Array(chans.reduce((a, c) => a + c.values.length, 0));
            let o = 0;
            for (const c of chans) {
              vals.set(c.values, o);
              o += c.values.length;
            }
            return { values: vals, shape: [chans.length, chans[0].H, chans[0].W] };
          },
        },
      });
      featuremaps.render(fig.plot, { items, filter: f });
      fig.caption.textContent =
        "Each pair: the input (grey) and this filter's feature map (white = 0, blue = positive, red = negative), one input per label.";
      setChildren(
        fmBox,
        h(
          "div.chart-head",
          {},
          h("span"),
          h(
            "button.small",
            { type: "button", "data-testid": "close-featuremaps", onclick: closeFeatureMaps },
            "Close",
          ),
        ),
        fig.figure,
      );
    } catch (e) {
      if (my !== fmToken || destroyed || e.name === "AbortError") return;
      setChildren(fmBox, errorBanner(e));
    }
  }

  function closeFeatureMaps() {
    fmToken++;
    st.filter = null;
    syncUrl();
    setChildren(fmBox);
    for (const b of body.querySelectorAll("[data-testid=activation-filter]")) {
      b.classList.remove("selected");
      b.setAttribute("aria-pressed", "false");
    }
  }

  bootstrapRunView({
    root,
    api,
    id,
    signal: ctl.signal,
    head,
    body,
    banner,
    alive: () => !destroyed,
    headSpec: {
      title: "Per-label activations",
      lede: "for each filter: mean feature-map sum over correctly predicted inputs of a label, divided by their mean pixel sum",
    },
    isEmpty: (d) => !convLayers(d.tensors).length || !d.steps.length,
    emptyText: (d) =>
      convLayers(d.tensors).length
        ? "Nothing captured yet for this run."
        : "This model has no conv layers to analyse.",
    ready: (d) => {
      run = d.run;
      steps = d.steps;
      layers = convLayers(d.tensors);
      if (!layers.includes(st.layer)) st.layer = layers[0];
      st.step = st.step === null ? steps[steps.length - 1] : snapStep(steps, st.step);
      if (st.compare) st.from = st.from === null ? steps[0] : snapStep(steps, st.from);
      renderControls();
      load();
    },
  });

  return {
    destroy() {
      destroyed = true;
      ctl.abort();
      hideTooltip();
      clearHeatmaps();
    },
  };
}
