// @vitest-environment jsdom
import { describe, it, expect, beforeEach } from "vitest";
import * as d3 from "d3";
import * as bars from "../src/charts/bars.js";
import * as heatmap from "../src/charts/heatmap.js";
import * as legend from "../src/charts/legend.js";
import * as lines from "../src/charts/lines.js";
import * as timeline from "../src/charts/timeline.js";
import * as scatter from "../src/charts/scatter.js";
import { blockRepresentatives } from "../src/charts/heatmap.js";
import { matrixLayout } from "../src/charts/layout.js";
import { exportToolbar, composeSVG } from "../src/export.js";

// jsdom has no canvas; charts must still build their DOM and hooks.
HTMLCanvasElement.prototype.getContext = () => null;

const rand = d3.randomLcg(42);

beforeEach(() => {
  document.body.innerHTML = "";
  delete window.__netlapse;
});

describe("activation small multiples", () => {
  it("draws one chart per filter with 10 rect.bar each", () => {
    const F = 32;
    const activation = Array.from({ length: F }, () => Array.from({ length: 10 }, () => rand()));
    const div = document.createElement("div");
    bars.render(div, { labels: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], activation });
    const charts = div.querySelectorAll("[data-testid=activation-filter]");
    expect(charts).toHaveLength(F);
    for (const c of charts) expect(c.querySelectorAll("rect.bar")).toHaveLength(10);
    expect(div.querySelectorAll("[data-testid=activation-panel] rect.bar")).toHaveLength(320);
  });

  it("scales bars to each filter's maximum and highlights the top label", () => {
    const div = document.createElement("div");
    bars.render(div, { labels: [0, 1], activation: [[1, 2]] }, { chartHeight: 92 });
    const [a, b] = div.querySelectorAll("rect.bar");
    expect(Number(b.getAttribute("height"))).toBeCloseTo(92 - 16 - 14);
    expect(Number(a.getAttribute("height"))).toBeCloseTo((92 - 30) / 2);
    expect(b.getAttribute("fill")).not.toBe(a.getAttribute("fill"));
  });

  it("reports clicks on a filter", () => {
    const div = document.createElement("div");
    let got = null;
    bars.render(
      div,
      {
        labels: [0, 1],
        activation: [
          [1, 2],
          [3, 4],
        ],
      },
      { onSelect: (f) => (got = f) },
    );
    div.querySelectorAll("button")[1].click();
    expect(got).toBe(1);
  });
});

describe("heatmap", () => {
  it("exposes its layout, domain and a cellCenter hook", () => {
    const div = document.createElement("div");
    document.body.append(div);
    const values = Float32Array.from({ length: 288 }, (_, i) => (i % 3) - 1);
    const hm = heatmap.render(div, { values, shape: [32, 1, 3, 3] }, { testid: "heatmap-diff" });
    const c = div.querySelector("canvas[data-testid=heatmap-diff]");
    const layout = JSON.parse(c.dataset.layout);
    expect(layout).toMatchObject({ kind: "filters", cols: 8, inCols: 1, cell: 24 });
    expect(c.width).toBe(layout.width);
    expect(Number(c.dataset.domain)).toBe(1);
    const center = window.__netlapse.cellCenter(29, "heatmap-diff");
    // filter 3 → 4th tile of the first row; (y=0, x=2) inside the kernel
    expect(center.x).toBe(3 * (layout.tileW + layout.gap) + layout.pad + 2 * 24 + 12);
    expect(center.y).toBe(layout.pad + 12);
    expect(hm.indexAtPoint(center.px, center.py).index).toBe(29);
    expect(window.__netlapse.heatmaps["heatmap-diff"].colorOf(0)).toEqual([255, 255, 255]);
  });

  it("picks the largest |value| per block when downsampling", () => {
    const l = matrixLayout([2, 2000], { maxWidth: 1000 });
    const v = new Float32Array(4000);
    v[1] = -5;
    v[2000] = 3;
    const rep = blockRepresentatives(l, v);
    expect(l.blockCols).toBe(2);
    expect(l.blockRows).toBe(1);
    expect(rep[0]).toBe(1);
    expect(rep[l.drawCols]).toBe(2000);
  });
});

describe("svg charts", () => {
  it("legend shows symmetric numeric ticks around 0", () => {
    const div = document.createElement("div");
    legend.render(div, { domain: 0.5 });
    const ticks = [...div.querySelectorAll("text.tick")].map((t) => t.textContent);
    expect(ticks).toEqual(["-0.5", "-0.25", "0", "0.25", "0.5"]);
  });

  it("line chart draws each series", () => {
    const div = document.createElement("div");
    lines.render(div, {
      series: [
        {
          name: "loss",
          color: "red",
          points: [
            { x: 1, y: 2 },
            { x: 2, y: 1 },
          ],
        },
        { name: "val", color: "green", kind: "dots", points: [{ x: 2, y: 1.5 }] },
      ],
    });
    expect(div.querySelector("path[data-series=loss]").getAttribute("data-points")).toBe("2");
    expect(div.querySelectorAll("g[data-series=val] circle")).toHaveLength(1);
  });

  it("timeline renders a brush over the loss curve", () => {
    const div = document.createElement("div");
    const tl = timeline.render(
      div,
      {
        points: [
          { x: 1, y: 2 },
          { x: 5, y: 1 },
        ],
        steps: [0, 1, 2, 3, 4, 5],
      },
      { from: 0, to: 5 },
    );
    expect(div.querySelector("g.brush")).not.toBeNull();
    tl.setCursor(3);
    tl.setSelection(1, 4);
  });

  it("scatter builds canvas + axes in points and density modes", () => {
    const div = document.createElement("div");
    const data = {
      x: [0.1, -0.2],
      y: [0.05, -0.01],
      n: 2,
      histogram: {
        x_edges: [-1, 0, 1],
        y_edges: [-1, 0, 1],
        counts: [
          [1, 0],
          [0, 1],
        ],
      },
    };
    scatter.render(div, data, { mode: "points" });
    scatter.render(div, data, { mode: "density" });
    const canvases = div.querySelectorAll("canvas[data-testid=scatter]");
    expect([...canvases].map((c) => c.dataset.mode)).toEqual(["points", "density"]);
    expect(div.querySelectorAll("svg.overlay")).toHaveLength(2);
  });
});

describe("export toolbar", () => {
  it("offers PNG, SVG, CSV and NPY buttons", () => {
    const bar = exportToolbar({
      name: () => "x",
      root: () => document.body,
      csv: () => ({ columns: [], rows: [] }),
      npy: () => ({ values: [], shape: [0] }),
    });
    expect([...bar.querySelectorAll("button")].map((b) => b.dataset.testid)).toEqual([
      "export-png",
      "export-svg",
      "export-csv",
      "export-npy",
    ]);
  });
  it("composes svg output", () => {
    const div = document.createElement("div");
    legend.render(div, { domain: 1 });
    const s = composeSVG(div);
    expect(s.startsWith("<svg")).toBe(true);
    expect(s).toContain("</svg>");
  });
});
