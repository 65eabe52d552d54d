// New run = the method's "model design" step: a preset or a layer-by-layer model, the dataset,
// and the training settings. The API validates; its messages appear beside their fields.

import { h, setChildren, spinner, errorBanner } from "../ui.js";
import { fmtBytes, fmtShape } from "../format.js";
import { buildHash } from "../state.js";
import {
  LAYER_TYPES,
  ACTIVATIONS,
  DEFAULT_ACTIVATION,
  OPTIMIZERS,
  DEFAULT_LR,
  newLayer,
  inferShapes,
  resolveFieldPath,
  numberOrRaw,
} from "../modelspec.js";

const clone = (x) => JSON.parse(JSON.stringify(x));

/** Body of POST /api/runs from the form state. */
export function buildRunBody(state) {
  const model = state.modelMode === "preset" ? { preset: state.preset } : clone(state.spec);
  return {
    name: state.name,
    model,
    dataset: state.dataset,
    training: withoutEmpty(state.training),
    capture: { ...state.capture },
  };
}

/** Training settings without the optional ones left blank (null): the server's defaults apply. */
function withoutEmpty(training) {
  const out = { ...training };
  for (const k of OPTIONAL_TRAINING)
    if (out[k] === null || out[k] === undefined || out[k] === "") delete out[k];
  return out;
}

/** Training fields a blank input leaves out of the request. */
export const OPTIONAL_TRAINING = ["max_train_samples"];

/** A preset's description plus its size, without repeating a parameter count the description already gives. */
export function presetHint(p) {
  const desc = p?.description ?? "";
  if (!p?.params) return desc;
  const count = p.params.toLocaleString("en-US");
  const size = `${fmtBytes(p.params * 4)} per snapshot`;
  const said = desc.includes(count) || desc.includes(String(p.params));
  return `${desc}${desc ? " · " : ""}${said ? size : `${count} parameters, ${size}`}`;
}

/** Keep only the errors that concern the model mode on screen (pydantic reports both union branches). */
export function relevantFieldErrors(fields, modelMode) {
  const other =
    modelMode === "preset" ? /^model\.(layers|input_shape|num_classes)|\.layers\./ : /^model\.(.+\.)?preset$/;
  const kept = fields.filter((f) => !other.test(f.path));
  return kept.length ? kept : fields;
}

