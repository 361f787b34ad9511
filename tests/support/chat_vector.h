/* chat_vector.h — rendering one of the shared chat vectors (models/llama3-tokenizer/
 * chat_vectors.jsonl: {"messages": [{"role", "content"}...], "add_generation_prompt",
 * "date_string", "rendered"}) with a chat template, as the tests that compare templates do. */
#ifndef DSPY_TEST_CHAT_VECTOR_H
#define DSPY_TEST_CHAT_VECTOR_H

#include <jansson.h>

#include "dspy/chat_template.h"
#include "dspy/str.h"

/* The vector's messages rendered by t into out (appended). DSPY_ERR_ARG for more than 32
 * messages. */
dspy_status test_chat_render_vector(const dspy_chat_template *t, json_t *vector, dspy_str *out);

#endif
