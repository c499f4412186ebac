// A lookup through saec.v1.EmbeddingService from Node.js (@grpc/grpc-js, @grpc/proto-loader),
// loading the service from proto/saec/v1/saec.proto at run time.
//
//   node node_lookup.js PROTO_ROOT TARGET REQUEST_JSON
//
// REQUEST_JSON is a saec.v1.LookupRequest as JSON ({"fields": [{"field": "user", "ids": ["3"]}]},
// 64-bit ids as decimal strings). Prints the answer as JSON, bytes fields in base64.
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [protoRoot, target, requestJson] = process.argv.slice(2);
const definition = protoLoader.loadSync(path.join(protoRoot, "saec/v1/saec.proto"), {
  includeDirs: [protoRoot],
  longs: String, // uint64 and int64 as decimal strings: no precision lost
  bytes: Buffer,
  defaults: true,
});
const saec = grpc.loadPackageDefinition(definition).saec.v1;
const client = new saec.EmbeddingService(target, grpc.credentials.createInsecure());
const deadline = new Date(Date.now() + 10000);

client.Lookup(JSON.parse(requestJson), { deadline }, (err, answer) => {
  if (err) {
    console.error(`Lookup failed: ${err.code} ${err.details}`);
    process.exit(1);
  }
  console.log(JSON.stringify({
    version: answer.version,
    fields: answer.fields.map((f) => ({
      field: f.field,
      count: f.count,
      dim: f.dim,
      vectors: f.vectors.toString("base64"),
      found: f.found.toString("base64"),
    })),
  }));
  client.close();
});
