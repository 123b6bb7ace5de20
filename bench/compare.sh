#!/usr/bin/env bash
# Ferry next to its peers, in one run on this machine: the same message
# size, window of messages in flight and CPU pinning (servers on CPU 1, the
# load client on CPU 0) for Ferry (ferry-bench), Redis 7 streams, NATS
# JetStream and RabbitMQ quorum queues (the clients in bench/peers/), plus
# the ceilings (fio sequential writes with fdatasync, iperf3 on loopback).
# Writes the compare section of docs/BENCHMARKS.md and docs/bench/*.png.
#
#   bench/compare.sh [--ferry-bench PATH] [--size B] [--inflight N]
#                    [--duration-s S] [--warmup-s S] [--catchup-size B]
#                    [--catchup-s S] [--redis-wait-batch N] [--scratch DIR]
#                    [--build DIR] [--no-install] [--no-docs] [--keep DIR]
#                    [--ferry-label TEXT]
#   bench/compare.sh --smoke --ferry-bench PATH [--bin DIR] [--scratch DIR]
#
# The full run installs its Debian packages first (apt-get, idempotent; the
# packaged services are kept from starting), builds the peer clients into
# --build (default build-compare) and takes 10-20 minutes. Peers listen on
# 127.0.0.1 ports 22000-22999 with their data under --scratch, and are
# stopped at the end (also on failure or Ctrl-C). Ferry's binaries are taken
# from the directory of --ferry-bench (default build/bin/ferry-bench);
# --ferry-label names that build on the page (default: this checkout's commit).
# --smoke: Ferry's scenarios only, about a second each, no install, no docs
# (Redis and NATS join if their servers and clients are already there);
# exits 77 if ferry-bench is missing, 1 if any run failed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

smoke=0
ferry_bench="$repo/build/bin/ferry-bench"
peer_bin=""
size=128
inflight=1024
duration=10
warmup=2
catchup_size=4096
catchup_s=10
redis_wait_batch=64
scratch=""
build="$repo/build-compare"
install=1
docs=1
keep=""
ferry_label=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
command_line="bench/compare.sh$(printf ' %q' "$@")"

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; shift ;;
    --ferry-bench) ferry_bench=$2; shift 2 ;;
    --bin) peer_bin=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --inflight) inflight=$2; shift 2 ;;
    --duration-s) duration=$2; shift 2 ;;
    --warmup-s) warmup=$2; shift 2 ;;
    --catchup-size) catchup_size=$2; shift 2 ;;
    --catchup-s) catchup_s=$2; shift 2 ;;
    --redis-wait-batch) redis_wait_batch=$2; shift 2 ;;
    --scratch) scratch=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    --no-docs) docs=0; shift ;;
    --keep) keep=$2; shift 2 ;;
    --ferry-label) ferry_label=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "compare.sh: unknown option $1" >&2; usage ;;
  esac
done

log() { echo "== $*" >&2; }
die() { echo "compare.sh: $*" >&2; exit 1; }

if [ "$smoke" = 1 ]; then
  install=0 docs=0 duration=1 warmup=0.3 catchup_s=1 catchup_size=1024
  if [ ! -x "$ferry_bench" ]; then
    echo "compare.sh: $ferry_bench is not built; skipping" >&2
    exit 77
  fi
fi
ferry_bench=$(cd "$(dirname "$ferry_bench")" && pwd)/$(basename "$ferry_bench")
ferry_bin=$(dirname "$ferry_bench")
[ -n "$scratch" ] || scratch="$build/scratch"
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd)

