#!/usr/bin/env bash
# The test command: installs dependencies, builds Ferry twice (a normal
# build and one with AddressSanitizer+UBSan) and runs every unit and
# integration test in both. Exits non-zero if anything fails.
#
#   scripts/test.sh            everything
#   scripts/test.sh -R commitlog   only tests whose name matches (ctest -R)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

jobs=$(nproc)
status=0
for variant in release asan; do
  dir=build
  flags=()
  if [ "$variant" = asan ]; then
    dir=build-asan
    flags=(-DFERRY_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  fi
  echo "== $variant build ($dir)"
  cmake -S . -B "$dir" "${flags[@]}" >/dev/null
  cmake --build "$dir" -j "$jobs"
  echo "== $variant tests"
  # Leak checking stays on under ASan; UBSan findings abort the test.
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
       ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@"; then
    status=1
  fi
done
exit $status
