/* engine.c — continuous batching: sequences, their KV blocks, the prefix cache, preemption,
 * finish rules (dspy/engine.h). The step itself is engine_step.c.
 *
 * KV memory follows the sequences: a sequence added holds blocks for its prompt (fewer when the
 * prefix cache already has the prompt's leading full blocks: those are shared, reference
 * counted, and not computed again), and takes one more block whenever decoding crosses a block
 * boundary. When the pool is empty, the most recently added other sequence is preempted: its
 * blocks are released (its filled blocks stay in the prefix cache while nobody needs the
 * memory) and it waits; once enough blocks are free it resumes by recomputing its tokens — on
 * the CPU bit for bit what it had, because chunking never changes results there. A request that
 * fits the context and the pool is never refused for memory: it waits (DSPY_ERR_STATE at add
 * means "queue it and retry after a step").
 *
 * Every full block a sequence fills is published under its chain name (engine/block_pool.h),
 * so the shared system prompt of many requests is computed once — also in a cold burst, where
 * many such prompts are added before any block is published: a prompt whose next full block
 * another running sequence is filling with the same tokens waits for it and then takes it from
 * the prefix cache (dspy_engine_defer, in-flight sharing) instead of computing it again.
 */
#include "dspy/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_impl.h"

dspy_engine_params dspy_engine_params_default(void) {
    dspy_engine_params p = {8, 0, 16, 256, 0, -1, -1};
    return p;
}

dspy_sampling dspy_sampling_default(void) {
    dspy_sampling s = {1.0f, 1.0f, 0, 0, 0, NULL, 0, false, NULL};
    return s;
}

const char *dspy_finish_name(dspy_finish f) {
    return f == DSPY_FINISH_STOP ? "stop" : f == DSPY_FINISH_LENGTH ? "length" : "none";
}

static void seq_free(seq *s) {
    if (!s) return;
    free(s->tokens);
    free(s->blocks);
    free(s->names);
    free(s->stop_ids);
    free(s);
}

void dspy_engine_free(dspy_engine *e) {
    if (!e) return;
    if (e->fl.active) (void)e->be->ops->sync(e->be); /* a step still in flight uses the buffers */
    for (int32_t i = 0; i < e->n_active; i++) seq_free(e->active[i]);
    free(e->active);
    if (e->be) {
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < MAX_BUCKETS; i++)
                if (e->graphs[k][i]) e->be->ops->graph_free(e->be, e->graphs[k][i]);
        e->be->ops->free_host(e->be, e->meta_h);
        e->be->ops->free(e->be, e->meta_d);
        e->be->ops->free_host(e->be, e->res_h);
        e->be->ops->free(e->be, e->res_d);
        e->be->ops->free_host(e->be, e->ring_h);
        e->be->ops->free(e->be, e->ring_d);
        e->be->ops->free_host(e->be, e->cmask_h);
        e->be->ops->free(e->be, e->cmask_d);
    }
    dspy_kv_cache_free(&e->kv);
    dspy_block_pool_free(&e->pool);
    dspy_fwd_buf_free(&e->buf);
    dspy_backend_free(e->be);
    free(e->out_seq);
    free(e->take);
    free(e->n_draft);
    free(e->first_out);
    free(e->fl.removed);
    free(e->events);
    free(e);
}

int32_t dspy_engine_act8_width(const dspy_model *m) {
    if (!dspy_model_f8_act(m)) return 0;
    const dspy_model_config *c = dspy_model_config_get(m);
    const int32_t q = c->num_attention_heads * c->head_dim, i = c->intermediate_size;
    const int32_t w = c->hidden_size > q ? c->hidden_size : q;
    return i > w ? i : w;
}

