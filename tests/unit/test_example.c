/* test_example.c — dspy.Example semantics (conformance CC-28, spec §11.1), Python repr
 * (expected strings produced by CPython 3.11 repr()), datasets. */
#include <stdlib.h>

#include "check.h"
#include "dspy/example.h"

static dspy_example *ex_new(void) {
    dspy_example *e = NULL;
    CHECK_OK(dspy_example_new(&e));
    return e;
}

static char *repr_of(const dspy_example *e) {
    char *r = NULL;
    CHECK_OK(dspy_example_repr(e, &r));
    return r;
}

static char *json_of(const dspy_example *e) {
    dspy_str s = DSPY_STR_INIT;
    dspy_example_append_json(&s, e, false);
    return dspy_str_take(&s);
}

#define CHECK_REPR(ex, want)            \
    do {                                \
        char *r_ = repr_of(ex);         \
        CHECK_STR(r_, want);            \
        free(r_);                       \
    } while (0)

#define CHECK_JSON(ex, want)            \
    do {                                \
        char *j_ = json_of(ex);         \
        CHECK_STR(j_, want);            \
        free(j_);                       \
    } while (0)

static const char *const k_a[] = {"a"};
static const char *const k_text[] = {"text"};

static void test_cc28_repr(void) {
    dspy_example *e = ex_new(), *w = NULL;
    CHECK_OK(dspy_example_set_int(e, "a", 1));
    CHECK_REPR(e, "Example({'a': 1}) (input_keys=None)");
    dspy_example_free(e);

    e = ex_new();
    CHECK_OK(dspy_example_set_str(e, "text", "What if there is an error on the exchange rate?"));
    CHECK_OK(dspy_example_with_inputs(e, k_text, 1, &w));
    CHECK_REPR(w, "Example({'text': 'What if there is an error on the exchange rate?'}) (input_keys={'text'})");
    CHECK_REPR(e, "Example({'text': 'What if there is an error on the exchange rate?'}) (input_keys=None)");
    dspy_example_free(e);
    dspy_example_free(w);

    /* several input keys (printed in the order given), an empty set, hidden keys */
    e = ex_new();
    CHECK_OK(dspy_example_set_str(e, "q", "it's"));
    CHECK_OK(dspy_example_set_json_text(e, "dspy_uuid", "\"abc\""));
    CHECK_OK(dspy_example_set_json_text(e, "v", "[1, 2.5, null, true, false, {\"k\": \"v\"}]"));
    const char *two[] = {"q", "v", "q"};
    CHECK_OK(dspy_example_set_inputs(e, two, 3));
    CHECK_INT(dspy_example_ninputs(e), 2);
    CHECK_REPR(e, "Example({'q': \"it's\", 'v': [1, 2.5, None, True, False, {'k': 'v'}]}) (input_keys={'q', 'v'})");
    CHECK_OK(dspy_example_set_inputs(e, NULL, 0));
    CHECK(dspy_example_has_inputs(e));
    CHECK_REPR(e, "Example({'q': \"it's\", 'v': [1, 2.5, None, True, False, {'k': 'v'}]}) (input_keys=set())");
    dspy_example_free(e);
}

static void test_cc28_len_keys_inputs_labels(void) {
    dspy_example *e = ex_new(), *w = NULL, *in = NULL, *lab = NULL;
    CHECK_OK(dspy_example_set_int(e, "a", 1));
    CHECK_OK(dspy_example_set_int(e, "b", 2));
    CHECK_OK(dspy_example_set_int(e, "dspy_hidden", 3));
    CHECK_INT(dspy_example_len(e), 2);
    CHECK_INT(dspy_example_nfields(e), 3);
    CHECK_STR(dspy_example_key(e, 0), "a");
    CHECK_STR(dspy_example_key(e, 1), "b");
    CHECK(dspy_example_key(e, 2) == NULL);
    CHECK_STR(dspy_example_field_key(e, 2), "dspy_hidden");
    CHECK(dspy_example_has(e, "dspy_hidden"));
    CHECK_REPR(e, "Example({'a': 1, 'b': 2}) (input_keys=None)");

    /* inputs() / labels() before with_inputs: ValueError text */
    CHECK_STATUS(dspy_example_inputs(e, &in), DSPY_ERR_STATE);
    CHECK_STR(dspy_errmsg(),
              "Inputs have not been set for this example. Use `example.with_inputs()` to set them.");
    CHECK(in == NULL);
    CHECK_STATUS(dspy_example_labels(e, &lab), DSPY_ERR_STATE);
    CHECK_OK(dspy_example_remove(e, "dspy_hidden"));

    CHECK_OK(dspy_example_with_inputs(e, k_a, 1, &w));
    CHECK_OK(dspy_example_inputs(w, &in));
    CHECK_OK(dspy_example_labels(w, &lab));
    CHECK_JSON(in, "{\"a\":1}");
    CHECK_JSON(lab, "{\"b\":2}");
    CHECK(dspy_example_has_inputs(in) && dspy_example_is_input(in, "a")); /* inputs keeps them */
    CHECK(!dspy_example_has_inputs(lab));                                 /* labels: None */
    CHECK_REPR(lab, "Example({'b': 2}) (input_keys=None)");
    dspy_example_free(e);
    dspy_example_free(w);
    dspy_example_free(in);
    dspy_example_free(lab);
}

