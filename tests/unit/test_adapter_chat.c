/* test_adapter_chat.c — ChatAdapter formatting and parsing against the conformance cases:
 * exact messages CC-04..CC-08 (tests/ref/adapter_messages.json, copied from the spec by
 * scripts/make_ref_adapter.py), the tutorial prompt CC-10 against the shared fixtures (V33) and
 * the spec's V26 rules, format_finetune_data CC-12, parsing CC-13/CC-14, demos in V26. */
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dspy/adapter.h"
#include "tutorial_fixture.h"

static dspy_json *g_ref;

static const dspy_json *ref(const char *name) { return g_ref ? dspy_json_get(g_ref, name) : NULL; }

static dspy_signature *sig(const char *text, const char *instr) {
    dspy_signature *s = NULL;
    CHECK_OK(dspy_signature_parse(text, instr, &s));
    return s;
}

static void check_messages(const dspy_json *got, const dspy_json *want) {
    CHECK(got != NULL && want != NULL);
    if (!got || !want) return;
    CHECK_INT(dspy_json_size(got), dspy_json_size(want));
    for (size_t i = 0; i < dspy_json_size(got) && i < dspy_json_size(want); i++) {
        CHECK_STR(msg_role(got, i), msg_role(want, i));
        CHECK_STR(msg_content(got, i), msg_content(want, i));
        CHECK_INT(dspy_json_size(dspy_json_at(got, i)), 2);
    }
}

static void format_case(const char *name, const char *sigtext, const char *instr, const char *demos,
                        const char *inputs, dspy_profile p) {
    dspy_signature *s = sig(sigtext, instr);
    if (!s) return;
    dspy_json *d = demos ? J(demos) : NULL, *in = J(inputs), *msgs = NULL;
    CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_CHAT, p, s, d, in, &msgs));
    check_messages(msgs, ref(name));
    dspy_json_decref(msgs);
    dspy_json_decref(d);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

/* CC-04 .. CC-08 */
static void test_exact_messages(void) {
    format_case("CC-04", "question: str -> answer: str", "Answer the question.", NULL,
                "{\"question\": \"What is the capital of France?\"}", DSPY_PROFILE_V33);
    format_case("CC-05", "question: str -> verdict: Literal[\"yes\", \"no\"]", NULL, NULL,
                "{\"question\": \"Is the sky blue?\"}", DSPY_PROFILE_V33);
    format_case("CC-05-v26", "question: str -> verdict: Literal[\"yes\", \"no\"]", NULL, NULL,
                "{\"question\": \"Is the sky blue?\"}", DSPY_PROFILE_V26);
    format_case("CC-06", "question: str -> answers: list[str], scores: list[float]",
                "Answer the question with multiple answers and scores",
                "[{\"question\": \"Q1\", \"answers\": [\"A1\", \"A2\"], \"scores\": [0.1, 0.9]}]",
                "{\"question\": \"Q2\"}", DSPY_PROFILE_V33);
    format_case("CC-07", "question: str, context: str -> answer: str, confidence: float", NULL,
                "[{\"question\": \"Q1\", \"answer\": \"A1\"}]",
                "{\"question\": \"Q2\", \"context\": \"C2\"}", DSPY_PROFILE_V33);
    format_case("CC-08", "context: str -> answer: str", NULL, NULL,
                "{\"context\": [\"alpha\", \"beta\"]}", DSPY_PROFILE_V33);
    format_case("CC-20", "question -> answer", NULL, NULL,
                "{\"question\": \"What is the capital of France?\"}", DSPY_PROFILE_V33);
}

