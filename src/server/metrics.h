/* server/metrics.h — the server's counters and histograms, rendered in the Prometheus text
 * exposition format for GET /metrics (private to src/server/).
 *
 * What it does: counts finished requests by route and HTTP status, prompt/completion tokens,
 * and records per-request time to first token, time per output token and duration in
 * histograms (cumulative buckets, _sum and _count). The render adds the scheduler's gauges
 * (queue, running requests, batch size, KV use, prefix-cache hits) from a sched_stats snapshot.
 * Follows the Prometheus text format 0.0.4 (# HELP / # TYPE lines, le="+Inf").
 *
 * Thread safety: dspy_srv_metrics_request and dspy_srv_metrics_render may be called from any thread.
 */
#ifndef DSPY_SERVER_METRICS_H
#define DSPY_SERVER_METRICS_H

#include <stdint.h>

#include "dspy/str.h"
#include "server/scheduler.h"

typedef struct srv_metrics srv_metrics;

/* NULL on OOM. */
srv_metrics *dspy_srv_metrics_new(void);
void dspy_srv_metrics_free(srv_metrics *m); /* NULL-safe */

typedef struct srv_request_sample {
    const char *route;      /* "chat", "completions" */
    int status;             /* HTTP status sent; 0 = the client went away */
    int64_t prompt_tokens, completion_tokens;
    double ttft_s;          /* time to first token, < 0 when none came */
    double tpot_s;          /* mean time per output token after the first, < 0 when n/a */
    double duration_s;
    const char *structured; /* "none", "json_schema", "json_object", "layout" */
} srv_request_sample;

void dspy_srv_metrics_request(srv_metrics *m, const srv_request_sample *r);

/* Appends the exposition text to out (false on OOM). */
bool dspy_srv_metrics_render(srv_metrics *m, const sched_stats *st, dspy_str *out);

#endif
