/* lm.c — dspy/lm.h: the LM object and its call pipeline (kwargs, cache, history, usage,
 * callbacks), independent of how a provider answers.
 *
 * Follows DSPy 3.3.1 dspy/clients/lm.py and base_lm.py (spec dspy_behaviour.md §6, CC-21..24):
 * LM.__init__ (kwargs layout, reasoning-model rule), LM.forward (merge, rollout_id, request
 * cache with _fn_identifier and ignored api keys), BaseLM.__call__ (callbacks, history entry),
 * LM.copy, LM.dump_state and BaseLM.load_state. The V26 profile changes only the documented
 * defaults. Not here: the HTTP transport (openai_http.c) and scripted replies (scripted.c).
 */
#include "dspy/lm.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "dspy/hash.h"
#include "dspy/log.h"
#include "lm_internal.h"

#define FN_IDENTIFIER "dspy.clients.lm.litellm_completion"
static const char *const k_ignored_key_args[] = {"api_key", "api_base", "base_url", NULL};

typedef struct provider_ref {
    atomic_int refs;
    const dspy_lm_provider *vt;
    void *impl;
} provider_ref;

struct dspy_lm {
    atomic_int refs;
    pthread_mutex_t lock; /* kwargs, callbacks, usage */
    char *model, *model_type, *finetuning_model;
    dspy_lm_profile profile;
    int32_t num_retries;
    bool cache;
    bool use_developer_role;
    dspy_cache *cache_store; /* retained, or NULL for the default */
    dspy_json *kwargs, *launch_kwargs, *train_kwargs;
    double connect_timeout_s, timeout_s, retry_unit_s;
    int32_t max_history_size;
    dspy_history *history;
    dspy_json *usage;
    dspy_lm_callbacks *cbs;
    size_t ncbs;
    provider_ref *prov;
};

/* ---- small helpers ---------------------------------------------------------------------- */

void dspy_lm_timestamp(char out[40]) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    time_t t = tv.tv_sec;
    localtime_r(&t, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    if (tv.tv_usec) snprintf(out + n, 40 - n, ".%06ld", (long)tv.tv_usec);
}

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static bool starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static dspy_status nomem(const char *model) { return dspy_fail(DSPY_ERR_NOMEM, "[%s] out of memory", model); }

static void provider_release(provider_ref *p) {
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
        if (p->vt->free) p->vt->free(p->impl);
        free(p);
    }
}

/* Wraps a provider impl (taking ownership, also on failure). */
static dspy_status provider_wrap(const dspy_lm_provider *vt, void *impl, provider_ref **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) {
        if (vt->free) vt->free(impl);
        return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    atomic_init(&(*out)->refs, 1);
    (*out)->vt = vt;
    (*out)->impl = impl;
    return DSPY_OK;
}

/* The built-in provider a model string names, or DSPY_ERR_NOTFOUND when it names none. */
static dspy_status provider_for_model(const char *model, provider_ref **out) {
    *out = NULL;
    void *impl = NULL;
    dspy_status st;
    if (starts_with(model, "openai/")) {
        if (!model[7])
            return dspy_fail(DSPY_ERR_ARG, "model \"%s\": the model name after \"openai/\" is missing", model);
        st = dspy_openai_http_new(&impl);
        if (st) return st;
        return provider_wrap(&dspy_openai_http_provider, impl, out);
    }
    if (starts_with(model, "scripted:")) {
        st = dspy_scripted_load(model + 9, &impl);
        if (st) return st;
        return provider_wrap(&dspy_scripted_provider, impl, out);
    }
    return DSPY_ERR_NOTFOUND;
}

/* OpenAI reasoning models (DSPy 3.3.1: re.match(r"^(?:o[1345]|gpt-5)(?:-(?:mini|nano))?",
 * family), gpt-5-chat excepted), on the family = text after the last "/", lowercased. */
static bool is_reasoning_model(const char *model) {
    const char *slash = strrchr(model, '/');
    const char *f = slash ? slash + 1 : model;
    char fam[16] = {0};
    for (size_t i = 0; i < sizeof fam - 1 && f[i]; i++) fam[i] = (char)((f[i] >= 'A' && f[i] <= 'Z') ? f[i] + 32 : f[i]);
    if (fam[0] == 'o' && (fam[1] == '1' || fam[1] == '3' || fam[1] == '4' || fam[1] == '5')) return true;
    if (strncmp(fam, "gpt-5", 5) == 0) {
        char lower[16] = {0};
        size_t n = strlen(f) < 10 ? strlen(f) : 10;
        for (size_t i = 0; i < n; i++) lower[i] = (char)((f[i] >= 'A' && f[i] <= 'Z') ? f[i] + 32 : f[i]);
        return strncmp(lower, "gpt-5-chat", 10) != 0;
    }
    return false;
}

static bool truthy_number(const dspy_json *v) { return dspy_json_is_number(v) && dspy_json_number(v) != 0; }

