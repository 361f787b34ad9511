/* test_gguf_llama_cpp.c — the GGUF files `dspy export` writes, run by llama.cpp itself.
 *
 * llama.cpp comes from the npm package node-llama-cpp, pinned to 3.21.1, with its prebuilt
 * linux-x64 CPU binaries, installed once into a cache directory outside the source tree
 * ($DSPY_NPM_CACHE, else ~/.cache/dspy-npm, then node-llama-cpp-3.21.1/). The test exits 77
 * (CTest: skipped) only when that install fails because the npm registry cannot be reached;
 * any other failure is a failure.
 *
 * Models: random checkpoints made by `dspy init-model` (llama tiny and small, qwen2 tiny) with the
 * real Llama 3 tokenizer, whose weights are then rescaled (embeddings x10, projections x6, norm
 * weights and biases redrawn) so that greedy decoding wanders through the vocabulary instead of
 * repeating one token. Each is exported as f32, bf16 and q8_0 (f16 for llama tiny) and given to
 * llama.cpp (tests/e2e/gguf_llama_cpp/llama_cpp_check.mjs), with an F32 KV cache. Our side runs
 * the same file through our importer and the CPU engine (fp32). Checks:
 *   - llama.cpp loads every file; its GGUF reader sees the architecture and tensor count;
 *   - f32, f16, bf16: greedy continuations of 40 tokens equal ours for at least 32 tokens (all
 *     40 for f32), and llama.cpp's argmax after every prefix equals ours (f32);
 *   - q8_0: llama.cpp's top-1 after every prefix agrees with ours on >= 99 % of positions;
 *   - f32: llama.cpp's top-2 probabilities after a prompt within 1e-4 of our softmax;
 *   - the tokenizer in the file: llama.cpp's encodings equal HF's reference ids;
 *   - the chat template in the file, rendered by HF's own JS Jinja (@huggingface/jinja, which
 *     node-llama-cpp ships), equals our renderer's output and transformers' reference.
 * The measured numbers are printed ("gguf:" lines) for the README.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chat_vector.h"
#include "check.h"
#include "dspy/chat_template.h"
#include "dspy/engine.h"
#include "dspy/gguf.h"
#include "dspy/model.h"
#include "dspy/rng.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

#define NLC_VERSION "3.21.1"
#define GREEDY_N 40
#define GREEDY_MIN 32

extern char **environ;

/* Progress on stderr with the elapsed time (the test takes minutes on a busy machine). */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double g_t0;
#define PHASE(...)                                         \
    do {                                                   \
        fprintf(stderr, "[%6.1fs] ", now() - g_t0);        \
        fprintf(stderr, __VA_ARGS__);                      \
        fputc('\n', stderr);                               \
    } while (0)

