/* cmd_generate.c — `dspy generate`: run the engine on one prompt.
 *
 * The prompt is token ids (--prompt-ids), text (--prompt: encoded with the model directory's
 * tokenizer.json, BOS added as HF's add_special_tokens=True does) or chat messages (--messages:
 * rendered with the directory's chat template and add_generation_prompt, then encoded without
 * adding BOS, as apply_chat_template(tokenize=True) does; the template's end-of-turn token is an
 * extra stop id). Prints the continuation as text (special tokens skipped) when the directory
 * has a tokenizer, or as comma-separated ids (--print-ids, or no tokenizer), and a one-line
 * summary on stderr.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "messages_opt.h"
#include "dspy/backend.h"
#include "dspy/chat_template.h"
#include "dspy/clock.h"
#include "dspy/engine.h"
#include "dspy/json.h"
#include "dspy/model.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

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

/* Renders --messages with the model's chat template and encodes it. *stop gets the end-of-turn
 * id (-1 if the tokenizer lacks it). */
static dspy_status encode_messages(const char *dir, const dspy_tokenizer *tok, const char *json, int32_t **ids,
                                   size_t *n, int32_t *stop) {
    dspy_str text = DSPY_STR_INIT;
    dspy_status st = cli_render_messages(dir, json, true, NULL, &text, tok, stop);
    /* the template already wrote BOS and the turn markers as text: add no BOS, parse them */
    if (!st) st = dspy_tokenizer_encode(tok, dspy_str_cstr(&text), text.len, false, true, ids, n);
    dspy_str_free(&text);
    return st;
}

/* Generates with an engine of one sequence, timing the first token (prefill) apart from the
 * rest (decode): the two numbers a user compares with other engines. */
