/* server.c — `dspy serve`: HTTP routes -> OpenAI parsing -> prompt tokens -> scheduler, and
 * the answers back (see dspy/server.h).
 *
 * A request is handled on the worker thread the HTTP layer gives it: check the Host header (DNS
 * rebinding), authorise (constant-time key compare), route, require a JSON body, parse and
 * validate, cap n, render the chat template and tokenize up to the context only, check the KV
 * budget n x (prompt + max_tokens), submit a job, then wait on the job (polling
 * every 100 ms, which is also when a vanished client is noticed and its job cancelled) and
 * answer: one JSON body, or server-sent events as text arrives. A streamed answer starts only
 * when the first result (text, finish or error) is there, so errors found at admission still
 * get a proper status. Shutdown: the accept loop stops, in-flight requests get the grace period,
 * then the scheduler aborts what is left (503 / an error event), connections close.
 * Follows the OpenAI API reference and vLLM/SGLang's server for the choices the reference leaves
 * open (chat prompts are not given a second BOS; completions get add_special_tokens=True;
 * usage counts the eos token in completion_tokens).
 */
#include "dspy/server.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>

#include "dspy/chat_template.h"
#include "dspy/backend.h"
#include "dspy/clock.h"
#include "dspy/engine.h"
#include "dspy/log.h"
#include "dspy/model.h"
#include "dspy/tokenizer.h"
#include "server/http.h"
#include "server/kv_budget.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/scheduler.h"
#include "server/sx_cache.h"

#define POLL_MS 100
#define ABORT_DRAIN_MS 10000
#define LARGE_BODY (256u << 10)

/* One copy of the model with its engine and the scheduler that feeds it. */
typedef struct replica {
    dspy_model *model;
    dspy_engine *eng;
    sched *sched;
    char device[32]; /* "cuda:i" for replica i on a GPU, else the server's device */
    atomic_llong requests; /* jobs submitted to it */
} replica;

struct dspy_server {
    dspy_server_params p;
    char *model_dir, *tokenizer_dir, *host, *api_key, *chat_date, *allowed_hosts, *cors_origin;
    char *cors_headers; /* "Access-Control-Allow-Origin: ...\r\nVary: Origin\r\n" or NULL */
    char *name;
    char **aliases;
    size_t n_aliases;
    dspy_model *model;    /* replica 0's: the config, the device type */
    dspy_tokenizer *tok;
    dspy_chat_template *tmpl;
    char *tmpl_error; /* why there is no chat template */
    replica *rep;         /* n_rep engines behind the one port (dspy_server_params.replicas) */
    int32_t n_rep;
    atomic_uint turn;     /* round-robin start among equally busy replicas */
    sx_cache *sx;         /* compiled structured-output constraints */
    srv_metrics *metrics;
    http_server *http;
    int64_t created;
    int32_t limit; /* tokens a sequence may span: min(context, KV capacity) */
    int64_t budget; /* a request's KV budget: n x (prompt + max_tokens) */
    int32_t eos_id, eot_id;
    /* dspy_server_start: run() on a thread of the server's own */
    pthread_t thread;
    bool started;       /* the thread exists and has not been joined */
    dspy_status run_st; /* run()'s status, read after the join */
    char *run_msg;      /* its message (the thread's dspy_errmsg is gone with the thread) */
};

dspy_server_params dspy_server_params_default(void) {
    dspy_server_params p = {0};
    p.host = "127.0.0.1";
    p.port = 8000;
    p.max_seqs = 8;
    p.kv_memory_percent = 30;
    p.cpu_kernels = DSPY_CPU_KERNELS_FAST;
    p.max_queue = 256;
    p.default_max_tokens = 1024;
    p.max_n = 16;
    p.max_connections = 1024;
    p.max_per_client = 512;
    http_limits l = dspy_http_limits_default();
    p.max_body_bytes = l.max_body;
    p.max_header_bytes = l.max_header;
    p.read_timeout_ms = l.read_timeout_ms;
    p.shutdown_grace_ms = 30000;
    p.structured_max_tokens = 256;
    p.jump_tokens = dspy_engine_params_default().jump_tokens;
    return p;
}

int dspy_server_port(const dspy_server *s) { return dspy_http_server_port(s->http); }
const char *dspy_server_model_name(const dspy_server *s) { return s->name; }
void dspy_server_stop(dspy_server *s) { dspy_http_server_stop(s->http); }

/* ---- answering helpers ------------------------------------------------------------------- */

