/* trainer.c — dspy_finetune: the supervised fine-tuning loop (include/dspy/train.h).
 *
 * Loads the model, tokenizer, chat template and data; plans every epoch (order from
 * Random(seed + epoch), next-fit packing, ceil(sequences / (B*G)) optimizer steps); runs the
 * optimizer steps (train/optim.h over train/backward.h); logs train.jsonl; saves checkpoints
 * (train/checkpoint.h); resumes; exports the model (LoRA merged) in the input's dtype.
 * Follows DSPy's train_sft_locally / HF Trainer semantics as described in dspy/train.h.
 * The trainable runs on the device of the `device` train_kwarg (kern/ops.h CPU reference or
 * CUDA, planned once for max_seq_length and B*G sequences per step). With share_prefix (the
 * default) each step's sequences go through train/share_prefix.h first: a prompt prefix common
 * to the step's examples is computed once per sequence; train.jsonl's tokens (and tokens/s)
 * still count every example's whole length, the work the step stands for.
 *
 * Data parallel (several GPUs): with torchrun's variables set (WORLD_SIZE > 1; `dspy finetune
 * --gpus N` sets them for the processes it starts), every rank loads the same model and data,
 * plans the same steps and runs its share of each step's sequences on GPU LOCAL_RANK; the
 * optimizer sums the gradients over the ranks (train/optim.h, dspy_optimizer_set_dist), so a
 * step is the same whatever the number of GPUs and a checkpoint resumes on any number of them.
 * Rank 0 alone writes train.jsonl, the checkpoints and the model, and reports progress; the
 * ranks read the same files, so they share one filesystem (one machine, or a shared mount).
 */
#include "dspy/train.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dspy/chat_template.h"
#include "dspy/hash.h"
#include "dspy/json.h"
#include "dspy/log.h"
#include "dspy/model.h"
#include "dspy/progress.h"
#include "dspy/random.h"
#include "dspy/sft_data.h"
#include "dspy/clock.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"
#include "train/backward.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/optim.h"
#include "train/schedule.h"
#include "train/share_prefix.h"

enum { MAX_LOGGED_ISSUES = 50 };

typedef struct {
    dspy_train_params p;
    const char *out;
    const char *model_dir;
    const char *data_path;
    dspy_model *model;
    dspy_tokenizer *tok;
    dspy_chat_template *tpl;
    dspy_sft_dataset *ds;
    dspy_trainable *tr;
    dspy_optimizer *opt;
    dspy_share_buf share; /* the prefix-shared layouts of the steps */
    dspy_lora_config lora;
    dspy_device dev; /* where the steps run */
    dspy_dist *dist; /* the ranks of a data-parallel run (one rank: the whole run here) */
    bool lead;       /* rank 0: writes the files and reports progress */
    /* plan */
    int64_t n_epochs;
    int64_t *steps_in_epoch; /* (n_epochs) */
    int64_t total_steps;
    int64_t warmup;
    size_t micro; /* sequences per optimizer step: B * G */
    char fingerprint[DSPY_SHA256_HEX_LEN + 1];
    char *resume_dir; /* the checkpoint to resume from */
    int64_t resume_step;
    int metrics_fd;
} trainer;

static void epoch_order(const trainer *T, const dspy_pyrandom *seeded, size_t *order) {
    dspy_pyrandom r = *seeded;
    size_t n = dspy_sft_count(T->ds);
    for (size_t i = 0; i < n; i++) order[i] = i;
    dspy_pyrandom_shuffle(&r, order, n, sizeof *order);
}

