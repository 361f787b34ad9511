/* test_finetune.c — `dspy finetune` end to end on a tiny random Llama with the real Llama 3
 * tokenizer: the loss falls on a repeated tiny dataset, bad lines are reported and skipped, the
 * output directory loads and generates, kill -9 after the first checkpoint then --resume gives
 * a model.safetensors byte-identical to an uninterrupted run, resume refuses a checkpoint of other
 * settings, and LoRA training merges into the exported weights. Prefix-shared steps: 8
 * conversations with one long system prompt, packed two to a sequence (max_seq_length 250) and
 * two sequences to an optimizer step, train with the default
 * (share_prefix, logged) and with --share_prefix false to the same per-step losses and gradient
 * norms (1e-5 relative: F32 summation order) and token counts; a non-boolean value is refused.
 */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dspy/backend.h"
#include "dspy/model.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"

static char g_model[1024], g_data[1024];

/* Runs a shell command, capturing stdout+stderr into *out (caller frees). Returns the exit code. */
static int run_cmd(const char *cmd, char **out) {
    dspy_str full = DSPY_STR_INIT, text = DSPY_STR_INIT;
    dspy_str_appendf(&full, "%s 2>&1", cmd);
    FILE *f = popen(full.ptr, "r");
    char buf[4096];
    size_t n;
    while (f && (n = fread(buf, 1, sizeof buf, f)) > 0) dspy_str_appendn(&text, buf, n);
    int rc = f ? pclose(f) : -1;
    dspy_str_free(&full);
    *out = dspy_str_take(&text);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static char *slurp(const char *path) {
    char *d = NULL;
    size_t n;
    return dspy_read_file(path, &d, &n) == DSPY_OK ? d : NULL;
}

/* The value of `key` ("\"loss\":") on each train.jsonl line (at most cap). */
static int metric(const char *dir, const char *key, double *out, int cap) {
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/train.jsonl", dir);
    char *t = slurp(p.ptr);
    dspy_str_free(&p);
    int n = 0;
    for (char *s = t; s && (s = strstr(s, key)) && n < cap; s++) out[n++] = strtod(s + strlen(key), NULL);
    free(t);
    return n;
}

/* The "loss" of each train.jsonl line (at most cap). */
static int losses(const char *dir, double *out, int cap) { return metric(dir, "\"loss\":", out, cap); }

#define COMMON "--num_train_epochs 1 --gradient-accumulation-steps 1 --packing false --save_steps 4 --learning_rate 1e-3"
static const char *k_common = COMMON " --quiet";

static bool setup(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        check_skip("shared Llama 3 tokenizer absent");
        return false;
    }
    if (g_model[0]) return true;
    snprintf(g_model, sizeof g_model, "%s/tiny", test_tmpdir());
    snprintf(g_data, sizeof g_data, "%s/chat.jsonl", test_tmpdir());
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' init-model --preset tiny --dtype bf16 --seed 3 --tokenizer '%s' --out '%s'",
             test_bin("dspy"), test_shared("models/llama3-tokenizer"), g_model);
    int rc = run_cmd(cmd, &out);
    CHECK_INT(rc, 0);
    free(out);
    /* 8 short conversations (two repeated) and one bad line */
    dspy_str d = DSPY_STR_INIT;
    for (int i = 0; i < 8; i++) {
        dspy_str_appendf(&d, "{\"messages\": [{\"role\": \"user\", \"content\": \"question %d\"}, "
                             "{\"role\": \"assistant\", \"content\": \"answer %d\"}]}\n", i % 2, i % 2);
        if (i == 4) dspy_str_append(&d, "{\"messages\": [{\"role\": \"user\", \"content\": \"no answer\"}]}\n");
    }
    CHECK_OK(dspy_write_file(g_data, d.ptr, d.len));
    dspy_str_free(&d);
    return rc == 0;
}

