import { describe, it, expect } from "vitest";
import { diverging, symmetricExtent, divergingStops, density, WHITE, RED, BLUE } from "../src/colors.js";

describe("diverging red–white–blue scale", () => {
  it("maps 0 to exactly white for any domain", () => {
    for (const m of [0, 1e-9, 0.5, 1, 1234]) expect(diverging(m)(0)).toEqual([255, 255, 255]);
    expect(diverging(1).css(0)).toBe("rgb(255,255,255)");
    expect(diverging(1)(-0)).toEqual(WHITE);
  });

  it("saturates at the extremes: -m red, +m blue, beyond clamps", () => {
    const s = diverging(2);
    expect(s(-2)).toEqual(RED);
    expect(s(2)).toEqual(BLUE);
    expect(s(-100)).toEqual(RED);
    expect(s(100)).toEqual(BLUE);
    expect(RED).toEqual([178, 24, 43]);
    expect(BLUE).toEqual([33, 102, 172]);
  });

  it("gives negative values a red hue and positive ones a blue hue", () => {
    const s = diverging(1);
    for (const v of [0.05, 0.2, 0.5, 0.8, 1]) {
      const [r, , b] = s(v);
      expect(b).toBeGreaterThan(r);
      const [r2, , b2] = s(-v);
      expect(r2).toBeGreaterThan(b2);
    }
  });

  it("is symmetric: equal magnitudes are equally far from white", () => {
    const s = diverging(3);
    const dist = (c) => Math.hypot(255 - c[0], 255 - c[1], 255 - c[2]);
    for (const v of [0.3, 1, 1.7, 2.9, 3]) {
      expect(Math.abs(dist(s(v)) - dist(s(-v)))).toBeLessThan(dist(s(v)) * 0.25 + 1);
    }
    expect(s.domain).toEqual([-3, 3]);
  });

  it("gets monotonically more saturated away from 0", () => {
    const s = diverging(1);
    let prev = 255 * 3;
    for (let v = 0; v <= 1.0001; v += 0.05) {
      const sum = s(v).reduce((a, b) => a + b, 0);
      expect(sum).toBeLessThanOrEqual(prev);
      prev = sum;
    }
  });

  it("makes everything white when the domain is 0 (nothing changed)", () => {
    expect(diverging(0)(0.5)).toEqual(WHITE);
    expect(diverging(0).domain).toEqual([0, 0]);
  });

  it("symmetricExtent is the max absolute finite value", () => {
    expect(symmetricExtent([1, -3, 2])).toBe(3);
    expect(symmetricExtent(new Float32Array([0.5, -0.25]))).toBe(0.5);
    expect(symmetricExtent([NaN, Infinity, -2])).toBe(2);
    expect(symmetricExtent([])).toBe(0);
  });

  it("legend stops run red → white (middle) → blue", () => {
    const stops = divergingStops();
    expect(stops[0].color).toBe("rgb(178,24,43)");
    expect(stops[stops.length - 1].color).toBe("rgb(33,102,172)");
    const mid = stops.find((s) => s.offset === 0.5);
    expect(mid.color).toBe("rgb(255,255,255)");
  });

  it("density scale: 0 white, more is darker", () => {
    const d = density(100);
    expect(d(0)).toEqual(WHITE);
    expect(d(100)[0]).toBeLessThan(d(10)[0]);
  });
});
