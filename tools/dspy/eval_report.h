/* eval_report.h — what `dspy eval --out` and `dspy compile` write about an evaluation:
 * score.json (the score, the metric, counts of failures, per-class scores over the gold label,
 * the devset's majority class and its rate), the rows (results.json / results.csv, DSPy's
 * save_as_json / save_as_csv) and table.txt (the whole result table as DSPy prints it).
 */
#ifndef DSPY_TOOL_EVAL_REPORT_H
#define DSPY_TOOL_EVAL_REPORT_H

#include "dspy/evaluate.h"
#include "dspy/json.h"
#include "task_opts.h"

/* The summary object (new reference): {"score", "metric", "metric_field", "n", "failed",
 * "unparseable", "errors", "per_class": {gold: {"n", "score"}}, "majority_class",
 * "majority_rate"}; per-class scores in percent like the score (sum of the class's scores / its
 * examples). */
dspy_status eval_report_summary(const dspy_eval_result *r, const task *t, dspy_json **out);
/* Writes score.json (the summary plus `extra`'s keys, may be NULL), results.json, results.csv
 * and table.txt into `dir` (created). */
dspy_status eval_report_write(const dspy_eval_result *r, const task *t, const dspy_json *extra, const char *dir);
/* Whether `dir` already holds results (score.json or results.json). */
bool eval_report_exists(const char *dir);

#endif