/* CC-08 other vectors, and format_field_value for non-str fields */
static void test_field_values(void) {
    static const char *const v[][3] = {
        {"str", "[]", "N/A"},
        {"str", "[\"x\"]", "\xc2\xabx\xc2\xbb"},
        {"str", "[\"a\\nb\", \"c\"]", "[1] \xc2\xab\xc2\xab\xc2\xab\n    a\n    b\n\xc2\xbb\xc2\xbb\xc2\xbb\n[2] \xc2\xab" "c\xc2\xbb"},
        {"str", "[\"has \xc2\xab quote\", 3]", "[1] \xc2\xab\xc2\xab\xc2\xab\n    has \xc2\xab quote\n\xc2\xbb\xc2\xbb\xc2\xbb\n[2] \xc2\xab" "3\xc2\xbb"},
        {"str", "\"plain text\"", "plain text"},
        {"str", "null", "None"},
        {"str", "true", "True"},
        {"str", "{\"k\": \"\xc3\xa9\"}", "{\"k\": \"\xc3\xa9\"}"},
        {"list[str]", "[\"A1\", \"A2\"]", "[\"A1\", \"A2\"]"},
        {"list[float]", "[0.1, 0.9, 1e-05, 100.0]", "[0.1, 0.9, 1e-05, 100.0]"},
        {"float", "0.9", "0.9"},
        {"int", "3", "3"},
        {"bool", "false", "False"},
        {"dict[str, int]", "{\"a\": 1, \"b\": 2}", "{\"a\": 1, \"b\": 2}"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        dspy_type *t = NULL;
        CHECK_OK(dspy_type_parse(v[i][0], &t));
        dspy_json *val = J(v[i][1]);
        dspy_str out = DSPY_STR_INIT;
        if (t) CHECK_OK(dspy_format_field_value(t, val, &out));
        CHECK_STR(dspy_str_cstr(&out), v[i][2]);
        dspy_str_free(&out);
        dspy_json_decref(val);
        dspy_type_free(t);
    }
}

/* Builds the V26 tutorial system message from the V33 fixture by undoing the four changes of
 * spec §4.3 (blank lines, field-list colons, Literal quoting, note wording). */
static char *v26_from_v33_system(const char *v33) {
    dspy_str s = DSPY_STR_INIT;
    const char *p = v33;
    struct {
        const char *from, *to;
    } rep[] = {
        {"1. `text` (str):\nYour output fields are:", "1. `text` (str)\n\nYour output fields are:"},
        {"1. `reasoning` (str): \n2. `label` (", "1. `reasoning` (str)\n2. `label` ("},
        {"]):\nAll interactions", "])\n\nAll interactions"},
        {"must exactly match (no extra characters) one of: ", "must be one of: "},
        {"[[ ## completed ## ]]\nIn adhering", "[[ ## completed ## ]]\n\nIn adhering"},
    };
    const char *lit_start = strstr(v33, "(Literal[");
    const char *lit_end = lit_start ? strstr(lit_start, "]):") : NULL;
    while (*p) {
        bool done = false;
        for (size_t k = 0; k < sizeof rep / sizeof rep[0] && !done; k++) {
            size_t l = strlen(rep[k].from);
            if (strncmp(p, rep[k].from, l) == 0) {
                dspy_str_append(&s, rep[k].to);
                p += l;
                done = true;
            }
        }
        if (done) continue;
        if (*p == '\'' && lit_start && p > lit_start && p < lit_end) {
            p++;
            continue;
        }
        dspy_str_appendc(&s, *p++);
    }
    return dspy_str_take(&s);
}

static char *remove_quotes(const char *s) {
    dspy_str o = DSPY_STR_INIT;
    for (; *s; s++)
        if (*s != '\'') dspy_str_appendc(&o, *s);
    return dspy_str_take(&o);
}

/* CC-10 and CC-12 */
static void test_tutorial(void) {
    if (!test_have_shared("spec/fixtures/tutorial_system_v3.3.1.txt") ||
        !test_have_shared("data/banking77/labels.txt")) {
        check_skip("shared spec fixtures or labels missing");
        return;
    }
    size_t ns, nu, na;
    char *want_sys = read_fixture("tutorial_system_v3.3.1.txt", &ns);
    char *want_user = read_fixture("tutorial_user_v3.3.1.txt", &nu);
    char *want_asst = read_fixture("tutorial_assistant.txt", &na);
    CHECK_INT(ns, 4118);
    CHECK_INT(nu, 2156);
    CHECK_INT(na, 282);
    dspy_signature *s = tutorial_cot(DSPY_PROFILE_V33);
    dspy_json *in = J("{\"text\": \"why hasnt my card come in yet?\"}");
    dspy_json *msgs = NULL;
    if (s && want_sys && want_user) {
        CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, NULL, in, &msgs));
        if (msgs) {
            CHECK_INT(dspy_json_size(msgs), 2);
            CHECK_STR(msg_role(msgs, 0), "system");
            CHECK_STR(msg_content(msgs, 0), want_sys);
            CHECK_INT(dspy_json_strlen(dspy_json_get(dspy_json_at(msgs, 0), "content")), 4118);
            CHECK_STR(msg_role(msgs, 1), "user");
            CHECK_STR(msg_content(msgs, 1), want_user);
        }
        dspy_json_decref(msgs);

        /* CC-12 */
        dspy_json *outputs = J("{\"reasoning\": \"The user is inquiring about the status of their card delivery, which suggests they are concerned about when they will receive their card. This aligns with the topic of card arrival and delivery estimates.\", \"label\": \"card_arrival\"}");
        dspy_json *ft = NULL;
        CHECK_OK(dspy_adapter_format_finetune_data(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, NULL, in, outputs, &ft));
        const dspy_json *m = ft ? dspy_json_get(ft, "messages") : NULL;
        CHECK(m && dspy_json_size(m) == 3);
        CHECK_INT(ft ? dspy_json_size(ft) : 0, 1);
        if (m && dspy_json_size(m) == 3) {
            CHECK_STR(msg_content(m, 0), want_sys);
            CHECK_STR(msg_content(m, 1), want_user);
            CHECK_STR(msg_role(m, 2), "assistant");
            CHECK_STR(msg_content(m, 2), want_asst);
        }
        char *asst = NULL;
        CHECK_OK(dspy_adapter_format_assistant(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, outputs, &asst));
        CHECK_STR(asst, want_asst);
        free(asst);
        dspy_json_decref(ft);
        /* the V26 assistant text is the same */
        dspy_signature *s26 = tutorial_cot(DSPY_PROFILE_V26);
        CHECK_OK(dspy_adapter_format_finetune_data(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V26, s26, NULL, in, outputs, &ft));
        m = ft ? dspy_json_get(ft, "messages") : NULL;
        if (m && dspy_json_size(m) == 3) CHECK_STR(msg_content(m, 2), want_asst);
        dspy_json_decref(ft);
        dspy_json *partial = J("{\"label\": \"card_arrival\"}");
        CHECK_STATUS(dspy_adapter_format_finetune_data(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V26, s26, NULL, in, partial, &ft),
                     DSPY_ERR_ARG);
        CHECK_STR(dspy_errmsg(), "Expected dict_keys(['reasoning', 'label']) but got dict_keys(['label'])");
        CHECK_STATUS(dspy_adapter_format_finetune_data(DSPY_ADAPTER_JSON, DSPY_PROFILE_V33, s, NULL, in, outputs, &ft),
                     DSPY_ERR_ARG);
        CHECK_CONTAINS(dspy_errmsg(), "NotImplementedError");
        dspy_json_decref(partial);
        dspy_json_decref(outputs);

        /* V26: the tutorial notebook's prompt (spec §4.2/§4.3: 3930 bytes) */
        char *want26 = v26_from_v33_system(want_sys), *want26_user = remove_quotes(want_user);
        CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V26, s26, NULL, in, &msgs));
        if (msgs) {
            CHECK_INT(strlen(want26), 3930);
            CHECK_STR(msg_content(msgs, 0), want26);
            CHECK_STR(msg_content(msgs, 1), want26_user);
            CHECK_CONTAINS(msg_content(msgs, 0), "(Literal[activate_my_card, age_limit, apple_pay_or_google_pay,");
            CHECK_CONTAINS(msg_content(msgs, 0), " reverted_card_payment?, ");
        }
        dspy_json_decref(msgs);
        free(want26);
        free(want26_user);
        dspy_signature_free(s26);
    }
    free(want_sys);
    free(want_user);
    free(want_asst);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

