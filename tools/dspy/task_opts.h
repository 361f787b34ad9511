/* task_opts.h — what `dspy compile` and `dspy eval` share to describe a task: its data
 * (Banking77 by default; JSONL/CSV files or Hugging Face splits with a field mapping; the
 * tutorial or stratified split of one labelled dataset), its program (signature, module,
 * format profile) and its metric, all parsed and checked before anything is spent.
 *
 * Data, by precedence:
 *   --trainset SRC --devset SRC      two sources (compile needs both, eval only --devset)
 *   --dataset SRC --split S          one labelled pool, split as the tutorial does (the first
 *                                    1,000 rows shuffled with random.Random(--seed), --train-size
 *                                    then --dev-size) or stratified (dspy_stratified_split)
 *   (nothing)                        Banking77: --data-dir DIR, else the HF viewer API
 * SRC is a .jsonl/.csv path or hf:DATASET[:CONFIG]:SPLIT (dspy/data_source.h). Fields:
 * --input-fields text[=COLUMN],... (default text) and --label-field label[=COLUMN].
 * Program: --signature (default "<inputs> -> <label>: Literal[<labels>]", the labels in the
 * dataset's ClassLabel order, else sorted; `str` instead of the Literal for --metric f1),
 * --module cot|predict, --instructions, --dspy-format.
 * Metric: exact[:FIELD] (default, FIELD = the label field), f1[:FIELD], answer_exact_match
 * [:FIELD], none (every parsed answer scores True: the share of examples answered).
 */
#ifndef DSPY_TOOL_TASK_OPTS_H
#define DSPY_TOOL_TASK_OPTS_H

#include <stdbool.h>
#include <stddef.h>

#include "args.h"
#include "dspy/data_source.h"
#include "dspy/evaluate.h"
#include "dspy/module.h"

#define TASK_MAX_INPUTS 16

/* Options every task command declares (append them to its option table). */
#define TASK_OPTS_DATA                                                                                              \
    {"data-dir", "DIR", "Banking77 CSVs (train.csv, test.csv, labels.txt); default: the Hugging Face API", false,   \
     false, NULL},                                                                                                 \
        {"cache-dir", "DIR", "Hugging Face download cache [default: $DSPY_CACHEDIR/hf or ~/.dspy_cache/hf]", false, \
         false, NULL},                                                                                             \
        {"dataset", "SRC", "one labelled dataset (.jsonl, .csv, or hf:DATASET[:CONFIG]:SPLIT) split with --split",  \
         false, false, NULL},                                                                                      \
        {"devset", "SRC", "the labelled devset (.jsonl, .csv, or hf:DATASET[:CONFIG]:SPLIT)", false, false, NULL},  \
        {"input-fields", "F[=COL],..", "the program's input fields and the columns they read (default: text)",     \
         false, true, NULL},                                                                                       \
        {"label-field", "F[=COL]", "the label field and the column it reads (default: label)", false, false, NULL}, \
        {"train-size", "N", "split: trainset size (tutorial: 500, stratified: 500)", false, false, NULL},           \
        {"dev-size", "N", "split: devset size (tutorial: 100, stratified: 154)", false, false, NULL},               \
        {"seed", "N", "split: the random.Random seed", false, false, "0"}

#define TASK_OPTS_PROGRAM                                                                                           \
    {"signature", "SIG", "the program's signature, e.g. \"question -> answer\" or \"text -> label: "                 \
                         "Literal['a', 'b']\" (default: the input fields -> label: Literal[the dataset's labels])",  \
     false, false, NULL},                                                                                          \
        {"module", "NAME", "cot (ChainOfThought, the tutorial's) or predict", false, false, NULL},                 \
        {"instructions", "TEXT", "the signature's instructions (default: DSPy's)", false, false, NULL},             \
        {"observed-labels", NULL, "the default Literal lists only the labels that occur in the trainset and devset "  \
                                  "(in the label list's order): a shorter prompt", false, false, NULL},             \
        {"metric", "SPEC", "exact[:FIELD] (default: exact match on the label field), f1[:FIELD] (DSPy's token "     \
                           "F1), answer_exact_match[:FIELD], or none",                                               \
         false, false, NULL},                                                                                      \
        {"dspy-format", "VERSION", "prompt format profile: 3.3 (DSPy 3.3.1) or 2.6 (the tutorial's DSPy)", false,    \
         false, NULL},                                                                                             \
        {"no-json-fallback", NULL, "ChatAdapter(use_json_adapter_fallback=False): an unparseable answer is not "   \
                                   "asked again in JSON (1 LM call instead of up to 3)", false, false, NULL},     \
        {"no-structured", NULL, "do not ask a local student's `dspy serve` for always-valid answers (the ChatAdapter " \
                                "layout with a Literal value; json_schema for the JSONAdapter): plain DSPy requests", \
         false, false, NULL}

typedef enum task_metric_kind { TASK_METRIC_EXACT, TASK_METRIC_AEM, TASK_METRIC_F1, TASK_METRIC_NONE } task_metric_kind;

typedef struct task {
    bool compile;                 /* compile needs a trainset too */
    /* fields */
    dspy_field_map inputs[TASK_MAX_INPUTS];
    char input_buf[TASK_MAX_INPUTS][64];
    char input_spec[TASK_MAX_INPUTS][192]; /* "field=column" pieces the maps point into */
    size_t n_inputs;
    dspy_field_map label;
    char label_buf[64];
    char label_spec[192];
    /* data */
    bool banking77;               /* the default data */
    dspy_dataset *trainset;       /* compile: labelled where the source has labels */
    dspy_dataset *devset;         /* labelled */
    dspy_dataset *known;          /* every labelled example seen (the oracle teacher's map) */
    dspy_labels *labels;          /* the label values, in the order the default Literal uses */
    char data_desc[512];          /* "Banking77 (../shared/data/banking77)", "train.jsonl + dev.jsonl" */
    char split_desc[256];
    /* program */
    char *signature;              /* the signature text (malloc'd) */
    bool signature_given;
    bool cot;
    dspy_profile profile;
    bool profile_given;
    bool json_fallback;           /* ChatAdapter's JSON fallback (DSPy's default: on) */
    bool structured;              /* local models: dspy_settings_set_local_structured (default on) */
    const char *instructions;
    /* metric */
    task_metric_kind metric_kind;
    char metric_field[64];
    dspy_metric metric;
} task;

/* Parses the field mapping, module, profile and metric options (no I/O). */
dspy_status task_parse(task *t, const dspy_args *a, bool compile);
/* Loads the data the options name and the label set. `split` is the command's --split value;
 * limits (< 0: none) cut the trainset / devset. */
dspy_status task_load(task *t, const dspy_args *a, const char *trainset_src, const char *split, long limit_train,
                      long limit_dev);
/* Builds t->signature (the given one, or the default from the fields and labels). */
dspy_status task_signature(task *t, const dspy_args *a);
/* Checks a program's signature (a Predict's, reasoning included for CoT) against the data and
 * the metric: every input field is in the examples, the metric field is an output and in the
 * devset. Warns (stderr) about devset labels a Literal can never produce. */
dspy_status task_check(task *t, const dspy_signature *sig);
/* Builds the program: ChainOfThought or Predict over t->signature. */
dspy_status task_program(const task *t, dspy_module **out);
/* The most frequent gold value of the metric field in the devset and its share in percent. */
void task_majority(const task *t, const char **label, double *rate);
void task_free(task *t);

#endif
