// Tensor picker: the run's tensors as a tree grouped by module path ("layer1.0.conv1.weight" sits under
// layer1 › 0 › conv1), with a search box and keyboard navigation (WAI-ARIA tree pattern: arrows move, →/←
// open/close a group, Enter picks, Home/End). Built once per open; search only toggles `hidden`, so
// hundreds of tensors stay instant.

import { h, setChildren, debounce } from "./ui.js";
import { fmtShape } from "./format.js";

const numel = (shape) => (shape ?? []).reduce((a, b) => a * b, 1);

/** Group tensors by module path: {name, path, children: [group...], tensors: [tensor...], count}. */
export function buildTensorTree(tensors) {
  const root = { name: "", path: "", groups: new Map(), tensors: [], count: 0 };
  for (const t of tensors) {
    const parts = t.name.split(".");
    let node = root;
    node.count++;
    for (let i = 0; i < parts.length - 1; i++) {
      const path = parts.slice(0, i + 1).join(".");
      if (!node.groups.has(parts[i]))
        node.groups.set(parts[i], { name: parts[i], path, groups: new Map(), tensors: [], count: 0 });
      node = node.groups.get(parts[i]);
      node.count++;
    }
    node.tensors.push(t);
  }
  const finish = (n) => ({
    name: n.name,
    path: n.path,
    count: n.count,
    tensors: n.tensors,
    children: [...n.groups.values()].map(finish),
  });
  return finish(root);
}

/** Does tensor name match every whitespace-separated term of the query (case-insensitive)? */
export function matchesQuery(name, query) {
  const terms = (query ?? "").toLowerCase().split(/\s+/).filter(Boolean);
  const n = name.toLowerCase();
  return terms.every((t) => n.includes(t));
}

/**
 * @param {{tensors: {name: string, shape: number[]}[], selected: string|null, onSelect: (name: string) => void, testid?: string}} opts
 * @returns {{el: HTMLElement, setSelected: (name: string) => void, open: () => void, close: () => void}}
 */
