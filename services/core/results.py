"""Shared access to tapes and cached analysis results: the store layout the api and analyzer agree on."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from netlapse.core.schemas import analysis_prefix, tape_prefix
from netlapse.core.store import Store
from netlapse.core.tape import TapeReader

_READERS: OrderedDict[tuple[str, str], TapeReader] = OrderedDict()
_LOCK = threading.Lock()


def open_tape(store: Store, run_id: str, *, refresh: bool = True) -> TapeReader:
    """A cached reader per run; an incomplete (live) tape is refreshed so its newest committed steps show."""
    key = (store.url, run_id)
    with _LOCK:
        reader = _READERS.get(key)
        if reader is not None:
            _READERS.move_to_end(key)
    if reader is None:
        reader = TapeReader(store, tape_prefix(run_id))
        with _LOCK:
            _READERS[key] = reader
            while len(_READERS) > 32:
                _READERS.popitem(last=False)
    elif refresh and not reader.complete:
        reader.refresh()
    return reader


def forget_tape(store: Store, run_id: str) -> None:
    with _LOCK:
        _READERS.pop((store.url, run_id), None)


def request_key(run_id: str, kind: str, params: dict[str, Any]) -> str:
    """Store key (without extension) of a cached result, derived from the request."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:24]
    return f"{analysis_prefix(run_id)}{kind}/{digest}"


def npy_bytes(a: np.ndarray) -> bytes:
    """``a`` as ``.npy`` bytes, exactly what ``np.save`` writes, copied once: a wide tensor's 100 MB are not
    copied into a growing buffer and out of it again."""
    a = np.ascontiguousarray(a)
    head = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(a))
    except ValueError:  # a header too long for format 1.0 (or an object array): np.save decides
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        return buf.getvalue()
    if a.dtype.hasobject:
        raise ValueError("Object arrays cannot be saved when allow_pickle=False")
    return b"".join([head.getvalue(), a.data.cast("B") if a.size else b""])


def npy_load(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)