dspy_status dspy_engine_new(const dspy_model *model, const dspy_engine_params *pp, dspy_engine **out) {
    *out = NULL;
    dspy_engine_params p = pp ? *pp : dspy_engine_params_default();
    const dspy_model_config *c = dspy_model_config_get(model);
    /* benchmarking: drafted tokens per step, overriding p */
    const char *envs[3] = {"DSPY_ENGINE_SPEC", "DSPY_ENGINE_JUMP", "DSPY_ENGINE_MULTI"};
    int32_t *fields[3] = {&p.spec_tokens, &p.jump_tokens, &p.multi_steps};
    for (int i = 0; i < 3; i++) {
        const char *sk = getenv(envs[i]);
        if (!sk || !*sk) continue;
        char *end;
        long k = strtol(sk, &end, 10);
        if (*end || k < 0 || k > DSPY_ENGINE_MAX_SPEC)
            return dspy_fail(DSPY_ERR_ARG, "engine: %s=%s is not a number of drafted tokens in 0 .. %d", envs[i], sk,
                             DSPY_ENGINE_MAX_SPEC);
        *fields[i] = (int32_t)k;
    }
    if (p.max_tokens_total == 0)
        p.max_tokens_total = c->max_position_embeddings < 16384 ? c->max_position_embeddings : 16384;
    if (p.max_seqs <= 0 || p.max_seqs > 65536 || p.max_tokens_total <= 0 || p.block_size <= 0 ||
        p.block_size > 4096 || p.max_batch_tokens <= 0)
        return dspy_fail(DSPY_ERR_ARG, "engine: max_seqs (%d), max_tokens_total (%d), block_size (%d) and "
                                       "max_batch_tokens (%d) must be positive",
                         p.max_seqs, p.max_tokens_total, p.block_size, p.max_batch_tokens);
    if (p.spec_tokens < 0 || p.spec_tokens > DSPY_ENGINE_MAX_SPEC)
        return dspy_fail(DSPY_ERR_ARG, "engine: spec_tokens (%d, or DSPY_ENGINE_SPEC) must be in 0 .. %d",
                         p.spec_tokens, DSPY_ENGINE_MAX_SPEC);
    if (p.jump_tokens < -1 || p.jump_tokens > DSPY_ENGINE_MAX_SPEC)
        return dspy_fail(DSPY_ERR_ARG, "engine: jump_tokens (%d, or DSPY_ENGINE_JUMP) must be in 0 .. %d, or -1 (auto)",
                         p.jump_tokens, DSPY_ENGINE_MAX_SPEC);
    if (p.multi_steps < -1 || p.multi_steps == 0 || p.multi_steps > DSPY_ENGINE_MAX_RUN)
        return dspy_fail(DSPY_ERR_ARG, "engine: multi_steps (%d, or DSPY_ENGINE_MULTI) must be in 1 .. %d, or -1 (auto)",
                         p.multi_steps, DSPY_ENGINE_MAX_RUN);
    /* auto: on where a step runs op by op (the CPU); off where decode steps replay graphs (CUDA),
     * as a drafting step runs eagerly (speculation's measured ~3 ms against 1.25 ms a graph step
     * at batch 16 on the H200: not measured for jump-forward yet) */
    if (p.jump_tokens < 0) p.jump_tokens = dspy_model_device(model).type == DSPY_DEVICE_CPU ? 8 : 0;
    dspy_status st;
    dspy_engine *e = calloc(1, sizeof *e);
    if (!e) return dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
    e->m = model;
    e->cfg = c;
    e->p = p;
    e->next_id = 1;
    /* a speculating sequence feeds its token and up to spec_tokens drafts, every one sampled;
     * jump-forward drafts (constrained sequences only) share a budget of jump_rows a step */
    e->jump_rows = p.jump_tokens > 0 ? (p.max_seqs > p.jump_tokens ? p.max_seqs : p.jump_tokens) : 0;
    e->max_out = p.max_seqs * (1 + p.spec_tokens) + e->jump_rows;
    e->rows_cap = p.max_batch_tokens + e->max_out;
    int64_t cap_tokens = ((int64_t)p.max_tokens_total + p.block_size - 1) / p.block_size * p.block_size;
    e->max_len = (int32_t)(cap_tokens < c->max_position_embeddings ? cap_tokens : c->max_position_embeddings);
    e->max_blocks = (e->max_len + p.block_size - 1) / p.block_size;
    dspy_backend_plan plan = {e->rows_cap, e->max_len, e->max_out, c->vocab_size, c->num_attention_heads,
                              c->head_dim, dspy_model_n_threads(model), dspy_engine_act8_width(model)};
    if ((st = dspy_backend_new(dspy_model_device(model), &plan, &e->be))) goto fail;
    if ((st = dspy_fwd_use_model_kernels(model, e->be))) goto fail;
    /* One block more than asked: the padding block of captured decode steps. */
    if ((st = dspy_kv_cache_init(&e->kv, e->be, c, (int32_t)cap_tokens + p.block_size, p.block_size))) goto fail;
    if ((st = dspy_block_pool_init(&e->pool, e->kv.n_blocks, p.block_size))) goto fail;
    dspy_block_pool_alloc(&e->pool, &e->pad_block); /* held forever */
    if ((st = dspy_fwd_buf_init(&e->buf, e->be, c, e->rows_cap, e->max_out))) goto fail;
    /* Staging: the largest layout: every row, every sequence with a full block table (shared
     * blocks appear in several tables), one table entry for the padded rows. */
    e->meta_words =
        dspy_engine_layout(e->rows_cap, p.max_seqs, e->max_out, p.max_seqs * e->max_blocks + 1).end + 16;
    const dspy_ops *o = e->be->ops;
    if ((st = o->alloc_host(e->be, e->meta_words * 4, (void **)&e->meta_h))) goto fail;
    if ((st = o->alloc(e->be, e->meta_words * 4, (void **)&e->meta_d))) goto fail;
    if ((st = o->alloc_host(e->be, (size_t)e->max_out * 12, (void **)&e->res_h))) goto fail;
    if ((st = o->alloc(e->be, (size_t)e->max_out * 12, (void **)&e->res_d))) goto fail;
    /* decode runs: auto is on where decode steps replay graphs (their launch and the host's
     * round trip are what a run saves), off on the CPU; a run's steps leave their tokens and
     * logprobs in a ring of multi_steps slots */
    const char *gv = getenv("DSPY_CUDA_GRAPHS");
    const bool graphs = o->graph_begin && !(gv && strcmp(gv, "0") == 0);
    e->run_max = !o->decode_advance ? 1 : p.multi_steps > 0 ? p.multi_steps : graphs ? 8 : 1;
    e->run_limit = DSPY_ENGINE_MAX_RUN;
    if (e->run_max > 1) {
        const size_t ring_bytes = (size_t)e->run_max * 2 * (size_t)e->max_out * 4;
        if ((st = o->alloc_host(e->be, ring_bytes, (void **)&e->ring_h))) goto fail;
        if ((st = o->alloc(e->be, ring_bytes, (void **)&e->ring_d))) goto fail;
    }
    e->mask_words = (c->vocab_size + 31) / 32;
    size_t cmask_bytes = (size_t)e->max_out * (1 + (size_t)e->mask_words) * 4;
    if ((st = o->alloc_host(e->be, cmask_bytes, (void **)&e->cmask_h))) goto fail;
    if ((st = o->alloc(e->be, cmask_bytes, (void **)&e->cmask_d))) goto fail;
    e->active = calloc((size_t)p.max_seqs, sizeof *e->active);
    e->out_seq = malloc((size_t)e->max_out * sizeof *e->out_seq);
    e->events = malloc((size_t)e->max_out * (size_t)e->run_max * sizeof *e->events); /* a run: run_max each */
    e->take = malloc((size_t)p.max_seqs * sizeof *e->take);
    e->n_draft = malloc((size_t)p.max_seqs * sizeof *e->n_draft);
    e->first_out = malloc((size_t)p.max_seqs * sizeof *e->first_out);
    e->fl.removed = malloc((size_t)p.max_seqs * sizeof *e->fl.removed);
    if (!e->active || !e->out_seq || !e->events || !e->take || !e->n_draft || !e->first_out || !e->fl.removed) {
        st = dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
        goto fail;
    }
    e->use_graphs = graphs;
    /* Two step variants, measured on the H200 (bench/RESULTS.md, sixth session): mixed steps'
     * decoding rows attended apart gained nothing (opt-in); eager steps padded to the warm-up's
     * row counts took B2 from 0.906-0.913 s to 0.872-0.889 s (GEMMs meet only shapes the
     * warm-up loaded), so they are the default where steps replay graphs (CUDA); the CPU keeps
     * its exact row counts (=0 / =1 override) */
    const char *sm = getenv("DSPY_ENGINE_SPLIT_MIXED"); /* 1: mixed steps attend decoding rows apart */
    e->split_mixed = sm && strcmp(sm, "1") == 0;
    const char *pr = getenv("DSPY_ENGINE_PAD_ROWS"); /* eager steps padded to the warm-up's sizes */
    e->pad_eager = pr && *pr ? strcmp(pr, "1") == 0 : e->use_graphs;
    const char *gr = getenv("DSPY_ENGINE_GREEDY"); /* 0: greedy steps sample as the others do */
    e->greedy = o->logits_greedy && !(gr && strcmp(gr, "0") == 0);
    *out = e;
    return DSPY_OK;
fail:
    dspy_engine_free(e);
    return st;
}

