#!/usr/bin/env bash
# The failover drill on one machine: a name server, a SYNC_MASTER and its
# slave, a producer at a steady rate, scripts/kill-master.sh mid-stream,
# consumers that keep reading from the slave, the master restarted, and a
# report (lost must be 0). Runs on loopback; see docs/OPERATIONS.md.
#
#   scripts/failover-drill.sh [--seconds 20] [--rate 200] [--down-seconds 5] [--dir data/drill]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/mqbroker ] || { scripts/install-deps.sh && cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
exec python3 scripts/failover_drill.py "$@"
