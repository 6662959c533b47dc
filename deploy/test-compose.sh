#!/usr/bin/env bash
# Runs the top-level docker-compose.yml in real containers and checks what
# the README promises of it. No image registry is reachable here, so it
# first builds its images from Debian's packages:
#   - a Debian 12 base image (mmdebstrap, cached in podman's storage);
#   - Chronos's image from deploy/Dockerfile, its runtime stage unchanged,
#     with the binary built on this host (`cargo test --no-run`, as the suite);
#   - PostgreSQL 15 (deploy/test/postgres.Containerfile) and a curl shipper
#     standing in for Vector (deploy/test/shipper.sh);
#   (the image in Docker's format, which keeps its HEALTHCHECK; OCI images drop it)
# then runs `podman-compose` on docker-compose.yml with
# deploy/test/compose.override.yml, and checks:
#   1. the stack comes up and its health checks pass;
#   2. the shipper's bodies are committed (thousands of events);
#   3. SIGKILL of the Chronos container's processes, and of PostgreSQL's,
#      mid-stream: the restart policy brings each back, every body is
#      committed exactly once, and `chronos verify` finds the log intact;
#   4. `down` then `up` again keeps the log: same events, the shipper's
#      resent bodies stored once, verify intact, the tree only grows.
# Needs root, podman with runc and cgroupfs, podman-compose and mmdebstrap
# (.ci/run installs and configures them; README.md, Prerequisites).
set -euo pipefail
cd "$(dirname "$0")/.."

project=chronos-test
base=localhost/chronos-test/debian:bookworm
work=${CHRONOS_COMPOSE_WORK:-/var/tmp/chronos-compose-test}
export SHIPPER_BATCHES=${SHIPPER_BATCHES:-80} SHIPPER_EVENTS=${SHIPPER_EVENTS:-100} SHIPPER_INTERVAL=${SHIPPER_INTERVAL:-0.2}
total=$((SHIPPER_BATCHES * SHIPPER_EVENTS))
# Host ports of their own, so that a Chronos already running here is no obstacle.
export CHRONOS_PORT_INGEST=15000 CHRONOS_PORT_BRIDGE=15080 CHRONOS_PORT_GRPC=15090 \
    CHRONOS_PORT_NTP=15123 CHRONOS_PORT_ROUGHTIME=12002
# The default hasher count (one per core), in shared memory that holds the
# rings of one hasher (192 MiB + 129 MiB) but not of two: Chronos must
# start with one, and say so on a host of more than one core.
unset CHRONOS_HASHERS
export CHRONOS_SHM_SIZE=400mb

started=$SECONDS
# Messages go to fd 3, the script's stdout, also from checks whose own
# output wait_for silences.
exec 3>&1
say() { printf '[%4d s] %s\n' $((SECONDS - started)) "$*" >&3; }
fail() {
    exec 1>&3 2>&3
    say "FAILED: $*"
    for s in postgres chronos vector; do
        echo "----- last lines of $s -----"
        podman logs "$(ctr "$s" 2>/dev/null)" 2>&1 | grep -v '^retry ' | grep -E -m 10 'ERROR|error|FATAL' || true
        podman logs --tail 20 "$(ctr "$s" 2>/dev/null)" 2>&1 || true
    done
    if [ -n "${CHRONOS_COMPOSE_KEEP:-}" ]; then
        trap - EXIT
        say "CHRONOS_COMPOSE_KEEP is set: the stack is left running (podman-compose -p $project ... down -v)"
    fi
    exit 1
}
compose() { podman-compose -p "$project" -f docker-compose.yml -f deploy/test/compose.override.yml "$@"; }
ctr() { podman ps -a -q --filter "label=io.podman.compose.project=$project" --filter "label=com.docker.compose.service=$1" | head -n 1; }
# wait_for SECONDS WHAT COMMAND...: runs COMMAND until it succeeds.
wait_for() {
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - t0 < limit)) || fail "$what: not after $limit s"
        sleep 1
    done
    say "$what ($((SECONDS - t0)) s)"
}
healthy() { podman healthcheck run "$(ctr "$1")"; }
psql_q() { podman exec "$(ctr postgres)" psql -U chronos -d chronos -tAq -c "$1"; }
# Events of the shipper's bodies in `logs`: all of them, and distinct ones.
stored() { psql_q "select count(*) || ' ' || count(distinct event) from logs where position('compose-test' in convert_from(event, 'UTF8')) > 0"; }
all_stored() { [ "$(stored)" = "$total $total" ]; }
acked() { podman logs "$(ctr vector)" 2>/dev/null | grep -c '^acked ' || true; }
acked_at_least() { (($(acked) >= $1)); }
# (grep -c reads to the end: with grep -q, podman logs could die of
# SIGPIPE and pipefail fail the check.)
shipper_done() { (($(podman logs "$(ctr vector)" 2>/dev/null | grep -c "^done $total$" || true) > 0)); }
# `chronos verify`: 0 intact; 3 intact so far, `logs` still being restored
# after PostgreSQL's crash (asked again); 1 tampering found (fails at once).
verify_intact() {
    local rc=0
    podman exec "$(ctr chronos)" chronos verify --data-dir /data --key /data/log.vkey >"$work/verify.log" 2>&1 || rc=$?
    [ "$rc" != 1 ] || { cat "$work/verify.log"; fail "chronos verify found tampering"; }
    return "$rc"
}
retries() { podman logs "$(ctr vector)" 2>/dev/null | grep -c '^retry ' || true; }
tree_size() { psql_q "select coalesce(max(tree_size), 0) from checkpoints"; }
# SIGKILL of a container's first process from the host: the whole container
# dies as in a crash (not a stop the restart policy would honour).
crash() {
    local id pid
    id=$(ctr "$1")
    pid=$(podman inspect -f '{{.State.Pid}}' "$id")
    kill -KILL "$pid"
    say "SIGKILL to $1 (pid $pid on the host)"
    wait_for 60 "$1 restarted by its restart policy" restarted "$id" "$pid"
}
restarted() {
    local pid
    pid=$(podman inspect -f '{{.State.Pid}}' "$1")
    [ "$pid" != 0 ] && [ "$pid" != "$2" ]
}

