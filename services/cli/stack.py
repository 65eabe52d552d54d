"""The embedded stack of ``make run``: private Redis (AOF), trainer, analyzer and compactor workers, api.

``netlapse up`` supervises them the way compose's ``restart: unless-stopped`` does: a child that exits is
started again (Redis on the same port and data dir, so its AOF brings the queues back), with a growing delay
when it keeps dying, and each restart is logged. Ctrl-C (SIGINT) or SIGTERM stops them all, in order."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis


def redact_url(url: str) -> str:
    """``redis://:secret@host:port/0`` → ``redis://:***@host:port/0``: URLs printed or logged keep no password."""
    return re.sub(r"(//[^:/@]*:)[^@/]+@", r"\1***@", url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:  # type: ignore[no-untyped-def]
    """Poll ``check`` until it is true; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        try:
            if check():
                return
        except Exception:  # not up yet; the deadline below reports it
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


@dataclass
class Stack:
    """Processes of one local netlapse deployment sharing a data dir."""

    data_dir: Path
    api_port: int = 8000
    api_host: str = "127.0.0.1"
    redis_url: str | None = None
    log_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    analyzer_concurrency: int = 1
    redis_password: str | None = None
    api_log_level: str = "warning"  # "info": every request line (URL secrets masked: api/redact.py)
    trainers: int = 1
    analyzers: int = 1
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    redis_port: int | None = None
    _next_start: dict[str, float] = field(default_factory=dict)
    _recent: dict[str, list[float]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["NETLAPSE_DATA_DIR"] = str(self.data_dir.resolve())
        if self.redis_url:
            env["NETLAPSE_REDIS_URL"] = self.redis_url
        env["NETLAPSE_API_PORT"] = str(self.api_port)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child for its lifetime
        # Own process group: Ctrl-C reaches us once, and we stop children in order.
        p = subprocess.Popen(
            argv,
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        self.procs[name] = p
        self.argv[name] = argv
        return p

    def start_redis(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH; install it or set NETLAPSE_REDIS_URL")
        port = self.redis_port = self.redis_port or free_port()
        rdir = (self.data_dir / "redis").resolve()
        rdir.mkdir(parents=True, exist_ok=True)
        os.chmod(rdir, 0o700)
        # A random password, in a 0600 config file (not argv, which `ps` shows to every local user): another
        # account on this machine cannot reach the queues, the event streams or the WebSocket tickets.
        self.redis_password = self.redis_password or secrets.token_urlsafe(24)
        conf = rdir / "netlapse-redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self.redis_password}\n")
        p = self._spawn(
            "redis",
            [
                exe,
                str(conf),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(rdir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
        )
        self.redis_url = f"redis://:{self.redis_password}@127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.redis_url)
        wait_for(client.ping, 20, "redis-server", p)

    def start(self, with_api: bool = True) -> None:
        """Start everything; on any failure stop what was started and re-raise."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        try:
            if self.redis_url is None:
                self.start_redis()
            for i in range(self.trainers):
                name = "trainer" if i == 0 else f"trainer{i + 1}"
                self._spawn(name, self.worker_argv("netlapse.trainer.worker", "train", 1, name))
            for i in range(self.analyzers):
                name = "analyzer" if i == 0 else f"analyzer{i + 1}"
                app, conc = "netlapse.analyzer.worker", self.analyzer_concurrency
                self._spawn(name, self.worker_argv(app, "analyze", conc, name))
            # Compaction on its own queue and process, so diffs never wait behind it.
            self._spawn("compactor", self.worker_argv("netlapse.analyzer.worker", "compact", 1, "compactor"))
            if with_api:
                api = self._spawn(
                    "api",
                    [
                        py,
                        "-m",
                        "uvicorn",
                        "netlapse.api.main:app",
                        "--host",
                        self.api_host,
                        "--port",
                        str(self.api_port),
                        "--log-level",
                        self.api_log_level,
                    ],
                )
                import httpx

                url = f"http://{self.api_host}:{self.api_port}/api/health"
                wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, 60, "api", api)
        except BaseException:
            self.stop()
            raise

    def worker_argv(self, app: str, queue: str, concurrency: int, name: str) -> list[str]:
        """A Celery worker of ``app`` consuming ``queue``."""
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "-Q",
            queue,
            "-c",
            str(concurrency),
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def supervise(self, log: Any = None) -> list[str]:
        """Restart children that exited (compose's ``restart: unless-stopped``); returns the ones restarted.

        A child that died more than 3 times in a minute waits 1, 2, 4 … up to 30 s before its next start."""
        restarted = []
        now = time.monotonic()
        for name in self.dead():
            if now < self._next_start.get(name, 0.0):
                continue
            code = self.procs[name].returncode
            recent = [t for t in self._recent.get(name, []) if now - t < 60] + [now]
            self._recent[name] = recent
            if len(recent) > 3 and name not in self._next_start:
                delay = min(30.0, 2.0 ** (len(recent) - 4))
                self._next_start[name] = now + delay
                _say(log, f"netlapse: {name} keeps exiting (code {code}); next start in {delay:.0f} s")
                continue
            self._next_start.pop(name, None)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            _say(
                log,
                f"netlapse: {name} exited with code {code}; restarting it (restart #{self.restarts[name]})",
            )
            self._spawn(name, self.argv[name])
            restarted.append(name)
        return restarted

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the api and workers (warm shutdown), then Redis (flushes its AOF); SIGKILL stragglers."""
        services = [n for n in self.procs if n != "redis"]
        for group in (services, [n for n in ("redis",) if n in self.procs]):
            for n in group:
                p = self.procs[n]
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            for n in group:
                p = self.procs[n]
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        self.procs.clear()


def run_forever(stack: Stack) -> int:
    """``netlapse up``: start, print where things are, and stop everything on Ctrl-C / SIGTERM."""
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"netlapse: starting (data dir {stack.data_dir.resolve()}) …", flush=True)
    stack.start()
    print(
        f"netlapse: up — UI and API at http://{stack.api_host}:{stack.api_port}  (redis {redact_url(stack.redis_url or '')}); "
        "Ctrl-C stops everything",
        flush=True,
    )
    if stack.log_dir is not None:
        print(f"netlapse: service logs in {stack.log_dir.resolve()}/", flush=True)
    while not stopping:
        stack.supervise(sys.stderr)
        time.sleep(0.5)
    print("netlapse: stopping …", flush=True)
    stack.stop()
    print("netlapse: stopped", flush=True)
    return 0


def _say(stream: Any, msg: str) -> None:
    print(msg, file=stream or sys.stderr, flush=True)
