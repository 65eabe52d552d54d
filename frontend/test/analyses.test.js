// @vitest-environment jsdom
// The Compare and Health views: their pure helpers, the log scale and step grid, and each view mounted on a fake
// API (what it asks for, what it draws, what it puts in the URL).
import { describe, it, expect, beforeEach } from "vitest";
import {
  parseRuns,
  overlaySeries,
  commonTensors,
  convLayers,
  runLetter,
  mount as mountCompare,
} from "../src/views/compare.js";
import {
  positiveExtent,
  ratioRows,
  tensorSeries,
  explorerLink,
  binColumns,
  mount as mountHealth,
} from "../src/views/health.js";
import { gridLayout, cellCentre } from "../src/charts/stepgrid.js";
import { logSequential, NAN_COLOR, RUN_COLORS } from "../src/colors.js";

HTMLCanvasElement.prototype.getContext = () => null;

beforeEach(() => {
  document.body.innerHTML = "";
  delete window.__netlapse;
  window.history.replaceState(null, "", "#/");
});

const settle = () => new Promise((r) => setTimeout(r, 0));
async function until(cond) {
  for (let i = 0; i < 50 && !cond(); i++) await settle();
  expect(cond()).toBe(true);
}

const OVERLAY = {
  runs: [
    { id: "aaaaaaaa", name: "sgd-momentum-long-name", optimizer: "sgd", lr: 0.05, momentum: 0.9, seed: 0 },
    { id: "bbbbbbbb", name: "adam", optimizer: "adam", lr: 0.01, momentum: 0, seed: 0 },
  ],
  steps: [1, 2, 3],
  epochs: [0],
  loss: [
    [2.3, 2.2, null],
    [2.3, 2.0, 1.8],
  ],
  accuracy: [
    [0.1, 0.2, null],
    [0.1, 0.3, 0.4],
  ],
  val_accuracy: [[0.2], [0.5]],
};

describe("compare helpers", () => {
  it("keeps unique run ids in order, at most 8", () => {
    expect(parseRuns("a, b,a,,c")).toEqual(["a", "b", "c"]);
    expect(parseRuns(Array.from({ length: 10 }, (_, i) => `r${i}`).join(","))).toHaveLength(8);
    expect(parseRuns(undefined)).toEqual([]);
  });
  it("draws one series per run with only the points it has, in the run's colour", () => {
    const s = overlaySeries(OVERLAY, "loss");
    expect(s.map((x) => x.points.length)).toEqual([2, 3]);
    expect(s[0].points).toEqual([
      { x: 1, y: 2.3 },
      { x: 2, y: 2.2 },
    ]);
    expect(s.map((x) => x.color)).toEqual(RUN_COLORS.slice(0, 2));
    expect(s[0].name).toBe("A sgd-momentum");
    expect(runLetter(7)).toBe("H");
  });
  it("offers the tensors both runs have with the same shape, and run A's conv layers", () => {
    const a = [
      { name: "conv1.weight", shape: [4, 1, 3, 3], layer: "conv1", kind: "conv2d" },
      { name: "conv1.bias", shape: [4], layer: "conv1", kind: "conv2d" },
      { name: "fc1.weight", shape: [10, 200], layer: "fc1", kind: "linear" },
    ];
    const b = [
      { name: "conv1.weight", shape: [4, 1, 3, 3] },
      { name: "fc1.weight", shape: [128, 784] },
    ];
    expect(commonTensors(a, b)).toEqual(["conv1.weight"]);
    expect(convLayers(a)).toEqual(["conv1"]);
  });
});

function fakeApi(answers) {
  const calls = [];
  return {
    calls,
    analysis: async (name, params) => {
      calls.push([name, params]);
      const a = answers[name];
      if (a instanceof Error) throw a;
      return typeof a === "function" ? a(params) : a;
    },
    tensors: async () => ({
      tensors: [{ name: "conv1.weight", shape: [2, 1, 2, 2], layer: "conv1", kind: "conv2d" }],
    }),
    steps: async (id) => ({ steps: id === "aaaaaaaa" ? [0, 1, 2] : [0, 1, 2, 3] }),
  };
}