/* lm.kwargs as LM.__init__ builds it. New reference in *out. */
static dspy_status build_kwargs(const char *model, const dspy_lm_params *p, dspy_json **out) {
    *out = NULL;
    dspy_json *kw = dspy_json_object();
    if (!kw) return nomem(model);
    dspy_json *t, *m;
    if (!isnan(p->temperature)) t = dspy_json_real(p->temperature);
    else t = p->profile == DSPY_LM_V26 ? dspy_json_real(0.0) : dspy_json_null();
    if (p->max_tokens > 0) m = dspy_json_int(p->max_tokens);
    else m = p->profile == DSPY_LM_V26 ? dspy_json_int(1000) : dspy_json_null();
    if (dspy_json_set(kw, "temperature", t) || dspy_json_set(kw, "max_tokens", m)) goto fail;
    if (p->kwargs) {
        if (dspy_json_typeof(p->kwargs) != DSPY_JSON_OBJECT) {
            dspy_json_decref(kw);
            return dspy_fail(DSPY_ERR_ARG, "[%s] LM kwargs must be a JSON object", model);
        }
        for (void *it = dspy_json_iter(p->kwargs); it; it = dspy_json_next(p->kwargs, it))
            if (dspy_json_set(kw, dspy_json_iter_key(it), dspy_json_copy(dspy_json_iter_value(it)))) goto fail;
    }
    if (p->profile == DSPY_LM_V33 && is_reasoning_model(model)) {
        const dspy_json *tv = dspy_json_get(kw, "temperature"), *mv = dspy_json_get(kw, "max_tokens");
        if ((truthy_number(tv) && dspy_json_number(tv) != 1.0) || (truthy_number(mv) && dspy_json_number(mv) < 16000)) {
            dspy_json_decref(kw);
            return dspy_fail(DSPY_ERR_ARG,
                             "[%s] OpenAI's reasoning models require passing temperature=1.0 or None and "
                             "max_tokens >= 16000 or None, e.g. temperature 1.0 and max_tokens 16000",
                             model);
        }
        /* max_tokens becomes max_completion_tokens, in the same position */
        dspy_json *renamed = dspy_json_object();
        if (!renamed) goto fail;
        for (void *it = dspy_json_iter(kw); it; it = dspy_json_next(kw, it)) {
            const char *k = dspy_json_iter_key(it);
            if (dspy_json_set(renamed, strcmp(k, "max_tokens") == 0 ? "max_completion_tokens" : k,
                              dspy_json_incref(dspy_json_iter_value(it)))) {
                dspy_json_decref(renamed);
                goto fail;
            }
        }
        dspy_json_decref(kw);
        kw = renamed;
    }
    const dspy_json *rid = dspy_json_get(kw, "rollout_id");
    if (rid && dspy_json_typeof(rid) == DSPY_JSON_NULL) dspy_json_del(kw, "rollout_id");
    *out = kw;
    return DSPY_OK;
fail:
    dspy_json_decref(kw);
    return nomem(model);
}

dspy_lm_params dspy_lm_params_default(void) {
    dspy_lm_params p;
    memset(&p, 0, sizeof p);
    p.profile = DSPY_LM_V33;
    p.model_type = "chat";
    p.temperature = NAN;
    p.max_tokens = 0;
    p.num_retries = -1;
    p.cache = -1;
    p.max_history_size = 10000;
    p.connect_timeout_s = 10;
    p.timeout_s = 600;
    p.retry_unit_s = 1.0;
    return p;
}

static void lm_destroy(dspy_lm *lm) {
    if (!lm) return;
    provider_release(lm->prov);
    dspy_cache_free(lm->cache_store);
    dspy_json_decref(lm->kwargs);
    dspy_json_decref(lm->launch_kwargs);
    dspy_json_decref(lm->train_kwargs);
    dspy_json_decref(lm->usage);
    dspy_history_free(lm->history);
    free(lm->cbs);
    free(lm->model);
    free(lm->model_type);
    free(lm->finetuning_model);
    pthread_mutex_destroy(&lm->lock);
    free(lm);
}

static dspy_json *object_or_empty(const dspy_json *v) {
    return v && dspy_json_typeof(v) == DSPY_JSON_OBJECT ? dspy_json_copy(v) : dspy_json_object();
}

/* Builds an LM around `prov` (one reference taken over, released on failure). */
static dspy_status lm_create(const char *model, const dspy_lm_params *p, provider_ref *prov, bool scripted,
                             dspy_lm **out) {
    *out = NULL;
    dspy_lm *lm = calloc(1, sizeof *lm);
    if (!lm) {
        provider_release(prov);
        return nomem(model);
    }
    atomic_init(&lm->refs, 1);
    pthread_mutex_init(&lm->lock, NULL);
    lm->prov = prov;
    dspy_status st;
    const char *mt = p->model_type ? p->model_type : "chat";
    if (strcmp(mt, "chat") != 0) {
        st = dspy_fail(DSPY_ERR_ARG, "[%s] model_type \"%s\" is not supported: only \"chat\" models are", model, mt);
        goto fail;
    }
    lm->model = strdup(model);
    lm->model_type = strdup(mt);
    lm->finetuning_model = xstrdup(p->finetuning_model);
    lm->profile = p->profile;
    lm->num_retries = p->num_retries >= 0 ? p->num_retries : (p->profile == DSPY_LM_V26 ? 8 : 3);
    lm->cache = p->cache < 0 ? !scripted : p->cache != 0;
    lm->use_developer_role = p->use_developer_role;
    lm->cache_store = dspy_cache_retain(p->cache_store);
    lm->launch_kwargs = object_or_empty(p->launch_kwargs);
    lm->train_kwargs = object_or_empty(p->train_kwargs);
    lm->connect_timeout_s = p->connect_timeout_s > 0 ? p->connect_timeout_s : 10;
    lm->timeout_s = p->timeout_s > 0 ? p->timeout_s : 600;
    lm->retry_unit_s = p->retry_unit_s >= 0 ? p->retry_unit_s : 1.0;
    lm->max_history_size = p->max_history_size > 0 ? p->max_history_size : 0;
    lm->history = dspy_history_new((size_t)(lm->max_history_size > 0 ? lm->max_history_size : 1));
    lm->usage = dspy_json_object();
    if (!lm->model || !lm->model_type || (p->finetuning_model && !lm->finetuning_model) || !lm->launch_kwargs ||
        !lm->train_kwargs || !lm->history || !lm->usage) {
        st = nomem(model);
        goto fail;
    }
    st = build_kwargs(model, p, &lm->kwargs);
    if (st) goto fail;
    *out = lm;
    return DSPY_OK;
fail:
    lm_destroy(lm);
    return st;
}

