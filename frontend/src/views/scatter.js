// Initial value vs change: x = a parameter's value at `from`, y = its change to `to`. Shows
// Pearson r and the sign-consistency fractions the paper observed (positive weights grew,
// negative ones shrank).

import { h, setChildren, spinner, errorBanner, showTooltip, hideTooltip } from "../ui.js";
import { fmtNum, fmtExact, fmtPct } from "../format.js";
import { buildHash, intParam, replaceParams } from "../state.js";
import { metricsArrays } from "../events.js";
import { chartFigure, fileStem } from "../export.js";
import * as scatterChart from "../charts/scatter.js";
import * as timeline from "../charts/timeline.js";
import { snapStep } from "../charts/timeline.js";
import { bootstrapRunView, defaultTensor, settleSteps } from "../runview.js";
import { createTensorPicker } from "../tensortree.js";

/** Points mode when every element is in the sample, density otherwise (unless chosen). */
export function chooseMode(requested, result) {
  if (requested === "points" || requested === "density") return requested;
  return result.histogram && result.n > (result.x?.length ?? 0) ? "density" : "points";
}

export function mount(root, { api, routeParams, params }) {
  const id = routeParams.id;
  const ctl = new AbortController();
  let destroyed = false;
  let tensors = [];
  let steps = [];
  let run = null;
  let result = null;
  let token = 0;
  let tl = null;
  let picker = null;
  let metrics = null;
  const st = {
    tensor: params.tensor ?? null,
    from: intParam(params, "from", null),
    to: intParam(params, "to", null),
    mode: ["points", "density"].includes(params.mode) ? params.mode : "auto",
  };

  root.setAttribute("data-testid", "scatter-view");
  root.dataset.state = "loading";
  const banner = h("div");
  const head = h("div.page-head");
  const controls = h("div.controls");
  const timelineBox = h("div.timeline-box");
  const body = h("div.scatter-body");
  setChildren(root, head, banner, controls, timelineBox, body);
  body.append(spinner("Loading…"));

  function syncUrl() {
    replaceParams(["runs", id, "scatter"], {
      tensor: st.tensor,
      from: st.from,
      to: st.to,
      mode: st.mode === "auto" ? null : st.mode,
    });
    const ex = head.querySelector("a[data-link=explore]");
    if (ex)
      ex.href = buildHash(["runs", id, "explore"], {
        tensor: st.tensor,
        from: st.from,
        to: st.to,
        mode: "diff",
      });
  }

  function renderControls() {
    if (!picker)
      picker = createTensorPicker({
        tensors,
        selected: st.tensor,
        onSelect: (name) => ((st.tensor = name), load()),
      });
    else picker.setSelected(st.tensor);
    const stepInput = (key, testid, label) =>
      h(
        "label.inline",
        {},
        label,
        h("input", {
          type: "number",
          step: 1,
          value: st[key],
          "data-testid": testid,
          onchange: (e) => {
            st[key] = snapStep(steps, Number(e.target.value));
            if (st.from > st.to) [st.from, st.to] = [st.to, st.from];
            tl?.setSelection(st.from, st.to);
            renderControls();
            load();
          },
        }),
      );
    const modeSel = h(
      "select",
      {
        "data-testid": "scatter-mode",
        "aria-label": "Drawing",
        onchange: (e) => ((st.mode = e.target.value), syncUrl(), draw()),
      },
      [
        ["auto", "auto"],
        ["points", "points (sample)"],
        ["density", "density (all elements)"],
      ].map(([v, l]) => h("option", { value: v, selected: v === st.mode }, l)),
    );
    modeSel.value = st.mode;
    setChildren(
      controls,
      h("span.inline", {}, "Tensor"),
      picker.el,
      stepInput("from", "from-input", "from"),
      stepInput("to", "to-input", "to"),
      h("label.inline", {}, "Draw ", modeSel),
    );
  }

  async function load() {
    const my = ++token;
    syncUrl();
    root.dataset.state = "loading";
    setChildren(body, spinner("Computing…"));
    try {
      const r = await api.scatter(
        id,
        st.tensor,
        { from: st.from, to: st.to, maxPoints: 20000 },
        { signal: ctl.signal },
      );
      if (my !== token || destroyed) return;
      result = r;
      draw();
      root.dataset.state = "ready";
    } catch (e) {
      if (my !== token || destroyed || e.name === "AbortError") return;
      root.dataset.state = "error";
      setChildren(body, errorBanner(e, { onRetry: load }));
    }
  }

  function draw() {
    if (!result) return;
    const r = result;
    const mode = chooseMode(st.mode, r);
    const fig = chartFigure({
      title: `${r.name ?? st.tensor}: value at step ${r.from ?? st.from} vs change to step ${r.to ?? st.to}`,
      chart: "scatter",
      exportSpec: {
        name: () => fileStem(run?.name ?? id, st.tensor, `scatter_${st.from}-${st.to}`),
        csv: () =>
          mode === "density" && r.histogram
            ? {
                columns: ["x0", "x1", "y0", "y1", "count"],
                rows: scatterChart
                  .histogramCells(r.histogram)
                  .cells.map((c) => [c.x0, c.x1, c.y0, c.y1, c.count]),
              }
            : {
                columns: ["index", "initial", "change"],
                rows: r.x.map((x, i) => [r.sample_indices?.[i] ?? i, x, r.y[i]]),
              },
        npy: () => {
          const v = new Float32Array(r.x.length * 2);
          r.x.forEach((x, i) => {
            v[2 * i] = x;
            v[2 * i + 1] = r.y[i];
          });
          return { values: v, shape: [r.x.length, 2] };
        },
        onError: (e) => setChildren(banner, errorBanner(e)),
      },
    });
    scatterChart.render(fig.plot, r, {
      mode,
      radius: r.x.length <= 5000 ? 2.5 : 1.6,
      width: 760,
      height: 500,
      onHover: (p, ev) => {
        if (!p) return hideTooltip();
        showTooltip(ev.pageX, ev.pageY, [
          `element ${p.index}`,
          `initial: ${fmtExact(p.x)}`,
          `change: ${fmtExact(p.y)}`,
        ]);
      },
    });
    fig.caption.textContent =
      mode === "density"
        ? `2-D histogram of all ${r.n?.toLocaleString() ?? ""} elements (darker = more).`
        : `${r.x.length.toLocaleString()} of ${r.n?.toLocaleString() ?? r.x.length} elements${r.x.length < r.n ? " (uniform sample)" : ""}; blue = increased, red = decreased.`;
    const stat = (k, v, key, hint) =>
      h(
        "div.stat",
        { "data-key": key },
        h("span.k", {}, k),
        h("span.v", {}, v),
        hint ? h("span.hint", {}, hint) : null,
      );
    const stats = h(
      "div.stats.scatter-stats",
      {
        "data-testid": "scatter-stats",
        "data-r": r.pearson_r,
        "data-pos-increased": r.pos_increased_fraction,
        "data-neg-decreased": r.neg_decreased_fraction,
      },
      stat("Pearson r (initial, change)", fmtNum(r.pearson_r, 3), "pearson_r"),
      stat(
        "positive initial values that increased",
        fmtPct(r.pos_increased_fraction),
        "pos_increased_fraction",
        "above 50 % = positive weights tended to grow",
      ),
      stat(
        "negative initial values that decreased",
        fmtPct(r.neg_decreased_fraction),
        "neg_decreased_fraction",
        "above 50 % = negative weights tended to shrink",
      ),
      stat("elements", r.n?.toLocaleString() ?? "—", "n"),
    );
    setChildren(body, h("div.scatter-layout", {}, fig.figure, stats));
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
        height: 100,
        onChange: (a, b) => ((st.from = a), (st.to = b), renderControls(), load()),
      },
    );
  }

  bootstrapRunView({
    root,
    api,
    id,
    signal: ctl.signal,
    head,
    body,
    banner,
    withMetrics: true,
    alive: () => !destroyed,
    headSpec: { title: "Initial value vs change", links: [["explore", "Parameter explorer"]] },
    ready: (d) => {
      ({ run, tensors, steps, metrics } = d);
      if (!tensors.some((x) => x.name === st.tensor)) st.tensor = defaultTensor(tensors).name;
      ({ from: st.from, to: st.to } = settleSteps(steps, st.from, st.to));
      renderControls();
      renderTimeline();
      load();
    },
  });

  return {
    destroy() {
      destroyed = true;
      ctl.abort();
      hideTooltip();
      picker?.close();
    },
  };
}
