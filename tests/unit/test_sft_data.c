/* test_sft_data.c — chat JSONL to labelled tokens, bad-line reports, packing, epoch order.
 *
 * Label masks are checked against an independent computation: open-instruct's
 * encode_sft_example (what DSPy's train_sft_locally runs), which masks each non-assistant
 * message i over [len(tokens(messages[:i])), len(tokens(messages[:i+1], add_generation_prompt =
 * next message is assistant))), using the real Llama 3 tokenizer and the Llama 3.2 template.
 * Epoch orders are Python's `random.Random(seed).shuffle(list(range(10)))`.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/chat_template.h"
#include "dspy/sft_data.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

static dspy_tokenizer *g_tok;
static dspy_chat_template *g_tpl;

static bool setup(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        check_skip("shared Llama 3 tokenizer not present");
        return false;
    }
    if (!g_tok) CHECK_OK(dspy_tokenizer_load(test_shared("models/llama3-tokenizer"), &g_tok));
    if (!g_tpl)
        CHECK_OK(dspy_chat_template_load(test_shared("models/llama3-tokenizer/chat_template_llama3_2.jinja"), &g_tpl));
    return g_tok && g_tpl;
}

static dspy_sft_dataset *parse(const char *jsonl, const dspy_sft_params *p) {
    dspy_sft_dataset *ds = NULL;
    CHECK_OK(dspy_sft_parse(jsonl, strlen(jsonl), "t.jsonl", g_tok, g_tpl, p, &ds));
    return ds;
}

/* Token count of msgs rendered (HF apply_chat_template(tokenize=True)). */
static size_t n_tokens(const dspy_chat_msg *msgs, size_t n, bool gen) {
    dspy_str s = DSPY_STR_INIT;
    int32_t *ids = NULL;
    size_t len = 0;
    CHECK_OK(dspy_chat_render(g_tpl, msgs, n, gen, NULL, &s, NULL, NULL));
    CHECK_OK(dspy_tokenizer_encode(g_tok, s.ptr, s.len, false, true, &ids, &len));
    free(ids);
    dspy_str_free(&s);
    return len;
}

/* open-instruct's labels for msgs: -100 over every non-assistant message's range. */
static int32_t *open_instruct_labels(const dspy_chat_msg *msgs, size_t n, size_t *len) {
    dspy_str s = DSPY_STR_INIT;
    int32_t *ids = NULL;
    CHECK_OK(dspy_chat_render(g_tpl, msgs, n, false, NULL, &s, NULL, NULL));
    CHECK_OK(dspy_tokenizer_encode(g_tok, s.ptr, s.len, false, true, &ids, len));
    dspy_str_free(&s);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "assistant") == 0) continue;
        size_t start = i == 0 ? 0 : n_tokens(msgs, i, false);
        bool next_asst = i + 1 < n && strcmp(msgs[i + 1].role, "assistant") == 0;
        size_t end = n_tokens(msgs, i + 1, next_asst);
        for (size_t t = start; t < end && t < *len; t++) ids[t] = DSPY_SFT_IGNORE;
    }
    return ids;
}

static const char *k_system =
    "Your input fields are:\n1. `text` (str)\nYour output fields are:\n1. `label` (Literal['card_arrival', "
    "'card_linking'])\nAll interactions will be structured in the following way, with the appropriate values "
    "filled in.";
static const char *k_user = "[[ ## text ## ]]\nwhy hasnt my card come in yet?\n\nRespond with the corresponding "
                            "output fields, starting with the field `[[ ## label ## ]]`.";
static const char *k_asst = "  [[ ## label ## ]]\ncard_arrival\n\n[[ ## completed ## ]]\n";

static char *chat_line(const dspy_chat_msg *msgs, size_t n) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "{\"messages\": [");
    for (size_t i = 0; i < n; i++) {
        dspy_str_appendf(&s, "%s{\"role\": \"%s\", \"content\": \"", i ? ", " : "", msgs[i].role);
        for (const char *c = msgs[i].content; *c; c++) {
            if (*c == '\n') dspy_str_append(&s, "\\n");
            else if (*c == '"' || *c == '\\') dspy_str_appendc(&s, '\\'), dspy_str_appendc(&s, *c);
            else dspy_str_appendc(&s, *c);
        }
        dspy_str_append(&s, "\"}");
    }
    dspy_str_append(&s, "]}\n");
    return dspy_str_take(&s);
}

