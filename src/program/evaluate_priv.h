/* evaluate_priv.h — the result object evaluate.c builds and evaluate_table.c renders.
 * Private to src/program. */
#ifndef DSPY_PROGRAM_EVALUATE_PRIV_H
#define DSPY_PROGRAM_EVALUATE_PRIV_H

#include "dspy/evaluate.h"

typedef struct eval_row {
    dspy_example *example;
    dspy_prediction *pred;
    double score;
    dspy_score_kind kind;
    char *error; /* the failure's message, NULL for a success */
    dspy_status status; /* the failure's status (DSPY_OK for a success) */
    char *reply;        /* the unparseable answer of a parse failure, else NULL */
} eval_row;

struct dspy_eval_result {
    char *metric_name;
    eval_row *rows;
    size_t n, cap;
    size_t *failed; /* indices of rows with an error, ascending */
    size_t n_failed;
    bool score_set; /* dspy_eval_result_set_score was called */
    double score;
};

#endif
