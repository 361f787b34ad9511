#!/usr/bin/env bash
# symbols.sh — the installed libraries define no global symbol outside the dspy_/DSPY_ prefix
# (CTest: test_install_symbols, label unit).
#
#   symbols.sh BUILD_DIR
#
# Installs the built tree into a temporary prefix and reads the installed libdspy.a (every
# global definition, hidden ones included: they still collide when a program links the archive)
# and libdspy.so (its dynamic table: what a program can bind to). Allowed besides the prefix:
# what the toolchains emit on their own (CUDA's registration stubs and fatbin wrappers, C++'s
# guard/typeinfo for them) — listed below by pattern, nothing of ours.
set -u
BUILD=$(cd "$1" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dspy-symbols.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail=0
cmake --install "$BUILD" --prefix "$TMP/prefix" > "$TMP/log" 2>&1 || { cat "$TMP/log"; exit 1; }
LIBDIR=$(dirname "$(find "$TMP/prefix" -name libdspy.a | head -1)")
# Toolchain-made names: nvcc's per-file registration (__cudaRegisterLinkedBinary_*,
# __fatbinwrap_*, __nv_*), and the weak (COMDAT) C++ code it instantiates: CUDA's dim3
# constructors, std:: templates (`int&& std::forward<int>(...)`), the personality routine's
# reference, typeinfo and vtables of standard types. Kernels and __device__ functions of ours
# are static, so they never show here.
TOOLCHAIN='^(__cuda|__fatbinwrap|__nv_|__device_stub|DW\.ref\.__gxx_personality_v0$|dim3::|std::|(typeinfo|typeinfo name|vtable|guard variable) for std::)|^[^(]* std::[a-z_]+<'
check() {
    local what=$1 list=$2
    local n_all n_bad
    n_all=$(wc -l < "$list")
    grep -vE '^(dspy_|DSPY_)' "$list" | grep -vE "$TOOLCHAIN" > "$TMP/bad"
    n_bad=$(wc -l < "$TMP/bad")
    if [ "$n_all" -eq 0 ]; then
        echo "FAIL $what: no global symbols at all (wrong file?)"; fail=$((fail + 1))
    elif [ "$n_bad" -eq 0 ]; then
        echo "ok   $what: $n_all global symbols, all dspy_/DSPY_"
    else
        echo "FAIL $what: $n_bad of $n_all global symbols lack the dspy_ prefix:"
        sed 's/^/     /' "$TMP/bad" | head -200
        fail=$((fail + 1))
    fi
}
# Archive: defined (not U), global (upper-case type letter; weak V/W included). Demangled (-C):
# the CUDA side is C++, so an internal dspy_cu_fail is _Z12dspy_cu_fail... before demangling.
nm -g --defined-only -C "$LIBDIR/libdspy.a" | sed -n -E 's/^[0-9a-f]+ [A-Za-z] //p' | sort -u > "$TMP/static"
check "libdspy.a" "$TMP/static"
nm -D --defined-only -C "$LIBDIR/libdspy.so" | sed -n -E 's/^[0-9a-f]+ [A-Za-z] //p' | sort -u > "$TMP/shared"
check "libdspy.so (dynamic table)" "$TMP/shared"
# Every DSPY_API function of the headers is in the shared library (a declaration without a
# definition, or a definition that lost its mark, shows here).
sed -n 's/^DSPY_API [^(]*[ *]\(dspy_[a-z0-9_]*\)(.*/\1/p' "$TMP/prefix/include/dspy/"*.h | sort -u > "$TMP/declared"
comm -23 "$TMP/declared" "$TMP/shared" > "$TMP/missing"
if [ -s "$TMP/missing" ]; then
    echo "FAIL $(wc -l < "$TMP/missing") DSPY_API declarations have no definition in libdspy.so:"
    sed 's/^/     /' "$TMP/missing" | head -50
    fail=$((fail + 1))
else
    echo "ok   all $(wc -l < "$TMP/declared") DSPY_API declarations are defined in libdspy.so"
fi
[ "$fail" -eq 0 ]
