/* json_schema.c — JSON schemas (the subset DSPy's JSONAdapter sends) and "any JSON object" as
 * byte NFAs (dspy/structured.h).
 *
 * Supported: "type" (string, number, integer, boolean, null, object, array, or a list of
 * those), "enum", "const", "anyOf"/"oneOf" (as a union), "properties" with "required" (keys in
 * the order of "properties"; optional ones may be left out), "additionalProperties" (false/true
 * ignored when there are properties: only the listed keys are written; a schema or true
 * without properties makes an open mapping), "items", "$ref" into "#/$defs/..." or
 * "#/definitions/...". Annotations (title, description, default, examples, ...) are ignored.
 * Anything that would constrain values beyond that (pattern, format, minimum, maxLength,
 * allOf, not, prefixItems, ...) is refused with DSPY_ERR_ARG rather than silently ignored.
 * The grammar follows RFC 8259 (JSON), with bounded whitespace and digit counts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "structured/structured_priv.h"

#define MAX_REF_DEPTH 16
#define MAX_NESTING 32 /* schemas nested deeper are refused (the automaton would explode anyway) */

dspy_structured_params dspy_structured_params_default(void) {
    dspy_structured_params p = {.max_string_tokens = 0, .max_whitespace = 8, .max_depth = 2};
    return p;
}

typedef struct jctx {
    nfa *a;
    const dspy_structured_params *p;
    const dspy_json *root;
    int ref_depth;
    int nesting;
    dspy_status st;
} jctx;

static frag fail_at(jctx *c, const char *path, const char *fmt, const char *what) {
    if (!c->st) c->st = dspy_fail(DSPY_ERR_ARG, "json_schema: %s: %s%s", *path ? path : "(root)", fmt, what ? what : "");
    return dspy_frag_empty(c->a);
}

static frag lit(jctx *c, const char *s) { return dspy_frag_bytes(c->a, s, strlen(s)); }

/* Up to max_whitespace bytes of ' ', '\t', '\n', '\r'. */
static frag ws(jctx *c) {
    uint32_t set[8];
    dspy_byteset_clear(set);
    dspy_byteset_add(set, ' ');
    dspy_byteset_add(set, '\t');
    dspy_byteset_add(set, '\n');
    dspy_byteset_add(set, '\r');
    frag f = dspy_frag_empty(c->a);
    for (int32_t i = 0; i < c->p->max_whitespace; i++) f = dspy_frag_opt(c->a, dspy_frag_cat(c->a, dspy_frag_class(c->a, set), f));
    return f;
}

/* d{0,n} */
static frag digits_upto(jctx *c, int n) {
    uint32_t set[8];
    dspy_byteset_clear(set);
    dspy_byteset_add_range(set, '0', '9');
    frag f = dspy_frag_empty(c->a);
    for (int i = 0; i < n; i++) f = dspy_frag_opt(c->a, dspy_frag_cat(c->a, dspy_frag_class(c->a, set), f));
    return f;
}

static frag digit(jctx *c, char lo) {
    uint32_t set[8];
    dspy_byteset_clear(set);
    dspy_byteset_add_range(set, (unsigned char)lo, '9');
    return dspy_frag_class(c->a, set);
}

/* -?(0|[1-9]\d{0,14}) and, for numbers, (\.\d{1,15})?([eE][+-]?\d{1,3})? */
static frag number(jctx *c, bool integer) {
    nfa *a = c->a;
    frag f = dspy_frag_cat(a, dspy_frag_opt(a, lit(c, "-")), dspy_frag_alt(a, lit(c, "0"), dspy_frag_cat(a, digit(c, '1'), digits_upto(c, 14))));
    if (integer) return f;
    frag frac = dspy_frag_cat(a, lit(c, "."), dspy_frag_cat(a, digit(c, '0'), digits_upto(c, 14)));
    uint32_t e[8], sign[8];
    dspy_byteset_clear(e);
    dspy_byteset_add(e, 'e');
    dspy_byteset_add(e, 'E');
    dspy_byteset_clear(sign);
    dspy_byteset_add(sign, '+');
    dspy_byteset_add(sign, '-');
    frag ex = dspy_frag_cat(a, dspy_frag_class(a, e), dspy_frag_cat(a, dspy_frag_opt(a, dspy_frag_class(a, sign)),
                                                     dspy_frag_cat(a, digit(c, '0'), digits_upto(c, 2))));
    return dspy_frag_cat(a, f, dspy_frag_cat(a, dspy_frag_opt(a, frac), dspy_frag_opt(a, ex)));
}

