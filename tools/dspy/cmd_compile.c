/* cmd_compile.c — `dspy compile`: DSPy's Banking77 BootstrapFinetune tutorial in one command.
 *
 * Steps (each announced on stderr with a heading, bars for the long ones):
 *   1 data      Banking77 from --data-dir or the Hugging Face dataset viewer API
 *   2 split     the tutorial's 500 unlabeled / 100 dev split, or --split stratified (a seeded
 *               stratified sample of the official test set); --limit-train/--limit-dev shrink
 *   3 program   ChainOfThought("text -> label: Literal[<77 labels in HF order>]")
 *   4 teacher   --teacher MODEL (openai/gpt-4o-mini by default; any OpenAI-compatible URL with
 *               --teacher-base-url; "oracle" = the offline STAND-IN of dspy/oracle.h;
 *               openai/local:<dir> = our own engine, launched here)
 *   5 compile   BootstrapFinetune(metric?, train_kwargs).compile(student, trainset, teacher):
 *               bootstrap traces, JSONL, fine-tune (dspy/compile.h)
 *   6 launch    `dspy serve` on the fine-tuned model (dspy/local.h)
 *   7 evaluate  the devset over HTTP: threads, live progress, the first rows as a table
 *   8 inspect   inspect_history(n=1) of the fine-tuned LM
 *   9 save      kill the server; program.json, results.json, results.csv, report.json in --out
 * The summary (stdout) says what ran for real and what was a stand-in, with the measured
 * numbers. Teacher answers go to the LM cache (SQLite, committed before each answer is used) in
 * $DSPY_CACHEDIR, which defaults to <out>/cache here: a run killed at any point and started
 * again asks the teacher nothing it already answered.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "dspy/compile.h"
#include "dspy/datasets.h"
#include "dspy/evaluate.h"
#include "dspy/history.h"
#include "dspy/log.h"
#include "dspy/model.h"
#include "dspy/oracle.h"
#include "dspy/settings.h"
#include "track_cli.h"

#define NSTEPS 9

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void heading(int step, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void heading(int step, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\n== [%d/%d] ", step, NSTEPS);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " ==\n");
    va_end(ap);
    fflush(stderr);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("   ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
}

/* The tutorial's metric: lambda x, y: x.label == y.label (a bool; the table column is named
 * "<lambda>" as in the notebook). A prediction without a label scores False. */
static dspy_status label_metric(void *user, const dspy_example *ex, const dspy_prediction *pred, dspy_trace *trace,
                                double *score) {
    (void)user;
    (void)trace;
    const char *want = dspy_example_get_str(ex, "label");
    if (!want) return dspy_fail(DSPY_ERR_ARG, "metric: the example has no 'label' (AttributeError in Python)");
    const char *got = dspy_prediction_get_str(pred, "label");
    *score = got && strcmp(want, got) == 0 ? 1.0 : 0.0;
    return DSPY_OK;
}

static const dspy_metric k_metric = {"<lambda>", label_metric, NULL, DSPY_SCORE_BOOL};

/* "key=value" -> kwargs[key] = JSON value (numbers, true/false/True/False, null/None) or string. */
static dspy_status add_train_kwarg(dspy_json *kw, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return dspy_fail(DSPY_ERR_ARG, "--train-kwargs '%s': expected key=value, e.g. --train-kwargs "
                         "num_train_epochs=3", arg);
    char *key = strndup(arg, (size_t)(eq - arg));
    const char *v = eq + 1;
    dspy_json *val = NULL;
    if (strcmp(v, "None") == 0 || strcmp(v, "null") == 0) val = dspy_json_null();
    else if (strcmp(v, "True") == 0 || strcmp(v, "true") == 0) val = dspy_json_bool(true);
    else if (strcmp(v, "False") == 0 || strcmp(v, "false") == 0) val = dspy_json_bool(false);
    else {
        char *end = NULL;
        errno = 0;
        long long i = strtoll(v, &end, 10);
        if (*v && end && !*end && errno == 0) val = dspy_json_int(i);
        else {
            double d = strtod(v, &end);
            val = *v && end && !*end ? dspy_json_real(d) : dspy_json_string(v);
        }
    }
    dspy_status st = key && val ? dspy_json_set(kw, key, val) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!key) dspy_json_decref(val);
    free(key);
    return st;
}

/* Whether a path exists as a directory. */
static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* An absolute copy of `path` (malloc'd). */
static char *absolute(const char *path) {
    if (path[0] == '/') return strdup(path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return NULL;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "%s/%s", cwd, path);
    free(cwd);
    return dspy_str_take(&s);
}

/* "text -> label: Literal['a', 'b', ...]" in label id order (malloc'd). */
static char *signature_text(const dspy_labels *labels) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "text -> label: Literal[");
    for (size_t i = 0; i < dspy_labels_count(labels); i++) {
        const char *n = dspy_labels_name(labels, (int32_t)i);
        if (i) dspy_str_append(&s, ", ");
        dspy_py_repr_str(n, strlen(n), &s);
    }
    dspy_str_append(&s, "]");
    return dspy_str_take(&s);
}

/* Example(text=x.text).with_inputs("text") for each example (the tutorial's unlabeled set). */
static dspy_status unlabeled(const dspy_dataset *ds, dspy_dataset **out) {
    *out = NULL;
    static const char *const key[] = {"text"};
    dspy_dataset *u = NULL;
    dspy_status st = dspy_dataset_new(&u);
    for (size_t i = 0; !st && i < dspy_dataset_len(ds); i++) {
        dspy_example *e = NULL;
        const dspy_value *t = dspy_example_get(dspy_dataset_get(ds, i), "text");
        st = dspy_example_new(&e);
        if (!st && t) st = dspy_example_set_value(e, "text", t);
        if (!st) st = dspy_example_set_inputs(e, key, 1);
        if (!st) st = dspy_dataset_append(u, e);
        else dspy_example_free(e);
    }
    if (st) dspy_dataset_free(u);
    else *out = u;
    return st;
}

