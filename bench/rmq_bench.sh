#!/usr/bin/env bash
# The RocketMQ-protocol benchmark: builds mqnamesrv, mqbroker, mqadmin and
# ferry-rmq-bench (Release), starts a name server and one ASYNC_FLUSH master
# (port 0) under a scratch directory, and measures in one run the same
# scenarios through RocketMQ's remoting protocol (ferry-rmq-bench, JSON and
# binary headers) and through Ferry's native protocol (ferry-bench):
#
#   - produce: 128 B and 1 KiB bodies, single sends and batches of 32, 1024
#     messages in flight on one connection;
#   - consume: one backlog of 128 B messages, read from offset 0 by a new
#     group through each protocol, 8 queues, one outstanding pull per queue.
#
# It then profiles the broker (perf) under RocketMQ-protocol produce and
# consume load, and rewrites the rmq section of docs/BENCHMARKS.md.
#
#   bench/rmq_bench.sh [--duration SEC] [--warmup SEC] [--runs N] [--backlog N]
#                      [--ferry-bench PATH] [--broker-cpu CPU] [--client-cpu CPU]
#                      [--scratch DIR] [--build DIR] [--no-perf] [--no-docs] [--quick]
#
# The broker and name server are pinned to --broker-cpu, the load generators
# to --client-cpu (taskset). ferry-bench (the native load generator) is
# taken from --ferry-bench (default: build/bin/ferry-bench, i.e. a build of
# this tree); it is not rebuilt here. The produce scenarios run --runs times,
# interleaved (every scenario once, then again), and the run with the median
# msgs/s is reported; consume runs once per protocol.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

duration=3
warmup=1
runs=3
backlog=1000000
broker_cpu=0
client_cpu=$(( $(nproc) > 1 ? 1 : 0 ))
scratch="$repo/build-bench/rmq"
build="$repo/build-bench"
ferry_bench="$repo/build/bin/ferry-bench"
docs=1
perf_on=1
command_line="bench/rmq_bench.sh${*:+ $*}"

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --backlog) backlog=$2; shift 2 ;;
    --ferry-bench) ferry_bench=$2; shift 2 ;;
    --broker-cpu) broker_cpu=$2; shift 2 ;;
    --client-cpu) client_cpu=$2; shift 2 ;;
    --scratch) scratch=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-perf) perf_on=0; shift ;;
    --no-docs) docs=0; shift ;;
    --quick) duration=1; warmup=0.5; runs=1; backlog=200000; shift ;;
    -h|--help) usage ;;
    *) echo "rmq_bench.sh: unknown option $1" >&2; usage ;;
  esac
done

for tool in taskset python3 cmake; do
  if ! command -v "$tool" >/dev/null; then
    echo "rmq_bench.sh: $tool is missing; run scripts/install-deps.sh" >&2
    exit 1
  fi
done
if [ ! -x "$ferry_bench" ]; then
  echo "rmq_bench.sh: $ferry_bench is missing: build ferry-bench, or pass --ferry-bench PATH" >&2
  exit 1
fi
if [ "$perf_on" = 1 ] && ! command -v perf >/dev/null; then
  echo "rmq_bench.sh: perf is missing (apt-get install linux-perf), or pass --no-perf" >&2
  exit 1
fi

echo "== building (Release) in $build" >&2
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target mqnamesrv mqbroker mqadmin ferry-rmq-bench -j "$(nproc)" >/dev/null
bin="$build/bin"

out=$(mktemp -d "${TMPDIR:-/tmp}/ferry-rmq-bench-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
}
trap 'cleanup; rm -rf "$out" "$scratch"' EXIT
rm -rf "$scratch"
mkdir -p "$scratch"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ processes

listen_port() { # LOG WHAT PID: the port a server printed ("... listening on port N")
  for _ in $(seq 300); do
    if ! kill -0 "$3" 2>/dev/null; then
      echo "rmq_bench.sh: $2 exited; see $1" >&2; tail -5 "$1" >&2; exit 1
    fi
    local p
    p=$(sed -n 's/^.* listening on port \([0-9][0-9]*\)$/\1/p' "$1" | head -1)
    if [ -n "$p" ]; then echo "$p"; return 0; fi
    sleep 0.1
  done
  echo "rmq_bench.sh: $2 printed no port after 30 s" >&2
  exit 1
}

taskset -c "$broker_cpu" "$bin/mqnamesrv" -o listenPort=0 -o listenAddress=127.0.0.1 \
  >"$scratch/namesrv.log" 2>&1 &