dspy_status dspy_engine_check_prompt(const dspy_model_config *c, const int32_t *ids, size_t n) {
    if (n == 0 || !ids) return dspy_fail(DSPY_ERR_ARG, "prompt is empty (at least one token is needed)");
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return dspy_fail(DSPY_ERR_ARG, "prompt token %zu is %d, outside the vocabulary (vocab_size=%d)", i, ids[i],
                             c->vocab_size);
    return DSPY_OK;
}

/* Tokens the cache holds for sequences (the padding block excluded). */
static int32_t capacity_tokens(const dspy_engine *e) { return (e->kv.n_blocks - 1) * e->kv.block_size; }

/* ---- blocks ---------------------------------------------------------------------------------- */

/* Gives s blocks for positions [0, s->n_tokens): the prefix cache's leading full blocks first
 * (at most up to the last token, which must be computed to be sampled from), then new blocks.
 * Sets n_cached to the tokens found. false, taking nothing, when the pool cannot give enough. */
static bool claim_blocks(dspy_engine *e, seq *s) {
    const int32_t bs = e->kv.block_size, need = (s->n_tokens + bs - 1) / bs;
    int32_t matched = 0, max_match = (s->n_tokens - 1) / bs, newly_ref = 0;
    uint64_t parent = 0;
    while (matched < max_match) {
        const int32_t *t = s->tokens + (size_t)matched * bs;
        uint64_t name = dspy_block_name(parent, t, bs);
        int32_t b = dspy_block_pool_lookup(&e->pool, name, parent, t);
        if (b < 0) break;
        s->blocks[matched] = b;
        s->names[matched] = name;
        newly_ref += e->pool.ref[b] == 0; /* it stops being evictable once referenced */
        parent = name;
        matched++;
    }
    if (dspy_block_pool_available(&e->pool) - newly_ref < need - matched) return false;
    for (int32_t i = 0; i < matched; i++) dspy_block_pool_ref(&e->pool, s->blocks[i]);
    for (int32_t i = matched; i < need; i++) dspy_block_pool_alloc(&e->pool, &s->blocks[i]);
    s->n_blocks = need;
    s->n_named = matched;
    for (int32_t i = matched; i < s->n_tokens / bs; i++) /* the rest of its full blocks, for dspy_engine_defer */
        s->names[i] = dspy_block_name(i ? s->names[i - 1] : 0, s->tokens + (size_t)i * bs, bs);
    s->n_hashed = s->n_tokens / bs;
    s->n_cached = matched * bs;
    e->hit_tokens += (int64_t)matched * bs;
    return true;
}

