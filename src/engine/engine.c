/* engine.c — continuous batching: sequences, steps, sampling, finish rules (dspy/engine.h).
 *
 * Each step packs, in add order, one decode token for every sequence past its prompt and
 * prompt chunks for the others (up to max_batch_tokens), runs dspy_forward once and the
 * backend's sampler for every sequence whose known tokens are all cached, and retires finished
 * sequences. The KV cache for prompt + max_tokens is reserved when a sequence is added.
 *
 * A step's metadata (tokens, positions, slots, segments, block tables, sampling parameters with
 * one host-drawn uniform per sampled token) is written into one host staging buffer and copied
 * to the device in one transfer; the sampled tokens and logprobs come back in one transfer,
 * after which the step waits for the device once. Nothing is allocated during a step. On a
 * backend with graphs (CUDA), a step in which every sequence decodes is padded to a bucket size
 * (1, 2, 4, ... max_seqs) with rows that write into a reserved block, and the whole step
 * (forward + sampling) is captured once per bucket and replayed: the metadata sits at the same
 * device addresses for every step of a bucket.
 *
 * Not here: the scheduler thread and request queue (the server's), stop strings (the caller's,
 * through the tokenizer).
 */
#include "dspy/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/rng.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "kern/backend.h"

typedef struct seq {
    int64_t id;
    int32_t *tokens;   /* prompt then generated; capacity n_prompt + max_new */
    int32_t n_tokens;
    int32_t n_prompt;
    int32_t n_cached;  /* tokens whose keys/values are in the cache */
    int32_t max_new;
    int32_t n_generated;
    int32_t *blocks;
    int32_t n_blocks;
    int32_t *stop_ids;
    int32_t n_stop;
    float temperature, top_p;
    int32_t top_k;
    bool ignore_eos;
    dspy_rng rng;
} seq;

/* Word offsets of one step's metadata in the staging buffer (and its device mirror). */
typedef struct meta_layout {
    size_t tokens, pos, slots, out_rows, segs, params, tables, end;
} meta_layout;

enum { MAX_BUCKETS = 17 };

struct dspy_engine {
    const dspy_model *m;
    const dspy_model_config *cfg;
    dspy_backend *be;
    dspy_engine_params p;
    dspy_kv_cache kv;
    dspy_fwd_buf buf;
    seq **active;
    int32_t n_active;
    int64_t next_id;
    int32_t rows_cap;
    int32_t max_len;        /* longest sequence the cache can hold (positions) */
    int32_t pad_block;      /* a block no sequence owns: padded graph rows write there */
    int32_t *meta_h;        /* host staging (meta_words) */
    int32_t *meta_d;        /* device mirror */
    size_t meta_words;
    int32_t *res_h, *res_d; /* (2 * max_seqs): tokens then logprobs */
    seq **out_seq;          /* (max_seqs) sequences sampled this step */
    int32_t *take;          /* (max_seqs) tokens each active sequence feeds this step */
    dspy_step_event *events;
    void *graphs[MAX_BUCKETS]; /* captured decode steps, by bucket index */
    bool use_graphs;
};

dspy_engine_params dspy_engine_params_default(void) {
    dspy_engine_params p = {8, 0, 16, 256};
    return p;
}

dspy_sampling dspy_sampling_default(void) {
    dspy_sampling s = {1.0f, 1.0f, 0, 0, 0, NULL, 0, false};
    return s;
}

const char *dspy_finish_name(dspy_finish f) {
    return f == DSPY_FINISH_STOP ? "stop" : f == DSPY_FINISH_LENGTH ? "length" : "none";
}

static void seq_free(seq *s) {
    if (!s) return;
    free(s->tokens);
    free(s->blocks);
    free(s->stop_ids);
    free(s);
}

static size_t align4(size_t w) { return (w + 3) & ~(size_t)3; }

/* Sections in a fixed order; segs and params 16-byte aligned for the device's vector loads. */
static meta_layout layout_for(int32_t N, int32_t nseg, int32_t M, int32_t n_table) {
    meta_layout L;
    L.tokens = 0;
    L.pos = L.tokens + (size_t)N;
    L.slots = L.pos + (size_t)N;
    L.out_rows = L.slots + (size_t)N;
    L.segs = align4(L.out_rows + (size_t)M);
    L.params = align4(L.segs + 4 * (size_t)nseg);
    L.tables = align4(L.params + DSPY_SAMPLE_PARAM_WORDS * (size_t)M);
    L.end = L.tables + (size_t)n_table;
    return L;
}