dspy_status dspy_lm_new(const char *model, const dspy_lm_params *p, dspy_lm **out) {
    *out = NULL;
    dspy_lm_params def = dspy_lm_params_default();
    if (!p) p = &def;
    if (!model || !*model)
        return dspy_fail(DSPY_ERR_ARG, "LM: the model string is empty; use \"openai/<name>\", "
                         "\"openai/local:<path>\" or \"scripted:<file>\"");
    provider_ref *prov;
    dspy_status st = provider_for_model(model, &prov);
    if (st == DSPY_ERR_NOTFOUND)
        return dspy_fail(DSPY_ERR_ARG, "LM: unsupported model string \"%s\": use \"openai/<name>\" for an "
                         "OpenAI-compatible server, \"openai/local:<path>\" for a local model, or "
                         "\"scripted:<file>\" for scripted replies", model);
    if (st) return st;
    return lm_create(model, p, prov, prov->vt == &dspy_scripted_provider, out);
}

dspy_status dspy_lm_new_custom(const char *model, const dspy_lm_params *p, const dspy_lm_provider *provider,
                               void *impl, dspy_lm **out) {
    *out = NULL;
    dspy_lm_params def = dspy_lm_params_default();
    if (!p) p = &def;
    if (!provider || !provider->complete) {
        if (provider && provider->free) provider->free(impl);
        return dspy_fail(DSPY_ERR_ARG, "LM: a custom provider needs a complete() function");
    }
    provider_ref *prov;
    dspy_status st = provider_wrap(provider, impl, &prov);
    if (st) return st;
    return lm_create(model && *model ? model : provider->name, p, prov, provider == &dspy_scripted_provider, out);
}

dspy_lm *dspy_lm_retain(dspy_lm *lm) {
    if (lm) atomic_fetch_add(&lm->refs, 1);
    return lm;
}

void dspy_lm_free(dspy_lm *lm) {
    if (lm && atomic_fetch_sub(&lm->refs, 1) == 1) lm_destroy(lm);
}

void dspy_lm_response_free(dspy_lm_response *r) {
    if (!r) return;
    for (int32_t i = 0; i < r->n; i++) {
        free(r->choices[i].text);
        free(r->choices[i].finish_reason);
    }
    free(r->choices);
    dspy_json_decref(r->usage);
    dspy_json_decref(r->raw);
    free(r->model);
    free(r);
}

/* ---- accessors -------------------------------------------------------------------------- */

const char *dspy_lm_model(const dspy_lm *lm) { return lm->model; }
const char *dspy_lm_model_type(const dspy_lm *lm) { return lm->model_type; }
dspy_lm_profile dspy_lm_profile_of(const dspy_lm *lm) { return lm->profile; }
int32_t dspy_lm_num_retries(const dspy_lm *lm) { return lm->num_retries; }
bool dspy_lm_cache_enabled(const dspy_lm *lm) { return lm->cache; }
double dspy_lm_connect_timeout_s(const dspy_lm *lm) { return lm->connect_timeout_s; }
double dspy_lm_timeout_s(const dspy_lm *lm) { return lm->timeout_s; }
double dspy_lm_retry_unit_s(const dspy_lm *lm) { return lm->retry_unit_s; }
dspy_history *dspy_lm_history(dspy_lm *lm) { return lm->history; }

dspy_json *dspy_lm_kwargs(dspy_lm *lm) {
    pthread_mutex_lock(&lm->lock);
    dspy_json *k = dspy_json_copy(lm->kwargs);
    pthread_mutex_unlock(&lm->lock);
    return k;
}

dspy_status dspy_lm_set_kwarg(dspy_lm *lm, const char *key, dspy_json *value) {
    if (!key || !*key) {
        dspy_json_decref(value);
        return dspy_fail(DSPY_ERR_ARG, "[%s] set_kwarg: the key is empty", lm->model);
    }
    pthread_mutex_lock(&lm->lock);
    dspy_status st;
    if (value) st = dspy_json_set(lm->kwargs, key, value);
    else {
        dspy_json_del(lm->kwargs, key);
        st = DSPY_OK;
    }
    pthread_mutex_unlock(&lm->lock);
    return st;
}

dspy_status dspy_lm_inspect_history(dspy_lm *lm, int32_t n, FILE *out) { return dspy_history_print(lm->history, n, out); }

dspy_json *dspy_lm_usage(dspy_lm *lm) {
    pthread_mutex_lock(&lm->lock);
    dspy_json *u = dspy_json_copy(lm->usage);
    pthread_mutex_unlock(&lm->lock);
    return u;
}

void dspy_lm_usage_reset(dspy_lm *lm) {
    dspy_json *fresh = dspy_json_object();
    if (!fresh) return;
    pthread_mutex_lock(&lm->lock);
    dspy_json *old = lm->usage;
    lm->usage = fresh;
    pthread_mutex_unlock(&lm->lock);
    dspy_json_decref(old);
}

