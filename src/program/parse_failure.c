/* parse_failure.c — see parse_failure.h. One thread-local note; nothing is allocated unless
 * the thread watches, so threads that never watch never leak. */
#include "program/parse_failure.h"

#include <stdlib.h>
#include <string.h>

static _Thread_local bool tl_watch;
static _Thread_local bool tl_have;
static _Thread_local parse_failure tl_note;

void dspy_parse_failure_clear(parse_failure *pf) {
    if (!pf) return;
    dspy_module_free(pf->predictor);
    dspy_json_decref(pf->inputs);
    free(pf->lm_response);
    memset(pf, 0, sizeof *pf);
}

void dspy_parse_failure_watch(bool on) {
    tl_watch = on;
    if (!on && tl_have) {
        dspy_parse_failure_clear(&tl_note);
        tl_have = false;
    }
}

bool dspy_parse_failure_watching(void) { return tl_watch; }

/* The count of names in the "Actual output fields parsed from the LM response: [a, b]" part
 * of DSPy's AdapterParseError text (V33 layout; 0 when absent). */
static int parsed_count(const char *msg) {
    static const char tag[] = "Actual output fields parsed from the LM response: [";
    const char *p = NULL;
    for (const char *q = strstr(msg, tag); q; q = strstr(q + 1, tag)) p = q;
    if (!p) return 0;
    p += sizeof tag - 1;
    const char *end = strchr(p, ']');
    if (!end || end == p) return 0;
    int n = 1;
    for (; p < end; p++)
        if (*p == ',') n++;
    return n;
}

void dspy_parse_failure_note(dspy_module *predictor, const dspy_json *inputs, const char *lm_response) {
    if (!tl_watch) return;
    parse_failure n = {dspy_module_retain(predictor), inputs ? dspy_json_copy(inputs) : dspy_json_object(),
                       lm_response ? strdup(lm_response) : NULL, parsed_count(dspy_errmsg())};
    if (tl_have) dspy_parse_failure_clear(&tl_note);
    tl_note = n;
    tl_have = true;
}

bool dspy_parse_failure_take(parse_failure *out) {
    memset(out, 0, sizeof *out);
    if (!tl_have) return false;
    *out = tl_note;
    memset(&tl_note, 0, sizeof tl_note);
    tl_have = false;
    return true;
}
