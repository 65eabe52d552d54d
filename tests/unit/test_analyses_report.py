"""``netlapse report`` draws its figures and numbers from what the client returns (a fake client here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netlapse.analyzer.analyses import diff_stats, scatter_data
from netlapse.cli.report import diverging_norm, filter_mosaic, label_spread, make_report, summary_lines


class FakeClient:
    """Answers like netlapse.client.Client for a two-conv-layer run with steps 0..4."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.w = {
            "conv1.weight": [rng.normal(size=(4, 1, 3, 3)).astype(np.float32) for _ in range(5)],
            "conv2.weight": [rng.normal(size=(8, 4, 3, 3)).astype(np.float32) for _ in range(5)],
        }
        self.calls: list[str] = []

    def run(self, run_id: str) -> dict[str, Any]:
        return {
            "id": run_id,
            "name": "fake",
            "dataset": "synthetic",
            "status": "succeeded",
            "training": {},
            "summary": {},
            "preset": "tiny-cnn",
        }

    def steps(self, run_id: str) -> list[int]:
        return [0, 1, 2, 3, 4]

    def tensors(self, run_id: str) -> list[dict[str, Any]]:
        return [
            {"name": "conv1.weight", "kind": "conv2d", "role": "weight"},
            {"name": "conv1.bias", "kind": "conv2d", "role": "bias"},
            {"name": "conv2.weight", "kind": "conv2d", "role": "weight"},
            {"name": "fc1.weight", "kind": "linear", "role": "weight"},
        ]

    def datasets(self) -> list[dict[str, Any]]:
        return [{"name": "synthetic", "classes": [f"c{i}" for i in range(10)]}]

    def tensor(self, run_id: str, name: str, step: int) -> np.ndarray:
        return self.w[name][step]

    def diff(self, run_id: str, name: str, a: int, b: int) -> tuple[np.ndarray, dict[str, Any]]:
        d = self.w[name][b] - self.w[name][a]
        return d, diff_stats(d)

    def scatter(self, run_id: str, name: str, to_step: int, from_step: int = 0, **kw: Any) -> dict[str, Any]:
        x = self.w[name][from_step]
        s = scatter_data(x, self.w[name][to_step] - x, kw.get("max_points", 20_000), kw.get("bins", 64))
        return {**s, "name": name, "x": s["x"].tolist(), "y": s["y"].tolist()}

    def activations(self, run_id: str, step: int, layer: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(f"activations {layer} {step}")
        f = 4 if layer == "conv1" else 8
        act = np.abs(np.random.default_rng(f).normal(size=(f, 10))) + 0.5
        act[0] = 1e-9  # a dead filter
        rows: list[list[float | None]] = act.tolist()
        rows[1][3] = None  # a label without inputs
        return {
            "layer": layer,
            "step": step,
            "point": "post",
            "split": "test",
            "labels": list(range(10)),
            "activation": rows,
            "numerator": rows,
            "denominator": [1.0] * 10,
            "counts": [5] * 9 + [0],
            "requested_per_label": 5,
            "note": "label 9 (0 of 5)",
        }

    def analysis(self, kind: str, /, **params: Any) -> dict[str, Any]:
        self.calls.append(f"{kind} {params.get('step', '')}".strip())
        if kind == "health_dead":
            return {
                "step": params["step"],
                "split": "test",
                "evaluated": 256,
                "layers": [{"layer": "conv1", "dead": [2]}],
            }
        assert kind == "health", kind
        names = list(self.w)
        norm = [[float(np.linalg.norm(v.astype(np.float64))) for v in self.w[n]] for n in names]
        upd = [
            [None]
            + [
                float(np.linalg.norm((b - a).astype(np.float64)))
                for a, b in zip(self.w[n], self.w[n][1:], strict=False)
            ]
            for n in names
        ]
        ratio = [
            [None] + [u / nm for u, nm in zip(us[1:], ns, strict=False)]
            for us, ns in zip(upd, norm, strict=False)
        ]  # type: ignore[operator]
        flips = [[float(np.mean(np.sign(v) != np.sign(self.w[n][0]))) for v in self.w[n]] for n in names]
        return {
            "steps": [0, 1, 2, 3, 4],
            "tensors": [{"name": n, "shape": list(self.w[n][0].shape), "dtype": "float32"} for n in names],
            "norm": norm,
            "update_norm": upd,
            "update_ratio": ratio,
            "sign_flip_fraction": flips,
            "units": [
                {"layer": "conv1", "frozen": [{"unit": 2, "since": 0}]},
                {"layer": "conv2", "frozen": []},
            ],
            "updates": {
                "note": "sgd: an update is not a gradient (momentum)",
                "update_is_scaled_gradient": False,
            },
        }


def test_report_writes_figures_and_numbers(tmp_path: Path) -> None:
    c = FakeClient()
    rep = make_report(c, "fake1234", tmp_path, per_label=5, formats=("png", "svg"))  # type: ignore[arg-type]
    names = {p.name for p in tmp_path.iterdir()}
    for stem in ("filters", "scatter", "activations_conv1", "activations_conv2", "health"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
        assert (tmp_path / f"{stem}.png").stat().st_size > 5000
    j = json.loads((tmp_path / "report.json").read_text())
    assert j["from"] == 0 and j["to"] == 4 and j["filters"]["name"] == "conv1.weight"
    d = c.w["conv1.weight"][4] - c.w["conv1.weight"][0]
    assert j["filters"]["stats"]["increased"] == int((d > 0).sum())
    assert np.allclose(np.array(j["filters"]["change"]), d)
    s1 = j["scatter"]["conv1.weight"]
    x0 = c.w["conv1.weight"][0].reshape(-1)
    assert s1["n"] == 36 and s1["pos_count"] == int((x0 > 0).sum())
    assert set(j["activations"]) == {"conv1", "conv2"} and j["activations"]["conv1"]["note"]
    assert j["activations"]["conv2"]["label_spread"]["inactive_filters"] == [0]
    assert "conv2/conv1" in j["label_spread_ratio"]
    assert c.calls == ["activations conv1 4", "activations conv2 4", "health", "health_dead 4"]
    lines = summary_lines(rep)
    assert any("r(initial, change)" in line for line in lines)
    h = j["health"]
    w1 = [v.astype(np.float64) for v in c.w["conv1.weight"]]
    ratios = [np.linalg.norm(b - a) / np.linalg.norm(a) for a, b in zip(w1, w1[1:], strict=False)]
    assert h["tensors"]["conv1.weight"]["update_ratio_median"] == pytest.approx(float(np.median(ratios)))
    assert h["tensors"]["conv1.weight"]["update_ratio_last"] == pytest.approx(ratios[-1])
    assert (
        h["frozen"] == {"conv1": [{"unit": 2, "since": 0}]}
        and h["dead"] == {"conv1": [2]}
        and h["dead_step"] == 4
    )
    assert "frozen units: conv1 #2 (since 0)" in lines and "dead units at step 4: conv1 #2" in lines
    assert any(line.startswith("updates: ") and "not a gradient" in line for line in lines)


def test_report_rejects_unknown_layers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="conv layers: conv1, conv2"):
        make_report(FakeClient(), "fake1234", tmp_path, layers=["fc1"])  # type: ignore[arg-type]


def test_mosaic_norm_and_spread() -> None:
    w = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    m = filter_mosaic(w, cols=8)
    assert m.shape == (3, 2 * 7 + 1) and np.isnan(m[:, 3]).all() and np.isnan(m[:, 7]).all()
    assert (
        np.array_equal(m[:, :3], w[0, 0])
        and np.array_equal(m[:, 4:7], w[0, 1])
        and np.array_equal(m[:, 8:11], w[1, 0])
    )
    n = diverging_norm(np.array([-0.5, 2.0]))
    assert (n.vmin, n.vmax) == (-2.0, 2.0) and n(0.0) == 0.5  # 0 sits in the middle: white
    sp = label_spread([[1.0, 1.0, 1.0], [1.0, 3.0, None], [1e-9, 2e-9, 0.0]])
    assert sp["per_filter_cv"][0] == 0.0 and sp["per_filter_cv"][1] == pytest.approx(0.5)
    assert sp["inactive_filters"] == [2] and sp["mean_cv"] == pytest.approx(0.25)
