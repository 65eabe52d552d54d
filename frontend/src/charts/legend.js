// Legend for the diverging scale: gradient bar over [-m, m] with numeric ticks.

import { divergingStops } from "../colors.js";
import { fmtNum } from "../format.js";

const SVG = "http://www.w3.org/2000/svg";

export const defaults = { width: 320, height: 46, barHeight: 12, ticks: 5, label: "", marginX: 24 };

let uid = 0;

/** @param {{domain: number}} data m of the symmetric domain [-m, m] */
export function render(container, data, options = {}) {
  const o = { ...defaults, ...options };
  const m = data.domain;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", o.width);
  svg.setAttribute("height", o.height);
  svg.setAttribute("viewBox", `0 0 ${o.width} ${o.height}`);
  svg.setAttribute("data-testid", "legend");
  svg.setAttribute("data-domain", String(m));
  svg.setAttribute("role", "img");
  svg.setAttribute(
    "aria-label",
    `colour scale from ${fmtNum(-m)} (red, decrease) through 0 (white) to ${fmtNum(m)} (blue, increase)`,
  );
  svg.setAttribute("font-family", "system-ui, sans-serif");
  svg.setAttribute("font-size", "11");
  const id = `nl-grad-${++uid}`;
  const defs = document.createElementNS(SVG, "defs");
  const grad = document.createElementNS(SVG, "linearGradient");
  grad.setAttribute("id", id);
  for (const s of divergingStops()) {
    const stop = document.createElementNS(SVG, "stop");
    stop.setAttribute("offset", String(s.offset));
    stop.setAttribute("stop-color", s.color);
    grad.append(stop);
  }
  defs.append(grad);
  svg.append(defs);
  const x0 = o.marginX;
  const w = o.width - 2 * o.marginX;
  const top = o.label ? 14 : 4;
  if (o.label) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", String(x0));
    t.setAttribute("y", "10");
    t.setAttribute("fill", "#374151");
    t.textContent = o.label;
    svg.append(t);
  }
  const rect = document.createElementNS(SVG, "rect");
  rect.setAttribute("x", String(x0));
  rect.setAttribute("y", String(top));
  rect.setAttribute("width", String(w));
  rect.setAttribute("height", String(o.barHeight));
  rect.setAttribute("fill", `url(#${id})`);
  rect.setAttribute("stroke", "#9ca3af");
  svg.append(rect);
  for (let k = 0; k < o.ticks; k++) {
    const f = o.ticks === 1 ? 0.5 : k / (o.ticks - 1);
    const v = -m + 2 * m * f;
    const x = x0 + w * f;
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", String(x));
    line.setAttribute("x2", String(x));
    line.setAttribute("y1", String(top + o.barHeight));
    line.setAttribute("y2", String(top + o.barHeight + 4));
    line.setAttribute("stroke", "#374151");
    svg.append(line);
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", String(x));
    t.setAttribute("y", String(top + o.barHeight + 15));
    t.setAttribute("text-anchor", "middle");
    t.setAttribute("fill", "#374151");
    t.setAttribute("class", "tick");
    t.textContent = fmtNum(Math.abs(v) < 1e-15 * (m || 1) ? 0 : v, 3);
    svg.append(t);
  }
  container.append(svg);
  return { svg };
}
