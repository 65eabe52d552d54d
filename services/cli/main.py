"""``netlapse`` entry point."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from netlapse.cli.offline import add_commands as add_offline_commands
from netlapse.core.settings import get_settings


def local_server() -> str:
    """Where ``netlapse up`` with these settings serves: the CLI's server when $NETLAPSE_URL is not set."""
    settings = get_settings()
    return f"http://{settings.api_host}:{settings.api_port}"


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
    if settings.auth_required:
        print("netlapse: API tokens required (NETLAPSE_AUTH_REQUIRED); `netlapse user add NAME` prints one")
    return run_forever(stack)


def cmd_user(args: argparse.Namespace) -> int:
    """``netlapse user add|token|list|revoke``: users and tokens, straight in the store the settings name."""
    from netlapse.core.auth import Accounts, UnknownUser, UserExists
    from netlapse.core.store import store_from_settings

    settings = get_settings()
    accounts = Accounts(store_from_settings(settings))
    try:
        if args.user_cmd == "list":
            users = accounts.list_users()
            if not users:
                print("no users yet; `netlapse user add NAME` creates one", file=sys.stderr)
                return 0
            print(f"{'NAME':<32} {'TOKENS':>6}  CREATED")
            for u in users:
                print(f"{u.name:<32} {u.tokens:>6}  {u.created_at.isoformat(timespec='seconds')}")
            return 0
        if args.user_cmd == "revoke":
            n = accounts.revoke(args.name)
            print(f"revoked {n} token(s) of {args.name}; the api stops accepting them within a few seconds")
            return 0
        if args.user_cmd == "add":
            token = accounts.add_user(args.name, args.label)
            what = f"created user {args.name}"
        else:
            token = accounts.issue_token(args.name, args.label)
            what = f"new token for {args.name}"
    except (UserExists, UnknownUser, ValueError) as exc:
        print(f"netlapse user: {exc}", file=sys.stderr)
        return 2
    # The token alone on stdout (scripts capture it); the explanation on stderr.
    print(f"{what}; its token, shown only this once (the server keeps just its hash):", file=sys.stderr)
    print(token)
    print(
        "use it as `Authorization: Bearer <token>`, as NETLAPSE_TOKEN for the CLI and Python client, "
        "or paste it into the web UI",
        file=sys.stderr,
    )
    if not settings.auth_required:
        print(
            "note: NETLAPSE_AUTH_REQUIRED is off in these settings; a server started with them ignores tokens",
            file=sys.stderr,
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Draw the method's figures of one run (PNG + SVG + report.json) from a running server."""
    import httpx

    from netlapse.cli.report import make_report, summary_lines
    from netlapse.client import ApiError, Client, server_url

    server = server_url(args.server, default=local_server())
    layers = [s for s in args.layers.split(",") if s] if args.layers else None
    try:
        with Client(server, token=args.token) as client:
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
        "--server", default=None, help="netlapse server URL (default $NETLAPSE_URL, alias $NETLAPSE_SERVER)"
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
    rep.add_argument(
        "--token", default=None, help="API token for a server that requires one (default $NETLAPSE_TOKEN)"
    )
    rep.set_defaults(func=cmd_report)
    usr = sub.add_parser(
        "user",
        help="users and API tokens (for NETLAPSE_AUTH_REQUIRED); works on the store of these settings",
    )
    usr_sub = usr.add_subparsers(dest="user_cmd", required=True)
    for cmd, text in (("add", "create a user and print its first token"), ("token", "print a new token")):
        p = usr_sub.add_parser(cmd, help=f"{text} (shown once; only its hash is stored)")
        p.add_argument("name", help="user name: lowercase letters, digits, '.', '_', '-'")
        p.add_argument("--label", default="", help="a note kept with the token, e.g. 'laptop'")
    usr_sub.add_parser("list", help="users and how many tokens each has")
    rev = usr_sub.add_parser("revoke", help="delete every token of a user (the user and its runs stay)")
    rev.add_argument("name")
    usr.set_defaults(func=cmd_user)
    add_offline_commands(sub)  # push, serve
    from netlapse.cli.runs import add_parser as add_runs_parser

    add_runs_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
