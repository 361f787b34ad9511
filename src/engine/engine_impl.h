/* engine_impl.h — the inside of dspy_engine, shared by engine.c (sequences, KV blocks, the
 * prefix cache, preemption) and engine_step.c (one batched step on the device). Private to
 * src/engine; the API is dspy/engine.h.
 */
#ifndef DSPY_ENGINE_IMPL_H
#define DSPY_ENGINE_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/engine.h"
#include "dspy/rng.h"
#include "engine/block_pool.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "kern/backend.h"

typedef struct seq {
    int64_t id;
    int32_t *tokens;   /* prompt then generated; capacity n_prompt + max_new */
    int32_t n_tokens;
    int32_t n_prompt;
    int32_t n_fill;    /* tokens below this are prefill (the prompt; all tokens after a preemption) */
    int32_t n_cached;  /* tokens whose keys/values are in the cache */
    int32_t max_new;
    int32_t n_generated;
    int32_t *blocks;   /* block table: blocks[i] holds positions i*bs .. i*bs+bs-1 */
    uint64_t *names;   /* chain names of its leading full blocks: published ones, then the rest of
                          its prompt's (hashed when it claims blocks; in-flight sharing compares them) */
    int32_t n_blocks;  /* blocks held (references) */
    int32_t n_named;   /* leading full blocks already published in the prefix cache */
    int32_t n_hashed;  /* names[0 .. n_hashed) are valid (>= n_named) */
    int32_t cap_blocks;
    bool waiting;      /* preempted: holds no blocks, resumes when there are enough */
    int32_t *stop_ids;
    int32_t n_stop;
    float temperature, top_p;
    int32_t top_k;
    bool ignore_eos;
    dspy_rng rng;
    dspy_rng rng_mark;           /* rng before the step's draws (a drafting sequence rewinds to it) */
    const dspy_constraint *cons; /* NULL, or the automaton its sampled tokens follow */
    int32_t cstate;              /* its current state there */
    int32_t spec_miss;           /* speculation: its latest drafting steps in a row that accepted none */
    int32_t spec_wait;           /* steps it waits before drafting again (back-off after misses) */
} seq;

/* Word offsets of one step's metadata in the staging buffer (and its device mirror). */
typedef struct meta_layout {
    size_t tokens, pos, slots, out_rows, segs, params, shared, tables, end;
} meta_layout;

enum { MAX_BUCKETS = 17 };
/* A decode step's graph variants (dspy_engine.graphs): rows sampled by the sampler, every row masked first (some
 * constrained), every row greedy and unconstrained (the sampler inside the logits op). */
enum { GRAPH_SAMPLED = 0, GRAPH_MASKED = 1, GRAPH_GREEDY = 2 };

