/* signature.c — DSPy signatures (spec §1, dspy/signatures/signature.py).
 *
 * What: parsing "inputs -> outputs" as DSPy does (each side read as a Python parameter list,
 * annotations through type.c), default instructions, field prefix/desc defaults, prepend /
 * append / with_instructions, ChainOfThought's reasoning field, dump_state / load_state.
 * Not: class-based signatures, pydantic constraints, custom types.
 */
#include "dspy/signature.h"

#include <stdlib.h>
#include <string.h>

#include "program/pyliteral.h"
#include "program/pytext.h"
#include "program/type_priv.h"

typedef struct sig_field {
    char *name;
    dspy_field_kind kind;
    dspy_type *type;
    bool type_undefined;
    char *desc;
    char *prefix;
    dspy_json *def;
} sig_field;

struct dspy_signature {
    char *doc;          /* instructions as given */
    char *instructions; /* inspect.cleandoc(doc) */
    sig_field *fields;  /* inputs, then outputs */
    size_t n_in, n_out;
};

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "signature: out of memory"); }

static void field_clear(sig_field *f) {
    free(f->name);
    dspy_type_free(f->type);
    free(f->desc);
    free(f->prefix);
    dspy_json_decref(f->def);
    memset(f, 0, sizeof *f);
}

void dspy_signature_free(dspy_signature *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_in + s->n_out; i++) field_clear(&s->fields[i]);
    free(s->fields);
    free(s->doc);
    free(s->instructions);
    free(s);
}

char *dspy_infer_prefix(const char *name) {
    dspy_str s = DSPY_STR_INIT;
    dspy_py_infer_prefix(name, &s);
    return dspy_str_take(&s);
}

static char *xstrdup(const char *z) {
    size_t n = strlen(z);
    char *p = malloc(n + 1);
    if (p) memcpy(p, z, n + 1);
    return p;
}

/* Fills name/desc/prefix defaults. Takes ownership of `type`. */
static dspy_status field_init(sig_field *f, const char *name, size_t nlen, dspy_field_kind kind,
                              dspy_type *type, bool undefined, const char *desc,
                              const char *prefix) {
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->type = type;
    f->type_undefined = undefined;
    if (!(f->name = malloc(nlen + 1))) return nomem();
    memcpy(f->name, name, nlen);
    f->name[nlen] = '\0';
    dspy_str d = DSPY_STR_INIT, p = DSPY_STR_INIT;
    if (desc) dspy_str_append(&d, desc);
    else dspy_str_appendf(&d, "${%s}", f->name);
    if (prefix) dspy_str_append(&p, prefix);
    else {
        dspy_py_infer_prefix(f->name, &p);
        dspy_str_appendc(&p, ':');
    }
    f->desc = dspy_str_take(&d);
    f->prefix = dspy_str_take(&p);
    dspy_str_free(&d);
    dspy_str_free(&p);
    return f->desc && f->prefix ? DSPY_OK : nomem();
}

static dspy_status field_copy(sig_field *dst, const sig_field *src) {
    memset(dst, 0, sizeof *dst);
    dst->kind = src->kind;
    dst->type_undefined = src->type_undefined;
    dst->name = xstrdup(src->name);
    dst->desc = xstrdup(src->desc);
    dst->prefix = xstrdup(src->prefix);
    dst->type = dspy_type_copy(src->type);
    dst->def = src->def ? dspy_json_copy(src->def) : NULL;
    if (!dst->name || !dst->desc || !dst->prefix || !dst->type || (src->def && !dst->def)) {
        field_clear(dst);
        return nomem();
    }
    return DSPY_OK;
}

