"""Model presets, datasets and their samples."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from netlapse.api.deps import SettingsDep
from netlapse.api.errors import invalid, not_found
from netlapse.api.responses import NPY, FastJSONResponse, array_json, wants_npy
from netlapse.core.datasets import (
    SPLITS,
    DatasetUnavailable,
    InvalidSample,
    UnknownDataset,
    list_datasets,
    sample,
)
from netlapse.core.modelspec import PRESETS, count_params
from netlapse.core.results import npy_bytes

router = APIRouter(tags=["catalog"])
"""Public: what a server offers, readable without a token."""
samples_router = APIRouter(tags=["catalog"])
MAX_SAMPLE_INDICES = 1000
"""Most sample indices one request may ask for."""
"""Dataset contents: like every other route, behind a token when auth is on."""


@router.get("/presets")
def presets() -> dict:
    """Model presets, with their full spec and parameter count."""
    return {
        "presets": [
            {
                "name": name,
                "description": p.description,
                "spec": p.spec.model_dump(),
                "params": count_params(p.spec),
            }
            for name, p in PRESETS.items()
        ]
    }


@router.get("/datasets")
def datasets(settings: SettingsDep) -> dict:
    """Datasets this server knows, and whether their files are present."""
    return {"datasets": [d.model_dump() for d in list_datasets(settings)]}


@samples_router.get("/datasets/{name}/samples")
def samples(
    name: str,
    request: Request,
    settings: SettingsDep,
    split: str = Query("test", description="train | test"),
    indices: str = Query(..., description=f"comma-separated sample indices, at most {MAX_SAMPLE_INDICES}"),
) -> Response:
    """The exact input tensors (as fed to the model) and labels of chosen samples.

    JSON ``{indices, labels, inputs: {shape, dtype, data}}``; with ``Accept: application/x-npy`` the inputs as
    ``.npy`` bytes and the labels in the ``X-Netlapse-Labels`` header."""
    if split not in SPLITS:
        raise invalid(["query", "split"], f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    try:
        idx = [int(s) for s in indices.split(",") if s.strip()]
    except ValueError:
        raise invalid(["query", "indices"], "indices must be comma-separated integers, e.g. 0,1,2") from None
    if not idx or len(idx) > MAX_SAMPLE_INDICES:
        raise invalid(
            ["query", "indices"], f"give between 1 and {MAX_SAMPLE_INDICES} indices (got {len(idx)})"
        )
    try:
        x, y = sample(name, split, idx, settings)
    except UnknownDataset as exc:
        raise not_found(str(exc)) from None
    except DatasetUnavailable as exc:
        raise invalid(["path", "name"], str(exc)) from None
    except InvalidSample as exc:  # the split was checked above, so this is an index out of range
        raise invalid(["query", "indices"], str(exc)) from None
    labels = [int(v) for v in y]
    if wants_npy(request):
        headers = {"X-Netlapse-Labels": ",".join(map(str, labels)), "X-Netlapse-Split": split}
        return Response(npy_bytes(x.numpy()), media_type=NPY, headers=headers)
    return FastJSONResponse(
        {"dataset": name, "split": split, "indices": idx, "labels": labels, "inputs": array_json(x.numpy())}
    )
