#!/usr/bin/env bash
# The machine's floor under Ferry's latency target: at one fixed rate (by
# default half the 128 B single-send peak, measured first), open loop with
# the sender waking every --tick-us like ferry-bench's latency rows, it
# measures send -> acknowledgement latency for
#
#   1. floor_server --no-disk: a server that answers each request as soon as
#      it reads it (loopback, two processes, nothing else);
#   2. floor_server with the disk: the same, answering once an io_uring
#      buffered write holding the request has completed, with writeback
#      ahead and fdatasync like Ferry's commit log under ASYNC_FLUSH
#      (commitLogWritebackBytes, flushIntervalCommitLog defaults);
#   3. mqbroker driven by native_bench: Ferry's broker without the client
#      library (one thread, one socket, native protocol);
#   4. mqbroker driven by ferry-bench: the broker through the client library,
#      as the e2e table's latency rows;
#   5. floor_server with the disk and --work-ns N for each N in --work: the
#      floor server made busier by N ns of spinning per request, so the table
#      shows what a server's CPU share alone does to p99 on this machine.
#
# Clients 1-3 are bench/peers/native_bench (peer_run.h), which sleeps
# between ticks as ferry-bench's sender does; each server runs alone on
# --broker-cpu, the client on --client-cpu. Rows 3
# and 4 start a fresh broker (ASYNC_FLUSH, topic of 8 queues,
# commitLogPageCacheMaxBytes=--page-cache) and warm it with 1.25 times that
# share first, as bench/e2e_bench.sh does. The four run in turn, --runs
# rounds; the table gives the median p99 with its range. Rewrites the floor
# section of docs/BENCHMARKS.md unless --no-docs.
#
#   bench/floor.sh [--rate MSGS_PER_S] [--runs N] [--duration SEC] [--warmup SEC]
#                  [--tick-us US] [--broker-cpu CPU] [--client-cpu CPU]
#                  [--page-cache BYTES] [--work "NS ..."] [--scratch DIR] [--build DIR]
#                  [--no-docs] [--quick]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

rate=0
runs=3
duration=5
warmup=1
tick_us=200
broker_cpu=0
client_cpu=$(( $(nproc) > 1 ? 1 : 0 ))
page_cache=268435456
scratch="$repo/build-bench/floor"
build="$repo/build-bench"
docs=1
command_line="bench/floor.sh${*:+ $*}"
port_base=23000
work="250 500 1000"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --tick-us) tick_us=$2; shift 2 ;;
    --broker-cpu) broker_cpu=$2; shift 2 ;;
    --client-cpu) client_cpu=$2; shift 2 ;;
    --page-cache) page_cache=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --scratch) scratch=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-docs) docs=0; shift ;;
    --quick) runs=1; duration=2; page_cache=67108864; shift ;;
    -h|--help) usage ;;
    *) echo "floor.sh: unknown option $1" >&2; usage ;;
  esac
done

echo "== building (Release) in $build" >&2
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target mqnamesrv mqbroker mqadmin ferry-bench \
  native_bench floor_server >/dev/null
bin="$build/bin"

