/* type.c — signature field types: parsing, DSPy's Python-style names, pydantic JSON schemas.
 *
 * What: the annotation grammar of DSPy string signatures (signature.py:_parse_type_node) over
 * the builtin and typing names DSPy resolves, turned into dspy_type trees with typing's own
 * normalisation (Union flattening/de-duplication, Optional[X] = Union[X, None], Literal
 * de-duplication); get_annotation_name (utils.py) for V33 and V26; pydantic 2.11+ JSON schemas
 * (json_schema.py: list/set/tuple/dict/literal/nullable/union rules, keys sorted).
 * Not: custom classes, Enums, pydantic models, forward references. Value parsing lives in
 * type_value.c.
 */
#include "program/type_priv.h"

#include <stdlib.h>
#include <string.h>

#include "program/pytext.h"

/* ---- profiles ---------------------------------------------------------------------------------- */

const char *dspy_profile_name(dspy_profile p) { return p == DSPY_PROFILE_V26 ? "2.6" : "3.3"; }

dspy_status dspy_profile_parse(const char *s, dspy_profile *out) {
    static const char *const v33[] = {"3.3", "3.3.1", "v33", "V33", "3", NULL};
    static const char *const v26[] = {"2.6", "2.6.0", "2.6.0rc8", "v26", "V26", NULL};
    for (int i = 0; v33[i]; i++)
        if (s && strcmp(s, v33[i]) == 0) {
            *out = DSPY_PROFILE_V33;
            return DSPY_OK;
        }
    for (int i = 0; v26[i]; i++)
        if (s && strcmp(s, v26[i]) == 0) {
            *out = DSPY_PROFILE_V26;
            return DSPY_OK;
        }
    return dspy_fail(DSPY_ERR_ARG,
                     "unknown DSPy format profile '%s': use 3.3 (DSPy 3.3.1, the default) or "
                     "2.6 (the tutorial's DSPy 2.6)", s ? s : "(null)");
}

/* ---- construction ------------------------------------------------------------------------------- */

static dspy_type *type_new(dspy_type_kind k) {
    dspy_type *t = calloc(1, sizeof *t);
    if (t) t->kind = k;
    return t;
}

dspy_type *dspy_type_new_str(void) { return type_new(DSPY_TYPE_STR); }

void dspy_type_free(dspy_type *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nargs; i++) dspy_type_free(t->args[i]);
    free(t->args);
    dspy_json_decref(t->literals);
    free(t);
}

dspy_type *dspy_type_copy(const dspy_type *t) {
    if (!t) return NULL;
    dspy_type *c = type_new(t->kind);
    if (!c) return NULL;
    c->variadic = t->variadic;
    if (t->literals && !(c->literals = dspy_json_copy(t->literals))) goto fail;
    if (t->nargs) {
        c->args = calloc(t->nargs, sizeof *c->args);
        if (!c->args) goto fail;
        for (size_t i = 0; i < t->nargs; i++) {
            c->args[i] = dspy_type_copy(t->args[i]);
            c->nargs = i + 1;
            if (!c->args[i]) goto fail;
        }
    }
    return c;
fail:
    dspy_type_free(c);
    return NULL;
}

dspy_type_kind dspy_type_kind_of(const dspy_type *t) { return t->kind; }
size_t dspy_type_nargs(const dspy_type *t) { return t->nargs; }
const dspy_type *dspy_type_arg(const dspy_type *t, size_t i) {
    return i < t->nargs ? t->args[i] : NULL;
}
bool dspy_type_is_variadic(const dspy_type *t) { return t->variadic; }
const dspy_json *dspy_type_literal_values(const dspy_type *t) {
    return t->kind == DSPY_TYPE_LITERAL ? t->literals : NULL;
}

bool dspy_type_allows_none(const dspy_type *t) {
    if (t->kind == DSPY_TYPE_NONE || t->kind == DSPY_TYPE_ANY) return true;
    if (t->kind == DSPY_TYPE_UNION)
        for (size_t i = 0; i < t->nargs; i++)
            if (dspy_type_allows_none(t->args[i])) return true;
    if (t->kind == DSPY_TYPE_LITERAL)
        for (size_t i = 0; i < dspy_json_size(t->literals); i++)
            if (dspy_json_typeof(dspy_json_at(t->literals, i)) == DSPY_JSON_NULL) return true;
    return false;
}

bool dspy_type_py_eq(const dspy_json *a, const dspy_json *b) {
    dspy_json_type ta = dspy_json_typeof(a), tb = dspy_json_typeof(b);
    bool na = ta == DSPY_JSON_INT || ta == DSPY_JSON_REAL || ta == DSPY_JSON_BOOL;
    bool nb = tb == DSPY_JSON_INT || tb == DSPY_JSON_REAL || tb == DSPY_JSON_BOOL;
    if (na && nb) {
        double x = ta == DSPY_JSON_BOOL ? (dspy_json_truthy(a) ? 1.0 : 0.0) : dspy_json_number(a);
        double y = tb == DSPY_JSON_BOOL ? (dspy_json_truthy(b) ? 1.0 : 0.0) : dspy_json_number(b);
        if (ta == DSPY_JSON_INT && tb == DSPY_JSON_INT)
            return dspy_json_intval(a) == dspy_json_intval(b);
        return x == y;
    }
    return dspy_json_equal(a, b);
}

/* typing's Literal identity: same Python type and equal value. */
static bool literal_same(const dspy_json *a, const dspy_json *b) {
    return dspy_json_typeof(a) == dspy_json_typeof(b) && dspy_type_py_eq(a, b);
}