static void test_cc28_equality_copy_without(void) {
    dspy_example *a = ex_new(), *b = ex_new(), *c = NULL, *d = NULL;
    CHECK_OK(dspy_example_set_int(a, "a", 1));
    CHECK_OK(dspy_example_set_int(a, "b", 2));
    CHECK_OK(dspy_example_set_int(b, "b", 2));  /* other insertion order */
    CHECK_OK(dspy_example_set_real(b, "a", 1.0)); /* Python: 1 == 1.0 */
    CHECK(dspy_example_equal(a, b));
    CHECK(!dspy_example_equal(a, NULL));
    CHECK_OK(dspy_example_set_inputs(b, k_a, 1)); /* input keys are not compared */
    CHECK(dspy_example_equal(a, b));
    CHECK_OK(dspy_example_set_str(b, "a", "1"));
    CHECK(!dspy_example_equal(a, b));
    CHECK_OK(dspy_example_set_bool(b, "a", true)); /* True == 1 */
    CHECK(dspy_example_equal(a, b));
    CHECK_OK(dspy_example_set_int(b, "dspy_x", 1)); /* hidden keys count for == */
    CHECK(!dspy_example_equal(a, b));

    /* Example(base=Example(a=1,b=2), c=3) has a, b, c; copy() drops input keys */
    dspy_example *over = ex_new();
    CHECK_OK(dspy_example_set_int(over, "c", 3));
    CHECK_OK(dspy_example_set_inputs(a, k_a, 1));
    CHECK_OK(dspy_example_copy(a, over, &c));
    CHECK_JSON(c, "{\"a\":1,\"b\":2,\"c\":3}");
    CHECK(!dspy_example_has_inputs(c));
    /* .copy(c=3).without("a"): accessing a fails */
    const char *rm[] = {"a"};
    CHECK_OK(dspy_example_without(c, rm, 1, &d));
    CHECK(dspy_example_get(d, "a") == NULL);
    CHECK_JSON(d, "{\"b\":2,\"c\":3}");
    dspy_example_free(d);
    d = NULL;
    const char *missing[] = {"zzz"};
    CHECK_STATUS(dspy_example_without(c, missing, 1, &d), DSPY_ERR_NOTFOUND);
    CHECK(d == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "zzz");
    dspy_example_free(a);
    dspy_example_free(b);
    dspy_example_free(c);
    dspy_example_free(over);
}

static void test_cc28_label_override(void) {
    /* Example(x, label="card_arrival") where x has label=11: value replaced in place, input
     * keys None until with_inputs */
    dspy_example *x = ex_new(), *ov = ex_new(), *e = NULL, *w = NULL;
    CHECK_OK(dspy_example_set_str(x, "text", "I am still waiting on my card?"));
    CHECK_OK(dspy_example_set_int(x, "label", 11));
    CHECK_OK(dspy_example_set_inputs(x, k_text, 1));
    CHECK_OK(dspy_example_set_str(ov, "label", "card_arrival"));
    CHECK_OK(dspy_example_copy(x, ov, &e));
    CHECK_STR(dspy_example_get_str(e, "label"), "card_arrival");
    CHECK_STR(dspy_example_key(e, 1), "label");
    CHECK(!dspy_example_has_inputs(e));
    CHECK_OK(dspy_example_with_inputs(e, k_text, 1, &w));
    CHECK_REPR(w, "Example({'text': 'I am still waiting on my card?', 'label': 'card_arrival'}) (input_keys={'text'})");
    dspy_example_free(x);
    dspy_example_free(ov);
    dspy_example_free(e);
    dspy_example_free(w);
}

