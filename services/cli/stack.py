"""The embedded stack of ``make run``: private Redis (AOF), trainer + analyzer workers, api — stopped together."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


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
    api_log_level: str = "warning"  # "info" logs every request line (secrets in URLs are masked: api/redact.py)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

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
        return p

    def start_redis(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH; install it or set NETLAPSE_REDIS_URL")
        port = free_port()
        rdir = (self.data_dir / "redis").resolve()
        rdir.mkdir(parents=True, exist_ok=True)
        p = self._spawn(
            "redis",
            [
                exe,
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
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.redis_url)
        wait_for(client.ping, 20, "redis-server", p)

    def start(self, with_api: bool = True) -> None:
        """Start everything; on any failure stop what was started and re-raise."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        try:
            if self.redis_url is None:
                self.start_redis()
            celery = [py, "-m", "celery"]
            self._spawn(
                "trainer",
                celery
                + [
                    "-A",
                    "netlapse.trainer.worker",
                    "worker",
                    "-Q",
                    "train",
                    "-c",
                    "1",
                    "-n",
                    f"trainer-{os.getpid()}@%h",
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                ],
            )
            self._spawn(
                "analyzer",
                celery
                + [
                    "-A",
                    "netlapse.analyzer.worker",
                    "worker",
                    "-Q",
                    "analyze",
                    "-c",
                    str(self.analyzer_concurrency),
                    "-n",
                    f"analyzer-{os.getpid()}@%h",
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                ],
            )
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

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the api and workers (warm shutdown), then Redis (flushes its AOF); SIGKILL stragglers."""
        services = [n for n in ("api", "trainer", "analyzer") if n in self.procs]
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
        f"netlapse: up — UI and API at http://{stack.api_host}:{stack.api_port}  (redis {stack.redis_url}); "
        "Ctrl-C stops everything",
        flush=True,
    )
    if stack.log_dir is not None:
        print(f"netlapse: service logs in {stack.log_dir.resolve()}/", flush=True)
    code = 0
    while not stopping:
        dead = stack.dead()
        if dead:
            print(
                f"netlapse: {', '.join(dead)} exited unexpectedly; stopping the rest",
                file=sys.stderr,
                flush=True,
            )
            code = 1
            break
        time.sleep(0.5)
    print("netlapse: stopping …", flush=True)
    stack.stop()
    print("netlapse: stopped", flush=True)
    return code