/* V26 demos: every user turn carries the request; missing fields read "Not supplied ...". */
static void test_v26_demos(void) {
    dspy_signature *s = sig("question: str, context: str -> answer: str, confidence: float", NULL);
    if (!s) return;
    dspy_json *demos = J("[{\"question\": \"Q1\", \"answer\": \"A1\"}, {\"question\": \"Q0\", \"context\": \"C0\", \"answer\": \"A0\", \"confidence\": 0.5}, {\"question\": \"only inputs\"}]");
    dspy_json *in = J("{\"question\": \"Q2\", \"context\": \"C2\"}"), *msgs = NULL;
    CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V26, s, demos, in, &msgs));
    const char *req = "Respond with the corresponding output fields, starting with the field `[[ ## answer ## ]]`, then `[[ ## confidence ## ]]` (must be formatted as a valid Python float), and then ending with the marker for `[[ ## completed ## ]]`.";
    if (msgs) {
        CHECK_INT(dspy_json_size(msgs), 6);
        dspy_str w = DSPY_STR_INIT;
        dspy_str_appendf(&w, "This is an example of the task, though some input or output fields are not supplied.\n\n[[ ## question ## ]]\nQ1\n\n[[ ## context ## ]]\nNot supplied for this particular example.\n\n%s", req);
        CHECK_STR(msg_content(msgs, 1), dspy_str_cstr(&w));
        CHECK_STR(msg_content(msgs, 2), "[[ ## answer ## ]]\nA1\n\n[[ ## confidence ## ]]\nNot supplied for this particular example.\n\n[[ ## completed ## ]]\n");
        dspy_str_clear(&w);
        dspy_str_appendf(&w, "[[ ## question ## ]]\nQ0\n\n[[ ## context ## ]]\nC0\n\n%s", req);
        CHECK_STR(msg_content(msgs, 3), dspy_str_cstr(&w));
        CHECK_STR(msg_content(msgs, 4), "[[ ## answer ## ]]\nA0\n\n[[ ## confidence ## ]]\n0.5\n\n[[ ## completed ## ]]\n");
        dspy_str_clear(&w);
        dspy_str_appendf(&w, "[[ ## question ## ]]\nQ2\n\n[[ ## context ## ]]\nC2\n\n%s", req);
        CHECK_STR(msg_content(msgs, 5), dspy_str_cstr(&w));
        dspy_str_free(&w);
    }
    dspy_json_decref(msgs);
    /* V33 of the same: complete demo's missing-field text differs and no request in demos */
    CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, demos, in, &msgs));
    if (msgs) {
        CHECK_INT(dspy_json_size(msgs), 6);
        CHECK_STR(msg_content(msgs, 3), "[[ ## question ## ]]\nQ0\n\n[[ ## context ## ]]\nC0");
        CHECK_STR(msg_content(msgs, 4), "[[ ## answer ## ]]\nA0\n\n[[ ## confidence ## ]]\n0.5\n\n[[ ## completed ## ]]\n");
    }
    dspy_json_decref(msgs);
    /* V26 requires every input of the final turn; V33 skips missing ones */
    dspy_json *partial = J("{\"question\": \"Q2\", \"extra\": 1}");
    CHECK_STATUS(dspy_adapter_format(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V26, s, NULL, partial, &msgs), DSPY_ERR_ARG);
    CHECK_STR(dspy_errmsg(), "Expected dict_keys(['question', 'context']) but got dict_keys(['question', 'extra'])");
    CHECK(msgs == NULL);
    char *user = NULL;
    CHECK_OK(dspy_adapter_format_user(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, partial, &user));
    CHECK_STR(user, "[[ ## question ## ]]\nQ2\n\nRespond with the corresponding output fields, starting with the field `[[ ## answer ## ]]`, then `[[ ## confidence ## ]]` (must be formatted as a valid Python float), and then ending with the marker for `[[ ## completed ## ]]`.");
    free(user);
    dspy_json_decref(partial);
    dspy_json *bad = J("[1]");
    CHECK_STATUS(dspy_adapter_format(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, bad, in, &msgs), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "demos[0]");
    dspy_json_decref(bad);
    dspy_json_decref(demos);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