dspy_status dspy_usage_merge(dspy_json *total, const dspy_json *usage) {
    if (!total || dspy_json_typeof(total) != DSPY_JSON_OBJECT || !usage || dspy_json_typeof(usage) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "usage: both the total and the entry must be JSON objects");
    for (void *it = dspy_json_iter(usage); it; it = dspy_json_next(usage, it)) {
        const char *k = dspy_json_iter_key(it);
        const dspy_json *v = dspy_json_iter_value(it);
        dspy_json *cur = dspy_json_get(total, k);
        bool vobj = dspy_json_typeof(v) == DSPY_JSON_OBJECT;
        bool cobj = cur && dspy_json_typeof(cur) == DSPY_JSON_OBJECT;
        dspy_status st = DSPY_OK;
        if (vobj || cobj) {
            if (!cobj) {
                cur = dspy_json_object();
                if (!cur || dspy_json_set(total, k, cur)) return dspy_fail(DSPY_ERR_NOMEM, "usage: out of memory");
            }
            if (vobj) st = dspy_usage_merge(cur, v);
        } else {
            bool vnum = dspy_json_is_number(v), cnum = cur && dspy_json_is_number(cur);
            if (!vnum && dspy_json_typeof(v) != DSPY_JSON_NULL) continue; /* strings etc. are not counted */
            dspy_json *sum;
            if ((!vnum || dspy_json_typeof(v) == DSPY_JSON_INT) && (!cnum || dspy_json_typeof(cur) == DSPY_JSON_INT))
                sum = dspy_json_int((vnum ? dspy_json_intval(v) : 0) + (cnum ? dspy_json_intval(cur) : 0));
            else
                sum = dspy_json_real((vnum ? dspy_json_number(v) : 0) + (cnum ? dspy_json_number(cur) : 0));
            st = dspy_json_set(total, k, sum);
        }
        if (st) return st;
    }
    return DSPY_OK;
}

dspy_status dspy_lm_add_callbacks(dspy_lm *lm, const dspy_lm_callbacks *cb) {
    if (!cb) return dspy_fail(DSPY_ERR_ARG, "[%s] add_callbacks: no callbacks given", lm->model);
    pthread_mutex_lock(&lm->lock);
    dspy_lm_callbacks *n = realloc(lm->cbs, (lm->ncbs + 1) * sizeof *n);
    if (n) {
        n[lm->ncbs++] = *cb;
        lm->cbs = n;
    }
    pthread_mutex_unlock(&lm->lock);
    return n ? DSPY_OK : nomem(lm->model);
}

/* ---- the call ---------------------------------------------------------------------------- */

typedef struct call_plan {
    dspy_json *request;  /* {"model", "messages", ...merged kwargs} (rollout_id kept) */
    dspy_json *call_kw;  /* per-call kwargs as given, "cache" included */
    dspy_json *merged;   /* merged kwargs (for the V26 history entry) */
    bool cache_on;
} call_plan;

static void plan_free(call_plan *pl) {
    dspy_json_decref(pl->request);
    dspy_json_decref(pl->call_kw);
    dspy_json_decref(pl->merged);
}

static dspy_status make_plan(dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs, call_plan *pl) {
    memset(pl, 0, sizeof *pl);
    if (!messages || dspy_json_typeof(messages) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_ARG, "[%s] messages must be a JSON array of {\"role\", \"content\"} objects", lm->model);
    for (size_t i = 0; i < dspy_json_size(messages); i++) {
        const dspy_json *m = dspy_json_at(messages, i);
        if (dspy_json_typeof(m) != DSPY_JSON_OBJECT || !dspy_json_is_string(dspy_json_get(m, "role")))
            return dspy_fail(DSPY_ERR_ARG, "[%s] messages[%zu] must be an object with a string \"role\"", lm->model, i);
    }
    if (kwargs && dspy_json_typeof(kwargs) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "[%s] call kwargs must be a JSON object", lm->model);
    pthread_mutex_lock(&lm->lock);
    pl->merged = dspy_json_copy(lm->kwargs);
    pl->cache_on = lm->cache;
    pthread_mutex_unlock(&lm->lock);
    pl->call_kw = kwargs ? dspy_json_copy(kwargs) : dspy_json_object();
    pl->request = dspy_json_object();
    if (!pl->merged || !pl->call_kw || !pl->request) goto fail;
    for (void *it = dspy_json_iter(pl->call_kw); it; it = dspy_json_next(pl->call_kw, it)) {
        const char *k = dspy_json_iter_key(it);
        const dspy_json *v = dspy_json_iter_value(it);
        if (strcmp(k, "cache") == 0) {
            pl->cache_on = dspy_json_truthy(v);
            continue;
        }
        if (dspy_json_set(pl->merged, k, dspy_json_copy(v))) goto fail;
    }
    const dspy_json *rid = dspy_json_get(pl->merged, "rollout_id");
    if (rid && dspy_json_typeof(rid) == DSPY_JSON_NULL) dspy_json_del(pl->merged, "rollout_id");
    if (dspy_json_set_str(pl->request, "model", lm->model) ||
        dspy_json_set(pl->request, "messages", dspy_json_copy(messages)))
        goto fail;
    for (void *it = dspy_json_iter(pl->merged); it; it = dspy_json_next(pl->merged, it)) {
        const char *k = dspy_json_iter_key(it);
        if (strcmp(k, "model") == 0 || strcmp(k, "messages") == 0) continue;
        if (dspy_json_set(pl->request, k, dspy_json_incref(dspy_json_iter_value(it)))) goto fail;
    }
    return DSPY_OK;
fail:
    plan_free(pl);
    memset(pl, 0, sizeof *pl);
    return nomem(lm->model);
}

static dspy_status plan_key(const call_plan *pl, const char *model, char key[65]) {
    dspy_json *keyed = dspy_json_copy(pl->request);
    if (!keyed || dspy_json_set_str(keyed, "_fn_identifier", FN_IDENTIFIER)) {
        dspy_json_decref(keyed);
        return nomem(model);
    }
    dspy_status st = dspy_cache_key(keyed, k_ignored_key_args, key);
    dspy_json_decref(keyed);
    return st;
}

dspy_status dspy_lm_request_key(dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs, char out[65]) {
    out[0] = '\0';
    call_plan pl;
    dspy_status st = make_plan(lm, messages, kwargs, &pl);
    if (st) return st;
    st = plan_key(&pl, lm->model, out);
    plan_free(&pl);
    return st;
}

