"""Audit the locked dependencies for known vulnerabilities: ``python deploy/audit.py requirements-dev.lock``.

Runs pip-audit on the lock file (hashes required, nothing installed). pip-audit needs an advisory service:
PyPI's per-release JSON (``/pypi/<name>/<version>/json``) or OSV (``api.osv.dev``). A known vulnerability
always fails. When *no* dependency could be audited because neither service answers (a network that only
mirrors PyPI's package files, as on the project's build machines), the audit says so loudly and exits 0,
unless ``NETLAPSE_AUDIT_REQUIRED=1`` (then 2). See docs/security.md, "Dependencies".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_pip_audit(lock: str, service: str) -> dict:
    """pip-audit's JSON report of ``lock`` against ``service`` (``{}`` when pip-audit itself failed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        cmd = [
            sys.executable,
            "-m",
            "pip_audit",
            "-r",
            lock,
            "--require-hashes",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "-s",
            service,
            "-f",
            "json",
            "-o",
            str(out),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if not out.exists():
            last = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            print(f"pip-audit -s {service}: {last[0][:300]}", file=sys.stderr)
            return {}
        report: dict = json.loads(out.read_text())
        report["returncode"] = proc.returncode
        return report


def main(argv: list[str]) -> int:
    lock = argv[1] if len(argv) > 1 else "requirements-dev.lock"
    for service in ("pypi", "osv"):
        report = run_pip_audit(lock, service)
        deps = report.get("dependencies", [])
        vulnerable = [d for d in deps if d.get("vulns")]
        skipped = [d for d in deps if d.get("skip_reason")]
        if vulnerable:
            for d in vulnerable:
                for v in d["vulns"]:
                    fixes = ", ".join(v.get("fix_versions") or []) or "no fixed release"
                    print(f"VULNERABLE {d['name']}=={d['version']}: {v['id']} (fixed in {fixes})")
            return 1
        if deps and len(skipped) < len(deps):
            print(
                f"pip-audit ({service}): {len(deps) - len(skipped)} locked packages, no known vulnerabilities"
            )
            for d in skipped:
                print(f"  not audited: {d['skip_reason']}")
            return 0
        print(f"pip-audit: the {service!r} advisory service is unreachable from here", file=sys.stderr)
    print(
        f"WARNING: no advisory service reachable; {lock} was NOT audited "
        "(run `make audit` where PyPI's JSON API or api.osv.dev answers; see docs/security.md)",
        file=sys.stderr,
    )
    return 2 if os.environ.get("NETLAPSE_AUDIT_REQUIRED") == "1" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
