// Timeline: the loss curve with a two-handle brush choosing the from/to steps (snapped to
// captured steps), plus a cursor line for playback.

import * as d3 from "d3";
import { SERIES } from "../colors.js";
import { fmtNum } from "../format.js";

export const defaults = {
  width: 880,
  height: 120,
  margin: { top: 10, right: 16, bottom: 28, left: 52 },
  from: 0,
  to: null,
  onChange: null, // (from, to) => void, called after a brush gesture ends
  testid: "timeline",
};

/** Nearest value of the sorted array `steps` to v. */
export function snapStep(steps, v) {
  if (!steps.length) return Math.round(v);
  const i = d3.bisectLeft(steps, v);
  if (i <= 0) return steps[0];
  if (i >= steps.length) return steps[steps.length - 1];
  return v - steps[i - 1] <= steps[i] - v ? steps[i - 1] : steps[i];
}

/**
 * @param {{points: {x: number, y: number}[], steps: number[]}} data loss per step and captured steps
 */
export function render(container, data, options = {}) {
  const o = { ...defaults, ...options };
  const m = o.margin;
  const steps = data.steps.slice().sort((a, b) => a - b);
  const maxStep = steps.length ? steps[steps.length - 1] : (d3.max(data.points, (p) => p.x) ?? 1);
  const x = d3.scaleLinear(
    [steps[0] ?? 0, Math.max(maxStep, (steps[0] ?? 0) + 1)],
    [m.left, o.width - m.right],
  );
  const pts = data.points.filter((p) => Number.isFinite(p.y));
  const y = d3
    .scaleLinear(pts.length ? d3.extent(pts, (p) => p.y) : [0, 1], [o.height - m.bottom, m.top])
    .nice();

  const svg = d3
    .create("svg")
    .attr("width", o.width)
    .attr("height", o.height)
    .attr("viewBox", `0 0 ${o.width} ${o.height}`)
    .attr("font-family", "system-ui, sans-serif")
    .attr("font-size", 11)
    .attr("data-testid", o.testid)
    .attr("aria-label", "loss over steps; drag to choose the from and to steps");
  svg
    .append("g")
    .attr("transform", `translate(0,${o.height - m.bottom})`)
    .call(d3.axisBottom(x).ticks(8).tickFormat(d3.format("~s")))
    .call((g) =>
      g
        .append("text")
        .attr("x", o.width - m.right)
        .attr("y", 26)
        .attr("fill", "#374151")
        .attr("text-anchor", "end")
        .text("step"),
    );
  svg
    .append("g")
    .attr("transform", `translate(${m.left},0)`)
    .call(
      d3
        .axisLeft(y)
        .ticks(3)
        .tickFormat((v) => fmtNum(v, 3)),
    )
    .call((g) =>
      g
        .append("text")
        .attr("x", -m.left + 4)
        .attr("y", m.top + 2)
        .attr("fill", "#374151")
        .attr("text-anchor", "start")
        .text("loss"),
    );
  svg
    .append("path")
    .attr("fill", "none")
    .attr("stroke", SERIES.loss)
    .attr("stroke-width", 1.2)
    .attr(
      "d",
      d3.line(
        (p) => x(p.x),
        (p) => y(p.y),
      )(pts) ?? "",
    );

  const cursor = svg
    .append("line")
    .attr("y1", m.top)
    .attr("y2", o.height - m.bottom)
    .attr("stroke", "#111827")
    .attr("stroke-dasharray", "3,2")
    .attr("visibility", "hidden");

  let from = o.from;
  let to = o.to ?? maxStep;
  const brush = d3
    .brushX()
    .extent([
      [m.left, m.top],
      [o.width - m.right, o.height - m.bottom],
    ])
    .on("end", (ev) => {
      if (!ev.sourceEvent) return; // programmatic move
      if (!ev.selection) {
        gb.call(brush.move, [x(from), x(to)]);
        return;
      }
      const a = snapStep(steps, x.invert(ev.selection[0]));
      const b = snapStep(steps, x.invert(ev.selection[1]));
      from = a;
      to = b;
      gb.call(brush.move, [x(a), x(b) + (a === b ? 1 : 0)]);
      o.onChange?.(a, b);
    });
  const gb = svg.append("g").attr("class", "brush").call(brush);
  gb.selectAll(".selection").attr("fill", "#93c5fd").attr("fill-opacity", 0.25).attr("stroke", "#2563eb");
  gb.selectAll(".handle").attr("fill", "#2563eb").attr("fill-opacity", 0.6);
  gb.call(brush.move, [x(from), x(to) + (from === to ? 1 : 0)]);

  container.append(svg.node());
  return {
    svg: svg.node(),
    setSelection(a, b) {
      from = a;
      to = b;
      gb.call(brush.move, [x(a), x(b) + (a === b ? 1 : 0)]);
    },
    setCursor(step) {
      if (step === null || step === undefined) cursor.attr("visibility", "hidden");
      else cursor.attr("x1", x(step)).attr("x2", x(step)).attr("visibility", "visible");
    },
  };
}
