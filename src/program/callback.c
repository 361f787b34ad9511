/* callback.c — callback tables, call ids and the adapter format/parse hooks that turn
 * dspy_adapter_call's observers into DSPy's on_adapter_* callbacks.
 *
 * Follows dspy/utils/callback.py with_callbacks: one uuid4 hex call id per wrapped call, every
 * start hook before and every end hook after it, in list order; callback failures never change
 * the call's result. Module and LM dispatch live in module.c and lm.c.
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/hash.h"
#include "program/callback_priv.h"

dspy_status dspy_cb_list_make(const dspy_callbacks *a, size_t na, const dspy_callbacks *b, size_t nb,
                         cb_list **out) {
    *out = NULL;
    if (!a) na = 0;
    if (!b) nb = 0;
    if (na + nb == 0) return DSPY_OK;
    cb_list *l = malloc(sizeof *l + (na + nb) * sizeof l->items[0]);
    if (!l) return dspy_fail(DSPY_ERR_NOMEM, "callbacks: out of memory");
    atomic_init(&l->refs, 1);
    l->n = na + nb;
    if (na) memcpy(l->items, a, na * sizeof *a);
    if (nb) memcpy(l->items + na, b, nb * sizeof *b);
    *out = l;
    return DSPY_OK;
}

cb_list *dspy_cb_list_retain(cb_list *l) {
    if (l) atomic_fetch_add(&l->refs, 1);
    return l;
}

void dspy_cb_list_free(cb_list *l) {
    if (l && atomic_fetch_sub(&l->refs, 1) == 1) free(l);
}

char *dspy_cb_err_save(dspy_status st) { return st ? strdup(dspy_errmsg()) : NULL; }

void dspy_cb_err_restore(dspy_status st, char *saved) {
    if (st) dspy_fail(st, "%s", saved ? saved : "(error message lost: out of memory)");
    free(saved);
}

/* ---- adapter hooks ----------------------------------------------------------------------- */

static char *new_id(void) {
    char *id = malloc(33);
    if (id) dspy_uuid4_hex(id);
    return id;
}

static void *format_start(void *user, dspy_adapter_kind a, const dspy_signature *sig, const dspy_json *demos,
                          const dspy_json *inputs) {
    cb_list *l = user;
    if (!l) return NULL;
    char *id = new_id();
    for (size_t i = 0; id && i < l->n; i++)
        if (l->items[i].on_adapter_format_start)
            l->items[i].on_adapter_format_start(l->items[i].user, id, a, sig, demos, inputs);
    return id;
}

static void format_end(void *user, void *token, const dspy_json *messages, dspy_status st) {
    cb_list *l = user;
    char *id = token;
    if (!l || !id) return;
    char *err = dspy_cb_err_save(st);
    for (size_t i = 0; i < l->n; i++)
        if (l->items[i].on_adapter_format_end)
            l->items[i].on_adapter_format_end(l->items[i].user, id, st ? NULL : messages, st, st ? (err ? err : "") : NULL);
    dspy_cb_err_restore(st, err);
    free(id);
}

static void *parse_start(void *user, dspy_adapter_kind a, const dspy_signature *sig, const char *completion) {
    cb_list *l = user;
    if (!l) return NULL;
    char *id = new_id();
    for (size_t i = 0; id && i < l->n; i++)
        if (l->items[i].on_adapter_parse_start)
            l->items[i].on_adapter_parse_start(l->items[i].user, id, a, sig, completion);
    return id;
}

static void parse_end(void *user, void *token, const dspy_json *fields, dspy_status st) {
    cb_list *l = user;
    char *id = token;
    if (!l || !id) return;
    char *err = dspy_cb_err_save(st);
    for (size_t i = 0; i < l->n; i++)
        if (l->items[i].on_adapter_parse_end)
            l->items[i].on_adapter_parse_end(l->items[i].user, id, st ? NULL : fields, st, st ? (err ? err : "") : NULL);
    dspy_cb_err_restore(st, err);
    free(id);
}

const dspy_adapter_hooks dspy_cb_adapter_hooks_template = {
    .user = NULL,
    .format_start = format_start,
    .format_end = format_end,
    .parse_start = parse_start,
    .parse_end = parse_end,
};
