#!/usr/bin/env bash
# The failover drill on one machine: a name server, a SYNC_MASTER and its
# slave, a producer at a steady rate, scripts/kill-master.sh mid-stream,
# consumers that keep reading from the slave, the master restarted, and a
# report (lost must be 0). Two hosts as network namespaces when this runs
# as root and `ip netns add` works, else everything on loopback; --net
# forces one. See docs/OPERATIONS.md ("Failover drill").
#
#   scripts/failover-drill.sh [--net auto|netns|loopback] [--kills 1] [--seconds 20]
#                             [--rate 200] [--down-seconds 5] [--up-seconds 5]
#                             [--dir data/drill] [--base-port 19876]
#
# Prints the report as JSON on stdout; exits 0 when lost == 0.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
  *" -h "*|*" --help "*) exec python3 scripts/failover_drill.py --help ;;
esac
[ -x build/bin/mqbroker ] || { scripts/install-deps.sh && cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }

# The drill cleans up its namespaces itself (also on SIGINT/SIGTERM); this
# trap is the backstop if it dies without doing so. Its namespaces are
# named fy-<tag>-<its pid>-a/-b, so parallel runs never collide.
child=""
cleanup() {
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null || true
    if command -v ip >/dev/null; then
      for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^fy-[a-z]+-$child-[ab]\$" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
        echo "failover-drill: removed namespace $ns" >&2
      done
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

python3 scripts/failover_drill.py "$@" &
child=$!
rc=0
wait "$child" || rc=$?
exit "$rc"
