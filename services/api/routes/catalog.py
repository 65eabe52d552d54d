"""Model presets, datasets and their samples."""

from __future__ import annotations

from fastapi import APIRouter, Query

from netlapse.api.deps import SettingsDep
from netlapse.api.errors import invalid, not_found
from netlapse.api.responses import array_json
from netlapse.core.datasets import DatasetUnavailable, UnknownDataset, list_datasets, sample
from netlapse.core.modelspec import PRESETS, count_params

router = APIRouter(tags=["catalog"])


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


@router.get("/datasets/{name}/samples")
def samples(
    name: str,
    settings: SettingsDep,
    split: str = Query("test", description="train | test"),
    indices: str = Query(..., description="comma-separated sample indices, at most 1000"),
) -> dict:
    """The exact input tensors (as fed to the model) and labels of chosen samples."""
    try:
        idx = [int(s) for s in indices.split(",") if s.strip()]
    except ValueError:
        raise invalid(["query", "indices"], "indices must be comma-separated integers, e.g. 0,1,2") from None
    if not idx or len(idx) > 1000:
        raise invalid(["query", "indices"], "give between 1 and 1000 indices")
    try:
        x, y = sample(name, split, idx, settings)
    except UnknownDataset as exc:
        raise not_found(str(exc.args[0] if exc.args else exc)) from None
    except DatasetUnavailable as exc:
        raise invalid(["path", "name"], str(exc)) from None
    except (IndexError, ValueError) as exc:
        raise invalid(["query", "split" if "split" in str(exc) else "indices"], str(exc)) from None
    return {"indices": idx, "labels": [int(v) for v in y], "inputs": array_json(x.numpy())}
