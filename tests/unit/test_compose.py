"""docker-compose.yml and deploy/: every setting named exists, the dependency graph is sound, the
frontend's nginx proxies /api with WebSocket upgrades, and .env.example matches Settings exactly."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
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
    assert [str(p) for p in frontend["ports"]] == ["${UI_BIND_ADDRESS:-127.0.0.1}:8080:80"]
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
    # the browser's Host with its port: the api checks that a page's Origin is its own (Host) origin
    assert re.search(r"proxy_set_header\s+Host\s+\$http_host\s*;", body)


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


# --- safe by default (docs/security.md) -----------------------------------------------------------------------

SECRETS = {
    "MINIO_ROOT_USER": "root-admin",
    "MINIO_ROOT_PASSWORD": "root-password",
    "NETLAPSE_S3_ACCESS_KEY": "netlapse-svc",
    "NETLAPSE_S3_SECRET_KEY": "svc-password",
}


def _compose_config(files: list[Path], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed: apt-get install docker-compose (.ci/run does)"
    args = [a for f in files for a in ("-f", str(f))]
    return subprocess.run(
        [exe, *args, "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **env},
        timeout=120,
    )


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_no_secret_has_a_default_and_every_image_is_pinned(path: Path) -> None:
    text = path.read_text()
    for var in (
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        "NETLAPSE_S3_ACCESS_KEY",
        "NETLAPSE_S3_SECRET_KEY",
        "REDIS_PASSWORD",
    ):
        assert not re.search(rf"\$\{{{var}:?-", text), f"{path.name} gives {var} a default"
        for m in re.finditer(rf"\$\{{{var}([^}}]*)\}}", text):
            assert m.group(1).startswith(":?"), f"{path.name}: ${{{var}{m.group(1)}}} must be required (:?)"
    for name, service in _load(path)["services"].items():
        image = service.get("image")
        if image and "build" not in service:
            repo, _, tag = image.rpartition(":")
            assert repo and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image} is not pinned"
    for dockerfile in (ROOT / "deploy").glob("Dockerfile.*"):
        if dockerfile.suffix == ".dockerignore":
            continue
        for base in re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M):
            assert re.search(r":\S*\d", base) and not base.endswith(":latest"), (
                f"{dockerfile.name}: FROM {base}"
            )


def test_the_ui_is_published_on_loopback_only_and_the_api_nowhere(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert name == "frontend", f"{name} publishes {port}"
            assert str(port).startswith("${UI_BIND_ADDRESS:-127.0.0.1}:"), port
    assert "NETLAPSE_ALLOWED_HOSTS" in _environment(compose["services"]["api"])


def test_services_use_a_bucket_scoped_minio_user_never_the_root_one(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "trainer", "analyzer", "compactor"):
        env = _environment(services[name])
        assert not any("MINIO_ROOT" in v for v in env.values()), name
        assert env["NETLAPSE_S3_ACCESS_KEY"].startswith("${NETLAPSE_S3_ACCESS_KEY:?")
    assert _environment(services["minio"])["MINIO_ROOT_USER"].startswith("${MINIO_ROOT_USER:?")
    init = " ".join(_command(services["minio-init"]))
    assert 'mc admin user add local "$$SERVICE_USER"' in init
    assert "mc admin policy attach local netlapse-bucket --user" in init
    assert "arn:aws:s3:::%s/*" in init and "arn:aws:s3:::*" not in init  # this bucket only
    for action in ("s3:CreateBucket", "admin:", "s3:*", "s3:DeleteBucket", "s3:PutBucketPolicy"):
        assert action not in init, action
    assert "must not be MinIO's root user" in init


def test_compose_refuses_to_start_without_the_secrets() -> None:
    missing = _compose_config([MAIN_COMPOSE], {})
    assert missing.returncode != 0
    assert "MINIO_ROOT_USER" in missing.stderr or "NETLAPSE_S3_ACCESS_KEY" in missing.stderr
    for var in SECRETS:  # each one alone is enough to refuse
        res = _compose_config([MAIN_COMPOSE], {k: v for k, v in SECRETS.items() if k != var})
        assert res.returncode != 0 and var in res.stderr, var
    ok = _compose_config([MAIN_COMPOSE], SECRETS)
    assert ok.returncode == 0, ok.stderr
    cfg = yaml.safe_load(ok.stdout)
    assert cfg["services"]["minio-init"]["environment"]["SERVICE_USER"] == "netlapse-svc"
    published = [p for s in cfg["services"].values() for p in s.get("ports") or []]
    assert all(
        str(p.get("host_ip", "") if isinstance(p, dict) else p).startswith("127.0.0.1") for p in published
    )


def test_the_multinode_overlay_publishes_nothing_without_credentials() -> None:
    overlay = ROOT / "deploy" / "compose.multinode.yml"
    res = _compose_config([MAIN_COMPOSE, overlay], SECRETS)  # no REDIS_PASSWORD
    assert res.returncode != 0 and "REDIS_PASSWORD" in res.stderr
    res = _compose_config([MAIN_COMPOSE, overlay], {**SECRETS, "REDIS_PASSWORD": "pw-123456"})
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    redis_cmd = " ".join(str(c) for c in cfg["services"]["redis"]["command"])
    assert "--requirepass pw-123456" in redis_cmd
    for name in ("api", "trainer", "analyzer", "compactor"):
        assert cfg["services"][name]["environment"]["NETLAPSE_REDIS_URL"].startswith("redis://:pw-123456@")
    # what it publishes: Redis (password) and MinIO's S3 API (signed requests with the bucket-scoped user)
    published = {n for n, s in cfg["services"].items() if s.get("ports")}
    assert published <= {"redis", "minio", "frontend"}
