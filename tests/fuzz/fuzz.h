/* fuzz.h — shared bits of the libFuzzer targets in tests/fuzz/.
 *
 * Each target defines LLVMFuzzerTestOneInput. Built with clang -fsanitize=fuzzer by `make fuzz`
 * (the fuzzing engine's main), and with replay.c's main by the normal build, where each target
 * replays its seed corpus (tests/fuzz/corpus/<target>/) as a CTest: every input that once
 * crashed a target stays there as a regression test.
 * FUZZ_ASSERT is a property check: it aborts (which the fuzzer reports as a crash with the
 * input) rather than counting, because a fuzz target has no test harness around it.
 */
#ifndef DSPY_FUZZ_H
#define DSPY_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dspy/status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_ASSERT(cond)                                                                   \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: property failed: %s (%s)\n", __FILE__, __LINE__, #cond, \
                    dspy_errmsg());                                                         \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* The input as an in-memory file (memfd `name`) for the readers that take a path: its fd (close it
 * after), path set to /proc/self/fd/<fd>; -1 where the memfd cannot be made or filled. */
static inline int fuzz_file(const char *name, const uint8_t *data, size_t size, char path[64]) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) return -1;
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return fd;
}

/* The input as a NUL-terminated copy (malloc'd; abort on OOM: a fuzz harness, not the library). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
