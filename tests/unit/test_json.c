/* test_json.c — JSON parse errors, accessors, and Python-compatible output against CPython's
 * json.dumps / repr (tests/ref/json_vectors.txt, written by scripts/make_ref_json.py); the fast
 * reader under dspy_json_parse (base/json_parse.h) against jansson's json_loadb. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json_parse.h"
#include "check.h"
#include "dspy/json.h"

/* Decodes a JSON string literal field into a malloc'd C string. */
static char *unjson(const char *lit) {
    dspy_json *v;
    if (dspy_json_parse(lit, strlen(lit), "vector", &v)) return NULL;
    char *s = strdup(dspy_json_str(v));
    dspy_json_decref(v);
    return s;
}

static void test_vectors(void) {
    char *buf;
    size_t n;
    CHECK_OK(dspy_read_file(test_source("tests/ref/json_vectors.txt"), &buf, &n));
    if (!buf) return;
    int nf = 0, nj = 0, nr = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[4] = {0};
        int k = 0;
        for (char *p = line; k < 4; k++) {
            f[k] = p;
            char *t = strchr(p, '\t');
            if (!t) break;
            *t = '\0';
            p = t + 1;
        }
        if (line[0] == 'F') {
            unsigned long long bits = strtoull(f[1], NULL, 16);
            double x;
            memcpy(&x, &bits, sizeof x);
            char r[40];
            dspy_py_float_repr(x, r, sizeof r);
            CHECK_STR(r, f[2]);
            nf++;
        } else if (line[0] == 'J' || line[0] == 'R') {
            char *doc = unjson(f[1]);
            dspy_json *v = NULL;
            CHECK_OK(dspy_json_parse(doc, strlen(doc), "doc", &v));
            if (v) {
                dspy_str s = DSPY_STR_INIT;
                char *want;
                if (line[0] == 'J') {
                    CHECK_OK(dspy_json_dump(v, atoi(f[2]), &s));
                    want = unjson(f[3]);
                    nj++;
                } else {
                    dspy_json_repr(v, &s);
                    want = unjson(f[2]);
                    nr++;
                }
                CHECK_STR(dspy_str_cstr(&s), want);
                free(want);
                dspy_str_free(&s);
                dspy_json_decref(v);
            }
            free(doc);
        }
    }
    CHECK(nf > 600 && nj > 80 && nr > 10);
    free(buf);
}

static void test_errors(void) {
    dspy_json *v = (dspy_json *)1;
    CHECK_STATUS(dspy_json_parse("{\"a\": 1,\n \"b\": }", 17, "cfg.json", &v), DSPY_ERR_FORMAT);
    CHECK(v == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "cfg.json: line 2");
    CHECK_STATUS(dspy_json_load("/nonexistent.json", &v), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "/nonexistent.json");
}

/* text through the fast reader and through json_loadb: 1 when the fast reader took it (then
 * jansson must accept it too, and both trees dump to the same bytes: types, values, key order),
 * 0 when it left it to jansson. */
static int fast_vs_jansson(const char *text, size_t len) {
    json_t *f = dspy_json_parse_fast(text, len);
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    int took = f != NULL;
    if (f) {
        check_report(j != NULL, __FILE__, __LINE__, "fast reader took %.*s, which jansson refuses (%s)", (int)len, text,
                     err.text);
        if (j) {
            dspy_str a = DSPY_STR_INIT, b = DSPY_STR_INIT;
            CHECK_OK(dspy_json_dump((const dspy_json *)f, DSPY_JSON_COMPACT, &a));
            CHECK_OK(dspy_json_dump((const dspy_json *)j, DSPY_JSON_COMPACT, &b));
            check_report(a.len == b.len && memcmp(dspy_str_cstr(&a), dspy_str_cstr(&b), a.len) == 0, __FILE__, __LINE__,
                         "%.*s: fast reader %s, jansson %s", (int)len, text, dspy_str_cstr(&a), dspy_str_cstr(&b));
            dspy_str_free(&a), dspy_str_free(&b);
        }
    }
    json_decref(f);
    json_decref(j);
    return took;
}

static uint64_t g_seed = 88172645463325252ull;
static unsigned rnd(unsigned n) {
    g_seed ^= g_seed << 13, g_seed ^= g_seed >> 7, g_seed ^= g_seed << 17;
    return (unsigned)(g_seed % n);
}

