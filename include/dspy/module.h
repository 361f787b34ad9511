/* dspy/module.h — DSPy modules: Predict, ChainOfThought, custom modules, and what every module
 * can do (call, named predictors, LM assignment, deep copy, save/load).
 *
 * Follows DSPy 3.3.1 dspy/primitives/{module,base_module}.py, dspy/predict/{predict,
 * chain_of_thought}.py (spec §2, §3, §12):
 *   - dspy_module_call is Module.__call__: module callbacks around forward. Predict.forward
 *     merges config (constructor kwargs, then the call's), picks the LM (the call's, the
 *     predictor's, then settings.lm), applies the temperature rule (n > 1 with temperature
 *     unset or <= 0.15 sends temperature 0.7), calls the adapter (settings.adapter, ChatAdapter
 *     by default, JSONAdapter fallback) through dspy_lm_call with n choices, builds the
 *     Prediction from all completions and appends (predictor, inputs, prediction) to
 *     settings.trace unless the call says no_trace.
 *   - ChainOfThought(sig) holds one Predict named "predict" whose signature has
 *     `reasoning: str` prepended to the outputs (prefix "Reasoning:" in V33, "Reasoning: Let's
 *     think step by step in order to" in V26); forward delegates to it.
 *   - named_predictors walks the children in insertion order: a Predict child is named by its
 *     name, a sub-module's predictors get "sub.name" (skipped when the sub-module is compiled),
 *     a Predict itself is ("self", p); an object reached twice is listed once.
 *
 * Inputs are a JSON object of keyword arguments; anything else is DSPy's positional-call error.
 * A module's format profile (V33/V26) is fixed at construction and used for every prompt it
 * sends (spec §16.1); it is recorded when the program is saved.
 *
 * Errors: LM errors come back unchanged (their status and message, e.g. DSPY_ERR_REMOTE); an
 * answer that cannot be parsed after the adapter's fallback sequence is DSPY_ERR_PARSE with
 * DSPy's AdapterParseError text; a call without an LM is DSPY_ERR_STATE.
 *
 * Ownership: modules are reference counted (parents and traces hold references);
 * dspy_module_free drops one. Borrowed results live as long as the module and its
 * configuration are unchanged.
 * Thread safety: a module may be called from many threads at once (traces, history and the LM
 * are thread-safe). Configuration changes (set_lm, set_demos, load, add_child, ...) need
 * exclusive access: no call may run on the module meanwhile.
 */
#ifndef DSPY_MODULE_H
#define DSPY_MODULE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "dspy/callback.h"
#include "dspy/example.h"
#include "dspy/json.h"
#include "dspy/lm.h"
#include "dspy/prediction.h"
#include "dspy/signature.h"
#include "dspy/status.h"
#include "dspy/type.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_module dspy_module;

/* The special keyword arguments of a call (Predict pops them from **kwargs in Python). All
 * borrowed; zero/NULL = not given. Modules pass them on to the modules they call. */
typedef struct dspy_call_options {
    const dspy_json *config; /* LM kwargs merged over the predictor's config ({"n": 3, ...}) */
    const dspy_json *demos;  /* replaces the predictor's demos (a JSON array of objects) */
    dspy_lm *lm;             /* used instead of the predictor's LM and settings.lm */
    bool no_trace;           /* _trace=False: do not append to settings.trace */
} dspy_call_options;

DSPY_API dspy_call_options dspy_call_options_default(void);

/* ---- calling ------------------------------------------------------------------------------ */

/* module(**inputs): `inputs` must be a JSON object (else DSPY_ERR_ARG with DSPy's positional
 * arguments message). `opt` may be NULL. *out gets a new prediction reference. */
DSPY_API dspy_status dspy_module_call(dspy_module *m, const dspy_json *inputs, const dspy_call_options *opt,
                                      dspy_prediction **out);
/* module(**example.inputs()) when the example has input keys, else module(**example). */
DSPY_API dspy_status dspy_module_call_example(dspy_module *m, const dspy_example *ex,
                                              const dspy_call_options *opt, dspy_prediction **out);
/* Module(callbacks=[...]): instance callbacks for this module's on_module_* (copied). */
DSPY_API dspy_status dspy_module_add_callbacks(dspy_module *m, const dspy_callbacks *cb);

DSPY_API dspy_module *dspy_module_retain(dspy_module *m); /* NULL-safe; returns m */
DSPY_API void dspy_module_free(dspy_module *m);           /* NULL-safe; drops one reference */

/* "Predict", "ChainOfThought", or a custom module's type_name. */
DSPY_API const char *dspy_module_type_name(const dspy_module *m);
DSPY_API bool dspy_module_is_predict(const dspy_module *m);

/* ---- Predict ------------------------------------------------------------------------------ */

