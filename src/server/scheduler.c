/* scheduler.c — the engine thread and its job queue (see scheduler.h).
 *
 * Ownership and locking:
 *   - s->mu guards the queue (a singly linked FIFO of jobs not yet taken by the engine thread),
 *     the quit/abort flags and the counters. Submitters only touch the queue.
 *   - Everything else (the engine, the running list, each choice's decoder and held-back text,
 *     the seq_id -> choice mapping) belongs to the engine thread alone.
 *   - j->mu guards what the submitter reads: released text, finish reasons, the error.
 *   - A job has two references while queued or running (submitter + scheduler); the last
 *     release frees it.
 * The engine thread steps while any sequence runs; it sleeps on s->cv only when there is
 * nothing to run and nothing it could admit.
 * Admission (admit): the job served next is the one with the fewest choices in the engine
 * (ties: the earliest), among running jobs with a waiting choice and the queue's head. When the
 * engine has no slot or KV room for it, a choice of a job holding more of the engine is
 * preempted (pick_victim): removed from the engine and later added again with its prompt plus
 * the tokens it already generated (recomputed), so nothing it produced is lost.
 */
#include "server/scheduler.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dspy/clock.h"
#include "dspy/log.h"

/* A job gives a decoding slot to a waiting one that has one fewer in the engine only after its
 * sequence has run this long (a time slice: short requests get through, long ones still
 * progress); a job with two or more slots more than the waiting one gives way at once. */
#define PREEMPT_SLICE_MS 500

typedef struct sched_choice {
    /* engine thread only */
    int64_t seq_id;      /* 0 until admitted */
    bool running;        /* admitted and not ended */
    bool ended;
    dspy_tokenizer_stream *dec;
    dspy_str held;       /* decoded, not yet released (may start a stop string) */
    int32_t *gen;        /* tokens generated so far, over every stint in the engine */
    int32_t n_gen, cap_gen;
    int32_t base;        /* tokens generated before the current stint (n_generated restarts) */
    int32_t stints;      /* times added to the engine (> 1: it was preempted) */
    int64_t started_ms;  /* when the current stint began */
    /* under j->mu */
    dspy_str out;        /* released, not yet polled */
    const char *finish;
    bool finish_new;
    int32_t n_tokens;
} sched_choice;

struct sched_job {
    atomic_int refs;
    atomic_bool cancelled;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t *prompt;
    size_t n_prompt;
    int32_t *stop_ids;
    dspy_sampling sampling;
    char **stop;
    size_t n_stop;
    int32_t n;
    sched_choice *choices;
    int32_t n_active;   /* engine thread only: choices in the engine now */
    bool preemptible;
    bool whole;         /* wake the submitter only when the job completes or fails */
    uint64_t arrival;   /* submission order */
    void *hold;
    void (*hold_release)(void *hold);
    /* monotonic ns; 0 = not yet. t_submit under s->mu, the rest under mu */
    int64_t t_submit, t_admit, t_first, t_done;
    int32_t n_ended;    /* engine thread only */
    /* under mu */
    bool news;
    bool complete;
    int err_status;     /* 0 = no error */
    char *err_message;
    sched_job *next;    /* queue / running list link */
};

struct sched {
    dspy_engine *eng;
    const dspy_tokenizer *tok;
    int32_t max_queue;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sched_job *q_head, *q_tail;
    int32_t n_queued;
    int32_t n_running;
    bool quit;
    int abort_status; /* non-zero: fail everything with it */
    char *abort_message;
    /* engine thread only */
    sched_job *running;   /* list of jobs taken from the queue */
    uint64_t arrivals;    /* under mu */
    atomic_llong n_preempted; /* written by the engine thread; read by dspy_sched_preemptions */
    sched_stats stats;    /* under mu: the snapshot after the last step (or the engine's creation) */
    int64_t idle_since;   /* under mu: when the engine thread's current wait for work began; 0 when it works */
    int64_t idle_ns, admit_ns, step_ns, events_ns, stats_ns; /* engine thread only: see sched_stats */
    int64_t last_done;    /* engine thread only: when a job last completed (ns; 0 = none yet) */
    atomic_int submits;   /* jobs submitted so far (the idle engine thread watches it: idle_spin) */
    atomic_bool stopping_hint; /* quit or abort asked (ends idle_spin early) */
    /* engine thread only: the last step's results, handed to the jobs while the next step runs
     * (a copy: the engine rewrites its events at every step's end) */
    dspy_step_out prev;
    bool has_prev;
    bool overlap; /* the engine's steps are asynchronous (dspy_engine_stats.async_steps): hand out
                     the last step's results while the next runs; on the CPU right after each step */
    dspy_step_event *prev_events;
    int32_t prev_cap;
};

