# Short wrapper around CMake/CTest (DESIGN.md §10).
#   make          build (Release) into build/
#   make test     build and run every test with CTest; fails when a test outside the gpu lane
#                 was skipped (exit 77: a missing input or tool is not a pass)
#   make asan     build with ASan+UBSan into build-asan/ and run the tests there (-O1, as the
#                 sanitizers' authors advise: every check stays, the e2e tests run ~3x faster
#                 than at -O0; per-test timeouts are 4x the Release ones)
#   make check    install Debian packages, then test and asan (what CI runs)
#   make demo     install, build and run the main job
#   make fuzz     build the libFuzzer targets with clang (build-fuzz/) and run each for
#                 FUZZ_SECONDS (default 600) on a scratch copy of its seed corpus
#   make fuzz-smoke  the same for FUZZ_SMOKE_SECONDS (default 5) each: what `make check` runs
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_TARGETS ?= $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: all test asan check deps demo clean fuzz fuzz-build fuzz-smoke

all:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

# A skipped test (exit 77) outside the gpu lane fails the target: scripts/check-skips.sh.
test: all
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --output-junit junit.xml
	bash scripts/check-skips.sh $(BUILD) $(BUILD)/junit.xml

asan:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g" -DDSPY_SANITIZE=ON -DDSPY_CUDA=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS) -LE noasan --output-junit junit.xml
	bash scripts/check-skips.sh $(ASAN_BUILD) $(ASAN_BUILD)/junit.xml

deps:
	bash scripts/install-deps.sh

check: deps
	$(MAKE) test
	$(MAKE) asan
	$(MAKE) fuzz-smoke

fuzz-build:
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DDSPY_FUZZ=ON -DDSPY_CUDA=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all

# Each target fuzzes a scratch corpus seeded from tests/fuzz/corpus/<target> (new inputs stay in
# build-fuzz/corpus/; copy an interesting one into the seed folder by hand). A crash leaves
# build-fuzz/crash-* and fails the run: add it to the seed folder as a regression test.
fuzz fuzz-smoke: fuzz-build
	@set -e; secs=$(if $(filter fuzz-smoke,$@),$(FUZZ_SMOKE_SECONDS),$(FUZZ_SECONDS)); \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; cp -n tests/fuzz/corpus/$$t/* $(FUZZ_BUILD)/corpus/$$t/ 2>/dev/null || true; \
	  echo "fuzz: $$t for $$secs s"; \
	  ASAN_OPTIONS=detect_leaks=1 $(FUZZ_BUILD)/fuzz/$$t -max_total_time=$$secs -timeout=10 -rss_limit_mb=2048 \
	    -max_len=65536 -artifact_prefix=$(FUZZ_BUILD)/ -print_final_stats=1 $(FUZZ_BUILD)/corpus/$$t \
	    > $(FUZZ_BUILD)/$$t.log 2>&1 || true; \
	  grep -E "^stat::number_of_executed_units" $(FUZZ_BUILD)/$$t.log || true; \
	  test -z "$$(ls $(FUZZ_BUILD)/crash-* $(FUZZ_BUILD)/leak-* $(FUZZ_BUILD)/timeout-* 2>/dev/null)" \
	    || { echo "fuzz: $$t found a failing input (full log $(FUZZ_BUILD)/$$t.log):"; \
	         grep -v -E "^(#[0-9]|INFO:)" $(FUZZ_BUILD)/$$t.log | tail -40; \
	         ls $(FUZZ_BUILD)/crash-* $(FUZZ_BUILD)/leak-* $(FUZZ_BUILD)/timeout-* 2>/dev/null; exit 1; }; \
	done
demo: deps all
	bash scripts/demo.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