static char *dup_or_null(const dspy_json *s) { return dspy_json_is_string(s) ? strndup(dspy_json_str(s), dspy_json_strlen(s)) : NULL; }

/* Reads an OpenAI chat.completion object into a response (taking over `raw`). */
static dspy_status response_from_raw(dspy_lm *lm, dspy_json *raw, bool cached, dspy_lm_response **out) {
    *out = NULL;
    dspy_status st;
    dspy_lm_response *r = calloc(1, sizeof *r);
    if (!r) {
        dspy_json_decref(raw);
        return nomem(lm->model);
    }
    r->raw = raw;
    r->cached = cached;
    const dspy_json *choices = raw ? dspy_json_get(raw, "choices") : NULL;
    if (!raw || dspy_json_typeof(raw) != DSPY_JSON_OBJECT || !choices || dspy_json_typeof(choices) != DSPY_JSON_ARRAY ||
        dspy_json_size(choices) == 0) {
        st = dspy_fail(DSPY_ERR_REMOTE, "[%s] the provider's response has no \"choices\" list%s", lm->model,
                       cached ? " (cached entry)" : "");
        goto fail;
    }
    size_t n = dspy_json_size(choices);
    r->choices = calloc(n, sizeof *r->choices);
    if (!r->choices) {
        st = nomem(lm->model);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const dspy_json *c = dspy_json_at(choices, i);
        const dspy_json *msg = dspy_json_get(c, "message");
        const dspy_json *content = msg ? dspy_json_get(msg, "content") : NULL;
        if (dspy_json_typeof(c) != DSPY_JSON_OBJECT || !msg || dspy_json_typeof(msg) != DSPY_JSON_OBJECT ||
            (content && !dspy_json_is_string(content) && dspy_json_typeof(content) != DSPY_JSON_NULL)) {
            st = dspy_fail(DSPY_ERR_REMOTE, "[%s] choices[%zu] of the response has no \"message\" with string or "
                           "null \"content\"", lm->model, i);
            goto fail;
        }
        r->choices[i].text = dup_or_null(content);
        r->choices[i].finish_reason = dup_or_null(dspy_json_get(c, "finish_reason"));
        r->n = (int32_t)(i + 1);
        if (content && dspy_json_is_string(content) && !r->choices[i].text) {
            st = nomem(lm->model);
            goto fail;
        }
    }
    if (cached) {
        if (dspy_json_set(raw, "usage", dspy_json_object())) {
            st = nomem(lm->model);
            goto fail;
        }
    }
    const dspy_json *usage = dspy_json_get(raw, "usage");
    r->usage = usage && dspy_json_typeof(usage) == DSPY_JSON_OBJECT ? dspy_json_copy(usage) : dspy_json_object();
    const dspy_json *model = dspy_json_get(raw, "model");
    r->model = strdup(dspy_json_is_string(model) ? dspy_json_str(model) : "");
    if (!r->usage || !r->model) {
        st = nomem(lm->model);
        goto fail;
    }
    *out = r;
    return DSPY_OK;
fail:
    dspy_lm_response_free(r);
    return st;
}

static dspy_json *without_api_keys(const dspy_json *kw) {
    dspy_json *o = dspy_json_object();
    if (!o) return NULL;
    for (void *it = dspy_json_iter(kw); it; it = dspy_json_next(kw, it)) {
        const char *k = dspy_json_iter_key(it);
        if (strncmp(k, "api_", 4) == 0) continue;
        if (dspy_json_set(o, k, dspy_json_incref(dspy_json_iter_value(it)))) {
            dspy_json_decref(o);
            return NULL;
        }
    }
    return o;
}

static void record_history(dspy_lm *lm, const call_plan *pl, const dspy_lm_response *r) {
    if (!dspy_history_enabled()) return;
    dspy_json *e = dspy_json_object();
    dspy_json *outputs = dspy_json_array();
    char ts[40], uuid[37];
    dspy_lm_timestamp(ts);
    dspy_uuid4(uuid);
    bool ok = e && outputs;
    for (int32_t i = 0; ok && i < r->n; i++)
        ok = dspy_json_append(outputs, r->choices[i].text ? dspy_json_string(r->choices[i].text) : dspy_json_null()) == DSPY_OK;
    ok = ok && dspy_json_set(e, "prompt", dspy_json_null()) == DSPY_OK &&
         dspy_json_set(e, "messages", dspy_json_incref(dspy_json_get(pl->request, "messages"))) == DSPY_OK &&
         dspy_json_set(e, "kwargs", without_api_keys(lm->profile == DSPY_LM_V26 ? pl->merged : pl->call_kw)) == DSPY_OK &&
         dspy_json_set(e, "response", dspy_json_incref(r->raw)) == DSPY_OK &&
         dspy_json_set(e, "outputs", dspy_json_incref(outputs)) == DSPY_OK &&
         dspy_json_set(e, "usage", dspy_json_copy(r->usage)) == DSPY_OK &&
         dspy_json_set(e, "cost", dspy_json_null()) == DSPY_OK && dspy_json_set_str(e, "timestamp", ts) == DSPY_OK &&
         dspy_json_set_str(e, "uuid", uuid) == DSPY_OK && dspy_json_set_str(e, "model", lm->model) == DSPY_OK &&
         dspy_json_set_str(e, "response_model", r->model) == DSPY_OK &&
         dspy_json_set_str(e, "model_type", lm->model_type) == DSPY_OK;
    if (ok) {
        dspy_history_append(dspy_history_global(), e);
        if (lm->max_history_size > 0) dspy_history_append(lm->history, e);
    }
    dspy_json_decref(outputs);
    dspy_json_decref(e);
}

