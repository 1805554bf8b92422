#!/usr/bin/env bash
# Checks that every C file tracked or added in the tree is clang-format clean.
#   scripts/check-format.sh [--junit FILE]   check (exit 1 on a difference)
#   scripts/check-format.sh --fix            reformat in place
set -uo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files --cached --others --exclude-standard -- '*.c' '*.h')
if [ "${1:-}" = "--fix" ]; then
  echo "$files" | xargs -r clang-format -i
  exit 0
fi
bad=()
for f in $files; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ "${1:-}" = "--junit" ]; then
  {
    echo '<testsuite name="format">'
    echo '<testcase classname="format" name="clang-format">'
    [ ${#bad[@]} -gt 0 ] && echo "<failure message=\"not clang-format clean: ${bad[*]}\"/>"
    echo '</testcase></testsuite>'
  } >"$2"
fi
if [ ${#bad[@]} -gt 0 ]; then
  echo "not clang-format clean (run scripts/check-format.sh --fix): ${bad[*]}"
  exit 1
fi
echo "clang-format: $(echo "$files" | wc -w) files clean"
