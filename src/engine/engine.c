/* engine.c — continuous batching: sequences, steps, sampling, finish rules (dspy/engine.h).
 *
 * Each step packs, in add order, one decode token for every sequence past its prompt and
 * prompt chunks for the others (up to max_batch_tokens), runs dspy_forward once, samples for
 * every sequence whose known tokens are all cached, and retires finished sequences. The KV cache
 * for prompt + max_tokens is reserved when a sequence is added. Not here: the scheduler thread
 * and request queue (the server's), stop strings (the caller's, through the tokenizer).
 */
#include "dspy/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "kern/ops.h"

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

struct dspy_engine {
    const dspy_model *m;
    const dspy_model_config *cfg;
    const dspy_ops *ops;
    dspy_engine_params p;
    dspy_kv_cache kv;
    dspy_fwd_buf buf;
    seq **active;
    int32_t n_active;
    int64_t next_id;
    int32_t rows_cap;
    /* per-step scratch */
    int32_t *tokens, *pos, *slots, *out_rows;
    dspy_attn_seg *segs;
    seq **out_seq;
    float *logits;  /* (max_seqs, V) */
    float *work;    /* (V) */
    int32_t *idx;   /* (V) */
    dspy_step_event *events;
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

void dspy_engine_free(dspy_engine *e) {
    if (!e) return;
    for (int32_t i = 0; i < e->n_active; i++) seq_free(e->active[i]);
    free(e->active);
    dspy_kv_cache_free(&e->kv);
    dspy_fwd_buf_free(&e->buf);
    free(e->tokens);
    free(e->pos);
    free(e->slots);
    free(e->out_rows);
    free(e->segs);
    free(e->out_seq);
    free(e->logits);
    free(e->work);
    free(e->idx);
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
    e->ops = dspy_ops_cpu();
    e->p = p;
    e->next_id = 1;
    e->rows_cap = p.max_batch_tokens + p.max_seqs;
    size_t R = (size_t)e->rows_cap, S = (size_t)p.max_seqs, V = (size_t)c->vocab_size;
    if ((st = dspy_kv_cache_init(&e->kv, c, p.max_tokens_total, p.block_size))) goto fail;
    if ((st = dspy_fwd_buf_init(&e->buf, c, e->rows_cap, p.max_seqs))) goto fail;
    e->active = calloc(S, sizeof *e->active);
    e->tokens = malloc(R * sizeof(int32_t));
    e->pos = malloc(R * sizeof(int32_t));
    e->slots = malloc(R * sizeof(int32_t));
    e->out_rows = malloc(S * sizeof(int32_t));
    e->segs = malloc(S * sizeof *e->segs);
    e->out_seq = malloc(S * sizeof *e->out_seq);
    e->logits = malloc(S * V * sizeof(float));
    e->work = malloc(V * sizeof(float));
    e->idx = malloc(V * sizeof(int32_t));
    e->events = malloc(S * sizeof *e->events);
    if (!e->active || !e->tokens || !e->pos || !e->slots || !e->out_rows || !e->segs || !e->out_seq ||
        !e->logits || !e->work || !e->idx || !e->events) {
        st = dspy_fail(DSPY_ERR_NOMEM, "engine: out of memory");
        goto fail;
    }
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

static int32_t capacity_tokens(const dspy_engine *e) { return e->kv.n_blocks * e->kv.block_size; }

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

dspy_status dspy_engine_step(dspy_engine *e, dspy_step_out *out) {
    memset(out, 0, sizeof *out);
    out->events = e->events;
    int32_t rows = 0, nseg = 0, M = 0, budget = e->p.max_batch_tokens, bs = e->kv.block_size;
    for (int32_t i = 0; i < e->n_active; i++) {
        seq *s = e->active[i];
        bool prefill = s->n_cached < s->n_prompt;
        int32_t t = 1;
        if (prefill) {
            t = s->n_prompt - s->n_cached;
            if (t > budget) t = budget;
            if (t == 0) continue;
            budget -= t;
            out->n_prefill_tokens += t;
        } else {
            out->n_decode_tokens++;
        }
        e->segs[nseg++] = (dspy_attn_seg){rows, t, s->n_cached, s->blocks};
        for (int32_t j = 0; j < t; j++) {
            int32_t p = s->n_cached + j;
            e->tokens[rows + j] = s->tokens[p];
            e->pos[rows + j] = p;
            e->slots[rows + j] = s->blocks[p / bs] * bs + p % bs;
        }
        s->n_cached += t;
        dspy_step_event *ev = &e->events[out->n_events++];
        *ev = (dspy_step_event){s->id, -1, 0.0f, DSPY_FINISH_NONE, s->n_generated};
        if (s->n_cached == s->n_tokens) {
            e->out_rows[M] = rows + t - 1;
            e->out_seq[M++] = s;
        }
        rows += t;
    }
    if (rows == 0) return DSPY_OK;
    dspy_fwd_batch b = {rows, e->tokens, e->pos, e->slots, e->segs, nseg, e->out_rows, M};
    dspy_forward(e->m, e->ops, &e->kv, &e->buf, &b, e->logits);
    const int32_t V = e->cfg->vocab_size;
    for (int32_t j = 0; j < M; j++) {
        seq *s = e->out_seq[j];
        float lp;
        int32_t tok = dspy_sample(e->logits + (size_t)j * V, V, s->temperature, s->top_p, s->top_k, &s->rng, e->work,
                                  e->idx, &lp);
        s->tokens[s->n_tokens++] = tok;
        s->n_generated++;
        for (int32_t k = 0; k < out->n_events; k++)
            if (e->events[k].seq_id == s->id) {
                e->events[k].token = tok;
                e->events[k].logprob = lp;
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
}

dspy_status dspy_model_forward_logits(const dspy_model *m, const int32_t *ids, size_t n, float *logits) {
    const dspy_model_config *c = dspy_model_config_get(m);
    dspy_status st = check_prompt(c, ids, n);
    if (st) return st;
    if (n > (size_t)c->max_position_embeddings)
        return dspy_fail(DSPY_ERR_CONTEXT, "%zu tokens exceed the model's context of %d tokens", n,
                         c->max_position_embeddings);
    int32_t N = (int32_t)n;
    dspy_kv_cache kv;
    dspy_fwd_buf buf;
    memset(&buf, 0, sizeof buf);
    int32_t *pos = malloc(sizeof(int32_t) * n), *slots = malloc(sizeof(int32_t) * n);
    int32_t *rows = malloc(sizeof(int32_t) * n), *blocks = NULL;
    if ((st = dspy_kv_cache_init(&kv, c, N, 16))) goto done;
    blocks = malloc(sizeof(int32_t) * (size_t)kv.n_blocks);
    if (!pos || !slots || !rows || !blocks) {
        st = dspy_fail(DSPY_ERR_NOMEM, "forward: out of memory");
        goto done;
    }
    if ((st = dspy_fwd_buf_init(&buf, c, N, N))) goto done;
    dspy_kv_cache_alloc(&kv, kv.n_blocks, blocks);
    for (int32_t i = 0; i < N; i++) {
        pos[i] = i;
        slots[i] = blocks[i / 16] * 16 + i % 16;
        rows[i] = i;
    }
    dspy_attn_seg seg = {0, N, 0, blocks};
    dspy_fwd_batch b = {N, ids, pos, slots, &seg, 1, rows, N};
    dspy_forward(m, dspy_ops_cpu(), &kv, &buf, &b, logits);
done:
    dspy_fwd_buf_free(&buf);
    dspy_kv_cache_free(&kv);
    free(pos);
    free(slots);
    free(rows);
    free(blocks);
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
