#!/usr/bin/env bash
# Installs what Ferry needs to build, test and benchmark on Debian 12.
# Idempotent: does nothing when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config python3
      libuv1-dev libprotobuf-c-dev protobuf-c-compiler liburing-dev libcmocka-dev libjansson-dev libxxhash-dev
      fio
      iproute2 nftables   # the drill's and test_ha_netns's hosts as network namespaces, link cuts
      rt-tests            # cyclictest: bench/e2e_bench.sh measures the machine's own wake-up latency
      clang libclang-rt-14-dev) # clang's libFuzzer runtime, for scripts/fuzz.sh

# Node.js runs the RocketMQ client the integration tests drive (ali-ons, from
# the npm registry; tests/integration/rmq/package-lock.json pins it).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -ne 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

rmq=tests/integration/rmq
if [ ! -f "$rmq/node_modules/.package-lock.json" ] ||
   ! cmp -s "$rmq/package-lock.json" "$rmq/node_modules/.ferry-lock"; then
  echo "install-deps: npm ci in $rmq (RocketMQ client for the tests)" >&2
  (cd "$rmq" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$rmq/package-lock.json" "$rmq/node_modules/.ferry-lock"
fi