static void release_blocks(dspy_engine *e, seq *s) {
    for (int32_t i = s->n_blocks - 1; i >= 0; i--) dspy_block_pool_unref(&e->pool, s->blocks[i]);
    s->n_blocks = 0;
    s->n_named = 0;
}

/* Frees s's blocks; it will recompute all its tokens when it resumes. */
static void preempt(dspy_engine *e, seq *s) {
    dspy_engine_publish(e, s); /* what it filled stays reusable while the memory is not needed */
    release_blocks(e, s);
    s->n_cached = 0;
    s->n_fill = s->n_tokens;
    s->waiting = true;
    e->preemptions++;
}

bool dspy_engine_grow(dspy_engine *e, seq *s, int32_t pos) {
    const int32_t bs = e->kv.block_size;
    while (pos / bs >= s->n_blocks) {
        int32_t b;
        if (dspy_block_pool_alloc(&e->pool, &b)) {
            s->blocks[s->n_blocks++] = b;
            continue;
        }
        /* the pool is empty: preempt the most recently added other running sequence, else s */
        seq *victim = s;
        for (int32_t i = e->n_active - 1; i >= 0; i--)
            if (e->active[i] != s && !e->active[i]->waiting && e->active[i]->n_blocks > 0) {
                victim = e->active[i];
                break;
            }
        preempt(e, victim);
        if (victim == s) return false;
    }
    return true;
}

