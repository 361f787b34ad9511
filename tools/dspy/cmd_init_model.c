/* cmd_init_model.c — `dspy init-model`: write a random Llama/Qwen2 checkpoint directory.
 *
 * Writes config.json, generation_config.json, model.safetensors (dspy_model_write_random) and
 * copies the tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json)
 * from --tokenizer, a tokenizer.json file or a directory holding one, and its chat template:
 * chat_template.jinja, or else the one chat_template_*.jinja there (the shared Llama 3 tokenizer
 * directory ships chat_template_llama3_2.jinja), saved as chat_template.jinja.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "dspy/model.h"
#include "dspy/str.h"

static int copy_file(const char *src, const char *dir, const char *name) {
    char *data;
    size_t len;
    if (dspy_read_file(src, &data, &len) != DSPY_OK) return dspy_cli_error("init-model");
    dspy_str dst = DSPY_STR_INIT;
    dspy_str_appendf(&dst, "%s/%s", dir, name);
    dspy_status st = dspy_write_file(dspy_str_cstr(&dst), data, len);
    dspy_str_free(&dst);
    free(data);
    return st ? dspy_cli_error("init-model") : 0;
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Copies the tokenizer files found at `path` (a file or a directory) into `out`. */
static int copy_tokenizer(const char *path, const char *out) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "error: dspy init-model: --tokenizer %s does not exist\n", path);
        return 1;
    }
    dspy_str dir = DSPY_STR_INIT;
    if (S_ISDIR(sb.st_mode)) {
        dspy_str_append(&dir, path);
    } else {
        const char *slash = strrchr(path, '/');
        if (slash) dspy_str_appendn(&dir, path, (size_t)(slash - path));
        else dspy_str_append(&dir, ".");
    }
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        dspy_str src = DSPY_STR_INIT;
        if (i == 0 && !S_ISDIR(sb.st_mode)) dspy_str_append(&src, path);
        else dspy_str_appendf(&src, "%s/%s", dspy_str_cstr(&dir), files[i]);
        if (exists(dspy_str_cstr(&src))) rc = copy_file(dspy_str_cstr(&src), out, files[i]);
        else if (i == 0) {
            fprintf(stderr, "error: dspy init-model: no tokenizer.json at %s\n", dspy_str_cstr(&src));
            rc = 1;
        }
        dspy_str_free(&src);
    }
    /* the chat template: chat_template.jinja, else a single chat_template_*.jinja */
    DIR *d = rc == 0 ? opendir(dspy_str_cstr(&dir)) : NULL;
    char *pick = NULL;
    int count = 0;
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
        size_t l = strlen(ent->d_name);
        if (strncmp(ent->d_name, "chat_template", 13) != 0 || l < 6 || strcmp(ent->d_name + l - 6, ".jinja") != 0) continue;
        bool exact = strcmp(ent->d_name, "chat_template.jinja") == 0;
        if (exact || ent->d_name[13] == '_') {
            if (exact || !pick || strcmp(pick, "chat_template.jinja") != 0) {
                free(pick);
                pick = strdup(ent->d_name);
            }
            count += !exact;
            if (exact) count = -1000;
        }
    }
    if (d) closedir(d);
    if (pick && (count == 1 || count < 0)) {
        dspy_str src = DSPY_STR_INIT;
        dspy_str_appendf(&src, "%s/%s", dspy_str_cstr(&dir), pick);
        rc = copy_file(dspy_str_cstr(&src), out, "chat_template.jinja");
        dspy_str_free(&src);
    }
    free(pick);
    dspy_str_free(&dir);
    return rc;
}