static dspy_status limit(dspy_dataset **ds, long n) {
    if (n < 0 || (size_t)n >= dspy_dataset_len(*ds)) return DSPY_OK;
    dspy_dataset *s = NULL;
    dspy_status st = dspy_dataset_slice(*ds, 0, (size_t)n, &s);
    if (st) return st;
    dspy_dataset_free(*ds);
    *ds = s;
    return DSPY_OK;
}

typedef struct run_state {
    const dspy_args *a;
    char *out_dir;
    dspy_profile profile;
    long num_threads, max_errors, table_rows, max_tokens;
    /* data */
    dspy_labels *labels;
    dspy_dataset *train, *test, *trainset, *devset;
    const char *data_source;
    /* programs and LMs */
    dspy_module *program, *student, *teacher, *compiled;
    dspy_lm *student_lm, *teacher_lm, *finetuned_lm;
    dspy_oracle *oracle;
    dspy_launched *teacher_server, *student_server;
    dspy_bootstrap_finetune_report report;
    dspy_eval_result *result;
    char chat_date[32];
    double t_start, t_data, t_compile, t_launch, t_eval;
    bool teacher_is_oracle;
} run_state;

/* What can be checked before anything is loaded: the split, the student directory, the teacher
 * model string and its API key. */
static dspy_status check_args(const dspy_args *a) {
    const char *split = dspy_args_get(a, "split"), *teacher = dspy_args_get(a, "teacher");
    const char *student = dspy_args_get(a, "student");
    if (strcmp(split, "stratified") != 0 && strcmp(split, "tutorial") != 0)
        return dspy_fail(DSPY_ERR_ARG, "--split '%s': use tutorial or stratified", split);
    if (!is_dir(student))
        return dspy_fail(DSPY_ERR_NOTFOUND, "--student %s: not a directory; give a Hugging Face model directory "
                         "(config.json, model.safetensors, tokenizer.json), e.g. one written by `dspy init-model`",
                         student);
    if (strcmp(teacher, "oracle") == 0 || strncmp(teacher, "oracle:", 7) == 0) return DSPY_OK;
    if (strncmp(teacher, "openai/", 7) != 0)
        return dspy_fail(DSPY_ERR_ARG, "--teacher '%s': use openai/<model> (with --teacher-base-url for any "
                         "OpenAI-compatible server), openai/local:<model dir>, or oracle (the offline stand-in)", teacher);
    const char *key = dspy_args_get(a, "teacher-api-key");
    if (!key) key = getenv("OPENAI_API_KEY");
    if (strncmp(teacher, "openai/local:", 13) != 0 && !dspy_args_get(a, "teacher-base-url") && (!key || !*key))
        return dspy_fail(DSPY_ERR_ARG, "--teacher %s needs an API key: set OPENAI_API_KEY (or --teacher-api-key), "
                         "point --teacher-base-url at another OpenAI-compatible server, or run offline with --teacher "
                         "oracle (a labelled stand-in)", teacher);
    return DSPY_OK;
}

static dspy_status step_data(run_state *r) {
    const dspy_args *a = r->a;
    double t0 = now_s();
    const char *dir = dspy_args_get(a, "data-dir");
    heading(1, "Data: Banking77 (%s)", dir ? dir : "Hugging Face dataset viewer API, PolyAI/banking77");
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = dir;
    r->data_source = dir ? dir : "huggingface.co PolyAI/banking77";
    const char *split = dspy_args_get(a, "split");
    bool strat = strcmp(split, "stratified") == 0;
    if (!strat && strcmp(split, "tutorial") != 0)
        return dspy_fail(DSPY_ERR_ARG, "--split '%s': use tutorial or stratified", split);
    dspy_status st = dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &r->train, &r->labels);
    if (!st) st = dspy_banking77_load(&bp, DSPY_BANKING77_TEST, &r->test, NULL);
    if (st) return st;
    note("train: %zu rows, test: %zu rows, %zu labels (Hugging Face ClassLabel order)", dspy_dataset_len(r->train),
         dspy_dataset_len(r->test), dspy_labels_count(r->labels));
    bool labeled = dspy_args_get(a, "metric") != NULL;
    heading(2, "Split: %s", strat ? "stratified sample of the official test set" : "the tutorial's split");
    dspy_dataset *tr = NULL;
    if (strat) {
        long ntr = 0, ndev = 0, seed = 0;
        if (!dspy_args_int(a, "train-size", &ntr) || !dspy_args_int(a, "dev-size", &ndev) ||
            !dspy_args_int(a, "seed", &seed) || ntr < 1 || ndev < 1 || seed < 0)
            return dspy_fail(DSPY_ERR_ARG, "--train-size and --dev-size must be positive, --seed non-negative");
        st = dspy_stratified_split(r->test, "label", (size_t)ntr, (size_t)ndev, (uint64_t)seed, &tr, &r->devset);
        if (!st && !labeled) {
            st = unlabeled(tr, &r->trainset);
            dspy_dataset_free(tr);
        } else if (!st) {
            r->trainset = tr;
        }
        if (!st) note("random.Random(%ld): %ld train + %ld dev examples over all %zu classes", seed, ntr, ndev,
                      dspy_labels_count(r->labels));
    } else {
        st = dspy_banking77_tutorial_split(r->train, labeled ? NULL : &r->trainset, &r->devset);
        if (!st && labeled) st = dspy_banking77_tutorial_trainset_labeled(r->train, &r->trainset);
        if (!st) note("the first 1,000 train rows shuffled with random.Random(0): 500 train, 100 dev");
    }
    if (st) return st;
    long lt = -1, ld = -1;
    if (!dspy_args_int(a, "limit-train", &lt) || !dspy_args_int(a, "limit-dev", &ld))
        return dspy_fail(DSPY_ERR_ARG, "--limit-train/--limit-dev: expected a count");
    if (dspy_args_get(a, "limit-train") && lt < 1) return dspy_fail(DSPY_ERR_ARG, "--limit-train must be at least 1");
    if (dspy_args_get(a, "limit-dev") && ld < 1) return dspy_fail(DSPY_ERR_ARG, "--limit-dev must be at least 1");
    if ((st = limit(&r->trainset, dspy_args_get(a, "limit-train") ? lt : -1)) ||
        (st = limit(&r->devset, dspy_args_get(a, "limit-dev") ? ld : -1)))
        return st;
    note("trainset: %zu %s examples; devset: %zu labelled examples%s", dspy_dataset_len(r->trainset),
         labeled ? "labelled" : "unlabeled", dspy_dataset_len(r->devset),
         dspy_args_get(a, "limit-train") || dspy_args_get(a, "limit-dev") ? " (limited by --limit-train/--limit-dev)" : "");
    char *rep = NULL;
    if (dspy_dataset_len(r->trainset) && dspy_example_repr(dspy_dataset_get(r->trainset, 0), &rep) == DSPY_OK)
        note("trainset[0] = %s", rep);
    free(rep);
    rep = NULL;
    if (dspy_dataset_len(r->devset) && dspy_example_repr(dspy_dataset_get(r->devset, 0), &rep) == DSPY_OK)
        note("devset[0]   = %s", rep);
    free(rep);
    r->t_data = now_s() - t0;
    return DSPY_OK;
}

