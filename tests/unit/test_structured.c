/* test_structured.c — the structured-output compilers (dspy/structured.h) over the real Llama 3
 * tokenizer (../shared/models/llama3-tokenizer).
 *
 * Every automaton is checked by random walks: from the start, pick a uniformly random allowed
 * token (or stop, where eos is allowed) until the automaton accepts; the decoded text must then
 * parse the way the consumer parses it: a Literal value exactly; DSPy's ChatAdapter parser
 * (dspy_adapter_parse) with the Literal field holding one of the labels; the JSON parser with
 * every property of the schema's type. Reachability: every label's canonical tokenization and
 * its byte-by-byte tokenization walk to an accepting state. Bad specifications give
 * DSPY_ERR_ARG naming the problem. The 77-label compile times are printed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "dspy/adapter.h"
#include "dspy/json.h"
#include "dspy/rng.h"
#include "dspy/signature.h"
#include "dspy/structured.h"
#include "dspy/tokenizer.h"

static dspy_tokenizer *g_tok;
static dspy_structured_vocab *g_voc;
static char *g_labels[128];
static size_t g_n_labels;
static int32_t g_byte_token[256]; /* the token of each single byte */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool load(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json") || !test_have_shared("data/banking77/labels.txt")) {
        check_skip("../shared tokenizer or banking77 labels absent");
        return false;
    }
    if (dspy_tokenizer_load(test_shared("models/llama3-tokenizer"), &g_tok) != DSPY_OK) return false;
    double t0 = now_s();
    CHECK_OK(dspy_structured_vocab_new(g_tok, dspy_tokenizer_vocab_size(g_tok), &g_voc));
    printf("vocabulary trie: %.3f s\n", now_s() - t0);
    char *text = test_slurp(test_shared("data/banking77/labels.txt"));
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && g_n_labels < 128; l = strtok_r(NULL, "\n", &save))
        if (*l) g_labels[g_n_labels++] = strdup(l);
    free(text);
    CHECK_INT(g_n_labels, 77);
    for (int b = 0; b < 256; b++) g_byte_token[b] = -1;
    for (int32_t t = 0; t < dspy_tokenizer_vocab_size(g_tok); t++) {
        size_t len;
        const char *s = dspy_tokenizer_token_bytes(g_tok, t, &len);
        if (s && len == 1 && !dspy_tokenizer_is_special(g_tok, t)) g_byte_token[(unsigned char)s[0]] = t;
    }
    return g_voc != NULL;
}

/* The state after walking ids from the start; -1 when a token is not allowed. */
static int32_t walk_ids_from(const dspy_constraint *c, int32_t s, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n && s >= 0; i++) s = dspy_constraint_next(c, s, ids[i]);
    return s;
}

static int32_t walk_ids(const dspy_constraint *c, const int32_t *ids, size_t n) { return walk_ids_from(c, 0, ids, n); }

static int32_t walk_text(const dspy_constraint *c, const char *text, bool by_bytes) {
    if (by_bytes) {
        int32_t s = 0;
        for (const char *p = text; *p && s >= 0; p++) s = dspy_constraint_next(c, s, g_byte_token[(unsigned char)*p]);
        return s;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (dspy_tokenizer_encode(g_tok, text, strlen(text), false, false, &ids, &n) != DSPY_OK) return -1;
    int32_t s = walk_ids(c, ids, n);
    free(ids);
    return s;
}

/* A random path: uniform among the allowed tokens, stopping where eos is allowed with
 * probability p_stop (always when nothing else is). Returns the decoded text (malloc'd) or NULL
 * when it did not accept within max_steps. */
static char *random_walk(const dspy_constraint *c, dspy_rng *r, double p_stop, int max_steps, size_t *n_tokens) {
    int32_t V = dspy_constraint_vocab(c), W = (V + 31) / 32;
    uint32_t *w = malloc(sizeof(uint32_t) * (size_t)W);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)max_steps);
    int32_t s = 0, n = 0;
    char *out = NULL;
    for (; n < max_steps; n++) {
        int64_t cnt = dspy_constraint_count(c, s);
        if (dspy_constraint_accepts(c, s) && (cnt == 0 || dspy_rng_uniform(r) < p_stop)) break;
        if (cnt == 0) goto done; /* stuck: the caller's CHECK fails */
        dspy_constraint_mask(c, s, NULL, 0, w);
        int64_t k = (int64_t)(dspy_rng_uniform(r) * (double)cnt);
        int32_t tok = -1;
        for (int32_t i = 0; i < W && tok < 0; i++) {
            int pc = __builtin_popcount(w[i]);
            if (k >= pc) {
                k -= pc;
                continue;
            }
            for (int b = 0; b < 32; b++)
                if (w[i] >> b & 1u) {
                    if (k-- == 0) {
                        tok = i * 32 + b;
                        break;
                    }
                }
        }
        ids[n] = tok;
        s = dspy_constraint_next(c, s, tok);
        if (s < 0) goto done;
    }
    if (n < max_steps) {
        size_t len;
        if (dspy_tokenizer_decode(g_tok, ids, (size_t)n, false, &out, &len) != DSPY_OK) out = NULL;
    }