struct dspy_engine {
    const dspy_model *m;
    const dspy_model_config *cfg;
    dspy_backend *be;
    dspy_engine_params p;
    dspy_kv_cache kv;
    dspy_block_pool pool;
    dspy_fwd_buf buf;
    seq **active;
    int32_t n_active;
    int64_t next_id;
    int32_t rows_cap;
    int32_t max_len;        /* longest sequence the cache can hold (positions) */
    int32_t max_blocks;     /* blocks of the longest sequence */
    int32_t pad_block;      /* a block no sequence owns: padded graph rows write there */
    int32_t *meta_h;        /* host staging (meta_words) */
    int32_t *meta_d;        /* device mirror */
    size_t meta_words;
    int32_t *res_h, *res_d; /* (3 * max_out): tokens, logprobs, constrained rows' logprob shifts */
    int32_t run_max;        /* decode steps a run queues at most (params multi_steps resolved; 1 = off) */
    int32_t run_limit;      /* the caller's limit (dspy_engine_limit_run) */
    int32_t *ring_h, *ring_d; /* (run_max, 2, B) a run's steps' tokens and logprobs (kern/ops.h
                                 decode_advance; B = the step's rows); NULL when run_max is 1 */
    int32_t mask_words;     /* W = (vocab + 31) / 32: one constrained row's mask */
    int32_t *cmask_h, *cmask_d; /* (max_out + max_out * W): the step's constrained rows (logits
                                   row each), then their masks */
    seq **out_seq;          /* (max_seqs) sequences sampled this step */
    int32_t *take;          /* (max_seqs) tokens each active sequence feeds this step */
    int32_t *n_draft;       /* (max_seqs) of those, drafted tokens (speculation; 0 otherwise) */
    int32_t *first_out;     /* (max_seqs) its first sampled row this step, or -1 */
    int32_t max_out;        /* sampled rows a step can have: max_seqs * (1 + spec_tokens) + jump_rows */
    int32_t jump_rows;      /* jump-forward drafts a step, over all sequences */
    dspy_step_event *events;
    void *graphs[3][MAX_BUCKETS]; /* captured decode steps: [GRAPH_SAMPLED / _MASKED / _GREEDY][bucket index] */
    bool greedy;            /* steps whose rows are all greedy and unconstrained sample inside the logits op
                               (forward.h dspy_forward_greedy); DSPY_ENGINE_GREEDY=0 turns it off */
    bool use_graphs;
    bool split_mixed;       /* mixed steps attend their decoding rows apart (forward.h attn_one) */
    bool pad_eager;         /* eager steps padded to the warm-up's row counts (engine_step.c) */
    /* the step between dspy_engine_step_begin and _end: what the end needs of its plan, and the
     * sequences removed meanwhile (retired after it: their rows are in flight) */
    struct {
        bool active;
        bool graph, mask_all, decode;
        int32_t nseg, N, drafted, n_prefill, n_decode;
        int32_t run, run_rows; /* decode steps queued (1, or a run's), and a run's rows a step (its ring's B) */
        int32_t n_active;      /* active sequences when it began: active[0 .. n_active) (added ones follow) */
        int64_t t_plan, t_launch, t_wait;
        int64_t *removed; /* (max_seqs) */
        int32_t n_removed;
    } fl;
    /* cumulative statistics */
    int64_t prompt_tokens, hit_tokens, computed_tokens, preemptions;
    dspy_engine_profile prof;
};

/* engine.c: blocks for the step (growing a decoding sequence, preempting others when the pool
 * is empty), resuming preempted sequences, publishing filled blocks, retiring. */
void dspy_engine_resume_waiting(dspy_engine *e);
/* The block for position `pos` of s exists afterwards; false when s itself was preempted. */
bool dspy_engine_grow(dspy_engine *e, seq *s, int32_t pos);
void dspy_engine_publish(dspy_engine *e, seq *s);
/* In-flight prefix sharing for active[i], a sequence prefilling (engine.c): takes the published
 * blocks that now follow its cached ones, then true when it should feed nothing this step
 * because another running sequence is filling its next full block with the same tokens. */
bool dspy_engine_defer(dspy_engine *e, int32_t i);
dspy_finish dspy_engine_finish_rule(const dspy_engine *e, const seq *s, int32_t tok);
/* Retires the active sequence `id` (its filled blocks published, the rest freed); false when
 * none is active by that id. Sets no message. */
bool dspy_engine_retire_id(dspy_engine *e, int64_t id);
/* DSPY_ERR_ARG for an empty prompt or a token outside the vocabulary. */
dspy_status dspy_engine_check_prompt(const dspy_model_config *c, const int32_t *ids, size_t n);

/* engine_step.c: the metadata layout (a pure function of the counts). */
meta_layout dspy_engine_layout(int32_t N, int32_t nseg, int32_t M, int32_t n_table);

/* dspy_backend_plan.act8_width for a backend that runs model m: the widest input of its layers'
 * linear calls (hidden size, heads x head size, intermediate size) when it was loaded with
 * f8_act (W8A8 prompt GEMMs), else 0. */
int32_t dspy_engine_act8_width(const dspy_model *m);

#endif