static void test_train_and_generate(void) {
    if (!setup()) return;
    char cmd[4096], dir[1024], *out = NULL;
    snprintf(dir, sizeof dir, "%s/a", test_tmpdir());
    /* with the progress bar (stderr is not a terminal: one final line) */
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s' " COMMON, test_bin("dspy"), g_model,
             g_data, dir);
    CHECK_INT(run_cmd(cmd, &out), 0);
    CHECK_CONTAINS(out, "epoch 1.00/1 loss ");
    CHECK_CONTAINS(out, "| 8/8 [");
    CHECK_CONTAINS(out, "line 6: no_assistant");
    CHECK_CONTAINS(out, "fine-tuned");
    CHECK_CONTAINS(out, "on 8 examples (1 lines skipped): 8 optimizer steps over 1 epochs");
    free(out);
    /* the finished model is not overwritten without --force (nor --resume) */
    CHECK_INT(run_cmd(cmd, &out), 2);
    CHECK_CONTAINS(out, "already holds a fine-tuned model (model.safetensors); pass --resume");
    free(out);
    double loss[16];
    int n = losses(dir, loss, 16);
    CHECK_INT(n, 8);
    if (n == 8) {
        CHECK(loss[7] < loss[0] - 0.5); /* the same two answers over and over: the loss falls */
        CHECK(loss[4] < loss[0]);
    }
    dspy_str tj = DSPY_STR_INIT;
    dspy_str_appendf(&tj, "%s/train.jsonl", dir);
    char *metrics = slurp(tj.ptr);
    CHECK_CONTAINS(metrics, "{\"step\":4,\"epoch\":0.5,\"loss\":");
    CHECK_CONTAINS(metrics, "\"lr\":0.001,\"tokens\":42,\"labels\":4,\"tokens_per_s\":");
    free(metrics);
    dspy_str_free(&tj);
    /* checkpoints at 4 and the end (8); save_total_limit 1 keeps the newest */
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/checkpoint-8/trainer_state.json", dir);
    CHECK(exists(p.ptr));
    dspy_str_clear(&p);
    dspy_str_appendf(&p, "%s/checkpoint-4", dir);
    CHECK(!exists(p.ptr));
    dspy_str_clear(&p);
    /* the checkpoint holds fp32 weights with HF names next to a config: loadable as a model */
    dspy_str_appendf(&p, "%s/checkpoint-8", dir);
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(p.ptr, NULL, &m));
    dspy_model_free(m);
    m = NULL;
    dspy_str_free(&p);
    /* the output: HF layout, input dtype, loads, and generates the trained answer's first word */
    CHECK_OK(dspy_model_load(dir, NULL, &m));
    if (m) CHECK_INT(dspy_model_config_get(m)->dtype, DSPY_DTYPE_BF16);
    dspy_model_free(m);
    static const char *files[] = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                  "tokenizer_config.json", "chat_template.jinja", "train.jsonl"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        dspy_str f = DSPY_STR_INIT;
        dspy_str_appendf(&f, "%s/%s", dir, files[i]);
        CHECK(exists(f.ptr));
        dspy_str_free(&f);
    }
    snprintf(cmd, sizeof cmd,
             "'%s' generate --model '%s' --messages '[{\"role\": \"user\", \"content\": \"question 1\"}]' "
             "--max-tokens 3 --temperature 0",
             test_bin("dspy"), dir);
    CHECK_INT(run_cmd(cmd, &out), 0);
    CHECK_CONTAINS(out, "answer");
    free(out);
}

/* fork/exec the CLI, kill -9 once checkpoint-4 exists, resume, compare with the run of test a. */
/* Runs `cmd` (exec'd by sh) and kills it with SIGKILL as soon as `path` exists; true when it
 * was killed so (not finished before). */