void dspy_engine_resume_waiting(dspy_engine *e) {
    for (int32_t i = 0; i < e->n_active; i++) {
        seq *s = e->active[i];
        if (!s->waiting) continue;
        if (!claim_blocks(e, s)) return; /* in order: a later one must not overtake */
        s->waiting = false;
        e->computed_tokens += s->n_tokens - s->n_cached;
    }
}

void dspy_engine_publish(dspy_engine *e, seq *s) {
    const int32_t bs = e->kv.block_size;
    while (s->n_named < s->n_blocks && (s->n_named + 1) * bs <= s->n_cached) {
        int32_t i = s->n_named;
        uint64_t parent = i ? s->names[i - 1] : 0;
        const int32_t *t = s->tokens + (size_t)i * bs;
        if (i >= s->n_hashed) s->names[i] = dspy_block_name(parent, t, bs); /* a prompt block's: hashed at claim */
        dspy_block_pool_publish(&e->pool, s->blocks[i], s->names[i], parent, t);
        s->n_named++;
    }
    if (s->n_hashed < s->n_named) s->n_hashed = s->n_named;
}

/* In-flight sharing. A sequence s prefilling from a block boundary first adopts the prefix
 * cache's blocks for its next positions (published since it claimed its blocks: its own fresh
 * blocks there hold nothing yet and go back to the pool; the tokens count as hits, not computed).
 * Then, if its next full block j (one it may share: not the one holding its last token) is being
 * filled by another running sequence t with the same leading tokens (same chain name for block j
 * and the same tokens in it; t has not filled it yet), s feeds nothing this step: t publishes the
 * block when it fills it, and s adopts it at a later step. Among the sequences that could fill
 * block j, the one furthest on (n_cached), the earliest added on a tie, is the leader: the order
 * is strict, so two sequences never wait on each other, and the first of any chain of waits
 * computes. A leader preempted (waiting), removed or finished stops being one, and its followers
 * then compute (adopting what it published). The cost: a scan of the active sequences for each
 * prefilling sequence at a block boundary. */