/* Sets doc and instructions; NULL doc = DSPy's default from the field names. */
static dspy_status set_doc(dspy_signature *s, const char *doc) {
    dspy_str d = DSPY_STR_INIT, c = DSPY_STR_INIT;
    if (doc) {
        dspy_str_append(&d, doc);
    } else {
        dspy_str_append(&d, "Given the fields ");
        for (size_t i = 0; i < s->n_in; i++)
            dspy_str_appendf(&d, "%s`%s`", i ? ", " : "", s->fields[i].name);
        dspy_str_append(&d, ", produce the fields ");
        for (size_t i = 0; i < s->n_out; i++)
            dspy_str_appendf(&d, "%s`%s`", i ? ", " : "", s->fields[s->n_in + i].name);
        dspy_str_append(&d, ".");
    }
    dspy_py_cleandoc(dspy_str_cstr(&d), &c);
    char *dd = dspy_str_take(&d), *cc = dspy_str_take(&c);
    dspy_str_free(&d);
    dspy_str_free(&c);
    if (!dd || !cc) {
        free(dd);
        free(cc);
        return nomem();
    }
    free(s->doc);
    free(s->instructions);
    s->doc = dd;
    s->instructions = cc;
    return DSPY_OK;
}

/* ---- string parsing ----------------------------------------------------------------------------- */

typedef struct parsed_field {
    size_t name_at, name_len;
    dspy_type *type;
    bool undefined;
} parsed_field;

static void parsed_free(parsed_field *v, size_t n) {
    for (size_t i = 0; i < n; i++) dspy_type_free(v[i].type);
    free(v);
}

static dspy_status syntax_error(const char *text, size_t pos, const char *which) {
    return dspy_fail(DSPY_ERR_FORMAT,
                     "signature '%s': column %zu: invalid syntax in the %s; write fields as "
                     "`name` or `name: type`, separated by commas", text, pos + 1, which);
}