static bool kill_when(const char *cmd, const char *path) {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    CHECK(pid > 0);
    bool killed = false;
    for (int i = 0; i < 60000 && pid > 0; i++) { /* up to 10 minutes (ASan on a busy machine) */
        if (exists(path)) {
            kill(pid, SIGKILL);
            killed = true;
            break;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            pid = -1;
            break;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
    return killed;
}

static void test_kill_and_resume(void) {
    if (!setup()) return;
    char dir[1024], ck[1100], cmd[4096], *out = NULL;
    snprintf(dir, sizeof dir, "%s/b", test_tmpdir());
    snprintf(ck, sizeof ck, "%s/checkpoint-4/trainer_state.json", dir);
    snprintf(cmd, sizeof cmd, "exec '%s' finetune --model '%s' --data '%s' --out '%s' %s >/dev/null 2>&1",
             test_bin("dspy"), g_model, g_data, dir, k_common);
    CHECK(kill_when(cmd, ck));
    dspy_str f = DSPY_STR_INIT;
    dspy_str_appendf(&f, "%s/model.safetensors", dir);
    CHECK(!exists(f.ptr)); /* it never finished */
    /* what a kill during a save leaves: a partial .tmp- directory, removed by the next run */
    dspy_str junk = DSPY_STR_INIT;
    dspy_str_appendf(&junk, "%s/.tmp-checkpoint-6", dir);
    CHECK(mkdir(junk.ptr, 0755) == 0);
    dspy_str_append(&junk, "/model.safetensors");
    CHECK_OK(dspy_write_file(junk.ptr, "partial", 7));
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s' %s --resume", test_bin("dspy"),
             g_model, g_data, dir, k_common);
    CHECK_INT(run_cmd(cmd, &out), 0);
    CHECK_CONTAINS(out, "resuming from");
    CHECK_CONTAINS(out, "(resumed at step 4)");
    free(out);
    CHECK(!exists(junk.ptr));
    dspy_str_free(&junk);
    /* byte-identical model and identical per-step losses */
    dspy_str a = DSPY_STR_INIT;
    dspy_str_appendf(&a, "%s/a/model.safetensors", test_tmpdir());
    char *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(dspy_read_file(a.ptr, &da, &na));
    CHECK_OK(dspy_read_file(f.ptr, &db, &nb));
    CHECK(da && db && na == nb && memcmp(da, db, na) == 0);
    free(da);
    free(db);
    double la[16], lb[16];
    dspy_str ad = DSPY_STR_INIT;
    dspy_str_appendf(&ad, "%s/a", test_tmpdir());
    int n1 = losses(ad.ptr, la, 16), n2 = losses(dir, lb, 16);
    CHECK_INT(n2, n1);
    for (int i = 0; i < n1 && i < n2; i++) CHECK(la[i] == lb[i]);
    dspy_str_free(&ad);
    dspy_str_free(&a);
    dspy_str_free(&f);

    /* resuming with other settings is refused; resuming where nothing was saved too */
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s' %s --learning_rate 2e-3 --resume",
             test_bin("dspy"), g_model, g_data, dir, k_common);
    CHECK(run_cmd(cmd, &out) != 0);
    CHECK_CONTAINS(out, "error: ");
    CHECK_CONTAINS(out, "other settings, data or base model");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/empty' %s --resume", test_bin("dspy"),
             g_model, g_data, test_tmpdir(), k_common);
    CHECK(run_cmd(cmd, &out) != 0);
    CHECK_CONTAINS(out, "no checkpoint-N directory to resume from");
    free(out);
}

/* --device: names by form; cuda without a GPU is refused before anything loads and auto falls
 * back to the CPU; with a GPU, cuda trains to the CPU's losses (F32 both, 1e-5 relative). */
