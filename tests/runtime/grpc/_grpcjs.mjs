import * as grpc from "@grpc/grpc-js";
import { toBinary, fromBinary, create } from "@bufbuild/protobuf";
import { GetOrderRequestSchema, OrderSchema } from "./gen/shop/v1/orders_pb.js";
const [target, token] = process.argv.slice(2);
const client = new grpc.Client(target, grpc.credentials.createInsecure());
const md = new grpc.Metadata(); if (token) md.set("authorization", `Bearer ${token}`);
const started = Date.now();
client.makeUnaryRequest("/shop.v1.Orders/GetOrder", (m) => Buffer.from(toBinary(GetOrderRequestSchema, create(GetOrderRequestSchema, m))), (b) => fromBinary(OrderSchema, b), { id: "a" }, md, { deadline: Date.now() + 5000 }, (err, res) => {
  console.log(JSON.stringify({ err: err && { code: err.code, details: err.details }, res: res && res.id, ms: Date.now() - started }));
  process.exit(0);
});
