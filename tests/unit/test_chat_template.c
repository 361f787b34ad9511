/* test_chat_template.c — chat prompts against transformers' apply_chat_template output.
 *
 * Llama 3.2: ../shared/models/llama3-tokenizer/chat_vectors.jsonl (rendered text and ids from
 * transformers, date_string "26 Jul 2024"), rendered from chat_template_llama3_2.jinja.
 * Llama 3.0: the template in that folder's tokenizer_config.json; expected strings written from
 * the template text. ChatML: expected strings written by hand from Qwen2-7B-Instruct's template
 * (quoted below with its source) and from the non-tool part of Qwen2.5-7B-Instruct's.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/chat_template.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

#define LLAMA_DIR "models/llama3-tokenizer/"

/* Qwen2-7B-Instruct's tokenizer_config.json "chat_template", as JSON-decoded (real newlines
 * inside the Jinja string literals). Source: the copy of Qwen/Qwen2-7B-Instruct's config at
 * https://huggingface.co/alanzhai219/Qwen2-7B-Instruct-openvino/blob/main/tokenizer_config.json
 * (also reproduced in many public training configs for Qwen/Qwen2-1.5B). */
static const char k_qwen2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/* The start of Qwen2.5-7B-Instruct's template (escaped \n inside literals; a tools branch
 * whose '<|im_start|>system\n' literal is not the default message). Source:
 * https://huggingface.co/mlx-community/Qwen2.5-7B-Instruct-4bit/commit/88ab1db4bafc1c9a507c525f88dbe978d40e822f
 * (a copy of Qwen/Qwen2.5-7B-Instruct's tokenizer_config.json). */
static const char k_qwen25[] =
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\" }}\n"
    "    {{- \"<tool_call>\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n";

