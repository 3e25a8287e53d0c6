// Runs in ONE Node process: the jose anchor (the same pipeline as a JavaScript Worker using
// jose would run it, bench/jose_pipeline.mjs; and jwtVerify alone), the Worker's cold import,
// and bench/pipeline_bench.py inside Pyodide with WebCrypto.
//   node bench/pyodide_bench.mjs SETUP.json   (SETUP.json under the project; written by bench/run.py)
// Prints one JSON line.

import fs from "node:fs";
import path from "node:path";
import { jwtVerify } from "jose";

import { joseVerification, josePipeline } from "./jose_pipeline.mjs";

import { PROJECT_DIR, PYODIDE_PROJECT_DIR, loadPythonRuntime } from "../runner/pyodide_runtime.mjs";

function summary(samples) {
  const ordered = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(ordered.length / 2);
  const median = ordered.length % 2 ? ordered[middle] : (ordered[middle - 1] + ordered[middle]) / 2;
  const p99 = ordered[Math.min(ordered.length - 1, Math.floor(ordered.length * 0.99))];
  return { median_us: Math.round(median * 10) / 10, p99_us: Math.round(p99 * 10) / 10, n: ordered.length };
}

async function timeEach(items, run) {
  const samples = [];
  for (const item of items) {
    const started = performance.now();
    await run(item);
    samples.push((performance.now() - started) * 1000);
  }
  return summary(samples);
}

async function joseScenarios(setup) {
  const { jwk, key, options } = await joseVerification(setup);
  await jwtVerify(setup.repeated_token, key, options);
  const verify = (token) => jwtVerify(token, key, options);
  const jwtverify = {
    "fresh token": await timeEach(setup.fresh_tokens, verify),
    "repeated token": await timeEach(Array(2000).fill(setup.repeated_token), verify),
  };

  // The same pipeline scenarios as bench/pipeline_bench.py, in the JavaScript Worker a user
  // would write instead (bench/jose_pipeline.mjs); each checked for the expected status.
  const base = setup.gateway_url;
  const pipeline = {};
  for (const assertion of [false, true]) {
    const handle = await josePipeline(setup, { assertion });
    const expect = (status, method, url, authorization) => async () => {
      const result = await handle(method, url, authorization);
      if (result.status !== status) throw new Error(`jose pipeline: ${url} gave ${result.status}, not ${status}`);
    };
    await expect(200, "GET", base + "/api/warm", `Bearer ${setup.repeated_token}`)();
    const suffix = assertion ? " +assertion" : "";
    pipeline["fresh token" + suffix] = await timeEach(setup.fresh_tokens, (token) =>
      expect(200, "GET", base + "/api/items", `Bearer ${token}`)());
    pipeline["repeated token" + suffix] = await timeEach(Array(2000).fill(setup.repeated_token), (token) =>
      expect(200, "GET", base + "/api/items", `Bearer ${token}`)());
    if (!assertion) {
      const repeat = (run) => timeEach(Array(2000).fill(null), run);
      pipeline["denied (policy 403)"] = await repeat(expect(403, "GET", base + "/admin/panel", `Bearer ${setup.repeated_token}`));
      pipeline["denied (no token 401)"] = await repeat(expect(401, "GET", base + "/api/items", undefined));
      pipeline["public route"] = await repeat(expect(200, "GET", base + "/healthz", undefined));
    }
  }

  // The signature check alone, as jose makes it: what the Pyodide verifier's one WebCrypto call
  // costs without the Python/JS bridge around it.
  const cryptoKey = await crypto.subtle.importKey("jwk", { kty: jwk.kty, n: jwk.n, e: jwk.e },
    { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["verify"]);
  const encoder = new TextEncoder();
  const subtleVerify = await timeEach(setup.fresh_tokens.map((token) => {
    const cut = token.lastIndexOf(".");
    return [Buffer.from(token.slice(cut + 1), "base64url"), encoder.encode(token.slice(0, cut))];
  }), async ([signature, signingInput]) => {
    if (!(await crypto.subtle.verify("RSASSA-PKCS1-v1_5", cryptoKey, signature, signingInput))) throw new Error("bad signature");
  });
  return {
    pipeline,
    jwtverify,
    subtle_verify: subtleVerify,
  };
}

const setupPath = path.resolve(process.argv[2]);
const setup = JSON.parse(fs.readFileSync(setupPath, "utf8"));
const jose = await joseScenarios(setup);

const loadStarted = performance.now();
const pyodide = await loadPythonRuntime();
const loadMs = performance.now() - loadStarted;
// The SDK is the platform's; the Worker's own modules are what this project controls.
let started = performance.now();
pyodide.runPython("import workers");
const sdkImportMs = performance.now() - started;
started = performance.now();
pyodide.runPython("import entry");
const importMs = performance.now() - started;

let output = "";
pyodide.setStdout({ batched: (line) => { output += line + "\n"; } });
const inPyodide = path.posix.join(PYODIDE_PROJECT_DIR, path.relative(PROJECT_DIR, setupPath));
await pyodide.runPythonAsync(`
import runpy
_bench = runpy.run_path("${PYODIDE_PROJECT_DIR}/bench/pipeline_bench.py")
await _bench["main"](${JSON.stringify(inPyodide)})
`);
const python = JSON.parse(output.trim().split("\n").pop());
python.fresh_breakdown["for scale: the same crypto.subtle.verify, called and awaited in JS"] = jose.subtle_verify.median_us;
console.log(JSON.stringify({ ...python, jose: { runtime: `node ${process.versions.node}`, ...jose },
  cold: { pyodide_load_ms: Math.round(loadMs), sdk_import_ms: Math.round(sdkImportMs), worker_import_ms: Math.round(importMs) } }));
