/* test_json.c — JSON parse errors, accessors, and Python-compatible output against CPython's
 * json.dumps / repr (tests/ref/json_vectors.txt, written by scripts/make_ref_json.py). */
#include <stdlib.h>
#include <string.h>

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

int main(void) {
    RUN(test_vectors);
    RUN(test_errors);
    RUN(test_accessors);
    return check_summary("test_json");
}