static void test_labels_dspy_chat(void) {
    if (!setup()) return;
    dspy_chat_msg msgs[] = {{"system", k_system}, {"user", k_user}, {"assistant", k_asst}};
    char *line = chat_line(msgs, 3);
    dspy_sft_dataset *ds = parse(line, NULL);
    free(line);
    if (!ds) return;
    CHECK_INT(dspy_sft_count(ds), 1);
    CHECK_INT(dspy_sft_n_issues(ds), 0);
    dspy_sft_example ex = dspy_sft_at(ds, 0);
    size_t n_ref = 0;
    int32_t *ref = open_instruct_labels(msgs, 3, &n_ref);
    CHECK_INT(ex.n, n_ref);
    int diff = 0;
    for (int32_t t = 0; t < ex.n && (size_t)t < n_ref; t++) diff += ex.labels[t] != ref[t];
    CHECK_INT(diff, 0);
    free(ref);
    /* the exact shape: BOS first and unlabelled; the assistant header unlabelled; content + eot */
    CHECK_INT(ex.ids[0], 128000);
    CHECK_INT(ex.labels[0], DSPY_SFT_IGNORE);
    CHECK_INT(ex.ids[ex.n - 1], 128009); /* <|eot_id|> */
    CHECK_INT(ex.labels[ex.n - 1], 128009);
    int32_t first = 0;
    while (first < ex.n && ex.labels[first] == DSPY_SFT_IGNORE) first++;
    CHECK(first >= 4);
    CHECK_INT(ex.ids[first - 4], 128006); /* <|start_header_id|> */
    CHECK_INT(ex.ids[first - 3], 78191);  /* assistant */
    CHECK_INT(ex.ids[first - 2], 128007); /* <|end_header_id|> */
    CHECK_INT(ex.ids[first - 1], 271);    /* \n\n */
    for (int32_t t = first; t < ex.n; t++) CHECK_INT(ex.labels[t], ex.ids[t]);
    CHECK_INT(ex.n_labels, ex.n - first);
    char *text = NULL;
    CHECK_OK(dspy_tokenizer_decode(g_tok, ex.ids + first, (size_t)(ex.n - first), false, &text, NULL));
    CHECK_STR(text, "[[ ## label ## ]]\ncard_arrival\n\n[[ ## completed ## ]]<|eot_id|>");
    free(text);
    CHECK_INT(dspy_sft_total_labels(ds), ex.n_labels);
    CHECK_INT(dspy_sft_total_tokens(ds), ex.n);
    CHECK_INT(ex.line, 1);
    dspy_sft_free(ds);
}

static void test_labels_multi_turn(void) {
    if (!setup()) return;
    dspy_chat_msg msgs[] = {{"user", "Hi there"},     {"assistant", "Hello! How can I help?"},
                            {"user", "What is 2+2?"}, {"assistant", "4"},
                            {"user", "Thanks"},       {"assistant", "You're welcome."}};
    char *line = chat_line(msgs, 6);
    dspy_sft_dataset *ds = parse(line, NULL);
    free(line);
    if (!ds) return;
    CHECK_INT(dspy_sft_count(ds), 1);
    dspy_sft_example ex = dspy_sft_at(ds, 0);
    size_t n_ref = 0;
    int32_t *ref = open_instruct_labels(msgs, 6, &n_ref);
    CHECK_INT(ex.n, n_ref);
    int diff = 0, eots = 0;
    for (int32_t t = 0; t < ex.n && (size_t)t < n_ref; t++) {
        diff += ex.labels[t] != ref[t];
        eots += ex.labels[t] == 128009;
    }
    CHECK_INT(diff, 0);
    CHECK_INT(eots, 3); /* each assistant turn ends with its labelled <|eot_id|> */
    free(ref);
    dspy_sft_free(ds);
}

