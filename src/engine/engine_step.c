/* engine_step.c — one batched step of the engine on its backend (dspy/engine.h).
 *
 * Each step resumes preempted sequences that now fit, gives every decoding sequence the block
 * its next position needs (preempting others when the pool is dry), packs, in add order, one
 * decode token for every sequence past its prompt and prompt chunks for the others (up to
 * max_batch_tokens; a prompt whose next full block another sequence is filling waits for it:
 * in-flight prefix sharing, engine.c), runs dspy_forward once and the backend's sampler for every sequence whose
 * known tokens are all cached, publishes newly filled blocks in the prefix cache, and retires
 * finished sequences.
 *
 * A step's metadata (tokens, positions, slots, segments, block tables, sampling parameters with
 * one host-drawn uniform per sampled token) is written into one host staging buffer and copied
 * to the device in one transfer; the sampled tokens and logprobs come back in one transfer,
 * after which the step waits for the device once — in dspy_engine_step_end, so a caller may work
 * between enqueueing (dspy_engine_step_begin) and the wait. Nothing is allocated during a step. On a
 * backend with graphs (CUDA), a step in which every sequence decodes is padded to a bucket size
 * (1, 2, 4, ... max_seqs) with rows that write into a reserved block, and the whole step
 * (forward + sampling) is captured once per bucket and replayed: the metadata sits at the same
 * device addresses for every step of a bucket.
 *
 * Constrained sequences (dspy_sampling.constraint): the host writes the allowed set of each
 * one's current state as a bit mask (one row per sampled constrained sequence, copied only in
 * steps that have any), mask_logits bans the rest before the sampler, and the logprob comes back
 * with the shift that makes it the raw distribution's. A graph step with any constrained row
 * masks all its rows (all ones where unconstrained: a shift of exactly 0) with a second capture
 * per bucket; the automaton's state moves on the host after the step.
 *
 * Greedy steps: where every sampled row is greedy and unconstrained (an evaluation's steps) and
 * the backend fuses the sampler into the logits op (kern/ops.h logits_greedy: CUDA's tensor-core
 * kernel, 1-16 rows), the step samples there and never writes its logits; the same tokens, the
 * logprobs up to F32 summation order. A third capture per bucket (made at warm-up with the
 * sampled one). DSPY_ENGINE_GREEDY=0 turns it off.
 *
 * Decode runs (dspy_engine_params.multi_steps = R > 1, plan_run): where every active sequence
 * decodes greedily and unconstrained, begin queues up to R steps (fewer where a sequence's
 * max_tokens comes first, or the free blocks cannot hold every sequence's next positions: they
 * are taken when the run is planned, never by preempting), each step's last op (kern/ops.h
 * decode_advance, inside a graph's capture) writing its tokens and logprobs to a ring slot and
 * feeding them to the next step in place: the host's metadata is that of the first step, and
 * the ring comes back in one copy. The end replays the steps' tokens through the finish rules;
 * a sequence that ended inside the run (eos, a stop id) drops its later tokens, and n_cached
 * counts only the positions fed its own tokens. The caller keeps a run to one step while work
 * waits to be added (dspy_engine_limit_run), so nothing joins later than it would have.
 *
 * Speculative decoding (dspy_engine_params.spec_tokens = K > 0): a greedy unconstrained decoding
 * sequence drafts up to K tokens by prompt lookup (draft below) and feeds its last token and the
 * drafts as one causal chunk at consecutive positions, every row sampled. Row j's token is the
 * sequence's next one if drafts 0 .. j - 1 equal the tokens sampled at rows 0 .. j - 1, so the
 * host accepts drafts while they match and emits the sampled tokens up to the first mismatch (one
 * more than the accepted drafts), applying the finish rule token by token as single steps would;
 * n_cached covers only the rows whose tokens are now the sequence's (the rejected rows' keys and
 * values are overwritten when those positions are fed again, and publishing stops at n_cached).
 * On the CPU a row's logits do not depend on how the rows are batched or chunked, so the tokens
 * are those of one token a step, bit for bit. Drafted positions get blocks only from free ones
 * (fewer drafts, never a preemption); blocks of rejected positions stay with the sequence for its
 * next positions. Such a step runs eagerly, as a mixed step; pure decode steps keep their graphs.
 *
 * Jump-forward (dspy_engine_params.jump_tokens = J > 0; by default 8 on the CPU): a constrained
 * decoding sequence whose automaton state has a jump list (dspy_constraint_jump: the text its
 * format fixes next, as the compiler tokenized it) drafts up to J of those tokens the same way, with
 * jump_rows drafted rows a step over all sequences. Every row is sampled under the mask of the
 * state the drafts before it lead to, and a sampled sequence draws a uniform for every row, then
 * rewinds its generator to the draws its emitted tokens used: the tokens and logprobs are those
 * of one token a step (CPU: bit for bit), at any temperature; where the model writes the drafted
 * tokenization, a step gives it several tokens.
 *
 * Every step adds its kind, rows, device span and host phases to the engine's profile
 * (dspy_engine_profile; /metrics shows it). Two variants for the steps that run op by op:
 * DSPY_ENGINE_SPLIT_MIXED=1 (a mixed step's decoding rows attended by the decode kernel in a
 * call of their own, forward.h attn_one; opt-in, measured no faster) and DSPY_ENGINE_PAD_ROWS
 * (steps of at most PAD_MAX_ROWS rows padded up to the warm-up's sizes, so the GEMMs meet only
 * shapes the warm-up planned and loaded; on by default where steps replay graphs, i.e. CUDA; =0
 * turns it off).
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/clock.h"
#include "engine/engine_impl.h"

static size_t align4(size_t w) { return (w + 3) & ~(size_t)3; }

enum { PAD_MAX_ROWS = 4096 }; /* eager steps up to this many rows are padded (pad_eager) */

