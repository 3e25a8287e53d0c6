// One native gRPC call (GetOrder) over HTTP/1.1, by hand, to show what arrives: status,
// headers, body and the HTTP trailers, where gRPC puts the call's status. Node's http client
// reads HTTP/1.1 trailers (chunked encoding); the Connect origin (server.mjs) sends them.
//
//   node http1_grpc.mjs URL [TOKEN]  ->  {"status", "headers", "body_hex", "trailers"}
import http from "node:http";

const [base, token] = process.argv.slice(2);
const message = Buffer.from([0x0a, 0x01, 0x61]); // GetOrderRequest {id: "a"}
const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
const url = new URL(base + "/shop.v1.Orders/GetOrder");
const headers = { "content-type": "application/grpc+proto", te: "trailers", "content-length": frame.length };
if (token) headers.authorization = `Bearer ${token}`;
const request = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: "POST", headers }, (response) => {
  const chunks = [];
  response.on("data", (chunk) => chunks.push(chunk));
  response.on("end", () => {
    process.stdout.write(JSON.stringify({
      status: response.statusCode, headers: response.headers,
      body_hex: Buffer.concat(chunks).toString("hex"), trailers: response.trailers,
    }) + "\n");
  });
});
request.setTimeout(20000, () => request.destroy(new Error("timed out")));
request.on("error", (error) => { process.stdout.write(JSON.stringify({ error: String(error) }) + "\n"); });
request.end(frame);
