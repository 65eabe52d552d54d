// Compare runs: loss/accuracy of up to 8 runs on one axis, one tensor's difference between two runs on the
// diverging red/white/blue scale, and per-label activations of one layer in both runs side by side.
// State in the URL: #/compare?runs=A,B[,…]&tensor=conv1.weight&sa=63&sb=63&layer=conv1

import { h, setChildren, spinner, errorBanner, showTooltip, hideTooltip } from "../ui.js";
import { replaceParams, intParam, buildHash } from "../state.js";
import { RUN_COLORS } from "../colors.js";
import { fmtNum, fmtExact } from "../format.js";
import { clearHeatmaps } from "../hooks.js";
import * as lines from "../charts/lines.js";
import * as heatmap from "../charts/heatmap.js";
import * as legend from "../charts/legend.js";

export const MAX_RUNS = 8;
const SMALL = { width: 370, height: 220 }; // three charts side by side at 1280 px

/** "a,b,a,,c" → ["a", "b", "c"]: unique run ids in order, at most MAX_RUNS. */
export function parseRuns(s) {
  const out = [];
  for (const id of String(s ?? "").split(",")) {
    const t = id.trim();
    if (t && !out.includes(t)) out.push(t);
  }
  return out.slice(0, MAX_RUNS);
}

/** A, B, C, … for the runs in selection order. */
export const runLetter = (i) => String.fromCharCode(65 + i);

/** Series for the line chart from the overlay answer: one per run, points where the run has a value. */
export function overlaySeries(overlay, key, axis = "steps") {
  const xs = overlay[axis];
  // The chart's legend has ~16 characters per entry: the run's letter and the start of its name (the chips above
  // the charts carry the full names and settings).
  return overlay.runs.map((r, i) => ({
    name: `${runLetter(i)} ${(r.name || r.id).slice(0, 12)}`,
    color: RUN_COLORS[i % RUN_COLORS.length],
    kind: "line",
    points: xs.map((x, j) => ({ x, y: overlay[key][i][j] })).filter((p) => p.y !== null && p.y !== undefined),
  }));
}

/** Names of the tensors both runs captured with the same shape, in run A's order. */
export function commonTensors(a, b) {
  const shapes = new Map(b.map((t) => [t.name, JSON.stringify(t.shape)]));
  return a.filter((t) => shapes.get(t.name) === JSON.stringify(t.shape)).map((t) => t.name);
}

/** Conv layers (layers of conv2d tensors) of a run's tensor list. */
export function convLayers(tensors) {
  return [
    ...new Set(tensors.filter((t) => t.kind === "conv2d" && t.name.endsWith(".weight")).map((t) => t.layer)),
  ];
}

function section(testid, title) {
  const body = h("div.section-body");
  const el = h("section.panel", { "data-testid": testid, "data-state": "loading" }, h("h2", {}, title), body);
  return { el, body };
}

function select(label, testid, options, value, onchange) {
  const s = h(
    "select",
    { "data-testid": testid, "aria-label": label, onchange: (ev) => onchange(ev.target.value) },
    options.map((o) => h("option", { value: String(o), selected: String(o) === String(value) }, String(o))),
  );
  return h("label.field.inline", {}, h("span.label", {}, label), s);
}

