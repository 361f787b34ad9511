/* cmd_compile.c — `dspy compile`: DSPy's BootstrapFinetune tutorial in one command, on
 * Banking77 by default or on your own data, signature and metric.
 *
 * Before anything is spent (compile_prepare.c): every option, path, train_kwarg, the data, the
 * signature against the data and the metric, and the teacher's key are checked (a problem is
 * exit status 2 with no LM called); then the plan (teacher calls and tokens) is printed.
 * Steps (each announced on stderr with a heading, bars for the long ones):
 *   1 data      the trainset and devset (task_opts.h: Banking77's tutorial split by default)
 *   2 program   ChainOfThought or Predict over the signature
 *   3 LMs       teacher (--teacher; "oracle" = the offline STAND-IN of dspy/oracle.h) and the
 *               student model directory; the plan
 *   4 before    the untrained student served by `dspy serve` (which also checks the serve
 *               arguments and --device before any teacher call) and the teacher, evaluated on
 *               the devset (--baselines)
 *   5 compile   BootstrapFinetune(metric if --filter-traces, train_kwargs).compile(student,
 *               trainset, teacher): bootstrap traces, JSONL, fine-tune (dspy/compile.h)
 *   6 launch    `dspy serve` on the fine-tuned model (dspy/local.h)
 *   7 evaluate  the devset over HTTP: threads, live progress, the first rows as a table
 *   8 inspect   inspect_history(n=1) of the fine-tuned LM
 *   9 save      kill the server; program.json (model path relative to it), results.json,
 *               results.csv, report.json, failures-*.jsonl in --out; the before/after table
 * Failed examples are listed one line each after each run (failures.h); --verbose keeps DSPy's
 * log lines instead. Teacher answers go to the LM cache (SQLite, committed before each answer
 * is used) in $DSPY_CACHEDIR, which defaults to <out>/cache here: a run killed at any point and
 * started again asks the teacher nothing it already answered. A finished --out is kept unless
 * --force.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compile_run.h"
#include "track_cli.h"
#include "dspy/clock.h"
#include "dspy/history.h"
#include "dspy/settings.h"
#include "program_file.h"

void compile_heading(int step, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\n== [%d/%d] ", step, COMPILE_NSTEPS);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " ==\n");
    va_end(ap);
    fflush(stderr);
}

void compile_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("   ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
}

static void show_example(const char *name, const dspy_dataset *ds) {
    char *rep = NULL;
    if (dspy_dataset_len(ds) && dspy_example_repr(dspy_dataset_get(ds, 0), &rep) == DSPY_OK)
        compile_note("%s[0] = %s", name, rep);
    free(rep);
}

static void step_data(run_state *r) {
    compile_heading(1, "Data: %s", r->t.data_desc);
    compile_note("split: %s", r->t.split_desc);
    compile_note("trainset: %zu %s examples; devset: %zu labelled examples%s", dspy_dataset_len(r->t.trainset),
                 r->filter_traces ? "labelled" : "unlabeled", dspy_dataset_len(r->t.devset),
                 dspy_args_get(r->a, "limit-train") || dspy_args_get(r->a, "limit-dev")
                     ? " (limited by --limit-train/--limit-dev)" : "");
    show_example("trainset", r->t.trainset);
    show_example("devset  ", r->t.devset);
}

static void step_program(run_state *r) {
    const dspy_module *pred = dspy_module_is_predict(r->program) ? r->program : dspy_module_child(r->program, "predict");
    size_t nl = r->t.labels ? dspy_labels_count(r->t.labels) : 0;
    compile_heading(2, "Program: dspy.%s(%s%s), prompt format DSPy %s", r->t.cot ? "ChainOfThought" : "Predict",
                    r->t.signature_given ? "the given signature" : "\"...\"", "", dspy_profile_name(r->t.profile));
    if (!r->t.signature_given && nl > 8) {
        char *sig = dspy_signature_text(dspy_predict_signature(pred));
        compile_note("signature: %s: Literal[...%zu labels in the data's order]", sig ? sig : "?", nl);
        free(sig);
    } else {
        compile_note("signature: %s", r->t.signature);
    }
    compile_note("signature instructions: %s", dspy_signature_instructions(dspy_predict_signature(pred)));
    compile_note("metric: %s on '%s'%s", r->t.metric.name, r->t.metric_field,
                 r->filter_traces ? "; also BootstrapFinetune's: only traces it scores truthy are kept" : "");
}

static dspy_status step_lms(run_state *r) {
    compile_heading(3, "LMs: teacher %s, student %s", dspy_args_get(r->a, "teacher"), dspy_args_get(r->a, "student"));
    if (r->teacher_is_oracle)
        compile_note("teacher: %s — a STAND-IN, not a language model: it answers each prompt with the dataset's gold "
                     "label and a templated reasoning line (dspy/oracle.h)", dspy_lm_model(r->teacher_lm));
    else
        compile_note("teacher: %s%s%s", dspy_lm_model(r->teacher_lm), dspy_args_get(r->a, "teacher-base-url") ? " at " : "",
                     dspy_args_get(r->a, "teacher-base-url") ? dspy_args_get(r->a, "teacher-base-url") : "");
    compile_note("student: %s (temperature %g, max_tokens %ld)", dspy_lm_model(r->student_lm), r->temperature,
                 r->max_tokens);
    if (strncmp(dspy_lm_model(r->teacher_lm), "openai/local:", 13) == 0) {
        compile_note("launching the teacher with `dspy serve` ...");
        dspy_status st = dspy_program_launch(r->teacher, &r->lp, &r->teacher_server);
        if (st) return st;
        for (size_t i = 0; i < dspy_launched_count(r->teacher_server); i++) {
            dspy_local_server *s = dspy_launched_server(r->teacher_server, i);
            compile_note("teacher server: %s (pid %d, log %s)", dspy_local_api_base(s), (int)dspy_local_pid(s),
                         dspy_local_log_path(s));
        }
    }
    compile_print_plan(r);
    return DSPY_OK;
}

static dspy_status step_compile(run_state *r, dspy_train_bar *bar) {
    compile_heading(5, "BootstrapFinetune.compile: bootstrap the teacher's traces, write the JSONL, fine-tune the student");
    dspy_bootstrap_finetune_params p = dspy_bootstrap_finetune_params_default();
    p.prepare.train_kwargs = r->train_kwargs;
    p.prepare.metric = r->filter_traces ? &r->t.metric : NULL;
    p.prepare.num_threads = (int32_t)r->num_threads;
    p.prepare.max_errors = r->max_errors >= 0 ? (int32_t)r->max_errors : (int32_t)(dspy_dataset_len(r->t.trainset) + 1);
    p.prepare.display_progress = true;
    p.prepare.progress_out = stderr;
    p.prepare.log_failures = r->verbose;
    p.prepare.on_failure = failure_log_add;
    p.prepare.failure_user = &r->boot_failures;
    p.progress = dspy_train_bar_update;
    p.progress_ud = bar;
    p.train_threads = (int32_t)r->train_threads;
    p.chat_date = r->chat_date;
    compile_note("train_kwargs (yours; LocalProvider defaults fill the rest): %s", r->train_kwargs);
    dspy_module *teachers[1] = {r->teacher};
    dspy_status st = dspy_bootstrap_finetune_compile(r->student, r->t.trainset, teachers, 1, &p, &r->compiled, &r->report);
    dspy_train_bar_close(bar);
    const dspy_bootstrap_finetune_report *rep = &r->report;
    if (!r->verbose || st) {
        dspy_str fp = DSPY_STR_INIT;
        dspy_str_appendf(&fp, "%s/failures-bootstrap.jsonl", r->out_dir);
        if (failure_log_count(&r->boot_failures)) failure_log_save(&r->boot_failures, dspy_str_cstr(&fp));
        failure_log_print(&r->boot_failures, stderr, "bootstrapped", dspy_str_cstr(&fp));
        dspy_str_free(&fp);
    }
    if (!st || rep->bootstrap.examples)
        compile_note("bootstrap: %zu examples, %zu traces, %zu unparseable answers, %zu teacher errors (%.1f s)",
                     rep->bootstrap.examples, rep->bootstrap.items, rep->bootstrap.parse_failures, rep->bootstrap.errors,
                     rep->bootstrap_s);
    for (size_t i = 0; i < rep->n_runs; i++) {
        const dspy_finetune_run *x = &rep->runs[i];
        if (x->data_path)
            compile_note("fine-tuning data: %s (%zu chat records; %zu kept, %zu filtered out by the metric, %zu failed)",
                         x->data_path, x->n_records, x->data.kept, x->data.filtered_out, x->data.failed);
        if (x->train_kwargs) compile_note("effective train_kwargs: %s", x->train_kwargs);
        if (x->finetuned_model)
            compile_note("fine-tuned: %lld optimizer steps, loss %.4f -> %.4f, %lld tokens, %.1f s -> %s",
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

/* --device on the fine-tuned LM: its launch_kwargs carry it to `dspy serve` (saved with the
 * program, so `dspy eval` of the saved program serves it the same way). */
