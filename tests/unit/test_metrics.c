/* test_metrics.c — DSPy's normalize_text, f1_score and answer_exact_match against CPython:
 * tests/ref/normalize_f1.json (scripts/make_ref_f1.py restates dspy/dsp/utils/metrics.py of
 * DSPy 3.3.1 and runs it on hand-picked texts — NFD, combining-mark order, final sigma, U+0130,
 * Hangul, Unicode spaces and numerals, articles before combining marks — and 300 random ones).
 * Normalized texts must match byte for byte, F1 scores exactly (the same double operations).
 * Then the f1 metric over example/prediction fields (lists of answers: the best one). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/evaluate.h"
#include "dspy/json.h"

static void test_reference_vectors(void) {
    json_error_t err;
    json_t *ref = json_load_file(test_source("tests/ref/normalize_f1.json"), 0, &err);
    CHECK(ref != NULL);
    if (!ref) return;
    json_t *norm = json_object_get(ref, "normalize"), *f1 = json_object_get(ref, "f1");
    CHECK(json_array_size(norm) > 300);
    CHECK(json_array_size(f1) > 300);
    int bad = 0;
    for (size_t i = 0; i < json_array_size(norm); i++) {
        json_t *c = json_array_get(norm, i);
        const char *in = json_string_value(json_array_get(c, 0)), *want = json_string_value(json_array_get(c, 1));
        char *got = dspy_normalize_text(in);
        if (!got || strcmp(got, want) != 0) {
            if (bad++ < 5) CHECK_STR(got, want);
        }
        free(got);
    }
    CHECK_INT(bad, 0);
    bad = 0;
    int ems = 0;
    for (size_t i = 0; i < json_array_size(f1); i++) {
        json_t *c = json_array_get(f1, i);
        const char *p = json_string_value(json_array_get(c, 0)), *g = json_string_value(json_array_get(c, 1));
        double want = json_number_value(json_array_get(c, 2)), got = -1;
        CHECK_OK(dspy_f1_score(p, g, &got));
        if (got != want && bad++ < 5) CHECK_NEAR(got, want, 0);
        /* answer_exact_match (frac 1.0) = em_score of the normalized texts */
        char *np = dspy_normalize_text(p), *ng = dspy_normalize_text(g);
        bool em = np && ng && strcmp(np, ng) == 0;
        ems += em == json_is_true(json_array_get(c, 3));
        free(np);
        free(ng);
    }
    CHECK_INT(bad, 0);
    CHECK_INT(ems, (int)json_array_size(f1));
    json_decref(ref);
}

static dspy_example *ex_from(const char *json) {
    dspy_example *e = NULL;
    CHECK_OK(dspy_example_from_json(json, strlen(json), "test", &e));
    return e;
}

static dspy_prediction *pred_from(const char *json) {
    dspy_json *j = NULL;
    dspy_prediction *p = NULL;
    CHECK_OK(dspy_json_parse(json, strlen(json), "test", &j));
    CHECK_OK(dspy_prediction_from_fields(j, &p));
    dspy_json_decref(j);
    return p;
}

static void test_f1_metric(void) {
    dspy_example *ex = ex_from("{\"answer\": \"New York City\", \"answers\": [\"Paris\", \"the city of Paris\"], "
                               "\"n\": 42}");
    dspy_metric m = dspy_metric_f1("answer");
    CHECK_STR(m.name, "f1");
    CHECK_INT(m.kind, DSPY_SCORE_FLOAT);
    double s = -1;
    dspy_prediction *p = pred_from("{\"answer\": \"new york\", \"answers\": \"City of Paris!\", \"n\": 42}");
    CHECK_OK(m.fn(m.user, ex, p, NULL, &s));
    /* precision 2/2, recall 2/3: 2 * 1 * (2/3) / (1 + 2/3) = 0.8 */
    CHECK_NEAR(s, 2 * 1.0 * (2.0 / 3.0) / (1.0 + 2.0 / 3.0), 0);
    dspy_metric ml = dspy_metric_f1("answers");
    CHECK_OK(ml.fn(ml.user, ex, p, NULL, &s)); /* best of the two answers: "city of paris" vs "city of paris" */
    CHECK_NEAR(s, 1.0, 0);
    dspy_metric mn = dspy_metric_f1("n"); /* str(42) on both sides */
    CHECK_OK(mn.fn(mn.user, ex, p, NULL, &s));
    CHECK_NEAR(s, 1.0, 0);
    dspy_prediction_free(p);
    p = pred_from("{\"answer\": \"Boston\"}");
    CHECK_OK(m.fn(m.user, ex, p, NULL, &s));
    CHECK_NEAR(s, 0, 0);
    dspy_prediction_free(p);
    p = pred_from("{\"other\": \"x\"}");
    CHECK_STATUS(m.fn(m.user, ex, p, NULL, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "'Prediction' object has no attribute 'answer'");
    dspy_prediction_free(p);
    dspy_example_free(ex);
    /* invalid UTF-8 is an error, not a guess */
    CHECK_STATUS(dspy_f1_score("ok", "\xff", &s), DSPY_ERR_ARG);
}

int main(void) {
    RUN(test_reference_vectors);
    RUN(test_f1_metric);
    return check_summary("test_metrics");
}