/* A random document (depth-limited) in out; pieces the fast reader declines, some invalid. */
static void random_doc(dspy_str *out, int depth) {
    static const char *const atoms[] = {"0", "-0", "7", "-12", "123456789012345678", "1234567890123456789", "3.25", "-1e3",
                                        "1E+2", "2.5e-310", "1e400", "01", "1.", ".5", "true", "false", "null", "tru",
                                        "\"\"", "\"a b\"", "\"q\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\u00e9\\u20ac\"",
                                        "\"\\ud83d\\ude00\"", "\"\\ud83d\"", "\"\\u0000\"", "\"caf\xc3\xa9\"", "\"\x01\"", "\"\\x\""};
    const unsigned k = rnd(depth > 3 ? 2 : 4);
    if (k <= 1) {
        dspy_str_append(out, atoms[rnd(sizeof atoms / sizeof atoms[0])]);
    } else if (k == 2) {
        dspy_str_append(out, rnd(2) ? "[" : "[ ");
        for (unsigned i = 0, n = rnd(5); i < n; i++) {
            if (i) dspy_str_append(out, rnd(20) ? "," : ",,");
            random_doc(out, depth + 1);
        }
        dspy_str_append(out, rnd(30) ? "]" : ",]");
    } else {
        dspy_str_append(out, "{");
        for (unsigned i = 0, n = rnd(5); i < n; i++) {
            if (i) dspy_str_append(out, ",");
            static const char *const keys[] = {"\"a\"", "\"b\"", "\"a\"", "\"\"", "\"k\\n\"", "\"\\u0000\"", "a"};
            dspy_str_appendf(out, "%s%s", keys[rnd(sizeof keys / sizeof keys[0])], rnd(3) ? ":" : " : ");
            random_doc(out, depth + 1);
        }
        dspy_str_append(out, rnd(30) ? "}" : ",}");
    }
}

/* The fast reader: hand-picked documents, random ones, and a completions body of 1,500 token
 * ids (B2's shape), all against json_loadb; its speed on that body is printed, not checked. */
static void test_fast_reader(void) {
    static const char *const take[] = {
        "0", "-0", "[]", "{}", " [ 1 , -2 ,3 ] ", "{\"a\":1,\"b\":[true,false,null],\"a\":{\"x\":2.5}}",
        "\"tab\\tnew\\nline\\u00e9\\ud83d\\ude00\"", "[1e5,-0.0,1E-3,123456789012345678]", "{\"\":\"\"}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi \\\"there\\\"\"}],\"temperature\":0}",
        /* UTF-8: tokenizer.json's keys (\xc4\xa0 is GPT-2's space), 2-, 3- and 4-byte sequences */
        "\"caf\xc3\xa9\"", "{\"\xc4\xa0the\":1,\"\xc4\x8a\":[\"\xe2\x82\xac\\n\xf0\x9f\x98\x80\"]}", "\"\xf4\x8f\xbf\xbf\xee\x80\x80\""};
    static const char *const leave[] = {"", " ", "[1,]", "{\"a\":1,}", "[01]", "1.", "-", "[1e400]", "\"\\u0000\"",
                                        "\"\\udc00\"", "\"\\ud800x\"", "\"\x01\"", "tru", "truex", "[1]x",
                                        "1234567890123456789", "{a:1}", "[\"unterminated",
                                        /* invalid UTF-8: overlong, a surrogate, past U+10FFFF, 0xf5, a lone
                                         * continuation byte, a cut sequence; a valid one outside a string */
                                        "\"\xc0\xaf\"", "\"\xc1\xbf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"",
                                        "\"\xf4\x90\x80\x80\"", "\"\xf5\x80\x80\x80\"", "\"\x80\"", "\"\xe2\x82\"",
                                        "[\"\xe2\x82\"]", "[1]\xc3\xa9", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof take / sizeof take[0]; i++)
        check_report(fast_vs_jansson(take[i], strlen(take[i])) == 1, __FILE__, __LINE__, "fast reader left %s", take[i]);
    for (size_t i = 0; i < sizeof leave / sizeof leave[0]; i++)
        check_report(fast_vs_jansson(leave[i], strlen(leave[i])) == 0, __FILE__, __LINE__, "fast reader took %s", leave[i]);
    int took = 0;
    const int N = 4000;
    for (int i = 0; i < N; i++) {
        dspy_str d = DSPY_STR_INIT;
        random_doc(&d, 0);
        took += fast_vs_jansson(dspy_str_cstr(&d), d.len);
        dspy_str_free(&d);
    }
    CHECK(took > N / 5 && took < N);
    dspy_str body = DSPY_STR_INIT;
    dspy_str_append(&body, "{\"model\":\"/models/m\",\"prompt\":[");
    for (int i = 0; i < 1500; i++) dspy_str_appendf(&body, "%s%d", i ? "," : "", 1000 + (i * 7919) % 99000);
    dspy_str_append(&body, "],\"max_tokens\":80,\"temperature\":0}");
    CHECK_INT(fast_vs_jansson(dspy_str_cstr(&body), body.len), 1);
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < 200; r++) json_decref(dspy_json_parse_fast(dspy_str_cstr(&body), body.len));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    json_error_t err;
    for (int r = 0; r < 200; r++) json_decref(json_loadb(dspy_str_cstr(&body), body.len, JSON_DECODE_ANY, &err));
    clock_gettime(CLOCK_MONOTONIC, &t2);
    const double fast = ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9) / 200 * 1e6;
    const double jan = ((double)(t2.tv_sec - t1.tv_sec) + (t2.tv_nsec - t1.tv_nsec) * 1e-9) / 200 * 1e6;
    printf("  fast reader: %d of %d random documents taken, all equal to jansson's; a %zu-byte body of 1,500 "
           "token ids in %.0f us (jansson %.0f us)\n", took, N, body.len, fast, jan);
    dspy_str_free(&body);
}

