#!/bin/sh
# Stands in for Vector in deploy/test-compose.sh: sends BATCHES bodies of
# EVENTS NDJSON events to Chronos, one every INTERVAL seconds, and retries each until it is answered
# 2xx (committed), as Vector's http sink does. Bodies are the same on every
# run, so a resend after a restart must be stored once. Prints
# "acked B FIRST_LEAF" per body and "done N" at the end, then stays up.
set -u
url=${INGEST_URL:-http://chronos:5000/ingest}
batches=${BATCHES:-40}
events=${EVENTS:-100}
# Seconds between bodies: the test kills containers while bodies flow.
interval=${INTERVAL:-0}
body=/tmp/body.ndjson
b=0
while [ "$b" -lt "$batches" ]; do
    i=0
    : >"$body"
    while [ "$i" -lt "$events" ]; do
        printf '{"shipper":"compose-test","batch":%d,"i":%d,"message":"demo event %d of batch %d"}\n' \
            "$b" "$i" "$i" "$b" >>"$body"
        i=$((i + 1))
    done
    while :; do
        out=$(curl -sS -m 30 -w '\n%{http_code}' -X POST "$url" \
            -H 'content-type: application/x-ndjson' --data-binary @"$body" 2>&1)
        code=$(printf '%s' "$out" | tail -n 1)
        case "$code" in
        2??)
            first=$(printf '%s' "$out" | head -n 1 | sed -n 's/.*"first_leaf":\([0-9]*\).*/\1/p')
            echo "acked $b $first"
            break
            ;;
        *)
            echo "retry $b: $(printf '%s' "$out" | head -n 1)"
            sleep 1
            ;;
        esac
    done
    b=$((b + 1))
    sleep "$interval"
done
echo "done $((batches * events))"
exec sleep infinity