static bool literal_in(const dspy_json *arr, const dspy_json *v) {
    for (size_t i = 0; i < dspy_json_size(arr); i++)
        if (literal_same(dspy_json_at(arr, i), v)) return true;
    return false;
}

bool dspy_type_equal(const dspy_type *a, const dspy_type *b) {
    if (a->kind != b->kind || a->variadic != b->variadic) return false;
    if (a->kind == DSPY_TYPE_LITERAL) {
        /* typing compares Literal args as sets of (value, type) */
        if (dspy_json_size(a->literals) != dspy_json_size(b->literals)) return false;
        for (size_t i = 0; i < dspy_json_size(a->literals); i++)
            if (!literal_in(b->literals, dspy_json_at(a->literals, i))) return false;
        return true;
    }
    if (a->nargs != b->nargs) return false;
    if (a->kind == DSPY_TYPE_UNION) {
        for (size_t i = 0; i < a->nargs; i++) {
            bool found = false;
            for (size_t j = 0; j < b->nargs && !found; j++)
                found = dspy_type_equal(a->args[i], b->args[j]);
            if (!found) return false;
        }
        return true;
    }
    for (size_t i = 0; i < a->nargs; i++)
        if (!dspy_type_equal(a->args[i], b->args[i])) return false;
    return true;
}

/* ---- parsing ---------------------------------------------------------------------------------- */

typedef enum { N_TYPE, N_FORM, N_MODULE, N_CONST, N_ELLIPSIS, N_TUPLE } nkind;
typedef enum { F_LIST, F_SET, F_FROZENSET, F_TUPLE, F_DICT, F_LITERAL, F_OPTIONAL, F_UNION } nform;

typedef struct node {
    nkind kind;
    size_t col;          /* 1-based column where the node starts */
    dspy_type *type;     /* N_TYPE */
    bool nonetype;       /* N_TYPE made from the name NoneType */
    nform form;          /* N_FORM */
    bool bare_ok;        /* N_FORM usable without [...] (list, dict, ... but not List) */
    const char *fname;   /* N_FORM: the name written */
    int module;          /* N_MODULE: 0 typing, 1 builtins */
    dspy_json *value;    /* N_CONST */
    struct node *items;  /* N_TUPLE */
    size_t nitems;
} node;

static void node_clear(node *n) {
    dspy_type_free(n->type);
    dspy_json_decref(n->value);
    for (size_t i = 0; i < n->nitems; i++) node_clear(&n->items[i]);
    free(n->items);
    memset(n, 0, sizeof *n);
}

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "type parser: out of memory"); }

#define SUPPORTED_TYPES                                                                        \
    "str, int, float, bool, bytes, Any, list[...], set[...], frozenset[...], tuple[...], "    \
    "dict[...], Literal[...], Optional[...], Union[...] and A | B"

typedef struct {
    const char *name;
    nkind kind;
    int what; /* type kind, form, or module */
    bool bare_ok;
} name_entry;

static const name_entry k_builtin_names[] = {
    {"str", N_TYPE, DSPY_TYPE_STR, true},        {"int", N_TYPE, DSPY_TYPE_INT, true},
    {"float", N_TYPE, DSPY_TYPE_FLOAT, true},    {"bool", N_TYPE, DSPY_TYPE_BOOL, true},
    {"bytes", N_TYPE, DSPY_TYPE_BYTES, true},    {"list", N_FORM, F_LIST, true},
    {"set", N_FORM, F_SET, true},                {"frozenset", N_FORM, F_FROZENSET, true},
    {"tuple", N_FORM, F_TUPLE, true},            {"dict", N_FORM, F_DICT, true},
    {NULL, N_TYPE, 0, false},
};

static const name_entry k_typing_names[] = {
    {"Any", N_TYPE, DSPY_TYPE_ANY, true},       {"Text", N_TYPE, DSPY_TYPE_STR, true},
    {"List", N_FORM, F_LIST, false},            {"Set", N_FORM, F_SET, false},
    {"FrozenSet", N_FORM, F_FROZENSET, false},  {"Tuple", N_FORM, F_TUPLE, false},
    {"Dict", N_FORM, F_DICT, false},            {"Literal", N_FORM, F_LITERAL, false},
    {"Optional", N_FORM, F_OPTIONAL, false},    {"Union", N_FORM, F_UNION, false},
    {NULL, N_TYPE, 0, false},
};

/* Names DSPy resolves (typing namespace, builtins) that dspy.c does not model. */
static const char *const k_unsupported[] = {
    "complex", "bytearray", "object", "type", "Callable", "Sequence", "Mapping",
    "MutableMapping", "MutableSequence", "MutableSet", "AbstractSet", "Iterable", "Iterator",
    "Collection", "Container", "Generator", "Type", "TypeVar", "Annotated", "ClassVar", "Final",
    "Generic", "Protocol", "NamedTuple", "TypedDict", "Deque", "DefaultDict", "OrderedDict",
    "Counter", "ChainMap", "NoReturn", "Never", "Self", "LiteralString", "TypeAlias",
    "TypeGuard", "AnyStr", "Hashable", "Sized", "Reversible", "Awaitable", "Coroutine",
    "AsyncIterator", "AsyncIterable", "AsyncGenerator", "Pattern", "Match", "IO", "TextIO",
    "BinaryIO", "Required", "NotRequired", "ByteString", NULL,
};

static bool name_is(const char *p, size_t n, const char *z) {
    return strlen(z) == n && memcmp(p, z, n) == 0;
}