static dspy_status record_device(run_state *r) {
    if (strcmp(r->device, "auto") == 0 || !r->finetuned_lm) return DSPY_OK;
    dspy_json *state = dspy_lm_dump_state(r->finetuned_lm), *ov = dspy_json_object();
    dspy_lm *copy = NULL;
    const dspy_json *lk = state ? dspy_json_get(state, "launch_kwargs") : NULL;
    dspy_json *nlk = lk ? dspy_json_copy(lk) : dspy_json_object();
    dspy_status st = state && ov && nlk ? dspy_json_set_str(nlk, "device", r->device) : dspy_fail(DSPY_ERR_NOMEM, "oom");
    if (!st) {
        st = dspy_json_set(ov, "launch_kwargs", nlk);
        nlk = NULL;
    }
    if (!st) st = dspy_lm_copy(r->finetuned_lm, ov, &copy);
    if (!st) st = dspy_module_set_lm(r->compiled, copy);
    if (!st) {
        dspy_lm_free(r->finetuned_lm);
        r->finetuned_lm = copy;
        copy = NULL;
    }
    dspy_lm_free(copy);
    dspy_json_decref(nlk);
    dspy_json_decref(ov);
    dspy_json_decref(state);
    return st;
}

static dspy_status step_launch(run_state *r) {
    compile_heading(6, "Launch: `dspy serve` with the fine-tuned student (lm.launch())");
    double t0 = dspy_now_s();
    /* the fine-tuned LM's launch_kwargs carry --device; the serve args stay */
    dspy_local_params lp = r->lp;
    if (strcmp(r->device, "auto") != 0) lp.n_extra_args--;
    dspy_status st = dspy_program_launch(r->compiled, &lp, &r->student_server);
    if (st) return st;
    r->t_launch = dspy_now_s() - t0;
    for (size_t i = 0; i < dspy_launched_count(r->student_server); i++) {
        dspy_local_server *s = dspy_launched_server(r->student_server, i);
        compile_note("%s ready in %.1f s (pid %d, log %s)", dspy_local_api_base(s), r->t_launch, (int)dspy_local_pid(s),
                     dspy_local_log_path(s));
    }
    /* the tutorial's first call: classify_ft(**devset[0].inputs()) */
    dspy_prediction *pred = NULL;
    st = dspy_module_call_example(r->compiled, dspy_dataset_get(r->t.devset, 0), NULL, &pred);
    if (st) {
        compile_note("a first call failed (counted in the evaluation as well): %.200s", dspy_errmsg());
    } else {
        char *rep = NULL;
        if (dspy_prediction_repr(pred, &rep) == DSPY_OK) compile_note("classify_ft(**devset[0].inputs()) = %s", rep);
        free(rep);
    }
    dspy_prediction_free(pred);
    return DSPY_OK;
}

