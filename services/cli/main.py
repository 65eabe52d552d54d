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


def cmd_report(args: argparse.Namespace) -> int:
    """Draw the method's figures of one run (PNG + SVG + report.json) from a running server."""
    import httpx

    from netlapse.cli.report import make_report, summary_lines
    from netlapse.client import ApiError, Client

    settings = get_settings()
    server = (
        args.server or os.environ.get("NETLAPSE_SERVER") or f"http://{settings.api_host}:{settings.api_port}"
    )
    layers = [s for s in args.layers.split(",") if s] if args.layers else None
    try:
        with Client(server) as client:
            report = make_report(
                client,
                args.run_id,
                Path(args.out),
                from_step=args.from_step,
                to_step=args.to_step,
                per_label=args.per_label,
                split=args.split,
                layers=layers,
            )
    except (ApiError, ValueError) as exc:
        print(f"netlapse report: {exc}", file=sys.stderr)
        return 2
    except (httpx.TransportError, OSError) as exc:
        print(f"netlapse report: cannot reach {server}: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(report):
        print(line)
    print(f"wrote {', '.join(report['files'])} to {Path(args.out).resolve()}")
    return 0


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
    rep = sub.add_parser(
        "report", help="draw a run's figures (filters, initial vs change, per-label activations)"
    )
    rep.add_argument("run_id")
    rep.add_argument("--out", required=True, help="directory for the PNG/SVG figures and report.json")
    rep.add_argument(
        "--server", default=None, help="netlapse server URL (default $NETLAPSE_SERVER or the api settings)"
    )
    rep.add_argument(
        "--from", dest="from_step", type=int, default=None, help="first step (default: the first captured)"
    )
    rep.add_argument(
        "--to", dest="to_step", type=int, default=None, help="second step (default: the last captured)"
    )
    rep.add_argument(
        "--per-label", type=int, default=100, help="correctly predicted inputs per label for Eq. 1"
    )
    rep.add_argument("--split", default="test", choices=["test", "train"])
    rep.add_argument("--layers", default=None, help="comma-separated conv layers (default: all)")
    rep.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
