/* test_type.c — field types: DSPy's parse_value (conformance CC-15, CC-16), pydantic JSON
 * schemas as DSPy prints them, lax validation, and the json_repair / literal_eval readers. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/adapter.h"
#include "dspy/type.h"
#include "program/json_repair.h"
#include "program/pyliteral.h"
#include "program/type_priv.h"
#include "tutorial_fixture.h"

static dspy_type *T(const char *text) {
    dspy_type *t = NULL;
    CHECK_OK(dspy_type_parse(text, &t));
    return t;
}

/* parse_value(value, annotation) -> Python repr of the result, or NULL on error. */
static char *pv(const char *type, const char *value_json, dspy_profile p, dspy_status *st) {
    dspy_type *t = T(type);
    dspy_json *v = J(value_json), *out = NULL;
    *st = t ? dspy_type_parse_value(t, v, p, &out) : DSPY_ERR_ARG;
    char *r = NULL;
    if (out) {
        dspy_str s = DSPY_STR_INIT;
        dspy_json_repr(out, &s);
        r = dspy_str_take(&s);
    }
    dspy_json_decref(out);
    dspy_json_decref(v);
    dspy_type_free(t);
    return r;
}

/* CC-15 */
static void test_literal_values(void) {
    static const char *const ok[][2] = {
        {"\"option1\"", "'option1'"},
        {"\"'option1'\"", "'option1'"},
        {"\"\\\"option1\\\"\"", "'option1'"},
        {"\"Literal[option1]\"", "'option1'"},
        {"\"str[option1]\"", "'option1'"},
        {"\"  option2  \"", "'option2'"},
        {"\" Literal['option2'] \"", "'option2'"},
    };
    dspy_status st;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *r = pv("Literal['option1', 'option2']", ok[i][0], DSPY_PROFILE_V33, &st);
        CHECK_STR(r, ok[i][1]);
        free(r);
    }
    char *r = pv("Literal['option1', 'option2']", "\"invalid\"", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "'invalid' is not one of ('option1', 'option2')");
    r = pv("Literal['option1', 'option2']", "\"Option1\"", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    r = pv("Literal['option1']", "\"x\"", DSPY_PROFILE_V33, &st);
    CHECK_STR(dspy_errmsg(), "'x' is not one of ('option1',)");
    r = pv("Literal[1, True, 'a']", "1", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "1");
    free(r);
    r = pv("Literal[1, 2]", "\"1\"", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "'1' is not one of (1, 2)");
    /* V26: json.loads / literal_eval / raw, then exact membership */
    r = pv("Literal['option1', 'option2']", "\"'option1'\"", DSPY_PROFILE_V26, &st);
    CHECK_STR(r, "'option1'");
    free(r);
    r = pv("Literal['option1', 'option2']", "\"\\\"option2\\\"\"", DSPY_PROFILE_V26, &st);
    CHECK_STR(r, "'option2'");
    free(r);
    r = pv("Literal['option1', 'option2']", "\"Literal[option1]\"", DSPY_PROFILE_V26, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_CONTAINS(dspy_errmsg(), "Input should be 'option1' or 'option2' [type=literal_error, input_value='Literal[option1]', input_type=str]");
}

/* CC-16 */
static void test_other_values(void) {
    static const char *const v[][3] = {
        {"str", "123", "'123'"},
        {"str", "true", "'True'"},
        {"str", "null", "'None'"},
        {"str", "[1, 2, 3]", "'[1, 2, 3]'"},
        {"str", "{\"a\": 1.5}", "\"{'a': 1.5}\""},
        {"int", "\"42\"", "42"},
        {"int", "\" 42 \"", "42"},
        {"int", "\"4.0\"", "4"},
        {"float", "\"3.14\"", "3.14"},
        {"float", "\"2\"", "2.0"},
        {"bool", "\"true\"", "True"},
        {"bool", "\"false\"", "False"},
        {"bool", "\"True\"", "True"},
        {"bool", "\"yes\"", "True"},
        {"list[int]", "\"[1, 2, 3]\"", "[1, 2, 3]"},
        {"list[int]", "\"[1, '2']\"", "[1, 2]"},
        {"dict", "\"{'key': 'value'}\"", "{'key': 'value'}"},
        {"dict[str, int]", "\"{\\\"a\\\": \\\"1\\\"}\"", "{'a': 1}"},
        {"Optional[str]", "\"text with [placeholder]\"", "'text with [placeholder]'"},
        {"int | None", "\"5\"", "5"},
        {"Union[int, str, None]", "\"fallback\"", "'fallback'"},
        {"Union[int, str, None]", "\"5\"", "'5'"},
        {"Optional[int]", "\"null\"", "None"},
        {"tuple[int, str]", "\"(1, 'a')\"", "[1, 'a']"},
        {"set[int]", "\"[1, 2, 2]\"", "[1, 2]"},
        {"Any", "\"[1, 'x']\"", "[1, 'x']"},
        {"list[str]", "\"```json\\n[\\\"a\\\", \\\"b\\\"]\\n```\"", "['a', 'b']"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        dspy_status st;
        char *r = pv(v[i][0], v[i][1], DSPY_PROFILE_V33, &st);
        if (!r) fprintf(stderr, "  case %s %s: %s\n", v[i][0], v[i][1], dspy_errmsg());
        CHECK_STR(r, v[i][2]);
        free(r);
    }
    dspy_status st;
    char *r = pv("dict", "\"not json or literal\"", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "1 validation error for dict\n  Input should be a valid dictionary [type=dict_type, input_value='not json or literal', input_type=str]");
    r = pv("list[int]", "\"[1, 'x', 2.5]\"", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "2 validation errors for list[int]\n1\n  Input should be a valid integer, unable to parse string as an integer [type=int_parsing, input_value='x', input_type=str]\n2\n  Input should be a valid integer, got a number with a fractional part [type=int_from_float, input_value=2.5, input_type=float]");
    r = pv("bool", "\"perhaps\"", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_CONTAINS(dspy_errmsg(), "[type=bool_parsing, input_value='perhaps', input_type=str]");
    r = pv("tuple[int, int]", "\"[1]\"", DSPY_PROFILE_V33, &st);
    CHECK(r == NULL && st == DSPY_ERR_PARSE);
    CHECK_CONTAINS(dspy_errmsg(), "Tuple should have at least 2 items after validation, not 1");
    /* non-string values go straight to validation (JSONAdapter) */
    r = pv("float", "1", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "1.0");
    free(r);
    r = pv("int", "true", DSPY_PROFILE_V33, &st);
    CHECK_STR(r, "1");
    free(r);
    /* V26 parse_value: json.loads, then literal_eval, then the raw string */
    r = pv("int", "\"42\"", DSPY_PROFILE_V26, &st);
    CHECK_STR(r, "42");
    free(r);
    r = pv("list[str]", "\"['a', 'b']\"", DSPY_PROFILE_V26, &st);
    CHECK_STR(r, "['a', 'b']");
    free(r);
}

static char *schema(const char *type) {
    dspy_type *t = T(type);
    dspy_str s = DSPY_STR_INIT;
    if (t) CHECK_OK(dspy_type_schema_note(t, &s));
    dspy_type_free(t);
    return dspy_str_take(&s);
}

/* DSPy's "# note: ... JSON schema" rendering (pydantic schema, "type" moved first). */
static void test_schemas(void) {
    static const char *const v[][2] = {
        {"list[str]", "{\"type\": \"array\", \"items\": {\"type\": \"string\"}}"},
        {"list[float]", "{\"type\": \"array\", \"items\": {\"type\": \"number\"}}"},
        {"list", "{\"type\": \"array\", \"items\": {}}"},
        {"dict[str, int]", "{\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}}"},
        {"dict", "{\"type\": \"object\", \"additionalProperties\": true}"},
        {"dict[str, Any]", "{\"type\": \"object\", \"additionalProperties\": true}"},
        {"dict[Literal['a', 'b'], int]", "{\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}, \"propertyNames\": {\"enum\": [\"a\", \"b\"]}}"},
        {"Optional[int]", "{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"null\"}]}"},
        {"Union[int, None, str]", "{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"string\"}, {\"type\": \"null\"}]}"},
        {"Union[list[int], dict[str, str]]", "{\"anyOf\": [{\"type\": \"array\", \"items\": {\"type\": \"integer\"}}, {\"type\": \"object\", \"additionalProperties\": {\"type\": \"string\"}}]}"},
        {"tuple[int, str]", "{\"type\": \"array\", \"maxItems\": 2, \"minItems\": 2, \"prefixItems\": [{\"type\": \"integer\"}, {\"type\": \"string\"}]}"},
        {"tuple[int, ...]", "{\"type\": \"array\", \"items\": {\"type\": \"integer\"}}"},
        {"set[str]", "{\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"uniqueItems\": true}"},
        {"list[Literal['a', 'b']]", "{\"type\": \"array\", \"items\": {\"type\": \"string\", \"enum\": [\"a\", \"b\"]}}"},
        {"list[Literal['only']]", "{\"type\": \"array\", \"items\": {\"type\": \"string\", \"const\": \"only\"}}"},
        {"list[Literal[1, 'x']]", "{\"type\": \"array\", \"items\": {\"enum\": [1, \"x\"]}}"},
        {"list[bool | None]", "{\"type\": \"array\", \"items\": {\"anyOf\": [{\"type\": \"boolean\"}, {\"type\": \"null\"}]}}"},
        {"list[\xc3\xa9t\xc3\xa9]", NULL},
        {"bytes", "{\"type\": \"string\", \"format\": \"binary\"}"},
        {"Any", "{}"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (!v[i][1]) {
            dspy_type *t = NULL;
            CHECK_STATUS(dspy_type_parse(v[i][0], &t), DSPY_ERR_FORMAT);
            CHECK_CONTAINS(dspy_errmsg(), "Unknown name");
            continue;
        }
        char *s = schema(v[i][0]);
        CHECK_STR(s, v[i][1]);
        free(s);
    }
    /* the raw pydantic schema keeps pydantic's sorted order */
    dspy_type *t = T("tuple[int, str]");
    dspy_json *sch = NULL;
    if (t) CHECK_OK(dspy_type_json_schema(t, &sch));
    char *js = sch ? dspy_json_dumps(sch, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(js, "{\"maxItems\":2,\"minItems\":2,\"prefixItems\":[{\"type\":\"integer\"},{\"type\":\"string\"}],\"type\":\"array\"}");
    free(js);
    dspy_json_decref(sch);
    dspy_type_free(t);
}

static void test_type_api(void) {
    dspy_type *a = T("Optional[list[str]]"), *b = T("None | List[str]"), *c = T("Union[list[str], NoneType]");
    if (a && b && c) {
        CHECK(dspy_type_equal(a, c));
        CHECK(dspy_type_equal(a, b)); /* same members; typing compares unions as sets */
        CHECK(dspy_type_allows_none(a));
        CHECK(dspy_type_kind_of(a) == DSPY_TYPE_UNION);
        CHECK_INT(dspy_type_nargs(a), 2);
        CHECK(dspy_type_kind_of(dspy_type_arg(a, 0)) == DSPY_TYPE_LIST);
        dspy_type *cp = dspy_type_copy(a);
        CHECK(cp && dspy_type_equal(cp, a));
        dspy_type_free(cp);
    }
    dspy_type_free(a);
    dspy_type_free(b);
    dspy_type_free(c);
    dspy_type *t = NULL;
    CHECK_STATUS(dspy_type_parse("list[int] extra", &t), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "unexpected text");
    CHECK_STATUS(dspy_type_parse("typing.Foo", &t), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "Unknown attribute: Foo on module typing");
    CHECK_STATUS(dspy_type_parse("dspy.Image", &t), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "not supported by dspy.c");
    CHECK_STATUS(dspy_type_parse("tuple[..., int]", &t), DSPY_ERR_FORMAT);
    CHECK_STATUS(dspy_type_parse("list['int']", &t), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "forward references");
    CHECK(t == NULL);
    dspy_profile p;
    CHECK_OK(dspy_profile_parse("2.6", &p));
    CHECK(p == DSPY_PROFILE_V26);
    CHECK_OK(dspy_profile_parse("3.3.1", &p));
    CHECK(p == DSPY_PROFILE_V33);
    CHECK_STATUS(dspy_profile_parse("3.0", &p), DSPY_ERR_ARG);
    CHECK_STR(dspy_profile_name(DSPY_PROFILE_V26), "2.6");
}

static char *repair(const char *s) {
    dspy_json *v = NULL;
    CHECK_OK(dspy_json_repair_loads(s, strlen(s), &v));
    char *r = v ? dspy_json_dumps(v, DSPY_JSON_COMPACT | DSPY_JSON_UTF8) : NULL;
    dspy_json_decref(v);
    return r;
}

static void test_json_repair(void) {
    static const char *const v[][2] = {
        {"{\"a\": 1}", "{\"a\":1}"},
        {"42", "42"},
        {"\"x\"", "\"x\""},
        {"", "\"\""},
        {"nonsense", "\"\""},
        {"{'answer': 'Paris'}", "{\"answer\":\"Paris\"}"},
        {"```json\n{\"number\": 1}\n```", "{\"number\":1}"},
        {"{\"a\": [1, 2,], \"b\": True,}", "{\"a\":[1,2],\"b\":true}"},
        {"{a: 1, b: hello world}", "{\"a\":1,\"b\":\"hello world\"}"},
        {"{\"a\": \"x\", \"b\": [1, 2", "{\"a\":\"x\",\"b\":[1,2]}"},
        {"{\"q\": \"he said \"hi\" ok\"}", "{\"q\":\"he said \\\"hi\\\" ok\"}"},
        {"{'t': 'it's fine'}", "{\"t\":\"it's fine\"}"},
        {"{\xe2\x80\x9c" "a\xe2\x80\x9d: \xe2\x80\x9c" "b\xe2\x80\x9d}", "{\"a\":\"b\"}"},
        {"{\"a\": 1} {\"a\": 2}", "{\"a\":2}"},
        {"{\"a\": 1} {\"b\": 2}", "[{\"a\":1},{\"b\":2}]"},
        {"[1, 2] // comment", "[1,2]"},
        {"{\"a\": null, \"b\": NULL, \"c\": None}", "{\"a\":null,\"b\":null,\"c\":\"None\"}"},
        {"{\"u\": \"\\u00e9\\n\"}", "{\"u\":\"\xc3\xa9\\n\"}"},
        {"{\"n\": -1.5e3}", "{\"n\":-1500.0}"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *r = repair(v[i][0]);
        CHECK_STR(r, v[i][1]);
        free(r);
    }
    size_t at, len;
    CHECK(dspy_json_first_braced("x { {a} y", 9, &at, &len) && at == 4 && len == 3);
    CHECK(dspy_json_first_braced("pre {a {b} c} post", 18, &at, &len) && at == 4 && len == 9);
    CHECK(!dspy_json_first_braced("no braces } {", 13, &at, &len));
}

static char *leval(const char *s, dspy_status *st) {
    dspy_json *v = NULL;
    *st = dspy_py_literal_eval(s, strlen(s), &v);
    char *r = NULL;
    if (v) {
        dspy_str o = DSPY_STR_INIT;
        dspy_json_repr(v, &o);
        r = dspy_str_take(&o);
    }
    dspy_json_decref(v);
    return r;
}

static void test_literal_eval(void) {
    static const char *const v[][2] = {
        {"True", "True"},
        {"None", "None"},
        {"  -3", "-3"},
        {"1_000", "1000"},
        {"0x1f", "31"},
        {"1.5e2", "150.0"},
        {"'a' \"b\"", "'ab'"},
        {"'''tri\nple'''", "'tri\\nple'"},
        {"(1, 'x')", "[1, 'x']"},
        {"(5)", "5"},
        {"{'k': [1, {2, 2}], 3: None}", "{'k': [1, [2]], '3': None}"},
        {"[]", "[]"},
        {"1, 2", "[1, 2]"},
        {"b'raw'", "'raw'"},
        {"'\\x41\\101\\u00e9'", "'AA\xc3\xa9'"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        dspy_status st;
        char *r = leval(v[i][0], &st);
        CHECK_STR(r, v[i][1]);
        free(r);
    }
    static const char *const bad[] = {"x", "[1, 2", "f'x'", "1 + 2", "\n1", "{1: }", "01", "1j", "'unterminated"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dspy_status st;
        char *r = leval(bad[i], &st);
        CHECK(r == NULL && st == DSPY_ERR_PARSE);
        free(r);
    }
}

/* Random JSON/Python-ish text through every reader: no crash, no leak (run under ASan), and
 * a status that is OK or a clean error. */
static void test_random_inputs(void) {
    static const char alphabet[] = "{}[]()\"'\\:,.-+_0123456789eEaxLiteralstrintNoneTrue# \n\t|#";
    uint64_t x = 0x9e3779b97f4a7c15ull;
    dspy_signature *cot = NULL, *js = NULL;
    CHECK_OK(dspy_signature_parse("q -> reasoning, label: Literal['a', 'b'], n: list[int]", NULL, &cot));
    CHECK_OK(dspy_signature_parse("q -> answer, d: dict[str, float], o: Optional[int]", NULL, &js));
    int ok = 0, failed = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char buf[96];
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t n = (size_t)(x % 80);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = alphabet[x % (sizeof alphabet - 1)];
        }
        buf[n] = '\0';
        dspy_json *v = NULL;
        dspy_status st = dspy_json_repair_loads(buf, n, &v);
        CHECK(st == DSPY_OK && v != NULL);
        dspy_json_decref(v);
        v = NULL;
        st = dspy_py_literal_eval(buf, n, &v);
        CHECK(st == DSPY_OK ? v != NULL : (st == DSPY_ERR_PARSE && v == NULL));
        dspy_json_decref(v);
        dspy_type *t = NULL;
        st = dspy_type_parse(buf, &t);
        CHECK(st == DSPY_OK ? t != NULL : (st == DSPY_ERR_FORMAT && t == NULL));
        dspy_type_free(t);
        dspy_signature *sg = NULL;
        char sigtext[128];
        snprintf(sigtext, sizeof sigtext, "a -> %s", buf);
        st = dspy_signature_parse(sigtext, NULL, &sg);
        CHECK(st == DSPY_OK || st == DSPY_ERR_FORMAT);
        dspy_signature_free(sg);
        for (int k = 0; k < 2; k++) {
            dspy_json *f = NULL;
            st = dspy_adapter_parse(k ? DSPY_ADAPTER_JSON : DSPY_ADAPTER_CHAT, k ? DSPY_PROFILE_V33 : DSPY_PROFILE_V26,
                                    k ? js : cot, buf, &f);
            CHECK(st == DSPY_OK ? f != NULL : (st == DSPY_ERR_PARSE && f == NULL));
            if (st == DSPY_OK) ok++;
            else failed++;
            dspy_json_decref(f);
        }
    }
    CHECK(failed > 0);
    (void)ok;
    dspy_signature_free(cot);
    dspy_signature_free(js);
}

int main(void) {
    RUN(test_literal_values);
    RUN(test_other_values);
    RUN(test_schemas);
    RUN(test_type_api);
    RUN(test_json_repair);
    RUN(test_literal_eval);
    RUN(test_random_inputs);
    return check_summary("test_type");
}
