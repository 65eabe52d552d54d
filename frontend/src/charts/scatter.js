// Initial value (x) vs change (y) on canvas: a point cloud for samples, or a 2-D histogram
// (density) for large tensors. Axes and zero lines are an SVG overlay.

import * as d3 from "d3";
import { RED, BLUE, NAN_COLOR, density } from "../colors.js";
import { fmtNum } from "../format.js";

export const defaults = {
  width: 640,
  height: 460,
  margin: { top: 14, right: 18, bottom: 42, left: 64 },
  mode: "points", // "points" | "density"
  radius: 1.6,
  alpha: 0.55,
  onHover: null, // (point | null, event) => void; point = {i, index, x, y}
  testid: "scatter",
};

/** Orient a histogram's counts as counts[xi][yi] whatever way the server sent them. */
export function histogramCells(hist) {
  const nx = hist.x_edges.length - 1;
  const ny = hist.y_edges.length - 1;
  const c = hist.counts;
  const xMajor = c.length === nx && (c[0]?.length ?? 0) === ny;
  const out = [];
  let max = 0;
  for (let i = 0; i < nx; i++) {
    for (let j = 0; j < ny; j++) {
      const v = xMajor ? c[i][j] : c[j]?.[i];
      if (v > 0)
        out.push({
          x0: hist.x_edges[i],
          x1: hist.x_edges[i + 1],
          y0: hist.y_edges[j],
          y1: hist.y_edges[j + 1],
          count: v,
        });
      if (v > max) max = v;
    }
  }
  return { cells: out, max };
}

/**
 * @param {{x: number[], y: number[], sample_indices?: number[], histogram?: {x_edges: number[], y_edges: number[], counts: number[][]}}} data
 */
export function render(container, data, options = {}) {
  const o = { ...defaults, ...options };
  const m = o.margin;
  const hist = data.histogram;
  const useDensity = o.mode === "density" && hist;
  let xDomain;
  let yDomain;
  if (hist && hist.x_edges?.length > 1) {
    xDomain = [hist.x_edges[0], hist.x_edges[hist.x_edges.length - 1]];
    yDomain = [hist.y_edges[0], hist.y_edges[hist.y_edges.length - 1]];
  } else {
    xDomain = d3.extent(data.x);
    yDomain = d3.extent(data.y);
  }
  if (!(xDomain[0] < xDomain[1])) xDomain = [(xDomain[0] ?? 0) - 1, (xDomain[1] ?? 0) + 1];
  if (!(yDomain[0] < yDomain[1])) yDomain = [(yDomain[0] ?? 0) - 1, (yDomain[1] ?? 0) + 1];
  const x = d3.scaleLinear(xDomain, [m.left, o.width - m.right]);
  const y = d3.scaleLinear(yDomain, [o.height - m.bottom, m.top]);

  const wrap = document.createElement("div");
  wrap.className = "plot-stack";
  wrap.style.width = `${o.width}px`;
  wrap.style.height = `${o.height}px`;
  const canvas = document.createElement("canvas");
  canvas.width = o.width;
  canvas.height = o.height;
  canvas.setAttribute("data-testid", o.testid);
  canvas.dataset.mode = useDensity ? "density" : "points";
  canvas.dataset.n = String(useDensity ? d3.sum(histogramCells(hist).cells, (c) => c.count) : data.x.length);
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", "initial value versus change");
  const ctx = canvas.getContext?.("2d");
  if (ctx) {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, o.width, o.height);
    if (useDensity) {
      const { cells, max } = histogramCells(hist);
      const col = density(max);
      for (const c of cells) {
        const [r, g, b] = col(c.count);
        ctx.fillStyle = `rgb(${r},${g},${b})`;
        const px0 = Math.floor(x(c.x0));
        const py0 = Math.floor(y(c.y1));
        ctx.fillRect(px0, py0, Math.ceil(x(c.x1)) - px0, Math.ceil(y(c.y0)) - py0);
      }
    } else {
      ctx.globalAlpha = o.alpha;
      const colorOf = (v) => `rgb(${(v > 0 ? BLUE : v < 0 ? RED : NAN_COLOR).join(",")})`;
      for (let i = 0; i < data.x.length; i++) {
        ctx.fillStyle = colorOf(data.y[i]);
        ctx.beginPath();
        ctx.arc(x(data.x[i]), y(data.y[i]), o.radius, 0, 2 * Math.PI);
        ctx.fill();
      }
      ctx.globalAlpha = 1;
    }
  }
  wrap.append(canvas);

  const svg = d3
    .create("svg")
    .attr("width", o.width)
    .attr("height", o.height)
    .attr("viewBox", `0 0 ${o.width} ${o.height}`)
    .attr("font-family", "system-ui, sans-serif")
    .attr("font-size", 11)
    .attr("class", "overlay");
  svg
    .append("g")
    .attr("transform", `translate(0,${o.height - m.bottom})`)
    .call(
      d3
        .axisBottom(x)
        .ticks(8)
        .tickFormat((v) => fmtNum(v, 3)),
    )
    .call((g) =>
      g
        .append("text")
        .attr("x", o.width - m.right)
        .attr("y", 34)
        .attr("fill", "#374151")
        .attr("text-anchor", "end")
        .text("initial value (at from)"),
    );
  svg
    .append("g")
    .attr("transform", `translate(${m.left},0)`)
    .call(
      d3
        .axisLeft(y)
        .ticks(8)
        .tickFormat((v) => fmtNum(v, 3)),
    )
    .call((g) =>
      g
        .append("text")
        .attr("transform", "rotate(-90)")
        .attr("x", -m.top)
        .attr("y", -50)
        .attr("fill", "#374151")
        .attr("text-anchor", "end")
        .text("change (to − from)"),
    );
  const zero = svg.append("g").attr("stroke", "#6b7280").attr("stroke-dasharray", "4,3");
  if (xDomain[0] < 0 && xDomain[1] > 0)
    zero
      .append("line")
      .attr("x1", x(0))
      .attr("x2", x(0))
      .attr("y1", m.top)
      .attr("y2", o.height - m.bottom);
  if (yDomain[0] < 0 && yDomain[1] > 0)
    zero
      .append("line")
      .attr("y1", y(0))
      .attr("y2", y(0))
      .attr("x1", m.left)
      .attr("x2", o.width - m.right);
  wrap.append(svg.node());

  if (!useDensity && data.x.length && o.onHover) {
    const delaunay = d3.Delaunay.from(
      data.x,
      (v) => x(v),
      (_, i) => y(data.y[i]),
    );
    wrap.addEventListener("mousemove", (ev) => {
      const r = wrap.getBoundingClientRect();
      const mx = ev.clientX - r.left;
      const my = ev.clientY - r.top;
      const i = delaunay.find(mx, my);
      const dx = x(data.x[i]) - mx;
      const dy = y(data.y[i]) - my;
      if (dx * dx + dy * dy > 100) return o.onHover(null, ev);
      o.onHover({ i, index: data.sample_indices?.[i] ?? i, x: data.x[i], y: data.y[i] }, ev);
    });
    wrap.addEventListener("mouseleave", (ev) => o.onHover(null, ev));
  }

  container.append(wrap);
  return { node: wrap, canvas, svg: svg.node(), x, y };
}
