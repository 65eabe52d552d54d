"""``netlapse runs list | show | create | follow | cancel | delete | export``: runs from the command line.

Every command talks to a server through :class:`netlapse.client.Client`: ``--server`` or ``$NETLAPSE_URL``
(``$NETLAPSE_SERVER`` is an alias), ``--token`` or ``$NETLAPSE_TOKEN``. Output meant for scripts (ids, JSON,
tables) goes to stdout, messages and progress bars to stderr. Exit codes: 0 success; 2 a usage, API or
connection error; ``follow`` exits with the run's final status: 0 succeeded, 1 failed, 3 cancelled.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
import numpy as np
from numpy.lib import format as npformat

from netlapse.client import ApiError, Client, server_url

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 2, 3
STATUS_EXIT = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
TERMINAL = tuple(STATUS_EXIT)


class CliError(Exception):
    """A message for the user; the command exits with status 2."""


# --- formatting ------------------------------------------------------------------------------------------------


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    s = max(0.0, (datetime.now(UTC) - t).total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{int(s // n)}{unit} ago"
    return f"{int(s)}s ago"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _model_of(run: dict[str, Any]) -> str:
    if run.get("source") == "sdk":
        return "own model (sdk)"
    if run.get("preset"):
        return str(run["preset"])
    layers = (run.get("model") or {}).get("layers") or []
    return f"{len(layers)} layers" if layers else "-"


def _progress_text(p: dict[str, Any]) -> str:
    step, total = int(p.get("step") or 0), int(p.get("total_steps") or 0)
    return f"{step}/{total}" if total else str(step)


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    """The rows ``netlapse runs list`` prints."""
    rows = [("ID", "NAME", "STATUS", "SOURCE", "MODEL", "DATASET", "STEP", "CREATED")]
    for r in runs:
        rows.append(
            (
                str(r["id"]),
                str(r.get("name") or "")[:32],
                str(r.get("status")),
                str(r.get("source") or "server"),
                _model_of(r)[:20],
                str(r.get("dataset") or "-"),
                _progress_text(r.get("progress") or {}),
                _age(r.get("created_at")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def run_lines(run: dict[str, Any]) -> list[str]:
    """The human summary ``netlapse runs show`` prints."""
    p = run.get("progress") or {}
    s = run.get("summary") or {}
    lines = [
        f"run       {run['id']}  {run.get('name', '')}",
        f"status    {run.get('status')}" + (f"  ({run['error']})" if run.get("error") else ""),
        f"source    {run.get('source') or 'server'}",
        f"model     {_model_of(run)}",
        f"dataset   {run.get('dataset') or '-'}",
        f"progress  step {_progress_text(p)}"
        + (f", epoch {p['epoch']}/{p['epochs']}" if p.get("epochs") else "")
        + (f", loss {p['loss']:.4g}" if isinstance(p.get("loss"), int | float) else ""),
        f"created   {run.get('created_at')} ({_age(run.get('created_at'))})",
    ]
    if run.get("finished_at"):
        lines.append(f"finished  {run['finished_at']}")
    facts = [
        f"{k} {s[k]:.4g}" if isinstance(s.get(k), float) else f"{k} {s[k]}"
        for k in ("final_loss", "val_accuracy", "train_seconds", "capture_wait_seconds", "stored_bytes")
        if s.get(k) is not None
    ]
    if facts:
        lines.append("summary   " + ", ".join(facts))
    return lines


# --- following a run ------------------------------------------------------------------------------------------------


class ProgressBar:
    """A one-line bar (steps, loss, ETA) redrawn in place on a terminal, or a line every few seconds elsewhere."""

    def __init__(self, out: TextIO, width: int = 30, every_s: float = 2.0) -> None:
        self.out, self.width, self.every_s = out, width, every_s
        self.tty = out.isatty()
        self._last = 0.0
        self._started = time.monotonic()
        self._first_step: int | None = None
        self.step, self.total, self.status = 0, 0, "queued"
        self.loss: float | None = None
        self.eta: float | None = None

    def update(self, data: dict[str, Any]) -> None:
        if "step" in data and data["step"] is not None:
            self.step = int(data["step"])
            if self._first_step is None:
                self._first_step, self._started = self.step, time.monotonic()
        if data.get("total_steps"):
            self.total = int(data["total_steps"])
        if isinstance(data.get("loss"), int | float):
            self.loss = float(data["loss"])
        self.eta = data.get("eta_seconds") if data.get("eta_seconds") is not None else self._estimate()

    def _estimate(self) -> float | None:
        if not self.total or self._first_step is None or self.step <= self._first_step:
            return None
        rate = (self.step - self._first_step) / max(time.monotonic() - self._started, 1e-9)
        return (self.total - self.step) / rate

    def line(self) -> str:
        if self.total:
            frac = min(1.0, self.step / self.total)
            filled = int(round(frac * self.width))
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.step}/{self.total} steps {frac:4.0%}"
        else:
            bar = f"step {self.step}"
        loss = f"  loss {self.loss:.4f}" if self.loss is not None else ""
        eta = f"  ETA {_duration(self.eta)}" if self.status == "running" and self.total else ""
        return f"{bar}{loss}{eta}  {self.status}"

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self.tty and now - self._last < self.every_s:
            return
        self._last = now
        if self.tty:
            self.out.write("\r\x1b[K" + self.line())
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()

    def close(self) -> None:
        self.draw(force=True)
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def ws_events(client: Client, run_id: str, since: str | None = None) -> Iterator[dict[str, Any]]:
    """The run's events over the WebSocket (replayed from ``since``, then live) until the server closes it.

    Reconnects after a dropped connection, continuing after the last event seen."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    retries = 0
    while True:
        try:
            # a fresh single-use ticket for every connection when the server requires tokens
            with connect(client.events_url(run_id, since), open_timeout=30) as ws:
                retries = 0
                for raw in ws:
                    ev = json.loads(raw)
                    if ev.get("type") == "error":
                        raise CliError(str((ev.get("data") or {}).get("detail", ev)))
                    if ev.get("id"):
                        since = ev["id"]
                    yield ev
                return  # the server closed the stream after the run's final status
        except (ConnectionClosed, OSError, TimeoutError, InvalidStatus) as exc:
            retries += 1
            if retries > 5:
                raise CliError(f"lost the event stream of run {run_id}: {exc}") from None
            time.sleep(min(2.0 * retries, 10.0))