static dspy_status node_from_entry(const name_entry *e, size_t col, const char *p, size_t n,
                                   node *out) {
    memset(out, 0, sizeof *out);
    out->col = col;
    out->kind = e->kind;
    if (e->kind == N_TYPE) {
        if (!(out->type = type_new((dspy_type_kind)e->what))) return nomem();
    } else {
        out->form = (nform)e->what;
        out->bare_ok = e->bare_ok;
        out->fname = e->name;
    }
    (void)p;
    (void)n;
    return DSPY_OK;
}

static dspy_status resolve_name(const char *p, size_t n, size_t col, bool dotted, node *out) {
    memset(out, 0, sizeof *out);
    out->col = col;
    for (const name_entry *e = k_builtin_names; e->name; e++)
        if (name_is(p, n, e->name)) return node_from_entry(e, col, p, n, out);
    for (const name_entry *e = k_typing_names; e->name; e++)
        if (name_is(p, n, e->name)) return node_from_entry(e, col, p, n, out);
    if (name_is(p, n, "NoneType")) {
        out->kind = N_TYPE;
        out->nonetype = true;
        return (out->type = type_new(DSPY_TYPE_NONE)) ? DSPY_OK : nomem();
    }
    if (name_is(p, n, "typing") || name_is(p, n, "builtins")) {
        out->kind = N_MODULE;
        out->module = name_is(p, n, "builtins");
        return DSPY_OK;
    }
    for (int i = 0; k_unsupported[i]; i++)
        if (name_is(p, n, k_unsupported[i]))
            return dspy_fail(DSPY_ERR_FORMAT,
                             "column %zu: type '%.*s' is not supported by dspy.c (supported: "
                             SUPPORTED_TYPES ")", col, (int)n, p);
    if (dotted)
        return dspy_fail(DSPY_ERR_FORMAT,
                         "column %zu: types from module '%.*s' are not supported by dspy.c "
                         "(supported: " SUPPORTED_TYPES ")", col, (int)n, p);
    return dspy_fail(DSPY_ERR_FORMAT, "column %zu: Unknown name: %.*s (supported types: "
                     SUPPORTED_TYPES ")", col, (int)n, p);
}

static dspy_status parse_or(py_cursor *c, int depth, node *out);

/* Literal arguments into t->literals (flattening nested Literals, dropping duplicates). */
static dspy_status make_literal(node *items, size_t n, size_t col, node *out) {
    dspy_type *t = type_new(DSPY_TYPE_LITERAL);
    if (!t || !(t->literals = dspy_json_array())) {
        dspy_type_free(t);
        return nomem();
    }
    if (n == 0) {
        dspy_type_free(t);
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: Literal[...] needs at least one value", col);
    }
    for (size_t i = 0; i < n; i++) {
        node *it = &items[i];
        const dspy_json *vals = NULL;
        dspy_json *single = NULL;
        if (it->kind == N_CONST) {
            single = it->value;
        } else if (it->kind == N_TYPE && it->type->kind == DSPY_TYPE_LITERAL) {
            vals = it->type->literals;
        } else {
            dspy_type_free(t);
            return dspy_fail(DSPY_ERR_FORMAT,
                             "column %zu: Literal[...] values must be constants (quoted strings, "
                             "integers, floats, True, False or None)", it->col);
        }
        size_t m = single ? 1 : dspy_json_size(vals);
        for (size_t j = 0; j < m; j++) {
            dspy_json *v = single ? single : dspy_json_at(vals, j);
            if (literal_in(t->literals, v)) continue;
            if (dspy_json_append(t->literals, dspy_json_incref(v))) {
                dspy_type_free(t);
                return nomem();
            }
        }
    }
    memset(out, 0, sizeof *out);
    out->kind = N_TYPE;
    out->col = col;
    out->type = t;
    return DSPY_OK;
}

/* Converts a node used in type position into a type (consumes the node's type). */
static dspy_status to_type(node *n, dspy_type **out) {
    *out = NULL;
    switch (n->kind) {
    case N_TYPE:
        *out = n->type;
        n->type = NULL;
        return DSPY_OK;
    case N_FORM:
        if (!n->bare_ok)
            return dspy_fail(DSPY_ERR_FORMAT,
                             "column %zu: '%s' needs arguments here (e.g. %s[str]); DSPy does not "
                             "accept it bare", n->col, n->fname,
                             n->form == F_LITERAL ? "Literal['a', 'b'] instead of " : n->fname);
        {
            dspy_type_kind k = n->form == F_LIST ? DSPY_TYPE_LIST
                               : n->form == F_SET ? DSPY_TYPE_SET
                               : n->form == F_FROZENSET ? DSPY_TYPE_FROZENSET
                               : n->form == F_TUPLE ? DSPY_TYPE_TUPLE
                                                    : DSPY_TYPE_DICT;
            return (*out = type_new(k)) ? DSPY_OK : nomem();
        }
    case N_CONST:
        if (dspy_json_typeof(n->value) == DSPY_JSON_NULL)
            return (*out = type_new(DSPY_TYPE_NONE)) ? DSPY_OK : nomem();
        if (dspy_json_is_string(n->value))
            return dspy_fail(DSPY_ERR_FORMAT,
                             "column %zu: a quoted string is not a type here (string forward "
                             "references are not supported; quoted values belong inside "
                             "Literal[...])", n->col);
        return dspy_fail(DSPY_ERR_FORMAT,
                         "column %zu: a constant is not a type here (constants belong inside "
                         "Literal[...])", n->col);
    case N_ELLIPSIS:
        return dspy_fail(DSPY_ERR_FORMAT,
                         "column %zu: '...' is only allowed as the last argument of tuple[X, ...]",
                         n->col);
    case N_TUPLE:
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: a tuple of types is not a type", n->col);
    case N_MODULE:
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: a module is not a type (write e.g. "
                         "typing.List[str])", n->col);
    }
    return dspy_fail(DSPY_ERR_FORMAT, "column %zu: not a type", n->col);
}

