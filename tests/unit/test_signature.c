/* test_signature.c — string signatures against DSPy's behaviour (conformance CC-01, CC-02
 * signature parts, CC-03, CC-09 type names, CC-24 state), plus error messages. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/signature.h"
#include "tutorial_fixture.h"

static dspy_signature *sig(const char *text, const char *instr) {
    dspy_signature *s = NULL;
    CHECK_OK(dspy_signature_parse(text, instr, &s));
    return s;
}

static char *type_name(const dspy_signature *s, size_t i, dspy_profile p) {
    dspy_str n = DSPY_STR_INIT;
    dspy_type_name(dspy_signature_field_type(s, i), p, &n);
    return dspy_str_take(&n);
}

/* CC-01 */
static void test_basics(void) {
    dspy_signature *s = sig("input1, input2 -> output", NULL);
    if (!s) return;
    CHECK_INT(dspy_signature_n_inputs(s), 2);
    CHECK_INT(dspy_signature_n_outputs(s), 1);
    CHECK_STR(dspy_signature_field_name(s, 0), "input1");
    CHECK_STR(dspy_signature_field_name(s, 1), "input2");
    CHECK_STR(dspy_signature_field_name(s, 2), "output");
    for (size_t i = 0; i < 3; i++) {
        CHECK(dspy_type_kind_of(dspy_signature_field_type(s, i)) == DSPY_TYPE_STR);
        CHECK(dspy_signature_field_type_undefined(s, i) == (i < 2));
    }
    CHECK(dspy_signature_field_kind(s, 0) == DSPY_FIELD_INPUT);
    CHECK(dspy_signature_field_kind(s, 2) == DSPY_FIELD_OUTPUT);
    CHECK_STR(dspy_signature_instructions(s),
              "Given the fields `input1`, `input2`, produce the fields `output`.");
    CHECK_STR(dspy_signature_field_prefix(s, 0), "Input 1:");
    CHECK_STR(dspy_signature_field_prefix(s, 1), "Input 2:");
    CHECK_STR(dspy_signature_field_prefix(s, 2), "Output:");
    CHECK_STR(dspy_signature_field_desc(s, 0), "${input1}");
    CHECK_STR(dspy_signature_field_desc(s, 1), "${input2}");
    CHECK_STR(dspy_signature_field_desc(s, 2), "${output}");
    char *t = dspy_signature_text(s);
    CHECK_STR(t, "input1, input2 -> output");
    free(t);
    dspy_signature_free(s);

    s = sig("question -> answer", NULL);
    if (s) CHECK_STR(dspy_signature_instructions(s), "Given the fields `question`, produce the fields `answer`.");
    dspy_signature_free(s);
    s = sig("a, b -> c", NULL);
    if (s) CHECK_STR(dspy_signature_instructions(s), "Given the fields `a`, `b`, produce the fields `c`.");
    dspy_signature_free(s);
    s = sig("input1 -> output1", "This is a test");
    if (s) CHECK_STR(dspy_signature_instructions(s), "This is a test");
    dspy_signature_free(s);
    s = sig("q -> a", "");
    if (s) CHECK_STR(dspy_signature_instructions(s), "");
    dspy_signature_free(s);

    s = sig("input1: int, input2: str -> output: float", NULL);
    if (s) {
        CHECK(dspy_type_kind_of(dspy_signature_field_type(s, 0)) == DSPY_TYPE_INT);
        CHECK(dspy_type_kind_of(dspy_signature_field_type(s, 1)) == DSPY_TYPE_STR);
        CHECK(dspy_type_kind_of(dspy_signature_field_type(s, 2)) == DSPY_TYPE_FLOAT);
        CHECK(!dspy_signature_field_type_undefined(s, 0));
    }
    dspy_signature_free(s);

    /* whitespace is irrelevant; empty sides and trailing commas are valid Python parameter lists */
    s = sig("  a ,b:int,  ->  c  ", NULL);
    if (s) {
        CHECK_INT(dspy_signature_n_inputs(s), 2);
        char *tt = dspy_signature_text(s);
        CHECK_STR(tt, "a, b -> c");
        free(tt);
    }
    dspy_signature_free(s);
    s = sig("-> c", NULL);
    if (s) {
        CHECK_INT(dspy_signature_n_inputs(s), 0);
        CHECK_STR(dspy_signature_instructions(s), "Given the fields , produce the fields `c`.");
    }
    dspy_signature_free(s);

    /* instructions read back through inspect.cleandoc */
    s = sig("q -> a", "\n    Line one.\n      indented\n    Line two.\n\n");
    if (s) CHECK_STR(dspy_signature_instructions(s), "Line one.\n  indented\nLine two.");
    dspy_signature_free(s);
}

