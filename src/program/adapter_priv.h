/* adapter_priv.h — pieces shared by the Chat and JSON adapters (private to src/program). */
#ifndef DSPY_PROGRAM_ADAPTER_PRIV_H
#define DSPY_PROGRAM_ADAPTER_PRIV_H

#include "dspy/adapter.h"

#define ADP_INTRO "All interactions will be structured in the following way, with the appropriate values filled in."
#define ADP_INCOMPLETE_PREFIX "This is an example of the task, though some input or output fields are not supplied."
#define ADP_MISSING_V26 "Not supplied for this particular example."
#define ADP_MISSING_INCOMPLETE "Not supplied for this particular example. "
#define ADP_MISSING_COMPLETE "Not supplied for this conversation history message. "

/* Python str.strip() of a builder's contents, in place. */
void dspy_adp_strip(dspy_str *s);
/* "Your input fields are:\n...\nYour output fields are:\n..." (V33 get_field_description_string). */
void dspy_adp_field_description_v33(const dspy_signature *sig, dspy_str *out);
/* V26 enumerate_fields for fields [from, to). */
void dspy_adp_enumerate_v26(const dspy_signature *sig, size_t from, size_t to, dspy_str *out);
/* "{name}" plus the 8-space "# note: ..." for outputs (translate_field_type / V26 field_metadata). */
dspy_status dspy_adp_field_placeholder(const dspy_signature *sig, size_t i, dspy_profile p, dspy_str *out);
/* "\n\n".join("[[ ## f ## ]]\n{f}<note>" for fields [from, to)).strip() */
dspy_status dspy_adp_block(const dspy_signature *sig, size_t from, size_t to, dspy_profile p, dspy_str *out);
/* "In adhering to this structure, your objective is: " + the instruction lines. */
dspy_status dspy_adp_task_description(const dspy_signature *sig, dspy_str *out);
/* " (must be formatted as a valid Python <type>)" or "" for str. */
void dspy_adp_type_info(const dspy_signature *sig, size_t i, dspy_profile p, dspy_str *out);

/* User message content. V33: prefix + present inputs + (req) joined by "\n\n", stripped.
 * V26 (format_turn): prefix if incomplete + every input (missing ones as "Not supplied ...")
 * + req, joined by "\n\n", not stripped; when !incomplete a missing input is DSPY_ERR_ARG. */
dspy_status dspy_adp_user_content(const dspy_signature *sig, dspy_profile p, const dspy_json *values,
                             const char *prefix, const char *req, bool v26_incomplete,
                             dspy_str *out);
/* Demo partition: incomplete demos (array), then complete demos (array). */
dspy_status dspy_adp_split_demos(const dspy_signature *sig, const dspy_json *demos,
                            dspy_json **incomplete, dspy_json **complete);
/* {"role": role, "content": text} appended to `messages`. */
dspy_status dspy_adp_push(dspy_json *messages, const char *role, const char *text, size_t len);

/* Raises DSPy's AdapterParseError: DSPY_ERR_PARSE with its str(). `parsed` NULL means
 * parsed_result=None. */
dspy_status dspy_adp_parse_error(const char *adapter, const dspy_signature *sig, const char *lm_response,
                            const char *message, const dspy_json *parsed);
/* V26 "Expected dict_keys([...]) but got dict_keys([...])" ValueError (DSPY_ERR_PARSE). */
dspy_status dspy_adp_v26_keys_error(const dspy_signature *sig, const dspy_json *fields);
/* V33 apply_output_field_defaults: missing outputs with a default get it, else None when the
 * type allows None. */
dspy_status dspy_adp_apply_defaults(const dspy_signature *sig, dspy_json *fields);
/* True when every output field is a key of `fields`. */
bool dspy_adp_has_all_outputs(const dspy_signature *sig, const dspy_json *fields);

/* JSON adapter internals (adapter_json.c). */
dspy_status dspy_adp_json_system(const dspy_signature *sig, dspy_profile p, dspy_str *out);
dspy_status dspy_adp_json_req(const dspy_signature *sig, dspy_profile p, dspy_str *out);
dspy_status dspy_adp_json_assistant(const dspy_signature *sig, const dspy_json *outputs,
                               const char *missing, dspy_str *out);
dspy_status dspy_adp_json_parse(const dspy_signature *sig, dspy_profile p, const char *completion,
                           dspy_json **fields);

/* Chat adapter internals (adapter_chat.c). */
dspy_status dspy_adp_chat_system(const dspy_signature *sig, dspy_profile p, dspy_str *out);
dspy_status dspy_adp_chat_req(const dspy_signature *sig, dspy_profile p, dspy_str *out);
dspy_status dspy_adp_chat_assistant(const dspy_signature *sig, dspy_profile p, const dspy_json *outputs,
                               const char *missing, dspy_str *out);
dspy_status dspy_adp_chat_parse(const dspy_signature *sig, dspy_profile p, const char *completion,
                           dspy_json **fields);

#endif