/* typing.Union[members]: flatten, de-duplicate, collapse a single member. Consumes members. */
static dspy_status make_union(dspy_type **members, size_t n, dspy_type **out) {
    *out = NULL;
    dspy_type *u = type_new(DSPY_TYPE_UNION);
    size_t cap = 0;
    for (size_t i = 0; u && i < n; i++) cap += members[i]->kind == DSPY_TYPE_UNION ? members[i]->nargs : 1;
    if (!u || !(u->args = calloc(cap ? cap : 1, sizeof *u->args))) goto fail;
    for (size_t i = 0; i < n; i++) {
        dspy_type *m = members[i];
        size_t k = m->kind == DSPY_TYPE_UNION ? m->nargs : 1;
        for (size_t j = 0; j < k; j++) {
            dspy_type *x = m->kind == DSPY_TYPE_UNION ? m->args[j] : m;
            bool dup = false;
            for (size_t q = 0; q < u->nargs && !dup; q++) dup = dspy_type_equal(u->args[q], x);
            if (dup) continue;
            dspy_type *cx = dspy_type_copy(x);
            if (!cx) goto fail;
            u->args[u->nargs++] = cx;
        }
    }
    for (size_t i = 0; i < n; i++) {
        dspy_type_free(members[i]);
        members[i] = NULL;
    }
    if (u->nargs == 1) {
        *out = u->args[0];
        u->nargs = 0;
        dspy_type_free(u);
    } else {
        *out = u;
    }
    return DSPY_OK;
fail:
    dspy_type_free(u);
    for (size_t i = 0; i < n; i++) {
        dspy_type_free(members[i]);
        members[i] = NULL;
    }
    return nomem();
}

/* base[items] */
static dspy_status subscript(node *base, node *items, size_t n, node *out) {
    dspy_status st = DSPY_OK;
    memset(out, 0, sizeof *out);
    out->col = base->col;
    if (base->kind != N_FORM)
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: this type cannot be subscripted with [...]",
                         base->col);
    if (base->form == F_LITERAL) return make_literal(items, n, base->col, out);
    dspy_type **args = calloc(n + 2, sizeof *args);
    if (!args) return nomem();
    size_t na = 0;
    bool variadic = false;
    for (size_t i = 0; i < n; i++) {
        if (items[i].kind == N_ELLIPSIS && base->form == F_TUPLE && i == 1 && n == 2) {
            variadic = true;
            continue;
        }
        st = to_type(&items[i], &args[na]);
        if (st) goto done;
        na++;
    }
    size_t want = base->form == F_DICT ? 2 : (base->form == F_TUPLE || base->form == F_UNION) ? 0 : 1;
    if (want && na != want) {
        st = dspy_fail(DSPY_ERR_FORMAT, "column %zu: %s[...] takes %zu type argument%s, got %zu",
                       base->col, base->fname, want, want == 1 ? "" : "s", na);
        goto done;
    }
    if (na == 0) {
        st = dspy_fail(DSPY_ERR_FORMAT, "column %zu: %s[...] needs at least one type argument",
                       base->col, base->fname);
        goto done;
    }
    out->kind = N_TYPE;
    if (base->form == F_OPTIONAL || base->form == F_UNION) {
        if (base->form == F_OPTIONAL) {
            if (!(args[1] = type_new(DSPY_TYPE_NONE))) {
                st = nomem();
                goto done;
            }
            na = 2;
        }
        st = make_union(args, na, &out->type);
        na = 0;
        goto done;
    }
    dspy_type_kind k = base->form == F_LIST ? DSPY_TYPE_LIST
                       : base->form == F_SET ? DSPY_TYPE_SET
                       : base->form == F_FROZENSET ? DSPY_TYPE_FROZENSET
                       : base->form == F_TUPLE ? DSPY_TYPE_TUPLE
                                               : DSPY_TYPE_DICT;
    dspy_type *t = type_new(k);
    if (!t) {
        st = nomem();
        goto done;
    }
    t->args = args;
    t->nargs = na;
    t->variadic = variadic;
    out->type = t;
    return DSPY_OK;
done:
    for (size_t i = 0; i < na; i++) dspy_type_free(args[i]);
    free(args);
    return st;
}

/* Comma-separated nodes up to `close` (trailing comma allowed). */
static dspy_status parse_list(py_cursor *c, int depth, char close, node **items, size_t *n,
                              bool *comma) {
    *items = NULL;
    *n = 0;
    *comma = false;
    size_t cap = 0;
    for (;;) {
        dspy_pyc_skip_ws(c);
        if (dspy_pyc_peek(c) == close) {
            c->pos++;
            return DSPY_OK;
        }
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            node *v = realloc(*items, nc * sizeof *v);
            if (!v) return nomem();
            *items = v;
            cap = nc;
        }
        dspy_status st = parse_or(c, depth + 1, &(*items)[*n]);
        if (st) return st;
        (*n)++;
        dspy_pyc_skip_ws(c);
        if (dspy_pyc_eat(c, ",")) {
            *comma = true;
            continue;
        }
        if (dspy_pyc_peek(c) == close) {
            c->pos++;
            return DSPY_OK;
        }
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: expected ',' or '%c' in the type",
                         c->pos + 1, close);
    }
}

