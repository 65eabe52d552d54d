import { describe, it, expect } from "vitest";
import { inferShapes, resolveFieldPath, newLayer, numberOrRaw } from "../src/modelspec.js";
import { buildRunBody, relevantFieldErrors, presetHint } from "../src/views/newrun.js";

const paperCnn = {
  input_shape: [1, 28, 28],
  num_classes: 10,
  layers: [
    { type: "conv2d", name: "conv1", out_channels: 32, kernel_size: 3, activation: "relu" },
    { type: "conv2d", name: "conv2", out_channels: 64, kernel_size: 3, activation: "relu" },
    { type: "maxpool2d", kernel_size: 2 },
    { type: "dropout", p: 0.25 },
    { type: "flatten" },
    { type: "linear", name: "fc1", out_features: 128, activation: "relu" },
    { type: "dropout", p: 0.5 },
    { type: "linear", name: "fc2", out_features: 10 },
  ],
};

describe("model spec inference", () => {
  it("counts paper-cnn's 1,199,882 parameters", () => {
    const r = inferShapes(paperCnn);
    expect(r.error).toBeNull();
    expect(r.total).toBe(1199882);
    expect(r.layers[1].out).toEqual([64, 24, 24]);
    expect(r.layers[4].out).toEqual([9216]);
  });

  it("explains a linear layer before flatten and a wrong class count", () => {
    expect(
      inferShapes({
        input_shape: [1, 28, 28],
        num_classes: 10,
        layers: [{ type: "linear", out_features: 10 }],
      }).error,
    ).toMatch(/flatten/);
    expect(
      inferShapes({
        input_shape: [1, 28, 28],
        num_classes: 10,
        layers: [{ type: "flatten" }, { type: "linear", out_features: 5 }],
      }).error,
    ).toMatch(/10 classes/);
  });

  it("names new layers after the existing ones", () => {
    expect(newLayer("conv2d", paperCnn.layers).name).toBe("conv3");
    expect(newLayer("linear", paperCnn.layers).name).toBe("fc3");
    expect(newLayer("flatten")).toEqual({ type: "flatten" });
  });

  it("keeps non-numeric text for the server to reject", () => {
    expect(numberOrRaw("0.01")).toBe(0.01);
    expect(numberOrRaw("")).toBeNull();
    expect(numberOrRaw("abc")).toBe("abc");
  });
});

describe("validation loc → form field", () => {
  const known = [
    "",
    "name",
    "dataset",
    "model",
    "model.preset",
    "model.layers",
    "model.layers.0",
    "model.layers.0.out_channels",
    "model.layers.2.out_features",
    "model.layers.2",
    "training",
    "training.lr",
    "capture.every",
  ];
  it("maps direct locs", () => {
    expect(resolveFieldPath(["body", "training", "lr"], known)).toBe("training.lr");
    expect(resolveFieldPath(["body", "capture", "every"], known)).toBe("capture.every");
  });
  it("skips pydantic union tags", () => {
    expect(resolveFieldPath(["body", "model", "inline", "layers", 0, "conv2d", "out_channels"], known)).toBe(
      "model.layers.0.out_channels",
    );
    expect(resolveFieldPath(["body", "model", "preset", "preset"], known)).toBe("model.preset");
  });
  it("falls back to the closest enclosing field", () => {
    expect(resolveFieldPath(["body", "model", "layers", 2, "kernel_size"], known)).toBe("model.layers.2");
    expect(resolveFieldPath(["body", "training", "betas"], known)).toBe("training");
    expect(resolveFieldPath(["body", "unknown"], known)).toBe("");
    expect(resolveFieldPath(["body", "unknown"], ["name"])).toBeNull();
  });
  it("keeps only errors about the model mode on screen", () => {
    const fields = [
      { path: "model.inline.layers.0.out_channels" },
      { path: "model.preset.preset" },
      { path: "training.lr" },
    ];
    expect(relevantFieldErrors(fields, "preset").map((f) => f.path)).toEqual([
      "model.preset.preset",
      "training.lr",
    ]);
    expect(relevantFieldErrors(fields, "custom").map((f) => f.path)).toEqual([
      "model.inline.layers.0.out_channels",
      "training.lr",
    ]);
  });
});

describe("run body", () => {
  it("sends a preset reference or the inline spec", () => {
    const state = {
      name: "n",
      modelMode: "preset",
      preset: "paper-cnn",
      spec: paperCnn,
      dataset: "mnist-10k",
      training: { epochs: 1, lr: 0.01 },
      capture: { every: 1 },
    };
    expect(buildRunBody(state)).toEqual({
      name: "n",
      model: { preset: "paper-cnn" },
      dataset: "mnist-10k",
      training: { epochs: 1, lr: 0.01 },
      capture: { every: 1 },
    });
    const custom = buildRunBody({ ...state, modelMode: "custom" });
    expect(custom.model.layers).toHaveLength(8);
    expect(custom.model).not.toBe(paperCnn);
  });
  it("leaves a blank training-samples limit out and sends a set one", () => {
    const state = {
      name: "n",
      modelMode: "preset",
      preset: "paper-cnn",
      dataset: "mnist-10k",
      training: { epochs: 1, max_train_samples: null },
      capture: { every: 1 },
    };
    expect(buildRunBody(state).training).toEqual({ epochs: 1 });
    expect(buildRunBody({ ...state, training: { epochs: 1, max_train_samples: 512 } }).training).toEqual({
      epochs: 1,
      max_train_samples: 512,
    });
  });
});

describe("preset hint", () => {
  it("adds the parameter count and snapshot size once", () => {
    expect(presetHint({ description: "tiny", params: 2346 })).toBe(
      "tiny · 2,346 parameters, 9.38 KB per snapshot",
    );
    expect(presetHint({ description: "paper CNN (1,199,882 parameters).", params: 1199882 })).toBe(
      "paper CNN (1,199,882 parameters). · 4.80 MB per snapshot",
    );
    expect(presetHint({ description: "no size" })).toBe("no size");
  });
});
