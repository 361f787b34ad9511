/* test_llama_ref.c — the CPU engine against Hugging Face transformers (fixtures made by
 * scripts/make_ref_llama.py on a machine with torch + transformers).
 *
 * For each fixture model: load the directory, compare the full logits of fixed token sequences
 * (max abs error / max abs logit <= 1e-4) and the greedy continuation of 16 tokens (exact,
 * eos included where HF stopped), and HF's RoPE inv_freq for Llama-3.2-1B and others (float32,
 * within 1 ulp). Skips cleanly when tests/ref/llama_ref.json is absent.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/str.h"

static json_t *g_manifest;

static bool load_manifest(void) {
    const char *path = test_source("tests/ref/llama_ref.json");
    if (access(path, R_OK) != 0) return false;
    json_error_t err;
    g_manifest = json_load_file(path, 0, &err);
    CHECK(g_manifest != NULL);
    return g_manifest != NULL;
}

static void test_models(void) {
    json_t *models = json_object_get(g_manifest, "models");
    CHECK(json_array_size(models) >= 5);
    size_t mi;
    json_t *mj;
    json_array_foreach(models, mi, mj) {
        const char *name = json_string_value(json_object_get(mj, "name"));
        dspy_str dir = DSPY_STR_INIT;
        dspy_str_appendf(&dir, "tests/ref/%s", json_string_value(json_object_get(mj, "dir")));
        dspy_model *m = NULL;
        dspy_status st = dspy_model_load(test_source(dspy_str_cstr(&dir)), NULL, &m);
        check_report(st == DSPY_OK, __FILE__, __LINE__, "load %s: %s", name, dspy_errmsg());
        dspy_str_free(&dir);
        if (st) continue;
        const dspy_model_config *cfg = dspy_model_config_get(m);
        size_t ci;
        json_t *cj;
        json_array_foreach(json_object_get(mj, "cases"), ci, cj) {
            json_t *jids = json_object_get(cj, "ids");
            size_t n = json_array_size(jids);
            int32_t *ids = malloc(n * sizeof *ids);
            for (size_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(jids, i));
            dspy_str lp = DSPY_STR_INIT;
            dspy_str_appendf(&lp, "tests/ref/%s", json_string_value(json_object_get(cj, "logits")));
            char *raw = NULL;
            size_t rawlen = 0;
            CHECK_OK(dspy_read_file(test_source(dspy_str_cstr(&lp)), &raw, &rawlen));
            dspy_str_free(&lp);
            size_t V = (size_t)cfg->vocab_size;
            CHECK_U64(rawlen, n * V * sizeof(float));
            float *logits = malloc(n * V * sizeof(float));
            CHECK_OK(dspy_model_forward_logits(m, ids, n, logits));
            if (raw && rawlen == n * V * sizeof(float)) {
                const float *ref = (const float *)raw;
                double maxerr = 0, maxref = 0;
                for (size_t i = 0; i < n * V; i++) {
                    double d = fabs((double)logits[i] - ref[i]);
                    if (d > maxerr) maxerr = d;
                    if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
                }
                check_report(maxerr / maxref <= 1e-4, __FILE__, __LINE__,
                             "%s case %zu: max abs err %.3g / max abs logit %.3g = %.3g > 1e-4", name, ci, maxerr,
                             maxref, maxerr / maxref);
                printf("  %-22s case %zu: %zu tokens, max abs err %.2e, relative %.2e\n", name, ci, n, maxerr,
                       maxerr / maxref);
            }
            json_t *jg = json_object_get(cj, "greedy");
            dspy_sampling sp = dspy_sampling_default();
            sp.temperature = 0;
            sp.max_tokens = 16;
            int32_t *gen = NULL;
            size_t ngen = 0;
            dspy_finish fin;
            CHECK_OK(dspy_generate(m, ids, n, &sp, &gen, NULL, &ngen, &fin));
            bool same = ngen == json_array_size(jg);
            for (size_t i = 0; same && i < ngen; i++) same = gen[i] == json_integer_value(json_array_get(jg, i));
            if (!same) {
                char *want = json_dumps(jg, JSON_COMPACT);
                dspy_str got = DSPY_STR_INIT;
                for (size_t i = 0; i < ngen; i++) dspy_str_appendf(&got, "%s%d", i ? "," : "", gen[i]);
                check_report(false, __FILE__, __LINE__, "%s case %zu greedy: got [%s], HF %s", name, ci,
                             dspy_str_cstr(&got), want);
                free(want);
                dspy_str_free(&got);
            } else {
                CHECK(same);
            }
            free(gen);
            free(logits);
            free(raw);
            free(ids);
        }
        dspy_model_free(m);
    }
}

/* HF's float32 inv_freq versus dspy_rope_inv_freq (same float32 recipe: expect exact or 1 ulp). */
static void test_rope_inv_freq(void) {
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(g_manifest, "rope_inv_freq"), i, r) {
        json_t *rope = json_object_get(r, "rope");
        dspy_model_config c;
        memset(&c, 0, sizeof c);
        c.head_dim = (int32_t)json_integer_value(json_object_get(r, "head_dim"));
        c.rope_theta = json_number_value(json_object_get(rope, "rope_theta"));
        if (strcmp(json_string_value(json_object_get(rope, "rope_type")), "llama3") == 0) {
            c.rope_type = DSPY_ROPE_LLAMA3;
            c.rope_factor = json_number_value(json_object_get(rope, "factor"));
            c.rope_low_freq_factor = json_number_value(json_object_get(rope, "low_freq_factor"));
            c.rope_high_freq_factor = json_number_value(json_object_get(rope, "high_freq_factor"));
            c.rope_original_max_position_embeddings =
                (int32_t)json_integer_value(json_object_get(rope, "original_max_position_embeddings"));
        }
        float got[512];
        dspy_rope_inv_freq(&c, got);
        json_t *want = json_object_get(r, "inv_freq");
        CHECK_INT(json_array_size(want), c.head_dim / 2);
        int exact = 0;
        for (int k = 0; k < c.head_dim / 2 && k < (int)json_array_size(want); k++) {
            float w = (float)json_number_value(json_array_get(want, (size_t)k));
            float ulp = nextafterf(fabsf(w), INFINITY) - fabsf(w);
            check_report(fabsf(got[k] - w) <= ulp, __FILE__, __LINE__, "%s inv_freq[%d]: %.9g vs HF %.9g",
                         json_string_value(json_object_get(r, "name")), k, got[k], w);
            exact += got[k] == w;
        }
        printf("  rope %-14s %d/%d inv_freq values bit-exact with HF\n", json_string_value(json_object_get(r, "name")),
               exact, c.head_dim / 2);
    }
}

int main(void) {
    if (!load_manifest()) {
        check_current = "test_llama_ref";
        check_skip("tests/ref/llama_ref.json is absent (run scripts/make_ref_llama.py on a machine with "
                   "transformers)");
        return check_summary("test_llama_ref");
    }
    RUN(test_models);
    RUN(test_rope_inv_freq);
    json_decref(g_manifest);
    return check_summary("test_llama_ref");
}
