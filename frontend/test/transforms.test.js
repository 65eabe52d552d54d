import { describe, it, expect } from "vitest";
import { defaultTensor } from "../src/views/explorer.js";
import { chooseMode } from "../src/views/scatter.js";
import { convLayers, meanSpread, sampleForLabels } from "../src/views/activations.js";
import { progressText } from "../src/views/live.js";
import { modelLabel, progressFraction } from "../src/views/runs.js";
import { histogramCells } from "../src/charts/scatter.js";
import { labelSpread, filterMaxima } from "../src/charts/bars.js";
import { snapStep } from "../src/charts/timeline.js";
import { toCSV, fileStem } from "../src/export.js";
import { unravel, fmtBytes, fmtNum, fmtAge } from "../src/format.js";

describe("tensor transforms", () => {
  it("unravels flat row-major indices", () => {
    expect(unravel(0, [32, 1, 3, 3])).toEqual([0, 0, 0, 0]);
    expect(unravel(29, [32, 1, 3, 3])).toEqual([3, 0, 0, 2]);
    expect(unravel(9215, [128, 9216])).toEqual([0, 9215]);
  });

  it("defaults to the first conv weight", () => {
    const t = [
      { name: "conv1.bias", shape: [32], role: "bias" },
      { name: "conv1.weight", shape: [32, 1, 3, 3], role: "weight" },
      { name: "fc1.weight", shape: [128, 9216], role: "weight" },
    ];
    expect(defaultTensor(t).name).toBe("conv1.weight");
    expect(defaultTensor(t.slice(2)).name).toBe("fc1.weight");
  });

  it("snaps to captured steps", () => {
    const steps = [0, 5, 10, 12];
    expect(snapStep(steps, 6)).toBe(5);
    expect(snapStep(steps, 8)).toBe(10);
    expect(snapStep(steps, -3)).toBe(0);
    expect(snapStep(steps, 99)).toBe(12);
  });
});

describe("scatter data", () => {
  it("orients histogram counts as counts[x_bin][y_bin]", () => {
    const hist = {
      x_edges: [0, 1, 2, 3],
      y_edges: [-1, 0, 1],
      counts: [
        [1, 0],
        [2, 3],
        [0, 4],
      ],
    };
    const { cells, max } = histogramCells(hist);
    expect(max).toBe(4);
    expect(cells).toContainEqual({ x0: 2, x1: 3, y0: 0, y1: 1, count: 4 });
    expect(cells).toHaveLength(4);
  });
  it("uses density when the sample does not cover every element", () => {
    expect(chooseMode("auto", { n: 1000, x: new Array(1000), histogram: {} })).toBe("points");
    expect(chooseMode("auto", { n: 1e6, x: new Array(20000), histogram: {} })).toBe("density");
    expect(chooseMode("points", { n: 1e6, x: [], histogram: {} })).toBe("points");
  });
});

describe("activation data", () => {
  it("lists conv layers from the tensor list", () => {
    const t = [
      { name: "conv1.weight", layer: "conv1", kind: "conv2d" },
      { name: "conv1.bias", layer: "conv1", kind: "conv2d" },
      { name: "conv2.weight", layer: "conv2", kind: "conv2d" },
      { name: "fc1.weight", layer: "fc1", kind: "linear" },
    ];
    expect(convLayers(t)).toEqual(["conv1", "conv2"]);
  });
  it("measures how much filters separate labels", () => {
    expect(labelSpread([1, 1, 1])).toBe(0);
    expect(labelSpread([0, 2])).toBeCloseTo(1);
    expect(
      meanSpread([
        [1, 1],
        [0, 2],
      ]),
    ).toBeCloseTo(0.5);
    expect(
      filterMaxima(
        [
          [1, 3],
          [2, 0],
        ],
        [
          [4, 0],
          [1, 1],
        ],
      ),
    ).toEqual([4, 2]);
  });
  it("takes one sample input per label", () => {
    expect(sampleForLabels({ labels: [0, 1, 2], sample_indices: [[5, 6], [], [9]] })).toEqual([
      { index: 5, label: 0 },
      { index: 9, label: 2 },
    ]);
  });
});

describe("run display", () => {
  it("progress text and fraction", () => {
    expect(progressText({ step: 5, total_steps: 10, epoch: 1, epochs: 2, loss: 0.5, eta_seconds: 3 })).toBe(
      "step 5 / 10 · epoch 1 / 2 · loss 0.5 · ETA 3.00 s",
    );
    expect(progressFraction({ status: "running", progress: { step: 5, total_steps: 20 } })).toBe(0.25);
    expect(progressFraction({ status: "succeeded", progress: {} })).toBe(1);
  });
  it("model label is the preset or the layer count", () => {
    expect(modelLabel({ preset: "paper-cnn", model: { layers: [1, 2] }, status: "queued" })).toBe(
      "paper-cnn",
    );
    expect(modelLabel({ preset: null, model: { layers: [1, 2, 3] }, status: "queued" })).toBe("3 layers");
    expect(
      modelLabel({
        preset: null,
        model: null,
        source: "sdk",
        sdk: { modules: { a: "Conv2d", "a.b": "ReLU" } },
      }),
    ).toBe("SDK · 2 modules");
  });
  it("formats", () => {
    expect(fmtBytes(4799528)).toBe("4.80 MB");
    expect(fmtNum(0.000012345)).toBe("1.234e-5");
    expect(fmtAge(new Date(Date.now() - 120000).toISOString())).toBe("2 min ago");
  });
});

describe("export helpers", () => {
  it("writes CSV with quoting", () => {
    expect(
      toCSV(
        ["a", "b"],
        [
          [1, 'x,"y"'],
          [NaN, null],
        ],
      ),
    ).toBe('a,b\n1,"x,""y"""\n,\n');
  });
  it("makes safe file names", () => {
    expect(fileStem("my run", "conv1.weight", "diff_0-10")).toBe("my-run_conv1.weight_diff_0-10");
  });
});
