"""``netlapse report RUN_ID --out DIR``: the method's figures for one run, drawn with Matplotlib from the HTTP API.

Figures (each as PNG and SVG), plus ``report.json`` with the numbers behind them:

- ``filters``: the first conv layer's filters at ``from`` (left) and their change to ``to`` (right), on a
  diverging red–white–blue scale centred on 0 (red = negative / decrease, blue = positive / increase).
- ``scatter``: each conv weight's value at ``from`` (x) against its change to ``to`` (y): points for small
  tensors, the server's exact 2-D histogram for large ones; Pearson r and the sign fractions in the titles.
- ``activations_<layer>``: per-label normalized activations (Eq. 1) at ``to``, one small bar chart per filter,
  x = label.
- ``health``: the update-to-weight ratio of every tensor at every captured step (log colour scale), the weight
  norms and the fraction of signs flipped since step 0, with the frozen and dead units named (docs/analyses.md,
  "Training health").

Everything comes through :class:`netlapse.client.Client`, so the report works against any server.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from netlapse.client import ApiError, Client, format_detail

FORMATS = ("png", "svg")
DIVERGING = "RdBu"  # low = red, 0 = white, high = blue: decrease red, increase blue (docs/analyses.md)
POINTS_UP_TO = 5000  # tensors with more elements are drawn as a density from the exact histogram


def diverging_norm(a: np.ndarray) -> mcolors.Normalize:
    """A colour scale symmetric around 0, so 0 is white and equal magnitudes get equal intensity."""
    m = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
    m = m if m > 0 else 1.0
    return mcolors.Normalize(vmin=-m, vmax=m)


def filter_mosaic(w: np.ndarray, cols: int = 8) -> np.ndarray:
    """Conv weights [F, C, kh, kw] as one image: a grid of kh × (C·kw) tiles separated by NaN (drawn grey)."""
    f, c, kh, kw = w.shape
    tile_w = c * kw + (c - 1)
    cols = min(cols, f)
    rows = math.ceil(f / cols)
    out = np.full((rows * (kh + 1) - 1, cols * (tile_w + 1) - 1), np.nan)
    for i in range(f):
        r, q = divmod(i, cols)
        for ch in range(c):
            y0, x0 = r * (kh + 1), q * (tile_w + 1) + ch * (kw + 1)
            out[y0 : y0 + kh, x0 : x0 + kw] = w[i, ch]
    return out


def label_spread(activation: list[list[float | None]]) -> dict[str, Any]:
    """How much each filter's activation varies across labels: coefficient of variation (std / mean over labels).

    A filter that responds to some labels much more than others has a high CV. Filters whose mean activation is
    below 1 % of the layer's median are counted as inactive (dead ReLUs: their CV is noise over ~0) and left out
    of ``mean_cv`` / ``median_cv``; labels without inputs are left out of every CV."""
    a = np.array(activation, dtype=np.float64)  # None → nan
    means = np.array([float(np.nanmean(r)) if np.isfinite(r).any() else 0.0 for r in a])
    floor = 0.01 * float(np.median(means)) if means.size else 0.0
    cvs: list[float | None] = []
    active: list[bool] = []
    for row, mean in zip(a, means, strict=True):
        v = row[np.isfinite(row)]
        cvs.append(float(v.std() / mean) if v.size > 1 and mean > 0 else None)
        active.append(bool(mean > floor and mean > 0))
    valid = [c for c, ok in zip(cvs, active, strict=True) if c is not None and ok]
    return {
        "per_filter_cv": cvs,
        "mean_cv": float(np.mean(valid)) if valid else None,
        "median_cv": float(np.median(valid)) if valid else None,
        "inactive_filters": [i for i, ok in enumerate(active) if not ok],
    }


def _save(fig: Figure, out: Path, stem: str, formats: tuple[str, ...]) -> list[str]:
    files = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        meta = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(path, dpi=150 if fmt == "png" else None, bbox_inches="tight", metadata=meta)
        files.append(path.name)
    return files


def _cmap() -> mcolors.Colormap:
    from matplotlib import colormaps

    return colormaps[DIVERGING].with_extremes(bad="#d9d9d9")  # bad = the NaN gaps between filters


def figure_filters(name: str, w: np.ndarray, d: np.ndarray, a: int, b: int, stats: dict[str, Any]) -> Figure:
    """Filter values at step a (left) and their change a → b (right), each on its own symmetric scale."""
    fig = Figure(figsize=(12, 3.2 + 0.35 * math.ceil(w.shape[0] / 8)), layout="constrained")
    axes = fig.subplots(1, 2)
    cmap = _cmap()
    titles = (
        f"{name} at step {a}",
        f"change, step {a} → {b}\nblue = increase ({stats['increased']}), red = decrease ({stats['decreased']})",
    )
    for ax, arr, title, label in zip(axes, (w, d), titles, ("value", "change"), strict=True):
        img = ax.imshow(filter_mosaic(arr), cmap=cmap, norm=diverging_norm(arr), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(img, ax=ax, shrink=0.8, label=label)
    note = " (channel tiles side by side)" if w.shape[1] > 1 else ""
    fig.suptitle(f"{name}: {w.shape[0]} filters {w.shape[2]}×{w.shape[3]}{note}; 0 = white", fontsize=11)
    return fig


def figure_scatter(items: list[dict[str, Any]], a: int, b: int) -> Figure:
    """Initial value vs change, one panel per tensor: points when small, the exact histogram when large."""
    fig = Figure(figsize=(5.2 * len(items), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(items)))
    for ax, s in zip(axes, items, strict=True):
        if s["n"] <= POINTS_UP_TO:
            x, y = np.asarray(s["x"]), np.asarray(s["y"])
            colour = np.where(x > 0, "#2166ac", "#b2182b")
            ax.scatter(x, y, s=6, c=colour, alpha=0.6, linewidths=0)
        else:
            h = s["histogram"]
            counts = np.asarray(h["counts"], dtype=np.float64).T  # counts[x][y] → rows = y for pcolormesh
            mesh = ax.pcolormesh(
                h["x_edges"],
                h["y_edges"],
                np.where(counts > 0, counts, np.nan),
                norm=mcolors.LogNorm(vmin=1, vmax=max(2.0, counts.max())),
                cmap="viridis",
                rasterized=True,  # 10,000 cells as one image keeps the SVG small
            )
            fig.colorbar(mesh, ax=ax, label="elements per bin")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.axvline(0, color="0.3", lw=0.6)
        r, pos, neg = s["pearson_r"], s["pos_increased_fraction"], s["neg_decreased_fraction"]
        parts = [f"r = {r:+.2f}" if r is not None else "r = n/a"]
        if pos is not None:
            parts.append(f"x>0 grew {pos:.0%}")
        if neg is not None:
            parts.append(f"x<0 shrank {neg:.0%}")
        ax.set_title(f"{s['name']} ({s['n']:,} values)\n" + ", ".join(parts), fontsize=10)
        ax.set_xlabel(f"value at step {a}")
        ax.set_ylabel(f"change, step {a} → {b}")
    fig.suptitle("initial value vs change", fontsize=11)
    return fig


def figure_activations(res: dict[str, Any], spread: dict[str, Any], classes: list[str] | None) -> Figure:
    """One small bar chart per filter: x = label, y = normalized activation (Eq. 1), each on its own scale."""
    act = np.array(res["activation"], dtype=np.float64)
    n_f, n_c = act.shape
    cols = 8
    rows = math.ceil(n_f / cols)
    fig = Figure(figsize=(cols * 1.9, rows * 1.45 + 0.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    labels = np.arange(n_c)
    cvs = spread["per_filter_cv"]
    for f, ax in enumerate(axes):
        if f >= n_f:
            ax.axis("off")
            continue
        row = act[f]
        best = int(np.nanargmax(row)) if np.isfinite(row).any() else -1
        colours = ["#2166ac" if c == best else "#92c5de" for c in labels]
        ax.bar(labels, np.nan_to_num(row), color=colours, width=0.8)
        cv = cvs[f]
        ax.set_title(f"filter {f}" + (f"  cv {cv:.2f}" if cv is not None else ""), fontsize=7, pad=2)
        ax.set_xticks(labels)
        ax.set_xticklabels([str(c) for c in labels], fontsize=5)
        ax.tick_params(axis="y", labelsize=5, length=2)
        ax.tick_params(axis="x", length=0, pad=1)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    mean_cv = spread["mean_cv"]
    fig.suptitle(
        f"{res['layer']} at step {res['step']}: per-label normalized activation (Eq. 1, {res['point']}), "
        f"{min(res['counts'])}–{max(res['counts'])} correctly predicted {res['split']} inputs per label; "
        f"x = label, darkest bar = strongest label"
        + (f"; mean CV across labels {mean_cv:.2f}" if mean_cv is not None else "")
        + (
            f" ({len(spread['inactive_filters'])} inactive filters left out)"
            if spread["inactive_filters"]
            else ""
        ),
        fontsize=10,
    )
    if classes and classes != [str(i) for i in range(n_c)]:
        fig.supxlabel("labels: " + ", ".join(f"{i}={c}" for i, c in enumerate(classes)), fontsize=7)
    return fig


def _matrix(rows: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)


def health_numbers(h: dict[str, Any], dead: dict[str, Any] | None) -> dict[str, Any]:
    """What report.json keeps of the health analysis: per tensor the median and last update ratio, the last
    sign-flip fraction, the frozen and the dead units, and what an update means for this optimizer."""
    ratio, flips = _matrix(h["update_ratio"]), _matrix(h["sign_flip_fraction"])
    per_tensor = {}
    for i, t in enumerate(h["tensors"]):
        r = ratio[i][np.isfinite(ratio[i])]
        per_tensor[t["name"]] = {
            "update_ratio_median": float(np.median(r)) if r.size else None,
            "update_ratio_last": float(r[-1]) if r.size else None,
            "sign_flip_fraction_last": float(flips[i][-1]) if np.isfinite(flips[i][-1]) else None,
        }
    return {
        "steps": [h["steps"][0], h["steps"][-1]] if h["steps"] else [],
        "tensors": per_tensor,
        "frozen": {u["layer"]: u["frozen"] for u in h["units"] if u["frozen"]},
        "dead": {lay["layer"]: lay["dead"] for lay in dead["layers"] if lay["dead"]} if dead else None,
        "dead_step": dead["step"] if dead else None,
        "updates": h["updates"],
    }


def _some(items: list[str], most: int = 6) -> str:
    """The first few items, and how many more (report.json has them all)."""
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def figure_health(h: dict[str, Any], numbers: dict[str, Any]) -> Figure:
    """Update-to-weight ratio (tensors × steps, log scale) on top; weight norms and sign flips below."""
    names = [t["name"] for t in h["tensors"]]
    ratio = _matrix(h["update_ratio"])
    keep = [i for i in range(len(names)) if np.isfinite(ratio[i]).any()]
    steps = h["steps"]
    fig = Figure(figsize=(12, 3.2 + 0.22 * len(keep) + 2.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[0.6 + 0.22 * len(keep), 2.6])  # type: ignore[misc]
    ax = top.subplots()
    shown = ratio[keep] if keep else np.full((1, max(1, len(steps))), np.nan)
    pos = shown[np.isfinite(shown) & (shown > 0)]
    norm = mcolors.LogNorm(vmin=float(pos.min()), vmax=float(pos.max())) if pos.size else None
    cmap = _colormap("YlGnBu").with_extremes(bad="#d9d9d9")
    img = ax.imshow(
        np.where(shown > 0, shown, np.nan),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        norm=norm,
        extent=(steps[0] - 0.5, steps[-1] + 0.5, len(keep) - 0.5, -0.5) if steps else None,
    )
    ax.set_yticks(range(len(keep)))
    ax.set_yticklabels([names[i] for i in keep], fontsize=7)
    ax.set_xlabel("step")
    ax.set_title("update-to-weight ratio ||w(t) − w(t−1)|| / ||w(t−1)|| (log scale; grey: none)", fontsize=10)
    top.colorbar(img, ax=ax, label="ratio")
    a1, a2 = bottom.subplots(1, 2)
    norms, flips = _matrix(h["norm"]), _matrix(h["sign_flip_fraction"])
    for i, n in enumerate(names):
        if not n.endswith(".weight"):
            continue
        a1.plot(steps, norms[i], lw=1.2, label=n)
        a2.plot(steps, flips[i], lw=1.2, label=n)
    a1.set_title("weight norm ||w||", fontsize=10)
    a2.set_title("fraction of signs different from step 0", fontsize=10)
    for a in (a1, a2):
        a.set_xlabel("step")
        a.legend(fontsize=7)
    flagged = [
        f"{layer} frozen: " + _some([f"#{u['unit']} (since {u['since']})" for u in us])
        for layer, us in numbers["frozen"].items()
    ]
    if numbers["dead"]:
        flagged += [
            f"{layer} dead at step {numbers['dead_step']}: " + _some([f"#{u}" for u in us])
            for layer, us in numbers["dead"].items()
        ]
    text = f"training health: {h['updates']['note']}. " + (
        "; ".join(flagged) if flagged else "no frozen or dead unit"
    )
    fig.suptitle(textwrap.fill(text, 150), fontsize=9)
    return fig


def _colormap(name: str) -> mcolors.Colormap:
    from matplotlib import colormaps

    return colormaps[name]


def make_report(
    client: Client,
    run_id: str,
    out: Path,
    from_step: int | None = None,
    to_step: int | None = None,
    per_label: int = 100,
    split: str = "test",
    layers: list[str] | None = None,
    formats: tuple[str, ...] = FORMATS,
) -> dict[str, Any]:
    """Draw the report of one run into ``out`` and return the numbers written to ``report.json``."""
    out.mkdir(parents=True, exist_ok=True)
    run = client.run(run_id)
    steps = client.steps(run_id)
    if not steps:
        raise ValueError(f"run {run_id} has no captured steps yet")
    a = steps[0] if from_step is None else from_step
    b = steps[-1] if to_step is None else to_step
    tensors = client.tensors(run_id)
    conv_weights = [t["name"] for t in tensors if t.get("kind") == "conv2d" and t.get("role") == "weight"]
    conv = [n.rsplit(".", 1)[0] for n in conv_weights]
    if layers:
        unknown = [layer for layer in layers if layer not in conv]
        if unknown:
            raise ValueError(
                f"not conv layers of this run: {', '.join(unknown)}; conv layers: {', '.join(conv)}"
            )
        conv = layers
    if not conv:
        raise ValueError(f"run {run_id} has no conv layers; the report's figures are about conv filters")
    classes = next((d["classes"] for d in client.datasets() if d["name"] == run["dataset"]), None)

    report: dict[str, Any] = {
        "run": {k: run.get(k) for k in ("id", "name", "preset", "dataset", "training", "summary", "status")},
        "from": a,
        "to": b,
        "files": [],
    }

    # 1. the first conv layer's filters and their change
    first = f"{conv[0]}.weight"
    w = client.tensor(run_id, first, a)
    d, stats = client.diff(run_id, first, a, b)
    report["filters"] = {
        "name": first,
        "shape": list(w.shape),
        "stats": stats,
        "values": w.tolist() if w.size <= 4096 else None,
        "change": d.tolist() if d.size <= 4096 else None,
    }
    report["files"] += _save(figure_filters(first, w, d, a, b, stats), out, "filters", formats)

    # 2. initial value vs change of every conv weight
    scatters = [
        client.scatter(run_id, f"{layer}.weight", b, a, max_points=20_000, bins=100) for layer in conv
    ]
    report["scatter"] = {
        s["name"]: {
            k: s[k]
            for k in (
                "n",
                "pearson_r",
                "pos_count",
                "neg_count",
                "pos_increased_fraction",
                "neg_decreased_fraction",
                "pos_increased",
                "neg_decreased",
            )
        }
        for s in scatters
    }
    report["files"] += _save(figure_scatter(scatters, a, b), out, "scatter", formats)

    # 3. per-label activations (Eq. 1) at `to`, one chart per filter
    report["activations"] = {}
    for layer in conv:
        try:
            res = client.activations(run_id, b, layer, per_label=per_label, split=split)
        except ApiError as exc:
            if run.get("source") != "sdk" or exc.status != 422:
                raise
            # an SDK run without a model program or evaluation data (the message says which): the rest stands
            report["activations_error"] = format_detail(exc.detail)
            break
        spread = label_spread(res["activation"])
        report["activations"][layer] = {
            k: res[k]
            for k in (
                "step",
                "point",
                "split",
                "labels",
                "activation",
                "numerator",
                "denominator",
                "counts",
                "requested_per_label",
                "note",
            )
        } | {"label_spread": spread}
        report["files"] += _save(
            figure_activations(res, spread, classes), out, f"activations_{layer}", formats
        )
    cv = {layer: v["label_spread"]["mean_cv"] for layer, v in report["activations"].items()}
    med = {layer: v["label_spread"]["median_cv"] for layer, v in report["activations"].items()}
    report["label_spread_mean_cv"] = cv
    report["label_spread_median_cv"] = med
    if len(cv) >= 2 and cv[conv[0]] and cv[conv[1]] and med[conv[0]] and med[conv[1]]:
        report["label_spread_ratio"] = {
            f"{conv[1]}/{conv[0]}": {
                "mean_cv": cv[conv[1]] / cv[conv[0]],
                "median_cv": med[conv[1]] / med[conv[0]],
            }
        }

    # 4. training health over every captured step (from the tape), dead units at `to`
    health = client.analysis("health", run_id=run_id)
    try:
        dead = client.analysis("health_dead", run_id=run_id, step=b, split=split)
    except ApiError as exc:  # e.g. an SDK run without evaluation data: the rest of the health figure stands
        dead = None
        report["health_dead_error"] = str(exc)
    report["health"] = health_numbers(health, dead)
    report["files"] += _save(figure_health(health, report["health"]), out, "health", formats)

    (out / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    report["files"].append("report.json")
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human lines about the numbers, for the terminal."""
    lines = [f"run {report['run']['id']} ({report['run']['name']}), steps {report['from']} → {report['to']}"]
    st = report["filters"]["stats"]
    lines.append(
        f"{report['filters']['name']}: {st['increased']} increased, {st['decreased']} decreased, "
        f"mean |Δ| {st['mean_abs']:.4g}"
    )
    for name, s in report["scatter"].items():
        r = s["pearson_r"]
        pos, neg = s["pos_increased_fraction"], s["neg_decreased_fraction"]
        lines.append(f"{name}: r(initial, change) = {r:+.3f}" if r is not None else f"{name}: r undefined")
        if pos is not None and neg is not None:
            lines[-1] += f"; positive grew {pos:.1%}, negative shrank {neg:.1%}"
    for layer, v in report["activations"].items():
        sp = v["label_spread"]
        if sp["mean_cv"] is not None:
            lines.append(
                f"{layer}: CV of activation across labels, mean {sp['mean_cv']:.3f}, median {sp['median_cv']:.3f}"
                f" ({len(sp['inactive_filters'])} inactive filters left out)"
            )
        if v["note"]:
            lines.append(f"  note: {v['note']}")
    if report.get("activations_error"):
        lines.append(f"no per-label activations: {report['activations_error']}")
    for k, v in (report.get("label_spread_ratio") or {}).items():
        lines.append(f"label spread ratio {k}: mean CV {v['mean_cv']:.2f}x, median CV {v['median_cv']:.2f}x")
    h = report.get("health")
    if h:
        ratios = [
            f"{n} {t['update_ratio_median']:.2g}"
            for n, t in h["tensors"].items()
            if n.endswith(".weight") and t["update_ratio_median"] is not None
        ]
        lines.append("median update-to-weight ratio: " + ", ".join(ratios))
        frozen = [
            f"{layer} #{u['unit']} (since {u['since']})" for layer, us in h["frozen"].items() for u in us
        ]
        lines.append("frozen units: " + (", ".join(frozen) if frozen else "none"))
        if h["dead"] is not None:
            dead = [f"{layer} #{u}" for layer, us in h["dead"].items() for u in us]
            lines.append(f"dead units at step {h['dead_step']}: " + (", ".join(dead) if dead else "none"))
        lines.append(f"updates: {h['updates']['note']}")
    return lines
