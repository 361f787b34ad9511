#!/usr/bin/env bash
# check-skips.sh — fails when CTest skipped a test that must run on this machine (make test/asan).
#
#   check-skips.sh BUILD_DIR JUNIT_XML
#
# A test skips (exit 77, SKIP_RETURN_CODE) when an input or a tool it needs is missing. Only the
# gpu lane may skip on a machine without a GPU; any other skip means CI did not test what it
# claims (shared data absent, node/npm or the npm registry unreachable, no chromium...), so this
# lists those tests and exits 1. Reads the JUnit file `ctest --output-junit` wrote (status
# "notrun" with <skipped>) and the gpu lane from `ctest -N -L ^gpu$`.
set -euo pipefail
BUILD=$1; JUNIT=$2
[ -f "$JUNIT" ] || { echo "check-skips: $JUNIT not found (run ctest with --output-junit)" >&2; exit 1; }
skipped=$(awk '/<testcase /{ name = $0; sub(/.*<testcase name="/, "", name); sub(/".*/, "", name) }
               /<skipped /{ print name }' "$JUNIT" | sort -u)
gpu=$(ctest --test-dir "$BUILD" -N -L '^gpu$' | sed -n 's/^ *Test *#[0-9]*: *//p' | sort -u)
outside=$(comm -23 <(printf '%s\n' "$skipped" | sed '/^$/d') <(printf '%s\n' "$gpu" | sed '/^$/d'))
n_gpu=$(comm -12 <(printf '%s\n' "$skipped" | sed '/^$/d') <(printf '%s\n' "$gpu" | sed '/^$/d') | wc -l)
if [ -n "$outside" ]; then
    echo "check-skips: these tests were SKIPPED though they must run here (see their output for why):" >&2
    printf '  %s\n' $outside >&2
    echo "check-skips: a skip is not a pass; install what is missing (make deps) or fix the test." >&2
    exit 1
fi
echo "check-skips: no skip outside the gpu lane ($n_gpu gpu test(s) skipped)"
