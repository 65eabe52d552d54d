"""Offline runs: the same run record, tape and metrics as on a server, in a local directory.

A run recorded with ``netlapse.init(dir=DIR)`` lives in ``DIR/{run_id}/``, laid out exactly like
``runs/{run_id}/`` in a server's store (``run.json``, ``tape/manifest.json``, ``tape/segments/*.seg``,
``metrics/*.jsonl`` then ``metrics.json``, ``sdk/program.bin``, ``sdk/eval_*.npy``). :class:`RunsDirStore` maps
the server's keys (``runs/{id}/...``) onto such a directory, so the server's own code (run records, tape
writer and reader, metrics) reads and writes it unchanged.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

from netlapse.core.store import LocalStore

RUNS = "runs/"


class RunsDirStore:
    """A Store whose ``runs/{id}/...`` keys are ``DIR/{id}/...`` on disk (other keys are refused)."""

    def __init__(self, root: str | Path) -> None:
        self.local = LocalStore(root)
        self.root = self.local.root
        self.url = self.local.url

    def _k(self, key: str) -> str:
        if not key.startswith(RUNS) or key == RUNS:
            raise ValueError(f"an offline run directory holds only runs/… keys, not {key!r}")
        return key[len(RUNS) :]

    def _p(self, prefix: str) -> str:
        if prefix in ("", RUNS):
            return ""
        return self._k(prefix)

    def put(self, key: str, data: bytes) -> None:
        self.local.put(self._k(key), data)

    def get(self, key: str) -> bytes:
        return self.local.get(self._k(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.local.get_range(self._k(key), offset, length)

    def exists(self, key: str) -> bool:
        return self.local.exists(self._k(key))

    def size(self, key: str) -> int:
        return self.local.size(self._k(key))

    def list(self, prefix: str) -> builtins.list[str]:
        return [RUNS + k for k in self.local.list(self._p(prefix))]

    def children(self, prefix: str) -> builtins.list[str]:
        return self.local.children(self._p(prefix))

    def delete_prefix(self, prefix: str) -> int:
        return self.local.delete_prefix(self._k(prefix))

    def put_json(self, key: str, obj: Any) -> None:
        self.local.put_json(self._k(key), obj)

    def drop_cached(self, key: str) -> None:
        self.local.drop_cached(self._k(key))

    def get_json(self, key: str) -> Any:
        return self.local.get_json(self._k(key))


def split_run_dir(path: str | Path) -> tuple[Path, str]:
    """``DIR/RUN_ID`` → (DIR, RUN_ID), checking that it holds an offline run (a ``run.json``)."""
    p = Path(path).expanduser().resolve()
    if not (p / "run.json").is_file():
        raise FileNotFoundError(
            f"{path} is not an offline netlapse run (no run.json there); "
            "pass DIR/RUN_ID as printed by netlapse.init(dir=DIR)"
        )
    return p.parent, p.name
