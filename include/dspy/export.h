/* dspy/export.h — DSPY_API, the mark on every public function of libdspy.
 *
 * The library is compiled with -fvisibility=hidden, so only what carries DSPY_API is visible
 * from libdspy.so; everything else stays internal and cannot collide with a program's own
 * symbols. In the static library the mark changes nothing. Compilers without GCC-style
 * visibility attributes see an empty macro.
 */
#ifndef DSPY_EXPORT_H
#define DSPY_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define DSPY_API __attribute__((visibility("default")))
#else
#define DSPY_API
#endif

#endif