static void test_labels_with_hidden_input(void) {
    /* DSPy: labels() drops the keys of inputs().keys(), which hides dspy_ keys */
    dspy_example *e = ex_new(), *lab = NULL;
    CHECK_OK(dspy_example_set_int(e, "a", 1));
    CHECK_OK(dspy_example_set_int(e, "dspy_k", 2));
    CHECK_OK(dspy_example_set_int(e, "b", 3));
    const char *keys[] = {"a", "dspy_k"};
    CHECK_OK(dspy_example_set_inputs(e, keys, 2));
    CHECK_OK(dspy_example_labels(e, &lab));
    CHECK_INT(dspy_example_nfields(lab), 2);
    CHECK(dspy_example_has(lab, "dspy_k") && dspy_example_has(lab, "b"));
    dspy_example_free(e);
    dspy_example_free(lab);
}

static void test_values_and_json(void) {
    dspy_example *e = ex_new(), *f = NULL;
    CHECK_OK(dspy_example_set_str(e, "s", "caf\xc3\xa9 \"q\"\n"));
    CHECK_OK(dspy_example_set_json_text(e, "o", "{\"z\": [1, {\"y\": null}], \"a\": \"\xe2\x82\xac\"}"));
    CHECK_OK(dspy_example_set_int(e, "n", -5));
    CHECK_OK(dspy_example_set_str(e, "s", "replaced")); /* keeps its position */
    CHECK_STR(dspy_example_key(e, 0), "s");
    CHECK_JSON(e, "{\"s\":\"replaced\",\"o\":{\"z\":[1,{\"y\":null}],\"a\":\"\xe2\x82\xac\"},\"n\":-5}");
    char *t = NULL;
    CHECK_OK(dspy_example_get_json_text(e, "o", &t));
    CHECK_STR(t, "{\"z\":[1,{\"y\":null}],\"a\":\"\xe2\x82\xac\"}");
    free(t);
    CHECK_STATUS(dspy_example_get_json_text(e, "nope", &t), DSPY_ERR_NOTFOUND);
    CHECK(dspy_example_get_str(e, "o") == NULL);
    CHECK(dspy_value_type_of(dspy_example_get(e, "o")) == DSPY_VALUE_OBJECT);
    int64_t n = 0;
    CHECK(dspy_value_int(dspy_example_get(e, "n"), &n) && n == -5);
    CHECK_STATUS(dspy_example_set_json_text(e, "bad", "{oops"), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "bad");
    CHECK_STATUS(dspy_example_set_str(e, "u", "\xff"), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_example_set_str(e, "\xc3", "x"), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_example_remove(e, "nope"), DSPY_ERR_NOTFOUND);

    const char *js = "{\"text\": \"hi\", \"label\": 3}";
    CHECK_OK(dspy_example_from_json(js, strlen(js), "row", &f));
    CHECK_REPR(f, "Example({'text': 'hi', 'label': 3}) (input_keys=None)");
    dspy_example_free(f);
    f = (dspy_example *)1;
    CHECK_STATUS(dspy_example_from_json("[1]", 3, "row 7", &f), DSPY_ERR_FORMAT);
    CHECK(f == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "row 7");
    /* values shared between examples */
    dspy_example *g = ex_new();
    CHECK_OK(dspy_example_set_value(g, "copy", dspy_example_get(e, "o")));
    dspy_example_free(e);
    CHECK_JSON(g, "{\"copy\":{\"z\":[1,{\"y\":null}],\"a\":\"\xe2\x82\xac\"}}");
    dspy_example_free(g);
}

