/* settings_priv.h — a resolved snapshot of the settings for one call. Private to src/program. */
#ifndef DSPY_PROGRAM_SETTINGS_PRIV_H
#define DSPY_PROGRAM_SETTINGS_PRIV_H

#include "dspy/settings.h"
#include "program/callback_priv.h"

/* Every value in effect on the calling thread, with references held (release with
 * dspy_settings_view_clear). */
typedef struct settings_view {
    dspy_lm *lm;                /* NULL = None */
    dspy_adapter_kind adapter;
    bool use_json_fallback;
    dspy_profile profile;
    dspy_trace *trace;          /* NULL = None */
    int64_t max_trace_size;
    cb_list *callbacks;         /* NULL = none */
    int32_t num_threads, max_errors;
} settings_view;

void dspy_settings_view_get(settings_view *v);
void dspy_settings_view_clear(settings_view *v);

#endif
