/* parallel.c — dspy/parallel.h: DSPy's ParallelExecutor over dspy/pool.h.
 *
 * Follows DSPy 3.3.1 dspy/utils/parallelizer.py (spec §8.2–8.3, CC-26.4–8): per-item error
 * counting with the max_errors budget, "Execution cancelled due to errors or interruption.",
 * the caller-thread rule for one thread, context inheritance for workers, the progress
 * description computed over the successful items, and a SIGINT handler that stops new items.
 * Each finished item is recorded under one mutex; the bar is updated under it too, so the
 * description and the count always agree.
 */
#include "dspy/parallel.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/json.h"
#include "dspy/log.h"
#include "dspy/pool.h"
#include "dspy/progress.h"
#include "dspy/settings.h"

#define CANCEL_MSG "Execution cancelled due to errors or interruption."

dspy_parallel_params dspy_parallel_params_default(void) {
    dspy_parallel_params p = {
        .num_threads = 0,
        .max_errors = -1,
        .display_progress = false,
        .progress_out = NULL,
        .compare_results = true,
        .provide_traceback = false,
        .catch_sigint = true,
        .log_errors = true,
    };
    return p;
}

void dspy_parallel_report_clear(dspy_parallel_report *r) {
    if (!r) return;
    for (size_t i = 0; r->failed_msg && i < r->n_errors; i++) free(r->failed_msg[i]);
    free(r->failed_msg);
    free(r->failed);
    free(r->ok);
    free(r->scores);
    free(r->last_desc);
    memset(r, 0, sizeof *r);
}

double dspy_py_round(double x, int ndigits) {
    if (!isfinite(x) || ndigits < 0 || ndigits > 15) return x;
    /* glibc's printf rounds the exact binary value, ties to even, as CPython's round does
     * (dtoa mode 3). Values this large have no decimals left to round. */
    if (fabs(x) >= 1e17) return x;
    char buf[400];
    snprintf(buf, sizeof buf, "%.*f", ndigits, x);
    return strtod(buf, NULL);
}

void dspy_parallel_metric_desc(dspy_str *out, double sum, size_t count) {
    dspy_str_appendf(out, "Average Metric: %.2f / %zu (", sum, count);
    if (count == 0) {
        dspy_str_append(out, "0");
    } else {
        char buf[40];
        dspy_py_float_repr(dspy_py_round(100.0 * sum / (double)count, 1), buf, sizeof buf);
        dspy_str_append(out, buf);
    }
    dspy_str_append(out, "%)");
}

/* ---- SIGINT ----------------------------------------------------------------------------------- */

static atomic_int g_sigint;       /* set by the handler, cleared by the run that installs it */
static atomic_int g_sigint_owner; /* 1 while a run holds the handler */

static void on_sigint(int sig) {
    (void)sig;
    atomic_store(&g_sigint, 1);
}

/* ---- one run ---------------------------------------------------------------------------------- */

typedef struct run {
    dspy_parallel_item_fn fn;
    dspy_parallel_describe_fn describe;
    void *user;
    size_t n;
    int32_t max_errors;
    bool compare_results, provide_traceback, threaded, log_errors;
    dspy_context *ctx; /* the caller's overrides, pushed around each item on workers */
    pthread_mutex_t mu;
    bool *ok;
    double *scores;
    char **msg;        /* per item: the error message (NULL unless it failed) */
    size_t n_ok, n_err;
    atomic_bool stop;  /* the error budget was reached */
    dspy_progress *bar;
    bool nomem;
} run;

static bool interrupted(void) { return atomic_load(&g_sigint) != 0; }

/* The progress description over the successful items (sum in item order, as Python sums the
 * list of results). */
static void describe_progress(bool compare, const bool *ok, const double *scores, size_t n, size_t n_ok, dspy_str *d) {
    if (compare) {
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            if (ok[i]) sum += scores[i];
        dspy_parallel_metric_desc(d, sum, n_ok);
    } else {
        dspy_str_appendf(d, "Processed %zu / %zu examples", n_ok, n);
    }
}