def poll_events(client: Client, run_id: str, every_s: float = 1.0) -> Iterator[dict[str, Any]]:
    """Status and progress from polling the run record (when the ``websockets`` package is not installed)."""
    while True:
        run = client.run(run_id)
        yield {"type": "progress", "data": run.get("progress") or {}}
        yield {"type": "status", "data": {"status": run["status"], "error": run.get("error")}}
        if run["status"] in TERMINAL:
            return
        time.sleep(every_s)


def _default_events() -> Callable[[Client, str], Iterator[dict[str, Any]]]:
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        return poll_events
    return ws_events


def follow(
    client: Client,
    run_id: str,
    out: TextIO,
    events: Callable[[Client, str], Iterator[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Draw the run's progress from its events until it ends; return the final run record."""
    bar = ProgressBar(out)
    run = client.run(run_id)
    bar.status = run["status"]
    bar.update(run.get("progress") or {})
    bar.draw(force=True)
    if run["status"] not in TERMINAL:
        source = events or _default_events()
        for ev in source(client, run_id):
            data = ev.get("data") or {}
            if ev["type"] == "status":
                bar.status = data.get("status", bar.status)
            elif ev["type"] in ("progress", "metrics"):
                bar.update(data)
            elif ev["type"] == "snapshot" and data.get("step") is not None:
                bar.update({"step": max(bar.step, int(data["step"]))})
            bar.draw()
            if bar.status in TERMINAL:
                break
    final = client.wait(run_id, timeout=120)  # the record is the truth once the stream ended
    bar.status = final["status"]
    bar.update(final.get("progress") or {})
    if bar.loss is None:  # e.g. an SDK run that had ended before we attached: its last logged loss
        rows = [r for r in client.metrics(run_id).get("steps", []) if isinstance(r.get("loss"), int | float)]
        if rows:
            bar.update({"loss": rows[-1]["loss"]})
    bar.close()
    return final


# --- export ------------------------------------------------------------------------------------------------


def parse_steps(spec: str | None, captured: list[int]) -> list[int]:
    """Captured steps within ``A:B`` (both ends included, either may be omitted); all without a spec."""
    if not spec:
        return captured
    lo_s, sep, hi_s = spec.partition(":")
    try:
        lo = int(lo_s) if lo_s.strip() else None
        hi = int(hi_s) if sep and hi_s.strip() else (lo if not sep else None)
    except ValueError:
        raise CliError(f"--steps {spec!r}: expected A:B, A:, :B or A with integers") from None
    chosen = [s for s in captured if (lo is None or s >= lo) and (hi is None or s <= hi)]
    if not chosen:
        shown = f"{captured[0]}..{captured[-1]}" if captured else "none"
        raise CliError(f"--steps {spec}: no captured step in that range (captured: {shown})")
    return chosen


def export_tensor(
    client: Client, run_id: str, name: str, steps: list[int], out: Path, log: TextIO
) -> tuple[int, tuple[int, ...]]:
    """Write ``steps`` [S], ``values`` [S, *shape] (bit-exact) and ``name`` to an ``.npz``, atomically.

    The values are streamed into the archive step by step, so memory holds one tensor, not the whole export."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    shape: tuple[int, ...] = ()
    t0 = time.monotonic()
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr("steps.npy", _npy_bytes(np.asarray(steps, dtype=np.int64)))
            zf.writestr("name.npy", _npy_bytes(np.asarray(name)))
            with zf.open("values.npy", "w", force_zip64=True) as f:
                for i, s in enumerate(steps):
                    a = np.ascontiguousarray(client.tensor(run_id, name, s))
                    if i == 0:
                        shape, dtype = a.shape, a.dtype
                        header = {"descr": npformat.dtype_to_descr(dtype), "fortran_order": False}
                        npformat.write_array_header_1_0(f, {**header, "shape": (len(steps), *shape)})
                    elif a.shape != shape or a.dtype != dtype:
                        raise CliError(
                            f"{name} changed from {dtype}{list(shape)} to {a.dtype}{list(a.shape)}"
                        )
                    f.write(a.tobytes())
                    if log.isatty() or i + 1 == len(steps) or time.monotonic() - t0 > 2:
                        end = "\n" if i + 1 == len(steps) else ""
                        log.write(f"\r{name}: {i + 1}/{len(steps)} steps{end}")
                        log.flush()
                        t0 = time.monotonic()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(steps), shape


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


# --- commands ------------------------------------------------------------------------------------------------


def _server(args: argparse.Namespace) -> str:
    from netlapse.cli.main import local_server

    return server_url(args.server, default=local_server())


def _client(args: argparse.Namespace) -> Client:
    return Client(_server(args), token=args.token)


def cmd_list(c: Client, args: argparse.Namespace) -> int:
    runs = c.runs()
    if args.json:
        print(json.dumps(runs, indent=2))
        return EXIT_OK
    if not runs:
        print("no runs yet; `netlapse runs create SPEC.json` starts one", file=sys.stderr)
        return EXIT_OK
    for line in runs_table(runs):
        print(line)
    return EXIT_OK


def cmd_show(c: Client, args: argparse.Namespace) -> int:
    run = c.run(args.run_id)
    if args.json:
        print(json.dumps(run, indent=2))
    else:
        for line in run_lines(run):
            print(line)
    return EXIT_OK


def _read_spec(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise CliError(f"{path} must hold a JSON object (the body of POST /api/runs)")
    return spec


def cmd_create(c: Client, args: argparse.Namespace) -> int:
    spec = _read_spec(args.spec)
    if args.name:
        spec["name"] = args.name
    run = c.create_run(spec)
    print(run["id"])
    print(f"created run {run['id']} ({run.get('name')}), {run['status']}", file=sys.stderr)
    if args.follow:
        final = follow(c, run["id"], sys.stderr)
        return _final(final)
    return EXIT_OK


def _final(run: dict[str, Any]) -> int:
    status = run["status"]
    msg = f"run {run['id']} {status}" + (f": {run['error']}" if run.get("error") else "")
    print(msg, file=sys.stderr)
    return STATUS_EXIT.get(status, EXIT_ERROR)


def cmd_follow(c: Client, args: argparse.Namespace) -> int:
    return _final(follow(c, args.run_id, sys.stderr))


def cmd_cancel(c: Client, args: argparse.Namespace) -> int:
    run = c.cancel(args.run_id)
    print(
        f"run {run['id']}: {run['status']}" + (" (cancel requested)" if run["status"] != "cancelled" else "")
    )
    return EXIT_OK


def cmd_delete(c: Client, args: argparse.Namespace) -> int:
    c.delete(args.run_id)
    print(f"deleted run {args.run_id} with its snapshots, metrics and analyses")
    return EXIT_OK


def cmd_export(c: Client, args: argparse.Namespace) -> int:
    names = [t["name"] for t in c.tensors(args.run_id)]
    if args.tensor not in names:
        raise CliError(f"run {args.run_id} has no tensor {args.tensor!r}; its tensors: {', '.join(names)}")
    steps = parse_steps(args.steps, c.steps(args.run_id))
    out = Path(args.out)
    n, shape = export_tensor(c, args.run_id, args.tensor, steps, out, sys.stderr)
    print(
        f"wrote {out} : {args.tensor} {list(shape)} at {n} step(s) {steps[0]}..{steps[-1]} "
        "(arrays steps, values, name)"
    )
    return EXIT_OK


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "create": cmd_create,
    "follow": cmd_follow,
    "cancel": cmd_cancel,
    "delete": cmd_delete,
    "export": cmd_export,
}


def cmd_runs(args: argparse.Namespace) -> int:
    """Run one ``netlapse runs`` command; errors become a one-line message and exit status 2."""
    server = _server(args)
    try:
        with _client(args) as c:
            return COMMANDS[args.runs_cmd](c, args)
    except CliError as exc:
        print(f"netlapse runs {args.runs_cmd}: {exc}", file=sys.stderr)
    except ApiError as exc:
        print(f"netlapse runs {args.runs_cmd}: {exc}", file=sys.stderr)
    except (httpx.TransportError, OSError) as exc:
        print(f"netlapse runs {args.runs_cmd}: cannot reach {server}: {exc}", file=sys.stderr)
    return EXIT_ERROR


def add_parser(sub: Any) -> None:
    """Register ``netlapse runs …`` on the main parser's subcommands."""
    runs = sub.add_parser(
        "runs",
        help="list, show, create, follow, cancel, delete and export runs on a server",
        description="Runs on a netlapse server ($NETLAPSE_URL, default http://127.0.0.1:8000).",
    )
    runs.add_argument(
        "--server", default=None, help="server URL (default $NETLAPSE_URL, alias $NETLAPSE_SERVER)"
    )
    runs.add_argument("--token", default=None, help="API token (default $NETLAPSE_TOKEN)")
    rs = runs.add_subparsers(dest="runs_cmd", required=True)
    p = rs.add_parser("list", help="your runs, newest first")
    p.add_argument("--json", action="store_true", help="the runs as JSON")
    p = rs.add_parser("show", help="one run: status, progress, summary")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true", help="the whole run record as JSON")
    p = rs.add_parser(
        "create", help="create a run from a JSON spec (the body of POST /api/runs); prints its id"
    )
    p.add_argument("spec", help="SPEC.json, or - for stdin")
    p.add_argument("--name", default=None, help="override the spec's name")
    p.add_argument("--follow", action="store_true", help="then follow it (exit status as for follow)")
    p = rs.add_parser(
        "follow",
        help="progress bar (steps, loss, ETA) until the run ends; exit 0 succeeded, 1 failed, 3 cancelled",
    )
    p.add_argument("run_id")
    p = rs.add_parser("cancel", help="ask a queued or running run to stop")
    p.add_argument("run_id")
    p = rs.add_parser("delete", help="delete a finished run with its data")
    p.add_argument("run_id")
    p = rs.add_parser("export", help="one tensor at captured steps into an .npz (steps, values, name)")
    p.add_argument("run_id")
    p.add_argument("--tensor", required=True, help="tensor name, e.g. conv1.weight")
    p.add_argument(
        "--steps", default=None, help="A:B, both ends included (A: or :B open); default every step"
    )
    p.add_argument("--out", required=True, help="FILE.npz")
    runs.set_defaults(func=cmd_runs)
