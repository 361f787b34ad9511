/* test_engine_burst.c — in-flight prefix sharing (engine.c dspy_engine_defer): a cold burst of
 * prompts that start with the same tokens computes the shared full blocks once.
 *
 * Every case adds its prompts before the first step (retrying an add the engine refuses for
 * room after a step, as the server does), steps to the end and checks (1) each sequence's tokens
 * and logprobs are those of dspy_generate alone on a fresh engine, bit for bit (CPU), and (2)
 * the engine's prompt, prefix-hit and computed token counts exactly: the shared blocks computed
 * once, every other token once. Cases: a burst of 16 with chunked prefill, a leader removed
 * mid-prefix, leaders preempted for KV memory, a leader whose prompt is shorter than what its
 * followers share, followers sharing part of the leader's blocks, two prefixes in one burst,
 * max_seqs below the burst, and speculative decoding with constrained rows. Models are random
 * checkpoints (dspy_model_write_random).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/str.h"
#include "engine/engine_impl.h" /* white box: which sequence is waiting (preempted) */

enum { VOCAB = 300, MAXG = 128 };

static dspy_model *g_m; /* a random llama, vocab 300, context 256 (every case's) */

static char *model_dir(const char *name, uint64_t seed) {
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/%s", test_tmpdir(), name);
    dspy_model_config c;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &c));
    c.vocab_size = VOCAB;
    c.max_position_embeddings = 256;
    c.bos_token_id = 0;
    c.n_eos = 0;
    CHECK_OK(dspy_model_write_random(dspy_str_cstr(&p), &c, seed, DSPY_DTYPE_F32, true));
    return dspy_str_take(&p);
}

typedef struct {
    int32_t p[160];
    int n;
    dspy_sampling sp;
    int32_t want[MAXG]; /* alone */
    float want_lp[MAXG];
    int nwant;
    int32_t got[MAXG]; /* in the burst */
    float got_lp[MAXG];
    int ngot;
    int64_t id;
    bool done;
} req;

/* tokens 0 .. n - 1 of stream `salt` (distinct salts give different tokens at every position) */
static void fill(int32_t *p, int n, int salt) {
    for (int i = 0; i < n; i++) p[i] = (int32_t)(1 + (i * 37 + salt * 101 + (i * i + salt) % 7) % (VOCAB - 1));
}

/* r = prefix (the first np tokens of stream ps) + its own tail of nt tokens (stream ts) */
static void make(req *r, int ps, int np, int ts, int nt, int k) {
    memset(r, 0, sizeof *r);
    fill(r->p, np, ps);
    for (int i = 0; i < nt; i++) r->p[np + i] = (int32_t)(1 + (i * 53 + ts * 211 + 5) % (VOCAB - 1));
    r->n = np + nt;
    r->sp = dspy_sampling_default();
    r->sp.temperature = 0.8f;
    r->sp.seed = (uint64_t)(100 + k);
    r->sp.max_tokens = 6 + k % 5;
}

static void alone(dspy_model *m, req *r) {
    int32_t *ids;
    float *lps;
    size_t n;
    CHECK_OK(dspy_generate(m, r->p, (size_t)r->n, &r->sp, &ids, &lps, &n, NULL));
    r->nwant = (int)n;
    memcpy(r->want, ids, sizeof(int32_t) * n);
    memcpy(r->want_lp, lps, sizeof(float) * n);
    free(ids), free(lps);
}

/* Called after every step with the engine and the step number. */
typedef void (*step_hook)(dspy_engine *e, req *r, int n, int step, void *ctx);

/* Adds r[0 .. n) in order before the first step (an add refused for room is retried after the
 * next step), steps until every sequence finished, and checks each against alone. */
static dspy_engine_profile g_prof; /* the last run's */

