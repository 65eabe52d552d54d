// Small multiples of per-label activations: one SVG bar chart per filter (x = label,
// y = normalized activation). Every bar is a <rect class="bar">.

import { NEUTRAL, ACCENT } from "../colors.js";
import { fmtNum } from "../format.js";

const SVG = "http://www.w3.org/2000/svg";

export const defaults = {
  chartWidth: 132,
  chartHeight: 92,
  margin: { top: 16, right: 4, bottom: 14, left: 4 },
  yDomains: null, // per filter [0, max]; null = each filter its own
  shared: false, // one y scale for all filters of this panel
  selected: null,
  onSelect: null, // (filterIndex) => void
  testid: "activation-panel",
  title: "",
};

/** How much a filter's activation varies across labels: std / mean (coefficient of variation). */
export function labelSpread(values) {
  const v = values.filter(Number.isFinite);
  if (!v.length) return NaN;
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  if (mean === 0) return 0;
  const varc = v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length;
  return Math.sqrt(varc) / Math.abs(mean);
}

/** Per-filter y maxima over several activation matrices (so compared panels share scales). */
export function filterMaxima(...matrices) {
  const F = Math.max(...matrices.map((m) => m.length));
  const out = [];
  for (let f = 0; f < F; f++) {
    let mx = 0;
    for (const m of matrices)
      for (const v of m[f] ?? []) if (Number.isFinite(v) && Math.abs(v) > mx) mx = Math.abs(v);
    out.push(mx);
  }
  return out;
}

function el(name, attrs) {
  const n = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  return n;
}

/**
 * @param {{labels: number[], activation: number[][]}} data activation[f][labelIndex]
 */
export function render(container, data, options = {}) {
  const o = { ...defaults, ...options };
  const { labels, activation } = data;
  const m = o.margin;
  const W = o.chartWidth;
  const H = o.chartHeight;
  const shared = o.shared ? Math.max(...filterMaxima(activation)) : null;
  const panel = document.createElement("div");
  panel.className = "bars-panel";
  panel.setAttribute("data-testid", o.testid);
  if (o.title) {
    const t = document.createElement("div");
    t.className = "panel-title";
    t.textContent = o.title;
    panel.append(t);
  }
  const grid = document.createElement("div");
  grid.className = "bars-grid";
  panel.append(grid);
  activation.forEach((vals, f) => {
    const max = shared ?? o.yDomains?.[f] ?? Math.max(0, ...vals.filter(Number.isFinite).map(Math.abs));
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "filter-chart" + (o.selected === f ? " selected" : "");
    btn.setAttribute("data-testid", "activation-filter");
    btn.setAttribute("data-filter", String(f));
    btn.setAttribute("aria-label", `filter ${f}: show its feature maps`);
    btn.setAttribute("aria-pressed", o.selected === f ? "true" : "false");
    if (o.onSelect) btn.addEventListener("click", () => o.onSelect(f));
    const svg = el("svg", {
      width: W,
      height: H,
      viewBox: `0 0 ${W} ${H}`,
      "font-family": "system-ui, sans-serif",
      "font-size": 9,
      "data-filter": f,
    });
    svg.append(el("rect", { x: 0, y: 0, width: W, height: H, fill: "#ffffff" }));
    const title = el("text", { x: 4, y: 11, fill: "#111827", "font-size": 10 });
    title.textContent = `f${f}  ·  spread ${fmtNum(labelSpread(vals), 2)}`;
    svg.append(title);
    const iw = W - m.left - m.right;
    const ih = H - m.top - m.bottom;
    const bw = iw / Math.max(1, labels.length);
    const best = vals.indexOf(Math.max(...vals.filter(Number.isFinite)));
    svg.append(
      el("line", { x1: m.left, x2: W - m.right, y1: m.top + ih, y2: m.top + ih, stroke: "#9ca3af" }),
    );
    labels.forEach((lab, j) => {
      const v = vals[j];
      const hgt = max > 0 && Number.isFinite(v) ? (Math.max(0, v) / max) * ih : 0;
      const r = el("rect", {
        class: "bar",
        x: (m.left + j * bw + 1).toFixed(2),
        y: (m.top + ih - hgt).toFixed(2),
        width: Math.max(1, bw - 2).toFixed(2),
        height: hgt.toFixed(2),
        fill: j === best ? ACCENT : NEUTRAL,
        "data-label": lab,
        "data-value": v,
      });
      const tt = el("title", {});
      tt.textContent = `filter ${f}, label ${lab}: ${fmtNum(v, 5)}`;
      r.append(tt);
      svg.append(r);
      const lt = el("text", {
        x: (m.left + j * bw + bw / 2).toFixed(2),
        y: H - 3,
        "text-anchor": "middle",
        fill: "#4b5563",
      });
      lt.textContent = String(lab);
      svg.append(lt);
    });
    btn.append(svg);
    grid.append(btn);
  });
  container.append(panel);
  return { node: panel };
}
