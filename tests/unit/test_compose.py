"""docker-compose.yml and deploy/: every setting named exists, the dependency graph is sound, the
frontend's nginx proxies /api with WebSocket upgrades, and .env.example matches Settings exactly."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from netlapse.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MAIN_COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_FILES = [MAIN_COMPOSE, *sorted((ROOT / "deploy").glob("compose*.yml"))]
ENV_EXAMPLE = ROOT / ".env.example"


def _setting_env_names() -> set[str]:
    """The environment names Settings reads: the alias if a field has one, else prefix + field name."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        names.add((alias or prefix + field).upper())
    return names


SETTINGS_ENV = _setting_env_names()


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), f"{path} has no services"
    return data


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _module_file(module: str) -> Path:
    """``netlapse.trainer.worker`` → services/trainer/worker.py (the package maps onto services/)."""
    parts = module.split(".")
    assert parts[0] == "netlapse", module
    return ROOT / "services" / Path(*parts[1:]).with_suffix(".py")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(MAIN_COMPOSE)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_netlapse_variable_is_a_real_setting(path: Path) -> None:
    for name, service in _load(path)["services"].items():
        for var in _environment(service):
            if var.startswith("NETLAPSE_"):
                assert var in SETTINGS_ENV, (
                    f"{path.name}: service {name} sets {var}, which Settings does not read"
                )
    for var in re.findall(r"\$\{(NETLAPSE_[A-Z0-9_]+)", path.read_text()):
        assert var in SETTINGS_ENV, f"{path.name} interpolates {var}, which is not a setting"


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "minio", "minio-init", "api", "trainer", "analyzer", "frontend"} <= set(services)
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target} to be healthy; it has no healthcheck"
                )
    for name in ("api", "trainer", "analyzer"):
        assert _depends_on(services[name]) == {
            "redis": "service_healthy",
            "minio-init": "service_completed_successfully",
        }
    assert _depends_on(services["minio-init"]) == {"minio": "service_healthy"}
    assert _depends_on(services["frontend"]) == {"api": "service_healthy"}
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert "/api/health" in " ".join(services["api"]["healthcheck"]["test"])


def test_python_services_point_at_redis_minio_and_real_modules(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "trainer", "analyzer"):
        env = _environment(services[name])
        assert env["NETLAPSE_REDIS_URL"].startswith("redis://redis:6379")
        assert env["NETLAPSE_S3_ENDPOINT"] == "minio:9000"
        assert {"NETLAPSE_S3_ACCESS_KEY", "NETLAPSE_S3_SECRET_KEY", "NETLAPSE_S3_BUCKET"} <= set(env)
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile.api"
    api = _command(services["api"])
    assert api[:2] == ["uvicorn", "netlapse.api.main:app"] and "8000" in api
    assert _module_file("netlapse.api.main").is_file()
    for name, queue in (("trainer", "train"), ("analyzer", "analyze")):
        cmd = _command(services[name])
        assert cmd[:2] == ["celery", "-A"] and cmd[cmd.index("-Q") + 1] == queue
        assert _module_file(cmd[2]).is_file(), f"{name} runs {cmd[2]}, which does not exist"
    trainer = _command(services["trainer"])
    assert trainer[trainer.index("--concurrency") + 1] == "1"
    assert trainer[trainer.index("--prefetch-multiplier") + 1] == "1"


def test_images_build_from_existing_files(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (ROOT / build.get("context", ".") / build["dockerfile"]).is_file(), name
    dockerfile = (ROOT / "deploy" / "Dockerfile.api").read_text()
    assert "FROM python:3.11.7-slim-bookworm" in dockerfile
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "netlapse.core.datasets fetch" in dockerfile and "pip install --no-deps -e ." in dockerfile


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    conf_mount = next(v for v in redis["volumes"] if v.startswith("./deploy/redis.conf:"))
    conf_path = conf_mount.split(":")[1]
    assert conf_path in _command(redis)
    conf = (ROOT / "deploy" / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.M)


def test_frontend_nginx_proxies_api_with_websocket_upgrade(compose: dict[str, Any]) -> None:
    frontend = compose["services"]["frontend"]
    assert "8080:80" in [str(p) for p in frontend["ports"]]
    dockerfile = (ROOT / frontend["build"]["dockerfile"]).read_text()
    assert re.search(r"npm ci", dockerfile) and re.search(r"npm run build", dockerfile)
    copy = re.search(r"^COPY\s+(\S+\.conf)\s+/etc/nginx/conf\.d/\S+$", dockerfile, re.M)
    assert copy, "Dockerfile.frontend must install an nginx config"
    conf = (ROOT / copy.group(1)).read_text()
    block = re.search(r"location\s+/api/?\s*\{(.*?)\}", conf, re.S)
    assert block, "nginx.conf has no location /api"
    body = block.group(1)
    assert re.search(r"proxy_pass\s+http://api:8000\s*;", body)
    assert re.search(r"proxy_http_version\s+1\.1\s*;", body)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", body)
    assert re.search(r"proxy_set_header\s+Connection\s+\S+\s*;", body)


def _env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key not in out, f".env.example sets {key} twice"
            out[key] = value
    return out


def test_env_example_lists_exactly_the_settings() -> None:
    listed = set(_env_example())
    assert not listed - SETTINGS_ENV, (
        f".env.example has names Settings does not read: {sorted(listed - SETTINGS_ENV)}"
    )
    assert not SETTINGS_ENV - listed, f"settings missing from .env.example: {sorted(SETTINGS_ENV - listed)}"


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.upper().startswith("NETLAPSE_"):
            monkeypatch.delenv(var)
    from_file = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    assert from_file == Settings()


def test_env_example_comments_every_setting() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("NETLAPSE_"):
            assert i > 0 and lines[i - 1].startswith("# "), (
                f"{line.split('=')[0]} has no comment line above it"
            )
