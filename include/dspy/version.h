/* dspy/version.h — the library's version, at compile time and at run time.
 *
 * The three numbers below are the single source of the version: CMakeLists.txt reads them for
 * project(VERSION), the shared library's soname, dspy.pc and dspyConfigVersion.cmake.
 * DSPY_VERSION_STRING is what the headers you compile against say; dspy_version() is what the
 * library you linked says (they differ only when a program runs against another build).
 */
#ifndef DSPY_VERSION_H
#define DSPY_VERSION_H

#include "dspy/export.h"

#define DSPY_VERSION_MAJOR 0
#define DSPY_VERSION_MINOR 1
#define DSPY_VERSION_PATCH 0

#define DSPY_VERSION_STR_(x) #x
#define DSPY_VERSION_STR(x) DSPY_VERSION_STR_(x)
/* "MAJOR.MINOR.PATCH", e.g. "0.1.0". */
#define DSPY_VERSION_STRING \
    DSPY_VERSION_STR(DSPY_VERSION_MAJOR) "." DSPY_VERSION_STR(DSPY_VERSION_MINOR) "." DSPY_VERSION_STR(DSPY_VERSION_PATCH)
/* One integer that grows with every release: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define DSPY_VERSION_NUMBER (DSPY_VERSION_MAJOR * 10000 + DSPY_VERSION_MINOR * 100 + DSPY_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the linked library, "MAJOR.MINOR.PATCH"; a static string, never NULL.
 * Thread-safe. */
DSPY_API const char *dspy_version(void);

#ifdef __cplusplus
}
#endif

#endif