/* Steps of every epoch and the total (max_steps may cut the last epoch or add epochs). */
static dspy_status plan(trainer *T) {
    size_t n = dspy_sft_count(T->ds);
    size_t *order = malloc(n * sizeof *order);
    int64_t cap = T->p.max_steps > 0 ? 16 : T->p.num_train_epochs;
    T->steps_in_epoch = malloc((size_t)cap * sizeof *T->steps_in_epoch);
    if (!order || !T->steps_in_epoch) {
        free(order);
        return dspy_fail(DSPY_ERR_NOMEM, "finetune: out of memory");
    }
    dspy_status st = DSPY_OK;
    int64_t total = 0, e = 0;
    for (;; e++) {
        if (T->p.max_steps > 0 ? total >= T->p.max_steps : e >= T->p.num_train_epochs) break;
        if (e == cap) {
            int64_t *nv = realloc(T->steps_in_epoch, (size_t)(cap * 2) * sizeof *nv);
            if (!nv) {
                st = dspy_fail(DSPY_ERR_NOMEM, "finetune: out of memory");
                break;
            }
            T->steps_in_epoch = nv;
            cap *= 2;
        }
        dspy_pyrandom r;
        dspy_pyrandom_seed(&r, T->p.seed + (uint64_t)e);
        epoch_order(T, &r, order);
        size_t nseq = 0;
        if ((st = dspy_sft_pack_count_only(T->ds, order, n, T->p.max_seq_length, T->p.packing, &nseq))) break;
        int64_t steps = (int64_t)((nseq + T->micro - 1) / T->micro);
        if (T->p.max_steps > 0 && total + steps > T->p.max_steps) steps = T->p.max_steps - total;
        T->steps_in_epoch[e] = steps;
        total += steps;
    }
    free(order);
    T->n_epochs = e;
    T->total_steps = total;
    T->warmup = dspy_lr_warmup_steps(total, T->p.warmup_ratio, T->p.warmup_steps);
    return st;
}

/* SHA-256 over what decides the result: settings, data bytes, base model config. */
static dspy_status fingerprint(trainer *T, const dspy_model_config *mc) {
    const dspy_train_params *p = &T->p;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s,
                     "dspy.c finetune v1\nepochs=%d\nbatch=%d\naccum=%d\nlr=%.17g\nmax_seq_length=%d\npacking=%d\n"
                     "use_peft=%d\nsched=%s\nwarmup_ratio=%.17g\nwarmup_steps=%d\nweight_decay=%.17g\n"
                     "max_grad_norm=%.17g\nbetas=%.17g,%.17g\neps=%.17g\nseed=%llu\nmax_steps=%lld\n"
                     "lora=%d,%.17g,%.17g\nchat_date=%s\nshare_prefix=%d\n",
                     p->num_train_epochs, p->per_device_train_batch_size, p->gradient_accumulation_steps,
                     p->learning_rate, p->max_seq_length, p->packing, p->use_peft,
                     dspy_lr_schedule_name(p->lr_scheduler_type), p->warmup_ratio, p->warmup_steps, p->weight_decay,
                     p->max_grad_norm, p->adam_beta1, p->adam_beta2, p->adam_epsilon, (unsigned long long)p->seed,
                     (long long)p->max_steps, p->use_peft ? p->lora_r : 0, p->use_peft ? p->lora_alpha : 0.0,
                     p->use_peft ? p->lora_dropout : 0.0, p->chat_date ? p->chat_date : "(default)",
                     p->share_prefix);
    char *cfg = dspy_model_config_to_json(mc);
    if (cfg) dspy_str_append(&s, cfg);
    free(cfg);
    char *data = NULL;
    size_t len = 0;
    dspy_status st = dspy_read_file(T->data_path, &data, &len);
    if (!st) {
        char h[DSPY_SHA256_HEX_LEN + 1];
        st = dspy_sha256_hex(data, len, h);
        dspy_str_appendf(&s, "data=%s\n", h);
    }
    free(data);
    if (!st && (!cfg || !dspy_str_ok(&s))) st = dspy_fail(DSPY_ERR_NOMEM, "finetune: out of memory");
    if (!st) st = dspy_sha256_hex(s.ptr, s.len, T->fingerprint);
    dspy_str_free(&s);
    return st;
}

/* ---- train.jsonl ------------------------------------------------------------------------------- */

static dspy_status metrics_path(const trainer *T, dspy_str *out) {
    dspy_str_appendf(out, "%s/train.jsonl", T->out);
    return dspy_str_ok(out) ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "finetune: out of memory");
}

/* Keeps the lines of steps <= keep_step (a resumed run rewrites what the killed one logged after
 * its last checkpoint); keep_step 0 empties the file. */