static bool is_eos(const dspy_engine *e, int32_t tok) {
    for (int i = 0; i < e->cfg->n_eos; i++)
        if (tok == e->cfg->eos_token_ids[i]) return true;
    return false;
}

/* Sections in a fixed order; segs and params 16-byte aligned for the device's vector loads. */
meta_layout dspy_engine_layout(int32_t N, int32_t nseg, int32_t M, int32_t n_table) {
    meta_layout L;
    L.tokens = 0;
    L.pos = L.tokens + (size_t)N;
    L.slots = L.pos + (size_t)N;
    L.out_rows = L.slots + (size_t)N;
    L.segs = align4(L.out_rows + (size_t)M);
    L.params = align4(L.segs + 4 * (size_t)nseg);
    L.shared = align4(L.params + DSPY_SAMPLE_PARAM_WORDS * (size_t)M);
    L.tables = L.shared + 8; /* before the tables, whose length varies: fixed for a graph's bucket */
    L.end = L.tables + (size_t)n_table;
    return L;
}

enum { SHARED_MIN_TOKENS = 64 }; /* a shared prefix shorter than this is not worth a hint */

/* The shared-prefix hint of a decode step (kern/ops.h dspy_attn_meta.shared): when every fed
 * sequence's block table starts with the same blocks (the prefix cache's, e.g. one system
 * prompt), {sequences, positions} with positions a multiple of 16 below every sequence's new
 * position; {0, 0} otherwise. Segments are in add order, as dspy_engine_step lays them out. */
static void shared_prefix(const dspy_engine *e, const int32_t *take, int32_t out[2]) {
    const seq *first = NULL;
    int32_t nb = 0, n = 0, min_pos = 0;
    for (int32_t i = 0; i < e->n_active; i++) {
        const seq *s = e->active[i];
        if (take[i] == 0) continue;
        if (!first) {
            first = s, nb = s->n_blocks, min_pos = s->n_cached;
        } else {
            int32_t k = 0;
            while (k < nb && k < s->n_blocks && s->blocks[k] == first->blocks[k]) k++;
            nb = k;
            if (s->n_cached < min_pos) min_pos = s->n_cached;
        }
        n++;
    }
    /* positions 0 .. len - 1 lie in the common blocks and before every new key (pos0 = n_cached) */
    int64_t len = (int64_t)nb * e->kv.block_size;
    if (len > min_pos) len = min_pos;
    len &= ~(int64_t)15;
    out[0] = n >= 2 && len >= SHARED_MIN_TOKENS ? n : 0;
    out[1] = out[0] > 0 ? (int32_t)len : 0;
}

/* Prompt lookup: the k tokens that follow the latest earlier occurrence of s's last n tokens
 * (n = 3, else 2, else 1) in its own tokens (prompt and generated), written after its last token
 * (room: k is below its remaining max_new). Copied token by token, so a match closer than k to
 * the end reads the drafts just written: a loop of period p (the latest match p tokens back)
 * drafts k tokens of the loop, not p. Returns k, or 0 when nothing matches. */
static int32_t draft(seq *s, int32_t k) {
    int32_t *t = s->tokens;
    const int32_t L = s->n_tokens;
    for (int32_t n = 3; n >= 1; n--) {
        if (L <= n) continue;
        const int32_t *suf = t + L - n;
        for (int32_t st = L - n - 1; st >= 0; st--) {
            if (t[st] != suf[0] || memcmp(t + st, suf, sizeof(int32_t) * (size_t)n) != 0) continue;
            for (int32_t j = 0; j < k; j++) t[L + j] = t[st + n + j]; /* st + n + j < L + j */
            return k;
        }
    }
    return 0;
}

/* Drafts (n_draft) for every decoding sequence that drafts: a greedy unconstrained one by prompt
 * lookup (spec_tokens), a constrained one from its automaton (jump_tokens; jump_rows over all of
 * them a step), with blocks for the drafted positions taken only from the pool's available ones:
 * fewer drafts when it is dry. */
static void plan_drafts(dspy_engine *e) {
    const int32_t bs = e->kv.block_size;
    int32_t jump_left = e->jump_rows;
    for (int32_t i = 0; i < e->n_active; i++) {
        seq *s = e->active[i];
        e->n_draft[i] = 0;
        if (s->waiting || s->n_tokens - s->n_cached != 1) continue;
        const bool jump = s->cons != NULL;
        int32_t k = jump ? (e->p.jump_tokens < jump_left ? e->p.jump_tokens : jump_left)
                         : s->temperature == 0 ? e->p.spec_tokens : 0;
        /* the fed positions stay below n_prompt + max_new - 1: the last new token is never fed */
        if (k > s->max_new - s->n_generated - 1) k = s->max_new - s->n_generated - 1;
        /* a constrained sequence drafts the jump list of its state (dspy_constraint_jump), if any */
        int32_t n_list = 0;
        const int32_t *list = jump ? dspy_constraint_jump(s->cons, s->cstate, &n_list) : NULL;
        if (k <= 0 || (jump && n_list == 0)) continue;
        /* back-off: after m drafting steps in a row that accepted nothing, skip min(2^(m-1), 8)
         * steps before drafting again (a drafting step runs eagerly and longer; a model whose
         * continuations its own tokens do not predict stops paying for it); the tokens are the
         * same either way */
        if (s->spec_wait > 0) {
            s->spec_wait--;
            continue;
        }
        int32_t d = jump ? (n_list < k ? n_list : k) : draft(s, k);
        if (jump) memcpy(s->tokens + s->n_tokens, list, sizeof(int32_t) * (size_t)d); /* after its last token */
        for (int32_t j = 1; j <= d; j++) {
            const int32_t p = s->n_cached + j, b0 = s->n_blocks;
            if (p / bs < b0) continue;
            if (!dspy_block_pool_alloc(&e->pool, &s->blocks[b0])) {
                d = j - 1;
                break;
            }
            s->n_blocks++;
        }
        e->n_draft[i] = d;
        if (jump) jump_left -= d;
    }
}

