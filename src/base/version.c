/* version.c — dspy_version(): the version this library was built as (dspy/version.h). */
#include "dspy/version.h"

const char *dspy_version(void) { return DSPY_VERSION_STRING; }
