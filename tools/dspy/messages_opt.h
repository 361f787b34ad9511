/* messages_opt.h — the --messages option of `dspy generate` and `dspy tokenize`: a JSON list of
 * chat messages rendered with a model's chat template. */
#ifndef DSPY_TOOLS_MESSAGES_OPT_H
#define DSPY_TOOLS_MESSAGES_OPT_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

/* Renders `json` (a non-empty list of {"role": ..., "content": ...}) with the chat template of
 * `tpl_path` (a model directory or a tokenizer's) into *text, with the generation prompt when
 * gen_prompt; `date` is the Llama 3 "Today Date" (NULL: today). With `tok`, *eot_id gets the
 * template's end-of-turn token id (-1 when the tokenizer lacks it). DSPY_ERR_ARG naming the bad
 * message; the template loader's errors. */
dspy_status cli_render_messages(const char *tpl_path, const char *json, bool gen_prompt, const char *date,
                                dspy_str *text, const dspy_tokenizer *tok, int32_t *eot_id);

#endif
