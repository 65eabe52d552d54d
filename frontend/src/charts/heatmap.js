// Tensor heatmap on canvas with the diverging scale: conv weights as filter tiles, dense
// weights as a (visually downsampled) matrix. Hover/keyboard report exact elements.

import { diverging, symmetricExtent } from "../colors.js";
import { tensorLayout, cellCenter } from "./layout.js";
import { registerHeatmap, unregisterHeatmap } from "../hooks.js";

export const defaults = {
  testid: "heatmap",
  domain: null, // symmetric bound m; null = max |value|
  tileBackground: [212, 212, 216],
  label: "tensor heatmap",
  layout: {}, // options for tensorLayout (maxWidth, maxHeight, cell, …)
  onHover: null, // (index | null, {pageX, pageY, block}) => void
};

function fill(img, x0, y0, w, h, rgb, a = 255) {
  const W = img.width;
  const d = img.data;
  for (let y = y0; y < y0 + h; y++) {
    let p = (y * W + x0) * 4;
    for (let x = 0; x < w; x++, p += 4) {
      d[p] = rgb[0];
      d[p + 1] = rgb[1];
      d[p + 2] = rgb[2];
      d[p + 3] = a;
    }
  }
}

/** For a downsampled matrix: per drawn block, the flat index with the largest |value|. */
export function blockRepresentatives(layout, values) {
  const { drawRows, drawCols, blockRows, blockCols, R, C } = layout;
  const rep = new Int32Array(drawRows * drawCols).fill(-1);
  const best = new Float64Array(drawRows * drawCols).fill(-1);
  for (let r = 0; r < R; r++) {
    const br = Math.floor(r / blockRows) * drawCols;
    for (let c = 0; c < C; c++) {
      const i = r * C + c;
      if (i >= values.length) break;
      const a = Math.abs(values[i]);
      const b = br + Math.floor(c / blockCols);
      if (a > best[b] || rep[b] < 0) {
        best[b] = Number.isNaN(a) ? 0 : a;
        rep[b] = i;
      }
    }
  }
  return rep;
}

/**
 * @param {HTMLElement} container
 * @param {{values: ArrayLike<number>, shape: number[]}} data
 * @param {Partial<typeof defaults>} options
 * @returns {{canvas: HTMLCanvasElement, layout: object, scale: Function, indexAtEvent: Function, destroy: Function}}
 */
export function render(container, data, options = {}) {
  const o = { ...defaults, ...options };
  const { values, shape } = data;
  const layout = tensorLayout(shape, o.layout);
  const m = o.domain ?? symmetricExtent(values);
  const scale = diverging(m);

  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, layout.width);
  canvas.height = Math.max(1, layout.height);
  canvas.style.width = `${canvas.width}px`;
  canvas.style.height = `${canvas.height}px`;
  canvas.className = "heatmap";
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", o.label);
  canvas.dataset.testid = o.testid;
  canvas.setAttribute("data-testid", o.testid);
  canvas.dataset.layout = JSON.stringify(layout.toJSON());
  canvas.dataset.domain = String(m);
  canvas.dataset.n = String(values.length);

  let rep = null;
  const ctx = canvas.getContext?.("2d");
  if (ctx) {
    const img = ctx.createImageData(canvas.width, canvas.height);
    if (layout.kind === "filters") {
      for (const t of layout.tiles()) fill(img, t.x, t.y, t.w, t.h, o.tileBackground);
      for (let i = 0; i < values.length; i++) {
        const c = layout.cellOf(i);
        fill(img, c.x, c.y, c.w, c.h, scale(values[i]));
      }
    } else if (layout.exact) {
      for (let i = 0; i < values.length; i++) {
        const c = layout.cellOf(i);
        fill(img, c.x, c.y, c.w, c.h, scale(values[i]));
      }
    } else {
      rep = blockRepresentatives(layout, values);
      const cw = layout.width / layout.drawCols;
      const ch = layout.height / layout.drawRows;
      for (let b = 0; b < rep.length; b++) {
        if (rep[b] < 0) continue;
        fill(
          img,
          (b % layout.drawCols) * cw,
          Math.floor(b / layout.drawCols) * ch,
          cw,
          ch,
          scale(values[rep[b]]),
        );
      }
    }
    ctx.putImageData(img, 0, 0);
  } else if (layout.kind === "matrix" && !layout.exact) {
    rep = blockRepresentatives(layout, values);
  }

  /** Flat index under CSS px (x, y) relative to the canvas (block representative if downsampled). */
  function indexAtPoint(x, y) {
    if (layout.kind === "matrix" && !layout.exact) {
      const b = layout.blockAt(x, y);
      if (!b) return { index: null };
      const i = rep[b.br * layout.drawCols + b.bc];
      return { index: i >= 0 ? i : null, block: b };
    }
    return { index: layout.indexAt(x, y) };
  }

  function indexAtEvent(ev) {
    const r = canvas.getBoundingClientRect();
    const sx = r.width ? canvas.width / r.width : 1;
    const sy = r.height ? canvas.height / r.height : 1;
    return indexAtPoint(Math.floor((ev.clientX - r.left) * sx), Math.floor((ev.clientY - r.top) * sy));
  }

  let focusIndex = 0;
  function report(index, block, pageX, pageY) {
    o.onHover?.(index, { pageX, pageY, block });
  }
  canvas.addEventListener("mousemove", (ev) => {
    const { index, block } = indexAtEvent(ev);
    report(index, block, ev.pageX, ev.pageY);
  });
  canvas.addEventListener("mouseleave", () => report(null, null, 0, 0));
  canvas.addEventListener("blur", () => report(null, null, 0, 0));
  canvas.addEventListener("keydown", (ev) => {
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: layout.rowStride, ArrowUp: -layout.rowStride }[
      ev.key
    ];
    if (step === undefined) return;
    ev.preventDefault();
    focusIndex = Math.max(0, Math.min(values.length - 1, focusIndex + step));
    const c = cellCenter(layout, focusIndex);
    const r = canvas.getBoundingClientRect();
    report(focusIndex, null, r.left + window.scrollX + c.x, r.top + window.scrollY + c.y);
  });

  const handle = {
    layout,
    domain: m,
    /** Centre of flat index i: {x, y} CSS px relative to the canvas, {px, py} integer canvas pixel, {clientX, clientY} viewport px. */
    cellCenter(i) {
      const c = cellCenter(layout, i);
      const r = canvas.getBoundingClientRect();
      return {
        x: c.x,
        y: c.y,
        px: Math.floor(c.x),
        py: Math.floor(c.y),
        clientX: r.left + c.x,
        clientY: r.top + c.y,
      };
    },
    readCell(i) {
      const c = cellCenter(layout, i);
      const px = ctx?.getImageData(Math.floor(c.x), Math.floor(c.y), 1, 1).data;
      return px ? Array.from(px) : null;
    },
    colorOf: (v) => scale(v),
    valueAt: (i) => values[i],
  };
  registerHeatmap(o.testid, handle);

  container.append(canvas);
  return {
    canvas,
    layout,
    scale,
    handle,
    indexAtPoint,
    destroy() {
      unregisterHeatmap(o.testid, handle);
      canvas.remove();
    },
  };
}
