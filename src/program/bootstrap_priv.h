/* bootstrap_priv.h — what bootstrap_finetune.c needs from bootstrap.c. Private to src/program. */
#ifndef DSPY_PROGRAM_BOOTSTRAP_PRIV_H
#define DSPY_PROGRAM_BOOTSTRAP_PRIV_H

#include "dspy/bootstrap.h"

/* trace_data += src: moves every item of `src` (left empty) to the end of `dst` and adds the
 * counts. */
dspy_status dspy_trace_data_extend(dspy_trace_data *dst, dspy_trace_data *src);

#endif
