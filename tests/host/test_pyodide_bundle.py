"""runner/pyodide_bundle.py: the Cap'n Proto encoding workerd reads, and the pinning that turns
a workerd or Pyodide upgrade into a clear error instead of a runtime that hangs."""

import sys
from pathlib import Path

import capnp
import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "runner"))

import pyodide_bundle  # noqa: E402

# The schema of workerd's src/workerd/jsg/modules.capnp, as its wire format is defined there.
SCHEMA = """
@0xc8cbb234694939d5;
struct Bundle { modules @0 :List(Module); }
struct Module {
  name @0 :Text;
  union { src @1 :Data; wasm @4 :Data; data @5 :Data; json @6 :Text; }
  tsDeclaration @3 :Text;
  type @2 :ModuleType;
  compileCache @7 :Data;
}
enum ModuleType { bundle @0; builtin @1; internal @2; }
"""


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    path = tmp_path_factory.mktemp("capnp") / "modules.capnp"
    path.write_text(SCHEMA)
    return capnp.load(str(path))


MODULES = [
    ("pyodideRuntime-internal:pyodide.asm", "src", b"export default 1;\n" * 3, 2),
    ("pyodideRuntime-internal:pyodide.asm.wasm", "wasm", b"\0asm\1\0\0\0", 2),
    ("pyodideRuntime-internal:python_stdlib.zip", "data", bytes(range(256)) * 5, 2),
    ("an-empty-one", "data", b"", 0),
    ("some:json", "json", b'{"a": [1, 2]}', 1),
    ("naïve-name", "src", b"x", 1),
]


def test_encoding_is_byte_for_byte_what_capnp_itself_writes(schema):
    reference = schema.Bundle.new_message()
    for message, (name, member, payload, module_type) in zip(reference.init("modules", len(MODULES)), MODULES):
        message.name = name
        setattr(message, member, payload.decode() if member == "json" else payload)
        message.type = ("bundle", "builtin", "internal")[module_type]
    assert pyodide_bundle.encode_bundle(MODULES) == reference.to_bytes()


def test_encoded_bundle_reads_back_every_module(schema):
    with schema.Bundle.from_bytes(pyodide_bundle.encode_bundle(MODULES)) as bundle:
        read = [(m.name, m.which(), bytes(getattr(m, m.which()), "utf-8") if m.which() == "json"
                 else bytes(getattr(m, m.which())), str(m.type)) for m in bundle.modules]
    assert read == [(n, k, p, ("bundle", "builtin", "internal")[t]) for n, k, p, t in MODULES]


def test_a_changed_glue_is_refused_naming_the_patch():
    glue = "".join(text * count for text, _, count in pyodide_bundle.PATCHES)
    assert "newWasmModule" in pyodide_bundle.patch_glue(glue)
    with pytest.raises(pyodide_bundle.BundleError, match="'Date.now' 21 times, expected 22"):
        pyodide_bundle.patch_glue(glue.replace("Date.now", "", 1))


def test_an_unknown_workerd_or_another_pyodide_is_refused_with_what_to_do(monkeypatch):
    versions = {"workerd": "1.20991231.1", "pyodide": "314.0.6"}
    monkeypatch.setattr(pyodide_bundle, "_version", versions.__getitem__)
    with pytest.raises(pyodide_bundle.BundleError, match="workerd 1.20991231.1 .* is not one this script knows"):
        pyodide_bundle.build()
    versions.update(workerd=next(iter(pyodide_bundle.WORKERD_PYODIDE)), pyodide="314.0.7")
    with pytest.raises(pyodide_bundle.BundleError, match='expects Pyodide 314.0.6, npm has pyodide 314.0.7'):
        pyodide_bundle.build()


def test_an_input_with_another_hash_is_refused(tmp_path):
    for name in pyodide_bundle.INPUT_SHA256["314.0.6"]:
        (tmp_path / name).write_bytes(b"not the pinned file")
    with pytest.raises(pyodide_bundle.BundleError, match="SHA-256 .* expected"):
        pyodide_bundle._check_inputs(tmp_path, "314.0.6")
