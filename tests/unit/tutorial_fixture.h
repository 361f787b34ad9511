/* tutorial_fixture.h — helpers the adapter/signature tests share: the tutorial signature built
 * from shared/data/banking77/labels.txt exactly as the notebook does
 * (f"text -> label: Literal{CLASSES}", i.e. the Python list repr), and fixture loading. */
#ifndef DSPY_TEST_TUTORIAL_FIXTURE_H
#define DSPY_TEST_TUTORIAL_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/json.h"
#include "dspy/signature.h"
#include "dspy/str.h"

/* "text -> label: Literal['activate_my_card', ...]" (malloc'd), or NULL when shared data is
 * missing. *nlabels gets the label count. */
static inline char *tutorial_signature_text(int *nlabels) {
    char *buf;
    size_t n;
    *nlabels = 0;
    if (dspy_read_file(test_shared("data/banking77/labels.txt"), &buf, &n)) return NULL;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "text -> label: Literal[");
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r') line[--l] = '\0';
        if (!l) continue;
        if (*nlabels) dspy_str_append(&s, ", ");
        dspy_py_repr_str(line, l, &s);
        (*nlabels)++;
    }
    dspy_str_append(&s, "]");
    free(buf);
    return dspy_str_take(&s);
}

/* ChainOfThought signature of the tutorial in profile p (NULL on failure). */
static inline dspy_signature *tutorial_cot(dspy_profile p) {
    int nl;
    char *text = tutorial_signature_text(&nl);
    if (!text) return NULL;
    dspy_signature *base = NULL, *cot = NULL;
    if (dspy_signature_parse(text, NULL, &base) == DSPY_OK)
        dspy_signature_chain_of_thought(base, p, &cot);
    dspy_signature_free(base);
    free(text);
    return cot;
}

/* Contents of shared/spec/fixtures/<name> (malloc'd) or NULL. */
static inline char *read_fixture(const char *name, size_t *len) {
    char rel[256];
    snprintf(rel, sizeof rel, "spec/fixtures/%s", name);
    char *buf = NULL;
    if (dspy_read_file(test_shared(rel), &buf, len)) return NULL;
    return buf;
}

/* Parses a JSON literal used in a test (aborts the check on bad JSON). */
static inline dspy_json *J(const char *text) {
    dspy_json *v = NULL;
    if (dspy_json_parse(text, strlen(text), "test literal", &v)) {
        fprintf(stderr, "bad test JSON: %s\n", dspy_errmsg());
        abort();
    }
    return v;
}

/* Content of message i of a messages array. */
static inline const char *msg_content(const dspy_json *msgs, size_t i) {
    return dspy_json_str(dspy_json_get(dspy_json_at(msgs, i), "content"));
}
static inline const char *msg_role(const dspy_json *msgs, size_t i) {
    return dspy_json_str(dspy_json_get(dspy_json_at(msgs, i), "role"));
}

#endif
