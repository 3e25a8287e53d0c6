// The jose anchor inside workerd: the same request pipeline as a JavaScript Worker would run it
// with jose (bench/jose_pipeline.mjs), timed the way bench/workerd_pipeline.py times the
// gateway (batches, since workerd's clock advances in whole milliseconds). Reached from the
// Python benchmark Worker through its JOSE service binding; both run in one workerd.
//   POST /jose/setup, POST /jose/pipeline {"repeat", "batch", "fresh_batch"}, POST /jose/primitives {"n"}

import { jwtVerify } from "jose";

import { joseVerification, josePipeline } from "./jose_pipeline.mjs";

let setup = null;

function summary(samples) {
  const ordered = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(ordered.length / 2);
  const median = ordered.length % 2 ? ordered[middle] : (ordered[middle - 1] + ordered[middle]) / 2;
  const p99 = ordered[Math.min(ordered.length - 1, Math.floor(ordered.length * 0.99))];
  const round = (value) => Math.round(value * 10) / 10;
  return { median_us: round(median), p99_us: round(p99), worst_us: round(ordered[ordered.length - 1]), n: ordered.length };
}

async function timed(items, batch, run) {
  const samples = [];
  for (let first = 0; first < items.length; first += batch) {
    const chunk = items.slice(first, first + batch);
    const started = performance.now();
    for (const item of chunk) await run(item);
    samples.push(((performance.now() - started) * 1000) / chunk.length);
  }
  return summary(samples);
}

async function pipeline({ repeat, batch, fresh_batch: freshBatch }) {
  const base = setup.gateway_url;
  const results = {};
  for (const assertion of [false, true]) {
    const handle = await josePipeline(setup, { assertion });
    const expect = (status, method, url, authorization) => async () => {
      const result = await handle(method, url, authorization);
      if (result.status !== status) throw new Error(`jose pipeline: ${url} gave ${result.status}, not ${status}`);
    };
    await expect(200, "GET", base + "/api/warm", `Bearer ${setup.repeated_token}`)();
    const suffix = assertion ? " +assertion" : "";
    results["fresh token" + suffix] = await timed(setup.fresh_tokens, freshBatch, (token) =>
      expect(200, "GET", base + "/api/items", `Bearer ${token}`)());
    results["repeated token" + suffix] = await timed(Array(repeat).fill(setup.repeated_token), batch, (token) =>
      expect(200, "GET", base + "/api/items", `Bearer ${token}`)());
    if (!assertion) {
      const times = (run) => timed(Array(repeat).fill(null), batch, run);
      results["denied (policy 403)"] = await times(expect(403, "GET", base + "/admin/panel", `Bearer ${setup.repeated_token}`));
      results["denied (no token 401)"] = await times(expect(401, "GET", base + "/api/items", undefined));
      results["public route"] = await times(expect(200, "GET", base + "/healthz", undefined));
    }
  }
  const { key, options } = await joseVerification(setup);
  results["jwtVerify alone, fresh token"] = await timed(setup.fresh_tokens, freshBatch, (token) => jwtVerify(token, key, options));
  return results;
}

async function primitives({ n }) {
  const { jwk } = await joseVerification(setup);
  const key = await crypto.subtle.importKey("jwk", { kty: jwk.kty, n: jwk.n, e: jwk.e },
    { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["verify"]);
  const token = setup.repeated_token;
  const cut = token.lastIndexOf(".");
  const signingInput = new TextEncoder().encode(token.slice(0, cut));
  const signature = Uint8Array.from(atob(token.slice(cut + 1).replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const loop = async (step) => {
    const started = performance.now();
    for (let i = 0; i < n; i++) await step();
    return Math.round(((performance.now() - started) * 1000 / n) * 10) / 10;
  };
  // What Pyodide's event loop schedules each resumed Python task with (scheduleCallback in
  // pyodide.asm.mjs: a MessageChannel message where there is one, else setTimeout(0)).
  const channel = typeof MessageChannel === "function" ? new MessageChannel() : null;
  const message = () => new Promise((resolve) => {
    channel.port1.onmessage = resolve;
    channel.port2.postMessage(0);
  });
  // Keys shared with bench/workerd_pipeline.py's primitives (the same operation from Python).
  return {
    "one event-loop turn (Python: asyncio.sleep(0); JS: a MessageChannel message)": channel ? await loop(message) : null,
    "setTimeout(0) round trip": await loop(() => new Promise((resolve) => setTimeout(resolve, 0))),
    "await of an already resolved JS promise": await loop(() => Promise.resolve()),
    "crypto.subtle.verify RS256, called and awaited": await loop(async () => {
      if (!(await crypto.subtle.verify("RSASSA-PKCS1-v1_5", key, signature, signingInput))) throw new Error("bad signature");
    }),
  };
}

export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    const body = await request.json().catch(() => ({}));
    if (path === "/jose/setup") {
      setup = body;
      return Response.json({ ok: true });
    }
    if (path === "/jose/pipeline") return Response.json(await pipeline(body));
    if (path === "/jose/primitives") return Response.json(await primitives(body));
    return new Response("not found", { status: 404 });
  },
};
