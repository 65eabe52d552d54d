"""The lock files install exactly what requirements*.txt pin, every file hash-checked, with no known-bad web stack."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;\\]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            out[_norm(m.group(1))] = m.group(3)
    return out


def _top_level(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v)[:3])


def test_every_requirement_is_pinned_and_locked_at_that_version() -> None:
    runtime = _pins(ROOT / "requirements.lock")
    dev = _pins(ROOT / "requirements-dev.lock")
    for req_file, lock in (("requirements.txt", runtime), ("requirements-dev.txt", dev)):
        for line in _top_level(ROOT / req_file):
            m = PIN.match(line)
            assert m, f"{req_file}: {line!r} is not pinned with == (run `make lock` after pinning)"
            name, version = _norm(m.group(1)), m.group(3)
            assert lock.get(name) == version, (
                f"{req_file} pins {name}=={version} but the lock has {lock.get(name)}: run `make lock`"
            )
    for name, version in runtime.items():  # the dev lock never disagrees with what the images run
        assert dev.get(name) == version, (
            f"{name}: requirements.lock {version}, requirements-dev.lock {dev.get(name)}"
        )


def test_every_locked_package_carries_hashes() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        for block in blocks:
            if PIN.match(block):
                assert "--hash=sha256:" in block, f"{lock}: {block.splitlines()[0]} has no hash"


def test_web_stack_is_past_the_static_files_range_dos() -> None:
    # CVE-2025-62727: Starlette's StaticFiles (mounted at /) parsed Range headers in quadratic time; fixed in 0.49.1.
    import starlette

    locked = _pins(ROOT / "requirements.lock")["starlette"]
    assert _version(locked) >= (0, 49, 1)
    assert _version(starlette.__version__) >= (0, 49, 1)


def test_images_install_from_the_lock() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile.api").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "requirements.txt" not in dockerfile
