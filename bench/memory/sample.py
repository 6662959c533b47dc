#!/usr/bin/env python3
# Samples /proc/PID/status of the process in PIDFILE every 100 ms and prints the maxima (and,
# with METRICS_URL, the ingest in-flight gauge). Usage: sample.py PIDFILE DURATION_S OUTCSV [METRICS_URL]
"""Samples /proc/<pid>/status of the ingest process every 100 ms; prints maxima.
Optionally (4th arg = ingest metrics URL) also chronos_ingest_inflight_bytes.
usage: sample.py PIDFILE DURATION_S OUTCSV [METRICS_URL]"""
import sys, time, json, urllib.request
murl = sys.argv[4] if len(sys.argv) > 4 else None
def inflight():
    try:
        for l in urllib.request.urlopen(murl, timeout=0.5).read().decode().splitlines():
            if l.startswith("chronos_ingest_inflight_bytes "):
                return int(float(l.split()[1]))
    except Exception:
        return ""
    return ""
pidfile, dur, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
KEYS = ["VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"]
mx = {k: 0 for k in KEYS}
pids = set()
ifmax = 0
n = 0
end = time.monotonic() + dur
with open(out, "w") as f:
    f.write("t," + ",".join(KEYS) + ",pid,inflight_bytes\n")
    t0 = time.monotonic()
    nxt = t0
    while time.monotonic() < end:
        try:
            pid = int(open(pidfile).read().split()[0])
            vals = {}
            for line in open(f"/proc/{pid}/status"):
                k, _, v = line.partition(":")
                if k in KEYS:
                    vals[k] = int(v.split()[0])
            pids.add(pid)
            ib = inflight() if murl else ""
            if ib != "":
                ifmax = max(ifmax, ib)
            for k in KEYS:
                mx[k] = max(mx[k], vals.get(k, 0))
            f.write("%.2f," % (time.monotonic() - t0) + ",".join(str(vals.get(k, "")) for k in KEYS) + f",{pid},{ib}\n")
            n += 1
        except (OSError, ValueError):
            pass
        nxt += 0.1
        time.sleep(max(0, nxt - time.monotonic()))
res = {k + ("_kB" if k != "Threads" else ""): v for k, v in mx.items()}
res.update({k + "_MiB": round(mx[k] / 1024, 1) for k in KEYS if k != "Threads"})
res["inflight_bytes_max_MiB"] = round(ifmax / 2**20, 1)
res["samples"] = n
res["pids"] = sorted(pids)
print(json.dumps(res), flush=True)