bool dspy_engine_defer(dspy_engine *e, int32_t i) {
    seq *s = e->active[i];
    const int32_t bs = e->kv.block_size, max_share = (s->n_tokens - 1) / bs;
    if (s->waiting || s->n_cached != s->n_named * bs) return false;
    int32_t j = s->n_named;
    while (j < max_share && j < s->n_hashed) {
        const int32_t *t = s->tokens + (size_t)j * bs;
        int32_t b = dspy_block_pool_lookup(&e->pool, s->names[j], j ? s->names[j - 1] : 0, t);
        if (b < 0) break;
        dspy_block_pool_ref(&e->pool, b);
        dspy_block_pool_unref(&e->pool, s->blocks[j]); /* unnamed, only s's: back to the free list */
        s->blocks[j++] = b;
    }
    if (j > s->n_named) {
        const int64_t adopted = (int64_t)(j - s->n_named) * bs;
        s->n_named = j;
        s->n_cached = j * bs;
        e->hit_tokens += adopted;
        e->computed_tokens -= adopted;
    }
    if (j >= max_share || j >= s->n_hashed) return false;
    for (int32_t k = 0; k < e->n_active; k++) {
        const seq *t = e->active[k];
        if (t == s || t->waiting || j >= t->n_hashed || t->names[j] != s->names[j] || t->n_cached >= (j + 1) * bs ||
            t->n_cached < s->n_cached || (t->n_cached == s->n_cached && k > i))
            continue;
        if (memcmp(t->tokens + (size_t)j * bs, s->tokens + (size_t)j * bs, sizeof(int32_t) * (size_t)bs) == 0)
            return true;
    }
    return false;
}

/* ---- sequences ------------------------------------------------------------------------------- */

dspy_status dspy_engine_add(dspy_engine *e, const int32_t *prompt, size_t n, const dspy_sampling *spp,
                            int64_t *seq_id) {
    *seq_id = 0;
    dspy_sampling sp = spp ? *spp : dspy_sampling_default();
    dspy_status st = dspy_engine_check_prompt(e->cfg, prompt, n);
    if (st) return st;
    if (!(sp.temperature >= 0) || !isfinite(sp.temperature) || !(sp.top_p > 0 && sp.top_p <= 1) || sp.top_k < 0 ||
        sp.max_tokens < 0 || sp.n_stop_ids < 0 || (sp.n_stop_ids > 0 && !sp.stop_ids))
        return dspy_fail(DSPY_ERR_ARG, "sampling: temperature %g must be >= 0, top_p %g in (0, 1], top_k %d and "
                                       "max_tokens %d >= 0", sp.temperature, sp.top_p, sp.top_k, sp.max_tokens);
    if (sp.constraint) {
        if (dspy_constraint_vocab(sp.constraint) != e->cfg->vocab_size)
            return dspy_fail(DSPY_ERR_ARG, "sampling: the constraint's vocabulary (%d tokens) is not the model's (%d)",
                             dspy_constraint_vocab(sp.constraint), e->cfg->vocab_size);
        if ((st = dspy_constraint_check(sp.constraint, e->cfg->n_eos > 0))) return st;
    }
    int64_t ctx = e->cfg->max_position_embeddings, cap = capacity_tokens(e);
    int64_t np = (int64_t)n;
    int64_t max_new = sp.max_tokens;
    if (max_new == 0) max_new = (ctx < cap + 1 ? ctx : cap + 1) - np;
    if (max_new <= 0 || np + max_new > ctx)
        return dspy_fail(DSPY_ERR_CONTEXT, "prompt of %lld tokens + max_tokens %lld exceeds the model's context of "
                                           "%lld tokens", (long long)np, (long long)(max_new > 0 ? max_new : 0),
                         (long long)ctx);
    int64_t need = np + max_new - 1; /* the last new token is never fed back */
    if (need > cap)
        return dspy_fail(DSPY_ERR_CONTEXT, "prompt of %lld tokens + max_tokens %lld needs %lld KV-cache tokens; the "
                                           "engine holds %lld in all (max_tokens_total)",
                         (long long)np, (long long)max_new, (long long)need, (long long)cap);
    if (e->n_active >= e->p.max_seqs)
        return dspy_fail(DSPY_ERR_STATE, "engine is full: %d sequences active (max_seqs); retry after one finishes",
                         e->n_active);
    for (int32_t i = 0; i < e->n_active; i++)
        if (e->active[i]->waiting)
            return dspy_fail(DSPY_ERR_STATE, "engine is short of KV cache: a preempted sequence waits to resume; "
                                             "retry after a sequence finishes");
    seq *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
    s->cap_blocks = dspy_kv_cache_blocks_for(&e->kv, np + max_new);
    s->tokens = malloc(sizeof(int32_t) * (size_t)(np + max_new));
    s->blocks = malloc(sizeof(int32_t) * (size_t)s->cap_blocks);
    s->names = malloc(sizeof(uint64_t) * (size_t)s->cap_blocks);
    s->stop_ids = malloc(sizeof(int32_t) * (size_t)(sp.n_stop_ids ? sp.n_stop_ids : 1));
    if (!s->tokens || !s->blocks || !s->names || !s->stop_ids) {
        seq_free(s);
        return dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
    }
    memcpy(s->tokens, prompt, sizeof(int32_t) * n);
    s->n_tokens = s->n_prompt = s->n_fill = (int32_t)np;
    if (!claim_blocks(e, s)) {
        int32_t avail = dspy_block_pool_available(&e->pool);
        seq_free(s);
        return dspy_fail(DSPY_ERR_STATE, "not enough free KV cache now: the prompt needs %lld blocks, %d free; "
                                         "retry after a sequence finishes",
                         (long long)dspy_kv_cache_blocks_for(&e->kv, np), avail);
    }
    if (sp.n_stop_ids) memcpy(s->stop_ids, sp.stop_ids, sizeof(int32_t) * (size_t)sp.n_stop_ids);
    s->n_stop = sp.n_stop_ids;
    s->max_new = (int32_t)max_new;
    s->temperature = sp.temperature;
    s->top_p = sp.top_p;
    s->top_k = sp.top_k;
    s->ignore_eos = sp.ignore_eos;
    s->cons = sp.constraint;
    s->cstate = 0;
    dspy_rng_seed(&s->rng, sp.seed);
    s->id = e->next_id++;
    e->active[e->n_active++] = s;
    e->prompt_tokens += np;
    e->computed_tokens += np - s->n_cached;
    *seq_id = s->id;
    return DSPY_OK;
}