/* A JSON string: its content is a region (bounded by max_tokens when > 0) whose escape states
 * are transient. */
static frag string(jctx *c, int32_t max_tokens) {
    nfa *a = c->a;
    frag open = lit(c, "\"");
    dspy_nfa_region_begin(a, max_tokens);
    uint32_t plain[8], esc1[8], hex[8], bs[8], u[8];
    dspy_byteset_clear(plain);
    dspy_byteset_add_range(plain, 0x20, 0xff);
    plain['"' >> 5] &= ~(1u << ('"' & 31));
    plain['\\' >> 5] &= ~(1u << ('\\' & 31));
    frag body = dspy_frag_class(a, plain);
    a->cur_transient = true;
    dspy_byteset_clear(bs);
    dspy_byteset_add(bs, '\\');
    dspy_byteset_clear(esc1);
    for (const char *s = "\"\\/bfnrt"; *s; s++) dspy_byteset_add(esc1, (unsigned char)*s);
    dspy_byteset_clear(hex);
    dspy_byteset_add_range(hex, '0', '9');
    dspy_byteset_add_range(hex, 'a', 'f');
    dspy_byteset_add_range(hex, 'A', 'F');
    dspy_byteset_clear(u);
    dspy_byteset_add(u, 'u');
    frag uesc = dspy_frag_class(a, u);
    for (int i = 0; i < 4; i++) uesc = dspy_frag_cat(a, uesc, dspy_frag_class(a, hex));
    frag esc = dspy_frag_cat(a, dspy_frag_class(a, bs), dspy_frag_alt(a, dspy_frag_class(a, esc1), uesc));
    a->cur_transient = false;
    frag content = dspy_frag_star(a, dspy_frag_alt(a, body, esc));
    dspy_nfa_region_end(a);
    return dspy_frag_cat(a, open, dspy_frag_cat(a, content, lit(c, "\"")));
}

/* The compact JSON text of a value, as a literal. */
static frag json_literal(jctx *c, const dspy_json *v) {
    char *s = dspy_json_dumps(v, DSPY_JSON_COMPACT | DSPY_JSON_UTF8);
    if (!s) {
        if (!c->st) c->st = dspy_fail(DSPY_ERR_NOMEM, "json_schema: out of memory");
        return dspy_frag_empty(c->a);
    }
    frag f = lit(c, s);
    free(s);
    return f;
}

static frag value_schema(jctx *c, const dspy_json *s, const char *path);
static frag any_value(jctx *c, int depth);

/* "{" ws (member (ws "," ws member)*)? ws "}" with member = string ws ":" ws value, one copy of
 * the member looped through the comma. value_of NULL: any value (depth); else that schema. */
static frag open_object(jctx *c, const dspy_json *value_of, int depth, const char *path) {
    nfa *a = c->a;
    frag member = dspy_frag_cat(a, string(c, 0), dspy_frag_cat(a, ws(c), dspy_frag_cat(a, lit(c, ":"), ws(c))));
    char sub[512];
    snprintf(sub, sizeof sub, "%s/additionalProperties", path);
    member = dspy_frag_cat(a, member, value_of ? value_schema(c, value_of, sub) : any_value(c, depth));
    frag comma = dspy_frag_cat(a, ws(c), dspy_frag_cat(a, lit(c, ","), ws(c)));
    dspy_nfa_eps(a, member.out, comma.in);
    dspy_nfa_eps(a, comma.out, member.in);
    frag head = dspy_frag_cat(a, lit(c, "{"), ws(c));
    frag tail = dspy_frag_cat(a, ws(c), lit(c, "}"));
    frag body = dspy_frag_opt(a, member);
    return dspy_frag_cat(a, head, dspy_frag_cat(a, body, tail));
}

static frag array_of(jctx *c, const dspy_json *items, int depth, const char *path) {
    nfa *a = c->a;
    char sub[512];
    snprintf(sub, sizeof sub, "%s/items", path);
    frag item = items ? value_schema(c, items, sub) : any_value(c, depth);
    frag comma = dspy_frag_cat(a, ws(c), dspy_frag_cat(a, lit(c, ","), ws(c)));
    dspy_nfa_eps(a, item.out, comma.in);
    dspy_nfa_eps(a, comma.out, item.in);
    frag head = dspy_frag_cat(a, lit(c, "["), ws(c));
    frag tail = dspy_frag_cat(a, ws(c), lit(c, "]"));
    return dspy_frag_cat(a, head, dspy_frag_cat(a, dspy_frag_opt(a, item), tail));
}

