/* cmd_report.c — `dspy report RUN [--compare RUN2] [--out FILE.html]`: the HTML report of a run.
 *
 * One self-contained file (dspy/track.h, dspy_report_write): training curves (loss, learning
 * rate, gradient norm, tokens/s), accuracy of the untrained student / teacher / fine-tuned
 * student, per-class accuracy, the confusion matrix (zoomable, with the top confusions), the
 * failed examples with their prompts and answers, params and environment; with --compare, two
 * runs side by side. `dspy compile`, `finetune` and `eval` already write <run>/report.html.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "dspy/str.h"
#include "dspy/track.h"

int cmd_report(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"compare", "RUN2", "a second run to show side by side", false, false, NULL},
        {"out", "FILE.html", "where to write (default: <run>/report.html, or <run>/compare-<run2 name>.html)", false,
         false, NULL},
        {"dir", "DIR", "where to look for run ids (repeatable; default: . and $DSPY_RUNS_DIR)", false, true, NULL},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse_pos(&a, "report", "RUN [--compare RUN2] [--out FILE.html]",
                             "Write the HTML report of a run (a run directory or a run id prefix): one file, no "
                             "network access,\ncharts drawn as inline SVG.", opts, 64, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.npos != 1) {
        fprintf(stderr, "error: dspy report: give one run (a directory or an id prefix); see dspy report --help\n");
        return 2;
    }
    const char *roots[DSPY_ARGS_MAX_MULTI + 2];
    size_t nr = 0;
    for (int i = 0; i < dspy_args_count(&a, "dir"); i++) roots[nr++] = dspy_args_at(&a, "dir", i);
    if (nr == 0) roots[nr++] = ".";
    const char *env = getenv("DSPY_RUNS_DIR");
    roots[nr++] = env && *env ? env : "dspy-runs";
    char *dir = NULL, *other = NULL;
    dspy_str out = DSPY_STR_INIT;
    int ret = 1;
    dspy_status st = dspy_run_resolve(a.pos[0], roots, nr, &dir);
    if (!st && dspy_args_get(&a, "compare")) st = dspy_run_resolve(dspy_args_get(&a, "compare"), roots, nr, &other);
    if (st) goto fail;
    if (dspy_args_get(&a, "out")) {
        dspy_str_append(&out, dspy_args_get(&a, "out"));
    } else if (other) {
        const char *base = strrchr(other, '/');
        dspy_str_appendf(&out, "%s/compare-%s.html", dir, base ? base + 1 : other);
    } else {
        dspy_str_appendf(&out, "%s/report.html", dir);
    }
    if (!dspy_str_ok(&out)) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = dspy_report_write(dir, other, out.ptr))) goto fail;
    printf("report: %s\n", out.ptr);
    ret = fflush(stdout) == 0 ? 0 : 1;
fail:
    if (st) ret = dspy_cli_error("report");
    free(dir);
    free(other);
    dspy_str_free(&out);
    return ret;
}
