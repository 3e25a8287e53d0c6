"""Build the development Pyodide bundle that lets workerd run a Python Worker offline.

workerd loads the Python runtime (Pyodide's wasm, its JS glue and the standard library) as a
Cap'n Proto `Bundle` of modules (workerd's src/workerd/jsg/modules.capnp). Release bundles are
downloaded when a Worker starts and checked against a hash compiled into the binary, so a
self-built bundle cannot pose as one. The *development* bundle, `pyodide_dev.capnp.bin`, is
never downloaded and never hash-checked: workerd reads it from the directory given by
`serve --pyodide-bundle-disk-cache-dir` when the Worker has the compatibility flags
`python_workers` and `python_workers_development` (experimental). This script builds it from
npm's `pyodide` package, the way workerd's own build does (src/pyodide/helpers.bzl):

- the JS glue `pyodide.asm.mjs` is patched so that it calls workerd's wrappers (from
  `pyodide-internal:builtin_wrappers`) where it would compile wasm, read the clock, draw
  random numbers, `eval` or load dynamic libraries (PATCHES, each with its expected count);
- the three files become `type = internal` modules named `pyodideRuntime-internal:…`;
- the bundle is encoded as a Cap'n Proto message (encode_bundle below, one segment).

Inputs are pinned: the workerd version (from npm, via wrangler) decides which Pyodide version
its Python runtime expects (WORKERD_PYODIDE), and the three input files must have the SHA-256
recorded in INPUT_SHA256. A workerd or Pyodide upgrade therefore stops here with an error that
names the mismatch, instead of a runtime that hangs or fails deep inside. The output is cached
under build/pyodide-bundle/ and rebuilt only when an input or this script changes.

    python runner/pyodide_bundle.py      # prints the bundle's directory
"""

import hashlib
import json
import struct
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
NODE_MODULES = PROJECT / "node_modules"
OUTPUT_ROOT = PROJECT / "build" / "pyodide-bundle"
BUNDLE_NAME = "pyodide_dev.capnp.bin"

# workerd version -> the Pyodide version its Python runtime checks the bundle against
# ("Pyodide version mismatch, expected '…'" at the first request otherwise).
WORKERD_PYODIDE = {"1.20261117.1": "314.0.6"}
INPUT_SHA256 = {
    "314.0.6": {
        "pyodide.asm.mjs": "2ac5eba365ec12839c75c03b39b3be1dd63b798852cc460b014b52238be042f7",
        "pyodide.asm.wasm": "3a0a00dfeaa348ac20f9ef09904233d32d33f644339662d4af368f8a2010f37a",
        "python_stdlib.zip": "80c5be6babfe03297069703410c3c29404dcf2525d2b128746bae5536f94831f",
    },
}

# What the glue imports from workerd: the names this workerd's builtin_wrappers exports.
PRELUDE = (
    "import { addEventListener, getRandomValues, location, monotonicDateNow, newWasmModule, patchedApplyFunc,"
    " patchedLoadLibData, wasmInstantiate, patched_PyEM_CountFuncParams } from"
    ' "pyodide-internal:builtin_wrappers";\n'
)
_EVAL_REFUSED = "(() => {throw new Error('Internal Emscripten code tried to eval, this should not happen')})()"
# (text, replacement, occurrences in the pinned pyodide.asm.mjs). helpers.bzl's other entries
# target text that Pyodide 314.0.6 does not contain (its fatal-error path already calls
# API.on_fatal, and it has no _PyEM_CountFuncParams).
PATCHES = (
    ("new WebAssembly.Module", "newWasmModule", 4),
    ("WebAssembly.instantiate", "wasmInstantiate", 3),
    ("Date.now", "monotonicDateNow", 22),
    ("reportUndefinedSymbols()", "Module.reportUndefinedSymbolsNoOp()", 3),
    ("crypto.getRandomValues(", "getRandomValues(Module, ", 1),
    ("eval(func)", _EVAL_REFUSED, 2),
    ("eval(data)", _EVAL_REFUSED, 1),
    ("eval(UTF8ToString(ptr))", _EVAL_REFUSED, 3),
    (
        "function loadLibData(){",
        "function loadLibData(){ var libData = patchedLoadLibData(Module, libName, flags.rpath);"
        " return flags.loadAsync ? Promise.resolve(libData) : libData; }"
        " function dummiedOutOrigLoadLibData(){",
        1,
    ),
    ("getMemory(", "Module.getMemoryPatched(Module, libName, ", 1),
    (
        "export default _createPyodideModule;",
        PRELUDE + "export default _createPyodideModule; export { _createPyodideModule };",
        1,
    ),
)
MODULE_PREFIX = "pyodideRuntime-internal:"
MODULE_TYPE_INTERNAL = 2  # modules.capnp ModuleType: bundle 0, builtin 1, internal 2


class BundleError(RuntimeError):
    """An input does not match what this script was written for."""


def _version(package: str) -> str:
    manifest = NODE_MODULES / package / "package.json"
    if not manifest.is_file():
        raise BundleError(f"npm package {package} is not installed: run `npm ci` (make setup does)")
    return json.loads(manifest.read_text())["version"]


def _check_inputs(pyodide_dir: Path, pyodide_version: str) -> dict[str, bytes]:
    files = {}
    for name, expected in INPUT_SHA256[pyodide_version].items():
        data = (pyodide_dir / name).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise BundleError(f"{pyodide_dir / name}: SHA-256 {actual}, expected {expected} (npm pyodide {pyodide_version})")
        files[name] = data
    return files