/* Any JSON value; objects and arrays only while depth > 0. Strings are unbounded here. */
static frag any_value(jctx *c, int depth) {
    nfa *a = c->a;
    frag f = dspy_frag_alt(a, string(c, 0), number(c, false));
    f = dspy_frag_alt(a, f, dspy_frag_alt(a, lit(c, "true"), dspy_frag_alt(a, lit(c, "false"), lit(c, "null"))));
    if (depth > 0) f = dspy_frag_alt(a, f, dspy_frag_alt(a, open_object(c, NULL, depth - 1, ""), array_of(c, NULL, depth - 1, "")));
    return f;
}

static bool required(const dspy_json *req, const char *key) {
    for (size_t i = 0; req && i < dspy_json_size(req); i++) {
        const dspy_json *k = dspy_json_at(req, i);
        if (dspy_json_is_string(k) && strcmp(dspy_json_str(k), key) == 0) return true;
    }
    return false;
}

/* An object with listed properties: two tracks through the members, "nothing written yet" (A)
 * and "something written" (B, members start with a comma), so optional members can be left
 * out without a stray comma. */
static frag object_props(jctx *c, const dspy_json *s, const dspy_json *props, const char *path) {
    nfa *a = c->a;
    const dspy_json *req = dspy_json_get(s, "required");
    if (req && dspy_json_typeof(req) != DSPY_JSON_ARRAY) return fail_at(c, path, "\"required\" must be an array", NULL);
    for (size_t i = 0; req && i < dspy_json_size(req); i++) {
        const dspy_json *k = dspy_json_at(req, i);
        if (!dspy_json_is_string(k) || !dspy_json_get(props, dspy_json_str(k)))
            return fail_at(c, path, "\"required\" names a key that is not in \"properties\": ",
                           dspy_json_is_string(k) ? dspy_json_str(k) : "(not a string)");
    }
    frag head = dspy_frag_cat(a, lit(c, "{"), ws(c));
    int32_t A = head.out, B = dspy_nfa_state_new(a);
    bool a_live = true, b_live = false;
    for (void *it = dspy_json_iter(props); it && !c->st; it = dspy_json_next(props, it)) {
        const char *key = dspy_json_iter_key(it);
        const dspy_json *sub = dspy_json_iter_value(it);
        char subpath[512];
        snprintf(subpath, sizeof subpath, "%s/properties/%.200s", path, key);
        dspy_json *kj = dspy_json_string(key);
        char *kq = kj ? dspy_json_dumps(kj, DSPY_JSON_COMPACT | DSPY_JSON_UTF8) : NULL;
        dspy_json_decref(kj);
        if (!kq) {
            if (!c->st) c->st = dspy_fail(DSPY_ERR_NOMEM, "json_schema: out of memory");
            break;
        }
        bool opt = !required(req, key);
        int32_t A2 = dspy_nfa_state_new(a), B2 = dspy_nfa_state_new(a);
        if (a_live) {
            frag m = dspy_frag_cat(a, lit(c, kq), dspy_frag_cat(a, ws(c), dspy_frag_cat(a, lit(c, ":"), ws(c))));
            m = dspy_frag_cat(a, m, value_schema(c, sub, subpath));
            dspy_nfa_eps(a, A, m.in);
            dspy_nfa_eps(a, m.out, B2);
        }
        if (b_live) {
            frag m = dspy_frag_cat(a, ws(c), dspy_frag_cat(a, lit(c, ","), ws(c)));
            m = dspy_frag_cat(a, m, dspy_frag_cat(a, lit(c, kq), dspy_frag_cat(a, ws(c), dspy_frag_cat(a, lit(c, ":"), ws(c)))));
            m = dspy_frag_cat(a, m, value_schema(c, sub, subpath));
            dspy_nfa_eps(a, B, m.in);
            dspy_nfa_eps(a, m.out, B2);
        }
        free(kq);
        if (opt) {
            dspy_nfa_eps(a, A, A2);
            dspy_nfa_eps(a, B, B2);
        }
        b_live = true;
        a_live = a_live && opt;
        A = A2;
        B = B2;
    }
    frag tail = dspy_frag_cat(a, ws(c), lit(c, "}"));
    if (a_live) dspy_nfa_eps(a, A, tail.in);
    dspy_nfa_eps(a, B, tail.in);
    return (frag){head.in, tail.out};
}