export function mount(root, { api, navigate }) {
  const ctl = new AbortController();
  const state = {
    name: "",
    nameTouched: false,
    modelMode: "preset",
    preset: "paper-cnn",
    spec: { input_shape: [1, 28, 28], num_classes: 10, layers: [] },
    dataset: "mnist-10k",
    training: {
      epochs: 1,
      batch_size: 128,
      optimizer: "sgd",
      lr: 0.01,
      momentum: 0.9,
      nesterov: false,
      weight_decay: 0,
      seed: 0,
      max_train_samples: null,
    },
    lrTouched: false,
    capture: { every: 1 },
  };
  let presets = [];
  let datasets = [];
  const banner = h("div");
  const body = h("div");
  setChildren(
    root,
    h(
      "div.page-head",
      {},
      h("h1", {}, "New run"),
      h(
        "p.lede",
        {},
        "Model design: pick a preset or build the network layer by layer, then choose how to train it.",
      ),
    ),
    banner,
    body,
  );
  body.append(spinner("Loading…"));

  const dataset = () => datasets.find((d) => d.name === state.dataset);
  const presetObj = () => presets.find((p) => p.name === state.preset);

  function autoName() {
    if (state.nameTouched) return;
    const model = state.modelMode === "preset" ? state.preset : "custom";
    state.name = `${model}-${state.dataset}`;
  }

  function syncSpecToDataset() {
    const d = dataset();
    if (d?.input_shape) state.spec.input_shape = d.input_shape.slice();
    if (d?.num_classes) state.spec.num_classes = d.num_classes;
  }

  // ---- field helpers: each control has data-field=<path>, its error slot data-error-for=<path>
  const errorSlot = (path) =>
    h("div.field-error", { "data-error-for": path, "data-testid": `error-${path}`, "aria-live": "polite" });

  function control(path, el) {
    el.dataset.field = path;
    el.setAttribute("data-testid", `field-${path}`);
    el.name = path;
    el.id = `f-${path.replace(/\./g, "-")}`;
    el.setAttribute("aria-describedby", `err-${path.replace(/\./g, "-")}`);
    return el;
  }

  function labelled(label, path, el, hint) {
    const slot = errorSlot(path);
    slot.id = `err-${path.replace(/\./g, "-")}`;
    return h(
      "div.field",
      {},
      h("label", { for: `f-${path.replace(/\./g, "-")}` }, label),
      control(path, el),
      hint ? h("span.hint", {}, hint) : null,
      slot,
    );
  }

  function numberInput(value, onInput, { step = "any", min } = {}) {
    return h("input", {
      type: "number",
      step,
      min,
      value: value ?? "",
      inputmode: "decimal",
      oninput: (e) => onInput(numberOrRaw(e.target.value)),
    });
  }

  function selectInput(options, value, onChange) {
    const s = h(
      "select",
      { onchange: (e) => onChange(e.target.value) },
      options.map((o) => {
        const [v, label, disabled] = Array.isArray(o) ? o : [o, o, false];
        return h("option", { value: v, selected: v === value, disabled }, label);
      }),
    );
    s.value = value;
    return s;
  }

  // ---- model section
  function presetSection() {
    const p = presetObj();
    return h(
      "div.preset",
      {},
      labelled(
        "Preset",
        "model.preset",
        selectInput(
          presets.map((x) => [x.name, x.name]),
          state.preset,
          (v) => {
            state.preset = v;
            autoName();
            render();
          },
        ),
      ),
      p ? h("p.hint", { "data-testid": "preset-description" }, presetHint(p)) : null,
      p?.spec?.layers
        ? h(
            "ol.preset-layers",
            {},
            p.spec.layers.map((l) => h("li", {}, layerSummary(l))),
          )
        : null,
      p?.spec
        ? h(
            "button.small",
            {
              type: "button",
              "data-testid": "customize-preset",
              onclick: () => {
                state.spec = clone(p.spec);
                syncSpecToDataset();
                state.modelMode = "custom";
                autoName();
                render();
              },
            },
            "Edit these layers",
          )
        : null,
    );
  }

  function layerSummary(l) {
    const parts = [l.type];
    if (l.name) parts.push(l.name);
    if (l.out_channels) parts.push(`${l.out_channels} ch`);
    if (l.kernel_size)
      parts.push(`k${Array.isArray(l.kernel_size) ? l.kernel_size.join("×") : l.kernel_size}`);
    if (l.out_features) parts.push(`${l.out_features} units`);
    if (l.p !== undefined) parts.push(`p=${l.p}`);
    if (l.activation) parts.push(l.activation);
    return parts.join(" · ");
  }

  function layerRow(l, i, info) {
    const base = `model.layers.${i}`;
    const set = (k) => (v) => {
      if (v === null || v === "") delete l[k];
      else l[k] = v;
      updateInference();
    };
    const act = l.activation ?? DEFAULT_ACTIVATION[l.type] ?? "none";
    const acts = [...new Set([...ACTIVATIONS, act])];
    const cells = [];
    if (l.type === "conv2d" || l.type === "linear") {
      cells.push(
        labelled(
          "Name",
          `${base}.name`,
          h("input", {
            type: "text",
            value: l.name ?? "",
            size: 8,
            oninput: (e) => set("name")(e.target.value.trim()),
          }),
        ),
      );
    }
    if (l.type === "conv2d") {
      cells.push(
        labelled(
          "Channels",
          `${base}.out_channels`,
          numberInput(l.out_channels, set("out_channels"), { step: 1 }),
        ),
      );
      cells.push(
        labelled(
          "Kernel",
          `${base}.kernel_size`,
          numberInput(Array.isArray(l.kernel_size) ? l.kernel_size[0] : l.kernel_size, set("kernel_size"), {
            step: 1,
          }),
        ),
      );
    }
    if (l.type === "maxpool2d" || l.type === "avgpool2d")
      cells.push(
        labelled(
          "Kernel",
          `${base}.kernel_size`,
          numberInput(Array.isArray(l.kernel_size) ? l.kernel_size[0] : l.kernel_size, set("kernel_size"), {
            step: 1,
          }),
        ),
      );
    if (l.type === "dropout")
      cells.push(labelled("p", `${base}.p`, numberInput(l.p, set("p"), { step: 0.05 })));
    if (l.type === "linear")
      cells.push(
        labelled(
          "Units",
          `${base}.out_features`,
          numberInput(l.out_features, set("out_features"), { step: 1 }),
        ),
      );
    if (l.type === "conv2d" || l.type === "linear") {
      cells.push(
        labelled(
          "Activation",
          `${base}.activation`,
          selectInput(acts, act, (v) => set("activation")(v)),
        ),
      );
    }
    const move = (d) => () => {
      const j = i + d;
      if (j < 0 || j >= state.spec.layers.length) return;
      const L = state.spec.layers;
      [L[i], L[j]] = [L[j], L[i]];
      render(`[data-testid=layer-row][data-index="${j}"] [data-testid=${d < 0 ? "layer-up" : "layer-down"}]`);
    };
    return h(
      "li.layer-row",
      { "data-testid": "layer-row", "data-index": i, "data-type": l.type },
      h("span.layer-index", {}, `${i + 1}`),
      h(
        "div.layer-type",
        {},
        labelled(
          "Type",
          `${base}.type`,
          selectInput(LAYER_TYPES, l.type, (t) => {
            state.spec.layers[i] = newLayer(
              t,
              state.spec.layers.filter((_, k) => k !== i),
            );
            render(`[data-testid=layer-row][data-index="${i}"] select[data-field="${base}.type"]`);
          }),
        ),
      ),
      h("div.layer-fields", {}, cells),
      h(
        "div.layer-out",
        { "data-testid": "layer-out" },
        info?.error
          ? h("span.warn", {}, info.error)
          : info?.out
            ? `→ ${fmtShape(info.out)}${info.params ? ` · ${info.params.toLocaleString()} params` : ""}`
            : "",
      ),
      h(
        "div.layer-actions",
        {},
        h(
          "button.icon",
          {
            type: "button",
            "data-testid": "layer-up",
            "aria-label": `Move layer ${i + 1} up`,
            disabled: i === 0,
            onclick: move(-1),
          },
          "↑",
        ),
        h(
          "button.icon",
          {
            type: "button",
            "data-testid": "layer-down",
            "aria-label": `Move layer ${i + 1} down`,
            disabled: i === state.spec.layers.length - 1,
            onclick: move(1),
          },
          "↓",
        ),
        h(
          "button.icon.danger",
          {
            type: "button",
            "data-testid": "layer-remove",
            "aria-label": `Remove layer ${i + 1}`,
            onclick: () => {
              state.spec.layers.splice(i, 1);
              render(`[data-testid=add-layer-type]`);
            },
          },
          "✕",
        ),
      ),
      errorSlot(base),
    );
  }

  let inferenceEl = null;
  function inferenceText() {
    const inf = inferShapes(state.spec);
    return {
      inf,
      text: inf.error
        ? `⚠ ${inf.error}`
        : `${inf.total.toLocaleString()} parameters · ${fmtBytes(inf.total * 4)} per float32 snapshot`,
    };
  }
  function updateInference() {
    if (!inferenceEl) return;
    const { inf, text } = inferenceText();
    inferenceEl.textContent = text;
    body.querySelectorAll("[data-testid=layer-row]").forEach((row, i) => {
      const info = inf.layers[i];
      const out = row.querySelector("[data-testid=layer-out]");
      if (out)
        out.textContent = info?.error
          ? info.error
          : info?.out
            ? `→ ${fmtShape(info.out)}${info.params ? ` · ${info.params.toLocaleString()} params` : ""}`
            : "";
    });
  }

  function customSection() {
    const { inf, text } = inferenceText();
    inferenceEl = h("p.inference", { "data-testid": "param-count" }, text);
    const addType = h(
      "select",
      { "data-testid": "add-layer-type", "aria-label": "Type of layer to add" },
      LAYER_TYPES.map((t) => h("option", { value: t }, t)),
    );
    return h(
      "div.custom",
      {},
      h(
        "p.hint",
        {},
        `Input ${fmtShape(state.spec.input_shape)} → ${state.spec.num_classes} classes (from the dataset). The last layer must give ${state.spec.num_classes} units.`,
      ),
      errorSlot("model.input_shape"),
      errorSlot("model.num_classes"),
      h(
        "ol.layers",
        { "data-testid": "layer-list" },
        state.spec.layers.map((l, i) => layerRow(l, i, inf.layers[i])),
      ),
      errorSlot("model.layers"),
      h(
        "div.add-layer",
        {},
        addType,
        h(
          "button.small",
          {
            type: "button",
            "data-testid": "add-layer",
            onclick: () => {
              state.spec.layers.push(newLayer(addType.value, state.spec.layers));
              render(`[data-testid=layer-row][data-index="${state.spec.layers.length - 1}"] select`);
            },
          },
          "Add layer",
        ),
      ),
      inferenceEl,
    );
  }

  // ---- whole form
  let form = null;
  function render(focusSelector) {
    const trainingField = (label, key, opts, hint) =>
      labelled(
        label,
        `training.${key}`,
        numberInput(
          state.training[key],
          (v) => {
            state.training[key] = v;
            if (key === "lr") state.lrTouched = true;
          },
          opts,
        ),
        hint,
      );
    const modeRadio = (mode, label) =>
      h(
        "label.radio",
        {},
        h("input", {
          type: "radio",
          name: "model-mode",
          value: mode,
          checked: state.modelMode === mode,
          "data-testid": `model-mode-${mode}`,
          onchange: () => {
            state.modelMode = mode;
            if (mode === "custom" && !state.spec.layers.length) {
              const p = presetObj();
              state.spec = p?.spec ? clone(p.spec) : state.spec;
              syncSpecToDataset();
            }
            autoName();
            render(`[data-testid=model-mode-${mode}]`);
          },
        }),
        label,
      );
    form = h(
      "form.newrun",
      { novalidate: true, "data-testid": "newrun-form", onsubmit: submit },
      h("div.form-errors", { "data-testid": "form-errors", role: "alert" }),
      h(
        "fieldset",
        {},
        h("legend", {}, "Run"),
        labelled(
          "Name",
          "name",
          h("input", {
            type: "text",
            value: state.name,
            oninput: (e) => {
              state.name = e.target.value;
              state.nameTouched = true;
            },
          }),
        ),
        labelled(
          "Dataset",
          "dataset",
          selectInput(
            datasets.map((d) => [
              d.name,
              `${d.name}${d.available === false ? " (not available)" : ""} — ${fmtShape(d.input_shape)}, ${d.num_classes} classes`,
              d.available === false,
            ]),
            state.dataset,
            (v) => {
              state.dataset = v;
              syncSpecToDataset();
              autoName();
              render(`select[data-field=dataset]`);
            },
          ),
          dataset()?.description,
        ),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Model"),
        h(
          "div.radios",
          { role: "radiogroup", "aria-label": "Model source" },
          modeRadio("preset", "Preset"),
          modeRadio("custom", "Layer by layer"),
        ),
        errorSlot("model"),
        state.modelMode === "preset" ? presetSection() : customSection(),
      ),
      h(
        "fieldset.grid",
        {},
        h("legend", {}, "Training"),
        trainingField("Epochs", "epochs", { step: 1, min: 1 }),
        trainingField("Batch size", "batch_size", { step: 1, min: 1 }),
        labelled(
          "Optimizer",
          "training.optimizer",
          selectInput(OPTIMIZERS, state.training.optimizer, (v) => {
            state.training.optimizer = v;
            if (!state.lrTouched && DEFAULT_LR[v] !== undefined) {
              state.training.lr = DEFAULT_LR[v];
              const lr = form.querySelector("[data-field='training.lr']");
              if (lr) lr.value = String(DEFAULT_LR[v]);
            }
          }),
        ),
        trainingField("Learning rate", "lr", {}),
        trainingField("Momentum", "momentum", {}, "used by SGD and RMSprop"),
        trainingField("Weight decay", "weight_decay", {}),
        labelled(
          "Nesterov momentum",
          "training.nesterov",
          h("input", {
            type: "checkbox",
            checked: state.training.nesterov,
            onchange: (e) => (state.training.nesterov = e.target.checked),
          }),
          "SGD only",
        ),
        trainingField("Seed", "seed", { step: 1 }),
        trainingField(
          "Training samples",
          "max_train_samples",
          { step: 1, min: 1 },
          "blank = the whole training split; N = its first N samples (short trial runs)",
        ),
        errorSlot("training"),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Capture"),
        labelled(
          "Snapshot every N batches",
          "capture.every",
          numberInput(state.capture.every, (v) => (state.capture.every = v), { step: 1, min: 1 }),
          "1 = after every batch (the method's full time-lapse)",
        ),
        errorSlot("capture"),
      ),
      h(
        "div.form-actions",
        {},
        h("button.primary", { type: "submit", "data-testid": "submit-run" }, "Start training"),
        h("a.button", { href: "#/runs" }, "Cancel"),
      ),
    );
    setChildren(body, form);
    if (focusSelector) body.querySelector(focusSelector)?.focus();
  }

  function clearErrors() {
    form.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    setChildren(form.querySelector(".form-errors"));
  }

  function showErrors(err) {
    clearErrors();
    const known = new Set([...form.querySelectorAll("[data-error-for]")].map((e) => e.dataset.errorFor));
    const unmapped = [];
    let first = null;
    for (const f of relevantFieldErrors(err.fields ?? [], state.modelMode)) {
      const path = resolveFieldPath(f.loc, known);
      if (path === null) {
        unmapped.push(f);
        continue;
      }
      const slot = form.querySelector(`[data-error-for="${CSS.escape(path)}"]`);
      slot.textContent = slot.textContent ? `${slot.textContent}; ${f.msg}` : f.msg;
      const ctl = form.querySelector(`[data-field="${CSS.escape(path)}"]`);
      if (ctl) {
        ctl.setAttribute("aria-invalid", "true");
        first ??= ctl;
      }
      first ??= slot;
    }
    const box = form.querySelector(".form-errors");
    if (!err.fields?.length) box.append(errorBanner(err));
    else {
      box.append(
        h(
          "div.banner.error",
          { "data-testid": "error-banner" },
          `The server did not accept this run: ${err.fields.length} problem${err.fields.length > 1 ? "s" : ""} — see the marked fields.`,
          unmapped.length
            ? h(
                "ul",
                {},
                unmapped.map((f) => h("li", {}, `${f.path || "request"}: ${f.msg}`)),
              )
            : null,
        ),
      );
    }
    (first ?? box).focus?.();
    if (first) first.scrollIntoView?.({ block: "center" });
  }

  async function submit(ev) {
    ev.preventDefault();
    const btn = form.querySelector("[data-testid=submit-run]");
    btn.disabled = true;
    btn.textContent = "Starting…";
    clearErrors();
    try {
      const run = await api.createRun(buildRunBody(state), { signal: ctl.signal });
      navigate(buildHash(["runs", run.id]));
    } catch (e) {
      if (e.name === "AbortError") return;
      btn.disabled = false;
      btn.textContent = "Start training";
      showErrors(e);
    }
  }

  (async () => {
    try {
      const [p, d] = await Promise.all([
        api.presets({ signal: ctl.signal }),
        api.datasets({ signal: ctl.signal }),
      ]);
      presets = p?.presets ?? [];
      datasets = d?.datasets ?? [];
      if (!presets.some((x) => x.name === state.preset) && presets.length) state.preset = presets[0].name;
      if (!presets.length) state.modelMode = "custom";
      const firstAvailable = datasets.find((x) => x.available !== false);
      if (!datasets.some((x) => x.name === state.dataset && x.available !== false) && firstAvailable)
        state.dataset = firstAvailable.name;
      syncSpecToDataset();
      if (!state.spec.layers.length)
        state.spec.layers = presetObj()?.spec?.layers
          ? clone(presetObj().spec.layers)
          : [
              newLayer("flatten"),
              { ...newLayer("linear"), out_features: state.spec.num_classes, activation: "none" },
            ];
      autoName();
      render();
    } catch (e) {
      if (e.name !== "AbortError") setChildren(banner, errorBanner(e));
      setChildren(body);
    }
  })();

  return { destroy: () => ctl.abort() };
}