void dspy_engine_free(dspy_engine *e) {
    if (!e) return;
    for (int32_t i = 0; i < e->n_active; i++) seq_free(e->active[i]);
    free(e->active);
    if (e->be) {
        for (int i = 0; i < MAX_BUCKETS; i++)
            if (e->graphs[i]) e->be->ops->graph_free(e->be, e->graphs[i]);
        e->be->ops->free_host(e->be, e->meta_h);
        e->be->ops->free(e->be, e->meta_d);
        e->be->ops->free_host(e->be, e->res_h);
        e->be->ops->free(e->be, e->res_d);
    }
    dspy_kv_cache_free(&e->kv);
    dspy_fwd_buf_free(&e->buf);
    dspy_backend_free(e->be);
    free(e->out_seq);
    free(e->take);
    free(e->events);
    free(e);
}

dspy_status dspy_engine_new(const dspy_model *model, const dspy_engine_params *pp, dspy_engine **out) {
    *out = NULL;
    dspy_engine_params p = pp ? *pp : dspy_engine_params_default();
    const dspy_model_config *c = dspy_model_config_get(model);
    if (p.max_tokens_total == 0)
        p.max_tokens_total = c->max_position_embeddings < 16384 ? c->max_position_embeddings : 16384;
    if (p.max_seqs <= 0 || p.max_seqs > 65536 || p.max_tokens_total <= 0 || p.block_size <= 0 ||
        p.block_size > 4096 || p.max_batch_tokens <= 0)
        return dspy_fail(DSPY_ERR_ARG, "engine: max_seqs (%d), max_tokens_total (%d), block_size (%d) and "
                                       "max_batch_tokens (%d) must be positive",
                         p.max_seqs, p.max_tokens_total, p.block_size, p.max_batch_tokens);
    dspy_status st;
    dspy_engine *e = calloc(1, sizeof *e);
    if (!e) return dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
    e->m = model;
    e->cfg = c;
    e->p = p;
    e->next_id = 1;
    e->rows_cap = p.max_batch_tokens + p.max_seqs;
    int64_t cap_tokens = ((int64_t)p.max_tokens_total + p.block_size - 1) / p.block_size * p.block_size;
    e->max_len = (int32_t)(cap_tokens < c->max_position_embeddings ? cap_tokens : c->max_position_embeddings);
    dspy_backend_plan plan = {e->rows_cap, e->max_len, p.max_seqs, c->vocab_size, c->num_attention_heads,
                              c->head_dim, dspy_model_n_threads(model)};
    if ((st = dspy_backend_new(dspy_model_device(model), &plan, &e->be))) goto fail;
    /* One block more than asked: the padding block of captured decode steps. */
    if ((st = dspy_kv_cache_init(&e->kv, e->be, c, (int32_t)cap_tokens + p.block_size, p.block_size))) goto fail;
    dspy_kv_cache_alloc(&e->kv, 1, &e->pad_block);
    if ((st = dspy_fwd_buf_init(&e->buf, e->be, c, e->rows_cap, p.max_seqs))) goto fail;
    /* Staging: the largest layout (every row, every sequence, every block once, plus one table
     * entry per padded row). */
    e->meta_words = layout_for(e->rows_cap, p.max_seqs, p.max_seqs, e->kv.n_blocks + p.max_seqs).end + 16;
    const dspy_ops *o = e->be->ops;
    if ((st = o->alloc_host(e->be, e->meta_words * 4, (void **)&e->meta_h))) goto fail;
    if ((st = o->alloc(e->be, e->meta_words * 4, (void **)&e->meta_d))) goto fail;
    if ((st = o->alloc_host(e->be, (size_t)p.max_seqs * 8, (void **)&e->res_h))) goto fail;
    if ((st = o->alloc(e->be, (size_t)p.max_seqs * 8, (void **)&e->res_d))) goto fail;
    e->active = calloc((size_t)p.max_seqs, sizeof *e->active);
    e->out_seq = malloc((size_t)p.max_seqs * sizeof *e->out_seq);
    e->events = malloc((size_t)p.max_seqs * sizeof *e->events);
    e->take = malloc((size_t)p.max_seqs * sizeof *e->take);
    if (!e->active || !e->out_seq || !e->events || !e->take) {
        st = dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
        goto fail;
    }
    const char *g = getenv("DSPY_CUDA_GRAPHS");
    e->use_graphs = o->graph_begin && !(g && strcmp(g, "0") == 0);
    *out = e;
    return DSPY_OK;
fail:
    dspy_engine_free(e);
    return st;
}

