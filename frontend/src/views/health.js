// Training health of one run: update-to-weight ratio as a tensors × steps grid on a log scale (is each layer
// learning, stalled or exploding), weight norms and sign flips over time, frozen and dead units, and the filters
// that moved most per window (each a link into the explorer). State: #/runs/ID/health?windows=8&top_k=5

import { h, setChildren, spinner, errorBanner, showTooltip, hideTooltip } from "../ui.js";
import { buildHash, intParam, replaceParams } from "../state.js";
import { RUN_COLORS, logSequential } from "../colors.js";
import { fmtNum, fmtPct } from "../format.js";
import { clearHeatmaps } from "../hooks.js";
import * as lines from "../charts/lines.js";
import * as stepgrid from "../charts/stepgrid.js";

const SVG = "http://www.w3.org/2000/svg";

/** Smallest and largest positive finite value of a matrix (the log scale's domain); [1e-6, 1] when there is none. */
export function positiveExtent(rows) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of rows)
    for (const v of row) if (v > 0 && Number.isFinite(v)) ((lo = Math.min(lo, v)), (hi = Math.max(hi, v)));
  if (!(hi > 0)) return [1e-6, 1];
  return lo === hi ? [lo / 10, hi * 10] : [lo, hi];
}

/** Rows of the grid: the tensors with at least one update (weights first, as the server lists them). */
export function ratioRows(health) {
  return health.tensors
    .map((t, i) => ({ name: t.name, values: health.update_ratio[i] }))
    .filter((r) => r.values.some((v) => v !== null));
}

/**
 * At most `maxCols` columns: consecutive steps binned together, each bin showing its largest ratio (a spike is
 * never averaged away). Returns {values, steps: first step of each bin, width: steps per bin}.
 */
export function binColumns(values, steps, maxCols) {
  const width = Math.max(1, Math.ceil(steps.length / Math.max(1, maxCols)));
  if (width === 1) return { values, steps, width };
  const outSteps = [];
  for (let c = 0; c < steps.length; c += width) outSteps.push(steps[c]);
  const out = values.map((row) =>
    outSteps.map((_, b) => {
      let m = null;
      for (let c = b * width; c < Math.min(row.length, (b + 1) * width); c++)
        if (row[c] !== null && (m === null || row[c] > m)) m = row[c];
      return m;
    }),
  );
  return { values: out, steps: outSteps, width };
}

/** Line series of one per-tensor metric, weights only (biases and norms' scales differ by orders). */
export function tensorSeries(health, key, filter = (t) => t.name.endsWith(".weight")) {
  const out = [];
  health.tensors.forEach((t, i) => {
    if (!filter(t)) return;
    out.push({
      name: t.name,
      color: RUN_COLORS[out.length % RUN_COLORS.length],
      kind: "line",
      points: health.steps.map((s, j) => ({ x: s, y: health[key][i][j] })).filter((p) => p.y !== null),
    });
  });
  return out;
}

/** Explorer link for one weight tensor between two steps. */
export function explorerLink(runId, tensor, from, to) {
  return buildHash(["runs", runId, "explore"], { tensor, from, to });
}

function logLegend(scale, label) {
  const w = 320;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", 40);
  svg.setAttribute("data-testid", "health-legend");
  svg.setAttribute("data-domain", scale.domain.join(","));
  const id = `nl-log-${Math.random().toString(36).slice(2)}`;
  svg.innerHTML =
    `<defs><linearGradient id="${id}">` +
    scale
      .stops()
      .map((s) => `<stop offset="${s.offset}" stop-color="${s.color}"/>`)
      .join("") +
    `</linearGradient></defs><text x="8" y="11" font-size="11" fill="#374151">${label}</text>` +
    `<rect x="8" y="15" width="${w - 16}" height="10" fill="url(#${id})"/>` +
    `<text x="8" y="37" font-size="11" fill="#374151">${fmtNum(scale.domain[0], 2)}</text>` +
    `<text x="${w - 8}" y="37" font-size="11" fill="#374151" text-anchor="end">${fmtNum(scale.domain[1], 2)}</text>`;
  return svg;
}

