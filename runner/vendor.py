"""Vendor the Worker's Python packages into python_modules/, as `pywrangler sync` does.

wrangler bundles python_modules/ (beside wrangler.toml) with a Python Worker. pywrangler puts
there the project's dependencies ([project.dependencies]: PyJWT) plus the Workers SDK
(`workers-runtime-sdk`), without which a Worker on a current compatibility date cannot import
`workers` at all. This does the same offline, at the versions uv.lock pins, for `make dev`
(offline), `make check` and the runtime tests. Pure-Python wheels only, so the files are the
ones Pyodide would install. Skipped when python_modules/ already holds exactly these versions.

    python runner/vendor.py      # prints the vendored requirements
"""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
TARGET = PROJECT / "python_modules"
STAMP = PROJECT / "build" / "python_modules.stamp"  # outside: wrangler would bundle it
SDK = "workers-runtime-sdk"
# `uv run` tells its children where uv is; the Makefile runs these scripts through it.
UV = os.environ.get("UV", "uv")


def requirements() -> str:
    """`name==version` lines: the locked edge dependencies and the locked SDK."""
    exported = subprocess.run(
        [UV, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--no-header", "--quiet"],
        cwd=PROJECT, check=True, capture_output=True, text=True,
    ).stdout
    lines = [line.strip() for line in exported.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    locked = tomllib.loads((PROJECT / "uv.lock").read_text())["package"]
    sdk = [f"{package['name']}=={package['version']}" for package in locked if package["name"] == SDK]
    if not sdk:
        raise SystemExit(f"vendor: {SDK} is not in uv.lock (it is a dev dependency in pyproject.toml)")
    return "\n".join(sorted(lines + sdk)) + "\n"


def vendor() -> str:
    wanted = requirements()
    if STAMP.is_file() and STAMP.read_text() == wanted:
        return wanted
    shutil.rmtree(TARGET, ignore_errors=True)
    subprocess.run([UV, "pip", "install", "--quiet", "--no-deps", "--target", str(TARGET), "-r", "/dev/stdin"],
                   cwd=PROJECT, input=wanted, text=True, check=True)
    STAMP.parent.mkdir(exist_ok=True)
    STAMP.write_text(wanted)
    return wanted


if __name__ == "__main__":
    sys.stdout.write(vendor())