pids+=($!)
ns="127.0.0.1:$(listen_port "$scratch/namesrv.log" mqnamesrv $!)"

args=()
for kv in "brokerName=rmqbench" "brokerId=0" "brokerRole=ASYNC_MASTER" "flushDiskType=ASYNC_FLUSH" \
          "namesrvAddr=$ns" "listenPort=0" "haListenPort=0" "listenAddress=127.0.0.1" \
          "brokerIP1=127.0.0.1" "storePathRootDir=$scratch/broker" "autoCreateTopicEnable=false" \
          "registerNameServerPeriod=1000"; do
  args+=(-o "$kv")
done
taskset -c "$broker_cpu" "$bin/mqbroker" "${args[@]}" >"$scratch/broker.log" 2>&1 &
broker_pid=$!
pids+=("$broker_pid")
broker="127.0.0.1:$(listen_port "$scratch/broker.log" mqbroker "$broker_pid")"

create_topic() { # TOPIC
  "$bin/mqadmin" updateTopic -n "$ns" -b "$broker" -t "$1" -r 8 -w 8 >/dev/null
  for _ in $(seq 300); do
    if "$bin/mqadmin" topicRoute -n "$ns" -t "$1" 2>/dev/null | grep -q '"rmqbench"'; then
      return 0
    fi
    sleep 0.1
  done
  echo "rmq_bench.sh: topic $1 never routed" >&2
  exit 1
}
for t in RmqProduce NativeProduce Backlog; do create_topic "$t"; done

broker_ticks() { awk '{print $14 + $15}' "/proc/$broker_pid/stat"; }
hz=$(getconf CLK_TCK)

# run NAME TOOL ARGS...: one run of a load generator on the client CPU;
# appends "NAME <RESULT fields> broker_cpu_s=F client_cpu_s=F" to $out/results.
run() {
  local name=$1 tool=$2
  shift 2
  echo "== $name: $(basename "$tool") $*" >&2
  local t0
  t0=$(broker_ticks)
  if ! taskset -c "$client_cpu" "$tool" "$@" >"$out/run.out" 2>"$out/run.err"; then
    echo "rmq_bench.sh: $name failed:" >&2; tail -5 "$out/run.err" >&2; exit 1
  fi
  local t1 res cpu
  t1=$(broker_ticks)
  res=$(tail -1 "$out/run.out")
  cpu=$(sed -n 's/^CPU .* cpu_s=\([0-9.]*\) .*$/\1/p' "$out/run.out")
  case "$res" in RESULT*) ;; *) echo "rmq_bench.sh: $name: no RESULT line" >&2; exit 1 ;; esac
  echo "$name ${res#RESULT } broker_cpu_s=$(awk -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN{printf "%.3f", t / hz}') client_cpu_s=${cpu:-0}" \
    >>"$out/results"
  grep -h "errors; first" "$out/run.err" >&2 || true
  echo "   $res" >&2
}

rmq="$bin/ferry-rmq-bench"
common=(--duration-s "$duration" --warmup-s "$warmup")
for r in $(seq "$runs"); do
  for size in 128 1024; do
    for batch in 1 32; do
      inflight_req=$(( 1024 / batch ))
      run "native-$size-$batch" "$ferry_bench" produce -n "$ns" -t NativeProduce --size "$size" \
        --batch "$batch" --inflight 1024 "${common[@]}"
      for hdr in json binary; do
        run "rmq-$hdr-$size-$batch" "$rmq" produce --broker "$broker" -t RmqProduce \
          --size "$size" --batch "$batch" --inflight "$inflight_req" --header "$hdr" --queues 8 \
          "${common[@]}"
      done
    done
  done
done

# The consume backlog: the same messages for both protocols.
echo "== filling the backlog: $backlog x 128 B" >&2
taskset -c "$client_cpu" "$ferry_bench" produce -n "$ns" -t Backlog --size 128 --batch 32 \
  --inflight 1024 --count "$backlog" --duration-s 120 --warmup-s 0 >"$out/fill.out" 2>"$out/fill.err" ||
  { echo "rmq_bench.sh: filling the backlog failed" >&2; tail -5 "$out/fill.err" >&2; exit 1; }
cdur=$(awk -v d="$duration" 'BEGIN{print (d * 10 > 60 ? d * 10 : 60)}')
run native-consume "$ferry_bench" consume -n "$ns" -t Backlog -g native-consume --from first \
  --threads 8 --count "$backlog" --duration-s "$cdur"
