// Live training: loss & accuracy curves fed by the run's WebSocket (with replay on reconnect),
// progress with ETA, cancel, status; when finished, the summary and links to the analyses.

import { h, setChildren, spinner, errorBanner, statusBadge, progressBar } from "../ui.js";
import { fmtNum, fmtPct, fmtBytes, fmtDuration } from "../format.js";
import { buildHash } from "../state.js";
import {
  RunEventStream,
  TERMINAL,
  emptyMetrics,
  mergeMetrics,
  applyEventToMetrics,
  metricsArrays,
} from "../events.js";
import { SERIES } from "../colors.js";
import { chartFigure, fileStem } from "../export.js";
import * as lines from "../charts/lines.js";
import { modelLabel, progressFraction } from "./runs.js";

/** Progress line: "step 120 / 469 · epoch 1 / 3 · ETA 42 s". */
export function progressText(p = {}) {
  const parts = [];
  if (p.total_steps) parts.push(`step ${p.step ?? 0} / ${p.total_steps}`);
  else if (p.step != null) parts.push(`step ${p.step}`);
  if (p.epochs) parts.push(`epoch ${p.epoch ?? 0} / ${p.epochs}`);
  if (p.loss != null) parts.push(`loss ${fmtNum(p.loss, 4)}`);
  if (p.accuracy != null) parts.push(`acc ${fmtPct(p.accuracy)}`);
  if (p.eta_seconds != null) parts.push(`ETA ${fmtDuration(p.eta_seconds)}`);
  return parts.join(" · ");
}

