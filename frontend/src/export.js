// Export of every chart: PNG and SVG of what is drawn, CSV and NPY of the data behind it.

import { encodeNpy } from "./npy.js";
import { recordExport } from "./hooks.js";
import { h } from "./ui.js";

const SVGNS = "http://www.w3.org/2000/svg";

/** CSV text from column names and rows (arrays); quotes fields that need it. */
export function toCSV(columns, rows) {
  const q = (v) => {
    if (v === null || v === undefined) return "";
    const s = typeof v === "number" ? (Number.isFinite(v) ? String(v) : "") : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const lines = [columns.map(q).join(",")];
  for (const r of rows) lines.push(r.map(q).join(","));
  return lines.join("\n") + "\n";
}

/** Safe file name stem. */
export function fileStem(...parts) {
  return parts
    .filter((p) => p !== undefined && p !== null && p !== "")
    .join("_")
    .replace(/[^\w.-]+/g, "-")
    .slice(0, 120);
}

export function downloadBlob(blob, filename, format) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.style.display = "none";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
  recordExport({ format, filename, bytes: blob.size, at: Date.now() });
}

function drawables(root) {
  const rootRect = root.getBoundingClientRect();
  const out = [];
  for (const node of root.querySelectorAll("canvas, svg")) {
    if (node.tagName.toLowerCase() === "svg" && node.parentElement?.closest("svg")) continue;
    const r = node.getBoundingClientRect();
    if (!r.width || !r.height) continue;
    out.push({ node, x: r.left - rootRect.left, y: r.top - rootRect.top, w: r.width, h: r.height });
  }
  const width = Math.ceil(Math.max(rootRect.width, ...out.map((d) => d.x + d.w)));
  const height = Math.ceil(Math.max(rootRect.height, ...out.map((d) => d.y + d.h)));
  return { items: out, width, height };
}

function serialize(svg) {
  const clone = svg.cloneNode(true);
  clone.setAttribute("xmlns", SVGNS);
  clone.setAttribute("xmlns:xlink", "http://www.w3.org/1999/xlink");
  return new XMLSerializer().serializeToString(clone);
}

/** One standalone SVG of everything drawn under `root` (canvases embedded as PNG images). */
export function composeSVG(root) {
  const { items, width, height } = drawables(root);
  const parts = [
    `<svg xmlns="${SVGNS}" xmlns:xlink="http://www.w3.org/1999/xlink" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
  ];
  for (const d of items) {
    if (d.node.tagName.toLowerCase() === "canvas") {
      const href = d.node.toDataURL("image/png");
      parts.push(
        `<image x="${d.x}" y="${d.y}" width="${d.w}" height="${d.h}" style="image-rendering:pixelated" href="${href}" xlink:href="${href}"/>`,
      );
    } else {
      const s = serialize(d.node).replace(/^<svg/, `<svg x="${d.x}" y="${d.y}"`);
      parts.push(s);
    }
  }
  parts.push("</svg>");
  return parts.join("\n");
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not rasterize the chart"));
    img.src = src;
  });
}

/** PNG blob of everything drawn under `root`. */
export async function composePNG(root) {
  const { items, width, height } = drawables(root);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingEnabled = false;
  for (const d of items) {
    if (d.node.tagName.toLowerCase() === "canvas") {
      ctx.drawImage(d.node, d.x, d.y, d.w, d.h);
    } else {
      const url = URL.createObjectURL(new Blob([serialize(d.node)], { type: "image/svg+xml" }));
      try {
        ctx.drawImage(await loadImage(url), d.x, d.y, d.w, d.h);
      } finally {
        URL.revokeObjectURL(url);
      }
    }
  }
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

/**
 * Toolbar with PNG / SVG / CSV / NPY buttons for a chart.
 * @param {{name: () => string, root: () => HTMLElement, csv?: () => {columns: string[], rows: any[][]}, npy?: () => {values: ArrayLike<number>, shape: number[]}, onError?: (e) => void}} spec
 */
export function exportToolbar(spec) {
  const run = (format, fn) => async () => {
    try {
      await fn();
    } catch (e) {
      spec.onError?.(e);
    }
  };
  const btn = (format, label, fn) =>
    h(
      "button.small",
      {
        type: "button",
        "data-testid": `export-${format}`,
        "data-format": format,
        title: `Download ${label}`,
        onclick: run(format, fn),
      },
      label,
    );
  return h(
    "div.export",
    { role: "group", "aria-label": "Export" },
    btn("png", "PNG", async () => downloadBlob(await composePNG(spec.root()), `${spec.name()}.png`, "png")),
    btn("svg", "SVG", async () =>
      downloadBlob(
        new Blob([composeSVG(spec.root())], { type: "image/svg+xml" }),
        `${spec.name()}.svg`,
        "svg",
      ),
    ),
    spec.csv
      ? btn("csv", "CSV", async () => {
          const { columns, rows } = spec.csv();
          downloadBlob(new Blob([toCSV(columns, rows)], { type: "text/csv" }), `${spec.name()}.csv`, "csv");
        })
      : null,
    spec.npy
      ? btn("npy", "NPY", async () => {
          const { values, shape } = spec.npy();
          downloadBlob(
            new Blob([encodeNpy(values, shape)], { type: "application/octet-stream" }),
            `${spec.name()}.npy`,
            "npy",
          );
        })
      : null,
  );
}

/**
 * A chart frame: heading, export toolbar, plot area, caption.
 * Returns {figure, plot, caption, setTitle}.
 */
export function chartFigure({ title, chart, exportSpec }) {
  const plot = h("div.plot");
  const caption = h("figcaption.caption");
  const heading = h("h3", {}, title ?? "");
  const figure = h(
    "figure.chart",
    { "data-chart": chart },
    h("div.chart-head", {}, heading, exportSpec ? exportToolbar({ root: () => plot, ...exportSpec }) : null),
    plot,
    caption,
  );
  return { figure, plot, caption, setTitle: (t) => (heading.textContent = t) };
}
