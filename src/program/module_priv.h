/* module_priv.h — what module.c, predict.c, chain_of_thought.c and module_state.c share.
 * Private to src/program. */
#ifndef DSPY_PROGRAM_MODULE_PRIV_H
#define DSPY_PROGRAM_MODULE_PRIV_H

#include "dspy/module.h"
#include "program/callback_priv.h"

/* Predict's own state (the impl of a module whose vtable is dspy_predict_vtable). */
typedef struct predict_state {
    dspy_signature *sig;
    dspy_profile profile;
    dspy_json *config; /* object: constructor kwargs */
    dspy_json *demos;  /* array of objects */
    dspy_json *traces; /* array (saved as is; DSPy keeps it empty) */
    dspy_json *train;  /* array */
    dspy_lm *lm;       /* NULL = None */
} predict_state;

extern const dspy_module_vtable dspy_predict_vtable;

/* The Predict state of `m`, or NULL when m is not a Predict. */
predict_state *dspy_predict_state_of(const dspy_module *m);
/* Replaces the state's parts with those of `src` (taking them over; src is left empty). */
void dspy_predict_state_swap(predict_state *dst, predict_state *src);
void dspy_predict_state_release(predict_state *s);

/* The positional-arguments error of Predict.__call__ for this signature. */
dspy_status dspy_predict_positional_error(const dspy_signature *sig);

#endif
