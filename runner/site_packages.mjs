// Installs pure-Python distributions from the project's locked host environment into
// Pyodide's site-packages, file by file as each wheel's RECORD lists them. Offline, and
// the same versions uv.lock pins for the edge (pyjwt) and the SDK (workers-runtime-sdk).

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PROJECT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function findHostSitePackages() {
  const lib = path.join(PROJECT_DIR, ".venv", "lib");
  const python = fs.existsSync(lib) && fs.readdirSync(lib).find((name) => name.startsWith("python3"));
  if (!python) throw new Error(`no project virtualenv under ${lib}: run \`uv sync\` (make test does)`);
  return path.join(lib, python, "site-packages");
}

function findDistInfo(sitePackages, distribution) {
  const prefix = distribution.toLowerCase().replaceAll("-", "_") + "-";
  const found = fs.readdirSync(sitePackages).find(
    (name) => name.toLowerCase().startsWith(prefix) && name.endsWith(".dist-info"),
  );
  if (!found) throw new Error(`${distribution} is not installed in ${sitePackages}`);
  return path.join(sitePackages, found);
}

export function installSitePackages(pyodide, distributions) {
  const source = findHostSitePackages();
  const target = pyodide.runPython("import site; site.getsitepackages()[0]");
  for (const distribution of distributions) {
    const record = fs.readFileSync(path.join(findDistInfo(source, distribution), "RECORD"), "utf8");
    for (const line of record.split("\n")) {
      const file = line.split(",")[0];
      if (!file || file.startsWith("..") || file.includes("__pycache__")) continue;
      const destination = path.posix.join(target, file);
      pyodide.FS.mkdirTree(path.posix.dirname(destination));
      pyodide.FS.writeFile(destination, fs.readFileSync(path.join(source, file)));
    }
  }
}
