/* dspy/adapter.h — DSPy's ChatAdapter and JSONAdapter: prompts from signatures, fields from LM
 * answers, and the ChatAdapter -> JSONAdapter fallback.
 *
 * Formatting reproduces DSPy's bytes (spec §4, §5) in two profiles (dspy/type.h): V33 (DSPy
 * 3.3.1, default) and V26 (the tutorial's 2.6.0rc8 adapters). Messages are a dspy_json array
 * of {"role": "system"|"user"|"assistant", "content": "<text>"} objects, in order, exactly the
 * "messages" of an OpenAI chat-completions request; the LM client sends that array as is.
 *
 * Values: `inputs`, each demo and `outputs` are JSON objects keyed by field name (keys that
 * are not fields are ignored); `demos` is a JSON array of such objects or NULL. A JSON null
 * is Python's None. Field values are rendered as DSPy does: a str field given a list becomes
 * a numbered «list», other lists/dicts are json.dumps'ed, scalars are str()'ed.
 *
 * Parsing returns a JSON object of output fields (in the order the answer gave them, then
 * defaults). A failure to parse is DSPY_ERR_PARSE whose message is DSPy's AdapterParseError
 * text (V33) or the V26 ValueError text.
 *
 * Ownership: every **out gets a new reference / malloc'd string owned by the caller.
 * Thread safety: all functions are reentrant; the signature and values are only read.
 */
#ifndef DSPY_ADAPTER_H
#define DSPY_ADAPTER_H

#include "dspy/export.h"

#include <stdbool.h>

#include "dspy/json.h"
#include "dspy/signature.h"
#include "dspy/status.h"
#include "dspy/type.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dspy_adapter_kind {
    DSPY_ADAPTER_CHAT,
    DSPY_ADAPTER_JSON
} dspy_adapter_kind;

/* "ChatAdapter" / "JSONAdapter". */
DSPY_API const char *dspy_adapter_name(dspy_adapter_kind a);

/* adapter.format(signature, demos, inputs): [system, demo user/assistant pairs (incomplete
 * demos first, then complete ones), user]. V26 errors (DSPY_ERR_ARG) when an input field is
 * missing from `inputs`, as DSPy 2.6 did; V33 skips missing inputs. */
DSPY_API dspy_status dspy_adapter_format(dspy_adapter_kind a, dspy_profile p, const dspy_signature *sig,
                                         const dspy_json *demos, const dspy_json *inputs,
                                         dspy_json **messages);
/* The system message alone (malloc'd). */
DSPY_API dspy_status dspy_adapter_format_system(dspy_adapter_kind a, dspy_profile p,
                                                const dspy_signature *sig, char **out);
/* The final user message alone, with the "Respond with ..." request (malloc'd). */
DSPY_API dspy_status dspy_adapter_format_user(dspy_adapter_kind a, dspy_profile p,
                                              const dspy_signature *sig, const dspy_json *inputs,
                                              char **out);
/* format_assistant_message_content(signature, outputs): missing outputs render as "None"
 * (V33) or "Not supplied for this particular example." (V26). Chat: ends with
 * "[[ ## completed ## ]]\n"; JSON: an indented JSON object. */
DSPY_API dspy_status dspy_adapter_format_assistant(dspy_adapter_kind a, dspy_profile p,
                                                   const dspy_signature *sig, const dspy_json *outputs,
                                                   char **out);
/* ChatAdapter.format_finetune_data: {"messages": format(...) + [assistant]}. JSONAdapter
 * gives DSPY_ERR_ARG (DSPy raises NotImplementedError); V26 requires every output. */
DSPY_API dspy_status dspy_adapter_format_finetune_data(dspy_adapter_kind a, dspy_profile p,
                                                       const dspy_signature *sig, const dspy_json *demos,
                                                       const dspy_json *inputs, const dspy_json *outputs,
                                                       dspy_json **out);

/* adapter.parse(signature, completion): output fields as a JSON object. DSPY_ERR_PARSE on
 * failure (message as described above). ChatAdapter: `[[ ## name ## ]]` headers per line
 * (leading whitespace allowed, first occurrence wins, same-line content kept in V33, dropped in
 * V26); JSONAdapter: lenient JSON (json_repair), first {...} block as a fallback. */
DSPY_API dspy_status dspy_adapter_parse(dspy_adapter_kind a, dspy_profile p, const dspy_signature *sig,
                                        const char *completion, dspy_json **fields);

/* format_field_value(field, value) for a field of type `annotation` (appended to out). */
DSPY_API dspy_status dspy_format_field_value(const dspy_type *annotation, const dspy_json *value,
                                             dspy_str *out);

/* JSONAdapter's structured-output request: {"type": "json_schema", "json_schema": {"schema":
 * <DSPyProgramOutputs schema>, "name": "DSPyProgramOutputs", "strict": true}}, as litellm
 * sends it. DSPY_ERR_ARG when an output is an open-ended dict (DSPy cannot express it). */
