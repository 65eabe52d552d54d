"""``netlapse`` entry point."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from netlapse.core.settings import get_settings


def cmd_up(args: argparse.Namespace) -> int:
    from netlapse.cli.stack import Stack, run_forever

    settings = get_settings()
    redis_url = os.environ.get("NETLAPSE_REDIS_URL") or None  # set: use it; unset: a private redis-server
    stack = Stack(
        data_dir=Path(settings.data_dir),
        api_port=args.port or settings.api_port,
        api_host=args.host or settings.api_host,
        redis_url=redis_url,
        log_dir=Path(settings.data_dir) / "logs" if args.quiet else None,
    )
    return run_forever(stack)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netlapse", description="netlapse: every parameter after every batch"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start redis (private), trainer, analyzer and api on embedded defaults")
    up.add_argument("--host", default=None)
    up.add_argument("--port", type=int, default=None)
    up.add_argument(
        "--quiet", action="store_true", help="send service logs to <data_dir>/logs instead of the terminal"
    )
    up.set_defaults(func=cmd_up)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
