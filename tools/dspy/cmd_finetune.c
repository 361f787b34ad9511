/* cmd_finetune.c — `dspy finetune`: supervised fine-tuning of a local model on chat JSONL.
 *
 * Every DSPy train_kwarg is a flag of the same name (--num_train_epochs 3, or with dashes,
 * --num-train-epochs 3), set through dspy_train_params_set; --resume continues from the newest
 * checkpoint in --out. Draws the training progress bar on stderr and prints a summary line on
 * stdout. See include/dspy/train.h for the loop, the files written and the defaults. --gpus N
 * runs N data-parallel ranks, one process per GPU (finetune_ranks.c); a rank (torchrun's
 * variables set) other than 0 records no run and prints no summary.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "args.h"
#include "dspy/str.h"
#include "finetune_ranks.h"
#include "dspy/train.h"
#include "track_cli.h"

static const char *const k_kwargs[] = {
    "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "max_seq_length", "packing", "bf16", "use_peft", "output_dir", "device", "lr_scheduler_type", "warmup_ratio",
    "warmup_steps", "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "seed",
    "save_steps", "save_total_limit", "max_steps", "lora_r", "lora_alpha", "lora_dropout", "n_threads", "chat_date",
    "cpu_kernels", "share_prefix", "epoch_save_after_s",
};

int cmd_finetune(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"model", "DIR", "the model directory to start from (config.json, model.safetensors, tokenizer, chat "
                         "template)", true, false, NULL},
        {"data", "FILE", "chat JSONL: one {\"messages\": [{\"role\", \"content\"}, ...]} per line", true, false, NULL},
        {"out", "DIR", "output directory (train.jsonl, checkpoint-N/, the fine-tuned model); default: "
                       "--output_dir", false, false, NULL},
        {"resume", NULL, "continue from the newest checkpoint-N in the output directory", false, false, NULL},
        {"quiet", NULL, "no progress bar", false, false, NULL},
        {"gpus", "N", "data-parallel training on GPUs 0..N-1 (CUDA_VISIBLE_DEVICES picks them), one process each; "
                      "every step splits its sequences over the GPUs, so the steps and the result do not depend on "
                      "N", false, false, "1"},
        {"force", NULL, "train again into an output directory that holds a fine-tuned model", false, false, NULL},
        {"num_train_epochs", "N", "epochs over the data", false, false, "5"},
        {"per_device_train_batch_size", "N", "packed sequences per micro-batch", false, false, "1"},
        {"gradient_accumulation_steps", "N", "micro-batches per optimizer step", false, false, "8"},
        {"learning_rate", "X", "peak learning rate of AdamW", false, false, "1e-5"},
        {"max_seq_length", "N", "longest example and packed sequence in tokens (longer examples are skipped)", false,
         false, "4096"},
        {"packing", "BOOL", "pack several examples into one sequence (no attention across them)", false, false,
         "true"},
        {"bf16", "BOOL", "accepted; training computes in fp32 (CPU and CUDA) and the output keeps the input's dtype",
         false, false,
         "true"},
        {"use_peft", "BOOL", "LoRA on every linear layer, merged into the weights at the end", false, false, "false"},
        {"output_dir", "DIR", "DSPy's name for --out", false, false, NULL},
        {"device", "NAME", "auto (CUDA when a GPU is visible, else cpu), cuda, cuda:N or cpu (DSPy's None: cpu)",
         false, false, NULL},
        {"lr_scheduler_type", "NAME", "constant, constant_with_warmup, linear or cosine", false, false, "constant"},
        {"warmup_ratio", "X", "warmup steps as a fraction of all steps (not used by constant)", false, false, "0.03"},
        {"warmup_steps", "N", "warmup steps; overrides warmup_ratio when > 0", false, false, "0"},
        {"weight_decay", "X", "AdamW decoupled weight decay", false, false, "0"},
        {"max_grad_norm", "X", "clip the global gradient norm (0: no clipping)", false, false, "2.0"},
        {"adam_beta1", "X", "AdamW beta1", false, false, "0.9"},
        {"adam_beta2", "X", "AdamW beta2", false, false, "0.999"},
        {"adam_epsilon", "X", "AdamW epsilon", false, false, "1e-8"},
        {"seed", "N", "data order (Random(seed + epoch)) and LoRA init/dropout", false, false, "42"},
        {"save_steps", "N", "checkpoint every N optimizer steps (and at the end)", false, false, "10000"},
        {"epoch_save_after_s", "S", "checkpoint at an epoch end when S seconds of training have passed since the last "
                                    "one (0: every epoch end)", false, false, "300"},
        {"save_total_limit", "N", "checkpoints kept (0: all)", false, false, "1"},
        {"max_steps", "N", "stop after N optimizer steps (-1: train num_train_epochs)", false, false, "-1"},
        {"lora_r", "N", "LoRA rank", false, false, "32"},
        {"lora_alpha", "X", "LoRA alpha (the update is scaled by alpha / r)", false, false, "64"},
        {"lora_dropout", "X", "dropout on the LoRA input", false, false, "0.05"},
        {"n_threads", "N", "OpenMP threads (0: all cores)", false, false, "0"},
        {"cpu_kernels", "K", "CPU steps: reference (the fp32 parity kernels) or fast (SIMD F32 products, "
                             "deterministic)", false, false, NULL},
        {"share_prefix", "BOOL", "compute a prompt prefix that all examples of a step share once per sequence "
                                 "(exact; false: every example whole)", false, false, "true"},
        {"chat_date", "TEXT", "the Llama 3 template's \"Today Date:\" (default: 26 Jul 2024)", false, false, NULL},
        {"mlflow_uri", "URI", "log the run to an MLflow tracking server (default: $MLFLOW_TRACKING_URI)", false, false, NULL},
        {0}};
    /* --num-train-epochs reads as --num_train_epochs */
    char **av = calloc((size_t)argc + 1, sizeof *av);
    if (!av) {
        fprintf(stderr, "error: dspy finetune: out of memory\n");
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < argc; i++) {
        av[i] = strdup(argv[i]);
        if (!av[i]) {
            fprintf(stderr, "error: dspy finetune: out of memory\n");
            rc = 1;
            goto done;
        }
        if (strncmp(av[i], "--", 2) == 0)
            for (char *c = av[i] + 2; *c && *c != '='; c++)
                if (*c == '-') *c = '_';
    }
    dspy_args a;
    rc = dspy_args_parse(&a, "finetune", "--model DIR --data FILE.jsonl --out DIR [--<train_kwarg> VALUE ...] [--resume]",
                         "Fine-tune a local model on chat JSONL (DSPy's format_finetune_data lines), with DSPy's\n"
                         "train_kwargs names and defaults: AdamW, loss on assistant tokens only, packing,\n"
                         "gradient accumulation, clipping. Writes train.jsonl (one line per optimizer step),\n"
                         "checkpoint-N/ directories and the fine-tuned model (HF layout) to the output directory.",
                         opts, argc, av);
    if (rc) {
        rc = rc == 1 ? 0 : rc;
        goto done;
    }
    dspy_train_params p = dspy_train_params_default();
    for (size_t i = 0; i < sizeof k_kwargs / sizeof *k_kwargs; i++) {
        int idx = -1;
        for (int j = 0; opts[j].name; j++)
            if (strcmp(opts[j].name, k_kwargs[i]) == 0) idx = j;
        if (idx < 0 || !a.given[idx]) continue;
        if (dspy_train_params_set(&p, k_kwargs[i], a.value[idx]) != DSPY_OK) {
            rc = dspy_cli_usage_error("finetune");
            goto done;
        }
    }
    p.resume = dspy_args_flag(&a, "resume");
    const char *out = dspy_args_get(&a, "out");
    if (!out) out = p.output_dir;
    if (!out) {
        fprintf(stderr, "error: dspy finetune: give the output directory with --out DIR (or --output_dir DIR)\n");
        rc = 2;
        goto done;
    }
    if (dspy_train_params_validate(&p) != DSPY_OK) {
        rc = dspy_cli_usage_error("finetune");
        goto done;
    }
    /* a finished model there is kept unless --resume (continue it) or --force (train again) */
    dspy_str done_path = DSPY_STR_INIT;
    dspy_str_appendf(&done_path, "%s/model.safetensors", out);
    bool finished = dspy_str_ok(&done_path) && access(dspy_str_cstr(&done_path), F_OK) == 0;
    dspy_str_free(&done_path);
    if (finished && !p.resume && !dspy_args_flag(&a, "force")) {
        fprintf(stderr, "error: dspy finetune: --out %s already holds a fine-tuned model (model.safetensors); pass "
                        "--resume to continue from its checkpoints or --force to train again\n", out);
        rc = DSPY_EXIT_USAGE;
        goto done;
    }
    long gpus = 1;
    if (!dspy_args_int(&a, "gpus", &gpus)) {
        rc = DSPY_EXIT_USAGE;
        goto done;
    }
    if (gpus < 1 || gpus > 64 || (gpus > 1 && getenv("WORLD_SIZE"))) {
        fprintf(stderr, "error: dspy finetune: --gpus must be 1..64%s\n",
                gpus > 1 && getenv("WORLD_SIZE") ? ", and is not given to a rank that WORLD_SIZE already places" : "");
        rc = DSPY_EXIT_USAGE;
        goto done;
    }
    if (gpus > 1) {
        if (p.device && (strcmp(p.device, "cpu") == 0 || strncmp(p.device, "cuda:", 5) == 0)) {
            fprintf(stderr, "error: dspy finetune: --gpus %ld trains on GPUs 0..%ld; --device %s %s (use --device cuda "
                            "or auto, and CUDA_VISIBLE_DEVICES to choose the GPUs)\n", gpus, gpus - 1, p.device,
                    strcmp(p.device, "cpu") == 0 ? "is the CPU" : "names one GPU");
            rc = DSPY_EXIT_USAGE;
            goto done;
        }
        rc = dspy_cli_finetune_ranks((int)gpus, argc, argv);
        goto done;
    }
    if (!dspy_cli_rank_tie_to_parent()) {
        rc = 1;
        goto done;
    }
    const char *rank_env = getenv("RANK");
    const bool lead = !rank_env || !*rank_env || strcmp(rank_env, "0") == 0;
    dspy_train_bar bar = {.out = dspy_args_flag(&a, "quiet") ? NULL : stderr};
    dspy_train_result res;
    dspy_run *run = lead ? cli_run_begin(&a, "finetune", out, argc, argv, stderr) : NULL;
    dspy_status st = dspy_finetune(dspy_args_get(&a, "model"), dspy_args_get(&a, "data"), out, &p,
                                   dspy_train_bar_update, &bar, &res);
    dspy_train_bar_close(&bar);
    cli_run_end(&run, st == DSPY_OK);
    if (st) {
        rc = dspy_cli_error("finetune");
        goto done;
    }
    if (!lead) goto done;
    printf("fine-tuned %s on %zu examples (%zu lines skipped): %lld optimizer steps over %d epochs", dspy_args_get(&a, "model"),
           res.n_examples, res.n_skipped, (long long)res.steps, res.num_epochs);
    if (res.resumed_from) printf(" (resumed at step %lld)", (long long)res.resumed_from);
    if (res.steps_run)
        printf(", loss %.4f -> %.4f, %lld tokens in %.1f s (%.0f tokens/s)", res.first_loss, res.final_loss,
               (long long)res.tokens, res.train_seconds,
               res.train_seconds > 0 ? (double)res.tokens / res.train_seconds : 0.0);
    printf("; %lld trainable parameters; wrote %s\n", (long long)res.trainable_params, out);
done:
    for (int i = 0; i < argc; i++) free(av[i]);
    free(av);
    return rc;
}