static void send_error(http_conn *c, const oai_error *e, const char *extra_headers) {
    char *body = dspy_oai_error_json(e);
    static const char fallback[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
    dspy_http_respond(c, e->status, "application/json", body ? body : fallback, body ? strlen(body) : sizeof fallback - 1,
                 extra_headers);
    free(body);
}

static void send_json(http_conn *c, int status, char *body) {
    if (!body) {
        oai_error e = OAI_ERROR_INIT;
        dspy_oai_error_set(&e, 500, NULL, NULL, NULL, "The server ran out of memory.");
        send_error(c, &e, NULL);
        dspy_oai_error_free(&e);
        return;
    }
    dspy_http_respond(c, status, "application/json", body, strlen(body), NULL);
    free(body);
}

/* The HTTP layer's own rejections (400/408/411/413/431/503/505), OpenAI-shaped. */
static void on_http_error(void *user, http_conn *c, int status, const char *message) {
    (void)user;
    oai_error e = OAI_ERROR_INIT;
    const char *code = status == 413 ? "request_too_large" : status == 503 ? "overloaded" : status == 408 ? "timeout" : NULL;
    dspy_oai_error_set(&e, status, NULL, NULL, code, "%s", message);
    send_error(c, &e, status == 503 ? "Retry-After: 1\r\n" : NULL);
    dspy_log(DSPY_LOG_INFO, "HTTP %d: %s", status, message);
    dspy_oai_error_free(&e);
}

static bool model_known(const dspy_server *s, const char *id) {
    for (size_t i = 0; i < s->n_aliases; i++)
        if (strcmp(s->aliases[i], id) == 0) return true;
    return false;
}

/* Equal strings, in time that depends on the lengths only (not on where they differ). */
static bool consttime_eq(const char *a, size_t an, const char *b, size_t bn) {
    unsigned char diff = an != bn;
    size_t n = an > bn ? an : bn;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < an ? (unsigned char)a[i] : 0, y = i < bn ? (unsigned char)b[i] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

static bool authorised(const dspy_server *s, const http_request *req) {
    if (!s->api_key) return true;
    dspy_strv v = dspy_http_header_get(req, "Authorization");
    if (!v.ptr || v.len < 7 || strncasecmp(v.ptr, "Bearer ", 7) != 0) return false;
    dspy_strv key = dspy_strv_strip(dspy_strv_make(v.ptr + 7, v.len - 7));
    return consttime_eq(key.ptr, key.len, s->api_key, strlen(s->api_key));
}

/* The Host header's name without the port ("[::1]:8000" -> "::1", "a.b:80" -> "a.b"). */
static dspy_strv host_name(dspy_strv h) {
    if (h.len && h.ptr[0] == '[') {
        const char *close = memchr(h.ptr, ']', h.len);
        return close ? dspy_strv_make(h.ptr + 1, (size_t)(close - h.ptr - 1)) : h;
    }
    const char *colon = memchr(h.ptr, ':', h.len);
    return colon ? dspy_strv_make(h.ptr, (size_t)(colon - h.ptr)) : h;
}

/* DNS rebinding protection: a page on attacker.example whose name now resolves to 127.0.0.1
 * sends "Host: attacker.example". IP literals and "localhost" cannot be rebound, so they are
 * always fine; other names only when listed in allowed_hosts ("*" = any). No Host (HTTP/1.0)
 * is fine: browsers always send one. */
static bool host_allowed(const dspy_server *s, const http_request *req) {
    dspy_strv h = dspy_http_header_get(req, "Host");
    if (!h.ptr) return true;
    dspy_strv name = host_name(dspy_strv_strip(h));
    char buf[256];
    if (name.len == 0 || name.len >= sizeof buf) return false;
    memcpy(buf, name.ptr, name.len);
    buf[name.len] = '\0';
    unsigned char addr[16];
    if (inet_pton(AF_INET, buf, addr) == 1 || inet_pton(AF_INET6, buf, addr) == 1) return true;
    if (strcasecmp(buf, "localhost") == 0) return true;
    const char *list = s->allowed_hosts;
    while (list && *list) {
        const char *comma = strchr(list, ',');
        size_t n = comma ? (size_t)(comma - list) : strlen(list);
        dspy_strv item = dspy_strv_strip(dspy_strv_make(list, n));
        if (dspy_strv_eqz(item, "*")) return true;
        if (item.len == name.len && strncasecmp(item.ptr, buf, item.len) == 0) return true;
        list = comma ? comma + 1 : list + n;
    }
    return false;
}

/* API bodies are JSON: a browser's cross-site "simple request" (text/plain, a form) is refused
 * before anything runs. */
static bool json_content_type(const http_request *req) {
    dspy_strv ct = dspy_http_header_get(req, "Content-Type");
    if (!ct.ptr) return false;
    ct = dspy_strv_strip(ct);
    const char *semi = memchr(ct.ptr, ';', ct.len);
    dspy_strv mime = dspy_strv_strip(dspy_strv_make(ct.ptr, semi ? (size_t)(semi - ct.ptr) : ct.len));
    return mime.len == 16 && strncasecmp(mime.ptr, "application/json", 16) == 0;
}

/* ---- generation -------------------------------------------------------------------------- */

static void today(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%d %b %Y", &tm);
}

/* The prompt alone does not fit: tokenization stopped at the limit (the work stays bounded
 * whatever the prompt's size), so the message gives a lower bound. */
static void too_long(const dspy_server *s, oai_error *err, const char *what) {
    dspy_oai_error_set(err, 400, NULL, what, "context_length_exceeded",
                  "This model's maximum context length is %d tokens. However, your %s resulted in more than %d tokens. "
                  "Please reduce the length of the %s.", s->limit, what, s->limit, what);
}

/* Prompt tokens for a parsed request. On failure fills err (400) and returns non-OK. */
static dspy_status prompt_tokens(dspy_server *s, const oai_request *r, int32_t **ids, size_t *n, oai_error *err) {
    *ids = NULL;
    *n = 0;
    dspy_status st;
    if (r->kind == OAI_CHAT) {
        if (!s->tmpl) {
            dspy_oai_error_set(err, 400, NULL, "messages", "chat_template_missing",
                          "The model '%s' has no chat template (%s); use /v1/completions instead.", s->name,
                          s->tmpl_error ? s->tmpl_error : "none found");
            return DSPY_ERR_ARG;
        }
        dspy_chat_msg *msgs = calloc(r->n_messages, sizeof *msgs);
        if (!msgs) {
            dspy_oai_error_set(err, 500, NULL, NULL, NULL, "The server ran out of memory.");
            return DSPY_ERR_NOMEM;
        }
        for (size_t i = 0; i < r->n_messages; i++) {
            msgs[i].role = r->messages[i].role;
            msgs[i].content = r->messages[i].content;
        }
        char date[64];
        if (s->chat_date) snprintf(date, sizeof date, "%s", s->chat_date);
        else today(date, sizeof date);
        dspy_str text = DSPY_STR_INIT;
        st = dspy_chat_render(s->tmpl, msgs, r->n_messages, true, date, &text, NULL, NULL);
        free(msgs);
        if (st == DSPY_OK)
            st = dspy_tokenizer_encode_max(s->tok, dspy_str_cstr(&text), text.len, false, true, (size_t)s->limit, ids, n);
        dspy_str_free(&text);
        if (st != DSPY_OK) {
            if (st == DSPY_ERR_CONTEXT) too_long(s, err, "messages");
            else dspy_oai_error_set(err, st == DSPY_ERR_NOMEM ? 500 : 400, NULL, "messages", NULL, "%s", dspy_errmsg());
            return st;
        }
    } else if (r->prompt) {
        st = dspy_tokenizer_encode_max(s->tok, r->prompt, strlen(r->prompt), true, true, (size_t)s->limit, ids, n);
        if (st != DSPY_OK) {
            if (st == DSPY_ERR_CONTEXT) too_long(s, err, "prompt");
            else dspy_oai_error_set(err, st == DSPY_ERR_NOMEM ? 500 : 400, NULL, "prompt", NULL, "%s", dspy_errmsg());
            return st;
        }
    } else {
        *ids = malloc((r->n_prompt_ids ? r->n_prompt_ids : 1) * sizeof **ids);
        if (!*ids) {
            dspy_oai_error_set(err, 500, NULL, NULL, NULL, "The server ran out of memory.");
            return DSPY_ERR_NOMEM;
        }
        memcpy(*ids, r->prompt_ids, r->n_prompt_ids * sizeof **ids);
        *n = r->n_prompt_ids;
    }
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        dspy_oai_error_set(err, 400, NULL, r->kind == OAI_CHAT ? "messages" : "prompt", NULL,
                      "The prompt is empty after tokenization.");
        return DSPY_ERR_ARG;
    }
    if (*n >= (size_t)s->limit) {
        dspy_oai_error_set(err, 400, NULL, r->kind == OAI_CHAT ? "messages" : "prompt", "context_length_exceeded",
                      "This model's maximum context length is %d tokens. However, your %s resulted in %zu tokens. "
                      "Please reduce the length of the %s.", s->limit, r->kind == OAI_CHAT ? "messages" : "prompt", *n,
                      r->kind == OAI_CHAT ? "messages" : "prompt");
        free(*ids);
        *ids = NULL;
        return DSPY_ERR_CONTEXT;
    }
    return DSPY_OK;
}

static uint64_t random_seed(void) {
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)ts.tv_sec;
    }
    return x;
}

