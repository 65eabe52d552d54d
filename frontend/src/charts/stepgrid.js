// Rows × steps grid on canvas (e.g. tensors × captured steps of the update-to-weight ratio), one colour per cell
// from a given scale. Pure layout: cell (r, c) covers x = left + c·cellW, y = r·cellH, so tests can find any cell.

import { registerHeatmap, unregisterHeatmap } from "../hooks.js";

export const defaults = {
  testid: "stepgrid",
  label: "rows by steps",
  maxWidth: 880,
  cellH: 16,
  minCellW: 1,
  maxCellW: 24,
  left: 150, // room for the row labels
  onHover: null, // ({row, col, value} | null, {pageX, pageY}) => void
};

/** Geometry of the grid: cell width from the number of columns, clamped; the canvas is left + cols·cellW wide. */
export function gridLayout(rows, cols, o = defaults) {
  const cellW = Math.max(
    o.minCellW,
    Math.min(o.maxCellW, Math.floor((o.maxWidth - o.left) / Math.max(1, cols))),
  );
  return {
    rows,
    cols,
    cellW,
    cellH: o.cellH,
    left: o.left,
    width: o.left + cols * cellW,
    height: rows * o.cellH,
  };
}

/** Centre of cell (r, c) in canvas pixels. */
export function cellCentre(layout, r, c) {
  return { x: layout.left + c * layout.cellW + layout.cellW / 2, y: r * layout.cellH + layout.cellH / 2 };
}

/**
 * @param {HTMLElement} container
 * @param {{values: (number|null)[][], rowLabels: string[]}} data values[r][c]
 * @param {{scale: (v: number|null) => number[]} & Partial<typeof defaults>} options
 */
export function render(container, data, options) {
  const o = { ...defaults, ...options };
  const rows = data.values.length;
  const cols = rows ? data.values[0].length : 0;
  const layout = gridLayout(rows, cols, o);
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, layout.width);
  canvas.height = Math.max(1, layout.height);
  canvas.style.width = `${canvas.width}px`;
  canvas.style.height = `${canvas.height}px`;
  canvas.className = "stepgrid";
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", o.label);
  canvas.setAttribute("data-testid", o.testid);
  canvas.dataset.layout = JSON.stringify(layout);
  const ctx = canvas.getContext?.("2d");
  if (ctx) {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const img = ctx.createImageData(cols * layout.cellW || 1, rows * layout.cellH || 1);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const rgb = o.scale(data.values[r][c]);
        for (let y = r * layout.cellH; y < (r + 1) * layout.cellH; y++) {
          let p = (y * img.width + c * layout.cellW) * 4;
          for (let x = 0; x < layout.cellW; x++, p += 4) {
            img.data[p] = rgb[0];
            img.data[p + 1] = rgb[1];
            img.data[p + 2] = rgb[2];
            img.data[p + 3] = 255;
          }
        }
      }
    }
    ctx.putImageData(img, layout.left, 0);
    ctx.fillStyle = "#374151";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    data.rowLabels.forEach((t, r) =>
      ctx.fillText(t, 2, r * layout.cellH + layout.cellH / 2, layout.left - 6),
    );
  }

  function cellAt(ev) {
    const rect = canvas.getBoundingClientRect();
    const c = Math.floor((ev.clientX - rect.left - layout.left) / layout.cellW);
    const r = Math.floor((ev.clientY - rect.top) / layout.cellH);
    if (r < 0 || r >= rows || c < 0 || c >= cols) return null;
    return { row: r, col: c, value: data.values[r][c] };
  }
  canvas.addEventListener("mousemove", (ev) => o.onHover?.(cellAt(ev), { pageX: ev.pageX, pageY: ev.pageY }));
  canvas.addEventListener("mouseleave", () => o.onHover?.(null, {}));

  // Test hook (hooks.js): cell i = r·cols + c.
  const handle = {
    layout,
    cellCenter(i) {
      const c = cellCentre(layout, Math.floor(i / cols), i % cols);
      const rect = canvas.getBoundingClientRect();
      return {
        x: c.x,
        y: c.y,
        px: Math.floor(c.x),
        py: Math.floor(c.y),
        clientX: rect.left + c.x,
        clientY: rect.top + c.y,
      };
    },
    readCell(i) {
      const c = cellCentre(layout, Math.floor(i / cols), i % cols);
      const px = ctx?.getImageData(Math.floor(c.x), Math.floor(c.y), 1, 1).data;
      return px ? Array.from(px) : null;
    },
    colorOf: (v) => o.scale(v),
    valueAt: (i) => data.values[Math.floor(i / cols)][i % cols],
  };
  registerHeatmap(o.testid, handle);
  container.append(canvas);
  return {
    canvas,
    layout,
    handle,
    destroy() {
      unregisterHeatmap(o.testid, handle);
      canvas.remove();
    },
  };
}
