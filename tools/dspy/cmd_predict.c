/* cmd_predict.c — `dspy predict`: run a Predict or ChainOfThought program once and print the
 * prediction.
 *
 * Output (stdout): the prediction's fields in order as JSON, indented by 2 with UTF-8 kept, and
 * a final newline, e.g. {"reasoning": "...", "answer": "Paris"}. --inspect-history N prints
 * DSPy's inspect_history(N) of the LM calls to stderr afterwards, so stdout stays one JSON
 * document. --save FILE writes the program (with its LM) in DSPy's save() JSON layout.
 * --program FILE runs a program saved earlier instead of building one from --signature.
 * `--lm scripted:FILE` answers from a file of replies (dspy/lm.h), for tests and demos.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "dspy/history.h"
#include "dspy/module.h"
#include "dspy/settings.h"

/* Whether option `name` was given on the command line (not just defaulted). */
static bool given(const dspy_args *a, const char *name) {
    for (int i = 0; i < a->nopts; i++)
        if (strcmp(a->opts[i].name, name) == 0) return a->given[i];
    return false;
}

static dspy_status make_lm(const dspy_args *a, dspy_profile profile, dspy_lm **out) {
    *out = NULL;
    dspy_lm_params lp = dspy_lm_params_default();
    lp.profile = profile == DSPY_PROFILE_V26 ? DSPY_LM_V26 : DSPY_LM_V33;
    double t;
    long mt;
    if (dspy_args_get(a, "temperature")) {
        if (!dspy_args_double(a, "temperature", &t)) return dspy_fail(DSPY_ERR_ARG, "--temperature: not a number");
        lp.temperature = t;
    }
    if (dspy_args_get(a, "max-tokens")) {
        if (!dspy_args_int(a, "max-tokens", &mt) || mt <= 0 || mt > INT32_MAX)
            return dspy_fail(DSPY_ERR_ARG, "--max-tokens: expected a positive integer");
        lp.max_tokens = (int32_t)mt;
    }
    dspy_json *kw = dspy_json_object();
    if (!kw) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    if (dspy_args_get(a, "api-base")) st = dspy_json_set_str(kw, "api_base", dspy_args_get(a, "api-base"));
    if (!st && dspy_args_get(a, "api-key")) st = dspy_json_set_str(kw, "api_key", dspy_args_get(a, "api-key"));
    lp.kwargs = kw;
    if (!st) st = dspy_lm_new(dspy_args_get(a, "lm"), &lp, out);
    dspy_json_decref(kw);
    return st;
}