static void retire(dspy_engine *e, int32_t i) {
    seq *s = e->active[i];
    dspy_engine_publish(e, s);
    release_blocks(e, s);
    seq_free(s);
    memmove(&e->active[i], &e->active[i + 1], sizeof(seq *) * (size_t)(e->n_active - i - 1));
    e->n_active--;
}

bool dspy_engine_retire_id(dspy_engine *e, int64_t id) {
    for (int32_t i = 0; i < e->n_active; i++)
        if (e->active[i]->id == id) {
            retire(e, i);
            return true;
        }
    return false;
}

/* While a step is in flight the sequence's rows are on the device: it is listed and retired
 * when the step ends (dspy_engine_step_end drops its events). */
dspy_status dspy_engine_remove(dspy_engine *e, int64_t seq_id) {
    for (int32_t i = 0; i < e->n_active; i++) {
        if (e->active[i]->id != seq_id) continue;
        if (!e->fl.active) {
            retire(e, i);
            return DSPY_OK;
        }
        for (int32_t k = 0; k < e->fl.n_removed; k++)
            if (e->fl.removed[k] == seq_id) return DSPY_OK;
        e->fl.removed[e->fl.n_removed++] = seq_id; /* at most one a sequence: n_active <= max_seqs */
        return DSPY_OK;
    }
    return dspy_fail(DSPY_ERR_NOTFOUND, "sequence %lld is not active (finished sequences are released "
                                        "automatically)", (long long)seq_id);
}

dspy_finish dspy_engine_finish_rule(const dspy_engine *e, const seq *s, int32_t tok) {
    if (!s->ignore_eos || s->cons) /* a constrained sequence samples eos only where it accepts */
        for (int i = 0; i < e->cfg->n_eos; i++)
            if (tok == e->cfg->eos_token_ids[i]) return DSPY_FINISH_STOP;
    for (int32_t i = 0; i < s->n_stop; i++)
        if (tok == s->stop_ids[i]) return DSPY_FINISH_STOP;
    if (s->n_generated >= s->max_new) return DSPY_FINISH_LENGTH;
    return DSPY_FINISH_NONE;
}

