#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan) and runs each for a bounded time.
#   scripts/fuzz.sh [SECONDS] [--junit FILE]
# Each harness starts from its seed corpus in tests/fuzz/seeds/NAME (when there is one) and
# writes what it finds into a scratch corpus under build-fuzz/. A crash fails the run and leaves
# the crashing input in build-fuzz/.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
junit=""
[ "${2:-}" = "--junit" ] && junit=$3
dir=build-fuzz
if [ ! -d $dir ]; then
  CC=clang CFLAGS="-fsanitize=fuzzer-no-link" meson setup $dir -Dfuzzing=true \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || exit 1
fi
ninja -C $dir >$dir/fuzz-build.log 2>&1 || { cat $dir/fuzz-build.log; exit 1; }

cases=""
status=0
for exe in $dir/tests/fuzz/fuzz_*; do
  [ -f "$exe" ] && [ -x "$exe" ] || continue
  name=$(basename "$exe")
  corpus=$dir/corpus-$name
  mkdir -p "$corpus"
  seeds=tests/fuzz/seeds/${name#fuzz_}
  [ -d "$seeds" ] || seeds=""
  log=$dir/$name.log
  if (cd $dir && "./tests/fuzz/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "../$corpus" ${seeds:+"../$seeds"} >"$name.log" 2>&1); then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    echo "$name: ok, ${runs:-?} inputs in ${secs}s"
    cases+="<testcase classname=\"fuzz\" name=\"$name\"/>"
  else
    echo "$name: FAILED — see $log"; tail -30 "$log"
    cases+="<testcase classname=\"fuzz\" name=\"$name\"><failure message=\"crash, see $log\"/></testcase>"
    status=1
  fi
done
[ -n "$junit" ] && echo "<testsuite name=\"fuzz\">$cases</testsuite>" >"$junit"
exit $status
