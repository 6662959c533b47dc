#!/usr/bin/env python3
"""Known-answer vectors for the Chronos ledger formats, computed independently
of the Rust code: written straight from spec/ledger.md and RFC 6962 with
Python's hashlib/hmac and the `blake3` package from PyPI.

    pip install blake3==1.0.11 cryptography && python3 ledger/tests/vectors/gen_vectors.py > ledger/tests/vectors/vectors.json

The output is committed; the Rust tests read it. Re-run only when the spec
changes. No hash, root or chain value may ever change for a given /v1 (that
would change every stored log); the proof-file headers were added later.
"""
import hashlib
import hmac
import json
import struct

import base64

import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY = bytes(range(32))  # the test key of the keyed modes: 00 01 02 ... 1f


def make_h(alg):
    if alg == "sha256":
        return lambda b: hashlib.sha256(b).digest()
    if alg == "blake3":
        return lambda b: blake3.blake3(b).digest()
    if alg == "blake3-keyed":
        return lambda b: blake3.blake3(b, key=KEY).digest()
    if alg == "hmac-sha256":
        return lambda b: hmac.new(KEY, b, hashlib.sha256).digest()
    raise ValueError(alg)


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(H, d):
    n = len(d)
    if n == 0:
        return H(b"")
    if n == 1:
        return H(b"\x00" + d[0])
    k = split(n)
    return H(b"\x01" + mth(H, d[:k]) + mth(H, d[k:]))


def path(H, m, d):
    n = len(d)
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return path(H, m, d[:k]) + [mth(H, d[k:])]
    return path(H, m - k, d[k:]) + [mth(H, d[:k])]


def subproof(H, m, d, b):
    n = len(d)
    if m == n:
        return [] if b else [mth(H, d)]
    k = split(n)
    if m <= k:
        return subproof(H, m, d[:k], b) + [mth(H, d[k:])]
    return subproof(H, m - k, d[k:], False) + [mth(H, d[:k])]


def consistency(H, m, d):
    if m == 0 or m == len(d):
        return []
    return subproof(H, m, d, True)


def genesis(H, origin):
    o = origin.encode()
    return H(b"\x03chronos/genesis/v1" + struct.pack(">H", len(o)) + o)


def record(seq, first, count, root, t, unc, src):
    s = src.encode()
    return struct.pack(">QQQ", seq, first, count) + root + struct.pack(">QQ", t, unc) + bytes([len(s)]) + s


def link(H, prev, rec):
    return H(b"\x02chronos/chain/v1" + prev + rec)


def proof_header(alg):
    """First line of a proof file (section 9): C2SP's for sha256 only."""
    if alg == "sha256":
        return "c2sp.org/tlog-proof@v1"
    return "chronos/tlog-proof-%s@v1" % alg


# The eight inputs of the RFC 6962 / certificate-transparency test corpus,
# then 33 more of varied lengths.
LEAVES = [bytes.fromhex(x) for x in ["", "00", "10", "2021", "3031", "40414243",
                                     "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
LEAVES += [bytes([(i * 7 + j) % 256 for j in range(i % 13)]) + b'{"i":%d}' % i for i in range(8, 41)]

ORIGIN = "example.com/chronos/vectors"


def vectors(alg):
    H = make_h(alg)
    n = len(LEAVES)
    out = {
        "alg": alg,
        "proof_header": proof_header(alg),
        "leaf_hashes": [H(b"\x00" + d).hex() for d in LEAVES],
        "roots": [mth(H, LEAVES[:s]).hex() for s in range(n + 1)],
        "inclusion": [],
        "consistency": [],
    }
    for size in range(1, n + 1):
        for idx in range(size):
            if size <= 17 or idx in (0, size // 2, size - 1):
                out["inclusion"].append({"index": idx, "size": size,
                                         "proof": [h.hex() for h in path(H, idx, LEAVES[:size])]})
    for new in range(1, n + 1):
        for old in range(0, new + 1):
            if new <= 17 or old in (1, new // 2, new - 1):
                out["consistency"].append({"old": old, "new": new,
                                           "proof": [h.hex() for h in consistency(H, old, LEAVES[:new])]})
    g = genesis(H, ORIGIN)
    batches = [
        (1, 0, 3, 1_763_700_000_000_000_000, 0, "local"),
        (2, 3, 1, 1_763_700_000_250_000_000, 1_500_000, "local"),
        (3, 4, 37, 1_763_700_001_000_000_001, 18_446_744_073_709_551_615, "quorum:3-of-5"),
    ]
    chain = {"origin": ORIGIN, "genesis": g.hex(), "batches": []}
    prev = g
    for seq, first, count, t, unc, src in batches:
        root = mth(H, LEAVES[first:first + count])
        rec = record(seq, first, count, root, t, unc, src)
        prev = link(H, prev, rec)
        chain["batches"].append({"seq": seq, "first_leaf": first, "leaf_count": count, "root": root.hex(),
                                 "time_ns": t, "uncertainty_ns": unc, "source": src,
                                 "record": rec.hex(), "chain": prev.hex()})
    out["chain"] = chain
    if alg in ("blake3-keyed", "hmac-sha256"):
        out["key"] = KEY.hex()
        out["key_check"] = H(b"\x04chronos/key-check/v1")[:8].hex()
    return out


def b64(b):
    return base64.b64encode(b).decode()


def spec_example():
    """The worked example of spec/ledger.md sections 8 and 9: the blake3 log
    after its third batch, signed with the example key (seed 0x5e * 32)."""
    v = vectors("blake3")
    H = make_h("blake3")
    origin = ORIGIN
    sk = Ed25519PrivateKey.from_private_bytes(bytes([0x5e] * 32))
    pk = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + pk).digest()[:4]
    vkey = "%s+%s+%s" % (origin, key_id.hex(), b64(b"\x01" + pk))
    last = v["chain"]["batches"][-1]
    body = "%s\n%d\n%s\nhash blake3\nchain %d %s\ntime %d %d %s\n" % (
        origin, len(LEAVES), b64(bytes.fromhex(v["roots"][len(LEAVES)])), last["seq"],
        b64(bytes.fromhex(last["chain"])), 1_763_700_001_500_000_000, 2_000_000, "local")
    sig = sk.sign(body.encode())
    note = body + "\n" + "\u2014 " + origin + " " + b64(key_id + sig) + "\n"
    proof = "%s\nextra %s\nindex 5\n" % (proof_header("blake3"), b64(H(b"\x00" + LEAVES[5])))
    proof += "".join(b64(h) + "\n" for h in path(H, 5, LEAVES)) + "\n" + note
    return {"verifier_key": vkey, "checkpoint": note, "proof": proof}


def main():
    doc = {
        "generator": "ledger/tests/vectors/gen_vectors.py",
        "leaves": [d.hex() for d in LEAVES],
        "algorithms": [vectors(a) for a in ["sha256", "blake3", "blake3-keyed", "hmac-sha256"]],
        "spec_example": spec_example(),
    }
    print(json.dumps(doc, separators=(",", ":")))


if __name__ == "__main__":
    main()