/* Runs argv (PATH lookup) with stdout+stderr into `log`; the exit status, -1 if it cannot start. */
static int run(char *const argv[], const char *log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return -1;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static bool is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static void print_file(const char *path) {
    char *s = test_slurp(path);
    fprintf(stderr, "---- %s ----\n%s\n----\n", path, s);
    free(s);
}

/* Installs node-llama-cpp into the cache once. Returns 0 (ready, *mods = its node_modules),
 * 77 (the registry cannot be reached: skip) or 1 (failure, reported). */
static int install_llama_cpp(char *mods, size_t cap) {
    /* outside the source tree, npm's download cache too (test_npm_dir) */
    const char *d = test_npm_dir("node-llama-cpp-" NLC_VERSION);
    if (!d) return 1;
    char dir[1024], probe[1200], log[1200];
    snprintf(dir, sizeof dir, "%s", d);
    snprintf(mods, cap, "%s/node_modules", dir);
    snprintf(probe, sizeof probe, "%s/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node", mods);
    char pkg[1200];
    snprintf(pkg, sizeof pkg, "%s/node-llama-cpp/package.json", mods);
    char *pj = is_file(pkg) ? test_slurp(pkg) : NULL;
    bool ready = pj && strstr(pj, "\"version\": \"" NLC_VERSION "\"") && is_file(probe);
    free(pj);
    if (ready) return 0;
    char pkgjson[1100];
    snprintf(pkgjson, sizeof pkgjson, "%s/package.json", dir);
    if (!is_file(pkgjson)) dspy_write_file(pkgjson, "{\"private\": true}\n", 18);
    snprintf(log, sizeof log, "%s/npm-install.log", test_tmpdir());
    /* the prebuilt binaries are a registry package; nothing is downloaded or built beside it */
    setenv("NODE_LLAMA_CPP_SKIP_DOWNLOAD", "true", 1);
    char *argv[] = {"npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--omit=optional", "-E",
                    "node-llama-cpp@" NLC_VERSION, "@node-llama-cpp/linux-x64@" NLC_VERSION, NULL};
    fprintf(stderr, "test_gguf_llama_cpp: installing node-llama-cpp %s into %s\n", NLC_VERSION, dir);
    int rc = run(argv, log);
    if (rc == 0 && is_file(probe)) return 0;
    char plog[1200];
    snprintf(plog, sizeof plog, "%s/npm-ping.log", test_tmpdir());
    char *ping[] = {"npm", "ping", NULL};
    if (run(ping, plog) != 0) {
        print_file(plog);
        return 77;
    }
    print_file(log);
    check_report(false, __FILE__, __LINE__, "npm install node-llama-cpp@%s failed (exit %d) though the registry "
                 "answers; see the log above", NLC_VERSION, rc);
    return 1;
}

/* ---- models ----------------------------------------------------------------------------- */

typedef struct {
    const char *name, *arch, *preset;
    uint64_t seed;
    float s_emb, s_layer;
    bool decisive; /* scaled so that the argmax is never close to a tie (see k_models) */
    char dir[512];
    int32_t *walk; /* see randomize */
} model_t;

static bool ends(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Turns an init-model checkpoint (normal(0, 0.02), tied embeddings: greedy decoding repeats the
 * last token, since the final state is mostly that token's embedding) into one that decides
 * clearly and still depends on the context: the embeddings grow by `s_emb` and the projections by
 * `s_layer`, so the layers' share of the final state is large but not dominant; the output
 * projection becomes its own tensor (tie_word_embeddings false), the embedding rows in a random
 * order, so the most likely next token is a random function of the context rather than the last
 * token; norm weights (1 + 0.3 N) and biases (0.1 N) are redrawn so that swapping two norms or
 * dropping a bias changes the logits. */
static dspy_status randomize(const char *dir, uint64_t seed, float s_emb, float s_layer, int32_t **walk) {
    char path[600];
    dspy_model_config cfg;
    dspy_status st = dspy_model_config_load(dir, &cfg);
    if (st) return st;
    cfg.tie_word_embeddings = false;
    char *cj = dspy_model_config_to_json(&cfg);
    snprintf(path, sizeof path, "%s/config.json", dir);
    st = cj ? dspy_write_file(path, cj, strlen(cj)) : DSPY_ERR_NOMEM;
    free(cj);
    if (st) return st;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    dspy_safetensors *f;
    if ((st = dspy_safetensors_open(path, &f))) return st;
    size_t n = dspy_safetensors_count(f);
    dspy_tensor_out *t = calloc(n + 1, sizeof *t);
    float **data = calloc(n + 1, sizeof *data);
    dspy_rng rng;
    dspy_rng_seed(&rng, seed * 7919 + 1);
    size_t emb = n;
    for (size_t i = 0; i < n && !st; i++) {
        const dspy_tensor_info *ti = dspy_safetensors_at(f, i);
        size_t numel = (size_t)dspy_tensor_numel(ti);
        data[i] = malloc(numel * sizeof(float));
        if ((st = dspy_tensor_to_f32(ti, data[i]))) break;
        bool norm = ends(ti->name, "norm.weight"), bias = ends(ti->name, ".bias");
        bool is_emb = strcmp(ti->name, "model.embed_tokens.weight") == 0;
        if (is_emb) emb = i;
        for (size_t j = 0; j < numel; j++) {
            if (norm) data[i][j] = (float)(1.0 + 0.3 * dspy_rng_normal(&rng));
            else if (bias) data[i][j] = (float)(0.1 * dspy_rng_normal(&rng));
            else data[i][j] *= is_emb ? s_emb : s_layer;
        }
        t[i].name = ti->name;
        t[i].dtype = DSPY_DTYPE_F32;
        t[i].ndim = ti->ndim;
        memcpy(t[i].shape, ti->shape, sizeof t[i].shape);
        t[i].data = data[i];
    }
    if (!st && emb < n) { /* lm_head: the embedding rows, shuffled (Fisher-Yates) */
        int64_t V = t[emb].shape[0], C = t[emb].shape[1];
        int64_t *perm = malloc((size_t)V * sizeof *perm);
        data[n] = malloc((size_t)(V * C) * sizeof(float));
        for (int64_t v = 0; v < V; v++) perm[v] = v;
        for (int64_t v = V - 1; v > 0; v--) {
            int64_t k = (int64_t)(dspy_rng_u64(&rng) % (uint64_t)(v + 1)), x = perm[v];
            perm[v] = perm[k];
            perm[k] = x;
        }
        for (int64_t v = 0; v < V; v++) memcpy(data[n] + v * C, data[emb] + perm[v] * C, (size_t)C * sizeof(float));
        /* walk[x]: the token whose output row is x's own embedding (the argmax if the layers added nothing) */
        *walk = malloc((size_t)V * sizeof **walk);
        for (int64_t v = 0; v < V; v++) (*walk)[perm[v]] = (int32_t)v;
        free(perm);
        t[n] = t[emb];
        t[n].name = "lm_head.weight";
        t[n].data = data[n];
        st = dspy_safetensors_write(path, t, n + 1, NULL); /* renames over the mapped file */
    }
    for (size_t i = 0; i <= n; i++) free(data[i]);
    free(data);
    free(t);
    dspy_safetensors_free(f);
    return st;
}

static bool make_model(model_t *m) {
    snprintf(m->dir, sizeof m->dir, "%s/%s", test_tmpdir(), m->name);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)m->seed);
    const char *args[] = {"--arch", m->arch, "--preset", m->preset, "--dtype", "f32", "--seed", seed, "--tokenizer",
                          test_shared("models/llama3-tokenizer"), "--out", m->dir, NULL};
    test_run_result r = test_run_dspy("init-model", args);
    bool ok = r.status == 0;
    check_report(ok, __FILE__, __LINE__, "init-model %s: %s", m->name, r.err);
    test_run_free(&r);
    if (ok) {
        dspy_status st = randomize(m->dir, m->seed, m->s_emb, m->s_layer, &m->walk);
        check_report(st == DSPY_OK, __FILE__, __LINE__, "rescaling %s: %s", m->name, dspy_errmsg());
        ok = st == DSPY_OK;
    }
    return ok;
}

/* ---- one exported file and what we computed for it --------------------------------------- */

typedef struct {
    model_t *m;
    const char *dtype;
    double tie;          /* top-1/top-2 gap (in logit standard deviations) below which two correct
                            implementations at this precision may pick different tokens */
    char path[600];
    dspy_model *ours;
    int32_t V;
    int32_t greedy[2][GREEDY_N];
    int32_t *forced[3];  /* token sequences: prompt + our greedy continuation (x2), random tokens */
    size_t nforced[3];
    int32_t *argmax[3];  /* our argmax after each prefix */
    float *gap[3];       /* its margin over the runner-up, in logit standard deviations */
    float *row[3];       /* f32 files: our logits after the probs prefix of each sequence */
    size_t probs_len[3];
} file_t;

/* Precision of llama.cpp's arithmetic on the file: activations are rounded to the weight's type
 * (f16: 11 bits, bf16: 8 bits, q8_0: 32-value blocks of 8-bit values) before each product. */
static double tie_for(const char *dtype) {
    if (strcmp(dtype, "f32") == 0) return 1e-4;
    if (strcmp(dtype, "f16") == 0) return 0.01;
    if (strcmp(dtype, "bf16") == 0) return 0.03;
    return 0.06;
}

static int32_t argmax_row(const float *l, int32_t V, float *gap_sd) {
    int32_t best = 0;
    double m1 = 0, m2 = 0;
    for (int32_t v = 0; v < V; v++) {
        if (l[v] > l[best]) best = v;
        m1 += l[v];
        m2 += (double)l[v] * l[v];
    }
    float second = -INFINITY;
    for (int32_t v = 0; v < V; v++)
        if (v != best && l[v] > second) second = l[v];
    double sd = sqrt(fmax(m2 / V - (m1 / V) * (m1 / V), 1e-30));
    *gap_sd = (float)((l[best] - second) / sd);
    return best;
}

static json_t *ids_json(const int32_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* Runs our engine on the file: greedy continuations, argmax after every prefix, logits rows. */
static bool compute_ours(file_t *f, int32_t *const prompts[2], const size_t plen[2], uint64_t seed) {
    dspy_model_params mp = dspy_model_params_default();
    mp.n_threads = 1;
    dspy_status st = dspy_model_load(f->path, &mp, &f->ours);
    check_report(st == DSPY_OK, __FILE__, __LINE__, "our engine loads %s: %s", f->path, dspy_errmsg());
    if (st) return false;
    f->V = dspy_model_config_get(f->ours)->vocab_size;
    f->tie = tie_for(f->dtype);
    for (int p = 0; p < 2; p++) {
        dspy_sampling sp = dspy_sampling_default();
        sp.temperature = 0;
        sp.max_tokens = GREEDY_N;
        sp.ignore_eos = true;
        int32_t *out = NULL;
        size_t n = 0;
        if ((st = dspy_generate(f->ours, prompts[p], plen[p], &sp, &out, NULL, &n, NULL)) || n != GREEDY_N) {
            check_report(false, __FILE__, __LINE__, "generate on %s: %s", f->path, dspy_errmsg());
            free(out);
            return false;
        }
        memcpy(f->greedy[p], out, sizeof f->greedy[p]);
        free(out);
        f->nforced[p] = plen[p] + GREEDY_N;
        f->forced[p] = malloc(f->nforced[p] * sizeof(int32_t));
        memcpy(f->forced[p], prompts[p], plen[p] * sizeof(int32_t));
        memcpy(f->forced[p] + plen[p], f->greedy[p], sizeof f->greedy[p]);
        f->probs_len[p] = f->nforced[p];
    }
    dspy_rng rng;
    dspy_rng_seed(&rng, seed);
    f->nforced[2] = 96;
    f->probs_len[2] = 50;
    f->forced[2] = malloc(96 * sizeof(int32_t));
    f->forced[2][0] = 128000;
    for (int i = 1; i < 96; i++) f->forced[2][i] = (int32_t)(dspy_rng_u64(&rng) % 128000);
    int n_walk = 0, n_pos = 0, n_ties = 0;
    for (int s = 0; s < 3; s++) {
        size_t n = f->nforced[s];
        float *logits = malloc(n * (size_t)f->V * sizeof(float));
        f->argmax[s] = malloc(n * sizeof(int32_t));
        f->gap[s] = malloc(n * sizeof(float));
        if ((st = dspy_model_forward_logits(f->ours, f->forced[s], n, logits))) {
            check_report(false, __FILE__, __LINE__, "forward on %s: %s", f->path, dspy_errmsg());
            free(logits);
            return false;
        }
        for (size_t t = 0; t < n; t++) {
            f->argmax[s][t] = argmax_row(logits + t * (size_t)f->V, f->V, &f->gap[s][t]);
            n_walk += f->argmax[s][t] == f->m->walk[f->forced[s][t]];
            n_ties += f->gap[s][t] < f->tie;
            n_pos++;
        }
        if (strcmp(f->dtype, "f32") == 0) {
            f->row[s] = malloc((size_t)f->V * sizeof(float));
            memcpy(f->row[s], logits + (f->probs_len[s] - 1) * (size_t)f->V, (size_t)f->V * sizeof(float));
        }
        free(logits);
    }
    printf("gguf: %s %s: the layers move our argmax off the output permutation at %d of %d positions; %d positions "
           "are near-ties at %s precision (gap < %g sd)\n", f->m->name, f->dtype, n_pos - n_walk, n_pos, n_ties, f->dtype,
           f->tie);
    return true;
}

static bool export_file(file_t *f) {
    snprintf(f->path, sizeof f->path, "%s/%s-%s.gguf", test_tmpdir(), f->m->name, f->dtype);
    const char *args[] = {"--model", f->m->dir, "--out", f->path, "--dtype", f->dtype, NULL};
    test_run_result r = test_run_dspy("export", args);
    bool ok = r.status == 0;
    check_report(ok, __FILE__, __LINE__, "dspy export %s --dtype %s: %s", f->m->name, f->dtype, r.err);
    test_run_free(&r);
    return ok;
}

/* ---- the checks ------------------------------------------------------------------------- */

static int32_t jint(json_t *a, size_t i) { return (int32_t)json_integer_value(json_array_get(a, i)); }

/* Our softmax probability of `id` from a logits row. */
static double prob_of(const float *l, int32_t V, int32_t id) {
    float mx = l[0];
    for (int32_t v = 1; v < V; v++) mx = fmaxf(mx, l[v]);
    double z = 0;
    for (int32_t v = 0; v < V; v++) z += exp((double)(l[v] - mx));
    return exp((double)(l[id] - mx)) / z;
}

static void check_file(file_t *f, json_t *res) {
    const char *where = f->path + strlen(test_tmpdir()) + 1;
    bool f32 = strcmp(f->dtype, "f32") == 0, q8 = strcmp(f->dtype, "q8_0") == 0;
    dspy_gguf *g = NULL;
    if (dspy_gguf_open(f->path, &g) == DSPY_OK) {
        CHECK_STR(json_string_value(json_object_get(res, "architecture")), dspy_gguf_get_str(g, "general.architecture"));
        CHECK_INT(json_integer_value(json_object_get(res, "tensor_count")), dspy_gguf_tensor_count(g));
        dspy_gguf_free(g);
    }
    /* greedy: llama.cpp generating on its own, token by token */
    json_t *greedy = json_object_get(res, "greedy");
    for (int p = 0; p < 2; p++) {
        json_t *theirs = json_array_get(greedy, (size_t)p);
        int same = 0;
        while (same < GREEDY_N && (size_t)same < json_array_size(theirs) && jint(theirs, (size_t)same) == f->greedy[p][same])
            same++;
        size_t at = f->nforced[p] - GREEDY_N + (size_t)same - 1; /* the prefix that produced the first difference */
        printf("gguf: %s %s: greedy continuation %d: llama.cpp equals ours for %d of %d tokens%s\n", f->m->name,
               f->dtype, p, same, GREEDY_N,
               same < GREEDY_N ? (f->gap[p][at] < f->tie ? " (then a near-tie)" : " (then a real difference)") : "");
        if (f->m->decisive && !q8) {
            int need = f32 ? GREEDY_N : GREEDY_MIN;
            check_report(same >= need, __FILE__, __LINE__, "%s: greedy continuation %d matches for %d tokens, want %d",
                         where, p, same, need);
        } else if (same < GREEDY_N) {
            check_report(f->gap[p][at] < f->tie, __FILE__, __LINE__, "%s: greedy continuation %d differs at token %d, "
                         "where our top-1 leads by %.4f sd (a near-tie is below %g)", where, p, same, f->gap[p][at], f->tie);
        }
        int distinct = 0; /* not one token repeated */
        for (int i = 0; i < GREEDY_N; i++) {
            bool seen = false;
            for (int j = 0; j < i; j++) seen |= f->greedy[p][j] == f->greedy[p][i];
            distinct += !seen;
        }
        check_report(distinct >= 8, __FILE__, __LINE__, "%s: our greedy continuation has only %d distinct tokens", where,
                     distinct);
    }
    /* top-1 after every prefix, all positions and those that are not near-ties */
    json_t *forced = json_object_get(res, "forced");
    size_t agree = 0, total = 0, decided = 0, decided_agree = 0;
    double worst_lead = 0; /* our largest top-1 lead (sd) where llama.cpp picked another token */
    for (int s = 0; s < 3; s++) {
        json_t *theirs = json_array_get(forced, (size_t)s);
        for (size_t t = 0; t < f->nforced[s]; t++) {
            bool same = jint(theirs, t) == f->argmax[s][t];
            if (!same) worst_lead = fmax(worst_lead, f->gap[s][t]);
            agree += same;
            total++;
            if (f->gap[s][t] >= f->tie) {
                decided++;
                decided_agree += same;
            }
        }
    }
    printf("gguf: %s %s: top-1 after every prefix: llama.cpp agrees with ours on %zu of %zu positions (%.2f %%), "
           "%zu of %zu outside near-ties%s", f->m->name, f->dtype, agree, total, 100.0 * (double)agree / (double)total,
           decided_agree, decided, agree < total ? "; where it differs, our top-1 led by at most " : "\n");
    if (agree < total) printf("%.4f sd\n", worst_lead);
    check_report(decided_agree == decided, __FILE__, __LINE__, "%s: llama.cpp's top-1 differs from ours at %zu positions "
                 "where ours leads by more than %g sd", where, decided - decided_agree, f->tie);
    if (f->m->decisive)
        check_report((double)agree >= 0.99 * (double)total, __FILE__, __LINE__, "%s: top-1 agreement %zu/%zu < 99 %%",
                     where, agree, total);
    /* f32: llama.cpp's probabilities of its two most likely tokens, against our softmax */
    if (f32) {
        json_t *probs = json_object_get(res, "probs");
        double worst = 0;
        for (int s = 0; s < 3; s++)
            for (int k = 0; k < 2; k++) {
                json_t *e = json_array_get(json_array_get(probs, (size_t)s), (size_t)k);
                int32_t id = (int32_t)json_integer_value(json_array_get(e, 0));
                double p = json_number_value(json_array_get(e, 1));
                double mine = id >= 0 && id < f->V ? prob_of(f->row[s], f->V, id) : -1;
                worst = fmax(worst, fabs(p - mine));
            }
        printf("gguf: %s f32: llama.cpp's top-2 probabilities after 3 prefixes are within %.2g of ours\n", f->m->name,
               worst);
        check_report(worst <= 5e-4, __FILE__, __LINE__, "%s: probabilities differ by %g", where, worst);
    }
}

static void free_file(file_t *f) {
    dspy_model_free(f->ours);
    for (int s = 0; s < 3; s++) {
        free(f->forced[s]);
        free(f->argmax[s]);
        free(f->gap[s]);
        free(f->row[s]);
    }
}

/* Texts and HF's reference ids (every 10th line of the shared vectors). */
static size_t load_vectors(json_t **texts, json_t **ids) {
    *texts = json_array();
    *ids = json_array();
    char *all = NULL;
    size_t len;
    if (dspy_read_file(test_shared("models/llama3-tokenizer/test_vectors.jsonl"), &all, &len)) return 0;
    size_t k = 0;
    for (char *line = all, *next; line && *line; line = next, k++) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (k % 10 != 0) continue;
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (!o) continue;
        json_array_append(*texts, json_object_get(o, "text"));
        json_array_append(*ids, json_object_get(o, "ids"));
        json_decref(o);
    }
    free(all);
    return json_array_size(*texts);
}

/* install_llama_cpp under an exclusive lock on the cache directory: the parts of this test run as
 * concurrent CTest entries, and on a fresh machine the first one installs while the others wait. */
static int ensure_llama_cpp(char *mods, size_t cap) {
    const char *d = test_npm_dir("node-llama-cpp-" NLC_VERSION);
    if (!d) return 1;
    char lock_path[1100];
    snprintf(lock_path, sizeof lock_path, "%s/install.lock", d);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    while (fd >= 0 && flock(fd, LOCK_EX) != 0 && errno == EINTR) {
    }
    check_report(fd >= 0, __FILE__, __LINE__, "cannot open %s: %s", lock_path, strerror(errno));
    int rc = fd >= 0 ? install_llama_cpp(mods, cap) : 1;
    if (fd >= 0) close(fd);
    return rc;
}

static const char *g_mods; /* node_modules holding node-llama-cpp */

/* Decisive checkpoints (the layers move the argmax at a few positions, never near a tie): the
 * acceptance numbers are required as they stand. Mixed ones (the layers decide most positions, so
 * near-ties occur): llama.cpp must agree wherever the decision is not a tie at the file's
 * precision, and the raw numbers are reported. */
static const model_t k_models[] = {{"llama-tiny", "llama", "tiny", 11, 10, 2.5f, true, "", NULL},
                                   {"llama-small", "llama", "small", 12, 10, 1.6f, true, "", NULL},
                                   {"qwen2-tiny", "qwen2", "tiny", 13, 10, 2.5f, true, "", NULL},
                                   {"llama-tiny-mixed", "llama", "tiny", 14, 10, 5.0f, false, "", NULL},
                                   {"llama-small-mixed", "llama", "small", 15, 10, 2.5f, false, "", NULL}};
enum { NM = sizeof k_models / sizeof k_models[0] };
static const char *const k_dtypes[NM][5] = {{"f32", "f16", "bf16", "q8_0", NULL}, {"bf16", "q8_0", NULL},
                                            {"f32", "q8_0", NULL}, {"f32", "bf16", "q8_0", NULL}, {"f32", NULL}};

/* Exports k_models[which] in its dtypes, runs our engine and llama.cpp (one node process) on the
 * files and compares. `vocab`: also llama.cpp's tokenizer and the file's chat template, asked of
 * the first file (the vocabulary and template are the same in every file). Each test below is one
 * model, so that CTest can run them as separate entries on separate cores. */
static void check_model(int which, bool vocab) {
    const char *mods = g_mods;
    model_t model = k_models[which];
    const char *const *dtypes = k_dtypes[which];
    file_t files[12];
    memset(files, 0, sizeof files);
    int nf = 0;
    dspy_tokenizer *tok = NULL;
    CHECK_OK(dspy_tokenizer_load(test_shared("models/llama3-tokenizer"), &tok));
    if (!tok) return;
    static const char *texts[2] = {"The quick brown fox jumps over the lazy dog because",
                                   "I am still waiting on my card? It has been two weeks and"};
    int32_t *prompts[2];
    size_t plen[2];
    for (int p = 0; p < 2; p++) CHECK_OK(dspy_tokenizer_encode(tok, texts[p], strlen(texts[p]), true, true, &prompts[p], &plen[p]));
    PHASE("making %s", model.name);
    bool made = make_model(&model);
    for (int d = 0; made && dtypes[d]; d++) {
        file_t *f = &files[nf];
        f->m = &model;
        f->dtype = dtypes[d];
        PHASE("exporting %s as %s, then running our engine on it", model.name, f->dtype);
        bool ok = export_file(f);
        if (!ok || !compute_ours(f, prompts, plen, model.seed + (uint64_t)d)) {
            free_file(f);
            memset(f, 0, sizeof *f);
            continue;
        }
        nf++;
    }

    json_t *vec_texts = NULL, *vec_ids = NULL, *chats = NULL, *chat_ref = NULL;
    /* the job for llama.cpp */
    json_t *job = json_object(), *jm = json_array();
    json_object_set_new(job, "module_dir", json_string(mods));
    json_object_set_new(job, "threads", json_integer(1));
    json_object_set_new(job, "models", jm);
    /* the reference encodings and conversations: only the part that asks llama.cpp for them */
    size_t nvec = 0;
    if (vocab) {
        nvec = load_vectors(&vec_texts, &vec_ids);
        char *chat_text = test_slurp(test_shared("models/llama3-tokenizer/chat_vectors.jsonl"));
        chats = json_array();
        chat_ref = json_array();
        for (char *line = chat_text, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = '\0';
            json_error_t err;
            json_t *o = json_loads(line, 0, &err);
            if (!o) continue;
            json_array_append_new(chats, json_pack("{s:O, s:O, s:O}", "messages", json_object_get(o, "messages"), "date_string",
                                                   json_object_get(o, "date_string"), "add_generation_prompt",
                                                   json_object_get(o, "add_generation_prompt")));
            json_array_append(chat_ref, json_object_get(o, "rendered"));
            json_decref(o);
        }
        free(chat_text);
        /* and one with a system message and several turns (no reference rendering: ours vs Jinja) */
        json_array_append_new(chats, json_pack("{s:[{s:s,s:s},{s:s,s:s},{s:s,s:s},{s:s,s:s}], s:s, s:b}", "messages", "role",
                                               "system", "content", "  Answer briefly.\n", "role", "user", "content",
                                               "Hi there", "role", "assistant", "content", "Hello!", "role", "user",
                                               "content", "Where is my card?", "date_string", "02 Dec 2026", "add_generation_prompt", 1));
    }
    for (int i = 0; i < nf; i++) {
        file_t *f = &files[i];
        json_t *m = json_object();
        json_object_set_new(m, "path", json_string(f->path));
        json_object_set_new(m, "kv_f32", json_true());
        json_t *gr = json_array(), *fo = json_array(), *pr = json_array();
        for (int p = 0; p < 2; p++) json_array_append_new(gr, json_pack("{s:o, s:i}", "prompt", ids_json(prompts[p], plen[p]), "n", GREEDY_N));
        for (int s = 0; s < 3; s++) json_array_append_new(fo, ids_json(f->forced[s], f->nforced[s]));
        for (int k = 0; k < 3 && strcmp(f->dtype, "f32") == 0; k++) json_array_append_new(pr, ids_json(f->forced[k], f->probs_len[k]));
        json_object_set_new(m, "greedy", gr);
        json_object_set_new(m, "forced", fo);
        json_object_set_new(m, "probs", pr);
        if (i == 0 && vocab) { /* the vocabulary and template are the same in every file: ask once */
            json_object_set(m, "tokenize", vec_texts);
            json_object_set(m, "chat", chats);
        }
        json_array_append_new(jm, m);
    }
    char job_path[600], out_path[600], log[600];
    snprintf(job_path, sizeof job_path, "%s/job.json", test_tmpdir());
    snprintf(out_path, sizeof out_path, "%s/llama_cpp.json", test_tmpdir());
    snprintf(log, sizeof log, "%s/node.log", test_tmpdir());
    json_dump_file(job, job_path, JSON_COMPACT);
    json_decref(job);
    const char *script = test_source("tests/e2e/gguf_llama_cpp/llama_cpp_check.mjs");
    char *argv[] = {"node", (char *)script, job_path, out_path, NULL};
    PHASE("llama.cpp on %d files", nf);
    int rc = run(argv, log);
    PHASE("llama.cpp done");
    check_report(rc == 0, __FILE__, __LINE__, "node llama_cpp_check.mjs exited %d", rc);
    json_error_t err;
    json_t *out = rc == 0 ? json_load_file(out_path, 0, &err) : NULL;
    if (!out) {
        print_file(log);
        goto done;
    }
    printf("gguf: llama.cpp release %s (node-llama-cpp %s)\n", json_string_value(json_object_get(out, "llama_cpp")),
           NLC_VERSION);
    json_t *results = json_object_get(out, "models");
    CHECK_INT(json_array_size(results), nf);
    for (int i = 0; i < nf && (size_t)i < json_array_size(results); i++) check_file(&files[i], json_array_get(results, (size_t)i));

    if (vocab) {
        /* tokenizer: llama.cpp on our file vs HF's reference ids */
        json_t *r0 = json_array_get(results, 0);
        json_t *toks = json_object_get(r0, "tokenize");
        size_t same = 0;
        for (size_t i = 0; i < nvec && i < json_array_size(toks); i++) same += json_equal(json_array_get(toks, i), json_array_get(vec_ids, i));
        printf("gguf: llama.cpp tokenizes %zu of %zu reference texts exactly as HF does\n", same, nvec);
        CHECK(nvec >= 1300);
        CHECK_INT(same, nvec);

        /* chat template: Jinja on the file's template vs ours (loaded from the same file) vs transformers */
        dspy_chat_template *tpl = NULL;
        CHECK_OK(dspy_chat_template_load(files[0].path, &tpl));
        json_t *rendered = json_object_get(r0, "chat");
        CHECK_INT(json_array_size(rendered), json_array_size(chats));
        for (size_t c = 0; tpl && c < json_array_size(chats) && c < json_array_size(rendered); c++) {
            dspy_str s = DSPY_STR_INIT;
            CHECK_OK(test_chat_render_vector(tpl, json_array_get(chats, c), &s));
            CHECK_STR(json_string_value(json_array_get(rendered, c)), dspy_str_cstr(&s));
            if (c < json_array_size(chat_ref)) CHECK_STR(dspy_str_cstr(&s), json_string_value(json_array_get(chat_ref, c)));
            dspy_str_free(&s);
        }
        printf("gguf: the file's chat template renders %zu conversations identically in Jinja (HF's JS) and in dspy.c\n",
               json_array_size(chats));
        dspy_chat_template_free(tpl);
    }
    json_decref(out);
done:
    json_decref(vec_texts);
    json_decref(vec_ids);
    json_decref(chats);
    json_decref(chat_ref);
    for (int i = 0; i < nf; i++) free_file(&files[i]);
    free(model.walk);
    for (int p = 0; p < 2; p++) free(prompts[p]);
    dspy_tokenizer_free(tok);
}

static void test_llama_tiny(void) { check_model(0, true); }
static void test_llama_small(void) { check_model(1, false); }
static void test_qwen2_tiny(void) { check_model(2, false); }
static void test_llama_tiny_mixed(void) { check_model(3, false); }
static void test_llama_small_mixed(void) { check_model(4, false); }

int main(int argc, char **argv) {
    check_parts(argc, argv);
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        fprintf(stderr, "test_gguf_llama_cpp: ../shared/models/llama3-tokenizer is missing\n");
        return 1;
    }
    g_t0 = now();
    char *node_argv[] = {"node", "--version", NULL};
    char log[600];
    snprintf(log, sizeof log, "%s/node-version.log", test_tmpdir());
    if (run(node_argv, log) != 0) {
        fprintf(stderr, "test_gguf_llama_cpp: node is not installed (scripts/install-deps.sh installs nodejs and npm)\n");
        return 1;
    }
    char mods[1100];
    int rc = ensure_llama_cpp(mods, sizeof mods);
    if (rc == 77) {
        fprintf(stderr, "test_gguf_llama_cpp: SKIP: the npm registry cannot be reached, so node-llama-cpp %s cannot be "
                        "installed\n", NLC_VERSION);
        check_summary("test_gguf_llama_cpp");
        return 77;
    }
    g_mods = mods;
    if (rc == 0) {
        RUN(test_llama_tiny);
        RUN(test_llama_small);
        RUN(test_qwen2_tiny);
        RUN(test_llama_tiny_mixed);
        RUN(test_llama_small_mixed);
    }
    return check_summary("test_gguf_llama_cpp");
}
