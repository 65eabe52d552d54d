// End-to-end test of the Activations view on runs recorded by the SDK, in headless Debian Chromium.
//
//   node tests/e2e/sdk_activations.e2e.mjs <base-url> <artifacts-dir>
//
// Env (written by tests/e2e/test_sdk_activations_ui.py): NETLAPSE_E2E_SDK_RUN = an SDK run with a model program
// and evaluation data (3 labels; conv layers stem, block.a, block.b); NETLAPSE_E2E_SDK_BARE_RUN = an SDK run
// without evaluation data; NETLAPSE_CHROMIUM (default /usr/bin/chromium).
//
// The view lists the program's conv layers by module path, draws one panel per filter with one bar per label
// whose values are the API's Eq. 1 numbers, shows a filter's feature maps on click, and on the bare run shows the
// API's message saying what to hand over. Exits 0 when every check passed, 1 otherwise.

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const requireFromFrontend = createRequire(resolve(here, "../../frontend/package.json"));
const { chromium } = requireFromFrontend("playwright-core");

const BASE = (process.argv[2] ?? "").replace(/\/+$/, "");
const ARTIFACTS = resolve(process.argv[3] ?? "test-artifacts/e2e-sdk");
const RUN = process.env.NETLAPSE_E2E_SDK_RUN;
const BARE = process.env.NETLAPSE_E2E_SDK_BARE_RUN;
if (!BASE || !RUN || !BARE) {
  console.error("usage: NETLAPSE_E2E_SDK_RUN=… NETLAPSE_E2E_SDK_BARE_RUN=… node tests/e2e/sdk_activations.e2e.mjs <base-url> <dir>");
  process.exit(2);
}
const TIMEOUT = 120_000;
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"];

const failures = [];
let currentStep = "setup";

function check(cond, message, details) {
  if (cond) return true;
  const line = `[${currentStep}] ${message}${details === undefined ? "" : ` — ${JSON.stringify(details).slice(0, 400)}`}`;
  failures.push(line);
  console.log(`  FAIL ${line}`);
  return false;
}

async function api(path, init) {
  const r = await fetch(BASE + "/api" + path, init);
  return { status: r.status, body: await r.json() };
}

async function step(name, page, fn) {
  currentStep = name;
  console.log(`▶ ${name}`);
  try {
    await fn();
  } catch (e) {
    check(false, `step threw: ${e?.message ?? e}`);
    await page.screenshot({ path: join(ARTIFACTS, `failed-${name.replace(/\W+/g, "-")}.png`) }).catch(() => {});
  }
}

async function viewState(page) {
  await page.waitForSelector("[data-testid=activations-view][data-state=ready], [data-testid=activations-view][data-state=error]", { timeout: TIMEOUT });
  return page.getAttribute("[data-testid=activations-view]", "data-state");
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: process.env.NETLAPSE_CHROMIUM || "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS });
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  page.setDefaultTimeout(30_000);
  try {
    const steps = (await api(`/runs/${RUN}/steps`)).body.steps;
    const last = steps[steps.length - 1];

    await step("1 the program's conv layers, one panel per filter, the API's numbers", page, async () => {
      await page.goto(`${BASE}/#/runs/${RUN}/activations?layer=block.a&step=${last}`);
      const state = await viewState(page);
      const banner = await page.locator("[data-testid=activations-view] [data-testid=error-banner]").allTextContents();
      if (!check(state === "ready", "the view is ready", { state, banner })) return;
      const options = await page.locator("[data-testid=layer-select] option").evaluateAll((os) => os.map((o) => o.value));
      check(JSON.stringify(options) === JSON.stringify(["stem", "block.a", "block.b"]), "layers by module path, in the model's order", options);
      const filters = page.locator("[data-testid=activation-panel] [data-testid=activation-filter]");
      check((await filters.count()) === 4, "block.a has 4 filter panels", await filters.count());
      const bars = await filters.evaluateAll((els) => els.map((e) => [...e.querySelectorAll("rect.bar")].map((r) => ({ label: r.dataset.label, value: r.dataset.value }))));
      check(bars.every((b) => b.map((x) => x.label).join(",") === "0,1,2"), "one bar per label 0..2", bars.map((b) => b.length));
      const body = { step: last, layer: "block.a", per_label: 100, point: "post", split: "test" };
      const expected = (await api(`/runs/${RUN}/activations`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).body;
      const mismatch = [];
      expected.activation.forEach((row, f) =>
        row.forEach((v, j) => {
          const ui = bars[f]?.[j]?.value;
          if (!(v === null ? ui === "null" : Number(ui) === v)) mismatch.push({ f, j, ui, api: v });
        }),
      );
      check(mismatch.length === 0, "every bar's value is the API's Eq. 1 activation", mismatch.slice(0, 5));
      await page.screenshot({ path: join(ARTIFACTS, "sdk-activations.png") });

      await filters.nth(1).click();
      await page.waitForSelector("[data-testid=featuremaps] canvas", { timeout: TIMEOUT });
      check((await page.locator("[data-testid=featuremaps] canvas").count()) > 0, "clicking a filter shows its feature maps");
      await page.screenshot({ path: join(ARTIFACTS, "sdk-featuremaps.png") });
    });

    await step("2 a run without evaluation data says what to hand over", page, async () => {
      await page.goto(`${BASE}/#/runs/${BARE}/activations`);
      const state = await viewState(page);
      const banner = (await page.locator("[data-testid=activations-view] [data-testid=error-banner]").allTextContents()).join(" ");
      check(state === "error", "the view shows an error, not empty charts", state);
      check(banner.includes("run.eval_data(inputs, labels)"), "the banner carries the API's message", banner);
      await page.screenshot({ path: join(ARTIFACTS, "sdk-no-eval-data.png") });
    });
  } finally {
    await browser.close();
  }
  console.log(failures.length ? `${failures.length} check(s) failed:\n${failures.join("\n")}` : "all checks passed");
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
