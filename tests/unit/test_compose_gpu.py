"""The compose file as Debian's ``docker-compose`` parses it (no engine needed): the GPU trainer profile with
its NVIDIA device reservation and the compactor worker on its own queue."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SECRETS = {  # the compose file refuses to start without them (tests/unit/test_compose.py)
    "MINIO_ROOT_USER": "root-admin",
    "MINIO_ROOT_PASSWORD": "root-password",
    "NETLAPSE_S3_ACCESS_KEY": "netlapse-svc",
    "NETLAPSE_S3_SECRET_KEY": "svc-password",
}


def compose_config(*args: str) -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed: apt-get install docker-compose (.ci/run does)"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "NETLAPSE_CUDA_TRAINERS": "true", **COMPOSE_SECRETS}
    res = subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), *args, "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def test_gpu_profile_reserves_nvidia_devices_and_consumes_train_gpu() -> None:
    cfg = compose_config("--profile", "gpu")
    gpu = cfg["services"]["trainer-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}] or devices == [
        {"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}
    ]
    cmd = command(gpu)
    assert cmd[cmd.index("-Q") + 1].split(",") == ["train-gpu", "train"]
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    assert (ROOT / "deploy" / "Dockerfile.gpu").is_file()
    assert gpu["environment"]["NETLAPSE_CUDA_TRAINERS"] == "true"
    # CPU trainers never consume train-gpu, so a CUDA run cannot land on a CPU-only worker.
    cpu = command(cfg["services"]["trainer"])
    assert "train-gpu" not in cpu[cpu.index("-Q") + 1].split(",")


def test_gpu_worker_only_with_its_profile_and_a_compactor_by_default() -> None:
    cfg = compose_config()
    assert cfg["services"]["trainer-gpu"]["profiles"] == ["gpu"]  # `up` starts it only with --profile gpu
    assert all("profiles" not in s for n, s in cfg["services"].items() if n != "trainer-gpu")
    comp = command(cfg["services"]["compactor"])
    assert comp[comp.index("-Q") + 1] == "compact"
    analyzer = command(cfg["services"]["analyzer"])
    assert "compact" not in analyzer[analyzer.index("-Q") + 1].split(",")
