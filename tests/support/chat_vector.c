/* chat_vector.c — see chat_vector.h. */
#include "chat_vector.h"

dspy_status test_chat_render_vector(const dspy_chat_template *t, json_t *vector, dspy_str *out) {
    json_t *msgs = json_object_get(vector, "messages");
    dspy_chat_msg m[32];
    const size_t k = json_array_size(msgs);
    if (k > sizeof m / sizeof *m) return dspy_fail(DSPY_ERR_ARG, "chat vector: %zu messages, at most 32", k);
    for (size_t i = 0; i < k; i++) {
        m[i].role = json_string_value(json_object_get(json_array_get(msgs, i), "role"));
        m[i].content = json_string_value(json_object_get(json_array_get(msgs, i), "content"));
    }
    return dspy_chat_render(t, m, k, json_is_true(json_object_get(vector, "add_generation_prompt")),
                            json_string_value(json_object_get(vector, "date_string")), out, NULL, NULL);
}