typedef struct dspy_predict_params {
    dspy_profile profile;    /* prompt format profile; default dspy_settings_profile() */
    const dspy_json *config; /* constructor kwargs (LM kwargs such as n, temperature); copied;
                                NULL = {} */
} dspy_predict_params;

DSPY_API dspy_predict_params dspy_predict_params_default(void);

/* Predict(signature, **config). The signature is copied. `p` may be NULL (defaults). */
DSPY_API dspy_status dspy_predict_new(const dspy_signature *sig, const dspy_predict_params *p, dspy_module **out);
/* The same from signature text ("question -> answer") and instructions (NULL = default). */
DSPY_API dspy_status dspy_predict_new_text(const char *signature, const char *instructions,
                                           const dspy_predict_params *p, dspy_module **out);

/* Predict accessors; `p` must be a Predict (DSPY_ERR_ARG / NULL otherwise). */
DSPY_API const dspy_signature *dspy_predict_signature(const dspy_module *p);
DSPY_API dspy_status dspy_predict_set_signature(dspy_module *p, const dspy_signature *sig); /* copied */
DSPY_API dspy_profile dspy_predict_profile(const dspy_module *p);
/* predictor.demos: a JSON array of objects (borrowed). */
DSPY_API const dspy_json *dspy_predict_demos(const dspy_module *p);
/* Replaces the demos with a copy of `demos` (a JSON array of objects; NULL = []). */
DSPY_API dspy_status dspy_predict_set_demos(dspy_module *p, const dspy_json *demos);
/* predictor.config (borrowed object) and update_config(**kwargs) (merged in, copied). */
DSPY_API const dspy_json *dspy_predict_config(const dspy_module *p);
DSPY_API dspy_status dspy_predict_update_config(dspy_module *p, const dspy_json *kwargs);
/* predictor.lm (borrowed; NULL = None). */
DSPY_API dspy_lm *dspy_predict_lm(const dspy_module *p);
/* reset(): lm None, traces [], train [], demos []. */
DSPY_API dspy_status dspy_predict_reset(dspy_module *p);
/* Predict.dump_state(): {"traces", "train", "demos", "signature", "lm"} (new reference). */
DSPY_API dspy_status dspy_predict_dump_state(const dspy_module *p, dspy_json **out);

/* ---- ChainOfThought ----------------------------------------------------------------------- */

/* ChainOfThought(signature, **config): a module with one child "predict", a Predict over
 * dspy_signature_chain_of_thought(sig, profile) with the given config. */
DSPY_API dspy_status dspy_chain_of_thought_new(const dspy_signature *sig, const dspy_predict_params *p,
                                               dspy_module **out);
DSPY_API dspy_status dspy_chain_of_thought_new_text(const char *signature, const char *instructions,
                                                    const dspy_predict_params *p, dspy_module **out);

/* ---- custom modules ----------------------------------------------------------------------- */

/* A module type written in C. `forward` computes the prediction, usually by calling children
 * (dspy_module_child + dspy_module_call, passing `opt` on). `copy_impl` deep-copies the impl
 * for dspy_module_deepcopy (children are copied by the library and must not be copied here);
 * it may be NULL when impl is NULL. `free_impl` may be NULL. */
typedef struct dspy_module_vtable {
    const char *type_name;
    dspy_status (*forward)(dspy_module *self, const dspy_json *inputs, const dspy_call_options *opt,
                           dspy_prediction **out);
    dspy_status (*copy_impl)(const void *impl, void **out);
    void (*free_impl)(void *impl);
} dspy_module_vtable;

/* A module of a custom type; takes ownership of `impl` (freed with vt->free_impl, also when
 * this fails). `vt` must outlive the module. */
DSPY_API dspy_status dspy_module_new(const dspy_module_vtable *vt, void *impl, dspy_module **out);
DSPY_API void *dspy_module_impl(const dspy_module *m);
/* self.<name> = child: adds a child (retained) after the existing ones. DSPY_ERR_ARG for an
 * empty or duplicate name, a child that is `m` itself or contains it. */
DSPY_API dspy_status dspy_module_add_child(dspy_module *m, const char *name, dspy_module *child);
/* The child named `name` (borrowed), or NULL. */
DSPY_API dspy_module *dspy_module_child(const dspy_module *m, const char *name);
DSPY_API size_t dspy_module_n_children(const dspy_module *m);
/* Child i (borrowed) and its name, or NULL past the end. */
DSPY_API dspy_module *dspy_module_child_at(const dspy_module *m, size_t i, const char **name);
/* module._compiled: compiled sub-modules are frozen (skipped by named_predictors). */
DSPY_API void dspy_module_set_compiled(dspy_module *m, bool compiled);
DSPY_API bool dspy_module_compiled(const dspy_module *m);

/* ---- parameters, LM assignment, copies ------------------------------------------------------ */