int cmd_init_model(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"arch", "NAME", "architecture: llama or qwen2", false, false, "llama"},
        {"preset", "NAME", "tiny (C=64, 2 layers), small (C=256, 4 layers) or 1b-shape (Llama-3.2-1B)", false,
         false, "tiny"},
        {"tokenizer", "PATH", "tokenizer.json or a directory with it (copied with tokenizer_config.json, "
                              "special_tokens_map.json and the chat template)", false, false, NULL},
        {"out", "DIR", "output directory (created)", true, false, NULL},
        {"seed", "N", "random seed of the weights", false, false, "0"},
        {"dtype", "TYPE", "tensor type in model.safetensors: f32 or bf16", false, false, "bf16"},
        {"vocab", "N", "vocabulary size (default 128256, the Llama 3 tokenizer's); a smaller one makes small "
                       "files, drops the bos/eos ids that do not fit and cannot encode every text", false, false, NULL},
        {"weights", NULL, "1b-shape: also write the 2.5 GB of random weights (other presets always do)", false, false,
         NULL},
        {"force", NULL, "overwrite a model already in --out", false, false, NULL},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse(&a, "init-model", "--out DIR [--arch llama|qwen2] [--preset tiny|small|1b-shape] "
                                               "[--tokenizer PATH] [--seed N] [--dtype f32|bf16] [--vocab N]",
                             "Write a model directory with random weights (normal(0, 0.02), norms 1) that\n"
                             "`dspy generate` and the engine load: config.json, generation_config.json,\n"
                             "model.safetensors and the tokenizer files. The tiny preset with the full\n"
                             "128256-token vocabulary is ~17 MB in bf16; --vocab 512 makes it ~0.3 MB.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    long seed = 0, vocab = 0;
    if (!dspy_args_int(&a, "seed", &seed) || !dspy_args_int(&a, "vocab", &vocab)) return 2;
    const char *dt = dspy_args_get(&a, "dtype");
    dspy_dtype dtype;
    if (strcmp(dt, "f32") == 0) dtype = DSPY_DTYPE_F32;
    else if (strcmp(dt, "bf16") == 0) dtype = DSPY_DTYPE_BF16;
    else {
        fprintf(stderr, "error: dspy init-model: --dtype must be f32 or bf16, not '%s'\n", dt);
        return 2;
    }
    dspy_model_config cfg;
    if (dspy_model_config_preset(dspy_args_get(&a, "arch"), dspy_args_get(&a, "preset"), &cfg))
        return dspy_cli_error("init-model");
    if (dspy_args_get(&a, "vocab")) {
        if (vocab <= 0 || vocab > 1000000) {
            fprintf(stderr, "error: dspy init-model: --vocab must be between 1 and 1000000, not %ld\n", vocab);
            return 2;
        }
        cfg.vocab_size = (int32_t)vocab;
        if (cfg.bos_token_id >= cfg.vocab_size) cfg.bos_token_id = -1;
        int k = 0;
        for (int i = 0; i < cfg.n_eos; i++)
            if (cfg.eos_token_ids[i] < cfg.vocab_size) cfg.eos_token_ids[k++] = cfg.eos_token_ids[i];
        if (k < cfg.n_eos)
            fprintf(stderr, "note: --vocab %ld drops the bos/eos ids that do not fit; generation stops at "
                            "max_tokens\n", vocab);
        cfg.n_eos = k;
    }
    bool is_1b = strcmp(dspy_args_get(&a, "preset"), "1b-shape") == 0;
    bool weights = !is_1b || dspy_args_flag(&a, "weights");
    const char *out = dspy_args_get(&a, "out");
    /* never overwrite a model silently: config.json or weights there mean one is already present */
    static const char *const model_files[] = {"config.json", "model.safetensors", "model.safetensors.index.json"};
    for (size_t i = 0; i < sizeof model_files / sizeof model_files[0] && !dspy_args_flag(&a, "force"); i++) {
        dspy_str p = DSPY_STR_INIT;
        dspy_str_appendf(&p, "%s/%s", out, model_files[i]);
        bool there = dspy_str_ok(&p) && exists(dspy_str_cstr(&p));
        dspy_str_free(&p);
        if (there) {
            fprintf(stderr, "error: dspy init-model: --out %s already holds a model (%s); pass --force to overwrite it, "
                            "or choose another folder\n", out, model_files[i]);
            return DSPY_EXIT_USAGE;
        }
    }
    if (dspy_model_write_random(out, &cfg, (uint64_t)seed, dtype, weights)) return dspy_cli_error("init-model");
    const char *tok = dspy_args_get(&a, "tokenizer");
    if (tok) {
        if ((rc = copy_tokenizer(tok, out))) return rc;
        if (cfg.vocab_size < 128256)
            fprintf(stderr, "note: the tokenizer can produce ids up to 128255 but the model has %d; prompts with "
                            "larger ids will be rejected\n", cfg.vocab_size);
    }
    int64_t np = dspy_model_config_params(&cfg);
    printf("wrote %s: %s %s, %.2fM parameters, %s%s\n", out, dspy_args_get(&a, "arch"), dspy_args_get(&a, "preset"),
           (double)np / 1e6, weights ? (dtype == DSPY_DTYPE_F32 ? "f32 weights" : "bf16 weights") : "config only",
           weights ? "" : " (pass --weights to write the weights)");
    return 0;
}
