#!/usr/bin/env bash
# Quickstart: installs dependencies, builds Ferry, and shows messages going
# through the store with embedded defaults; all data under ./data/quickstart.
# (Once the broker lands, this starts a name server, a master and a slave.)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

data=data/quickstart
rm -rf "$data"
mkdir -p "$data"
echo "== writing 10000 messages to $data/store (SYNC_FLUSH, group commit)"
start=$(date +%s.%N)
build/bin/ferry-store write -d "$data/store" --sync --count 10000 --size 128 --inflight 256 \
  > "$data/acked.txt"
end=$(date +%s.%N)
echo "   acknowledged: $(wc -l < "$data/acked.txt") in $(awk "BEGIN{printf \"%.2f\", $end - $start}") s"
echo "   first ack:    $(head -1 "$data/acked.txt")"
echo "== recovering and verifying every acknowledged message"
build/bin/ferry-store verify -d "$data/store" --acked "$data/acked.txt"
echo "== store layout"
find "$data/store" -maxdepth 3 | sort | head -20
