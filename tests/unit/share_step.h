/* share_step.h — one optimizer step whose examples share an 80-token prompt, for
 * test_train_share.c (the CPU trainer) and test_cuda_train.c (the device trainer). Included by
 * one test file each (static functions).
 *
 * 4 examples over tests/ref/models/llama_tied_gqa's vocabulary (1000, context 256): the same 80
 * prompt tokens, then continuations of 20, 12, 31 and 7 tokens (an LCG stream) with labels
 * (shifted: row t predicts token t + 1) on the continuation from its third token (example 1:
 * from its first, the row right after the prompt), in 3 sequences: example 0; examples 1 and 2
 * packed; example 3.
 */
#ifndef DSPY_TEST_SHARE_STEP_H
#define DSPY_TEST_SHARE_STEP_H

#include <stdint.h>

#include "train/backward.h"
#include "train/share_prefix.h"

enum { SS_P0 = 80, SS_NEX = 4, SS_V = 1000, SS_MAXT = 256 };
static const int32_t ss_cont[SS_NEX] = {20, 12, 1 + 30, 7}; /* continuation lengths */

static int32_t ss_ids[SS_NEX][SS_P0 + 40], ss_lab[SS_NEX][SS_P0 + 40], ss_n[SS_NEX];

/* Example e: the shared prompt, then its own tokens; labels (shifted) on the continuation's
 * tokens from its third on (example 1: from its first, the row right after the prefix). */
static void ss_make_examples(void) {
    uint32_t x = 12345;
    for (int e = 0; e < SS_NEX; e++) {
        int n = SS_P0 + ss_cont[e];
        ss_n[e] = n;
        for (int t = 0; t < n; t++) {
            x = x * 1664525u + 1013904223u;
            ss_ids[e][t] = t < SS_P0 ? (t * 37 + 11) % SS_V : (int32_t)((x >> 8) % SS_V);
        }
        int first = e == 1 ? SS_P0 : SS_P0 + 2 < n - 1 ? SS_P0 + 2 : n - 2;
        for (int t = 0; t < n; t++) ss_lab[e][t] = t >= first && t < n - 1 ? ss_ids[e][t + 1] : -100;
    }
}

/* The unshared step: example 0; examples 1 and 2 packed; example 3 (the examples made first). */
typedef struct {
    int32_t ids[3][2 * (SS_P0 + 40)], pos[3][2 * (SS_P0 + 40)], lab[3][2 * (SS_P0 + 40)], seg[3][2 * (SS_P0 + 40)];
    dspy_train_seq seq[3];
} ss_step;

static void ss_make_step(ss_step *s) {
    ss_make_examples(); /* deterministic: the step never depends on a caller having made them */
    const int groups[3][2] = {{0, -1}, {1, 2}, {3, -1}};
    for (int q = 0; q < 3; q++) {
        int T = 0;
        for (int g = 0; g < 2 && groups[q][g] >= 0; g++) {
            int e = groups[q][g];
            for (int t = 0; t < ss_n[e]; t++, T++) {
                s->ids[q][T] = ss_ids[e][t], s->lab[q][T] = ss_lab[e][t], s->pos[q][T] = t, s->seg[q][T] = g;
            }
        }
        s->seq[q] = (dspy_train_seq){s->ids[q], s->pos[q], s->lab[q], s->seg[q], T, 0};
    }
}

/* The step and its prefix-shared layout (dspy_share_prefix: sh[ns] over b, prefix P), side by
 * side for the tests that compare the two; b is freed with dspy_share_buf_free. */
typedef struct {
    ss_step s;
    dspy_share_buf b;
    const dspy_train_seq *sh;
    size_t ns;
    int32_t P;
} ss_shared;

static dspy_status ss_make_shared(ss_shared *z) {
    ss_make_step(&z->s);
    z->b = (dspy_share_buf){0}, z->sh = NULL, z->ns = 0, z->P = 0;
    return dspy_share_prefix(&z->b, z->s.seq, 3, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &z->sh, &z->ns, &z->P);
}

#endif
