// Client-side helpers for model specs: layer defaults, shape/parameter inference for the editor,
// and mapping API validation `loc`s onto form fields.

export const LAYER_TYPES = ["conv2d", "maxpool2d", "avgpool2d", "dropout", "flatten", "linear"];
export const ACTIVATIONS = ["none", "relu", "tanh", "sigmoid"];
/** What the server assumes when a layer names no activation. */
export const DEFAULT_ACTIVATION = { conv2d: "relu", linear: "none" };
export const OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "adadelta"];
export const DEFAULT_LR = { sgd: 0.01, adam: 0.001, adamw: 0.001, rmsprop: 0.001, adadelta: 1.0 };

/** A new layer of `type`, named after the existing layers (conv3, fc2, …). */
export function newLayer(type, layers = []) {
  const count = (t) => layers.filter((l) => l.type === t).length + 1;
  switch (type) {
    case "conv2d":
      return { type, name: `conv${count("conv2d")}`, out_channels: 16, kernel_size: 3, activation: "relu" };
    case "maxpool2d":
    case "avgpool2d":
      return { type, kernel_size: 2 };
    case "dropout":
      return { type, p: 0.25 };
    case "flatten":
      return { type };
    case "linear":
      return { type, name: `fc${count("linear")}`, out_features: 64, activation: "relu" };
    default:
      throw new Error(`unknown layer type ${type}`);
  }
}

const pair = (v, d) => (Array.isArray(v) ? [v[0] ?? d, v[1] ?? v[0] ?? d] : [v ?? d, v ?? d]);

/**
 * Output shape and parameter count per layer, as the trainer would build them
 * (conv: stride 1, no padding unless given; maxpool: stride = kernel).
 * @returns {{layers: {out: number[]|null, params: number, error?: string}[], total: number, error: string|null}}
 */
export function inferShapes(spec) {
  let shape = Array.isArray(spec?.input_shape) ? spec.input_shape.slice() : null;
  const out = [];
  let total = 0;
  let error = null;
  for (const [i, l] of (spec?.layers ?? []).entries()) {
    let params = 0;
    let err;
    const fail = (msg) => {
      err = msg;
      shape = null;
    };
    if (!shape) {
      out.push({ out: null, params: 0 });
      continue;
    }
    const num = (v) => Number.isInteger(Number(v)) && Number(v) > 0;
    switch (l.type) {
      case "conv2d": {
        if (shape.length !== 3) fail("needs a C×H×W input (put it before flatten)");
        else if (!num(l.out_channels) || !(num(l.kernel_size) || Array.isArray(l.kernel_size)))
          fail("channels and kernel must be positive integers");
        else {
          const [kh, kw] = pair(l.kernel_size, 3).map(Number);
          const [sh, sw] = pair(l.stride, 1).map(Number);
          const [ph, pw] =
            l.padding === "same" ? [Math.floor(kh / 2), Math.floor(kw / 2)] : pair(l.padding, 0).map(Number);
          const H = Math.floor((shape[1] + 2 * ph - kh) / sh) + 1;
          const W = Math.floor((shape[2] + 2 * pw - kw) / sw) + 1;
          const O = Number(l.out_channels);
          params = O * shape[0] * kh * kw + (l.bias === false ? 0 : O);
          if (H < 1 || W < 1) fail("kernel larger than its input");
          else shape = [O, H, W];
        }
        break;
      }
      case "maxpool2d":
      case "avgpool2d": {
        if (shape.length !== 3) fail("needs a C×H×W input");
        else {
          const [kh, kw] = pair(l.kernel_size, 2).map(Number);
          const [sh, sw] = pair(l.stride ?? l.kernel_size, 2).map(Number);
          const H = Math.floor((shape[1] - kh) / sh) + 1;
          const W = Math.floor((shape[2] - kw) / sw) + 1;
          if (!(H >= 1 && W >= 1)) fail("pool larger than its input");
          else shape = [shape[0], H, W];
        }
        break;
      }
      case "dropout":
        break;
      case "flatten":
        shape = [shape.reduce((a, b) => a * b, 1)];
        break;
      case "linear": {
        if (shape.length !== 1) fail("needs a flat input (add flatten before it)");
        else if (!num(l.out_features)) fail("units must be a positive integer");
        else {
          params = shape[0] * Number(l.out_features) + (l.bias === false ? 0 : Number(l.out_features));
          shape = [Number(l.out_features)];
        }
        break;
      }
      default:
        fail(`unknown layer type ${l.type}`);
    }
    total += params;
    if (err && !error) error = `layer ${i + 1}: ${err}`;
    out.push({ out: shape ? shape.slice() : null, params, error: err });
  }
  if (!error && shape && spec?.num_classes && !(shape.length === 1 && shape[0] === spec.num_classes)) {
    error = `the last layer gives ${shape.join("×")}, the dataset has ${spec.num_classes} classes`;
  }
  return { layers: out, total, error };
}

/**
 * Map an API error `loc` to the deepest known form field path. Union tags that pydantic puts
 * into locs (e.g. "conv2d", "function-after[...]") are skipped because no field path has them.
 * @param {(string|number)[]} loc e.g. ["body","model","layers",2,"out_channels"]
 * @param {Iterable<string>} known field paths present in the form ("" = the form itself)
 * @returns {string|null}
 */
export function resolveFieldPath(loc, known) {
  const fields = [...known];
  const parts = (Array.isArray(loc) ? loc : [loc]).map(String);
  if (["body", "query", "path"].includes(parts[0])) parts.shift();
  const cur = [];
  let best = fields.includes("") ? "" : null;
  for (const p of parts) {
    const cand = [...cur, p].join(".");
    if (fields.some((k) => k === cand || k.startsWith(cand + "."))) {
      cur.push(p);
      if (fields.includes(cand)) best = cand;
    }
  }
  return best;
}

/** Convert a text input's value to what the API expects: number when numeric, else the raw text. */
export function numberOrRaw(text) {
  const t = String(text ?? "").trim();
  if (t === "") return null;
  const n = Number(t);
  return Number.isFinite(n) ? n : t;
}