describe("compare view", () => {
  it("loads the overlay, the diff of the last steps and the activations, and keeps the state in the URL", async () => {
    const api = fakeApi({
      compare_metrics: OVERLAY,
      compare_diff: (p) => ({
        name: p.name,
        shape: [2, 1, 2, 2],
        dtype: "float32",
        data: [0.5, -0.25, 0, 1, -1, 0, 0.125, 0],
        stats: { count: 8, increased: 3, decreased: 2, unchanged: 3, mean: 0.05, mean_abs: 0.36, l2: 1.6 },
      }),
      compare_activations: {
        a: {
          activation: [
            [1, 2],
            [3, 4],
          ],
        },
        b: {
          activation: [
            [2, 2],
            [3, null],
          ],
        },
        difference: [
          [1, 0],
          [0, null],
        ],
        note: null,
      },
    });
    const root = document.createElement("div");
    document.body.append(root);
    const view = mountCompare(root, { api, params: { runs: "aaaaaaaa,bbbbbbbb" }, routeParams: {} });
    const ready = (t) => root.querySelector(`[data-testid=${t}]`)?.dataset.state === "ready";
    await until(() => ready("compare-metrics") && ready("compare-diff") && ready("compare-activations"));
    expect(api.calls.find(([n]) => n === "compare_metrics")[1]).toEqual({ runs: "aaaaaaaa,bbbbbbbb" });
    expect(api.calls.find(([n]) => n === "compare_diff")[1]).toEqual({
      name: "conv1.weight",
      a: "aaaaaaaa:2",
      b: "bbbbbbbb:3",
    });
    expect(api.calls.find(([n]) => n === "compare_activations")[1]).toMatchObject({
      a: "aaaaaaaa:2",
      b: "bbbbbbbb:3",
      layer: "conv1",
    });
    const canvas = root.querySelector("canvas[data-testid=heatmap-compare]");
    expect(canvas.dataset.n).toBe("8");
    expect(Number(canvas.dataset.domain)).toBe(1);
    expect(window.__netlapse.heatmaps["heatmap-compare"].colorOf(0)).toEqual([255, 255, 255]);
    expect(root.querySelector("[data-testid=compare-diff-stats]").textContent).toContain(
      "3 higher in B, 2 lower",
    );
    expect(root.querySelectorAll("svg[data-testid=overlay-loss] path[data-series]")).toHaveLength(2);
    expect(root.querySelectorAll("canvas[data-testid^=activation-]")).toHaveLength(3);
    const q = new URLSearchParams(location.hash.split("?")[1]);
    expect(Object.fromEntries(q)).toEqual({
      runs: "aaaaaaaa,bbbbbbbb",
      tensor: "conv1.weight",
      sa: "2",
      sb: "3",
      layer: "conv1",
    });
    view.destroy();
  });
  it("asks for two runs when fewer are given", () => {
    const root = document.createElement("div");
    mountCompare(root, { api: fakeApi({}), params: { runs: "aaaaaaaa" }, routeParams: {} });
    expect(root.querySelector("[data-testid=compare-empty]")).not.toBeNull();
  });
  it("shows the API's message where a section fails", async () => {
    const err = Object.assign(new Error("run 'bbbbbbbb' not found"), { status: 404 });
    const root = document.createElement("div");
    mountCompare(root, {
      api: fakeApi({ compare_metrics: err, compare_diff: err, compare_activations: err }),
      params: { runs: "aaaaaaaa,bbbbbbbb" },
      routeParams: {},
    });
    await until(() => root.querySelector("[data-testid=compare-metrics]").dataset.state === "error");
    expect(
      root.querySelector("[data-testid=compare-metrics] [data-testid=error-banner]").textContent,
    ).toContain("not found");
  });
});

const HEALTH = {
  steps: [0, 1, 2],
  tensors: [
    { name: "conv1.weight", shape: [2, 1, 3, 3] },
    { name: "conv1.bias", shape: [2] },
    { name: "bn.running_var", shape: [2] },
  ],
  update_ratio: [
    [null, 0.01, 0.001],
    [null, 0.1, 0.2],
    [null, null, null],
  ],
  norm: [
    [1, 1.1, 1.2],
    [0.1, 0.1, 0.1],
    [1, 1, 1],
  ],
  sign_flip_fraction: [
    [0, 0.1, 0.2],
    [0, 0, 0],
    [0, 0, 0],
  ],
  units: [
    {
      layer: "conv1",
      weight: "conv1.weight",
      bias: "conv1.bias",
      kind: "conv",
      units: 2,
      last_change: [2, null],
      frozen: [{ unit: 1, since: 0 }],
    },
  ],
  min_frozen_updates: 1,
  top_moved: [
    {
      from: 0,
      to: 2,
      layers: [{ layer: "conv1", weight: "conv1.weight", kind: "conv", units: [0, 1], l2: [0.5, 0] }],
    },
  ],
  updates: { note: "adam: an update is not a gradient", update_is_scaled_gradient: false },
};