static const char *const k_ignored[] = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
                                        "deprecated", "readOnly", "writeOnly", "additionalProperties", "required",
                                        "$defs", "definitions", "properties", "items", "type", "enum", "const",
                                        "anyOf", "oneOf", "$ref", NULL};

static frag one_type(jctx *c, const char *t, const dspy_json *s, const char *path) {
    if (strcmp(t, "string") == 0) return string(c, c->p->max_string_tokens);
    if (strcmp(t, "integer") == 0) return number(c, true);
    if (strcmp(t, "number") == 0) return number(c, false);
    if (strcmp(t, "boolean") == 0) return dspy_frag_alt(c->a, lit(c, "true"), lit(c, "false"));
    if (strcmp(t, "null") == 0) return lit(c, "null");
    if (strcmp(t, "array") == 0) {
        const dspy_json *items = dspy_json_get(s, "items");
        if (items && dspy_json_typeof(items) != DSPY_JSON_OBJECT)
            return fail_at(c, path, "\"items\" must be a schema object", NULL);
        return array_of(c, items, c->p->max_depth, path);
    }
    if (strcmp(t, "object") == 0) {
        const dspy_json *props = dspy_json_get(s, "properties");
        const dspy_json *ap = dspy_json_get(s, "additionalProperties");
        if (props && dspy_json_typeof(props) != DSPY_JSON_OBJECT)
            return fail_at(c, path, "\"properties\" must be an object", NULL);
        if (props && dspy_json_size(props) > 0) return object_props(c, s, props, path);
        if (ap && dspy_json_typeof(ap) == DSPY_JSON_OBJECT) return open_object(c, ap, 0, path);
        if (ap && dspy_json_typeof(ap) == DSPY_JSON_BOOL && !dspy_json_truthy(ap)) return lit(c, "{}");
        return open_object(c, NULL, c->p->max_depth, path);
    }
    return fail_at(c, path, "unsupported \"type\": ", t);
}

static frag value_schema_in(jctx *c, const dspy_json *s, const char *path);

static frag value_schema(jctx *c, const dspy_json *s, const char *path) {
    if (c->st) return dspy_frag_empty(c->a);
    if (c->nesting >= MAX_NESTING) return fail_at(c, path, "the schema is nested too deeply (over 32 levels)", NULL);
    c->nesting++;
    frag f = value_schema_in(c, s, path);
    c->nesting--;
    return f;
}