static void test_bad_lines(void) {
    if (!setup()) return;
    const char *good = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                       "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n";
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, good);                                                  /* 1 */
    dspy_str_append(&s, "{not json\n");                                          /* 2 */
    dspy_str_append(&s, "[1, 2]\n");                                             /* 3 */
    dspy_str_append(&s, "{\"msgs\": []}\n");                                     /* 4 */
    dspy_str_append(&s, "{\"messages\": \"hi\"}\n");                             /* 5 */
    dspy_str_append(&s, "{\"messages\": []}\n");                                 /* 6 */
    dspy_str_append(&s, "{\"messages\": [\"hi\"]}\n");                           /* 7 */
    dspy_str_append(&s, "{\"messages\": [{\"content\": \"x\"}]}\n");             /* 8 */
    dspy_str_append(&s, "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}\n"); /* 9 */
    dspy_str_append(&s, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                        "{\"role\": \"tool\", \"content\": \"b\"}]}\n");         /* 10 */
    dspy_str_append(&s, "{\"messages\": [{\"role\": \"system\", \"content\": \"a\"}, "
                        "{\"role\": \"user\", \"content\": \"b\"}]}\n");         /* 11 */
    dspy_str_append(&s, "   \n");                                                /* 12: blank, skipped silently */
    dspy_str_append(&s, "{\"messages\": \"\xff\"}\n");                          /* 13: invalid UTF-8 */
    dspy_str_append(&s, good);                                                   /* 14 */
    dspy_sft_dataset *ds = parse(s.ptr, NULL);
    dspy_str_free(&s);
    if (!ds) return;
    CHECK_INT(dspy_sft_count(ds), 2);
    if (dspy_sft_count(ds) == 2) {
        CHECK_INT(dspy_sft_at(ds, 0).line, 1);
        CHECK_INT(dspy_sft_at(ds, 1).line, 14);
    }
    CHECK_INT(dspy_sft_n_lines(ds), 13);
    struct {
        int64_t line;
        dspy_sft_issue_kind kind;
        const char *says;
    } want[] = {
        {2, DSPY_SFT_BAD_JSON, "invalid JSON"},
        {3, DSPY_SFT_BAD_JSON, "expected a JSON object"},
        {4, DSPY_SFT_BAD_SHAPE, "no \"messages\" key"},
        {5, DSPY_SFT_BAD_SHAPE, "\"messages\" is a string"},
        {6, DSPY_SFT_BAD_SHAPE, "an empty list"},
        {7, DSPY_SFT_BAD_SHAPE, "message 0 is a string"},
        {8, DSPY_SFT_BAD_SHAPE, "message 0: \"role\" is missing"},
        {9, DSPY_SFT_BAD_SHAPE, "message 0: \"content\" is a number"},
        {10, DSPY_SFT_UNKNOWN_ROLE, "message 1 has role 'tool'"},
        {11, DSPY_SFT_NO_ASSISTANT, "no assistant message"},
        {13, DSPY_SFT_BAD_JSON, "invalid UTF-8"},
    };
    size_t nw = sizeof want / sizeof want[0];
    CHECK_INT(dspy_sft_n_issues(ds), nw);
    for (size_t i = 0; i < nw && i < dspy_sft_n_issues(ds); i++) {
        const dspy_sft_issue *is = dspy_sft_issue_at(ds, i);
        CHECK_INT(is->line, want[i].line);
        CHECK_INT(is->kind, want[i].kind);
        CHECK_CONTAINS(is->message, want[i].says);
    }
    CHECK_STR(dspy_sft_issue_kind_name(DSPY_SFT_TOO_LONG), "too_long");
    dspy_sft_free(ds);
}

static void test_too_long_and_vocab(void) {
    if (!setup()) return;
    const char *small = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                        "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n";
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, small);
    dspy_str_append(&s, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
                        "\"content\": \"");
    for (int i = 0; i < 60; i++) dspy_str_append(&s, "word ");
    dspy_str_append(&s, "\"}]}\n");
    dspy_str_append(&s, small);
    /* measure the small one: its length is the limit, so the long one is skipped */
    dspy_sft_dataset *probe = parse(small, NULL);
    if (!probe) return;
    int32_t n_small = dspy_sft_at(probe, 0).n;
    dspy_sft_free(probe);
    dspy_sft_params p = dspy_sft_params_default();
    p.max_seq_length = n_small;
    dspy_sft_dataset *ds = parse(s.ptr, &p);
    if (ds) {
        CHECK_INT(dspy_sft_count(ds), 2);
        CHECK_INT(dspy_sft_n_issues(ds), 1);
        const dspy_sft_issue *is = dspy_sft_issue_at(ds, 0);
        CHECK_INT(is->line, 2);
        CHECK_INT(is->kind, DSPY_SFT_TOO_LONG);
        CHECK_CONTAINS(is->message, "more than max_seq_length=");
        CHECK_CONTAINS(is->message, "not truncated");
        dspy_sft_free(ds);
    }
    /* a model vocabulary smaller than the tokenizer's: every conversation has BOS 128000 */
    p = dspy_sft_params_default();
    p.vocab_size = 1000;
    ds = parse(small, &p);
    if (ds) {
        CHECK_INT(dspy_sft_count(ds), 0);
        CHECK_INT(dspy_sft_n_issues(ds), 1);
        CHECK_INT(dspy_sft_issue_at(ds, 0)->kind, DSPY_SFT_BAD_TOKEN);
        CHECK_CONTAINS(dspy_sft_issue_at(ds, 0)->message, "id 128000");
        dspy_sft_free(ds);
    }
    p = dspy_sft_params_default();
    p.max_seq_length = 1;
    CHECK_STATUS(dspy_sft_parse(small, strlen(small), NULL, g_tok, g_tpl, &p, &ds), DSPY_ERR_ARG);
    CHECK(ds == NULL);
    dspy_str_free(&s);
}