static void test_accessors(void) {
    dspy_json *o = dspy_json_object();
    CHECK_OK(dspy_json_set(o, "z", dspy_json_int(1)));
    CHECK_OK(dspy_json_set_str(o, "a", "x"));
    CHECK_OK(dspy_json_set(o, "z", dspy_json_real(2.5))); /* replaced in place */
    char *s = dspy_json_dumps(o, DSPY_JSON_COMPACT);
    CHECK_STR(s, "{\"z\":2.5,\"a\":\"x\"}");
    free(s);
    int64_t iv;
    CHECK_STATUS(dspy_json_get_int(o, "z", "cfg", &iv), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "cfg: \"z\" must be an integer");
    CHECK_STATUS(dspy_json_get_int(o, "q", "cfg", &iv), DSPY_ERR_NOTFOUND);
    CHECK_NEAR(dspy_json_num_or(o, "z", 0), 2.5, 0);
    CHECK_STR(dspy_json_str_or(o, "a", NULL), "x");
    CHECK_STR(dspy_json_str_or(o, "b", "def"), "def");
    dspy_json *a = dspy_json_array();
    CHECK_OK(dspy_json_append(a, dspy_json_string("")));
    CHECK(!dspy_json_truthy(dspy_json_at(a, 0)));
    CHECK(dspy_json_truthy(a));
    CHECK_OK(dspy_json_set(o, "arr", a));
    dspy_json *c = dspy_json_copy(o);
    CHECK(dspy_json_equal(o, c));
    CHECK_OK(dspy_json_del(c, "a"));
    CHECK(!dspy_json_equal(o, c));
    const char *keys[3];
    int k = 0;
    for (void *it = dspy_json_iter(o); it && k < 3; it = dspy_json_next(o, it)) keys[k++] = dspy_json_iter_key(it);
    CHECK(k == 3 && strcmp(keys[0], "z") == 0 && strcmp(keys[2], "arr") == 0);
    dspy_json *one = dspy_json_int(1), *onef = dspy_json_real(1.0);
    CHECK(dspy_json_equal(one, onef));
    dspy_json_decref(one);
    dspy_json_decref(onef);
    dspy_json_decref(c);
    dspy_json_decref(o);
    dspy_json_decref(NULL);
}

static bool same_dump(json_t *a, json_t *b) {
    dspy_str x = DSPY_STR_INIT, y = DSPY_STR_INIT;
    bool same = a && b && dspy_json_dump((const dspy_json *)a, DSPY_JSON_COMPACT, &x) == DSPY_OK &&
                dspy_json_dump((const dspy_json *)b, DSPY_JSON_COMPACT, &y) == DSPY_OK && x.len == y.len &&
                memcmp(dspy_str_cstr(&x), dspy_str_cstr(&y), x.len) == 0;
    dspy_str_free(&x), dspy_str_free(&y);
    return same;
}

/* One value read through the cursor into a jansson tree: containers by enter/item, keys and
 * strings by key/string, integers by int; anything else skipped and its text given to
 * json_loadb (which checks that skip ended exactly at the value's end). NULL where the cursor
 * refuses. */
