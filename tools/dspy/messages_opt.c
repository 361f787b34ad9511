/* messages_opt.c — --messages for `dspy generate` and `dspy tokenize` (see messages_opt.h). */
#include "messages_opt.h"

#include <stdlib.h>
#include <string.h>

#include "dspy/chat_template.h"
#include "dspy/json.h"

dspy_status cli_render_messages(const char *tpl_path, const char *json, bool gen_prompt, const char *date,
                                dspy_str *text, const dspy_tokenizer *tok, int32_t *eot_id) {
    dspy_json *v = NULL;
    dspy_chat_template *tpl = NULL;
    dspy_chat_msg *msgs = NULL;
    dspy_status st = dspy_json_parse(json, strlen(json), "--messages", &v);
    if (st) goto done;
    size_t m = dspy_json_size(v);
    if (dspy_json_typeof(v) != DSPY_JSON_ARRAY || m == 0) {
        st = dspy_fail(DSPY_ERR_ARG, "--messages must be a non-empty JSON list of {\"role\": ..., \"content\": ...}, "
                       "e.g. '[{\"role\": \"user\", \"content\": \"Hi\"}]'");
        goto done;
    }
    if (!(msgs = calloc(m, sizeof *msgs))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < m; i++) {
        dspy_json *e = dspy_json_at(v, i);
        /* borrowed from v, which outlives the render */
        msgs[i].role = dspy_json_str(dspy_json_get(e, "role"));
        msgs[i].content = dspy_json_str(dspy_json_get(e, "content"));
        if (!msgs[i].role || !msgs[i].content) {
            st = dspy_fail(DSPY_ERR_ARG, "--messages[%zu] needs string \"role\" and \"content\"", i);
            goto done;
        }
    }
    if ((st = dspy_chat_template_load(tpl_path, &tpl))) goto done;
    st = dspy_chat_render(tpl, msgs, m, gen_prompt, date, text, NULL, NULL);
    if (!st && tok) *eot_id = dspy_tokenizer_token_to_id(tok, dspy_chat_template_end_of_turn(tpl));
done:
    free(msgs);
    dspy_chat_template_free(tpl);
    dspy_json_decref(v);
    return st;
}