/* One side of the arrow, read as the parameter list of `def f(<side>): pass`. */
static dspy_status parse_side(const char *text, size_t from, size_t to, const char *which,
                              parsed_field **out, size_t *nout) {
    *out = NULL;
    *nout = 0;
    size_t cap = 0;
    py_cursor c = {text, to, from};
    bool need_name = false;
    dspy_status st = DSPY_OK;
    for (;;) {
        dspy_pyc_skip_ws(&c);
        if (c.pos >= c.n) {
            if (need_name && *nout == 0) {
                st = syntax_error(text, c.pos, which);
                goto fail;
            }
            break;
        }
        size_t col = c.pos + 1;
        size_t nl = dspy_pyc_name_len(&c);
        if (!nl) {
            char ch = dspy_pyc_peek(&c);
            if (ch == '*' || ch == '/')
                st = dspy_fail(DSPY_ERR_FORMAT,
                               "signature '%s': column %zu: '%c' parameters are not allowed in "
                               "the %s; list fields as `name` or `name: type`", text, col, ch,
                               which);
            else
                st = dspy_fail(DSPY_ERR_FORMAT,
                               "signature '%s': column %zu: expected a field name (a Python "
                               "identifier) in the %s", text, col, which);
            goto fail;
        }
        if (dspy_py_is_keyword(text + c.pos, nl)) {
            st = dspy_fail(DSPY_ERR_FORMAT,
                           "signature '%s': column %zu: '%.*s' is a Python keyword and cannot "
                           "be a field name", text, col, (int)nl, text + c.pos);
            goto fail;
        }
        for (size_t i = 0; i < *nout; i++) {
            if ((*out)[i].name_len == nl && memcmp(text + (*out)[i].name_at, text + c.pos, nl) == 0) {
                st = dspy_fail(DSPY_ERR_FORMAT,
                               "signature '%s': column %zu: duplicate field '%.*s' in the %s",
                               text, col, (int)nl, text + c.pos, which);
                goto fail;
            }
        }
        if (*nout == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            parsed_field *v = realloc(*out, ncap * sizeof *v);
            if (!v) {
                st = nomem();
                goto fail;
            }
            *out = v;
            cap = ncap;
        }
        parsed_field *f = &(*out)[*nout];
        memset(f, 0, sizeof *f);
        f->name_at = c.pos;
        f->name_len = nl;
        (*nout)++;
        c.pos += nl;
        dspy_pyc_skip_ws(&c);
        if (dspy_pyc_eat(&c, ":")) {
            st = dspy_type_parse_at(&c, &f->type);
            if (st) {
                st = dspy_fail_wrap(st, "signature '%s'", text);
                goto fail;
            }
            dspy_pyc_skip_ws(&c);
        } else {
            f->undefined = true;
            if (!(f->type = dspy_type_new_str())) {
                st = nomem();
                goto fail;
            }
        }
        if (dspy_pyc_peek(&c) == '=' && c.pos < c.n) {
            st = dspy_fail(DSPY_ERR_FORMAT,
                           "signature '%s': column %zu: default values are not supported in "
                           "string signatures (field '%.*s')", text, c.pos + 1, (int)nl,
                           text + f->name_at);
            goto fail;
        }
        if (c.pos >= c.n) break;
        if (!dspy_pyc_eat(&c, ",")) {
            st = syntax_error(text, c.pos, which);
            goto fail;
        }
        need_name = true;
    }
    return DSPY_OK;
fail:
    parsed_free(*out, *nout);
    *out = NULL;
    *nout = 0;
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

dspy_status dspy_signature_parse(const char *text, const char *instructions, dspy_signature **out) {
    *out = NULL;
    size_t arrows = 0, at = 0, n = strlen(text);
    for (size_t i = 0; i + 1 < n; i++)
        if (text[i] == '-' && text[i + 1] == '>') {
            if (!arrows) at = i;
            arrows++;
            i++;
        }
    if (arrows != 1)
        return dspy_fail(DSPY_ERR_FORMAT,
                         "Invalid signature format: '%s', must contain exactly one '->'.", text);
    parsed_field *in = NULL, *outf = NULL;
    size_t nin = 0, nout = 0;
    dspy_signature *s = NULL;
    const char **dups = NULL;
    dspy_status st = parse_side(text, 0, at, "inputs", &in, &nin);
    if (st) return st;
    st = parse_side(text, at + 2, n, "outputs", &outf, &nout);
    if (st) goto done;
    size_t ndup = 0;
    dups = calloc(nin + 1, sizeof *dups);
    char *names = malloc(n + 1);
    if (!dups || !names) {
        free(names);
        st = nomem();
        goto done;
    }
    memcpy(names, text, n + 1);
    for (size_t i = 0; i < nin; i++)
        for (size_t j = 0; j < nout; j++)
            if (in[i].name_len == outf[j].name_len &&
                memcmp(text + in[i].name_at, text + outf[j].name_at, in[i].name_len) == 0) {
                names[in[i].name_at + in[i].name_len] = '\0';
                dups[ndup++] = names + in[i].name_at;
            }
    if (ndup) {
        qsort(dups, ndup, sizeof *dups, cmp_str);
        dspy_str m = DSPY_STR_INIT;
        for (size_t i = 0; i < ndup; i++) dspy_str_appendf(&m, "%s%s", i ? ", " : "", dups[i]);
        st = dspy_fail(DSPY_ERR_FORMAT,
                       "Input and output fields must have distinct names, but found duplicates: "
                       "'%s'.", dspy_str_cstr(&m));
        dspy_str_free(&m);
        free(names);
        goto done;
    }
    free(names);
    s = calloc(1, sizeof *s);
    if (!s || !(s->fields = calloc(nin + nout + 1, sizeof *s->fields))) {
        st = nomem();
        goto done;
    }
    for (size_t i = 0; i < nin + nout; i++) {
        parsed_field *pf = i < nin ? &in[i] : &outf[i - nin];
        st = field_init(&s->fields[i], text + pf->name_at, pf->name_len,
                        i < nin ? DSPY_FIELD_INPUT : DSPY_FIELD_OUTPUT, pf->type,
                        i < nin && pf->undefined, NULL, NULL);
        pf->type = NULL;
        if (i < nin) s->n_in++;
        else s->n_out++;
        if (st) goto done;
    }
    st = set_doc(s, instructions);
done:
    free(dups);
    parsed_free(in, nin);
    parsed_free(outf, nout);
    if (st) {
        dspy_signature_free(s);
        return st;
    }
    *out = s;
    return DSPY_OK;
}

/* ---- programmatic construction -------------------------------------------------------------------- */

static dspy_status spec_to_field(const dspy_field_spec *f, sig_field *dst) {
    memset(dst, 0, sizeof *dst);
    if (!f->name || !dspy_py_is_identifier(f->name, strlen(f->name)))
        return dspy_fail(DSPY_ERR_ARG, "signature field name '%s' is not a Python identifier",
                         f->name ? f->name : "(null)");
    dspy_type *t = NULL;
    if (f->type) {
        dspy_status st = dspy_type_parse(f->type, &t);
        if (st) return dspy_fail_wrap(st, "signature field '%s'", f->name);
    } else if (!(t = dspy_type_new_str())) {
        return nomem();
    }
    dspy_status st = field_init(dst, f->name, strlen(f->name), f->kind, t,
                                !f->type && f->kind == DSPY_FIELD_INPUT, f->desc, f->prefix);
    if (st) field_clear(dst);
    return st;
}

/* Builds a signature from already-built fields (taking ownership of them), validating names. */
static dspy_status assemble(sig_field *fields, size_t n, const char *doc, bool default_doc,
                            dspy_signature **out) {
    *out = NULL;
    dspy_status st = DSPY_OK;
    dspy_signature *s = calloc(1, sizeof *s);
    if (!s || !(s->fields = calloc(n + 1, sizeof *s->fields))) {
        free(s);
        for (size_t i = 0; i < n; i++) field_clear(&fields[i]);
        return nomem();
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(fields[i].name, fields[j].name) == 0 && !st)
                st = dspy_fail(DSPY_ERR_ARG, "signature: field '%s' appears twice; field names "
                               "must be distinct", fields[i].name);
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++)
            if ((fields[i].kind == DSPY_FIELD_INPUT) == (pass == 0)) {
                s->fields[k++] = fields[i];
                if (pass == 0) s->n_in++;
                else s->n_out++;
            }
    if (!st) st = set_doc(s, default_doc ? NULL : doc);
    if (st) {
        dspy_signature_free(s);
        return st;
    }
    *out = s;
    return DSPY_OK;
}

