#!/usr/bin/env bash
# Runs every test of fogmesh: builds a normal and a sanitizer (ASan + UBSan) tree, checks the
# format, runs the unit tests and the integration tests against both builds, runs each fuzz
# harness for a bounded time, and ends with one line "N passed, N failed".
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=0 scripts/test.sh   skip fuzzing
# Skipped tests are listed in the summary with their reason ("skipped: needs root ..."); the
# suite 'slow' (unit tests in meson's suite slow, integration tests marked slow) is part of
# "everything" and is reported on lines of its own.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=$ROOT/build-results
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
PY=/usr/bin/python3   # Debian's python3, which has python3-pytest
rm -rf "$RESULTS" && mkdir -p "$RESULTS"

./scripts/install-deps.sh || exit 1

step() { printf '\n==== %s\n' "$*"; }

build() { # dir, meson args...
  local dir=$1; shift
  if [ ! -d "$dir" ]; then
    meson setup "$dir" "$@" >"$RESULTS/$(basename "$dir")-setup.log" 2>&1 || {
      cat "$RESULTS/$(basename "$dir")-setup.log"; rm -rf "$dir"; return 1; }
  fi
  ninja -C "$dir" >"$RESULTS/$(basename "$dir")-build.log" 2>&1 || {
    cat "$RESULTS/$(basename "$dir")-build.log"; return 1; }
  if grep -q 'warning:' "$RESULTS/$(basename "$dir")-build.log"; then
    grep 'warning:' "$RESULTS/$(basename "$dir")-build.log"; return 1
  fi
}

step "build (normal, -Wall -Wextra, warnings are errors here)"
build build --werror || { echo "0 passed, 1 failed"; exit 1; }
step "build (ASan + UBSan)"
build build-asan -Db_sanitize=address,undefined -Db_lundef=false --werror || {
  echo "0 passed, 1 failed"; exit 1; }

# Each check writes a JUnit XML file into $RESULTS; summarize.py counts them all.
step "format (clang-format)"
"$ROOT/scripts/check-format.sh" --junit "$RESULTS/format.xml"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# A private Podman (scripts/engine.sh) for the tests that need a container engine, and after them
# a private Docker for the runtime's test once more; the tests find the engine in
# FOGMESH_ENGINE_SOCKET (its kind in FOGMESH_ENGINE_KIND). Each is stopped after its tests, and on
# any exit (trap).
ENGINE_DIR=""
stop_engine() {
  [ -n "$ENGINE_DIR" ] && "$ROOT/scripts/engine.sh" stop "$ENGINE_DIR" >/dev/null 2>&1
  ENGINE_DIR=""
}
trap stop_engine EXIT
trap 'exit 130' INT TERM
start_engine() { # kind: podman or docker; exports FOGMESH_ENGINE_SOCKET and _KIND, or fails
  local kind=$1 sock t0
  ENGINE_DIR=$(mktemp -d /tmp/fogmesh-engine.XXXXXX)
  t0=$(date +%s.%N)
  if sock=$("$ROOT/scripts/engine.sh" --kind "$kind" start "$ENGINE_DIR" \
    2>"$RESULTS/engine-$kind-start.log"); then
    export FOGMESH_ENGINE_SOCKET=unix://$sock FOGMESH_ENGINE_KIND=$kind
    echo "engine: $kind at $FOGMESH_ENGINE_SOCKET, ready with localhost/bbox:latest in" \
      "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
    echo "<testsuite name=\"engine-$kind\"><testcase classname=\"engine\" name=\"start $kind\"/></testsuite>" \
      >"$RESULTS/engine-$kind.xml"
  else
    cat "$RESULTS/engine-$kind-start.log"
    echo "<testsuite name=\"engine-$kind\"><testcase classname=\"engine\" name=\"start $kind\"><failure message=\"scripts/engine.sh --kind $kind start failed, see engine-$kind-start.log\"/></testcase></testsuite>" \
      >"$RESULTS/engine-$kind.xml"
    stop_engine
    return 1
  fi
}
step "container engine (private Podman, scripts/engine.sh)"
start_engine podman

for b in build build-asan; do
  step "unit tests ($b)"
  meson test -C "$b" --suite unit --print-errorlogs --no-rebuild \
    --logbase "unit" 2>&1 | grep -E "^(Ok|Fail|Timeout):|FAIL"
  cp "$b/meson-logs/unit.junit.xml" "$RESULTS/unit-$b.xml" 2>/dev/null
  step "integration tests ($b)"
  FOGMESH_BUILD=$ROOT/$b $PY -m pytest -q -p no:cacheprovider -m "not slow" tests/integration \
    --junitxml="$RESULTS/integration-$b.xml" -o junit_suite_name="integration-$b" 2>&1 | tail -25
  # The suite 'slow' (pytest marker `slow`, tests/integration/conftest.py): tests that wait out
  # a long protocol timer. Run on its own so the summary counts it apart (slow-build). The
  # sanitizer build looks for memory errors; the slow tests wait on Raft and gossip timing
  # (tens of seconds) that ASan's slowdown on 2 cores only makes flaky, so they run on the
  # normal build only, and the summary says so.
  if [ "$b" = build ]; then
    step "integration tests, suite slow ($b)"
    FOGMESH_BUILD=$ROOT/$b $PY -m pytest -q -p no:cacheprovider -m slow tests/integration \
      --junitxml="$RESULTS/slow-$b.xml" -o junit_suite_name="slow-$b" 2>&1 | tail -25
  else
    echo "suite slow: not run on $b (see scripts/test.sh)"
  fi
done
stop_engine
unset FOGMESH_ENGINE_SOCKET FOGMESH_ENGINE_KIND

# The runtime must work against Docker too: the runtime's integration test once more, on the
# normal build, against a private dockerd (about 15 s).
step "container engine (private Docker, scripts/engine.sh --kind docker)"
if start_engine docker; then
  step "integration tests against Docker (build)"
  FOGMESH_BUILD=$ROOT/build $PY -m pytest -q -p no:cacheprovider tests/integration/test_runtime.py \
    --junitxml="$RESULTS/integration-docker.xml" -o junit_suite_name="integration-docker" 2>&1 |
    tail -25
fi
stop_engine
unset FOGMESH_ENGINE_SOCKET FOGMESH_ENGINE_KIND

if [ "$FUZZ_SECONDS" != 0 ]; then
  step "fuzzing (${FUZZ_SECONDS}s per harness)"
  "$ROOT/scripts/fuzz.sh" "$FUZZ_SECONDS" --junit "$RESULTS/fuzz.xml"
fi

step "summary"
$PY "$ROOT/scripts/summarize.py" "$RESULTS"
