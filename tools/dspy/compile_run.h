/* compile_run.h — the state of one `dspy compile` run, shared by its parts:
 *   cmd_compile.c      options, the steps in order, the summary and report.json
 *   compile_prepare.c  everything checked and built before the first teacher call
 *   compile_plan.c     the estimate of teacher calls and tokens printed before spending
 *   compile_eval.c     evaluations on the devset (the untrained student, the teacher, the
 *                      fine-tuned student) and the before/after table
 */
#ifndef DSPY_TOOL_COMPILE_RUN_H
#define DSPY_TOOL_COMPILE_RUN_H

#include <stdbool.h>

#include "args.h"
#include "dspy/compile.h"
#include "dspy/evaluate.h"
#include "dspy/oracle.h"
#include "dspy/train.h"
#include "failures.h"
#include "task_opts.h"

#define COMPILE_NSTEPS 9

/* One evaluation on the devset. */
typedef struct compile_eval {
    const char *name;          /* "untrained student", "teacher", "fine-tuned student" */
    bool ran;
    dspy_eval_result *result;
    double seconds;
    size_t unparseable;
    char error[256];           /* why it did not finish, "" when it did */
} compile_eval;

typedef struct run_state {
    const dspy_args *a;
    task t;
    char *out_dir;
    char chat_date[32];
    long num_threads, max_errors, table_rows, max_tokens, train_threads;
    double temperature, launch_timeout;
    char *train_kwargs;        /* the user's train_kwargs, compact JSON */
    bool filter_traces;        /* BootstrapFinetune(metric=...) */
    bool baseline_student, baseline_teacher;
    bool verbose;
    const char *device;        /* auto, cpu, cuda */
    /* programs and LMs */
    dspy_module *program, *student, *teacher, *compiled;
    dspy_lm *student_lm, *teacher_lm, *finetuned_lm;
    dspy_oracle *oracle;
    bool teacher_is_oracle;
    dspy_launched *teacher_server, *student_server;
    dspy_local_params lp;      /* servers: log dir, timeout, extra args (serve args, device) */
    const char *serve_args[DSPY_ARGS_MAX_MULTI + 3];
    char device_arg[32];
    char max_seqs_arg[32];
    /* results */
    dspy_bootstrap_finetune_report report;
    compile_eval before_student, before_teacher, after;
    failure_log boot_failures;
    double t_start, t_data, t_launch, t_eval;
} run_state;

/* Checks every option, path, train_kwarg, the data, the program and the LMs; builds the task,
 * the program and both LMs. No LM is called. */
dspy_status compile_prepare(run_state *r);
/* Prints the plan: teacher calls, prompt tokens (counted with the student's tokenizer), answers
 * already in the cache. */
void compile_print_plan(run_state *r);
/* Launches the untrained student's server and checks that it answers (serve arguments, device,
 * model); evaluates it on the devset when asked; kills it. */
dspy_status compile_baseline_student(run_state *r);
/* Evaluates the teacher program on the devset (when asked). */
dspy_status compile_baseline_teacher(run_state *r);
/* Evaluates `program` on the devset into `e` (quiet failures, failures-<tag>.jsonl in out). */
dspy_status compile_evaluate(run_state *r, dspy_module *program, compile_eval *e, const char *tag, bool save_results);
/* The before/after table (stdout). */
void compile_print_table(run_state *r);
/* {"untrained_student": {...}, "teacher": {...}, "finetuned_student": {...}, "majority_class",
 * "majority_rate"} for report.json (new reference). */
dspy_json *compile_table_json(run_state *r);
void compile_eval_clear(compile_eval *e);

/* Steps' headings and notes on stderr. */
void compile_heading(int step, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void compile_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