function section(testid, title) {
  const body = h("div.section-body");
  const el = h("section.panel", { "data-testid": testid, "data-state": "loading" }, h("h2", {}, title), body);
  return { el, body };
}

function table(testid, head, rows) {
  return h(
    "table.table.compact",
    { "data-testid": testid },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        head.map((t) => h("th", { scope: "col" }, t)),
      ),
    ),
    h("tbody", {}, rows),
  );
}

export function mount(root, { api, params, routeParams }) {
  const id = routeParams.id;
  const ctl = new AbortController();
  const o = { signal: ctl.signal };
  const windows = intParam(params, "windows", 8);
  const topK = intParam(params, "top_k", 5);
  replaceParams(["runs", id, "health"], { windows, top_k: topK });
  let destroyed = false;
  let grid = null;

  const ratio = section("health-ratio", "Update-to-weight ratio ‖w(t) − w(t−1)‖ / ‖w(t−1)‖ (log scale)");
  const curves = section("health-curves", "Weight norm and sign flips since step 0");
  const units = section("health-units", "Frozen and dead units");
  const moved = section("health-top", "Filters that moved most, per window");
  const note = h("p.banner.info", { "data-testid": "health-note", role: "note" });
  setChildren(
    root,
    h(
      "div.page-head",
      {},
      h("h1", {}, "Training health"),
      h(
        "div.actions",
        {},
        h("a.button", { href: buildHash(["runs", id]) }, "Run"),
        " ",
        h("a.button", { href: buildHash(["runs", id, "explore"]) }, "Explorer"),
      ),
    ),
    note,
    ratio.el,
    curves.el,
    units.el,
    moved.el,
  );
  for (const s of [ratio, curves, units, moved]) s.body.append(spinner());

  const fail = (secs, e) => {
    if (destroyed || e?.name === "AbortError") return;
    for (const s of secs) {
      s.el.dataset.state = "error";
      setChildren(s.body, errorBanner(e));
    }
  };

  function drawRatio(hd) {
    const rows = ratioRows(hd);
    const [lo, hi] = positiveExtent(rows.map((r) => r.values));
    const scale = logSequential(lo, hi);
    setChildren(ratio.body);
    // One pixel per step at least: longer runs bin their steps (the largest ratio of each bin is drawn).
    const bins = binColumns(
      rows.map((r) => r.values),
      hd.steps,
      stepgrid.defaults.maxWidth - stepgrid.defaults.left,
    );
    grid = stepgrid.render(
      ratio.body,
      { values: bins.values, rowLabels: rows.map((r) => r.name) },
      {
        testid: "health-ratio-grid",
        label: "update-to-weight ratio per tensor and step",
        scale,
        onHover: (c, at) =>
          c === null
            ? hideTooltip()
            : showTooltip(at.pageX, at.pageY, [
                bins.width === 1
                  ? `${rows[c.row].name}, step ${bins.steps[c.col]}`
                  : `${rows[c.row].name}, steps ${bins.steps[c.col]}… (largest of ${bins.width})`,
                `ratio ${c.value === null ? "—" : fmtNum(c.value, 4)}`,
              ]),
      },
    );
    grid.canvas.dataset.steps = JSON.stringify(bins.steps);
    grid.canvas.dataset.binWidth = String(bins.width);
    grid.canvas.dataset.rows = JSON.stringify(rows.map((r) => r.name));
    ratio.body.append(logLegend(scale, "ratio (grey: no update at the first step)"));
    ratio.el.dataset.state = "ready";
  }

  function drawCurves(hd) {
    const row = h("div.chart-row");
    setChildren(curves.body, row);
    lines.render(row, { series: tensorSeries(hd, "norm") }, { yLabel: "‖w‖", testid: "health-norms" });
    lines.render(
      row,
      { series: tensorSeries(hd, "sign_flip_fraction") },
      { yLabel: "signs ≠ step 0", testid: "health-flips" },
    );
    curves.el.dataset.state = "ready";
  }

  function drawUnits(hd, dead) {
    const frozenRows = hd.units.flatMap((u) =>
      u.frozen.map((f) =>
        h(
          "tr",
          { "data-testid": "frozen-row", "data-layer": u.layer, "data-unit": f.unit },
          h("td", {}, u.layer),
          h("td", {}, `${u.kind === "conv" ? "filter" : "neuron"} ${f.unit}`),
          h("td", {}, `unchanged since step ${f.since}`),
        ),
      ),
    );
    const deadRows = (dead?.layers ?? []).flatMap((l) =>
      l.dead.map((unit) =>
        h(
          "tr",
          { "data-testid": "dead-row", "data-layer": l.layer, "data-unit": unit },
          h("td", {}, l.layer),
          h("td", {}, `${l.kind === "conv" ? "filter" : "neuron"} ${unit}`),
          h("td", {}, `output 0 on all ${dead.evaluated} ${dead.split} inputs at step ${dead.step}`),
        ),
      ),
    );
    setChildren(
      units.body,
      h(
        "h3",
        {},
        `Frozen: parameters bit-identical over at least ${hd.min_frozen_updates} of the last updates`,
      ),
      frozenRows.length
        ? table("frozen-table", ["layer", "unit", ""], frozenRows)
        : h("p.small-text", { "data-testid": "frozen-none" }, "No frozen unit."),
      h("h3", {}, "Dead: post-activation output exactly 0 on the whole evaluation split"),
      dead === null
        ? h("p.small-text", {}, "Dead units could not be computed for this run.")
        : deadRows.length
          ? table("dead-table", ["layer", "unit", ""], deadRows)
          : h("p.small-text", { "data-testid": "dead-none" }, `No dead unit at step ${dead.step}.`),
    );
    units.el.dataset.state = "ready";
  }

  function drawMoved(hd) {
    const rows = [];
    for (const w of hd.top_moved) {
      for (const l of w.layers) {
        if (l.kind !== "conv") continue;
        rows.push(
          h(
            "tr",
            { "data-testid": "moved-row" },
            h("td", {}, `${w.from} → ${w.to}`),
            h("td", {}, l.layer),
            h(
              "td",
              {},
              l.units.map((u, k) => [
                h(
                  "a",
                  {
                    href: explorerLink(id, l.weight, w.from, w.to),
                    "data-testid": "moved-link",
                    title: `L2 of the change ${fmtNum(l.l2[k])}`,
                  },
                  `#${u}`,
                ),
                " ",
              ]),
            ),
          ),
        );
      }
    }
    setChildren(
      moved.body,
      rows.length
        ? table("moved-table", ["steps", "layer", "filters, most moved first"], rows)
        : h("p.small-text", {}, "No conv layer, or a single captured step."),
    );
    moved.el.dataset.state = "ready";
  }

  async function load() {
    try {
      const hd = await api.analysis("health", { run_id: id, windows, top_k: topK }, o);
      if (destroyed) return;
      note.textContent = `What an update means here: ${hd.updates.note}.`;
      note.dataset.scaledGradient = String(hd.updates.update_is_scaled_gradient);
      clearHeatmaps();
      drawRatio(hd);
      drawCurves(hd);
      drawMoved(hd);
      let dead = null;
      try {
        dead = await api.analysis("health_dead", { run_id: id }, o);
      } catch (e) {
        if (e?.name === "AbortError") return;
      }
      if (destroyed) return;
      drawUnits(hd, dead);
      const flips = hd.sign_flip_fraction.map((r) => r[r.length - 1]);
      note.title = `largest sign-flip fraction at the last step: ${fmtPct(Math.max(...flips.filter((v) => v !== null)))}`;
    } catch (e) {
      fail([ratio, curves, units, moved], e);
    }
  }

  load();
  return {
    destroy() {
      destroyed = true;
      ctl.abort();
      hideTooltip();
      grid?.destroy();
    },
  };
}
