/* callback_priv.h — shared, immutable callback tables and the dispatch helpers the module
 * layer uses to run DSPy's on_*_start / on_*_end hooks (spec §3.4). Private to src/program. */
#ifndef DSPY_PROGRAM_CALLBACK_PRIV_H
#define DSPY_PROGRAM_CALLBACK_PRIV_H

#include <stdatomic.h>
#include <stddef.h>

#include "dspy/callback.h"

/* A reference-counted, immutable array of callback tables. NULL stands for "none". */
typedef struct cb_list {
    atomic_int refs;
    size_t n;
    dspy_callbacks items[];
} cb_list;

/* A list holding a copy of a[0..na) then b[0..nb); NULL (and DSPY_OK) when both are empty.
 * DSPY_ERR_NOMEM on allocation failure. */
dspy_status dspy_cb_list_make(const dspy_callbacks *a, size_t na, const dspy_callbacks *b, size_t nb,
                         cb_list **out);
cb_list *dspy_cb_list_retain(cb_list *l); /* NULL-safe */
void dspy_cb_list_free(cb_list *l);       /* NULL-safe */


/* Saves the thread's error message when st != DSPY_OK (malloc'd copy, or NULL), so that
 * callbacks cannot change what the caller sees; dspy_cb_err_restore puts it back and frees it. */
char *dspy_cb_err_save(dspy_status st);
void dspy_cb_err_restore(dspy_status st, char *saved);

/* Adapter hooks that run the lists' on_adapter_* callbacks (user = a cb_list). */
extern const dspy_adapter_hooks dspy_cb_adapter_hooks_template;

#endif
