/* cmd_prompt.c — `dspy prompt`: print the chat messages an adapter would send for a signature.
 *
 * Output: {"messages": [{"role": ..., "content": ...}, ...]} as JSON, indented by 2 with UTF-8
 * kept (Python json.dumps(indent=2, ensure_ascii=False)) and a final newline; --compact prints
 * it on one line with "," and ":" separators (the form of an HTTP request body).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "dspy/adapter.h"

int cmd_prompt(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"signature", "SIG", "signature, e.g. \"question -> answer\" or \"text -> label: Literal['a', 'b']\"", true, false, NULL},
        {"instructions", "TEXT", "instructions (default: DSPy's \"Given the fields ...\")", false, false, NULL},
        {"module", "NAME", "predict or cot (ChainOfThought adds a reasoning output)", false, false, "predict"},
        {"adapter", "NAME", "chat or json", false, false, "chat"},
        {"input", "NAME=VALUE", "an input field value (a string)", false, true, NULL},
        {"input-json", "NAME=JSON", "an input field value given as JSON (lists, numbers)", false, true, NULL},
        {"demos", "FILE.json", "demos: a JSON array of objects keyed by field name", false, false, NULL},
        {"dspy-format", "VERSION", "prompt format profile: 3.3 (DSPy 3.3.1) or 2.6 (the tutorial's DSPy)", false, false, "3.3"},
        {"compact", NULL, "print compact JSON on one line", false, false, NULL},
        {0},
    };
    dspy_args a;
    int rc = dspy_args_parse(&a, "prompt", "--signature SIG [--input NAME=VALUE ...] [options]",
                             "Print the messages DSPy's ChatAdapter or JSONAdapter would send for a "
                             "signature and inputs, as {\"messages\": [...]}.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;

    dspy_signature *sig = NULL, *used = NULL;
    dspy_json *inputs = NULL, *demos = NULL, *msgs = NULL, *wrap = NULL;
    char *text = NULL;
    dspy_status st;
    dspy_profile profile;
    int ret = 1;
    const char *module = dspy_args_get(&a, "module"), *adapter = dspy_args_get(&a, "adapter");
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
    if ((st = dspy_signature_parse(dspy_args_get(&a, "signature"), dspy_args_get(&a, "instructions"), &sig)))
        goto fail;
    if (strcmp(module, "cot") == 0) {
        if ((st = dspy_signature_chain_of_thought(sig, profile, &used))) goto fail;
    } else {
        used = sig;
        sig = NULL;
    }
    if ((st = dspy_args_inputs(&a, NULL, &inputs))) goto fail;
    if (dspy_args_get(&a, "demos")) {
        if ((st = dspy_json_load(dspy_args_get(&a, "demos"), &demos))) goto fail;
        if (dspy_json_typeof(demos) != DSPY_JSON_ARRAY) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: demos must be a JSON array of objects",
                           dspy_args_get(&a, "demos"));
            goto fail;
        }
    }
    if ((st = dspy_adapter_format(kind, profile, used, demos, inputs, &msgs))) goto fail;
    if (!(wrap = dspy_json_object()) || dspy_json_set(wrap, "messages", dspy_json_incref(msgs))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto fail;
    }
    text = dspy_json_dumps(wrap, DSPY_JSON_UTF8 | (dspy_args_flag(&a, "compact") ? DSPY_JSON_COMPACT
                                                                                  : DSPY_JSON_INDENT(2)));
    if (!text) goto fail;
    fputs(text, stdout);
    fputc('\n', stdout);
    ret = 0;
fail:
    if (ret) ret = dspy_cli_error("prompt");
    free(text);
    dspy_json_decref(wrap);
    dspy_json_decref(msgs);
    dspy_json_decref(demos);
    dspy_json_decref(inputs);
    dspy_signature_free(used);
    dspy_signature_free(sig);
    return ret;
}