for tool in podman podman-compose mmdebstrap runc; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install podman podman-compose mmdebstrap runc uidmap)"
done
[ "$(id -u)" = 0 ] || fail "run as root (podman here runs as root with runc)"

mkdir -p "$work"
trap 'compose down -v >/dev/null 2>&1 || true' EXIT
compose down -v >/dev/null 2>&1 || true

if ! podman image exists "$base"; then
    say "building the Debian 12 base image with mmdebstrap"
    mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$work/base.tar"
    podman import --quiet "$work/base.tar" "$base" >/dev/null
    rm -f "$work/base.tar"
fi
say "base image $base"

say "building chronos on the host"
# The binary the test suite runs (`cargo test --no-run` builds it with the
# same features as `cargo nextest run --workspace`, so after the suite
# this builds nothing; `cargo build -p chronos-cli` would rebuild much).
cargo test --workspace --locked --no-run --quiet 2>"$work/build.log" || { cat "$work/build.log"; fail "cargo test --no-run"; }
rm -rf "$work/bin" && mkdir -p "$work/bin"
strip -o "$work/bin/chronos" target/debug/chronos
printf 'FROM %s\nCOPY chronos /usr/local/bin/chronos\n' "$base" >"$work/bin/Containerfile"
podman build -q -t localhost/chronos-test/prebuilt "$work/bin" >/dev/null
podman build -q --format docker --build-arg BUILDER=localhost/chronos-test/prebuilt --build-arg RUNTIME="$base" \
    -t localhost/chronos-test/chronos -f deploy/Dockerfile . >/dev/null
for image in postgres shipper; do
    podman build -q --build-arg BASE="$base" -t "localhost/chronos-test/$image" \
        -f "deploy/test/$image.Containerfile" . >/dev/null
done
say "images built: $(podman images --format '{{.Repository}} {{.Size}}' | grep chronos-test/ | tr '\n' ',' | sed 's/,$//')"

compose up -d >/dev/null 2>"$work/up.log" || { cat "$work/up.log"; fail "podman-compose up"; }
wait_for 180 "postgres healthy" healthy postgres
wait_for 180 "chronos healthy" healthy chronos
curl -fsS "http://127.0.0.1:$CHRONOS_PORT_INGEST/readyz" >/dev/null || fail "ingest is not published on 127.0.0.1:$CHRONOS_PORT_INGEST"
curl -fsS "http://127.0.0.1:$CHRONOS_PORT_BRIDGE/checkpoint" >/dev/null || fail "the bridge is not published on 127.0.0.1:$CHRONOS_PORT_BRIDGE"
say "ingest and the bridge answer on their published ports"
[ "$(podman exec "$(ctr chronos)" id -u)" != 0 ] || fail "chronos runs as root in its container"
rings=$(podman exec "$(ctr chronos)" sh -c 'ls /dev/shm | grep -c -- -hashed-' || true)
[ "$rings" = 1 ] || fail "$rings hashers' rings in a /dev/shm of $CHRONOS_SHM_SIZE, not 1"
cores=$(podman exec "$(ctr chronos)" nproc)
if [ "$cores" -gt 1 ]; then
    said=$(podman logs "$(ctr chronos)" 2>&1 | grep -c -F "1 hasher(s), not one per core ($cores)" || true)
    ((said > 0)) || fail "no word of running 1 hasher on $cores cores"
fi
say "one hasher on $cores core(s): what a /dev/shm of $CHRONOS_SHM_SIZE holds"

wait_for 120 "a quarter of the shipper's bodies committed" acked_at_least $((SHIPPER_BATCHES / 4))
crash chronos
wait_for 180 "chronos healthy again" healthy chronos
wait_for 120 "half of the shipper's bodies committed" acked_at_least $((SHIPPER_BATCHES / 2))
crash postgres
wait_for 180 "postgres healthy again" healthy postgres
wait_for 300 "the shipper's $total events acknowledged" shipper_done
wait_for 60 "each of them stored exactly once" all_stored
say "the shipper retried $(retries) time(s) while containers were down"
wait_for 180 "chronos verify: intact" verify_intact
size=$(tree_size)
say "tree size $size in the last checkpoint"

compose down >/dev/null 2>>"$work/up.log" || fail "podman-compose down"
say "down"
compose up -d >/dev/null 2>>"$work/up.log" || fail "podman-compose up (again)"
wait_for 180 "postgres healthy after up" healthy postgres
wait_for 180 "chronos healthy after up" healthy chronos
wait_for 300 "the shipper's resent bodies acknowledged" shipper_done
all_stored || fail "after down and up: $(stored) (stored, distinct), not $total"
say "each event still stored exactly once ($total)"
wait_for 180 "chronos verify: intact after down and up" verify_intact
after=$(tree_size)
((after >= size)) || fail "the tree shrank from $size to $after"
say "tree size $after (was $size)"
say "PASSED in $((SECONDS - started)) s"