done:
    if (n_tokens) *n_tokens = (size_t)n;
    free(w);
    free(ids);
    return out;
}

static bool is_label(const char *s) {
    for (size_t i = 0; i < g_n_labels; i++)
        if (strcmp(s, g_labels[i]) == 0) return true;
    return false;
}

static void test_literal(void) {
    dspy_constraint *c = NULL;
    double t0 = now_s();
    CHECK_OK(dspy_structured_literal(g_voc, (const char *const *)g_labels, g_n_labels, &c));
    printf("77-label Literal: %.3f s, %d states\n", now_s() - t0, c ? dspy_constraint_states(c) : 0);
    if (!c) return;
    CHECK_OK(dspy_constraint_check(c, true));
    int reach = 0;
    for (size_t i = 0; i < g_n_labels; i++) {
        int32_t a = walk_text(c, g_labels[i], false), b = walk_text(c, g_labels[i], true);
        reach += a >= 0 && dspy_constraint_accepts(c, a) && b >= 0 && dspy_constraint_accepts(c, b);
    }
    CHECK_INT(reach, 77);
    /* a prefix of a label does not accept; a label plus a byte dies */
    int32_t s = walk_text(c, "card", true);
    CHECK(s >= 0 && !dspy_constraint_accepts(c, s));
    CHECK_INT(walk_text(c, "card_arrivalx", true), -1);
    CHECK_INT(walk_text(c, " card_arrival", false), -1);
    dspy_rng r;
    dspy_rng_seed(&r, 5);
    int ok = 0, seen_distinct = 0;
    bool seen[77] = {0};
    for (int i = 0; i < 300; i++) {
        char *t = random_walk(c, &r, 1.0, 64, NULL);
        if (t && is_label(t)) ok++;
        for (size_t k = 0; t && k < g_n_labels; k++)
            if (strcmp(t, g_labels[k]) == 0 && !seen[k]) seen[k] = true, seen_distinct++;
        free(t);
    }
    CHECK_INT(ok, 300);
    CHECK(seen_distinct > 30);
    dspy_constraint_free(c);
}

static dspy_signature *banking_sig(void) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "text: str -> reasoning: str, label: Literal[");
    for (size_t i = 0; i < g_n_labels; i++) dspy_str_appendf(&s, "%s'%s'", i ? ", " : "", g_labels[i]);
    dspy_str_append(&s, "]");
    dspy_signature *sig = NULL;
    CHECK_OK(dspy_signature_parse(dspy_str_cstr(&s), "Classify the intent.", &sig));
    dspy_str_free(&s);
    return sig;
}

