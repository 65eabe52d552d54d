// Small DOM helpers: element builder, spinners, error banners, tooltip.

/** h("div.cls#id", {attrs}, ...children) — tiny hyperscript. */
export function h(tag, attrs = {}, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(tag);
  const node = document.createElement(m?.[1] || "div");
  for (const part of (m?.[2] || "").match(/[.#][\w-]+/g) ?? []) {
    if (part[0] === ".") node.classList.add(part.slice(1));
    else node.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else if (k === "html") node.innerHTML = v;
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace a node's children. */
export function setChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** Loading indicator; analyzer waits use the default text "Computing…". */
export function spinner(text = "Computing…") {
  return h(
    "div.spinner",
    { role: "status", "aria-live": "polite", "data-testid": "loading" },
    h("span.spin", { "aria-hidden": "true" }),
    text,
  );
}

/** Error banner carrying the API's message. */
export function errorBanner(err, { onRetry } = {}) {
  const msg = err?.message || String(err);
  return h(
    "div.banner.error",
    { role: "alert", "data-testid": "error-banner" },
    h("strong", {}, err?.status ? `Error ${err.status}: ` : "Error: "),
    h("span.msg", { text: msg }),
    onRetry ? h("button.small", { type: "button", onclick: onRetry }, "Retry") : null,
  );
}

export function infoBanner(text) {
  return h("div.banner.info", { role: "note" }, text);
}

/** Labelled form control wrapper. */
export function field(label, control, { hint, id } = {}) {
  if (id) control.id = id;
  return h("label.field", {}, h("span.label", {}, label), control, hint ? h("span.hint", {}, hint) : null);
}

let tooltipEl = null;
function tip() {
  tooltipEl ??=
    document.getElementById("tooltip") ??
    document.body.appendChild(h("div.tooltip", { role: "tooltip", hidden: true }));
  return tooltipEl;
}

/** Show the shared tooltip near page coordinates with given content lines. */
export function showTooltip(pageX, pageY, lines) {
  const t = tip();
  setChildren(t, ...lines.map((l) => h("div", {}, l)));
  t.hidden = false;
  t.dataset.testid = "tooltip";
  t.setAttribute("data-testid", "tooltip");
  const w = t.offsetWidth || 200;
  const x = pageX + 14 + w > window.scrollX + window.innerWidth ? pageX - w - 14 : pageX + 14;
  t.style.left = `${x}px`;
  t.style.top = `${pageY + 14}px`;
}

export function hideTooltip() {
  if (tooltipEl) tooltipEl.hidden = true;
}

/** Status badge with data-status for tests. */
export function statusBadge(status) {
  return h(
    "span.badge",
    { class: `badge status-${status}`, "data-testid": "run-status", "data-status": status },
    status ?? "unknown",
  );
}

/** Progress bar element (value 0..1). */
export function progressBar(value, label) {
  const pct = Math.max(0, Math.min(1, Number(value) || 0)) * 100;
  return h(
    "div.progress",
    {
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": pct.toFixed(0),
      "aria-label": label ?? "progress",
      "data-testid": "progress",
    },
    h("div.fill", { style: `width:${pct.toFixed(1)}%` }),
  );
}

/** Debounce helper. */
export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
