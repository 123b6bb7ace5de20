#!/usr/bin/env bash
# Quickstart: installs dependencies, builds Ferry, starts a local cluster
# (a name server, broker-a as SYNC_MASTER and its slave broker-a-s, all on
# loopback, all data and logs under ./data/quickstart), and shows a message
# going through. The cluster keeps running: scripts/cluster.sh stop stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

scripts/cluster.sh start data/quickstart
ns=127.0.0.1:9876
echo
echo "== mqadmin clusterList -n $ns"
for _ in $(seq 1 50); do   # brokers register within a few seconds
  out=$(build/bin/mqadmin clusterList -n "$ns" 2>/dev/null || true)
  [ "$(echo "$out" | grep -c broker-a)" -ge 2 ] && break
  sleep 0.2
done
echo "$out"
# The master is a SYNC_MASTER: until its slave's replication link is up, a
# send is stored on the master only and answered SLAVE_NOT_AVAILABLE. The
# slave registers with the name server a moment before that link is up.
for _ in $(seq 1 100); do
  ha=$(build/bin/mqadmin haStatus -n "$ns" -b 127.0.0.1:10911 2>/dev/null || true)
  echo "$ha" | grep -Eq '^slaves +: [1-9]' && break
  sleep 0.1
done
echo
msg="Hello Ferry, $(date -u +%H:%M:%S)"
echo "== echo '$msg' | mqproduce -n $ns -t QuickStart --tag demo"
echo "$msg" | build/bin/mqproduce -n "$ns" -t QuickStart --tag demo
echo
echo "== mqconsume -n $ns -t QuickStart -g QuickStartGroup --from first --max 1 --format json"
build/bin/mqconsume -n "$ns" -t QuickStart -g QuickStartGroup --from first --max 1 \
  --idle-exit-ms 20000 --format json 2>/dev/null
echo
echo "The cluster is still running (logs and data in data/quickstart)."
echo "Try:  build/bin/mqadmin topicStatus -n $ns -t QuickStart"
echo "Stop: scripts/cluster.sh stop"
