// End-to-end test of the netlapse web UI in headless Debian Chromium, against a running stack.
//
//   node tests/e2e/ui.e2e.mjs <base-url> <artifacts-dir>
//
// Drives the real UI the way a user would (new-run form → live training → explorer → scatter →
// activations → exports → shareable links → the run list tour) and checks what is drawn against
// the API's own numbers. Exits 0 when every check passed, 1 otherwise (each failure is printed).
// Screenshots of every view land in <artifacts-dir>; with NETLAPSE_E2E_SCREENSHOTS=<dir> they are
// also copied there as ui-<view>.png (the README's images), using the realistic profile below.
//
// Env: NETLAPSE_E2E_PROFILE=fast|realistic (default fast; realistic when NETLAPSE_E2E_SCREENSHOTS
// is set), NETLAPSE_CHROMIUM (default /usr/bin/chromium).

import { createRequire } from "node:module";
import { mkdirSync, readFileSync, writeFileSync, copyFileSync, statSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { inflateSync } from "node:zlib";
import * as zlib from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
// playwright-core is a devDependency of the frontend: resolve it from frontend/node_modules.
const requireFromFrontend = createRequire(resolve(here, "../../frontend/package.json"));
const { chromium } = requireFromFrontend("playwright-core");

const BASE = (process.argv[2] ?? process.env.NETLAPSE_E2E_BASE ?? "").replace(/\/+$/, "");
const ARTIFACTS = resolve(process.argv[3] ?? "test-artifacts/e2e");
const DOCS_DIR = process.env.NETLAPSE_E2E_SCREENSHOTS ? resolve(process.env.NETLAPSE_E2E_SCREENSHOTS) : null;
const PROFILE_NAME = process.env.NETLAPSE_E2E_PROFILE ?? (DOCS_DIR ? "realistic" : "fast");
if (!BASE) {
  console.error("usage: node tests/e2e/ui.e2e.mjs <base-url> <artifacts-dir>");
  process.exit(2);
}

// What run the form creates. fast: seconds on 2 CPU cores; realistic: the paper's CNN on real digits.
const PROFILES = {
  fast: {
    name: "e2e-tiny-synthetic",
    dataset: "synthetic",
    preset: "tiny-cnn",
    training: { epochs: 3, batch_size: 128, optimizer: "adam", lr: 0.01, seed: 0 },
    runTimeoutMs: 180_000,
    analysisTimeoutMs: 60_000,
  },
  realistic: {
    name: "paper-cnn-mnist",
    dataset: "mnist-10k",
    preset: "paper-cnn",
    training: { epochs: 1, batch_size: 128, optimizer: "adadelta", lr: 1.0, seed: 0, max_train_samples: 5120 },
    runTimeoutMs: 600_000,
    analysisTimeoutMs: 180_000,
  },
};
const P = PROFILES[PROFILE_NAME];
if (!P) {
  console.error(`unknown NETLAPSE_E2E_PROFILE ${PROFILE_NAME}`);
  process.exit(2);
}

const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"];
const VIEWPORT = { width: 1280, height: 800 };
const UNPROCESSABLE = /Failed to load resource: the server responded with a status of 422/;

// ---------------------------------------------------------------- checks and reporting

const failures = [];
let currentStep = "setup";
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;

/** A soft assertion: records a failure and goes on, so one run reports every broken thing. */
function check(cond, message, details) {
  if (cond) return true;
  const line = `[${currentStep}] ${message}${details === undefined ? "" : ` — ${typeof details === "string" ? details : JSON.stringify(details)}`}`;
  failures.push(line);
  console.log(`  FAIL ${line}`);
  return false;
}

/** A hard assertion: the step cannot go on without it. */
function must(cond, message, details) {
  if (!check(cond, message, details)) throw new Error(`precondition failed: ${message}`);
}

function close(a, b, tol) {
  return Number.isFinite(a) && Number.isFinite(b) && Math.abs(a - b) <= tol;
}

function sameColor(a, b, tol = 2) {
  return Array.isArray(a) && Array.isArray(b) && [0, 1, 2].every((k) => Math.abs(a[k] - b[k]) <= tol);
}

// ---------------------------------------------------------------- PNG and NPY parsing

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Decode an 8-bit, non-interlaced PNG (what Chromium writes) → {width, height, channels, data}; throws if invalid. */
function decodePng(buf) {
  if (buf.length < 33 || !buf.subarray(0, 8).equals(PNG_SIGNATURE)) throw new Error("not a PNG: bad signature");
  let off = 8;
  let ihdr = null;
  const idat = [];
  let sawEnd = false;
  while (off + 12 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString("latin1", off + 4, off + 8);
    const body = buf.subarray(off + 8, off + 8 + len);
    if (body.length !== len) throw new Error(`truncated ${type} chunk`);
    if (typeof zlib.crc32 === "function") {
      const crc = buf.readUInt32BE(off + 8 + len);
      if (zlib.crc32(buf.subarray(off + 4, off + 8 + len)) >>> 0 !== crc) throw new Error(`bad CRC in ${type}`);
    }
    if (!ihdr && type !== "IHDR") throw new Error("first chunk is not IHDR");
    if (type === "IHDR") {
      if (len !== 13) throw new Error("IHDR length is not 13");
      ihdr = { width: body.readUInt32BE(0), height: body.readUInt32BE(4), depth: body[8], colorType: body[9], interlace: body[12] };
    } else if (type === "IDAT") idat.push(body);
    else if (type === "IEND") {
      sawEnd = true;
      break;
    }
    off += 12 + len;
  }
  if (!ihdr || !sawEnd || !idat.length) throw new Error("missing IHDR, IDAT or IEND");
  const { width, height, depth, colorType, interlace } = ihdr;
  if (!(width > 0 && height > 0)) throw new Error(`IHDR size ${width}x${height}`);
  const channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[colorType];
  if (depth !== 8 || !channels || interlace !== 0) return { ...ihdr, channels: null, data: null }; // valid, not decodable here
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  if (raw.length < height * (stride + 1)) throw new Error("IDAT too short for the image size");
  const out = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
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
      } else if (f !== 0) throw new Error(`bad filter type ${f}`);
      row[x] = v & 255;
    }
  }
  return { width, height, channels, data: out };
}

function pixel(img, x, y) {
  const p = ((Math.floor(y) + (img.offY ?? 0)) * img.width + Math.floor(x) + (img.offX ?? 0)) * img.channels;
  if (img.channels >= 3) return [img.data[p], img.data[p + 1], img.data[p + 2]];
  return [img.data[p], img.data[p], img.data[p]];
}

