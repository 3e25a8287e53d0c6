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
//
// WebSocket upgrades, as workerd does them: the Worker's fetch() of a request carrying
// `Upgrade: websocket` upgrades to the origin (node:http) and resolves with a Response of
// status 101 whose `webSocket` holds the origin's socket; a client's upgrade request goes to
// the Worker like any other, and returning that 101 joins the two sockets. Any other answer
// is written on the client's socket, which is then closed. Other fetches are Node's own.

import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import http, { STATUS_CODES, createServer } from "node:http";
import https from "node:https";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
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

// --- WebSocket upgrades ----------------------------------------------------------------

// The origin's side of an upgraded connection: the `webSocket` of a fetched 101.
class UpgradedSocket {
  constructor(socket, head) {
    this.socket = socket;
    this.head = head;
    socket.on("error", () => socket.destroy()); // Node removed its own listener on upgrading
  }
}

function headersOf(rawHeaders) {
  const headers = new Headers();
  for (let i = 0; i < rawHeaders.length; i += 2) headers.append(rawHeaders[i], rawHeaders[i + 1]);
  return headers;
}

// A fetch() response as the Worker sees it: a real Response (so the SDK's Response()
// accepts it), with the fetched URL and, for a 101, the status Node's constructor refuses.
function fetched(url, status, statusText, headers, body, webSocket) {
  const response = new Response(body, { status: status === 101 ? 200 : status, statusText, headers });
  const own = { url: { value: url } };
  if (status === 101) {
    Object.assign(own, { status: { value: 101 }, ok: { value: false }, webSocket: { value: webSocket } });
  }
  return Object.defineProperties(response, own);
}

function upgradeHeaders(input, init) {
  try {
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    return headers.get("upgrade")?.trim().toLowerCase() === "websocket" ? headers : null;
  } catch {
    return null; // Node's fetch reports bad arguments itself
  }
}

function fetchUpgrade(input, init, headers) {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const method = init?.method ?? (input instanceof Request ? input.method : "GET");
  return new Promise((resolve, reject) => {
    const fail = (error) => reject(error.name === "AbortError" ? error : new TypeError("fetch failed", { cause: error }));
    const request = (url.protocol === "https:" ? https : http).request(url, {
      method,
      headers: Object.fromEntries(headers),
      signal: init?.signal ?? undefined,
    });
    request.on("upgrade", (answer, socket, head) => {
      resolve(fetched(url.href, 101, answer.statusMessage, headersOf(answer.rawHeaders), null, new UpgradedSocket(socket, head)));
    });
    request.on("response", (answer) => {
      const empty = method === "HEAD" || [204, 205, 304].includes(answer.statusCode);
      if (empty) answer.resume();
      try {
        resolve(fetched(url.href, answer.statusCode, answer.statusMessage, headersOf(answer.rawHeaders), empty ? null : Readable.toWeb(answer)));
      } catch (error) {
        answer.destroy();
        fail(error); // a status or header Node's Response refuses
      }
    });
    request.on("error", fail);
    request.end();
  });
}

// Node's fetch requires `duplex: "half"` with a streamed body, an option workerd does not know:
// the Worker passes only Workers options, and the runner adds what Node needs.
function installFetch() {
  const nodeFetch = globalThis.fetch;
  globalThis.fetch = function fetch(input, init) {
    const headers = upgradeHeaders(input, init);
    if (headers) return fetchUpgrade(input, init, headers);
    return nodeFetch(input, init?.body ? { ...init, duplex: "half" } : init);
  };
}

function headerBlock(statusLine, headers) {
  const lines = [statusLine];
  for (const [name, value] of headers) if (name !== "set-cookie") lines.push(`${name}: ${value}`);
  for (const cookie of headers.getSetCookie()) lines.push(`set-cookie: ${cookie}`);
  return lines.join("\r\n") + "\r\n\r\n";
}

// The Worker's answer to a client's upgrade request, on the client's raw socket.
async function sendUpgradeResponse(socket, head, response) {
  const upgraded = response.status === 101 ? response.webSocket : undefined;
  if (upgraded instanceof UpgradedSocket) {
    const origin = upgraded.socket;
    if (socket.destroyed) return origin.destroy(); // the client left while the Worker worked
    socket.write(headerBlock(`HTTP/1.1 101 ${response.statusText || STATUS_CODES[101]}`, response.headers));
    if (upgraded.head?.length) socket.write(upgraded.head);
    if (head?.length) origin.write(head);
    origin.on("error", () => socket.destroy());
    socket.on("close", () => origin.destroy());
    origin.pipe(socket);
    socket.pipe(origin);
    return;
  }
  const headers = new Headers(response.headers);
  headers.delete("transfer-encoding"); // the body is sent as it is, ended by closing
  headers.set("connection", "close");
  socket.write(headerBlock(`HTTP/1.1 ${response.status} ${response.statusText || STATUS_CODES[response.status] || ""}`, headers));
  if (!response.body) return socket.end();
  await pipeline(Readable.fromWeb(response.body), socket);
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
  installFetch();
  const { handle, importMs, python } = await loadWorker(env, mainPath);

  // Each request, plain or upgrade, goes to the Worker the same way; `reply` delivers its
  // response and `fail` answers a Worker that threw.
  const inFlight = new Set();
  const dispatch = async (req, reply, fail) => {
    const { ctx, pending } = makeContext();
    try {
      await reply(await handle(toWebRequest(req, options.host, options.port), ctx, env));
    } catch (error) {
      const requestId = randomUUID();
      log(`unhandled error (request ${requestId}) ${req.method} ${req.url}\n${describeError(error)}`);
      fail(requestId);
    }
    const background = Promise.allSettled(pending);
    inFlight.add(background);
    for (const outcome of await background) {
      if (outcome.status === "rejected") log(`waitUntil task failed: ${describeError(outcome.reason)}`);
    }
    inFlight.delete(background);
  };
  const server = createServer({ maxHeaderSize: CLOUDFLARE_REQUEST_HEADER_LIMIT }, (req, res) =>
    dispatch(req, (response) => sendWebResponse(res, response), (requestId) => sendInternalError(res, requestId)));
  server.on("upgrade", (req, socket, head) => {
    socket.on("error", () => socket.destroy());
    dispatch(req, (response) => sendUpgradeResponse(socket, head, response), (requestId) => {
      if (socket.bytesWritten > 0) return socket.destroy();
      const body = JSON.stringify({ error: "internal_error", request_id: requestId });
      const headers = new Headers({ "content-type": "application/json", "x-request-id": requestId, connection: "close" });
      socket.end(headerBlock("HTTP/1.1 500 Internal Server Error", headers) + body);
    });
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
