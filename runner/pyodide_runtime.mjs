// Loads real Pyodide with what the Workers runtime gives a Python Worker: the `workers`
// SDK and its two runtime-provided modules, pyjwt (vendored at the edge), and src/ on
// sys.path. Shared by the HTTP runner and by run_python.mjs (Python tests in Pyodide).

import path from "node:path";
import { fileURLToPath } from "node:url";

import { installSitePackages } from "./site_packages.mjs";

export const PROJECT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const PYODIDE_PROJECT_DIR = "/app";
const EDGE_DISTRIBUTIONS = ["pyjwt", "workers-runtime-sdk"];

export async function loadPythonRuntime({ env = {} } = {}) {
  const { loadPyodide } = await import("pyodide");
  const pyodide = await loadPyodide({ stdout: (line) => console.log(line), stderr: (line) => console.error(line) });
  installSitePackages(pyodide, EDGE_DISTRIBUTIONS);
  pyodide.registerJsModule("_cloudflare_compat_flags", {
    python_workflows_implicit_dependencies: false,
    python_request_headers_preserve_commas: false,
  });
  pyodide.registerJsModule("_pyodide_entrypoint_helper", {
    patchWaitUntil() {},
    cloudflareWorkersModule: { env, waitUntil: () => {} },
    cloudflareSocketsModule: {},
  });
  // The project directory is mounted, not copied: the Worker runs the files as they are.
  pyodide.FS.mkdirTree(PYODIDE_PROJECT_DIR);
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: PROJECT_DIR }, PYODIDE_PROJECT_DIR);
  pyodide.runPython(`import sys; sys.path.insert(0, "${PYODIDE_PROJECT_DIR}/src")`);
  return pyodide;
}

// Pyodide errors carry the whole Python traceback in `message`; print only that, never the
// minified Pyodide source that Node would print for the raw error object.
export function describeError(error) {
  if (error && typeof error.message === "string") {
    const traceback = error.message.trim();
    return error.type ? traceback : `${error.name ?? "Error"}: ${traceback}`;
  }
  return String(error);
}
