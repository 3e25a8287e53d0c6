// Runs a Python script inside the offline Pyodide runtime (the same one the runner serves
// the Worker from), with the project mounted at /app and src/ importable:
//   node runner/run_python.mjs tests/runtime/pyodide/some_check.py [args...]
// If the script defines `async def main()`, it is awaited (Pyodide cannot block in
// asyncio.run). The script's exit status becomes this process's exit status.

import path from "node:path";

import { PROJECT_DIR, PYODIDE_PROJECT_DIR, describeError, loadPythonRuntime } from "./pyodide_runtime.mjs";

const [script, ...args] = process.argv.slice(2);
if (!script) {
  console.error("usage: node runner/run_python.mjs SCRIPT [ARGS...]");
  process.exit(2);
}
const scriptPath = path.posix.join(PYODIDE_PROJECT_DIR, path.relative(PROJECT_DIR, path.resolve(script)));
try {
  const pyodide = await loadPythonRuntime();
  pyodide.globals.set("_script_argv", pyodide.toPy([scriptPath, ...args]));
  const status = await pyodide.runPythonAsync(`
import runpy, sys
sys.argv = list(_script_argv)
try:
    _namespace = runpy.run_path(sys.argv[0], run_name="__main__")
    if "main" in _namespace:
        await _namespace["main"]()
    _status = 0
except SystemExit as exit:
    _status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
_status
`);
  exitAfterFlush(status);
} catch (error) {
  console.error(describeError(error));
  exitAfterFlush(1);
}

// process.exit() right after a large write to a pipe drops what is still queued (seen: output
// cut at 64 KiB); an empty write's callback runs once everything before it is flushed.
function exitAfterFlush(status) {
  process.stdout.write("", () => process.stderr.write("", () => process.exit(status)));
}