typedef struct dspy_named_predictor {
    char *name;             /* "predict", "self", "sub.predict" (owned by the list) */
    dspy_module *predictor; /* borrowed from the module */
} dspy_named_predictor;

/* named_predictors(): malloc'd list in *out (NULL when empty), *n entries. */
DSPY_API dspy_status dspy_module_named_predictors(dspy_module *m, dspy_named_predictor **out, size_t *n);
DSPY_API void dspy_named_predictors_free(dspy_named_predictor *list, size_t n);
/* set_lm(lm): every predictor's lm = lm (retained; NULL = None). */
DSPY_API dspy_status dspy_module_set_lm(dspy_module *m, dspy_lm *lm);
/* get_lm(): the predictors' common LM (borrowed; NULL when it is None). DSPY_ERR_STATE with
 * "Multiple LMs are being used in the module. There's no unique LM to return." otherwise. */
DSPY_API dspy_status dspy_module_get_lm(dspy_module *m, dspy_lm **out);
/* deepcopy(): a new module tree (shared sub-modules stay shared within the copy) with copied
 * signatures, demos, config, traces and instance callbacks. LMs are shared with the original
 * (reference counted), not copied. */
DSPY_API dspy_status dspy_module_deepcopy(const dspy_module *m, dspy_module **out);
/* reset_copy(): deepcopy, then reset() on every predictor. */
DSPY_API dspy_status dspy_module_reset_copy(const dspy_module *m, dspy_module **out);

/* ---- state, save and load (spec §12) ------------------------------------------------------ */

/* dump_state(): {name: predictor.dump_state() for each named predictor} (new reference). */
DSPY_API dspy_status dspy_module_dump_state(dspy_module *m, dspy_json **out);
/* load_state(state): every named predictor takes state[name] (traces, train, demos, signature
 * instructions/prefixes/descriptions, lm). Transactional: everything is checked and built
 * first, then applied, so on failure the module is unchanged. A missing name is
 * DSPY_ERR_NOTFOUND; an "extended_signature" (DSPy <= 2.5 files) is DSPY_ERR_FORMAT. LM
 * kwargs api_base, base_url and model_list are dropped (with a warning) unless
 * allow_unsafe_lm_state. */
DSPY_API dspy_status dspy_module_load_state(dspy_module *m, const dspy_json *state, bool allow_unsafe_lm_state);

/* module.save("x.json"): DSPy's JSON layout byte for byte — dump_state() plus
 * "metadata": {"dependency_versions": {"python": "3.12", "dspy": "3.3.1", "cloudpickle":
 * "3.1"}, ...}, two-space indent, raw UTF-8, a final newline — written atomically. dspy.c adds
 * one key inside "metadata", which DSPy ignores when loading:
 *   "dspy_c": {"format_profile": "3.3", "program": "ChainOfThought",
 *              "signature": "text -> label: Literal['a', 'b']", "config": {}}
 * (the format profile of the predictors — the first one's if they differ, with a warning —,
 * the root module's type, and for Predict/ChainOfThought roots the signature text with types
 * and the predictor's config, which DSPy does not save, so dspy_program_load can rebuild the
 * program). A signature that would not read back with the same types (e.g. tuple[int, ...])
 * is left out with a warning. Paths not ending in ".json" are DSPY_ERR_ARG (pickle files are
 * not supported). */
DSPY_API dspy_status dspy_module_save(dspy_module *m, const char *path);
/* module.load(path, allow_unsafe_lm_state): reads a saved JSON file into `m` (load_state,
 * transactional). Differing dependency_versions give a warning, as in DSPy. */
DSPY_API dspy_status dspy_module_load(dspy_module *m, const char *path, bool allow_unsafe_lm_state);

typedef struct dspy_program_load_params {
    const char *program;        /* "Predict"/"predict" or "ChainOfThought"/"cot"; NULL = the
                                   file's metadata.dspy_c.program */
    const char *signature;      /* signature text; NULL = the file's metadata.dspy_c.signature */
    int format_profile;         /* -1 = the file's (V33 when absent), else a dspy_profile */
    bool allow_unsafe_lm_state; /* keep api_base/base_url/model_list of saved LMs */
} dspy_program_load_params;

DSPY_API dspy_program_load_params dspy_program_load_params_default(void);

/* Builds a Predict or ChainOfThought from a saved file alone (with the signature and program
 * type dspy.c records in metadata.dspy_c; `p` supplies them for files saved by Python DSPy) and
 * loads its state. DSPY_ERR_FORMAT when the file lacks what is needed, saying which parameter
 * to give. */
DSPY_API dspy_status dspy_program_load(const char *path, const dspy_program_load_params *p, dspy_module **out);

#ifdef __cplusplus
}
#endif
#endif