static void free_items(node *items, size_t n) {
    for (size_t i = 0; i < n; i++) node_clear(&items[i]);
    free(items);
}

static dspy_status parse_atom(py_cursor *c, int depth, node *out) {
    memset(out, 0, sizeof *out);
    if (depth > 64) return dspy_fail(DSPY_ERR_FORMAT, "type nested too deeply");
    dspy_pyc_skip_ws(c);
    size_t col = c->pos + 1;
    out->col = col;
    if (dspy_pyc_at_string(c)) {
        dspy_str s = DSPY_STR_INIT;
        dspy_status st = dspy_pyc_string(c, &s);
        if (st == DSPY_OK) {
            out->kind = N_CONST;
            if (!(out->value = dspy_json_stringn(dspy_str_cstr(&s), s.len))) st = nomem();
        }
        dspy_str_free(&s);
        return st;
    }
    if (dspy_pyc_at_number(c)) {
        out->kind = N_CONST;
        return dspy_pyc_number(c, &out->value);
    }
    if (dspy_pyc_eat(c, "...")) {
        out->kind = N_ELLIPSIS;
        return DSPY_OK;
    }
    char ch = dspy_pyc_peek(c);
    if (ch == '(') {
        c->pos++;
        node *items;
        size_t n;
        bool comma;
        dspy_status st = parse_list(c, depth, ')', &items, &n, &comma);
        if (st) {
            free_items(items, n);
            return st;
        }
        if (n == 1 && !comma) {
            *out = items[0];
            free(items);
            return DSPY_OK;
        }
        out->kind = N_TUPLE;
        out->items = items;
        out->nitems = n;
        return DSPY_OK;
    }
    size_t nl = dspy_pyc_name_len(c);
    if (nl) {
        const char *p = c->s + c->pos;
        c->pos += nl;
        if (name_is(p, nl, "None") || name_is(p, nl, "True") || name_is(p, nl, "False")) {
            out->kind = N_CONST;
            out->value = name_is(p, nl, "None") ? dspy_json_null() : dspy_json_bool(name_is(p, nl, "True"));
            return out->value ? DSPY_OK : nomem();
        }
        size_t save = c->pos;
        dspy_pyc_skip_ws(c);
        bool dotted = dspy_pyc_peek(c) == '.';
        c->pos = save;
        return resolve_name(p, nl, col, dotted, out);
    }
    if (ch == '-' || ch == '+' || ch == '~')
        return dspy_fail(DSPY_ERR_FORMAT,
                         "column %zu: unsupported syntax '%c' in a type annotation (DSPy: "
                         "\"unhandled AST node type in annotation: UnaryOp\"); negative numbers "
                         "cannot be Literal values in a string signature", col, ch);
    if (ch == '\0' || ch == ',' || ch == ')' || ch == ']')
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: expected a type", col);
    return dspy_fail(DSPY_ERR_FORMAT, "column %zu: unexpected character '%c' in a type", col, ch);
}

static dspy_status parse_postfix(py_cursor *c, int depth, node *out) {
    dspy_status st = parse_atom(c, depth, out);
    if (st) return st;
    for (;;) {
        size_t save = c->pos;
        dspy_pyc_skip_ws(c);
        if (dspy_pyc_eat(c, "[")) {
            node *items;
            size_t n;
            bool comma;
            st = parse_list(c, depth, ']', &items, &n, &comma);
            if (st) {
                free_items(items, n);
                node_clear(out);
                return st;
            }
            if (n == 1 && items[0].kind == N_TUPLE) {
                node inner = items[0];
                free(items);
                items = inner.items;
                n = inner.nitems;
            }
            node res;
            st = subscript(out, items, n, &res);
            free_items(items, n);
            node_clear(out);
            if (st) return st;
            *out = res;
        } else if (dspy_pyc_peek(c) == '.' && !dspy_pyc_eat(c, "...")) {
            c->pos++;
            dspy_pyc_skip_ws(c);
            size_t col = c->pos + 1;
            size_t nl = dspy_pyc_name_len(c);
            if (!nl) {
                node_clear(out);
                return dspy_fail(DSPY_ERR_FORMAT, "column %zu: expected a name after '.'", col);
            }
            const char *p = c->s + c->pos;
            c->pos += nl;
            if (out->kind != N_MODULE) {
                node_clear(out);
                return dspy_fail(DSPY_ERR_FORMAT,
                                 "column %zu: Unknown attribute: %.*s (only typing.X and "
                                 "builtins.X are supported)", col, (int)nl, p);
            }
            const name_entry *table = out->module ? k_builtin_names : k_typing_names;
            const name_entry *hit = NULL;
            for (const name_entry *e = table; e->name && !hit; e++)
                if (name_is(p, nl, e->name)) hit = e;
            const char *mod = out->module ? "builtins" : "typing";
            node_clear(out);
            if (!hit)
                return dspy_fail(DSPY_ERR_FORMAT, "column %zu: Unknown attribute: %.*s on module %s",
                                 col, (int)nl, p, mod);
            st = node_from_entry(hit, col, p, nl, out);
            if (st) return st;
        } else {
            c->pos = save;
            return DSPY_OK;
        }
    }
}