/* ---- stop strings ---------------------------------------------------------------------- */

bool dspy_sched_stop_scan(const char *text, size_t len, char *const *stops, size_t n_stops, size_t *pos) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        if (sl == 0 || sl > len) continue;
        for (size_t p = 0; p + sl <= len && p < best; p++)
            if (text[p] == stops[i][0] && memcmp(text + p, stops[i], sl) == 0) {
                best = p;
                break;
            }
    }
    if (best != SIZE_MAX) {
        *pos = best;
        return true;
    }
    size_t hold = 0;
    for (size_t i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        size_t k = sl - 1 < len ? sl - 1 : len; /* proper prefixes only */
        for (; k > hold; k--)
            if (memcmp(text + len - k, stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    *pos = len - hold;
    return false;
}

/* ---- jobs ------------------------------------------------------------------------------ */

static void job_free(sched_job *j) {
    for (int32_t i = 0; i < j->n; i++) {
        dspy_tokenizer_stream_free(j->choices[i].dec);
        dspy_str_free(&j->choices[i].held);
        dspy_str_free(&j->choices[i].out);
        free(j->choices[i].gen);
    }
    free(j->choices);
    for (size_t i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->stop);
    free(j->prompt);
    free(j->stop_ids);
    free(j->err_message);
    if (j->hold_release) j->hold_release(j->hold);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void dspy_sched_job_release(sched_job *j) {
    if (j && atomic_fetch_sub(&j->refs, 1) == 1) job_free(j);
}

void dspy_sched_job_cancel(sched_job *j) { atomic_store(&j->cancelled, true); }

dspy_status dspy_sched_job_new(const int32_t *prompt, size_t n_prompt, const sched_job_params *p, sched_job **out) {
    *out = NULL;
    if (!p || p->n < 1 || n_prompt == 0)
        return dspy_fail(DSPY_ERR_ARG, "scheduler: a job needs n >= 1 and a non-empty prompt");
    sched_job *j = calloc(1, sizeof *j);
    if (!j) return dspy_fail(DSPY_ERR_NOMEM, "scheduler: out of memory");
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancelled, false);
    pthread_mutex_init(&j->mu, NULL);
    dspy_cond_init_monotonic(&j->cv);
    j->n = p->n;
    j->sampling = p->sampling;
    j->preemptible = p->preemptible;
    j->whole = p->whole;
    j->prompt = malloc(n_prompt * sizeof *j->prompt);
    j->choices = calloc((size_t)p->n, sizeof *j->choices);
    j->stop = calloc(p->n_stop ? p->n_stop : 1, sizeof *j->stop);
    if (!j->prompt || !j->choices || !j->stop) goto fail;
    memcpy(j->prompt, prompt, n_prompt * sizeof *prompt);
    j->n_prompt = n_prompt;
    for (size_t i = 0; i < p->n_stop; i++) {
        if (!(j->stop[i] = strdup(p->stop[i]))) goto fail;
        j->n_stop = i + 1;
    }
    if (p->sampling.n_stop_ids > 0) {
        j->stop_ids = malloc((size_t)p->sampling.n_stop_ids * sizeof *j->stop_ids);
        if (!j->stop_ids) goto fail;
        memcpy(j->stop_ids, p->sampling.stop_ids, (size_t)p->sampling.n_stop_ids * sizeof *j->stop_ids);
    }
    j->sampling.stop_ids = j->stop_ids;
    j->hold = p->hold;
    j->hold_release = p->hold_release;
    *out = j;
    return DSPY_OK;
fail:
    job_free(j); /* the hold is not set yet: on failure the caller keeps it */
    return dspy_fail(DSPY_ERR_NOMEM, "scheduler: out of memory");
}

int dspy_sched_job_poll(sched_job *j, int timeout_ms, sched_choice_out *out, int *err_status,
                   const char **err_message) {
    struct timespec dl;
    dspy_deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&j->mu);
    while ((j->whole || !j->news) && !j->complete && j->err_status == 0)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &dl) != 0) break;
    for (int32_t i = 0; i < j->n; i++) {
        sched_choice *c = &j->choices[i];
        if (c->out.len) {
            dspy_str_appendn(&out[i].text, c->out.ptr, c->out.len);
            dspy_str_clear(&c->out);
        }
        out[i].finish = c->finish;
        out[i].finish_new = c->finish_new;
        c->finish_new = false;
        out[i].completion_tokens = c->n_tokens;
    }
    j->news = false;
    int rc = j->err_status ? -1 : j->complete ? 1 : 0;
    if (rc < 0) {
        *err_status = j->err_status;
        *err_message = j->err_message;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

/* Engine thread: hands released text and an optional finish to the submitter. */
static void job_publish(sched_job *j, sched_choice *c, const char *text, size_t len, const char *finish,
                        int32_t n_tokens) {
    pthread_mutex_lock(&j->mu);
    if (n_tokens > 0 && !j->t_first) j->t_first = dspy_now_ns();
    if (len) dspy_str_appendn(&c->out, text, len);
    c->n_tokens = n_tokens;
    if (finish) {
        c->finish = finish;
        c->finish_new = true;
    }
    j->news = true;
    if (!j->whole) pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void job_fail(sched_job *j, int status, const char *message) {
    pthread_mutex_lock(&j->mu);
    if (j->err_status == 0 && !j->complete) {
        j->t_done = dspy_now_ns();
        j->err_status = status;
        j->err_message = strdup(message ? message : "request failed");
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* ---- the engine thread ----------------------------------------------------------------- */

/* Removes a job's running sequences from the engine. */
static void drop_sequences(sched *s, sched_job *j) {
    for (int32_t i = 0; i < j->n; i++) {
        sched_choice *c = &j->choices[i];
        if (c->running) {
            dspy_engine_remove(s->eng, c->seq_id);
            c->running = false;
            j->n_active--;
        }
        if (!c->ended) {
            c->ended = true;
            j->n_ended++;
        }
    }
}

/* Takes a job off the running list and drops the scheduler's reference. */
static void retire(sched *s, sched_job *j) {
    for (sched_job **pp = &s->running; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    pthread_mutex_lock(&s->mu);
    s->n_running--;
    pthread_mutex_unlock(&s->mu);
    dspy_sched_job_release(j);
}

/* Fails and retires every running job, and every queued one. */
static void fail_everything(sched *s, int status, const char *message) {
    while (s->running) {
        sched_job *j = s->running;
        drop_sequences(s, j);
        job_fail(j, status, message);
        retire(s, j);
    }
    pthread_mutex_lock(&s->mu);
    sched_job *q = s->q_head;
    s->q_head = s->q_tail = NULL;
    s->n_queued = 0;
    pthread_mutex_unlock(&s->mu);
    while (q) {
        sched_job *next = q->next;
        job_fail(q, status, message);
        dspy_sched_job_release(q);
        q = next;
    }
}

/* Ends choice c: flushes its decoder, releases what is held (up to a stop string), publishes. */
static void end_choice(sched_job *j, sched_choice *c, const char *finish, int32_t n_tokens) {
    dspy_tokenizer_stream_flush(c->dec, &c->held);
    size_t pos;
    if (dspy_sched_stop_scan(c->held.ptr ? c->held.ptr : "", c->held.len, j->stop, j->n_stop, &pos)) finish = "stop";
    else pos = c->held.len;
    job_publish(j, c, c->held.ptr, pos, finish, n_tokens);
    dspy_str_clear(&c->held);
    c->ended = true;
    if (c->running) j->n_active--;
    c->running = false;
    j->n_ended++;
}

/* Handles one engine event for choice c of job j. */
static void on_event(sched *s, sched_job *j, sched_choice *c, const dspy_step_event *ev_in) {
    if (ev_in->token < 0 && ev_in->finish == DSPY_FINISH_NONE) return; /* prompt chunk only */
    dspy_step_event evc = *ev_in;
    evc.n_generated += c->base; /* counts over every stint */
    const dspy_step_event *ev = &evc;
    if (ev->token >= 0) {
        if (c->n_gen == c->cap_gen) {
            int32_t nc = c->cap_gen ? 2 * c->cap_gen : 64;
            int32_t *ng = realloc(c->gen, (size_t)nc * sizeof *ng);
            if (ng) {
                c->gen = ng;
                c->cap_gen = nc;
            }
        }
        if (c->n_gen < c->cap_gen) c->gen[c->n_gen++] = ev->token;
    }
    if (ev->token >= 0 && ev->finish != DSPY_FINISH_STOP) {
        if (dspy_tokenizer_stream_push(c->dec, ev->token, &c->held) != DSPY_OK)
            dspy_log(DSPY_LOG_WARN, "serve: cannot decode token %d: %s", ev->token, dspy_errmsg());
    }
    if (ev->finish != DSPY_FINISH_NONE) {
        end_choice(j, c, dspy_finish_name(ev->finish), ev->n_generated);
        return;
    }
    size_t pos;
    if (dspy_sched_stop_scan(c->held.ptr ? c->held.ptr : "", c->held.len, j->stop, j->n_stop, &pos)) {
        job_publish(j, c, c->held.ptr, pos, "stop", ev->n_generated);
        dspy_str_clear(&c->held);
        dspy_engine_remove(s->eng, c->seq_id);
        c->ended = true;
        c->running = false;
        j->n_active--;
        j->n_ended++;
        return;
    }
    if (pos > 0) {
        job_publish(j, c, c->held.ptr, pos, NULL, ev->n_generated);
        memmove(c->held.ptr, c->held.ptr + pos, c->held.len - pos);
        c->held.len -= pos;
        c->held.ptr[c->held.len] = '\0';
    } else {
        pthread_mutex_lock(&j->mu);
        c->n_tokens = ev->n_generated;
        if (!j->t_first) j->t_first = dspy_now_ns();
        pthread_mutex_unlock(&j->mu);
    }
}

/* Marks a job complete when all its choices ended, and retires it. */
static void maybe_complete(sched *s, sched_job *j) {
    if (j->n_ended < j->n) return;
    pthread_mutex_lock(&j->mu);
    j->complete = true;
    j->t_done = dspy_now_ns();
    s->last_done = j->t_done;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    retire(s, j);
}

/* A choice waiting for the engine: never added, or preempted. */
static bool pending(const sched_choice *c) { return !c->running && !c->ended; }

static sched_choice *next_pending(sched_job *j) {
    for (int32_t i = 0; i < j->n; i++)
        if (pending(&j->choices[i])) return &j->choices[i];
    return NULL;
}

/* Adds choice c of job j to the engine: its prompt, plus what it generated in earlier stints
 * (recomputed: the engine keeps no KV for a removed sequence), for the tokens it has left.
 * The first stint of choice i uses seed + i; a later stint reseeds from (seed, i, tokens so
 * far), so a greedy choice is unchanged by preemption and a sampled one stays deterministic for
 * a given schedule. Returns the engine's status. */
static dspy_status add_choice(sched *s, sched_job *j, sched_choice *c) {
    int32_t idx = (int32_t)(c - j->choices);
    dspy_sampling sp = j->sampling;
    sp.seed = j->sampling.seed + (uint64_t)idx;
    if (!c->dec && dspy_tokenizer_stream_new(s->tok, true, &c->dec) != DSPY_OK) return DSPY_ERR_NOMEM;
    const int32_t *prompt = j->prompt;
    size_t n_prompt = j->n_prompt;
    int32_t *joined = NULL;
    if (c->n_gen > 0) {
        joined = malloc((j->n_prompt + (size_t)c->n_gen) * sizeof *joined);
        if (!joined) return dspy_fail(DSPY_ERR_NOMEM, "scheduler: out of memory resuming a preempted request");
        memcpy(joined, j->prompt, j->n_prompt * sizeof *joined);
        memcpy(joined + j->n_prompt, c->gen, (size_t)c->n_gen * sizeof *joined);
        prompt = joined;
        n_prompt += (size_t)c->n_gen;
        if (sp.max_tokens > 0) sp.max_tokens -= c->n_gen;
        sp.seed ^= 0x9E3779B97F4A7C15ULL * (uint64_t)(c->n_gen + 1);
    }
    int64_t id = 0;
    dspy_status st = dspy_engine_add(s->eng, prompt, n_prompt, &sp, &id);
    free(joined);
    if (st != DSPY_OK) return st;
    c->seq_id = id;
    c->running = true;
    c->base = c->n_gen;
    c->stints++;
    c->started_ms = dspy_now_ms();
    j->n_active++;
    if (!j->t_admit) {
        pthread_mutex_lock(&j->mu);
        j->t_admit = dspy_now_ns();
        pthread_mutex_unlock(&j->mu);
    }
    return DSPY_OK;
}

/* A running choice to preempt in favour of job `want` (which has want->n_active choices in the
 * engine), or NULL. Only a job holding more of the engine than `want` would after one more
 * admission gives way: one with at least two more active choices at once, one with exactly one
 * more after its choice has run for PREEMPT_SLICE_MS. Within it, the choice that has run
 * longest goes. */
static sched_choice *pick_victim(sched *s, const sched_job *want, sched_job **vjob) {
    int64_t now = dspy_now_ms();
    sched_choice *best = NULL;
    for (sched_job *j = s->running; j; j = j->next) {
        if (j == want || !j->preemptible || j->n_active == 0 || atomic_load(&j->cancelled)) continue;
        if (j->n_active < want->n_active + 1) continue;
        for (int32_t i = 0; i < j->n; i++) {
            sched_choice *c = &j->choices[i];
            if (!c->running) continue;
            if (j->n_active == want->n_active + 1 && now - c->started_ms < PREEMPT_SLICE_MS) continue;
            if (!best || (*vjob)->n_active < j->n_active ||
                ((*vjob)->n_active == j->n_active && c->started_ms < best->started_ms)) {
                best = c;
                *vjob = j;
            }
        }
    }
    return best;
}

/* Takes choice c of job j out of the engine; it waits to be added again. */
static void preempt(sched *s, sched_job *j, sched_choice *c) {
    dspy_engine_remove(s->eng, c->seq_id);
    c->running = false;
    j->n_active--;
    atomic_fetch_add(&s->n_preempted, 1);
}

/* The job to serve next: among running jobs with a waiting choice and the queue's head, the
 * one with the fewest choices in the engine, then the earliest. */
static sched_job *pick_job(sched *s, bool *from_queue) {
    sched_job *best = NULL;
    *from_queue = false;
    for (sched_job *j = s->running; j; j = j->next) {
        if (atomic_load(&j->cancelled) || !next_pending(j)) continue;
        if (!best || j->n_active < best->n_active || (j->n_active == best->n_active && j->arrival < best->arrival))
            best = j;
    }
    pthread_mutex_lock(&s->mu);
    sched_job *q = s->q_head;
    pthread_mutex_unlock(&s->mu);
    if (q && (!best || best->n_active > 0 || q->arrival < best->arrival)) {
        best = q;
        *from_queue = true;
    }
    return best;
}

/* Admits waiting work while the engine takes it, preempting where fairness says so; with a step
 * in flight (in_flight), only what fits without preempting (the step's sequences stay). */
static void admit(sched *s, bool in_flight) {
    for (int guard = 0; guard < 4096; guard++) {
        bool from_queue;
        sched_job *j = pick_job(s, &from_queue);
        if (!j) return;
        if (from_queue) {
            pthread_mutex_lock(&s->mu);
            s->q_head = j->next;
            if (!s->q_head) s->q_tail = NULL;
            s->n_queued--;
            s->n_running++;
            pthread_mutex_unlock(&s->mu);
            j->next = s->running;
            s->running = j;
            if (atomic_load(&j->cancelled)) { /* its client left while it waited */
                drop_sequences(s, j);
                maybe_complete(s, j);
                continue;
            }
        }
        sched_choice *c = next_pending(j);
        dspy_status st = add_choice(s, j, c);
        if (st == DSPY_ERR_STATE && in_flight) return; /* after the step */
        while (st == DSPY_ERR_STATE) {
            sched_job *vj = NULL;
            sched_choice *v = pick_victim(s, j, &vj);
            if (!v) break;
            preempt(s, vj, v);
            st = add_choice(s, j, c);
        }
        if (st == DSPY_ERR_STATE) {
            dspy_engine_stats stats;
            dspy_engine_stats_get(s->eng, &stats);
            if (stats.active > 0) return; /* retry after a step frees room */
            st = DSPY_ERR_CONTEXT;       /* it will never fit */
        }
        if (st != DSPY_OK) {
            drop_sequences(s, j);
            job_fail(j, st == DSPY_ERR_NOMEM ? 503 : st == DSPY_ERR_CONTEXT || st == DSPY_ERR_ARG ? 400 : 500,
                     dspy_errmsg());
            retire(s, j);
        }
    }
}

static sched_choice *find_choice(sched *s, int64_t seq_id, sched_job **job) {
    for (sched_job *j = s->running; j; j = j->next)
        for (int32_t i = 0; i < j->n; i++)
            if (j->choices[i].seq_id == seq_id && j->choices[i].running) {
                *job = j;
                return &j->choices[i];
            }
    return NULL;
}

/* The engine's part of a /metrics snapshot: its sequences, KV pool, token counts and profile. */
static void engine_snapshot(sched_stats *t, const dspy_engine *eng, const dspy_engine_stats *es) {
    t->active_seqs = es->active;
    t->kv_capacity = es->capacity_tokens;
    t->kv_free = es->free_tokens;
    t->cached_tokens = es->cached_tokens;
    t->prompt_tokens = es->prompt_tokens;
    t->prefix_hit_tokens = es->prefix_hit_tokens;
    t->computed_tokens = es->computed_tokens;
    dspy_engine_profile_get(eng, &t->engine);
}

/* The /metrics snapshot after a step. */
static void publish_stats(sched *s, const dspy_step_out *out) {
    dspy_engine_stats es;
    dspy_engine_stats_get(s->eng, &es);
    pthread_mutex_lock(&s->mu);
    sched_stats *t = &s->stats;
    engine_snapshot(t, s->eng, &es);
    t->last_batch = out->n_events;
    t->steps++;
    t->batch_seqs += out->n_events;
    t->idle_ns = s->idle_ns;
    t->admit_ns = s->admit_ns;
    t->step_ns = s->step_ns;
    t->events_ns = s->events_ns;
    t->stats_ns = s->stats_ns;
    pthread_mutex_unlock(&s->mu);
}

/* A step's results to their jobs: the /metrics snapshot, each event to its choice, the jobs
 * that ended completed. */
static void hand_out(sched *s, const dspy_step_out *out) {
    const int64_t t_stats = dspy_now_ns();
    publish_stats(s, out);
    const int64_t t_events = dspy_now_ns();
    s->stats_ns += t_events - t_stats;
    for (int32_t e = 0; e < out->n_events; e++) {
        sched_job *j = NULL;
        sched_choice *c = find_choice(s, out->events[e].seq_id, &j);
        if (c) on_event(s, j, c, &out->events[e]);
    }
    for (sched_job *j = s->running, *next; j; j = next) {
        next = j->next;
        maybe_complete(s, j);
    }
    s->events_ns += dspy_now_ns() - t_events;
}

/* The kept results of the last step, if any, handed out. */
static void deliver(sched *s) {
    if (!s->has_prev) return;
    s->has_prev = false;
    hand_out(s, &s->prev);
}

/* Keeps a step's results for deliver (the engine's events copied); where the copy cannot grow,
 * hands them out now. */
static void keep(sched *s, const dspy_step_out *out) {
    if (out->n_events > s->prev_cap) {
        dspy_step_event *ne = realloc(s->prev_events, sizeof *ne * (size_t)out->n_events);
        if (!ne) {
            hand_out(s, out);
            return;
        }
        s->prev_events = ne;
        s->prev_cap = out->n_events;
    }
    if (out->n_events > 0) memcpy(s->prev_events, out->events, sizeof *out->events * (size_t)out->n_events);
    s->prev = *out;
    s->prev.events = s->prev_events;
    s->has_prev = true;
}

/* After a job completes, decode steps stay single this long: a client that sends its next
 * request as soon as it has the answer (an evaluation's threads, an agent) gets it to the engine
 * within ~1-1.5 ms (B2 on the H200's host: the answer written, the next request read, parsed and
 * queued), and a run queued meanwhile would hold it back by up to multi_steps steps (B2 with runs
 * of 8: waves split, 553 -> 561-582 decode steps, 0.504 -> 0.512-0.526 s). */
enum { RUN_QUIET_NS = 3000000 };

/* Whether the kept step's events (handed out after the next step begins) end a sequence. */
static bool kept_finishes(const sched *s) {
    for (int32_t k = 0; s->has_prev && k < s->prev.n_events; k++)
        if (s->prev.events[k].finish != DSPY_FINISH_NONE) return true;
    return false;
}

/* Whether the next step should be a single decode step (dspy_engine_limit_run): a job waits for
 * the engine (queued, or running with a choice not added or preempted), or one completed lately
 * (RUN_QUIET_NS) or is about to (finishing: kept_finishes). */
static bool keep_single(sched *s, bool finishing) {
    if (finishing || (s->last_done && dspy_now_ns() - s->last_done < RUN_QUIET_NS)) return true;
    pthread_mutex_lock(&s->mu);
    bool waiting = s->q_head != NULL;
    pthread_mutex_unlock(&s->mu);
    for (sched_job *j = s->running; j && !waiting; j = j->next) waiting = !atomic_load(&j->cancelled) && next_pending(j);
    return waiting;
}

/* The engine thread, idle under s->mu, watches for a submission for up to IDLE_SPIN_NS before it
 * sleeps on the condition variable: woken from a sleep it took ~0.1 ms to start the next step on
 * the H200's host (B2: each wave's first request arrives ~0.3-1 ms after the last one ended). */
enum { IDLE_SPIN_NS = 2000000 };

static void idle_spin(sched *s) {
    /* only where steps are asynchronous (a device): a CPU step takes far longer than the wake, and
     * the spinning thread would take a core from the work */
    if (!s->overlap || s->last_done == 0 || dspy_now_ns() - s->last_done > IDLE_SPIN_NS) return;
    const int seen = atomic_load(&s->submits);
    pthread_mutex_unlock(&s->mu);
    const int64_t t0 = dspy_now_ns();
    while (atomic_load(&s->submits) == seen && !atomic_load(&s->stopping_hint) && dspy_now_ns() - t0 < IDLE_SPIN_NS)
        sched_yield();
    pthread_mutex_lock(&s->mu);
}

/* While the device runs the step just begun, requests submitted meanwhile are added to the
 * engine (they join the next step): the engine thread watches the queue instead of blocking in
 * the step's end. Why: a B2 wave's other requests arrive during its first request's prompt step
 * (~2 ms), and adding 15 of them after it cost ~0.15-0.2 ms before the next step on the H200. */
static void admit_while_running(sched *s) {
    int seen = -1;
    int64_t admitting = 0;
    const int64_t t0 = dspy_now_ns();
    for (;;) {
        bool done = true;
        if (dspy_engine_step_done(s->eng, &done) != DSPY_OK || done) break; /* the end reports a failure */
        const int now = atomic_load(&s->submits);
        if (now != seen) {
            seen = now;
            const int64_t t = dspy_now_ns();
            admit(s, true);
            admitting += dspy_now_ns() - t;
        } else {
            sched_yield();
        }
    }
    s->admit_ns += admitting;
    s->step_ns += dspy_now_ns() - t0 - admitting; /* waiting for the step, as its end would */
}

static void *engine_main(void *arg) {
    sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        /* drop cancelled jobs still in the queue */
        for (sched_job **pp = &s->q_head, *prev = NULL; *pp;) {
            sched_job *q = *pp;
            if (atomic_load(&q->cancelled)) {
                *pp = q->next;
                if (s->q_tail == q) s->q_tail = prev;
                s->n_queued--;
                dspy_sched_job_release(q);
            } else {
                prev = q;
                pp = &q->next;
            }
        }
        if (!s->quit && !s->abort_status && !s->running && !s->q_head) {
            const int64_t t_idle = dspy_now_ns();
            s->idle_since = t_idle;
            idle_spin(s);
            while (!s->quit && !s->abort_status && !s->running && !s->q_head) pthread_cond_wait(&s->cv, &s->mu);
            s->idle_ns += dspy_now_ns() - t_idle;
            s->idle_since = 0;
            s->stats.idle_ns = s->idle_ns;
        }
        bool quit = s->quit;
        int abort_status = s->abort_status;
        char *abort_message = abort_status ? strdup(s->abort_message ? s->abort_message : "aborted") : NULL;
        pthread_mutex_unlock(&s->mu);
        if (abort_status || quit) {
            deliver(s); /* what the last step finished is the jobs' own, not a failure */
            fail_everything(s, abort_status ? abort_status : 503,
                            abort_message ? abort_message : "the server is shutting down");
            free(abort_message);
            if (quit) break;
            pthread_mutex_lock(&s->mu);
            while (!s->quit && !s->q_head) pthread_cond_wait(&s->cv, &s->mu);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        /* cancelled running jobs */
        for (sched_job *j = s->running, *next; j; j = next) {
            next = j->next;
            if (atomic_load(&j->cancelled)) {
                drop_sequences(s, j);
                maybe_complete(s, j);
            }
        }
        const int64_t t_admit = dspy_now_ns();
        admit(s, false);
        const int64_t t_step = dspy_now_ns();
        s->admit_ns += t_step - t_admit;
        if (!s->running) {
            deliver(s);
            continue;
        }
        /* The step goes to the device first; the last step's tokens go to their jobs while it
         * runs (a stop string found there removes its sequence when this step ends). Work that
         * waits to be added, or may come soon, keeps it to one decode step (keep_single). Where
         * the last step ended sequences, their answers go out first: a step run op by op takes
         * ~1 ms to enqueue (B2 on the H200: a wave's answers held back that long split the
         * next wave). */
        const bool finishing = kept_finishes(s);
        dspy_engine_limit_run(s->eng, keep_single(s, finishing) ? 1 : DSPY_ENGINE_MAX_RUN);
        if (s->overlap && finishing) deliver(s);
        bool launched = false;
        dspy_status st = dspy_engine_step_begin(s->eng, &launched);
        s->step_ns += dspy_now_ns() - t_step;
        if (st == DSPY_OK && s->overlap) deliver(s);
        if (st == DSPY_OK && launched && s->overlap) admit_while_running(s);
        dspy_step_out out;
        const int64_t t_end = dspy_now_ns();
        if (st == DSPY_OK) st = dspy_engine_step_end(s->eng, &out);
        s->step_ns += dspy_now_ns() - t_end;
        if (st != DSPY_OK) {
            dspy_log(DSPY_LOG_ERROR, "serve: engine step failed: %s", dspy_errmsg());
            char *msg = strdup(dspy_errmsg());
            deliver(s); /* the step before this one did complete */
            fail_everything(s, 500, msg ? msg : "engine step failed");
            free(msg);
            continue;
        }
        if (!launched) continue;
        if (s->overlap) keep(s, &out);
        else hand_out(s, &out);
    }
    deliver(s);
    return NULL;
}

/* ---- public ---------------------------------------------------------------------------- */

dspy_status dspy_sched_new(dspy_engine *eng, const dspy_tokenizer *tok, int32_t max_queue, sched **out) {
    *out = NULL;
    if (!eng || !tok || max_queue < 1) return dspy_fail(DSPY_ERR_ARG, "scheduler: an engine, a tokenizer and max_queue >= 1 are needed");
    sched *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "scheduler: out of memory");
    s->eng = eng;
    s->tok = tok;
    s->max_queue = max_queue;
    dspy_engine_stats es;
    dspy_engine_stats_get(eng, &es);
    /* /metrics before the first step: the engine as created (its warm-up's steps and graph
     * captures), so that a difference of two snapshots counts only the steps between them */
    engine_snapshot(&s->stats, eng, &es);
    const char *ov = getenv("DSPY_SCHED_OVERLAP"); /* tests: the CUDA order on the CPU (1), or not (0) */
    s->overlap = ov ? strcmp(ov, "0") != 0 : es.async_steps;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, engine_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return dspy_fail(DSPY_ERR_NOMEM, "scheduler: cannot start the engine thread");
    }
    s->thread_started = true;
    *out = s;
    return DSPY_OK;
}

dspy_status dspy_sched_submit(sched *s, sched_job *j) {
    pthread_mutex_lock(&s->mu);
    if (s->quit || s->abort_status) {
        pthread_mutex_unlock(&s->mu);
        return dspy_fail(DSPY_ERR_CANCELLED, "the server is shutting down");
    }
    if (s->n_queued >= s->max_queue) {
        int32_t q = s->n_queued;
        pthread_mutex_unlock(&s->mu);
        return dspy_fail(DSPY_ERR_STATE, "the server is overloaded: %d requests are already waiting; retry later", q);
    }
    atomic_fetch_add(&j->refs, 1);
    j->t_submit = dspy_now_ns();
    j->next = NULL;
    j->arrival = ++s->arrivals;
    if (s->q_tail) s->q_tail->next = j;
    else s->q_head = j;
    s->q_tail = j;
    s->n_queued++;
    atomic_fetch_add(&s->submits, 1);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return DSPY_OK;
}

void dspy_sched_abort(sched *s, int status, const char *message) {
    pthread_mutex_lock(&s->mu);
    if (!s->abort_status) {
        s->abort_status = status;
        atomic_store(&s->stopping_hint, true);
        s->abort_message = strdup(message ? message : "aborted");
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

long long dspy_sched_preemptions(sched *s) { return atomic_load(&s->n_preempted); }

void dspy_sched_counts(sched *s, int32_t *queued, int32_t *running) {
    pthread_mutex_lock(&s->mu);
    if (queued) *queued = s->n_queued;
    if (running) *running = s->n_running;
    pthread_mutex_unlock(&s->mu);
}

void dspy_sched_stats_get(sched *s, sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    if (s->idle_since) out->idle_ns += dspy_now_ns() - s->idle_since; /* the wait going on now */
    out->queued = s->n_queued;
    out->running = s->n_running;
    pthread_mutex_unlock(&s->mu);
    out->preemptions = atomic_load(&s->n_preempted);
}

void dspy_sched_job_times_get(sched_job *j, sched_job_times *out) {
    pthread_mutex_lock(&j->mu);
    int64_t t0 = j->t_submit;
    out->admitted = j->t_admit && t0 ? (double)(j->t_admit - t0) / 1e9 : -1;
    out->first_token = j->t_first && t0 ? (double)(j->t_first - t0) / 1e9 : -1;
    out->done = j->t_done && t0 ? (double)(j->t_done - t0) / 1e9 : -1;
    pthread_mutex_unlock(&j->mu);
}

void dspy_sched_free(sched *s) {
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->quit = true;
        atomic_store(&s->stopping_hint, true);
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->abort_message);
    free(s->prev_events);
    free(s);
}