static void run_burst(dspy_model *m, const dspy_engine_params *ep, req *r, int n, dspy_engine_stats *st,
                      step_hook hook, void *ctx) {
    dspy_engine *e = NULL;
    CHECK_OK(dspy_engine_new(m, ep, &e));
    if (!e) return;
    int added = 0, finished = 0, step = 0;
    for (; step < 4000 && finished < n; step++) {
        while (added < n) {
            dspy_status s = dspy_engine_add(e, r[added].p, (size_t)r[added].n, &r[added].sp, &r[added].id);
            if (s == DSPY_ERR_STATE) break;
            CHECK_OK(s);
            if (s) return;
            added++;
        }
        dspy_step_out so;
        CHECK_OK(dspy_engine_step(e, &so));
        /* a step with sequences active always advances one (no one waits on a leader that waits) */
        if (so.n_events == 0) {
            CHECK_INT(so.n_events, 1);
            break;
        }
        for (int k = 0; k < so.n_events; k++)
            for (int q = 0; q < added; q++) {
                if (so.events[k].seq_id != r[q].id || r[q].done) continue;
                if (so.events[k].token >= 0 && r[q].ngot < MAXG) {
                    r[q].got[r[q].ngot] = so.events[k].token;
                    r[q].got_lp[r[q].ngot++] = so.events[k].logprob;
                }
                if (so.events[k].finish != DSPY_FINISH_NONE) r[q].done = true;
            }
        if (hook) hook(e, r, added, step, ctx); /* it may remove a sequence (marking it done) */
        finished = 0;
        for (int q = 0; q < n; q++) finished += r[q].done;
    }
    CHECK_INT(finished, n);
    for (int q = 0; q < n; q++) {
        CHECK_INT(r[q].ngot, r[q].nwant);
        CHECK(r[q].ngot == r[q].nwant && memcmp(r[q].got, r[q].want, sizeof(int32_t) * (size_t)r[q].nwant) == 0 &&
              memcmp(r[q].got_lp, r[q].want_lp, sizeof(float) * (size_t)r[q].nwant) == 0);
    }
    dspy_engine_stats_get(e, st);
    dspy_engine_profile_get(e, &g_prof);
    CHECK_INT(st->active, 0);
    dspy_engine_free(e);
}

static int64_t sum_len(const req *r, int n) {
    int64_t s = 0;
    for (int q = 0; q < n; q++) s += r[q].n;
    return s;
}

/* The counts of a burst in which `hits` prompt tokens came from shared blocks: exactly those are
 * prefix hits, and every other prompt token was computed once. */
static void expect_shared(const dspy_engine_stats *st, const req *r, int n, int64_t hits) {
    CHECK_INT(st->prompt_tokens, sum_len(r, n));
    CHECK_INT(st->prefix_hit_tokens, hits);
    CHECK_INT(st->computed_tokens, sum_len(r, n) - hits);
}

static dspy_engine_params params(int max_seqs, int block, int budget, int total) {
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = max_seqs, ep.block_size = block, ep.max_batch_tokens = budget, ep.max_tokens_total = total;
    return ep;
}

/* 16 prompts: a 40-token prefix (5 blocks of 8) and tails of 1 .. 13 tokens; a budget of 20
 * prompt tokens a step, so the leader fills the prefix over several steps, ending mid-block. */
static void test_burst16(void) {
    dspy_model *m = g_m;
    enum { N = 16, P = 40 };
    static req r[N];
    int64_t tails = 0;
    for (int k = 0; k < N; k++) {
        make(&r[k], 1, P, 10 + k, 1 + k % 13, k);
        tails += r[k].n - P;
        alone(m, &r[k]);
    }
    dspy_engine_params ep = params(N, 8, 20, 4096);
    dspy_engine_stats st;
    run_burst(m, &ep, r, N, &st, NULL, NULL);
    CHECK_INT(st.computed_tokens, P + tails); /* the prefix once: without sharing 16 * 40 + tails */
    expect_shared(&st, r, N, (N - 1) * P);
    CHECK_INT(st.preemptions, 0);
    printf("  burst of %d: %lld prompt tokens, %lld computed, %lld prefix hits\n", N, (long long)st.prompt_tokens,
           (long long)st.computed_tokens, (long long)st.prefix_hit_tokens);
    /* the default budget (256: the whole burst's prefix in one step's reach) and blocks of 16 */
    for (int k = 0; k < N; k++) r[k].ngot = 0, r[k].done = false;
    ep = params(N, 16, 256, 4096);
    run_burst(m, &ep, r, N, &st, NULL, NULL);
    expect_shared(&st, r, N, (N - 1) * 32); /* 2 full blocks of 16 shared */
}

/* The leader is removed after two steps (blocks 0 and 1 filled): the first follower leads from
 * there, the others wait on it; nobody waits forever. */
static void remove_leader(dspy_engine *e, req *r, int n, int step, void *ctx) {
    (void)n;
    if (step == 1 && !r[0].done) {
        CHECK_OK(dspy_engine_remove(e, r[0].id));
        r[0].done = true;
        ++*(int *)ctx;
    }
}