int cmd_predict(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"signature", "SIG", "signature, e.g. \"question -> answer\" or \"text -> label: Literal['a', 'b']\"", false, false, NULL},
        {"instructions", "TEXT", "instructions (default: DSPy's \"Given the fields ...\")", false, false, NULL},
        {"module", "NAME", "predict or cot (ChainOfThought adds a reasoning output)", false, false, "predict"},
        {"program", "FILE.json", "run a program saved with --save instead of building one from --signature", false, false, NULL},
        {"adapter", "NAME", "chat or json (chat falls back to json when an answer cannot be parsed)", false, false, "chat"},
        {"lm", "MODEL", "openai/<model>, openai/local:<path>, or scripted:<replies.json>", true, false, NULL},
        {"api-base", "URL", "OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or api.openai.com)", false, false, NULL},
        {"api-key", "KEY", "API key (default: $OPENAI_API_KEY)", false, false, NULL},
        {"temperature", "T", "sampling temperature sent to the LM (default: not sent; 0.0 with --dspy-format 2.6)", false, false, NULL},
        {"max-tokens", "N", "max_tokens sent to the LM (default: not sent; 1000 with --dspy-format 2.6)", false, false, NULL},
        {"input", "NAME=VALUE", "an input field value (a string)", false, true, NULL},
        {"input-json", "NAME=JSON", "an input field value given as JSON (lists, numbers)", false, true, NULL},
        {"dspy-format", "VERSION", "prompt format profile: 3.3 (DSPy 3.3.1) or 2.6 (the tutorial's DSPy)", false, false, "3.3"},
        {"inspect-history", "N", "print the last N LM calls as dspy.inspect_history does, to stderr", false, false, NULL},
        {"save", "FILE.json", "save the program (with its LM) in DSPy's JSON layout", false, false, NULL},
        {0},
    };
    dspy_args a;
    int rc = dspy_args_parse(&a, "predict", "--signature SIG --lm MODEL [--input NAME=VALUE ...] [options]",
                             "Run a DSPy Predict or ChainOfThought program once and print the prediction's "
                             "fields as JSON.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;

    dspy_module *m = NULL;
    dspy_lm *lm = NULL;
    dspy_json *inputs = NULL;
    dspy_prediction *pred = NULL;
    char *text = NULL;
    dspy_status st;
    dspy_profile profile;
    int ret = 1;
    long nhist = 0;
    const char *module = dspy_args_get(&a, "module"), *adapter = dspy_args_get(&a, "adapter");
    const char *program = dspy_args_get(&a, "program"), *sig_text = dspy_args_get(&a, "signature");
    dspy_adapter_kind kind = DSPY_ADAPTER_CHAT;
    if ((st = dspy_profile_parse(dspy_args_get(&a, "dspy-format"), &profile))) goto fail;
    if (strcmp(adapter, "json") == 0) kind = DSPY_ADAPTER_JSON;
    else if (strcmp(adapter, "chat") != 0) {
        st = dspy_fail(DSPY_ERR_ARG, "--adapter '%s': use chat or json", adapter);
        goto fail;
    }
    if (strcmp(module, "predict") != 0 && strcmp(module, "cot") != 0) {
        st = dspy_fail(DSPY_ERR_ARG, "--module '%s': use predict or cot", module);
        goto fail;
    }
    if (dspy_args_get(&a, "inspect-history") &&
        (!dspy_args_int(&a, "inspect-history", &nhist) || nhist < 0 || nhist > INT32_MAX)) {
        st = dspy_fail(DSPY_ERR_ARG, "--inspect-history: expected a count of LM calls (0 or more)");
        goto fail;
    }
    if (!program && !sig_text) {
        st = dspy_fail(DSPY_ERR_ARG, "give --signature SIG (or --program FILE.json)");
        goto fail;
    }
    dspy_settings_set_adapter(kind, true);
    dspy_settings_set_profile(profile);
    if (program) {
        dspy_program_load_params pl = dspy_program_load_params_default();
        pl.signature = sig_text;
        if (given(&a, "module")) pl.program = module;
        if (given(&a, "dspy-format")) pl.format_profile = (int)profile;
        if ((st = dspy_program_load(program, &pl, &m))) goto fail;
        profile = dspy_predict_profile(dspy_module_is_predict(m) ? m : dspy_module_child(m, "predict"));
    } else {
        dspy_predict_params pp = dspy_predict_params_default();
        pp.profile = profile;
        st = strcmp(module, "cot") == 0 ? dspy_chain_of_thought_new_text(sig_text, dspy_args_get(&a, "instructions"), &pp, &m)
                                        : dspy_predict_new_text(sig_text, dspy_args_get(&a, "instructions"), &pp, &m);
        if (st) goto fail;
    }
    if ((st = make_lm(&a, profile, &lm)) || (st = dspy_module_set_lm(m, lm))) goto fail;
    /* the hint for a bare value names the first input field, as Python's error does */
    const dspy_module *pm = dspy_module_is_predict(m) ? m : dspy_module_child(m, "predict");
    const dspy_signature *psig = dspy_predict_signature(pm);
    const char *first = psig && dspy_signature_n_inputs(psig) ? dspy_signature_field_name(psig, 0) : "name";
    if ((st = dspy_args_inputs(&a, first, &inputs))) goto fail;
    st = dspy_module_call(m, inputs, NULL, &pred);
    if (nhist > 0) dspy_inspect_history((int32_t)nhist, stderr);
    if (st) goto fail;
    if (!(text = dspy_json_dumps(dspy_prediction_fields(pred), DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2)))) goto fail;
    fputs(text, stdout);
    fputc('\n', stdout);
    if (fflush(stdout) != 0) {
        st = dspy_fail(DSPY_ERR_IO, "cannot write to stdout");
        goto fail;
    }
    if (dspy_args_get(&a, "save") && (st = dspy_module_save(m, dspy_args_get(&a, "save")))) goto fail;
    ret = 0;
fail:
    if (ret) ret = dspy_cli_error("predict");
    free(text);
    dspy_prediction_free(pred);
    dspy_json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    dspy_settings_reset();
    return ret;
}