describe("health helpers, log scale and step grid", () => {
  it("finds the positive extent and keeps only tensors that were updated", () => {
    expect(positiveExtent(HEALTH.update_ratio)).toEqual([0.001, 0.2]);
    expect(positiveExtent([[null, 0]])).toEqual([1e-6, 1]);
    expect(positiveExtent([[0.5]])).toEqual([0.05, 5]);
    expect(ratioRows(HEALTH).map((r) => r.name)).toEqual(["conv1.weight", "conv1.bias"]);
    expect(tensorSeries(HEALTH, "norm").map((s) => s.name)).toEqual(["conv1.weight"]);
    expect(explorerLink("r1", "conv1.weight", 0, 2)).toBe(
      "#/runs/r1/explore?tensor=conv1.weight&from=0&to=2",
    );
  });
  it("bins long runs into at most maxCols columns, keeping each bin's largest ratio", () => {
    const steps = Array.from({ length: 10 }, (_, i) => i);
    const row = [null, 1, 5, 2, 2, 9, null, null, 3, 1];
    expect(binColumns([row], steps, 20)).toEqual({ values: [row], steps, width: 1 });
    const b = binColumns([row], steps, 4);
    expect(b.width).toBe(3);
    expect(b.steps).toEqual([0, 3, 6, 9]);
    expect(b.values).toEqual([[5, 9, 3, 1]]);
  });
  it("colours a log scale darker for larger values, grey for no value", () => {
    const s = logSequential(1e-4, 1);
    const lum = ([r, g, b]) => 0.2126 * r + 0.7152 * g + 0.0722 * b;
    const vals = [1e-4, 1e-3, 1e-2, 1e-1, 1];
    const l = vals.map((v) => lum(s(v)));
    for (let i = 1; i < l.length; i++) expect(l[i]).toBeLessThan(l[i - 1]);
    expect(s(null)).toEqual(NAN_COLOR);
    expect(s(0)).toEqual(NAN_COLOR);
    expect(s(1e-9)).toEqual(s(1e-4)); // clamped
    expect(s.domain[0]).toBeCloseTo(1e-4, 12);
  });
  it("places cell (r, c) at left + c·cellW, r·cellH", () => {
    const g = gridLayout(3, 100, { maxWidth: 880, left: 150, cellH: 16, minCellW: 1, maxCellW: 24 });
    expect(g.cellW).toBe(7);
    expect(cellCentre(g, 2, 5)).toEqual({ x: 150 + 5 * 7 + 3.5, y: 2 * 16 + 8 });
    expect(
      gridLayout(1, 10000, { maxWidth: 880, left: 150, cellH: 16, minCellW: 1, maxCellW: 24 }).cellW,
    ).toBe(1);
  });
});

describe("health view", () => {
  it("draws the ratio grid, the curves, frozen and dead units and links the most moved filters", async () => {
    const api = fakeApi({
      health: HEALTH,
      health_dead: {
        step: 2,
        split: "test",
        evaluated: 256,
        layers: [{ layer: "conv1", kind: "conv", dead: [1] }],
      },
    });
    const root = document.createElement("div");
    document.body.append(root);
    const view = mountHealth(root, { api, params: {}, routeParams: { id: "r1" } });
    await until(() => root.querySelector("[data-testid=health-units]")?.dataset.state === "ready");
    expect(api.calls[0]).toEqual(["health", { run_id: "r1", windows: 8, top_k: 5 }]);
    const grid = root.querySelector("canvas[data-testid=health-ratio-grid]");
    expect(JSON.parse(grid.dataset.rows)).toEqual(["conv1.weight", "conv1.bias"]);
    expect(JSON.parse(grid.dataset.layout)).toMatchObject({ rows: 2, cols: 3 });
    expect(window.__netlapse.heatmaps["health-ratio-grid"].valueAt(4)).toBe(0.1);
    expect(root.querySelector("[data-testid=health-note]").textContent).toContain("not a gradient");
    expect([...root.querySelectorAll("[data-testid=frozen-row]")].map((r) => r.dataset.unit)).toEqual(["1"]);
    expect([...root.querySelectorAll("[data-testid=dead-row]")].map((r) => r.textContent)).toEqual([
      "conv1filter 1output 0 on all 256 test inputs at step 2",
    ]);
    const links = [...root.querySelectorAll("[data-testid=moved-link]")].map((a) => a.getAttribute("href"));
    expect(links).toEqual([
      "#/runs/r1/explore?tensor=conv1.weight&from=0&to=2",
      "#/runs/r1/explore?tensor=conv1.weight&from=0&to=2",
    ]);
    expect(location.hash).toBe("#/runs/r1/health?windows=8&top_k=5");
    view.destroy();
  });
});