static void test_device(void) {
    if (!setup()) return;
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/dx' --device tpu", test_bin("dspy"),
             g_model, g_data, test_tmpdir());
    CHECK(run_cmd(cmd, &out) != 0);
    CHECK_CONTAINS(out, "device is 'tpu'");
    free(out);
    const char *why = NULL;
    bool gpu = dspy_cuda_device_count(&why) > 0;
    if (!gpu) {
        snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/dx' --device cuda --quiet",
                 test_bin("dspy"), g_model, g_data, test_tmpdir());
        CHECK(run_cmd(cmd, &out) != 0);
        CHECK_CONTAINS(out, "error: ");
        CHECK_CONTAINS(out, "use --device cpu");
        free(out);
    }
    const char *devs[2] = {"cpu", gpu ? "cuda" : "auto"};
    double l[2][4];
    int n[2] = {0, 0};
    for (int d = 0; d < 2; d++) {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/dev-%s", test_tmpdir(), devs[d]);
        snprintf(cmd, sizeof cmd,
                 "'%s' finetune --model '%s' --data '%s' --out '%s' --device %s --max_steps 2 "
                 "--gradient_accumulation_steps 4 --learning_rate 1e-3 --quiet",
                 test_bin("dspy"), g_model, g_data, dir, devs[d]);
        CHECK_INT(run_cmd(cmd, &out), 0);
        CHECK_CONTAINS(out, "2 optimizer steps");
        free(out);
        n[d] = losses(dir, l[d], 4);
    }
    CHECK_INT(n[0], 2);
    CHECK_INT(n[1], 2);
    for (int i = 0; i < n[0] && i < n[1]; i++) {
        double rel = fabs(l[1][i] - l[0][i]) / fabs(l[0][i]);
        if (gpu) printf("  --device cuda step %d: loss %.9g vs cpu %.9g (rel %.2g)\n", i + 1, l[1][i], l[0][i], rel);
        CHECK(gpu ? rel <= 1e-5 : rel == 0);
    }
}

/* Data parallel (--gpus N, torchrun's variables): the errors found before any work, the
 * one-rank path (WORLD_SIZE=1 set: the same bits as a plain run), and with two GPUs visible a
 * real two-rank run whose losses match one GPU's (the steps split their sequences over the
 * ranks; F32 sums in another order, BF16 GEMMs on smaller passes: relative 2e-3). */