/* System-message shapes: custom desc, typed notes, empty instructions, multi-line instructions. */
static void test_system_shapes(void) {
    dspy_signature *s = sig("question, context: list[str] -> answer: int, ok: bool, tags: dict[str, int], pick: Optional[str]",
                            "First line.\n\n    Indented line.");
    if (!s) return;
    CHECK_OK(dspy_signature_set_desc(s, "question", "The question."));
    char *sys = NULL;
    CHECK_OK(dspy_adapter_format_system(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, &sys));
    CHECK_STR(sys, "Your input fields are:\n1. `question` (str): The question.\n2. `context` (list[str]):\n"
                   "Your output fields are:\n1. `answer` (int): \n2. `ok` (bool): \n3. `tags` (dict[str, int]): \n4. `pick` (Union[str, NoneType]):\n"
                   "All interactions will be structured in the following way, with the appropriate values filled in.\n\n"
                   "[[ ## question ## ]]\n{question}\n\n[[ ## context ## ]]\n{context}\n\n"
                   "[[ ## answer ## ]]\n{answer}        # note: the value you produce must be a single int value\n\n"
                   "[[ ## ok ## ]]\n{ok}        # note: the value you produce must be True or False\n\n"
                   "[[ ## tags ## ]]\n{tags}        # note: the value you produce must adhere to the JSON schema: {\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}}\n\n"
                   "[[ ## pick ## ]]\n{pick}        # note: the value you produce must adhere to the JSON schema: {\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"null\"}]}\n\n"
                   "[[ ## completed ## ]]\n"
                   "In adhering to this structure, your objective is: \n        First line.\n        \n        Indented line.");
    free(sys);
    CHECK_OK(dspy_adapter_format_system(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V26, s, &sys));
    CHECK_STR(sys, "Your input fields are:\n1. `question` (str): The question.\n2. `context` (list[str])\n\n"
                   "Your output fields are:\n1. `answer` (int)\n2. `ok` (bool)\n3. `tags` (dict[str, int])\n4. `pick` (Union[str, NoneType])\n\n"
                   "All interactions will be structured in the following way, with the appropriate values filled in.\n\n"
                   "[[ ## question ## ]]\n{question}\n\n[[ ## context ## ]]\n{context}\n\n"
                   "[[ ## answer ## ]]\n{answer}        # note: the value you produce must be a single int value\n\n"
                   "[[ ## ok ## ]]\n{ok}        # note: the value you produce must be True or False\n\n"
                   "[[ ## tags ## ]]\n{tags}        # note: the value you produce must be pareseable according to the following JSON schema: {\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}}\n\n"
                   "[[ ## pick ## ]]\n{pick}        # note: the value you produce must be pareseable according to the following JSON schema: {\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"null\"}]}\n\n"
                   "[[ ## completed ## ]]\n\n"
                   "In adhering to this structure, your objective is: \n        First line.\n        \n        Indented line.");
    free(sys);
    dspy_signature_free(s);

    /* CC-09: quoted type name, unquoted note values */
    s = sig("q -> a: Literal[True, 3, \"foo\"]", NULL);
    CHECK_OK(dspy_adapter_format_system(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, &sys));
    CHECK_CONTAINS(sys, "1. `a` (Literal[True, 3, 'foo']):\n");
    CHECK_CONTAINS(sys, "{a}        # note: the value you produce must exactly match (no extra characters) one of: True; 3; foo\n");
    free(sys);
    dspy_json *in = J("{\"q\": \"x\"}");
    char *user = NULL;
    CHECK_OK(dspy_adapter_format_user(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, in, &user));
    CHECK_CONTAINS(user, "`[[ ## a ## ]]` (must be formatted as a valid Python Literal[True, 3, 'foo'])");
    free(user);
    dspy_json_decref(in);
    dspy_signature_free(s);

    s = sig("q -> a", "");
    CHECK_OK(dspy_adapter_format_system(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, &sys));
    CHECK(sys && dspy_strv_ends_with(dspy_strv_of(sys), "[[ ## completed ## ]]\nIn adhering to this structure, your objective is: "));
    free(sys);
    dspy_signature_free(s);
}

