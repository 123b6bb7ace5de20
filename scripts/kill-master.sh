#!/usr/bin/env bash
# Kills the master broker of a pair on this host with SIGKILL, for failover
# drills. Finds it from its config (pidFile, or storePathRootDir/broker.pid),
# checks that it is a running mqbroker with brokerId 0, kills it, waits until
# it is gone, and prints what it killed and when.
#
#   scripts/kill-master.sh [-c conf/broker-a.conf] [-p PIDFILE]
set -euo pipefail

conf=conf/broker-a.conf
pidfile=""
while getopts "c:p:h" opt; do
  case $opt in
    c) conf=$OPTARG ;;
    p) pidfile=$OPTARG ;;
    h) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "usage: $0 [-c BROKER_CONF] [-p PIDFILE]" >&2; exit 2 ;;
  esac
done

key() { # value of a key in the config file, or the default given
  local v
  v=$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$conf" 2>/dev/null | tail -1 | sed 's/[[:space:]]*$//')
  echo "${v:-$2}"
}

if [ -z "$pidfile" ]; then
  [ -f "$conf" ] || { echo "kill-master: no config file $conf (use -c or -p)" >&2; exit 2; }
  id=$(key brokerId 0)
  if [ "$id" != "0" ]; then
    echo "kill-master: $conf is brokerId=$id, not a master (brokerId=0)" >&2
    exit 2
  fi
  pidfile=$(key pidFile "")
  [ -n "$pidfile" ] || pidfile="$(key storePathRootDir "$HOME/store")/broker.pid"
fi
[ -f "$pidfile" ] || { echo "kill-master: no pid file $pidfile: is the master running?" >&2; exit 1; }
pid=$(tr -dc '0-9' < "$pidfile")
if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then
  echo "kill-master: pid ${pid:-?} from $pidfile is not running" >&2
  exit 1
fi
if ! tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q mqbroker; then
  echo "kill-master: pid $pid is not an mqbroker: $(tr '\0' ' ' < "/proc/$pid/cmdline")" >&2
  exit 1
fi
name=$( [ -f "$conf" ] && key brokerName broker-a || echo "?")
kill -KILL "$pid"
when=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
for _ in $(seq 1 500); do
  [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null || break
  sleep 0.01
done
echo "kill-master: killed mqbroker pid $pid (brokerName $name, brokerId 0, pid file $pidfile) with SIGKILL at $when"
