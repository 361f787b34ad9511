/* chat_template_internal.h — what the chat template loader shares with the GGUF vocabulary
 * export (gguf_vocab.c). Private to src/model. */
#ifndef DSPY_CHAT_TEMPLATE_INTERNAL_H
#define DSPY_CHAT_TEMPLATE_INTERNAL_H

#include <jansson.h>

/* The template in tokenizer_config.json (`tcfg`, may be NULL): its "chat_template" when that is
 * a string, or the "template" of the entry named "default" when it is a list of named templates
 * ([{"name": "default", "template": "..."}, {"name": "tool_use", ...}]). Borrowed from tcfg;
 * NULL when there is none. */
json_t *dspy_chat_template_from_config(json_t *tcfg);

#endif