dspy_status dspy_signature_new(const dspy_field_spec *fields, size_t n, const char *instructions,
                               dspy_signature **out) {
    *out = NULL;
    sig_field *f = calloc(n + 1, sizeof *f);
    if (!f) return nomem();
    for (size_t i = 0; i < n; i++) {
        dspy_status st = spec_to_field(&fields[i], &f[i]);
        if (st) {
            for (size_t j = 0; j < i; j++) field_clear(&f[j]);
            free(f);
            return st;
        }
    }
    dspy_status st = assemble(f, n, instructions, instructions == NULL, out);
    free(f);
    return st;
}

dspy_status dspy_signature_copy(const dspy_signature *s, dspy_signature **out) {
    *out = NULL;
    size_t n = s->n_in + s->n_out;
    sig_field *f = calloc(n + 1, sizeof *f);
    if (!f) return nomem();
    for (size_t i = 0; i < n; i++) {
        dspy_status st = field_copy(&f[i], &s->fields[i]);
        if (st) {
            for (size_t j = 0; j < i; j++) field_clear(&f[j]);
            free(f);
            return st;
        }
    }
    dspy_status st = assemble(f, n, s->doc, false, out);
    free(f);
    return st;
}

/* Copy of s with `extra` inserted at the start (prepend) or end (append) of its section. */
static dspy_status insert_field(const dspy_signature *s, const dspy_field_spec *spec, bool front,
                                const char *doc, dspy_signature **out) {
    *out = NULL;
    size_t n = s->n_in + s->n_out;
    sig_field *f = calloc(n + 2, sizeof *f);
    if (!f) return nomem();
    sig_field extra;
    dspy_status st = spec_to_field(spec, &extra);
    if (st) {
        free(f);
        return st;
    }
    size_t k = 0;
    /* section boundaries: inputs [0, n_in), outputs [n_in, n) */
    size_t ins = spec->kind == DSPY_FIELD_INPUT ? (front ? 0 : s->n_in) : (front ? s->n_in : n);
    for (size_t i = 0; i <= n; i++) {
        if (i == ins) f[k++] = extra;
        if (i == n) break;
        st = field_copy(&f[k], &s->fields[i]);
        if (st) {
            for (size_t j = 0; j < k; j++) field_clear(&f[j]);
            if (ins > i) field_clear(&extra);
            free(f);
            return st;
        }
        k++;
    }
    st = assemble(f, n + 1, doc ? doc : s->doc, false, out);
    free(f);
    return st;
}

