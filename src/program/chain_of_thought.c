/* chain_of_thought.c — dspy.ChainOfThought: one Predict named "predict" over the signature
 * with `reasoning: str` prepended to the outputs; forward delegates to it.
 *
 * Follows DSPy 3.3.1 dspy/predict/chain_of_thought.py and spec §2 (reasoning prefix
 * "Reasoning:" in V33, "Reasoning: Let's think step by step in order to" in V26, instructions
 * unchanged). Not here: custom rationale fields, reasoning models' native reasoning.
 */
#include "program/module_priv.h"

static dspy_status cot_forward(dspy_module *self, const dspy_json *inputs, const dspy_call_options *opt,
                               dspy_prediction **out) {
    *out = NULL;
    dspy_module *predict = dspy_module_child(self, "predict");
    if (!predict) return dspy_fail(DSPY_ERR_STATE, "ChainOfThought has no child named 'predict'");
    return dspy_module_call(predict, inputs, opt, out);
}

static const dspy_module_vtable chain_of_thought_vtable = {
    .type_name = "ChainOfThought",
    .forward = cot_forward,
    .copy_impl = NULL,
    .free_impl = NULL,
};

dspy_status dspy_chain_of_thought_new(const dspy_signature *sig, const dspy_predict_params *p, dspy_module **out) {
    *out = NULL;
    if (!sig) return dspy_fail(DSPY_ERR_ARG, "ChainOfThought: no signature given");
    dspy_predict_params prm = p ? *p : dspy_predict_params_default();
    dspy_signature *cot;
    dspy_status st = dspy_signature_chain_of_thought(sig, prm.profile, &cot);
    if (st) return st;
    dspy_module *predict = NULL, *m = NULL;
    st = dspy_predict_new(cot, &prm, &predict);
    dspy_signature_free(cot);
    if (!st) st = dspy_module_new(&chain_of_thought_vtable, NULL, &m);
    if (!st) st = dspy_module_add_child(m, "predict", predict);
    dspy_module_free(predict);
    if (st) {
        dspy_module_free(m);
        return st;
    }
    *out = m;
    return DSPY_OK;
}

dspy_status dspy_chain_of_thought_new_text(const char *signature, const char *instructions,
                                           const dspy_predict_params *p, dspy_module **out) {
    *out = NULL;
    dspy_signature *sig;
    dspy_status st = dspy_signature_parse(signature, instructions, &sig);
    if (st) return st;
    st = dspy_chain_of_thought_new(sig, p, out);
    dspy_signature_free(sig);
    return st;
}
