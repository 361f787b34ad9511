/* dspy/lm.h — language models: one interface over an OpenAI-compatible HTTP client, a
 * scripted LM for tests (DSPy's DummyLM), and custom providers.
 *
 * Follows DSPy's dspy.LM (spec dspy_behaviour.md §6, conformance CC-21..CC-24):
 *   - lm kwargs: V33 {"temperature": null, "max_tokens": null, ...user kwargs}; V26
 *     {"temperature": 0.0, "max_tokens": 1000, ...}. A call merges {**lm.kwargs, **call kwargs};
 *     only non-null values are sent, so a V33 LM sends only what the user set (CC-21).
 *   - cache: key = SHA-256 of the sorted compact request {"model" (with the provider prefix),
 *     "messages", ...merged kwargs (nulls kept), "_fn_identifier"} minus api_key, api_base,
 *     base_url (CC-22). "rollout_id" is part of the key and never sent; a null rollout_id is the
 *     same as none. A per-call "cache": false bypasses the cache. Hits return usage {} and
 *     cached = true. A fresh answer is committed to the cache before the call returns.
 *   - retries (HTTP): 1 + num_retries attempts; the first retry is immediate, then sleeps of
 *     min(10, 2**(j-1)) s after retry j fails (CC-23); Retry-After is honoured.
 *   - history: every call appends an entry to the LM's history and the global one (history.h).
 *   - usage: non-cached responses add their "usage" object into per-LM totals, nested dicts
 *     summed key-wise and null counted as 0 (CC-22).
 * What it does not do: text-completion and Responses-API models, streaming, providers other
 * than OpenAI-compatible HTTP, launching local servers (another module sets api_base).
 *
 * Model strings accepted by dspy_lm_new:
 *   "openai/<name>"        POST {api_base}/chat/completions with "model": "<name>". api_base
 *                          from kwargs "api_base" or "base_url", else $OPENAI_BASE_URL, else
 *                          $OPENAI_API_BASE, else https://api.openai.com/v1; api_key from kwargs
 *                          "api_key", else $OPENAI_API_KEY (a call without one fails).
 *                          api_base may list several servers of the same model, comma-
 *                          separated (e.g. one `dspy serve` per GPU): each request goes to
 *                          the one with the fewest of this LM's requests in flight (ties in
 *                          turn), and a retry after a connection failure to another one.
 *   "openai/local:<path>"  A local model served by our own server: the same HTTP client, but
 *                          api_base must be in the kwargs (set by the launcher through
 *                          dspy_lm_set_kwarg; environment variables are ignored) and api_key
 *                          defaults to "local". A call before api_base is set fails with
 *                          DSPY_ERR_STATE saying so.
 *   "scripted:<file>"      A scripted LM reading its replies from a JSON file (see
 *                          dspy_lm_new_scripted for the format).
 *
 * Ownership: LMs are reference counted (DSPy shares LM objects between predictors);
 * dspy_lm_free drops one reference. Thread safety: dspy_lm_call may run on many threads at once
 * on the same LM; configuration calls (set_kwarg, add_callbacks) may race with calls (they
 * take the LM's lock); a call sees the kwargs as they were when it started.
 */
#ifndef DSPY_LM_H
#define DSPY_LM_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dspy/cache.h"
#include "dspy/history.h"
#include "dspy/json.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_lm dspy_lm;

/* Which DSPy's wire defaults an LM follows (spec §15.6, §16.5). */
typedef enum dspy_lm_profile {
    DSPY_LM_V33 = 0, /* DSPy 3.3.1: temperature/max_tokens null unless set, 3 retries,
                        User-Agent DSPy/3.3.1, history kwargs = per-call kwargs */
    DSPY_LM_V26 = 1  /* DSPy 2.6 (the tutorial): temperature 0.0 and max_tokens 1000 unless set,
                        8 retries, history kwargs = merged kwargs, no DSPy User-Agent */
} dspy_lm_profile;

