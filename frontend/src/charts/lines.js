// Line chart (SVG) for training curves: per-step series as lines, per-epoch series as dots.

import * as d3 from "d3";
import { fmtNum } from "../format.js";

export const defaults = {
  width: 560,
  height: 240,
  margin: { top: 28, right: 16, bottom: 34, left: 52 },
  xLabel: "step",
  yLabel: "",
  xDomain: null,
  yDomain: null,
  testid: "line-chart",
};

/**
 * @param {{series: {name: string, color: string, kind?: "line"|"dots", points: {x: number, y: number}[]}[]}} data
 */
export function render(container, data, options = {}) {
  const o = { ...defaults, ...options };
  const m = o.margin;
  const all = data.series
    .flatMap((s) => s.points)
    .filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const xDomain = o.xDomain ?? (all.length ? d3.extent(all, (p) => p.x) : [0, 1]);
  if (xDomain[0] === xDomain[1]) xDomain[1] = xDomain[0] + 1;
  let yDomain = o.yDomain ?? (all.length ? d3.extent(all, (p) => p.y) : [0, 1]);
  if (yDomain[0] === yDomain[1]) yDomain = [yDomain[0] - 0.5, yDomain[1] + 0.5];
  const x = d3.scaleLinear(xDomain, [m.left, o.width - m.right]);
  const y = d3.scaleLinear(yDomain, [o.height - m.bottom, m.top]).nice();

  const svg = d3
    .create("svg")
    .attr("width", o.width)
    .attr("height", o.height)
    .attr("viewBox", `0 0 ${o.width} ${o.height}`)
    .attr("font-family", "system-ui, sans-serif")
    .attr("font-size", 11)
    .attr("data-testid", o.testid)
    .attr("role", "img")
    .attr("aria-label", `${o.yLabel} by ${o.xLabel}`);
  svg
    .append("g")
    .attr("transform", `translate(0,${o.height - m.bottom})`)
    .call(d3.axisBottom(x).ticks(6).tickFormat(d3.format("~s")))
    .call((g) =>
      g
        .append("text")
        .attr("x", o.width - m.right)
        .attr("y", 28)
        .attr("fill", "#374151")
        .attr("text-anchor", "end")
        .text(o.xLabel),
    );
  svg
    .append("g")
    .attr("transform", `translate(${m.left},0)`)
    .call(
      d3
        .axisLeft(y)
        .ticks(5)
        .tickFormat((v) => fmtNum(v, 3)),
    )
    .call((g) =>
      g
        .append("text")
        .attr("x", -m.left + 4)
        .attr("y", 13)
        .attr("fill", "#374151")
        .attr("text-anchor", "start")
        .text(o.yLabel),
    );

  for (const s of data.series) {
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    if (s.kind === "dots") {
      svg
        .append("g")
        .attr("fill", s.color)
        .attr("data-series", s.name)
        .selectAll("circle")
        .data(pts)
        .join("circle")
        .attr("cx", (p) => x(p.x))
        .attr("cy", (p) => y(p.y))
        .attr("r", 3.5)
        .append("title")
        .text((p) => `${s.name} @ ${p.x}: ${fmtNum(p.y)}`);
    } else {
      svg
        .append("path")
        .attr("fill", "none")
        .attr("stroke", s.color)
        .attr("stroke-width", 1.5)
        .attr("data-series", s.name)
        .attr("data-points", pts.length)
        .attr(
          "d",
          d3.line(
            (p) => x(p.x),
            (p) => y(p.y),
          )(pts) ?? "",
        );
    }
  }
  // legend
  const lg = svg.append("g").attr("transform", `translate(${m.left + 60},4)`);
  data.series.forEach((s, i) => {
    const g = lg.append("g").attr("transform", `translate(${i * 120},0)`);
    g.append("rect").attr("width", 10).attr("height", 3).attr("y", 4).attr("fill", s.color);
    g.append("text").attr("x", 14).attr("y", 9).attr("fill", "#374151").text(s.name);
  });
  container.append(svg.node());
  return { svg: svg.node(), x, y };
}
