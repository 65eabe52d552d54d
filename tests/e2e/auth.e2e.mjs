// A signed-in browser session on a server with tokens: sign in through the top bar, open a training run's live
// view (its WebSocket authenticates with a single-use ticket), and check that the token never appears in any URL
// the page requested or in any WebSocket URL. tests/e2e/test_auth_ui.py then searches every service log.
//
//   node tests/e2e/auth.e2e.mjs <base-url> <token> <run-id> <artifacts-dir>
//
// Exits 0 when every check passed, 1 otherwise (each failure printed).

import { createRequire } from "node:module";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const requireFromFrontend = createRequire(resolve(here, "../../frontend/package.json"));
const { chromium } = requireFromFrontend("playwright-core");

const [BASE, TOKEN, RUN, OUT] = process.argv.slice(2);
if (!BASE || !TOKEN || !RUN || !OUT) {
  console.error("usage: node tests/e2e/auth.e2e.mjs <base-url> <token> <run-id> <artifacts-dir>");
  process.exit(2);
}
mkdirSync(OUT, { recursive: true });
const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};

const browser = await chromium.launch({
  executablePath: process.env.NETLAPSE_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
const requested = [];
const sockets = [];
page.on("request", (r) => requested.push(r.url()));
page.on("websocket", (ws) => sockets.push(ws.url()));
try {
  await page.goto(`${BASE}/#/runs`);
  await page.waitForSelector("[data-testid=auth][data-state=ask]", { timeout: 30_000 });
  check(true, "the top bar asks for a token");
  await page.fill("[data-testid=token-input]", TOKEN);
  await page.click("[data-testid=token-save]");
  await page.waitForSelector("[data-testid=auth][data-state=signed-in]", { timeout: 30_000 });
  check((await page.textContent("[data-testid=auth-user]")) === "alice", "signed in as alice");
  await page.goto(`${BASE}/#/runs/${RUN}`);
  await page.waitForSelector("[data-testid=connection][data-state=open]", { timeout: 60_000 });
  check(true, "the live view's WebSocket is open");
  await page.waitForFunction(
    () => /step [1-9]\d*/.test(document.querySelector("[data-testid=progress-text]")?.textContent ?? ""),
    null,
    { timeout: 60_000 },
  );
  check(true, "live progress (step ≥ 1) arrives over the WebSocket");
  await page.screenshot({ path: join(OUT, "auth-live.png") });
  // a reconnect takes a fresh ticket: reload the view
  await page.reload();
  await page.waitForSelector("[data-testid=connection][data-state=open]", { timeout: 60_000 });
  check(sockets.length >= 2, `two WebSockets were opened (${sockets.length})`);
  check(sockets.every((u) => /[?&]ticket=[A-Za-z0-9_-]{20,}/.test(u)), "every WebSocket URL carries a ticket");
  check(new Set(sockets.map((u) => new URL(u).searchParams.get("ticket"))).size === sockets.length, "no ticket is reused");
  check(![...requested, ...sockets].some((u) => u.includes(TOKEN)), "the token is in no URL the page requested");
  check(![...requested, ...sockets].some((u) => /[?&]token=/.test(u)), "no URL has a token parameter");
} catch (e) {
  failures.push(String(e));
  console.log(`FAIL ${e}`);
  await page.screenshot({ path: join(OUT, "auth-failure.png") }).catch(() => {});
} finally {
  writeFileSync(join(OUT, "auth-urls.json"), JSON.stringify({ requested, sockets }, null, 1));
  await browser.close();
}
process.exit(failures.length ? 1 : 0);
