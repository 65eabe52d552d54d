// Run overview: every captured tensor with its shape, parameter count and how much it changed between two
// steps (L2 of the change, relative to the tensor's L2, max |Δ|), sortable and searchable, each linking into the
// explorer. Sorting and search re-render one table body, so hundreds of tensors stay instant.

import { h, setChildren, spinner, errorBanner, debounce } from "../ui.js";
import { fmtNum, fmtShape, fmtPct } from "../format.js";
import { buildHash, intParam, replaceParams } from "../state.js";
import { bootstrapRunView, settleSteps } from "../runview.js";
import { matchesQuery } from "../tensortree.js";
import { tensorChanges } from "../tensorapi.js";
import { snapStep } from "../charts/timeline.js";

const numel = (shape) => (shape ?? []).reduce((a, b) => a * b, 1);

export const COLUMNS = [
  { key: "order", label: "#", numeric: true },
  { key: "name", label: "Tensor" },
  { key: "shape", label: "Shape" },
  { key: "numel", label: "Parameters", numeric: true },
  { key: "l2", label: "‖Δ‖", numeric: true },
  { key: "rel", label: "‖Δ‖ / ‖w‖", numeric: true },
  { key: "max_abs", label: "max |Δ|", numeric: true },
  { key: "changed_fraction", label: "changed", numeric: true },
];

/** One row per tensor (capture order), with the change figures when they are known. */
export function overviewRows(tensors, changes) {
  const byName = new Map((changes?.tensors ?? []).map((c) => [c.name, c]));
  return tensors.map((t, i) => ({
    order: i,
    name: t.name,
    shape: t.shape,
    numel: numel(t.shape),
    ...(byName.get(t.name) ?? {}),
  }));
}

/** Rows sorted by `key` (numbers, or names); missing values last whatever the direction. */
export function sortRows(rows, key, dir = "desc") {
  const sign = dir === "asc" ? 1 : -1;
  const val = (r) => (key === "shape" ? r.numel : r[key]);
  return rows.slice().sort((a, b) => {
    const x = val(a);
    const y = val(b);
    const xm = x === undefined || x === null || Number.isNaN(x);
    const ym = y === undefined || y === null || Number.isNaN(y);
    if (xm || ym) return xm === ym ? a.order - b.order : xm ? 1 : -1;
    if (typeof x === "string") return sign * x.localeCompare(y) || a.order - b.order;
    return sign * (x - y) || a.order - b.order;
  });
}

