/* dspy/chat_template.h — chat prompts rendered exactly as transformers' apply_chat_template.
 *
 * There is no Jinja engine: a model's template (from tokenizer_config.json, chat_template.jinja
 * or a string) is recognised by distinctive substrings and rendered by C code written from
 * that template. Known templates:
 *   DSPY_CHAT_LLAMA3    Llama 3.1 / 3.2 / 3.3 Instruct: a system block that always carries
 *                       "Cutting Knowledge Date: December 2023" and "Today Date: <date>";
 *                       contents are trimmed (Jinja `| trim`, Python str.strip()).
 *   DSPY_CHAT_LLAMA3_0  Llama 3.0 Instruct: header + trimmed content + <|eot_id|> per
 *                       message, BOS before the first.
 *   DSPY_CHAT_CHATML    ChatML as Qwen2 / Qwen2.5 use it: "<|im_start|>role\ncontent<|im_end|>\n",
 *                       with the template's default system message when the conversation has
 *                       none (Qwen2: "You are a helpful assistant.").
 * Not supported (clear DSPY_ERR_ARG / DSPY_ERR_FORMAT): tool definitions and tool/ipython
 * messages, reasoning templates (Qwen3 <think>), any other template.
 *
 * Thread safety: a template is immutable after loading; render from any number of threads.
 */
#ifndef DSPY_CHAT_TEMPLATE_H
#define DSPY_CHAT_TEMPLATE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "dspy/status.h"
#include "dspy/str.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dspy_chat_kind {
    DSPY_CHAT_LLAMA3 = 1,
    DSPY_CHAT_LLAMA3_0,
    DSPY_CHAT_CHATML
} dspy_chat_kind;

typedef struct dspy_chat_template dspy_chat_template;

/* One message: role ("system", "user", "assistant") and content (UTF-8, NUL-terminated). */
typedef struct dspy_chat_msg {
    const char *role;
    const char *content;
} dspy_chat_msg;

/* Byte range [start, end) of the rendered text holding an assistant message's content and the
 * end-of-turn token that follows it (<|eot_id|> or <|im_end|>): the tokens a trainer puts in
 * the loss. `msg` is the message's index in the array given to dspy_chat_render. */
typedef struct dspy_chat_span {
    size_t start, end;
    size_t msg;
} dspy_chat_span;

/* Loads the chat template of a model: `path` is a model directory (chat_template.jinja is
 * preferred, else tokenizer_config.json's "chat_template"), a tokenizer_config.json, a .jinja
 * file, or a .gguf file (its tokenizer.chat_template, with the bos token's text from its
 * vocabulary). bos_token comes from tokenizer_config.json when there is one (for a .jinja file
 * the kind's default, "<|begin_of_text|>" for Llama). Errors: DSPY_ERR_NOTFOUND, DSPY_ERR_IO,
 * DSPY_ERR_FORMAT (bad JSON, no chat_template, a template not recognised: the message names
 * the file and quotes the template's start). *out NULL on failure. */
DSPY_API dspy_status dspy_chat_template_load(const char *path, dspy_chat_template **out);

/* Recognises a template given as Jinja source. bos_token NULL = the kind's default.
 * Errors: DSPY_ERR_FORMAT (not recognised), DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_chat_template_parse(const char *jinja, const char *bos_token, dspy_chat_template **out);

/* A known template without a file (ChatML gets Qwen2's default system message). */
DSPY_API dspy_status dspy_chat_template_builtin(dspy_chat_kind kind, dspy_chat_template **out);

/* NULL-safe. */
DSPY_API void dspy_chat_template_free(dspy_chat_template *t);

/* The recognised kind (0 for NULL). */
DSPY_API dspy_chat_kind dspy_chat_template_kind(const dspy_chat_template *t);
/* Short name: "llama3", "llama3.0", "chatml" ("?" for NULL). */
DSPY_API const char *dspy_chat_template_name(const dspy_chat_template *t);
/* Text of the token that ends a turn: "<|eot_id|>" or "<|im_end|>" (generation stops on it). */
DSPY_API const char *dspy_chat_template_end_of_turn(const dspy_chat_template *t);

/* Renders `n` messages and appends the text to `out`. add_generation_prompt appends the
 * assistant header. date_string (Llama 3.x only): the "Today Date:" value; NULL gives the
 * template's fallback "26 Jul 2024" (transformers passes today's date, "%d %b %Y", through
 * strftime_now: pass it to match a live transformers run).
 * assistant_spans (may be NULL): *assistant_spans gets a malloc'ed array (caller frees) with
 * one span per assistant message, offsets into out->ptr; *nspans its length.
 * Errors: DSPY_ERR_ARG (no messages, a NULL role/content, a tool/ipython message),
 * DSPY_ERR_NOMEM. On error `out` may hold partial text and *assistant_spans is NULL. */
DSPY_API dspy_status dspy_chat_render(const dspy_chat_template *t, const dspy_chat_msg *msgs, size_t n,
                                      bool add_generation_prompt, const char *date_string, dspy_str *out,
                                      dspy_chat_span **assistant_spans, size_t *nspans);

#ifdef __cplusplus
}
#endif
#endif