typedef struct dspy_lm_params {
    dspy_lm_profile profile;        /* default DSPY_LM_V33 */
    const char *model_type;         /* "chat" (NULL = "chat"); nothing else is supported */
    double temperature;             /* NAN = not set (V33: null; V26: 0.0) */
    int32_t max_tokens;             /* <= 0 = not set (V33: null; V26: 1000) */
    const dspy_json *kwargs;        /* further LM kwargs, copied: n, top_p, stop, api_key,
                                       api_base, base_url, rollout_id, timeout, extra_headers...
                                       A "temperature"/"max_tokens" here overrides the fields
                                       above. NULL = none. */
    int32_t num_retries;            /* < 0 = profile default (3 V33, 8 V26) */
    int8_t cache;                   /* -1 = default (on, except scripted LMs: off, as DummyLM's
                                       forward never caches), 0 = off, 1 = on */
    dspy_cache *cache_store;        /* borrowed (retained by the LM); NULL = dspy_cache_default()
                                       resolved at each call */
    int32_t max_history_size;       /* entries kept in lm.history; 0 = none. Default 10000 */
    const char *finetuning_model;   /* NULL = none */
    const dspy_json *launch_kwargs; /* copied; NULL = {} */
    const dspy_json *train_kwargs;  /* copied; NULL = {} */
    bool use_developer_role;        /* stored and dumped only */
    double connect_timeout_s;       /* HTTP connect timeout per attempt. Default 10 */
    double timeout_s;               /* HTTP deadline per attempt (connect + send + the whole
                                       answer; kwargs "timeout" overrides). Default 600 */
    double retry_unit_s;            /* length of one "second" of the retry schedule, Retry-After
                                       included; tests shrink it. Default 1.0 */
} dspy_lm_params;

DSPY_API dspy_lm_params dspy_lm_params_default(void);

/* One choice of a response. */
typedef struct dspy_lm_choice {
    char *text;          /* message content; NULL when the provider returned null content */
    char *finish_reason; /* "stop", "length", ...; NULL when absent */
} dspy_lm_choice;

/* What dspy_lm_call returns. Owned by the caller; free with dspy_lm_response_free. */
typedef struct dspy_lm_response {
    int32_t n;               /* number of choices */
    dspy_lm_choice *choices; /* n choices, in the provider's order */
    dspy_json *usage;        /* the response's usage object; {} on a cache hit */
    char *model;             /* the model the provider reported ("" when absent) */
    bool cached;             /* served from the cache */
    dspy_json *raw;          /* the provider's whole response object (usage {} on a hit) */
} dspy_lm_response;

DSPY_API void dspy_lm_response_free(dspy_lm_response *r); /* NULL-safe */

/* Creates an LM from a model string (see the header comment). `p` may be NULL (defaults).
 * Errors: DSPY_ERR_ARG for an unknown model string, a model_type other than "chat", non-object
 * kwargs, or an OpenAI reasoning model (o1/o3/o4/o5, gpt-5 except gpt-5-chat) with a
 * temperature other than 1.0 or max_tokens below 16000 (as DSPy 3.3.1; such models get
 * "max_completion_tokens" instead of "max_tokens"); errors of dspy_lm_new_scripted for
 * "scripted:". */
DSPY_API dspy_status dspy_lm_new(const char *model, const dspy_lm_params *p, dspy_lm **out);

/* Adds a reference and returns `lm` (NULL-safe). */
DSPY_API dspy_lm *dspy_lm_retain(dspy_lm *lm);
/* Drops one reference (NULL-safe). The last one frees the LM; no call may be in flight. */
DSPY_API void dspy_lm_free(dspy_lm *lm);

/* Calls the LM: `messages` is a JSON array of {"role", "content"} objects, `kwargs` a JSON
 * object of per-call kwargs (NULL = none; e.g. {"n": 3, "temperature": 0.7}, "rollout_id",
 * "cache": false). Order: on_lm_start callbacks; merge kwargs; cache lookup; the provider on a
 * miss (HTTP with retries), then cache store; usage totals; history; on_lm_end callbacks.
 * Errors: DSPY_ERR_ARG (bad messages/kwargs), DSPY_ERR_REMOTE (the server answered with an
 * error, or an unusable body — the message quotes the server's error.message, the URL and
 * the HTTP status), DSPY_ERR_TIMEOUT (connect/read deadline or HTTP 408, after the retries),
 * DSPY_ERR_STATE (openai/local model not launched; scripted LM out of replies), DSPY_ERR_IO
 * (the cache cannot be opened). A cache lookup or store that fails once the cache is open is
 * logged as a warning and does not fail the call. Messages start with "[<model>] ".
 * *out is NULL on failure. */
DSPY_API dspy_status dspy_lm_call(dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs,
                                  dspy_lm_response **out);