static dspy_status step_program(run_state *r) {
    char *sig = signature_text(r->labels);
    if (!sig) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    heading(3, "Program: dspy.ChainOfThought(\"text -> label: Literal[...%zu labels]\"), prompt format DSPy %s",
            dspy_labels_count(r->labels), dspy_profile_name(r->profile));
    dspy_predict_params pp = dspy_predict_params_default();
    pp.profile = r->profile;
    dspy_status st = dspy_chain_of_thought_new_text(sig, NULL, &pp, &r->program);
    free(sig);
    if (st) return st;
    note("signature instructions: %s", dspy_signature_instructions(dspy_predict_signature(dspy_module_child(r->program, "predict"))));
    return DSPY_OK;
}

/* The teacher LM from --teacher. */
static dspy_status make_teacher_lm(run_state *r) {
    const dspy_args *a = r->a;
    const char *model = dspy_args_get(a, "teacher");
    dspy_lm_params lp = dspy_lm_params_default();
    lp.profile = r->profile == DSPY_PROFILE_V26 ? DSPY_LM_V26 : DSPY_LM_V33;
    long tmt = 0;
    if (dspy_args_get(a, "teacher-max-tokens")) {
        if (!dspy_args_int(a, "teacher-max-tokens", &tmt) || tmt < 1 || tmt > INT32_MAX)
            return dspy_fail(DSPY_ERR_ARG, "--teacher-max-tokens: expected a positive integer");
        lp.max_tokens = (int32_t)tmt;
    }
    if (strcmp(model, "oracle") == 0 || strncmp(model, "oracle:", 7) == 0) {
        r->teacher_is_oracle = true;
        /* every labelled text the run can meet: train and test */
        dspy_dataset *all = NULL;
        dspy_status st = dspy_dataset_new(&all);
        for (size_t i = 0; !st && i < dspy_dataset_len(r->train); i++)
            st = dspy_dataset_append_copy(all, dspy_dataset_get(r->train, i));
        for (size_t i = 0; !st && i < dspy_dataset_len(r->test); i++)
            st = dspy_dataset_append_copy(all, dspy_dataset_get(r->test, i));
        if (!st) st = dspy_oracle_new(all, NULL, &r->oracle);
        dspy_dataset_free(all);
        if (!st) st = dspy_oracle_lm_new(r->oracle, strcmp(model, "oracle") == 0 ? "oracle:banking77" : model, &lp,
                                         &r->teacher_lm);
        return st;
    }
    dspy_json *kw = dspy_json_object();
    if (!kw) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    const char *base = dspy_args_get(a, "teacher-base-url"), *key = dspy_args_get(a, "teacher-api-key");
    if (!key) key = getenv("OPENAI_API_KEY");
    bool local = strncmp(model, "openai/local:", 13) == 0;
    if (strncmp(model, "openai/", 7) != 0)
        st = dspy_fail(DSPY_ERR_ARG, "--teacher '%s': use openai/<model> (with --teacher-base-url for any "
                       "OpenAI-compatible server), openai/local:<model dir>, or oracle (the offline stand-in)", model);
    else if (!local && !base && (!key || !*key))
        st = dspy_fail(DSPY_ERR_ARG, "--teacher %s needs an API key: set OPENAI_API_KEY (or --teacher-api-key), "
                       "point --teacher-base-url at another OpenAI-compatible server, or run offline with --teacher "
                       "oracle (a labelled stand-in)", model);
    if (!st && base) st = dspy_json_set_str(kw, "api_base", base);
    if (!st && !local) st = dspy_json_set_str(kw, "api_key", key && *key ? key : "EMPTY");
    lp.kwargs = kw;
    if (!st) st = dspy_lm_new(model, &lp, &r->teacher_lm);
    dspy_json_decref(kw);
    return st;
}