/* Appends one SSE event "data: <json>\n\n"; false on OOM. */
static bool sse_event(dspy_str *buf, char *json) {
    if (!json) return false;
    dspy_str_append(buf, "data: ");
    dspy_str_append(buf, json);
    dspy_str_append(buf, "\n\n");
    free(json);
    return dspy_str_ok(buf);
}

typedef struct gen_ctx {
    dspy_server *s;
    const oai_request *r;
    http_conn *c;
    sched_job *job;
    sched_choice_out *outs;
    size_t n_prompt;
    char *id;
    int64_t created;
} gen_ctx;

static oai_usage usage_of(const gen_ctx *g) {
    oai_usage u = {(int64_t)g->n_prompt, 0};
    for (int32_t i = 0; i < g->r->n; i++) u.completion_tokens += g->outs[i].completion_tokens;
    return u;
}

static void fail_with(http_conn *c, int status, const char *message) {
    oai_error e = OAI_ERROR_INIT;
    dspy_oai_error_set(&e, status, NULL, NULL, NULL, "%s", message);
    send_error(c, &e, NULL);
    dspy_oai_error_free(&e);
}

/* Whole answer. Returns the HTTP status sent (0 if the client went away). */
static int answer_whole(gen_ctx *g) {
    int es = 0;
    const char *em = NULL;
    for (;;) {
        int rc = dspy_sched_job_poll(g->job, POLL_MS, g->outs, &es, &em);
        if (rc < 0) {
            fail_with(g->c, es, em);
            return es;
        }
        if (rc == 1) break;
        if (dspy_http_conn_peer_closed(g->c)) {
            dspy_sched_job_cancel(g->job);
            return 0;
        }
    }
    oai_choice *ch = calloc((size_t)g->r->n, sizeof *ch);
    if (!ch) {
        fail_with(g->c, 500, "The server ran out of memory.");
        return 500;
    }
    for (int32_t i = 0; i < g->r->n; i++) {
        ch[i].text = dspy_str_cstr(&g->outs[i].text);
        ch[i].len = g->outs[i].text.len;
        ch[i].finish_reason = g->outs[i].finish;
    }
    send_json(g->c, 200, dspy_oai_completion_json(g->r->kind, g->id, g->created, g->s->name, ch, (size_t)g->r->n, usage_of(g)));
    free(ch);
    return 200;
}

/* Streamed answer. Returns the HTTP status sent (0 if the client went away). */
static int answer_stream(gen_ctx *g) {
    const oai_request *r = g->r;
    const char *model = g->s->name;
    bool begun = false, usage_null = r->include_usage;
    dspy_str buf = DSPY_STR_INIT;
    int es = 0, status = 200;
    const char *em = NULL;
    for (;;) {
        dspy_str_clear(&buf);
        int rc = dspy_sched_job_poll(g->job, POLL_MS, g->outs, &es, &em);
        bool any = rc != 0;
        for (int32_t i = 0; i < r->n && !any; i++) any = g->outs[i].text.len || g->outs[i].finish_new;
        if (rc < 0 && !begun) {
            fail_with(g->c, es, em);
            status = es;
            break;
        }
        if (any && !begun) {
            if (dspy_http_stream_begin(g->c, 200, "text/event-stream; charset=utf-8") != DSPY_OK) {
                dspy_sched_job_cancel(g->job);
                status = 0;
                break;
            }
            begun = true;
            if (r->kind == OAI_CHAT)
                for (int32_t i = 0; i < r->n; i++)
                    sse_event(&buf, dspy_oai_chunk_json(r->kind, g->id, g->created, model, i, true, "", 0, NULL, usage_null));
        }
        for (int32_t i = 0; i < r->n && begun; i++) {
            sched_choice_out *o = &g->outs[i];
            if (o->text.len) {
                sse_event(&buf, dspy_oai_chunk_json(r->kind, g->id, g->created, model, i, false, o->text.ptr, o->text.len,
                                               NULL, usage_null));
                dspy_str_clear(&o->text);
            }
            if (o->finish_new)
                sse_event(&buf, dspy_oai_chunk_json(r->kind, g->id, g->created, model, i, false, "", 0, o->finish, usage_null));
        }
        if (rc == 1) {
            if (r->include_usage)
                sse_event(&buf, dspy_oai_usage_chunk_json(r->kind, g->id, g->created, model, usage_of(g)));
            dspy_str_append(&buf, "data: [DONE]\n\n");
        } else if (rc < 0) {
            oai_error e = OAI_ERROR_INIT;
            dspy_oai_error_set(&e, es, NULL, NULL, NULL, "%s", em);
            sse_event(&buf, dspy_oai_error_json(&e));
            dspy_oai_error_free(&e);
            dspy_str_append(&buf, "data: [DONE]\n\n");
            status = es;
        }
        if (begun && buf.len && dspy_http_stream_write(g->c, buf.ptr, buf.len) != DSPY_OK) {
            dspy_sched_job_cancel(g->job);
            status = 0;
            break;
        }
        if (rc != 0) {
            if (dspy_http_stream_end(g->c) != DSPY_OK) status = 0;
            break;
        }
        if (dspy_http_conn_peer_closed(g->c)) {
            dspy_sched_job_cancel(g->job);
            status = 0;
            break;
        }
    }
    dspy_str_free(&buf);
    return status;
}

static const char *format_name(oai_format f) {
    switch (f) {
    case OAI_FORMAT_JSON_OBJECT: return "json_object";
    case OAI_FORMAT_JSON_SCHEMA: return "json_schema";
    case OAI_FORMAT_LAYOUT: return "layout";
    default: return "none";
    }
}

/* The scheduler job's parameters for a parsed request of n_ids prompt tokens: sampling from the
 * request, max_tokens capped by the room left in the context, the KV budget checked before
 * anything is queued, a structured-output constraint attached (*sx holds its reference), eos and
 * end-of-turn as stop tokens (stop_ids backs jp->sampling.stop_ids). False with *err set (its
 * status is the answer's) when the request cannot run. */
