/* local_args.c — `dspy serve` options -> dspy_server_params, for the in-process server.
 *
 * dspy_local_params.extra_args are `dspy serve` arguments ("--max-seqs", "16" or
 * "--max-seqs=16"), so one list works whether the launcher starts a child or a thread. This
 * file reads that list into server parameters with the CLI's option names; the ranges are
 * checked by dspy_server_new. Options that only make sense for a process of its own
 * (--parent-pid, --api-key-file, --api-key, --model, --host, --port: the launcher sets those
 * itself) are refused, naming the option.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lm/lm_internal.h"

typedef enum { ARG_STR, ARG_I32, ARG_I64, ARG_SIZE, ARG_MS, ARG_FLAG } arg_kind;

typedef struct serve_arg {
    const char *name; /* without "--" */
    arg_kind kind;
    size_t offset; /* of the field in dspy_server_params */
} serve_arg;

#define F(field) offsetof(dspy_server_params, field)
static const serve_arg k_args[] = {
    {"tokenizer", ARG_STR, F(tokenizer_dir)},
    {"allowed-hosts", ARG_STR, F(allowed_hosts)},
    {"cors-origin", ARG_STR, F(cors_origin)},
    {"served-model-name", ARG_STR, F(served_model_name)},
    {"chat-date", ARG_STR, F(chat_date)},
    {"device", ARG_STR, F(device)},
    {"max-seqs", ARG_I32, F(max_seqs)},
    {"replicas", ARG_I32, F(replicas)},
    {"max-queue", ARG_I32, F(max_queue)},
    {"kv-tokens", ARG_I32, F(kv_tokens)},
    {"kv-memory-percent", ARG_I32, F(kv_memory_percent)},
    {"max-batch-tokens", ARG_I32, F(max_batch_tokens)},
    {"spec-tokens", ARG_I32, F(spec_tokens)},
    {"jump-tokens", ARG_I32, F(jump_tokens)},
    {"default-max-tokens", ARG_I32, F(default_max_tokens)},
    {"max-n", ARG_I32, F(max_n)},
    {"structured-max-tokens", ARG_I32, F(structured_max_tokens)},
    {"max-request-tokens", ARG_I64, F(max_request_tokens)},
    {"max-connections", ARG_I32, F(max_connections)},
    {"max-per-client", ARG_I32, F(max_per_client)},
    {"threads", ARG_I32, F(n_threads)},
    {"max-body", ARG_SIZE, F(max_body_bytes)},
    {"request-timeout", ARG_MS, F(read_timeout_ms)},
    {"shutdown-grace", ARG_MS, F(shutdown_grace_ms)},
    {"strict", ARG_FLAG, F(strict)},
    {"weights", ARG_STR, F(weights)},
};
#undef F

static const serve_arg *find_arg(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof k_args / sizeof *k_args; i++)
        if (strlen(k_args[i].name) == n && strncmp(k_args[i].name, name, n) == 0) return &k_args[i];
    return NULL;
}

/* A whole decimal integer in [0, max]. */
static bool parse_count(const char *v, int64_t max, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < 0 || x > max) return false;
    *out = x;
    return true;
}

static dspy_status set_arg(const serve_arg *a, const char *value, dspy_server_params *p) {
    char *field = (char *)p + a->offset;
    int64_t x = 0;
    int64_t max = a->kind == ARG_MS ? INT32_MAX / 1000 : a->kind == ARG_I32 ? INT32_MAX : INT64_MAX;
    if (a->kind == ARG_STR) {
        *(const char **)(void *)field = value;
        return DSPY_OK;
    }
    if (!parse_count(value, max, &x))
        return dspy_fail(DSPY_ERR_ARG, "local: --%s wants a whole number from 0 to %lld (got '%s')", a->name,
                         (long long)max, value);
    switch (a->kind) {
    case ARG_I32: *(int32_t *)(void *)field = (int32_t)x; break;
    case ARG_I64: *(int64_t *)(void *)field = x; break;
    case ARG_SIZE: *(size_t *)(void *)field = (size_t)x; break;
    case ARG_MS: *(int *)(void *)field = (int)(x * 1000); break; /* the CLI takes seconds */
    default: break;
    }
    return DSPY_OK;
}

dspy_status dspy_local_serve_args(const char *const *args, size_t n, dspy_server_params *p, bool *grace_set) {
    *grace_set = false;
    for (size_t i = 0; i < n; i++) {
        const char *arg = args[i];
        if (!arg || strncmp(arg, "--", 2) != 0)
            return dspy_fail(DSPY_ERR_ARG, "local: extra argument '%s' is not a `dspy serve` option (--name VALUE)",
                             arg ? arg : "(null)");
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const serve_arg *a = find_arg(name, len);
        if (!a)
            return dspy_fail(DSPY_ERR_ARG, "local: `%.*s` is not an option of the in-process server; give it to a "
                                           "`dspy serve` child instead (set DSPY_BIN or dspy_local_params.mode = "
                                           "DSPY_LOCAL_CHILD)", (int)len + 2, arg);
        if (a->kind == ARG_FLAG) {
            if (eq) return dspy_fail(DSPY_ERR_ARG, "local: --%s takes no value", a->name);
            *(bool *)(void *)((char *)p + a->offset) = true;
            continue;
        }
        const char *value = eq ? eq + 1 : i + 1 < n ? args[++i] : NULL;
        if (!value) return dspy_fail(DSPY_ERR_ARG, "local: --%s needs a value", a->name);
        dspy_status st = set_arg(a, value, p);
        if (st) return st;
        if (a->offset == offsetof(dspy_server_params, shutdown_grace_ms)) *grace_set = true;
    }
    return DSPY_OK;
}