static dspy_status make_student_lm(run_state *r) {
    const dspy_args *a = r->a;
    const char *dir = dspy_args_get(a, "student");
    if (!is_dir(dir))
        return dspy_fail(DSPY_ERR_NOTFOUND, "--student %s: not a directory; give a Hugging Face model directory "
                         "(config.json, model.safetensors, tokenizer.json), e.g. one written by `dspy init-model`", dir);
    dspy_model_config cfg;
    dspy_status st = dspy_model_config_load(dir, &cfg);
    if (st) return dspy_fail_wrap(st, "--student %s", dir);
    char *abs = absolute(dir);
    if (!abs) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str model = DSPY_STR_INIT;
    dspy_str_appendf(&model, "openai/local:%s", abs);
    free(abs);
    dspy_lm_params lp = dspy_lm_params_default();
    lp.profile = r->profile == DSPY_PROFILE_V26 ? DSPY_LM_V26 : DSPY_LM_V33;
    double t = 0.0;
    if (dspy_args_get(a, "temperature") && !dspy_args_double(a, "temperature", &t)) {
        dspy_str_free(&model);
        return dspy_fail(DSPY_ERR_ARG, "--temperature: not a number");
    }
    lp.temperature = t; /* explicit, 0.0 by default: reproducible evaluations (spec §16.5) */
    lp.max_tokens = (int32_t)r->max_tokens;
    st = dspy_lm_new(dspy_str_cstr(&model), &lp, &r->student_lm);
    note("student: %s (%s, %d layers, hidden %d, vocab %d, %.2fM parameters)", dspy_str_cstr(&model),
         cfg.arch == DSPY_ARCH_QWEN2 ? "qwen2" : "llama", cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size,
         (double)dspy_model_config_params(&cfg) / 1e6);
    dspy_str_free(&model);
    return st;
}

static dspy_status step_teacher(run_state *r, const dspy_local_params *lp) {
    heading(4, "LMs: teacher %s, student %s", dspy_args_get(r->a, "teacher"), dspy_args_get(r->a, "student"));
    dspy_status st = make_teacher_lm(r);
    if (!st) st = make_student_lm(r);
    if (st) return st;
    if (r->teacher_is_oracle)
        note("teacher: %s — a STAND-IN, not a language model: it answers each prompt with the dataset's gold "
             "label and a templated reasoning line (dspy/oracle.h)", dspy_lm_model(r->teacher_lm));
    else
        note("teacher: %s%s%s", dspy_lm_model(r->teacher_lm), dspy_args_get(r->a, "teacher-base-url") ? " at " : "",
             dspy_args_get(r->a, "teacher-base-url") ? dspy_args_get(r->a, "teacher-base-url") : "");
    /* student_classify = classify.deepcopy(); student_classify.set_lm(student_lm); likewise the teacher */
    if ((st = dspy_module_deepcopy(r->program, &r->student)) || (st = dspy_module_set_lm(r->student, r->student_lm)) ||
        (st = dspy_module_deepcopy(r->program, &r->teacher)) || (st = dspy_module_set_lm(r->teacher, r->teacher_lm)))
        return st;
    if (strncmp(dspy_lm_model(r->teacher_lm), "openai/local:", 13) == 0) {
        note("launching the teacher with `dspy serve` ...");
        if ((st = dspy_program_launch(r->teacher, lp, &r->teacher_server))) return st;
        for (size_t i = 0; i < dspy_launched_count(r->teacher_server); i++) {
            dspy_local_server *s = dspy_launched_server(r->teacher_server, i);
            note("teacher server: %s (pid %d, log %s)", dspy_local_api_base(s), (int)dspy_local_pid(s),
                 dspy_local_log_path(s));
        }
    }
    dspy_cache *c = NULL;
    if (dspy_lm_cache_enabled(r->teacher_lm) && dspy_cache_default(&c) == DSPY_OK) {
        note("teacher answers are cached in %s (committed before use; a rerun asks nothing twice)",
             dspy_cache_path(c) ? dspy_cache_path(c) : "memory");
        dspy_cache_free(c);
    }
    return DSPY_OK;
}

