// The one bootstrap of the run views (explorer, scatter, activations, overview): load the run, its captured
// tensors and steps (and metrics when the view draws a timeline), settle the URL's steps onto captured ones,
// and show the "nothing captured yet" and error states the same way everywhere.

import { h, setChildren, errorBanner } from "./ui.js";
import { buildHash } from "./state.js";
import { emptyMetrics, mergeMetrics } from "./events.js";
import { snapStep } from "./charts/timeline.js";

/** The default tensor of a run: the first conv weight, else the first weight, else the first. */
export function defaultTensor(tensors) {
  return (
    tensors.find((t) => t.shape?.length === 4 && (t.role === "weight" || t.name.endsWith(".weight"))) ??
    tensors.find((t) => t.role === "weight" || t.name.endsWith(".weight")) ??
    tensors[0]
  );
}

/** from/to snapped onto captured steps (null → first / last), in order. */
export function settleSteps(steps, from, to) {
  let a = from === null || from === undefined ? steps[0] : snapStep(steps, from);
  let b = to === null || to === undefined ? steps[steps.length - 1] : snapStep(steps, to);
  if (a > b) [a, b] = [b, a];
  return { from: a, to: b };
}

/** The page head of a run view: title, a link back to the run, and links to the other views. */
export function runHead(id, run, { title, lede = null, links = [] }) {
  return [
    h(
      "div",
      {},
      h("h1", {}, title),
      h("p.lede", {}, h("a", { href: buildHash(["runs", id]) }, run?.name ?? id), lede ? ` · ${lede}` : null),
    ),
    links.length
      ? h(
          "nav.head-actions",
          { "aria-label": "Other views of this run" },
          links.map(([link, label]) => h("a.button", { "data-link": link, href: "#" }, label)),
        )
      : null,
  ];
}

/** Run, tensors (sorted as captured), steps (ascending) and, with `withMetrics`, the merged metrics. */
export async function loadRunView(api, id, { signal, withMetrics = false } = {}) {
  const [run, t, s, m] = await Promise.all([
    api.getRun(id, { signal }),
    api.tensors(id, { signal }),
    api.steps(id, { signal }),
    withMetrics ? api.metrics(id, { signal }).catch(() => null) : Promise.resolve(null),
  ]);
  const metrics = emptyMetrics();
  if (m) mergeMetrics(metrics, m);
  return { run, tensors: t?.tensors ?? [], steps: (s?.steps ?? []).slice().sort((a, b) => a - b), metrics };
}

/**
 * Mount-time bootstrap shared by the run views. Loads the run view, fills `head`, and calls `ready(data)` when
 * there is something to show; otherwise shows the empty / error state in `body` and sets root's data-state.
 * `isEmpty(data)` (default: no tensors or no steps) and `emptyText` let a view say what it needs.
 */
export function bootstrapRunView({
  root,
  api,
  id,
  signal,
  head,
  body,
  banner,
  withMetrics = false,
  headSpec,
  isEmpty,
  emptyText = "Nothing captured yet for this run.",
  alive = () => true,
  ready,
}) {
  return loadRunView(api, id, { signal, withMetrics })
    .then((data) => {
      if (!alive()) return;
      setChildren(head, runHead(id, data.run, typeof headSpec === "function" ? headSpec(data) : headSpec));
      const empty = isEmpty ? isEmpty(data) : !data.tensors.length || !data.steps.length;
      if (empty) {
        setChildren(body, h("p.empty", {}, typeof emptyText === "function" ? emptyText(data) : emptyText));
        root.dataset.state = "empty";
        return;
      }
      ready(data);
    })
    .catch((e) => {
      if (!alive() || e?.name === "AbortError") return;
      setChildren(body);
      setChildren(banner, errorBanner(e));
      root.dataset.state = "error";
    });
}