function countPixels(img, pred) {
  let n = 0;
  for (let y = 0; y < img.height; y++) for (let x = 0; x < img.width; x++) if (pred(pixel(img, x, y))) n++;
  return n;
}

/** Parse a .npy file (v1–v3, little-endian float32/float64) → {shape, descr, fortran, values}. */
function parseNpy(buf) {
  if (!(buf[0] === 0x93 && buf.toString("latin1", 1, 6) === "NUMPY")) throw new Error("bad .npy magic");
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString("latin1", start, start + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1] === "True";
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || shapeText === undefined) throw new Error(`bad .npy header ${header}`);
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const dataOff = start + hlen;
  if (dataOff % 16 !== 0) throw new Error(`.npy data offset ${dataOff} is not 16-aligned`);
  const n = shape.reduce((a, b) => a * b, 1);
  const size = { "<f4": 4, "<f8": 8 }[descr];
  if (!size) throw new Error(`unexpected dtype ${descr}`);
  if (buf.length - dataOff !== n * size) throw new Error(`.npy body is ${buf.length - dataOff} bytes, shape needs ${n * size}`);
  const body = buf.subarray(dataOff);
  const values = Array.from({ length: n }, (_, i) => (size === 4 ? body.readFloatLE(i * 4) : body.readDoubleLE(i * 8)));
  return { shape, descr, fortran, values };
}

// ---------------------------------------------------------------- API (for the expected numbers)

async function api(path, init) {
  const r = await fetch(BASE + "/api" + path, init);
  const text = await r.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: r.status, body };
}

async function apiOk(path, init) {
  for (let i = 0; i < 600; i++) {
    const r = await api(path, init);
    if (r.status === 202) {
      await new Promise((res) => setTimeout(res, 250));
      continue;
    }
    must(r.status === 200, `GET/POST ${path} answered ${r.status}`, r.body);
    return r.body;
  }
  throw new Error(`${path} stayed 202`);
}

const flat = (data) => (Array.isArray(data) ? data.flat(Infinity) : []);

// ---------------------------------------------------------------- browser helpers

const consoleErrors = [];
let expected422 = 0;
let seen422 = 0;

function watchConsole(page, label) {
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    if (UNPROCESSABLE.test(text)) {
      seen422++;
      return;
    }
    consoleErrors.push(`${label}: ${text}`);
  });
  page.on("pageerror", (err) => consoleErrors.push(`${label}: uncaught ${err?.stack ?? err}`));
}

const shots = [];
async function screenshot(page, view, { keepScroll = false } = {}) {
  const file = join(ARTIFACTS, `ui-${view}.png`);
  await page.evaluate((keep) => {
    document.activeElement?.blur?.();
    if (!keep) window.scrollTo(0, 0);
  }, keepScroll);
  // Works at 1280×800: nothing wider than the viewport.
  const overflow = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  check(overflow.scroll <= overflow.client, `${view}: no horizontal scrolling at ${VIEWPORT.width}×${VIEWPORT.height}`, overflow);
  await page.screenshot({ path: file });
  shots.push({ view, file, bytes: statSync(file).size });
}

const sel = {
  field: (path) => `[data-testid="field-${path}"]`,
  error: (path) => `[data-testid="error-${path}"]`,
};

async function attr(page, selector, name) {
  return page.locator(selector).first().getAttribute(name);
}

async function hashParams(page) {
  return page.evaluate(() => {
    const h = location.hash.replace(/^#/, "");
    const q = h.indexOf("?");
    return { path: q >= 0 ? h.slice(0, q) : h, params: Object.fromEntries(new URLSearchParams(q >= 0 ? h.slice(q + 1) : "")) };
  });
}

/** Choose a tensor in the explorer's tree picker (search, then click its item). */
async function pickTensor(page, name) {
  await page.click("[data-testid=tensor-picker]");
  await page.fill("[data-testid=tensor-search]", name);
  await page.click(`[data-testid=tensor-item][data-name="${name}"]`);
}

async function waitReady(page, testid, timeout = P.analysisTimeoutMs) {
  await page.waitForSelector(`[data-testid=${testid}][data-state=ready], [data-testid=${testid}][data-state=error], [data-testid=${testid}][data-state=empty]`, { timeout });
  const state = await attr(page, `[data-testid=${testid}]`, "data-state");
  const banner = (await page.locator(`[data-testid=${testid}] [data-testid=error-banner]`).allTextContents()).join(" | ");
  must(state === "ready", `${testid} reached state ${state}`, banner || undefined);
}

/** The page's heatmap geometry and colours, read from the canvas' data-* attributes and the documented hooks. */
async function heatmapInfo(page, testid) {
  return page.evaluate((tid) => {
    const c = document.querySelector(`canvas[data-testid=${tid}]`);
    if (!c) return null;
    const r = c.getBoundingClientRect();
    return { layout: JSON.parse(c.dataset.layout), domain: Number(c.dataset.domain), n: Number(c.dataset.n), from: c.dataset.from, to: c.dataset.to, step: c.dataset.step, width: c.width, height: c.height, rect: { x: r.x, y: r.y, w: r.width, h: r.height } };
  }, testid);
}

/** Centre of flat index i from the documented filter-grid / matrix formula (independent of the app's own layout code). */
function cellCentre(layout, i) {
  if (layout.kind === "filters") {
    const [O, I, kh, kw] = [layout.shape[0], layout.shape[1] ?? 1, layout.shape[2] ?? 1, layout.shape.slice(3).reduce((a, b) => a * b, 1)];
    void O;
    const o = Math.floor(i / (I * kh * kw));
    const c = Math.floor(i / (kh * kw)) % I;
    const y = Math.floor(i / kw) % kh;
    const x = i % kw;
    const left = (o % layout.cols) * (layout.tileW + layout.gap) + layout.pad + (c % layout.inCols) * (kw * layout.cell + layout.kgap) + x * layout.cell;
    const top = Math.floor(o / layout.cols) * (layout.tileH + layout.gap) + layout.pad + Math.floor(c / layout.inCols) * (kh * layout.cell + layout.kgap) + y * layout.cell;
    return { x: left + layout.cell / 2, y: top + layout.cell / 2 };
  }
  return null;
}

/**
 * Screenshot of a canvas as drawn on screen, decoded. Layout may put the canvas at a fractional
 * CSS position: the element shot starts at ⌊x⌋ while Chromium paints the canvas snapped to
 * round(x), so pixel() reads (x, y) of the canvas at (x + offX, y + offY) of the shot.
 */
async function canvasShot(page, testid) {
  const loc = page.locator(`canvas[data-testid=${testid}]`);
  await loc.scrollIntoViewIfNeeded();
  const r = await loc.evaluate((c) => c.getBoundingClientRect().toJSON());
  const img = decodePng(await loc.screenshot());
  img.offX = Math.round(r.x) - Math.floor(r.x);
  img.offY = Math.round(r.y) - Math.floor(r.y);
  return img;
}

async function download(page, locator) {
  const [dl] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), locator.click()]);
  const path = await dl.path();
  const bytes = readFileSync(path);
  const last = await page.evaluate(() => window.__netlapse?.lastExport ?? null);
  return { name: dl.suggestedFilename(), bytes, last };
}

