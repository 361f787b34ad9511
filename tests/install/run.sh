#!/usr/bin/env bash
# run.sh — libdspy as a user outside the tree gets it (CTest: test_install, label e2e).
#
#   run.sh BUILD_DIR SOURCE_DIR SHARED_DIR CC CXX
#
# Installs the already-built tree into a temporary prefix (cmake --install), then builds
# examples/banking77.c (C11) and hello.cpp (C++17) against that prefix only, with
# -Wall -Wextra -pedantic -Werror, four ways: pkg-config shared, pkg-config static
# (pkg-config --static, the archive named with -l:libdspy.a), find_package(dspy) with dspy::dspy
# and with dspy::dspy_static. Each hello runs; the static builds must not need libdspy.so and the
# shared ones must. banking77 runs its offline path (oracle teacher, a tiny random student
# fine-tuned and served by the installed `dspy` binary) on 4 training and 2 dev examples, built
# once each way for pkg-config; the find_package builds run their usage line.
# Prints one line per check and "install: N passed, M failed"; exit 0 only when all passed.
set -u
BUILD=$(cd "$1" && pwd); SRC=$(cd "$2" && pwd); SHARED=$3; CC=$4; CXX=$5
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dspy-install.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PREFIX=$TMP/prefix
pass=0; fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
# check NAME CMD...: runs CMD with its output in $TMP/log; shows the log on failure.
check() {
    local name=$1; shift
    if "$@" > "$TMP/log" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/     /' "$TMP/log" | tail -30; fi
}
finish() {
    echo "install: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

check "cmake --install into a temporary prefix" cmake --install "$BUILD" --prefix "$PREFIX"
[ "$fail" -eq 0 ] || finish
LIBDIR=$(dirname "$(find "$PREFIX" -name libdspy.a | head -1)")
for f in "$LIBDIR/libdspy.a" "$LIBDIR/libdspy.so" "$PREFIX/bin/dspy" "$PREFIX/include/dspy/dspy.h" \
         "$PREFIX/include/dspy/version.h" "$PREFIX/include/dspy/export.h" "$LIBDIR/pkgconfig/dspy.pc" \
         "$LIBDIR/cmake/dspy/dspyConfig.cmake" "$LIBDIR/cmake/dspy/dspyConfigVersion.cmake" \
         "$LIBDIR/cmake/dspy/dspyTargets.cmake"; do
    check "installed ${f#"$PREFIX"/}" test -e "$f"
done
# Every header of the tree is installed, and no other.
check "installed headers = include/dspy/*.h" \
    diff <(cd "$SRC/include/dspy" && ls ./*.h) <(cd "$PREFIX/include/dspy" && ls ./*.h)
check "dspy version (installed binary) prints the header version" \
    bash -c "'$PREFIX/bin/dspy' version | grep -qx \"dspy.c \$(sed -n 's/^#define DSPY_VERSION_\\(MAJOR\\|MINOR\\|PATCH\\) //p' '$PREFIX/include/dspy/version.h' | paste -sd.)\""

export PKG_CONFIG_PATH=$LIBDIR/pkgconfig
CFLAGS_STRICT="-std=c11 -Wall -Wextra -pedantic -Werror"
CXXFLAGS_STRICT="-std=c++17 -Wall -Wextra -pedantic -Werror"
check "pkg-config --modversion dspy = $(pkg-config --modversion dspy 2>/dev/null)" \
    bash -c "[ \"\$(pkg-config --modversion dspy)\" = \"\$('$PREFIX/bin/dspy' version | sed -n '1s/^dspy.c //p')\" ]"
PC_CFLAGS=$(pkg-config --cflags dspy); PC_LIBS=$(pkg-config --libs dspy)
# The archive by name: -ldspy would pick libdspy.so, which sits next to it.
PC_STATIC=$(pkg-config --static --libs dspy | sed 's/\(^\| \)-ldspy\( \|$\)/\1-l:libdspy.a\2/')
OUT=$TMP/out; mkdir -p "$OUT"
check "pkg-config: banking77.c, C11, shared" $CC $CFLAGS_STRICT $PC_CFLAGS "$SRC/examples/banking77.c" \
    -o "$OUT/banking77_pc_shared" $PC_LIBS -Wl,-rpath,"$LIBDIR"
check "pkg-config: banking77.c, C11, static" $CC $CFLAGS_STRICT $PC_CFLAGS "$SRC/examples/banking77.c" \
    -o "$OUT/banking77_pc_static" $PC_STATIC
check "pkg-config: hello.cpp, C++17, shared" $CXX $CXXFLAGS_STRICT $PC_CFLAGS "$SRC/tests/install/hello.cpp" \
    -o "$OUT/hello_pc_shared" $PC_LIBS -Wl,-rpath,"$LIBDIR"
check "pkg-config: hello.cpp, C++17, static" $CXX $CXXFLAGS_STRICT $PC_CFLAGS "$SRC/tests/install/hello.cpp" \
    -o "$OUT/hello_pc_static" $PC_STATIC

check "find_package(dspy): configure" cmake -S "$SRC/tests/install/consumer" -B "$TMP/consumer" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_C_COMPILER="$CC" \
    -DCMAKE_CXX_COMPILER="$CXX" -DDSPY_EXAMPLE="$SRC/examples/banking77.c"
check "find_package(dspy): build banking77 and hello, shared and static" \
    cmake --build "$TMP/consumer" -j 2
for kind in shared static; do
    cp "$TMP/consumer/banking77_$kind" "$OUT/banking77_cmake_$kind" 2>/dev/null
    cp "$TMP/consumer/hello_$kind" "$OUT/hello_cmake_$kind" 2>/dev/null
done

# Which binaries need libdspy.so: the shared builds, and only they.
needs_so() { readelf -d "$1" | grep -q 'NEEDED.*\[libdspy\.so'; }
for via in pc cmake; do
    for prog in banking77 hello; do
        check "$via: ${prog}_shared needs libdspy.so" needs_so "$OUT/${prog}_${via}_shared"
        check "$via: ${prog}_static does not" bash -c "! readelf -d '$OUT/${prog}_${via}_static' | grep -q libdspy"
        check "$via: ${prog}_shared runs against the installed library only" \
            bash -c "ldd '$OUT/${prog}_${via}_shared' | grep -q '=> $LIBDIR/libdspy.so'"
    done
    for kind in shared static; do
        check "$via: hello_$kind runs" "$OUT/hello_${via}_$kind"
        # Without arguments the example prints its usage and exits 2.
        check "$via: banking77_$kind prints its usage" \
            bash -c "'$OUT/banking77_${via}_$kind' 2>&1; [ \$? -eq 2 ]"
    done
done

# The example's offline path, once per library kind: a tiny random student (the installed dspy
# makes it), the oracle teacher, BootstrapFinetune, `dspy serve` from the prefix, Evaluate.
if [ -f "$SHARED/models/llama3-tokenizer/tokenizer.json" ] && [ -f "$SHARED/data/banking77/labels.txt" ]; then
    check "dspy init-model (installed binary): a tiny random student" "$PREFIX/bin/dspy" init-model --preset tiny \
        --dtype bf16 --seed 5 --tokenizer "$SHARED/models/llama3-tokenizer" --out "$TMP/student"
    for kind in shared static; do
        run_dir=$TMP/run_$kind
        check "banking77_pc_$kind: offline run (oracle teacher, 4 train, 2 dev)" \
            env -u OPENAI_API_KEY -u DSPY_CACHEDIR DSPY_BIN="$PREFIX/bin/dspy" DSPY_EXAMPLE_MAX_TOKENS=8 \
            DSPY_EXAMPLE_TRAIN_KWARGS='{"num_train_epochs": 1}' \
            "$OUT/banking77_pc_$kind" "$SHARED/data/banking77" "$TMP/student" "$run_dir" 4 2
        check "banking77_pc_$kind: saved program.json with the fine-tuned model" \
            grep -q '"lm"' "$run_dir/program.json"
    done
else
    # The shared material is part of this project's checkout: its absence is a failure, not a skip.
    bad "shared tokenizer or banking77 data missing under $SHARED"
fi
finish