static bool plan_job(dspy_server *s, oai_kind kind, const oai_request *r, size_t n_ids, int32_t stop_ids[2],
                     sched_job_params *jp, sx_entry **sx, oai_error *err) {
    int32_t room = s->limit - (int32_t)n_ids;
    /* A seeded sampled request must give the same text whatever the load: never preempted. */
    *jp = (sched_job_params){.n = r->n, .stop = r->stop, .n_stop = r->n_stop,
                             .preemptible = r->temperature == 0 || !r->has_seed, .whole = !r->stream};
    jp->sampling = dspy_sampling_default();
    jp->sampling.temperature = (float)r->temperature;
    jp->sampling.top_p = (float)r->top_p;
    jp->sampling.top_k = r->top_k;
    jp->sampling.seed = r->has_seed ? r->seed : random_seed();
    int64_t want = r->max_tokens > 0 ? r->max_tokens : s->p.default_max_tokens > 0 ? s->p.default_max_tokens : room;
    jp->sampling.max_tokens = want < room ? (int32_t)want : room;
    /* The budget is what the request would reserve: each of its n sequences holds its prompt
     * and max_tokens of KV cache. */
    int64_t need = (int64_t)r->n * ((int64_t)n_ids + jp->sampling.max_tokens);
    if (need > s->budget) {
        dspy_oai_error_set(err, 400, NULL, r->max_tokens > 0 ? "max_tokens" : "n", "request_too_large",
                      "This request needs up to %lld tokens of KV cache (n=%d x (%zu prompt + %d max_tokens)), over this "
                      "server's per-request budget of %lld tokens. Lower max_tokens or n.", (long long)need, r->n, n_ids,
                      jp->sampling.max_tokens, (long long)s->budget);
        return false;
    }
    if (r->format != OAI_FORMAT_TEXT) {
        bool hit;
        double compile_s;
        dspy_status cs = dspy_sx_cache_get(s->sx, r, sx, &hit, &compile_s);
        if (cs != DSPY_OK) {
            const char *param = r->format == OAI_FORMAT_LAYOUT ? "dspy_layout" : "response_format";
            if (cs == DSPY_ERR_NOMEM) dspy_oai_error_set(err, 500, NULL, NULL, NULL, "The server ran out of memory.");
            else dspy_oai_error_set(err, 400, NULL, param, "unsupported_schema",
                               "This server cannot enforce the requested output format: %s", dspy_errmsg());
            return false;
        }
        if (!hit) dspy_log(DSPY_LOG_INFO, "serve: compiled a %s constraint in %.3f s (%d states)", format_name(r->format),
                           compile_s, dspy_constraint_states(dspy_sx_entry_constraint(*sx)));
        /* the job holds the reference until its sequences left the engine; a resumed
         * sequence would restart the automaton, so constrained jobs are never preempted */
        jp->sampling.constraint = dspy_sx_entry_constraint(*sx);
        jp->hold = *sx;
        jp->hold_release = dspy_sx_entry_release;
        jp->preemptible = false;
    }
    int32_t n_stop_ids = 0;
    /* ignore_eos (vLLM's and SGLang's meaning): neither the model's eos ids nor the end of turn
     * end the answer; max_tokens, stop strings and a constraint's accepting end still do */
    jp->sampling.ignore_eos = r->ignore_eos;
    if (!r->ignore_eos) {
        if (s->eos_id >= 0) stop_ids[n_stop_ids++] = s->eos_id;
        /* chat answers also end at the template's end-of-turn token (Llama 3: <|eot_id|>) */
        if (kind == OAI_CHAT && s->eot_id >= 0 && s->eot_id != s->eos_id) stop_ids[n_stop_ids++] = s->eot_id;
    }
    jp->sampling.stop_ids = stop_ids;
    jp->sampling.n_stop_ids = n_stop_ids;
    return true;
}

/* The request's metrics sample and its INFO log line (status 0: the client went away). */
static void record_request(dspy_server *s, oai_kind kind, const http_request *req, const oai_request *r,
                           const gen_ctx *g, sched_job *job, int status, size_t n_ids, double t0) {
    int64_t comp = 0;
    for (int32_t i = 0; g->outs && i < r->n; i++) comp += g->outs[i].completion_tokens;
    sched_job_times jt = {-1, -1, -1};
    if (job && g->outs) dspy_sched_job_times_get(job, &jt);
    double total = dspy_now_s() - t0;
    /* per output token after the first, over the choices decoded side by side */
    int64_t per_choice = r->n > 0 ? comp / r->n : comp;
    double tpot = jt.first_token >= 0 && jt.done > jt.first_token && per_choice > 1
                      ? (jt.done - jt.first_token) / (double)(per_choice - 1)
                      : -1;
    srv_request_sample smp = {kind == OAI_CHAT ? "chat" : "completions", status, (int64_t)n_ids, comp,
                              jt.first_token, tpot, total, format_name(r->format)};
    dspy_srv_metrics_request(s->metrics, &smp);
    if (dspy_log_enabled(DSPY_LOG_INFO))
        dspy_log(DSPY_LOG_INFO, "%.*s %.*s %d%s (%zu prompt + %lld completion tokens, %.3f s; queue %.3f s, "
                 "first token %.3f s, %.1f ms/token, format %s)", (int)req->method.len, req->method.ptr,
                 (int)req->path.len, req->path.ptr, status, status == 0 ? " client gone" : "", n_ids,
                 (long long)comp, total, jt.admitted, jt.first_token, tpot >= 0 ? tpot * 1e3 : -1.0,
                 format_name(r->format));
}

/* The replica with the fewest jobs queued or running; ties in turn, so that an idle server
 * alternates. */
static replica *least_busy(dspy_server *s) {
    if (s->n_rep == 1) return &s->rep[0];
    unsigned start = atomic_fetch_add(&s->turn, 1u);
    replica *best = NULL;
    int32_t best_load = 0;
    for (int32_t k = 0; k < s->n_rep; k++) {
        replica *r = &s->rep[(start + (unsigned)k) % (unsigned)s->n_rep];
        sched_stats st;
        dspy_sched_stats_get(r->sched, &st);
        if (!best || st.queued + st.running < best_load) best = r, best_load = st.queued + st.running;
    }
    return best;
}

/* The replicas' statistics summed: /metrics shows the server as one. */
static void stats_all(dspy_server *s, sched_stats *out) {
    dspy_sched_stats_get(s->rep[0].sched, out);
    for (int32_t i = 1; i < s->n_rep; i++) {
        sched_stats t;
        dspy_sched_stats_get(s->rep[i].sched, &t);
        out->queued += t.queued, out->running += t.running, out->active_seqs += t.active_seqs;
        out->last_batch += t.last_batch, out->steps += t.steps, out->batch_seqs += t.batch_seqs;
        out->kv_capacity += t.kv_capacity, out->kv_free += t.kv_free, out->cached_tokens += t.cached_tokens;
        out->prompt_tokens += t.prompt_tokens, out->prefix_hit_tokens += t.prefix_hit_tokens;
        out->computed_tokens += t.computed_tokens, out->preemptions += t.preemptions;
        out->idle_ns += t.idle_ns, out->admit_ns += t.admit_ns, out->step_ns += t.step_ns;
        out->events_ns += t.events_ns, out->stats_ns += t.stats_ns;
        dspy_engine_profile *p = &out->engine;
        for (int k = 0; k < DSPY_STEP_KINDS; k++) {
            p->steps[k] += t.engine.steps[k], p->seqs[k] += t.engine.seqs[k], p->rows[k] += t.engine.rows[k];
            p->device_ns[k] += t.engine.device_ns[k], p->launch_ns[k] += t.engine.launch_ns[k];
        }
        p->plan_ns += t.engine.plan_ns, p->post_ns += t.engine.post_ns;
        p->captures += t.engine.captures, p->capture_ns += t.engine.capture_ns;
    }
}