static void test_errors(void) {
    dspy_signature *s = (dspy_signature *)1;
    CHECK_STATUS(dspy_signature_parse("", NULL, &s), DSPY_ERR_FORMAT);
    CHECK(s == NULL);
    CHECK_STR(dspy_errmsg(), "Invalid signature format: '', must contain exactly one '->'.");
    CHECK_STATUS(dspy_signature_parse("a -> b -> c", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_STR(dspy_errmsg(), "Invalid signature format: 'a -> b -> c', must contain exactly one '->'.");
    CHECK_STATUS(dspy_signature_parse("value -> value", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_STR(dspy_errmsg(),
              "Input and output fields must have distinct names, but found duplicates: 'value'.");
    CHECK_STATUS(dspy_signature_parse("b, a, c -> a, b", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "found duplicates: 'a, b'.");
    CHECK_STATUS(dspy_signature_parse("a -> b: Foo", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "Unknown name: Foo");
    CHECK_CONTAINS(dspy_errmsg(), "column 9");
    CHECK_STATUS(dspy_signature_parse("a -> b: Callable", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "not supported by dspy.c");
    CHECK_STATUS(dspy_signature_parse("a b -> c", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "column 3");
    CHECK_STATUS(dspy_signature_parse("class -> c", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "keyword");
    CHECK_STATUS(dspy_signature_parse("a, a -> c", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "duplicate field 'a'");
    CHECK_STATUS(dspy_signature_parse("1a -> c", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "identifier");
    CHECK_STATUS(dspy_signature_parse("a -> b: Literal[-1]", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "UnaryOp");
    CHECK_STATUS(dspy_signature_parse("a -> b: List", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_STATUS(dspy_signature_parse("a -> b: list[int", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_STATUS(dspy_signature_parse("a -> b: dict[str]", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "takes 2 type arguments");
    CHECK_STATUS(dspy_signature_parse("a -> b: Literal[x]", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_STATUS(dspy_signature_parse("a, -> , b", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_STATUS(dspy_signature_parse("a=1 -> b", NULL, &s), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "default values");
    CHECK(s == NULL);
}

/* CC-03 */
static void test_infer_prefix(void) {
    static const char *const v[][2] = {
        {"someAttributeName42IsCool", "Some Attribute Name 42 Is Cool"},
        {"version2Update", "Version 2 Update"},
        {"modelT45Enhanced", "Model T 45 Enhanced"},
        {"someAttributeName", "Some Attribute Name"},
        {"some_attribute_name", "Some Attribute Name"},
        {"URLAddress", "URL Address"},
        {"isHTTPSecure", "Is HTTP Secure"},
        {"isHTTPSSecure123", "Is HTTPS Secure 123"},
        {"text", "Text"},
        {"reasoning", "Reasoning"},
        {"camelCaseText", "Camel Case Text"},
        {"HTMLParser", "HTML Parser"},
        {"text2number", "Text 2 Number"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *p = dspy_infer_prefix(v[i][0]);
        CHECK_STR(p, v[i][1]);
        free(p);
    }
    dspy_signature *s = sig("someAttributeName42IsCool -> reasoning", NULL);
    if (s) {
        CHECK_STR(dspy_signature_field_prefix(s, 0), "Some Attribute Name 42 Is Cool:");
        CHECK_STR(dspy_signature_field_prefix(s, 1), "Reasoning:");
    }
    dspy_signature_free(s);
}

/* CC-02 (signature parts) */
static void test_chain_of_thought(void) {
    dspy_signature *base = sig("text -> label: Literal['activate_my_card', 'age_limit']", NULL), *cot = NULL;
    if (!base) return;
    CHECK_OK(dspy_signature_chain_of_thought(base, DSPY_PROFILE_V33, &cot));
    if (cot) {
        CHECK_INT(dspy_signature_n_inputs(cot), 1);
        CHECK_INT(dspy_signature_n_outputs(cot), 2);
        CHECK_STR(dspy_signature_field_name(cot, 0), "text");
        CHECK_STR(dspy_signature_field_name(cot, 1), "reasoning");
        CHECK_STR(dspy_signature_field_name(cot, 2), "label");
        CHECK(dspy_type_kind_of(dspy_signature_field_type(cot, 1)) == DSPY_TYPE_STR);
        const dspy_type *lt = dspy_signature_field_type(cot, 2);
        CHECK(dspy_type_kind_of(lt) == DSPY_TYPE_LITERAL);
        dspy_json *want = J("[\"activate_my_card\", \"age_limit\"]");
        CHECK(dspy_json_equal(dspy_type_literal_values(lt), want));
        dspy_json_decref(want);
        CHECK_STR(dspy_signature_instructions(cot), "Given the fields `text`, produce the fields `label`.");
        CHECK_STR(dspy_signature_field_desc(cot, 1), "${reasoning}");
        CHECK_STR(dspy_signature_field_prefix(cot, 1), "Reasoning:");
    }
    dspy_signature_free(cot);
    CHECK_OK(dspy_signature_chain_of_thought(base, DSPY_PROFILE_V26, &cot));
    if (cot) CHECK_STR(dspy_signature_field_prefix(cot, 1), "Reasoning: Let's think step by step in order to");
    dspy_signature_free(cot);
    dspy_signature_free(base);

    if (!test_have_shared("data/banking77/labels.txt")) {
        check_skip("shared/data/banking77/labels.txt missing");
        return;
    }
    int nl;
    char *text = tutorial_signature_text(&nl);
    CHECK_INT(nl, 77);
    free(text);
    for (int prof = 0; prof < 2; prof++) {
        dspy_signature *t = tutorial_cot(prof ? DSPY_PROFILE_V26 : DSPY_PROFILE_V33);
        CHECK(t != NULL);
        if (!t) continue;
        CHECK_INT(dspy_json_size(dspy_type_literal_values(dspy_signature_field_type(t, 2))), 77);
        dspy_json *state;
        CHECK_OK(dspy_signature_dump_state(t, &state));
        char *js = dspy_json_dumps(state, DSPY_JSON_PY);
        CHECK_STR(js, prof ? "{\"instructions\": \"Given the fields `text`, produce the fields `label`.\", \"fields\": [{\"prefix\": \"Text:\", \"description\": \"${text}\"}, {\"prefix\": \"Reasoning: Let's think step by step in order to\", \"description\": \"${reasoning}\"}, {\"prefix\": \"Label:\", \"description\": \"${label}\"}]}"
                           : "{\"instructions\": \"Given the fields `text`, produce the fields `label`.\", \"fields\": [{\"prefix\": \"Text:\", \"description\": \"${text}\"}, {\"prefix\": \"Reasoning:\", \"description\": \"${reasoning}\"}, {\"prefix\": \"Label:\", \"description\": \"${label}\"}]}");
        free(js);
        dspy_json_decref(state);
        dspy_signature_free(t);
    }
}

/* CC-09 type names (and the unquoted V26 form) */
static void test_literal_names(void) {
    static const char *const v[][3] = {
        {"q -> a: Literal[\"one\", \"two\", 'three\"']", "Literal['one', 'two', 'three\"']", "Literal[one, two, three\"]"},
        {"q -> a: Literal[\"she's here\", \"okay\", \"test\"]", "Literal[\"she's here\", 'okay', 'test']", "Literal[she's here, okay, test]"},
        {"q -> a: Literal[\"both\\\"and'\", \"another\"]", "Literal['both\"and\\'', 'another']", "Literal[both\"and', another]"},
        {"q -> a: Literal[\"foo\", \"bar\"]", "Literal['foo', 'bar']", "Literal[foo, bar]"},
        {"q -> a: Literal[1, \"bar\"]", "Literal[1, 'bar']", "Literal[1, bar]"},
        {"q -> a: Literal[True, 3, \"foo\"]", "Literal[True, 3, 'foo']", "Literal[True, 3, foo]"},
        {"q -> a: Literal['reverted_card_payment?', 'Refund_not_showing_up']", "Literal['reverted_card_payment?', 'Refund_not_showing_up']", "Literal[reverted_card_payment?, Refund_not_showing_up]"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        dspy_signature *s = sig(v[i][0], NULL);
        if (!s) continue;
        char *n33 = type_name(s, 1, DSPY_PROFILE_V33), *n26 = type_name(s, 1, DSPY_PROFILE_V26);
        CHECK_STR(n33, v[i][1]);
        CHECK_STR(n26, v[i][2]);
        free(n33);
        free(n26);
        dspy_signature_free(s);
    }
    /* typing semantics: duplicates dropped (by value and type), nested Literals flattened */
    dspy_signature *s = sig("q -> a: Literal['a', 'a', 1, True, Literal['b', 'a']]", NULL);
    if (s) {
        char *n = type_name(s, 1, DSPY_PROFILE_V33);
        CHECK_STR(n, "Literal['a', 1, True, 'b']");
        free(n);
    }
    dspy_signature_free(s);
    /* string escapes and concatenation are Python's */
    s = sig("q -> a: Literal['x\\ty', r'a\\b', 'p' \"q\", '\\u00e9']", NULL);
    if (s) {
        const dspy_json *vals = dspy_type_literal_values(dspy_signature_field_type(s, 1));
        CHECK_STR(dspy_json_str(dspy_json_at(vals, 0)), "x\ty");
        CHECK_STR(dspy_json_str(dspy_json_at(vals, 1)), "a\\b");
        CHECK_STR(dspy_json_str(dspy_json_at(vals, 2)), "pq");
        CHECK_STR(dspy_json_str(dspy_json_at(vals, 3)), "\xc3\xa9");
    }
    dspy_signature_free(s);
}

static void test_type_names(void) {
    static const char *const v[][2] = {
        {"list[str]", "list[str]"},
        {"List[int]", "list[int]"},
        {"dict[str, int]", "dict[str, int]"},
        {"typing.Dict[str, list[float]]", "dict[str, list[float]]"},
        {"Optional[int]", "Union[int, NoneType]"},
        {"int | None", "Union[int, NoneType]"},
        {"None | int", "Union[NoneType, int]"},
        {"NoneType | int", "Union[int, NoneType]"},
        {"Union[int, str, None]", "Union[int, str, NoneType]"},
        {"Union[int, Optional[str]]", "Union[int, str, NoneType]"},
        {"int | int", "int"},
        {"tuple[int, str]", "tuple[int, str]"},
        {"Tuple[int, ...]", "tuple[int, Ellipsis]"},
        {"tuple", "tuple"},
        {"set[str]", "set[str]"},
        {"FrozenSet[int]", "frozenset[int]"},
        {"Any", "Any"},
        {"bool", "bool"},
        {"builtins.str", "str"},
        {"list[Literal['a', 'b']]", "list[Literal['a', 'b']]"},
        {"None", "str"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char text[200];
        snprintf(text, sizeof text, "q -> a: %s", v[i][0]);
        dspy_signature *s = sig(text, NULL);
        if (!s) continue;
        char *n = type_name(s, 1, DSPY_PROFILE_V33);
        CHECK_STR(n, v[i][1]);
        free(n);
        dspy_signature_free(s);
    }
}

/* CC-24 (signature state), load_state by position */
static void test_state(void) {
    dspy_signature *s = sig("input -> output", NULL);
    if (!s) return;
    dspy_json *st;
    CHECK_OK(dspy_signature_dump_state(s, &st));
    char *js = dspy_json_dumps(st, DSPY_JSON_COMPACT);
    CHECK_STR(js, "{\"instructions\":\"Given the fields `input`, produce the fields `output`.\",\"fields\":[{\"prefix\":\"Input:\",\"description\":\"${input}\"},{\"prefix\":\"Output:\",\"description\":\"${output}\"}]}");
    free(js);
    dspy_json_decref(st);
    dspy_signature_free(s);

    s = sig("input -> output", "new instructions");
    dspy_json *state = J("{\"instructions\": \"original instructions\", \"fields\": [{\"prefix\": \"In:\", \"description\": \"the input\"}]}");
    dspy_signature *l = NULL;
    CHECK_OK(dspy_signature_load_state(s, state, &l));
    if (l) {
        CHECK_STR(dspy_signature_instructions(l), "original instructions");
        CHECK_STR(dspy_signature_field_prefix(l, 0), "In:");
        CHECK_STR(dspy_signature_field_desc(l, 0), "the input");
        CHECK_STR(dspy_signature_field_prefix(l, 1), "Output:");
    }
    CHECK_STR(dspy_signature_instructions(s), "new instructions");
    dspy_signature_free(l);
    dspy_json_decref(state);
    state = J("{\"instructions\": 3, \"fields\": []}");
    CHECK_STATUS(dspy_signature_load_state(s, state, &l), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "instructions");
    dspy_json_decref(state);
    state = J("{\"instructions\": \"x\", \"fields\": [{\"prefix\": 1}]}");
    CHECK_STATUS(dspy_signature_load_state(s, state, &l), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "fields[0]");
    dspy_json_decref(state);
    dspy_signature_free(s);
}

static void test_operations(void) {
    dspy_signature *s = sig("a, b -> c", "Do it."), *p = NULL, *q = NULL, *w = NULL;
    if (!s) return;
    dspy_field_spec in0 = {.name = "first", .kind = DSPY_FIELD_INPUT};
    dspy_field_spec out9 = {.name = "last", .kind = DSPY_FIELD_OUTPUT, .type = "list[int]", .desc = "numbers"};
    CHECK_OK(dspy_signature_prepend(s, &in0, &p));
    CHECK_OK(dspy_signature_append(s, &out9, &q));
    if (p && q) {
        char *t = dspy_signature_text(p);
        CHECK_STR(t, "first, a, b -> c");
        free(t);
        t = dspy_signature_text(q);
        CHECK_STR(t, "a, b -> c, last");
        free(t);
        CHECK_STR(dspy_signature_instructions(q), "Do it.");
        CHECK_STR(dspy_signature_field_desc(q, 3), "numbers");
        CHECK_STR(dspy_signature_field_prefix(q, 3), "Last:");
        CHECK(dspy_type_kind_of(dspy_signature_field_type(q, 3)) == DSPY_TYPE_LIST);
    }
    CHECK_OK(dspy_signature_with_instructions(s, "Other.", &w));
    if (w) CHECK_STR(dspy_signature_instructions(w), "Other.");
    CHECK_STR(dspy_signature_instructions(s), "Do it.");
    dspy_field_spec dup = {.name = "c", .kind = DSPY_FIELD_INPUT};
    dspy_signature *bad = NULL;
    CHECK_STATUS(dspy_signature_prepend(s, &dup, &bad), DSPY_ERR_ARG);
    dspy_field_spec badname = {.name = "not valid", .kind = DSPY_FIELD_INPUT};
    CHECK_STATUS(dspy_signature_prepend(s, &badname, &bad), DSPY_ERR_ARG);
    CHECK_OK(dspy_signature_set_desc(s, "c", "the answer"));
    CHECK_STR(dspy_signature_field_desc(s, 2), "the answer");
    CHECK_STATUS(dspy_signature_set_desc(s, "zzz", "x"), DSPY_ERR_NOTFOUND);
    dspy_json *d = J("\"dflt\"");
    CHECK_STATUS(dspy_signature_set_default(s, "a", d), DSPY_ERR_ARG);
    CHECK_OK(dspy_signature_set_default(s, "c", d));
    CHECK(dspy_json_equal(dspy_signature_field_default(s, 2), d));
    dspy_json_decref(d);
    dspy_signature *c = NULL;
    CHECK_OK(dspy_signature_copy(s, &c));
    if (c) {
        CHECK_STR(dspy_signature_field_desc(c, 2), "the answer");
        CHECK(dspy_signature_field_default(c, 2) != NULL);
    }
    dspy_field_spec specs[] = {
        {.name = "answer", .kind = DSPY_FIELD_OUTPUT},
        {.name = "question", .kind = DSPY_FIELD_INPUT, .type = "str"},
    };
    dspy_signature *n = NULL;
    CHECK_OK(dspy_signature_new(specs, 2, NULL, &n));
    if (n) {
        char *t = dspy_signature_text(n);
        CHECK_STR(t, "question -> answer");
        free(t);
        CHECK_STR(dspy_signature_instructions(n), "Given the fields `question`, produce the fields `answer`.");
        CHECK(!dspy_signature_field_type_undefined(n, 0));
    }
    dspy_signature_free(n);
    dspy_signature_free(c);
    dspy_signature_free(s);
    dspy_signature_free(p);
    dspy_signature_free(q);
    dspy_signature_free(w);
}

int main(void) {
    RUN(test_basics);
    RUN(test_errors);
    RUN(test_infer_prefix);
    RUN(test_chain_of_thought);
    RUN(test_literal_names);
    RUN(test_type_names);
    RUN(test_state);
    RUN(test_operations);
    return check_summary("test_signature");
}
