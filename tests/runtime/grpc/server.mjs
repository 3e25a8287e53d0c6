// The origin for the gRPC runtime tests: a real Connect server (@connectrpc/connect-node) on
// HTTP/1.1, serving shop.v1.Orders in the Connect, gRPC-Web and gRPC protocols (gRPC over
// HTTP/1.1 with HTTP trailers, which Node can send).
//
// Connect serves gRPC-Web's binary format only; calls in the text format
// (application/grpc-web-text: the same frames, base64) are translated in front of it, as
// Envoy's grpc_web filter or grpcwebproxy would: the body decoded and passed on as
// application/grpc-web+proto, the answer base64-encoded as it streams (in groups of three
// bytes, so the text never has padding before its end).
//
//   node server.mjs [--port N]
//
// Prints one JSON line {"url": …} when listening, then one JSON line per call it handles
// ({"call": method, "content_type": …}) and per other request ({"unrouted": method, "path": …}),
// so a test can tell whether a call reached it.
import http from "node:http";
import { parseArgs } from "node:util";
import { ConnectError, Code } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Orders } from "./gen/shop/v1/orders_pb.js";

const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } });
const PREFIX = "x-entragate-";

function seen(headers) {
  const out = {};
  for (const [name, value] of headers) {
    if (name.startsWith(PREFIX)) out[name] = value;
  }
  return out;
}

function order(id, sequence, context) {
  return {
    id,
    sequence,
    seen: seen(context.requestHeader),
    contentType: context.requestHeader.get("content-type") ?? "",
    sentAtMs: BigInt(Date.now()),
  };
}

function record(method, context) {
  process.stdout.write(JSON.stringify({ call: method, content_type: context.requestHeader.get("content-type") }) + "\n");
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

const routes = (router) => router.service(Orders, {
  async getOrder(request, context) {
    record("GetOrder", context);
    if (request.id === "missing") throw new ConnectError("no such order", Code.NotFound);
    // A large answer: big enough for the server to compress it when the client accepts that.
    const id = request.id === "large" ? "x".repeat(256 * 1024) : request.id;
    return order(id, 0, context);
  },
  async *listOrders(request, context) {
    record("ListOrders", context);
    for (let i = 0; i < request.count; i++) {
      if (i > 0 && request.delayMs) await sleep(request.delayMs, context.signal);
      if (context.signal.aborted) return;
      yield order(`order-${i}`, i, context);
    }
  },
  async cancelOrder(request, context) {
    record("CancelOrder", context);
    return order(request.id, 0, context);
  },
});

// Anything that is not an RPC (a CORS preflight that got through, say) is logged too, then 404.
function fallback(request, response) {
  process.stdout.write(JSON.stringify({ unrouted: request.method, path: request.url }) + "\n");
  response.writeHead(404).end();
}

const connect = connectNodeAdapter({ routes, fallback });

function textFormat(request, response) {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.from(Buffer.concat(chunks).toString("latin1"), "base64");
    const headers = { ...request.headers, "content-type": "application/grpc-web+proto", "content-length": body.length };
    delete headers["transfer-encoding"];
    const inner = http.request({ host: "127.0.0.1", port: server.address().port, method: request.method,
                                 path: request.url, headers }, (answer) => {
      const out = { ...answer.headers, "content-type": "application/grpc-web-text+proto" };
      delete out["content-length"];
      delete out["transfer-encoding"];
      response.writeHead(answer.statusCode, out);
      let rest = Buffer.alloc(0);
      answer.on("data", (chunk) => {
        const all = Buffer.concat([rest, chunk]);
        const whole = all.length - (all.length % 3);
        if (whole) response.write(all.subarray(0, whole).toString("base64"));
        rest = all.subarray(whole);
      });
      answer.on("end", () => response.end(rest.length ? rest.toString("base64") : undefined));
    });
    inner.on("error", () => response.destroy());
    inner.end(body);
  });
}

// Like many services, it also answers CORS its own (too open) way on every response: where the
// gateway answers CORS for a route, these must not reach the browser.
const server = http.createServer((request, response) => {
  response.setHeader("access-control-allow-origin", "*");
  response.setHeader("access-control-expose-headers", "x-origin-own");
  if ((request.headers["content-type"] ?? "").startsWith("application/grpc-web-text")) return textFormat(request, response);
  return connect(request, response);
});
server.listen(Number(values.port), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ url: `http://127.0.0.1:${server.address().port}` }) + "\n");
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => { server.closeAllConnections(); server.close(() => process.exit(0)); });