static void abort_all(dspy_server *s, int status, const char *why) {
    for (int32_t i = 0; i < s->n_rep; i++)
        if (s->rep[i].sched) dspy_sched_abort(s->rep[i].sched, status, why);
}

static void handle_generate(dspy_server *s, oai_kind kind, const http_request *req, http_conn *c) {
    oai_error err = OAI_ERROR_INIT;
    oai_request r;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    sched_job *job = NULL;
    sx_entry *sx = NULL;
    gen_ctx g = {0};
    double t0 = dspy_now_s();
    int status = 0;
    if (dspy_oai_request_parse(kind, req->body, req->body_len, dspy_tokenizer_vocab_size(s->tok), &r, &err) != DSPY_OK) {
        send_error(c, &err, NULL);
        status = err.status;
        goto done;
    }
    if (r.model && !model_known(s, r.model)) {
        dspy_oai_error_set(&err, 404, NULL, "model", "model_not_found",
                      "The model `%s` does not exist. This server serves `%s`.", r.model, s->name);
        send_error(c, &err, NULL);
        status = 404;
        goto done;
    }
    if (prompt_tokens(s, &r, &ids, &n_ids, &err) != DSPY_OK) {
        send_error(c, &err, NULL);
        status = err.status;
        goto done;
    }
    if (r.n > s->p.max_n) {
        dspy_oai_error_set(&err, 400, NULL, "n", "invalid_value",
                      "Invalid 'n': this server allows at most %d choices per request (got %d); send several "
                      "requests or ask the operator to raise --max-n.", s->p.max_n, r.n);
        send_error(c, &err, NULL);
        status = 400;
        goto done;
    }
    sched_job_params jp;
    int32_t stop_ids[2];
    if (!plan_job(s, kind, &r, n_ids, stop_ids, &jp, &sx, &err)) {
        send_error(c, &err, NULL);
        status = err.status;
        goto done;
    }
    if (dspy_sched_job_new(ids, n_ids, &jp, &job) != DSPY_OK) {
        fail_with(c, 500, dspy_errmsg());
        status = 500;
        goto done;
    }
    sx = NULL; /* the job's now */
    replica *rep = least_busy(s);
    dspy_status st = dspy_sched_submit(rep->sched, job);
    if (st == DSPY_OK) atomic_fetch_add(&rep->requests, 1);
    if (st != DSPY_OK) {
        dspy_oai_error_set(&err, 503, NULL, NULL, st == DSPY_ERR_STATE ? "overloaded" : NULL, "%s", dspy_errmsg());
        send_error(c, &err, "Retry-After: 1\r\n");
        status = 503;
        goto done;
    }
    g.s = s;
    g.r = &r;
    g.c = c;
    g.job = job;
    g.n_prompt = n_ids;
    g.created = (int64_t)time(NULL);
    g.id = dspy_oai_new_id(kind);
    g.outs = calloc((size_t)r.n, sizeof *g.outs);
    if (!g.id || !g.outs) {
        dspy_sched_job_cancel(job);
        fail_with(c, 500, "The server ran out of memory.");
        status = 500;
        goto done;
    }
    status = r.stream ? answer_stream(&g) : answer_whole(&g);
done:
    record_request(s, kind, req, &r, &g, job, status, n_ids, t0);
    dspy_sx_entry_release(sx);
    if (g.outs)
        for (int32_t i = 0; i < r.n; i++) dspy_str_free(&g.outs[i].text);
    free(g.outs);
    free(g.id);
    dspy_sched_job_release(job);
    free(ids);
    dspy_oai_request_free(&r);
    dspy_oai_error_free(&err);
    /* A large body leaves freed pages in this thread's malloc arena; give them back so a burst
     * of big requests does not keep the RSS up. */
    if (req->body_len >= LARGE_BODY) malloc_trim(0);
}

