// Heatmap of server-pooled tiles: a rows×cols grid, each cell the signed value of largest magnitude of its
// block of the tensor's 2-D view, coloured by the one diverging scale (0 = white). The grid covers `window` of
// the view; wheel / +/- zoom and drag / arrows pan, and the view asks for new tiles of the visible window.

import { diverging } from "../colors.js";
import { blockEdges } from "../tensorview.js";
import { registerHeatmap, unregisterHeatmap } from "../hooks.js";

export const defaults = {
  testid: "heatmap",
  domain: null, // symmetric bound m; null = the tiles' scale
  label: "tensor heatmap (tiles)",
  maxWidth: 880,
  maxHeight: 480,
  maxCell: 24,
  onHover: null, // (cell | null, {pageX, pageY}) => void; cell = {i, j, index, value, r0, r1, c0, c1}
  onClick: null, // (cell) => void
  onWindow: null, // ([r0, c0, r1, c1]) => void: the user zoomed or panned
};

/** Output grid and pixel size for a window of h×w view cells: one cell per pixel when downsampled. */
export function tileGrid(
  h,
  w,
  { maxWidth = defaults.maxWidth, maxHeight = defaults.maxHeight, maxCell = defaults.maxCell } = {},
) {
  const cols = Math.min(w, maxWidth);
  const rows = Math.min(h, maxHeight);
  let cellW = Math.max(1, Math.min(maxCell, Math.floor(maxWidth / cols)));
  let cellH = Math.max(1, Math.min(maxCell, Math.floor(maxHeight / rows)));
  if (cols === w && rows === h) cellW = cellH = Math.min(cellW, cellH);
  return { rows, cols, cellW, cellH, width: cols * cellW, height: rows * cellH };
}

/**
 * @param {HTMLElement} container
 * @param {{values: ArrayLike<number>, rows: number, cols: number, window: number[], view: {rows: number, cols: number}}} data
 * @param {Partial<typeof defaults> & {grid: ReturnType<typeof tileGrid>}} options
 */
