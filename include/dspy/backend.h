/* dspy/backend.h — which compute backends this build and this machine offer. */
#ifndef DSPY_BACKEND_H
#define DSPY_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include "dspy/status.h"

/* true when the library was built with the CUDA fast path (nvcc was found at build time). */
bool dspy_cuda_compiled(void);

/* Number of CUDA devices visible now (0 when none, when the driver is absent, or when the build
 * has no CUDA). Never fails; the reason for 0 is in *why when non-NULL (static string). */
int dspy_cuda_device_count(const char **why);

/* Fills `buf` with "NAME, N MiB, sm_XY" for device `dev`. */
dspy_status dspy_cuda_device_name(int dev, char *buf, size_t cap);

#endif
