/* test_sx_cache.c — the server's constraint cache (server/sx_cache.h) over the Llama 3
 * tokenizer: one compile per distinct specification (the same schema text and bounds hit, a
 * different bound or field list misses), least-recently-used eviction past max_entries, an
 * evicted entry still usable while a request holds it, the request's bounds applied (a layout
 * field's max_tokens, the default), and compile errors passed through as DSPY_ERR_ARG. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/constraint.h"
#include "dspy/tokenizer.h"
#include "server/openai.h"
#include "server/sx_cache.h"

static dspy_tokenizer *g_tok;

static void req(const char *body, oai_request *r) {
    oai_error e = OAI_ERROR_INIT;
    CHECK_OK(dspy_oai_request_parse(OAI_CHAT, body, strlen(body), 128256, r, &e));
    dspy_oai_error_free(&e);
}

#define MSG "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"

/* The state after the canonical tokens of text (-1 when one of them is not allowed). */
static int32_t state_after(const dspy_constraint *c, const char *text) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (dspy_tokenizer_encode(g_tok, text, strlen(text), false, false, &ids, &n) != DSPY_OK) return -1;
    int32_t s = 0;
    for (size_t i = 0; i < n && s >= 0; i++) s = dspy_constraint_next(c, s, ids[i]);
    free(ids);
    return s;
}

static void test_cache(void) {
    sx_defaults d = {4, 6, 2};
    sx_cache *c = NULL;
    CHECK_OK(dspy_sx_cache_new(g_tok, 128256, &d, &c));
    if (!c) return;
    oai_request a, a2, b, l1, l2, bad;
    req(MSG "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{\"type\":\"object\","
            "\"properties\":{\"x\":{\"enum\":[\"p\",\"q\"]}},\"required\":[\"x\"]}}}}", &a);
    req(MSG "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"other name\",\"schema\":"
            "{\"type\": \"object\", \"properties\": {\"x\": {\"enum\": [\"p\", \"q\"]}}, \"required\": [\"x\"]}}}}", &a2);
    req(MSG "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{\"type\":\"object\","
            "\"properties\":{\"x\":{\"enum\":[\"p\",\"q\"]}},\"required\":[\"x\"]}}},\"dspy_max_string_tokens\":3}", &b);
    req(MSG "\"dspy_layout\":[{\"name\":\"why\"},{\"name\":\"pick\",\"enum\":[\"yes\",\"no\"]}]}", &l1);
    req(MSG "\"dspy_layout\":[{\"name\":\"why\",\"max_tokens\":2},{\"name\":\"pick\",\"enum\":[\"yes\",\"no\"]}]}", &l2);
    req(MSG "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{\"type\":\"string\","
            "\"maxLength\":3}}}}", &bad);
    sx_entry *ea = NULL, *ea2 = NULL, *eb = NULL, *e1 = NULL, *e2 = NULL, *ex = NULL;
    bool hit;
    double t;
    CHECK_OK(dspy_sx_cache_get(c, &a, &ea, &hit, &t));
    CHECK(!hit);
    /* the same schema (compact text equal; the name is not part of it) */
    CHECK_OK(dspy_sx_cache_get(c, &a2, &ea2, &hit, &t));
    CHECK(hit);
    CHECK(ea == ea2);
    CHECK(t == 0);
    /* a different string bound is another automaton */
    CHECK_OK(dspy_sx_cache_get(c, &b, &eb, &hit, &t));
    CHECK(!hit);
    CHECK(eb != ea);
    int32_t n;
    int64_t compiles, hits;
    dspy_sx_cache_counts(c, &n, &compiles, &hits);
    CHECK_INT(n, 2);
    CHECK_INT(compiles, 2);
    CHECK_INT(hits, 1);
    /* a third entry evicts the least recently used (a); a's automaton stays usable */
    CHECK_OK(dspy_sx_cache_get(c, &l1, &e1, &hit, &t));
    dspy_sx_cache_counts(c, &n, &compiles, &hits);
    CHECK_INT(n, 2);
    int32_t s = state_after(dspy_sx_entry_constraint(ea), "{\"x\": \"q\"}");
    CHECK(s >= 0 && dspy_constraint_accepts(dspy_sx_entry_constraint(ea), s));
    dspy_sx_entry_release(ea2);
    dspy_sx_entry_release(ea); /* the last reference: freed now */
    CHECK_OK(dspy_sx_cache_get(c, &a, &ea, &hit, &t));
    CHECK(!hit); /* compiled again */
    dspy_sx_entry_release(ea);
    /* layouts: the default bound (4 tokens) vs the field's own (2): different keys, and the
     * bound is what the automaton enforces */
    CHECK_OK(dspy_sx_cache_get(c, &l2, &e2, &hit, &t));
    CHECK(!hit);
    const dspy_constraint *k1 = dspy_sx_entry_constraint(e1), *k2 = dspy_sx_entry_constraint(e2);
    const char *three = "[[ ## why ## ]]\nA B C";
    int32_t s1 = state_after(k1, three), s2 = state_after(k2, three);
    CHECK(s1 >= 0);
    CHECK_INT(s2, -1);
    const char *done = "[[ ## why ## ]]\nA B\n\n[[ ## pick ## ]]\nno\n\n[[ ## completed ## ]]";
    s2 = state_after(k2, done);
    CHECK(s2 >= 0 && dspy_constraint_accepts(k2, s2));
    dspy_sx_entry_release(e1);
    dspy_sx_entry_release(e2);
    dspy_sx_entry_release(eb);
    /* errors pass through */
    CHECK_STATUS(dspy_sx_cache_get(c, &bad, &ex, &hit, &t), DSPY_ERR_ARG);
    CHECK(ex == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "maxLength");
    dspy_oai_request_free(&a);
    dspy_oai_request_free(&a2);
    dspy_oai_request_free(&b);
    dspy_oai_request_free(&l1);
    dspy_oai_request_free(&l2);
    dspy_oai_request_free(&bad);
    dspy_sx_cache_free(c);
    dspy_sx_cache_free(NULL);
    dspy_sx_entry_release(NULL);
    d.max_entries = 0;
    CHECK_STATUS(dspy_sx_cache_new(g_tok, 128256, &d, &c), DSPY_ERR_ARG);
}

int main(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        check_skip("../shared/models/llama3-tokenizer is absent");
        return check_summary("test_sx_cache");
    }
    CHECK_OK(dspy_tokenizer_load(test_shared("models/llama3-tokenizer"), &g_tok));
    if (g_tok) RUN(test_cache);
    dspy_tokenizer_free(g_tok);
    return check_summary("test_sx_cache");
}
