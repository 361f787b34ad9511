/* server/openai.h — the OpenAI HTTP API as data: routes, request parsing and validation,
 * answer and error bodies (private to src/server/).
 *
 * What it does: turns a request body of POST /v1/chat/completions or /v1/completions into an
 * oai_request (every field checked, each failure an OpenAI-shaped error with its HTTP status),
 * and renders the JSON bodies the server sends: chat.completion, chat.completion.chunk,
 * text_completion (whole and streamed), the model list, and
 * {"error":{"message","type","param","code"}}. Pure functions: no sockets, no model.
 * What it does not: tokenization, scheduling, tools/function calling, logprobs, penalties,
 * logit_bias, echo, suffix (non-default values of those are refused with 400, never ignored
 * silently).
 * Structured outputs: "response_format" {"type": "text"}, {"type": "json_object"} or
 * {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}} is
 * parsed here and enforced by the server (dspy/structured.h: the schema subset it supports,
 * anything else is a 400). Two extensions of this server:
 *   "dspy_layout": [{"name": "reasoning", "max_tokens": 256},
 *                   {"name": "label", "enum": ["card_arrival", "age_limit", ...]}]
 *       the answer is DSPy's ChatAdapter layout: "[[ ## reasoning ## ]]\n" free text,
 *       "\n\n[[ ## label ## ]]\n" exactly one of the enum strings, ..., then
 *       "\n\n[[ ## completed ## ]]". A field without "enum" is free text (no '[' and no blank
 *       line inside) of at most "max_tokens" tokens (default: the server's, 256); "enum" is a
 *       non-empty array of non-empty strings written as the adapter writes them. Not together
 *       with a response_format other than text.
 *   "dspy_max_string_tokens": N  (json_schema) each JSON string value takes at most N tokens
 *       (0 = unbounded; default: the server's, 256), so the document always closes.
 * Follows the OpenAI API reference (Chat Completions, Completions, Models, error objects) and
 * the shapes openai-python/openai-node parse.
 */
#ifndef DSPY_SERVER_OPENAI_H
#define DSPY_SERVER_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/str.h"

/* ---- errors ------------------------------------------------------------------------------ */

typedef struct oai_error {
    int status;       /* HTTP status: 400, 401, 404, 405, 413, 500, 503, ... */
    const char *type; /* "invalid_request_error", "authentication_error", "server_error", ... */
    const char *code; /* "model_not_found", "context_length_exceeded", ... or NULL (JSON null) */
    dspy_str param;   /* the offending field ("max_tokens", "messages.[1].role") or empty (null) */
    dspy_str message;
} oai_error;

#define OAI_ERROR_INIT {0, NULL, NULL, DSPY_STR_INIT, DSPY_STR_INIT}