/* CC-13 */
static void test_parse_tutorial(void) {
    dspy_signature *s = tutorial_cot(DSPY_PROFILE_V33);
    if (!s) {
        check_skip("labels missing");
        return;
    }
    dspy_json *f = NULL;
    CHECK_OK(dspy_adapter_parse(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s,
                                "[[ ## reasoning ## ]]\nThe user asks about card delivery.\n\n[[ ## label ## ]]\ncard_arrival\n\n[[ ## completed ## ]]", &f));
    char *js = f ? dspy_json_dumps(f, DSPY_JSON_PY) : NULL;
    CHECK_STR(js, "{\"reasoning\": \"The user asks about card delivery.\", \"label\": \"card_arrival\"}");
    free(js);
    dspy_json_decref(f);
    dspy_signature_free(s);

    dspy_signature *b = sig("question -> answer", NULL), *cot = NULL;
    if (b) CHECK_OK(dspy_signature_chain_of_thought(b, DSPY_PROFILE_V33, &cot));
    if (cot) {
        CHECK_OK(dspy_adapter_parse(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, cot,
                                    "[[ ## reasoning ## ]]\nStep-by-step thinking about the capital of France\n[[ ## answer ## ]]\nParis\n[[ ## completion ## ]]", &f));
        js = f ? dspy_json_dumps(f, DSPY_JSON_PY) : NULL;
        CHECK_STR(js, "{\"reasoning\": \"Step-by-step thinking about the capital of France\", \"answer\": \"Paris\"}");
        free(js);
        dspy_json_decref(f);
        CHECK_OK(dspy_adapter_parse(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, cot,
                                    "[[ ## reasoning ## ]]\nfind the number after 1\n\n[[ ## answer ## ]]\n2", &f));
        if (f) CHECK_STR(dspy_json_str(dspy_json_get(f, "answer")), "2");
        dspy_json_decref(f);
    }
    dspy_signature_free(cot);
    dspy_signature_free(b);
}