static void handle(void *user, const http_request *req, http_conn *c) {
    dspy_server *s = user;
    oai_error err = OAI_ERROR_INIT;
    char *model_id = NULL;
    const char *allow = NULL;
    if (s->cors_headers) dspy_http_conn_add_headers(c, s->cors_headers);
    if (!host_allowed(s, req)) {
        dspy_strv h = dspy_http_header_get(req, "Host");
        dspy_oai_error_set(&err, 403, NULL, NULL, "host_not_allowed",
                      "The Host header '%.*s' is not allowed (DNS-rebinding protection); start the server with "
                      "--allowed-hosts NAME to accept it, or use its IP address.", (int)(h.len > 200 ? 200 : h.len), h.ptr);
        send_error(c, &err, NULL);
        goto done;
    }
    if (s->cors_headers && dspy_strv_eqz(req->method, "OPTIONS")) { /* CORS preflight */
        dspy_http_respond(c, 204, NULL, "", 0,
                     "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\nAccess-Control-Allow-Headers: Authorization, "
                     "Content-Type\r\nAccess-Control-Max-Age: 600\r\n");
        goto done;
    }
    if (dspy_strv_starts_with(req->path, "/v1/") && !authorised(s, req)) {
        dspy_oai_error_set(&err, 401, "invalid_request_error", NULL, "invalid_api_key",
                      "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.");
        send_error(c, &err, "WWW-Authenticate: Bearer\r\n");
        goto done;
    }
    oai_route route = dspy_oai_route_match(req->method, req->path, &model_id, &allow, &err);
    switch (route) {
    case OAI_ROUTE_NONE: {
        char hdr[64];
        if (allow) snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
        send_error(c, &err, allow ? hdr : NULL);
        break;
    }
    case OAI_ROUTE_HEALTH: {
        static const char ok[] = "{\"status\":\"ok\"}";
        dspy_http_respond(c, 200, "application/json", ok, sizeof ok - 1, NULL);
        break;
    }
    case OAI_ROUTE_MODELS:
        send_json(c, 200, dspy_oai_model_json(s->name, s->created, true));
        break;
    case OAI_ROUTE_METRICS: {
        sched_stats st;
        stats_all(s, &st);
        dspy_str body = DSPY_STR_INIT;
        bool ok = dspy_srv_metrics_render(s->metrics, &st, &body);
        /* the replicas apart: where the requests went */
        dspy_str_append(&body, "# HELP dspy_replica_requests_total Generation requests given to each replica.\n"
                               "# TYPE dspy_replica_requests_total counter\n");
        for (int32_t i = 0; i < s->n_rep; i++)
            dspy_str_appendf(&body, "dspy_replica_requests_total{replica=\"%d\",device=\"%s\"} %lld\n", i,
                             s->rep[i].device, (long long)atomic_load(&s->rep[i].requests));
        if (ok && dspy_str_ok(&body))
            dspy_http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", body.ptr, body.len, NULL);
        else
            fail_with(c, 500, "The server ran out of memory.");
        dspy_str_free(&body);
        break;
    }
    case OAI_ROUTE_MODEL:
        if (model_known(s, model_id)) {
            send_json(c, 200, dspy_oai_model_json(s->name, s->created, false));
        } else {
            dspy_oai_error_set(&err, 404, NULL, "model", "model_not_found", "The model `%s` does not exist.", model_id);
            send_error(c, &err, NULL);
        }
        break;
    case OAI_ROUTE_CHAT:
    case OAI_ROUTE_COMPLETIONS:
        if (!json_content_type(req)) {
            dspy_strv ct = dspy_http_header_get(req, "Content-Type");
            dspy_oai_error_set(&err, 415, NULL, NULL, "unsupported_media_type",
                          "The request body must be JSON sent with 'Content-Type: application/json' (got %s%.*s%s).",
                          ct.ptr ? "'" : "none", (int)(ct.ptr ? (ct.len > 100 ? 100 : ct.len) : 0), ct.ptr ? ct.ptr : "",
                          ct.ptr ? "'" : "");
            send_error(c, &err, NULL);
            break;
        }
        handle_generate(s, route == OAI_ROUTE_CHAT ? OAI_CHAT : OAI_COMPLETION, req, c);
        break;
    }
done:
    free(model_id);
    dspy_oai_error_free(&err);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static bool add_alias(dspy_server *s, const char *prefix, const char *name) {
    if (!name || !*name) return true;
    dspy_str a = DSPY_STR_INIT;
    dspy_str_append(&a, prefix);
    dspy_str_append(&a, name);
    if (!dspy_str_ok(&a)) return false;
    if (model_known(s, a.ptr)) {
        dspy_str_free(&a);
        return true;
    }
    char **na = realloc(s->aliases, (s->n_aliases + 1) * sizeof *na);
    if (!na) {
        dspy_str_free(&a);
        return false;
    }
    s->aliases = na;
    s->aliases[s->n_aliases++] = dspy_str_take(&a);
    return s->aliases[s->n_aliases - 1] != NULL;
}

/* The served name and the names a request may use for it. */
static dspy_status make_names(dspy_server *s) {
    s->name = strdup(s->p.served_model_name ? s->p.served_model_name : s->model_dir);
    if (!s->name) return dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
    char *trimmed = strdup(s->model_dir);
    char *abs = realpath(s->model_dir, NULL);
    bool ok = trimmed != NULL;
    if (ok) {
        size_t n = strlen(trimmed);
        while (n > 1 && trimmed[n - 1] == '/') trimmed[--n] = '\0';
        const char *slash = strrchr(trimmed, '/');
        const char *base = slash && slash[1] ? slash + 1 : trimmed;
        /* DSPy sends "local:<dir>" (LocalProvider strips "openai/"); a client that passes the LM
         * string through sends "openai/local:<dir>" */
        ok = add_alias(s, "", s->name) && add_alias(s, "local:", s->name) && add_alias(s, "openai/local:", s->name) &&
             add_alias(s, "", s->model_dir) && add_alias(s, "local:", s->model_dir) &&
             add_alias(s, "openai/local:", s->model_dir) && add_alias(s, "", trimmed) &&
             add_alias(s, "local:", trimmed) && add_alias(s, "openai/local:", trimmed) && add_alias(s, "", abs) &&
             add_alias(s, "local:", abs) && add_alias(s, "openai/local:", abs) && add_alias(s, "", base);
    }
    free(trimmed);
    free(abs);
    return ok ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
}

static char *dup_or_null(const char *z) { return z ? strdup(z) : NULL; }

/* 127.0.0.0/8, ::1 and "localhost": an address only this machine reaches. */
static bool host_is_loopback(const char *host) {
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return strcasecmp(host, "localhost") == 0;
}

/* --kv-tokens 0: the pool from the memory the device has free now that the weights are loaded
 * (server/kv_budget.h); the CPU keeps the engine's small default. */
static int32_t kv_tokens_default(const dspy_model *m, const dspy_server_params *p) {
    const dspy_model_config *c = dspy_model_config_get(m);
    dspy_device d = dspy_model_device(m);
    int32_t pct = p->kv_memory_percent > 0 ? p->kv_memory_percent : 30;
    size_t free_b = 0, total_b = 0;
    bool gpu = d.type == DSPY_DEVICE_CUDA;
    if (gpu && dspy_cuda_mem_info(d.ordinal, &free_b, &total_b) != DSPY_OK) {
        dspy_log(DSPY_LOG_WARN, "serve: %s; the KV cache keeps the small default (set --kv-tokens)", dspy_errmsg());
        free_b = 0;
    }
    int32_t n = dspy_srv_kv_budget(c, gpu, free_b, pct, p->max_seqs, 2);
    if (gpu && free_b)
        dspy_log(DSPY_LOG_INFO, "serve: KV cache of %d tokens (%.1f GB: %d %% of the %.1f GB free, at most %d sequences "
                 "of the whole context)", n, (double)n * (double)dspy_srv_kv_bytes_per_token(c, 2) / 1e9, pct,
                 (double)free_b / 1e9, p->max_seqs);
    return n;
}

/* Where each replica runs: with several on CUDA, replica i on GPU i of those visible (the
 * device must then be "cuda" or "auto", not one chosen GPU); otherwise all on the device given. */
static dspy_status place_replicas(dspy_server *s, const dspy_server_params *p) {
    int32_t n = p->replicas > 1 ? p->replicas : 1;
    const char *dev = p->device && *p->device ? p->device : "cpu";
    dspy_device d;
    dspy_status st = dspy_device_parse(dev, &d);
    if (st) return st;
    if (n > 1 && d.type == DSPY_DEVICE_CUDA) {
        if (strcmp(dev, "cuda") != 0 && strcmp(dev, "auto") != 0)
            return dspy_fail(DSPY_ERR_ARG, "serve: %d replicas take GPUs 0..%d; --device %s names one GPU (use --device "
                             "cuda, and CUDA_VISIBLE_DEVICES to choose which GPUs)", n, n - 1, dev);
        const char *why = NULL;
        int have = dspy_cuda_device_count(&why);
        if (have < n)
            return dspy_fail(DSPY_ERR_ARG, "serve: %d replicas need %d GPUs; %d %s visible%s%s", n, n, have < 0 ? 0 : have,
                             have == 1 ? "is" : "are", why ? ": " : "", why ? why : "");
    }
    if (!(s->rep = calloc((size_t)n, sizeof *s->rep))) return dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
    s->n_rep = n;
    for (int32_t i = 0; i < n; i++) {
        if (n > 1 && d.type == DSPY_DEVICE_CUDA) snprintf(s->rep[i].device, sizeof s->rep[i].device, "cuda:%d", i);
        else snprintf(s->rep[i].device, sizeof s->rep[i].device, "%s", dev);
    }
    return DSPY_OK;
}

dspy_status dspy_server_new(const dspy_server_params *p, dspy_server **out) {
    *out = NULL;
    if (!p || !p->model_dir || !*p->model_dir)
        return dspy_fail(DSPY_ERR_ARG, "serve: a model directory is needed (--model DIR)");
    if (p->max_seqs < 1 || p->max_queue < 1 || p->max_connections < 1 || p->port < 0 || p->port > 65535 ||
        p->max_body_bytes == 0 || p->max_header_bytes < 256 || p->read_timeout_ms < 1 || p->shutdown_grace_ms < 0 ||
        p->kv_tokens < 0 || p->max_batch_tokens < 0 || p->default_max_tokens < 0 || p->max_n < 1 || p->max_request_tokens < 0 ||
        p->max_per_client < 0 || p->structured_max_tokens < 0 || p->kv_memory_percent < 0 || p->kv_memory_percent > 95 ||
        p->replicas < 0 || p->replicas > 64)
        return dspy_fail(DSPY_ERR_ARG, "serve: bad parameters (max_seqs, max_queue and max_connections must be >= 1, "
                                       "port 0..65535, header limit >= 256 bytes, timeouts positive, kv_tokens, max_batch_tokens, default_max_tokens, "
                                       "max_request_tokens and max_per_client >= 0, max_n >= 1, kv_memory_percent 0..95, replicas 0..64)");
    if (p->weights && strcmp(p->weights, "bf16") != 0 && strcmp(p->weights, "fp8") != 0 && strcmp(p->weights, "w8a8") != 0)
        return dspy_fail(DSPY_ERR_ARG, "serve: weights (--weights) must be bf16, fp8 or w8a8 (got '%s')", p->weights);
    if (p->spec_tokens < 0 || p->spec_tokens > DSPY_ENGINE_MAX_SPEC)
        return dspy_fail(DSPY_ERR_ARG, "serve: spec_tokens (--spec-tokens) must be in 0..%d (got %d)",
                         DSPY_ENGINE_MAX_SPEC, p->spec_tokens);
    if (p->jump_tokens < -1 || p->jump_tokens > DSPY_ENGINE_MAX_SPEC)
        return dspy_fail(DSPY_ERR_ARG, "serve: jump_tokens (--jump-tokens) must be in 0..%d, or -1 (got %d)",
                         DSPY_ENGINE_MAX_SPEC, p->jump_tokens);
    dspy_server *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
    dspy_status st = DSPY_OK;
    s->p = *p;
    s->model_dir = strdup(p->model_dir);
    s->tokenizer_dir = strdup(p->tokenizer_dir ? p->tokenizer_dir : p->model_dir);
    s->host = strdup(p->host ? p->host : "127.0.0.1");
    s->api_key = dup_or_null(p->api_key && *p->api_key ? p->api_key : NULL);
    s->chat_date = dup_or_null(p->chat_date);
    s->allowed_hosts = dup_or_null(p->allowed_hosts);
    s->cors_origin = dup_or_null(p->cors_origin && *p->cors_origin ? p->cors_origin : NULL);
    if (s->cors_origin) {
        dspy_str h = DSPY_STR_INIT;
        dspy_str_appendf(&h, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", s->cors_origin);
        s->cors_headers = dspy_str_take(&h);
    }
    if (!s->model_dir || !s->tokenizer_dir || !s->host || (p->api_key && *p->api_key && !s->api_key) ||
        (p->chat_date && !s->chat_date) || (p->allowed_hosts && !s->allowed_hosts) ||
        (s->cors_origin && !s->cors_headers)) {
        st = dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
        goto fail;
    }
    s->p.model_dir = s->model_dir;
    s->p.tokenizer_dir = s->tokenizer_dir;
    s->p.host = s->host;
    s->p.api_key = s->api_key;
    s->p.chat_date = s->chat_date;
    s->p.allowed_hosts = s->allowed_hosts;
    s->p.cors_origin = s->cors_origin;
    if (!s->api_key && !host_is_loopback(s->host))
        dspy_log(DSPY_LOG_WARN, "serve: listening on %s without an API key: anyone who can reach this address can use "
                                "the model; set DSPY_API_KEY or --api-key-file", s->host);
    s->created = (int64_t)time(NULL);
    if ((st = make_names(s)) != DSPY_OK) goto fail;

    if ((st = place_replicas(s, p)) != DSPY_OK) goto fail;
    for (int32_t i = 0; i < s->n_rep; i++) {
        dspy_model_params mp = dspy_model_params_default();
        mp.n_threads = p->n_threads;
        mp.device = s->rep[i].device;
        mp.strict = p->strict;
        mp.cpu_kernels = p->cpu_kernels;
        mp.f8_act = p->weights && strcmp(p->weights, "w8a8") == 0;
        mp.f8_decode = mp.f8_act || (p->weights && strcmp(p->weights, "fp8") == 0);
        if ((st = dspy_model_load(s->model_dir, &mp, &s->rep[i].model)) != DSPY_OK) goto fail;
    }
    s->model = s->rep[0].model;
    if ((st = dspy_tokenizer_load(s->tokenizer_dir, &s->tok)) != DSPY_OK) goto fail;
    const dspy_model_config *cfg = dspy_model_config_get(s->model);
    if (dspy_tokenizer_vocab_size(s->tok) > cfg->vocab_size) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: the tokenizer has %d tokens but the model's vocab_size is %d; use the "
                       "tokenizer the model was trained with (--tokenizer)", s->tokenizer_dir,
                       dspy_tokenizer_vocab_size(s->tok), cfg->vocab_size);
        goto fail;
    }
    if (dspy_chat_template_load(s->tokenizer_dir, &s->tmpl) != DSPY_OK) {
        s->tmpl_error = strdup(dspy_errmsg());
        dspy_log(DSPY_LOG_WARN, "serve: no chat template, /v1/chat/completions is off: %s", dspy_errmsg());
    }
    s->eos_id = dspy_tokenizer_eos_id(s->tok);
    s->eot_id = s->tmpl ? dspy_tokenizer_token_to_id(s->tok, dspy_chat_template_end_of_turn(s->tmpl)) : -1;

    /* every replica's engine; a request must fit the smallest (GPUs may have had less free) */
    int64_t capacity = INT64_MAX, context = 0;
    const char *warm = getenv("DSPY_SERVE_WARMUP");
    for (int32_t i = 0; i < s->n_rep; i++) {
        replica *r = &s->rep[i];
        dspy_engine_params ep = dspy_engine_params_default();
        ep.max_seqs = p->max_seqs;
        ep.max_tokens_total = p->kv_tokens > 0 ? p->kv_tokens : kv_tokens_default(r->model, p);
        ep.spec_tokens = p->spec_tokens;
        ep.jump_tokens = p->jump_tokens;
        ep.max_batch_tokens = p->max_batch_tokens > 0 ? p->max_batch_tokens
                              : dspy_model_device(r->model).type == DSPY_DEVICE_CPU ? 256 : 4096;
        if ((st = dspy_engine_new(r->model, &ep, &r->eng)) != DSPY_OK) goto fail;
        /* graphs and kernels ready before the first request (a GPU engine; DSPY_SERVE_WARMUP=0
         * leaves them to the first steps) */
        if (!(warm && strcmp(warm, "0") == 0) && dspy_model_device(r->model).type != DSPY_DEVICE_CPU) {
            double t_warm = dspy_now_s();
            if ((st = dspy_engine_warmup(r->eng)) != DSPY_OK) goto fail;
            dspy_log(DSPY_LOG_INFO, "serve: %s warmed up in %.0f ms", r->device, (dspy_now_s() - t_warm) * 1e3);
        }
        dspy_engine_stats stats;
        dspy_engine_stats_get(r->eng, &stats);
        if (stats.capacity_tokens < capacity) capacity = stats.capacity_tokens;
        context = stats.context_length;
        if ((st = dspy_sched_new(r->eng, s->tok, p->max_queue, &r->sched)) != DSPY_OK) goto fail;
    }
    s->limit = (int32_t)(context < capacity ? context : capacity);
    s->budget = p->max_request_tokens > 0 ? p->max_request_tokens : capacity;
    if (s->n_rep > 1)
        dspy_log(DSPY_LOG_INFO, "serve: %d replicas (%s .. %s), each request to the least busy", s->n_rep,
                 s->rep[0].device, s->rep[s->n_rep - 1].device);
    sx_defaults sxd = {p->structured_max_tokens, p->structured_max_tokens, 16};
    if ((st = dspy_sx_cache_new(s->tok, cfg->vocab_size, &sxd, &s->sx)) != DSPY_OK) goto fail;
    if (!(s->metrics = dspy_srv_metrics_new())) {
        st = dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
        goto fail;
    }

    http_server_config hc = {0};
    hc.host = s->host;
    hc.port = p->port;
    hc.max_connections = p->max_connections;
    hc.max_per_client = p->max_per_client;
    hc.limits = dspy_http_limits_default();
    hc.limits.max_body = p->max_body_bytes;
    hc.limits.max_header = p->max_header_bytes;
    hc.limits.read_timeout_ms = p->read_timeout_ms;
    hc.handler = handle;
    hc.error = on_http_error;
    hc.user = s;
    if ((st = dspy_http_server_new(&hc, &s->http)) != DSPY_OK) goto fail;
    *out = s;
    return DSPY_OK;
fail:
    dspy_server_free(s);
    return st;
}

