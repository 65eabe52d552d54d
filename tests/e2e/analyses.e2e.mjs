// End-to-end test of the Compare and Health views in headless Debian Chromium, against a running stack.
//
//   node tests/e2e/analyses.e2e.mjs <base-url> <artifacts-dir>
//
// Env: NETLAPSE_E2E_DEAD_RUN = id of a run (written by the pytest wrapper) whose conv1 filter 2 is dead from
// init; NETLAPSE_E2E_SCREENSHOTS=<dir> copies ui-compare.png and ui-health.png there (realistic profile:
// paper-cnn on mnist-10k); NETLAPSE_CHROMIUM (default /usr/bin/chromium).
//
// Two runs are trained through the API (same seed, different optimizers), ticked in the run list and compared:
// the overlay has one line per run with every metric row, the cross-run diff heatmap's pixels are the diverging
// scale of the API's own numbers, the state survives a reload. The Health view's grid pixels are the log scale of
// the API's update ratios, and the dead filter is listed. Exits 0 when every check passed, 1 otherwise.

import { createRequire } from "node:module";
import { mkdirSync, copyFileSync, statSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { inflateSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const requireFromFrontend = createRequire(resolve(here, "../../frontend/package.json"));
const { chromium } = requireFromFrontend("playwright-core");

const BASE = (process.argv[2] ?? "").replace(/\/+$/, "");
const ARTIFACTS = resolve(process.argv[3] ?? "test-artifacts/e2e-analyses");
const DOCS_DIR = process.env.NETLAPSE_E2E_SCREENSHOTS ? resolve(process.env.NETLAPSE_E2E_SCREENSHOTS) : null;
const DEAD_RUN = process.env.NETLAPSE_E2E_DEAD_RUN ?? null;
if (!BASE) {
  console.error("usage: node tests/e2e/analyses.e2e.mjs <base-url> <artifacts-dir>");
  process.exit(2);
}

const REALISTIC = !!DOCS_DIR;
const BASE_RUN = REALISTIC
  ? { model: { preset: "paper-cnn" }, dataset: "mnist-10k", capture: { every: 1 } }
  : { model: { preset: "tiny-cnn" }, dataset: "synthetic", capture: { every: 1 } };
const TRAINING = REALISTIC
  ? { epochs: 2, batch_size: 128, seed: 0, max_train_samples: 2560 }
  : { epochs: 2, batch_size: 128, seed: 0 };
const RUNS = [
  { name: "sgd-momentum", training: { ...TRAINING, optimizer: "sgd", lr: 0.05, momentum: 0.9 } },
  { name: REALISTIC ? "adadelta" : "adam", training: { ...TRAINING, ...(REALISTIC ? { optimizer: "adadelta", lr: 1.0 } : { optimizer: "adam", lr: 0.01 }) } },
];
const TIMEOUT = REALISTIC ? 600_000 : 180_000;
const VIEWPORT = { width: 1280, height: 800 };

// ---------------------------------------------------------------- checks

const failures = [];
let currentStep = "setup";
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;

function check(cond, message, details) {
  if (cond) return true;
  const line = `[${currentStep}] ${message}${details === undefined ? "" : ` — ${typeof details === "string" ? details : JSON.stringify(details).slice(0, 400)}`}`;
  failures.push(line);
  console.log(`  FAIL ${line}`);
  return false;
}

function must(cond, message, details) {
  if (!check(cond, message, details)) throw new Error(`precondition failed: ${message}`);
}

const sameColor = (a, b, tol = 2) => Array.isArray(a) && Array.isArray(b) && [0, 1, 2].every((k) => Math.abs(a[k] - b[k]) <= tol);
const luminance = ([r, g, b]) => 0.2126 * r + 0.7152 * g + 0.0722 * b;

// ---------------------------------------------------------------- PNG (what Chromium writes: 8-bit, not interlaced)

function decodePng(buf) {
  let off = 8;
  let ihdr = null;
  const idat = [];
  while (off + 12 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString("latin1", off + 4, off + 8);
    const body = buf.subarray(off + 8, off + 8 + len);
    if (type === "IHDR") ihdr = { width: body.readUInt32BE(0), height: body.readUInt32BE(4), colorType: body[9] };
    else if (type === "IDAT") idat.push(body);
    else if (type === "IEND") break;
    off += 12 + len;
  }
  const channels = { 2: 3, 6: 4 }[ihdr.colorType];
  const raw = inflateSync(Buffer.concat(idat));
  const stride = ihdr.width * channels;
  const out = Buffer.alloc(ihdr.height * stride);
  for (let y = 0; y < ihdr.height; y++) {
    const f = raw[y * (stride + 1)];
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = out.subarray(y * stride, (y + 1) * stride);
    const prev = y ? out.subarray((y - 1) * stride, y * stride) : null;
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? row[x - channels] : 0;
      const b = prev ? prev[x] : 0;
      const c = prev && x >= channels ? prev[x - channels] : 0;
      let v = src[x];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      row[x] = v & 255;
    }
  }
  return { width: ihdr.width, height: ihdr.height, channels, data: out };
}

function pixel(img, x, y) {
  const p = ((Math.floor(y) + (img.offY ?? 0)) * img.width + Math.floor(x) + (img.offX ?? 0)) * img.channels;
  return [img.data[p], img.data[p + 1], img.data[p + 2]];
}

async function canvasShot(page, testid) {
  const loc = page.locator(`canvas[data-testid=${testid}]`);
  await loc.scrollIntoViewIfNeeded();
  const r = await loc.evaluate((c) => c.getBoundingClientRect().toJSON());
  const img = decodePng(await loc.screenshot());
  img.offX = Math.round(r.x) - Math.floor(r.x);
  img.offY = Math.round(r.y) - Math.floor(r.y);
  return img;
}

/** Centre of flat index i of a conv weight drawn as filter tiles (the documented formula of charts/layout.js). */
function filterCellCentre(layout, i) {
  const [I, kh, kw] = [layout.shape[1] ?? 1, layout.shape[2] ?? 1, layout.shape.slice(3).reduce((a, b) => a * b, 1)];
  const o = Math.floor(i / (I * kh * kw));
  const c = Math.floor(i / (kh * kw)) % I;
  const y = Math.floor(i / kw) % kh;
  const x = i % kw;
  const left = (o % layout.cols) * (layout.tileW + layout.gap) + layout.pad + (c % layout.inCols) * (kw * layout.cell + layout.kgap) + x * layout.cell;
  const top = Math.floor(o / layout.cols) * (layout.tileH + layout.gap) + layout.pad + Math.floor(c / layout.inCols) * (kh * layout.cell + layout.kgap) + y * layout.cell;
  return { x: left + layout.cell / 2, y: top + layout.cell / 2 };
}

// ---------------------------------------------------------------- API

async function api(path, init) {
  const r = await fetch(BASE + "/api" + path, init);
  const text = await r.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  must(r.status < 300, `${init?.method ?? "GET"} ${path} answered ${r.status}`, body);
  return body;
}

async function waitReady(page, testid, timeout = TIMEOUT) {
  await page.waitForSelector(`[data-testid=${testid}][data-state=ready], [data-testid=${testid}][data-state=error]`, { timeout });
  const state = await page.getAttribute(`[data-testid=${testid}]`, "data-state");
  const banner = (await page.locator(`[data-testid=${testid}] [data-testid=error-banner]`).allTextContents()).join(" | ");
  must(state === "ready", `${testid} reached state ${state}`, banner || undefined);
}

const hashParams = (page) => page.evaluate(() => Object.fromEntries(new URLSearchParams(location.hash.split("?")[1] ?? "")));

const shots = [];
async function screenshot(page, view) {
  const file = join(ARTIFACTS, `ui-${view}.png`);
  await page.evaluate(() => {
    document.activeElement?.blur?.();
    window.scrollTo(0, 0);
  });
  const overflow = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  check(overflow.scroll <= overflow.client, `${view}: no horizontal scrolling at ${VIEWPORT.width}×${VIEWPORT.height}`, overflow);
  await page.screenshot({ path: file, fullPage: true });
  shots.push({ view, file, bytes: statSync(file).size });
}

async function step(name, fn, page) {
  currentStep = name;
  const s = Date.now();
  console.log(`▶ ${name} (${elapsed()})`);
  try {
    await fn();
  } catch (e) {
    check(false, `step threw: ${e?.message ?? e}`);
    await page?.screenshot({ path: join(ARTIFACTS, `failed-${name.replace(/\W+/g, "-")}.png`) }).catch(() => {});
  }
  console.log(`  done in ${((Date.now() - s) / 1000).toFixed(1)}s`);
}

// ---------------------------------------------------------------- the scenario

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  console.log(`netlapse Compare/Health e2e · ${BASE} · ${REALISTIC ? "realistic" : "fast"} · artifacts ${ARTIFACTS}`);
  const browser = await chromium.launch({
    executablePath: process.env.NETLAPSE_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  });
  const page = await (await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 })).newPage();
  page.setDefaultTimeout(30_000);
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(`uncaught ${e?.stack ?? e}`));
  const ids = [];

  try {
    await step("1 two runs trained through the API", async () => {
      for (const r of RUNS) {
        const run = await api("/runs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...BASE_RUN, ...r }) });
        ids.push(run.id);
      }
      const deadline = Date.now() + TIMEOUT;
      for (const id of ids) {
        let run;
        do {
          run = await api(`/runs/${id}`);
          if (!["succeeded", "failed", "cancelled"].includes(run.status)) await new Promise((res) => setTimeout(res, 500));
        } while (!["succeeded", "failed", "cancelled"].includes(run.status) && Date.now() < deadline);
        must(run.status === "succeeded", `run ${id} succeeded`, run.error ?? run.status);
      }
    }, page);

    await step("2 tick two runs in the list and compare them", async () => {
      await page.goto(BASE + "/#/runs");
      await page.waitForSelector("[data-testid=runs-table]");
      const btn = page.locator("[data-testid=compare-selected]");
      check(await btn.isDisabled(), "Compare is disabled before two runs are ticked");
      for (const id of ids) await page.check(`[data-testid=run-row][data-run-id="${id}"] [data-testid=run-select]`);
      check(!(await btn.isDisabled()), "Compare is enabled with two runs ticked");
      await btn.click();
      await page.waitForSelector("[data-view=compare]");
      check((await hashParams(page)).runs === ids.join(","), "the URL names both runs in the order ticked", await hashParams(page));
    }, page);

    await step("3 loss/accuracy overlay: one line per run, every metric row", async () => {
      await waitReady(page, "compare-metrics");
      const ov = await api(`/compare/metrics?runs=${ids.join(",")}`);
      for (const [testid, key] of [["overlay-loss", "loss"], ["overlay-accuracy", "accuracy"]]) {
        const paths = await page.$$eval(`svg[data-testid=${testid}] path[data-series]`, (ps) => ps.map((p) => ({ name: p.dataset.series, n: Number(p.dataset.points), d: p.getAttribute("d") })));
        check(paths.length === 2, `${testid} draws one line per run`, paths.length);
        paths.forEach((p, i) => {
          const want = ov[key][i].filter((v) => v !== null).length;
          check(p.n === want && want > 0, `${testid}: run ${i} has every one of its ${want} rows`, { drawn: p.n, want });
        });
        const strokes = await page.$$eval(`svg[data-testid=${testid}] path[data-series]`, (ps) => ps.map((p) => p.getAttribute("stroke")));
        check(new Set(strokes).size === 2, `${testid}: the runs have different colours`, strokes);
      }
    }, page);

    let diffInfo = null;
    await step("4 cross-run diff heatmap: pixels are colorOf(B − A) of the API's numbers", async () => {
      await waitReady(page, "compare-diff");
      const q = await hashParams(page);
      check(q.tensor && q.sa !== undefined && q.sb !== undefined, "the tensor and both steps are in the URL", q);
      const d = await api(`/compare/diff/${q.tensor}?a=${ids[0]}:${q.sa}&b=${ids[1]}:${q.sb}`);
      diffInfo = { tensor: q.tensor, sa: q.sa, sb: q.sb, d };
      const info = await page.evaluate(() => {
        const c = document.querySelector("canvas[data-testid=heatmap-compare]");
        return c && { layout: JSON.parse(c.dataset.layout), domain: Number(c.dataset.domain), n: Number(c.dataset.n), a: c.dataset.a, b: c.dataset.b };
      });
      must(info, "a heatmap-compare canvas is drawn");
      check(info.a === `${ids[0]}:${q.sa}` && info.b === `${ids[1]}:${q.sb}`, "the canvas names the two moments", info);
      const values = d.data;
      check(info.n === values.length, "one cell per element of the API's difference", { canvas: info.n, api: values.length });
      const m = Math.max(...values.map(Math.abs));
      check(Math.abs(info.domain - m) <= 1e-6 * m, "the scale is symmetric with m = max |B − A|", { canvas: info.domain, api: m });
      must(info.layout.kind === "filters", "a conv weight is drawn as filter tiles", info.layout.kind);
      const expected = await page.evaluate((vs) => vs.map((v) => window.__netlapse.heatmaps["heatmap-compare"].colorOf(v)), values);
      const shot = await canvasShot(page, "heatmap-compare");
      let bad = 0;
      let signs = { pos: 0, neg: 0, zero: 0 };
      for (let i = 0; i < values.length && bad < 5; i++) {
        const c = filterCellCentre(info.layout, i);
        const px = pixel(shot, c.x, c.y);
        if (!check(sameColor(px, expected[i]), `pixel of element ${i} (${values[i]}) is colorOf(value) ±2`, { screen: px, expected: expected[i] })) bad++;
        // Independent of the app's scale: the sign decides the hue wherever the value is visible at all (≥ 2 % of m;
        // smaller ones round to white).
        const visible = Math.abs(values[i]) >= 0.02 * m;
        if (values[i] > 0) (signs.pos += 1), !visible || check(px[2] > px[0], `element ${i} (> 0, higher in B) is blue`, px) || bad++;
        else if (values[i] < 0) (signs.neg += 1), !visible || check(px[0] > px[2], `element ${i} (< 0, lower in B) is red`, px) || bad++;
        else (signs.zero += 1), check(sameColor(px, [255, 255, 255]), `element ${i} (= 0) is white`, px) || bad++;
      }
      check(signs.pos > 0 && signs.neg > 0, "the two runs differ in both directions", signs);
      const stats = await page.textContent("[data-testid=compare-diff-stats]");
      check(stats.includes(`${d.stats.increased} higher in B`) && stats.includes(`${d.stats.decreased} lower`), "the stats line carries the API's counts", stats);
    }, page);

    await step("5 state in the URL: another step of A, reload, same view", async () => {
      const stepsA = (await api(`/runs/${ids[0]}/steps`)).steps;
      const other = stepsA[Math.floor(stepsA.length / 2)];
      await page.selectOption("[data-testid=compare-step-a]", String(other));
      await page.waitForFunction((s) => document.querySelector("canvas[data-testid=heatmap-compare]")?.dataset.a?.endsWith(`:${s}`), other);
      await waitReady(page, "compare-diff");
      check((await hashParams(page)).sa === String(other), "the URL follows the chosen step", await hashParams(page));
      const url = page.url();
      await page.reload();
      await waitReady(page, "compare-diff");
      check(page.url() === url, "a reload keeps the address");
      check((await page.getAttribute("canvas[data-testid=heatmap-compare]", "data-a")) === `${ids[0]}:${other}`, "a reload shows the same moment of run A");
      await page.selectOption("[data-testid=compare-step-a]", String(diffInfo.sa));
      await page.waitForFunction((s) => document.querySelector("canvas[data-testid=heatmap-compare]")?.dataset.a?.endsWith(`:${s}`), diffInfo.sa);
      await page.waitForFunction((s) => document.querySelector("[data-testid=compare-activations] figcaption")?.textContent.includes(`step ${s}`), diffInfo.sa);
      check(true, "the activations follow the chosen step of A");
    }, page);

    await step("6 activations of both runs side by side", async () => {
      await waitReady(page, "compare-activations");
      for (const t of ["activation-a", "activation-b", "activation-compare-diff"]) check((await page.locator(`canvas[data-testid=${t}]`).count()) === 1, `${t} is drawn`);
      const q = await hashParams(page);
      const r = await api("/compare/activations", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ a: `${ids[0]}:${q.sa}`, b: `${ids[1]}:${q.sb}`, layer: q.layer, per_label: 20 }),
      });
      const n = await page.getAttribute("canvas[data-testid=activation-compare-diff]", "data-n");
      check(Number(n) === r.difference.flat().length, "the difference matrix has filters × labels cells", { canvas: n, api: r.difference.flat().length });
      await screenshot(page, "compare");
    }, page);

    const healthOf = DEAD_RUN ?? ids[0];
    await step("7 health view: the update-ratio grid is the log scale of the API's ratios", async () => {
      await page.goto(`${BASE}/#/runs/${ids[0]}/health`);
      for (const t of ["health-ratio", "health-curves", "health-units", "health-top"]) await waitReady(page, t);
      const hd = await api(`/runs/${ids[0]}/health?windows=8&top_k=5`);
      const rows = hd.tensors.map((t, i) => ({ name: t.name, v: hd.update_ratio[i] })).filter((r) => r.v.some((x) => x !== null));
      const names = JSON.parse(await page.getAttribute("canvas[data-testid=health-ratio-grid]", "data-rows"));
      check(JSON.stringify(names) === JSON.stringify(rows.map((r) => r.name)), "one row per tensor, in the API's order", names);
      const layout = JSON.parse(await page.getAttribute("canvas[data-testid=health-ratio-grid]", "data-layout"));
      check(layout.cols === hd.steps.length, "one column per captured step", { cols: layout.cols, steps: hd.steps.length });
      const cols = layout.cols;
      const values = rows.flatMap((r) => r.v);
      const expected = await page.evaluate((vs) => vs.map((v) => window.__netlapse.heatmaps["health-ratio-grid"].colorOf(v)), values);
      const shot = await canvasShot(page, "health-ratio-grid");
      let bad = 0;
      for (let i = 0; i < values.length && bad < 5; i++) {
        const r = Math.floor(i / cols);
        const c = i % cols;
        const px = pixel(shot, layout.left + c * layout.cellW + layout.cellW / 2, r * layout.cellH + layout.cellH / 2);
        if (!check(sameColor(px, expected[i]), `cell (${rows[r].name}, step ${hd.steps[c]}) is the scale's colour of ${values[i]}`, { screen: px, expected: expected[i] })) bad++;
        if (c === 0) check(sameColor(px, [160, 160, 160]), "the first step has no update: grey", px) || bad++;
      }
      // The log scale is monotone: within a row, a larger ratio is never lighter.
      for (const [ri, r] of rows.entries()) {
        const cells = r.v.map((v, c) => ({ v, l: luminance(pixel(shot, layout.left + c * layout.cellW + layout.cellW / 2, ri * layout.cellH + layout.cellH / 2)) })).filter((x) => x.v > 0);
        const hi = cells.reduce((a, b) => (b.v > a.v ? b : a), cells[0]);
        const lo = cells.reduce((a, b) => (b.v < a.v ? b : a), cells[0]);
        if (hi.v > lo.v * 1.5) check(hi.l <= lo.l, `${r.name}: its largest ratio is drawn darker than its smallest`, { hi, lo });
      }
      const note = await page.textContent("[data-testid=health-note]");
      check(note.includes(hd.updates.note), "the view says what an update means for this optimizer", note);
      check(!/\bgradient norm\b/i.test(await page.textContent("[data-view=health]")), "no update is labelled a gradient");
      const links = await page.$$eval("[data-testid=moved-link]", (as) => as.map((a) => a.getAttribute("href")));
      check(links.length > 0 && links.every((h) => h.startsWith(`#/runs/${ids[0]}/explore?tensor=`)), "top-moved filters link into the explorer", links.slice(0, 3));
      await page.click("[data-testid=moved-link] >> nth=0");
      await page.waitForSelector("[data-view=explorer]");
      check((await hashParams(page)).tensor === new URLSearchParams(links[0].split("?")[1]).get("tensor"), "the link opens the explorer on that tensor");
    }, page);

    await step("8 health view of a run with a dead filter lists it, and no healthy one", async () => {
      await page.goto(`${BASE}/#/runs/${healthOf}/health`);
      for (const t of ["health-ratio", "health-curves", "health-units", "health-top"]) await waitReady(page, t);
      if (DEAD_RUN) {
        const frozen = await page.$$eval("[data-testid=frozen-row]", (rs) => rs.map((r) => `${r.dataset.layer}:${r.dataset.unit}`));
        const dead = await page.$$eval("[data-testid=dead-row]", (rs) => rs.map((r) => `${r.dataset.layer}:${r.dataset.unit}`));
        check(frozen.includes("conv1:2") && frozen.filter((f) => f.startsWith("conv1:")).length === 1, "conv1 filter 2, and only it of conv1, is frozen", frozen);
        check(dead.includes("conv1:2") && dead.filter((f) => f.startsWith("conv1:")).length === 1, "conv1 filter 2, and only it of conv1, is dead", dead);
        check((await page.getAttribute("[data-testid=health-note]", "data-scaled-gradient")) === "true", "plain SGD: the view says the update is -lr times the gradient");
      }
      if (REALISTIC) {
        // The README shows the real run's health, not the crafted one.
        await page.goto(`${BASE}/#/runs/${ids[0]}/health`);
        for (const t of ["health-ratio", "health-curves", "health-units", "health-top"]) await waitReady(page, t);
      }
      await screenshot(page, "health");
    }, page);
  } finally {
    currentStep = "console";
    check(consoleErrors.length === 0, `no console errors (${consoleErrors.length})`, consoleErrors.slice(0, 5));
    await browser.close();
  }
  if (DOCS_DIR && failures.length === 0) {
    mkdirSync(DOCS_DIR, { recursive: true });
    for (const s of shots) copyFileSync(s.file, join(DOCS_DIR, `ui-${s.view}.png`));
    console.log(`copied ${shots.length} screenshots to ${DOCS_DIR}`);
  }
  currentStep = "screenshots";
  for (const v of ["compare", "health"]) check(shots.some((s) => s.view === v), `a screenshot of ${v} was taken`);
  console.log(`\n${failures.length ? `${failures.length} check(s) FAILED` : "all checks passed"} in ${elapsed()}`);
  for (const f of failures) console.log(`  ✗ ${f}`);
  return failures.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
