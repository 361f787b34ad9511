/* cmd_generate.c — `dspy generate`: run the engine on one prompt given as token ids.
 *
 * Loads the model directory, generates with dspy_generate, prints the new token ids (one line,
 * comma-separated) on stdout and a one-line summary on stderr. Text prompts (--prompt,
 * --messages) need the tokenizer module and are not wired in yet.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "dspy/engine.h"
#include "dspy/model.h"

/* Parses "1,2, 3" (commas and/or spaces). Returns false with a message on stderr. */
static bool parse_ids(const char *s, int32_t **out, size_t *n) {
    size_t cap = 16, k = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    const char *p = s;
    while (ids) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "error: dspy generate: --prompt-ids: '%.20s' is not a token id (expected e.g. 1,2,3)\n", p);
            free(ids);
            return false;
        }
        if (k == cap) {
            int32_t *grown = realloc(ids, (cap *= 2) * sizeof *ids);
            if (!grown) break;
            ids = grown;
        }
        ids[k++] = (int32_t)v;
        p = end;
        if (*p && *p != ',' && *p != ' ' && *p != '\t') {
            fprintf(stderr, "error: dspy generate: --prompt-ids: unexpected '%c' (expected e.g. 1,2,3)\n", *p);
            free(ids);
            return false;
        }
    }
    if (!ids) {
        fprintf(stderr, "error: dspy generate: out of memory\n");
        return false;
    }
    *out = ids;
    *n = k;
    return true;
}

int cmd_generate(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"model", "DIR", "model directory (config.json, model.safetensors)", true, false, NULL},
        {"prompt-ids", "IDS", "prompt as token ids, e.g. 128000,9906", true, false, NULL},
        {"max-tokens", "N", "new tokens at most", false, false, "32"},
        {"temperature", "T", "0 = greedy; default: generation_config.json's when it samples, else 0", false, false,
         NULL},
        {"top-p", "P", "nucleus sampling mass; default: generation_config.json's or 1", false, false, NULL},
        {"top-k", "K", "keep the K most likely tokens (0 = off)", false, false, "0"},
        {"seed", "S", "sampling seed", false, false, "0"},
        {"ignore-eos", NULL, "do not stop at the model's eos ids", false, false, NULL},
        {"print-ids", NULL, "print the generated token ids (the only output until the tokenizer lands)", false, false,
         NULL},
        {"device", "DEV", "cpu (cuda is not available yet)", false, false, "cpu"},
        {"threads", "N", "CPU threads (0 = OpenMP default)", false, false, "0"},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse(&a, "generate", "--model DIR --prompt-ids IDS [--max-tokens N] [--temperature T] "
                                             "[--top-p P] [--seed S] [--print-ids]",
                             "Generate a continuation of a prompt with the native engine and print the new\n"
                             "token ids, comma-separated, on stdout (a summary goes to stderr).",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    long max_tokens = 32, top_k = 0, seed = 0, threads = 0;
    double temperature = -1, top_p = -1;
    if (!dspy_args_int(&a, "max-tokens", &max_tokens) || !dspy_args_int(&a, "top-k", &top_k) ||
        !dspy_args_int(&a, "seed", &seed) || !dspy_args_int(&a, "threads", &threads) ||
        !dspy_args_double(&a, "temperature", &temperature) || !dspy_args_double(&a, "top-p", &top_p))
        return 2;
    if (max_tokens < 1 || max_tokens > INT32_MAX) {
        fprintf(stderr, "error: dspy generate: --max-tokens must be at least 1\n");
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (!parse_ids(dspy_args_get(&a, "prompt-ids"), &ids, &n)) return 2;
    dspy_model_params mp = dspy_model_params_default();
    mp.device = dspy_args_get(&a, "device");
    mp.n_threads = (int32_t)threads;
    dspy_model *m;
    if (dspy_model_load(dspy_args_get(&a, "model"), &mp, &m)) {
        free(ids);
        return dspy_cli_error("generate");
    }
    const dspy_model_config *cfg = dspy_model_config_get(m);
    dspy_sampling sp = dspy_sampling_default();
    sp.temperature = temperature >= 0 ? (float)temperature : cfg->gen_do_sample ? (float)cfg->gen_temperature : 0.0f;
    sp.top_p = top_p >= 0 ? (float)top_p : (float)cfg->gen_top_p;
    sp.top_k = top_k > 0 ? (int32_t)top_k : cfg->gen_top_k;
    sp.seed = (uint64_t)seed;
    sp.max_tokens = (int32_t)max_tokens;
    sp.ignore_eos = dspy_args_flag(&a, "ignore-eos");
    int32_t *out;
    size_t nout;
    dspy_finish fin;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dspy_status st = dspy_generate(m, ids, n, &sp, &out, NULL, &nout, &fin);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(ids);
    if (st) {
        dspy_model_free(m);
        return dspy_cli_error("generate");
    }
    for (size_t i = 0; i < nout; i++) printf("%s%d", i ? "," : "", out[i]);
    printf("\n");
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "generate: %zu prompt + %zu new tokens, finish %s, %.2f s (%.1f tok/s)\n", n, nout,
            dspy_finish_name(fin), sec, sec > 0 ? (double)nout / sec : 0.0);
    free(out);
    dspy_model_free(m);
    return 0;
}
