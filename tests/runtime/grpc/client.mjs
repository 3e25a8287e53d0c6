// Real Connect-ES clients for the gRPC runtime tests: the Connect transport (JSON or proto,
// POST or GET), the gRPC-Web transport (binary or JSON), both over HTTP/1.1, and the gRPC
// transport (HTTP/2), all from @connectrpc/connect-node.
//
//   node client.mjs < calls.json > results.json
//
// Input: {"base_url": …, "calls": [{"transport": "connect" | "connect-json" | "connect-get"
//   | "grpc-web" | "grpc-web-json" | "grpc", "method": "getOrder" | "listOrders" |
//   "cancelOrder", "request": {…}, "token": JWT or null, "timeout_ms": N,
//   "headers": {…}}, …]}
// Output: one result per call, in order: {"ok": bool, "code": "unauthenticated" | … (null when
//   ok), "message": …, "messages": [order as JSON + "received_at_ms"], "response_header":
//   {…}, "response_trailer": {…}, "elapsed_ms": N}.
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { toJson } from "@bufbuild/protobuf";
import { Orders, OrderSchema } from "./gen/shop/v1/orders_pb.js";

function transport(kind, baseUrl) {
  switch (kind) {
    case "connect": return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
    case "connect-json": return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false });
    case "connect-get": return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, useHttpGet: true });
    case "grpc-web": return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
    case "grpc-web-json": return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false });
    case "grpc": return createGrpcTransport({ baseUrl, httpVersion: "2" });
    default: throw new Error(`unknown transport ${kind}`);
  }
}

const codeName = (code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
const headerObject = (headers) => Object.fromEntries([...(headers ?? new Headers())]);

async function call(baseUrl, spec) {
  const client = createClient(Orders, transport(spec.transport, baseUrl));
  const headers = { ...(spec.headers ?? {}) };
  if (spec.token) headers.authorization = `Bearer ${spec.token}`;
  const result = { ok: false, code: null, message: null, messages: [], response_header: {}, response_trailer: {} };
  const options = {
    headers,
    timeoutMs: spec.timeout_ms ?? 20000,
    onHeader: (header) => { result.response_header = headerObject(header); },
    onTrailer: (trailer) => { result.response_trailer = headerObject(trailer); },
  };
  const started = Date.now();
  const received = (message) => ({ ...toJson(OrderSchema, message), received_at_ms: Date.now() });
  try {
    if (spec.method === "listOrders") {
      for await (const message of client.listOrders(spec.request ?? {}, options)) result.messages.push(received(message));
    } else {
      result.messages.push(received(await client[spec.method](spec.request ?? {}, options)));
    }
    result.ok = true;
  } catch (error) {
    const connectError = ConnectError.from(error);
    result.code = codeName(connectError.code);
    result.message = connectError.rawMessage;
    result.response_header = { ...result.response_header, ...headerObject(connectError.metadata) };
  }
  result.elapsed_ms = Date.now() - started;
  return result;
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { base_url: baseUrl, calls } = JSON.parse(input);
const results = [];
for (const spec of calls) results.push(await call(baseUrl, spec));
process.stdout.write(JSON.stringify(results) + "\n");
process.exit(0);
