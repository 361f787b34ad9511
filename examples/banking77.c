/* banking77.c — DSPy's "Classification fine-tuning" tutorial (Banking77, BootstrapFinetune) step
 * by step with the dspy.c C API. Each block is headed by the Python line it mirrors.
 *
 *   usage: banking77 BANKING77_DIR STUDENT_DIR OUT_DIR [N_TRAIN [N_DEV]]
 *
 * BANKING77_DIR holds train.csv/test.csv/labels.txt (e.g. ../shared/data/banking77);
 * STUDENT_DIR is a Hugging Face model directory (Llama-3.2-1B-Instruct, or for a quick offline
 * run a tiny random one: `dspy init-model --tokenizer ../shared/models/llama3-tokenizer --out
 * DIR`). The teacher is gpt-4o-mini when OPENAI_API_KEY is set and DSPY_EXAMPLE_TEACHER=openai,
 * else the ORACLE STAND-IN (dspy/oracle.h: gold labels with a templated reasoning line, not an
 * LM), so the example runs offline. Launching the fine-tuned model serves it on a thread of
 * this program (dspy/local.h); set DSPY_BIN to a dspy executable to run `dspy serve` as a child
 * instead. N_TRAIN/N_DEV (default 500/100, the tutorial's) shrink the
 * run; the fine-tuning settings (DSPy's train_kwargs) come from DSPY_EXAMPLE_TRAIN_KWARGS, a JSON
 * object (default {"num_train_epochs": 1}; DSPy's defaults fill the rest), and the student's
 * max_tokens from DSPY_EXAMPLE_MAX_TOKENS (default 2000, the tutorial's).
 */
/* setenv() and realpath() are POSIX (realpath in its XSI part), not ISO C: ask for them by name
 * so that the example builds with -std=c11 as well as with GNU extensions. */
#define _XOPEN_SOURCE 700

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/compile.h"
#include "dspy/datasets.h"
#include "dspy/evaluate.h"
#include "dspy/history.h"
#include "dspy/module.h"
#include "dspy/oracle.h"
#include "dspy/settings.h"

