"""The Python client and ``netlapse report`` against the real stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from netlapse.cli.main import main as cli_main
from netlapse.client import ApiError, Client
from tests.integration.helpers import create_run, get_npy, wait_terminal


@pytest.fixture(scope="module")
def client(api: httpx.Client) -> Iterator[Client]:
    with Client(str(api.base_url)) as c:
        yield c


@pytest.fixture(scope="module")
def run(client: Client) -> dict[str, Any]:
    r = client.create_run(
        {
            "name": "client",
            "model": {"preset": "tiny-cnn"},
            "dataset": "synthetic",
            "training": {"epochs": 1, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "seed": 3},
        }
    )
    done = client.wait(r["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    return done


def test_client_reads_what_the_api_serves(api: httpx.Client, client: Client, run: dict[str, Any]) -> None:
    rid = run["id"]
    steps = client.steps(rid)
    assert steps == list(range(9))
    assert {t["name"] for t in client.tensors(rid)} >= {"conv1.weight", "fc1.bias"}
    w = client.tensor(rid, "conv2.weight", 4)
    assert w.dtype == np.float32 and np.array_equal(
        w, get_npy(api, f"/api/runs/{rid}/tensors/conv2.weight", step=4)
    )
    d, stats = client.diff(rid, "conv2.weight", 0, 8)
    assert np.array_equal(d, client.tensor(rid, "conv2.weight", 8) - client.tensor(rid, "conv2.weight", 0))
    assert stats["increased"] == int((d > 0).sum()) and len(stats["per_filter_l2"]) == 8
    s = client.scatter(rid, "conv1.weight", 8)
    assert s["from"] == 0 and s["n"] == 36
    st, vals = client.trajectory(rid, "conv1.weight", [0, 7])
    assert st == steps and vals.shape == (9, 2) and vals.dtype == np.float32
    assert vals[4, 1] == client.tensor(rid, "conv1.weight", 4).reshape(-1)[7]
    a = client.activations(rid, 8, "conv2", per_label=3)
    assert a["layer"] == "conv2" and len(a["activation"]) == 8
    c, idx = next((c, s) for c, s in enumerate(a["sample_indices"]) if s)
    x, y = client.samples("synthetic", idx)
    assert x.shape == (len(idx), 1, 28, 28) and set(y.tolist()) == {c}
    cmp = client.compare_activations(rid, "conv1", 0, 8, per_label=3)
    assert cmp["to"]["step"] == 8 and len(cmp["difference"]) == 4
    fm = client.featuremaps(rid, 8, "conv1", index=2)
    assert fm["maps"].shape == (4, 26, 26) and fm["input"].shape == (1, 28, 28)


def test_client_errors_carry_the_message(client: Client, run: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as e:
        client.activations(run["id"], 8, "fc1")
    assert e.value.status == 422 and "conv1, conv2" in str(e.value)
    with pytest.raises(ApiError) as e:
        client.run("nosuchrun9")
    assert e.value.status == 404


def test_report_command_writes_figures(
    client: Client, run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(
        [
            "report",
            run["id"],
            "--out",
            str(tmp_path),
            "--server",
            client.base_url,
            "--per-label",
            "5",
            "--from",
            "1",
            "--to",
            "8",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    for stem in ("filters", "scatter", "activations_conv1", "activations_conv2"):
        for ext in ("png", "svg"):
            assert (tmp_path / f"{stem}.{ext}").stat().st_size > 1000
    rep = json.loads((tmp_path / "report.json").read_text())
    assert (rep["from"], rep["to"]) == (1, 8)
    assert rep["activations"]["conv2"]["requested_per_label"] == 5
    a = client.activations(run["id"], 8, "conv2", per_label=5)
    assert rep["activations"]["conv2"]["activation"] == a["activation"]
    s = client.scatter(run["id"], "conv2.weight", 8, 1, bins=100)
    assert rep["scatter"]["conv2.weight"]["pearson_r"] == s["pearson_r"]
    assert "r(initial, change)" in capsys.readouterr().out
    # A bad request is a message and exit code 2, not a traceback.
    assert (
        cli_main(["report", run["id"], "--out", str(tmp_path), "--server", client.base_url, "--to", "99"])
        == 2
    )
    assert "99" in capsys.readouterr().err


def test_report_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", "abcdefgh", "--out", str(tmp_path), "--server", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_wait_helper_matches(api: httpx.Client, client: Client) -> None:
    r = create_run(api, name="client-wait", training={"epochs": 1, "batch_size": 512, "seed": 0})
    assert client.wait(r["id"], timeout=120)["status"] == wait_terminal(api, r["id"])["status"]
