// A Node.js client of osd: loads proto/ with @grpc/proto-loader (and nothing
// else: google/api and google/rpc are vendored there), then creates,
// inspects, lists and deletes a volume, and decodes a failed call's
// google.rpc details. Prints one JSON object with what it saw.
//
//   node smoke.mjs ENDPOINT TOKEN CLUSTER_ID
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const [endpoint, token, clusterId] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const protoDir = path.resolve(here, "../../proto");

const definition = protoLoader.loadSync("osd/v1/volume.proto", {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
});
const osd = grpc.loadPackageDefinition(definition).osd.v1;
const volumes = new osd.VolumeService(endpoint, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${token}`);

function call(method, request) {
  return new Promise((resolve, reject) => {
    volumes[method](request, metadata, { deadline: Date.now() + 30000 }, (err, reply) =>
      err ? reject(err) : resolve(reply),
    );
  });
}

// The details of a failed call: google.rpc.Status in grpc-status-details-bin.
const root = new protobuf.Root();
root.resolvePath = (_origin, target) =>
  target.startsWith("google/protobuf/") ? target : path.join(protoDir, target);
root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
root.resolveAll();
const Status = root.lookupType("google.rpc.Status");

function details(err) {
  const [raw] = err.metadata.get("grpc-status-details-bin");
  const status = Status.decode(raw);
  const out = { code: status.code, message: status.message };
  for (const any of status.details) {
    const type = root.lookupType(any.type_url.split("/").pop());
    const detail = type.toObject(type.decode(any.value));
    if (any.type_url.endsWith("ErrorInfo")) {
      out.reason = detail.reason;
    } else if (any.type_url.endsWith("BadRequest")) {
      out.fields = detail.fieldViolations.map((v) => v.field);
    } else if (any.type_url.endsWith("RequestInfo")) {
      out.request_id = detail.requestId;
    }
  }
  return out;
}

const seen = {};
const created = await call("CreateVolume", { cluster_id: clusterId, name: "from-node", size: "2G" });
seen.created = { name: created.volume.name, size_bytes: created.volume.size_bytes };
const inspected = await call("InspectVolume", { volume_id: created.volume.id });
seen.inspected = inspected.volume.id === created.volume.id;
const listed = await call("ListVolumes", { cluster_id: clusterId });
seen.listed = listed.volumes.map((v) => v.name);
await call("DeleteVolume", { volume_id: created.volume.id });
try {
  await call("InspectVolume", { volume_id: created.volume.id });
  seen.after_delete = "found";
} catch (err) {
  seen.after_delete = grpc.status[err.code];
}
try {
  await call("CreateVolume", { cluster_id: "not-an-id", name: "bad name!", size: "2G" });
  seen.error = "none";
} catch (err) {
  seen.error = { grpc_code: grpc.status[err.code], ...details(err) };
}
volumes.close();
console.log(JSON.stringify(seen));