export function createTensorPicker({ tensors, selected, onSelect, testid = "tensor-picker" }) {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  let current = selected;
  let built = false;
  const leaves = new Map(); // name → its tree item
  const label = h("span.picker-label");
  const button = h(
    "button.picker-button",
    {
      type: "button",
      "data-testid": testid,
      "aria-haspopup": "tree",
      "aria-expanded": "false",
      onclick: () => (panel.hidden ? open() : close()),
    },
    label,
  );
  const search = h("input.picker-search", {
    type: "search",
    placeholder: `Search ${tensors.length} tensors…`,
    "aria-label": "Search tensors",
    "data-testid": "tensor-search",
    autocomplete: "off",
  });
  const count = h("span.hint", { "data-testid": "tensor-search-count" });
  const tree = h("ul.tree", { role: "tree", "aria-label": "Tensors", "data-testid": "tensor-tree" });
  const panel = h(
    "div.picker-panel",
    { hidden: true, "data-testid": "tensor-tree-panel" },
    h("div.picker-search-row", {}, search, count),
    tree,
  );
  const el = h("div.tensor-picker", {}, button, panel);

  function showLabel() {
    const t = byName.get(current);
    button.dataset.value = current ?? "";
    setChildren(
      label,
      h("strong", {}, current ?? "—"),
      t ? h("span.hint", {}, ` ${fmtShape(t.shape)}`) : null,
      h("span.caret", { "aria-hidden": "true" }, " ▾"),
    );
  }

  function leaf(t) {
    const li = h(
      "li.tree-leaf",
      {
        role: "treeitem",
        tabIndex: -1,
        "data-name": t.name,
        "data-testid": "tensor-item",
        "aria-selected": t.name === current ? "true" : "false",
      },
      h("span.tree-name", {}, t.name.split(".").pop()),
      h("span.tree-meta", {}, `${fmtShape(t.shape)} · ${numel(t.shape).toLocaleString()}`),
    );
    leaves.set(t.name, li);
    return li;
  }

  function group(g, depth) {
    const expanded = tensors.length <= 60 || (current ?? "").startsWith(g.path + ".");
    const kids = h(
      "ul",
      { role: "group" },
      g.children.map((c) => group(c, depth + 1)),
      g.tensors.map(leaf),
    );
    return h(
      "li.tree-group",
      { role: "treeitem", tabIndex: -1, "aria-expanded": expanded ? "true" : "false", "data-path": g.path },
      h("span.tree-toggle", { "aria-hidden": "true" }),
      h("span.tree-name", {}, g.name),
      h("span.tree-meta", {}, `${g.count}`),
      kids,
    );
  }

  function build() {
    const t = buildTensorTree(tensors);
    setChildren(
      tree,
      t.children.map((c) => group(c, 0)),
      t.tensors.map(leaf),
    );
    built = true;
  }

  /** Items a user can reach now: not filtered out and not inside a collapsed group. */
  function visibleItems() {
    const out = [];
    const walk = (ul) => {
      for (const li of ul.children) {
        if (li.hidden) continue;
        out.push(li);
        if (li.getAttribute("aria-expanded") === "true") walk(li.lastElementChild);
      }
    };
    walk(tree);
    return out;
  }

  function focusItem(li) {
    if (!li) return;
    for (const x of tree.querySelectorAll("[tabindex='0']")) x.tabIndex = -1;
    li.tabIndex = 0;
    li.focus();
  }

  // Only what changes is written to the DOM: a keystroke over 500 tensors touches a few dozen nodes.
  const setHidden = (li, hide) => {
    if (li.hidden !== hide) li.hidden = hide;
  };

  function applyFilter() {
    const q = search.value.trim();
    const terms = q.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    const walk = (ul) => {
      let any = false;
      for (const li of ul.children) {
        if (li.classList.contains("tree-leaf")) {
          const n = (li._lower ??= li.dataset.name.toLowerCase());
          const ok = terms.every((t) => n.includes(t));
          setHidden(li, !ok);
          if (ok) shown++;
          any ||= ok;
        } else {
          const ok = walk(li.lastElementChild);
          setHidden(li, !ok);
          if (q && ok && li.getAttribute("aria-expanded") !== "true")
            li.setAttribute("aria-expanded", "true");
          any ||= ok;
        }
      }
      return any;
    };
    walk(tree);
    count.textContent = q ? `${shown} of ${tensors.length}` : `${tensors.length} tensors`;
    count.dataset.shown = String(shown);
  }

  function pick(name) {
    if (!byName.has(name)) return;
    setSelected(name);
    close();
    button.focus();
    onSelect(name);
  }

  function open() {
    if (!built) build();
    panel.hidden = false;
    button.setAttribute("aria-expanded", "true");
    applyFilter();
    const sel = leaves.get(current);
    if (sel) {
      for (let p = sel.parentElement; p && p !== tree; p = p.parentElement)
        if (p.classList.contains("tree-group")) p.setAttribute("aria-expanded", "true");
      sel.tabIndex = 0;
      sel.scrollIntoView?.({ block: "nearest" });
    }
    search.focus();
    document.addEventListener("mousedown", outside, true);
  }

  function close() {
    panel.hidden = true;
    button.setAttribute("aria-expanded", "false");
    document.removeEventListener("mousedown", outside, true);
  }

  function outside(ev) {
    if (!el.contains(ev.target)) close();
  }

  function setSelected(name) {
    current = name;
    showLabel();
    for (const li of tree.querySelectorAll("[aria-selected=true]")) li.setAttribute("aria-selected", "false");
    leaves.get(name)?.setAttribute("aria-selected", "true");
  }

  search.addEventListener("input", debounce(applyFilter, 40));
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown" || ev.key === "Enter") applyFilter(); // what was typed, even within the debounce
    if (ev.key === "ArrowDown") {
      ev.preventDefault();
      focusItem(visibleItems()[0]);
    } else if (ev.key === "Enter") {
      ev.preventDefault();
      const first = visibleItems().find((li) => li.classList.contains("tree-leaf"));
      if (first) pick(first.dataset.name);
    } else if (ev.key === "Escape") {
      close();
      button.focus();
    }
  });
  tree.addEventListener("click", (ev) => {
    const li = ev.target.closest("li[role=treeitem]");
    if (!li) return;
    if (li.classList.contains("tree-leaf")) pick(li.dataset.name);
    else if (ev.target.closest("li[role=treeitem]") === li) {
      li.setAttribute("aria-expanded", li.getAttribute("aria-expanded") === "true" ? "false" : "true");
      focusItem(li);
    }
  });
  tree.addEventListener("keydown", (ev) => {
    const li = ev.target.closest("li[role=treeitem]");
    if (!li) return;
    const items = visibleItems();
    const i = items.indexOf(li);
    const isGroup = li.classList.contains("tree-group");
    const expanded = li.getAttribute("aria-expanded") === "true";
    const key = ev.key;
    if (key === "ArrowDown") focusItem(items[Math.min(items.length - 1, i + 1)]);
    else if (key === "ArrowUp") {
      if (i === 0) search.focus();
      else focusItem(items[i - 1]);
    } else if (key === "Home") focusItem(items[0]);
    else if (key === "End") focusItem(items[items.length - 1]);
    else if (key === "ArrowRight" && isGroup) {
      if (!expanded) li.setAttribute("aria-expanded", "true");
      else focusItem(visibleItems()[i + 1]);
    } else if (key === "ArrowLeft") {
      if (isGroup && expanded) li.setAttribute("aria-expanded", "false");
      else focusItem(li.parentElement.closest("li.tree-group"));
    } else if (key === "Enter" || key === " ") {
      if (isGroup) li.setAttribute("aria-expanded", expanded ? "false" : "true");
      else pick(li.dataset.name);
    } else if (key === "Escape") {
      close();
      button.focus();
    } else return;
    ev.preventDefault();
  });

  showLabel();
  return { el, setSelected, open, close, visibleItems, pick };
}
