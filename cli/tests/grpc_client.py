"""A gRPC client of the bridge, generated from proto/ by grpcio-tools.

Usage: grpc_client.py STUBS_DIR GRPC_ADDR health
       grpc_client.py STUBS_DIR GRPC_ADDR full INGEST_ADDR OLD_SIZE

"full": health, reflection, every Time and Ledger method (a consistency
proof from tree size OLD_SIZE), the errors the bridge must give, and a
checkpoint watch that sees the checkpoint of an event this script
ingests. MODE "health": the health
of each service. Prints one JSON object; the Rust test checks it (and
checks the proofs with chronos verify-proof and tlog_tiles).
"""

import base64
import json
import sys
import time
import urllib.request

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402

from chronos.ledger.v1 import ledger_pb2, ledger_pb2_grpc  # noqa: E402
from chronos.time.v1 import time_pb2, time_pb2_grpc  # noqa: E402

addr, mode = sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(addr)
grpc.channel_ready_future(channel).result(timeout=10)
out = {}

health = health_pb2_grpc.HealthStub(channel)
out["health"] = {
    name: health_pb2.HealthCheckResponse.ServingStatus.Name(
        health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
    )
    for name in ["", "chronos.time.v1.Time", "chronos.ledger.v1.Ledger"]
}
if mode == "health":
    print(json.dumps(out))
    sys.exit(0)

# Reflection (v1alpha: what most tools still ask).
refl = reflection_pb2_grpc.ServerReflectionStub(channel)
answers = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
out["services"] = sorted(s.name for a in answers for s in a.list_services_response.service)

t = time_pb2_grpc.TimeStub(channel)
now = t.Now(time_pb2.NowRequest(), timeout=5)
out["now"] = {
    "synchronized": now.synchronized,
    "earliest_ns": now.earliest_ns,
    "latest_ns": now.latest_ns,
    "midpoint_ns": now.midpoint_ns,
    "uncertainty_ns": now.uncertainty_ns,
    "source": now.source,
    "local_ns": time.time_ns(),
}
out["signed_note"] = t.Now(time_pb2.NowRequest(signed=True), timeout=5).signed_note
watch = t.Watch(time_pb2.WatchRequest(interval_ms=50), timeout=10)
out["watch"] = [next(watch).midpoint_ns for _ in range(3)]
watch.cancel()


def code_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name + ": " + e.details()


out["errors"] = {
    "watch_too_fast": code_of(lambda: next(t.Watch(time_pb2.WatchRequest(interval_ms=5), timeout=5))),
}

ledger = ledger_pb2_grpc.LedgerStub(channel)


def cp_json(cp):
    return {
        "origin": cp.origin,
        "tree_size": cp.tree_size,
        "root_hash": base64.b64encode(cp.root_hash).decode(),
        "hash": cp.hash,
        "note": cp.note,
    }


head = ledger.GetCheckpoint(ledger_pb2.GetCheckpointRequest(), timeout=5)
out["checkpoint"] = cp_json(head)
leaf = head.tree_size // 2
p = ledger.GetInclusionProof(ledger_pb2.GetInclusionProofRequest(leaf_index=leaf), timeout=5)
out["inclusion"] = {
    "leaf_index": p.leaf_index,
    "leaf_hash": p.leaf_hash.hex(),
    "tree_size": p.tree_size,
    "path": [base64.b64encode(h).decode() for h in p.path],
    "checkpoint": cp_json(p.checkpoint),
    "proof_file": p.proof_file,
}
by_hash = ledger.GetInclusionProof(ledger_pb2.GetInclusionProofRequest(leaf_hash=p.leaf_hash), timeout=5)
out["inclusion_by_hash_index"] = by_hash.leaf_index
c = ledger.GetConsistencyProof(ledger_pb2.GetConsistencyProofRequest(old_size=int(sys.argv[5])), timeout=5)
out["consistency"] = {
    "old_size": c.old_size,
    "new_size": c.new_size,
    "old_root": base64.b64encode(c.old_root).decode(),
    "new_root": base64.b64encode(c.new_root).decode(),
    "proof": [base64.b64encode(h).decode() for h in c.proof],
    "old_checkpoint": c.old_checkpoint,
    "new_checkpoint": c.new_checkpoint,
}
out["errors"].update({
    "leaf_beyond": code_of(lambda: ledger.GetInclusionProof(
        ledger_pb2.GetInclusionProofRequest(leaf_index=10**9), timeout=5)),
    "short_hash": code_of(lambda: ledger.GetInclusionProof(
        ledger_pb2.GetInclusionProofRequest(leaf_hash=b"abc"), timeout=5)),
    "no_leaf": code_of(lambda: ledger.GetInclusionProof(ledger_pb2.GetInclusionProofRequest(), timeout=5)),
    "old_after_new": code_of(lambda: ledger.GetConsistencyProof(
        ledger_pb2.GetConsistencyProofRequest(old_size=5, new_size=2), timeout=5)),
})

# Watch checkpoints: the newest first, then the one covering an event
# ingested now.
watch = ledger.WatchCheckpoints(ledger_pb2.WatchCheckpointsRequest(), timeout=60)
first = next(watch)
req = urllib.request.Request(
    "http://" + sys.argv[4] + "/ingest",
    data=b'{"message":"over grpc"}\n',
    headers={"content-type": "application/x-ndjson"},
)
with urllib.request.urlopen(req, timeout=30) as r:
    out["ingest_status"] = r.status
following = next(watch)
watch.cancel()
out["watched"] = [cp_json(first), cp_json(following)]
print(json.dumps(out))
