"""``netlapse push`` and ``netlapse serve``: offline SDK runs (``netlapse.init(dir=DIR)``) to a server or the UI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def default_server() -> str:
    """``$NETLAPSE_URL``, else ``$NETLAPSE_SERVER`` (the older name), else the api settings' host and port."""
    from netlapse.core.settings import get_settings

    s = get_settings()
    return (
        os.environ.get("NETLAPSE_URL")
        or os.environ.get("NETLAPSE_SERVER")
        or f"http://{s.api_host}:{s.api_port}"
    )


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _progress(what: str, done: int, total: int) -> None:
    if what == "segments":
        line = f"netlapse push: tape {_size(done)} / {_size(total)}"
    elif what == "metrics":
        line = f"netlapse push: metrics {done}/{total} batches"
    else:
        line = f"netlapse push: {what}"
    end = "\r" if sys.stderr.isatty() and done < total else "\n"
    print(line.ljust(60), end=end, file=sys.stderr, flush=True)


def cmd_push(args: argparse.Namespace) -> int:
    """Upload an offline run; pushing it again creates no second run and resumes an interrupted push."""
    from netlapse.sdk.push import PushRefused, push_run
    from netlapse.sdk.transport import IngestRejected, ServerUnreachable

    server = args.server or default_server()
    try:
        run = push_run(args.run_dir, server, args.token, force=args.force, progress=_progress)
    except (FileNotFoundError, PushRefused, IngestRejected, ServerUnreachable, ValueError) as exc:
        print(f"netlapse push: {exc}", file=sys.stderr)
        return 2
    print(f"netlapse push: run {run['id']} is {run['status']} on {server.rstrip('/')}/#/runs/{run['id']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The whole stack (as ``netlapse up``) with its store on an offline runs directory: the UI shows its runs.

    Its own state (Redis, logs, analysis caches outside the runs) lives in ``DIR/.netlapse``; the store's
    ``runs/`` is a link to DIR itself, so every ``DIR/RUN_ID`` is a run of that server as it is."""
    from netlapse.cli.stack import Stack, run_forever
    from netlapse.core.settings import get_settings

    runs = Path(args.dir).expanduser().resolve()
    if not runs.is_dir():
        print(f"netlapse serve: {args.dir} is not a directory of offline runs", file=sys.stderr)
        return 2
    state = runs / ".netlapse"
    store = state / "store"
    store.mkdir(parents=True, exist_ok=True)
    link = store / "runs"
    if not link.is_symlink():
        link.symlink_to(runs, target_is_directory=True)
    settings = get_settings()
    stack = Stack(
        data_dir=state,
        api_port=args.port or settings.api_port,
        api_host=args.host or settings.api_host,
        log_dir=state / "logs",
        extra_env={"NETLAPSE_STORE_URL": store.as_uri(), "NETLAPSE_S3_ENDPOINT": ""},
    )
    n = sum(1 for p in runs.iterdir() if (p / "run.json").is_file())
    print(f"netlapse serve: {n} run(s) in {runs}", flush=True)
    return run_forever(stack)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``push`` and ``serve`` on the ``netlapse`` parser."""
    push = sub.add_parser("push", help="upload an offline SDK run (DIR/RUN_ID) to a server")
    push.add_argument("run_dir", help="the run's directory, DIR/RUN_ID, as netlapse.init(dir=DIR) printed it")
    push.add_argument(
        "--server", default=None, help="server URL (default $NETLAPSE_URL, then the api settings)"
    )
    push.add_argument("--token", default=None, help="API token (default $NETLAPSE_TOKEN)")
    push.add_argument("--force", action="store_true", help="push a run still marked running, as failed")
    push.set_defaults(func=cmd_push)
    serve = sub.add_parser("serve", help="open the UI on a directory of offline SDK runs")
    serve.add_argument("dir", help="the directory given to netlapse.init(dir=...)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)
