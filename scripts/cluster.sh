#!/usr/bin/env bash
# A local cluster on this machine: one name server, broker-a (SYNC_MASTER)
# and its slave broker-a-s, all on loopback, all data and logs under one
# folder (default ./data/quickstart).
#
#   scripts/cluster.sh start [DIR]    start (idempotent), wait until serving
#   scripts/cluster.sh stop [DIR]     stop gracefully (SIGTERM)
#   scripts/cluster.sh status [DIR]
#
# Ports: name server 9876, master 10911 (HA 10912), slave 10921.
# FERRY_BIN: where the binaries are (default build/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-status}
dir=${2:-data/quickstart}
bin=${FERRY_BIN:-build/bin}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

listening() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

# wait_ready NAME PIDFILE PORT: wait until the process says it serves on
# PORT ("... listening on port PORT", printed once every listener is up:
# a broker that takes its client port and then fails on its HA port must
# not count as started), or fail if it exits first.
wait_ready() {
  local name=$1 pid
  pid=$(cat "$2")
  for _ in $(seq 1 100); do
    if grep -q "listening on port $3\$" "$dir/$name.log" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "cluster: $name exited while starting; the end of $dir/$name.log:" >&2
      tail -n 5 "$dir/$name.log" >&2
      rm -f "$2"
      return 1
    fi
    sleep 0.1
  done
  echo "cluster: $name (pid $pid) does not serve on port $3 after 10 s; see $dir/$name.log" >&2
  return 1
}

start_one() { # name pidfile "port [more ports]" args...; ready once it serves on port
  local name=$1 pidfile=$2 ports=$3 port=${3%% *} p
  shift 3
  if alive "$pidfile"; then
    echo "cluster: $name already running (pid $(cat "$pidfile"))"
    return 0
  fi
  # Something else on a port (say a cluster started from another folder):
  # the new process would only die on its bind.
  for p in $ports; do
    if listening "$p"; then
      echo "cluster: port $p is in use by another process, so $name cannot start;" \
        "stop it first (a cluster started from another folder: scripts/cluster.sh stop THAT_DIR)" >&2
      return 1
    fi
  done
  "$@" > "$dir/$name.log" 2>&1 &
  echo $! > "$pidfile"
  wait_ready "$name" "$pidfile" "$port"
  echo "cluster: $name started (pid $(cat "$pidfile"), port $port, log $dir/$name.log)"
}

case $cmd in
  start)
    [ -x $bin/mqbroker ] || { echo "cluster: build first (cmake -S . -B build && cmake --build build)" >&2; exit 1; }
    start_one namesrv "$dir/namesrv.pid" 9876 $bin/mqnamesrv -o listenAddress=127.0.0.1
    start_one broker-a "$dir/broker-a.pid" "10911 10912" $bin/mqbroker -c conf/broker-a.conf \
      -o storePathRootDir="$dir/broker-a" -o pidFile="$dir/broker-a.pid" \
      -o listenAddress=127.0.0.1 -o autoCreateTopicEnable=true -o registerNameServerPeriod=5000
    start_one broker-a-s "$dir/broker-a-s.pid" 10921 $bin/mqbroker -c conf/broker-a-s.conf \
      -o storePathRootDir="$dir/broker-a-s" -o pidFile="$dir/broker-a-s.pid" \
      -o listenAddress=127.0.0.1 -o autoCreateTopicEnable=true -o registerNameServerPeriod=5000
    ;;
  stop)
    for name in broker-a-s broker-a namesrv; do
      pidfile="$dir/$name.pid"
      if alive "$pidfile"; then
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "cluster: $name stopped"
      fi
      rm -f "$pidfile"
    done
    ;;
  status)
    for name in namesrv broker-a broker-a-s; do
      if alive "$dir/$name.pid"; then echo "$name: running (pid $(cat "$dir/$name.pid"))"
      else echo "$name: stopped"; fi
    done
    ;;
  *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