static dspy_status step_compile(run_state *r, dspy_train_bar *bar) {
    const dspy_args *a = r->a;
    heading(5, "BootstrapFinetune.compile: bootstrap the teacher's traces, write the JSONL, fine-tune the student");
    dspy_bootstrap_finetune_params p = dspy_bootstrap_finetune_params_default();
    dspy_json *kw = dspy_json_object();
    if (!kw) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    for (int i = 0; !st && i < dspy_args_count(a, "train-kwargs"); i++)
        st = add_train_kwarg(kw, dspy_args_at(a, "train-kwargs", i));
    char *kw_text = st ? NULL : dspy_json_dumps(kw, DSPY_JSON_COMPACT | DSPY_JSON_UTF8);
    dspy_json_decref(kw);
    if (st) return st;
    if (!kw_text) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    p.prepare.train_kwargs = kw_text;
    p.prepare.metric = dspy_args_get(a, "metric") ? &k_metric : NULL;
    p.prepare.num_threads = (int32_t)r->num_threads;
    p.prepare.max_errors = r->max_errors >= 0 ? (int32_t)r->max_errors : (int32_t)(dspy_dataset_len(r->trainset) + 1);
    p.prepare.display_progress = true;
    p.prepare.progress_out = stderr;
    p.progress = dspy_train_bar_update;
    p.progress_ud = bar;
    long tt = 0;
    if (dspy_args_get(a, "train-threads") && dspy_args_int(a, "train-threads", &tt) && tt > 0) p.train_threads = (int32_t)tt;
    p.chat_date = r->chat_date;
    note("train_kwargs (yours; LocalProvider defaults fill the rest): %s", kw_text);
    if (p.prepare.metric) note("metric: x.label == y.label — only traces whose label equals the gold label are kept");
    double t0 = now_s();
    dspy_module *teachers[1] = {r->teacher};
    st = dspy_bootstrap_finetune_compile(r->student, r->trainset, teachers, 1, &p, &r->compiled, &r->report);
    dspy_train_bar_close(bar);
    r->t_compile = now_s() - t0;
    free(kw_text);
    const dspy_bootstrap_finetune_report *rep = &r->report;
    if (!st || rep->bootstrap.examples)
        note("bootstrap: %zu examples, %zu traces, %zu unparseable answers, %zu teacher errors (%.1f s)",
             rep->bootstrap.examples, rep->bootstrap.items, rep->bootstrap.parse_failures, rep->bootstrap.errors,
             rep->bootstrap_s);
    for (size_t i = 0; i < rep->n_runs; i++) {
        const dspy_finetune_run *x = &rep->runs[i];
        if (x->data_path)
            note("fine-tuning data: %s (%zu chat records; %zu kept, %zu filtered out by the metric, %zu failed)",
                 x->data_path, x->n_records, x->data.kept, x->data.filtered_out, x->data.failed);
        if (x->train_kwargs) note("effective train_kwargs: %s", x->train_kwargs);
        if (x->finetuned_model)
            note("fine-tuned: %lld optimizer steps, loss %.4f -> %.4f, %lld tokens, %.1f s -> %s",
                 (long long)x->train.steps, x->train.first_loss, x->train.final_loss, (long long)x->train.tokens,
                 x->train.train_seconds, x->finetuned_model);
    }
    if (st) return st;
    dspy_named_predictor *np = NULL;
    size_t n = 0;
    if (!dspy_module_named_predictors(r->compiled, &np, &n) && n) r->finetuned_lm = dspy_lm_retain(dspy_predict_lm(np[0].predictor));
    dspy_named_predictors_free(np, n);
    return DSPY_OK;
}

static dspy_status step_launch(run_state *r, const dspy_local_params *lp) {
    heading(6, "Launch: `dspy serve` with the fine-tuned student (lm.launch())");
    double t0 = now_s();
    dspy_status st = dspy_program_launch(r->compiled, lp, &r->student_server);
    if (st) return st;
    r->t_launch = now_s() - t0;
    for (size_t i = 0; i < dspy_launched_count(r->student_server); i++) {
        dspy_local_server *s = dspy_launched_server(r->student_server, i);
        note("%s ready in %.1f s (pid %d, log %s)", dspy_local_api_base(s), r->t_launch, (int)dspy_local_pid(s),
             dspy_local_log_path(s));
    }
    /* the tutorial's first call: classify_ft(**devset[0].inputs()) */
    if (dspy_dataset_len(r->devset)) {
        dspy_prediction *pred = NULL;
        st = dspy_module_call_example(r->compiled, dspy_dataset_get(r->devset, 0), NULL, &pred);
        if (st) {
            note("a first call failed (counted in the evaluation as well): %s", dspy_errmsg());
        } else {
            char *rep = NULL;
            if (dspy_prediction_repr(pred, &rep) == DSPY_OK) note("classify_ft(**devset[0].inputs()) = %s", rep);
            free(rep);
        }
        dspy_prediction_free(pred);
    }
    return DSPY_OK;
}

static dspy_status step_evaluate(run_state *r) {
    heading(7, "Evaluate: the devset over HTTP (%ld threads), metric x.label == y.label", r->num_threads);
    dspy_evaluate_params ep = dspy_evaluate_params_default();
    ep.num_threads = (int32_t)r->num_threads;
    ep.display_progress = true;
    ep.progress_out = stderr;
    ep.display_table = r->table_rows;
    ep.table_out = stderr;
    ep.max_errors = r->max_errors >= 0 ? (int32_t)r->max_errors : (int32_t)(dspy_dataset_len(r->devset) + 1);
    dspy_str js = DSPY_STR_INIT, cs = DSPY_STR_INIT;
    dspy_str_appendf(&js, "%s/results.json", r->out_dir);
    dspy_str_appendf(&cs, "%s/results.csv", r->out_dir);
    ep.save_as_json = dspy_str_cstr(&js);
    ep.save_as_csv = dspy_str_cstr(&cs);
    double t0 = now_s();
    dspy_status st = dspy_evaluate(r->compiled, r->devset, &k_metric, &ep, &r->result);
    r->t_eval = now_s() - t0;
    if (!st) {
        char *sum = NULL;
        if (dspy_eval_result_summary(r->result, &sum) == DSPY_OK)
            note("%s, %zu failed examples (%.1f s)", sum, dspy_eval_result_n_failed(r->result), r->t_eval);
        free(sum);
    }
    dspy_str_free(&js);
    dspy_str_free(&cs);
    return st;
}