/* DSPy 3.3.1 LM._check_truncation: a warning when any choice stopped at the token limit. */
static void warn_if_truncated(dspy_lm *lm, const dspy_lm_response *r) {
    bool truncated = false;
    for (int32_t i = 0; i < r->n; i++)
        if (r->choices[i].finish_reason && strcmp(r->choices[i].finish_reason, "length") == 0) truncated = true;
    if (!truncated || !dspy_log_enabled(DSPY_LOG_WARN)) return;
    dspy_str mt = DSPY_STR_INIT, t = DSPY_STR_INIT;
    pthread_mutex_lock(&lm->lock);
    const dspy_json *m = dspy_json_get(lm->kwargs, "max_tokens");
    if (!m) m = dspy_json_get(lm->kwargs, "max_completion_tokens");
    const dspy_json *tv = dspy_json_get(lm->kwargs, "temperature");
    if (m) dspy_json_pystr(m, &mt);
    if (tv) dspy_json_pystr(tv, &t);
    pthread_mutex_unlock(&lm->lock);
    dspy_log(DSPY_LOG_WARN,
             "LM response was truncated due to exceeding max_tokens=%s. You can inspect the latest LM interactions "
             "with `dspy.inspect_history()`. To avoid truncation, consider passing a larger max_tokens when setting up "
             "dspy.LM. You may also consider increasing the temperature (currently %s)  if the reason for truncation "
             "is repetition.",
             mt.len ? dspy_str_cstr(&mt) : "None", t.len ? dspy_str_cstr(&t) : "None");
    dspy_str_free(&mt);
    dspy_str_free(&t);
}

static dspy_status resolve_cache(dspy_lm *lm, dspy_cache **out) {
    if (lm->cache_store) {
        *out = dspy_cache_retain(lm->cache_store);
        return DSPY_OK;
    }
    dspy_status st = dspy_cache_default(out);
    if (st) return dspy_fail_wrap(st, "[%s] cannot open the LM cache", lm->model);
    return DSPY_OK;
}

static dspy_status call_inner(dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs, dspy_lm_response **out) {
    call_plan pl;
    dspy_status st = make_plan(lm, messages, kwargs, &pl);
    if (st) return st;
    dspy_cache *cache = NULL;
    dspy_json *raw = NULL, *prov_req = NULL;
    dspy_lm_response *r = NULL;
    char key[65] = "";
    if (pl.cache_on) {
        st = resolve_cache(lm, &cache);
        if (st == DSPY_OK) st = plan_key(&pl, lm->model, key);
        if (st) goto done;
        if (dspy_cache_get(cache, key, &raw) != DSPY_OK) { /* as DSPy: a failed lookup is a miss */
            dspy_log(DSPY_LOG_WARN, "[%s] cache lookup failed, calling the model: %s", lm->model, dspy_errmsg());
            dspy_errclear();
            raw = NULL;
        }
        if (raw) {
            st = response_from_raw(lm, raw, true, &r);
            raw = NULL;
            if (st) goto done;
        }
    }
    if (!r) {
        prov_req = dspy_json_copy(pl.request);
        if (!prov_req) {
            st = nomem(lm->model);
            goto done;
        }
        dspy_json_del(prov_req, "rollout_id"); /* a cache-busting knob, never sent */
        st = lm->prov->vt->complete(lm->prov->impl, lm, prov_req, &raw);
        if (st) goto done;
        st = response_from_raw(lm, raw, false, &r);
        raw = NULL;
        if (st) goto done;
        if (cache) {
            /* Committed before we return: a paid answer survives a crash after this point. A
             * disk failure still leaves it in memory; the cache stats count the failure. */
            if (dspy_cache_put(cache, key, r->raw) != DSPY_OK) {
                dspy_log(DSPY_LOG_WARN, "[%s] the answer is cached in memory only: %s", lm->model, dspy_errmsg());
                dspy_errclear();
            }
        }
        pthread_mutex_lock(&lm->lock);
        dspy_usage_merge(lm->usage, r->usage);
        pthread_mutex_unlock(&lm->lock);
    }
    warn_if_truncated(lm, r);
    record_history(lm, &pl, r);
    *out = r;
    r = NULL;
done:
    dspy_lm_response_free(r);
    dspy_json_decref(raw);
    dspy_json_decref(prov_req);
    dspy_cache_free(cache);
    plan_free(&pl);
    return st;
}

dspy_status dspy_lm_call(dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs, dspy_lm_response **out) {
    return dspy_lm_call_with(lm, messages, kwargs, NULL, 0, out);
}

dspy_status dspy_lm_call_with(dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs,
                              const dspy_lm_callbacks *extra, size_t n_extra, dspy_lm_response **out) {
    *out = NULL;
    dspy_lm_callbacks *cbs = NULL;
    size_t ncbs = 0;
    if (!extra) n_extra = 0;
    pthread_mutex_lock(&lm->lock);
    if ((lm->ncbs || n_extra) && (cbs = malloc((n_extra + lm->ncbs) * sizeof *cbs))) {
        if (n_extra) memcpy(cbs, extra, n_extra * sizeof *cbs);
        if (lm->ncbs) memcpy(cbs + n_extra, lm->cbs, lm->ncbs * sizeof *cbs);
        ncbs = n_extra + lm->ncbs;
    }
    pthread_mutex_unlock(&lm->lock);
    char call_id[33] = "";
    if (ncbs) dspy_uuid4_hex(call_id);
    for (size_t i = 0; i < ncbs; i++)
        if (cbs[i].on_lm_start) cbs[i].on_lm_start(cbs[i].user, call_id, lm, messages, kwargs);
    dspy_status st = call_inner(lm, messages, kwargs, out);
    if (ncbs) {
        char *msg = st ? strdup(dspy_errmsg()) : NULL;
        for (size_t i = 0; i < ncbs; i++)
            if (cbs[i].on_lm_end) cbs[i].on_lm_end(cbs[i].user, call_id, *out, st, st ? (msg ? msg : "") : NULL);
        if (st) dspy_fail(st, "%s", msg ? msg : "(error message lost: out of memory)");
        free(msg);
    }
    free(cbs);
    return st;
}