def patch_glue(source: str) -> str:
    for text, replacement, expected in PATCHES:
        found = source.count(text)
        if found != expected:
            raise BundleError(f"pyodide.asm.mjs holds {text!r} {found} times, expected {expected}: "
                              "the Pyodide glue changed; review the patches against workerd's helpers.bzl")
        source = source.replace(text, replacement)
    return source


# --- Cap'n Proto encoding of a Bundle (one segment) -------------------------------------
# Bundle { modules @0 :List(Module) }
# Module { name @0 :Text; union { src @1 :Data; wasm @4 :Data; data @5 :Data; json @6 :Text }
#          tsDeclaration @3 :Text; type @2 :ModuleType; compileCache @7 :Data }
# Laid out by the capnp compiler as: data section 1 word (type: u16 at 0, union discriminant:
# u16 at 1), pointer section 4 words (name, the union's pointer, tsDeclaration, compileCache).
# tests/host/test_pyodide_bundle.py checks the bytes against pycapnp's encoding of that schema.
UNION_MEMBERS = {"src": 0, "wasm": 1, "data": 2, "json": 3}
MODULE_DATA_WORDS, MODULE_POINTER_WORDS = 1, 4


def _words(data: bytes) -> int:
    return (len(data) + 7) // 8


def encode_bundle(modules: list[tuple[str, str, bytes, int]]) -> bytes:
    """[(name, union member, payload, module type)] -> a framed Cap'n Proto message."""
    module_words = MODULE_DATA_WORDS + MODULE_POINTER_WORDS
    blobs = []  # (pointer word index, payload, element count)
    layout = bytearray(8 * (3 + len(modules) * module_words))  # root, Bundle, list tag, modules
    struct.pack_into("<Q", layout, 0, (0 << 2) | (0 << 32) | (1 << 48))  # root -> Bundle (0 data, 1 ptr)
    struct.pack_into("<Q", layout, 8, 1 | (0 << 2) | (7 << 32) | ((len(modules) * module_words) << 35))
    struct.pack_into("<Q", layout, 16, (len(modules) << 2) | (MODULE_DATA_WORDS << 32) | (MODULE_POINTER_WORDS << 48))
    for i, (name, member, payload, module_type) in enumerate(modules):
        base = 3 + i * module_words
        struct.pack_into("<HH", layout, base * 8, module_type, UNION_MEMBERS[member])
        text = name.encode("utf-8") + b"\0"
        blobs.append((base + MODULE_DATA_WORDS, text))
        blobs.append((base + MODULE_DATA_WORDS + 1, payload + (b"\0" if member == "json" else b"")))
    body = bytearray(layout)
    for pointer, payload in blobs:
        target = len(body) // 8
        offset = target - pointer - 1
        struct.pack_into("<Q", body, pointer * 8, 1 | (offset << 2) | (2 << 32) | (len(payload) << 35))
        body += payload + b"\0" * (-len(payload) % 8)
    return struct.pack("<II", 0, len(body) // 8) + bytes(body)


# --- Build with a cache ------------------------------------------------------------------


def build() -> Path:
    """The directory holding pyodide_dev.capnp.bin for the installed workerd, built if needed."""
    workerd_version = _version("workerd")
    pyodide_version = _version("pyodide")
    expected = WORKERD_PYODIDE.get(workerd_version)
    if expected is None:
        known = ", ".join(f"workerd {w} -> Pyodide {p}" for w, p in WORKERD_PYODIDE.items())
        raise BundleError(f"workerd {workerd_version} (npm, via wrangler) is not one this script knows ({known}). "
                          "Find the Pyodide version it expects (its first request fails with \"Pyodide version "
                          "mismatch, expected '…'\"), pin npm pyodide to it, and add both to WORKERD_PYODIDE and "
                          "INPUT_SHA256 in runner/pyodide_bundle.py")
    if pyodide_version != expected:
        raise BundleError(f"workerd {workerd_version} expects Pyodide {expected}, npm has pyodide {pyodide_version}: "
                          f"pin \"pyodide\": \"{expected}\" in package.json")
    directory = OUTPUT_ROOT / f"workerd-{workerd_version}"
    script_digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    stamp = {"workerd": workerd_version, "pyodide": pyodide_version, "script": script_digest,
             "inputs": INPUT_SHA256[pyodide_version]}
    stamp_file = directory / "stamp.json"
    if (directory / BUNDLE_NAME).is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return directory
    files = _check_inputs(NODE_MODULES / "pyodide", pyodide_version)
    glue = patch_glue(files["pyodide.asm.mjs"].decode("utf-8"))
    bundle = encode_bundle([
        (MODULE_PREFIX + "pyodide.asm", "src", glue.encode("utf-8"), MODULE_TYPE_INTERNAL),
        (MODULE_PREFIX + "pyodide.asm.wasm", "wasm", files["pyodide.asm.wasm"], MODULE_TYPE_INTERNAL),
        (MODULE_PREFIX + "python_stdlib.zip", "data", files["python_stdlib.zip"], MODULE_TYPE_INTERNAL),
    ])
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (BUNDLE_NAME + ".partial")
    partial.write_bytes(bundle)
    partial.replace(directory / BUNDLE_NAME)
    stamp_file.write_text(json.dumps(stamp, indent=1) + "\n")
    return directory


if __name__ == "__main__":
    try:
        print(build())
    except BundleError as error:
        sys.exit(f"pyodide bundle: {error}")