static void test_llama32_vectors(void) {
    dspy_chat_template *t;
    CHECK_OK(dspy_chat_template_load(test_shared(LLAMA_DIR "chat_template_llama3_2.jinja"), &t));
    if (!t) return;
    CHECK_STR(dspy_chat_template_name(t), "llama3");
    CHECK_STR(dspy_chat_template_end_of_turn(t), "<|eot_id|>");
    dspy_tokenizer *tok = NULL;
    CHECK_OK(dspy_tokenizer_load(test_shared(LLAMA_DIR "tokenizer.json"), &tok));
    char *data;
    size_t n;
    CHECK_OK(dspy_read_file(test_shared(LLAMA_DIR "chat_vectors.jsonl"), &data, &n));
    int lines = 0;
    for (char *line = data ? strtok(data, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        json_t *jm = json_object_get(j, "messages");
        size_t nm = json_array_size(jm);
        dspy_chat_msg msgs[8];
        for (size_t i = 0; i < nm && i < 8; i++) {
            msgs[i].role = json_string_value(json_object_get(json_array_get(jm, i), "role"));
            msgs[i].content = json_string_value(json_object_get(json_array_get(jm, i), "content"));
        }
        dspy_str out = DSPY_STR_INIT;
        dspy_chat_span *spans;
        size_t ns;
        CHECK_OK(dspy_chat_render(t, msgs, nm, json_is_true(json_object_get(j, "add_generation_prompt")),
                                  json_string_value(json_object_get(j, "date_string")), &out, &spans, &ns));
        CHECK_STR(dspy_str_cstr(&out), json_string_value(json_object_get(j, "rendered")));
        /* Spans: each assistant message's trimmed content followed by <|eot_id|>. */
        size_t want_spans = 0;
        for (size_t i = 0; i < nm; i++) want_spans += strcmp(msgs[i].role, "assistant") == 0;
        CHECK_INT(ns, want_spans);
        for (size_t k = 0; k < ns; k++) {
            dspy_str expect = DSPY_STR_INIT;
            dspy_str_appendv(&expect, dspy_strv_strip(dspy_strv_of(msgs[spans[k].msg].content)));
            dspy_str_append(&expect, "<|eot_id|>");
            CHECK(spans[k].end - spans[k].start == expect.len &&
                  memcmp(out.ptr + spans[k].start, expect.ptr, expect.len) == 0);
            dspy_str_free(&expect);
        }
        /* And the ids of the rendered text. */
        if (tok) {
            int32_t *ids;
            size_t k;
            CHECK_OK(dspy_tokenizer_encode(tok, out.ptr, out.len, false, true, &ids, &k));
            json_t *want = json_object_get(j, "ids");
            bool same = k == json_array_size(want);
            for (size_t i = 0; same && i < k; i++) same = ids[i] == json_integer_value(json_array_get(want, i));
            CHECK(same);
            free(ids);
        }
        free(spans);
        dspy_str_free(&out);
        json_decref(j);
        lines++;
    }
    CHECK_INT(lines, 2);
    free(data);
    dspy_tokenizer_free(tok);
    dspy_chat_template_free(t);
}

static void test_llama32_details(void) {
    dspy_chat_template *t;
    CHECK_OK(dspy_chat_template_builtin(DSPY_CHAT_LLAMA3, &t));
    dspy_chat_msg m[] = {{"user", "  hi\n"}, {"assistant", " yes "}, {"system", "late"}, {"user", "again"}};
    dspy_str out = DSPY_STR_INIT;
    dspy_chat_span *sp;
    size_t ns;
    CHECK_OK(dspy_chat_render(t, m, 4, false, "01 Jan 2025", &out, &sp, &ns));
    CHECK_STR(dspy_str_cstr(&out),
              "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
              "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\n<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nyes<|eot_id|>"
              "<|start_header_id|>system<|end_header_id|>\n\nlate<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|>");
    CHECK_INT(ns, 1);
    if (ns == 1) {
        CHECK_INT(sp[0].msg, 1);
        CHECK(sp[0].end - sp[0].start == 13 && memcmp(out.ptr + sp[0].start, "yes<|eot_id|>", 13) == 0);
    }
    free(sp);

    /* Spans are offsets into the whole buffer, which render appends to. */
    dspy_str_clear(&out);
    dspy_str_append(&out, "PREFIX");
    dspy_chat_msg m2[] = {{"system", "s"}, {"user", "u"}, {"assistant", "a"}};
    CHECK_OK(dspy_chat_render(t, m2, 3, true, NULL, &out, &sp, &ns));
    CHECK(ns == 1 && memcmp(out.ptr + sp[0].start, "a<|eot_id|>", 11) == 0);
    CHECK(strstr(out.ptr, "PREFIX<|begin_of_text|>") == out.ptr);
    CHECK_CONTAINS(out.ptr, "Today Date: 26 Jul 2024\n\ns<|eot_id|>");
    CHECK(dspy_strv_ends_with(dspy_strv_of(out.ptr), "a<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
    free(sp);

    /* Errors. */
    dspy_chat_msg tool[] = {{"user", "x"}, {"tool", "{}"}};
    CHECK_STATUS(dspy_chat_render(t, tool, 2, false, NULL, &out, &sp, &ns), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "'tool'");
    CHECK(sp == NULL);
    CHECK_STATUS(dspy_chat_render(t, m, 0, false, NULL, &out, NULL, NULL), DSPY_ERR_ARG);
    dspy_chat_msg nocontent[] = {{"user", NULL}};
    CHECK_STATUS(dspy_chat_render(t, nocontent, 1, false, NULL, &out, NULL, NULL), DSPY_ERR_ARG);
    dspy_str_free(&out);
    dspy_chat_template_free(t);
}

static void test_llama30_from_config(void) {
    dspy_chat_template *t;
    /* The shared tokenizer_config.json carries the Llama 3.0 template. */
    CHECK_OK(dspy_chat_template_load(test_shared(LLAMA_DIR "tokenizer_config.json"), &t));
    if (!t) return;
    CHECK_INT(dspy_chat_template_kind(t), DSPY_CHAT_LLAMA3_0);
    dspy_chat_msg m[] = {{"system", "S "}, {"user", " U"}, {"assistant", "A"}};
    dspy_str out = DSPY_STR_INIT;
    CHECK_OK(dspy_chat_render(t, m, 2, true, NULL, &out, NULL, NULL));
    CHECK_STR(dspy_str_cstr(&out),
              "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    dspy_str_clear(&out);
    dspy_chat_span *sp;
    size_t ns;
    CHECK_OK(dspy_chat_render(t, m + 1, 2, false, NULL, &out, &sp, &ns));
    CHECK_STR(dspy_str_cstr(&out),
              "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>");
    CHECK(ns == 1 && sp[0].msg == 1);
    free(sp);
    dspy_str_free(&out);
    dspy_chat_template_free(t);
}

static void test_chatml_qwen2(void) {
    dspy_chat_template *t;
    CHECK_OK(dspy_chat_template_parse(k_qwen2, NULL, &t));
    if (!t) return;
    CHECK_STR(dspy_chat_template_name(t), "chatml");
    CHECK_STR(dspy_chat_template_end_of_turn(t), "<|im_end|>");
    dspy_chat_msg m[] = {{"user", "Hello"}, {"assistant", " Hi there "}};
    dspy_str out = DSPY_STR_INIT;
    dspy_chat_span *sp;
    size_t ns;
    CHECK_OK(dspy_chat_render(t, m, 2, false, NULL, &out, &sp, &ns));
    CHECK_STR(dspy_str_cstr(&out),
              "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
              "<|im_start|>user\nHello<|im_end|>\n"
              "<|im_start|>assistant\n Hi there <|im_end|>\n");
    CHECK(ns == 1 && sp[0].msg == 1 && sp[0].end - sp[0].start == 20 &&
          memcmp(out.ptr + sp[0].start, " Hi there <|im_end|>", 20) == 0);
    free(sp);
    dspy_str_clear(&out);
    dspy_chat_msg s[] = {{"system", "Be brief."}, {"user", "Hi"}};
    CHECK_OK(dspy_chat_render(t, s, 2, true, "ignored", &out, NULL, NULL));
    CHECK_STR(dspy_str_cstr(&out),
              "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    dspy_str_free(&out);
    dspy_chat_template_free(t);

    /* The same template read from a tokenizer_config.json in a model directory. */
    json_t *cfg = json_pack("{s:s, s:n, s:s}", "chat_template", k_qwen2, "bos_token", "eos_token", "<|im_end|>");
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", test_tmpdir());
    CHECK(json_dump_file(cfg, path, 0) == 0);
    json_decref(cfg);
    CHECK_OK(dspy_chat_template_load(test_tmpdir(), &t));
    if (t) {
        CHECK_INT(dspy_chat_template_kind(t), DSPY_CHAT_CHATML);
        dspy_str o2 = DSPY_STR_INIT;
        CHECK_OK(dspy_chat_render(t, s + 1, 1, true, NULL, &o2, NULL, NULL));
        CHECK_STR(dspy_str_cstr(&o2),
                  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\n");
        dspy_str_free(&o2);
        dspy_chat_template_free(t);
    }
}

static void test_chatml_qwen25(void) {
    dspy_chat_template *t;
    CHECK_OK(dspy_chat_template_parse(k_qwen25, NULL, &t));
    if (!t) return;
    dspy_chat_msg m[] = {{"user", "Hi"}};
    dspy_str out = DSPY_STR_INIT;
    CHECK_OK(dspy_chat_render(t, m, 1, true, NULL, &out, NULL, NULL));
    CHECK_STR(dspy_str_cstr(&out),
              "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    dspy_chat_msg tool[] = {{"user", "Hi"}, {"tool", "42"}};
    CHECK_STATUS(dspy_chat_render(t, tool, 2, true, NULL, &out, NULL, NULL), DSPY_ERR_ARG);
    dspy_str_free(&out);
    dspy_chat_template_free(t);
}

static void test_unknown(void) {
    dspy_chat_template *t = (dspy_chat_template *)1;
    CHECK_STATUS(dspy_chat_template_parse("{% for m in messages %}[INST] {{ m.content }}{% endfor %}", NULL, &t),
                 DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "not recognised");
    CHECK_CONTAINS(dspy_errmsg(), "[INST]");
    CHECK(t == NULL);
    CHECK_STATUS(dspy_chat_template_parse("<|im_start|>{{ m }}<|im_end|><think>", NULL, &t), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "think");
    CHECK_STATUS(dspy_chat_template_load("/nonexistent/model", &t), DSPY_ERR_NOTFOUND);
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", test_tmpdir());
    const char *c1 = "{\"bos_token\": \"<s>\"}", *c2 = "{\"chat_template\": \"{{ x }}\"}";
    CHECK_OK(dspy_write_file(path, c1, strlen(c1)));
    CHECK_STATUS(dspy_chat_template_load(path, &t), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "chat_template");
    CHECK_OK(dspy_write_file(path, c2, strlen(c2)));
    CHECK_STATUS(dspy_chat_template_load(path, &t), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "tokenizer_config.json");
    CHECK_CONTAINS(dspy_errmsg(), "not recognised");
}

int main(void) {
    if (!test_have_shared(LLAMA_DIR "chat_vectors.jsonl")) {
        check_skip("../shared/models/llama3-tokenizer is absent");
        return check_summary("test_chat_template");
    }
    RUN(test_llama32_vectors);
    RUN(test_llama32_details);
    RUN(test_llama30_from_config);
    RUN(test_chatml_qwen2);
    RUN(test_chatml_qwen25);
    RUN(test_unknown);
    return check_summary("test_chat_template");
}