/* ---- copy, dump_state, load_state ------------------------------------------------------- */

static const char *const k_attrs[] = {"model", "model_type", "cache", "num_retries", "finetuning_model",
                                      "launch_kwargs", "train_kwargs", "use_developer_role", NULL};

static bool is_attr(const char *k) {
    for (const char *const *a = k_attrs; *a; a++)
        if (strcmp(*a, k) == 0) return true;
    return false;
}

static dspy_status set_attr(dspy_lm *n, const char *k, const dspy_json *v) {
    dspy_json_type t = dspy_json_typeof(v);
    if (strcmp(k, "model") == 0 || strcmp(k, "model_type") == 0 || strcmp(k, "finetuning_model") == 0) {
        bool nullable = strcmp(k, "finetuning_model") == 0;
        if (!(t == DSPY_JSON_STRING || (nullable && t == DSPY_JSON_NULL)))
            return dspy_fail(DSPY_ERR_ARG, "[%s] copy: \"%s\" must be a string", n->model, k);
        if (strcmp(k, "model_type") == 0 && strcmp(dspy_json_str(v), "chat") != 0)
            return dspy_fail(DSPY_ERR_ARG, "[%s] copy: model_type \"%s\" is not supported", n->model, dspy_json_str(v));
        char *s = t == DSPY_JSON_STRING ? strdup(dspy_json_str(v)) : NULL;
        if (t == DSPY_JSON_STRING && !s) return nomem(n->model);
        char **slot = strcmp(k, "model") == 0 ? &n->model : strcmp(k, "model_type") == 0 ? &n->model_type : &n->finetuning_model;
        free(*slot);
        *slot = s;
    } else if (strcmp(k, "cache") == 0 || strcmp(k, "use_developer_role") == 0) {
        if (t != DSPY_JSON_BOOL) return dspy_fail(DSPY_ERR_ARG, "[%s] copy: \"%s\" must be true or false", n->model, k);
        *(strcmp(k, "cache") == 0 ? &n->cache : &n->use_developer_role) = dspy_json_truthy(v);
    } else if (strcmp(k, "num_retries") == 0) {
        if (t != DSPY_JSON_INT || dspy_json_intval(v) < 0)
            return dspy_fail(DSPY_ERR_ARG, "[%s] copy: \"num_retries\" must be a non-negative integer", n->model);
        n->num_retries = (int32_t)dspy_json_intval(v);
    } else { /* launch_kwargs, train_kwargs */
        if (t != DSPY_JSON_OBJECT && t != DSPY_JSON_NULL)
            return dspy_fail(DSPY_ERR_ARG, "[%s] copy: \"%s\" must be an object", n->model, k);
        dspy_json **slot = strcmp(k, "launch_kwargs") == 0 ? &n->launch_kwargs : &n->train_kwargs;
        dspy_json *c = object_or_empty(v);
        if (!c) return nomem(n->model);
        dspy_json_decref(*slot);
        *slot = c;
    }
    return DSPY_OK;
}

dspy_status dspy_lm_copy(dspy_lm *lm, const dspy_json *overrides, dspy_lm **out) {
    *out = NULL;
    if (overrides && dspy_json_typeof(overrides) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "[%s] copy: overrides must be a JSON object", lm->model);
    dspy_lm *n = calloc(1, sizeof *n);
    if (!n) return nomem(lm->model);
    atomic_init(&n->refs, 1);
    pthread_mutex_init(&n->lock, NULL);
    dspy_status st = DSPY_OK;
    pthread_mutex_lock(&lm->lock);
    dspy_json *orig = dspy_json_copy(lm->kwargs); /* "key in self.kwargs" is asked of this */
    n->kwargs = dspy_json_copy(lm->kwargs);
    n->launch_kwargs = dspy_json_copy(lm->launch_kwargs);
    n->train_kwargs = dspy_json_copy(lm->train_kwargs);
    if (lm->ncbs && (n->cbs = malloc(lm->ncbs * sizeof *n->cbs))) {
        memcpy(n->cbs, lm->cbs, lm->ncbs * sizeof *n->cbs);
        n->ncbs = lm->ncbs;
    }
    pthread_mutex_unlock(&lm->lock);
    n->model = strdup(lm->model);
    n->model_type = strdup(lm->model_type);
    n->finetuning_model = xstrdup(lm->finetuning_model);
    n->profile = lm->profile;
    n->num_retries = lm->num_retries;
    n->cache = lm->cache;
    n->use_developer_role = lm->use_developer_role;
    n->cache_store = dspy_cache_retain(lm->cache_store);
    n->connect_timeout_s = lm->connect_timeout_s;
    n->timeout_s = lm->timeout_s;
    n->retry_unit_s = lm->retry_unit_s;
    n->max_history_size = lm->max_history_size;
    n->history = dspy_history_new((size_t)(n->max_history_size > 0 ? n->max_history_size : 1));
    n->usage = dspy_json_object();
    n->prov = lm->prov;
    atomic_fetch_add(&n->prov->refs, 1);
    if (!orig || !n->kwargs || !n->launch_kwargs || !n->train_kwargs || (lm->ncbs && !n->cbs) || !n->model ||
        !n->model_type || (lm->finetuning_model && !n->finetuning_model) || !n->history || !n->usage) {
        st = nomem(lm->model);
        goto fail;
    }
    for (void *it = overrides ? dspy_json_iter(overrides) : NULL; it; it = dspy_json_next(overrides, it)) {
        const char *k = dspy_json_iter_key(it);
        const dspy_json *v = dspy_json_iter_value(it);
        bool attr = is_attr(k);
        if (attr && (st = set_attr(n, k, v))) goto fail;
        if (dspy_json_get(orig, k) || !attr) {
            if (dspy_json_typeof(v) == DSPY_JSON_NULL) dspy_json_del(n->kwargs, k);
            else if ((st = dspy_json_set(n->kwargs, k, dspy_json_copy(v)))) goto fail;
        }
    }
    if (strcmp(n->model, lm->model) != 0) {
        provider_ref *p;
        st = provider_for_model(n->model, &p);
        if (st == DSPY_OK) {
            bool same_kind = p->vt == lm->prov->vt && p->vt == &dspy_openai_http_provider;
            if (same_kind) provider_release(p);
            else {
                provider_release(n->prov);
                n->prov = p;
            }
        } else if (st != DSPY_ERR_NOTFOUND) {
            goto fail;
        }
        st = DSPY_OK;
    }
    dspy_json_decref(orig);
    *out = n;
    return DSPY_OK;
fail:
    dspy_json_decref(orig);
    lm_destroy(n);
    return st;
}