static dspy_status parse_or(py_cursor *c, int depth, node *out) {
    dspy_status st = parse_postfix(c, depth, out);
    if (st) return st;
    for (;;) {
        size_t save = c->pos;
        dspy_pyc_skip_ws(c);
        if (!dspy_pyc_eat(c, "|")) {
            c->pos = save;
            return DSPY_OK;
        }
        node rhs;
        st = parse_postfix(c, depth, &rhs);
        if (st) {
            node_clear(out);
            return st;
        }
        /* DSPy: right is NoneType -> Optional[left]; left is NoneType -> Optional[right];
         * else Union[left, right] (a None constant is not NoneType here). */
        bool left_nt = out->kind == N_TYPE && out->nonetype;
        bool right_nt = rhs.kind == N_TYPE && rhs.nonetype;
        dspy_type *m[2] = {NULL, NULL};
        size_t col = out->col;
        if (!right_nt && left_nt) {
            st = to_type(&rhs, &m[0]);
            if (!st) st = to_type(out, &m[1]);
        } else {
            st = to_type(out, &m[0]);
            if (!st) st = to_type(&rhs, &m[1]);
        }
        node_clear(out);
        node_clear(&rhs);
        if (st) {
            dspy_type_free(m[0]);
            dspy_type_free(m[1]);
            return st;
        }
        out->kind = N_TYPE;
        out->col = col;
        st = make_union(m, 2, &out->type);
        if (st) return st;
    }
}

dspy_status dspy_type_parse_at(py_cursor *c, dspy_type **out) {
    *out = NULL;
    node n;
    dspy_status st = parse_or(c, 0, &n);
    if (st) return st;
    if (n.kind == N_CONST && dspy_json_typeof(n.value) == DSPY_JSON_NULL) {
        node_clear(&n);
        return (*out = dspy_type_new_str()) ? DSPY_OK : nomem();
    }
    st = to_type(&n, out);
    node_clear(&n);
    return st;
}

dspy_status dspy_type_parse(const char *text, dspy_type **out) {
    *out = NULL;
    py_cursor c = {text, strlen(text), 0};
    dspy_type *t;
    dspy_status st = dspy_type_parse_at(&c, &t);
    if (st) return dspy_fail_wrap(st, "type \"%s\"", text);
    dspy_pyc_skip_ws(&c);
    if (c.pos < c.n) {
        dspy_type_free(t);
        return dspy_fail(DSPY_ERR_FORMAT, "type \"%s\": column %zu: unexpected text after the type",
                         text, c.pos + 1);
    }
    *out = t;
    return DSPY_OK;
}

/* ---- names -------------------------------------------------------------------------------------- */

/* DSPy _quoted_string_for_literal_type_annotation (V33). */
static void quote_literal(const char *s, size_t n, dspy_str *out) {
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    if (sq && !dq) {
        dspy_str_appendc(out, '"');
        dspy_str_appendn(out, s, n);
        dspy_str_appendc(out, '"');
        return;
    }
    dspy_str_appendc(out, '\'');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'') dspy_str_append(out, "\\'");
        else dspy_str_appendc(out, s[i]);
    }
    dspy_str_appendc(out, '\'');
}

void dspy_type_name(const dspy_type *t, dspy_profile p, dspy_str *out) {
    static const char *const base[] = {
        [DSPY_TYPE_STR] = "str",       [DSPY_TYPE_INT] = "int",
        [DSPY_TYPE_FLOAT] = "float",   [DSPY_TYPE_BOOL] = "bool",
        [DSPY_TYPE_BYTES] = "bytes",   [DSPY_TYPE_NONE] = "NoneType",
        [DSPY_TYPE_ANY] = "Any",       [DSPY_TYPE_LIST] = "list",
        [DSPY_TYPE_SET] = "set",       [DSPY_TYPE_FROZENSET] = "frozenset",
        [DSPY_TYPE_TUPLE] = "tuple",   [DSPY_TYPE_DICT] = "dict",
        [DSPY_TYPE_LITERAL] = "Literal", [DSPY_TYPE_UNION] = "Union",
    };
    dspy_str_append(out, base[t->kind]);
    if (t->kind == DSPY_TYPE_LITERAL) {
        dspy_str_appendc(out, '[');
        for (size_t i = 0; i < dspy_json_size(t->literals); i++) {
            const dspy_json *v = dspy_json_at(t->literals, i);
            if (i) dspy_str_append(out, ", ");
            if (dspy_json_is_string(v) && p == DSPY_PROFILE_V33)
                quote_literal(dspy_json_str(v), dspy_json_strlen(v), out);
            else
                dspy_json_pystr(v, out);
        }
        dspy_str_appendc(out, ']');
        return;
    }
    if (t->nargs == 0) return;
    dspy_str_appendc(out, '[');
    for (size_t i = 0; i < t->nargs; i++) {
        if (i) dspy_str_append(out, ", ");
        dspy_type_name(t->args[i], p, out);
    }
    if (t->variadic) dspy_str_append(out, ", Ellipsis");
    dspy_str_appendc(out, ']');
}

void dspy_type_literal_tuple_repr(const dspy_type *t, dspy_str *out) {
    size_t n = dspy_json_size(t->literals);
    dspy_str_appendc(out, '(');
    for (size_t i = 0; i < n; i++) {
        if (i) dspy_str_append(out, ", ");
        dspy_json_repr(dspy_json_at(t->literals, i), out);
    }
    if (n == 1) dspy_str_appendc(out, ',');
    dspy_str_appendc(out, ')');
}

