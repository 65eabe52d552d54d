// Feature maps of one filter for a few inputs: each input as grey ink next to its map drawn
// with the diverging scale (0 = white).

import { diverging, ink, symmetricExtent } from "../colors.js";

export const defaults = { scale: 3, testid: "featuremaps" };

function drawImage(values, H, W, colorOf, scale) {
  const c = document.createElement("canvas");
  c.width = W * scale;
  c.height = H * scale;
  const ctx = c.getContext?.("2d");
  if (ctx) {
    const img = ctx.createImageData(c.width, c.height);
    for (let y = 0; y < H * scale; y++) {
      for (let x = 0; x < W * scale; x++) {
        const [r, g, b] = colorOf(values[Math.floor(y / scale) * W + Math.floor(x / scale)]);
        const p = (y * c.width + x) * 4;
        img.data[p] = r;
        img.data[p + 1] = g;
        img.data[p + 2] = b;
        img.data[p + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }
  return c;
}

/** Slice channel f of a [F, H, W] (or [H, W]) flat array. */
export function channel(data, shape, f) {
  if (shape.length === 2) return { values: data, H: shape[0], W: shape[1] };
  const [, H, W] = shape.slice(-3);
  return {
    values: data.subarray
      ? data.subarray(f * H * W, (f + 1) * H * W)
      : data.slice(f * H * W, (f + 1) * H * W),
    H,
    W,
  };
}

/**
 * @param {{items: {index: number, label: number, input: {shape, data}, maps: {shape, data}}[], filter: number}} data
 */
export function render(container, data, options = {}) {
  const o = { ...defaults, ...options };
  const root = document.createElement("div");
  root.className = "featuremaps";
  root.setAttribute("data-testid", o.testid);
  // one symmetric domain for all maps of this filter, so inputs compare
  const maps = data.items.map((it) => channel(it.maps.data, it.maps.shape, data.filter));
  const m = Math.max(...maps.map((c) => symmetricExtent(c.values)), 0);
  const scale = diverging(m);
  data.items.forEach((it, k) => {
    const fig = document.createElement("figure");
    fig.className = "fm-item";
    const inShape = it.input.shape;
    const iH = inShape[inShape.length - 2];
    const iW = inShape[inShape.length - 1];
    const inVals = it.input.data.subarray
      ? it.input.data.subarray(0, iH * iW)
      : it.input.data.slice(0, iH * iW);
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of inVals) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    fig.append(
      drawImage(inVals, iH, iW, (v) => ink(v, lo, hi), Math.max(1, Math.round((maps[k].H * o.scale) / iH))),
    );
    fig.append(drawImage(maps[k].values, maps[k].H, maps[k].W, scale, o.scale));
    const cap = document.createElement("figcaption");
    cap.textContent = `#${it.index} · label ${it.label}`;
    fig.append(cap);
    root.append(fig);
  });
  container.append(root);
  return { node: root, domain: m };
}