dspy_json *dspy_lm_dump_state(dspy_lm *lm) {
    dspy_json *s = dspy_json_object();
    if (!s) return NULL;
    pthread_mutex_lock(&lm->lock);
    bool ok = dspy_json_set_str(s, "_dspy_lm_class", "dspy.clients.lm.LM") == DSPY_OK &&
              dspy_json_set_str(s, "model", lm->model) == DSPY_OK &&
              dspy_json_set_str(s, "model_type", lm->model_type) == DSPY_OK &&
              dspy_json_set(s, "cache", dspy_json_bool(lm->cache)) == DSPY_OK &&
              dspy_json_set(s, "num_retries", dspy_json_int(lm->num_retries)) == DSPY_OK &&
              dspy_json_set(s, "finetuning_model",
                            lm->finetuning_model ? dspy_json_string(lm->finetuning_model) : dspy_json_null()) == DSPY_OK &&
              dspy_json_set(s, "launch_kwargs", dspy_json_copy(lm->launch_kwargs)) == DSPY_OK &&
              dspy_json_set(s, "train_kwargs", dspy_json_copy(lm->train_kwargs)) == DSPY_OK;
    if (ok && lm->use_developer_role) ok = dspy_json_set(s, "use_developer_role", dspy_json_bool(true)) == DSPY_OK;
    for (void *it = dspy_json_iter(lm->kwargs); ok && it; it = dspy_json_next(lm->kwargs, it)) {
        const char *k = dspy_json_iter_key(it);
        if (strcmp(k, "api_key") == 0) continue;
        ok = dspy_json_set(s, k, dspy_json_copy(dspy_json_iter_value(it))) == DSPY_OK;
    }
    pthread_mutex_unlock(&lm->lock);
    if (!ok) {
        dspy_json_decref(s);
        return NULL;
    }
    return s;
}

dspy_status dspy_lm_load_state(const dspy_json *state, bool allow_unsafe, const dspy_lm_params *p, dspy_lm **out) {
    *out = NULL;
    if (!state || dspy_json_typeof(state) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_FORMAT, "LM state: must be a JSON object");
    const dspy_json *cls = dspy_json_get(state, "_dspy_lm_class");
    if (cls && (!dspy_json_is_string(cls) || strcmp(dspy_json_str(cls), "dspy.clients.lm.LM") != 0))
        return dspy_fail(DSPY_ERR_FORMAT, "LM state: class \"%s\" is not supported (only dspy.clients.lm.LM)",
                         dspy_json_is_string(cls) ? dspy_json_str(cls) : "?");
    const char *model;
    dspy_status st = dspy_json_get_strv(state, "model", "LM state", &model);
    if (st) return st;
    dspy_lm_params q = p ? *p : dspy_lm_params_default();
    q.temperature = NAN;
    q.max_tokens = 0;
    q.model_type = dspy_json_str_or(state, "model_type", "chat");
    q.num_retries = (int32_t)dspy_json_int_or(state, "num_retries", q.profile == DSPY_LM_V26 ? 8 : 3);
    const dspy_json *c = dspy_json_get(state, "cache");
    q.cache = c ? (int8_t)dspy_json_truthy(c) : 1;
    q.finetuning_model = dspy_json_str_or(state, "finetuning_model", NULL);
    q.launch_kwargs = dspy_json_get(state, "launch_kwargs");
    q.train_kwargs = dspy_json_get(state, "train_kwargs");
    q.use_developer_role = dspy_json_bool_or(state, "use_developer_role", false);
    dspy_json *kw = dspy_json_object();
    if (!kw) return dspy_fail(DSPY_ERR_NOMEM, "LM state: out of memory");
    for (void *it = dspy_json_iter(state); it; it = dspy_json_next(state, it)) {
        const char *k = dspy_json_iter_key(it);
        if (strcmp(k, "_dspy_lm_class") == 0 || is_attr(k)) continue;
        if (!allow_unsafe && (strcmp(k, "api_base") == 0 || strcmp(k, "base_url") == 0 || strcmp(k, "model_list") == 0)) {
            dspy_log(DSPY_LOG_WARN, "LM state for %s: dropping \"%s\" (load with allow_unsafe_lm_state to keep it)",
                     model, k);
            continue;
        }
        if (dspy_json_set(kw, k, dspy_json_copy(dspy_json_iter_value(it)))) {
            dspy_json_decref(kw);
            return dspy_fail(DSPY_ERR_NOMEM, "LM state: out of memory");
        }
    }
    q.kwargs = kw;
    st = dspy_lm_new(model, &q, out);
    dspy_json_decref(kw);
    return st;
}
