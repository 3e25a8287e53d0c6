// The page script of the browser test (tests/runtime/test_cors_browser.py), bundled with esbuild:
// Connect-ES's browser transports (@connectrpc/connect-web: fetch; Connect and gRPC-Web) and
// grpc-web, gRPC's own browser client (XMLHttpRequest; gRPC-Web's text format), calling the
// gateway on another origin, so every call is a CORS request, preflighted (it sends
// authorization). Posts what each call gave to /report on the page's own origin (or what went
// wrong, as {"error"}).
//
// Query: ?gateway=URL&token=JWT
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { GrpcWebClientBase, MethodDescriptor, MethodType, StatusCode } from "grpc-web";
import {
  CancelOrderRequestSchema, GetOrderRequestSchema, ListOrdersRequestSchema, Orders, OrderSchema,
} from "./gen/shop/v1/orders_pb.js";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("gateway");
const token = params.get("token");
const transports = {
  connect: createConnectTransport({ baseUrl }),
  "connect-json": createConnectTransport({ baseUrl, useBinaryFormat: false }),
  "grpc-web": createGrpcWebTransport({ baseUrl }),
};
const codeName = (code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();

// grpc-web: its generic client with method descriptors over protobuf-es's codecs.
const googleClient = new GrpcWebClientBase({ format: "text" });
const descriptors = {
  getOrder: ["GetOrder", MethodType.UNARY, GetOrderRequestSchema],
  listOrders: ["ListOrders", MethodType.SERVER_STREAMING, ListOrdersRequestSchema],
  cancelOrder: ["CancelOrder", MethodType.UNARY, CancelOrderRequestSchema],
};
const statusName = (code) => Object.keys(StatusCode).find((name) => StatusCode[name] === code).toLowerCase()
  .replace("cancelled", "canceled");

function googleCall(method, request, withToken, result) {
  const [name, type, schema] = descriptors[method];
  const descriptor = new MethodDescriptor(`/shop.v1.Orders/${name}`, type, Object, Object,
    (message) => toBinary(schema, create(schema, message)), (bytes) => fromBinary(OrderSchema, bytes));
  const metadata = withToken ? { authorization: `Bearer ${token}` } : {};
  const url = `${baseUrl}/shop.v1.Orders/${name}`;
  const received = (order) => result.messages.push({ ...toJson(OrderSchema, order), received_at_ms: Date.now() });
  return new Promise((resolve) => {
    const failed = (error) => { result.code = statusName(error.code); result.message = error.message; resolve(); };
    if (type === MethodType.UNARY) {
      googleClient.rpcCall(url, request, metadata, descriptor, (error, order) => {
        if (error) return failed(error);
        received(order);
        result.ok = true;
        resolve();
      });
      return;
    }
    const stream = googleClient.serverStreaming(url, request, metadata, descriptor);
    stream.on("data", received);
    stream.on("error", failed);
    stream.on("end", () => { result.ok = true; resolve(); });
  });
}

async function call(transport, method, request, withToken) {
  if (transport === "grpc-web-text") {
    const result = { transport, method, with_token: withToken, ok: false, code: null, message: null, messages: [] };
    const started = Date.now();
    await googleCall(method, request, withToken, result);
    result.elapsed_ms = Date.now() - started;
    return result;
  }
  const client = createClient(Orders, transports[transport]);
  const options = { headers: withToken ? { authorization: `Bearer ${token}` } : {}, timeoutMs: 20000 };
  const result = { transport, method, with_token: withToken, ok: false, code: null, message: null, messages: [] };
  const started = Date.now();
  try {
    if (method === "listOrders") {
      for await (const order of client.listOrders(request, options)) {
        result.messages.push({ ...toJson(OrderSchema, order), received_at_ms: Date.now() });
      }
    } else {
      result.messages.push({ ...toJson(OrderSchema, await client[method](request, options)), received_at_ms: Date.now() });
    }
    result.ok = true;
  } catch (error) {
    const connectError = ConnectError.from(error);
    result.code = codeName(connectError.code);
    result.message = connectError.rawMessage;
  }
  result.elapsed_ms = Date.now() - started;
  return result;
}

async function main() {
  const results = [];
  for (const transport of [...Object.keys(transports), "grpc-web-text"]) {
    results.push(await call(transport, "getOrder", { id: "b-1" }, true));
    results.push(await call(transport, "listOrders", { count: 3, delayMs: 300 }, true));
    results.push(await call(transport, "getOrder", { id: "b-2" }, false));
    // A route without a CORS policy: its preflight is refused as before, so the browser never sends the call.
    results.push(await call(transport, "cancelOrder", { id: "b-3" }, true));
  }
  return { origin: location.origin, results };
}

const report = (body) => fetch("/report", { method: "POST", body: JSON.stringify(body) });
main().then(report, (error) => report({ error: String(error && error.stack || error) }));