static void test_layout(void) {
    dspy_signature *sig = banking_sig();
    if (!sig) return;
    dspy_layout_field f[2] = {{"reasoning", NULL, 0, 24}, {"label", (const char *const *)g_labels, g_n_labels, 0}};
    dspy_constraint *c = NULL;
    double t0 = now_s();
    CHECK_OK(dspy_structured_layout(g_voc, f, 2, &c));
    printf("layout (reasoning <= 24 tokens + 77 labels): %.3f s, %d states\n", now_s() - t0,
           c ? dspy_constraint_states(c) : 0);
    if (!c) {
        dspy_signature_free(sig);
        return;
    }
    CHECK_OK(dspy_constraint_check(c, true));
    /* the text DSPy's ChatAdapter writes for a demo walks to acceptance, for every label */
    int reach = 0;
    for (size_t i = 0; i < g_n_labels; i++) {
        char buf[256];
        snprintf(buf, sizeof buf, "[[ ## reasoning ## ]]\nThe user asks about it.\nSo.\n\n[[ ## label ## ]]\n%s\n\n"
                 "[[ ## completed ## ]]", g_labels[i]);
        int32_t s = walk_text(c, buf, false);
        reach += s >= 0 && dspy_constraint_accepts(c, s);
    }
    CHECK_INT(reach, 77);
    CHECK_INT(walk_text(c, "[[ ## reasoning ## ]]\na [b", false), -1);
    CHECK_INT(walk_text(c, "[[ ## reasoning ## ]]\na\n\nb", true), -1);
    dspy_rng r;
    dspy_rng_seed(&r, 9);
    int parsed = 0, walks = 200;
    size_t longest = 0;
    for (int i = 0; i < walks; i++) {
        size_t nt = 0;
        char *t = random_walk(c, &r, 1.0, 400, &nt);
        if (nt > longest) longest = nt;
        dspy_json *fields = NULL;
        if (t && dspy_adapter_parse(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, sig, t, &fields) == DSPY_OK) {
            const dspy_json *l = dspy_json_get(fields, "label");
            if (l && dspy_json_is_string(l) && is_label(dspy_json_str(l)) && dspy_json_get(fields, "reasoning")) parsed++;
            else fprintf(stderr, "bad fields for %s\n", t);
        } else if (t) {
            fprintf(stderr, "unparseable: %s\n%s\n", t, dspy_errmsg());
        }
        dspy_json_decref(fields);
        free(t);
    }
    CHECK_INT(parsed, walks);
    /* 24 reasoning tokens + header + label + marker: the bound holds */
    CHECK(longest < 24 + 80);
    dspy_constraint_free(c);
    dspy_signature_free(sig);
}

/* The jump list of `state` decoded (malloc'd; "" for none), its tokens checked to walk. */
static char *jump_text(const dspy_constraint *c, int32_t state) {
    int32_t n;
    const int32_t *j = dspy_constraint_jump(c, state, &n);
    CHECK(walk_ids_from(c, state, j, (size_t)n) >= 0);
    char *out = NULL;
    size_t len;
    if (n == 0) return strdup("");
    CHECK_OK(dspy_tokenizer_decode(g_tok, j, (size_t)n, false, &out, &len));
    return out;
}

/* Jump-forward lists of the layout (dspy_constraint_jump): from the start the header, up to
 * where the free text begins; inside the free text none; after a label's last byte (one no other
 * label extends) the rest of the answer, up to the accepting state. */
static void test_layout_jump(void) {
    dspy_layout_field f[2] = {{"reasoning", NULL, 0, 24}, {"label", (const char *const *)g_labels, g_n_labels, 0}};
    dspy_constraint *c = NULL;
    CHECK_OK(dspy_structured_layout(g_voc, f, 2, &c));
    if (!c) return;
    char *t = jump_text(c, 0);
    CHECK_STR(t, "[[ ## reasoning ## ]]\n");
    free(t);
    int32_t s = walk_text(c, "[[ ## reasoning ## ]]\nThe user", false);
    CHECK(s >= 0);
    t = jump_text(c, s);
    CHECK_STR(t, "");
    free(t);
    int checked = 0;
    for (size_t i = 0; i < g_n_labels; i++) {
        bool extended = false; /* another label starts with this one */
        for (size_t k = 0; k < g_n_labels; k++)
            extended |= k != i && strncmp(g_labels[k], g_labels[i], strlen(g_labels[i])) == 0;
        if (extended) continue;
        char buf[256];
        snprintf(buf, sizeof buf, "[[ ## reasoning ## ]]\nSo.\n\n[[ ## label ## ]]\n%s", g_labels[i]);
        s = walk_text(c, buf, true);
        CHECK(s >= 0);
        t = jump_text(c, s);
        checked += strcmp(t, "\n\n[[ ## completed ## ]]") == 0;
        int32_t n;
        const int32_t *j = dspy_constraint_jump(c, s, &n);
        CHECK(dspy_constraint_accepts(c, walk_ids_from(c, s, j, (size_t)n)));
        free(t);
    }
    CHECK(checked >= 70);
    printf("jump lists: %d labels' endings checked\n", checked);
    dspy_constraint_free(c);
}

/* The 77-label layout with the default reasoning bound the server uses (256 tokens). */
static void test_layout_timing(void) {
    dspy_layout_field f[2] = {{"reasoning", NULL, 0, 256}, {"label", (const char *const *)g_labels, g_n_labels, 0}};
    dspy_constraint *c = NULL;
    double t0 = now_s();
    CHECK_OK(dspy_structured_layout(g_voc, f, 2, &c));
    printf("layout (reasoning <= 256 tokens + 77 labels): %.3f s, %d states\n", now_s() - t0,
           c ? dspy_constraint_states(c) : 0);
    if (c) CHECK_OK(dspy_constraint_check(c, true));
    dspy_constraint_free(c);
}