/* Expected strings: CPython 3.11 repr(). */
static void test_python_repr(void) {
    static const struct {
        const char *in, *want;
    } strs[] = {
        {"it's", "\"it's\""},
        {"say \"hi\"", "'say \"hi\"'"},
        {"both ' and \"", "'both \\' and \"'"},
        {"tab\there\nnl\\ bs\r", "'tab\\there\\nnl\\\\ bs\\r'"},
        {"\x1f\x7f", "'\\x1f\\x7f'"},
        {"caf\xc3\xa9 \xc2\xa3 \xe2\x80\xa6 \xe2\x82\xac \xc2\xa0nbsp \xc2\xad shy \xe2\x80\x8b zw "
         "\xe2\x80\xa8 ls \xf0\x9f\x98\x80 \xee\x80\x80 \xf3\xa0\x80\x81 \xcd\xb8",
         "'caf\xc3\xa9 \xc2\xa3 \xe2\x80\xa6 \xe2\x82\xac \\xa0nbsp \\xad shy \\u200b zw \\u2028 ls "
         "\xf0\x9f\x98\x80 \\ue000 \\U000e0001 \\u0378'"},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        dspy_example *e = ex_new();
        CHECK_OK(dspy_example_set_str(e, "k", strs[i].in));
        dspy_str s = DSPY_STR_INIT;
        dspy_value_append_repr(&s, dspy_example_get(e, "k"));
        CHECK_STR(dspy_str_cstr(&s), strs[i].want);
        dspy_str_free(&s);
        dspy_example_free(e);
    }
    static const struct {
        double v;
        const char *want;
    } reals[] = {{0.1, "0.1"}, {1e-05, "1e-05"}, {0.0001, "0.0001"}, {1e16, "1e+16"},
                 {1234567890123456.0, "1234567890123456.0"}, {3.0, "3.0"}, {-0.0, "-0.0"},
                 {1.5e300, "1.5e+300"}, {2.5e-10, "2.5e-10"}, {100.0, "100.0"},
                 {0.30000000000000004, "0.30000000000000004"}, {123.456, "123.456"},
                 {1e22, "1e+22"}, {5e-324, "5e-324"}};
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
        dspy_example *e = ex_new();
        CHECK_OK(dspy_example_set_real(e, "k", reals[i].v));
        dspy_str s = DSPY_STR_INIT;
        dspy_value_append_repr(&s, dspy_example_get(e, "k"));
        CHECK_STR(dspy_str_cstr(&s), reals[i].want);
        dspy_str_free(&s);
        dspy_example_free(e);
    }
}

static void test_dataset(void) {
    dspy_dataset *ds = NULL, *sl = NULL, *ga = NULL;
    CHECK_OK(dspy_dataset_new(&ds));
    for (int i = 0; i < 10; i++) {
        dspy_example *e = ex_new();
        CHECK_OK(dspy_example_set_int(e, "i", i));
        CHECK_OK(dspy_dataset_append(ds, e));
    }
    CHECK_INT(dspy_dataset_len(ds), 10);
    CHECK_OK(dspy_dataset_set_inputs(ds, (const char *const[]){"i"}, 1));
    CHECK_OK(dspy_dataset_slice(ds, 7, 100, &sl)); /* clamped like ds[7:100] */
    CHECK_INT(dspy_dataset_len(sl), 3);
    int64_t v = -1;
    CHECK(dspy_value_int(dspy_example_get(dspy_dataset_get(sl, 0), "i"), &v) && v == 7);
    CHECK(dspy_example_has_inputs(dspy_dataset_get(sl, 0)));
    dspy_dataset_free(sl);
    CHECK_OK(dspy_dataset_slice(ds, 5, 2, &sl));
    CHECK_INT(dspy_dataset_len(sl), 0);
    dspy_dataset_free(sl);
    int32_t idx[] = {9, 0, 9};
    CHECK_OK(dspy_dataset_gather(ds, idx, 3, &ga));
    CHECK_INT(dspy_dataset_len(ga), 3);
    CHECK(dspy_example_equal(dspy_dataset_get(ga, 0), dspy_dataset_get(ds, 9)));
    CHECK(dspy_example_equal(dspy_dataset_get(ga, 1), dspy_dataset_get(ds, 0)));
    dspy_dataset_free(ga);
    int32_t bad[] = {10};
    CHECK_STATUS(dspy_dataset_gather(ds, bad, 1, &ga), DSPY_ERR_ARG);
    CHECK(ga == NULL);
    CHECK(dspy_dataset_get(ds, 10) == NULL);
    CHECK_STATUS(dspy_dataset_append(ds, NULL), DSPY_ERR_ARG);
    dspy_dataset_free(ds);
    dspy_dataset_free(NULL);
    dspy_example_free(NULL);
}

int main(void) {
    RUN(test_cc28_repr);
    RUN(test_cc28_len_keys_inputs_labels);
    RUN(test_cc28_equality_copy_without);
    RUN(test_cc28_label_override);
    RUN(test_labels_with_hidden_input);
    RUN(test_values_and_json);
    RUN(test_python_repr);
    RUN(test_dataset);
    return check_summary("test_example");
}