/* ---- JSON schema (pydantic) --------------------------------------------------------------------- */

static dspy_status set_or_fail(dspy_json *o, const char *k, dspy_json *v) {
    if (!v) return nomem();
    return dspy_json_set(o, k, v);
}

static dspy_json *type_obj(const char *ty) {
    dspy_json *o = dspy_json_object();
    if (o && dspy_json_set(o, "type", dspy_json_string(ty))) {
        dspy_json_decref(o);
        return NULL;
    }
    return o;
}

static dspy_status schema_of(const dspy_type *t, dspy_json **out);

/* The JSON type name pydantic gives a Literal whose values all share one Python type. */
static const char *literal_json_type(const dspy_json *vals) {
    dspy_json_type first = dspy_json_typeof(dspy_json_at(vals, 0));
    for (size_t i = 1; i < dspy_json_size(vals); i++)
        if (dspy_json_typeof(dspy_json_at(vals, i)) != first) return NULL;
    switch (first) {
    case DSPY_JSON_STRING: return "string";
    case DSPY_JSON_INT: return "integer";
    case DSPY_JSON_REAL: return "number";
    case DSPY_JSON_BOOL: return "boolean";
    case DSPY_JSON_NULL: return "null";
    default: return NULL;
    }
}

/* get_flattened_anyof: splice {"anyOf": [...]} members, de-duplicate, collapse one member. */
static dspy_status flattened_anyof(dspy_json **schemas, size_t n, dspy_json **out) {
    dspy_json *members = dspy_json_array();
    if (!members) return nomem();
    for (size_t i = 0; i < n; i++) {
        dspy_json *s = schemas[i];
        dspy_json *inner = dspy_json_size(s) == 1 ? dspy_json_get(s, "anyOf") : NULL;
        size_t k = inner ? dspy_json_size(inner) : 1;
        for (size_t j = 0; j < k; j++) {
            dspy_json *x = inner ? dspy_json_at(inner, j) : s;
            bool dup = false;
            for (size_t q = 0; q < dspy_json_size(members) && !dup; q++)
                dup = dspy_json_equal(dspy_json_at(members, q), x);
            if (!dup && dspy_json_append(members, dspy_json_incref(x))) {
                dspy_json_decref(members);
                return nomem();
            }
        }
    }
    if (dspy_json_size(members) == 1) {
        *out = dspy_json_incref(dspy_json_at(members, 0));
        dspy_json_decref(members);
        return DSPY_OK;
    }
    dspy_json *o = dspy_json_object();
    if (!o) {
        dspy_json_decref(members);
        return nomem();
    }
    dspy_status st = dspy_json_set(o, "anyOf", members);
    if (st) {
        dspy_json_decref(o);
        return st;
    }
    *out = o;
    return DSPY_OK;
}

static dspy_status union_schema(const dspy_type *t, dspy_json **out) {
    dspy_json **gen = calloc(t->nargs + 1, sizeof *gen);
    if (!gen) return nomem();
    size_t n = 0;
    bool nullable = false;
    dspy_status st = DSPY_OK;
    for (size_t i = 0; i < t->nargs; i++) {
        if (t->args[i]->kind == DSPY_TYPE_NONE) {
            nullable = true;
            continue;
        }
        st = schema_of(t->args[i], &gen[n]);
        if (st) goto done;
        n++;
    }
    dspy_json *inner = NULL;
    if (n == 1) {
        inner = dspy_json_incref(gen[0]);
    } else if (n > 1) {
        st = flattened_anyof(gen, n, &inner);
        if (st) goto done;
    }
    if (!nullable) {
        *out = inner;
        goto done;
    }
    dspy_json *null_s = type_obj("null");
    if (!null_s) {
        dspy_json_decref(inner);
        st = nomem();
        goto done;
    }
    if (!inner || dspy_json_equal(inner, null_s)) {
        dspy_json_decref(inner);
        *out = null_s;
        goto done;
    }
    dspy_json *pair[2] = {inner, null_s};
    st = flattened_anyof(pair, 2, out);
    dspy_json_decref(inner);
    dspy_json_decref(null_s);
done:
    for (size_t i = 0; i < n; i++) dspy_json_decref(gen[i]);
    free(gen);
    return st;
}

