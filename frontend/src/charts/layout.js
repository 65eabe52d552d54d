// Pixel layouts of tensors drawn as heatmaps. Pure and deterministic: the same shape and
// options always give the same cell positions, so tests (and e2e) can compute where any
// flat index is drawn. All coordinates are CSS pixels relative to the canvas's top-left, and
// the canvas backing store uses exactly these pixels (1 canvas px = 1 CSS px).

export const layoutDefaults = {
  maxWidth: 880,
  maxHeight: 560,
  maxCell: 24,
  gap: 6, // between filter tiles
  kgap: 1, // between the in-channel kernels inside a tile
  pad: 1, // grey border inside each tile
  wrap: 32, // 1-D tensors wrap into rows of this many cells
};

const prod = (a) => a.reduce((x, y) => x * y, 1);

/** Columns for the in-channel kernels of one filter tile: a divisor of I near sqrt(I). */
export function kernelColumns(I) {
  if (I <= 8) return I;
  const r = Math.sqrt(I);
  for (let c = Math.ceil(r); c <= Math.ceil(2 * r); c++) if (I % c === 0) return c;
  return Math.ceil(r);
}

/** Tiles per row for O filters. */
export function tileColumns(O) {
  if (O <= 8) return O;
  if (O <= 64) return 8;
  return 16;
}

/**
 * Layout for a conv weight [O, I, kh, kw, ...]: one tile per output filter (`cols` tiles per row);
 * inside a tile the I in-channel kernels sit in `inCols` columns, each kernel kh×kw cells.
 * Cell of flat index i (row-major): o = i / (I·kh·kw), c = (i / (kh·kw)) % I, y = (i / kw) % kh, x = i % kw;
 *   left = (o % cols)·(tileW+gap) + pad + (c % inCols)·(kw·cell+kgap) + x·cell
 *   top  = ⌊o / cols⌋·(tileH+gap) + pad + ⌊c / inCols⌋·(kh·cell+kgap) + y·cell
 */
export function filterGridLayout(shape, options = {}) {
  const o = { ...layoutDefaults, ...options };
  const O = shape[0];
  const I = shape[1] ?? 1;
  const kh = shape.length >= 3 ? shape[2] : 1;
  const kw = shape.length >= 4 ? prod(shape.slice(3)) : 1;
  const inCols = options.inCols ?? kernelColumns(I);
  const inRows = Math.ceil(I / inCols);
  const cols = options.cols ?? tileColumns(O);
  const rows = Math.ceil(O / cols);
  const kgap = I > 1 ? o.kgap : 0;
  const pad = o.pad;
  const gap = o.gap;
  const fixedW = (cols - 1) * gap + cols * (2 * pad + (inCols - 1) * kgap);
  const fixedH = (rows - 1) * gap + rows * (2 * pad + (inRows - 1) * kgap);
  let cell = options.cell;
  if (!cell) {
    const byW = Math.floor((o.maxWidth - fixedW) / (cols * inCols * kw));
    const byH = Math.floor((o.maxHeight - fixedH) / (rows * inRows * kh));
    cell = Math.max(1, Math.min(o.maxCell, byW, byH));
  }
  const tileW = inCols * kw * cell + (inCols - 1) * kgap + 2 * pad;
  const tileH = inRows * kh * cell + (inRows - 1) * kgap + 2 * pad;
  const width = cols * tileW + (cols - 1) * gap;
  const height = rows * tileH + (rows - 1) * gap;
  const n = O * I * kh * kw;
  const per = I * kh * kw;

  function cellOf(i) {
    const f = Math.floor(i / per);
    const c = Math.floor(i / (kh * kw)) % I;
    const y = Math.floor(i / kw) % kh;
    const x = i % kw;
    const left = (f % cols) * (tileW + gap) + pad + (c % inCols) * (kw * cell + kgap) + x * cell;
    const top =
      Math.floor(f / cols) * (tileH + gap) + pad + Math.floor(c / inCols) * (kh * cell + kgap) + y * cell;
    return { x: left, y: top, w: cell, h: cell };
  }

  function indexAt(px, py) {
    const tx = Math.floor(px / (tileW + gap));
    const ty = Math.floor(py / (tileH + gap));
    if (tx < 0 || ty < 0 || tx >= cols) return null;
    const f = ty * cols + tx;
    if (f >= O) return null;
    let lx = px - tx * (tileW + gap) - pad;
    let ly = py - ty * (tileH + gap) - pad;
    const kx = Math.floor(lx / (kw * cell + kgap));
    const ky = Math.floor(ly / (kh * cell + kgap));
    if (lx < 0 || ly < 0 || kx >= inCols || ky >= inRows) return null;
    const c = ky * inCols + kx;
    if (c >= I) return null;
    lx -= kx * (kw * cell + kgap);
    ly -= ky * (kh * cell + kgap);
    const x = Math.floor(lx / cell);
    const y = Math.floor(ly / cell);
    if (x < 0 || y < 0 || x >= kw || y >= kh) return null;
    return ((f * I + c) * kh + y) * kw + x;
  }

  /** Tile rectangles (grey background) for drawing. */
  function tiles() {
    const out = [];
    for (let f = 0; f < O; f++) {
      out.push({
        f,
        x: (f % cols) * (tileW + gap),
        y: Math.floor(f / cols) * (tileH + gap),
        w: tileW,
        h: tileH,
      });
    }
    return out;
  }

  return {
    kind: "filters",
    shape: shape.slice(),
    n,
    width,
    height,
    cellOf,
    indexAt,
    tiles,
    exact: true,
    rowStride: kw,
    toJSON: () => ({
      kind: "filters",
      shape,
      cell,
      gap,
      kgap,
      pad,
      cols,
      inCols,
      tileW,
      tileH,
      width,
      height,
      exact: true,
    }),
  };
}

