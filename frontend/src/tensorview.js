// The 2-D view of a tensor the explorer draws — the same view the server's heatmap tiles and exact windows
// use (services/core/tensorview.py), so a cell (r, c) names the same element on both sides.
//   conv weights [O, I, kh, kw, ...]: filters as tiles, `tileCols` tiles per row, the I in-channel kernels of
//     a tile in `inCols` columns; cell r = (ty·inRows + ky)·kh + y, c = (tx·inCols + kx)·kw + x holds filter
//     f = ty·tileCols + tx, in-channel ch = ky·inCols + kx (cells past the last filter / channel are gaps);
//   everything else a matrix [prod(shape[:-1]), shape[-1]]; 1-D wraps into rows of 32; a scalar is 1×1.

import { kernelColumns, tileColumns, layoutDefaults } from "./charts/layout.js";

const prod = (a) => a.reduce((x, y) => x * y, 1);

/** @returns {{kind: "filters"|"matrix", shape: number[], rows: number, cols: number, numel: number, tileCols?: number, inCols?: number, inRows?: number, kh?: number, kw?: number}} */
export function viewOf(shape) {
  const numel = prod(shape);
  if (shape.length >= 3) {
    const [O, I, kh] = shape;
    const kw = prod(shape.slice(3));
    const tileCols = tileColumns(O);
    const inCols = kernelColumns(I);
    const tileRows = Math.ceil(O / tileCols);
    const inRows = Math.ceil(I / inCols);
    return {
      kind: "filters",
      shape: shape.slice(),
      numel,
      rows: tileRows * inRows * kh,
      cols: tileCols * inCols * kw,
      tileCols,
      inCols,
      inRows,
      kh,
      kw,
    };
  }
  if (shape.length === 0) return { kind: "matrix", shape: [], numel: 1, rows: 1, cols: 1 };
  if (shape.length === 1) {
    const c = Math.max(1, Math.min(shape[0], layoutDefaults.wrap));
    return { kind: "matrix", shape: shape.slice(), numel, rows: Math.ceil(shape[0] / c), cols: c };
  }
  return {
    kind: "matrix",
    shape: shape.slice(),
    numel,
    rows: prod(shape.slice(0, -1)),
    cols: shape[shape.length - 1],
  };
}

/** Flat row-major element index at view cell (r, c), or -1 for a gap. */
export function flatIndexAt(view, r, c) {
  if (r < 0 || c < 0 || r >= view.rows || c >= view.cols) return -1;
  if (view.kind === "matrix") {
    const i = r * view.cols + c;
    return i < view.numel ? i : -1;
  }
  const [O, I] = view.shape;
  const { kh, kw, inRows, inCols, tileCols } = view;
  const y = r % kh;
  const rr = Math.floor(r / kh);
  const ky = rr % inRows;
  const ty = Math.floor(rr / inRows);
  const x = c % kw;
  const cc = Math.floor(c / kw);
  const kx = cc % inCols;
  const tx = Math.floor(cc / inCols);
  const f = ty * tileCols + tx;
  const ch = ky * inCols + kx;
  if (f >= O || ch >= I) return -1;
  return ((f * I + ch) * kh + y) * kw + x;
}

/** View cell [r, c] of flat index i. */
export function cellOfFlat(view, i) {
  if (view.kind === "matrix") return [Math.floor(i / view.cols), i % view.cols];
  const I = view.shape[1];
  const { kh, kw, inRows, inCols, tileCols } = view;
  const f = Math.floor(i / (I * kh * kw));
  let rem = i % (I * kh * kw);
  const ch = Math.floor(rem / (kh * kw));
  rem %= kh * kw;
  const y = Math.floor(rem / kw);
  const x = rem % kw;
  const ty = Math.floor(f / tileCols);
  const tx = f % tileCols;
  const ky = Math.floor(ch / inCols);
  const kx = ch % inCols;
  return [(ty * inRows + ky) * kh + y, (tx * inCols + kx) * kw + x];
}

/** blocks + 1 edges floor(i·n / blocks): how the server splits n cells into blocks. */
export function blockEdges(n, blocks) {
  const out = new Array(blocks + 1);
  for (let i = 0; i <= blocks; i++) out[i] = Math.floor((i * n) / blocks);
  return out;
}

/** The element of largest |value| (the positive one on a tie; NaN ignored) among `values` → its position or -1. */
export function argMaxAbs(values) {
  let best = -1;
  let m = -1;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || Number.isNaN(v)) continue;
    const a = Math.abs(v);
    if (a > m || (a === m && v > values[best])) {
      m = a;
      best = i;
    }
  }
  return best;
}

/** Clamp a window [r0, c0, r1, c1] into the view, keeping at least one cell. */
export function clampWindow(view, [r0, c0, r1, c1]) {
  const h = Math.max(1, Math.min(view.rows, Math.round(r1 - r0)));
  const w = Math.max(1, Math.min(view.cols, Math.round(c1 - c0)));
  const R0 = Math.max(0, Math.min(view.rows - h, Math.round(r0)));
  const C0 = Math.max(0, Math.min(view.cols - w, Math.round(c0)));
  return [R0, C0, R0 + h, C0 + w];
}

/** Zoom a window by `factor` (< 1 = in) around the view point (pr, pc), clamped to the view. */
export function zoomWindow(view, win, factor, pr, pc) {
  const [r0, c0, r1, c1] = win;
  const h = Math.max(1, Math.min(view.rows, (r1 - r0) * factor));
  const w = Math.max(1, Math.min(view.cols, (c1 - c0) * factor));
  const fr = (pr - r0) / (r1 - r0);
  const fc = (pc - c0) / (c1 - c0);
  return clampWindow(view, [pr - fr * h, pc - fc * w, pr - fr * h + h, pc - fc * w + w]);
}
