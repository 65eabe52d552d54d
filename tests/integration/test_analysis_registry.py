"""The analysis registry end to end: routes, OpenAPI entries, the catalog and the client's generic call all
follow from the descriptors, and every analysis maps its failures the same way (a run whose data vanished
while an analysis ran answers 404, never 500)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from netlapse.analyzer.registry import registry
from netlapse.cli.stack import Stack
from netlapse.client import ApiError, Client
from netlapse.core.schemas import tape_prefix
from netlapse.core.store import LocalStore
from netlapse.core.tape import COMPACTION_NAME
from tests.integration.helpers import create_run, wait_terminal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(api: httpx.Client) -> Iterator[Client]:
    with Client(str(api.base_url)) as c:
        yield c


@pytest.fixture(scope="module")
def run(api: httpx.Client) -> dict[str, Any]:
    r = create_run(api, name="registry", training={"epochs": 1, "batch_size": 128, "lr": 0.05, "seed": 5})
    done = wait_terminal(api, r["id"])
    assert done["status"] == "succeeded", done["error"]
    return done


def test_every_registered_analysis_has_its_route_openapi_entry_and_catalog_entry(api: httpx.Client) -> None:
    cat = {a["name"]: a for a in api.get("/api/analyses").json()["analyses"]}
    paths = api.get("/openapi.json").json()["paths"]
    routed = {n: a for n, a in registry().items() if a.path is not None}
    assert set(cat) == set(routed)
    assert {"diff", "scatter", "trajectory", "activations", "activations_compare", "featuremaps"} <= set(cat)
    for name, a in routed.items():
        assert cat[name]["path"] == a.path and cat[name]["method"] == a.method
        op = paths["/api" + a.path][a.method.lower()]
        assert op["description"] == a.summary
    # The query parameters carry the request schema's aliases, defaults and bounds.
    params = {p["name"]: p for p in paths["/api/runs/{run_id}/scatter/{name}"]["get"]["parameters"]}
    assert params["from"]["schema"]["default"] == 0 and params["max_points"]["schema"]["maximum"] == 200_000
    assert params["to"]["required"] is True and params["name"]["in"] == "path"
    body = paths["/api/runs/{run_id}/activations"]["post"]["requestBody"]
    assert body["required"] is True


def test_the_client_calls_any_analysis_by_name(client: Client, run: dict[str, Any]) -> None:
    rid = run["id"]
    d = client.analysis("diff", run_id=rid, name="conv1.weight", from_step=0, to_step=8, npy=True)
    assert np.array_equal(d, client.tensor(rid, "conv1.weight", 8) - client.tensor(rid, "conv1.weight", 0))
    s = client.analysis("scatter", run_id=rid, name="conv1.weight", **{"to": 8, "bins": 8})
    assert s["n"] == 36 and s["bins"] == 8 and s["cached"] is False
    a = client.analysis("activations", run_id=rid, step=8, layer="conv1", per_label=2)
    assert a == {**client.activations(rid, 8, "conv1", per_label=2), "cached": False}
    with pytest.raises(ValueError, match="unknown analysis 'nope'"):
        client.analysis("nope", run_id=rid)
    with pytest.raises(ApiError) as e:
        client.analysis("diff", run_id=rid, name="conv1.weight", from_step=0, to_step=99)
    assert e.value.status == 404 and "to=99 was not captured" in str(e.value)


def test_a_run_whose_data_vanished_mid_analysis_answers_404(api: httpx.Client, stack: Stack) -> None:
    """The api checks the request against the tape it has open; the tape is then deleted (as DELETE does) before
    the analyzer reads it. Every analysis answers 404 with a message, not 500."""
    r = create_run(api, name="vanish", training={"epochs": 1, "batch_size": 128, "lr": 0.05, "seed": 6})
    rid = r["id"]
    assert wait_terminal(api, rid)["status"] == "succeeded"
    store = LocalStore(stack.data_dir / "store")
    deadline = time.monotonic() + 120  # let the post-run compaction finish, so nothing rewrites the tape
    while time.monotonic() < deadline and not store.exists(tape_prefix(rid) + COMPACTION_NAME):
        time.sleep(0.2)
    while time.monotonic() < deadline and store.list(tape_prefix(rid) + "segments/"):
        time.sleep(0.2)
    assert api.get(f"/api/runs/{rid}/steps").json()["steps"] == list(range(9))  # the api holds the tape open
    shutil.rmtree(stack.data_dir / "store" / "runs" / rid / "tape")
    answers = [
        api.get(f"/api/runs/{rid}/diff/conv2.weight", params={"from": 1, "to": 7}),
        api.get(f"/api/runs/{rid}/scatter/conv2.weight", params={"from": 2, "to": 7}),
        api.post(f"/api/runs/{rid}/activations", json={"step": 7, "layer": "conv1", "per_label": 2}),
        api.get(f"/api/runs/{rid}/featuremaps", params={"step": 7, "layer": "conv1", "index": 3}),
    ]
    for a in answers:
        assert a.status_code == 404, (a.request.url, a.status_code, a.text)
        assert "deleted" in a.text or "no committed snapshots" in a.text, a.text
