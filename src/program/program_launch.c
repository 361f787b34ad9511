/* program_launch.c — launch()/kill() for a program's local LMs (dspy/compile.h).
 *
 * DSPy's compiled program calls lm.launch() on the fine-tuned LM, which starts an SGLang server
 * and points the LM's api_base at it (dspy_behaviour.md §10.7). Here a program's predictors
 * are walked, every distinct LM whose model is "openai/local:<dir>" gets a `dspy serve` child
 * (dspy/local.h; LMs of the same directory share one server), and its kwargs api_base/api_key
 * are set. kill stops the servers and removes api_base/api_key again (a deliberate difference
 * from DSPy, which keeps them: a dead server's address is useless, a call then fails at once
 * saying the LM is not launched instead of retrying a refused connection, and a program saved
 * after kill does not carry it).
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/compile.h"
#include "dspy/log.h"

typedef struct launched_lm {
    dspy_lm *lm;   /* retained */
    size_t server; /* index into servers */
} launched_lm;

struct dspy_launched {
    dspy_local_server **servers;
    size_t n_servers;
    launched_lm *lms;
    size_t n_lms;
    bool killed;
};

static bool is_local_model(const char *model) { return strncmp(model, "openai/local:", 13) == 0; }

size_t dspy_launched_count(const dspy_launched *l) { return l ? l->n_servers : 0; }

dspy_local_server *dspy_launched_server(const dspy_launched *l, size_t i) {
    return l && i < l->n_servers ? l->servers[i] : NULL;
}

static void clear_lm(dspy_lm *lm) {
    dspy_lm_set_kwarg(lm, "api_base", NULL);
    dspy_lm_set_kwarg(lm, "api_key", NULL);
}

dspy_status dspy_program_kill(dspy_launched *l) {
    if (!l || l->killed) return DSPY_OK;
    dspy_status first = DSPY_OK;
    char msg[1024] = "";
    for (size_t i = 0; i < l->n_lms; i++) clear_lm(l->lms[i].lm);
    for (size_t i = 0; i < l->n_servers; i++) {
        int code = 0;
        dspy_status st = dspy_local_kill(l->servers[i], &code);
        if (st && !first) {
            first = st;
            snprintf(msg, sizeof msg, "%s", dspy_errmsg());
        }
    }
    l->killed = true;
    return first ? dspy_fail(first, "%s", msg) : DSPY_OK;
}

void dspy_launched_free(dspy_launched *l) {
    if (!l) return;
    if (!l->killed) {
        for (size_t i = 0; i < l->n_lms; i++) clear_lm(l->lms[i].lm);
    }
    for (size_t i = 0; i < l->n_servers; i++) dspy_local_free(l->servers[i]);
    for (size_t i = 0; i < l->n_lms; i++) dspy_lm_free(l->lms[i].lm);
    free(l->servers);
    free(l->lms);
    free(l);
}

/* Whether the extra args already give option `name` ("--name V" or "--name=V"). */
static bool has_arg(const dspy_local_params *p, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < p->n_extra_args; i++)
        if (strncmp(p->extra_args[i], name, n) == 0 && (p->extra_args[i][n] == '\0' || p->extra_args[i][n] == '='))
            return true;
    return false;
}

/* lm.launch_kwargs -> server arguments: "chat_date" becomes `--chat-date DATE` (the date the
 * fine-tuning data was rendered with) and "device" (other than "auto") `--device NAME`, unless
 * the caller's extra args already set them. *args and *owned (malloc'd, may stay NULL) back
 * lp->extra_args. */
