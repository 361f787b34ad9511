/* test_metrics_server.c — the server's Prometheus exposition (server/metrics.h): counters by
 * route and status, token sums, cumulative histogram buckets with _sum and _count, and the
 * scheduler gauges and the engine thread's profile, checked line by line against the samples
 * recorded. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "server/metrics.h"

static double value(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static void test_render(void) {
    srv_metrics *m = dspy_srv_metrics_new();
    CHECK(m != NULL);
    if (!m) return;
    srv_request_sample a = {"chat", 200, 100, 10, 0.02, 0.004, 0.2, "layout"};
    srv_request_sample b = {"chat", 200, 50, 5, 0.3, -1, 0.5, "none"};
    srv_request_sample c = {"completions", 400, 0, 0, -1, -1, 0.001, "json_schema"};
    srv_request_sample d = {"chat", 418, 1, 0, -1, -1, 0.001, "none"};
    dspy_srv_metrics_request(m, &a);
    dspy_srv_metrics_request(m, &b);
    dspy_srv_metrics_request(m, &c);
    dspy_srv_metrics_request(m, &d);
    sched_stats st = {0};
    st.queued = 3;
    st.running = 2;
    st.last_batch = 5;
    st.kv_capacity = 1000;
    st.kv_free = 250;
    st.prompt_tokens = 400;
    st.prefix_hit_tokens = 300;
    st.idle_ns = 2500000000;
    st.events_ns = 1500000;
    st.engine.steps[DSPY_STEP_GRAPH] = 550;
    st.engine.rows[DSPY_STEP_MIXED] = 19437;
    st.engine.device_ns[DSPY_STEP_PREFILL] = 36570000;
    st.engine.plan_ns = 1220000;
    st.engine.captures = 4;
    st.engine.draft_tokens = 300, st.engine.accepted_tokens = 120;
    dspy_str o = DSPY_STR_INIT;
    CHECK(dspy_srv_metrics_render(m, &st, &o));
    const char *t = dspy_str_cstr(&o);
    CHECK_NEAR(value(t, "dspy_requests_total{route=\"chat\",status=\"200\"}"), 2, 0);
    CHECK_NEAR(value(t, "dspy_requests_total{route=\"completions\",status=\"400\"}"), 1, 0);
    CHECK_NEAR(value(t, "dspy_requests_total{route=\"chat\",status=\"other\"}"), 1, 0);
    CHECK_NEAR(value(t, "dspy_requests_total{route=\"chat\",status=\"400\"}"), -1, 0); /* zero: not listed */
    CHECK_NEAR(value(t, "dspy_structured_requests_total{kind=\"layout\"}"), 1, 0);
    CHECK_NEAR(value(t, "dspy_structured_requests_total{kind=\"none\"}"), 2, 0);
    CHECK_NEAR(value(t, "dspy_prompt_tokens_total"), 151, 0);
    CHECK_NEAR(value(t, "dspy_completion_tokens_total"), 15, 0);
    /* ttft 0.02 and 0.3: cumulative buckets */
    CHECK_NEAR(value(t, "dspy_time_to_first_token_seconds_bucket{le=\"0.01\"}"), 0, 0);
    CHECK_NEAR(value(t, "dspy_time_to_first_token_seconds_bucket{le=\"0.025\"}"), 1, 0);
    CHECK_NEAR(value(t, "dspy_time_to_first_token_seconds_bucket{le=\"0.25\"}"), 1, 0);
    CHECK_NEAR(value(t, "dspy_time_to_first_token_seconds_bucket{le=\"0.5\"}"), 2, 0);
    CHECK_NEAR(value(t, "dspy_time_to_first_token_seconds_bucket{le=\"+Inf\"}"), 2, 0);
    CHECK_NEAR(value(t, "dspy_time_to_first_token_seconds_count"), 2, 0);
    CHECK_NEAR(value(t, "dspy_time_to_first_token_seconds_sum"), 0.32, 1e-9);
    CHECK_NEAR(value(t, "dspy_time_per_output_token_seconds_count"), 1, 0);
    CHECK_NEAR(value(t, "dspy_time_per_output_token_seconds_bucket{le=\"0.005\"}"), 1, 0);
    CHECK_NEAR(value(t, "dspy_request_duration_seconds_count"), 4, 0);
    CHECK_NEAR(value(t, "dspy_queue_length"), 3, 0);
    CHECK_NEAR(value(t, "dspy_running_requests"), 2, 0);
    CHECK_NEAR(value(t, "dspy_batch_size"), 5, 0);
    CHECK_NEAR(value(t, "dspy_kv_cache_used_tokens"), 750, 0);
    CHECK_NEAR(value(t, "dspy_kv_cache_usage_ratio"), 0.75, 1e-12);
    CHECK_NEAR(value(t, "dspy_prefix_cache_hit_rate"), 0.75, 1e-12);
    /* the engine thread's profile: one sample per kind / phase, nanoseconds as seconds */
    CHECK_NEAR(value(t, "dspy_engine_kind_steps_total{kind=\"graph\"}"), 550, 0);
    CHECK_NEAR(value(t, "dspy_engine_kind_steps_total{kind=\"prefill\"}"), 0, 0);
    CHECK_NEAR(value(t, "dspy_engine_kind_rows_total{kind=\"mixed\"}"), 19437, 0);
    CHECK_NEAR(value(t, "dspy_engine_device_seconds_total{kind=\"prefill\"}"), 0.03657, 1e-12);
    CHECK_NEAR(value(t, "dspy_engine_thread_seconds_total{phase=\"idle\"}"), 2.5, 1e-12);
    CHECK_NEAR(value(t, "dspy_engine_thread_seconds_total{phase=\"events\"}"), 0.0015, 1e-12);
    CHECK_NEAR(value(t, "dspy_engine_thread_seconds_total{phase=\"step_plan\"}"), 0.00122, 1e-12);
    CHECK_NEAR(value(t, "dspy_engine_graph_captures_total"), 4, 0);
    CHECK_NEAR(value(t, "dspy_engine_spec_steps_total"), 0, 0);
    CHECK_NEAR(value(t, "dspy_engine_draft_tokens_total"), 300, 0);
    CHECK_NEAR(value(t, "dspy_engine_accepted_tokens_total"), 120, 0);
    CHECK_CONTAINS(t, "# TYPE dspy_engine_device_seconds_total counter\n");
    CHECK_CONTAINS(t, "# TYPE dspy_time_to_first_token_seconds histogram\n");
    CHECK_CONTAINS(t, "# TYPE dspy_requests_total counter\n");
    /* every line is a comment or "name value" */
    int bad = 0;
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl) {
            bad++;
            break;
        }
        if (*p != '#' && !memchr(p, ' ', (size_t)(nl - p))) bad++;
        p = nl + 1;
    }
    CHECK_INT(bad, 0);
    dspy_str_free(&o);
    dspy_srv_metrics_free(m);
    dspy_srv_metrics_free(NULL);
}

int main(void) {
    RUN(test_render);
    return check_summary("test_metrics_server");
}
