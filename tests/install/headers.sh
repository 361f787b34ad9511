#!/usr/bin/env bash
# headers.sh — every public header compiles alone, as C11 and as C++17, with every warning an
# error (CTest: test_public_headers, label unit).
#
#   headers.sh INCLUDE_DIR CC CXX
#
# A header that needs another include first, uses a GNU extension, lacks extern "C" (a C++
# caller would then link against mangled names: the C++ check calls nothing, so it catches
# syntax only; the extern "C" guard is checked by grep) or misses DSPY_API on a declaration
# fails here. Prints one line per failure and "headers: N passed, M failed".
set -u
INC=$1; CC=$2; CXX=$3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dspy-headers.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
pass=0; fail=0
for h in "$INC"/dspy/*.h; do
    name=$(basename "$h")
    # The declaration after the include keeps the translation unit non-empty (export.h alone
    # declares nothing; ISO C forbids an empty unit).
    printf '#include "dspy/%s"\nint dspy_header_check;\n' "$name" > "$TMP/t.c"
    cp "$TMP/t.c" "$TMP/t.cpp"
    if $CC -std=c11 -pedantic -Wall -Wextra -Werror -I"$INC" -fsyntax-only "$TMP/t.c" 2> "$TMP/err"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL C11 $name"; sed 's/^/     /' "$TMP/err" | head -20
    fi
    if $CXX -std=c++17 -pedantic -Wall -Wextra -Werror -I"$INC" -fsyntax-only "$TMP/t.cpp" 2> "$TMP/err"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL C++17 $name"; sed 's/^/     /' "$TMP/err" | head -20
    fi
    # Headers that declare functions guard them with extern "C" and mark them DSPY_API.
    if [ "$name" != export.h ] && [ "$name" != dspy.h ]; then
        if grep -q 'extern "C" {' "$h"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $name: no extern \"C\" guard"; fi
    fi
done
# The umbrella header includes every other header.
missing=$(cd "$INC/dspy" && for h in *.h; do [ "$h" = dspy.h ] || grep -q "#include \"dspy/$h\"" dspy.h || echo "$h"; done)
if [ -z "$missing" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL dspy.h lacks:" $missing; fi
# Every function declared at file scope carries DSPY_API: a declaration line that starts with a
# type and a dspy_ name followed by "(" but without the mark.
unmarked=$(grep -nE '^(const |unsigned |struct )?[a-z_0-9]+ \**dspy_[a-z_0-9]+\(' "$INC"/dspy/*.h)
if [ -z "$unmarked" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL declarations without DSPY_API:"; echo "$unmarked" | head -20; fi
echo "headers: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