/* The cache key dspy_lm_call would use for these arguments (64 hex digits + NUL). */
DSPY_API dspy_status dspy_lm_request_key(dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs,
                                         char out[65]);

/* Accessors. Strings are valid while the LM lives. */
DSPY_API const char *dspy_lm_model(const dspy_lm *lm);
DSPY_API const char *dspy_lm_model_type(const dspy_lm *lm);
DSPY_API dspy_lm_profile dspy_lm_profile_of(const dspy_lm *lm);
DSPY_API int32_t dspy_lm_num_retries(const dspy_lm *lm);
DSPY_API bool dspy_lm_cache_enabled(const dspy_lm *lm);
/* A copy of lm.kwargs (new reference; NULL on OOM). */
DSPY_API dspy_json *dspy_lm_kwargs(dspy_lm *lm);
/* lm.kwargs[key] = value, stealing `value`; value NULL removes the key. Used by launchers to
 * set "api_base"/"api_key". */
DSPY_API dspy_status dspy_lm_set_kwarg(dspy_lm *lm, const char *key, dspy_json *value);

/* lm.history (borrowed; lives as long as the LM). */
DSPY_API dspy_history *dspy_lm_history(dspy_lm *lm);
/* lm.inspect_history(n): dspy_history_print on the LM's history. */
DSPY_API dspy_status dspy_lm_inspect_history(dspy_lm *lm, int32_t n, FILE *out);

/* Sum of the usage of this LM's non-cached responses (new reference), e.g.
 * {"prompt_tokens": 2417, "completion_tokens": 226, "total_tokens": 2643,
 *  "prompt_tokens_details": {"cached_tokens": 600}}. */
DSPY_API dspy_json *dspy_lm_usage(dspy_lm *lm);
DSPY_API void dspy_lm_usage_reset(dspy_lm *lm);
/* Adds `usage` into `total` (both objects) as DSPy's UsageTracker does: nested objects are
 * merged recursively, numbers summed, null counted as 0. DSPY_ERR_ARG on non-objects. */
DSPY_API dspy_status dspy_usage_merge(dspy_json *total, const dspy_json *usage);

/* lm.copy(**overrides) (DSPy 3.3.1): a new LM with fresh history and usage, the same
 * callbacks, a copied kwargs object, and `overrides` (a JSON object) applied: "model",
 * "model_type", "cache", "num_retries", "finetuning_model", "launch_kwargs", "train_kwargs",
 * "use_developer_role" set the attribute; any other key, or one already in kwargs, goes to
 * kwargs, where null deletes it. E.g. copy({"rollout_id": 1, "temperature": 0.2}) of
 * LM("openai/gpt-4o-mini") has kwargs {"temperature": 0.2, "max_tokens": null,
 * "rollout_id": 1}. The provider is shared unless the model string changes kind. */
DSPY_API dspy_status dspy_lm_copy(dspy_lm *lm, const dspy_json *overrides, dspy_lm **out);

/* lm.dump_state() (CC-24), a new reference:
 * {"_dspy_lm_class": "dspy.clients.lm.LM", "model", "model_type", "cache", "num_retries",
 *  "finetuning_model", "launch_kwargs", "train_kwargs", ["use_developer_role": true],
 *  ...kwargs without "api_key"}. NULL on OOM. */
DSPY_API dspy_json *dspy_lm_dump_state(dspy_lm *lm);
/* BaseLM.load_state: builds an LM from a dump_state object. Unless `allow_unsafe`, the kwargs
 * "api_base", "base_url" and "model_list" are dropped (with a logged warning, as DSPy does). `p`
 * (may be NULL) supplies what the state does not hold: profile, timeouts, cache_store. */
DSPY_API dspy_status dspy_lm_load_state(const dspy_json *state, bool allow_unsafe, const dspy_lm_params *p,
                                        dspy_lm **out);

/* Callbacks (DSPy's on_lm_start/on_lm_end). `call_id` is a fresh uuid4 hex per call.
 * on_lm_end gets the response (NULL on failure) and the status with its message.
 * Callbacks run on the calling thread, in registration order; they must not call back into
 * the same LM's configuration functions. */