static dspy_status step_save(run_state *r, dspy_str *program_path) {
    compile_heading(9, "Kill the server, save the program and the results");
    dspy_status st = dspy_program_kill(r->student_server);
    if (st) return st;
    dspy_str_appendf(program_path, "%s/program.json", r->out_dir);
    if (!dspy_str_ok(program_path)) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    /* the model path relative to program.json: the run folder can move */
    if ((st = program_file_relativize_models(r->compiled, dspy_str_cstr(program_path)))) return st;
    dspy_lm *saved = NULL;
    if (!dspy_module_get_lm(r->compiled, &saved) && saved)
        compile_note("server stopped; the program's LM keeps only its model string %s", dspy_lm_model(saved));
    if ((st = dspy_module_save(r->compiled, dspy_str_cstr(program_path)))) return st;
    compile_note("program: %s (re-evaluate with `dspy eval --program %s`)", dspy_str_cstr(program_path),
                 dspy_str_cstr(program_path));
    return DSPY_OK;
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
    if (!st) st = dspy_json_set_str(o, "format", dspy_profile_name(r->t.profile));
    if (!st) st = dspy_json_set_str(o, "data", r->t.data_desc);
    if (!st) st = dspy_json_set_str(o, "split", r->t.split_desc);
    if (!st) st = dspy_json_set_str(o, "signature", r->t.signature);
    if (!st) st = dspy_json_set_str(o, "module", r->t.cot ? "ChainOfThought" : "Predict");
    if (!st) st = dspy_json_set_str(o, "metric", r->t.metric.name);
    if (!st) st = dspy_json_set_str(o, "metric_field", r->t.metric_field);
    if (!st) st = dspy_json_set(o, "trainset", dspy_json_int((int64_t)dspy_dataset_len(r->t.trainset)));
    if (!st) st = dspy_json_set(o, "devset", dspy_json_int((int64_t)dspy_dataset_len(r->t.devset)));
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
    if (!st && r->after.result) {
        st = dspy_json_set(o, "score", dspy_json_real(dspy_eval_result_score(r->after.result)));
        if (!st) st = dspy_json_set(o, "eval_failed", dspy_json_int((int64_t)dspy_eval_result_n_failed(r->after.result)));
    }
    if (!st) {
        dspy_json *b = compile_table_json(r);
        st = b ? dspy_json_set(o, "before_after", b) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    if (!st) st = dspy_json_set(o, "eval_threads", dspy_json_int(r->num_threads));
    if (!st) st = dspy_json_set_str(o, "device", r->device);
    if (!st) st = dspy_json_set_str(o, "program", program_path);
    if (!st) st = dspy_json_set(o, "seconds_data", dspy_json_real(r->t_data));
    if (!st) st = dspy_json_set(o, "seconds_baselines",
                                dspy_json_real(r->before_student.seconds + r->before_teacher.seconds));
    if (!st) st = dspy_json_set(o, "seconds_bootstrap", dspy_json_real(rep->bootstrap_s));
    if (!st) st = dspy_json_set(o, "seconds_finetune", dspy_json_real(rep->train_s));
    if (!st) st = dspy_json_set(o, "seconds_launch", dspy_json_real(r->t_launch));
    if (!st) st = dspy_json_set(o, "seconds_evaluate", dspy_json_real(r->t_eval));
    if (!st) st = dspy_json_set(o, "seconds_total", dspy_json_real(dspy_now_s() - r->t_start));
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
    printf("What ran for real: %s (split: %s), DSPy %s ChatAdapter prompts, bootstrap_trace_data on %ld threads, the "
           "fine-tuning JSONL, the C trainer, `dspy serve`, evaluation over HTTP on %ld threads.\n",
           r->t.data_desc, r->t.split_desc, dspy_profile_name(r->t.profile), r->num_threads, r->num_threads);
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
    if (r->after.result)
        printf("Evaluate: score %.2f%% on %zu dev examples (%zu failed: unparseable or errored answers count 0); "
               "%.1f s\n", dspy_eval_result_score(r->after.result), dspy_eval_result_len(r->after.result),
               dspy_eval_result_n_failed(r->after.result), r->t_eval);
    printf("Saved: %s, %s/results.json, %s/results.csv, %s/report.json\n", program_path, r->out_dir, r->out_dir,
           r->out_dir);
    compile_print_table(r);
    printf("Total: %.1f s\n", dspy_now_s() - r->t_start);
    fflush(stdout);
}

static const dspy_opt k_opts[] = {
    {"student", "DIR", "student model directory (Hugging Face layout, e.g. from `dspy init-model`)", true, false, NULL},
    {"teacher", "MODEL", "openai/<model> (OPENAI_API_KEY), openai/local:<dir> (served here), or oracle (an offline "
                         "stand-in that answers with the gold label)", false, false, "openai/gpt-4o-mini"},
    {"teacher-base-url", "URL", "any OpenAI-compatible endpoint for the teacher (e.g. http://127.0.0.1:8000/v1); several, comma-separated, share the requests (replicas)", false, false, NULL},
    {"teacher-api-key", "KEY", "the teacher's API key (default: $OPENAI_API_KEY)", false, false, NULL},
    {"teacher-max-tokens", "N", "max_tokens of the teacher's answers (default: not sent; the tutorial used 3000)", false, false, NULL},
    TASK_OPTS_DATA,
    {"trainset", "SRC", "the examples the teacher answers (.jsonl, .csv, or hf:DATASET[:CONFIG]:SPLIT); give "
                        "--devset too", false, false, NULL},
    {"split", "NAME", "tutorial (500 train / 100 dev from the first 1,000 rows) or stratified (Banking77: of the "
                      "official test set)", false, false, "tutorial"},
    {"limit-train", "N", "use only the first N trainset examples", false, false, NULL},
    {"limit-dev", "N", "use only the first N devset examples", false, false, NULL},
    TASK_OPTS_PROGRAM,
    {"filter-traces", NULL, "BootstrapFinetune(metric=...): keep only the teacher traces the metric scores truthy "
                            "(the trainset keeps its labels)", false, false, NULL},
    {"train-kwargs", "KEY=VALUE", "a fine-tuning setting (DSPy's train_kwargs: num_train_epochs, learning_rate, "
                                  "use_peft, max_seq_length, ...)", false, true, NULL},
    {"baselines", "WHICH", "evaluate before compiling: student,teacher, student, teacher or none (none also skips "
                           "the early start of the student's server that checks --serve-arg/--device)", false, false,
     "student,teacher"},
    {"num-threads", "N", "threads for bootstrapping and evaluation", false, false, "4"},
    {"max-errors", "N", "stop bootstrapping/evaluation after N failed examples (default: never; failures are "
                        "counted, unparseable answers are scored as wrong)", false, false, NULL},
    {"max-tokens", "N", "max_tokens of the student's answers", false, false, "1000"},
    {"temperature", "T", "the student's sampling temperature", false, false, "0.0"},
    {"display-table", "N", "show the first N evaluation rows", false, false, "5"},
    {"train-threads", "N", "trainer compute threads (default: all cores)", false, false, NULL},
    {"serve-arg", "ARG", "an extra `dspy serve` argument for the student's server (repeat: --serve-arg=--max-seqs --serve-arg=4)", false, true, NULL},
    {"device", "NAME", "where the student's servers run: auto, cpu or cuda (`dspy serve --device`; recorded in "
                       "the fine-tuned LM's launch_kwargs)", false, false, "auto"},
    {"launch-timeout", "SECONDS", "how long to wait for a server to be ready", false, false, "600"},
    {"chat-date", "DATE", "Llama 3 'Today Date' for training and serving (default: today)", false, false, NULL},
    {"verbose", NULL, "DSPy's log line for each failed example instead of one short line", false, false, NULL},
    {"out", "DIR", "output directory: program.json, results.json/.csv, report.json, failures-*.jsonl, cache/", false,
     false, "dspy-compile-out"},
    {"force", NULL, "run again in an --out that holds a finished run", false, false, NULL},
    {"mlflow-uri", "URI", "log the run to an MLflow tracking server (default: $MLFLOW_TRACKING_URI)", false, false, NULL},
    {0},
};

/* Frees what a run built, in any state (each field NULL or cleared until its step ran). */
static void run_clear(run_state *r) {
    dspy_launched_free(r->student_server);
    dspy_launched_free(r->teacher_server);
    compile_eval_clear(&r->before_student);
    compile_eval_clear(&r->before_teacher);
    compile_eval_clear(&r->after);
    if (r->boot_failures.items) failure_log_free(&r->boot_failures);
    dspy_bootstrap_finetune_report_clear(&r->report);
    dspy_module_free(r->compiled);
    dspy_module_free(r->student);
    dspy_module_free(r->teacher);
    dspy_module_free(r->program);
    dspy_lm_free(r->finetuned_lm);
    dspy_lm_free(r->student_lm);
    dspy_lm_free(r->teacher_lm);
    dspy_oracle_free(r->oracle);
    task_free(&r->t);
    free(r->out_dir);
    free(r->train_kwargs);
}

int cmd_compile(int argc, char **argv) {
    dspy_args a;
    int rc = dspy_args_parse(&a, "compile", "--student DIR [--teacher MODEL] [--dataset SRC | --trainset SRC --devset "
                                            "SRC] [--signature SIG] [options]",
                             "DSPy's BootstrapFinetune tutorial in one command: a teacher LM answers the trainset\n"
                             "through a ChainOfThought (or Predict) program, the student model is fine-tuned on the\n"
                             "teacher's traces, served with `dspy serve`, and evaluated on the devset over HTTP, next to\n"
                             "the untrained student and the teacher. Banking77 unless --dataset/--trainset name other data.",
                             k_opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;

    run_state r;
    memset(&r, 0, sizeof r);
    r.a = &a;
    r.t_start = dspy_now_s();
    r.before_student.name = "untrained student";
    r.before_teacher.name = "teacher";
    r.after.name = "fine-tuned student";
    dspy_train_bar bar = {0};
    bar.out = stderr;
    dspy_run *run = NULL;
    int ret = DSPY_EXIT_FAIL;
    dspy_status st;
    dspy_str program_path = DSPY_STR_INIT, logdir = DSPY_STR_INIT;
    bool set_cachedir = !getenv("DSPY_CACHEDIR") || !*getenv("DSPY_CACHEDIR");
    if ((st = compile_prepare(&r))) {
        ret = dspy_cli_usage_error("compile");
        goto done;
    }
    r.t_data = dspy_now_s() - r.t_start;
    if ((st = dspy_mkdir_p(r.out_dir))) goto fail;
    if (set_cachedir) {
        dspy_str c = DSPY_STR_INIT;
        dspy_str_appendf(&c, "%s/cache", r.out_dir);
        setenv("DSPY_CACHEDIR", dspy_str_cstr(&c), 1);
        dspy_str_free(&c);
    }
    dspy_str_appendf(&logdir, "%s/logs", r.out_dir);
    r.lp.log_dir = dspy_str_cstr(&logdir);
    if ((st = failure_log_init(&r.boot_failures, r.t.trainset))) goto fail;
    dspy_settings_set_profile(r.t.profile);
    dspy_settings_set_adapter(DSPY_ADAPTER_CHAT, r.t.json_fallback);
    dspy_settings_set_local_structured(r.t.structured);
    fprintf(stderr, "dspy compile: out %s, DSPY_CACHEDIR %s\n", r.out_dir, getenv("DSPY_CACHEDIR"));
    run = cli_run_begin(&a, "compile", r.out_dir, argc, argv, stdout);

    step_data(&r);
    step_program(&r);
    if ((st = step_lms(&r))) goto fail;
    compile_heading(4, "Before: the untrained student and the teacher on the devset");
    if ((st = compile_baseline_student(&r))) {
        ret = dspy_cli_usage_error("compile");
        goto done;
    }
    if ((st = compile_baseline_teacher(&r))) goto fail;
    cli_run_baseline(run, "student", r.before_student.result, r.student);
    cli_run_baseline(run, "teacher", r.before_teacher.result, r.teacher);
    if ((st = step_compile(&r, &bar))) goto fail;
    dspy_program_kill(r.teacher_server);
    if ((st = record_device(&r)) || (st = step_launch(&r))) goto fail;
    compile_heading(7, "Evaluate: the devset over HTTP (%ld threads), metric %s on %s", r.num_threads, r.t.metric.name,
                    r.t.metric_field);
    double t0 = dspy_now_s();
    st = compile_evaluate(&r, r.compiled, &r.after, "finetuned-student", true);
    r.t_eval = dspy_now_s() - t0;
    if (st) goto fail;
    compile_heading(8, "inspect_history(n=1): the last call to the fine-tuned student");
    if (r.finetuned_lm) dspy_lm_inspect_history(r.finetuned_lm, 1, stderr);
    if ((st = step_save(&r, &program_path)) || (st = write_report(&r, dspy_str_cstr(&program_path)))) goto fail;
    print_summary(&r, dspy_str_cstr(&program_path));
    cli_run_compile(run, &r.report, r.finetuned_lm);
    cli_run_end(&run, true);
    ret = DSPY_EXIT_OK;
fail:
    if (ret) {
        ret = dspy_cli_error("compile");
        if (r.report.n_runs || r.report.bootstrap.examples) {
            const dspy_bootstrap_finetune_report *rep = &r.report;
            fprintf(stderr, "       (so far: %zu examples bootstrapped, %zu teacher errors; cached answers stay in "
                            "%s for a rerun)\n", rep->bootstrap.examples, rep->bootstrap.errors, getenv("DSPY_CACHEDIR"));
        }
    }
done:
    cli_run_end(&run, ret == DSPY_EXIT_OK);
    dspy_train_bar_close(&bar);
    run_clear(&r);
    dspy_str_free(&program_path);
    dspy_str_free(&logdir);
    dspy_settings_reset();
    return ret;
}