/* Fills `e` (replacing what it held). param and code may be NULL. */
void dspy_oai_error_set(oai_error *e, int status, const char *type, const char *param, const char *code,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void dspy_oai_error_free(oai_error *e);
/* {"error":{"message":...,"type":...,"param":...,"code":...}} (malloc'd; NULL on OOM). */
char *dspy_oai_error_json(const oai_error *e);
/* The error type OpenAI uses for a status: 400/404/405/408/411/413/415/431 invalid_request_error,
 * 401 authentication_error, 429 rate_limit_error (unused), 5xx server_error. */
const char *dspy_oai_error_type_for(int status);

/* ---- routes ------------------------------------------------------------------------------ */

typedef enum oai_route {
    OAI_ROUTE_NONE = 0,
    OAI_ROUTE_HEALTH,       /* GET /health */
    OAI_ROUTE_MODELS,       /* GET /v1/models */
    OAI_ROUTE_MODEL,        /* GET /v1/models/{id} */
    OAI_ROUTE_CHAT,         /* POST /v1/chat/completions */
    OAI_ROUTE_COMPLETIONS,  /* POST /v1/completions */
    OAI_ROUTE_METRICS       /* GET /metrics (Prometheus text) */
} oai_route;

/* Maps method + path to a route. Unknown path: OAI_ROUTE_NONE with a 404 error ("Invalid URL
 * (POST /v1/x)"); known path, wrong method: OAI_ROUTE_NONE with a 405 error, and *allow (when
 * non-NULL) set to the allowed method. For OAI_ROUTE_MODEL, *model_id gets the percent-decoded
 * id (malloc'd, caller frees). */
oai_route dspy_oai_route_match(dspy_strv method, dspy_strv path, char **model_id, const char **allow,
                          oai_error *err);

/* Decodes %XX escapes ("local%3A%2Fa" -> "local:/a"); malloc'd; NULL on a bad escape. */
char *dspy_oai_percent_decode(dspy_strv v);

/* ---- requests ---------------------------------------------------------------------------- */

typedef enum oai_kind { OAI_CHAT = 1, OAI_COMPLETION = 2 } oai_kind;

#define OAI_MAX_N 128
#define OAI_MAX_STOP 16

/* One chat message: role normalised to "system", "user" or "assistant" ("developer" becomes
 * "system"); content is the string, or the text parts joined, "" for a null content. */
typedef struct oai_message {
    char *role;
    char *content;
} oai_message;

/* What the answer must look like. */
typedef enum oai_format {
    OAI_FORMAT_TEXT = 0,
    OAI_FORMAT_JSON_OBJECT,
    OAI_FORMAT_JSON_SCHEMA,
    OAI_FORMAT_LAYOUT
} oai_format;

/* One field of a dspy_layout. */
typedef struct oai_layout_field {
    char *name;
    char **values;      /* NULL for free text */
    size_t n_values;
    int32_t max_tokens; /* -1 when absent */
} oai_layout_field;

typedef struct oai_request {
    oai_kind kind;
    char *model;                /* NULL when the body has none */
    /* chat */
    oai_message *messages;      /* strings owned by the request */
    size_t n_messages;
    /* completion */
    char *prompt;               /* text prompt, or NULL when given as token ids */
    int32_t *prompt_ids;        /* token-id prompt, or NULL */
    size_t n_prompt_ids;
    /* sampling */
    int64_t max_tokens;         /* max_completion_tokens, else max_tokens; -1 when absent */
    double temperature;         /* 1.0 when absent or null (OpenAI's default) */
    double top_p;               /* 1.0 when absent or null */
    int32_t top_k;              /* vLLM/SGLang extension; 0 = off */
    bool ignore_eos;            /* vLLM/SGLang extension: eos and end-of-turn do not end the answer */
    int32_t n;                  /* 1 when absent */
    char **stop;                /* stop strings (non-empty), n_stop of them */
    size_t n_stop;
    bool has_seed;
    uint64_t seed;
    bool stream;
    bool include_usage;         /* stream_options.include_usage */
    /* structured outputs */
    oai_format format;
    char *schema_text;          /* JSON_SCHEMA: the schema, compact JSON (a cache key too) */
    oai_layout_field *layout;   /* LAYOUT: the fields */
    size_t n_layout;
    int32_t max_string_tokens;  /* dspy_max_string_tokens; -1 when absent */
} oai_request;

/* Parses and validates a body. On failure returns DSPY_ERR_ARG (or DSPY_ERR_NOMEM) with `err`
 * filled (400 for every validation failure, naming the field in param) and *out zeroed.
 * `vocab_size` bounds token-id prompts (ids outside [0, vocab_size) are refused). */
dspy_status dspy_oai_request_parse(oai_kind kind, const char *body, size_t len, int32_t vocab_size,
                              oai_request *out, oai_error *err);
void dspy_oai_request_free(oai_request *r);

/* ---- answers ----------------------------------------------------------------------------- */

typedef struct oai_choice {
    const char *text;          /* UTF-8 */
    size_t len;
    const char *finish_reason; /* "stop", "length", or NULL (JSON null) */
} oai_choice;

typedef struct oai_usage {
    int64_t prompt_tokens, completion_tokens;
} oai_usage;

/* A whole answer: chat.completion (kind OAI_CHAT) or text_completion. malloc'd JSON. */
char *dspy_oai_completion_json(oai_kind kind, const char *id, int64_t created, const char *model,
                          const oai_choice *choices, size_t n, oai_usage usage);

/* One streamed chunk for choice `index`: chat deltas carry {"role":"assistant","content":""}
 * when `first`, {"content":text} for text, {} for the final chunk (finish_reason set);
 * completion chunks carry "text". `usage_null` adds "usage":null (stream_options.include_usage
 * asks for it on every chunk but the last). malloc'd JSON. */
char *dspy_oai_chunk_json(oai_kind kind, const char *id, int64_t created, const char *model, int index,
                     bool first, const char *text, size_t len, const char *finish_reason,
                     bool usage_null);

/* The closing usage chunk: "choices":[] and the usage object. */
char *dspy_oai_usage_chunk_json(oai_kind kind, const char *id, int64_t created, const char *model,
                           oai_usage usage);

/* {"object":"model","id":id,"created":created,"owned_by":"dspy.c"}; with list, the
 * {"object":"list","data":[...]} wrapper. */
char *dspy_oai_model_json(const char *id, int64_t created, bool list);

/* A fresh id "chatcmpl-<24 hex>" / "cmpl-<24 hex>" (random; malloc'd). */
char *dspy_oai_new_id(oai_kind kind);

#endif