static void test_gpus(void) {
    if (!setup()) return;
    char cmd[4096], *out = NULL;
    const char *bin = test_bin("dspy");
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/g' --gpus 2 --device cpu", bin, g_model,
             g_data, test_tmpdir());
    CHECK_INT(run_cmd(cmd, &out), 2);
    CHECK_CONTAINS(out, "--device cpu is the CPU");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/g' --gpus 0", bin, g_model, g_data,
             test_tmpdir());
    CHECK_INT(run_cmd(cmd, &out), 2);
    CHECK_CONTAINS(out, "--gpus must be 1..64");
    free(out);
    snprintf(cmd, sizeof cmd, "WORLD_SIZE=2 '%s' finetune --model '%s' --data '%s' --out '%s/g' --quiet", bin, g_model,
             g_data, test_tmpdir());
    CHECK(run_cmd(cmd, &out) != 0);
    CHECK_CONTAINS(out, "RANK is not set");
    free(out);
    snprintf(cmd, sizeof cmd, "WORLD_SIZE=2 RANK=1 '%s' finetune --model '%s' --data '%s' --out '%s/g' --device cpu "
             "--quiet", bin, g_model, g_data, test_tmpdir());
    CHECK(run_cmd(cmd, &out) != 0);
    CHECK_CONTAINS(out, "ranks need CUDA GPUs");
    free(out);
    char gdir[1100];
    snprintf(gdir, sizeof gdir, "%s/g/train.jsonl", test_tmpdir());
    CHECK(!exists(gdir)); /* nothing started */
    const char *why = NULL;
    int gpus = dspy_cuda_device_count(&why);
    if (gpus < 2) {
        snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/g' --gpus 2 --quiet", bin, g_model,
                 g_data, test_tmpdir());
        CHECK_INT(run_cmd(cmd, &out), 2);
        CHECK_CONTAINS(out, "--gpus 2 needs 2 GPUs");
        free(out);
    }
    /* one rank, placed by the variables, vs no variables: the same run */
    const char *dev = gpus > 0 ? "cuda" : "cpu";
    double l[3][4];
    int n[3] = {0, 0, 0};
    const char *pre[3] = {"", "WORLD_SIZE=1 RANK=0 LOCAL_RANK=0", NULL};
    for (int v = 0; v < 3; v++) {
        if (v == 2 && gpus < 2) break;
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/gpus-%d", test_tmpdir(), v);
        snprintf(cmd, sizeof cmd,
                 "%s '%s' finetune --model '%s' --data '%s' --out '%s' --device %s --max_steps 2 "
                 "--gradient_accumulation_steps 4 --learning_rate 1e-3 --quiet%s",
                 v < 2 ? pre[v] : "", bin, g_model, g_data, dir, dev, v == 2 ? " --gpus 2" : "");
        int rc = run_cmd(cmd, &out);
        CHECK_INT(rc, 0);
        if (rc) printf("%s\n", out);
        CHECK_CONTAINS(out, "2 optimizer steps");
        free(out);
        n[v] = losses(dir, l[v], 4);
        CHECK_INT(n[v], 2);
    }
    for (int i = 0; i < n[0] && i < n[1]; i++) CHECK(l[1][i] == l[0][i]);
    for (int i = 0; i < n[0] && i < n[2]; i++) {
        double rel = fabs(l[2][i] - l[0][i]) / fabs(l[0][i]);
        printf("  --gpus 2 step %d: loss %.9g vs one GPU %.9g (rel %.2g)\n", i + 1, l[2][i], l[0][i], rel);
        CHECK(rel <= 2e-3);
    }
    if (gpus < 2) return;
    /* kill -9 of the launcher (its ranks die with it) once a checkpoint is saved, then the run
     * resumed on ONE GPU: the same final loss as an uninterrupted one-GPU run */
    char dir[1100], ck[1200], whole[1100];
    snprintf(dir, sizeof dir, "%s/gpus-kill", test_tmpdir());
    snprintf(whole, sizeof whole, "%s/gpus-whole", test_tmpdir());
    snprintf(ck, sizeof ck, "%s/checkpoint-2/trainer_state.json", dir);
    const char *args = "--device cuda --gradient_accumulation_steps 2 --save_steps 2 --learning_rate 1e-3 --quiet";
    snprintf(cmd, sizeof cmd, "exec '%s' finetune --model '%s' --data '%s' --out '%s' %s --gpus 2 >/dev/null 2>&1", bin,
             g_model, g_data, dir, args);
    CHECK(kill_when(cmd, ck));
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s' %s --resume", bin, g_model, g_data, dir,
             args);
    CHECK_INT(run_cmd(cmd, &out), 0);
    CHECK_CONTAINS(out, "(resumed at step 2)");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s' %s", bin, g_model, g_data, whole, args);
    CHECK_INT(run_cmd(cmd, &out), 0);
    free(out);
    double la[16], lb[16];
    int na = losses(whole, la, 16), nb = losses(dir, lb, 16);
    CHECK_INT(nb, na);
    if (na > 0 && nb == na) {
        double rel = fabs(lb[nb - 1] - la[na - 1]) / fabs(la[na - 1]);
        printf("  killed on 2 GPUs, resumed on 1: final loss %.9g vs uninterrupted %.9g (rel %.2g)\n", lb[nb - 1],
               la[na - 1], rel);
        CHECK(rel <= 2e-3);
    }
}

