"""A small Python client over netlapse's HTTP API.

    from netlapse.client import Client

    c = Client("http://127.0.0.1:8000")
    run = c.create_run({"name": "paper", "model": {"preset": "paper-cnn"}, "dataset": "mnist-10k",
                        "training": {"epochs": 1, "optimizer": "adadelta", "lr": 1.0}})
    run = c.wait(run["id"])
    w0 = c.tensor(run["id"], "conv1.weight", step=0)            # numpy, bit-exact (.npy over HTTP)
    d, stats = c.diff(run["id"], "conv1.weight", 0, c.steps(run["id"])[-1])
    act = c.activations(run["id"], step=63, layer="conv2")      # Eq. 1, as JSON

On a server that requires tokens (``NETLAPSE_AUTH_REQUIRED``), pass ``token=`` or set ``NETLAPSE_TOKEN``.
Tensors travel as ``.npy`` bytes, so they keep their dtype and shape. Every HTTP error becomes an
:class:`ApiError` carrying the status code and the server's message.
"""

from __future__ import annotations

import io
import os
import re
import time
from typing import Any

import httpx
import numpy as np

__all__ = ["ApiError", "Client", "server_url"]

NPY = "application/x-npy"
TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULT_SERVER = "http://127.0.0.1:8000"


def server_url(url: str | None = None, default: str = DEFAULT_SERVER) -> str:
    """The server to talk to: ``url``, else ``$NETLAPSE_URL``, else ``$NETLAPSE_SERVER`` (its older alias), else
    ``default``. The SDK, this client and every CLI command read the same variable."""
    return url or os.environ.get("NETLAPSE_URL") or os.environ.get("NETLAPSE_SERVER") or default


