/* dspy/callback.h — DSPy's callback hooks (dspy/utils/callback.py BaseCallback) for modules,
 * adapters and LMs.
 *
 * A dspy_callbacks value is a table of optional function pointers sharing one `user` pointer.
 * Active callbacks for a call are the settings' callbacks (dspy_settings_set_callbacks, or a
 * context's) followed by the instance's own (dspy_module_add_callbacks for modules,
 * dspy_lm_add_callbacks for LMs); with none, nothing runs. Each wrapped call gets a fresh
 * call_id (uuid4 hex, 32 digits); every on_*_start runs before the call and every on_*_end
 * after it, in list order, with the status and message on failure (spec §3.4).
 *
 * Order for ChainOfThought("question -> answer", n=3) (CC-20, 14 calls): module_start (CoT),
 * module_start (Predict), adapter_format_start, adapter_format_end, lm_start, lm_end,
 * (adapter_parse_start, adapter_parse_end) x3, module_end (Predict), module_end (CoT).
 * A JSONAdapter fallback adds format/lm/parse calls for each further attempt.
 *
 * Callbacks run on the calling thread and must be thread-safe when modules are called from
 * several threads. They cannot fail the call (DSPy logs and swallows callback exceptions); a
 * callback that calls dspy_fail does not change the error the caller sees. All arguments are
 * borrowed for the duration of the callback.
 */
#ifndef DSPY_CALLBACK_H
#define DSPY_CALLBACK_H

#include "dspy/adapter.h"
#include "dspy/json.h"
#include "dspy/lm.h"
#include "dspy/signature.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_module dspy_module;
typedef struct dspy_prediction dspy_prediction;

typedef struct dspy_callbacks {
    void *user;
    /* Module.__call__: `inputs` is the JSON object of keyword inputs. */
    void (*on_module_start)(void *user, const char *call_id, dspy_module *module, const dspy_json *inputs);
    /* `outputs` is the prediction (NULL on failure); `error` is the message on failure. */
    void (*on_module_end)(void *user, const char *call_id, const dspy_prediction *outputs,
                          dspy_status status, const char *error);
    /* Adapter.format(signature, demos, inputs); on_adapter_format_end gets the messages. */
    void (*on_adapter_format_start)(void *user, const char *call_id, dspy_adapter_kind adapter,
                                    const dspy_signature *signature, const dspy_json *demos,
                                    const dspy_json *inputs);
    void (*on_adapter_format_end)(void *user, const char *call_id, const dspy_json *messages,
                                  dspy_status status, const char *error);
    /* Adapter.parse(signature, completion); on_adapter_parse_end gets the parsed fields. */
    void (*on_adapter_parse_start)(void *user, const char *call_id, dspy_adapter_kind adapter,
                                   const dspy_signature *signature, const char *completion);
    void (*on_adapter_parse_end)(void *user, const char *call_id, const dspy_json *fields,
                                 dspy_status status, const char *error);
    /* BaseLM.__call__, as dspy_lm_callbacks (dspy/lm.h). */
    void (*on_lm_start)(void *user, const char *call_id, dspy_lm *lm, const dspy_json *messages,
                        const dspy_json *kwargs);
    void (*on_lm_end)(void *user, const char *call_id, const dspy_lm_response *response,
                      dspy_status status, const char *error);
} dspy_callbacks;

#ifdef __cplusplus
}
#endif
#endif
