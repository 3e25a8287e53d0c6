// Fixed-concurrency HTTP load on loopback: node bench/http_load.mjs URL CONCURRENCY TOTAL [HEADER:VALUE]...
// Prints {"p50_ms", "p99_ms", "rps", "errors"}. Bounded in count; talks only to the URL given.

import http from "node:http";

const [url, concurrency, total, ...headerArgs] = process.argv.slice(2);
const headers = Object.fromEntries(headerArgs.map((h) => [h.slice(0, h.indexOf(":")), h.slice(h.indexOf(":") + 1)]));
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(concurrency) });
const latencies = [];
let errors = 0;
let issued = 0;

function once() {
  return new Promise((resolve) => {
    const started = performance.now();
    const request = http.get(url, { agent, headers }, (response) => {
      response.resume();
      response.on("end", () => {
        if (response.statusCode !== 200) errors += 1;
        latencies.push(performance.now() - started);
        resolve();
      });
    });
    request.on("error", () => { errors += 1; resolve(); });
  });
}

async function worker() {
  while (issued < Number(total)) {
    issued += 1;
    await once();
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: Number(concurrency) }, worker));
const seconds = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const pick = (q) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))] * 100) / 100;
console.log(JSON.stringify({ p50_ms: pick(0.5), p99_ms: pick(0.99), rps: Math.round(latencies.length / seconds), errors }));
agent.destroy();
