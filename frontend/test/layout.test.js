import { describe, it, expect } from "vitest";
import {
  filterGridLayout,
  matrixLayout,
  tensorLayout,
  cellCenter,
  kernelColumns,
  tileColumns,
} from "../src/charts/layout.js";

describe("filter grid layout (conv weights)", () => {
  it("lays paper-cnn conv1 [32,1,3,3] as 8×4 tiles of 3×3 cells", () => {
    const l = filterGridLayout([32, 1, 3, 3]);
    const j = l.toJSON();
    expect(j.cols).toBe(8);
    expect(j.inCols).toBe(1);
    expect(j.cell).toBe(24);
    expect(j.tileW).toBe(3 * 24 + 2 * j.pad);
    expect(l.width).toBe(8 * j.tileW + 7 * j.gap);
    expect(l.height).toBe(4 * j.tileH + 3 * j.gap);
    expect(l.n).toBe(288);
  });

  it("places every flat index by the documented formula", () => {
    const shape = [64, 32, 3, 3];
    const l = filterGridLayout(shape);
    const { cell, gap, kgap, pad, cols, inCols, tileW, tileH } = l.toJSON();
    const [, I, kh, kw] = shape;
    for (const i of [0, 1, 8, 9, 287, 288, 1000, 18431]) {
      const o = Math.floor(i / (I * kh * kw));
      const c = Math.floor(i / (kh * kw)) % I;
      const y = Math.floor(i / kw) % kh;
      const x = i % kw;
      const left = (o % cols) * (tileW + gap) + pad + (c % inCols) * (kw * cell + kgap) + x * cell;
      const top =
        Math.floor(o / cols) * (tileH + gap) + pad + Math.floor(c / inCols) * (kh * cell + kgap) + y * cell;
      expect(l.cellOf(i)).toEqual({ x: left, y: top, w: cell, h: cell });
    }
  });

  it("indexAt inverts cellOf for every cell, and gaps hit nothing", () => {
    for (const shape of [
      [32, 1, 3, 3],
      [8, 3, 5, 5],
      [64, 32, 3, 3],
    ]) {
      const l = filterGridLayout(shape);
      for (let i = 0; i < l.n; i += 7) {
        const c = cellCenter(l, i);
        expect(l.indexAt(Math.floor(c.x), Math.floor(c.y))).toBe(i);
      }
      const { tileW, gap } = l.toJSON();
      expect(l.indexAt(tileW + Math.floor(gap / 2), 2)).toBeNull();
    }
  });

  it("cells never overlap and stay inside the canvas", () => {
    const l = filterGridLayout([16, 6, 5, 5]);
    const seen = new Set();
    for (let i = 0; i < l.n; i++) {
      const c = l.cellOf(i);
      expect(c.x + c.w).toBeLessThanOrEqual(l.width);
      expect(c.y + c.h).toBeLessThanOrEqual(l.height);
      const key = `${c.x},${c.y}`;
      expect(seen.has(key)).toBe(false);
      seen.add(key);
    }
  });

  it("fits the requested width", () => {
    const l = filterGridLayout([64, 32, 3, 3], { maxWidth: 560 });
    expect(l.width).toBeLessThanOrEqual(560);
  });

  it("chooses kernel and tile columns sensibly", () => {
    expect(kernelColumns(1)).toBe(1);
    expect(kernelColumns(3)).toBe(3);
    expect(kernelColumns(32)).toBe(8);
    expect(kernelColumns(64)).toBe(8);
    expect(tileColumns(6)).toBe(6);
    expect(tileColumns(32)).toBe(8);
    expect(tileColumns(128)).toBe(16);
  });
});

describe("matrix layout (dense weights, biases)", () => {
  it("draws small matrices one square cell per element", () => {
    const l = matrixLayout([10, 128]);
    expect(l.exact).toBe(true);
    const j = l.toJSON();
    expect(j.cellW).toBe(j.cellH);
    expect(l.cellOf(128 + 5)).toEqual({ x: 5 * j.cellW, y: j.cellH, w: j.cellW, h: j.cellH });
    expect(l.indexAt(5 * j.cellW + 1, j.cellH + 1)).toBe(133);
  });

  it("downsamples big matrices into blocks that fit", () => {
    const l = matrixLayout([128, 9216]);
    expect(l.exact).toBe(false);
    expect(l.width).toBeLessThanOrEqual(880);
    expect(l.blockCols).toBe(Math.ceil(9216 / 880));
    const b = l.blockAt(0, 0);
    expect(b).toMatchObject({ r0: 0, c0: 0, c1: l.blockCols });
  });

  it("wraps 1-D tensors into rows", () => {
    const l = matrixLayout([100]);
    expect(l.C).toBe(32);
    expect(l.R).toBe(4);
    const c = l.cellOf(33);
    expect(c.x).toBe(c.w);
    expect(c.y).toBe(c.h);
  });

  it("tensorLayout picks tiles for rank ≥ 3", () => {
    expect(tensorLayout([4, 1, 3, 3]).kind).toBe("filters");
    expect(tensorLayout([4, 3]).kind).toBe("matrix");
    expect(tensorLayout([4]).kind).toBe("matrix");
  });
});
