/* fuzz_chat_template.c — libFuzzer target: chat templates. The first input byte picks a mode:
 * even: the rest is Jinja source for dspy_chat_template_parse (recognition of known templates);
 * odd: the rest is split at NUL bytes into role/content pairs rendered with each built-in
 * template (Llama 3.x, Llama 3.0, ChatML), with assistant spans, which must lie inside the
 * rendered text. */
#include <stdint.h>

#include "dspy/chat_template.h"
#include "dspy/str.h"
#include "fuzz.h"

static void render(const dspy_chat_template *t, const dspy_chat_msg *m, size_t n) {
    dspy_str out = DSPY_STR_INIT;
    dspy_chat_span *spans = NULL;
    size_t ns = 0;
    if (dspy_chat_render(t, m, n, true, "26 Jul 2024", &out, &spans, &ns) == DSPY_OK)
        for (size_t i = 0; i < ns; i++) FUZZ_ASSERT(spans[i].start <= spans[i].end && spans[i].end <= out.len);
    free(spans);
    dspy_str_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    char *text = fuzz_cstr(data + 1, size - 1);
    if ((data[0] & 1) == 0) {
        dspy_chat_template *t = NULL;
        if (dspy_chat_template_parse(text, size > 1 && data[1] == 'b' ? "<s>" : NULL, &t) == DSPY_OK) {
            dspy_chat_msg m[2] = {{"system", "be brief"}, {"user", "hi"}};
            render(t, m, 2);
        }
        dspy_chat_template_free(t);
        free(text);
        return 0;
    }
    static const char *const roles[] = {"system", "user", "assistant", "developer", "tool", ""};
    dspy_chat_msg m[16];
    size_t n = 0;
    const char *p = text, *end = text + (size - 1);
    while (p <= end && n < 16) {
        m[n].role = roles[(unsigned char)*p % 6];
        m[n].content = *p ? p + 1 : p;
        n++;
        p += strlen(p) + 1;
    }
    static const dspy_chat_kind kinds[] = {DSPY_CHAT_LLAMA3, DSPY_CHAT_LLAMA3_0, DSPY_CHAT_CHATML};
    for (size_t k = 0; k < 3; k++) {
        dspy_chat_template *t = NULL;
        if (dspy_chat_template_builtin(kinds[k], &t) != DSPY_OK) continue;
        render(t, m, n);
        dspy_chat_template_free(t);
    }
    free(text);
    return 0;
}