# ------------------------------------------------------------------ ports
NS_PORT=22876 M_PORT=22911 HA_PORT=22912 S_PORT=22921
REDIS_PORT=22379 REDIS_REPLICA_PORT=22380
NATS_PORT=22422
RMQ_PORT1=22672 RMQ_DIST1=22673 RMQ_PORT2=22682 RMQ_DIST2=22683
RMQ_EPMD=22369 RMQ_CTL_MIN=22690 RMQ_CTL_MAX=22699
IPERF_PORT=22201
# A process already listening on one of them (another run, or a leftover)
# would be measured instead of ours: refuse to start.
for port in $NS_PORT $M_PORT $HA_PORT $S_PORT $REDIS_PORT $REDIS_REPLICA_PORT $NATS_PORT \
    $RMQ_PORT1 $RMQ_DIST1 $RMQ_PORT2 $RMQ_DIST2 $RMQ_EPMD $IPERF_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (another run?); stop it first"
  fi
done

# ------------------------------------------------------------------ packages
pkgs=(redis-server redis-tools nats-server rabbitmq-server libhiredis-dev librabbitmq-dev
      gnuplot-nox iperf3 fio linux-perf pkg-config)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
install_pkgs() {
  local missing=() p
  for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "needs root to install: ${missing[*]}"
  log "installing ${missing[*]}"
  # Keep the packaged services from starting: the benchmark starts its own.
  local rc_made=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    rc_made=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  [ $rc_made = 1 ] && rm -f /usr/sbin/policy-rc.d
  # Where a service manager started one anyway, stop and disable it.
  for s in redis-server nats-server rabbitmq-server; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$s" 2>/dev/null; then
      systemctl stop "$s" || true
      systemctl disable "$s" 2>/dev/null || true
    elif command -v service >/dev/null && service "$s" status >/dev/null 2>&1; then
      service "$s" stop || true
    fi
  done
}
[ "$install" = 1 ] && install_pkgs

have_redis=0 have_nats=0 have_rmq=0
command -v redis-server >/dev/null && command -v redis-cli >/dev/null && have_redis=1
command -v nats-server >/dev/null && have_nats=1
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v epmd >/dev/null && have_rmq=1
[ "$smoke" = 1 ] && have_rmq=0 # a RabbitMQ cluster takes half a minute to start

# ------------------------------------------------------------------ peer clients
if [ -z "$peer_bin" ]; then
  if [ "$smoke" = 1 ]; then
    peer_bin=$ferry_bin
  else
    log "building the peer clients (Release) in $build"
    cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFERRY_TESTS=OFF >/dev/null
    targets=(--target nats_bench)
    installed libhiredis-dev && targets+=(--target redis_bench)
    installed librabbitmq-dev && targets+=(--target rabbit_bench)
    cmake --build "$build" "${targets[@]}" -j 2 >/dev/null
    peer_bin="$build/bin"
  fi
fi
[ -x "$peer_bin/redis_bench" ] || have_redis=0
[ -x "$peer_bin/nats_bench" ] || have_nats=0
[ -x "$peer_bin/rabbit_bench" ] || have_rmq=0

pin_srv=() pin_cli=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_srv=(taskset -c 1) pin_cli=(taskset -c 0)
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/ferry-compare-XXXXXX")
pids=()        # every process this script started and has not stopped yet
rmq_nodes=()   # RabbitMQ pid files (stopped through rabbitmqctl first)
failed=0

