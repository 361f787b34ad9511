/* fuzz_openai_request.c — libFuzzer target: the OpenAI request reader of `dspy serve`
 * (dspy_oai_request_parse for /v1/chat/completions and /v1/completions). Every input is accepted
 * with values inside the documented ranges, or refused with a 400 error whose JSON body
 * renders. */
#include <stdint.h>

#include "fuzz.h"
#include "server/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int k = 0; k < 2; k++) {
        oai_request r;
        oai_error e = OAI_ERROR_INIT;
        dspy_status st = dspy_oai_request_parse(k ? OAI_COMPLETION : OAI_CHAT, (const char *)data, size, 1000, &r, &e);
        if (st == DSPY_OK) {
            FUZZ_ASSERT(r.n >= 1 && r.n <= OAI_MAX_N && r.n_stop <= OAI_MAX_STOP);
            FUZZ_ASSERT(r.temperature >= 0 && r.temperature <= 2 && r.top_p >= 0 && r.top_p <= 1);
            FUZZ_ASSERT(r.max_tokens == -1 || r.max_tokens >= 1);
            for (size_t i = 0; i < r.n_prompt_ids; i++) FUZZ_ASSERT(r.prompt_ids[i] >= 0 && r.prompt_ids[i] < 1000);
        } else {
            FUZZ_ASSERT(e.status == 400 || st == DSPY_ERR_NOMEM);
            char *body = dspy_oai_error_json(&e);
            FUZZ_ASSERT(body != NULL);
            free(body);
        }
        dspy_oai_request_free(&r);
        dspy_oai_error_free(&e);
    }
    return 0;
}