static dspy_status check_prompt(const dspy_model_config *c, const int32_t *ids, size_t n) {
    if (n == 0 || !ids) return dspy_fail(DSPY_ERR_ARG, "prompt is empty (at least one token is needed)");
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return dspy_fail(DSPY_ERR_ARG, "prompt token %zu is %d, outside the vocabulary (vocab_size=%d)", i, ids[i],
                             c->vocab_size);
    return DSPY_OK;
}

/* Tokens the cache holds for sequences (the padding block excluded). */
static int32_t capacity_tokens(const dspy_engine *e) { return (e->kv.n_blocks - 1) * e->kv.block_size; }

dspy_status dspy_engine_add(dspy_engine *e, const int32_t *prompt, size_t n, const dspy_sampling *spp,
                            int64_t *seq_id) {
    *seq_id = 0;
    dspy_sampling sp = spp ? *spp : dspy_sampling_default();
    dspy_status st = check_prompt(e->cfg, prompt, n);
    if (st) return st;
    if (!(sp.temperature >= 0) || !isfinite(sp.temperature) || !(sp.top_p > 0 && sp.top_p <= 1) || sp.top_k < 0 ||
        sp.max_tokens < 0 || sp.n_stop_ids < 0 || (sp.n_stop_ids > 0 && !sp.stop_ids))
        return dspy_fail(DSPY_ERR_ARG, "sampling: temperature %g must be >= 0, top_p %g in (0, 1], top_k %d and "
                                       "max_tokens %d >= 0", sp.temperature, sp.top_p, sp.top_k, sp.max_tokens);
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
    int32_t nb = dspy_kv_cache_blocks_for(&e->kv, need);
    if (nb > e->kv.n_free)
        return dspy_fail(DSPY_ERR_STATE, "not enough free KV cache now: need %d blocks, %d free; retry after a "
                                         "sequence finishes", nb, e->kv.n_free);
    seq *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
    s->tokens = malloc(sizeof(int32_t) * (size_t)(np + max_new));
    s->blocks = malloc(sizeof(int32_t) * (size_t)(nb ? nb : 1));
    s->stop_ids = malloc(sizeof(int32_t) * (size_t)(sp.n_stop_ids ? sp.n_stop_ids : 1));
    if (!s->tokens || !s->blocks || !s->stop_ids) {
        seq_free(s);
        return dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
    }
    memcpy(s->tokens, prompt, sizeof(int32_t) * n);
    if (sp.n_stop_ids) memcpy(s->stop_ids, sp.stop_ids, sizeof(int32_t) * (size_t)sp.n_stop_ids);
    s->n_stop = sp.n_stop_ids;
    s->n_tokens = s->n_prompt = (int32_t)np;
    s->max_new = (int32_t)max_new;
    s->temperature = sp.temperature;
    s->top_p = sp.top_p;
    s->top_k = sp.top_k;
    s->ignore_eos = sp.ignore_eos;
    dspy_rng_seed(&s->rng, sp.seed);
    dspy_kv_cache_alloc(&e->kv, nb, s->blocks);
    s->n_blocks = nb;
    s->id = e->next_id++;
    e->active[e->n_active++] = s;
    *seq_id = s->id;
    return DSPY_OK;
}

static void retire(dspy_engine *e, int32_t i) {
    seq *s = e->active[i];
    dspy_kv_cache_release(&e->kv, s->blocks, s->n_blocks);
    seq_free(s);
    memmove(&e->active[i], &e->active[i + 1], sizeof(seq *) * (size_t)(e->n_active - i - 1));
    e->n_active--;
}

dspy_status dspy_engine_remove(dspy_engine *e, int64_t seq_id) {
    for (int32_t i = 0; i < e->n_active; i++)
        if (e->active[i]->id == seq_id) {
            retire(e, i);
            return DSPY_OK;
        }
    return dspy_fail(DSPY_ERR_NOTFOUND, "sequence %lld is not active (finished sequences are released "
                                        "automatically)", (long long)seq_id);
}

