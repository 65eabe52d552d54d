// The explorer on a wide model in headless Debian Chromium, against a running stack.
//
//   node tests/e2e/explorer_wide.e2e.mjs <base-url> <artifacts-dir>
//
// Trains a short wide-cnn run (25.3 M parameters; fc1 is 1984 × 12544), then opens fc1's difference in the
// explorer cold (nothing cached), with the difference cached, and with everything cached. Checks what a user
// would: the bytes downloaded for one view stay under 4 MB, the pixels at cells known from the tile endpoint
// have that cell's colour, the tooltip names the true element with both values, a click draws its trajectory,
// zooming fetches tiles of the window. Then the tree picker and the run overview with a generated model of 500
// tensors (served by page.route). Open times are recorded (not asserted) in <artifacts-dir>/explorer_open.json.
// Exits 0 when every check passed, 1 otherwise. Env: NETLAPSE_CHROMIUM (default /usr/bin/chromium),
// NETLAPSE_E2E_SCREENSHOTS=<dir>: also copy the explorer's screenshot there as ui-explorer-wide.png;
// NETLAPSE_E2E_STORE=<the stack's local store dir>: record whether the run's tape was compacted (time-major)
// when the cold open began, and open a second, untouched pair of steps cold once it is.

import { createRequire } from "node:module";
import { mkdirSync, writeFileSync, copyFileSync, existsSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const requireFromFrontend = createRequire(resolve(here, "../../frontend/package.json"));
const { chromium } = requireFromFrontend("playwright-core");

const BASE = (process.argv[2] ?? "").replace(/\/+$/, "");
const ARTIFACTS = resolve(process.argv[3] ?? "test-artifacts/e2e-wide");
const DOCS_DIR = process.env.NETLAPSE_E2E_SCREENSHOTS ? resolve(process.env.NETLAPSE_E2E_SCREENSHOTS) : null;
const STORE = process.env.NETLAPSE_E2E_STORE ? resolve(process.env.NETLAPSE_E2E_STORE) : null;
const LIMIT_BYTES = 4 * 1024 * 1024;
if (!BASE) {
  console.error("usage: node tests/e2e/explorer_wide.e2e.mjs <base-url> <artifacts-dir>");
  process.exit(2);
}
mkdirSync(ARTIFACTS, { recursive: true });

const failures = [];
let currentStep = "setup";
function check(cond, message, details) {
  if (cond) return true;
  const line = `[${currentStep}] ${message}${details === undefined ? "" : ` — ${typeof details === "string" ? details : JSON.stringify(details)}`}`;
  failures.push(line);
  console.log(`  FAIL ${line}`);
  return false;
}
function must(cond, message, details) {
  if (!check(cond, message, details)) throw new Error(`cannot continue: ${message}`);
}
async function step(name, fn) {
  currentStep = name;
  const t = Date.now();
  console.log(`- ${name}`);
  try {
    await fn();
  } catch (e) {
    check(false, `threw: ${e.stack ?? e}`);
  }
  console.log(`  (${((Date.now() - t) / 1000).toFixed(1)} s)`);
}

async function api(path, opts = {}) {
  const r = await fetch(`${BASE}/api${path}`, {
    ...opts,
    headers: { "Content-Type": "application/json", ...(opts.headers ?? {}) },
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${opts.method ?? "GET"} ${path} → ${r.status}: ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : null;
}

const sameColor = (a, b, tol = 2) => a && b && [0, 1, 2].every((k) => Math.abs(a[k] - b[k]) <= tol);

/** Screenshot of an element, decoded by the page into RGBA rows: what is on screen, not the canvas' buffer. */
async function shotPixels(page, selector) {
  const loc = page.locator(selector);
  await loc.scrollIntoViewIfNeeded();
  const r = await loc.evaluate((c) => c.getBoundingClientRect().toJSON());
  const png = await loc.screenshot();
  // The element's box may start at a fractional pixel; the screenshot starts at its floor, the canvas at its round.
  const off = {
    offX: Math.round(r.x) - Math.floor(r.x),
    offY: Math.round(r.y) - Math.floor(r.y),
  };
  const shot = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    return {
      width: img.width,
      height: img.height,
      data: Array.from(g.getImageData(0, 0, img.width, img.height).data),
    };
  }, png.toString("base64"));
  return { ...shot, ...off };
}
const pixelAt = (shot, x, y) => {
  const p = ((Math.floor(y) + shot.offY) * shot.width + Math.floor(x) + shot.offX) * 4;
  return shot.data.slice(p, p + 3);
};

/** Bytes of every response the page received between start() and stop() (bodies, as the network delivered them). */
function meter(page) {
  let on = false;
  let bytes = 0;
  const urls = [];
  page.on("requestfinished", async (req) => {
    if (!on) return;
    try {
      const s = await req.sizes();
      bytes += s.responseBodySize + s.responseHeadersSize;
      urls.push([req.url().replace(BASE, ""), s.responseBodySize]);
    } catch {
      /* a request of a closed page */
    }
  });
  return {
    start() {
      on = true;
      bytes = 0;
      urls.length = 0;
    },
    async stop() {
      await page.waitForTimeout(300); // let requestfinished handlers of the last responses run
      on = false;
      return { bytes, urls: urls.slice() };
    },
  };
}

/** Milliseconds the page spends on `selector`.click() and the layout after it (JS + DOM + layout, in the page). */
const clickMs = (page, selector) =>
  page.evaluate((sel) => {
    const t = performance.now();
    document.querySelector(sel).click();
    void document.body.offsetHeight; // force the layout the click caused
    return performance.now() - t;
  }, selector);

/** In the page: how many view rows the difference heatmap shows now (its window's height). */
function drawnRows() {
  const w = JSON.parse(
    document.querySelector("canvas[data-testid=heatmap-diff]")?.dataset.layout ?? "{}",
  ).window;
  return w ? w[2] - w[0] : Infinity;
}

async function waitReady(page, testid, timeout = 180_000) {
  await page.waitForSelector(
    `[data-testid=${testid}][data-state=ready], [data-testid=${testid}][data-state=error]`,
    { timeout },
  );
  const state = await page.getAttribute(`[data-testid=${testid}]`, "data-state");
  const banner = (
    await page.locator(`[data-testid=${testid}] [data-testid=error-banner]`).allTextContents()
  ).join(" | ");
  must(state === "ready", `${testid} reached state ${state}`, banner || undefined);
}

/** Whether the run's tape is compacted (its compaction.json written); null without NETLAPSE_E2E_STORE. */
const compacted = (id) => (STORE ? existsSync(join(STORE, "runs", id, "tape", "compaction.json")) : null);

/**
 * Where an open's time went, from the page's resource timings (ms since navigation): `page` until the first
 * API request (HTML, JS, CSS), `bootstrap` until the tile request starts (run, tensors, steps, metrics),
 * `tiles` the tile request (the server's work: analyzer task, tape decoding, pooling), `draw` from its last
 * byte to the explorer's ready mark (decode, colour, DOM), `harness` the rest (Playwright noticing it).
 */
async function phases(page, ms) {
  const { res, ready } = await page.evaluate(() => ({
    res: performance
      .getEntriesByType("resource")
      .map((e) => ({ name: e.name, start: e.startTime, end: e.responseEnd })),
    ready: performance.getEntriesByName("netlapse:explorer-ready")[0]?.startTime ?? null,
  }));
  const api = res.filter((e) => e.name.includes("/api/"));
  const tiles = api.filter((e) => e.name.includes("/heatmap/"));
  if (!api.length || !tiles.length) return null;
  const first = Math.min(...api.map((e) => e.start));
  const t0 = Math.min(...tiles.map((e) => e.start));
  const t1 = Math.max(...tiles.map((e) => e.end));
  const r = (v) => Math.round(v);
  // The bootstrap request the tile request waited for (the one that ended last before it started).
  const waitedFor = api
    .filter((e) => e.start < t0 && !e.name.includes("/heatmap/"))
    .reduce((a, b) => (b.end > a.end ? b : a), { end: -1, start: 0, name: "" });
  const last = {
    path: waitedFor.name.replace(/^.*\/api\//, "/api/"),
    ms: r(waitedFor.end - waitedFor.start),
  };
  if (ready === null)
    return { page: r(first), bootstrap: r(t0 - first), tiles: r(t1 - t0), draw: r(ms - t1) };
  return {
    page: r(first),
    bootstrap: r(t0 - first),
    tiles: r(t1 - t0),
    draw: r(ready - t1),
    harness: r(ms - ready),
    bootstrap_last: last,
  };
}

/** Open the explorer at `hash` in a fresh page; time from navigation to the drawn view; bytes downloaded. */
async function openExplorer(browser, hash, label) {
  const page = await browser.newPage({
    viewport: { width: 1280, height: 900 },
  });
  page.on("console", (m) => m.type() === "error" && console.log(`  [console ${label}] ${m.text()}`));
  const m = meter(page);
  m.start();
  const t0 = Date.now();
  await page.goto(`${BASE}/${hash}`);
  await waitReady(page, "explorer");
  const ms = Date.now() - t0;
  const traffic = await m.stop();
  return { page, ms, phases: await phases(page, ms), ...traffic };
}

const ctx = {};
const results = {
  model: "wide-cnn",
  tensor: "fc1.weight",
  shape: [1984, 12544],
  limit_bytes: LIMIT_BYTES,
};
const browser = await chromium.launch({
  executablePath: process.env.NETLAPSE_CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
  ],
});

try {
  await step("1 a short wide-cnn run", async () => {
    const run = await api("/runs", {
      method: "POST",
      body: JSON.stringify({
        name: "e2e-wide-cnn",
        model: { preset: "wide-cnn" },
        dataset: "synthetic",
        training: {
          epochs: 1,
          batch_size: 32,
          optimizer: "adam",
          lr: 0.001,
          seed: 0,
          max_train_samples: 160,
        },
        capture: { every: 1 },
      }),
    });
    ctx.id = run.id;
    const deadline = Date.now() + 900_000;
    let r = run;
    while (!["succeeded", "failed", "cancelled"].includes(r.status) && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 1000));
      r = await api(`/runs/${ctx.id}`);
    }
    must(r.status === "succeeded", "the wide-cnn run succeeded", r.status);
    ctx.steps = (await api(`/runs/${ctx.id}/steps`)).steps;
    ctx.last = ctx.steps.at(-1);
    const fc1 = (await api(`/runs/${ctx.id}/tensors`)).tensors.find((t) => t.name === "fc1.weight");
    must(fc1 && fc1.shape[0] === 1984 && fc1.shape[1] === 12544, "fc1.weight is 1984 × 12544", fc1);
    results.steps = ctx.steps.length;
    console.log(`  run ${ctx.id}: ${ctx.steps.length} steps`);
  });

  await step("2 before: what the old explorer downloaded (the two tensors whole, as .npy)", async () => {
    const page = await browser.newPage();
    await page.goto(`${BASE}/`);
    const before = await page.evaluate(
      async ({ id, last }) => {
        const t0 = performance.now();
        let bytes = 0;
        for (const s of [0, last]) {
          const r = await fetch(`api/runs/${id}/tensors/fc1.weight?step=${s}`, {
            headers: { Accept: "application/x-npy" },
          });
          bytes += (await r.arrayBuffer()).byteLength;
        }
        return { bytes, ms: performance.now() - t0 };
      },
      { id: ctx.id, last: ctx.last },
    );
    results.before = {
      bytes: before.bytes,
      fetch_ms: Math.round(before.ms),
      note: "two .npy tensors of fc1 fetched whole by the page (the old explorer's download), without its decode and draw",
    };
    console.log(`  before: ${(before.bytes / 1e6).toFixed(1)} MB in ${(before.ms / 1000).toFixed(2)} s`);
    await page.close();
  });

  const hash = (from, to = ctx.last) =>
    `#/runs/${ctx.id}/explore?tensor=fc1.weight&from=${from}&to=${to}&mode=diff`;

  await step("3 cold open: nothing cached", async () => {
    const before = compacted(ctx.id);
    const o = await openExplorer(browser, hash(0), "cold");
    // The run has just ended: its compaction (time-major rewrite) may still be running beside the open.
    const tape = { compacted_at_start: before, compacted_at_end: compacted(ctx.id) };
    results.cold = { ms: o.ms, bytes: o.bytes, phases_ms: o.phases, ...tape };
    console.log(`  cold: ${o.ms} ms, ${(o.bytes / 1e6).toFixed(2)} MB`, o.phases, tape);
    check(o.bytes <= LIMIT_BYTES, `the cold open downloads at most 4 MB`, {
      bytes: o.bytes,
      biggest: o.urls.sort((a, b) => b[1] - a[1]).slice(0, 3),
    });
    await o.page.close();
  });

  if (STORE && ctx.steps.length >= 4) {
    await step("3b cold open of an untouched pair of steps once the tape is compacted", async () => {
      const t = Date.now();
      while (!compacted(ctx.id) && Date.now() - t < 600_000) await new Promise((r) => setTimeout(r, 250));
      must(compacted(ctx.id), "the run's tape is compacted within 10 min");
      const waited = Date.now() - t;
      const [from, to] = [ctx.steps[1], ctx.steps[3]]; // no state of these is cached in the analyzer
      const o = await openExplorer(browser, hash(from, to), "cold-compacted");
      results.cold_compacted = { ms: o.ms, bytes: o.bytes, phases_ms: o.phases, from, to, waited_ms: waited };
      console.log(
        `  cold, compacted (${from} → ${to}): ${o.ms} ms, ${(o.bytes / 1e6).toFixed(2)} MB`,
        o.phases,
      );
      check(o.bytes <= LIMIT_BYTES, `the cold open downloads at most 4 MB`, o.bytes);
      await o.page.close();
    });
  }

  await step("4 open with the difference cached (tiles not)", async () => {
    const from = ctx.steps[1];
    await api(`/runs/${ctx.id}/heatmap/fc1.weight?from=${from}&to=${ctx.last}&rows=1&cols=1`); // computes and caches the diff
    const o = await openExplorer(browser, hash(from), "diff-cached");
    results.diff_cached = { ms: o.ms, bytes: o.bytes, phases_ms: o.phases };
    console.log(`  diff cached: ${o.ms} ms, ${(o.bytes / 1e6).toFixed(2)} MB`);
    check(o.bytes <= LIMIT_BYTES, `the open downloads at most 4 MB`, o.bytes);
    await o.page.close();
  });

  await step("5 cached open, pixels against the tile endpoint, tooltip, trajectory, zoom", async () => {
    const o = await openExplorer(browser, hash(0), "cached");
    const page = o.page;
    results.cached = { ms: o.ms, bytes: o.bytes, phases_ms: o.phases };
    console.log(`  cached: ${o.ms} ms, ${(o.bytes / 1e6).toFixed(2)} MB`);
    check(o.bytes <= LIMIT_BYTES, `the cached open downloads at most 4 MB`, o.bytes);

    const sel = "canvas[data-testid=heatmap-diff]";
    const layout = JSON.parse(await page.getAttribute(sel, "data-layout"));
    const domain = Number(await page.getAttribute(sel, "data-domain"));
    must(
      layout.kind === "tiles" && layout.view.rows === 1984 && layout.view.cols === 12544,
      "fc1 is drawn from tiles of its whole 1984 × 12544 view",
      layout,
    );
    const t = await api(
      `/runs/${ctx.id}/heatmap/fc1.weight?from=0&to=${ctx.last}&rows=${layout.rows}&cols=${layout.cols}&mean=false`,
    );
    must(
      t.rows === layout.rows && t.cols === layout.cols && t.values.length === t.rows * t.cols,
      "the tile endpoint answers the page's grid",
      { rows: t.rows, cols: t.cols },
    );
    check(Math.abs(domain - t.scale) <= 1e-7 * t.scale, "the colour scale is the tiles' max |value|", {
      page: domain,
      api: t.scale,
    });
    const vals = t.values;
    let kmax = 0;
    let kmin = 0;
    vals.forEach((v, k) => {
      if (v > vals[kmax]) kmax = k;
      if (v < vals[kmin]) kmin = k;
    });
    const picks = [kmax, kmin, 0, vals.length - 1];
    for (let i = 0; i < 24; i++) picks.push(Math.floor((((i * 7919 + 13) % 1000) / 1000) * vals.length));
    const shot = await shotPixels(page, sel);
    check(
      shot.width - shot.offX >= layout.width && shot.height - shot.offY >= layout.height,
      "the screenshot covers the canvas",
      { shot: [shot.width, shot.height], layout },
    );
    const expected = await page.evaluate(
      (vs) => vs.map((v) => window.__netlapse.heatmaps["heatmap-diff"].colorOf(v)),
      picks.map((k) => vals[k]),
    );
    let bad = 0;
    picks.forEach((k, n) => {
      const x = (k % layout.cols) * layout.cellW + layout.cellW / 2;
      const y = Math.floor(k / layout.cols) * layout.cellH + layout.cellH / 2;
      const onScreen = pixelAt(shot, x, y);
      if (
        !check(sameColor(onScreen, expected[n]), `the pixel of cell ${k} (${vals[k]}) has its colour`, {
          screen: onScreen,
          expected: expected[n],
        }) &&
        ++bad > 5
      )
        throw new Error("too many bad pixels");
    });
    check(
      pixelAt(
        shot,
        ...[kmax]
          .map((k) => [(k % layout.cols) * layout.cellW, Math.floor(k / layout.cols) * layout.cellH])
          .flat(),
      )[2] > 150,
      "the most increased cell is blue",
    );
    check(
      pixelAt(
        shot,
        ...[kmin]
          .map((k) => [(k % layout.cols) * layout.cellW, Math.floor(k / layout.cols) * layout.cellH])
          .flat(),
      )[0] > 150,
      "the most decreased cell is red",
    );
    console.log(
      `  checked ${picks.length} cells against the tile endpoint: max ${vals[kmax]} @${kmax}, min ${vals[kmin]} @${kmin}`,
    );
    await page.screenshot({ path: join(ARTIFACTS, "explorer-wide.png") });
    if (DOCS_DIR) copyFileSync(join(ARTIFACTS, "explorer-wide.png"), join(DOCS_DIR, "ui-explorer-wide.png"));

    // Tooltip: the exact element behind the most increased cell, with both values.
    const c = await page.evaluate((k) => window.__netlapse.cellCenter(k, "heatmap-diff"), kmax);
    await page.mouse.move(c.clientX, c.clientY);
    const tip = page.locator("[data-testid=tooltip]");
    await page.waitForFunction(
      () => /difference:/.test(document.querySelector("[data-testid=tooltip]")?.textContent ?? ""),
      null,
      { timeout: 30_000 },
    );
    const text = (await tip.locator("div").allTextContents()).join("\n");
    const flat = Number(/\(flat (\d+)\)/.exec(text)?.[1]);
    const diffShown = Number(/difference:\s*(\S+)/.exec(text)?.[1]);
    check(Number.isInteger(flat), "the tooltip names the element's flat index", text);
    check(
      Math.abs(diffShown - vals[kmax]) <= Math.abs(vals[kmax]) * 1e-6,
      "the tooltip's difference is the cell's value (its largest element)",
      { tooltip: diffShown, cell: vals[kmax] },
    );
    const [r, col] = [Math.floor(flat / 12544), flat % 12544];
    const w = await api(
      `/runs/${ctx.id}/tensors/fc1.weight?from=0&to=${ctx.last}&window=${r},${col},${r + 1},${col + 1}`,
    );
    const fromShown = Number(/at from \(step 0\):\s*(\S+)/.exec(text)?.[1]);
    const toShown = Number(/at to \(step \d+\):\s*(\S+)/.exec(text)?.[1]);
    check(
      Math.abs(fromShown - w.from_values[0]) <= Math.abs(w.from_values[0]) * 1e-6 &&
        Math.abs(toShown - w.to_values[0]) <= Math.abs(w.to_values[0]) * 1e-6,
      "the tooltip shows both values of that element",
      { text, api: w },
    );
    check(text.includes(`fc1.weight[${r},${col}]`), "the tooltip shows the element's index", text);

    // Click → that element's trajectory over all steps.
    await page.mouse.down();
    await page.mouse.up();
    await page.waitForSelector("figure[data-chart=trajectory]", {
      timeout: 30_000,
    });
    check(
      (await page.getAttribute("figure[data-chart=trajectory]", "data-index")) === String(flat),
      "clicking the cell draws its largest element's trajectory",
    );

    // Zoom: tiles of the window only, still under the limit.
    const m = meter(page);
    m.start();
    const tz = Date.now();
    await page.click("[data-testid=zoom-in]");
    await page.waitForFunction(`(${drawnRows})() < 1984`);
    await waitReady(page, "explorer");
    const zoomMs = Date.now() - tz;
    const z = await m.stop();
    const zl = JSON.parse(await page.getAttribute(sel, "data-layout"));
    check(
      zl.window[2] - zl.window[0] === 992 && zl.window[3] - zl.window[1] === 6272,
      "zooming in halves the visible window",
      zl.window,
    );
    check(z.bytes <= LIMIT_BYTES, "a zoom step downloads at most 4 MB", z.bytes);
    check((await page.evaluate(() => location.hash)).includes("win="), "the zoom window is in the URL");
    results.zoom = { ms: zoomMs, bytes: z.bytes };

    // Three quick wheel steps add up to one 8x zoom and one picture (the requests in between are dropped).
    const box = await page.locator(sel).boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    for (let i = 0; i < 3; i++) await page.mouse.wheel(0, -100);
    await page.waitForFunction(`(${drawnRows})() < 992 / 4`, null, { timeout: 60_000 });
    await waitReady(page, "explorer");
    const wl = JSON.parse(await page.getAttribute(sel, "data-layout"));
    check(
      wl.window[2] - wl.window[0] === 124 && wl.window[3] - wl.window[1] === 784,
      "three wheel steps zoom 8x",
      wl.window,
    );
    const wt = await api(
      `/runs/${ctx.id}/heatmap/fc1.weight?from=0&to=${ctx.last}&rows=${wl.rows}&cols=${wl.cols}&window=${wl.window.join(",")}&mean=false`,
    );
    const wshot = await shotPixels(page, sel);
    const wcol = await page.evaluate(
      (vs) => vs.map((v) => window.__netlapse.heatmaps["heatmap-diff"].colorOf(v)),
      [wt.values[0], wt.values.at(-1)],
    );
    const last = wt.values.length - 1;
    check(
      sameColor(pixelAt(wshot, wl.cellW / 2, wl.cellH / 2), wcol[0]) &&
        sameColor(
          pixelAt(
            wshot,
            (last % wl.cols) * wl.cellW + wl.cellW / 2,
            Math.floor(last / wl.cols) * wl.cellH + wl.cellH / 2,
          ),
          wcol[1],
        ),
      "the zoomed picture's cells are the window's tiles",
    );

    // The run overview of the same run: every tensor with how much it changed, sorted by relative change.
    await page.click("a[data-link=overview]");
    await waitReady(page, "overview");
    const runPage = await browser.newPage();
    await runPage.goto(`${BASE}/#/runs/${ctx.id}`);
    const fromRun = await runPage.getAttribute("[data-testid=link-overview]", "href");
    check(fromRun === `#/runs/${ctx.id}/overview`, "the run's page links to all its tensors", fromRun);
    await runPage.close();
    check(
      (await page.locator("[data-testid=overview-row]").count()) === 10,
      "the overview lists wide-cnn's 10 tensors",
    );
    await page.click("th button[data-sort=rel]");
    const top = await page.getAttribute("[data-testid=overview-row]", "data-name");
    const ch = (await api(`/runs/${ctx.id}/changes?from=0&to=${ctx.last}`)).tensors;
    const best = ch.reduce((a, b) => ((b.rel ?? -1) > (a.rel ?? -1) ? b : a));
    check(top === best.name, "sorted by relative change, the top row is the tensor that moved most", {
      top,
      best: best.name,
    });
    await page.screenshot({ path: join(ARTIFACTS, "overview-wide.png") });
    if (DOCS_DIR) copyFileSync(join(ARTIFACTS, "overview-wide.png"), join(DOCS_DIR, "ui-overview.png"));
    await o.page.close();
  });

  await step("6 500 tensors: tree picker and run overview stay fast", async () => {
    const page = await browser.newPage({
      viewport: { width: 1280, height: 900 },
    });
    const tensors = [];
    for (let i = 0; tensors.length < 500; i++) {
      const b = `layer${Math.floor(i / 25) + 1}.${i % 25}`;
      tensors.push(
        { name: `${b}.conv1.weight`, shape: [64, 64, 3, 3] },
        { name: `${b}.bn1.weight`, shape: [64] },
        { name: `${b}.bn1.bias`, shape: [64] },
        { name: `${b}.conv2.weight`, shape: [64, 64, 3, 3] },
        { name: `${b}.bn2.bias`, shape: [64] },
      );
    }
    tensors.length = 500;
    const json = (body) => ({
      status: 200,
      contentType: "application/json",
      body: JSON.stringify(body),
    });
    await page.route("**/api/runs/big500*", (r) =>
      r.fulfill(json({ id: "big500", name: "generated-500", status: "succeeded" })),
    );
    await page.route("**/api/runs/big500/tensors", (r) => r.fulfill(json({ tensors })));
    await page.route("**/api/runs/big500/steps", (r) => r.fulfill(json({ steps: [0, 1, 2] })));
    await page.route("**/api/runs/big500/metrics*", (r) =>
      r.fulfill({
        status: 404,
        contentType: "application/json",
        body: '{"detail":"no metrics"}',
      }),
    );
    await page.route("**/api/runs/big500/changes*", (r) =>
      r.fulfill(
        json({
          from: 0,
          to: 2,
          count: 500,
          parameters: 0,
          tensors: tensors.map((t, i) => ({
            name: t.name,
            shape: t.shape,
            numel: t.shape.reduce((a, b) => a * b, 1),
            l2: ((i * 7919) % 500) / 100,
            rel: ((i * 104729) % 500) / 1000,
            max_abs: i / 1000,
            changed_fraction: 1,
          })),
        }),
      ),
    );
    await page.goto(`${BASE}/#/runs/big500/overview`);
    await waitReady(page, "overview");
    check(
      (await page.locator("[data-testid=overview-row]").count()) === 500,
      "the overview lists all 500 tensors",
    );
    const sortMs = await clickMs(page, "th button[data-sort=rel]");
    await page.waitForFunction(
      () => document.querySelector("[data-testid=overview-table]")?.dataset.sort === "rel:desc",
    );
    const firstRel = Number(
      await page.getAttribute("[data-testid=overview-row] td[data-key=rel]", "data-value"),
    );
    check(firstRel === 0.499, "sorting by relative change puts the largest first", firstRel);
    await page.fill("[data-testid=overview-search]", "layer2.3 bn1");
    await page.waitForFunction(
      () => document.querySelector("[data-testid=overview-table]")?.dataset.rows === "2",
    );
    const href = await page.getAttribute("[data-testid=overview-row]:not([hidden]) a", "href");
    check(
      href.includes("/explore") && href.includes("tensor=layer2.3.bn1"),
      "each row links into the explorer",
      href,
    );

    await page.goto(`${BASE}/#/runs/big500/explore?tensor=layer1.0.bn1.weight`);
    await page.waitForSelector("[data-testid=tensor-picker]");
    const openMs = await clickMs(page, "[data-testid=tensor-picker]");
    await page.waitForSelector("[data-testid=tensor-tree-panel]:not([hidden])");
    check(
      (await page.locator("[data-testid=tensor-item]").count()) === 500,
      "the tree holds all 500 tensors",
    );
    await page.keyboard.type("layer3.12 conv2");
    // One filtering of the 500 items, as the search box does it (ArrowDown applies what was typed at once).
    const searchMs = await page.evaluate(() => {
      const t = performance.now();
      const box = document.querySelector("[data-testid=tensor-search]");
      box.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
      void document.body.offsetHeight;
      return performance.now() - t;
    });
    check(
      (await page.getAttribute("[data-testid=tensor-search-count]", "data-shown")) === "1",
      "the search leaves the one match",
    );
    for (let i = 0; i < 3; i++) await page.keyboard.press("ArrowDown");
    const focused = await page.evaluate(
      () => document.activeElement?.dataset.name ?? document.activeElement?.dataset.path,
    );
    check(focused === "layer3.12.conv2.weight", "arrow keys walk the filtered tree to the match", focused);
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => location.hash.includes("tensor=layer3.12.conv2.weight"));
    check(
      (await page.getAttribute("[data-testid=tensor-picker]", "data-value")) === "layer3.12.conv2.weight",
      "Enter picks the tensor",
    );
    const ms = (v) => Math.round(v * 10) / 10;
    results.tensors_500 = {
      overview_sort_ms: ms(sortMs),
      picker_open_ms: ms(openMs),
      picker_search_ms: ms(searchMs),
      note: "in the page: JS, DOM and the layout they cause",
    };
    console.log(
      `  500 tensors (in-page): sort ${ms(sortMs)} ms, picker open ${ms(openMs)} ms, search ${ms(searchMs)} ms`,
    );
    await page.close();
  });
} catch (e) {
  check(false, `stopped: ${e.message}`);
} finally {
  await browser.close();
}

results.checks_failed = failures.length;
writeFileSync(join(ARTIFACTS, "explorer_open.json"), JSON.stringify(results, null, 1));
console.log(JSON.stringify(results));
if (failures.length) {
  console.log(`\n${failures.length} check(s) failed:\n${failures.map((f) => `  - ${f}`).join("\n")}`);
  process.exit(1);
}
console.log("\nall checks passed");
