// Runs list (start page): status, dataset, model, progress, age; click a run to open it.

import { h, setChildren, spinner, errorBanner, statusBadge, progressBar } from "../ui.js";
import { fmtAge, fmtNum, fmtPct } from "../format.js";
import { buildHash } from "../state.js";
import { TERMINAL } from "../events.js";

/** "paper-cnn" for a preset run, "SDK · N modules" for a run recorded by the SDK, otherwise "N layers".
 * Accepts a run or a model spec. */
export function modelLabel(run) {
  if (!run) return "—";
  if (run.preset) return run.preset;
  if (run.source === "sdk") return `SDK · ${Object.keys(run.sdk?.modules ?? {}).length} modules`;
  const model = run.model ?? run;
  if (model.preset) return model.preset;
  const n = model.layers?.length ?? 0;
  return `${n} layers`;
}

/** Fraction 0..1 of a run's progress. */
export function progressFraction(run) {
  const p = run?.progress ?? {};
  if (run?.status === "succeeded") return 1;
  if (p.total_steps > 0) return Math.min(1, (p.step ?? 0) / p.total_steps);
  return 0;
}

export function mount(root, { api, navigate }) {
  const list = h("div.runs-list");
  const banner = h("div");
  let timer = null;
  let destroyed = false;
  const ctl = new AbortController();

  setChildren(
    root,
    h("div.page-head", {}, h("h1", {}, "Runs"), h("a.button.primary", { href: "#/new", "data-testid": "new-run" }, "New run")),
    banner,
    list,
  );
  list.append(spinner("Loading…"));

  async function load() {
    try {
      const { runs = [] } = (await api.listRuns({ signal: ctl.signal })) ?? {};
      if (destroyed) return;
      setChildren(banner);
      renderTable(runs);
      clearTimeout(timer);
      if (runs.some((r) => !TERMINAL.has(r.status))) timer = setTimeout(load, 2000);
    } catch (e) {
      if (destroyed || e.name === "AbortError") return;
      setChildren(banner, errorBanner(e, { onRetry: load }));
      setChildren(list);
    }
  }

  async function act(fn, run) {
    try {
      await fn(run.id);
      load();
    } catch (e) {
      setChildren(banner, errorBanner(e));
    }
  }

  function renderTable(runs) {
    if (!runs.length) {
      setChildren(list, h("p.empty", { "data-testid": "runs-empty" }, "No runs yet. ", h("a", { href: "#/new" }, "Start one"), "."));
      return;
    }
    const rows = runs.map((r) => {
      const p = r.progress ?? {};
      const href = buildHash(["runs", r.id]);
      const open = () => navigate(href);
      return h(
        "tr.run-row",
        { "data-testid": "run-row", "data-run-id": r.id, "data-status": r.status, onclick: (ev) => (ev.target.closest("a,button") ? null : open()) },
        h("td", {}, h("a", { href, "data-testid": "run-link" }, r.name || r.id)),
        h("td", {}, statusBadge(r.status)),
        h("td", {}, r.dataset ?? "—"),
        h("td", {}, modelLabel(r)),
        h(
          "td.progress-cell",
          {},
          progressBar(progressFraction(r), `progress of ${r.name || r.id}`),
          h("span.small-text", {}, p.total_steps ? `${p.step ?? 0} / ${p.total_steps}` : ""),
        ),
        h("td", {}, r.summary?.val_accuracy != null ? fmtPct(r.summary.val_accuracy) : p.loss != null ? `loss ${fmtNum(p.loss, 3)}` : "—"),
        h("td", { title: r.created_at ?? "" }, fmtAge(r.created_at)),
        h(
          "td.actions",
          {},
          !TERMINAL.has(r.status) ? h("button.small", { type: "button", onclick: () => act(api.cancelRun, r) }, "Cancel") : null,
          TERMINAL.has(r.status)
            ? h("button.small.danger", { type: "button", "aria-label": `Delete run ${r.name || r.id}`, onclick: () => confirm(`Delete run ${r.name || r.id} and all its data?`) && act(api.deleteRun, r) }, "Delete")
            : null,
        ),
      );
    });
    setChildren(
      list,
      h(
        "table.table",
        { "data-testid": "runs-table" },
        h("thead", {}, h("tr", {}, ...["Name", "Status", "Dataset", "Model", "Progress", "Result", "Age", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows),
      ),
    );
  }

  load();
  return {
    destroy() {
      destroyed = true;
      ctl.abort();
      clearTimeout(timer);
    },
  };
}