/* The step's rows, before they are laid out: how many tokens each sequence feeds. */
typedef struct step_plan {
    int32_t N, nseg, M, n_table;
    int32_t R;   /* sampled rows under a constraint */
    int32_t one; /* sequences feeding one token */
    bool decode; /* every fed sequence feeds one token and is sampled */
    bool greedy; /* every sampled row greedy (temperature 0) and unconstrained, and the backend fuses
                    the sampler into the logits op (dspy_engine.greedy) */
    bool argmax; /* every sampled row greedy and unconstrained (the sampler may run apart) */
} step_plan;

/* How many tokens each sequence feeds: all its uncached tokens, prompt chunks within the budget
 * (a decoding sequence feeds its one new token, and its drafts, outside the budget); nothing for
 * a prefilling sequence that waits on another filling the blocks they share (dspy_engine_defer).
 * Gives decoding sequences their next block first, which may preempt others (they then feed
 * nothing). */
static step_plan plan_step(dspy_engine *e, int32_t *take) {
    step_plan sp = {0, 0, 0, 0, 0, 0, true, e->greedy, true};
    for (int32_t i = 0; i < e->n_active; i++) {
        seq *s = e->active[i];
        if (!s->waiting && s->n_tokens - s->n_cached == 1) dspy_engine_grow(e, s, s->n_cached);
    }
    plan_drafts(e);
    int32_t budget = e->p.max_batch_tokens;
    for (int32_t i = 0; i < e->n_active; i++) {
        seq *s = e->active[i];
        /* a prefilling sequence takes blocks published since, and waits while another fills the
         * next block they share (engine.c dspy_engine_defer) */
        if (!s->waiting && s->n_tokens - s->n_cached > 1 && dspy_engine_defer(e, i)) {
            take[i] = 0;
            continue;
        }
        int32_t t = s->waiting ? 0 : s->n_tokens - s->n_cached;
        const int32_t d = e->n_draft[i];
        if (t > 1) {
            if (t > budget) t = budget;
            budget -= t;
        } else {
            t += d; /* 0 unless decoding */
        }
        take[i] = t;
        if (t == 0) continue;
        sp.N += t;
        sp.nseg++;
        sp.n_table += s->n_blocks;
        if (s->n_cached + t - d == s->n_tokens) {
            sp.M += 1 + d;
            sp.R += s->cons ? 1 + d : 0;
            if (s->cons || s->temperature != 0) sp.greedy = sp.argmax = false;
        } else {
            sp.decode = false;
        }
        if (t != 1) sp.decode = false;
        else sp.one++;
    }
    return sp;
}

/* Decode steps to queue as one run (dspy_engine_params.multi_steps): where every active sequence
 * feeds one token and samples it greedily, unconstrained, up to the run limits and the fewest
 * tokens any of them has left (a run never passes a max_tokens finish), and only as far as free
 * blocks hold every sequence's next positions (taken now, never by preempting). 1 otherwise. */