export function mount(root, { api, routeParams }) {
  const id = routeParams.id;
  const ctl = new AbortController();
  const metrics = emptyMetrics();
  let run = null;
  let stream = null;
  let destroyed = false;
  let pollTimer = null;
  let frame = 0;
  let eventCount = 0;
  let terminalSeen = null; // final status announced by the stream, in case the record lags behind
  let refreshRetries = 0;

  const banner = h("div");
  const head = h("div.page-head");
  const progress = h("div.live-progress");
  const conn = h("span.conn", { "data-testid": "connection", "data-state": "idle" });
  const lossFig = chartFigure({
    title: "Loss",
    chart: "loss",
    exportSpec: {
      name: () => fileStem(run?.name ?? id, "loss"),
      csv: () => metricsCsv(),
      npy: () => metricsNpy("loss"),
    },
  });
  const accFig = chartFigure({
    title: "Accuracy",
    chart: "accuracy",
    exportSpec: {
      name: () => fileStem(run?.name ?? id, "accuracy"),
      csv: () => metricsCsv(),
      npy: () => metricsNpy("accuracy"),
    },
  });
  const summary = h("div");
  root.dataset.testid = "live-view";
  root.setAttribute("data-testid", "live-view");
  setChildren(root, head, banner, progress, h("div.charts-row", {}, lossFig.figure, accFig.figure), summary);
  head.append(spinner("Loading…"));

  function metricsCsv() {
    const { steps, epochs } = metricsArrays(metrics);
    const valBy = new Map(epochs.map((e) => [e.step, e]));
    return {
      columns: ["step", "epoch", "loss", "accuracy", "val_loss", "val_accuracy"],
      rows: steps.map((p) => [
        p.step,
        p.epoch,
        p.loss,
        p.accuracy,
        valBy.get(p.step)?.val_loss,
        valBy.get(p.step)?.val_accuracy,
      ]),
    };
  }
  function metricsNpy(key) {
    const { steps } = metricsArrays(metrics);
    const vals = new Float32Array(steps.length * 2);
    steps.forEach((p, i) => {
      vals[2 * i] = p.step;
      vals[2 * i + 1] = p[key] ?? NaN;
    });
    return { values: vals, shape: [steps.length, 2] };
  }

  function renderHead() {
    const terminal = TERMINAL.has(run.status);
    setChildren(
      head,
      h(
        "div",
        {},
        h("h1", {}, run.name || run.id),
        h(
          "p.lede",
          {},
          `${run.dataset ?? "—"} · ${modelLabel(run)} · ${run.training?.optimizer ?? ""} lr ${run.training?.lr ?? ""} · batch ${run.training?.batch_size ?? ""} · snapshot every ${run.capture?.every ?? 1}`,
        ),
      ),
      h(
        "div.head-actions",
        {},
        statusBadge(run.status),
        conn,
        !terminal
          ? h("button.danger", { type: "button", "data-testid": "cancel-run", onclick: cancel }, "Cancel run")
          : null,
      ),
    );
    root.dataset.status = run.status;
    root.dataset.final = String(terminal);
  }

  function renderProgress() {
    const p = TERMINAL.has(run.status) ? { ...run.progress, eta_seconds: null } : (run.progress ?? {});
    setChildren(
      progress,
      progressBar(progressFraction(run), "training progress"),
      h(
        "div.progress-text",
        { "data-testid": "progress-text" },
        progressText(p) || (run.status === "queued" ? "waiting for a trainer…" : ""),
      ),
    );
  }

  function renderCharts() {
    const { steps, epochs } = metricsArrays(metrics);
    root.dataset.stepPoints = String(steps.length);
    const total = run?.progress?.total_steps;
    const xDomain = total ? [0, total] : null;
    setChildren(lossFig.plot);
    lines.render(
      lossFig.plot,
      {
        series: [
          { name: "train loss", color: SERIES.loss, points: steps.map((p) => ({ x: p.step, y: p.loss })) },
          {
            name: "val loss",
            color: SERIES.val,
            kind: "dots",
            points: epochs.map((e) => ({ x: e.step, y: e.val_loss })),
          },
        ],
      },
      { yLabel: "loss", xDomain, testid: "loss-chart", width: 560 },
    );
    setChildren(accFig.plot);
    lines.render(
      accFig.plot,
      {
        series: [
          {
            name: "train acc",
            color: SERIES.accuracy,
            points: steps.map((p) => ({ x: p.step, y: p.accuracy })),
          },
          {
            name: "val acc",
            color: SERIES.val,
            kind: "dots",
            points: epochs.map((e) => ({ x: e.step, y: e.val_accuracy })),
          },
        ],
      },
      { yLabel: "accuracy", xDomain, yDomain: [0, 1], testid: "accuracy-chart", width: 560 },
    );
    lossFig.caption.textContent = `${steps.length} steps · ${epochs.length} validation points`;
  }

  function renderSummary() {
    if (!TERMINAL.has(run.status)) {
      setChildren(summary);
      return;
    }
    const s = run.summary ?? {};
    const ratio = s.raw_bytes ? s.stored_bytes / s.raw_bytes : null;
    const row = (k, v, key) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { "data-key": key }, v));
    const link = (seg, label, testid) =>
      h("a.button", { href: buildHash(["runs", id, seg]), "data-testid": testid }, label);
    setChildren(
      summary,
      run.status === "failed" && run.error
        ? h("div.banner.error", { role: "alert", "data-testid": "run-error" }, `Run failed: ${run.error}`)
        : null,
      run.status === "cancelled"
        ? h(
            "div.banner.info",
            {},
            "This run was cancelled; what was captured up to then can still be explored.",
          )
        : null,
      h(
        "section.summary",
        { "data-testid": "run-summary" },
        h("h2", {}, "Summary"),
        h(
          "table.kv",
          {},
          row("Train time", fmtDuration(s.train_seconds), "train_seconds"),
          row("Capture wait (backpressure)", fmtDuration(s.capture_wait_seconds), "capture_wait_seconds"),
          row("Raw bytes", fmtBytes(s.raw_bytes), "raw_bytes"),
          row(
            "Stored bytes",
            `${fmtBytes(s.stored_bytes)}${ratio != null ? ` (${ratio.toFixed(2)}× raw)` : ""}`,
            "stored_bytes",
          ),
          row("Final loss", fmtNum(s.final_loss, 4), "final_loss"),
          row("Validation accuracy", fmtPct(s.val_accuracy, 2), "val_accuracy"),
        ),
        h(
          "nav.analysis-links",
          { "aria-label": "Analyses" },
          link("explore", "Parameter explorer", "link-explorer"),
          link("overview", "All tensors", "link-overview"),
          link("scatter", "Initial value vs change", "link-scatter"),
          link("activations", "Per-label activations", "link-activations"),
        ),
      ),
    );
  }

  function schedule() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      if (destroyed || !run) return;
      renderHead();
      renderProgress();
      renderCharts();
      renderSummary();
    });
  }

  async function refreshAll() {
    try {
      const [r, m] = await Promise.all([
        api.getRun(id, { signal: ctl.signal }),
        api.metrics(id, { signal: ctl.signal }).catch(() => null),
      ]);
      if (destroyed) return;
      if (terminalSeen && !TERMINAL.has(r.status)) {
        r.status = terminalSeen;
        if (refreshRetries++ < 10) setTimeout(refreshAll, 1000);
      }
      run = r;
      if (m) mergeMetrics(metrics, m);
      schedule();
    } catch (e) {
      if (!destroyed && e.name !== "AbortError") setChildren(banner, errorBanner(e));
    }
  }

  function onEvent(ev) {
    eventCount += 1;
    root.dataset.events = String(eventCount);
    root.dataset.lastEventId = ev.id ?? "";
    if (!run) return;
    const d = ev.data ?? {};
    switch (ev.type) {
      case "progress":
        run.progress = { ...run.progress, ...d };
        applyEventToMetrics(metrics, ev);
        if (run.status === "queued") run.status = "running";
        break;
      case "epoch":
      case "metrics":
        applyEventToMetrics(metrics, ev);
        break;
      case "status":
        run.status = d.status ?? run.status;
        if (d.error) run.error = d.error;
        if (TERMINAL.has(run.status)) {
          terminalSeen = run.status;
          refreshAll();
        }
        break;
      case "snapshot":
        run.progress = { ...run.progress, snapshot_step: d.step };
        break;
      case "trimmed":
        // What we missed was trimmed from the stream: take it from the REST endpoints.
        refreshAll();
        break;
      case "error":
        setChildren(
          banner,
          errorBanner(new Error(d.detail ?? d.message ?? d.error ?? "the run reported an error")),
        );
        break;
      default:
        break;
    }
    schedule();
  }

  function onState(s, code) {
    if (code === 4401) api.unauthorized?.("The live event stream needs a valid API token.");
    conn.dataset.state = s;
    conn.textContent =
      { connecting: "connecting…", open: "live", reconnecting: "reconnecting…", closed: "", ended: "" }[s] ??
      s;
    clearTimeout(pollTimer);
    if (s === "reconnecting") pollTimer = setTimeout(pollWhileDown, 3000);
  }

  async function pollWhileDown() {
    try {
      const r = await api.getRun(id, { signal: ctl.signal });
      if (destroyed) return;
      run = { ...r, progress: { ...run?.progress, ...r.progress } };
      if (TERMINAL.has(r.status)) {
        stream?.close();
        await refreshAll();
        return;
      }
      schedule();
    } catch {
      // server unreachable too; keep trying
    }
    if (!destroyed && conn.dataset.state === "reconnecting") pollTimer = setTimeout(pollWhileDown, 3000);
  }

  async function cancel() {
    try {
      const r = await api.cancelRun(id, { signal: ctl.signal });
      if (r?.status) run.status = r.status;
      schedule();
    } catch (e) {
      if (e.name !== "AbortError") setChildren(banner, errorBanner(e));
    }
  }

  (async () => {
    await refreshAll();
    if (destroyed || !run) {
      if (!run) setChildren(head);
      return;
    }
    if (!TERMINAL.has(run.status)) {
      // api.eventsUrl trades the token for a single-use ticket: the token never goes in the WebSocket's URL
      const urlFor = api.eventsUrl ? (runId, since) => api.eventsUrl(runId, since) : undefined;
      stream = new RunEventStream(id, { onEvent, onState, ...(urlFor && { urlFor }) }).start();
    }
  })();

  return {
    destroy() {
      destroyed = true;
      ctl.abort();
      stream?.close();
      clearTimeout(pollTimer);
      if (frame) cancelAnimationFrame(frame);
    },
  };
}