class ApiError(RuntimeError):
    """An HTTP error answer: ``status`` and the server's ``detail`` (a message or a list of field errors)."""

    def __init__(self, status: int, detail: Any, url: str) -> None:
        self.status, self.detail, self.url = status, detail, url
        super().__init__(f"{status} from {url}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    """FastAPI-style details (a string, or a list of ``{loc, msg}``) as one readable line."""
    if isinstance(detail, list):
        parts = []
        for d in detail:
            if isinstance(d, dict):
                loc = ".".join(str(p) for p in d.get("loc", []) if p not in ("body", "query", "path"))
                parts.append(f"{loc}: {d.get('msg', d)}" if loc else str(d.get("msg", d)))
            else:
                parts.append(str(d))
        return "; ".join(parts)
    return str(detail)


def _load_npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


class Client:
    """netlapse over HTTP. ``base_url`` is the server (``http://host:port``, with or without ``/api``; default
    :func:`server_url`); ``token`` (default ``$NETLAPSE_TOKEN``) is sent as ``Authorization: Bearer``."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 300.0,
        http: httpx.Client | None = None,
    ) -> None:
        base = server_url(base_url).rstrip("/")
        self.base_url = base if base.endswith("/api") else base + "/api"
        token = token or os.environ.get("NETLAPSE_TOKEN") or None
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.Client(timeout=timeout)
        self._own_http = http is None
        self._catalog: dict[str, dict[str, Any]] | None = None

    def close(self) -> None:
        """Close the underlying connection pool (if this client created it)."""
        if self._own_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing

    def request(self, method: str, path: str, *, npy: bool = False, **kw: Any) -> httpx.Response:
        """One request to ``/api/<path>``; raises :class:`ApiError` on a 4xx/5xx."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        kw["headers"] = {**self._auth, **kw.get("headers", {})}
        if method in ("POST", "PUT", "PATCH") and not ({"json", "content", "data", "files"} & set(kw)):
            kw["json"] = {}  # the server takes state-changing requests only as JSON (a CSRF guard)
        if npy:
            kw["headers"]["Accept"] = NPY
        r = self.http.request(method, url, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ApiError(r.status_code, detail, url)
        return r

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON answer."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST a JSON body, return the JSON answer."""
        return self.request("POST", path, json=body or {}).json()

    # -- catalog

    def events_url(self, run_id: str, since: str | None = None) -> str:
        """The run's live-events WebSocket URL. On a server with tokens it carries a single-use ticket
        (``POST /api/ws-ticket``), never the token; open it within ``NETLAPSE_WS_TICKET_TTL_S`` seconds."""
        params: dict[str, str] = {"since": since} if since else {}
        ticket = self.post("ws-ticket").get("ticket") if self._auth else None
        if ticket:
            params["ticket"] = ticket
        url = f"{self.base_url}/runs/{run_id}/events".replace("http://", "ws://", 1).replace(
            "https://", "wss://", 1
        )
        return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")

    def health(self) -> dict[str, Any]:
        """Status of api, redis and store."""
        return self.request("GET", "health").json()

    def me(self) -> dict[str, Any]:
        """``{user, auth_required}``: who this client's token belongs to (``local`` when auth is off)."""
        return self.get("me")

    def presets(self) -> list[dict[str, Any]]:
        """Model presets with their specs."""
        return self.get("presets")["presets"]

    def datasets(self) -> list[dict[str, Any]]:
        """Datasets the server knows and whether their files are present."""
        return self.get("datasets")["datasets"]

    def samples(self, dataset: str, indices: list[int], split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """``(inputs [k, C, H, W] float32, labels [k])`` exactly as fed to the model (any number of indices)."""
        xs, ys = [], []
        for i in range(0, len(indices), 1000):
            chunk = ",".join(str(int(v)) for v in indices[i : i + 1000])
            r = self.request(
                "GET", f"datasets/{dataset}/samples", npy=True, params={"split": split, "indices": chunk}
            )
            xs.append(_load_npy(r.content))
            ys.append(np.array([int(v) for v in r.headers["X-Netlapse-Labels"].split(",")], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    # -- runs

    def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create and enqueue a run (the body of POST /api/runs)."""
        return self.post("runs", body)

    def runs(self) -> list[dict[str, Any]]:
        """This user's runs (all runs when auth is off), newest first."""
        return self.get("runs")["runs"]

    def run(self, run_id: str) -> dict[str, Any]:
        """One run: status, spec, progress, summary."""
        return self.get(f"runs/{run_id}")

    def wait(self, run_id: str, timeout: float = 3600.0, poll: float = 0.5) -> dict[str, Any]:
        """Poll until the run is succeeded, failed or cancelled; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {run['status']} after {timeout:.0f} s")
            time.sleep(poll)

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Ask a queued or running run to stop."""
        return self.post(f"runs/{run_id}/cancel")

    def delete(self, run_id: str) -> None:
        """Delete a finished run with its data."""
        self.request("DELETE", f"runs/{run_id}")

    def metrics(self, run_id: str) -> dict[str, Any]:
        """Loss/accuracy per step and validation per epoch."""
        return self.get(f"runs/{run_id}/metrics")

    def steps(self, run_id: str) -> list[int]:
        """Captured steps."""
        return self.get(f"runs/{run_id}/steps")["steps"]

    def tensors(self, run_id: str) -> list[dict[str, Any]]:
        """Captured tensors: name, shape, dtype, layer, kind."""
        return self.get(f"runs/{run_id}/tensors")["tensors"]

    # -- tensors and analyses

    def tensor(self, run_id: str, name: str, step: int) -> np.ndarray:
        """One tensor at one captured step, bit-exact."""
        return _load_npy(
            self.request("GET", f"runs/{run_id}/tensors/{name}", npy=True, params={"step": step}).content
        )

    def diff(self, run_id: str, name: str, from_step: int, to_step: int) -> tuple[np.ndarray, dict[str, Any]]:
        """``(value(to) − value(from), stats)``: the array bit-exact, stats as the server computed them."""
        path = f"runs/{run_id}/diff/{name}"
        params = {"from": from_step, "to": to_step}
        d = _load_npy(self.request("GET", path, npy=True, params=params).content)
        stats = self.get(path, **params)["stats"]  # a cache hit on the server by now
        return d, stats

    def diff_json(self, run_id: str, name: str, from_step: int, to_step: int) -> dict[str, Any]:
        """The diff as JSON ``{name, from, to, shape, dtype, data, stats}``."""
        return self.get(f"runs/{run_id}/diff/{name}", **{"from": from_step, "to": to_step})

    def scatter(
        self,
        run_id: str,
        name: str,
        to_step: int,
        from_step: int = 0,
        max_points: int = 20_000,
        bins: int = 64,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Initial value (x, at ``from_step``) vs change (y, to ``to_step``): sample, exact histogram, r, fractions."""
        return self.get(
            f"runs/{run_id}/scatter/{name}",
            **{"from": from_step, "to": to_step, "max_points": max_points, "bins": bins, "seed": seed},
        )

    def trajectory(self, run_id: str, name: str, indices: list[int]) -> tuple[list[int], np.ndarray]:
        """``(steps, values[step][index])`` of chosen flat element indices over every captured step."""
        j = self.get(f"runs/{run_id}/trajectory/{name}", index=",".join(str(int(i)) for i in indices))
        values = np.asarray(j["values"], dtype=j["dtype"]).reshape(j["shape"])
        return j["steps"], values

    def activations(
        self,
        run_id: str,
        step: int,
        layer: str,
        per_label: int = 100,
        point: str = "post",
        split: str = "test",
    ) -> dict[str, Any]:
        """Per-label normalized activations (Eq. 1) of a conv layer at a step, with the sample indices used."""
        return self.post(
            f"runs/{run_id}/activations",
            {"step": step, "layer": layer, "per_label": per_label, "point": point, "split": split},
        )

    def compare_activations(
        self,
        run_id: str,
        layer: str,
        from_step: int,
        to_step: int,
        per_label: int = 100,
        point: str = "post",
        split: str = "test",
    ) -> dict[str, Any]:
        """One layer's Eq. 1 matrix at two steps and their difference."""
        return self.post(
            f"runs/{run_id}/activations/compare",
            {
                "layer": layer,
                "from": from_step,
                "to": to_step,
                "per_label": per_label,
                "point": point,
                "split": split,
            },
        )

    def analyses(self) -> dict[str, dict[str, Any]]:
        """The server's analyses by name (``GET /api/analyses``): method, path, request schema."""
        if self._catalog is None:
            self._catalog = {a["name"]: a for a in self.get("analyses")["analyses"]}
        return self._catalog

    def analysis(self, kind: str, /, *, npy: bool = False, **params: Any) -> Any:
        """Call any analysis the server registers, by name: path fields (``run_id``, ``name``, …) and the rest
        as query parameters or JSON body, by field name or alias (``from_step=0`` or ``**{"from": 0}``).
        Returns the JSON answer, or the array when ``npy`` is set."""
        entries = self.analyses()
        if kind not in entries:
            raise ValueError(f"unknown analysis {kind!r}; this server has: {', '.join(sorted(entries))}")
        a = entries[kind]
        params = {a.get("aliases", {}).get(k, k): v for k, v in params.items() if v is not None}
        path = re.sub(r"\{(\w+)\}", lambda m: str(params.pop(m.group(1))), a["path"])
        if a["method"] == "POST":
            return self.post(path, params)
        r = self.request("GET", path, npy=npy, params=params)
        return _load_npy(r.content) if npy else r.json()

    def featuremaps(
        self, run_id: str, step: int, layer: str, index: int, split: str = "test", point: str = "post"
    ) -> dict[str, Any]:
        """One input's maps of a conv layer: ``maps`` and ``input`` as numpy arrays, plus label and prediction."""
        j = self.get(
            f"runs/{run_id}/featuremaps", step=step, layer=layer, index=index, split=split, point=point
        )
        for k in ("maps", "input"):
            t = j[k]
            j[k] = np.asarray(t["data"], dtype=t["dtype"]).reshape(t["shape"])
        return j