static int32_t plan_run(dspy_engine *e, const int32_t *take, step_plan *sp) {
    int32_t k = e->run_max < e->run_limit ? e->run_max : e->run_limit;
    if (k < 2 || !sp->decode || !sp->argmax || sp->R > 0 || sp->nseg != e->n_active) return 1;
    const int32_t bs = e->kv.block_size;
    for (int32_t i = 0; i < e->n_active && k > 1; i++) {
        const seq *s = e->active[i];
        if (take[i] != 1 || e->n_draft[i] != 0) return 1;
        if (s->max_new - s->n_generated < k) k = s->max_new - s->n_generated;
    }
    /* positions n_cached + 1 .. n_cached + k - 1 of each (plan_step grew n_cached's) */
    for (int32_t i = 0; i < e->n_active && k > 1; i++) {
        seq *s = e->active[i];
        for (int32_t j = 1; j < k; j++) {
            const int32_t p = s->n_cached + j;
            if (p / bs < s->n_blocks) continue;
            if (!dspy_block_pool_alloc(&e->pool, &s->blocks[s->n_blocks])) {
                k = j;
                break;
            }
            s->n_blocks++;
        }
    }
    if (k < 2) return 1;
    sp->n_table = 0;
    for (int32_t i = 0; i < e->n_active; i++) sp->n_table += e->active[i]->n_blocks;
    return k;
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

/* A decode run's hand-off after a step of N rows, one a segment (kern/ops.h decode_advance): the
 * next step's tokens, positions, segments and slots in place, this step's tokens and logprobs
 * into the next slot of the ring. The count of live rows, the ring slot and the run's length sit
 * after the shared-prefix hint (L->shared + 2 .. + 4). */
static dspy_status advance_step(dspy_engine *e, const meta_layout *L, int32_t N, int32_t n_table) {
    dspy_backend *be = e->be;
    int32_t *d = e->meta_d;
    return be->ops->decode_advance(be, dspy_bt(be, d + L->tokens, N, DSPY_DTYPE_I32),
                                   dspy_bt(be, d + L->pos, N, DSPY_DTYPE_I32), dspy_bt(be, d + L->slots, N, DSPY_DTYPE_I32),
                                   dspy_bt(be, d + L->segs, 4 * (int64_t)N, DSPY_DTYPE_I32),
                                   dspy_bt(be, d + L->tables, n_table, DSPY_DTYPE_I32),
                                   dspy_bt(be, e->res_d, N, DSPY_DTYPE_I32),
                                   dspy_bt(be, e->res_d + e->max_out, N, DSPY_DTYPE_F32),
                                   dspy_bt(be, e->ring_d, (int64_t)e->run_max * 2 * N, DSPY_DTYPE_I32),
                                   dspy_bt(be, d + L->shared + 2, 3, DSPY_DTYPE_I32), N, e->run_max, e->kv.block_size);
}

/* Runs the forward pass and the sampler for the laid-out step (recorded when capturing); with
 * `advance`, readies the next step of a decode run after it (advance_step). */
static dspy_status run_step(dspy_engine *e, const meta_layout *L, int32_t N, int32_t nseg, int32_t M, int32_t n_table,
                            bool decode, int32_t R, int32_t one, int32_t max_len, bool greedy, bool advance) {
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
    b.attn.max_len = max_len;
    b.attn.decode = decode;
    b.attn.shared = dspy_bt(be, d + L->shared, 2, DSPY_DTYPE_I32);
    b.attn_one = one;
    b.out_rows = dspy_bt(be, d + L->out_rows, M, DSPY_DTYPE_I32);
    b.n_out = M;
    dspy_tensor toks = dspy_bt(be, e->res_d, M, DSPY_DTYPE_I32);
    dspy_tensor lps = dspy_bt(be, e->res_d + e->max_out, M, DSPY_DTYPE_F32);
    if (greedy) { /* every row greedy, none constrained: the sampler inside the logits op where it can */
        bool done = false;
        DSPY_TRY(dspy_forward_greedy(e->m, be, &e->kv, &e->buf, &b, toks, lps, &done));
        if (done) return advance ? advance_step(e, L, N, n_table) : DSPY_OK;
    } else {
        DSPY_TRY(dspy_forward(e->m, be, &e->kv, &e->buf, &b));
    }
    const int32_t V = e->cfg->vocab_size;
    dspy_tensor logits = dspy_tensor_slice(e->buf.logits, 0, (int64_t)M * V);
    dspy_tensor params = dspy_bt(be, d + L->params, (int64_t)M * DSPY_SAMPLE_PARAM_WORDS, DSPY_DTYPE_I32);
    if (R > 0) {
        dspy_tensor rows = dspy_bt(be, e->cmask_d, R, DSPY_DTYPE_I32);
        dspy_tensor masks = dspy_bt(be, e->cmask_d + e->max_out, (int64_t)R * e->mask_words, DSPY_DTYPE_I32);
        dspy_tensor shift = dspy_bt(be, e->res_d + 2 * e->max_out, R, DSPY_DTYPE_F32);
        DSPY_TRY(be->ops->mask_logits(be, logits, masks, rows, shift, R, V));
    }
    DSPY_TRY(be->ops->sample(be, toks, lps, logits, params, M, V));
    return advance ? advance_step(e, L, N, n_table) : DSPY_OK;
}

/* Padding rows rows .. B - 1 of a graph step (segments from seg, sampled rows from m, mask rows
 * from r): token 0 at position 0 into the reserved block (table entry toff), greedy, every
 * token allowed where the step masks all rows. */
static void pad_rows(dspy_engine *e, const meta_layout *L, int32_t rows, int32_t seg, int32_t m, int32_t r, int32_t B,
                     int32_t toff, bool mask_all) {
    int32_t *h = e->meta_h;
    const int32_t bs = e->kv.block_size;
    h[L->tables + toff] = e->pad_block;
    for (; rows < B; rows++, m++) {
        h[L->tokens + rows] = 0;
        h[L->pos + rows] = 0;
        h[L->slots + rows] = e->pad_block * bs;
        *((dspy_attn_seg *)(h + L->segs) + seg++) = (dspy_attn_seg){rows, 1, 0, toff};
        *((dspy_sample_param *)(h + L->params) + m) = (dspy_sample_param){0.0f, 1.0f, 0, 0, 0.0};
        h[L->out_rows + m] = rows;
        if (mask_all) {
            e->cmask_h[r] = m;
            memset(e->cmask_h + e->max_out + (size_t)r * e->mask_words, 0xff, sizeof(uint32_t) * (size_t)e->mask_words);
            r++;
        }
    }
}

/* Replays the graph of bucket bi (B rows), capturing it first if this is its first step. */
static dspy_status launch_graph(dspy_engine *e, const meta_layout *L, int32_t B, int bi, int variant, int32_t n_table,
                                int32_t R) {
    const dspy_ops *o = e->be->ops;
    void **slot = &e->graphs[variant][bi];
    if (!*slot) {
        const int64_t t0 = dspy_now_ns();
        DSPY_TRY(o->graph_begin(e->be));
        /* replayed at any context; where runs are on, a decode step's graph (greedy or sampled:
         * a run of greedy steps with the sampler apart uses the latter) ends with the hand-over
         * to the next step of a run */
        dspy_status st = run_step(e, L, B, B, B, n_table, true, R, 0, e->max_len, variant == GRAPH_GREEDY,
                                  variant != GRAPH_MASKED && e->run_max > 1);
        void *g = NULL;
        dspy_status st2 = o->graph_end(e->be, &g);
        if (st || st2) {
            if (g) o->graph_free(e->be, g);
            return st ? st : st2;
        }
        *slot = g;
        e->prof.captures++;
        e->prof.capture_ns += dspy_now_ns() - t0;
    }
    return o->graph_launch(e->be, *slot);
}

/* The warm-up's row counts: 24, 32, 48, 64, 96, ... (two an octave) below cap, then cap. The
 * smallest of them >= n (n itself up to 16 rows: the GEMV kernels, which load once). */
static int32_t ladder_rows(int32_t n, int32_t cap) {
    if (n <= 16) return n;
    for (int32_t oct = 16; oct < cap; oct *= 2)
        for (int32_t k = oct + oct / 2; k <= 2 * oct && k < cap; k += oct / 2)
            if (k >= n) return k;
    return cap;
}

/* One prompt step of n rows (one segment at positions 0 .. n - 1, every table entry the reserved
 * block, so its keys and values only ever land there), waited for (the staging buffer is
 * rewritten next). */
static dspy_status warm_prompt(dspy_engine *e, int32_t n) {
    dspy_backend *be = e->be;
    const int32_t bs = e->kv.block_size;
    int32_t *h = e->meta_h;
    const int32_t nt = (n + bs - 1) / bs;
    meta_layout L = dspy_engine_layout(n, 1, 1, nt);
    for (int32_t b = 0; b < nt; b++) h[L.tables + b] = e->pad_block;
    for (int32_t j = 0; j < n; j++) {
        h[L.tokens + j] = 0;
        h[L.pos + j] = j;
        h[L.slots + j] = e->pad_block * bs + j % bs;
    }
    *(dspy_attn_seg *)(h + L.segs) = (dspy_attn_seg){0, n, 0, 0};
    *(dspy_sample_param *)(h + L.params) = (dspy_sample_param){0.0f, 1.0f, 0, 0, 0.0};
    h[L.shared] = h[L.shared + 1] = 0;
    h[L.out_rows] = n - 1;
    DSPY_TRY(be->ops->copy(be, e->meta_d, h, L.end * 4, DSPY_COPY_H2D));
    DSPY_TRY(run_step(e, &L, n, 1, 1, nt, false, 0, 0, n, false, false));
    return be->ops->sync(be);
}

/* Prompt steps of 24, 32, 48, 64, ... rows up to the largest step (two sizes an octave): a GEMM
 * library picks its kernels by the row count and loads each on its first use, which costs the
 * first request of a new size tens of milliseconds (B2 on the H200: its 1,500-token prompt step
 * took 126 ms, 10 of them compute); then every decode bucket's graph captured and launched on
 * padding rows. Results are read back once and dropped. */
dspy_status dspy_engine_warmup(dspy_engine *e) {
    if (!e->use_graphs || e->n_active > 0 || e->fl.active) return DSPY_OK;
    dspy_backend *be = e->be;
    const dspy_ops *o = be->ops;
    int32_t *h = e->meta_h;
    const int32_t cap = e->rows_cap < e->max_len ? e->rows_cap : e->max_len;
    for (int32_t n = 17;; n++) {
        n = ladder_rows(n, cap);
        DSPY_TRY(warm_prompt(e, n));
        if (n >= cap) break;
    }
    for (int32_t b = 1, bi = 0;; b <<= 1, bi++) {
        const int32_t B = b < e->p.max_seqs ? b : e->p.max_seqs;
        meta_layout L = dspy_engine_layout(B, B, B, 1);
        pad_rows(e, &L, 0, 0, 0, 0, B, 0, false);
        h[L.shared] = h[L.shared + 1] = h[L.shared + 2] = h[L.shared + 3] = h[L.shared + 4] = 0; /* no hint or run */
        DSPY_TRY(o->copy(be, e->meta_d, h, L.end * 4, DSPY_COPY_H2D));
        DSPY_TRY(launch_graph(e, &L, B, bi, GRAPH_SAMPLED, 1, 0));
        if (e->greedy) DSPY_TRY(launch_graph(e, &L, B, bi, GRAPH_GREEDY, 1, 0));
        DSPY_TRY(o->sync(be));
        if (b >= e->p.max_seqs) break;
    }
    DSPY_TRY(o->copy(be, e->res_h, e->res_d, (size_t)e->max_out * 12, DSPY_COPY_D2H));
    return o->sync(be);
}

dspy_status dspy_engine_step(dspy_engine *e, dspy_step_out *out) {
    bool launched = false;
    const dspy_status st = dspy_engine_step_begin(e, &launched);
    const dspy_status st2 = dspy_engine_step_end(e, out); /* nothing begun: no events, no message */
    return st ? st : st2;
}

dspy_status dspy_engine_step_begin(dspy_engine *e, bool *launched) {
    *launched = false;
    if (e->fl.active)
        return dspy_fail(DSPY_ERR_STATE, "engine: a step is already in flight (dspy_engine_step_end it first)");
    if (e->n_active == 0) return DSPY_OK;
    dspy_step_out counts = {0}, *out = &counts; /* the token counts the end reports */
    const int64_t t_plan = dspy_now_ns();
    dspy_engine_resume_waiting(e);
    int32_t *take = e->take;
    step_plan sp = plan_step(e, take);
    if (sp.N == 0) {
        e->prof.plan_ns += dspy_now_ns() - t_plan;
        return DSPY_OK;
    }
    const int32_t run = plan_run(e, take, &sp);
    /* A pure decode step on a backend with graphs runs padded to its bucket. */
    int bi = -1;
    int32_t B = 0;
    bool graph = e->use_graphs && sp.decode;
    if (graph) B = bucket_of(e, sp.N, &bi);
    /* A graph step with constrained rows masks every row (all ones for the others and the
     * padding), so one capture per bucket serves any mix. */
    const bool mask_all = graph && sp.R > 0;
    const int variant = mask_all ? GRAPH_MASKED : graph && sp.greedy ? GRAPH_GREEDY : GRAPH_SAMPLED;
    const int32_t R = mask_all ? B : sp.R;
    int32_t N = graph ? B : sp.N, nseg = graph ? B : sp.nseg, M = graph ? B : sp.M;
    /* An eager step may be padded to the warm-up's row counts (rows in no segment, writing into the
     * reserved block): the GEMMs then meet only shapes whose plans and kernels the warm-up made.
     * Only small steps (B2's measured gain came from steps of 200-1,500 rows): a large prefill
     * chunk would compute up to a third more rows (a 18,928-row last chunk padded to 24,576). */
    if (!graph && e->pad_eager && sp.N <= PAD_MAX_ROWS)
        N = ladder_rows(sp.N, e->rows_cap < e->max_len ? e->rows_cap : e->max_len);
    int32_t n_table = sp.n_table + (graph ? 1 : 0);
    meta_layout L = dspy_engine_layout(N, nseg, M, n_table);
    int32_t *h = e->meta_h;
    const int32_t bs = e->kv.block_size;
    int32_t rows = 0, seg = 0, m = 0, toff = 0, r = 0;
    /* A mixed step lists its one-row segments first (forward.h attn_one); rows stay in add order. */
    const int32_t one = !sp.decode && e->split_mixed && sp.one < sp.nseg ? sp.one : 0;
    if (sp.decode) shared_prefix(e, take, h + L.shared); /* before n_cached moves on */
    else h[L.shared] = h[L.shared + 1] = 0;
    h[L.shared + 2] = sp.nseg; /* a decode run's live rows, ring slot and steps (advance_step) */
    h[L.shared + 3] = 0;
    h[L.shared + 4] = run;
    int32_t seg_one = 0, seg_rest = one, drafted = 0, step_len = 1; /* the longest fed context (attention's bound) */
    for (int32_t i = 0; i < e->n_active; i++) {
        seq *s = e->active[i];
        int32_t t = take[i];
        e->first_out[i] = -1;
        if (t == 0) continue;
        const int32_t d = e->n_draft[i];
        drafted += d;
        if (s->n_cached < s->n_fill) out->n_prefill_tokens += t - d; /* drafts are counted apart */
        else out->n_decode_tokens++;
        memcpy(h + L.tables + toff, s->blocks, sizeof(int32_t) * (size_t)s->n_blocks);
        dspy_attn_seg *sg = (dspy_attn_seg *)(h + L.segs) + (one == 0 ? seg : t == 1 ? seg_one++ : seg_rest++);
        seg++;
        *sg = (dspy_attn_seg){rows, t, s->n_cached, toff};
        if (s->n_cached + t > step_len) step_len = s->n_cached + t;
        toff += s->n_blocks;
        for (int32_t j = 0; j < t; j++) {
            int32_t p = s->n_cached + j;
            h[L.tokens + rows + j] = s->tokens[p];
            h[L.pos + rows + j] = p;
            h[L.slots + rows + j] = s->blocks[p / bs] * bs + p % bs;
        }
        s->n_cached += t - d; /* the drafted rows count once accepted */
        if (s->n_cached == s->n_tokens) {
            e->first_out[i] = m;
            /* the drafted rows, then the last, every one sampled: a constrained sequence's rows
             * each under the state its drafts lead to (jump-forward), a sampled one's each with a
             * draw (rewound after the step to the draws its emitted tokens used) */
            if (d > 0) s->rng_mark = s->rng;
            int32_t cs = s->cstate;
            for (int32_t j = 0; j <= d; j++) {
                dspy_sample_param *pr = (dspy_sample_param *)(h + L.params) + m;
                *pr = (dspy_sample_param){s->temperature, s->top_p, s->top_k, 0, 0.0};
                if (s->temperature > 0) pr->uniform = dspy_rng_uniform(&s->rng); /* one draw per sampled token */
                h[L.out_rows + m] = rows + (j < d ? j : t - 1);
                if (s->cons || mask_all) { /* the logits row and the allowed set of its state */
                    e->cmask_h[r] = m;
                    uint32_t *mk = (uint32_t *)(e->cmask_h + e->max_out + (size_t)r * e->mask_words);
                    if (s->cons) dspy_constraint_mask(s->cons, cs, e->cfg->eos_token_ids, e->cfg->n_eos, mk);
                    else memset(mk, 0xff, sizeof(uint32_t) * (size_t)e->mask_words);
                    if (s->cons && j < d) cs = dspy_constraint_next(s->cons, cs, s->tokens[s->n_tokens + j]);
                    r++;
                }
                e->out_seq[m++] = s;
            }
        }
        rows += t;
    }
    if (graph) pad_rows(e, &L, rows, seg, m, r, B, toff, mask_all);
    for (; rows < N && !graph; rows++) { /* eager padding: no segment, no logits row */
        h[L.tokens + rows] = 0;
        h[L.pos + rows] = 0;
        h[L.slots + rows] = e->pad_block * bs;
    }
    dspy_backend *be = e->be;
    const dspy_ops *o = be->ops;
    const int64_t t_launch = dspy_now_ns();
    DSPY_TRY(o->copy(be, e->meta_d, e->meta_h, L.end * 4, DSPY_COPY_H2D));
    if (R > 0)
        DSPY_TRY(o->copy(be, e->cmask_d, e->cmask_h, ((size_t)e->max_out + (size_t)R * e->mask_words) * 4,
                         DSPY_COPY_H2D));
    /* a run's steps follow one another on the device, each fed the last one's tokens */
    for (int32_t k = 0; k < run; k++) {
        if (graph) DSPY_TRY(launch_graph(e, &L, B, bi, variant, n_table, R));
        else DSPY_TRY(run_step(e, &L, N, nseg, M, n_table, sp.decode, sp.R, one, step_len, sp.greedy, run > 1));
    }
    if (run > 1) DSPY_TRY(o->copy(be, e->ring_h, e->ring_d, (size_t)run * 2 * (size_t)N * 4, DSPY_COPY_D2H));
    else DSPY_TRY(o->copy(be, e->res_h, e->res_d, (size_t)e->max_out * 12, DSPY_COPY_D2H));
    e->fl.graph = graph, e->fl.mask_all = mask_all, e->fl.decode = sp.decode;
    e->fl.nseg = sp.nseg, e->fl.N = sp.N, e->fl.drafted = drafted;
    e->fl.n_prefill = out->n_prefill_tokens, e->fl.n_decode = out->n_decode_tokens * run;
    e->fl.run = run, e->fl.run_rows = N;
    e->fl.n_active = e->n_active;
    e->fl.t_plan = t_plan, e->fl.t_launch = t_launch, e->fl.t_wait = dspy_now_ns();
    e->fl.n_removed = 0;
    e->fl.active = true;
    *launched = true;
    return DSPY_OK;
}

/* A decode run's tokens for s (sampled row m of every step): step by step until its finish rule
 * ends it; its later rows were computed and are dropped. It was fed positions p .. p + run - 1
 * (begin counted p), the later ones its own tokens only up to its last. */
static void end_run(dspy_engine *e, seq *s, int32_t m, dspy_step_out *out) {
    const int32_t n = e->fl.run_rows, run = e->fl.run, p = s->n_cached - 1;
    for (int32_t k = 0; k < run; k++) {
        const int32_t *slot = e->ring_h + (size_t)k * 2 * (size_t)n;
        const int32_t tok = slot[m];
        float logprob;
        memcpy(&logprob, slot + n + m, sizeof logprob);
        s->tokens[s->n_tokens++] = tok;
        s->n_generated++;
        dspy_step_event *ev = &e->events[out->n_events++];
        *ev = (dspy_step_event){s->id, tok, logprob, dspy_engine_finish_rule(e, s, tok), s->n_generated};
        if (ev->finish != DSPY_FINISH_NONE) break;
    }
    s->n_cached = p + run < s->n_tokens ? p + run : s->n_tokens;
}

/* The sequences removed while the step was in flight: retired now, their events dropped. */
static void retire_removed(dspy_engine *e, dspy_step_out *out) {
    for (int32_t k = 0; k < e->fl.n_removed; k++) {
        const int64_t id = e->fl.removed[k];
        dspy_engine_retire_id(e, id); /* false: it finished in the step */
        int32_t w = 0;
        for (int32_t j = 0; j < out->n_events; j++)
            if (e->events[j].seq_id != id) e->events[w++] = e->events[j];
        out->n_events = w;
    }
    e->fl.n_removed = 0;
}

dspy_status dspy_engine_step_done(dspy_engine *e, bool *done) {
    *done = true;
    if (!e->fl.active || !e->be->ops->query) return DSPY_OK;
    return e->be->ops->query(e->be, done);
}

dspy_status dspy_engine_step_end(dspy_engine *e, dspy_step_out *out) {
    memset(out, 0, sizeof *out);
    out->events = e->events;
    if (!e->fl.active) return DSPY_OK;
    e->fl.active = false;
    dspy_backend *be = e->be;
    const int32_t *take = e->take;
    const bool graph = e->fl.graph, mask_all = e->fl.mask_all;
    const int32_t drafted = e->fl.drafted;
    out->n_prefill_tokens = e->fl.n_prefill, out->n_decode_tokens = e->fl.n_decode;
    dspy_status st = be->ops->sync(be);
    if (st) {
        retire_removed(e, out);
        return st;
    }
    const int64_t t_post = dspy_now_ns();
    const dspy_step_kind kind = graph                      ? DSPY_STEP_GRAPH
                                : e->fl.decode             ? DSPY_STEP_DECODE
                                : out->n_decode_tokens > 0 ? DSPY_STEP_MIXED
                                                           : DSPY_STEP_PREFILL;
    const int32_t run = e->fl.run;
    e->prof.steps[kind] += run;
    if (run > 1) e->prof.run_steps += run;
    e->prof.seqs[kind] += (int64_t)e->fl.nseg * run;
    e->prof.rows[kind] += (int64_t)e->fl.N * run;
    e->prof.plan_ns += e->fl.t_launch - e->fl.t_plan;
    e->prof.launch_ns[kind] += e->fl.t_wait - e->fl.t_launch;
    e->prof.device_ns[kind] += t_post - e->fl.t_launch;
    e->prof.spec_steps += drafted > 0;
    e->prof.draft_tokens += drafted;
    int32_t r = 0;
    const float *lp = (const float *)(e->res_h + e->max_out);
    const float *shift = (const float *)(e->res_h + 2 * e->max_out);
    /* One event per fed sequence in add order (token -1 for a prompt chunk), more for accepted
     * drafts. A sequence's sampled rows are consecutive from first_out (rows in add order). */
    const int32_t n_in = e->fl.n_active; /* the sequences in the step; later ones were added meanwhile */
    for (int32_t i = 0; i < n_in && run > 1; i++)
        if (take[i] > 0) end_run(e, e->active[i], e->first_out[i], out);
    for (int32_t i = 0; i < n_in && run == 1; i++) {
        if (take[i] == 0) continue;
        seq *s = e->active[i];
        dspy_step_event *ev = &e->events[out->n_events++];
        *ev = (dspy_step_event){s->id, -1, 0.0f, DSPY_FINISH_NONE, s->n_generated};
        const int32_t j0 = e->first_out[i], d = e->n_draft[i];
        if (j0 < 0) continue; /* a prompt chunk */
        int32_t acc = 0;
        const int32_t r0 = r; /* its masked rows (not in graph steps, which mask every row by index) */
        for (int32_t j = j0;; j++) {
            int32_t tok = e->res_h[j];
            float logprob = lp[j];
            if (s->cons) { /* the raw distribution's logprob; the automaton moves on (eos ends it) */
                logprob += shift[mask_all ? j : r0 + (j - j0)];
                if (!is_eos(e, tok)) {
                    int32_t next = dspy_constraint_next(s->cons, s->cstate, tok);
                    if (next < 0) {
                        st = dspy_fail(DSPY_ERR_BACKEND,
                                       "engine: sequence %lld sampled token %d, which its constraint bans in state "
                                       "%d (the backend's mask was not applied)",
                                       (long long)s->id, tok, s->cstate);
                        retire_removed(e, out);
                        return st;
                    }
                    s->cstate = next;
                }
            }
            /* draft j - j0 sits where tok goes; the next row's prediction holds if they agree */
            const bool hit = j - j0 < d && s->tokens[s->n_tokens] == tok;
            s->tokens[s->n_tokens++] = tok;
            s->n_generated++;
            if (j > j0) ev = &e->events[out->n_events++];
            *ev = (dspy_step_event){s->id, tok, logprob, dspy_engine_finish_rule(e, s, tok), s->n_generated};
            if (ev->finish != DSPY_FINISH_NONE || !hit) break;
            s->n_cached++; /* the accepted draft's row is the sequence's now */
            e->prof.accepted_tokens++;
            acc++;
        }
        if (s->cons && !mask_all) r = r0 + 1 + d; /* 1 + d of them, whatever was accepted */
        if (d > 0) {
            s->spec_miss = acc > 0 ? 0 : s->spec_miss + 1;
            s->spec_wait = s->spec_miss == 0 ? 0 : s->spec_miss >= 4 ? 8 : 1 << (s->spec_miss - 1);
            if (s->temperature > 0) { /* the rows past the first mismatch drew uniforms no token used */
                s->rng = s->rng_mark;
                for (int32_t k = 0; k <= acc; k++) (void)dspy_rng_uniform(&s->rng);
            }
        }
    }
    for (int32_t i = 0; i < n_in; i++)
        if (take[i] > 0) dspy_engine_publish(e, e->active[i]);
    for (int32_t k = 0; k < out->n_events; k++)
        if (e->events[k].finish != DSPY_FINISH_NONE) dspy_engine_retire_id(e, e->events[k].seq_id);
    retire_removed(e, out);
    e->prof.post_ns += dspy_now_ns() - t_post;
    return DSPY_OK;
}

dspy_status dspy_model_forward_logits(const dspy_model *m, const int32_t *ids, size_t n, float *logits) {
    const dspy_model_config *c = dspy_model_config_get(m);
    dspy_status st = dspy_engine_check_prompt(c, ids, n);
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
    dspy_backend_plan plan = {N, N, 1, V, c->num_attention_heads, c->head_dim, dspy_model_n_threads(m),
                              dspy_engine_act8_width(m)};
    if ((st = dspy_backend_new(dspy_model_device(m), &plan, &be))) return st;
    if ((st = dspy_fwd_use_model_kernels(m, be))) goto done;
    if ((st = dspy_kv_cache_init(&kv, be, c, N, bs))) goto done;
    if ((st = dspy_fwd_buf_init(&buf, be, c, N, N))) goto done;
    meta_layout L = dspy_engine_layout(N, 1, N, kv.n_blocks);
    if ((st = be->ops->alloc_host(be, L.end * 4, (void **)&h))) goto done;
    if ((st = be->ops->alloc(be, L.end * 4, (void **)&d))) goto done;
    for (int32_t b = 0; b < kv.n_blocks; b++) h[L.tables + b] = b; /* a private cache: blocks in order */
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
                         1, N, bs, N, false, dspy_tensor_none()},
                        dspy_bt(be, d + L.out_rows, N, DSPY_DTYPE_I32),
                        N,
                        0};
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