static dspy_finish finish_rule(const dspy_engine *e, const seq *s, int32_t tok) {
    if (!s->ignore_eos)
        for (int i = 0; i < e->cfg->n_eos; i++)
            if (tok == e->cfg->eos_token_ids[i]) return DSPY_FINISH_STOP;
    for (int32_t i = 0; i < s->n_stop; i++)
        if (tok == s->stop_ids[i]) return DSPY_FINISH_STOP;
    if (s->n_generated >= s->max_new) return DSPY_FINISH_LENGTH;
    return DSPY_FINISH_NONE;
}

/* The step's rows, before they are laid out: how many tokens each sequence feeds. */
typedef struct step_plan {
    int32_t N, nseg, M, n_table;
    bool decode; /* every fed sequence feeds one token and is sampled */
} step_plan;

static step_plan plan_step(dspy_engine *e, int32_t *take) {
    step_plan sp = {0, 0, 0, 0, true};
    int32_t budget = e->p.max_batch_tokens;
    for (int32_t i = 0; i < e->n_active; i++) {
        seq *s = e->active[i];
        int32_t t = 1;
        if (s->n_cached < s->n_prompt) {
            t = s->n_prompt - s->n_cached;
            if (t > budget) t = budget;
            budget -= t;
        }
        take[i] = t;
        if (t == 0) continue;
        sp.N += t;
        sp.nseg++;
        sp.n_table += s->n_blocks;
        if (s->n_cached + t == s->n_tokens) sp.M++;
        else sp.decode = false;
        if (t != 1) sp.decode = false;
    }
    return sp;
}

/* The bucket of n decoding rows: the smallest power of two >= n, capped at max_seqs. */
static int32_t bucket_of(const dspy_engine *e, int32_t n, int *index) {
    int32_t b = 1;
    int i = 0;
    while (b < n) b <<= 1, i++;
    if (b > e->p.max_seqs) b = e->p.max_seqs;
    *index = i;
    return b;
}

/* Runs the forward pass and the sampler for the laid-out step (recorded when capturing). */
static dspy_status run_step(dspy_engine *e, const meta_layout *L, int32_t N, int32_t nseg, int32_t M, int32_t n_table,
                            bool decode) {
    dspy_backend *be = e->be;
    int32_t *d = e->meta_d;
    dspy_fwd_batch b;
    b.n = N;
    b.tokens = dspy_bt(be, d + L->tokens, N, DSPY_DTYPE_I32);
    b.pos = dspy_bt(be, d + L->pos, N, DSPY_DTYPE_I32);
    b.slots = dspy_bt(be, d + L->slots, N, DSPY_DTYPE_I32);
    b.attn.segs = dspy_bt(be, d + L->segs, 4 * (int64_t)nseg, DSPY_DTYPE_I32);
    b.attn.tables = dspy_bt(be, d + L->tables, n_table, DSPY_DTYPE_I32);
    b.attn.nseg = nseg;
    b.attn.N = N;
    b.attn.block_size = e->kv.block_size;
    b.attn.max_len = e->max_len;
    b.attn.decode = decode;
    b.out_rows = dspy_bt(be, d + L->out_rows, M, DSPY_DTYPE_I32);
    b.n_out = M;
    DSPY_TRY(dspy_forward(e->m, be, &e->kv, &e->buf, &b));
    const int32_t V = e->cfg->vocab_size;
    dspy_tensor logits = dspy_tensor_slice(e->buf.logits, 0, (int64_t)M * V);
    dspy_tensor params = dspy_bt(be, d + L->params, (int64_t)M * DSPY_SAMPLE_PARAM_WORDS, DSPY_DTYPE_I32);
    dspy_tensor toks = dspy_bt(be, e->res_d, M, DSPY_DTYPE_I32);
    dspy_tensor lps = dspy_bt(be, e->res_d + e->p.max_seqs, M, DSPY_DTYPE_F32);
    return be->ops->sample(be, toks, lps, logits, params, M, V);
}

