"""Resume state of a training run: everything needed to continue it bit-for-bit after a crash.

A checkpoint is taken between two optimizer steps ("before batch ``batch`` of epoch ``epoch``, ``step``
steps done") and holds the model's whole state_dict, the optimizer's state, every random generator
(torch CPU and CUDA, the data-order generator, numpy, python), the epoch's data permutation and the
epoch metrics so far. It is one ``.npz`` object (numpy arrays, no pickle: ``allow_pickle=False`` on
both sides) with a JSON header stored as a byte array; names of arrays are positional, listed in the
header. Objects live at ``runs/{id}/resume/{step:012d}.npz``.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netlapse.core.store import Store

FORMAT = 1


def resume_prefix(run_id: str) -> str:
    return f"runs/{run_id}/resume/"


def resume_key(run_id: str, step: int) -> str:
    return f"{resume_prefix(run_id)}{step:012d}.npz"


def checkpoint_steps(store: Store, run_id: str) -> list[int]:
    """Steps that have a stored checkpoint, ascending."""
    out = []
    for key in store.list(resume_prefix(run_id)):
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".npz") and name[:-4].isdigit():
            out.append(int(name[:-4]))
    return sorted(out)


@dataclass
class ResumeState:
    """A checkpoint in memory: arrays (copies, safe while training goes on) and a JSON-able header."""

    step: int
    epoch: int
    batch: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    def encode(self) -> bytes:
        """The stored form: an .npz of positional arrays plus the header as UTF-8 bytes."""
        names = sorted(self.arrays)
        header = {
            "format": FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "names": names,
            "meta": self.meta,
        }
        payload = {f"a{i}": np.ascontiguousarray(self.arrays[n]) for i, n in enumerate(names)}
        payload["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **payload)
        return buf.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> ResumeState:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes().decode())
            if header.get("format") != FORMAT:
                raise ValueError(f"unsupported resume state format {header.get('format')!r}")
            arrays = {n: z[f"a{i}"] for i, n in enumerate(header["names"])}
        return cls(int(header["step"]), int(header["epoch"]), int(header["batch"]), arrays, header["meta"])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def _np(t: torch.Tensor) -> np.ndarray:
    return np.array(t.detach().cpu().numpy(), copy=True)


def capture_state(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    *,
    step: int,
    epoch: int,
    batch: int,
    perm: torch.Tensor,
    epoch_metrics: list[dict[str, Any]],
) -> ResumeState:
    """Copy everything the run needs to continue from here (on the training thread, between steps)."""
    arrays: dict[str, np.ndarray] = {}
    model_names = []
    for name, t in model.state_dict().items():
        arrays[f"model/{name}"] = _np(t)
        model_names.append(name)
    sd = opt.state_dict()
    opt_state: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        entry: dict[str, Any] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                arrays[f"opt/{idx}/{k}"] = _np(v)
                entry[k] = {"array": f"opt/{idx}/{k}"}
            else:
                entry[k] = {"value": v}
        opt_state[str(idx)] = entry
    arrays["rng/torch"] = _np(torch.get_rng_state())
    arrays["rng/data"] = _np(gen.get_state())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    for i, s in enumerate(cuda_states):
        arrays[f"rng/cuda/{i}"] = _np(s)
    np_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    arrays["rng/numpy"] = np.array(np_state[1], copy=True)
    py_version, py_internal, py_gauss = random.getstate()
    arrays["perm"] = _np(perm)
    meta = {
        "model": model_names,
        "opt_state": opt_state,
        "opt_groups": sd["param_groups"],
        "cuda_rng": len(cuda_states),
        "numpy_rng": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python_rng": [py_version, list(py_internal), py_gauss],
        "epoch_metrics": epoch_metrics,
    }
    return ResumeState(step, epoch, batch, arrays, meta)


def restore_state(
    state: ResumeState, model: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator
) -> torch.Tensor:
    """Put model, optimizer and every generator back as they were; returns the epoch's data permutation."""
    a, meta = state.arrays, state.meta
    model.load_state_dict({n: torch.from_numpy(a[f"model/{n}"].copy()) for n in meta["model"]}, strict=True)
    opt_state: dict[int, dict[str, Any]] = {}
    for idx, entry in meta["opt_state"].items():
        opt_state[int(idx)] = {
            k: torch.from_numpy(a[v["array"]].copy()) if "array" in v else v["value"]
            for k, v in entry.items()
        }
    opt.load_state_dict({"state": opt_state, "param_groups": meta["opt_groups"]})
    torch.set_rng_state(torch.from_numpy(a["rng/torch"].copy()))
    gen.set_state(torch.from_numpy(a["rng/data"].copy()))
    if meta["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.from_numpy(a[f"rng/cuda/{i}"].copy()) for i in range(meta["cuda_rng"])]
        )
    name, pos, has_gauss, cached = meta["numpy_rng"]
    np.random.set_state((name, a["rng/numpy"].copy(), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return torch.from_numpy(a["perm"].copy())
