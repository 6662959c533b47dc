#!/bin/sh
# Creates the log on first start (signing key in the /data volume), then runs it.
set -eu
if [ ! -f /data/chronos.toml ]; then
    chronos init --data-dir /data ${CHRONOS_ORIGIN:+--origin "$CHRONOS_ORIGIN"} ${CHRONOS_HASH:+--hash "$CHRONOS_HASH"}
fi
exec chronos up --data-dir /data "$@"
