#!/usr/bin/env bash
# Builds Ferry's libFuzzer targets with clang (ASan + UBSan) in a build dir
# of their own and runs each for a bounded time on its committed seed
# corpus (tests/fuzz/corpus/<name>/). New inputs go to <build>/fuzz-work,
# never into the committed corpus; a crash leaves its input in
# <build>/fuzz-work/<name>/artifacts/ and fails the script.
#
#   scripts/fuzz.sh                       60 s per target, build-fuzz/
#   scripts/fuzz.sh --time 20 --build DIR
#   scripts/fuzz.sh --target remoting     one target (frame, remoting)
#
# Exits 77 (skipped) when clang or its fuzzer runtime (Debian package
# libclang-rt-14-dev) is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

time_s=60
build=build-fuzz
runs=10000000
targets="frame remoting"
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time_s=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --target) targets=$2; shift 2 ;;
    *) echo "usage: $0 [--time SECONDS] [--build DIR] [--runs N] [--target NAME]" >&2; exit 2 ;;
  esac
done

clang=${CLANG:-$(command -v clang || true)}
if [ -z "$clang" ]; then
  echo "fuzz: clang not found; skipping" >&2
  exit 77
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }' \
  > "$probe/p.c"
if ! "$clang" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>/dev/null; then
  echo "fuzz: $clang cannot link -fsanitize=fuzzer (install libclang-rt-14-dev); skipping" >&2
  exit 77
fi

mkdir -p "$build"
if ! { cmake -S . -B "$build" -DCMAKE_C_COMPILER="$clang" -DFERRY_FUZZ=ON -DFERRY_TESTS=OFF \
         -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
       cmake --build "$build" --target $(printf 'fuzz_%s ' $targets) -j "$(nproc)"; } > "$build/fuzz-build.log" 2>&1; then
  tail -n 40 "$build/fuzz-build.log" >&2
  echo "fuzz: build failed (log: $build/fuzz-build.log)" >&2
  exit 1
fi

status=0
for name in $targets; do
  work="$build/fuzz-work/$name"
  mkdir -p "$work/corpus" "$work/artifacts"
  echo "== fuzz_$name: ${time_s}s, corpus tests/fuzz/corpus/$name"
  # Leak checking is on; -malloc_limit_mb catches any single allocation a
  # hostile input could inflate (the unpack budget keeps them far below).
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
       "$build/bin/fuzz_$name" -max_total_time="$time_s" -runs="$runs" -timeout=10 \
         -malloc_limit_mb=64 -rss_limit_mb=2048 -print_final_stats=1 \
         -artifact_prefix="$work/artifacts/" "$work/corpus" "tests/fuzz/corpus/$name" \
         > "$work/log" 2>&1; then
    tail -n 60 "$work/log" >&2
    echo "fuzz_$name: FAILED; inputs in $work/artifacts/" >&2
    status=1
    continue
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)' \
    "$work/log" || true
  echo "fuzz_$name: ok"
done
exit $status