static dspy_status metrics_open(trainer *T, int64_t keep_step) {
    if (!T->lead) return DSPY_OK; /* rank 0 logs the run */
    dspy_str path = DSPY_STR_INIT, kept = DSPY_STR_INIT;
    dspy_status st = metrics_path(T, &path);
    if (st) return st;
    if (keep_step > 0) {
        char *data = NULL;
        size_t len = 0;
        if (dspy_read_file(path.ptr, &data, &len) == DSPY_OK) {
            const char *line = data;
            while (line < data + len) {
                const char *nl = memchr(line, '\n', (size_t)(data + len - line));
                size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
                long long step = -1;
                if (nl && sscanf(line, "{\"step\":%lld", &step) == 1 && step <= keep_step) {
                    dspy_str_appendn(&kept, line, ll);
                    dspy_str_appendc(&kept, '\n');
                }
                line += ll + 1;
            }
        }
        free(data);
    }
    st = dspy_write_file(path.ptr, kept.ptr ? kept.ptr : "", kept.len);
    if (!st) {
        T->metrics_fd = open(path.ptr, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (T->metrics_fd < 0) st = dspy_fail(DSPY_ERR_IO, "%s: cannot open: %s", path.ptr, strerror(errno));
    }
    dspy_str_free(&path);
    dspy_str_free(&kept);
    return st;
}

static void appendf_real(dspy_str *s, const char *key, double x) {
    char buf[40];
    dspy_py_float_repr(x, buf, sizeof buf);
    dspy_str_appendf(s, ",\"%s\":%s", key, buf);
}

static dspy_status metrics_write(trainer *T, const dspy_train_progress *pr, int64_t labels) {
    if (!T->lead) return DSPY_OK;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "{\"step\":%lld", (long long)pr->step);
    appendf_real(&s, "epoch", pr->epoch);
    appendf_real(&s, "loss", pr->loss);
    appendf_real(&s, "grad_norm", pr->grad_norm);
    appendf_real(&s, "lr", pr->lr);
    dspy_str_appendf(&s, ",\"tokens\":%lld,\"labels\":%lld", (long long)pr->tokens, (long long)labels);
    appendf_real(&s, "tokens_per_s", pr->tokens_per_s);
    appendf_real(&s, "elapsed", pr->elapsed_s);
    dspy_str_append(&s, "}\n");
    dspy_status st = DSPY_OK;
    if (!dspy_str_ok(&s)) st = dspy_fail(DSPY_ERR_NOMEM, "finetune: out of memory");
    else if (write(T->metrics_fd, s.ptr, s.len) != (ssize_t)s.len)
        st = dspy_fail(DSPY_ERR_IO, "%s/train.jsonl: write failed: %s", T->out, strerror(errno));
    dspy_str_free(&s);
    return st;
}

/* ---- the run ------------------------------------------------------------------------------------ */

static void report_issues(const trainer *T) {
    size_t n = dspy_sft_n_issues(T->ds);
    for (size_t i = 0; i < n && i < MAX_LOGGED_ISSUES; i++) {
        const dspy_sft_issue *is = dspy_sft_issue_at(T->ds, i);
        dspy_log(DSPY_LOG_WARN, "%s: line %lld: %s: %s (skipped)", T->data_path, (long long)is->line,
                 dspy_sft_issue_kind_name(is->kind), is->message);
    }
    if (n > MAX_LOGGED_ISSUES)
        dspy_log(DSPY_LOG_WARN, "%s: %zu more lines skipped", T->data_path, n - (size_t)MAX_LOGGED_ISSUES);
    if (n)
        dspy_log(DSPY_LOG_WARN, "%s: %zu of %zu lines skipped, training on %zu examples", T->data_path, n,
                 dspy_sft_n_lines(T->ds), dspy_sft_count(T->ds));
}

static void emit(dspy_train_progress_fn fn, void *ud, const dspy_train_progress *p) {
    if (fn) fn(ud, p);
}

/* The cheap checks first (data file, model config, the checkpoint to resume from), so that a
 * wrong call fails before the model and tokenizer are loaded. */