static void test_json_schema(void) {
    dspy_signature *sig = NULL;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "text: str -> reasoning: str, label: Literal[");
    for (size_t i = 0; i < g_n_labels; i++) dspy_str_appendf(&s, "%s'%s'", i ? ", " : "", g_labels[i]);
    dspy_str_append(&s, "], confidence: float, votes: int, urgent: bool, tags: list[str]");
    CHECK_OK(dspy_signature_parse(dspy_str_cstr(&s), NULL, &sig));
    dspy_str_free(&s);
    if (!sig) return;
    dspy_json *rf = NULL;
    CHECK_OK(dspy_json_adapter_response_format(sig, &rf));
    const dspy_json *schema = dspy_json_get(dspy_json_get(rf, "json_schema"), "schema");
    dspy_structured_params p = dspy_structured_params_default();
    dspy_constraint *c = NULL;
    /* the server's default string bound */
    p.max_string_tokens = 256;
    double t0 = now_s();
    CHECK_OK(dspy_structured_json_schema(g_voc, schema, &p, &c));
    printf("JSON schema (DSPy, 5 fields, strings <= 256 tokens): %.3f s, %d states\n", now_s() - t0,
           c ? dspy_constraint_states(c) : 0);
    if (c) CHECK_OK(dspy_constraint_check(c, true));
    dspy_constraint_free(c);
    c = NULL;
    p.max_string_tokens = 12;
    t0 = now_s();
    CHECK_OK(dspy_structured_json_schema(g_voc, schema, &p, &c));
    printf("JSON schema (DSPy, 5 fields, strings <= 12 tokens): %.3f s, %d states\n", now_s() - t0,
           c ? dspy_constraint_states(c) : 0);
    if (c) {
        CHECK_OK(dspy_constraint_check(c, true));
        int32_t st = walk_text(c, "{\"reasoning\": \"ok\", \"label\": \"card_arrival\", \"confidence\": 0.5, "
                                  "\"votes\": 3, \"urgent\": false, \"tags\": [\"a\", \"b\"]}", false);
        CHECK(st >= 0 && dspy_constraint_accepts(c, st));
        st = walk_text(c, "{\n  \"reasoning\": \"x\\n\\\"q\\\" é\",\n  \"label\": \"age_limit\",\n  \"confidence\": -1.5e3,\n"
                          "  \"votes\": 0,\n  \"urgent\": true,\n  \"tags\": []\n}", false);
        CHECK(st >= 0 && dspy_constraint_accepts(c, st));
        CHECK_INT(walk_text(c, "{\"label\"", true), -1); /* order of properties */
        CHECK_INT(walk_text(c, "{\"reasoning\": \"a\", \"label\": \"nope\"", true), -1);
        dspy_rng r;
        dspy_rng_seed(&r, 13);
        int good = 0, walks = 100;
        for (int i = 0; i < walks; i++) {
            char *t = random_walk(c, &r, 1.0, 3000, NULL);
            dspy_json *v = NULL;
            if (t && dspy_json_parse(t, strlen(t), "walk", &v) == DSPY_OK) {
                const dspy_json *l = dspy_json_get(v, "label"), *cf = dspy_json_get(v, "confidence");
                const dspy_json *vo = dspy_json_get(v, "votes"), *u = dspy_json_get(v, "urgent");
                const dspy_json *tg = dspy_json_get(v, "tags"), *re = dspy_json_get(v, "reasoning");
                bool ok = re && dspy_json_is_string(re) && l && dspy_json_is_string(l) && is_label(dspy_json_str(l)) &&
                          cf && dspy_json_is_number(cf) && vo && dspy_json_typeof(vo) == DSPY_JSON_INT && u &&
                          dspy_json_typeof(u) == DSPY_JSON_BOOL && tg && dspy_json_typeof(tg) == DSPY_JSON_ARRAY &&
                          dspy_json_size(v) == 6;
                good += ok;
                if (!ok) fprintf(stderr, "wrong shape: %s\n", t);
            } else if (t) {
                fprintf(stderr, "not JSON: %s\n%s\n", t, dspy_errmsg());
            } else {
                fprintf(stderr, "walk %d did not finish\n", i);
            }
            dspy_json_decref(v);
            free(t);
        }
        CHECK_INT(good, walks);
    }
    dspy_constraint_free(c);
    dspy_json_decref(rf);
    dspy_signature_free(sig);
}