static dspy_status with_launch_kwargs(dspy_lm *lm, const dspy_local_params *p, dspy_local_params *lp,
                                      const char ***args, char **owned) {
    dspy_json *state = dspy_lm_dump_state(lm);
    if (!state) return dspy_fail(DSPY_ERR_NOMEM, "launch: out of memory");
    const dspy_json *lk = dspy_json_get(state, "launch_kwargs");
    const char *date = dspy_json_str_or(lk, "chat_date", NULL), *device = dspy_json_str_or(lk, "device", NULL);
    if (date && has_arg(p, "--chat-date")) date = NULL;
    if (device && (strcmp(device, "auto") == 0 || has_arg(p, "--device"))) device = NULL;
    dspy_status st = DSPY_OK;
    if (date || device) {
        /* the added arguments live in one malloc'd block: "--chat-date=D\0--device=X\0" */
        const char **a = malloc((p->n_extra_args + 2) * sizeof *a);
        char *block = NULL;
        dspy_str s = DSPY_STR_INIT;
        size_t date_len = 0;
        if (date) {
            dspy_str_appendf(&s, "--chat-date=%s", date);
            date_len = s.len;
            dspy_str_appendc(&s, '\0');
        }
        if (device) dspy_str_appendf(&s, "--device=%s", device);
        if (!a || !dspy_str_ok(&s) || !(block = dspy_str_take(&s))) {
            free(a);
            dspy_str_free(&s);
            st = dspy_fail(DSPY_ERR_NOMEM, "launch: out of memory");
        } else {
            size_t n = 0;
            for (size_t i = 0; i < p->n_extra_args; i++) a[n++] = p->extra_args[i];
            if (date) a[n++] = block;
            if (device) a[n++] = date ? block + date_len + 1 : block;
            lp->extra_args = a;
            lp->n_extra_args = n;
            *args = a;
            *owned = block;
        }
    }
    dspy_json_decref(state);
    return st;
}

dspy_status dspy_program_launch(dspy_module *program, const dspy_local_params *p, dspy_launched **out) {
    *out = NULL;
    dspy_named_predictor *preds = NULL;
    size_t np = 0;
    dspy_status st = dspy_module_named_predictors(program, &preds, &np);
    if (st) return st;
    dspy_launched *l = calloc(1, sizeof *l);
    if (l) {
        l->servers = calloc(np ? np : 1, sizeof *l->servers);
        l->lms = calloc(np ? np : 1, sizeof *l->lms);
    }
    if (!l || !l->servers || !l->lms) {
        dspy_named_predictors_free(preds, np);
        dspy_launched_free(l);
        return dspy_fail(DSPY_ERR_NOMEM, "launch: out of memory");
    }
    dspy_local_params def = dspy_local_params_default();
    if (!p) p = &def;
    for (size_t i = 0; i < np && !st; i++) {
        dspy_lm *lm = dspy_predict_lm(preds[i].predictor);
        if (!lm || !is_local_model(dspy_lm_model(lm))) continue;
        bool seen = false;
        for (size_t j = 0; j < l->n_lms && !seen; j++) seen = l->lms[j].lm == lm;
        if (seen) continue;
        dspy_json *kw = dspy_lm_kwargs(lm);
        bool has_base = kw && dspy_json_is_string(dspy_json_get(kw, "api_base"));
        dspy_json_decref(kw);
        if (has_base) { /* DSPy: "Server is already launched." */
            dspy_log(DSPY_LOG_INFO, "launch: %s already has an api_base; not launching another server",
                     dspy_lm_model(lm));
            continue;
        }
        const char *path = dspy_local_strip_model(dspy_lm_model(lm));
        size_t s = 0;
        while (s < l->n_servers && strcmp(dspy_local_model_path(l->servers[s]), path) != 0) s++;
        if (s == l->n_servers) {
            dspy_local_server *srv = NULL;
            dspy_local_params lp = *p;
            const char **args = NULL;
            char *owned = NULL;
            st = with_launch_kwargs(lm, p, &lp, &args, &owned);
            if (!st) st = dspy_local_launch(dspy_lm_model(lm), &lp, &srv);
            free(args);
            free(owned);
            if (st) {
                dspy_fail_wrap(st, "launch %s (predictor '%s')", dspy_lm_model(lm), preds[i].name);
                break;
            }
            l->servers[l->n_servers++] = srv;
        }
        dspy_json *base = dspy_json_string(dspy_local_api_base(l->servers[s]));
        dspy_json *key = dspy_json_string(p->api_key ? p->api_key : "local");
        l->lms[l->n_lms].lm = dspy_lm_retain(lm);
        l->lms[l->n_lms++].server = s;
        if (!base || !key) {
            dspy_json_decref(base);
            dspy_json_decref(key);
            st = dspy_fail(DSPY_ERR_NOMEM, "launch: out of memory");
            break;
        }
        st = dspy_lm_set_kwarg(lm, "api_base", base);
        if (!st) st = dspy_lm_set_kwarg(lm, "api_key", key);
        else dspy_json_decref(key);
    }
    dspy_named_predictors_free(preds, np);
    if (st) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", dspy_errmsg());
        dspy_program_kill(l);
        dspy_launched_free(l);
        return dspy_fail(st, "%s", msg);
    }
    *out = l;
    return DSPY_OK;
}