static void log_error(run *r, size_t i, const char *msg) {
    if (!dspy_log_enabled(DSPY_LOG_ERROR)) return;
    dspy_str d = DSPY_STR_INIT;
    if (r->describe) r->describe(r->user, i, &d);
    else dspy_str_appendf(&d, "item %zu", i);
    dspy_log(DSPY_LOG_ERROR, "Error for %s: %s%s", dspy_str_ok(&d) ? dspy_str_cstr(&d) : "an item", msg,
             r->provide_traceback ? "" : ". Set `provide_traceback=True` for traceback.");
    dspy_str_free(&d);
}

/* Runs item i and records it; returns non-zero when no further item should start. */
static int run_item(size_t i, void *arg, int worker_id) {
    (void)worker_id;
    run *r = arg;
    if (atomic_load(&r->stop) || interrupted()) return 1;
    double score = 0;
    dspy_errclear();
    /* workers run under the caller's dspy.context overrides */
    dspy_status st = r->threaded ? dspy_context_push(r->ctx) : DSPY_OK;
    bool pushed = r->threaded && st == DSPY_OK;
    if (!st) st = r->fn(r->user, i, &score);
    char *msg = NULL;
    if (st) {
        const char *m = dspy_errmsg();
        dspy_str s = DSPY_STR_INIT;
        if (*m) dspy_str_append(&s, m);
        else dspy_str_appendf(&s, "failed (%s)", dspy_status_name(st));
        msg = dspy_str_take(&s);
    }
    if (pushed) dspy_context_pop(r->ctx);
    if (st && r->log_errors) log_error(r, i, msg ? msg : dspy_status_name(st));

    pthread_mutex_lock(&r->mu);
    if (st) {
        r->msg[i] = msg;
        if (!msg) r->nomem = true;
        r->n_err++;
        if ((int64_t)r->n_err >= (int64_t)r->max_errors) atomic_store(&r->stop, true);
    } else {
        r->ok[i] = true;
        r->scores[i] = score;
        r->n_ok++;
    }
    if (r->bar) {
        dspy_str d = DSPY_STR_INIT;
        describe_progress(r->compare_results, r->ok, r->scores, r->n, r->n_ok, &d);
        if (dspy_str_ok(&d)) dspy_progress_set_desc(r->bar, dspy_str_cstr(&d));
        dspy_str_free(&d);
        dspy_progress_update(r->bar, 1);
    }
    pthread_mutex_unlock(&r->mu);
    return atomic_load(&r->stop) || interrupted();
}

static dspy_status fill_report(run *r, dspy_parallel_report *rep) {
    rep->n_items = r->n;
    rep->n_ok = r->n_ok;
    rep->n_errors = r->n_err;
    rep->ok = r->ok;
    rep->scores = r->scores;
    r->ok = NULL;
    r->scores = NULL;
    for (size_t i = 0; i < r->n; i++)
        if (rep->ok[i]) rep->score_sum += rep->scores[i];
    if (r->n_err) {
        rep->failed = malloc(r->n_err * sizeof *rep->failed);
        rep->failed_msg = calloc(r->n_err, sizeof *rep->failed_msg);
        if (!rep->failed || !rep->failed_msg) {
            rep->n_errors = 0;
            return dspy_fail(DSPY_ERR_NOMEM, "parallel executor: out of memory for the report");
        }
        size_t k = 0;
        for (size_t i = 0; i < r->n && k < r->n_err; i++)
            if (r->msg[i]) {
                rep->failed[k] = i;
                rep->failed_msg[k++] = r->msg[i];
                r->msg[i] = NULL;
            }
        rep->n_errors = k;
    }
    dspy_str d = DSPY_STR_INIT;
    if (r->n_ok + r->n_err > 0) {
        describe_progress(r->compare_results, rep->ok, rep->scores, r->n, r->n_ok, &d);
        rep->last_desc = dspy_str_take(&d);
    }
    return DSPY_OK;
}