stop_pid() { # pid: SIGTERM, up to 20 s, then SIGKILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
forget_pid() { # pid: no longer ours to stop (it has exited)
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
stop_all() {
  local p
  for p in "${rmq_nodes[@]}"; do rmq_ctl_stop "$p"; done
  rmq_nodes=()
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  if [ -n "$keep" ]; then mkdir -p "$keep" && cp -r "$out"/. "$keep"/; fi
  rm -rf "$out" "$scratch"/ferry-* "$scratch"/redis-* "$scratch"/nats-* "$scratch"/rmq-* \
         "$scratch"/fio-*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port what pid
  for _ in $(seq 1 300); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || die "$2 exited; see its log under $out"
    sleep 0.1
  done
  die "$2 does not listen on port $1 after 30 s"
}
wait_cond() { # timeout_s what command...: polls the command every 0.1 s
  local t=$1 what=$2
  shift 2
  for _ in $(seq 1 $((t * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "timed out after ${t}s waiting for $what"
}

# CPU time (clock ticks) used so far by the servers this script started and
# their descendants (perf excluded), for the servers' CPU column.
srv_ticks() {
  python3 - "${pids[@]}" <<'EOF'
import os, sys
roots = {int(p) for p in sys.argv[1:] if p}
procs = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            st = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        f = st[st.rindex(")") + 2:].split()
        procs[int(d)] = (int(f[1]), int(f[11]) + int(f[12]), comm)
seen = set(roots)
for _ in range(64):  # descendants, a generation per pass
    new = {p for p, v in procs.items() if v[0] in seen and p not in seen}
    if not new:
        break
    seen |= new
print(sum(procs[p][1] for p in seen if p in procs and procs[p][2] != "perf"))
EOF
}

# run_client NAME CMD...: runs a load client on the client CPU; keeps its
# output, its RESULT line ($out/NAME.result) and the CPU the servers and
# the client used meanwhile, in cores ($out/NAME.cpu).
run_client() {
  local name=$1 t0 t1 w0 w1
  shift
  log "$name: $*"
  t0=$(srv_ticks)
  w0=$(date +%s.%N)
  if ! "${pin_cli[@]}" "$@" >"$out/$name.out" 2>"$out/$name.err"; then
    echo "compare.sh: $name failed:" >&2
    tail -5 "$out/$name.err" >&2
    failed=1
  fi
  w1=$(date +%s.%N)
  t1=$(srv_ticks)
  awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v w0="$w0" -v w1="$w1" \
      -v c="$(sed -n 's/^CPU .*cpu_s=\([0-9.]*\) .*/\1/p' "$out/$name.out")" \
      'BEGIN {printf "server_cores=%.2f client_cores=%.2f\n", t / hz / (w1 - w0), (c + 0) / (w1 - w0)}' \
      >"$out/$name.cpu"
  grep '^RESULT' "$out/$name.out" | tail -1 >"$out/$name.result" || true
  if [ ! -s "$out/$name.result" ]; then
    echo "compare.sh: $name printed no RESULT line" >&2
    failed=1
    return 0
  fi
  sed 's/^/   /' "$out/$name.result" >&2
  if [ "$smoke" = 1 ] && ! awk '{for (i = 2; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}}
        END {exit !(v["msgs"] > 0 && v["errors"] == 0)}' "$out/$name.result"; then
    echo "compare.sh: $name: no messages or some errors" >&2
    failed=1
  fi
}
result_field() { # name key
  tr ' ' '\n' <"$out/$1.result" | sed -n "s/^$2=//p"
}

# ------------------------------------------------------------------ Ferry
ferry_dir=""
ns_addr="127.0.0.1:$NS_PORT"
admin() { "$ferry_bin/mqadmin" "$@"; }
broker_status() { admin brokerStatus -n "$ns_addr" -b "$1" | sed -n "s/^$2 *: *//p"; }

start_bg() { # logname cmd...: starts a server on the server CPU
  local name=$1
  shift
  "${pin_srv[@]}" "$@" >"$out/$name.log" 2>&1 &
  pids+=($!)
}

# ferry_broker NAME PORT CONF -o k=v...
ferry_broker() {
  local name=$1 port=$2 conf=$3
  shift 3
  local opts=(-c "$repo/conf/$conf" -o "namesrvAddr=$ns_addr" -o "listenPort=$port"
              -o listenAddress=127.0.0.1 -o brokerIP1=127.0.0.1
              -o "storePathRootDir=$ferry_dir/$name" -o "pidFile=$ferry_dir/$name.pid"
              -o registerNameServerPeriod=1000 -o autoCreateTopicEnable=false)
  if [ "$smoke" = 1 ]; then
    opts+=(-o mappedFileSizeCommitLog=67108864 -o maxHashSlotNum=50000 -o maxIndexNum=400000)
  fi
  start_bg "$scenario-$name" "$ferry_bin/mqbroker" "${opts[@]}" "$@"
  wait_port "$port" "mqbroker $name" "${pids[-1]}"
}

routed() { admin topicRoute -n "$ns_addr" -t "$1" | grep -q broker-a; }
slave_attached() { admin haStatus -n "$ns_addr" -b "127.0.0.1:$M_PORT" | grep -Eq '^slaves *: *[1-9]'; }
slave_has_topic() {
  local n
  n=$(broker_status "127.0.0.1:$S_PORT" topics)
  [ "${n:-0}" -ge 1 ]
}

# ferry_start SCENARIO PAIR(0|1) ROLE -o k=v... (options for both brokers)
ferry_start() {
  scenario=$1
  local pair=$2
  master_role=$3
  shift 3
  ferry_dir="$scratch/ferry-$scenario"
  rm -rf "$ferry_dir"
  mkdir -p "$ferry_dir"
  start_bg "$scenario-namesrv" "$ferry_bin/mqnamesrv" -o "listenPort=$NS_PORT" \
    -o listenAddress=127.0.0.1
  wait_port $NS_PORT mqnamesrv "${pids[-1]}"
  ferry_broker master $M_PORT broker-a.conf -o "haListenPort=$HA_PORT" \
    -o "brokerRole=$master_role" "$@"
  if [ "$pair" = 1 ]; then ferry_broker slave $S_PORT broker-a-s.conf "$@"; fi
  admin updateTopic -n "$ns_addr" -b "127.0.0.1:$M_PORT" -t Bench -r 4 -w 4 >/dev/null
  wait_cond 30 "the topic's route" routed Bench
  if [ "$pair" = 1 ]; then
    wait_cond 30 "the slave to attach" slave_attached
    wait_cond 30 "the slave to adopt the topic" slave_has_topic
  fi
}
ferry_restart_brokers() { # keeps the store; the name server stays up
  local pair=$1
  shift
  local keep_pids=("${pids[0]}") p
  for p in "${pids[@]:1}"; do stop_pid "$p"; wait "$p" 2>/dev/null || true; done
  pids=("${keep_pids[@]}")
  evict_cache "$ferry_dir"
  ferry_broker master $M_PORT broker-a.conf -o "haListenPort=$HA_PORT" \
    -o "brokerRole=$master_role" "$@"
  if [ "$pair" = 1 ]; then
    ferry_broker slave $S_PORT broker-a-s.conf "$@"
    wait_cond 30 "the slave to attach" slave_attached
  fi
  wait_cond 30 "the topic's route" routed Bench
}
evict_cache() { # drops the page cache of every file under DIR (posix_fadvise)
  python3 - "$1" <<'EOF'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        try:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        os.close(fd)
EOF
}
produce() { # name [extra ferry-bench options]
  local name=$1
  shift
  run_client "$name" "$ferry_bench" produce -n "$ns_addr" -t Bench --size "$size" \
    --inflight "$inflight" --duration-s "$duration" --warmup-s "$warmup" "$@"
}

# Bytes the commit log writes per fdatasync under SYNC_FLUSH: the commit
# log's fdatasyncs are counted with perf on the ext4 tracepoint (the broker
# syncs through io_uring, so there is no syscall to count), its bytes from
# commitLogMaxOffset.
sync_probe_start() {
  probe_perf=""
  command -v perf >/dev/null || return 0
  local mpid
  mpid=$(cat "$ferry_dir/master.pid")
  probe_off0=$(broker_status "127.0.0.1:$M_PORT" commitLogMaxOffset)
  probe_put0=$(broker_status "127.0.0.1:$M_PORT" msgPutTotal)
  perf record -q -e ext4:ext4_sync_file_enter -o "$out/syncs.perf" -p "$mpid" \
    >"$out/perf.log" 2>&1 &
  probe_perf=$!
  pids+=($probe_perf)
  sleep 0.5 # perf attaches to the broker's threads
}
sync_probe_stop() { # writes $out/sync_probe: bytes syncs puts
  [ -n "$probe_perf" ] || return 0
  local off1 put1 inodes syncs
  off1=$(broker_status "127.0.0.1:$M_PORT" commitLogMaxOffset)
  put1=$(broker_status "127.0.0.1:$M_PORT" msgPutTotal)
  kill -INT "$probe_perf" 2>/dev/null || true
  wait "$probe_perf" 2>/dev/null || true
  forget_pid "$probe_perf"
  inodes=$(find "$ferry_dir/master/commitlog" -type f -printf '%i\n' | paste -sd'|')
  syncs=$(perf script -i "$out/syncs.perf" 2>/dev/null | grep -Ec " ino ($inodes) " || true)
  echo "$((off1 - probe_off0)) $syncs $((put1 - probe_put0))" >"$out/sync_probe"
  log "commit log: $((off1 - probe_off0)) bytes, $syncs fdatasyncs, $((put1 - probe_put0)) messages"
}

# Where the master's CPU goes under the same load: a second run of the
# scenario under `perf record -g` (not in the tables; perf slows it).
profile_broker() {
  command -v perf >/dev/null || return 0
  local name=$1 p
  perf record -q -F 499 -g -o "$out/profile-$name.perf" -p "$(cat "$ferry_dir/master.pid")" \
    >"$out/profile-$name.log" 2>&1 &
  p=$!
  pids+=($p)
  sleep 0.5
  produce "profile-$name"
  kill -INT "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  forget_pid "$p"
  rm -f "$out/profile-$name.result"
  perf report -i "$out/profile-$name.perf" --stdio --no-children -g none --percent-limit 1.5 \
    --sort dso,symbol 2>/dev/null | grep '%' | grep -v '^#' | sed 's/[ -]*$//' | head -25 >"$out/profile-$name.txt" || true
}

# ------------------------------------------------------------------ scenarios: Ferry
# Each scenario runs Ferry and then, right after, the peers it is compared
# with, so a drift in the machine's load hits both sides alike.
scenario_async() { # one broker, acknowledged once written to the OS
  ferry_start single-async 0 ASYNC_MASTER -o flushDiskType=ASYNC_FLUSH
  produce ferry-single-async
  [ "$smoke" = 1 ] || profile_broker single-async
  stop_all
  [ $have_nats = 1 ] && nats_run
  [ $have_redis = 1 ] && [ "$smoke" = 0 ] && redis_single redis-everysec everysec
  return 0
}
scenario_sync() { # one broker, acknowledged after fdatasync
  ferry_start single-sync 0 ASYNC_MASTER -o flushDiskType=SYNC_FLUSH
  [ "$smoke" = 1 ] || sync_probe_start
  produce ferry-single-sync
  [ "$smoke" = 1 ] || sync_probe_stop
  stop_all
  [ "$smoke" = 1 ] || ! command -v fio >/dev/null || fio_ceiling
  [ $have_redis = 1 ] && redis_single redis-always always
  return 0
}
scenario_replication() { # master + replica: async, then sync double write
  ferry_start pair-async 1 ASYNC_MASTER -o flushDiskType=ASYNC_FLUSH
  produce ferry-pair-async
  stop_all

  ferry_start pair-sync 1 SYNC_MASTER -o flushDiskType=ASYNC_FLUSH
  produce ferry-pair-sync
  half_rate=$(awk -v r="$(result_field ferry-pair-sync msgs_per_s)" 'BEGIN {printf "%d", r / 2}')
  [ "$half_rate" -ge 1 ] || half_rate=1
  produce ferry-pair-sync-half --rate "$half_rate"
  stop_all
  [ $have_redis = 1 ] && redis_pair
  return 0
}
scenario_durable() { # master + replica, acknowledged once both have fsynced it
  ferry_start pair-sync-durable 1 SYNC_MASTER -o flushDiskType=SYNC_FLUSH \
    -o haSyncAckOn=durable
  produce ferry-pair-sync-durable
  stop_all
  [ $have_rmq = 1 ] && rmq_run
  return 0
}
# Catch-up: a backlog written through an ASYNC_MASTER pair, both brokers
# restarted with their page cache dropped, then read from the first offset
# by a new group, from the master and then from the slave.
scenario_catchup() {
  ferry_start catchup 1 ASYNC_MASTER -o flushDiskType=ASYNC_FLUSH \
    -o slaveReadEnable=true
  run_client ferry-backlog "$ferry_bench" produce -n "$ns_addr" -t Bench \
    --size "$catchup_size" --inflight "$inflight" --duration-s "$catchup_s" --warmup-s 0
  local end
  end=$(broker_status "127.0.0.1:$M_PORT" commitLogMaxOffset)
  slave_caught_up() { [ "$(broker_status "127.0.0.1:$S_PORT" commitLogMaxOffset)" = "$end" ]; }
  wait_cond 120 "the slave to catch up" slave_caught_up
  backlog=$(result_field ferry-backlog msgs)
  ferry_restart_brokers 1 -o flushDiskType=ASYNC_FLUSH \
    -o slaveReadEnable=true
  run_client ferry-catchup-master "$ferry_bench" consume -n "$ns_addr" -t Bench \
    -g CatchUpMaster --from first --count "$backlog" --duration-s 120 --broker-id 0
  run_client ferry-catchup-slave "$ferry_bench" consume -n "$ns_addr" -t Bench \
    -g CatchUpSlave --from first --count "$backlog" --duration-s 120 --broker-id 1
  stop_all
  [ "$smoke" = 1 ] || ! command -v iperf3 >/dev/null || iperf_ceiling
  return 0
}

# ------------------------------------------------------------------ scenarios: peers
redis_start() { # name port [redis-server options...]
  local name=$1 port=$2
  shift 2
  mkdir -p "$scratch/redis-$name"
  start_bg "redis-$name" redis-server "$repo/bench/peers/redis.conf" --port "$port" \
    --dir "$scratch/redis-$name" --logfile "$scratch/redis-$name/redis.log" "$@"
  wait_port "$port" "redis-server $name" "${pids[-1]}"
}
redis_replica_online() {
  redis-cli -p $REDIS_PORT info replication | grep -q 'state=online'
}
redis_bench() { # name [options]
  local name=$1
  shift
  run_client "$name" "$peer_bin/redis_bench" --port $REDIS_PORT --size "$size" \
    --inflight "$inflight" --duration-s "$duration" --warmup-s "$warmup" "$@"
}
redis_single() { # name appendfsync
  redis_start single $REDIS_PORT --appendfsync "$2"
  redis_bench "$1"
  stop_all
  rm -rf "$scratch"/redis-*
}
redis_pair() { # master + replica: no WAIT, then WAIT after each batch
  redis_start master $REDIS_PORT --appendfsync everysec
  redis_start replica $REDIS_REPLICA_PORT --appendfsync everysec \
    --replicaof 127.0.0.1 $REDIS_PORT
  wait_cond 30 "the Redis replica to come online" redis_replica_online
  [ "$smoke" = 1 ] || redis_bench redis-replica-async
  redis_bench redis-wait --wait --batch "$redis_wait_batch"
  [ "$smoke" = 1 ] || redis_bench redis-wait-half --wait --batch "$redis_wait_batch" \
    --rate "$half_rate"
  stop_all
  rm -rf "$scratch"/redis-*
}

nats_run() {
  local d="$scratch/nats-js"
  mkdir -p "$d"
  sed -e "s|@PORT@|$NATS_PORT|" -e "s|@STORE@|$d/store|" "$repo/bench/peers/nats.conf" \
    >"$d/nats.conf"
  start_bg nats nats-server -c "$d/nats.conf"
  wait_port $NATS_PORT nats-server "${pids[-1]}"
  run_client nats-js "$peer_bin/nats_bench" --port $NATS_PORT --create-stream BENCH \
    --subject bench --size "$size" --inflight "$inflight" --duration-s "$duration" \
    --warmup-s "$warmup"
  stop_all
  rm -rf "$d"
}

# RabbitMQ: two nodes of one cluster, their own epmd on a non-default port,
# their own cookie, config, data and logs under $scratch/rmq-*.
rmq_env() {
  local d="$scratch/rmq-cluster"
  export HOME="$d/home" ERL_EPMD_PORT=$RMQ_EPMD ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$repo/bench/peers/rabbitmq.conf"
  export RABBITMQ_CTL_DIST_PORT_MIN=$RMQ_CTL_MIN RABBITMQ_CTL_DIST_PORT_MAX=$RMQ_CTL_MAX
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}
rmqctl() { /usr/lib/rabbitmq/bin/rabbitmqctl "$@"; }
rmq_ctl_stop() { # pidfile (node n<N>)
  local pidfile=$1 node pid
  node=ferrybench$(basename "$(dirname "$pidfile")" | tr -dc 0-9)@localhost
  pid=$(cat "$pidfile" 2>/dev/null || true)
  (rmq_env; rmqctl -q -n "$node" stop "$pidfile" >/dev/null 2>&1) || true
  if [ -n "$pid" ]; then stop_pid "$pid"; fi
}
rmq_node() { # n amqp_port dist_port
  local n=$1 d="$scratch/rmq-cluster/n$1"
  mkdir -p "$d"
  (
    rmq_env
    export RABBITMQ_NODENAME=ferrybench$n@localhost RABBITMQ_NODE_PORT=$2 RABBITMQ_DIST_PORT=$3
    export RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_PID_FILE="$d/pid"
    exec "${pin_srv[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
  ) >"$out/rmq-n$n.log" 2>&1 &
  pids+=($!)
  rmq_nodes+=("$d/pid")
}
rmq_run() {
  local d="$scratch/rmq-cluster"
  rm -rf "$d"
  mkdir -p "$d/home"
  printf 'FERRYCOMPARE%s' "$RANDOM$RANDOM" >"$d/home/.erlang.cookie"
  chmod 400 "$d/home/.erlang.cookie"
  : >"$d/rabbitmq-env.conf"
  echo '[].' >"$d/enabled_plugins"
  (rmq_env; exec "${pin_srv[@]}" epmd -port $RMQ_EPMD -address 127.0.0.1) >"$out/epmd.log" 2>&1 &
  pids+=($!)
  wait_port $RMQ_EPMD epmd "${pids[-1]}"
  rmq_node 1 $RMQ_PORT1 $RMQ_DIST1
  rmq_node 2 $RMQ_PORT2 $RMQ_DIST2
  log "waiting for two RabbitMQ nodes"
  (
    rmq_env
    rmqctl -q -n ferrybench1@localhost wait --timeout 180 "$d/n1/pid" &&
    rmqctl -q -n ferrybench2@localhost wait --timeout 180 "$d/n2/pid" &&
    rmqctl -q -n ferrybench2@localhost stop_app &&
    rmqctl -q -n ferrybench2@localhost join_cluster ferrybench1@localhost &&
    rmqctl -q -n ferrybench2@localhost start_app &&
    rmqctl -q -n ferrybench1@localhost cluster_status --formatter json
  ) >"$out/rmq-cluster.json" 2>"$out/rmq-cluster.err" || die "RabbitMQ cluster: $(tail -3 "$out/rmq-cluster.err")"
  grep -q 'ferrybench2@localhost' "$out/rmq-cluster.json" || die "RabbitMQ: node 2 did not join"
  run_client rabbit-quorum "$peer_bin/rabbit_bench" --port $RMQ_PORT1 --declare --members 2 \
    --queue bench --size "$size" --inflight "$inflight" --duration-s "$duration" \
    --warmup-s "$warmup"
  (rmq_env; /usr/lib/rabbitmq/bin/rabbitmq-queues -n ferrybench1@localhost quorum_status bench \
    --formatter json) >"$out/rmq-quorum.json" 2>/dev/null || true
  stop_all
  rm -rf "$d"
}

# ------------------------------------------------------------------ ceilings
iperf_ceiling() {
  start_bg iperf3-server iperf3 -s -B 127.0.0.1 -p $IPERF_PORT
  wait_port $IPERF_PORT iperf3 "${pids[-1]}"
  log "iperf3 loopback, server -> client (as a consumer reads)"
  "${pin_cli[@]}" iperf3 -c 127.0.0.1 -p $IPERF_PORT -R -t 5 -J >"$out/iperf3.json" || failed=1
  stop_all
}
fio_ceiling() { # bytes per fdatasync from the probe (or 1 MiB without one)
  local bs=1048576
  if [ -s "$out/sync_probe" ]; then
    read -r bytes syncs _ <"$out/sync_probe"
    if [ "$syncs" -gt 0 ]; then bs=$((bytes / syncs)); fi
  fi
  [ "$bs" -ge 4096 ] || bs=4096
  local args=(--name=sync-ceiling --directory="$scratch" --filename=fio-sync --rw=write
              --ioengine=psync --bs="$bs" --fdatasync=1 --size=4g --runtime="$duration"
              --output-format=json)
  echo "fio ${args[*]}" | sed "s|$scratch|SCRATCH|" >"$out/fio.cmd"
  log "fio ceiling: ${args[*]}"
  sync
  "${pin_srv[@]}" fio "${args[@]}" >"$out/fio.json" || failed=1
  rm -f "$scratch/fio-sync"
}

# ------------------------------------------------------------------ the run
started=$(date -u +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
half_rate=0
[ $have_redis = 1 ] || log "Redis skipped (not installed)"
[ $have_nats = 1 ] || log "NATS skipped (not installed)"
[ $have_rmq = 1 ] || log "RabbitMQ skipped"
scenario_async
scenario_sync
scenario_replication
scenario_durable
scenario_catchup
log "all runs done in $(( $(date -u +%s) - started )) s"

if [ "$smoke" = 1 ]; then
  [ $failed = 0 ] || die "some runs failed"
  echo "compare smoke: every run produced a RESULT line with messages and no errors"
  exit 0
fi

# Versions and settings for the page.
{
  echo "ferry=$ferry_label"
  echo "redis=$(dpkg-query -W -f='${Version}' redis-server 2>/dev/null)"
  echo "hiredis=$(dpkg-query -W -f='${Version}' libhiredis-dev 2>/dev/null)"
  echo "nats=$(dpkg-query -W -f='${Version}' nats-server 2>/dev/null)"
  echo "rabbitmq=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null)"
  echo "erlang=$(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null)"
  echo "librabbitmq=$(dpkg-query -W -f='${Version}' librabbitmq-dev 2>/dev/null)"
  echo "fio=$(fio --version 2>/dev/null)"
  echo "iperf3=$(dpkg-query -W -f='${Version}' iperf3 2>/dev/null)"
  echo "size=$size"
  echo "inflight=$inflight"
  echo "duration=$duration"
  echo "warmup=$warmup"
  echo "catchup_size=$catchup_size"
  echo "catchup_s=$catchup_s"
  echo "redis_wait_batch=$redis_wait_batch"
  echo "half_rate=$half_rate"
  echo "pinned=${pin_srv[*]:+yes}"
  echo "command=$command_line"
  echo "started=$(date -u -d "@$started" '+%Y-%m-%d %H:%M UTC')"
  echo "minutes=$(( ($(date -u +%s) - started + 59) / 60 ))"
  echo "load_start=$load_start"
  echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/meta"

doc_args=()
[ "$docs" = 1 ] || doc_args=(--no-docs)
python3 "$repo/bench/plot/compare_report.py" --out "$out" --repo "$repo" \
  --scratch "$scratch" "${doc_args[@]}"
[ $failed = 0 ] || die "some runs failed (see above); the page shows what was measured"