/* report.json: the measured numbers and what was real. */
static dspy_status write_report(run_state *r, const char *program_path) {
    dspy_json *o = dspy_json_object();
    if (!o) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    const dspy_bootstrap_finetune_report *rep = &r->report;
    dspy_status st = dspy_json_set_str(o, "teacher", dspy_lm_model(r->teacher_lm));
    if (!st) st = dspy_json_set(o, "teacher_is_stand_in", dspy_json_bool(r->teacher_is_oracle));
    if (!st) st = dspy_json_set_str(o, "student_base", dspy_lm_model(r->student_lm));
    if (!st) st = dspy_json_set_str(o, "finetuned_model", r->finetuned_lm ? dspy_lm_model(r->finetuned_lm) : "");
    if (!st) st = dspy_json_set_str(o, "format", dspy_profile_name(r->profile));
    if (!st) st = dspy_json_set_str(o, "data", r->data_source);
    if (!st) st = dspy_json_set(o, "trainset", dspy_json_int((int64_t)dspy_dataset_len(r->trainset)));
    if (!st) st = dspy_json_set(o, "devset", dspy_json_int((int64_t)dspy_dataset_len(r->devset)));
    if (!st) st = dspy_json_set(o, "bootstrap_examples", dspy_json_int((int64_t)rep->bootstrap.examples));
    if (!st) st = dspy_json_set(o, "bootstrap_traces", dspy_json_int((int64_t)rep->bootstrap.items));
    if (!st) st = dspy_json_set(o, "teacher_parse_failures", dspy_json_int((int64_t)rep->bootstrap.parse_failures));
    if (!st) st = dspy_json_set(o, "teacher_errors", dspy_json_int((int64_t)rep->bootstrap.errors));
    const dspy_finetune_run *x = rep->n_runs ? &rep->runs[0] : NULL;
    if (!st && x) {
        st = dspy_json_set_str(o, "data_path", x->data_path ? x->data_path : "");
        if (!st) st = dspy_json_set(o, "finetune_records", dspy_json_int((int64_t)x->n_records));
        if (!st) st = dspy_json_set(o, "filtered_out", dspy_json_int((int64_t)x->data.filtered_out));
        if (!st) st = dspy_json_set_str(o, "output_dir", x->output_dir ? x->output_dir : "");
        if (!st) st = dspy_json_set(o, "train_steps", dspy_json_int(x->train.steps));
        if (!st) st = dspy_json_set(o, "train_first_loss", dspy_json_real(x->train.first_loss));
        if (!st) st = dspy_json_set(o, "train_final_loss", dspy_json_real(x->train.final_loss));
        if (!st) st = dspy_json_set(o, "train_tokens", dspy_json_int(x->train.tokens));
        if (!st) st = dspy_json_set(o, "train_seconds", dspy_json_real(x->train.train_seconds));
    }
    if (!st && r->result) {
        st = dspy_json_set(o, "score", dspy_json_real(dspy_eval_result_score(r->result)));
        if (!st) st = dspy_json_set(o, "eval_failed", dspy_json_int((int64_t)dspy_eval_result_n_failed(r->result)));
    }
    if (!st) st = dspy_json_set(o, "eval_threads", dspy_json_int(r->num_threads));
    if (!st) st = dspy_json_set_str(o, "program", program_path);
    if (!st) st = dspy_json_set(o, "seconds_data", dspy_json_real(r->t_data));
    if (!st) st = dspy_json_set(o, "seconds_bootstrap", dspy_json_real(rep->bootstrap_s));
    if (!st) st = dspy_json_set(o, "seconds_finetune", dspy_json_real(rep->train_s));
    if (!st) st = dspy_json_set(o, "seconds_launch", dspy_json_real(r->t_launch));
    if (!st) st = dspy_json_set(o, "seconds_evaluate", dspy_json_real(r->t_eval));
    if (!st) st = dspy_json_set(o, "seconds_total", dspy_json_real(now_s() - r->t_start));
    char *text = st ? NULL : dspy_json_dumps(o, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2));
    dspy_json_decref(o);
    if (st) return st;
    if (!text) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str path = DSPY_STR_INIT, body = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/report.json", r->out_dir);
    dspy_str_append(&body, text);
    dspy_str_appendc(&body, '\n');
    st = dspy_str_ok(&path) && dspy_str_ok(&body) ? dspy_write_file(dspy_str_cstr(&path), body.ptr, body.len)
                                                  : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str_free(&body);
    dspy_str_free(&path);
    free(text);
    return st;
}

static void print_summary(run_state *r, const char *program_path) {
    const dspy_bootstrap_finetune_report *rep = &r->report;
    const dspy_finetune_run *x = rep->n_runs ? &rep->runs[0] : NULL;
    printf("\n== dspy compile: summary ==\n");
    printf("What ran for real: Banking77 (%s), the %s split, DSPy %s ChatAdapter prompts, bootstrap_trace_data on "
           "%ld threads, the fine-tuning JSONL, the C trainer, `dspy serve`, evaluation over HTTP on %ld threads.\n",
           r->data_source, dspy_args_get(r->a, "split"), dspy_profile_name(r->profile), r->num_threads, r->num_threads);
    if (r->teacher_is_oracle)
        printf("Stand-in: the teacher is %s, which answers with the dataset's GOLD label and a templated reasoning "
               "line; it is not a language model.\n", dspy_lm_model(r->teacher_lm));
    else
        printf("Teacher: %s (a real LM).\n", dspy_lm_model(r->teacher_lm));
    printf("Student: %s\n", dspy_lm_model(r->student_lm));
    printf("Bootstrap: %zu examples -> %zu traces; %zu unparseable teacher answers, %zu teacher errors; %.1f s\n",
           rep->bootstrap.examples, rep->bootstrap.items, rep->bootstrap.parse_failures, rep->bootstrap.errors,
           rep->bootstrap_s);
    if (x) {
        printf("Fine-tuning data: %zu records (%zu filtered out by the metric) in %s\n", x->n_records,
               x->data.filtered_out, x->data_path ? x->data_path : "?");
        printf("Fine-tune: %lld steps, loss %.4f -> %.4f, %lld tokens, %.1f s -> %s\n", (long long)x->train.steps,
               x->train.first_loss, x->train.final_loss, (long long)x->train.tokens, x->train.train_seconds,
               x->output_dir ? x->output_dir : "?");
    }
    if (r->result)
        printf("Evaluate: score %.2f%% on %zu dev examples (%zu failed: unparseable or errored answers count 0); "
               "%.1f s\n", dspy_eval_result_score(r->result), dspy_eval_result_len(r->result),
               dspy_eval_result_n_failed(r->result), r->t_eval);
    printf("Saved: %s, %s/results.json, %s/results.csv, %s/report.json\n", program_path, r->out_dir, r->out_dir,
           r->out_dir);
    printf("Total: %.1f s\n", now_s() - r->t_start);
    fflush(stdout);
}