typedef struct dspy_lm_callbacks {
    void *user;
    void (*on_lm_start)(void *user, const char *call_id, dspy_lm *lm, const dspy_json *messages,
                        const dspy_json *kwargs);
    void (*on_lm_end)(void *user, const char *call_id, const dspy_lm_response *response,
                      dspy_status status, const char *error);
} dspy_lm_callbacks;
/* Registers a copy of `cb` on this LM (copies made later share them). */
DSPY_API dspy_status dspy_lm_add_callbacks(dspy_lm *lm, const dspy_lm_callbacks *cb);
/* dspy_lm_call with `n_extra` further callbacks that run before the LM's own, with the same
 * call_id (DSPy's settings.callbacks + instance.callbacks; the module layer passes the
 * settings' callbacks here). `extra` may be NULL when n_extra is 0. */
DSPY_API dspy_status dspy_lm_call_with(dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs,
                                       const dspy_lm_callbacks *extra, size_t n_extra, dspy_lm_response **out);

/* ---- Scripted LM (DSPy's DummyLM) --------------------------------------------------------
 * Replies come from a list, in order. A reply is a string (returned as is) or a JSON object of
 * output fields, returned in ChatAdapter layout exactly as DummyLM does:
 * {"answer": "Paris"} -> "[[ ## answer ## ]]\nParis" (fields joined by "\n\n", no completed
 * marker; non-string values as in format_field_value: objects/arrays as json.dumps with
 * ensure_ascii=False, others as Python str()). A call with "n": k consumes k replies.
 * When the list is used up: with `cycle` it starts again, otherwise the call fails with
 * DSPY_ERR_STATE. The model string is "dummy"; caching is off unless params->cache is 1. */
DSPY_API dspy_status dspy_lm_new_scripted(const dspy_json *replies, bool cycle, const dspy_lm_params *p,
                                          dspy_lm **out);
/* The reply is produced by `fn` for each choice (0-based `choice`); it sets *text to a
 * malloc'd string or returns an error status (which the call returns). `fn` may run on many
 * threads at once. */
typedef dspy_status (*dspy_scripted_fn)(void *user, const dspy_json *messages,
                                        const dspy_json *kwargs, int32_t choice, char **text);
DSPY_API dspy_status dspy_lm_new_scripted_fn(dspy_scripted_fn fn, void *user, const dspy_lm_params *p,
                                             dspy_lm **out);
/* "scripted:<file>": the file holds either a JSON array of replies (used once each), or an
 * object {"replies": [...], "cycle": bool, "usage": {...}} — "usage" is reported with every
 * reply — or {"match": {"<substring>": reply, ...}}, which answers with the first reply whose
 * key occurs in the last message's content (DummyLM's dict mode; no match is DSPY_ERR_STATE).
 * Any other file (not opening with '{' or a '[' that isn't "[[") is plain text: its whole
 * content is the reply to every call, e.g. a ChatAdapter answer "[[ ## answer ## ]]\n...". */

/* Appends DummyLM's field rendering of `fields` (a JSON object) to `out`. */
DSPY_API dspy_status dspy_scripted_format_fields(const dspy_json *fields, dspy_str *out);

/* ---- Custom providers ---------------------------------------------------------------------
 * A provider turns one request into one OpenAI chat.completion response object:
 * {"choices": [{"message": {"content": ...}, "finish_reason": ...}], "usage": {...},
 *  "model": ...}. `request` is {"model": <the LM's model string>, "messages": [...],
 * ...merged kwargs with nulls, api_* keys included, without "rollout_id" and "cache"}.
 * `complete` must be safe to call from many threads at once; it returns a status with
 * dspy_fail's message on failure. `free` releases `impl` when the last LM using it goes. */
typedef struct dspy_lm_provider {
    const char *name;
    dspy_status (*complete)(void *impl, dspy_lm *lm, const dspy_json *request, dspy_json **out);
    void (*free)(void *impl);
} dspy_lm_provider;

/* An LM over a custom provider; `provider` must outlive the LM, `impl` is owned by it from
 * now on (freed with provider->free, also when this fails). */
DSPY_API dspy_status dspy_lm_new_custom(const char *model, const dspy_lm_params *p,
                                        const dspy_lm_provider *provider, void *impl, dspy_lm **out);

/* Timing parameters for providers: the LM's connect timeout, per-attempt deadline and
 * retry unit in seconds. */
DSPY_API double dspy_lm_connect_timeout_s(const dspy_lm *lm);
DSPY_API double dspy_lm_timeout_s(const dspy_lm *lm);
DSPY_API double dspy_lm_retry_unit_s(const dspy_lm *lm);

#ifdef __cplusplus
}
#endif
#endif