static char *parse_str(const char *sigtext, const char *completion, dspy_profile p, dspy_status *st) {
    dspy_signature *s = sig(sigtext, NULL);
    dspy_json *f = NULL;
    *st = s ? dspy_adapter_parse(DSPY_ADAPTER_CHAT, p, s, completion, &f) : DSPY_ERR_ARG;
    char *js = f ? dspy_json_dumps(f, DSPY_JSON_PY) : NULL;
    dspy_json_decref(f);
    dspy_signature_free(s);
    return js;
}

/* CC-14 and the spec §16.6 decision */
static void test_parse_edges(void) {
    dspy_status st;
    char *r;
    r = parse_str("question -> answer", "[[ ## answer ## ]] Paris", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"answer\": \"Paris\"}");
    free(r);
    r = parse_str("question -> answer", "[[ ## answer ## ]] Paris", DSPY_PROFILE_V26, &st);
    CHECK_STR(r, "{\"answer\": \"\"}");
    free(r);
    r = parse_str("question -> answer", "preamble\n[[ ## answer ## ]]\nA\n[[ ## answer ## ]]\nB", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"answer\": \"A\"}");
    free(r);
    r = parse_str("question -> answer", "[[ ## answer ## ]]\n  Paris  \n\n[[ ## completed ## ]]\ntrailing junk", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"answer\": \"Paris\"}");
    free(r);
    /* leading whitespace before a header: same-line content is kept (spec §16.6) */
    r = parse_str("question -> answer", "   [[ ## answer ## ]]   Paris\n", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"answer\": \"Paris\"}");
    free(r);
    r = parse_str("question -> answer", "\t[[ ## answer ## ]]\r\nline1\r\n  line2  \r\n", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"answer\": \"line1\\n  line2\"}");
    free(r);
    /* wrong spacing: no header, so the parse fails */
    r = parse_str("question -> answer", "[[## answer ##]]\nParis", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "Adapter ChatAdapter failed to parse the LM response. \n\nLM Response: [[## answer ##]]\nParis \n\nExpected to find output fields in the LM response: [answer] \n\nActual output fields parsed from the LM response: [] \n\n");
    r = parse_str("question -> answer", "{'output':'mismatched value'}", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "Adapter ChatAdapter failed to parse the LM response. \n\nLM Response: {'output':'mismatched value'} \n\nExpected to find output fields in the LM response: [answer] \n\nActual output fields parsed from the LM response: [] \n\n");
    r = parse_str("question -> answer", "{'output':'mismatched value'}", DSPY_PROFILE_V26, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "Expected dict_keys(['answer']) but got dict_keys([])");
    r = parse_str("q -> reasoning, label: Literal['a','b']", "[[ ## reasoning ## ]]\nx\n\n[[ ## label ## ]]\nc", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "Failed to parse field label with value c from the LM response. Error message: 'c' is not one of ('a', 'b')\n\nAdapter ChatAdapter failed to parse the LM response. \n\nLM Response: [[ ## reasoning ## ]]\nx\n\n[[ ## label ## ]]\nc \n\nExpected to find output fields in the LM response: [reasoning, label] \n\n");
    /* Literal normalisation in context; no fuzzy matching */
    r = parse_str("q -> label: Literal['card_arrival', 'age_limit']", "[[ ## label ## ]]\nLiteral['card_arrival']", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"label\": \"card_arrival\"}");
    free(r);
    r = parse_str("q -> label: Literal['card_arrival', 'age_limit']", "[[ ## label ## ]]\ncard_arrival.", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    r = parse_str("q -> label: Literal['card_arrival', 'age_limit']", "[[ ## label ## ]]\n\"age_limit\"", DSPY_PROFILE_V26, &st);
    CHECK_STR(r, "{\"label\": \"age_limit\"}");
    free(r);
    r = parse_str("q -> label: Literal['card_arrival', 'age_limit']", "[[ ## label ## ]]\nLiteral[age_limit]", DSPY_PROFILE_V26, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_CONTAINS(dspy_errmsg(), "Error parsing field label: ");
    CHECK_CONTAINS(dspy_errmsg(), ".\n\n\t\tOn attempting to parse the value\n```\nLiteral[age_limit]\n```");
    /* typed outputs go through parse_value; extra headers and unknown fields are ignored */
    r = parse_str("q -> n: int, xs: list[int], ok: bool", "[[ ## n ## ]]\n42\n[[ ## other ## ]]\nzzz\n[[ ## xs ## ]]\n[1, 2, 3]\n[[ ## ok ## ]]\ntrue\n[[ ## completed ## ]]", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"n\": 42, \"xs\": [1, 2, 3], \"ok\": true}");
    free(r);
    r = parse_str("q -> n: int", "[[ ## n ## ]]\nforty-two", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_CONTAINS(dspy_errmsg(), "Failed to parse field n with value forty-two from the LM response. Error message: 1 validation error for int\n  Input should be a valid integer, unable to parse string as an integer [type=int_parsing, input_value='forty-two', input_type=str]");
    /* order follows the answer */
    r = parse_str("q -> a, b", "[[ ## b ## ]]\n2\n[[ ## a ## ]]\n1", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"b\": \"2\", \"a\": \"1\"}");
    free(r);
    /* other line breaks Python's splitlines knows */
    r = parse_str("q -> a, b", "[[ ## a ## ]]\x0b" "1\xe2\x80\xa8[[ ## b ## ]]\x0c" "2", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "{\"a\": \"1\", \"b\": \"2\"}");
    free(r);
}

/* CC-14.7: optional outputs and defaults (V33 apply_output_field_defaults) */
static void test_parse_defaults(void) {
    dspy_signature *s = sig("question -> answer: str, note: str | None, maybe: str | None", NULL);
    if (!s) return;
    dspy_json *d = J("\"No note\"");
    CHECK_OK(dspy_signature_set_default(s, "note", d));
    dspy_json_decref(d);
    dspy_json *f = NULL;
    CHECK_OK(dspy_adapter_parse(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, "[[ ## answer ## ]]\n42", &f));
    char *js = f ? dspy_json_dumps(f, DSPY_JSON_PY) : NULL;
    CHECK_STR(js, "{\"answer\": \"42\", \"note\": \"No note\", \"maybe\": null}");
    free(js);
    dspy_json_decref(f);
    CHECK_STATUS(dspy_adapter_parse(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, "[[ ## note ## ]]\nhi", &f), DSPY_ERR_PARSE);
    CHECK_CONTAINS(dspy_errmsg(), "Actual output fields parsed from the LM response: [note, maybe] \n\n");
    CHECK_STATUS(dspy_adapter_parse(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V26, s, "[[ ## answer ## ]]\n42", &f), DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "Expected dict_keys(['answer', 'note', 'maybe']) but got dict_keys(['answer'])");
    dspy_signature_free(s);
}


/* Runs argv (no shell), returns stdout (malloc'd) and the exit status. */
static char *run_capture(char *const argv[], int *status) {
    int fd[2];
    *status = -1;
    if (pipe(fd)) return NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", 1, 0);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    extern char **environ;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    dspy_str out = DSPY_STR_INIT;
    char buf[4096];
    ssize_t n;
    while (rc == 0 && (n = read(fd[0], buf, sizeof buf)) > 0) dspy_str_appendn(&out, buf, (size_t)n);
    close(fd[0]);
    if (rc == 0 && waitpid(pid, status, 0) == pid && WIFEXITED(*status)) *status = WEXITSTATUS(*status);
    return dspy_str_take(&out);
}

/* `dspy prompt` prints exactly what the adapter sends. */
static void test_cli(void) {
    char bin[1024];
    snprintf(bin, sizeof bin, "%s", test_bin("dspy"));
    int status;
    char *argv1[] = {bin, "prompt", "--signature", "question -> answer", "--input",
                     "question=What is the capital of France?", "--compact", NULL};
    char *out = run_capture(argv1, &status);
    CHECK_INT(status, 0);
    dspy_json *wrap = dspy_json_object();
    dspy_json_set(wrap, "messages", dspy_json_copy(ref("CC-20")));
    char *want = dspy_json_dumps(wrap, DSPY_JSON_UTF8 | DSPY_JSON_COMPACT);
    dspy_str w = DSPY_STR_INIT;
    dspy_str_append(&w, want);
    dspy_str_append(&w, "\n");
    CHECK_STR(out, dspy_str_cstr(&w));
    dspy_str_free(&w);
    free(want);
    free(out);
    dspy_json_decref(wrap);

    int nl;
    char *sigtext = tutorial_signature_text(&nl);
    if (sigtext) {
        char *argv2[] = {bin, "prompt", "--signature", sigtext, "--module", "cot", "--input",
                         "text=why hasnt my card come in yet?", NULL};
        out = run_capture(argv2, &status);
        CHECK_INT(status, 0);
        dspy_json *got = NULL;
        if (out) CHECK_OK(dspy_json_parse(out, strlen(out), "dspy prompt output", &got));
        size_t ns, nu;
        char *sys = read_fixture("tutorial_system_v3.3.1.txt", &ns), *usr = read_fixture("tutorial_user_v3.3.1.txt", &nu);
        const dspy_json *m = got ? dspy_json_get(got, "messages") : NULL;
        if (m && sys && usr) {
            CHECK_STR(msg_content(m, 0), sys);
            CHECK_STR(msg_content(m, 1), usr);
        }
        free(sys);
        free(usr);
        dspy_json_decref(got);
        free(out);
        free(sigtext);
    }
    /* CC-06 through the CLI: --demos file, --instructions, typed outputs */
    char demos_path[600];
    snprintf(demos_path, sizeof demos_path, "%s/demos.json", test_tmpdir());
    const char *demos = "[{\"question\": \"Q1\", \"answers\": [\"A1\", \"A2\"], \"scores\": [0.1, 0.9]}]";
    CHECK_OK(dspy_write_file(demos_path, demos, strlen(demos)));
    char *argv4[] = {bin, "prompt", "--signature", "question: str -> answers: list[str], scores: list[float]",
                     "--instructions", "Answer the question with multiple answers and scores",
                     "--demos", demos_path, "--input", "question=Q2", NULL};
    out = run_capture(argv4, &status);
    CHECK_INT(status, 0);
    dspy_json *got = NULL;
    if (out) CHECK_OK(dspy_json_parse(out, strlen(out), "dspy prompt output", &got));
    CHECK(got && ref("CC-06") && dspy_json_equal(dspy_json_get(got, "messages"), ref("CC-06")));
    dspy_json_decref(got);
    free(out);

    char *argv3[] = {bin, "prompt", "--signature", "q -> a", "--dspy-format", "2.7", NULL};
    out = run_capture(argv3, &status);
    CHECK(status != 0);
    CHECK_STR(out, "");
    free(out);
}

int main(void) {
    if (dspy_json_load(test_source("tests/ref/adapter_messages.json"), &g_ref)) {
        fprintf(stderr, "%s\n", dspy_errmsg());
        g_ref = NULL;
    }
    CHECK(g_ref != NULL);
    RUN(test_exact_messages);
    RUN(test_field_values);
    RUN(test_tutorial);
    RUN(test_v26_demos);
    RUN(test_system_shapes);
    RUN(test_parse_tutorial);
    RUN(test_parse_edges);
    RUN(test_parse_defaults);
    RUN(test_cli);
    dspy_json_decref(g_ref);
    return check_summary("test_adapter_chat");
}
