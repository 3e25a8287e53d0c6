// Real clients for the gRPC runtime tests: from @connectrpc/connect-node the Connect transport
// (proto or JSON, POST or GET), the gRPC-Web transport (binary proto or JSON), both over
// HTTP/1.1, and the gRPC transport (HTTP/2); and @grpc/grpc-js, the reference gRPC client for
// Node (HTTP/2).
//
//   node client.mjs < calls.json > results.json
//
// Input: {"base_url": …, "calls": [{"transport": "connect" | "connect-json" | "connect-get"
//   | "grpc-web" | "grpc-web-json" | "grpc" | "grpc-js", "method": "getOrder" | "listOrders"
//   | "cancelOrder", "request": {…}, "token": JWT or null, "timeout_ms": N,
//   "headers": {…}}, …]}
// Output: one result per call, in order: {"ok": bool, "code": "unauthenticated" | … (null when
//   ok), "message": …, "messages": [order as JSON + "received_at_ms"], "response_header":
//   {…}, "response_trailer": {…}, "elapsed_ms": N}.
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import * as grpcJs from "@grpc/grpc-js";
import { GetOrderRequestSchema, Orders, OrderSchema } from "./gen/shop/v1/orders_pb.js";

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

// grpc-js: a unary GetOrder with the generic client (the message codecs are protobuf-es').
function grpcJsCall(baseUrl, spec) {
  const started = Date.now();
  const client = new grpcJs.Client(new URL(baseUrl).host, grpcJs.credentials.createInsecure());
  const metadata = new grpcJs.Metadata();
  if (spec.token) metadata.set("authorization", `Bearer ${spec.token}`);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/shop.v1.Orders/GetOrder",
      (message) => Buffer.from(toBinary(GetOrderRequestSchema, create(GetOrderRequestSchema, message))),
      (bytes) => fromBinary(OrderSchema, bytes),
      spec.request ?? {}, metadata, { deadline: Date.now() + (spec.timeout_ms ?? 20000) },
      (error, message) => {
        client.close();
        const code = error ? grpcJs.status[error.code].toLowerCase() : null;
        resolve({
          ok: !error, code, message: error ? error.details : null,
          messages: message ? [{ ...toJson(OrderSchema, message), received_at_ms: Date.now() }] : [],
          response_header: {}, response_trailer: {}, elapsed_ms: Date.now() - started,
        });
      });
  });
}

async function call(baseUrl, spec) {
  if (spec.transport === "grpc-js") return grpcJsCall(baseUrl, spec);
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
// Exit once the output is flushed (a pipe takes 64 KiB at a time): grpc-js keeps the loop alive.
process.stdout.write(JSON.stringify(results) + "\n", () => process.exit(0));