static void test_file_and_empty(void) {
    if (!setup()) return;
    dspy_sft_dataset *ds = NULL;
    CHECK_STATUS(dspy_sft_load("/nonexistent/x.jsonl", g_tok, g_tpl, NULL, &ds), DSPY_ERR_NOTFOUND);
    CHECK(ds == NULL);
    ds = parse("", NULL);
    CHECK_INT(dspy_sft_count(ds), 0);
    CHECK_INT(dspy_sft_n_issues(ds), 0);
    dspy_sft_free(ds);
    dspy_sft_free(NULL);
    dspy_str path = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/d.jsonl", test_tmpdir());
    const char *text = "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                       "{\"role\": \"assistant\", \"content\": \"b\"}]}\r\n\nnot json";
    CHECK_OK(dspy_write_file(path.ptr, text, strlen(text)));
    CHECK_OK(dspy_sft_load(path.ptr, g_tok, g_tpl, NULL, &ds));
    CHECK_INT(dspy_sft_count(ds), 1);
    CHECK_INT(dspy_sft_n_issues(ds), 1);
    CHECK_INT(dspy_sft_issue_at(ds, 0)->line, 3);
    dspy_sft_free(ds);
    dspy_str_free(&path);
}

static void test_packing(void) {
    if (!setup()) return;
    const char *lines =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"one\"}, {\"role\": \"assistant\", \"content\": \"1\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"two two\"}, {\"role\": \"assistant\", \"content\": \"2 "
        "2\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"three three three\"}, {\"role\": \"assistant\", "
        "\"content\": \"3 3 3\"}]}\n";
    dspy_sft_dataset *ds = parse(lines, NULL);
    if (!ds) return;
    CHECK_INT(dspy_sft_count(ds), 3);
    int32_t len[3];
    for (int i = 0; i < 3; i++) len[i] = dspy_sft_at(ds, i).n;
    CHECK(len[0] < len[1] && len[1] < len[2]);
    /* order 2, 0, 1 with room for len2 + len0 only: [2, 0] [1] */
    size_t order[3] = {2, 0, 1};
    int32_t max_len = len[2] + len[0];
    dspy_sft_pack *pk = NULL;
    CHECK_OK(dspy_sft_pack_new(ds, order, 3, max_len, true, &pk));
    size_t cnt = 0;
    CHECK_OK(dspy_sft_pack_count_only(ds, order, 3, max_len, true, &cnt));
    CHECK_INT(dspy_sft_pack_count(pk), 2);
    CHECK_INT(cnt, 2);
    if (dspy_sft_pack_count(pk) == 2) {
        dspy_sft_seq s0 = dspy_sft_pack_at(pk, 0), s1 = dspy_sft_pack_at(pk, 1);
        CHECK_INT(s0.T, max_len);
        CHECK_INT(s0.n_examples, 2);
        CHECK_INT(s1.T, len[1]);
        CHECK_INT(s1.n_examples, 1);
        dspy_sft_example e2 = dspy_sft_at(ds, 2), e0 = dspy_sft_at(ds, 0), e1 = dspy_sft_at(ds, 1);
        int bad = 0;
        for (int32_t t = 0; t < s0.T; t++) {
            bool second = t >= len[2];
            int32_t k = second ? t - len[2] : t;
            const dspy_sft_example *e = second ? &e0 : &e2;
            bad += s0.ids[t] != e->ids[k];
            bad += s0.pos[t] != k;
            bad += s0.seg[t] != (second ? 1 : 0);
            bad += s0.labels[t] != (k == 0 ? DSPY_SFT_IGNORE : e->labels[k]);
            bad += s0.targets[t] != (k + 1 < e->n ? e->labels[k + 1] : DSPY_SFT_IGNORE);
        }
        CHECK_INT(bad, 0);
        CHECK_INT(s0.labels[len[2]], DSPY_SFT_IGNORE); /* first token of the second example */
        CHECK_INT(s0.targets[len[2] - 1], DSPY_SFT_IGNORE); /* last of the first predicts nothing */
        int nt = 0;
        for (int32_t t = 0; t < s0.T; t++) nt += s0.targets[t] != DSPY_SFT_IGNORE;
        CHECK_INT(nt, s0.n_labels);
        CHECK_INT(s0.pos[len[2]], 0);
        CHECK_INT(s0.n_labels, e2.n_labels + e0.n_labels);
        CHECK_INT(s1.n_labels, e1.n_labels);
        CHECK_INT(s1.seg[0], 0);
        CHECK_INT(s1.seg[s1.T - 1], 0);
    }
    dspy_sft_pack_free(pk);
    /* packing false: one example per sequence */
    CHECK_OK(dspy_sft_pack_new(ds, order, 3, 4096, false, &pk));
    CHECK_INT(dspy_sft_pack_count(pk), 3);
    CHECK_INT(dspy_sft_pack_at(pk, 2).T, len[1]);
    dspy_sft_pack_free(pk);
    /* everything in one sequence when it fits; repeats allowed */
    size_t rep[4] = {0, 0, 1, 0};
    CHECK_OK(dspy_sft_pack_new(ds, rep, 4, 4096, true, &pk));
    CHECK_INT(dspy_sft_pack_count(pk), 1);
    CHECK_INT(dspy_sft_pack_at(pk, 0).n_examples, 4);
    CHECK_INT(dspy_sft_pack_at(pk, 0).seg[dspy_sft_pack_at(pk, 0).T - 1], 3);
    dspy_sft_pack_free(pk);
    /* errors */
    size_t badidx[1] = {3};
    CHECK_STATUS(dspy_sft_pack_new(ds, badidx, 1, 4096, true, &pk), DSPY_ERR_ARG);
    CHECK(pk == NULL);
    CHECK_STATUS(dspy_sft_pack_new(ds, order, 3, len[2] - 1, true, &pk), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "longer than max_len");
    dspy_sft_free(ds);
}

static void test_epoch_order(void) {
    if (!setup()) return;
    dspy_str s = DSPY_STR_INIT;
    for (int i = 0; i < 10; i++)
        dspy_str_appendf(&s, "{\"messages\": [{\"role\": \"user\", \"content\": \"q%d\"}, "
                             "{\"role\": \"assistant\", \"content\": \"a%d\"}]}\n", i, i);
    dspy_sft_dataset *ds = parse(s.ptr, NULL);
    dspy_str_free(&s);
    if (!ds) return;
    /* python3: o = list(range(10)); random.Random(seed).shuffle(o) */
    static const size_t want42[10] = {7, 3, 2, 8, 5, 6, 9, 4, 0, 1};
    static const size_t want43[10] = {8, 1, 5, 6, 9, 7, 3, 2, 4, 0};
    size_t order[10];
    dspy_sft_epoch_order(ds, 42, 0, order);
    CHECK(memcmp(order, want42, sizeof order) == 0);
    dspy_sft_epoch_order(ds, 42, 1, order);
    CHECK(memcmp(order, want43, sizeof order) == 0);
    dspy_sft_epoch_order(ds, 40, 3, order);
    CHECK(memcmp(order, want43, sizeof order) == 0);
    dspy_sft_free(ds);
}

int main(void) {
    RUN(test_labels_dspy_chat);
    RUN(test_labels_multi_turn);
    RUN(test_bad_lines);
    RUN(test_too_long_and_vocab);
    RUN(test_file_and_empty);
    RUN(test_packing);
    RUN(test_epoch_order);
    dspy_tokenizer_free(g_tok);
    dspy_chat_template_free(g_tpl);
    return check_summary("test_sft_data");
}