export function mount(root, { api, routeParams, params }) {
  const id = routeParams.id;
  const ctl = new AbortController();
  let destroyed = false;
  let tensors = [];
  let steps = [];
  let changes = null;
  let token = 0;
  const st = {
    from: intParam(params, "from", null),
    to: intParam(params, "to", null),
    sort: COLUMNS.some((c) => c.key === params.sort) ? params.sort : "order",
    dir: params.dir === "desc" ? "desc" : params.dir === "asc" ? "asc" : null,
    q: params.q ?? "",
  };

  root.setAttribute("data-testid", "overview");
  root.dataset.state = "loading";
  const banner = h("div");
  const head = h("div.page-head");
  const controls = h("div.controls");
  const status = h("div.overview-status");
  const table = h("table.overview-table", { "data-testid": "overview-table" });
  const body = h("div.overview-body", {}, spinner("Loading…"));
  setChildren(root, head, banner, controls, status, body);

  const dir = () => st.dir ?? (st.sort === "order" || st.sort === "name" ? "asc" : "desc");

  function syncUrl() {
    replaceParams(["runs", id, "overview"], {
      from: st.from,
      to: st.to,
      sort: st.sort === "order" ? null : st.sort,
      dir: st.dir,
      q: st.q || null,
    });
  }

  function renderControls() {
    const stepInput = (key, testid, label) =>
      h(
        "label.inline",
        {},
        label,
        h("input", {
          type: "number",
          step: 1,
          value: st[key],
          "data-testid": testid,
          onchange: (e) => {
            st[key] = snapStep(steps, Number(e.target.value));
            if (st.from > st.to) [st.from, st.to] = [st.to, st.from];
            renderControls();
            loadChanges();
          },
        }),
      );
    const search = h("input", {
      type: "search",
      value: st.q,
      placeholder: "Search tensors…",
      "aria-label": "Search tensors",
      "data-testid": "overview-search",
      oninput: debounce((e) => ((st.q = e.target.value), syncUrl(), renderBody()), 80),
    });
    setChildren(
      controls,
      stepInput("from", "from-input", "change from step"),
      stepInput("to", "to-input", "to"),
      search,
    );
  }

  function renderHeader() {
    const d = dir();
    return h(
      "thead",
      {},
      h(
        "tr",
        {},
        COLUMNS.map((c) =>
          h(
            "th",
            {
              scope: "col",
              "aria-sort": st.sort === c.key ? (d === "asc" ? "ascending" : "descending") : "none",
              class: c.numeric ? "num" : null,
            },
            h(
              "button.sort",
              {
                type: "button",
                "data-sort": c.key,
                onclick: () => {
                  if (st.sort === c.key) st.dir = dir() === "asc" ? "desc" : "asc";
                  else {
                    st.sort = c.key;
                    st.dir = null;
                  }
                  syncUrl();
                  renderBody();
                },
              },
              c.label,
              st.sort === c.key ? (d === "asc" ? " ▲" : " ▼") : "",
            ),
          ),
        ),
      ),
    );
  }

  // One <tr> per tensor, built once per set of figures; sorting re-orders them and search hides them, so 500
  // tensors re-sort without rebuilding 4,000 cells.
  let built = null; // {rows, byName: Map<name, tr>, tbody}
  function buildRows() {
    const link = (name) =>
      buildHash(["runs", id, "explore"], { tensor: name, from: st.from, to: st.to, mode: "diff" });
    const cell = (v, fmt) => (v === undefined ? (changes ? "—" : "…") : v === null ? "—" : fmt(v));
    const rows = overviewRows(tensors, changes);
    const byName = new Map();
    for (const r of rows) {
      byName.set(
        r.name,
        h(
          "tr",
          { "data-name": r.name, "data-testid": "overview-row" },
          h("td.num", {}, String(r.order + 1)),
          h("td", {}, h("a", { href: link(r.name) }, r.name)),
          h("td", {}, fmtShape(r.shape)),
          h("td.num", {}, r.numel.toLocaleString()),
          h(
            "td.num",
            { "data-key": "l2", "data-value": r.l2 ?? "" },
            cell(r.l2, (v) => fmtNum(v, 4)),
          ),
          h(
            "td.num",
            { "data-key": "rel", "data-value": r.rel ?? "" },
            cell(r.rel, (v) => fmtNum(v, 3)),
          ),
          h(
            "td.num",
            { "data-key": "max_abs", "data-value": r.max_abs ?? "" },
            cell(r.max_abs, (v) => fmtNum(v, 4)),
          ),
          h("td.num", {}, cell(r.changed_fraction, fmtPct)),
        ),
      );
    }
    built = { rows, byName, tbody: h("tbody") };
  }

  function renderBody() {
    if (!built) buildRows();
    const order = sortRows(built.rows, st.sort, dir());
    let shown = 0;
    const frag = document.createDocumentFragment();
    for (const r of order) {
      const tr = built.byName.get(r.name);
      const hide = !!st.q && !matchesQuery(r.name, st.q);
      if (tr.hidden !== hide) tr.hidden = hide;
      if (!hide) shown++;
      frag.append(tr);
    }
    built.tbody.append(frag);
    setChildren(table, renderHeader(), built.tbody);
    table.dataset.rows = String(shown);
    table.dataset.sort = `${st.sort}:${dir()}`;
    if (!table.isConnected) setChildren(body, table);
  }

  async function loadChanges() {
    const my = ++token;
    changes = null;
    built = null;
    syncUrl();
    renderBody();
    root.dataset.state = "loading";
    setChildren(status, spinner(`Measuring how every tensor changed from step ${st.from} to ${st.to}…`));
    try {
      const r = await tensorChanges(api, id, st.from, st.to, { signal: ctl.signal });
      if (my !== token || destroyed) return;
      changes = r;
      built = null;
      setChildren(
        status,
        h(
          "p.hint",
          {},
          `${r.count.toLocaleString()} tensors, ${r.parameters.toLocaleString()} parameters · change from step ${r.from} to ${r.to}`,
        ),
      );
      renderBody();
      root.dataset.state = "ready";
    } catch (e) {
      if (my !== token || destroyed || e.name === "AbortError") return;
      setChildren(status, errorBanner(e, { onRetry: loadChanges }));
      root.dataset.state = "error";
    }
  }

  bootstrapRunView({
    root,
    api,
    id,
    signal: ctl.signal,
    head,
    body,
    banner,
    alive: () => !destroyed,
    headSpec: (d) => ({
      title: "All tensors",
      lede: `${d.tensors.length} tensors, ${d.tensors.reduce((a, t) => a + numel(t.shape), 0).toLocaleString()} parameters`,
      links: [["explore", "Parameter explorer"]],
    }),
    ready: (d) => {
      ({ tensors, steps } = d);
      ({ from: st.from, to: st.to } = settleSteps(steps, st.from, st.to));
      const ex = head.querySelector("a[data-link=explore]");
      if (ex) ex.href = buildHash(["runs", id, "explore"], { from: st.from, to: st.to });
      renderControls();
      loadChanges();
    },
  });

  return {
    destroy() {
      destroyed = true;
      ctl.abort();
    },
  };
}