static dspy_status run_timed(const dspy_model *m, const int32_t *ids, size_t n, const dspy_sampling *sp,
                             int32_t **out, size_t *nout, dspy_finish *fin, double *t_first, double *t_total) {
    const dspy_model_config *c = dspy_model_config_get(m);
    dspy_engine_params ep = dspy_engine_params_default();
    int64_t need = (int64_t)n + sp->max_tokens;
    ep.max_seqs = 1;
    ep.max_tokens_total = (int32_t)(need < c->max_position_embeddings ? need : c->max_position_embeddings);
    ep.max_batch_tokens = (int32_t)(n < 8192 ? n : 8192);
    dspy_engine *e = NULL;
    int64_t id;
    dspy_status st = dspy_engine_new(m, &ep, &e);
    if (st) return st;
    *out = malloc(sizeof(int32_t) * (size_t)(sp->max_tokens > 0 ? sp->max_tokens : 1));
    if (!*out) {
        dspy_engine_free(e);
        return dspy_fail(DSPY_ERR_NOMEM, "generate: out of memory");
    }
    double t0 = dspy_now_s();
    if ((st = dspy_engine_add(e, ids, n, sp, &id))) goto done;
    for (;;) {
        dspy_step_out so;
        if ((st = dspy_engine_step(e, &so))) goto done;
        if (so.n_events == 0) break;
        bool ended = false;
        for (int32_t k = 0; k < so.n_events && !ended; k++) { /* several when speculation's drafts hit */
            const dspy_step_event *ev = &so.events[k];
            if (ev->token < 0) continue;
            if (*nout == 0) *t_first = dspy_now_s() - t0;
            (*out)[(*nout)++] = ev->token;
            if (ev->finish != DSPY_FINISH_NONE) {
                *fin = ev->finish;
                ended = true;
            }
        }
        if (ended) break;
    }
    *t_total = dspy_now_s() - t0;
done:
    dspy_engine_free(e);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

int cmd_generate(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"model", "DIR", "model directory (config.json, model.safetensors)", true, false, NULL},
        {"prompt-ids", "IDS", "prompt as token ids, e.g. 128000,9906", false, false, NULL},
        {"prompt", "TEXT", "prompt as text (encoded with the model's tokenizer.json, BOS added)", false, false, NULL},
        {"messages", "JSON", "chat messages, e.g. '[{\"role\": \"user\", \"content\": \"Hi\"}]', rendered with "
                             "the model's chat template", false, false, NULL},
        {"max-tokens", "N", "new tokens at most", false, false, "32"},
        {"temperature", "T", "0 = greedy; default: generation_config.json's when it samples, else 0", false, false,
         NULL},
        {"top-p", "P", "nucleus sampling mass; default: generation_config.json's or 1", false, false, NULL},
        {"top-k", "K", "keep the K most likely tokens (0 = off)", false, false, "0"},
        {"seed", "S", "sampling seed", false, false, "0"},
        {"ignore-eos", NULL, "do not stop at the model's eos ids", false, false, NULL},
        {"print-ids", NULL, "print the generated token ids instead of text", false, false, NULL},
        {"device", "DEV", "auto (CUDA when a GPU is visible), cpu, cuda or cuda:N", false, false, "auto"},
        {"strict", NULL, "refuse a checkpoint whose weights hold NaN/Inf (default: a warning)", false, false, NULL},
        {"cpu-kernels", "K", "on the CPU: fast (BF16 weights, SIMD) or reference (the fp32 parity kernels); "
         "default $DSPY_CPU_KERNELS, else fast", false, false, "fast"},
        {"threads", "N", "CPU threads (0 = OpenMP default)", false, false, "0"},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse(&a, "generate", "--model DIR (--prompt-ids IDS | --prompt TEXT | --messages JSON) "
                                             "[--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--print-ids]",
                             "Generate a continuation of a prompt with the native engine. Prints the new text\n"
                             "(special tokens skipped) when the model directory has a tokenizer.json, else the\n"
                             "new token ids comma-separated; a summary goes to stderr. Stop strings are not\n"
                             "handled here: generation ends at an eos id, the chat end-of-turn, or --max-tokens.",
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
    const char *dir = dspy_args_get(&a, "model");
    int given = dspy_args_flag(&a, "prompt-ids") + dspy_args_flag(&a, "prompt") + dspy_args_flag(&a, "messages");
    if (given != 1) {
        fprintf(stderr, "error: dspy generate: give exactly one of --prompt-ids, --prompt, --messages\n");
        return 2;
    }
    dspy_model_params mp = dspy_model_params_default();
    mp.device = dspy_args_get(&a, "device");
    mp.strict = dspy_args_flag(&a, "strict");
    if (!dspy_args_cpu_kernels(&a, "generate", &mp.cpu_kernels)) return 2;
    mp.n_threads = (int32_t)threads;
    dspy_model *m;
    if (dspy_model_load(dir, &mp, &m)) return dspy_cli_error("generate");
    /* The tokenizer is optional for --prompt-ids (ids are printed then), required otherwise. */
    dspy_tokenizer *tok = NULL;
    dspy_status tst = dspy_tokenizer_load(dir, &tok);
    if (tst && !dspy_args_flag(&a, "prompt-ids")) {
        dspy_model_free(m);
        return dspy_cli_error("generate");
    }
    int32_t *ids = NULL, chat_stop = -1;
    size_t n = 0;
    dspy_status pst = DSPY_OK;
    if (dspy_args_flag(&a, "prompt-ids")) {
        if (!parse_ids(dspy_args_get(&a, "prompt-ids"), &ids, &n)) {
            dspy_tokenizer_free(tok);
            dspy_model_free(m);
            return 2;
        }
    } else if (dspy_args_flag(&a, "prompt")) {
        const char *text = dspy_args_get(&a, "prompt");
        pst = dspy_tokenizer_encode(tok, text, strlen(text), true, true, &ids, &n);
    } else {
        pst = encode_messages(dir, tok, dspy_args_get(&a, "messages"), &ids, &n, &chat_stop);
    }
    if (pst) {
        dspy_tokenizer_free(tok);
        dspy_model_free(m);
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
    if (chat_stop >= 0) {
        sp.stop_ids = &chat_stop;
        sp.n_stop_ids = 1;
    }
    int32_t *out = NULL;
    size_t nout = 0;
    dspy_finish fin = DSPY_FINISH_NONE;
    double t_first = 0, t_total = 0;
    dspy_status st = run_timed(m, ids, n, &sp, &out, &nout, &fin, &t_first, &t_total);
    free(ids);
    if (st) {
        dspy_tokenizer_free(tok);
        dspy_model_free(m);
        return dspy_cli_error("generate");
    }
    if (tok && !dspy_args_flag(&a, "print-ids")) {
        char *text;
        size_t tlen;
        if (dspy_tokenizer_decode(tok, out, nout, true, &text, &tlen)) {
            free(out);
            dspy_tokenizer_free(tok);
            dspy_model_free(m);
            return dspy_cli_error("generate");
        }
        fwrite(text, 1, tlen, stdout);
        printf("\n");
        free(text);
    } else {
        for (size_t i = 0; i < nout; i++) printf("%s%d", i ? "," : "", out[i]);
        printf("\n");
    }
    char dev[32];
    dspy_device_str(dspy_model_device(m), dev, sizeof dev);
    double dec = t_total - t_first;
    fprintf(stderr,
            "generate: %zu prompt + %zu new tokens on %s, finish %s: prefill %.1f ms (%.0f tok/s), decode %.1f tok/s "
            "(%.2f ms/token), %.2f s in all\n",
            n, nout, dev, dspy_finish_name(fin), t_first * 1e3, t_first > 0 ? (double)n / t_first : 0.0,
            nout > 1 && dec > 0 ? (double)(nout - 1) / dec : 0.0, nout > 1 ? dec * 1e3 / (double)(nout - 1) : 0.0,
            t_total);
    free(out);
    dspy_tokenizer_free(tok);
    dspy_model_free(m);
    return 0;
}
