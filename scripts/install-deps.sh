#!/usr/bin/env bash
# Installs what Ferry needs to build, test and benchmark on Debian 12.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

PKGS=(build-essential cmake pkg-config python3
      libuv1-dev libprotobuf-c-dev protobuf-c-compiler liburing-dev libcmocka-dev libjansson-dev libxxhash-dev
      fio
      iproute2 nftables   # the drill's and test_ha_netns's hosts as network namespaces, link cuts
      clang libclang-rt-14-dev) # clang's libFuzzer runtime, for scripts/fuzz.sh

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