dspy_status dspy_engine_step(dspy_engine *e, dspy_step_out *out) {
    memset(out, 0, sizeof *out);
    out->events = e->events;
    if (e->n_active == 0) return DSPY_OK;
    int32_t *take = e->take;
    step_plan sp = plan_step(e, take);
    if (sp.N == 0) return DSPY_OK;
    /* A pure decode step on a backend with graphs runs padded to its bucket. */
    int bi = -1;
    int32_t B = 0;
    bool graph = e->use_graphs && sp.decode;
    if (graph) B = bucket_of(e, sp.N, &bi);
    int32_t N = graph ? B : sp.N, nseg = graph ? B : sp.nseg, M = graph ? B : sp.M;
    int32_t n_table = sp.n_table + (graph ? 1 : 0);
    meta_layout L = layout_for(N, nseg, M, n_table);
    int32_t *h = e->meta_h;
    const int32_t bs = e->kv.block_size;
    int32_t rows = 0, seg = 0, m = 0, toff = 0;
    for (int32_t i = 0; i < e->n_active; i++) {
        seq *s = e->active[i];
        int32_t t = take[i];
        if (t == 0) continue;
        if (s->n_cached < s->n_prompt) out->n_prefill_tokens += t;
        else out->n_decode_tokens++;
        memcpy(h + L.tables + toff, s->blocks, sizeof(int32_t) * (size_t)s->n_blocks);
        dspy_attn_seg *sg = (dspy_attn_seg *)(h + L.segs) + seg++;
        *sg = (dspy_attn_seg){rows, t, s->n_cached, toff};
        toff += s->n_blocks;
        for (int32_t j = 0; j < t; j++) {
            int32_t p = s->n_cached + j;
            h[L.tokens + rows + j] = s->tokens[p];
            h[L.pos + rows + j] = p;
            h[L.slots + rows + j] = s->blocks[p / bs] * bs + p % bs;
        }
        s->n_cached += t;
        dspy_step_event *ev = &e->events[out->n_events++];
        *ev = (dspy_step_event){s->id, -1, 0.0f, DSPY_FINISH_NONE, s->n_generated};
        if (s->n_cached == s->n_tokens) {
            dspy_sample_param *pr = (dspy_sample_param *)(h + L.params) + m;
            *pr = (dspy_sample_param){s->temperature, s->top_p, s->top_k, 0, 0.0};
            if (s->temperature > 0) pr->uniform = dspy_rng_uniform(&s->rng); /* one draw per sampled token */
            h[L.out_rows + m] = rows + t - 1;
            e->out_seq[m++] = s;
        }
        rows += t;
    }
    if (graph) { /* padding rows: token 0 at position 0 into the reserved block, greedy */
        h[L.tables + toff] = e->pad_block;
        for (; rows < B; rows++, m++) {
            h[L.tokens + rows] = 0;
            h[L.pos + rows] = 0;
            h[L.slots + rows] = e->pad_block * bs;
            *((dspy_attn_seg *)(h + L.segs) + seg++) = (dspy_attn_seg){rows, 1, 0, toff};
            *((dspy_sample_param *)(h + L.params) + m) = (dspy_sample_param){0.0f, 1.0f, 0, 0, 0.0};
            h[L.out_rows + m] = rows;
        }
    }
    dspy_backend *be = e->be;
    const dspy_ops *o = be->ops;
    DSPY_TRY(o->copy(be, e->meta_d, e->meta_h, L.end * 4, DSPY_COPY_H2D));
    if (graph) {
        if (!e->graphs[bi]) {
            DSPY_TRY(o->graph_begin(be));
            dspy_status st = run_step(e, &L, N, nseg, M, n_table, true);
            void *g = NULL;
            dspy_status st2 = o->graph_end(be, &g);
            if (st || st2) {
                if (g) o->graph_free(be, g);
                return st ? st : st2;
            }
            e->graphs[bi] = g;
        }
        DSPY_TRY(o->graph_launch(be, e->graphs[bi]));
    } else {
        DSPY_TRY(run_step(e, &L, N, nseg, M, n_table, sp.decode));
    }
    DSPY_TRY(o->copy(be, e->res_h, e->res_d, (size_t)e->p.max_seqs * 8, DSPY_COPY_D2H));
    DSPY_TRY(o->sync(be));
    const float *lp = (const float *)(e->res_h + e->p.max_seqs);
    for (int32_t j = 0; j < sp.M; j++) {
        seq *s = e->out_seq[j];
        int32_t tok = e->res_h[j];
        s->tokens[s->n_tokens++] = tok;
        s->n_generated++;
        for (int32_t k = 0; k < out->n_events; k++)
            if (e->events[k].seq_id == s->id) {
                e->events[k].token = tok;
                e->events[k].logprob = lp[j];
                e->events[k].finish = finish_rule(e, s, tok);
                e->events[k].n_generated = s->n_generated;
            }
    }
    for (int32_t k = 0; k < out->n_events; k++)
        if (e->events[k].finish != DSPY_FINISH_NONE) dspy_engine_remove(e, e->events[k].seq_id);
    return DSPY_OK;
}