export function mount(root, { api, params }) {
  const ids = parseRuns(params.runs);
  const ctl = new AbortController();
  const o = { signal: ctl.signal };
  const state = {
    tensor: params.tensor ?? null,
    sa: intParam(params, "sa", null),
    sb: intParam(params, "sb", null),
    layer: params.layer ?? null,
  };
  let destroyed = false;
  const sync = () =>
    replaceParams(["compare"], {
      runs: ids.join(","),
      tensor: state.tensor,
      sa: state.sa,
      sb: state.sb,
      layer: state.layer,
    });

  const head = h(
    "div.page-head",
    {},
    h("h1", {}, "Compare runs"),
    h("a.button", { href: "#/runs" }, "Back to runs"),
  );
  if (ids.length < 2) {
    setChildren(
      root,
      head,
      h(
        "p.empty",
        { "data-testid": "compare-empty" },
        "Select two to eight runs in the run list, then Compare.",
      ),
    );
    return { destroy() {} };
  }
  const runsLine = h("p.small-text", { "data-testid": "compare-runs" });
  const metrics = section("compare-metrics", "Loss and accuracy");
  const diff = section("compare-diff", "Tensor difference: run B − run A");
  const acts = section("compare-activations", "Per-label activations (Eq. 1): run A, run B, B − A");
  setChildren(root, head, runsLine, metrics.el, diff.el, acts.el);

  const fail = (sec, e) => {
    if (destroyed || e?.name === "AbortError") return;
    sec.el.dataset.state = "error";
    setChildren(sec.body, errorBanner(e));
  };

  async function loadMetrics() {
    setChildren(metrics.body, spinner("Loading…"));
    try {
      const ov = await api.analysis("compare_metrics", { runs: ids.join(",") }, o);
      if (destroyed) return;
      setChildren(
        runsLine,
        ...ov.runs.map((r, i) =>
          h(
            "span.run-chip",
            { style: `border-color:${RUN_COLORS[i]}`, "data-run-id": r.id },
            h("span.swatch", { style: `background:${RUN_COLORS[i]}` }),
            `${runLetter(i)} `,
            h("a", { href: buildHash(["runs", r.id]) }, r.name || r.id),
            ` ${r.optimizer} lr ${r.lr}${r.momentum ? ` m ${r.momentum}` : ""} seed ${r.seed}`,
          ),
        ),
      );
      const charts = h("div.chart-row");
      setChildren(metrics.body, charts);
      lines.render(
        charts,
        { series: overlaySeries(ov, "loss") },
        { yLabel: "loss", testid: "overlay-loss", ...SMALL },
      );
      lines.render(
        charts,
        { series: overlaySeries(ov, "accuracy") },
        { yLabel: "accuracy", testid: "overlay-accuracy", ...SMALL },
      );
      if (ov.epochs.length) {
        const ser = overlaySeries(ov, "val_accuracy", "epochs").map((s) => ({ ...s, kind: "dots" }));
        lines.render(
          charts,
          { series: ser },
          { xLabel: "epoch", yLabel: "validation accuracy", testid: "overlay-val", ...SMALL },
        );
      }
      metrics.el.dataset.state = "ready";
    } catch (e) {
      fail(metrics, e);
    }
  }

  const [A, B] = ids;
  let tensorsA = [];
  let stepsA = [];
  let stepsB = [];

  async function loadDiffControls() {
    setChildren(diff.body, spinner("Loading…"));
    try {
      const [ta, tb, sa, sb] = await Promise.all([
        api.tensors(A, o),
        api.tensors(B, o),
        api.steps(A, o),
        api.steps(B, o),
      ]);
      if (destroyed) return;
      tensorsA = ta.tensors;
      stepsA = sa.steps;
      stepsB = sb.steps;
      const names = commonTensors(ta.tensors, tb.tensors);
      if (!names.length) {
        diff.el.dataset.state = "empty";
        setChildren(diff.body, h("p.empty", {}, "These runs share no tensor of the same shape."));
        return;
      }
      if (!names.includes(state.tensor)) state.tensor = names[0];
      if (!stepsA.includes(state.sa)) state.sa = stepsA[stepsA.length - 1];
      if (!stepsB.includes(state.sb)) state.sb = stepsB[stepsB.length - 1];
      sync();
      await drawDiff(names);
    } catch (e) {
      fail(diff, e);
    }
  }

  let hm = null;
  async function drawDiff(names) {
    const controls = h(
      "div.controls",
      {},
      select(
        "Tensor",
        "compare-tensor",
        names,
        state.tensor,
        (v) => ((state.tensor = v), sync(), drawDiff(names)),
      ),
      select(
        "Step of A",
        "compare-step-a",
        stepsA,
        state.sa,
        (v) => ((state.sa = Number(v)), sync(), drawDiff(names), redrawActivations()),
      ),
      select(
        "Step of B",
        "compare-step-b",
        stepsB,
        state.sb,
        (v) => ((state.sb = Number(v)), sync(), drawDiff(names), redrawActivations()),
      ),
    );
    const out = h("div.heatmap-wrap");
    setChildren(diff.body, controls, out);
    diff.el.dataset.state = "loading";
    out.append(spinner());
    try {
      const d = await api.analysis(
        "compare_diff",
        { name: state.tensor, a: `${A}:${state.sa}`, b: `${B}:${state.sb}` },
        o,
      );
      if (destroyed) return;
      hm?.destroy();
      setChildren(out);
      const values = Float32Array.from(d.data, (v) => (v === null ? NaN : v));
      hm = heatmap.render(
        out,
        { values, shape: d.shape },
        {
          testid: "heatmap-compare",
          label: `${state.tensor}: run B at step ${state.sb} minus run A at step ${state.sa}`,
          onHover: (i, at) =>
            i === null
              ? hideTooltip()
              : showTooltip(at.pageX, at.pageY, [`${state.tensor} [${i}]`, `B − A = ${fmtExact(values[i])}`]),
        },
      );
      hm.canvas.dataset.a = `${A}:${state.sa}`;
      hm.canvas.dataset.b = `${B}:${state.sb}`;
      legend.render(
        out,
        { domain: hm.handle.domain },
        { label: "B − A: red = lower in B, white = equal, blue = higher in B" },
      );
      const s = d.stats;
      out.append(
        h(
          "p.small-text",
          { "data-testid": "compare-diff-stats" },
          `${s.count} elements: ${s.increased} higher in B, ${s.decreased} lower, ${s.unchanged} equal; ` +
            `mean ${fmtNum(s.mean)}, mean |Δ| ${fmtNum(s.mean_abs)}, L2 ${fmtNum(s.l2)}`,
        ),
      );
      diff.el.dataset.state = "ready";
    } catch (e) {
      fail(diff, e);
    }
  }

  async function loadActivations() {
    setChildren(acts.body, spinner("Loading…"));
    try {
      const ta = tensorsA.length ? tensorsA : (await api.tensors(A, o)).tensors;
      const layers = convLayers(ta);
      if (!layers.length) {
        acts.el.dataset.state = "empty";
        setChildren(acts.body, h("p.empty", {}, "Run A's model has no conv layers."));
        return;
      }
      if (!layers.includes(state.layer)) state.layer = layers[0];
      sync();
      actLayers = layers;
      await drawActivations(layers);
    } catch (e) {
      fail(acts, e);
    }
  }

  const actCharts = [];
  // The activations follow the steps chosen for the difference (both sections compare the same two moments).
  let actLayers = null;
  const redrawActivations = () => actLayers && drawActivations(actLayers);

  async function drawActivations(layers) {
    const controls = h(
      "div.controls",
      {},
      select(
        "Layer",
        "compare-layer",
        layers,
        state.layer,
        (v) => ((state.layer = v), sync(), drawActivations(layers)),
      ),
    );
    const out = h("div.chart-row");
    setChildren(acts.body, controls, out);
    acts.el.dataset.state = "loading";
    out.append(spinner());
    try {
      const sa = state.sa ?? stepsA[stepsA.length - 1];
      const sb = state.sb ?? stepsB[stepsB.length - 1];
      const r = await api.analysis(
        "compare_activations",
        { a: `${A}:${sa}`, b: `${B}:${sb}`, layer: state.layer, per_label: 20 },
        o,
      );
      if (destroyed) return;
      while (actCharts.length) actCharts.pop().destroy();
      setChildren(out);
      const mats = [
        ["activation-a", `run A, step ${sa}`, r.a.activation],
        ["activation-b", `run B, step ${sb}`, r.b.activation],
      ];
      if (r.difference) mats.push(["activation-compare-diff", "B − A", r.difference]);
      for (const [testid, title, m] of mats) {
        const values = Float32Array.from(m.flat(), (v) => (v === null ? NaN : v));
        const box = h(
          "figure.matrix",
          {},
          h("figcaption", {}, `${title} (rows: filters, columns: labels 0–${m[0].length - 1})`),
        );
        out.append(box);
        const c = heatmap.render(
          box,
          { values, shape: [m.length, m[0].length] },
          { testid, label: `${state.layer} activations, ${title}`, layout: { maxCell: 14 } },
        );
        legend.render(box, { domain: c.handle.domain }, { width: 220 });
        actCharts.push(c);
      }
      if (r.note) out.append(h("p.small-text", {}, r.note));
      acts.el.dataset.state = "ready";
    } catch (e) {
      fail(acts, e);
    }
  }

  clearHeatmaps();
  loadMetrics();
  loadDiffControls().then(loadActivations);
  return {
    destroy() {
      destroyed = true;
      ctl.abort();
      hideTooltip();
      hm?.destroy();
      while (actCharts.length) actCharts.pop().destroy();
    },
  };
}