static dspy_status precheck(trainer *T) {
    struct stat sb;
    if (stat(T->data_path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return dspy_fail(DSPY_ERR_NOTFOUND, "%s: no such training data file", T->data_path);
    dspy_model_config mc;
    dspy_status st = dspy_model_config_load(T->model_dir, &mc);
    if (st) return st;
    if ((st = fingerprint(T, &mc))) return st;
    if (!T->p.resume) return DSPY_OK;
    if ((st = dspy_ckpt_find_latest(T->out, &T->resume_dir, &T->resume_step)))
        return st == DSPY_ERR_NOTFOUND ? dspy_fail(DSPY_ERR_ARG, "resume: %s", dspy_errmsg()) : st;
    dspy_ckpt_state cs;
    return dspy_ckpt_read_state(T->resume_dir, T->fingerprint, &cs);
}

/* The ranks of this run, from torchrun's variables: one rank unless WORLD_SIZE > 1, which needs
 * CUDA (each rank on GPU LOCAL_RANK) and meets the others (train/dist.h) before anything big is
 * loaded, so a rank that cannot start stops the run early. */
static dspy_status join_ranks(trainer *T) {
    dspy_dist_env env;
    dspy_status st = dspy_dist_env_read(&env);
    if (st) return dspy_fail_wrap(st, "finetune: the data-parallel variables");
    if (env.world > 1) {
        if (T->dev.type != DSPY_DEVICE_CUDA)
            return dspy_fail(DSPY_ERR_ARG, "finetune: WORLD_SIZE=%d ranks need CUDA GPUs (device '%s' is the CPU)",
                             env.world, T->p.device ? T->p.device : "auto");
        T->dev.ordinal = env.local_rank;
        dspy_log(DSPY_LOG_INFO, "finetune: rank %d of %d on cuda:%d, meeting the others at %s:%d", env.rank, env.world,
                 env.local_rank, env.master_addr, env.master_port);
    }
    if ((st = dspy_dist_new(&env, T->dev.type == DSPY_DEVICE_CUDA, 600.0, &T->dist))) return st;
    T->lead = dspy_dist_rank(T->dist) == 0;
    return DSPY_OK;
}

static dspy_status setup(trainer *T, dspy_train_result *res) {
    dspy_model_params mp = dspy_model_params_default();
    mp.n_threads = T->p.n_threads;
    dspy_status st;
    if ((st = precheck(T))) return st;
    /* a GPU asked for and absent fails here, before anything is loaded */
    if ((st = dspy_device_parse(T->p.device, &T->dev))) return st;
    if ((st = join_ranks(T))) return st;
    if ((st = dspy_model_load(T->model_dir, &mp, &T->model))) return st;
    if ((st = dspy_tokenizer_load(T->model_dir, &T->tok))) return dspy_fail_wrap(st, "finetune: the model's tokenizer");
    if ((st = dspy_chat_template_load(T->model_dir, &T->tpl)))
        return dspy_fail_wrap(st, "finetune: the model's chat template");
    dspy_sft_params sp = dspy_sft_params_default();
    sp.max_seq_length = T->p.max_seq_length;
    sp.vocab_size = dspy_model_config_get(T->model)->vocab_size;
    sp.chat_date = T->p.chat_date;
    if ((st = dspy_sft_load(T->data_path, T->tok, T->tpl, &sp, &T->ds))) return st;
    report_issues(T);
    res->n_examples = dspy_sft_count(T->ds);
    res->n_skipped = dspy_sft_n_issues(T->ds);
    if (dspy_sft_count(T->ds) == 0)
        return dspy_fail(DSPY_ERR_ARG, "%s: no usable training example (%zu lines, %zu skipped; see the warnings)",
                         T->data_path, dspy_sft_n_lines(T->ds), dspy_sft_n_issues(T->ds));
    T->lora = (dspy_lora_config){.r = T->p.lora_r, .alpha = (float)T->p.lora_alpha,
                                 .dropout = (float)T->p.lora_dropout, .enabled = T->p.use_peft};
    dspy_device dev = T->dev;
    if ((st = dspy_trainable_new_on(T->model, T->p.use_peft ? &T->lora : NULL, T->p.seed, dev, false, &T->tr)))
        return st;
    if (dev.type == DSPY_DEVICE_CPU && T->p.cpu_kernels && strcmp(T->p.cpu_kernels, "fast") == 0 &&
        (st = dspy_trainable_use_fast_kernels(T->tr)))
        return st;
    if (dev.type != DSPY_DEVICE_CPU) {
        char name[32];
        dspy_device_str(dev, name, sizeof name);
        /* bf16 (DSPy's default): BF16 GEMMs over F32 master weights; false: the F32 parity path */
        if ((st = dspy_trainable_set_bf16(T->tr, T->p.bf16))) return st;
        dspy_log(DSPY_LOG_INFO, "finetune: training on %s (%s)", name,
                 T->p.bf16 ? "BF16 GEMMs, F32 master weights" : "F32");
        /* activations for the longest sequence and the step's staging, once, before any step */
        if ((st = dspy_trainable_plan(T->tr, T->p.max_seq_length, (int)T->micro))) return st;
    }
    dspy_adamw_hparams h = {T->p.adam_beta1, T->p.adam_beta2, T->p.adam_epsilon, T->p.weight_decay};
    if ((st = dspy_optimizer_new(T->tr, &h, &T->opt))) return st;
    if ((st = dspy_optimizer_set_dist(T->opt, T->dist))) return st;
    res->trainable_params = (int64_t)dspy_trainable_numel(T->tr);
    if ((st = plan(T))) return st;
    res->num_epochs = (int32_t)T->n_epochs;
    return DSPY_OK;
}

static dspy_status save(trainer *T, int64_t step, int64_t epoch, int64_t seq_pos, double elapsed,
                        dspy_train_progress_fn fn, void *ud, double epoch_f) {
    if (!T->lead) return DSPY_OK; /* rank 0 writes the checkpoints: the ranks' states are the same */
    dspy_ckpt_state cs = {.step = step, .epoch = epoch, .seq_pos = seq_pos,
                          .dropout_rng = dspy_trainable_rng_get(T->tr), .elapsed_s = elapsed};
    dspy_pyrandom_seed(&cs.data_rng, T->p.seed + (uint64_t)epoch);
    memcpy(cs.fingerprint, T->fingerprint, sizeof cs.fingerprint);
    char *path = NULL;
    dspy_status st = dspy_ckpt_save(T->out, dspy_model_config_get(T->model), T->p.use_peft ? &T->lora : NULL, T->tr,
                                    T->opt, &cs, T->p.save_total_limit, &path);
    if (st) return st;
    dspy_train_progress pr = {.event = DSPY_TRAIN_SAVE, .step = step, .total_steps = T->total_steps,
                              .epoch = epoch_f, .num_epochs = (int32_t)T->n_epochs, .elapsed_s = elapsed,
                              .eta_s = -1, .checkpoint = path};
    emit(fn, ud, &pr);
    free(path);
    return DSPY_OK;
}

static dspy_status run(trainer *T, dspy_train_progress_fn fn, void *ud, dspy_train_result *res) {
    dspy_status st;
    if (!T->lead) fn = NULL; /* one progress report for the run: rank 0's */
    int64_t step = 0, epoch = 0, seq_pos = 0;
    double elapsed0 = 0;
    dspy_pyrandom epoch_rng;
    bool have_rng = false;
    if (T->p.resume) {
        dspy_ckpt_state cs;
        if ((st = dspy_ckpt_load(T->resume_dir, T->fingerprint, T->tr, T->opt, &cs))) return st;
        dspy_log(DSPY_LOG_INFO, "resuming from %s (step %lld of %lld)", T->resume_dir, (long long)cs.step,
                 (long long)T->total_steps);
        step = cs.step;
        epoch = cs.epoch;
        seq_pos = cs.seq_pos;
        elapsed0 = cs.elapsed_s;
        epoch_rng = cs.data_rng;
        have_rng = true;
        res->resumed_from = step;
    } else if (T->lead) {
        if ((st = dspy_ckpt_remove_all(T->out))) return st;
    }
    if ((st = metrics_open(T, step))) return st;
    dspy_train_progress pr = {.event = DSPY_TRAIN_START, .step = step, .total_steps = T->total_steps,
                              .num_epochs = (int32_t)T->n_epochs, .elapsed_s = elapsed0, .eta_s = -1};
    emit(fn, ud, &pr);
    size_t n = dspy_sft_count(T->ds);
    size_t *order = malloc(n * sizeof *order);
    dspy_train_seq *batch = malloc(T->micro * sizeof *batch);
    dspy_sft_pack *pack = NULL;
    if (!order || !batch) {
        st = dspy_fail(DSPY_ERR_NOMEM, "finetune: out of memory");
        goto done;
    }
    double t_start = dspy_now_s(), last_save_s = 0; /* training seconds of this run at the last checkpoint */
    bool told_share = false;
    res->first_loss = res->final_loss = NAN;
    for (; epoch < T->n_epochs && step < T->total_steps; epoch++, seq_pos = 0, have_rng = false) {
        if (!have_rng) dspy_pyrandom_seed(&epoch_rng, T->p.seed + (uint64_t)epoch);
        epoch_order(T, &epoch_rng, order);
        dspy_sft_pack_free(pack);
        pack = NULL;
        if ((st = dspy_sft_pack_new(T->ds, order, n, T->p.max_seq_length, T->p.packing, &pack))) goto done;
        size_t nseq = dspy_sft_pack_count(pack);
        int64_t steps_before = 0;
        for (int64_t e = 0; e < epoch; e++) steps_before += T->steps_in_epoch[e];
        while ((size_t)seq_pos < nseq && step < T->total_steps) {
            size_t k = nseq - (size_t)seq_pos < T->micro ? nseq - (size_t)seq_pos : T->micro;
            int64_t step_tokens = 0;
            for (size_t i = 0; i < k; i++) {
                dspy_sft_seq s = dspy_sft_pack_at(pack, (size_t)seq_pos + i);
                batch[i] = (dspy_train_seq){s.ids, s.pos, s.targets, s.seg, s.T, 0};
                step_tokens += s.T;
            }
            const dspy_train_seq *run_batch = batch;
            size_t nrun = k;
            int32_t shared = 0;
            if (T->p.share_prefix &&
                (st = dspy_share_prefix(&T->share, batch, k, T->p.max_seq_length, DSPY_SHARE_MIN_PREFIX, &run_batch,
                                        &nrun, &shared)))
                goto done;
            if (shared && !told_share) {
                dspy_log(DSPY_LOG_INFO, "finetune: prefix-shared steps: the step's examples share their first %d "
                                        "tokens, computed once per sequence (share_prefix=false turns this off)",
                         (int)shared);
                told_share = true;
            }
            double lr = T->p.learning_rate * dspy_lr_lambda(T->p.lr_scheduler_type, step, T->warmup, T->total_steps);
            double t0 = dspy_now_s();
            dspy_step_stats ss;
            if ((st = dspy_optimizer_train_step(T->opt, run_batch, nrun, lr, T->p.max_grad_norm, &ss))) goto done;
            ss.tokens = step_tokens; /* the examples' whole length, shared or not */
            double dt = dspy_now_s() - t0;
            step++;
            seq_pos += (int64_t)k;
            res->steps_run++;
            res->tokens += ss.tokens;
            if (res->steps_run == 1) res->first_loss = ss.loss;
            res->final_loss = ss.loss;
            res->final_grad_norm = ss.grad_norm;
            double run_s = dspy_now_s() - t_start;
            int64_t in_epoch = step - steps_before;
            pr = (dspy_train_progress){
                .event = DSPY_TRAIN_STEP, .step = step, .total_steps = T->total_steps,
                .epoch = (double)epoch + (double)in_epoch / (double)(T->steps_in_epoch[epoch] ? T->steps_in_epoch[epoch] : 1),
                .num_epochs = (int32_t)T->n_epochs, .loss = ss.loss, .grad_norm = ss.grad_norm, .lr = lr,
                .tokens = ss.tokens, .tokens_per_s = dt > 0 ? (double)ss.tokens / dt : 0,
                .elapsed_s = elapsed0 + run_s,
                .eta_s = run_s / (double)res->steps_run * (double)(T->total_steps - step)};
            if ((st = metrics_write(T, &pr, ss.n_labels))) goto done;
            emit(fn, ud, &pr);
            bool epoch_end = (size_t)seq_pos >= nseq || in_epoch >= T->steps_in_epoch[epoch];
            bool epoch_save = epoch_end && run_s - last_save_s >= T->p.epoch_save_after_s;
            if (step % T->p.save_steps == 0 || epoch_save || step == T->total_steps) {
                int64_t ne = epoch_end ? epoch + 1 : epoch, np = epoch_end ? 0 : seq_pos;
                if ((st = save(T, step, ne, np, elapsed0 + run_s, fn, ud, pr.epoch))) goto done;
                last_save_s = dspy_now_s() - t_start;
            }
        }
    }
    res->train_seconds = dspy_now_s() - t_start;
    res->steps = step;
    if (T->lead && T->p.use_peft && (st = dspy_trainable_merge_lora(T->tr))) goto done;
    if (T->lead && (st = dspy_trainable_export(T->tr, T->out, NULL))) goto done;
    pr = (dspy_train_progress){.event = DSPY_TRAIN_END, .step = step, .total_steps = T->total_steps,
                               .epoch = (double)T->n_epochs, .num_epochs = (int32_t)T->n_epochs,
                               .loss = res->final_loss, .grad_norm = res->final_grad_norm,
                               .elapsed_s = elapsed0 + res->train_seconds, .eta_s = 0, .checkpoint = T->out};
    emit(fn, ud, &pr);
done:
    dspy_sft_pack_free(pack);
    free(order);
    free(batch);
    return st;
}

dspy_status dspy_finetune(const char *model_dir, const char *data_path, const char *out_dir,
                          const dspy_train_params *p, dspy_train_progress_fn progress, void *ud,
                          dspy_train_result *result) {
    dspy_train_result res_local;
    dspy_train_result *res = result ? result : &res_local;
    memset(res, 0, sizeof *res);
    res->first_loss = res->final_loss = res->final_grad_norm = NAN;
    trainer T = {.p = p ? *p : dspy_train_params_default(), .model_dir = model_dir, .data_path = data_path,
                 .metrics_fd = -1};
    dspy_status st = dspy_train_params_validate(&T.p);
    if (st) return st;
    T.out = out_dir ? out_dir : T.p.output_dir;
    if (!model_dir || !data_path || !T.out)
        return dspy_fail(DSPY_ERR_ARG, "finetune: needs a model directory, a data file and an output directory "
                                       "(out_dir or output_dir)");
    T.micro = (size_t)T.p.per_device_train_batch_size * (size_t)T.p.gradient_accumulation_steps;
    int saved_threads = omp_get_max_threads();
    if (T.p.n_threads > 0) omp_set_num_threads(T.p.n_threads);
    if (!(st = dspy_mkdir_p(T.out)) && !(st = setup(&T, res))) st = run(&T, progress, ud, res);
    /* rank 0's store serves the others until they are done with it */
    if (!st && T.dist) st = dspy_dist_barrier(T.dist, "finetune-end");
    if (T.metrics_fd >= 0) close(T.metrics_fd);
    if (T.p.n_threads > 0) omp_set_num_threads(saved_threads);
    dspy_optimizer_free(T.opt);
    dspy_dist_free(T.dist);
    dspy_share_buf_free(&T.share);
    dspy_trainable_free(T.tr);
    dspy_sft_free(T.ds);
    dspy_chat_template_free(T.tpl);
    dspy_tokenizer_free(T.tok);
    dspy_model_free(T.model);
    free(T.steps_in_epoch);
    free(T.resume_dir);
    return st;
}

/* ---- the ready progress bar --------------------------------------------------------------------- */

void dspy_train_bar_close(dspy_train_bar *b) {
    if (!b || !b->bar) return;
    dspy_progress_close(b->bar);
    b->bar = NULL;
}

void dspy_train_bar_update(void *ud, const dspy_train_progress *p) {
    dspy_train_bar *b = ud;
    if (!b || !b->out) return;
    char desc[160];
    switch (p->event) {
    case DSPY_TRAIN_START:
        dspy_train_bar_close(b);
        if (dspy_progress_new("Training", (long)p->total_steps, b->out, &b->bar) != DSPY_OK) b->bar = NULL;
        if (b->bar && p->step > 0) dspy_progress_update(b->bar, (long)p->step);
        b->shown = p->step;
        break;
    case DSPY_TRAIN_STEP:
        if (!b->bar) break;
        snprintf(desc, sizeof desc, "epoch %.2f/%d loss %.4f lr %.2e %.0f tok/s", p->epoch, p->num_epochs, p->loss,
                 p->lr, p->tokens_per_s);
        dspy_progress_set_desc(b->bar, desc);
        dspy_progress_update(b->bar, (long)(p->step - b->shown));
        b->shown = p->step;
        break;
    case DSPY_TRAIN_SAVE:
        break;
    case DSPY_TRAIN_END:
        dspy_train_bar_close(b);
        break;
    }
}