static void test_json_object(void) {
    dspy_constraint *c = NULL;
    double t0 = now_s();
    CHECK_OK(dspy_structured_json_object(g_voc, NULL, &c));
    printf("json_object: %.3f s, %d states\n", now_s() - t0, c ? dspy_constraint_states(c) : 0);
    if (!c) return;
    CHECK_OK(dspy_constraint_check(c, true));
    int32_t st = walk_text(c, "{\"a\": [1, {\"b\": null}], \"c\": \"d\"}", false);
    CHECK(st >= 0 && dspy_constraint_accepts(c, st));
    CHECK_INT(walk_text(c, "[1]", true), -1);
    dspy_rng r;
    dspy_rng_seed(&r, 17);
    int finished = 0, good = 0;
    for (int i = 0; i < 100; i++) {
        char *t = random_walk(c, &r, 1.0, 400, NULL);
        if (!t) continue;
        finished++;
        dspy_json *v = NULL;
        if (dspy_json_parse(t, strlen(t), "walk", &v) == DSPY_OK && dspy_json_typeof(v) == DSPY_JSON_OBJECT) good++;
        else fprintf(stderr, "not a JSON object: %s\n", t);
        dspy_json_decref(v);
        free(t);
    }
    CHECK(finished > 0);
    CHECK_INT(good, finished);
    dspy_constraint_free(c);
}

static void expect_arg(dspy_status st, const char *needle) {
    CHECK_INT(st, DSPY_ERR_ARG);
    if (st == DSPY_ERR_ARG && !strstr(dspy_errmsg(), needle))
        check_report(false, __FILE__, __LINE__, "message '%s' lacks '%s'", dspy_errmsg(), needle);
}

static void bad_schema(const char *text, const char *needle) {
    dspy_json *s = NULL;
    CHECK_OK(dspy_json_parse(text, strlen(text), "schema", &s));
    dspy_constraint *c = NULL;
    expect_arg(dspy_structured_json_schema(g_voc, s, NULL, &c), needle);
    CHECK(c == NULL);
    dspy_json_decref(s);
}

static void test_bad(void) {
    dspy_constraint *c = NULL;
    expect_arg(dspy_structured_literal(g_voc, NULL, 0, &c), "at least one value");
    const char *empty[] = {"a", ""};
    expect_arg(dspy_structured_literal(g_voc, empty, 2, &c), "value 1 is empty");
    dspy_layout_field f1[1] = {{"bad name", NULL, 0, 0}};
    expect_arg(dspy_structured_layout(g_voc, f1, 1, &c), "not an identifier");
    dspy_layout_field f2[2] = {{"a", NULL, 0, 0}, {"a", NULL, 0, 0}};
    expect_arg(dspy_structured_layout(g_voc, f2, 2, &c), "appears twice");
    dspy_layout_field f3[1] = {{"a", NULL, 0, -1}};
    expect_arg(dspy_structured_layout(g_voc, f3, 1, &c), "negative");
    expect_arg(dspy_structured_layout(g_voc, NULL, 0, &c), "at least one field");
    bad_schema("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"string\", \"pattern\": \"x+\"}}}",
               "/properties/a: keyword not supported by this server's structured outputs: pattern");
    bad_schema("{\"type\": \"objekt\"}", "unsupported \"type\": objekt");
    bad_schema("{\"$ref\": \"#/$defs/Missing\"}", "$defs/definitions: #/$defs/Missing");
    bad_schema("{\"$defs\": {\"A\": {\"$ref\": \"#/$defs/A\"}}, \"$ref\": \"#/$defs/A\"}", "recursive");
    bad_schema("{\"type\": \"object\", \"properties\": {\"a\": {}}, \"required\": [\"b\"]}", "not in \"properties\": b");
    bad_schema("{\"enum\": []}", "non-empty array");
    bad_schema("{\"anyOf\": [{\"type\": \"string\"}], \"type\": \"string\"}", "together with");
    bad_schema("{\"type\": \"integer\", \"minimum\": 3}", "minimum");
    CHECK(c == NULL);
}

int main(void) {
    if (load()) {
        RUN(test_literal);
        RUN(test_layout);
        RUN(test_layout_jump);
        RUN(test_layout_timing);
        RUN(test_json_schema);
        RUN(test_json_object);
        RUN(test_bad);
    }
    for (size_t i = 0; i < g_n_labels; i++) free(g_labels[i]);
    dspy_structured_vocab_free(g_voc);
    dspy_tokenizer_free(g_tok);
    return check_summary("test_structured");
}