dspy_status dspy_signature_prepend(const dspy_signature *s, const dspy_field_spec *field,
                                   dspy_signature **out) {
    return insert_field(s, field, true, NULL, out);
}

dspy_status dspy_signature_append(const dspy_signature *s, const dspy_field_spec *field,
                                  dspy_signature **out) {
    return insert_field(s, field, false, NULL, out);
}

dspy_status dspy_signature_with_instructions(const dspy_signature *s, const char *instructions,
                                             dspy_signature **out) {
    dspy_status st = dspy_signature_copy(s, out);
    if (st) return st;
    st = set_doc(*out, instructions ? instructions : "");
    if (st) {
        dspy_signature_free(*out);
        *out = NULL;
    }
    return st;
}

dspy_status dspy_signature_chain_of_thought(const dspy_signature *s, dspy_profile p,
                                            dspy_signature **out) {
    dspy_field_spec r = {
        .name = "reasoning",
        .kind = DSPY_FIELD_OUTPUT,
        .type = "str",
        .desc = "${reasoning}",
        .prefix = p == DSPY_PROFILE_V26 ? "Reasoning: Let's think step by step in order to"
                                        : "Reasoning:",
    };
    return dspy_signature_prepend(s, &r, out);
}

/* ---- accessors ------------------------------------------------------------------------------------ */

size_t dspy_signature_n_inputs(const dspy_signature *s) { return s->n_in; }
size_t dspy_signature_n_outputs(const dspy_signature *s) { return s->n_out; }
size_t dspy_signature_n_fields(const dspy_signature *s) { return s->n_in + s->n_out; }

#define FIELD(s, i) (DSPY_ASSERT((i) < (s)->n_in + (s)->n_out), &(s)->fields[i])

const char *dspy_signature_field_name(const dspy_signature *s, size_t i) { return FIELD(s, i)->name; }
dspy_field_kind dspy_signature_field_kind(const dspy_signature *s, size_t i) { return FIELD(s, i)->kind; }
const dspy_type *dspy_signature_field_type(const dspy_signature *s, size_t i) { return FIELD(s, i)->type; }
const char *dspy_signature_field_desc(const dspy_signature *s, size_t i) { return FIELD(s, i)->desc; }
const char *dspy_signature_field_prefix(const dspy_signature *s, size_t i) { return FIELD(s, i)->prefix; }
bool dspy_signature_field_type_undefined(const dspy_signature *s, size_t i) {
    return FIELD(s, i)->type_undefined;
}
const dspy_json *dspy_signature_field_default(const dspy_signature *s, size_t i) {
    return FIELD(s, i)->def;
}

bool dspy_signature_find(const dspy_signature *s, const char *name, size_t *index) {
    for (size_t i = 0; i < s->n_in + s->n_out; i++)
        if (strcmp(s->fields[i].name, name) == 0) {
            if (index) *index = i;
            return true;
        }
    return false;
}

const char *dspy_signature_instructions(const dspy_signature *s) { return s->instructions; }

char *dspy_signature_text(const dspy_signature *s) {
    dspy_str t = DSPY_STR_INIT;
    for (size_t i = 0; i < s->n_in; i++) dspy_str_appendf(&t, "%s%s", i ? ", " : "", s->fields[i].name);
    dspy_str_append(&t, " -> ");
    for (size_t i = 0; i < s->n_out; i++)
        dspy_str_appendf(&t, "%s%s", i ? ", " : "", s->fields[s->n_in + i].name);
    return dspy_str_take(&t);
}

static dspy_status find_or_fail(const dspy_signature *s, const char *name, size_t *i) {
    if (dspy_signature_find(s, name, i)) return DSPY_OK;
    char *t = dspy_signature_text(s);
    dspy_status st = dspy_fail(DSPY_ERR_NOTFOUND, "signature '%s' has no field '%s'",
                               t ? t : "?", name);
    free(t);
    return st;
}