void dspy_engine_stats_get(const dspy_engine *e, dspy_engine_stats *out) {
    out->active = e->n_active;
    out->max_seqs = e->p.max_seqs;
    out->capacity_tokens = capacity_tokens(e);
    out->free_tokens = e->kv.n_free * e->kv.block_size;
    out->context_length = e->cfg->max_position_embeddings;
    out->device_allocs = e->be->n_allocs;
}

dspy_status dspy_model_forward_logits(const dspy_model *m, const int32_t *ids, size_t n, float *logits) {
    const dspy_model_config *c = dspy_model_config_get(m);
    dspy_status st = check_prompt(c, ids, n);
    if (st) return st;
    if (n > (size_t)c->max_position_embeddings)
        return dspy_fail(DSPY_ERR_CONTEXT, "%zu tokens exceed the model's context of %d tokens", n,
                         c->max_position_embeddings);
    const int32_t N = (int32_t)n, bs = 16, V = c->vocab_size;
    dspy_backend *be = NULL;
    dspy_kv_cache kv;
    dspy_fwd_buf buf;
    memset(&kv, 0, sizeof kv);
    memset(&buf, 0, sizeof buf);
    int32_t *h = NULL, *d = NULL;
    dspy_backend_plan plan = {N, N, 1, V, c->num_attention_heads, c->head_dim, dspy_model_n_threads(m)};
    if ((st = dspy_backend_new(dspy_model_device(m), &plan, &be))) return st;
    if ((st = dspy_kv_cache_init(&kv, be, c, N, bs))) goto done;
    if ((st = dspy_fwd_buf_init(&buf, be, c, N, N))) goto done;
    meta_layout L = layout_for(N, 1, N, kv.n_blocks);
    if ((st = be->ops->alloc_host(be, L.end * 4, (void **)&h))) goto done;
    if ((st = be->ops->alloc(be, L.end * 4, (void **)&d))) goto done;
    dspy_kv_cache_alloc(&kv, kv.n_blocks, h + L.tables);
    for (int32_t i = 0; i < N; i++) {
        h[L.tokens + i] = ids[i];
        h[L.pos + i] = i;
        h[L.slots + i] = h[L.tables + i / bs] * bs + i % bs;
        h[L.out_rows + i] = i;
    }
    *(dspy_attn_seg *)(h + L.segs) = (dspy_attn_seg){0, N, 0, 0};
    if ((st = be->ops->copy(be, d, h, L.end * 4, DSPY_COPY_H2D))) goto done;
    dspy_fwd_batch b = {N,
                        dspy_bt(be, d + L.tokens, N, DSPY_DTYPE_I32),
                        dspy_bt(be, d + L.pos, N, DSPY_DTYPE_I32),
                        dspy_bt(be, d + L.slots, N, DSPY_DTYPE_I32),
                        {dspy_bt(be, d + L.segs, 4, DSPY_DTYPE_I32), dspy_bt(be, d + L.tables, kv.n_blocks, DSPY_DTYPE_I32),
                         1, N, bs, N, false},
                        dspy_bt(be, d + L.out_rows, N, DSPY_DTYPE_I32),
                        N};
    if ((st = dspy_forward(m, be, &kv, &buf, &b))) goto done;
    if ((st = be->ops->copy(be, logits, buf.logits.data, sizeof(float) * (size_t)N * V, DSPY_COPY_D2H))) goto done;
    st = be->ops->sync(be);
done:
    if (be) {
        be->ops->free_host(be, h);
        be->ops->free(be, d);
    }
    dspy_fwd_buf_free(&buf);
    dspy_kv_cache_free(&kv);
    dspy_backend_free(be);
    return st;
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
        const dspy_step_event *ev = &so.events[0];
        if (ev->token < 0) continue;
        ids[count] = ev->token;
        lps[count++] = ev->logprob;
        if (ev->finish != DSPY_FINISH_NONE) {
            if (finish) *finish = ev->finish;
            break;
        }
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