export function render(container, data, options) {
  const o = { ...defaults, ...options };
  const { values, rows, cols, window: win } = data;
  const g = o.grid;
  const m = o.domain ?? data.scale ?? 0;
  const scale = diverging(m);
  const [r0, c0, r1, c1] = win;
  const er = blockEdges(r1 - r0, rows).map((v) => v + r0);
  const ec = blockEdges(c1 - c0, cols).map((v) => v + c0);

  const canvas = document.createElement("canvas");
  canvas.width = g.width;
  canvas.height = g.height;
  canvas.style.width = `${g.width}px`;
  canvas.style.height = `${g.height}px`;
  canvas.className = "heatmap tiles";
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", o.label);
  canvas.setAttribute("data-testid", o.testid);
  const layout = {
    kind: "tiles",
    rows,
    cols,
    cellW: g.cellW,
    cellH: g.cellH,
    width: g.width,
    height: g.height,
    window: win,
    view: { rows: data.view.rows, cols: data.view.cols },
  };
  canvas.dataset.layout = JSON.stringify(layout);
  canvas.dataset.domain = String(m);
  canvas.dataset.n = String(rows * cols);

  const ctx = canvas.getContext?.("2d");
  if (ctx) {
    const img = ctx.createImageData(g.width, g.height);
    const d = img.data;
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const rgb = scale(values[i * cols + j]);
        for (let y = i * g.cellH; y < (i + 1) * g.cellH; y++) {
          let p = (y * g.width + j * g.cellW) * 4;
          for (let x = 0; x < g.cellW; x++, p += 4) {
            d[p] = rgb[0];
            d[p + 1] = rgb[1];
            d[p + 2] = rgb[2];
            d[p + 3] = 255;
          }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  const cellAt = (x, y) => {
    const j = Math.floor(x / g.cellW);
    const i = Math.floor(y / g.cellH);
    if (x < 0 || y < 0 || i >= rows || j >= cols) return null;
    return {
      i,
      j,
      index: i * cols + j,
      value: values[i * cols + j],
      r0: er[i],
      r1: er[i + 1],
      c0: ec[j],
      c1: ec[j + 1],
    };
  };
  const local = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  };
  /** The view point (fractional row, col) under canvas px (x, y). */
  const viewPoint = (x, y) => [r0 + (y / g.height) * (r1 - r0), c0 + (x / g.width) * (c1 - c0)];

  let drag = null;
  let focus = { i: 0, j: 0 };
  canvas.addEventListener("pointermove", (ev) => {
    const [x, y] = local(ev);
    if (drag) {
      if (Math.abs(drag.x - x) + Math.abs(drag.y - y) > 3) drag.moved = true;
      if (!drag.moved) return;
      const dr = ((drag.y - y) / g.height) * (r1 - r0);
      const dc = ((drag.x - x) / g.width) * (c1 - c0);
      drag.win = [r0 + dr, c0 + dc, r1 + dr, c1 + dc];
      canvas.style.transform = `translate(${x - drag.x}px, ${y - drag.y}px)`;
      return;
    }
    o.onHover?.(cellAt(x, y), { pageX: ev.pageX, pageY: ev.pageY });
  });
  canvas.addEventListener("pointerleave", () => drag || o.onHover?.(null, {}));
  canvas.addEventListener("blur", () => o.onHover?.(null, {}));
  canvas.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    const [x, y] = local(ev);
    drag = { x, y, moved: false, win: null };
    canvas.setPointerCapture?.(ev.pointerId);
  });
  canvas.addEventListener("pointerup", (ev) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    canvas.style.transform = "";
    if (d.moved && d.win) return o.onWindow?.(d.win);
    const c = cellAt(...local(ev));
    if (c) o.onClick?.(c);
  });
  canvas.addEventListener(
    "wheel",
    (ev) => {
      if (!o.onWindow) return;
      ev.preventDefault();
      const [x, y] = local(ev);
      const [pr, pc] = viewPoint(x, y);
      o.onWindow({ zoom: ev.deltaY < 0 ? 0.5 : 2, at: [pr, pc] });
    },
    { passive: false },
  );
  canvas.addEventListener("keydown", (ev) => {
    const k = ev.key;
    if (k === "+" || k === "=" || k === "-") {
      const [pr, pc] = [(er[focus.i] + er[focus.i + 1]) / 2, (ec[focus.j] + ec[focus.j + 1]) / 2];
      o.onWindow?.({ zoom: k === "-" ? 2 : 0.5, at: [pr, pc] });
    } else if (k === "0") o.onWindow?.({ reset: true });
    else if (k === "Enter") o.onClick?.(cellAt(focus.j * g.cellW, focus.i * g.cellH));
    else {
      const mv = { ArrowRight: [0, 1], ArrowLeft: [0, -1], ArrowDown: [1, 0], ArrowUp: [-1, 0] }[k];
      if (!mv) return;
      focus = {
        i: Math.max(0, Math.min(rows - 1, focus.i + mv[0])),
        j: Math.max(0, Math.min(cols - 1, focus.j + mv[1])),
      };
      const r = canvas.getBoundingClientRect();
      o.onHover?.(cellAt(focus.j * g.cellW, focus.i * g.cellH), {
        pageX: r.left + window.scrollX + (focus.j + 0.5) * g.cellW,
        pageY: r.top + window.scrollY + (focus.i + 0.5) * g.cellH,
      });
    }
    ev.preventDefault();
  });

  const handle = {
    layout,
    domain: m,
    /** Centre of grid cell k (= i·cols + j): {x, y} px relative to the canvas, {px, py} integer pixel, {clientX, clientY}. */
    cellCenter(k) {
      const x = (k % cols) * g.cellW + g.cellW / 2;
      const y = Math.floor(k / cols) * g.cellH + g.cellH / 2;
      const r = canvas.getBoundingClientRect();
      return { x, y, px: Math.floor(x), py: Math.floor(y), clientX: r.left + x, clientY: r.top + y };
    },
    readCell(k) {
      const c = handle.cellCenter(k);
      const px = ctx?.getImageData(c.px, c.py, 1, 1).data;
      return px ? Array.from(px) : null;
    },
    colorOf: (v) => scale(v),
    valueAt: (k) => values[k],
    cellAt,
  };
  registerHeatmap(o.testid, handle);
  container.append(canvas);
  return {
    canvas,
    layout,
    scale,
    handle,
    destroy() {
      unregisterHeatmap(o.testid, handle);
      canvas.remove();
    },
  };
}