static void test_lora_and_errors(void) {
    if (!setup()) return;
    char cmd[4096], dir[1024], *out = NULL;
    snprintf(dir, sizeof dir, "%s/lora", test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "'%s' finetune --model '%s' --data '%s' --out '%s' --use_peft true --lora_r 4 --max_steps 2 "
             "--gradient_accumulation_steps 4 --learning_rate 1e-2 --quiet",
             test_bin("dspy"), g_model, g_data, dir);
    CHECK_INT(run_cmd(cmd, &out), 0);
    CHECK_CONTAINS(out, "2 optimizer steps");
    CHECK_CONTAINS(out, "8192 trainable parameters"); /* 2 layers x 7 modules x r 4 x (in + out) */
    free(out);
    dspy_str ck = DSPY_STR_INIT;
    dspy_str_appendf(&ck, "%s/checkpoint-2/adapter_model.safetensors", dir);
    CHECK(exists(ck.ptr));
    dspy_str_free(&ck);
    /* merged: a q_proj differs from the base model's, the embeddings do not */
    dspy_checkpoint *base = NULL, *tuned = NULL;
    CHECK_OK(dspy_checkpoint_open(g_model, &base));
    CHECK_OK(dspy_checkpoint_open(dir, &tuned));
    if (base && tuned) {
        const dspy_tensor_info *qb = dspy_checkpoint_find(base, "model.layers.0.self_attn.q_proj.weight");
        const dspy_tensor_info *qt = dspy_checkpoint_find(tuned, "model.layers.0.self_attn.q_proj.weight");
        const dspy_tensor_info *eb = dspy_checkpoint_find(base, "model.embed_tokens.weight");
        const dspy_tensor_info *et = dspy_checkpoint_find(tuned, "model.embed_tokens.weight");
        CHECK(qb && qt && eb && et);
        if (qb && qt && eb && et) {
            CHECK(qt->dtype == DSPY_DTYPE_BF16);
            CHECK(qb->nbytes == qt->nbytes && memcmp(qb->data, qt->data, qb->nbytes) != 0);
            CHECK(eb->nbytes == et->nbytes && memcmp(eb->data, et->data, eb->nbytes) == 0);
        }
    }
    dspy_checkpoint_free(base);
    dspy_checkpoint_free(tuned);

    /* CLI errors: one error line, non-zero exit */
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/x' --learning_rate fast",
             test_bin("dspy"), g_model, g_data, test_tmpdir());
    CHECK(run_cmd(cmd, &out) != 0);
    CHECK_CONTAINS(out, "error: ");
    CHECK_CONTAINS(out, "learning_rate is 'fast'");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s/none.jsonl' --out '%s/x'", test_bin("dspy"),
             g_model, test_tmpdir(), test_tmpdir());
    CHECK(run_cmd(cmd, &out) != 0);
    CHECK_CONTAINS(out, "no such training data file");
    free(out);
    dspy_str bad = DSPY_STR_INIT;
    dspy_str_appendf(&bad, "%s/bad.jsonl", test_tmpdir());
    CHECK_OK(dspy_write_file(bad.ptr, "not json\n", 9));
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/x'", test_bin("dspy"), g_model, bad.ptr,
             test_tmpdir());
    CHECK(run_cmd(cmd, &out) != 0);
    CHECK_CONTAINS(out, "line 1: bad_json");
    CHECK_CONTAINS(out, "no usable training example");
    free(out);
    dspy_str_free(&bad);
    snprintf(cmd, sizeof cmd, "'%s' finetune --help", test_bin("dspy"));
    CHECK_INT(run_cmd(cmd, &out), 0);
    CHECK_CONTAINS(out, "--gradient_accumulation_steps N");
    free(out);
}