static json_t *cur_build(dspy_json_cur *c) {
    const int ch = dspy_json_cur_peek(c);
    const char *s;
    size_t n;
    if (ch == '{' || ch == '[') {
        if (!dspy_json_cur_enter(c, (char)ch)) return NULL;
        json_t *v = ch == '{' ? json_object() : json_array();
        for (size_t i = 0;; i++) {
            const int k = dspy_json_cur_item(c, i);
            if (k == 0) return v;
            char *key = NULL;
            if (k < 0 || (ch == '{' && !dspy_json_cur_key(c, &s, &n))) break;
            if (ch == '{') key = strndup(s, n);
            json_t *e = cur_build(c);
            const bool ok = e && (ch == '{' ? json_object_setn_new_nocheck(v, key, n, e) : json_array_append_new(v, e)) == 0;
            free(key);
            if (!ok) break;
        }
        json_decref(v);
        return NULL;
    }
    if (ch == '"') return dspy_json_cur_string(c, &s, &n) ? json_stringn_nocheck(s, n) : NULL;
    int64_t iv;
    if (dspy_json_cur_int(c, &iv)) return json_integer(iv);
    const char *at = c->p;
    if (!dspy_json_cur_skip(c)) return NULL;
    json_error_t err;
    return json_loadb(at, (size_t)(c->p - at), JSON_DECODE_ANY, &err);
}

/* text through the cursor: it takes what the fast reader takes, into the same tree; and the
 * reader with spans a.b and b.a takes the same, its tree jansson's without those members,
 * their text jansson's values. */
static int cursor_and_spans(const char *text, size_t len) {
    json_t *f = dspy_json_parse_fast(text, len);
    dspy_json_cur c;
    dspy_json_cur_init(&c, text, len);
    json_t *cb = cur_build(&c);
    const bool cur_took = cb && dspy_json_cur_peek(&c) == -1;
    dspy_json_cur_free(&c);
    check_report(cur_took == (f != NULL), __FILE__, __LINE__, "%.*s: cursor %s, fast reader %s", (int)len, text,
                 cur_took ? "took it" : "refused", f ? "took it" : "refused");
    if (cur_took && f)
        check_report(same_dump(cb, f), __FILE__, __LINE__, "%.*s: the cursor's tree differs", (int)len, text);
    json_decref(cb);

    dspy_json_span sp[2] = {{.outer = "a", .inner = "b"}, {.outer = "b", .inner = "a"}};
    json_t *g = dspy_json_parse_fast_spans(text, len, sp, 2);
    check_report((g != NULL) == (f != NULL), __FILE__, __LINE__, "%.*s: spans %s, whole %s", (int)len, text,
                 g ? "took it" : "refused", f ? "took it" : "refused");
    if (g && f) {
        json_t *want = json_deep_copy(f);
        for (int k = 0; k < 2; k++) {
            json_t *outer = json_object_get(want, sp[k].outer);
            json_t *inner = json_is_object(outer) ? json_object_get(outer, sp[k].inner) : NULL;
            check_report((inner != NULL) == (sp[k].at != NULL), __FILE__, __LINE__, "%.*s: span %s.%s %s", (int)len, text,
                         sp[k].outer, sp[k].inner, sp[k].at ? "given, but absent" : "missing");
            if (inner && sp[k].at) {
                json_error_t err;
                json_t *v = json_loadb(sp[k].at, sp[k].len, JSON_DECODE_ANY, &err);
                check_report(same_dump(v, inner), __FILE__, __LINE__, "%.*s: span %s.%s is %.*s", (int)len, text,
                             sp[k].outer, sp[k].inner, (int)sp[k].len, sp[k].at);
                const size_t items = json_is_array(inner) ? json_array_size(inner) : json_object_size(inner);
                check_report(sp[k].items == items, __FILE__, __LINE__, "%.*s: span %s.%s counts %zu items, jansson %zu",
                             (int)len, text, sp[k].outer, sp[k].inner, sp[k].items, items);
                json_decref(v);
                json_object_del(outer, sp[k].inner);
            }
        }
        check_report(same_dump(g, want), __FILE__, __LINE__, "%.*s: the tree without its spans differs", (int)len, text);
        json_decref(want);
    }
    json_decref(g);
    json_decref(f);
    return g ? (sp[0].at != NULL) + (sp[1].at != NULL) : 0;
}

/* A random object whose members (keys a, b, c, some repeated) are random objects of the same
 * keys or random documents: where spans a.b and b.a are found and not. */