int cmd_compile(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"student", "DIR", "student model directory (Hugging Face layout, e.g. from `dspy init-model`)", true, false, NULL},
        {"teacher", "MODEL", "openai/<model> (OPENAI_API_KEY), openai/local:<dir> (served here), or oracle (an offline "
                             "stand-in that answers with the gold label)", false, false, "openai/gpt-4o-mini"},
        {"teacher-base-url", "URL", "any OpenAI-compatible endpoint for the teacher (e.g. http://127.0.0.1:8000/v1)", false, false, NULL},
        {"teacher-api-key", "KEY", "the teacher's API key (default: $OPENAI_API_KEY)", false, false, NULL},
        {"teacher-max-tokens", "N", "max_tokens of the teacher's answers (default: not sent; the tutorial used 3000)", false, false, NULL},
        {"data-dir", "DIR", "Banking77 CSVs (train.csv, test.csv, labels.txt); default: the Hugging Face API", false, false, NULL},
        {"split", "NAME", "tutorial (500 unlabeled train / 100 dev) or stratified (from the official test set)", false, false, "tutorial"},
        {"train-size", "N", "stratified: trainset size", false, false, "500"},
        {"dev-size", "N", "stratified: devset size", false, false, "154"},
        {"seed", "N", "stratified: random.Random seed", false, false, "0"},
        {"limit-train", "N", "use only the first N trainset examples", false, false, NULL},
        {"limit-dev", "N", "use only the first N devset examples", false, false, NULL},
        {"metric", "NAME", "exact: keep only traces whose label equals the gold label (labelled trainset)", false, false, NULL},
        {"train-kwargs", "KEY=VALUE", "a fine-tuning setting (DSPy's train_kwargs: num_train_epochs, learning_rate, "
                                      "use_peft, max_seq_length, ...)", false, true, NULL},
        {"dspy-format", "VERSION", "prompt format profile: 3.3 (DSPy 3.3.1) or 2.6 (the tutorial's DSPy)", false, false, "3.3"},
        {"num-threads", "N", "threads for bootstrapping and evaluation", false, false, "4"},
        {"max-errors", "N", "stop bootstrapping/evaluation after N failed examples (default: never; failures are counted)", false, false, NULL},
        {"max-tokens", "N", "max_tokens of the student's answers", false, false, "1000"},
        {"temperature", "T", "the student's sampling temperature", false, false, "0.0"},
        {"display-table", "N", "show the first N evaluation rows", false, false, "5"},
        {"train-threads", "N", "trainer compute threads (default: all cores)", false, false, NULL},
        {"serve-arg", "ARG", "an extra `dspy serve` argument for the student's server (repeat: --serve-arg=--max-seqs --serve-arg=4)", false, true, NULL},
        {"launch-timeout", "SECONDS", "how long to wait for a server to be ready", false, false, "600"},
        {"chat-date", "DATE", "Llama 3 'Today Date' for training and serving (default: today)", false, false, NULL},
        {"out", "DIR", "output directory: program.json, results.json/.csv, report.json, cache/", false, false, "dspy-compile-out"},
        {"baselines", NULL, "also evaluate the teacher and the untrained student on the devset (for the report)", false, false, NULL},
        {"mlflow-uri", "URI", "log the run to an MLflow tracking server (default: $MLFLOW_TRACKING_URI)", false, false, NULL},
        {0},
    };
    dspy_args a;
    int rc = dspy_args_parse(&a, "compile", "--student DIR [--teacher MODEL] [--data-dir DIR] [options]",
                             "DSPy's Banking77 BootstrapFinetune tutorial in one command: a teacher LM answers the "
                             "trainset\nthrough a ChainOfThought classifier, the student model is fine-tuned on the "
                             "teacher's traces,\nserved with `dspy serve`, and evaluated on the devset over HTTP.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;

    run_state r;
    memset(&r, 0, sizeof r);
    r.a = &a;
    r.t_start = now_s();
    dspy_train_bar bar = {0};
    bar.out = stderr;
    dspy_run *run = NULL;
    int ret = 1;
    dspy_status st = DSPY_OK;
    dspy_str program_path = DSPY_STR_INIT, logdir = DSPY_STR_INIT;
    const char *metric = dspy_args_get(&a, "metric");
    double launch_timeout = 600;
    if ((st = dspy_profile_parse(dspy_args_get(&a, "dspy-format"), &r.profile))) goto done;
    if (metric && strcmp(metric, "exact") != 0) {
        st = dspy_fail(DSPY_ERR_ARG, "--metric '%s': the only metric is exact (x.label == y.label)", metric);
        goto done;
    }
    if (!dspy_args_int(&a, "num-threads", &r.num_threads) || r.num_threads < 1 || r.num_threads > 256 ||
        !dspy_args_int(&a, "max-tokens", &r.max_tokens) || r.max_tokens < 1 || r.max_tokens > INT32_MAX ||
        !dspy_args_int(&a, "display-table", &r.table_rows) || !dspy_args_double(&a, "launch-timeout", &launch_timeout)) {
        st = dspy_fail(DSPY_ERR_ARG, "--num-threads (1..256), --max-tokens (>= 1), --display-table and "
                       "--launch-timeout take numbers");
        goto done;
    }
    r.max_errors = -1;
    if (dspy_args_get(&a, "max-errors") && (!dspy_args_int(&a, "max-errors", &r.max_errors) || r.max_errors < 1)) {
        st = dspy_fail(DSPY_ERR_ARG, "--max-errors must be at least 1");
        goto done;
    }
    if ((st = check_args(&a)) || (st = dspy_mkdir_p(dspy_args_get(&a, "out")))) goto done;
    if (!(r.out_dir = absolute(dspy_args_get(&a, "out")))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!getenv("DSPY_CACHEDIR") || !*getenv("DSPY_CACHEDIR")) {
        dspy_str c = DSPY_STR_INIT;
        dspy_str_appendf(&c, "%s/cache", r.out_dir);
        setenv("DSPY_CACHEDIR", dspy_str_cstr(&c), 1);
        dspy_str_free(&c);
    }
    if (dspy_args_get(&a, "chat-date")) {
        snprintf(r.chat_date, sizeof r.chat_date, "%s", dspy_args_get(&a, "chat-date"));
    } else {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(r.chat_date, sizeof r.chat_date, "%d %b %Y", &tm);
    }
    dspy_settings_set_profile(r.profile);
    dspy_settings_set_adapter(DSPY_ADAPTER_CHAT, true);
    fprintf(stderr, "dspy compile: DSPy's Banking77 BootstrapFinetune tutorial, out %s, DSPY_CACHEDIR %s\n", r.out_dir,
            getenv("DSPY_CACHEDIR"));
    run = cli_run_begin(&a, "compile", r.out_dir, argc, argv, stdout);

    dspy_local_params lp = dspy_local_params_default();
    dspy_str_appendf(&logdir, "%s/logs", r.out_dir);
    lp.log_dir = dspy_str_cstr(&logdir);
    lp.timeout_s = launch_timeout;
    const char *serve_args[DSPY_ARGS_MAX_MULTI];
    size_t nsa = 0; /* the fine-tuned LM's launch_kwargs carry the training's chat date */
    for (int i = 0; i < dspy_args_count(&a, "serve-arg"); i++) serve_args[nsa++] = dspy_args_at(&a, "serve-arg", i);
    lp.extra_args = serve_args;
    lp.n_extra_args = nsa;

    if ((st = step_data(&r)) || (st = step_program(&r)) || (st = step_teacher(&r, &lp)) || (st = step_compile(&r, &bar)))
        goto done;
    if (dspy_args_flag(&a, "baselines"))
        cli_run_baselines(run, r.teacher, r.student, r.devset, &k_metric, &lp, (int)r.num_threads);
    dspy_program_kill(r.teacher_server);
    if ((st = step_launch(&r, &lp)) || (st = step_evaluate(&r))) goto done;
    heading(8, "inspect_history(n=1): the last call to the fine-tuned student");
    if (r.finetuned_lm) dspy_lm_inspect_history(r.finetuned_lm, 1, stderr);
    heading(9, "Kill the server, save the program and the results");
    if ((st = dspy_program_kill(r.student_server))) goto done;
    note("server stopped; the program's LM keeps only its model string %s",
         r.finetuned_lm ? dspy_lm_model(r.finetuned_lm) : "?");
    dspy_str_appendf(&program_path, "%s/program.json", r.out_dir);
    if ((st = dspy_module_save(r.compiled, dspy_str_cstr(&program_path)))) goto done;
    note("program: %s (re-evaluate with `dspy eval --program %s`)", dspy_str_cstr(&program_path),
         dspy_str_cstr(&program_path));
    if ((st = write_report(&r, dspy_str_cstr(&program_path)))) goto done;
    print_summary(&r, dspy_str_cstr(&program_path));
    cli_run_compile(run, &r.report, r.finetuned_lm);
    cli_run_end(&run, true);
    ret = 0;
done:
    if (ret) {
        ret = dspy_cli_error("compile");
        if (r.report.n_runs || r.report.bootstrap.examples) {
            const dspy_bootstrap_finetune_report *rep = &r.report;
            fprintf(stderr, "       (so far: %zu examples bootstrapped, %zu teacher errors; cached answers stay in "
                            "%s for a rerun)\n", rep->bootstrap.examples, rep->bootstrap.errors, getenv("DSPY_CACHEDIR"));
        }
        cli_run_end(&run, false);
    }
    dspy_train_bar_close(&bar);
    dspy_launched_free(r.student_server);
    dspy_launched_free(r.teacher_server);
    dspy_eval_result_free(r.result);
    dspy_bootstrap_finetune_report_clear(&r.report);
    dspy_module_free(r.compiled);
    dspy_module_free(r.student);
    dspy_module_free(r.teacher);
    dspy_module_free(r.program);
    dspy_lm_free(r.finetuned_lm);
    dspy_lm_free(r.student_lm);
    dspy_lm_free(r.teacher_lm);
    dspy_oracle_free(r.oracle);
    dspy_dataset_free(r.trainset);
    dspy_dataset_free(r.devset);
    dspy_dataset_free(r.train);
    dspy_dataset_free(r.test);
    dspy_labels_free(r.labels);
    free(r.out_dir);
    dspy_str_free(&program_path);
    dspy_str_free(&logdir);
    dspy_settings_reset();
    return ret;
}
