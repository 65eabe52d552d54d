// The one diverging red–white–blue scale of netlapse, and the few other colours charts use.
// 0 maps to exactly white; negative (decrease) is red, positive (increase) is blue; the domain
// is always symmetric [-m, m] so equal magnitudes get equal saturation on both sides.

export const WHITE = [255, 255, 255];
export const RED = [178, 24, 43]; // most negative
export const BLUE = [33, 102, 172]; // most positive
export const NAN_COLOR = [160, 160, 160];

// RdBu-like stops from white outwards, so mid values stay readable; the ends are saturated.
const NEG_STOPS = [WHITE, [253, 219, 199], [244, 165, 130], [214, 96, 77], RED];
const POS_STOPS = [WHITE, [209, 229, 240], [146, 197, 222], [67, 147, 195], BLUE];

function ramp(stops, t) {
  const n = stops.length - 1;
  const x = t * n;
  const i = Math.min(n - 1, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [
    Math.round(a[0] + (b[0] - a[0]) * f),
    Math.round(a[1] + (b[1] - a[1]) * f),
    Math.round(a[2] + (b[2] - a[2]) * f),
  ];
}

/** Largest absolute finite value in `values` (0 when there is none): the symmetric domain bound. */
export function symmetricExtent(values) {
  let m = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]);
    if (a > m && Number.isFinite(a)) m = a;
  }
  return m;
}

/**
 * Diverging scale over [-m, m]. Returns `v => [r, g, b]` (0..255 integers).
 * `scale.domain` is [-m, m]; `scale.css(v)` gives an `rgb(...)` string.
 * With m = 0 (all values equal zero) everything is white.
 */
export function diverging(m) {
  const bound = Number.isFinite(m) && m > 0 ? m : 0;
  const scale = (v) => {
    if (v === 0) return WHITE.slice();
    if (!Number.isFinite(v)) return NAN_COLOR.slice();
    if (bound === 0) return WHITE.slice();
    const t = Math.min(1, Math.abs(v) / bound);
    return ramp(v < 0 ? NEG_STOPS : POS_STOPS, t);
  };
  scale.domain = [bound === 0 ? 0 : -bound, bound];
  scale.css = (v) => {
    const [r, g, b] = scale(v);
    return `rgb(${r},${g},${b})`;
  };
  return scale;
}

/** Colour-stop list (offset 0..1 over [-m, m]) for an SVG/CSS gradient legend of `diverging`. */
export function divergingStops() {
  const out = [];
  const neg = NEG_STOPS.slice().reverse();
  neg.forEach((c, i) => out.push({ offset: (i / (neg.length - 1)) * 0.5, color: `rgb(${c.join(",")})` }));
  POS_STOPS.slice(1).forEach((c, i) =>
    out.push({ offset: 0.5 + ((i + 1) / (POS_STOPS.length - 1)) * 0.5, color: `rgb(${c.join(",")})` }),
  );
  return out;
}

/** Sequential density scale (counts → white..dark blue-grey), log-compressed; 0 stays white. */
export function density(maxCount) {
  const lm = Math.log1p(Math.max(0, maxCount));
  return (count) => {
    if (!(count > 0) || lm === 0) return WHITE.slice();
    const t = Math.log1p(count) / lm;
    return [
      Math.round(255 + (37 - 255) * t),
      Math.round(255 + (52 - 255) * t),
      Math.round(255 + (80 - 255) * t),
    ];
  };
}

/** Grey-level for input images (0 → white background, 1 → black ink, as digits are usually shown). */
export function ink(v, lo, hi) {
  const t = hi > lo ? Math.max(0, Math.min(1, (v - lo) / (hi - lo))) : 0;
  const g = Math.round(255 * (1 - t));
  return [g, g, g];
}

/** Neutral colour for bars and lines that are not value-coded. */
export const NEUTRAL = "#4b5563";
export const ACCENT = "#2563eb";
export const SERIES = { loss: "#b45309", accuracy: "#2563eb", val: "#059669" };

/** One colour per compared run (up to 8), in selection order; run i is always RUN_COLORS[i]. */
export const RUN_COLORS = [
  "#2563eb",
  "#d97706",
  "#059669",
  "#7c3aed",
  "#db2777",
  "#0891b2",
  "#65a30d",
  "#6b7280",
];

// Sequential stops for magnitudes on a log scale (light yellow → dark blue), e.g. update-to-weight ratios.
const SEQ_STOPS = [
  [255, 255, 217],
  [199, 233, 180],
  [65, 182, 196],
  [34, 94, 168],
  [8, 29, 88],
];

/**
 * Log-sequential scale over [lo, hi] (both > 0): v ↦ position of log10(v) between log10(lo) and log10(hi), clamped.
 * Values ≤ 0 or not finite (no update, a null) get NAN_COLOR. `scale.domain` is [lo, hi].
 */
export function logSequential(lo, hi) {
  const a = Math.log10(lo > 0 ? lo : 1e-12);
  const b = Math.log10(hi > 0 ? hi : 1);
  const span = b > a ? b - a : 1;
  const scale = (v) => {
    if (!(v > 0) || !Number.isFinite(v)) return NAN_COLOR.slice();
    const t = Math.max(0, Math.min(1, (Math.log10(v) - a) / span));
    return ramp(SEQ_STOPS, t);
  };
  scale.domain = [10 ** a, 10 ** b];
  scale.stops = () =>
    SEQ_STOPS.map((c, i) => ({ offset: i / (SEQ_STOPS.length - 1), color: `rgb(${c.join(",")})` }));
  return scale;
}
