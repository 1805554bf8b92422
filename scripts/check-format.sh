#!/usr/bin/env bash
# Checks that every C file tracked or added in the tree is clang-format clean, and that every
# table in a comment is out of clang-format's reach.
#   scripts/check-format.sh [--junit FILE]   check (exit 1 on a difference)
#   scripts/check-format.sh --fix            reformat in place
#
# Tables in comments (wire formats, command tables, field lists: columns aligned by hand) are
# wrapped, the whole comment, in /* clang-format off */ ... /* clang-format on */. clang-format
# reflows a comment paragraph as soon as one of its lines exceeds the column limit, and a table
# has no paragraph breaks: netlink/link.h's frame table was once reflowed into prose that way.
# The check below finds comment lines that look like a table (a run of three or more spaces
# between two words, or a layout with two or more `|`/`||` separators, indented in the
# comment) outside such a block, and fails on them; --fix does not add the guards.
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

# Files whose tables are known to be unguarded, with the reason; empty is the goal.
table_exempt=""
tables=$(echo "$files" | /usr/bin/python3 -c '
import re, sys
exempt = set(sys.argv[1].split())
col = re.compile(r"^\s*(?:/\*+|\*) +\S.*?\S {3,}\S")
bar = re.compile(r"^\s*(?:/\*+|\*) {2,}\S.*\s\|\|?\s.*\s\|\|?\s")
for f in sys.stdin.read().split():
    if f in exempt:
        continue
    guarded = in_comment = False
    with open(f, errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            s = line.strip()
            if "clang-format off" in s:
                guarded = True
                continue
            if "clang-format on" in s:
                guarded = False
                continue
            if in_comment:
                comment, in_comment = True, "*/" not in s
            elif s.startswith("/*"):
                comment, in_comment = True, "*/" not in s[2:]
            else:
                # code, maybe with a comment after it: not a table line
                comment = False
                if "/*" in s and "*/" not in s.split("/*", 1)[1]:
                    in_comment = True
            if comment and not guarded and (col.match(line) or bar.match(line)):
                print(f"{f}:{n}: {s}")
' "$table_exempt")
if [ -n "$tables" ]; then
  echo "comment tables outside /* clang-format off */ ... /* clang-format on */:"
  echo "$tables"
fi

if [ "${1:-}" = "--junit" ]; then
  {
    echo '<testsuite name="format">'
    echo '<testcase classname="format" name="clang-format">'
    [ ${#bad[@]} -gt 0 ] && echo "<failure message=\"not clang-format clean: ${bad[*]}\"/>"
    echo '</testcase>'
    echo '<testcase classname="format" name="comment tables guarded">'
    [ -n "$tables" ] && echo "<failure message=\"comment tables outside clang-format off: $(echo "$tables" | cut -d: -f1,2 | tr '\n' ' ')\"/>"
    echo '</testcase></testsuite>'
  } >"$2"
fi
status=0
if [ ${#bad[@]} -gt 0 ]; then
  echo "not clang-format clean (run scripts/check-format.sh --fix): ${bad[*]}"
  status=1
fi
[ -n "$tables" ] && status=1
[ $status = 0 ] && echo "clang-format: $(echo "$files" | wc -w) files clean, comment tables guarded"
exit $status