dspy_status dspy_parallel_run(const dspy_parallel_params *params, size_t n, dspy_parallel_item_fn fn,
                              dspy_parallel_describe_fn describe, void *user, dspy_parallel_report *report) {
    if (report) memset(report, 0, sizeof *report);
    dspy_parallel_params p = params ? *params : dspy_parallel_params_default();
    if (!fn) return dspy_fail(DSPY_ERR_ARG, "parallel executor: no item function given");
    int32_t threads = p.num_threads > 0 ? p.num_threads : dspy_settings_num_threads();
    if (threads < 1 || threads > DSPY_POOL_MAX_THREADS)
        return dspy_fail(DSPY_ERR_ARG, "parallel executor: num_threads=%d is out of range; use 1..%d", (int)threads,
                         DSPY_POOL_MAX_THREADS);
    run r = {.fn = fn, .describe = describe, .user = user, .n = n,
             .max_errors = p.max_errors >= 0 ? p.max_errors : dspy_settings_max_errors(),
             .compare_results = p.compare_results, .provide_traceback = p.provide_traceback,
             .threaded = threads > 1, .log_errors = p.log_errors};
    atomic_init(&r.stop, false);
    pthread_mutex_init(&r.mu, NULL);
    dspy_status st = DSPY_OK;
    r.ok = calloc(n ? n : 1, sizeof *r.ok);
    r.scores = calloc(n ? n : 1, sizeof *r.scores);
    r.msg = calloc(n ? n : 1, sizeof *r.msg);
    if (!r.ok || !r.scores || !r.msg) {
        st = dspy_fail(DSPY_ERR_NOMEM, "parallel executor: out of memory for %zu items", n);
        goto done;
    }
    if (r.threaded && (st = dspy_context_capture(&r.ctx))) goto done;
    if (p.display_progress &&
        (st = dspy_progress_new(NULL, (long)n, p.progress_out ? p.progress_out : stderr, &r.bar)))
        goto done;

    bool own_sigint = false;
    struct sigaction old_sa, old_term, old_hup;
    int expected = 0;
    if (p.catch_sigint && atomic_compare_exchange_strong(&g_sigint_owner, &expected, 1)) {
        atomic_store(&g_sigint, 0);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGINT, &sa, &old_sa) == 0) own_sigint = true;
        else atomic_store(&g_sigint_owner, 0);
        /* SIGTERM and SIGHUP (a closed terminal, a supervisor stopping us) cancel like Ctrl-C:
         * the results so far are kept and launched servers are killed on the way out */
        if (own_sigint) {
            sigaction(SIGTERM, &sa, &old_term);
            sigaction(SIGHUP, &sa, &old_hup);
        }
    }

    if (!r.threaded) {
        for (size_t i = 0; i < n; i++)
            if (run_item(i, &r, 0)) break;
    } else if (n > 0) {
        dspy_status lst = dspy_parallel_for(threads, n, run_item, &r);
        if (lst != DSPY_OK && lst != DSPY_ERR_CANCELLED) st = lst; /* the pool could not start */
    }
    bool was_interrupted = interrupted();
    if (own_sigint) {
        sigaction(SIGINT, &old_sa, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGHUP, &old_hup, NULL);
        atomic_store(&g_sigint, 0);
        atomic_store(&g_sigint_owner, 0);
    }
    if (r.bar) {
        dspy_progress_close(r.bar);
        r.bar = NULL;
    }
    if (was_interrupted) dspy_log(DSPY_LOG_WARN, "Received SIGINT. Cancelling execution.");
    bool cancelled = atomic_load(&r.stop) || was_interrupted;
    if (report) {
        dspy_status rst = fill_report(&r, report);
        report->cancelled = cancelled;
        report->interrupted = was_interrupted;
        if (!st) st = rst;
    }
    if (!st && r.nomem) st = dspy_fail(DSPY_ERR_NOMEM, "parallel executor: out of memory for an error message");
    if (!st && cancelled) {
        dspy_log(DSPY_LOG_WARN, CANCEL_MSG);
        st = dspy_fail(DSPY_ERR_CANCELLED, CANCEL_MSG);
    }
done:
    if (r.bar) dspy_progress_close(r.bar);
    for (size_t i = 0; r.msg && i < n; i++) free(r.msg[i]);
    free(r.msg);
    free(r.ok);
    free(r.scores);
    dspy_context_free(r.ctx);
    pthread_mutex_destroy(&r.mu);
    return st;
}