for hdr in json binary; do
  run "rmq-$hdr-consume" "$rmq" consume --broker "$broker" -t Backlog -g "rmq-$hdr-consume" \
    --queues 8 --header "$hdr" --count "$backlog" --duration-s "$cdur"
done

# ------------------------------------------------------------------ perf
# The broker under RocketMQ-protocol load: where its CPU goes.
profile() { # NAME TOOL ARGS...: perf samples the broker for the whole run of TOOL
  local name=$1 tool=$2
  shift 2
  echo "== perf: $name" >&2
  perf record -F 999 -g -p "$broker_pid" -o "$out/perf-$name.data" >/dev/null \
    2>"$out/perf-$name.rec.err" &
  local pp=$!
  sleep 0.3
  taskset -c "$client_cpu" "$tool" "$@" >"$out/perf-$name.out" 2>&1 || true
  kill -INT "$pp" 2>/dev/null || true
  wait "$pp" || true
  perf report -i "$out/perf-$name.data" --no-children --sort dso,symbol --stdio -g none \
    --percent-limit 1.5 2>/dev/null | grep -E '^ +[0-9]' | head -16 >"$out/perf-$name.top" || true
  perf report -i "$out/perf-$name.data" --no-children --sort dso --stdio -g none \
    --percent-limit 0.5 2>/dev/null | grep -E '^ +[0-9]' | head -8 >"$out/perf-$name.dso" || true
  mkdir -p "$build/rmq-last" && cp "$out/perf-$name.data" "$build/rmq-last/" || true
}
if [ "$perf_on" = 1 ]; then
  create_topic PerfTopic
  profile produce-json-128 "$rmq" produce --broker "$broker" -t PerfTopic --size 128 \
    --inflight 1024 --header json --queues 8 --duration-s "$duration" --warmup-s 0
  profile produce-native-128 "$ferry_bench" produce -n "$ns" -t PerfTopic --size 128 \
    --inflight 1024 --duration-s "$duration" --warmup-s 0
  profile consume-json "$rmq" consume --broker "$broker" -t Backlog -g perf-consume --queues 8 \
    --header json --duration-s 60
