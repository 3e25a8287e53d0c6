// Offline runtime runner: serves HTTP and hands each request to the Worker's own
// `Default.fetch`, running in real Pyodide (Python 3.14) with the real `workers` SDK,
// Node's web APIs (fetch, Request/Response, WebCrypto) and real KV bindings from
// wrangler's getPlatformProxy(). It exists because `wrangler dev` cannot start a Python
// Worker without network access. It contains no gateway logic.
//
//   node runner/runner.mjs [--port 8787] [--var KEY:VALUE]... [--persist-to DIR] [--main FILE] [--no-build]
//
// Like `wrangler dev`, it reads wrangler.toml (main, [vars], KV bindings, [build]) and
// .dev.vars; --var overrides a variable and --main the entry file.
//
// Prints one JSON line {"ready": true, "url": ..., "startup_ms": ...} on stdout when ready.

import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import path from "node:path";

import { PROJECT_DIR, PYODIDE_PROJECT_DIR, describeError, loadPythonRuntime } from "./pyodide_runtime.mjs";

// Cloudflare accepts up to 128 KB of request headers (Node's default is 16 KB), so the
// Worker, not the runner, decides what to do with a large Authorization header.
const CLOUDFLARE_REQUEST_HEADER_LIMIT = 128 * 1024;
const SHUTDOWN_GRACE_MS = 5000;

function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string", default: "8787" },
      host: { type: "string", default: "127.0.0.1" },
      var: { type: "string", multiple: true, default: [] },
      config: { type: "string", default: path.join(PROJECT_DIR, "wrangler.toml") },
      "persist-to": { type: "string", default: path.join(PROJECT_DIR, ".wrangler", "state") },
      main: { type: "string" },
      "no-build": { type: "boolean", default: false },
    },
  });
  const vars = {};
  for (const item of values.var) {
    const colon = item.indexOf(":");
    if (colon <= 0) throw new Error(`--var expects KEY:VALUE, got ${JSON.stringify(item)}`);
    vars[item.slice(0, colon)] = item.slice(colon + 1);
  }
  return { ...values, port: Number(values.port), vars };
}

function log(message) {
  process.stderr.write(`[runner] ${message}\n`);
}

