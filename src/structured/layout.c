/* layout.c — Literal sets and the ChatAdapter field layout as automata (dspy/structured.h).
 *
 * The layout follows what DSPy's ChatAdapter writes for an assistant turn (adapter_chat.c,
 * dspy_adp_chat_assistant): "[[ ## f ## ]]\n" + value per output field, fields joined by "\n\n",
 * then "\n\n[[ ## completed ## ]]". Free text is bytes without '[' and without a blank line:
 * the parser takes any line that starts (after whitespace) with "[[ ## name ## ]]" as a header,
 * so text without '[' never opens one; and without "\n\n" the blank line before the next header
 * is where the text ends for sure (the automaton commits there).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "structured/structured_priv.h"

#define MAX_DFA_STATES 200000

/* One of the values (duplicates are harmless: the DFA merges them). */
static frag alt_of(nfa *a, const char *const *values, size_t n) {
    frag f = dspy_frag_bytes(a, values[0], strlen(values[0]));
    for (size_t i = 1; i < n; i++) f = dspy_frag_alt(a, f, dspy_frag_bytes(a, values[i], strlen(values[i])));
    return f;
}

dspy_status dspy_structured_finish(const dspy_structured_vocab *v, nfa *a, frag f, dspy_constraint **out) {
    if (a->oom) return dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory");
    a->s[f.out].accept = true;
    dfa d;
    dspy_status st = dspy_dfa_build(a, f.in, MAX_DFA_STATES, &d);
    if (st) return st;
    if (!(st = dspy_dfa_minimize(&d))) st = dspy_tokens_compile(v, &d, out);
    dspy_dfa_free(&d);
    return st;
}

dspy_status dspy_structured_literal(const dspy_structured_vocab *v, const char *const *values, size_t n,
                                    dspy_constraint **out) {
    *out = NULL;
    if (n == 0) return dspy_fail(DSPY_ERR_ARG, "structured: a Literal needs at least one value");
    for (size_t i = 0; i < n; i++)
        if (!values[i] || !*values[i])
            return dspy_fail(DSPY_ERR_ARG, "structured: Literal value %zu is empty; values must be non-empty strings", i);
    nfa a;
    dspy_nfa_init(&a);
    dspy_status st = dspy_structured_finish(v, &a, alt_of(&a, values, n), out);
    dspy_nfa_free(&a);
    return st;
}

static bool identifier(const char *s) {
    if (!s || !*s || (s[0] >= '0' && s[0] <= '9') || strlen(s) > 200) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* Free text: no '[', no "\n\n", and no trailing '\n' (the next "\n\n" is the separator). */
static frag free_text(nfa *a, int32_t max_tokens) {
    dspy_nfa_region_begin(a, max_tokens);
    uint32_t plain[8], nl[8];
    dspy_byteset_clear(plain);
    dspy_byteset_add_range(plain, 0, 255);
    plain['['>>5] &= ~(1u << ('[' & 31));
    plain['\n'>>5] &= ~(1u << ('\n' & 31));
    dspy_byteset_clear(nl);
    dspy_byteset_add(nl, '\n');
    frag one = dspy_frag_class(a, plain);
    frag pair = dspy_frag_cat(a, dspy_frag_class(a, nl), dspy_frag_class(a, plain));
    frag f = dspy_frag_star(a, dspy_frag_alt(a, one, pair));
    dspy_nfa_region_end(a);
    return f;
}

dspy_status dspy_structured_layout(const dspy_structured_vocab *v, const dspy_layout_field *fields, size_t n,
                                   dspy_constraint **out) {
    *out = NULL;
    if (n == 0) return dspy_fail(DSPY_ERR_ARG, "structured: a layout needs at least one field");
    for (size_t i = 0; i < n; i++) {
        const dspy_layout_field *f = &fields[i];
        if (!identifier(f->name))
            return dspy_fail(DSPY_ERR_ARG, "structured: layout field %zu: name '%s' is not an identifier "
                             "([A-Za-z_][A-Za-z0-9_]*, at most 200 bytes)", i, f->name ? f->name : "(null)");
        if (strcmp(f->name, "completed") == 0)
            return dspy_fail(DSPY_ERR_ARG, "structured: layout field %zu: 'completed' is the end marker, not a field", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(fields[j].name, f->name) == 0)
                return dspy_fail(DSPY_ERR_ARG, "structured: layout field '%s' appears twice", f->name);
        if (f->max_tokens < 0)
            return dspy_fail(DSPY_ERR_ARG, "structured: layout field '%s': max_tokens %d is negative", f->name,
                             f->max_tokens);
        if (f->n_values && !f->values)
            return dspy_fail(DSPY_ERR_ARG, "structured: layout field '%s': %zu values but no array", f->name, f->n_values);
        for (size_t k = 0; k < f->n_values; k++)
            if (!f->values[k] || !*f->values[k])
                return dspy_fail(DSPY_ERR_ARG, "structured: layout field '%s': value %zu is empty; Literal values "
                                 "must be non-empty", f->name, k);
    }
    nfa a;
    dspy_nfa_init(&a);
    frag all = dspy_frag_empty(&a);
    for (size_t i = 0; i < n; i++) {
        const dspy_layout_field *f = &fields[i];
        char head[300];
        int hl = snprintf(head, sizeof head, "%s[[ ## %s ## ]]\n", i ? "\n\n" : "", f->name);
        all = dspy_frag_cat(&a, all, dspy_frag_bytes(&a, head, (size_t)hl));
        all = dspy_frag_cat(&a, all, f->n_values ? alt_of(&a, f->values, f->n_values) : free_text(&a, f->max_tokens));
    }
    static const char done[] = "\n\n[[ ## completed ## ]]";
    all = dspy_frag_cat(&a, all, dspy_frag_bytes(&a, done, sizeof done - 1));
    dspy_status st = dspy_structured_finish(v, &a, all, out);
    dspy_nfa_free(&a);
    return st;
}