dspy_status dspy_server_run(dspy_server *s) {
    dspy_status st = dspy_http_server_run(s->http);
    int n = dspy_http_server_connections(s->http);
    if (n > 0) dspy_log(DSPY_LOG_INFO, "serve: shutting down; waiting up to %d ms for %d connection(s)",
                        s->p.shutdown_grace_ms, n);
    if (!dspy_http_server_drain(s->http, s->p.shutdown_grace_ms)) {
        dspy_log(DSPY_LOG_WARN, "serve: aborting %d unfinished connection(s)", dspy_http_server_connections(s->http));
        abort_all(s, 503, "the server is shutting down");
        if (!dspy_http_server_drain(s->http, ABORT_DRAIN_MS))
            dspy_log(DSPY_LOG_WARN, "serve: %d connection(s) still open", dspy_http_server_connections(s->http));
    }
    return st;
}

/* ---- in-process serving ------------------------------------------------------------------ */

static void *run_thread(void *arg) {
    dspy_server *s = arg;
    s->run_st = dspy_server_run(s);
    if (s->run_st != DSPY_OK) s->run_msg = strdup(dspy_errmsg());
    return NULL;
}

dspy_status dspy_server_start(dspy_server *s) {
    if (s->started) return dspy_fail(DSPY_ERR_STATE, "serve: the server is already running on its thread");
    /* The host program's signals (SIGINT, SIGTERM, SIGPIPE, its own) must reach its threads,
     * not this one or the connection threads it starts (they inherit its mask): block every
     * asynchronous signal here. The server stops only through dspy_server_stop/join. Faults
     * stay unblocked: a blocked SIGSEGV would kill the process without its handler. */
    sigset_t all, old;
    sigfillset(&all);
    static const int k_faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof k_faults / sizeof *k_faults; i++) sigdelset(&all, k_faults[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, run_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return dspy_fail(DSPY_ERR_STATE, "serve: cannot start the server thread: %s", strerror(rc));
    s->started = true;
    return DSPY_OK;
}

dspy_status dspy_server_join(dspy_server *s) {
    if (!s->started) return DSPY_OK;
    dspy_server_stop(s);
    pthread_join(s->thread, NULL);
    s->started = false;
    if (s->run_st == DSPY_OK) return DSPY_OK;
    return dspy_fail(s->run_st, "%s", s->run_msg ? s->run_msg : "serve: the server thread failed");
}

void dspy_server_free(dspy_server *s) {
    if (!s) return;
    dspy_server_join(s); /* a started server: stop it and wait for its thread before freeing */
    if (s->http) {
        dspy_http_server_stop(s->http);
        if (s->rep && !dspy_http_server_drain(s->http, 0)) abort_all(s, 503, "the server is shutting down");
    }
    dspy_http_server_free(s->http); /* waits for connection threads, which wait on jobs */
    for (int32_t i = 0; i < s->n_rep; i++)
        dspy_sched_free(s->rep[i].sched); /* releases the jobs, and with them their constraint references */
    dspy_sx_cache_free(s->sx);
    dspy_srv_metrics_free(s->metrics);
    for (int32_t i = 0; i < s->n_rep; i++) {
        dspy_engine_free(s->rep[i].eng);
        dspy_model_free(s->rep[i].model);
    }
    free(s->rep);
    dspy_chat_template_free(s->tmpl);
    dspy_tokenizer_free(s->tok);
    for (size_t i = 0; i < s->n_aliases; i++) free(s->aliases[i]);
    free(s->aliases);
    free(s->name);
    free(s->tmpl_error);
    free(s->model_dir);
    free(s->tokenizer_dir);
    free(s->host);
    free(s->api_key);
    free(s->chat_date);
    free(s->allowed_hosts);
    free(s->cors_origin);
    free(s->cors_headers);
    free(s->run_msg);
    free(s);
}
