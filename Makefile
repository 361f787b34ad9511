# Short wrapper around CMake/CTest (DESIGN.md §10).
#   make          build (Release) into build/
#   make test     build and run every test with CTest
#   make asan     build with ASan+UBSan into build-asan/ and run the tests there
#   make check    install Debian packages, then test and asan (what CI runs)
#   make demo     install, build and run the main job
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all test asan check deps demo clean

all:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

test: all
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

asan:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDSPY_SANITIZE=ON -DDSPY_CUDA=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS) -LE noasan

deps:
	bash scripts/install-deps.sh

check: deps
	$(MAKE) test
	$(MAKE) asan

demo: deps all
	bash scripts/demo.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