DSPY_API dspy_status dspy_json_adapter_response_format(const dspy_signature *sig, dspy_json **out);
/* True when some output field is a dict[...] (JSONAdapter then asks for {"type":"json_object"}). */
DSPY_API bool dspy_json_adapter_has_open_mapping(const dspy_signature *sig);

/* The "dspy_layout" request extension of dspy.c's own server (server/openai.h) for a ChatAdapter
 * answer to `sig`: [{"name": f}, {"name": g, "enum": [str(v) for v in Literal values]}, ...],
 * one entry per output field, so that a local model can only answer in the layout the
 * ChatAdapter parses with a value of each Literal. *out is NULL (and DSPY_OK) when the layout
 * cannot express the outputs: no Literal output, or an output that is neither str nor a
 * Literal (its formatted value could need text the layout's free text forbids). */
DSPY_API dspy_status dspy_chat_adapter_layout(const dspy_signature *sig, dspy_json **out);

/* ---- calling an LM with fallback (spec §5.1, §5.4, CC-19) ----------------------------------- */

/* One LM call. `messages` is the array above; `lm_kwargs` a JSON object of request options
 * (the caller's lm_kwargs plus, for JSONAdapter, "response_format"). On success *outputs is a
 * JSON array with one entry per choice: a string, null (no content), or an object with a
 * "text" string/null and optionally "logprobs". Any failure status is an LM error (transport,
 * HTTP, quota ...): it is returned to the caller unchanged and never triggers a fallback. */
typedef dspy_status (*dspy_lm_call_fn)(const dspy_json *messages, const dspy_json *lm_kwargs,
                                       void *user, dspy_json **outputs);

/* Optional observers of each Adapter.format and Adapter.parse that dspy_adapter_call runs (the
 * module layer turns them into on_adapter_* callbacks). A start hook returns a token that is
 * handed to the matching end hook; end hooks get the result (NULL on failure) and the status.
 * Hooks must not change the thread's error message (save and restore it around dspy_fail). */
typedef struct dspy_adapter_hooks {
    void *user;
    void *(*format_start)(void *user, dspy_adapter_kind a, const dspy_signature *sig,
                          const dspy_json *demos, const dspy_json *inputs);
    void (*format_end)(void *user, void *token, const dspy_json *messages, dspy_status st);
    void *(*parse_start)(void *user, dspy_adapter_kind a, const dspy_signature *sig,
                         const char *completion);
    void (*parse_end)(void *user, void *token, const dspy_json *fields, dspy_status st);
} dspy_adapter_hooks;

typedef struct dspy_adapter_call_params {
    dspy_adapter_kind adapter;      /* first adapter (default CHAT) */
    dspy_profile profile;           /* default V33 */
    bool use_json_adapter_fallback; /* ChatAdapter falls back to JSONAdapter (default true) */
    bool supports_response_format;  /* LM accepts "response_format" (default true) */
    bool supports_response_schema;  /* LM accepts json_schema structured outputs (default
                                       false: litellm does not know local models) */
    const dspy_adapter_hooks *hooks; /* borrowed; NULL = none (default) */
    const dspy_json *chat_kwargs;   /* extra LM kwargs merged into ChatAdapter attempts only (the
                                       JSONAdapter fallback does not get them); borrowed; NULL =
                                       none (default). Predict puts dspy_layout here for local
                                       models (dspy_settings_set_local_structured) */
} dspy_adapter_call_params;

DSPY_API dspy_adapter_call_params dspy_adapter_call_params_default(void);

/* What a call did (optional out-parameter). Release with dspy_adapter_call_info_clear. */
typedef struct dspy_adapter_call_info {
    int lm_calls;                  /* LM calls made */
    dspy_adapter_kind adapter;     /* adapter of the last attempt */
    char *lm_response;             /* on DSPY_ERR_PARSE: the text the last parse failed on */
} dspy_adapter_call_info;

DSPY_API void dspy_adapter_call_info_clear(dspy_adapter_call_info *info);

/* Adapter.__call__: format, call the LM, parse every choice. With the ChatAdapter, a failure
 * that is not an LM error (a parse error, an empty answer) retries with the JSONAdapter unless
 * use_json_adapter_fallback is false (V26: parse errors only). The JSONAdapter asks for
 * structured output when the LM supports response schemas and no output is a dict, and on a
 * non-LM failure retries once with {"type": "json_object"}; without schema support it uses
 * json_object directly; without response_format support it sends none. So a failing answer
 * costs at most 3 LM calls. *completions is a JSON array, one object of output fields per
 * choice (plus "logprobs" when the LM gave them). */
DSPY_API dspy_status dspy_adapter_call(const dspy_adapter_call_params *params, const dspy_signature *sig,
                                       const dspy_json *demos, const dspy_json *inputs,
                                       const dspy_json *lm_kwargs, dspy_lm_call_fn lm, void *user,
                                       dspy_json **completions, dspy_adapter_call_info *info);

#ifdef __cplusplus
}
#endif

#endif