/**
 * Layout for a 2-D [R, C] tensor (1-D tensors wrap into rows of `wrap`; other ranks are
 * flattened to [prod(shape[:-1]), shape[-1]]). Big matrices are downsampled visually: each drawn
 * cell covers blockRows×blockCols elements (the renderer shows the one with the largest |value|).
 */
export function matrixLayout(shape, options = {}) {
  const o = { ...layoutDefaults, ...options };
  let R;
  let C;
  let n;
  if (shape.length === 0) {
    R = 1;
    C = 1;
    n = 1;
  } else if (shape.length === 1) {
    n = shape[0];
    C = Math.max(1, Math.min(n, o.wrap));
    R = Math.ceil(n / C);
  } else {
    C = shape[shape.length - 1];
    R = prod(shape.slice(0, -1));
    n = R * C;
  }
  let blockCols = 1;
  let blockRows = 1;
  let cellW;
  let cellH;
  if (C <= o.maxWidth) cellW = Math.max(1, Math.min(o.maxCell, Math.floor(o.maxWidth / C)));
  else {
    blockCols = Math.ceil(C / o.maxWidth);
    cellW = 1;
  }
  if (R <= o.maxHeight) cellH = Math.max(1, Math.min(o.maxCell, Math.floor(o.maxHeight / R)));
  else {
    blockRows = Math.ceil(R / o.maxHeight);
    cellH = 1;
  }
  if (blockCols === 1 && blockRows === 1) {
    cellW = cellH = options.cell ?? Math.min(cellW, cellH);
  } else {
    cellW = Math.min(cellW, 8);
    cellH = Math.min(cellH, 8);
  }
  const drawCols = Math.ceil(C / blockCols);
  const drawRows = Math.ceil(R / blockRows);
  const width = drawCols * cellW;
  const height = drawRows * cellH;

  function cellOf(i) {
    const r = Math.floor(i / C);
    const c = i % C;
    return { x: Math.floor(c / blockCols) * cellW, y: Math.floor(r / blockRows) * cellH, w: cellW, h: cellH };
  }

  /** Block under a pixel → {br, bc, r0, r1, c0, c1} (element ranges, end exclusive) or null. */
  function blockAt(px, py) {
    const bc = Math.floor(px / cellW);
    const br = Math.floor(py / cellH);
    if (px < 0 || py < 0 || bc >= drawCols || br >= drawRows) return null;
    return {
      br,
      bc,
      r0: br * blockRows,
      r1: Math.min(R, (br + 1) * blockRows),
      c0: bc * blockCols,
      c1: Math.min(C, (bc + 1) * blockCols),
    };
  }

  function indexAt(px, py) {
    const b = blockAt(px, py);
    if (!b) return null;
    const i = b.r0 * C + b.c0;
    return i < n ? i : null;
  }

  return {
    kind: "matrix",
    shape: shape.slice(),
    n,
    R,
    C,
    blockRows,
    blockCols,
    drawRows,
    drawCols,
    width,
    height,
    cellOf,
    blockAt,
    indexAt,
    exact: blockRows === 1 && blockCols === 1,
    rowStride: C,
    toJSON: () => ({
      kind: "matrix",
      shape,
      rows: R,
      cols: C,
      cellW,
      cellH,
      blockRows,
      blockCols,
      width,
      height,
      exact: blockRows === 1 && blockCols === 1,
    }),
  };
}

/** Conv-like tensors (rank ≥ 3) get filter tiles; everything else a matrix. */
export function tensorLayout(shape, options = {}) {
  return shape.length >= 3 ? filterGridLayout(shape, options) : matrixLayout(shape, options);
}

/** Centre of the cell drawing flat index i, in CSS px relative to the canvas. */
export function cellCenter(layout, i) {
  const c = layout.cellOf(i);
  return { x: c.x + c.w / 2, y: c.y + c.h / 2 };
}