static dspy_status schema_of(const dspy_type *t, dspy_json **out) {
    *out = NULL;
    dspy_json *o = NULL, *sub = NULL;
    dspy_status st = DSPY_OK;
    switch (t->kind) {
    case DSPY_TYPE_STR: o = type_obj("string"); break;
    case DSPY_TYPE_INT: o = type_obj("integer"); break;
    case DSPY_TYPE_FLOAT: o = type_obj("number"); break;
    case DSPY_TYPE_BOOL: o = type_obj("boolean"); break;
    case DSPY_TYPE_NONE: o = type_obj("null"); break;
    case DSPY_TYPE_ANY: o = dspy_json_object(); break;
    case DSPY_TYPE_BYTES:
        if (!(o = dspy_json_object())) break;
        if ((st = set_or_fail(o, "format", dspy_json_string("binary")))) goto fail;
        if ((st = set_or_fail(o, "type", dspy_json_string("string")))) goto fail;
        break;
    case DSPY_TYPE_LIST:
    case DSPY_TYPE_SET:
    case DSPY_TYPE_FROZENSET:
        if (!(o = dspy_json_object())) break;
        if (t->nargs) {
            if ((st = schema_of(t->args[0], &sub))) goto fail;
        } else if (!(sub = dspy_json_object())) {
            st = nomem();
            goto fail;
        }
        if ((st = dspy_json_set(o, "items", sub))) goto fail;
        if ((st = set_or_fail(o, "type", dspy_json_string("array")))) goto fail;
        if (t->kind != DSPY_TYPE_LIST && (st = set_or_fail(o, "uniqueItems", dspy_json_bool(true))))
            goto fail;
        break;
    case DSPY_TYPE_TUPLE:
        if (!(o = dspy_json_object())) break;
        if (t->nargs == 0 || t->variadic) {
            if (t->nargs) {
                if ((st = schema_of(t->args[0], &sub))) goto fail;
            } else if (!(sub = dspy_json_object())) {
                st = nomem();
                goto fail;
            }
            if ((st = dspy_json_set(o, "items", sub))) goto fail;
            if ((st = set_or_fail(o, "type", dspy_json_string("array")))) goto fail;
        } else {
            if ((st = set_or_fail(o, "maxItems", dspy_json_int((int64_t)t->nargs)))) goto fail;
            if ((st = set_or_fail(o, "minItems", dspy_json_int((int64_t)t->nargs)))) goto fail;
            dspy_json *items = dspy_json_array();
            if ((st = set_or_fail(o, "prefixItems", items))) goto fail;
            for (size_t i = 0; i < t->nargs; i++) {
                if ((st = schema_of(t->args[i], &sub))) goto fail;
                if ((st = dspy_json_append(items, sub))) goto fail;
            }
            if ((st = set_or_fail(o, "type", dspy_json_string("array")))) goto fail;
        }
        break;
    case DSPY_TYPE_DICT: {
        if (!(o = dspy_json_object())) break;
        dspy_json *keys = NULL, *vals = NULL;
        if (t->nargs == 2) {
            if ((st = schema_of(t->args[0], &keys))) goto fail;
            if ((st = schema_of(t->args[1], &vals))) {
                dspy_json_decref(keys);
                goto fail;
            }
            dspy_json_del(vals, "title");
        }
        if (vals && dspy_json_size(vals)) st = dspy_json_set(o, "additionalProperties", vals);
        else {
            dspy_json_decref(vals);
            st = set_or_fail(o, "additionalProperties", dspy_json_bool(true));
        }
        if (st) {
            dspy_json_decref(keys);
            goto fail;
        }
        const char *kt = keys ? dspy_json_str_or(keys, "type", NULL) : NULL;
        if (kt && strcmp(kt, "string") == 0 && dspy_json_size(keys) > 1) {
            dspy_json_del(keys, "type");
            if ((st = dspy_json_set(o, "propertyNames", keys))) goto fail;
        } else {
            dspy_json_decref(keys);
        }
        if ((st = set_or_fail(o, "type", dspy_json_string("object")))) goto fail;
        break;
    }
    case DSPY_TYPE_LITERAL: {
        if (!(o = dspy_json_object())) break;
        size_t n = dspy_json_size(t->literals);
        if (n == 1) st = dspy_json_set(o, "const", dspy_json_incref(dspy_json_at(t->literals, 0)));
        else st = set_or_fail(o, "enum", dspy_json_copy(t->literals));
        if (st) goto fail;
        const char *jt = literal_json_type(t->literals);
        if (jt && (st = set_or_fail(o, "type", dspy_json_string(jt)))) goto fail;
        break;
    }
    case DSPY_TYPE_UNION:
        return union_schema(t, out);
    }
    if (!o) return nomem();
    *out = o;
    return DSPY_OK;
fail:
    dspy_json_decref(o);
    return st;
}

dspy_status dspy_type_json_schema(const dspy_type *t, dspy_json **out) { return schema_of(t, out); }

/* DSPy move_type_to_front: every dict re-keyed as ("type" first, then sorted). */
static int cmp_type_first(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    bool tx = strcmp(x, "type") == 0, ty = strcmp(y, "type") == 0;
    if (tx != ty) return tx ? -1 : 1;
    return strcmp(x, y);
}

static dspy_json *type_first(const dspy_json *v) {
    if (dspy_json_typeof(v) == DSPY_JSON_ARRAY) {
        dspy_json *a = dspy_json_array();
        for (size_t i = 0; a && i < dspy_json_size(v); i++) {
            dspy_json *x = type_first(dspy_json_at(v, i));
            if (!x || dspy_json_append(a, x)) {
                dspy_json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    if (dspy_json_typeof(v) != DSPY_JSON_OBJECT) return dspy_json_copy(v);
    size_t n = dspy_json_size(v), k = 0;
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    dspy_json *o = dspy_json_object();
    if (!keys || !o) goto fail;
    for (void *it = dspy_json_iter(v); it; it = dspy_json_next(v, it)) keys[k++] = dspy_json_iter_key(it);
    qsort(keys, k, sizeof *keys, cmp_type_first);
    for (size_t i = 0; i < k; i++) {
        dspy_json *x = type_first(dspy_json_get(v, keys[i]));
        if (!x || dspy_json_set(o, keys[i], x)) goto fail;
    }
    free(keys);
    return o;
fail:
    free(keys);
    dspy_json_decref(o);
    return NULL;
}

dspy_status dspy_type_schema_note(const dspy_type *t, dspy_str *out) {
    dspy_json *s;
    dspy_status st = schema_of(t, &s);
    if (st) return st;
    dspy_json *m = type_first(s);
    dspy_json_decref(s);
    if (!m) return nomem();
    st = dspy_json_dump(m, DSPY_JSON_UTF8, out);
    dspy_json_decref(m);
    return st;
}
