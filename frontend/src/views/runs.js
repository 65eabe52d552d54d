// Runs list (start page): status, dataset, model, progress, age; click a run to open it.

import { h, setChildren, spinner, errorBanner, statusBadge, progressBar } from "../ui.js";
import { fmtAge, fmtNum, fmtPct } from "../format.js";
import { buildHash } from "../state.js";
import { TERMINAL } from "../events.js";
import { MAX_RUNS as MAX_COMPARED } from "./compare.js";

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

  // Runs ticked for comparison, in the order they were ticked (run A, run B, …).
  const selected = [];
  const compareBtn = h(
    "button",
    {
      type: "button",
      "data-testid": "compare-selected",
      disabled: true,
      onclick: () => navigate(buildHash(["compare"], { runs: selected.join(",") })),
    },
    "Compare",
  );
  const updateCompare = () => {
    compareBtn.disabled = selected.length < 2 || selected.length > MAX_COMPARED;
    compareBtn.textContent = selected.length ? `Compare ${selected.length} runs` : "Compare";
    compareBtn.title =
      selected.length > MAX_COMPARED ? `at most ${MAX_COMPARED} runs` : "tick two to eight runs";
  };
  setChildren(
    root,
    h(
      "div.page-head",
      {},
      h("h1", {}, "Runs"),
      compareBtn,
      h("a.button.primary", { href: "#/new", "data-testid": "new-run" }, "New run"),
    ),
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
      setChildren(
        list,
        h(
          "p.empty",
          { "data-testid": "runs-empty" },
          "No runs yet. ",
          h("a", { href: "#/new" }, "Start one"),
          ".",
        ),
      );
      return;
    }
    const rows = runs.map((r) => {
      const p = r.progress ?? {};
      const href = buildHash(["runs", r.id]);
      const open = () => navigate(href);
      return h(
        "tr.run-row",
        {
          "data-testid": "run-row",
          "data-run-id": r.id,
          "data-status": r.status,
          onclick: (ev) => (ev.target.closest("a,button,input,label") ? null : open()),
        },
        h(
          "td",
          {},
          h("input", {
            type: "checkbox",
            "data-testid": "run-select",
            "aria-label": `compare ${r.name || r.id}`,
            checked: selected.includes(r.id),
            onchange: (ev) => {
              const i = selected.indexOf(r.id);
              if (ev.target.checked && i < 0) selected.push(r.id);
              if (!ev.target.checked && i >= 0) selected.splice(i, 1);
              updateCompare();
            },
          }),
        ),
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
        h(
          "td",
          {},
          r.summary?.val_accuracy != null
            ? fmtPct(r.summary.val_accuracy)
            : p.loss != null
              ? `loss ${fmtNum(p.loss, 3)}`
              : "—",
        ),
        h("td", { title: r.created_at ?? "" }, fmtAge(r.created_at)),
        h(
          "td.actions",
          {},
          h(
            "a.button.small",
            { href: buildHash(["runs", r.id, "health"]), "data-testid": "health-link" },
            "Health",
          ),
          !TERMINAL.has(r.status)
            ? h("button.small", { type: "button", onclick: () => act(api.cancelRun, r) }, "Cancel")
            : null,
          TERMINAL.has(r.status)
            ? h(
                "button.small.danger",
                {
                  type: "button",
                  "aria-label": `Delete run ${r.name || r.id}`,
                  onclick: () =>
                    confirm(`Delete run ${r.name || r.id} and all its data?`) && act(api.deleteRun, r),
                },
                "Delete",
              )
            : null,
        ),
      );
    });
    setChildren(
      list,
      h(
        "table.table",
        { "data-testid": "runs-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ...["", "Name", "Status", "Dataset", "Model", "Progress", "Result", "Age", ""].map((t) =>
              h("th", { scope: "col" }, t),
            ),
          ),
        ),
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
