// The page script of the browser test (tests/runtime/test_cors_browser.py), bundled with esbuild:
// Connect-ES's browser transports (@connectrpc/connect-web: fetch) calling the gateway on
// another origin, so every call is a CORS request, preflighted (it sends authorization). Posts
// what each call gave to /report on the page's own origin (or what went wrong, as {"error"}).
//
// Query: ?gateway=URL&token=JWT
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { toJson } from "@bufbuild/protobuf";
import { Orders, OrderSchema } from "./gen/shop/v1/orders_pb.js";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("gateway");
const token = params.get("token");
const transports = {
  connect: createConnectTransport({ baseUrl }),
  "connect-json": createConnectTransport({ baseUrl, useBinaryFormat: false }),
  "grpc-web": createGrpcWebTransport({ baseUrl }),
};
const codeName = (code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();

async function call(transport, method, request, withToken) {
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
  for (const transport of Object.keys(transports)) {
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