// wrangler dev runs [build].command before it serves; so does the runner, so the Worker
// always sees the current compiled policy.
function runBuildCommand(config) {
  const command = config.build?.command;
  if (!command) return;
  const result = spawnSync(command, {
    shell: true,
    cwd: config.build.cwd ? path.resolve(PROJECT_DIR, config.build.cwd) : PROJECT_DIR,
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (result.status !== 0) throw new Error(`build command failed (exit ${result.status}): ${command}`);
}

// The Python SDK wraps bindings whose JS class is one it knows (KvNamespace) so they can be
// called without to_js. Present the proxied KV under that name so the Worker's code runs
// the same path it runs in production.
function asKvNamespace(binding) {
  class KvNamespace {
    get(key, options) { return binding.get(key, options); }
    getWithMetadata(key, options) { return binding.getWithMetadata(key, options); }
    put(key, value, options) { return binding.put(key, value, options); }
    delete(key) { return binding.delete(key); }
    list(options) { return binding.list(options); }
  }
  return new KvNamespace();
}

function buildEnv(proxyEnv, config, overrides) {
  const env = {};
  for (const [name, value] of Object.entries(proxyEnv)) env[name] = value;
  for (const { binding } of config.kv_namespaces ?? []) env[binding] = asKvNamespace(proxyEnv[binding]);
  return Object.assign(env, overrides);
}

// A per-request ExecutionContext: waitUntil promises are awaited after the response is
// sent, as the Workers runtime does, and their failures are logged, not swallowed.
function makeContext() {
  const pending = [];
  return {
    pending,
    ctx: {
      waitUntil(promise) { pending.push(Promise.resolve(promise)); },
      passThroughOnException() {},
      props: {},
    },
  };
}

// Imports the Worker's main module the way the runtime does: its folder is the module
// root, and `Default` is the entrypoint class.
async function loadWorker(env, mainPath) {
  const pyodide = await loadPythonRuntime({ env });
  const relative = path.relative(PROJECT_DIR, path.resolve(PROJECT_DIR, mainPath));
  if (relative.startsWith("..")) throw new Error(`main must be inside the project: ${mainPath}`);
  const moduleRoot = path.posix.join(PYODIDE_PROJECT_DIR, path.dirname(relative));
  const moduleName = path.basename(relative, ".py");
  const importStarted = performance.now();
  await pyodide.runPythonAsync(`
import importlib, sys
sys.path.insert(0, ${JSON.stringify(moduleRoot)})
_worker_module = importlib.import_module(${JSON.stringify(moduleName)})
import workers

async def _runner_handle(js_request, ctx, env):
    worker = _worker_module.Default(ctx, env)
    response = await worker.fetch(workers.Request(js_request))
    return response.js_object
`);
  const importMs = performance.now() - importStarted;
  const python = pyodide.runPython("import sys; sys.version.split()[0]");
  return { handle: pyodide.globals.get("_runner_handle"), importMs, python };
}

function toWebRequest(req, host, port) {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  // As in Workers, request.url carries the Host the client asked for.
  const url = `http://${req.headers.host ?? `${host}:${port}`}${req.url}`;
  const hasBody = !["GET", "HEAD"].includes(req.method);
  return new Request(url, {
    method: req.method,
    headers,
    body: hasBody ? Readable.toWeb(req) : undefined,
    duplex: hasBody ? "half" : undefined,
  });
}

async function sendWebResponse(res, response) {
  const headers = {};
  for (const [name, value] of response.headers) {
    if (name === "set-cookie") continue;
    headers[name] = value;
  }
  const cookies = response.headers.getSetCookie();
  if (cookies.length) headers["set-cookie"] = cookies;
  // Python Responses carry no reason phrase; send the standard one, as workerd does.
  res.writeHead(response.status, response.statusText || undefined, headers);
  if (!response.body) return res.end();
  for await (const chunk of response.body) res.write(chunk);
  res.end();
}

function sendInternalError(res, requestId) {
  if (res.headersSent) return res.destroy();
  const body = JSON.stringify({ error: "internal_error", request_id: requestId });
  res.writeHead(500, { "content-type": "application/json", "x-request-id": requestId });
  res.end(body);
}

async function main() {
  const started = performance.now();
  const options = parseCommandLine(process.argv.slice(2));
  const wrangler = await import("wrangler");
  const config = wrangler.unstable_readConfig({ config: options.config });
  if (!options["no-build"]) runBuildCommand(config);

  const proxy = await wrangler.getPlatformProxy({ configPath: options.config, persist: { path: options["persist-to"] } });
  const env = buildEnv(proxy.env, config, options.vars);
  const mainPath = options.main ?? path.relative(PROJECT_DIR, config.main);
  const { handle, importMs, python } = await loadWorker(env, mainPath);

  const inFlight = new Set();
  const server = createServer({ maxHeaderSize: CLOUDFLARE_REQUEST_HEADER_LIMIT }, async (req, res) => {
    const { ctx, pending } = makeContext();
    try {
      const response = await handle(toWebRequest(req, options.host, options.port), ctx, env);
      await sendWebResponse(res, response);
    } catch (error) {
      const requestId = randomUUID();
      log(`unhandled error (request ${requestId}) ${req.method} ${req.url}\n${describeError(error)}`);
      sendInternalError(res, requestId);
    }
    const background = Promise.allSettled(pending);
    inFlight.add(background);
    for (const outcome of await background) {
      if (outcome.status === "rejected") log(`waitUntil task failed: ${describeError(outcome.reason)}`);
    }
    inFlight.delete(background);
  });
  server.listen(options.port, options.host, () => {
    const { port } = server.address();
    const url = `http://${options.host}:${port}`;
    const startupMs = Math.round(performance.now() - started);
    log(`ready on ${url}: ${mainPath} on Python ${python} (start-up ${startupMs} ms, Worker import ${Math.round(importMs)} ms)`);
    console.log(JSON.stringify({ ready: true, url, python, main: mainPath, startup_ms: startupMs, import_ms: Math.round(importMs) }));
  });

  const stop = async () => {
    server.close();
    server.closeAllConnections();
    // As workerd does, let waitUntil work (a KV write of fresh keys) finish before going away.
    await Promise.race([Promise.allSettled([...inFlight]), new Promise((done) => setTimeout(done, SHUTDOWN_GRACE_MS))]);
    await proxy.dispose();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((error) => {
  log(`failed to start: ${describeError(error)}`);
  process.exit(1);
});