static void test_leader_removed(void) {
    dspy_model *m = g_m;
    enum { N = 4, P = 40 };
    req r[N];
    for (int k = 0; k < N; k++) {
        make(&r[k], 2, P, 30 + k, 3 + k, k);
        alone(m, &r[k]);
    }
    dspy_engine_params ep = params(N, 8, 8, 1024);
    dspy_engine_stats st;
    int removed = 0;
    r[0].nwant = 0; /* it produces nothing: removed during its prompt */
    run_burst(m, &ep, r, N, &st, remove_leader, &removed);
    CHECK_INT(removed, 1);
    /* computed counts a prompt when added: the leader's all, the first follower's from block 2 */
    expect_shared(&st, r, N, 16 + 2 * P);
}

/* A leader preempted for KV memory in the middle of the shared prefix: three decoding sequences
 * added first need block after block from a small pool; the latest added running sequences are
 * preempted first (a follower, then the leader, engine.c dspy_engine_grow; the third follower is
 * added only later, adds wait while a sequence is preempted). They resume later (the leader
 * first) and still get the tokens they get alone. The hook records the step at which the leader
 * was preempted before it had filled the 32 shared tokens, with a follower still short of them. */
enum { PRE_D = 3, PRE_N = 6, PRE_P = 32 };

typedef struct {
    int32_t prev_leader; /* the leader's n_cached after the previous step (-1: not running) */
    int32_t prev_follower;
    int mid_prefix; /* preemptions of the leader mid-prefix with a follower behind it */
} preempt_ctx;

static void watch_leader(dspy_engine *e, req *r, int n, int step, void *ctx) {
    (void)step;
    preempt_ctx *pc = ctx;
    int32_t leader = -1, follower = -1;
    bool leader_waits = false;
    for (int32_t i = 0; i < e->n_active; i++) {
        const seq *s = e->active[i];
        if (s->id == r[PRE_D].id) leader = s->n_cached, leader_waits = s->waiting;
        for (int q = PRE_D + 1; q < n; q++)
            if (s->id == r[q].id && (follower < 0 || s->n_cached < follower)) follower = s->n_cached; /* 0: waiting */
    }
    if (leader_waits && pc->prev_leader >= 0 && pc->prev_leader < PRE_P && pc->prev_follower >= 0 &&
        pc->prev_follower < PRE_P)
        pc->mid_prefix++;
    pc->prev_leader = leader_waits ? -1 : leader;
    pc->prev_follower = follower;
}

static void test_leader_preempted(void) {
    dspy_model *m = g_m;
    req r[PRE_N];
    for (int k = 0; k < PRE_D; k++) {
        make(&r[k], 20 + k, 4, 0, 0, k); /* 4 tokens and 36 new: 10 blocks of 4 at the end */
        r[k].sp.max_tokens = 36;
    }
    for (int k = PRE_D; k < PRE_N; k++) make(&r[k], 3, PRE_P, 40 + k, 2 + k, k);
    for (int k = 0; k < PRE_N; k++) alone(m, &r[k]);
    /* 32 blocks of 4 for sequences; one prompt token a step */
    dspy_engine_params ep = params(PRE_N, 4, 1, 128);
    dspy_engine_stats st;
    preempt_ctx pc = {-1, -1, 0};
    run_burst(m, &ep, r, PRE_N, &st, watch_leader, &pc);
    CHECK(st.preemptions >= 2);
    CHECK_INT(pc.mid_prefix, 1);
    printf("  a leader preempted mid-prefix: %lld preemptions, %lld computed of %lld prompt tokens\n",
           (long long)st.preemptions, (long long)st.computed_tokens, (long long)st.prompt_tokens);
}

/* The leader's prompt (20 tokens: 2 full blocks and 4 tokens) is shorter than the 40 tokens its
 * followers share: they take blocks 0 and 1 from it, and the first follower fills blocks 2 .. 4
 * for the others. */
static void test_short_leader(void) {
    dspy_model *m = g_m;
    enum { N = 4, P = 40 };
    req r[N];
    make(&r[0], 4, 20, 0, 0, 0);
    for (int k = 1; k < N; k++) make(&r[k], 4, P, 50 + k, 2 * k, k);
    for (int k = 0; k < N; k++) alone(m, &r[k]);
    dspy_engine_params ep = params(N, 8, 12, 1024);
    dspy_engine_stats st;
    run_burst(m, &ep, r, N, &st, NULL, NULL);
    expect_shared(&st, r, N, 16 + 2 * P); /* r[1] from block 2, the others from block 5 */
}