static frag value_schema_in(jctx *c, const dspy_json *s, const char *path) {
    nfa *a = c->a;
    if (dspy_json_typeof(s) == DSPY_JSON_BOOL) {
        if (dspy_json_truthy(s)) return any_value(c, c->p->max_depth);
        return fail_at(c, path, "the schema false allows no value", NULL);
    }
    if (dspy_json_typeof(s) != DSPY_JSON_OBJECT) return fail_at(c, path, "a schema must be a JSON object", NULL);
    for (void *it = dspy_json_iter(s); it; it = dspy_json_next(s, it)) {
        const char *k = dspy_json_iter_key(it);
        bool known = false;
        for (size_t i = 0; k_ignored[i] && !known; i++) known = strcmp(k, k_ignored[i]) == 0;
        if (!known) return fail_at(c, path, "keyword not supported by this server's structured outputs: ", k);
    }
    const dspy_json *ref = dspy_json_get(s, "$ref");
    if (ref) {
        if (!dspy_json_is_string(ref)) return fail_at(c, path, "\"$ref\" must be a string", NULL);
        const char *r = dspy_json_str(ref), *name = NULL, *where = NULL;
        if (strncmp(r, "#/$defs/", 8) == 0) name = r + 8, where = "$defs";
        else if (strncmp(r, "#/definitions/", 14) == 0) name = r + 14, where = "definitions";
        const dspy_json *defs = where ? dspy_json_get(c->root, where) : NULL;
        const dspy_json *target = defs && !strchr(name, '/') ? dspy_json_get(defs, name) : NULL;
        if (!target) return fail_at(c, path, "\"$ref\" must name an entry of the root's $defs/definitions: ", r);
        if (c->ref_depth >= MAX_REF_DEPTH) return fail_at(c, path, "recursive \"$ref\" is not supported: ", r);
        c->ref_depth++;
        char sub[512];
        snprintf(sub, sizeof sub, "/%s/%.200s", where, name);
        frag f = value_schema(c, target, sub);
        c->ref_depth--;
        return f;
    }
    const char *union_key = dspy_json_get(s, "anyOf") ? "anyOf" : dspy_json_get(s, "oneOf") ? "oneOf" : NULL;
    if (union_key) {
        const dspy_json *u = dspy_json_get(s, union_key);
        if (dspy_json_typeof(u) != DSPY_JSON_ARRAY || dspy_json_size(u) == 0)
            return fail_at(c, path, "\"anyOf\"/\"oneOf\" must be a non-empty array", NULL);
        if (dspy_json_get(s, "type") || dspy_json_get(s, "enum") || dspy_json_get(s, "const"))
            return fail_at(c, path, "\"anyOf\"/\"oneOf\" together with type/enum/const is not supported", NULL);
        frag f = {-1, -1};
        for (size_t i = 0; i < dspy_json_size(u) && !c->st; i++) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s/%zu", path, union_key, i);
            frag g = value_schema(c, dspy_json_at(u, i), sub);
            f = i ? dspy_frag_alt(a, f, g) : g;
        }
        return f;
    }
    const dspy_json *cst = dspy_json_get(s, "const");
    if (cst) return json_literal(c, cst);
    const dspy_json *en = dspy_json_get(s, "enum");
    if (en) {
        if (dspy_json_typeof(en) != DSPY_JSON_ARRAY || dspy_json_size(en) == 0)
            return fail_at(c, path, "\"enum\" must be a non-empty array", NULL);
        frag f = {-1, -1};
        for (size_t i = 0; i < dspy_json_size(en); i++) {
            frag g = json_literal(c, dspy_json_at(en, i));
            f = i ? dspy_frag_alt(a, f, g) : g;
        }
        return f;
    }
    const dspy_json *t = dspy_json_get(s, "type");
    if (!t) {
        if (dspy_json_get(s, "properties")) return one_type(c, "object", s, path);
        return any_value(c, c->p->max_depth);
    }
    if (dspy_json_is_string(t)) return one_type(c, dspy_json_str(t), s, path);
    if (dspy_json_typeof(t) != DSPY_JSON_ARRAY || dspy_json_size(t) == 0)
        return fail_at(c, path, "\"type\" must be a string or a non-empty array of strings", NULL);
    frag f = {-1, -1};
    for (size_t i = 0; i < dspy_json_size(t) && !c->st; i++) {
        const dspy_json *ti = dspy_json_at(t, i);
        if (!dspy_json_is_string(ti)) return fail_at(c, path, "\"type\" must be a string or an array of strings", NULL);
        frag g = one_type(c, dspy_json_str(ti), s, path);
        f = i ? dspy_frag_alt(a, f, g) : g;
    }
    return f;
}

static dspy_status check_params(const dspy_structured_params *p) {
    if (p->max_string_tokens < 0 || p->max_whitespace < 0 || p->max_depth < 0 || p->max_depth > 8)
        return dspy_fail(DSPY_ERR_ARG, "structured: bad parameters (max_string_tokens and max_whitespace >= 0, "
                         "max_depth 0..8)");
    return DSPY_OK;
}

dspy_status dspy_structured_json_schema(const dspy_structured_vocab *v, const dspy_json *schema,
                                        const dspy_structured_params *p, dspy_constraint **out) {
    *out = NULL;
    dspy_structured_params prm = p ? *p : dspy_structured_params_default();
    dspy_status st = check_params(&prm);
    if (st) return st;
    if (!schema || dspy_json_typeof(schema) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "json_schema: the schema must be a JSON object");
    nfa a;
    dspy_nfa_init(&a);
    jctx c = {&a, &prm, schema, 0, 0, DSPY_OK};
    frag f = value_schema(&c, schema, "");
    st = c.st ? c.st : dspy_structured_finish(v, &a, f, out);
    dspy_nfa_free(&a);
    return st;
}

dspy_status dspy_structured_json_object(const dspy_structured_vocab *v, const dspy_structured_params *p,
                                        dspy_constraint **out) {
    *out = NULL;
    dspy_structured_params prm = p ? *p : dspy_structured_params_default();
    dspy_status st = check_params(&prm);
    if (st) return st;
    nfa a;
    dspy_nfa_init(&a);
    jctx c = {&a, &prm, NULL, 0, 0, DSPY_OK};
    frag f = open_object(&c, NULL, prm.max_depth, "");
    st = c.st ? c.st : dspy_structured_finish(v, &a, f, out);
    dspy_nfa_free(&a);
    return st;
}
