/* compile_plan.c — the estimate `dspy compile` prints before its first teacher call: how many
 * calls the teacher gets (one per trainset example, up to three when an answer needs DSPy's
 * JSON fallback; plus the devset when the teacher is evaluated), how many prompt tokens they
 * hold (the exact ChatAdapter messages, counted with the student's tokenizer, which only
 * approximates a remote teacher's), the answer budget, and how many answers the LM cache
 * already holds (a rerun after a crash asks only for the rest).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile_run.h"
#include "dspy/adapter.h"
#include "dspy/cache.h"
#include "dspy/tokenizer.h"

/* Prompt tokens and cache hits of the teacher's first call for each example of `ds`. */
static void count(run_state *r, const dspy_dataset *ds, const dspy_tokenizer *tok, dspy_cache *cache, long long *tokens,
                  size_t *cached) {
    const dspy_module *pred = dspy_module_is_predict(r->teacher) ? r->teacher : dspy_module_child(r->teacher, "predict");
    const dspy_signature *sig = dspy_predict_signature(pred);
    for (size_t i = 0; ds && i < dspy_dataset_len(ds); i++) {
        const dspy_example *ex = dspy_dataset_get(ds, i);
        dspy_json *inputs = dspy_json_object(), *messages = NULL;
        for (size_t k = 0; inputs && k < dspy_signature_n_inputs(sig); k++) {
            dspy_str v = DSPY_STR_INIT;
            const dspy_value *val = dspy_example_get(ex, dspy_signature_field_name(sig, k));
            if (!val) continue;
            dspy_value_append_json(&v, val);
            dspy_json *j = NULL;
            if (dspy_str_ok(&v) && dspy_json_parse(v.ptr, v.len, "input", &j) == DSPY_OK)
                dspy_json_set(inputs, dspy_signature_field_name(sig, k), j);
            dspy_str_free(&v);
        }
        if (inputs && dspy_adapter_format(DSPY_ADAPTER_CHAT, r->t.profile, sig, dspy_predict_demos(pred), inputs,
                                          &messages) == DSPY_OK) {
            for (size_t m = 0; tok && m < dspy_json_size(messages); m++) {
                const char *c = dspy_json_str_or(dspy_json_at(messages, m), "content", "");
                int32_t *ids = NULL;
                size_t n = 0;
                if (dspy_tokenizer_encode(tok, c, strlen(c), false, false, &ids, &n) == DSPY_OK) *tokens += (long long)n;
                free(ids);
            }
            char key[65];
            dspy_json *hit = NULL;
            if (cache && dspy_lm_request_key(r->teacher_lm, messages, dspy_predict_config(pred), key) == DSPY_OK &&
                dspy_cache_get(cache, key, &hit) == DSPY_OK && hit)
                (*cached)++;
            dspy_json_decref(hit);
        }
        dspy_errclear();
        dspy_json_decref(messages);
        dspy_json_decref(inputs);
    }
}

void compile_print_plan(run_state *r) {
    dspy_tokenizer *tok = NULL;
    dspy_cache *cache = NULL;
    if (dspy_tokenizer_load(dspy_args_get(r->a, "student"), &tok) != DSPY_OK) tok = NULL;
    if (!r->teacher_is_oracle && dspy_lm_cache_enabled(r->teacher_lm) && dspy_cache_default(&cache) != DSPY_OK)
        cache = NULL;
    dspy_errclear();
    size_t ntr = dspy_dataset_len(r->t.trainset), ndev = r->baseline_teacher ? dspy_dataset_len(r->t.devset) : 0;
    long long ttr = 0, tdev = 0;
    size_t ctr = 0, cdev = 0;
    count(r, r->t.trainset, tok, cache, &ttr, &ctr);
    if (ndev) count(r, r->t.devset, tok, cache, &tdev, &cdev);
    long tmt = 0;
    if (dspy_args_get(r->a, "teacher-max-tokens")) tmt = strtol(dspy_args_get(r->a, "teacher-max-tokens"), NULL, 10);
    size_t calls = ntr + ndev, cached = ctr + cdev;
    if (ndev)
        compile_note("plan: %zu teacher calls (%zu trainset examples + %zu devset examples to score the teacher; "
                     "--baselines student skips those), up to %zu if answers need DSPy's JSON fallback%s",
                     calls, ntr, ndev, 3 * calls, r->teacher_is_oracle ? "; the oracle stand-in costs nothing" : "");
    else
        compile_note("plan: %zu teacher calls (one per trainset example), up to %zu if answers need DSPy's JSON "
                     "fallback%s", calls, 3 * calls, r->teacher_is_oracle ? "; the oracle stand-in costs nothing" : "");
    if (tok)
        compile_note("      prompts: ~%lld tokens in all (~%lld per call; counted with the student's tokenizer, a remote "
                     "teacher's differs a little)", ttr + tdev, calls ? (ttr + tdev) / (long long)calls : 0);
    if (tmt) compile_note("      answers: at most %ld tokens each (--teacher-max-tokens)", tmt);
    else compile_note("      answers: no max_tokens sent (the provider's default; --teacher-max-tokens N caps them)");
    if (cache) compile_note("      already in the LM cache (%s): %zu of %zu; only the rest will be asked",
                            dspy_cache_path(cache) ? dspy_cache_path(cache) : "memory", cached, calls);
    dspy_cache_free(cache);
    dspy_tokenizer_free(tok);
}
