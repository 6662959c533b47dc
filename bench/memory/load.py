#!/usr/bin/env python3
# Measuring ingest memory (BENCHMARKS.md "ingest: memory under 15 MiB bodies"): 40 clients POST
# 15 MiB NDJSON bodies (distinct per request; --gzip to compress them), retrying 503s.
"""40 concurrent clients POSTing ~15 MiB NDJSON bodies to Chronos ingest.

usage: load.py [--gzip] [--clients 40] [--duration 60] [--url-host 127.0.0.1 --port 5077]
Each client keeps one HTTP/1.1 connection (reconnects on error), sends a body,
on 503 sleeps 0.2 s and re-sends the SAME body, on 200 builds a new distinct body.
"""
import argparse, http.client, json, random, string, sys, threading, time, zlib, collections

p = argparse.ArgumentParser()
p.add_argument("--gzip", action="store_true")
p.add_argument("--clients", type=int, default=40)
p.add_argument("--duration", type=float, default=60)
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--port", type=int, default=5077)
p.add_argument("--lines", type=int, default=15000)
a = p.parse_args()

# One template of 15 000 distinct ~1 KiB JSON lines; a 16-char placeholder in
# every line is replaced per request by a unique request id, so every body
# (and every line) is distinct. Filler: random words, so gzip behaves like
# ordinary log text (~3-4x), not like random bytes or a repeated string.
rng = random.Random(1234)
words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(2000)]
PH = b"@@@@@@@@@@@@@@@@"  # 16 bytes
LINE = 1048  # bytes per JSON line, plus "\n": 15 000 lines = 15.0 MiB
lines = []
for i in range(a.lines):
    obj = {"timestamp": "2024-05-01T12:%02d:%02d.%06dZ" % (i // 3600 % 60, i // 60 % 60, i),
           "level": rng.choice(["info", "warn", "error", "debug"]), "host": "web-%02d" % rng.randint(0, 20),
           "req": PH.decode(), "i": i, "msg": ""}
    base = len(json.dumps(obj, separators=(",", ":")))
    msg, ln = [], 0
    while base + ln < LINE:
        w = rng.choice(words); msg.append(w); ln += len(w) + 1
    obj["msg"] = " ".join(msg)[: LINE - base]
    lines.append(json.dumps(obj, separators=(",", ":")).encode())
TEMPLATE = b"\n".join(lines) + b"\n"
print(f"template: {len(TEMPLATE)} bytes ({len(TEMPLATE)/2**20:.2f} MiB), {a.lines} lines", flush=True)

counter = iter(range(10**12))
clock = threading.Lock()
stats = collections.Counter()
sizes = collections.Counter()
deadline = time.monotonic() + a.duration

def new_body(cid):
    with clock:
        n = next(counter)
    body = TEMPLATE.replace(PH, b"%04d-%011d" % (cid, n))
    if a.gzip:
        body = zlib.compress(body, 1, wbits=31)  # gzip container, level 1 (releases the GIL)
    return body

def client(cid):
    conn = None
    body = new_body(cid)
    hdrs = {"content-type": "application/x-ndjson"}
    if a.gzip:
        hdrs["content-encoding"] = "gzip"
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPConnection(a.host, a.port, timeout=120)
            conn.request("POST", "/ingest", body=body, headers=hdrs)
            r = conn.getresponse()
            r.read()
            with clock:
                stats[r.status] += 1
                sizes[len(body)] += 0
            if r.status == 200:
                body = new_body(cid)
            elif r.status == 503:
                time.sleep(0.2)
            else:
                print(f"client {cid}: HTTP {r.status} {r.reason}", file=sys.stderr, flush=True)
                time.sleep(0.2)
            if r.getheader("connection", "").lower() == "close":
                conn.close(); conn = None
        except Exception as e:
            with clock:
                stats["error:" + type(e).__name__] += 1
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.2)

t0 = time.monotonic()
ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(a.clients)]
for t in ts: t.start()
for t in ts: t.join()
el = time.monotonic() - t0
print(json.dumps({"gzip": a.gzip, "clients": a.clients, "elapsed_s": round(el, 1),
                  "wire_body_bytes_example": len(new_body(0)),
                  "responses": {str(k): v for k, v in sorted(stats.items(), key=str)}}), flush=True)