static dspy_status replace_str(char **slot, const char *v) {
    char *c = xstrdup(v);
    if (!c) return nomem();
    free(*slot);
    *slot = c;
    return DSPY_OK;
}

dspy_status dspy_signature_set_desc(dspy_signature *s, const char *name, const char *desc) {
    size_t i = 0;
    dspy_status st = find_or_fail(s, name, &i);
    return st ? st : replace_str(&s->fields[i].desc, desc);
}

dspy_status dspy_signature_set_prefix(dspy_signature *s, const char *name, const char *prefix) {
    size_t i = 0;
    dspy_status st = find_or_fail(s, name, &i);
    return st ? st : replace_str(&s->fields[i].prefix, prefix);
}

dspy_status dspy_signature_set_default(dspy_signature *s, const char *name, const dspy_json *value) {
    size_t i = 0;
    dspy_status st = find_or_fail(s, name, &i);
    if (st) return st;
    if (s->fields[i].kind != DSPY_FIELD_OUTPUT)
        return dspy_fail(DSPY_ERR_ARG, "signature field '%s' is an input; only output fields "
                         "take defaults", name);
    dspy_json *c = NULL;
    if (value && !(c = dspy_json_copy(value))) return nomem();
    dspy_json_decref(s->fields[i].def);
    s->fields[i].def = c;
    return DSPY_OK;
}

/* ---- state ---------------------------------------------------------------------------------------- */

dspy_status dspy_signature_dump_state(const dspy_signature *s, dspy_json **out) {
    *out = NULL;
    dspy_json *st = dspy_json_object(), *fields = dspy_json_array();
    if (!st || !fields) goto fail;
    if (dspy_json_set_str(st, "instructions", s->instructions)) goto fail;
    for (size_t i = 0; i < s->n_in + s->n_out; i++) {
        dspy_json *f = dspy_json_object();
        if (!f || dspy_json_set_str(f, "prefix", s->fields[i].prefix) ||
            dspy_json_set_str(f, "description", s->fields[i].desc) || dspy_json_append(fields, f))
            goto fail;
    }
    if (dspy_json_set(st, "fields", fields)) {
        fields = NULL;
        goto fail;
    }
    *out = st;
    return DSPY_OK;
fail:
    dspy_json_decref(st);
    dspy_json_decref(fields);
    return nomem();
}

dspy_status dspy_signature_load_state(const dspy_signature *s, const dspy_json *state,
                                      dspy_signature **out) {
    *out = NULL;
    const char *instr;
    dspy_status st = dspy_json_get_strv(state, "instructions", "signature state", &instr);
    if (st) return st;
    const dspy_json *fields = dspy_json_get(state, "fields");
    if (!fields || dspy_json_typeof(fields) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_FORMAT, "signature state: \"fields\" must be a list of "
                         "{\"prefix\", \"description\"} objects");
    size_t nf = dspy_json_size(fields), n = s->n_in + s->n_out;
    for (size_t i = 0; i < nf && i < n; i++) {
        const dspy_json *f = dspy_json_at(fields, i);
        if (!dspy_json_is_string(dspy_json_get(f, "prefix")) ||
            !dspy_json_is_string(dspy_json_get(f, "description")))
            return dspy_fail(DSPY_ERR_FORMAT, "signature state: fields[%zu] needs string "
                             "\"prefix\" and \"description\"", i);
    }
    dspy_signature *c;
    st = dspy_signature_copy(s, &c);
    if (st) return st;
    st = set_doc(c, instr);
    for (size_t i = 0; !st && i < nf && i < n; i++) {
        const dspy_json *f = dspy_json_at(fields, i);
        st = replace_str(&c->fields[i].prefix, dspy_json_str(dspy_json_get(f, "prefix")));
        if (!st) st = replace_str(&c->fields[i].desc, dspy_json_str(dspy_json_get(f, "description")));
    }
    if (st) {
        dspy_signature_free(c);
        return st;
    }
    *out = c;
    return DSPY_OK;
}