static void test_shared_prefix(void) {
    if (!setup()) return;
    char data[1024], cmd[8192], dir[2][1024], *out = NULL;
    snprintf(data, sizeof data, "%s/shared.jsonl", test_tmpdir());
    dspy_str d = DSPY_STR_INIT;
    for (int i = 0; i < 8; i++)
        dspy_str_appendf(&d, "{\"messages\": [{\"role\": \"system\", \"content\": \"You are a careful assistant of a bank. "
                             "Read the customer's message, think about which of the seventy-seven intents it "
                             "expresses, and answer with that intent only, in lower case, without any other "
                             "word.\"}, {\"role\": \"user\", \"content\": \"question %d\"}, "
                             "{\"role\": \"assistant\", \"content\": \"answer %d\"}]}\n", i, i % 3);
    CHECK_OK(dspy_write_file(data, d.ptr, d.len));
    dspy_str_free(&d);
    for (int v = 0; v < 2; v++) {
        snprintf(dir[v], sizeof dir[v], "%s/shared_%d", test_tmpdir(), v);
        snprintf(cmd, sizeof cmd,
                 "'%s' finetune --model '%s' --data '%s' --out '%s' --num_train_epochs 1 "
                 "--max_seq_length 250 --gradient-accumulation-steps 2 --learning_rate 1e-3 --quiet%s",
                 test_bin("dspy"), g_model, data, dir[v], v ? " --share_prefix false" : "");
        CHECK_INT(run_cmd(cmd, &out), 0);
        if (v == 0) CHECK_CONTAINS(out, "prefix-shared steps: the step's examples share their first");
        else CHECK(!strstr(out, "prefix-shared"));
        free(out);
    }
    static const char *keys[] = {"\"loss\":", "\"grad_norm\":", "\"tokens\":", "\"labels\":"};
    for (int k = 0; k < 4; k++) {
        double a[4], b[4];
        int na = metric(dir[0], keys[k], a, 4), nb = metric(dir[1], keys[k], b, 4);
        CHECK_INT(na, 2);
        CHECK_INT(nb, 2);
        for (int i = 0; i < na && i < nb; i++)
            check_report(fabs(a[i] - b[i]) <= 1e-5 * fabs(b[i]), __FILE__, __LINE__,
                         "step %d %s %.9g shared vs %.9g unshared", i + 1, keys[k], a[i], b[i]);
    }
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/shared_bad' --share_prefix maybe",
             test_bin("dspy"), g_model, data, test_tmpdir());
    CHECK_INT(run_cmd(cmd, &out), 2);
    CHECK_CONTAINS(out, "share_prefix is 'maybe'; expected true or false");
    free(out);
}

/* Epoch-end checkpoints: 2 epochs of 8 steps, every checkpoint kept. With epoch_save_after_s 0
 * the end of epoch 1 (step 8) writes one; with the default (300 s: these seconds-long epochs never
 * reach it) only the end of training (16) does. A negative value is refused before training. */
static void test_epoch_saves(void) {
    if (!setup()) return;
    char cmd[4096], *out = NULL;
    const char *common = "--num_train_epochs 2 --gradient-accumulation-steps 1 --packing false --save_total_limit 0 "
                         "--learning_rate 1e-3 --quiet";
    for (int every = 0; every < 2; every++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/epoch_saves_%d", test_tmpdir(), every);
        snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s' %s%s", test_bin("dspy"), g_model,
                 g_data, dir, common, every ? " --epoch_save_after_s 0" : "");
        CHECK_INT(run_cmd(cmd, &out), 0);
        free(out);
        dspy_str p = DSPY_STR_INIT;
        dspy_str_appendf(&p, "%s/checkpoint-8", dir);
        check_report(exists(p.ptr) == (every == 1), __FILE__, __LINE__, "%s: %s", p.ptr,
                     every ? "missing with epoch_save_after_s 0" : "written although the epoch took < 300 s");
        dspy_str_clear(&p);
        dspy_str_appendf(&p, "%s/checkpoint-16", dir);
        CHECK(exists(p.ptr));
        dspy_str_free(&p);
    }
    snprintf(cmd, sizeof cmd, "'%s' finetune --model '%s' --data '%s' --out '%s/epoch_saves_bad' %s --epoch_save_after_s -1",
             test_bin("dspy"), g_model, g_data, test_tmpdir(), common);
    CHECK_INT(run_cmd(cmd, &out), 2);
    CHECK_CONTAINS(out, "epoch_save_after_s is -1; it must be >= 0");
    free(out);
}

int main(void) {
    RUN(test_train_and_generate);
    RUN(test_epoch_saves);
    RUN(test_kill_and_resume);
    RUN(test_lora_and_errors);
    RUN(test_device);
    RUN(test_gpus);
    RUN(test_shared_prefix);
    return check_summary("test_finetune");
}