static void random_span_doc(dspy_str *out, int depth) {
    static const char *const keys[] = {"\"a\"", "\"b\"", "\"c\"", " \"a\" ", "\"b\""};
    dspy_str_append(out, "{");
    for (unsigned i = 0, n = rnd(4); i < n; i++) {
        dspy_str_appendf(out, "%s%s:", i ? "," : "", keys[rnd(sizeof keys / sizeof keys[0])]);
        static const char *const valid[] = {"1", "-2.5", "\"x y\"", "[1,[2]]", "{\"b\":null}", "\"\\u00e9\\n\""};
        if (depth == 0 && rnd(3)) random_span_doc(out, 1);
        else if (rnd(4)) dspy_str_append(out, valid[rnd(sizeof valid / sizeof valid[0])]);
        else random_doc(out, 1);
    }
    dspy_str_append(out, "}");
}

/* The cursor and the spans (tokenizer.json's vocabulary and merges go through them). */
static void test_cursor_and_spans(void) {
    static const char *const docs[] = {
        "{\"a\":{\"b\":[1,2],\"c\":3},\"b\":{\"a\":\"x\\n\"}}",
        "{\"a\":{\"b\":1,\"b\":{\"z\":[]}},\"a\":{\"c\":2}}",     /* a repeated: the last has no b */
        "{\"a\":{\"b\":1},\"a\":{\"b\":[true,{\"q\":null}]}}", /* the last a's b */
        "{\"a\":[{\"b\":1}],\"b\":7}", "[{\"a\":{\"b\":1}}]", "{\"a\":{\"b\":\"caf\xc3\xa9 \\\" \\u00e9\"}}",
        "{\"a\":{\"b\":01}}", "{\"a\":{\"b\":[1,]}}", "{\"a\":{\"b\":\"\\u0000\"}}", "{\"a\":{\"b\":1e400}}",
        "{\"a\":{\"b\":[1}}", "{\"a\":{\"b\":1} ", " {\"b\" : { \"a\" : { } } } "};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) cursor_and_spans(docs[i], strlen(docs[i]));
    cursor_and_spans("\"ta{\"\0t", 7); /* a NUL after a value is not the end (fuzz_json found it) */
    int spans = 0;
    for (int i = 0; i < 4000; i++) {
        dspy_str d = DSPY_STR_INIT;
        if (i % 2) random_doc(&d, 0);
        else random_span_doc(&d, 0);
        spans += cursor_and_spans(dspy_str_cstr(&d), d.len);
        dspy_str_free(&d);
    }
    CHECK(spans > 200); /* the random documents reach a.b and b.a often enough to mean something */
    printf("  cursor and spans: 4,000 random documents, %d spans taken out\n", spans);
    /* the cursor's own refusals: a mismatched close, a key where a value belongs, reading past
     * the end, a real as an integer (the cursor stays at it) */
    dspy_json_cur c;
    const char *s;
    size_t n;
    int64_t v;
    dspy_json_cur_init(&c, "[1}", 3);
    CHECK(dspy_json_cur_enter(&c, '[') && dspy_json_cur_item(&c, 0) == 1 && dspy_json_cur_int(&c, &v) && v == 1);
    CHECK_INT(dspy_json_cur_item(&c, 1), -1);
    dspy_json_cur_init(&c, "{\"k\" 1}", 7);
    CHECK(dspy_json_cur_enter(&c, '{') && dspy_json_cur_item(&c, 0) == 1 && !dspy_json_cur_key(&c, &s, &n));
    dspy_json_cur_init(&c, "2.5", 3);
    CHECK(!dspy_json_cur_int(&c, &v) && dspy_json_cur_peek(&c) == '2' && dspy_json_cur_skip(&c));
    CHECK(dspy_json_cur_peek(&c) == -1 && !dspy_json_cur_skip(&c) && dspy_json_cur_item(&c, 0) == -1);
    dspy_json_cur_init(&c, "\"a\\tb\" \"ab\"", 11);
    CHECK(dspy_json_cur_string(&c, &s, &n) && n == 3 && memcmp(s, "a\tb", 3) == 0 && s == c.buf);
    CHECK(dspy_json_cur_string(&c, &s, &n) && n == 2 && memcmp(s, "ab", 2) == 0 && s != c.buf);
    dspy_json_cur_free(&c);
    /* more than eight spans: refused */
    dspy_json_span nine[9];
    for (int k = 0; k < 9; k++) nine[k] = (dspy_json_span){.outer = "a", .inner = "b"};
    CHECK(dspy_json_parse_fast_spans("{}", 2, nine, 9) == NULL);
}

int main(void) {
    RUN(test_vectors);
    RUN(test_errors);
    RUN(test_accessors);
    RUN(test_fast_reader);
    RUN(test_cursor_and_spans);
    return check_summary("test_json");
}