fi

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
cleanup
mkdir -p "$build/rmq-last" && cp "$out"/results "$out"/*.top "$out"/*.dso "$build/rmq-last/" 2>/dev/null || true

# ------------------------------------------------------------------ report

machine=$(python3 - "$scratch" <<'EOF'
import os, platform, re
cpu = "unknown CPU"
for l in open("/proc/cpuinfo"):
    if l.startswith("model name"):
        cpu = re.sub(r"\s+", " ", l.split(":", 1)[1]).strip()
        break
mem = 0
for l in open("/proc/meminfo"):
    if l.startswith("MemTotal"):
        mem = int(l.split()[1]) / 1024 / 1024
virt = "virtual machine" if "hypervisor" in open("/proc/cpuinfo").read() else "bare metal"
print(f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM ({virt}); Linux {platform.release()}")
EOF
)

python3 - "$out" "$repo/docs/BENCHMARKS.md" "$docs" "$command_line" "$machine" "$broker_cpu" \
  "$client_cpu" "$duration" "$warmup" "$backlog" "$load_start" "$load_end" "$perf_on" "$runs" <<'EOF'
import datetime, os, sys
(out, doc, write_docs, command, machine, broker_cpu, client_cpu, duration, warmup, backlog,
 load_start, load_end, perf_on, runs) = sys.argv[1:]

runs_of = {}
for l in open(f"{out}/results"):
    name, *kv = l.split()
    runs_of.setdefault(name, []).append(dict(x.split("=", 1) for x in kv))
res = {}
for name, rs in runs_of.items():
    rs.sort(key=lambda r: float(r["msgs_per_s"]))
    res[name] = rs[len(rs) // 2]

def spread(name):
    rs = runs_of[name]
    if len(rs) < 2:
        return ""
    return f" ({float(rs[0]['msgs_per_s'])/1e3:,.0f}k–{float(rs[-1]['msgs_per_s'])/1e3:,.0f}k)"

def k(x):
    return f"{x:,.0f}"

def rate(r):
    return float(r["msgs_per_s"])

def broker_us(name):
    """Median over the runs of broker CPU µs per message (None if no message)."""
    v = sorted(float(r["broker_cpu_s"]) * 1e6 / int(r["msgs"]) for r in runs_of[name]
               if int(r["msgs"]))
    return v[len(v) // 2] if v else None

def cpu_us(name):
    v = broker_us(name)
    return f"{v:.2f}" if v is not None else "—"

def lat(key, p):
    return " / ".join(f"{int(res[f'{x}-{key}'][p]) / 1000:.1f}"
                      for x in ("native", "rmq-json", "rmq-binary"))

def errs(r):
    return "" if r["errors"] == "0" else f" ({r['errors']} errors)"

rows, summary = [], []
scen = [(f"{s}-{b}", f"produce, {'128 B' if s == 128 else '1 KiB'}, "
         f"{'single sends' if b == 1 else 'batches of 32'}") for s in (128, 1024) for b in (1, 32)]
scen.append(("consume", f"consume {int(backlog):,} x 128 B from offset 0"))
for key, label in scen:
    n = res[f"native-{key}"]
    cells = [label, f"{k(rate(n))}{spread('native-' + key)}{errs(n)}",
             f"{float(n['mb_per_s']):,.1f}", cpu_us("native-" + key)]
    for hdr in ("json", "binary"):
        r = res[f"rmq-{hdr}-{key}"]
        ratio = rate(r) / rate(n) if rate(n) else 0
        cells += [f"{k(rate(r))}{spread(f'rmq-{hdr}-{key}')}{errs(r)}", f"{ratio:.2f}",
                  cpu_us(f"rmq-{hdr}-{key}")]
        summary.append((f"{hdr}-{key}", rate(r), rate(n), ratio))
    if key != "consume":
        cells += [lat(key, "p50_us"), lat(key, "p99_us")]
    else:
        cells += ["—", "—"]
    rows.append("| " + " | ".join(cells) + " |")

def top(name):
    p = f"{out}/perf-{name}.top"
    if not os.path.exists(p):
        return "(no profile)"
    lines = []
    d = f"{out}/perf-{name}.dso"
    if os.path.exists(d):
        lines.append("by shared object:")
        for l in open(d):
            f = l.split()
            if len(f) >= 2:
                lines.append(f"{f[0]:>7}  {' '.join(f[1:])}")
        lines.append("by symbol:")
    for l in open(p):
        f = l.split()
        while f and f[-1] == "-":
            f.pop()
        if len(f) >= 4:
            lines.append(f"{f[0]:>7}  {f[1]:<22} {' '.join(f[2:])}")
    return "\n".join(lines) if lines else "(no samples)"

# The gap in broker CPU per message, protocol against protocol.
gap = []
for key, label in scen:
    nu = broker_us("native-" + key)
    parts = []
    for hdr, what in (("json", "JSON"), ("binary", "binary")):
        ru = broker_us(f"rmq-{hdr}-{key}")
        if nu and ru:
            parts.append(f"{what} headers {ru / nu:.2f} x")
    gap.append(f"- {label}: " + ", ".join(parts) + " the native broker CPU per message.")

perf_text = ""
if perf_on == "1":
    perf_text = f"""
### Where the broker's time goes under RocketMQ-protocol load (perf)

`perf record -F 999 -g -p <broker>` for the whole of each load, `perf report
--no-children`, self time as a share of the broker's samples: by shared
object (`--sort dso`, entries of at least 0.5 %), then by symbol (`--sort
dso,symbol`, at least 1.5 %; `[k]` kernel, `[.]` user space):

Produce, 128 B single sends, JSON headers (`ferry-rmq-bench produce --size
128 --inflight 1024 --header json --queues 8`, {duration} s):

```
{top("produce-json-128")}
```

The same load through the native protocol for comparison (`ferry-bench
produce --size 128 --inflight 1024`, {duration} s):

```
{top("produce-native-128")}
```

Consume, JSON headers (`ferry-rmq-bench consume --queues 8 --header json`
from offset 0 of the backlog):

```
{top("consume-json")}
```

`pvm_irq_enable` is where this virtual machine's paravirtualised kernel
lands its samples for kernel work (socket reads and writes, page faults);
`fy_index_put` is the key index (the store section above explains its cost).
The RocketMQ protocol's own cost shows by shared object: jansson (JSON
headers parsed and built per request, spread over many small functions, none
of them large alone) and the allocator in libc (jansson's trees, the
per-request header strings, the re-encoded pull bodies), against protobuf-c's
small share on the native path.
"""

date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
section = f"""<!-- rmq-bench:begin (generated by bench/rmq_bench.sh; edits here are overwritten) -->
## RocketMQ protocol vs native protocol

Run {date} on {machine}. Load average (1, 5, 15 min) {load_start} at the
start and {load_end} at the end: the machine was shared while this ran, so
absolute numbers are low and noisy (msgs/s follows the share of CPU the
broker got); broker CPU per message is the steadier comparison.

Command (from the repository root):

```sh
{command}
```

One name server and one ASYNC_FLUSH master (defaults otherwise; index on)
pinned to CPU {broker_cpu}, the load generator to CPU {client_cpu} (`taskset`),
loopback. "native" is `ferry-bench` (Ferry's protocol, through the client
library); "RMQ JSON" / "RMQ binary" is `ferry-rmq-bench` (bench/rmq_bench.c),
which speaks RocketMQ 4.x remoting as a Java client would, with JSON or
RocketMQ's binary command headers. Produce: {runs} run(s) per scenario, interleaved,
the run with the median msgs/s shown with the range over the runs in
brackets, each {duration} s after a {warmup} s warm-up, one connection, 1024 messages in flight (1024 single sends,
or 32 batches of 32), 8 queues round-robin. The RocketMQ messages carry
properties `TAGS` and `UNIQ_KEY` as a Java producer's do (the broker indexes
the UNIQ_KEY); ferry-bench's carry its client's message id and no tag.
Consume: a backlog of {int(backlog):,} 128 B messages (written once by
ferry-bench, batches of 32) read from offset 0 by a new group through each
protocol, 32 messages per pull, one pull outstanding per queue (ferry-bench:
8 threads, one per queue; ferry-rmq-bench: one connection, 8 pipelined
pulls), timed up to the last message.

- **ratio**: RocketMQ-protocol msgs/s divided by native msgs/s.
- **broker µs/msg**: broker CPU time (user + system, `/proc/<pid>/stat`)
  during a run divided by the messages counted, the median over the runs;
  it includes the warm-up, so it is a little high, equally for both. On a
  shared machine the broker gets only part of its CPU, so msgs/s follows
  what the scheduler gave it; CPU per message is the steadier comparison.
- **p50, p99**: latency per request (a single send or a batch), from
  queuing it to its response, in ms, native / RMQ JSON / RMQ binary; with
  1024 messages in flight it is mostly queueing.

| scenario | native msgs/s | native MB/s | native broker µs/msg | RMQ JSON msgs/s | ratio | RMQ JSON broker µs/msg | RMQ binary msgs/s | ratio | RMQ binary broker µs/msg | p50 ms | p99 ms |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
""" + "\n".join(rows) + """

Broker CPU per message through RocketMQ's protocol, against the native
protocol (the gap, from the table):

""" + "\n".join(gap) + """

What the comparison is and is not:

- Produce through RocketMQ's protocol costs the broker more where the
  header dominates: a JSON header is parsed with jansson (a tree of
  allocations per request) and the response header is built the same way,
  so single sends with JSON headers cost the most. RocketMQ's binary header
  avoids the JSON parse; batches spread either header over 32 messages.
- Consume through RocketMQ's protocol re-encodes every pulled record into
  RocketMQ's stored-message layout (decode, a new CRC32 of the body, a copy
  into a new body buffer: `fy_record_decode`, `fy_rmq_crc32`, `malloc` in the
  profile); the native protocol sends the stored records as they are.
- The two load generators differ, and that shows in the numbers as much as
  the protocols: ferry-bench goes through the client library (its own
  thread; a producer thread hands each send over), and its consumer threads
  pull synchronously, one round trip at a time; ferry-rmq-bench is one
  epoll loop that writes pipelined requests in bursts, so the broker reads
  many requests per system call. Where RocketMQ's protocol comes out ahead
  of the native one, that is the load generator, not the protocol.
""" + perf_text + "<!-- rmq-bench:end -->\n"

if write_docs == "1":
    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
    b, e = "<!-- rmq-bench:begin", "<!-- rmq-bench:end -->"
    if b in text and e in text:
        head = text[:text.index(b)]
        tail = text[text.index(e) + len(e):].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open(doc, "w").write(text)
    print(f"wrote the rmq section of {doc}", file=sys.stderr)

print(section)
for name, r, n, ratio in summary:
    print(f"SUMMARY {name} rmq_msgs_per_s={r:.0f} native_msgs_per_s={n:.0f} ratio={ratio:.2f}")
EOF