rm -rf "$scratch"
mkdir -p "$scratch"
out="$scratch/out"
mkdir -p "$out"
pids=()
cleanup() {
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

stop_all() { cleanup; pids=(); }

wait_line() { # FILE PID WHAT: until FILE says "listening on port"
  for _ in $(seq 600); do
    if grep -q "listening on port" "$1" 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "floor.sh: $3 exited:" >&2; tail -5 "$1" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "floor.sh: $3 did not start in 60 s" >&2
  exit 1
}

port=$port_base
# start_cluster: a fresh name server and broker on the next ports, the topic
# Bench made and routed; sets ns_port and broker_port.
start_cluster() {
  ns_port=$((port += 3)); broker_port=$((port + 1))
  local d="$scratch/broker-$port"
  taskset -c "$broker_cpu" "$bin/mqnamesrv" -o "listenPort=$ns_port" -o listenAddress=127.0.0.1 \
    >"$d.ns.log" 2>&1 &
  local ns_pid=$!
  pids+=("$ns_pid")
  wait_line "$d.ns.log" "$ns_pid" mqnamesrv
  local args=()
  for kv in brokerName=floor brokerId=0 brokerRole=ASYNC_MASTER flushDiskType=ASYNC_FLUSH \
            "namesrvAddr=127.0.0.1:$ns_port" "listenPort=$broker_port" "haListenPort=$((port + 2))" \
            listenAddress=127.0.0.1 brokerIP1=127.0.0.1 "storePathRootDir=$d" \
            autoCreateTopicEnable=false registerNameServerPeriod=1000 \
            "commitLogPageCacheMaxBytes=$page_cache"; do
    args+=(-o "$kv")
  done
  taskset -c "$broker_cpu" "$bin/mqbroker" "${args[@]}" >"$d.log" 2>&1 &
  broker_pid=$!
  pids+=("$broker_pid")
  wait_line "$d.log" "$broker_pid" mqbroker
  for t in Bench Warm; do
    "$bin/mqadmin" updateTopic -n "127.0.0.1:$ns_port" -b "127.0.0.1:$broker_port" -t "$t" \
      -r 8 -w 8 >/dev/null
  done
  for _ in $(seq 300); do
    if "$bin/mqadmin" topicRoute -n "127.0.0.1:$ns_port" -t Bench 2>/dev/null | grep -q floor; then
      break
    fi
    sleep 0.1
  done
  taskset -c "$client_cpu" "$bin/ferry-bench" produce -n "127.0.0.1:$ns_port" -t Warm \
    --size 1024 --batch 32 --inflight 4096 --count $(( page_cache * 5 / 4 / 1024 )) \
    --duration-s 600 --warmup-s 0 >/dev/null 2>>"$out/warm.err"
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME SERVER_PID client args...: one run; appends the RESULT line
# and the server's share of its CPU over the measured window to NAME.results
measure() {
  local name=$1 spid=$2
  shift 2
  echo "== $name: $(basename "$1") ${*:2}" >&2
  taskset -c "$client_cpu" "$@" >"$out/run.out" 2>"$out/run.err" &
  local c=$!
  sleep "$warmup"
  local t0 t1
  t0=$(ticks "$spid")
  sleep "$duration"
  t1=$(ticks "$spid")
  if ! wait "$c"; then
    echo "floor.sh: $name failed:" >&2; tail -5 "$out/run.err" >&2; exit 1
  fi
  echo "$(grep '^RESULT' "$out/run.out" | tail -1) server_cpu=$(python3 -c \
    "print(round(100 * ($t1 - $t0) / $(getconf CLK_TCK) / $duration))")" >>"$out/$name.results"
}

common=(--size 128 --inflight 1024 --duration-s "$duration" --warmup-s "$warmup")

# floor_row NAME floor_server-args...: one run of floor_server, alone on the
# server's CPU, loaded by native_bench
floor_row() {
  local name=$1
  shift
  port=$((port + 3))
  taskset -c "$broker_cpu" "$bin/floor_server" --port "$port" "$@" >"$out/fs.log" 2>&1 &
  local fs_pid=$!
  pids+=("$fs_pid")
  wait_line "$out/fs.log" "$fs_pid" floor_server
  measure "$name" "$fs_pid" "$bin/native_bench" --port "$port" --rate "$rate" \
    --tick-us "$tick_us" "${common[@]}"
  stop_all
}

if [ "$rate" = 0 ]; then
  start_cluster
  echo "== the peak: 128 B single sends, closed loop" >&2
  taskset -c "$client_cpu" "$bin/ferry-bench" produce -n "127.0.0.1:$ns_port" -t Bench \
    "${common[@]}" >"$out/peak.out" 2>"$out/peak.err"
  peak=$(sed -n 's/^RESULT.* msgs_per_s=\([0-9.]*\).*/\1/p' "$out/peak.out" | tail -1)
  rate=$(python3 -c "print(int($peak / 2))")
  echo "== peak $peak msgs/s: the runs go at $rate" >&2
  stop_all
else
  peak=""
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$runs"); do
  echo "== round $round of $runs" >&2
  floor_row floor-nodisk --no-disk
  floor_row floor-disk --file "$scratch/floor.data" --writeback-kb 1024 --flush-ms 500
  rm -f "$scratch/floor.data"
  for w in $work; do
    floor_row "floor-work-$w" --file "$scratch/floor.data" --writeback-kb 1024 --flush-ms 500 \
      --work-ns "$w"
    rm -f "$scratch/floor.data"
  done

  start_cluster
  measure broker-native "$broker_pid" "$bin/native_bench" --port "$broker_port" --rate "$rate" \
    --tick-us "$tick_us" "${common[@]}"
  stop_all
  rm -rf "$scratch"/broker-*

  start_cluster
  measure broker-client "$broker_pid" "$bin/ferry-bench" produce -n "127.0.0.1:$ns_port" \
    -t Bench --rate "$rate" --tick-us "$tick_us" "${common[@]}"
  stop_all
  rm -rf "$scratch"/broker-*
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$out" "$repo/docs/BENCHMARKS.md" "$docs" "$command_line" "$rate" "$peak" \
  "$runs" "$duration" "$warmup" "$tick_us" "$broker_cpu" "$client_cpu" "$load_before" \
  "$load_after" "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$work" <<'EOF'
import datetime, statistics, sys
(out, doc, docs, command, rate, peak, runs, duration, warmup, tick, bcpu, ccpu, lb, la,
 commit, work) = sys.argv[1:]

rows = [("floor-nodisk", "floor_server, no disk", "native_bench"),
        ("floor-disk", "floor_server, io_uring writes + writeback + fdatasync", "native_bench")]
rows += [(f"floor-work-{w}", f"floor_server as above, + {int(w):,} ns of work per request",
          "native_bench") for w in work.split()]
rows += [("broker-native", "mqbroker", "native_bench"),
         ("broker-client", "mqbroker", "ferry-bench (client library)")]

def parse(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)

ms = lambda us: f"{int(us) / 1000:.2f}"
lines = []
for key, server, client in rows:
    runs_ = [parse(l) for l in open(f"{out}/{key}.results")]
    runs_.sort(key=lambda r: int(r["p99_us"]))
    med = runs_[len(runs_) // 2]
    p99s = [int(r["p99_us"]) for r in runs_]
    errors = sum(int(r["errors"]) for r in runs_)
    cpus = sorted(int(r["server_cpu"]) for r in runs_)
    us_per_msg = int(med["server_cpu"]) / 100 / float(med["msgs_per_s"]) * 1e6
    lines.append(f"| {server} | {client} | {float(med['msgs_per_s']):,.0f} | {ms(med['p50_us'])} | "
                 f"**{ms(med['p99_us'])}** ({ms(min(p99s))}–{ms(max(p99s))}) | "
                 f"{ms(med['p999_us'])} | {med['server_cpu']} % ({cpus[0]}–{cpus[-1]} %) | "
                 f"{us_per_msg:.2f} | {errors} |")

date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
rate_text = (f"half the 128 B single-send peak measured first ({float(peak):,.0f} msgs/s "
             f"closed loop, ferry-bench)" if peak else "given on the command line")
section = f"""<!-- floor-bench:begin (generated by bench/floor.sh; edits here are overwritten) -->
## The machine's floor at half the peak

Run {date} at {commit}. Load average before: {lb}; after: {la}.

```sh
{command}
```

Every row sends 128 B messages at {int(rate):,} msgs/s ({rate_text}), open
loop with 1,024 in flight, the sender queueing what is due every {tick} µs;
latency from each message's intended send time to its acknowledgement,
{duration} s after {warmup} s, {runs} round(s) of the four rows in turn. The
row with the median p99 is shown, the range of p99 in brackets. Servers on
CPU {bcpu}, clients on CPU {ccpu}; "server CPU" is the server's share of its
CPU over the measured window (the range over the rounds in brackets), and
"server µs per msg" that CPU time per message.

| server | client | msgs/s | p50 ms | p99 ms | p99.9 ms | server CPU | server µs per msg | errors |
|---|---|---:|---:|---:|---:|---:|---:|---:|
""" + "\n".join(lines) + """

`floor_server` (bench/peers/floor_server.c) does only what any broker must:
it reads the requests and answers each with an empty OK; with the disk, only
after an io_uring buffered write holding the request has completed, with
writeback ahead every 1 MiB and an fdatasync every 500 ms, as the commit log
does under ASYNC_FLUSH by default. `native_bench` (bench/peers/native_bench.c)
is a one-thread native-protocol producer with no client library, asleep
between ticks like ferry-bench's sender; with `--series-ms W` it also
prints each W ms window's percentiles and how late its sends went out, to
line a slow window up with a server's own timestamps. So the
first row is the machine's floor for a round trip, the second the floor for a
server that stores what it acknowledges; the "+ ns of work" rows are that
server made busier by spinning for that long per request (`--work-ns`),
nothing else changed, so they show what the server's CPU share alone does to
p99 here; the broker rows add Ferry's broker, the last Ferry's client
library.
<!-- floor-bench:end -->
"""
if docs == "1":
    text = open(doc).read()
    b, e = "<!-- floor-bench:begin", "<!-- floor-bench:end -->"
    if b in text and e in text:
        text = text[:text.index(b)] + section.rstrip("\n") + text[text.index(e) + len(e):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open(doc, "w").write(text)
    print(f"wrote the floor section of {doc}", file=sys.stderr)
print(section)
EOF