// ---------------------------------------------------------------- the scenario

const ctx = { runId: null, total: null, tensors: null, conv1: null, diff: null };

async function step(name, fn) {
  currentStep = name;
  const s = Date.now();
  console.log(`▶ ${name} (${elapsed()})`);
  try {
    await fn();
  } catch (e) {
    check(false, `step threw: ${e?.message ?? e}`);
    try {
      await globalThis.__page?.screenshot({ path: join(ARTIFACTS, `failed-${name.replace(/\W+/g, "-")}.png`) });
    } catch {
      // the page itself may be gone
    }
  }
  console.log(`  done in ${((Date.now() - s) / 1000).toFixed(1)}s`);
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  console.log(`netlapse UI e2e · ${BASE} · profile ${PROFILE_NAME} · artifacts ${ARTIFACTS}`);
  const browser = await chromium.launch({ executablePath: process.env.NETLAPSE_CHROMIUM || "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS });
  const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1, acceptDownloads: true });
  context.setDefaultTimeout(30_000);
  const page = await context.newPage();
  globalThis.__page = page;
  watchConsole(page, "main");

  try {
    await step("1 runs list and new-run form with a validation error", async () => {
      await page.goto(BASE + "/");
      await page.waitForSelector("[data-testid=health][data-state=ok]");
      await page.waitForSelector("[data-view=runs] [data-testid=runs-table], [data-view=runs] [data-testid=runs-empty]");
      check(await page.locator("[data-testid=new-run]").isVisible(), "the runs list offers a New run button");
      await page.click("[data-testid=new-run]");
      await page.waitForSelector("[data-testid=newrun-form]");
      check((await hashParams(page)).path === "/new", "New run leads to #/new");

      await page.selectOption(sel.field("dataset"), P.dataset);
      await page.selectOption(sel.field("model.preset"), P.preset);
      await page.fill(sel.field("name"), P.name);
      await page.fill(sel.field("training.epochs"), String(P.training.epochs));
      await page.fill(sel.field("training.batch_size"), String(P.training.batch_size));
      await page.selectOption(sel.field("training.optimizer"), P.training.optimizer);
      await page.fill(sel.field("training.seed"), String(P.training.seed));
      if (P.training.max_train_samples) await page.fill(sel.field("training.max_train_samples"), String(P.training.max_train_samples));
      await page.fill(sel.field("capture.every"), "1");
      // A learning rate of 0 is refused by the API; its message must appear beside the field.
      await page.fill(sel.field("training.lr"), "0");
      expected422++;
      const [bad] = await Promise.all([page.waitForResponse((r) => r.url().endsWith("/api/runs") && r.request().method() === "POST"), page.click("[data-testid=submit-run]")]);
      must(bad.status() === 422, `lr = 0 answered ${bad.status()}, not 422`);
      const detail = (await bad.json()).detail;
      const lrMsg = detail.find((d) => d.loc?.join(".") === "body.training.lr")?.msg;
      must(!!lrMsg, "the API's 422 names training.lr", detail);
      const slot = page.locator(sel.error("training.lr"));
      await slot.waitFor({ state: "visible" });
      check((await slot.textContent()).includes(lrMsg), "error-training.lr shows the API's message", { shown: await slot.textContent(), api: lrMsg });
      check((await attr(page, sel.field("training.lr"), "aria-invalid")) === "true", "the lr field is marked aria-invalid");
      const lrBox = await page.locator(sel.field("training.lr")).boundingBox();
      const slotBox = await slot.boundingBox();
      check(lrBox && slotBox && Math.abs(slotBox.x - lrBox.x) < 40 && slotBox.y >= lrBox.y && slotBox.y - (lrBox.y + lrBox.height) < 60, "the message sits right under its field", { lrBox, slotBox });
      check(await page.locator("[data-testid=newrun-form] [data-testid=error-banner]").isVisible(), "a summary banner says the server refused the run");
      const otherErrors = (await page.locator("[data-testid=newrun-form] .field-error").allTextContents()).filter((t) => t.trim()).length;
      check(otherErrors === 1, "only the lr field carries an error", otherErrors);
      check((await hashParams(page)).path === "/new", "a refused run stays on the form");
      await screenshot(page, "new-run", { keepScroll: true }); // the form scrolled the refused field into view
    });

    await step("2 create the run through the form and watch it train live", async () => {
      await page.fill(sel.field("training.lr"), String(P.training.lr));
      const [created] = await Promise.all([page.waitForResponse((r) => r.url().endsWith("/api/runs") && r.request().method() === "POST"), page.click("[data-testid=submit-run]")]);
      must(created.status() === 201, `the corrected form answered ${created.status()}`, await created.text());
      const run = await created.json();
      ctx.runId = run.id;
      for (const [k, v] of Object.entries(P.training)) check(run.training?.[k] === v, `the run was created with training.${k} = ${v}`, run.training?.[k]);
      check(run.dataset === P.dataset && (run.preset === P.preset || run.model?.preset === P.preset), "the run has the chosen dataset and preset", { dataset: run.dataset, preset: run.preset });
      await page.waitForFunction((id) => location.hash === `#/runs/${id}`, run.id);
      await page.waitForSelector("[data-testid=live-view] [data-testid=run-status]");
      // Record what the progress bar shows while training, to see it move (not only jump to 100 %).
      await page.evaluate(() => {
        window.__e2eProgress = [];
        const tick = () => {
          const v = document.querySelector("[data-testid=live-view] [data-testid=progress]")?.getAttribute("aria-valuenow");
          const pts = document.querySelector("[data-testid=live-view]")?.dataset.stepPoints;
          const last = window.__e2eProgress.at(-1);
          if (v !== undefined && (!last || last.v !== v || last.pts !== pts)) window.__e2eProgress.push({ v, pts });
        };
        window.__e2eTimer = setInterval(tick, 40);
      });
      let liveShot = false;
      if (PROFILE_NAME === "realistic") {
        // The README's live view: mid-training, curves growing, ETA and Cancel visible.
        const total = await page.waitForFunction(() => {
          const v = document.querySelector("[data-testid=live-view]");
          const p = Number(document.querySelector("[data-testid=progress]")?.getAttribute("aria-valuenow"));
          return v?.dataset.final !== "true" && p >= 55 ? true : v?.dataset.final === "true" ? "late" : false;
        }, null, { timeout: P.runTimeoutMs, polling: 200 });
        if ((await total.jsonValue()) === true) {
          await screenshot(page, "live");
          liveShot = true;
        }
      }
      await page.waitForSelector("[data-testid=live-view][data-final=true]", { timeout: P.runTimeoutMs });
      await page.waitForSelector("[data-testid=run-summary]");
      const progress = await page.evaluate(() => {
        clearInterval(window.__e2eTimer);
        return window.__e2eProgress;
      });
      const status = await attr(page, "[data-testid=live-view] [data-testid=run-status]", "data-status");
      must(status === "succeeded", `the run finished ${status}`, (await page.locator("[data-testid=run-error]").allTextContents()).join(" "));
      const apiRun = await apiOk(`/runs/${ctx.runId}`);
      ctx.total = apiRun.progress.total_steps;
      const metrics = await apiOk(`/runs/${ctx.runId}/metrics`);
      const steps = metrics.steps.map((s) => s.step);
      check(ctx.total > 0 && steps.length === ctx.total, "the API has one metrics point per step", { steps: steps.length, total: ctx.total });
      check((await attr(page, "[data-testid=live-view] [data-testid=progress]", "aria-valuenow")) === "100", "the progress bar is at 100 %");
      const fillWidth = await page.evaluate(() => {
        const bar = document.querySelector("[data-testid=live-view] [data-testid=progress]");
        const fill = bar?.querySelector(".fill");
        return fill && bar ? fill.getBoundingClientRect().width / bar.getBoundingClientRect().width : null;
      });
      check(close(fillWidth, 1, 0.01), "the progress bar is drawn full", fillWidth);
      check(Number(await attr(page, "[data-testid=live-view]", "data-step-points")) === steps.length, "the live view has as many curve points as the API has steps", { ui: await attr(page, "[data-testid=live-view]", "data-step-points"), api: steps.length });
      const lossPts = Number(await attr(page, '[data-testid=loss-chart] path[data-series="train loss"]', "data-points"));
      check(lossPts === steps.length, "the loss curve has one point per step", { drawn: lossPts, steps: steps.length });
      const accPts = Number(await attr(page, '[data-testid=accuracy-chart] path[data-series="train acc"]', "data-points"));
      check(accPts === steps.length, "the accuracy curve has one point per step", { drawn: accPts, steps: steps.length });
      const valDots = await page.locator('[data-testid=loss-chart] [data-series="val loss"] circle').count();
      check(valDots === metrics.epochs.length, "one validation dot per epoch", { drawn: valDots, epochs: metrics.epochs.length });
      check((await page.textContent("[data-testid=progress-text]")).includes(`step ${ctx.total} / ${ctx.total}`), "the progress text reads the last step", await page.textContent("[data-testid=progress-text]"));
      check(Number(await attr(page, "[data-testid=live-view]", "data-events")) > 0, "updates arrived over the WebSocket");
      const intermediate = progress.filter((p) => Number(p.v) > 0 && Number(p.v) < 100);
      check(intermediate.length >= 1, "the progress bar moved through intermediate values while training", progress.slice(0, 12));
      const ptsSeen = [...new Set(progress.map((p) => Number(p.pts)).filter(Number.isFinite))];
      check(ptsSeen.some((n) => n > 0 && n < steps.length), "the curves grew point by point while training", ptsSeen.slice(0, 12));
      check(!(await page.locator("[data-testid=cancel-run]").count()), "a finished run has no Cancel button");
      const [lossBox, accBox] = [await page.locator("figure[data-chart=loss]").boundingBox(), await page.locator("figure[data-chart=accuracy]").boundingBox()];
      check(lossBox && accBox && Math.abs(lossBox.y - accBox.y) < 1 && accBox.x > lossBox.x, "loss and accuracy curves sit side by side at 1280 px", { lossBox, accBox });
      // The server closes the stream after the final status; the page must not keep saying "live" or reconnect.
      const conn = await page
        .waitForFunction(() => ["ended", "closed", "idle"].includes(document.querySelector("[data-testid=connection]")?.dataset.state) && document.querySelector("[data-testid=connection]").dataset.state, null, { timeout: 10_000 })
        .then((h) => h.jsonValue())
        .catch(async () => attr(page, "[data-testid=connection]", "data-state"));
      check(["ended", "closed", "idle"].includes(conn), "the event stream ended with the run", conn);
      check(!(await page.locator("[data-testid=connection]").isVisible()) || !/live|reconnect/.test(await page.textContent("[data-testid=connection]")), "a finished run is not shown as live", await page.textContent("[data-testid=connection]"));
      const trainSeconds = await page.textContent("[data-testid=run-summary] td[data-key=train_seconds]");
      check(trainSeconds && trainSeconds !== "—", "the summary shows the training time", trainSeconds);
      if (!liveShot) await screenshot(page, "live");
      else await page.screenshot({ path: join(ARTIFACTS, "live-final.png") });
    });

    must(ctx.runId, "a run exists for the analysis views");
    ctx.tensors = (await apiOk(`/runs/${ctx.runId}/tensors`)).tensors;
    ctx.conv1 = ctx.tensors.find((t) => t.name === "conv1.weight");
    must(ctx.conv1, "the run captured conv1.weight", ctx.tensors.map((t) => t.name));

    await step("3 explorer: conv1.weight difference, pixels against the API", async () => {
      await page.click("[data-testid=link-explorer]");
      await waitReady(page, "explorer");
      const { path, params } = await hashParams(page);
      check(path === `/runs/${ctx.runId}/explore`, "the explorer link opens #/runs/<id>/explore", path);
      check(params.tensor === "conv1.weight" && params.mode === "diff" && params.from === "0" && params.to === String(ctx.total), "it opens on conv1.weight, diff, step 0 → last step", params);
      const info = await heatmapInfo(page, "heatmap-diff");
      must(info, "a heatmap-diff canvas is drawn");
      check(info.from === "0" && info.to === String(ctx.total), "the canvas shows from 0 to the last step", { from: info.from, to: info.to });
      check(info.layout.kind === "filters" && JSON.stringify(info.layout.shape) === JSON.stringify(ctx.conv1.shape), "conv weights are drawn as filter tiles of the tensor's shape", info.layout);
      check(info.width === Math.round(info.rect.w) && info.height === Math.round(info.rect.h), "1 canvas pixel = 1 CSS pixel", info);

      const diff = await apiOk(`/runs/${ctx.runId}/diff/conv1.weight?from=0&to=${ctx.total}`);
      const values = flat(diff.data);
      ctx.diff = { values, shape: diff.shape };
      must(values.length === info.n, "the canvas has one cell per element of the API's diff", { canvas: info.n, api: values.length });
      const maxAbs = Math.max(...values.map(Math.abs));
      check(close(info.domain, maxAbs, 1e-6 * maxAbs), "the scale is symmetric around 0 with m = max |difference|", { canvas: info.domain, api: maxAbs });
      const dec = values.indexOf(Math.min(...values));
      const inc = values.indexOf(Math.max(...values));
      const zero = values.findIndex((v) => v === 0);
      must(values[dec] < 0 && values[inc] > 0, "the run changed conv1 both ways", { min: values[dec], max: values[inc] });
      // A decreased element of middling size too (not only the extremes).
      const midDec = values.map((v, i) => [v, i]).filter(([v]) => v < 0).sort((a, b) => a[0] - b[0])[Math.floor(values.filter((v) => v < 0).length / 2)][1];

      const page_ = await page.evaluate(
        ({ n }) => {
          const hm = window.__netlapse.heatmaps["heatmap-diff"];
          return {
            values: Array.from({ length: n }, (_, i) => hm.valueAt(i)),
            read: Array.from({ length: n }, (_, i) => window.__netlapse.readCell(i, "heatmap-diff")),
            centres: Array.from({ length: n }, (_, i) => window.__netlapse.cellCenter(i, "heatmap-diff")),
          };
        },
        { n: values.length },
      );
      const expected = await page.evaluate((vals) => vals.map((v) => window.__netlapse.heatmaps["heatmap-diff"].colorOf(v)), values);
      const white = await page.evaluate(() => window.__netlapse.heatmaps["heatmap-diff"].colorOf(0));
      check(JSON.stringify(white.slice(0, 3)) === "[255,255,255]", "colorOf(0) is white", white);
      // What is on screen: a screenshot of the canvas, decoded here.
      const shot = await canvasShot(page, "heatmap-diff");
      check(shot.width - shot.offX >= info.width && shot.height - shot.offY >= info.height, "the canvas screenshot covers the canvas", { shot: [shot.width, shot.height], canvas: [info.width, info.height] });
      let bad = 0;
      for (let i = 0; i < values.length; i++) {
        const c = cellCentre(info.layout, i);
        const hook = page_.centres[i];
        if (!check(c && Math.floor(c.x) === hook.px && Math.floor(c.y) === hook.py, `cellCenter(${i}) agrees with the documented layout formula`, { formula: c, hook })) bad++;
        if (!check(Math.fround(values[i]) === page_.values[i], `the page's value at ${i} is the API's`, { page: page_.values[i], api: values[i] })) bad++;
        const onScreen = pixel(shot, c.x, c.y);
        if (!check(sameColor(onScreen, expected[i]), `pixel of element ${i} (${values[i]}) equals colorOf(value) ±2`, { screen: onScreen, expected: expected[i] })) bad++;
        if (!check(sameColor(page_.read[i], expected[i]), `readCell(${i}) equals colorOf(value) ±2`, { read: page_.read[i], expected: expected[i] })) bad++;
        const t = Math.abs(values[i]) / maxAbs;
        if (t >= 0.05 && values[i] < 0 && !check(onScreen[0] > onScreen[2], `decreased element ${i} is red-dominant`, onScreen)) bad++;
        if (t >= 0.05 && values[i] > 0 && !check(onScreen[2] > onScreen[0], `increased element ${i} is blue-dominant`, onScreen)) bad++;
        if (bad > 8) break;
      }
      const px = (i) => pixel(shot, cellCentre(info.layout, i).x, cellCentre(info.layout, i).y);
      check(px(dec)[0] > px(dec)[2] + 80, `the most decreased element (${dec}, ${values[dec]}) is red`, px(dec));
      check(px(midDec)[0] > px(midDec)[2], `a middling decreased element (${midDec}, ${values[midDec]}) is red-dominant`, px(midDec));
      check(px(inc)[2] > px(inc)[0] + 80, `the most increased element (${inc}, ${values[inc]}) is blue`, px(inc));
      if (zero >= 0) check(JSON.stringify(px(zero)) === "[255,255,255]", `an unchanged element (${zero}) is white`, px(zero));
      console.log(`  checked ${values.length} cells: min ${values[dec]} @${dec}, max ${values[inc]} @${inc}, ${zero >= 0 ? `zero @${zero}` : "no exact zero (legend and colorOf(0) checked instead)"}`);

      // The legend: same m, white in the middle at 0, red on the left, blue on the right.
      const legend = page.locator("figure[data-chart=heatmap-diff] svg[data-testid=legend]");
      const lg = await legend.evaluate((svg) => {
        const rect = svg.querySelector("rect");
        const mid = [...svg.querySelectorAll("stop")].find((s) => Number(s.getAttribute("offset")) === 0.5);
        const ticks = [...svg.querySelectorAll("text.tick")].map((t) => t.textContent);
        return { domain: Number(svg.dataset.domain), x: Number(rect.getAttribute("x")), y: Number(rect.getAttribute("y")), w: Number(rect.getAttribute("width")), h: Number(rect.getAttribute("height")), mid: mid?.getAttribute("stop-color"), ticks };
      });
      check(lg.domain === info.domain, "the legend's domain is the heatmap's", { legend: lg.domain, canvas: info.domain });
      check(lg.mid === "rgb(255,255,255)", "the legend's middle stop (0) is white", lg.mid);
      check(lg.ticks.length % 2 === 1 && lg.ticks[(lg.ticks.length - 1) / 2] === "0", "the legend's middle tick reads 0", lg.ticks);
      check(close(Math.abs(parseFloat(lg.ticks[0])), maxAbs, maxAbs * 0.01) && parseFloat(lg.ticks[0]) < 0, "the legend's ends read ∓max |difference|", lg.ticks);
      const lshot = decodePng(await legend.screenshot());
      const ly = lg.y + lg.h / 2;
      const lmid = pixel(lshot, lg.x + lg.w / 2, ly);
      check(lmid.every((c) => c >= 250), "the legend is white at 0", lmid);
      const lleft = pixel(lshot, lg.x + 2, ly);
      const lright = pixel(lshot, lg.x + lg.w - 2, ly);
      check(lleft[0] > lleft[2] + 80, "the legend is red at −m", lleft);
      check(lright[2] > lright[0] + 80, "the legend is blue at +m", lright);

      // Hover and keyboard give exact values.
      await page.evaluate(() => window.scrollTo(0, 0));
      const c = await page.evaluate((i) => window.__netlapse.cellCenter(i, "heatmap-diff"), inc);
      await page.mouse.move(c.clientX, c.clientY);
      const tip = page.locator("[data-testid=tooltip]");
      await tip.waitFor({ state: "visible" });
      const tipText = await tip.textContent();
      check(tipText.includes(`(flat ${inc})`) && tipText.includes("difference:"), "hovering a cell shows that element's difference", tipText);
      const shown = Number(/difference:\s*(\S+)/.exec(tipText)?.[1]);
      check(close(shown, values[inc], Math.abs(values[inc]) * 1e-5), "the tooltip's difference is the API's value", { shown, api: values[inc] });
      await screenshot(page, "explorer");
      await page.mouse.move(2, 2);
      await page.focus("canvas[data-testid=heatmap-diff]");
      await page.keyboard.press("ArrowRight");
      check((await tip.textContent()).includes("(flat 1)"), "arrow keys move the tooltip over the cells", await tip.textContent());
      await page.keyboard.press("Tab");
    });

    await step("4 exports: PNG, NPY, CSV and SVG of the difference heatmap", async () => {
      const fig = page.locator("figure[data-chart=heatmap-diff]");
      const png = await download(page, fig.locator("[data-testid=export-png]"));
      check(png.bytes.subarray(0, 8).equals(PNG_SIGNATURE), "the PNG export starts with the PNG signature", png.bytes.subarray(0, 8).toString("hex"));
      check(png.bytes.toString("latin1", 12, 16) === "IHDR", "its first chunk is IHDR");
      const w = png.bytes.readUInt32BE(16);
      const h = png.bytes.readUInt32BE(20);
      check(w > 0 && h > 0, "IHDR width and height are > 0", { w, h });
      check(png.name.endsWith(".png") && png.last?.format === "png" && png.last?.bytes === png.bytes.length, "the download is the recorded export", { name: png.name, last: png.last, size: png.bytes.length });
      writeFileSync(join(ARTIFACTS, "export-heatmap-diff.png"), png.bytes);
      const img = decodePng(png.bytes);
      if (ctx.diff) {
        const colours = await page.evaluate((vals) => vals.map((v) => window.__netlapse.heatmaps["heatmap-diff"].colorOf(v)), [Math.min(...ctx.diff.values), Math.max(...ctx.diff.values)]);
        check(countPixels(img, (p) => sameColor(p, colours[0])) > 0, "the exported image contains the most decreased cell's red", colours[0]);
        check(countPixels(img, (p) => sameColor(p, colours[1])) > 0, "the exported image contains the most increased cell's blue", colours[1]);
      }
      const npy = await download(page, fig.locator("[data-testid=export-npy]"));
      const arr = parseNpy(npy.bytes);
      check(arr.descr === "<f4" && !arr.fortran, "the NPY export is little-endian float32, C order", arr);
      check(JSON.stringify(arr.shape) === JSON.stringify(ctx.conv1.shape), "the NPY shape is conv1.weight's", { npy: arr.shape, tensor: ctx.conv1.shape });
      if (ctx.diff) check(arr.values.every((v, i) => v === Math.fround(ctx.diff.values[i])), "the NPY values are the API's difference");
      writeFileSync(join(ARTIFACTS, "export-heatmap-diff.npy"), npy.bytes);
      const csv = await download(page, fig.locator("[data-testid=export-csv]"));
      const lines = csv.bytes.toString("utf8").trim().split("\n");
      check(lines.length === (ctx.diff?.values.length ?? 0) + 1 && lines[0].startsWith("index,"), "the CSV export has a header and one row per element", lines.length);
      const svg = await download(page, fig.locator("[data-testid=export-svg]"));
      check(/^<svg[\s\S]*<\/svg>\s*$/.test(svg.bytes.toString("utf8")) && svg.bytes.includes("data:image/png;base64,"), "the SVG export is an SVG with the canvas embedded");
    });

    await step("5 shareable links: reload and a fresh page keep tensor, steps and mode", async () => {
      const other = ctx.tensors.find((t) => t.name === "conv2.weight") ? "conv2.weight" : ctx.tensors.find((t) => t.name !== "conv1.weight" && t.shape.length === 4)?.name ?? "conv1.weight";
      const from = Math.max(1, Math.floor(ctx.total / 3));
      await pickTensor(page, other);
      await waitReady(page, "explorer");
      await page.fill("[data-testid=from-input]", String(from));
      await page.press("[data-testid=from-input]", "Enter");
      await page.waitForFunction((f) => document.querySelector("canvas[data-testid=heatmap-diff]")?.dataset.from === String(f), from);
      await waitReady(page, "explorer");
      const before = { ...(await hashParams(page)), info: await heatmapInfo(page, "heatmap-diff") };
      check(before.params.tensor === other && before.params.from === String(from) && before.params.to === String(ctx.total) && before.params.mode === "diff", "the URL carries the explorer's state", before.params);
      const url = page.url();
      const expectState = async (p, how) => {
        await waitReady(p, "explorer");
        const after = { ...(await hashParams(p)), info: await heatmapInfo(p, "heatmap-diff") };
        check(JSON.stringify(after.params) === JSON.stringify(before.params), `${how}: same URL state`, { before: before.params, after: after.params });
        check((await p.getAttribute("[data-testid=tensor-picker]", "data-value")) === other, `${how}: the tensor picker shows ${other}`);
        check((await p.inputValue("[data-testid=from-input]")) === String(from) && (await p.inputValue("[data-testid=to-input]")) === String(ctx.total), `${how}: from/to inputs restored`);
        check((await p.getAttribute("[data-testid=mode-diff]", "aria-pressed")) === "true", `${how}: difference mode is on`);
        check(after.info && after.info.from === String(from) && after.info.to === String(ctx.total) && after.info.domain === before.info.domain && JSON.stringify(after.info.layout) === JSON.stringify(before.info.layout), `${how}: the same heatmap is drawn`, { before: before.info, after: after.info });
      };
      await page.reload();
      await expectState(page, "reload");
      const fresh = await page.context().newPage();
      watchConsole(fresh, "shared-link");
      await fresh.goto(url);
      await expectState(fresh, "fresh page");
      await fresh.close();

      // A dense weight is drawn as a matrix.
      const dense = ctx.tensors.find((t) => t.shape.length === 2);
      if (dense) {
        await pickTensor(page, dense.name);
        await waitReady(page, "explorer");
        const m = await heatmapInfo(page, "heatmap-diff");
        // Above 262,144 elements the explorer draws server-pooled tiles instead (tests/e2e/explorer_wide.e2e.mjs).
        if (dense.shape[0] * dense.shape[1] <= 262144) check(m?.layout.kind === "matrix" && m.n === dense.shape[0] * dense.shape[1], `${dense.name} is drawn as a matrix of all its elements`, m?.layout);
        else check(m?.layout.kind === "tiles", `${dense.name} is drawn as tiles`, m?.layout);
        await pickTensor(page, other);
        await waitReady(page, "explorer");
      }

      // Values mode with a step is shareable too.
      await page.click("[data-testid=mode-values]");
      await page.waitForSelector("canvas[data-testid=heatmap-values]");
      await waitReady(page, "explorer");
      const vstep = await attr(page, "canvas[data-testid=heatmap-values]", "data-step");
      const vparams = (await hashParams(page)).params;
      check(vparams.mode === "values" && vparams.step === vstep, "values mode puts mode and step in the URL", vparams);
      await page.reload();
      await waitReady(page, "explorer");
      check((await attr(page, "canvas[data-testid=heatmap-values]", "data-step")) === vstep && (await page.getAttribute("[data-testid=mode-values]", "aria-pressed")) === "true", "reloading values mode shows the same step");

      // from = to: nothing changed, so every cell must be white.
      await page.goto(`${BASE}/#/runs/${ctx.runId}/explore?tensor=conv1.weight&from=${ctx.total}&to=${ctx.total}&mode=diff`);
      await waitReady(page, "explorer");
      const z = await heatmapInfo(page, "heatmap-diff");
      const zshot = await canvasShot(page, "heatmap-diff");
      const cells = Array.from({ length: z.n }, (_, i) => pixel(zshot, cellCentre(z.layout, i).x, cellCentre(z.layout, i).y));
      check(cells.every((p) => p[0] === 255 && p[1] === 255 && p[2] === 255), "a zero difference is drawn white in every cell", cells.find((p) => p.some((c) => c !== 255)));
    });

    await step("6 scatter: initial value vs change matches the API", async () => {
      await page.goto(`${BASE}/#/runs/${ctx.runId}/explore?tensor=conv1.weight&from=0&to=${ctx.total}&mode=diff`);
      await waitReady(page, "explorer");
      await page.click("a[data-link=scatter]");
      await waitReady(page, "scatter-view");
      const { path, params } = await hashParams(page);
      check(path === `/runs/${ctx.runId}/scatter` && params.tensor === "conv1.weight" && params.from === "0" && params.to === String(ctx.total), "the explorer's scatter link keeps tensor and steps", { path, params });
      const expected = await apiOk(`/runs/${ctx.runId}/scatter/conv1.weight?from=0&to=${ctx.total}&max_points=20000`);
      const stats = page.locator("[data-testid=scatter-stats]");
      const shown = {
        r: Number(await stats.getAttribute("data-r")),
        pos: Number(await stats.getAttribute("data-pos-increased")),
        neg: Number(await stats.getAttribute("data-neg-decreased")),
      };
      check(!!expected && shown.r === expected.pearson_r, "data-r is the API's Pearson r", { ui: shown.r, api: expected.pearson_r });
      check(shown.pos === expected.pos_increased_fraction, "data-pos-increased is the API's fraction", { ui: shown.pos, api: expected.pos_increased_fraction });
      check(shown.neg === expected.neg_decreased_fraction, "data-neg-decreased is the API's fraction", { ui: shown.neg, api: expected.neg_decreased_fraction });
      const text = async (key) => (await page.textContent(`[data-testid=scatter-stats] [data-key=${key}] .v`)).trim();
      const rText = parseFloat(await text("pearson_r"));
      check(close(rText, expected.pearson_r, Math.abs(expected.pearson_r) * 0.006 + 1e-9), "the r printed on the page is the API's", { text: await text("pearson_r"), api: expected.pearson_r });
      const posText = parseFloat(await text("pos_increased_fraction"));
      const negText = parseFloat(await text("neg_decreased_fraction"));
      check(close(posText, expected.pos_increased_fraction * 100, 0.051), "the printed share of positive weights that grew is the API's", { text: await text("pos_increased_fraction"), api: expected.pos_increased_fraction });
      check(close(negText, expected.neg_decreased_fraction * 100, 0.051), "the printed share of negative weights that shrank is the API's", { text: await text("neg_decreased_fraction"), api: expected.neg_decreased_fraction });
      check((await text("n")).replace(/\D/g, "") === String(expected.n), "the element count is the API's", await text("n"));
      const canvas = page.locator("canvas[data-testid=scatter]");
      const img = decodePng(await canvas.screenshot());
      const inked = countPixels(img, (p) => Math.abs(p[0] - p[2]) > 60);
      check(inked > 0, "the scatter draws coloured points", inked);
      await screenshot(page, "scatter");
    });

    await step("7 activations: one panel per filter, 10 bars each, values from the API", async () => {
      await page.click(`[data-testid=scatter-view] a[href="#/runs/${ctx.runId}"]`);
      await page.waitForSelector("[data-testid=live-view][data-final=true]");
      await page.click("[data-testid=link-activations]");
      await waitReady(page, "activations-view", P.analysisTimeoutMs);
      const filters = page.locator("[data-testid=activation-panel] [data-testid=activation-filter]");
      const F = ctx.conv1.shape[0];
      check((await filters.count()) === F, `conv1 has ${F} filter panels`, await filters.count());
      const bars = await filters.evaluateAll((els) => els.map((e) => [...e.querySelectorAll("rect.bar")].map((r) => ({ label: r.dataset.label, value: r.dataset.value, h: Number(r.getAttribute("height")) }))));
      check(bars.every((b) => b.length === 10), "every filter shows exactly 10 bars", bars.map((b) => b.length));
      check(bars.every((b) => b.map((x) => x.label).join(",") === "0,1,2,3,4,5,6,7,8,9"), "the bars are labels 0–9 in order");
      const params = (await hashParams(page)).params;
      const body = { step: Number(params.step), layer: params.layer ?? "conv1", per_label: Number(params.per_label ?? 100), point: params.point ?? "post", split: params.split ?? "test" };
      check(params.layer === "conv1" && body.step === ctx.total, "activations open on conv1 at the last step", params);
      const expected = await apiOk(`/runs/${ctx.runId}/activations`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const mismatch = [];
      expected.activation.forEach((row, f) =>
        row.forEach((v, j) => {
          const ui = bars[f]?.[j]?.value;
          if (!(v === null ? ui === "null" : Number(ui) === v)) mismatch.push({ f, j, ui, api: v });
        }),
      );
      check(mismatch.length === 0, "every bar's value is the API's Eq. 1 activation", mismatch.slice(0, 5));
      check(bars.flat().some((b) => b.h > 0), "some bars have height");
      await screenshot(page, "activations");
      const pngDl = await download(page, page.locator("figure[data-chart=activation-panel] [data-testid=export-png]"));
      const img = decodePng(pngDl.bytes);
      check(img.width > 0 && img.height > 0 && countPixels(img, (p) => p[0] < 200) > 100, "the bar charts (SVG) export as a PNG with the bars in it", { w: img.width, h: img.height });
      writeFileSync(join(ARTIFACTS, "export-activations.png"), pngDl.bytes);

      await filters.nth(Math.min(1, F - 1)).click();
      await page.waitForSelector("[data-testid=featuremaps] canvas", { timeout: P.analysisTimeoutMs });
      check((await page.locator("[data-testid=featuremaps] canvas").count()) > 0, "clicking a filter shows its feature maps");
      check((await hashParams(page)).params.filter === String(Math.min(1, F - 1)), "the chosen filter is in the URL");

      await page.click("[data-testid=close-featuremaps] >> nth=0");
      await page.check("[data-testid=compare-toggle]");
      await waitReady(page, "activations-view", P.analysisTimeoutMs);
      for (const role of ["from", "to"]) {
        const counts = await page.locator(`[data-testid=activation-panel-${role}] [data-testid=activation-filter]`).evaluateAll((els) => els.map((e) => e.querySelectorAll("rect.bar").length));
        check(counts.length === F && counts.every((c) => c === 10), `compare mode: the ${role} panel has ${F} filters of 10 bars`, counts);
      }
      check((await page.locator("canvas[data-testid=activation-diff]").count()) === 1, "compare mode draws the activation difference");
      const cparams = (await hashParams(page)).params;
      check(cparams.compare === "1" && cparams.from === "0" && cparams.step === String(ctx.total), "compare mode is in the URL (from 0 to the last step)", cparams);
      await page.uncheck("[data-testid=compare-toggle]");
      await waitReady(page, "activations-view", P.analysisTimeoutMs);

      const conv2 = ctx.tensors.find((t) => t.name === "conv2.weight");
      if (conv2) {
        await page.selectOption("[data-testid=layer-select]", "conv2");
        await waitReady(page, "activations-view", P.analysisTimeoutMs);
        const n2 = await page.locator("[data-testid=activation-panel] [data-testid=activation-filter]").count();
        check(n2 === conv2.shape[0], `conv2 has ${conv2.shape[0]} filter panels`, n2);
        const counts2 = await page.locator("[data-testid=activation-panel] [data-testid=activation-filter]").evaluateAll((els) => els.map((e) => e.querySelectorAll("rect.bar").length));
        check(counts2.every((c) => c === 10), "conv2's filters show 10 bars each", counts2);
      }
    });

    await step("8 the run list reaches every view, and every view leads back", async () => {
      await page.click("a[data-nav=runs]");
      await page.waitForSelector("[data-testid=runs-table]");
      const row = page.locator(`[data-testid=run-row][data-run-id="${ctx.runId}"]`);
      check((await row.getAttribute("data-status")) === "succeeded", "the list shows the run as succeeded");
      check((await row.locator("[data-testid=progress]").getAttribute("aria-valuenow")) === "100", "the list shows the run at 100 %");
      const cells = (await row.locator("td").allTextContents()).join(" | ");
      check(cells.includes(P.dataset) && cells.includes(P.preset) && cells.includes(P.name), "the row names the run, its dataset and model", cells);
      await screenshot(page, "runs");
      const views = [
        ["link-explorer", "explorer", "/explore"],
        ["link-scatter", "scatter-view", "/scatter"],
        ["link-activations", "activations-view", "/activations"],
      ];
      for (const [link, testid, suffix] of views) {
        await page.click("a[data-nav=runs]");
        await row.locator("[data-testid=run-link]").click();
        await page.waitForSelector("[data-testid=live-view][data-final=true]");
        check((await hashParams(page)).path === `/runs/${ctx.runId}`, "a run's name in the list opens its live view");
        await page.click(`[data-testid=${link}]`);
        await waitReady(page, testid, P.analysisTimeoutMs);
        check((await hashParams(page)).path === `/runs/${ctx.runId}${suffix}`, `${link} opens ${suffix}`);
        const back = (tid) => page.locator(`[data-testid=${tid}] a[href="#/runs/${ctx.runId}"]`);
        check((await back(testid).count()) > 0, `${testid} links back to its run`);
        check(await page.locator("a[data-nav=runs]").isVisible(), `${testid} keeps the Runs link in the top bar`);
        let current = testid;
        if (testid === "explorer") {
          for (const l of ["scatter", "activations"]) {
            const href = await page.getAttribute(`a[data-link=${l}]`, "href");
            check(href?.startsWith(`#/runs/${ctx.runId}/${l}`), `the explorer links to ${l}`, href);
          }
          await page.click("a[data-link=activations]");
          await waitReady(page, "activations-view", P.analysisTimeoutMs);
          current = "activations-view";
        }
        await back(current).first().click();
        await page.waitForSelector("[data-testid=live-view][data-final=true]");
      }
      // An unknown page is not a dead end either.
      await page.goto(`${BASE}/#/no/such/page`);
      await page.waitForSelector("main [data-testid=error-banner]");
      const link = page.locator("main a[href='#/runs']");
      check((await link.count()) > 0, "an unknown address offers a link to the runs list");
      if (await link.count()) {
        await link.first().click();
        await page.waitForSelector("[data-testid=runs-table]");
      }
      // The skip link focuses the content without leaving the page.
      const before = page.url();
      await page.focus(".skip-link");
      await page.keyboard.press("Enter");
      await page.waitForTimeout(100);
      check(page.url() === before, "the skip link does not navigate away", page.url());
      check(await page.evaluate(() => document.activeElement?.id === "main"), "the skip link moves the focus to the content");
      check(await page.locator("[data-testid=runs-table]").isVisible(), "the runs list is still shown after the skip link");
    });
  } finally {
    currentStep = "console";
    check(consoleErrors.length === 0, `no console errors (${consoleErrors.length})`, consoleErrors.slice(0, 10));
    check(seen422 === expected422, `exactly the deliberate bad submits logged a 422 (${expected422})`, seen422);
    await browser.close();
  }

  if (DOCS_DIR && failures.length === 0) {
    mkdirSync(DOCS_DIR, { recursive: true });
    for (const s of shots) copyFileSync(s.file, join(DOCS_DIR, `ui-${s.view}.png`));
    console.log(`copied ${shots.length} screenshots to ${DOCS_DIR}`);
  }
  for (const s of shots) console.log(`  screenshot ${s.view}: ${s.file} (${(s.bytes / 1024).toFixed(0)} KB)`);
  const views = ["runs", "new-run", "live", "explorer", "scatter", "activations"];
  currentStep = "screenshots";
  for (const v of views) check(shots.some((s) => s.view === v), `a screenshot of ${v} was taken`);
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