const char *dspy_step_kind_name(dspy_step_kind k) {
    static const char *const names[DSPY_STEP_KINDS] = {"graph", "decode", "mixed", "prefill"};
    return k >= 0 && k < DSPY_STEP_KINDS ? names[k] : "?";
}

void dspy_engine_limit_run(dspy_engine *e, int32_t steps) { e->run_limit = steps < 1 ? 1 : steps; }

void dspy_engine_profile_get(const dspy_engine *e, dspy_engine_profile *out) { *out = e->prof; }

void dspy_engine_stats_get(const dspy_engine *e, dspy_engine_stats *out) {
    memset(out, 0, sizeof *out);
    out->active = e->n_active;
    out->async_steps = e->be->dev.type != DSPY_DEVICE_CPU;
    out->max_seqs = e->p.max_seqs;
    out->capacity_tokens = capacity_tokens(e);
    out->free_tokens = dspy_block_pool_available(&e->pool) * e->kv.block_size;
    out->context_length = e->cfg->max_position_embeddings;
    out->device_allocs = e->be->n_allocs;
    for (int32_t i = 0; i < e->n_active; i++) out->waiting += e->active[i]->waiting;
    out->cached_tokens = (int64_t)dspy_block_pool_cached(&e->pool) * e->kv.block_size;
    out->prompt_tokens = e->prompt_tokens;
    out->prefix_hit_tokens = e->hit_tokens;
    out->computed_tokens = e->computed_tokens;
    out->preemptions = e->preemptions;
}

dspy_status dspy_generate(const dspy_model *m, const int32_t *prompt, size_t n, const dspy_sampling *sp,
                          int32_t **out_ids, float **out_logprobs, size_t *out_n, dspy_finish *finish) {
    *out_ids = NULL;
    if (out_logprobs) *out_logprobs = NULL;
    *out_n = 0;
    if (finish) *finish = DSPY_FINISH_NONE;
    const dspy_model_config *c = dspy_model_config_get(m);
    dspy_sampling s = sp ? *sp : dspy_sampling_default();
    int64_t ctx = c->max_position_embeddings;
    int64_t cap = s.max_tokens > 0 ? (int64_t)n + s.max_tokens : (ctx < 16384 ? ctx : 16384);
    if (cap > ctx) cap = ctx;
    if (cap < 1) cap = 1;
    dspy_engine_params p = dspy_engine_params_default();
    p.max_seqs = 1;
    p.max_tokens_total = (int32_t)cap;
    dspy_engine *e = NULL;
    int32_t *ids = NULL;
    float *lps = NULL;
    size_t count = 0;
    int64_t id;
    dspy_status st = dspy_engine_new(m, &p, &e);
    if (st) return st;
    if ((st = dspy_engine_add(e, prompt, n, &s, &id))) goto fail;
    size_t cap_out = (size_t)e->active[0]->max_new;
    ids = malloc(sizeof(int32_t) * cap_out);
    lps = malloc(sizeof(float) * cap_out);
    if (!ids || !lps) {
        st = dspy_fail(DSPY_ERR_NOMEM, "generate: out of memory");
        goto fail;
    }
    for (;;) {
        dspy_step_out so;
        if ((st = dspy_engine_step(e, &so))) goto fail;
        if (so.n_events == 0) break;
        bool done = false;
        for (int32_t k = 0; k < so.n_events && !done; k++) { /* several when drafts were accepted */
            const dspy_step_event *ev = &so.events[k];
            if (ev->token < 0) continue;
            ids[count] = ev->token;
            lps[count++] = ev->logprob;
            if (ev->finish != DSPY_FINISH_NONE) {
                if (finish) *finish = ev->finish;
                done = true;
            }
        }
        if (done) break;
    }
    dspy_engine_free(e);
    *out_ids = ids;
    *out_n = count;
    if (out_logprobs) *out_logprobs = lps;
    else free(lps);
    return DSPY_OK;
fail:
    dspy_engine_free(e);
    free(ids);
    free(lps);
    return st;
}