#define TRY(x)                                                                  \
    do {                                                                        \
        if ((st = (x)) != DSPY_OK) {                                            \
            fprintf(stderr, "error: %s: %s\n", #x, dspy_errmsg());              \
            goto done;                                                          \
        }                                                                       \
    } while (0)

/* metric = (lambda x, y, trace=None: x.label == y.label) */
static dspy_status metric_fn(void *user, const dspy_example *x, const dspy_prediction *y, dspy_trace *trace,
                             double *score) {
    (void)user;
    (void)trace;
    const char *gold = dspy_example_get_str(x, "label"), *got = dspy_prediction_get_str(y, "label");
    *score = gold && got && strcmp(gold, got) == 0;
    return DSPY_OK;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s BANKING77_DIR STUDENT_DIR OUT_DIR [N_TRAIN [N_DEV]]\n", argv[0]);
        return 2;
    }
    const char *data_dir = argv[1], *student_dir = argv[2], *out_dir = argv[3];
    size_t n_train = argc > 4 ? (size_t)atol(argv[4]) : 500, n_dev = argc > 5 ? (size_t)atol(argv[5]) : 100;
    dspy_status st = DSPY_OK;
    dspy_dataset *train = NULL, *trainset = NULL, *devset = NULL, *tmp = NULL;
    dspy_labels *classes = NULL;
    dspy_module *classify = NULL, *student_classify = NULL, *teacher_classify = NULL, *classify_ft = NULL;
    dspy_lm *student_lm = NULL, *teacher_lm = NULL;
    dspy_oracle *oracle = NULL;
    dspy_launched *server = NULL;
    dspy_prediction *pred = NULL;
    dspy_eval_result *result = NULL;
    dspy_bootstrap_finetune_report report = {0};
    dspy_str sig = DSPY_STR_INIT, model = DSPY_STR_INIT, path = DSPY_STR_INIT, kw = DSPY_STR_INIT;
    char *text = NULL;
    TRY(dspy_mkdir_p(out_dir));
    if (!getenv("DSPY_CACHEDIR")) { /* the LM cache and the fine-tuning files go under OUT_DIR */
        dspy_str_appendf(&path, "%s/cache", out_dir);
        setenv("DSPY_CACHEDIR", dspy_str_cstr(&path), 1);
        dspy_str_clear(&path);
    }

    /* CLASSES = load_dataset("PolyAI/banking77", split="train").features["label"].names
     * raw_data = [dspy.Example(x, label=CLASSES[x.label]).with_inputs("text") for x in
     *             DataLoader().from_huggingface("PolyAI/banking77", ...)[:1000]]
     * random.Random(0).shuffle(raw_data) */
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = data_dir;
    TRY(dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &train, &classes));
    /* unlabeled_trainset = [dspy.Example(text=x.text).with_inputs("text") for x in raw_data[:500]]
     * devset = raw_data[500:600] */
    TRY(dspy_banking77_tutorial_split(train, &trainset, &devset));
    TRY(dspy_dataset_slice(trainset, 0, n_train, &tmp));
    dspy_dataset_free(trainset);
    trainset = tmp;
    tmp = NULL;
    TRY(dspy_dataset_slice(devset, 0, n_dev, &tmp));
    dspy_dataset_free(devset);
    devset = tmp;
    tmp = NULL;
    printf("trainset: %zu unlabeled examples, devset: %zu labelled examples\n", dspy_dataset_len(trainset),
           dspy_dataset_len(devset));

    /* classify = dspy.ChainOfThought(f"text -> label: Literal{CLASSES}") */
    dspy_str_append(&sig, "text -> label: Literal[");
    for (size_t i = 0; i < dspy_labels_count(classes); i++) {
        const char *name = dspy_labels_name(classes, (int32_t)i);
        if (i) dspy_str_append(&sig, ", ");
        dspy_py_repr_str(name, strlen(name), &sig);
    }
    dspy_str_append(&sig, "]");
    TRY(dspy_chain_of_thought_new_text(dspy_str_cstr(&sig), NULL, NULL, &classify));

    /* student_lm = dspy.LM(model=f"openai/local:{student_lm_name}", provider=LocalProvider(),
     *                      max_tokens=2000)   (plus temperature 0.0: reproducible evaluations) */
    char *abs = realpath(student_dir, NULL);
    if (!abs) {
        fprintf(stderr, "error: %s: no such model directory\n", student_dir);
        st = DSPY_ERR_NOTFOUND;
        goto done;
    }
    dspy_str_appendf(&model, "openai/local:%s", abs);
    free(abs);
    dspy_lm_params lp = dspy_lm_params_default();
    lp.max_tokens = getenv("DSPY_EXAMPLE_MAX_TOKENS") ? atoi(getenv("DSPY_EXAMPLE_MAX_TOKENS")) : 2000;
    lp.temperature = 0.0;
    TRY(dspy_lm_new(dspy_str_cstr(&model), &lp, &student_lm));
    /* teacher_lm = dspy.LM('openai/gpt-4o-mini', max_tokens=3000) */
    const char *which = getenv("DSPY_EXAMPLE_TEACHER");
    if (which && strcmp(which, "openai") == 0) {
        dspy_lm_params tp = dspy_lm_params_default();
        tp.max_tokens = 3000;
        TRY(dspy_lm_new("openai/gpt-4o-mini", &tp, &teacher_lm));
    } else {
        printf("teacher: the ORACLE STAND-IN (gold labels, templated reasoning) — not a language model\n");
        TRY(dspy_oracle_new(train, NULL, &oracle));
        TRY(dspy_oracle_lm_new(oracle, "oracle:banking77", NULL, &teacher_lm));
    }

    /* student_classify = classify.deepcopy(); student_classify.set_lm(student_lm)
     * teacher_classify = classify.deepcopy(); teacher_classify.set_lm(teacher_lm) */
    TRY(dspy_module_deepcopy(classify, &student_classify));
    TRY(dspy_module_set_lm(student_classify, student_lm));
    TRY(dspy_module_deepcopy(classify, &teacher_classify));
    TRY(dspy_module_set_lm(teacher_classify, teacher_lm));

    /* dspy.settings.experimental = True
     * optimizer = dspy.BootstrapFinetune(num_threads=16)
     * classify_ft = optimizer.compile(student_classify, teacher=teacher_classify,
     *                                 trainset=unlabeled_trainset) */
    dspy_bootstrap_finetune_params fp = dspy_bootstrap_finetune_params_default();
    fp.prepare.num_threads = 4;
    dspy_str_append(&kw, getenv("DSPY_EXAMPLE_TRAIN_KWARGS") ? getenv("DSPY_EXAMPLE_TRAIN_KWARGS")
                                                             : "{\"num_train_epochs\": 1}");
    fp.prepare.train_kwargs = dspy_str_cstr(&kw);
    dspy_train_bar bar = {0};
    bar.out = stderr;
    fp.progress = dspy_train_bar_update;
    fp.progress_ud = &bar;
    dspy_module *teachers[] = {teacher_classify};
    st = dspy_bootstrap_finetune_compile(student_classify, trainset, teachers, 1, &fp, &classify_ft, &report);
    dspy_train_bar_close(&bar);
    TRY(st);
    printf("fine-tuned on %zu records: %s\n", report.runs[0].n_records, report.runs[0].finetuned_model);

    /* classify_ft.get_lm().launch() */
    TRY(dspy_program_launch(classify_ft, NULL, &server));
    printf("launched %s\n", dspy_local_api_base(dspy_launched_server(server, 0)));

    /* classify_ft(**devset[0].inputs()) */
    st = dspy_module_call_example(classify_ft, dspy_dataset_get(devset, 0), NULL, &pred);
    if (st == DSPY_OK && dspy_prediction_repr(pred, &text) == DSPY_OK) printf("%s\n", text);
    else printf("the first call failed: %s\n", dspy_errmsg());
    free(text);
    text = NULL;

    /* metric = (lambda x, y, trace=None: x.label == y.label)
     * evaluate = dspy.Evaluate(devset=devset, metric=metric, display_progress=True,
     *                          display_table=5, num_threads=16)
     * evaluate(classify_ft) */
    dspy_metric metric = {"<lambda>", metric_fn, NULL, DSPY_SCORE_BOOL};
    dspy_evaluate_params ep = dspy_evaluate_params_default();
    ep.num_threads = 4;
    ep.display_progress = true;
    ep.display_table = 5;
    ep.table_out = stdout;
    ep.max_errors = (int32_t)dspy_dataset_len(devset) + 1; /* a weak student's failures are counted */
    TRY(dspy_evaluate(classify_ft, devset, &metric, &ep, &result));
    TRY(dspy_eval_result_repr(result, &text));
    printf("%s\n", text);

    /* dspy.inspect_history() */
    TRY(dspy_inspect_history(1, stdout));

    /* classify_ft.get_lm().kill(); classify_ft.save("program.json") */
    TRY(dspy_program_kill(server));
    dspy_str_appendf(&path, "%s/program.json", out_dir);
    TRY(dspy_module_save(classify_ft, dspy_str_cstr(&path)));
    printf("saved %s\n", dspy_str_cstr(&path));
done:
    free(text);
    dspy_launched_free(server);
    dspy_bootstrap_finetune_report_clear(&report);
    dspy_eval_result_free(result);
    dspy_prediction_free(pred);
    dspy_module_free(classify_ft);
    dspy_module_free(teacher_classify);
    dspy_module_free(student_classify);
    dspy_module_free(classify);
    dspy_lm_free(teacher_lm);
    dspy_lm_free(student_lm);
    dspy_oracle_free(oracle);
    dspy_dataset_free(trainset);
    dspy_dataset_free(devset);
    dspy_dataset_free(train);
    dspy_labels_free(classes);
    dspy_str_free(&sig);
    dspy_str_free(&model);
    dspy_str_free(&path);
    dspy_str_free(&kw);
    dspy_settings_reset();
    return st == DSPY_OK ? 0 : 1;
}