/* Followers sharing part of the leader's blocks: r[1] shares 3 of its 5 blocks, then differs;
 * r[2] shares all 5; r[3] shares 1 block and 4 tokens (it waits for block 0 only); r[4] shares
 * 7 tokens (less than a block: it never waits and computes everything). */
static void test_partial_share(void) {
    dspy_model *m = g_m;
    enum { N = 5, P = 40 };
    req r[N];
    make(&r[0], 5, P, 60, 6, 0);
    make(&r[1], 5, 24, 61, 20, 1);
    make(&r[2], 5, P, 62, 5, 2);
    make(&r[3], 5, 12, 63, 9, 3);
    make(&r[4], 5, 7, 64, 12, 4);
    for (int k = 0; k < N; k++) alone(m, &r[k]);
    dspy_engine_params ep = params(N, 8, 16, 1024);
    dspy_engine_stats st;
    run_burst(m, &ep, r, N, &st, NULL, NULL);
    expect_shared(&st, r, N, 24 + P + 8);
}

/* Two prefixes interleaved in one burst (A B A B ...): each computed once. */
static void test_two_prefixes(void) {
    dspy_model *m = g_m;
    enum { N = 10, PA = 32, PB = 48 };
    req r[N];
    for (int k = 0; k < N; k++) {
        if (k % 2 == 0) make(&r[k], 6, PA, 70 + k, 1 + k, k);
        else make(&r[k], 7, PB, 70 + k, 1 + k, k);
        alone(m, &r[k]);
    }
    dspy_engine_params ep = params(N, 8, 24, 2048);
    dspy_engine_stats st;
    run_burst(m, &ep, r, N, &st, NULL, NULL);
    expect_shared(&st, r, N, 4 * PA + 4 * PB);
}

/* max_seqs 4 for a burst of 12: the rest are added as sequences finish (they find the prefix in
 * the cache or wait on a running leader). */
static void test_max_seqs_below_burst(void) {
    dspy_model *m = g_m;
    enum { N = 12, P = 40 };
    req r[N];
    for (int k = 0; k < N; k++) {
        make(&r[k], 8, P, 80 + k, 1 + (k * 5) % 11, k);
        alone(m, &r[k]);
    }
    dspy_engine_params ep = params(4, 8, 16, 2048);
    dspy_engine_stats st;
    run_burst(m, &ep, r, N, &st, NULL, NULL);
    expect_shared(&st, r, N, (N - 1) * P);
}

/* Speculative decoding (greedy rows draft) and constrained rows in a burst: the same tokens as
 * alone, the prefix computed once. */
static void test_spec_and_constrained(void) {
    dspy_model *m = g_m;
    dspy_constraint *c = NULL;
    CHECK_OK(dspy_constraint_new(1, VOCAB, &c));
    if (!c) return;
    for (int t = 10; t < 60; t++) CHECK_OK(dspy_constraint_set_token(c, 0, t, 0));
    CHECK_OK(dspy_constraint_set_accept(c, 0, true));
    enum { N = 8, P = 48 };
    req r[N];
    for (int k = 0; k < N; k++) {
        make(&r[k], 11, P, 90 + k, 2 + k, k);
        if (k % 2 == 0) r[k].sp.temperature = 0; /* greedy: drafts */
        if (k % 3 == 1) r[k].sp.constraint = c;
        r[k].sp.max_tokens = 12;
        alone(m, &r[k]);
    }
    dspy_engine_params ep = params(N, 8, 24, 2048);
    ep.spec_tokens = 3;
    dspy_engine_stats st;
    run_burst(m, &ep, r, N, &st, NULL, NULL);
    CHECK(g_prof.draft_tokens > 0);
    expect_shared(&st, r, N, (N - 1) * P);
    dspy_constraint_free(c);
}

int main(void) {
    char *dir = model_dir("rand", 5);
    CHECK_OK(dspy_model_load(dir, NULL, &g_m));
    free(dir);
    if (!g_m) return check_summary("test_engine_burst");
    RUN(test_burst16);
    RUN(test_leader_removed);
    RUN(test_leader_preempted);
    RUN(test_short_leader);
    RUN(test_partial_share);
    RUN(test_two_prefixes);
    RUN(test_max_seqs_below_burst);
    RUN(test_spec_and_constrained);
    dspy_model_free(g_m);
    return check_summary("test_engine_burst");
}
