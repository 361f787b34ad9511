/* mlflow_stub.c — an in-memory MLflow tracking server that checks requests against service.proto
 * (see mlflow_stub.h).
 *
 * The message table below is transcribed from mlflow/protos/service.proto at MLflow commit
 * 0026b08dc1b90b63efce78302b7d6df63f1eac63: field names, types, `repeated`, and
 * [(validate_required) = true]. Answers follow MLflow's server (mlflow/server/handlers.py):
 * errors as {"error_code", "message"} with 400 (INVALID_PARAMETER_VALUE,
 * RESOURCE_ALREADY_EXISTS) or 404 (RESOURCE_DOES_NOT_EXIST, ENDPOINT_NOT_FOUND), runs created
 * with artifact_uri mlflow-artifacts:/<experiment>/<run>/artifacts (a server that serves
 * artifacts), run names also kept as the mlflow.runName tag.
 */
#include "mlflow_stub.h"

#include <ctype.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/str.h"
#include "http_stub.h"

/* ---- service.proto, the messages used ------------------------------------------------------- */

typedef enum ftype { T_STRING, T_INT64, T_INT32, T_DOUBLE, T_BOOL, T_RUNSTATUS, T_MSG } ftype;

typedef struct pmsg pmsg;
typedef struct pfield {
    const char *name;
    ftype type;
    bool repeated, required;
    const pmsg *msg;
} pfield;
struct pmsg {
    const char *name;
    const pfield *fields;
};

static const pfield f_metric[] = {
    {"key", T_STRING, 0, 0, 0}, {"value", T_DOUBLE, 0, 0, 0}, {"timestamp", T_INT64, 0, 0, 0},
    {"step", T_INT64, 0, 0, 0}, {"dataset_name", T_STRING, 0, 0, 0}, {"dataset_digest", T_STRING, 0, 0, 0},
    {"model_id", T_STRING, 0, 0, 0}, {"run_id", T_STRING, 0, 0, 0}, {0}};
static const pmsg m_metric = {"Metric", f_metric};
static const pfield f_kv[] = {{"key", T_STRING, 0, 0, 0}, {"value", T_STRING, 0, 0, 0}, {0}};
static const pmsg m_param = {"Param", f_kv}, m_run_tag = {"RunTag", f_kv}, m_exp_tag = {"ExperimentTag", f_kv};

static const pfield f_create_experiment[] = {
    {"name", T_STRING, 0, 1, 0}, {"artifact_location", T_STRING, 0, 0, 0}, {"tags", T_MSG, 1, 0, &m_exp_tag}, {0}};
static const pfield f_get_experiment_by_name[] = {{"experiment_name", T_STRING, 0, 1, 0}, {0}};
static const pfield f_get_experiment[] = {{"experiment_id", T_STRING, 0, 1, 0}, {0}};
static const pfield f_create_run[] = {
    {"experiment_id", T_STRING, 0, 0, 0}, {"user_id", T_STRING, 0, 0, 0}, {"run_name", T_STRING, 0, 0, 0},
    {"start_time", T_INT64, 0, 0, 0}, {"tags", T_MSG, 1, 0, &m_run_tag}, {0}};
static const pfield f_update_run[] = {
    {"run_id", T_STRING, 0, 0, 0}, {"run_uuid", T_STRING, 0, 0, 0}, {"status", T_RUNSTATUS, 0, 0, 0},
    {"end_time", T_INT64, 0, 0, 0}, {"run_name", T_STRING, 0, 0, 0}, {0}};
static const pfield f_get_run[] = {{"run_id", T_STRING, 0, 0, 0}, {"run_uuid", T_STRING, 0, 0, 0}, {0}};
static const pfield f_log_batch[] = {
    {"run_id", T_STRING, 0, 0, 0}, {"metrics", T_MSG, 1, 0, &m_metric}, {"params", T_MSG, 1, 0, &m_param},
    {"tags", T_MSG, 1, 0, &m_run_tag}, {0}};
static const pfield f_log_metric[] = {
    {"run_id", T_STRING, 0, 0, 0}, {"run_uuid", T_STRING, 0, 0, 0}, {"key", T_STRING, 0, 1, 0},
    {"value", T_DOUBLE, 0, 1, 0}, {"timestamp", T_INT64, 0, 1, 0}, {"step", T_INT64, 0, 0, 0},
    {"model_id", T_STRING, 0, 0, 0}, {"dataset_name", T_STRING, 0, 0, 0}, {"dataset_digest", T_STRING, 0, 0, 0}, {0}};
static const pfield f_log_param[] = {
    {"run_id", T_STRING, 0, 0, 0}, {"run_uuid", T_STRING, 0, 0, 0}, {"key", T_STRING, 0, 1, 0},
    {"value", T_STRING, 0, 1, 0}, {0}};
static const pfield f_set_tag[] = {
    {"run_id", T_STRING, 0, 0, 0}, {"run_uuid", T_STRING, 0, 0, 0}, {"key", T_STRING, 0, 1, 0},
    {"value", T_STRING, 0, 1, 0}, {0}};

static const pmsg m_create_experiment = {"CreateExperiment", f_create_experiment};
static const pmsg m_get_experiment_by_name = {"GetExperimentByName", f_get_experiment_by_name};
static const pmsg m_get_experiment = {"GetExperiment", f_get_experiment};
static const pmsg m_create_run = {"CreateRun", f_create_run};
static const pmsg m_update_run = {"UpdateRun", f_update_run};
static const pmsg m_get_run = {"GetRun", f_get_run};
static const pmsg m_log_batch = {"LogBatch", f_log_batch};
static const pmsg m_log_metric = {"LogMetric", f_log_metric};
static const pmsg m_log_param = {"LogParam", f_log_param};
static const pmsg m_set_tag = {"SetTag", f_set_tag};

static const char *const k_run_status[] = {NULL, "RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"};

static bool digits(const char *s, bool sign) {
    if (sign && *s == '-') s++;
    if (!*s) return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return false;
    return true;
}

/* Whether v is of type f under protobuf's JSON mapping; *why gets the reason otherwise. */
static bool check_value(const pfield *f, const dspy_json *v, const char *where, dspy_str *why);

static bool check_message(const pmsg *m, const dspy_json *obj, const char *where, dspy_str *why) {
    if (dspy_json_typeof(obj) != DSPY_JSON_OBJECT) {
        dspy_str_appendf(why, "%s: %s must be a JSON object", where, m->name);
        return false;
    }
    for (void *it = dspy_json_iter(obj); it; it = dspy_json_next(obj, it)) {
        const char *k = dspy_json_iter_key(it);
        const pfield *f = m->fields;
        while (f->name && strcmp(f->name, k) != 0) f++;
        if (!f->name) {
            dspy_str_appendf(why, "%s: %s has no field \"%s\"", where, m->name, k);
            return false;
        }
        dspy_str w = DSPY_STR_INIT;
        dspy_str_appendf(&w, "%s.%s", where, k);
        const dspy_json *v = dspy_json_iter_value(it);
        bool ok = true;
        if (f->repeated) {
            if (dspy_json_typeof(v) != DSPY_JSON_ARRAY) {
                dspy_str_appendf(why, "%s: repeated field must be a JSON array", w.ptr);
                ok = false;
            }
            for (size_t i = 0; ok && i < dspy_json_size(v); i++) ok = check_value(f, dspy_json_at(v, i), w.ptr, why);
        } else {
            ok = check_value(f, v, w.ptr, why);
        }
        dspy_str_free(&w);
        if (!ok) return false;
    }
    for (const pfield *f = m->fields; f->name; f++)
        if (f->required && !dspy_json_get(obj, f->name)) {
            dspy_str_appendf(why, "%s: %s.%s is required (validate_required)", where, m->name, f->name);
            return false;
        }
    return true;
}

static bool check_value(const pfield *f, const dspy_json *v, const char *where, dspy_str *why) {
    dspy_json_type t = dspy_json_typeof(v);
    const char *s = dspy_json_str(v);
    switch (f->type) {
    case T_STRING:
        if (t == DSPY_JSON_STRING) return true;
        dspy_str_appendf(why, "%s: string field, got another JSON type", where);
        return false;
    case T_INT64:
    case T_INT32:
        if (t == DSPY_JSON_INT || (s && digits(s, true))) return true;
        dspy_str_appendf(why, "%s: %s field must be an integer or a decimal string", where,
                         f->type == T_INT64 ? "int64" : "int32");
        return false;
    case T_DOUBLE:
        if (t == DSPY_JSON_INT || t == DSPY_JSON_REAL) return true;
        if (s && (strcmp(s, "NaN") == 0 || strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0)) return true;
        dspy_str_appendf(why, "%s: double field must be a number or \"NaN\"/\"Infinity\"/\"-Infinity\"", where);
        return false;
    case T_BOOL:
        if (t == DSPY_JSON_BOOL) return true;
        dspy_str_appendf(why, "%s: bool field must be true or false", where);
        return false;
    case T_RUNSTATUS:
        if (t == DSPY_JSON_INT && dspy_json_intval(v) >= 1 && dspy_json_intval(v) <= 5) return true;
        for (int i = 1; s && i <= 5; i++)
            if (strcmp(s, k_run_status[i]) == 0) return true;
        dspy_str_appendf(why, "%s: RunStatus must be RUNNING, SCHEDULED, FINISHED, FAILED or KILLED", where);
        return false;
    case T_MSG:
        return check_message(f->msg, v, where, why);
    }
    return false;
}

/* ---- the store ------------------------------------------------------------------------------- */

typedef struct artifact {
    char *run_id, *path, *type, *data;
    size_t len;
} artifact;

struct mlflow_stub {
    http_stub *http;
    pthread_mutex_t lock;
    dspy_json *experiments; /* [{"experiment_id", "name", "lifecycle_stage"}] */
    dspy_json *runs;        /* {run_id: run} */
    dspy_json *run_order;   /* [run_id] */
    dspy_json *calls;       /* {rpc: count} */
    dspy_str trace, violations;
    artifact *arts;
    size_t narts, cap_arts;
    int requests, nviolations, next_exp, next_run;
    int fail_next, fail_status, drop_next;
    bool fail_all;
};

static void count_call(mlflow_stub *s, const char *rpc) {
    dspy_json_set(s->calls, rpc, dspy_json_int(dspy_json_int_or(s->calls, rpc, 0) + 1));
    dspy_str_appendf(&s->trace, "%s%s", s->trace.len ? " " : "", rpc);
}

static void api_error(http_stub_response *resp, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void api_error(http_stub_response *resp, int status, const char *code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dspy_json *o = dspy_json_object();
    dspy_json_set_str(o, "error_code", code);
    dspy_json_set_str(o, "message", msg);
    resp->status = status;
    dspy_str_clear(&resp->body);
    dspy_json_dump(o, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &resp->body);
    dspy_json_decref(o);
}

static void violation(mlflow_stub *s, http_stub_response *resp, const char *rpc, const char *why) {
    s->nviolations++;
    dspy_str_appendf(&s->violations, "%s: %s\n", rpc, why);
    api_error(resp, 400, "INVALID_PARAMETER_VALUE", "%s", why);
}

static void reply(http_stub_response *resp, dspy_json *o) {
    dspy_str_clear(&resp->body);
    dspy_json_dump(o, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &resp->body);
    dspy_json_decref(o);
}

static const dspy_json *find_experiment(mlflow_stub *s, const char *key, const char *value) {
    for (size_t i = 0; i < dspy_json_size(s->experiments); i++) {
        const dspy_json *e = dspy_json_at(s->experiments, i);
        if (strcmp(dspy_json_str_or(e, key, ""), value) == 0) return e;
    }
    return NULL;
}

static const char *add_experiment(mlflow_stub *s, const char *name) {
    char id[32];
    snprintf(id, sizeof id, "%d", ++s->next_exp);
    dspy_json *e = dspy_json_object();
    dspy_json_set_str(e, "experiment_id", id);
    dspy_json_set_str(e, "name", name);
    dspy_json_set_str(e, "lifecycle_stage", "active");
    dspy_json_append(s->experiments, e);
    return dspy_json_str_or(e, "experiment_id", "");
}

static dspy_json *run_info(const dspy_json *run) {
    dspy_json *info = dspy_json_object();
    static const char *const keys[] = {"run_id", "run_uuid", "run_name", "experiment_id", "status", "start_time",
                                       "end_time", "artifact_uri", "lifecycle_stage"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const dspy_json *v = dspy_json_get(run, keys[i]);
        if (v && dspy_json_typeof(v) != DSPY_JSON_NULL) dspy_json_set(info, keys[i], dspy_json_incref((dspy_json *)v));
    }
    return info;
}

static dspy_json *run_of(mlflow_stub *s, const dspy_json *req) {
    const char *id = dspy_json_str_or(req, "run_id", dspy_json_str_or(req, "run_uuid", ""));
    return dspy_json_get(s->runs, id);
}

/* ---- handlers ------------------------------------------------------------------------------------ */

static void h_get_experiment_by_name(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    const char *name = dspy_json_str_or(req, "experiment_name", "");
    const dspy_json *e = find_experiment(s, "name", name);
    if (!e) {
        api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "Could not find experiment with name '%s'", name);
        return;
    }
    dspy_json *o = dspy_json_object();
    dspy_json_set(o, "experiment", dspy_json_copy(e));
    reply(resp, o);
}

static void h_get_experiment(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    const dspy_json *e = find_experiment(s, "experiment_id", dspy_json_str_or(req, "experiment_id", ""));
    if (!e) {
        api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "No experiment with that id");
        return;
    }
    dspy_json *o = dspy_json_object();
    dspy_json_set(o, "experiment", dspy_json_copy(e));
    reply(resp, o);
}

static void h_create_experiment(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    const char *name = dspy_json_str_or(req, "name", "");
    if (!*name) {
        api_error(resp, 400, "INVALID_PARAMETER_VALUE", "Invalid experiment name: ''");
        return;
    }
    if (find_experiment(s, "name", name)) {
        api_error(resp, 400, "RESOURCE_ALREADY_EXISTS", "Experiment '%s' already exists.", name);
        return;
    }
    dspy_json *o = dspy_json_object();
    dspy_json_set_str(o, "experiment_id", add_experiment(s, name));
    reply(resp, o);
}

static void set_tag(dspy_json *run, const char *k, const char *v) {
    dspy_json_set_str(dspy_json_get(run, "tags"), k, v);
    if (strcmp(k, "mlflow.runName") == 0) dspy_json_set_str(run, "run_name", v);
}

static void h_create_run(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    const char *eid = dspy_json_str_or(req, "experiment_id", "0");
    if (!find_experiment(s, "experiment_id", eid)) {
        api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "Could not create run under experiment with ID %s - no such "
              "experiment exists.", eid);
        return;
    }
    char id[33], au[128];
    snprintf(id, sizeof id, "%032x", ++s->next_run);
    snprintf(au, sizeof au, "mlflow-artifacts:/%s/%s/artifacts", eid, id);
    dspy_json *run = dspy_json_object();
    dspy_json_set_str(run, "run_id", id);
    dspy_json_set_str(run, "run_uuid", id);
    dspy_json_set_str(run, "experiment_id", eid);
    dspy_json_set_str(run, "status", "RUNNING");
    dspy_json_set_str(run, "lifecycle_stage", "active");
    dspy_json_set_str(run, "artifact_uri", au);
    dspy_json_set(run, "start_time", dspy_json_int(dspy_json_int_or(req, "start_time", 0)));
    dspy_json_set(run, "end_time", dspy_json_null());
    dspy_json_set(run, "params", dspy_json_object());
    dspy_json_set(run, "tags", dspy_json_object());
    dspy_json_set(run, "metrics", dspy_json_array());
    const dspy_json *tags = dspy_json_get(req, "tags");
    for (size_t i = 0; i < dspy_json_size(tags); i++)
        set_tag(run, dspy_json_str_or(dspy_json_at(tags, i), "key", ""), dspy_json_str_or(dspy_json_at(tags, i), "value", ""));
    const char *name = dspy_json_str_or(req, "run_name", NULL);
    if (name) set_tag(run, "mlflow.runName", name);
    dspy_json_set(s->runs, id, run);
    dspy_json_append(s->run_order, dspy_json_string(id));
    dspy_json *o = dspy_json_object(), *r = dspy_json_object(), *data = dspy_json_object();
    dspy_json_set(r, "info", run_info(run));
    dspy_json_set(r, "data", data);
    dspy_json_set(o, "run", r);
    reply(resp, o);
}

static void h_update_run(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    dspy_json *run = run_of(s, req);
    if (!run) {
        api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "Run not found");
        return;
    }
    const dspy_json *st = dspy_json_get(req, "status");
    if (dspy_json_str(st)) dspy_json_set_str(run, "status", dspy_json_str(st));
    else if (st) dspy_json_set_str(run, "status", k_run_status[dspy_json_intval(st)]);
    if (dspy_json_get(req, "end_time")) dspy_json_set(run, "end_time", dspy_json_copy(dspy_json_get(req, "end_time")));
    if (dspy_json_str_or(req, "run_name", NULL)) set_tag(run, "mlflow.runName", dspy_json_str_or(req, "run_name", ""));
    dspy_json *o = dspy_json_object();
    dspy_json_set(o, "run_info", run_info(run));
    reply(resp, o);
}

static void h_get_run(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    dspy_json *run = run_of(s, req);
    if (!run) {
        api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "Run not found");
        return;
    }
    dspy_json *o = dspy_json_object(), *r = dspy_json_object();
    dspy_json_set(r, "info", run_info(run));
    dspy_json_set(o, "run", r);
    reply(resp, o);
}

/* MLflow's validation.py limits; false (with a violation) when broken. */
static bool check_kv(mlflow_stub *s, http_stub_response *resp, const char *rpc, const char *what, const dspy_json *e,
                     size_t max_value) {
    const char *k = dspy_json_str_or(e, "key", ""), *v = dspy_json_str_or(e, "value", "");
    char why[512];
    if (!*k || strlen(k) > 250) snprintf(why, sizeof why, "%s key '%.60s' must be 1..250 bytes", what, k);
    else if (strlen(v) > max_value) snprintf(why, sizeof why, "%s '%s' value is %zu bytes (max %zu)", what, k, strlen(v), max_value);
    else return true;
    violation(s, resp, rpc, why);
    return false;
}

static void log_metric(dspy_json *run, const dspy_json *m) {
    dspy_json *p = dspy_json_object();
    dspy_json_set_str(p, "key", dspy_json_str_or(m, "key", ""));
    dspy_json_set(p, "value", dspy_json_copy(dspy_json_get(m, "value")));
    const dspy_json *ts = dspy_json_get(m, "timestamp"), *step = dspy_json_get(m, "step");
    dspy_json_set(p, "timestamp", dspy_json_int(dspy_json_str(ts) ? strtoll(dspy_json_str(ts), NULL, 10) : dspy_json_intval(ts)));
    dspy_json_set(p, "step", dspy_json_int(dspy_json_str(step) ? strtoll(dspy_json_str(step), NULL, 10) : dspy_json_intval(step)));
    dspy_json_append(dspy_json_get(run, "metrics"), p);
}

static bool log_param(mlflow_stub *s, http_stub_response *resp, dspy_json *run, const char *k, const char *v) {
    const char *old = dspy_json_str_or(dspy_json_get(run, "params"), k, NULL);
    if (old && strcmp(old, v) != 0) {
        api_error(resp, 400, "INVALID_PARAMETER_VALUE", "Changing param values is not allowed. Param with key='%s' was "
              "already logged with value='%s'", k, old);
        s->nviolations++;
        dspy_str_appendf(&s->violations, "param %s changed value\n", k);
        return false;
    }
    dspy_json_set_str(dspy_json_get(run, "params"), k, v);
    return true;
}

static void h_log_batch(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    dspy_json *run = run_of(s, req);
    if (!run) {
        api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "Run not found");
        return;
    }
    const dspy_json *ms = dspy_json_get(req, "metrics"), *ps = dspy_json_get(req, "params"), *ts = dspy_json_get(req, "tags");
    size_t nm = dspy_json_size(ms), np = dspy_json_size(ps), nt = dspy_json_size(ts);
    char why[256];
    if (nm > 1000 || np > 100 || nt > 100 || nm + np + nt > 1000) {
        snprintf(why, sizeof why, "A batch logging request can contain at most 1000 metrics, 100 params, 100 tags and "
                 "1000 entities; got %zu, %zu, %zu", nm, np, nt);
        violation(s, resp, "LogBatch", why);
        return;
    }
    for (size_t i = 0; i < np; i++)
        if (!check_kv(s, resp, "LogBatch", "param", dspy_json_at(ps, i), 6000)) return;
    for (size_t i = 0; i < nt; i++)
        if (!check_kv(s, resp, "LogBatch", "tag", dspy_json_at(ts, i), 8000)) return;
    for (size_t i = 0; i < nm; i++) {
        const dspy_json *m = dspy_json_at(ms, i);
        if (!dspy_json_get(m, "key") || !dspy_json_get(m, "value") || !dspy_json_get(m, "timestamp")) {
            violation(s, resp, "LogBatch", "a metric needs key, value and timestamp");
            return;
        }
    }
    for (size_t i = 0; i < np; i++)
        if (!log_param(s, resp, run, dspy_json_str_or(dspy_json_at(ps, i), "key", ""),
                       dspy_json_str_or(dspy_json_at(ps, i), "value", "")))
            return;
    for (size_t i = 0; i < nm; i++) log_metric(run, dspy_json_at(ms, i));
    for (size_t i = 0; i < nt; i++)
        set_tag(run, dspy_json_str_or(dspy_json_at(ts, i), "key", ""), dspy_json_str_or(dspy_json_at(ts, i), "value", ""));
    reply(resp, dspy_json_object());
}

static void h_log_metric(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    dspy_json *run = run_of(s, req);
    if (!run) api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "Run not found");
    else {
        log_metric(run, req);
        reply(resp, dspy_json_object());
    }
}

static void h_log_param(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    dspy_json *run = run_of(s, req);
    if (!run) api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "Run not found");
    else if (log_param(s, resp, run, dspy_json_str_or(req, "key", ""), dspy_json_str_or(req, "value", "")))
        reply(resp, dspy_json_object());
}

static void h_set_tag(mlflow_stub *s, const dspy_json *req, http_stub_response *resp) {
    dspy_json *run = run_of(s, req);
    if (!run) api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "Run not found");
    else {
        set_tag(run, dspy_json_str_or(req, "key", ""), dspy_json_str_or(req, "value", ""));
        reply(resp, dspy_json_object());
    }
}

typedef struct endpoint {
    const char *method, *path;
    const pmsg *msg;
    void (*fn)(mlflow_stub *, const dspy_json *, http_stub_response *);
} endpoint;

static const endpoint k_endpoints[] = {
    {"GET", "/api/2.0/mlflow/experiments/get-by-name", &m_get_experiment_by_name, h_get_experiment_by_name},
    {"GET", "/api/2.0/mlflow/experiments/get", &m_get_experiment, h_get_experiment},
    {"POST", "/api/2.0/mlflow/experiments/create", &m_create_experiment, h_create_experiment},
    {"POST", "/api/2.0/mlflow/runs/create", &m_create_run, h_create_run},
    {"POST", "/api/2.0/mlflow/runs/update", &m_update_run, h_update_run},
    {"GET", "/api/2.0/mlflow/runs/get", &m_get_run, h_get_run},
    {"POST", "/api/2.0/mlflow/runs/log-batch", &m_log_batch, h_log_batch},
    {"POST", "/api/2.0/mlflow/runs/log-metric", &m_log_metric, h_log_metric},
    {"POST", "/api/2.0/mlflow/runs/log-parameter", &m_log_param, h_log_param},
    {"POST", "/api/2.0/mlflow/runs/set-tag", &m_set_tag, h_set_tag},
};

/* A GET request's query as a JSON object of strings (repeated names: the last one). */
static dspy_json *query_object(const char *q) {
    dspy_json *o = dspy_json_object();
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', n);
        dspy_str k = DSPY_STR_INIT, v = DSPY_STR_INIT;
        for (size_t i = 0; i < n; i++) {
            dspy_str *t = eq && q + i > eq ? &v : &k;
            if (q + i == eq) continue;
            char c = q[i];
            if (c == '+') c = ' ';
            else if (c == '%' && i + 2 < n && isxdigit((unsigned char)q[i + 1]) && isxdigit((unsigned char)q[i + 2])) {
                char hex[3] = {q[i + 1], q[i + 2], 0};
                c = (char)strtol(hex, NULL, 16);
                i += 2;
            }
            dspy_str_appendc(t, c);
        }
        if (k.len) dspy_json_set_str(o, k.ptr, dspy_str_cstr(&v));
        dspy_str_free(&k);
        dspy_str_free(&v);
        q = amp ? amp + 1 : NULL;
    }
    return o;
}

#define ARTIFACTS "/api/2.0/mlflow-artifacts/artifacts/"

static void percent_decode(dspy_str *out, const char *s) {
    for (; *s; s++) {
        if (*s == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
            char hex[3] = {s[1], s[2], 0};
            dspy_str_appendc(out, (char)strtol(hex, NULL, 16));
            s += 2;
        } else {
            dspy_str_appendc(out, *s);
        }
    }
}

static void h_artifact(mlflow_stub *s, const http_stub_request *req, http_stub_response *resp) {
    /* <experiment>/<run>/artifacts/<path>, as the run's mlflow-artifacts: URI resolves */
    dspy_str p = DSPY_STR_INIT;
    percent_decode(&p, req->path + strlen(ARTIFACTS));
    char exp[64] = "", run[64] = "";
    int off = 0;
    bool put = strcmp(req->method, "PUT") == 0;
    const char *rest = NULL;
    if (sscanf(dspy_str_cstr(&p), "%63[^/]/%63[^/]/artifacts/%n", exp, run, &off) == 2 && off > 0) rest = p.ptr + off;
    dspy_json *r = rest ? dspy_json_get(s->runs, run) : NULL;
    if (!rest || !*rest || strstr(rest, "..") || !r || strcmp(dspy_json_str_or(r, "experiment_id", ""), exp) != 0) {
        s->nviolations++;
        dspy_str_appendf(&s->violations, "artifact %s %s: not <experiment>/<run>/artifacts/<path> of a known run\n",
                         req->method, req->path);
        api_error(resp, 400, "INVALID_PARAMETER_VALUE", "bad artifact path %s", req->path);
        dspy_str_free(&p);
        return;
    }
    count_call(s, put ? "artifact PUT" : "artifact GET");
    artifact *a = NULL;
    for (size_t i = 0; i < s->narts && !a; i++)
        if (strcmp(s->arts[i].run_id, run) == 0 && strcmp(s->arts[i].path, rest) == 0) a = &s->arts[i];
    if (put) {
        if (!a) {
            if (s->narts == s->cap_arts) {
                s->cap_arts = s->cap_arts ? 2 * s->cap_arts : 16;
                s->arts = realloc(s->arts, s->cap_arts * sizeof *s->arts);
            }
            a = &s->arts[s->narts++];
            memset(a, 0, sizeof *a);
            a->run_id = strdup(run);
            a->path = strdup(rest);
        }
        free(a->data);
        free(a->type);
        a->data = malloc(req->body_len + 1);
        memcpy(a->data, req->body, req->body_len);
        a->data[req->body_len] = '\0';
        a->len = req->body_len;
        const char *ct = http_stub_header(req, "Content-Type");
        a->type = strdup(ct ? ct : "");
        reply(resp, dspy_json_object());
    } else if (a) {
        resp->content_type = "application/octet-stream";
        dspy_str_clear(&resp->body);
        dspy_str_appendn(&resp->body, a->data, a->len);
    } else {
        api_error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "no artifact %s", rest);
    }
    dspy_str_free(&p);
}

static void handler(void *ud, const http_stub_request *req, http_stub_response *resp) {
    mlflow_stub *s = ud;
    pthread_mutex_lock(&s->lock);
    s->requests++;
    if (s->drop_next > 0) {
        s->drop_next--;
        resp->action = HTTP_STUB_DROP;
        goto done;
    }
    if (s->fail_all || s->fail_next > 0) {
        int status = s->fail_all ? 500 : s->fail_status;
        if (!s->fail_all) s->fail_next--;
        api_error(resp, status, status == 429 ? "REQUEST_LIMIT_EXCEEDED" : "INTERNAL_ERROR", "injected failure (HTTP %d)",
              status);
        goto done;
    }
    if (strncmp(req->path, ARTIFACTS, strlen(ARTIFACTS)) == 0 &&
        (strcmp(req->method, "PUT") == 0 || strcmp(req->method, "GET") == 0)) {
        h_artifact(s, req, resp);
        goto done;
    }
    const endpoint *ep = NULL;
    for (size_t i = 0; i < sizeof k_endpoints / sizeof *k_endpoints && !ep; i++)
        if (strcmp(k_endpoints[i].path, req->path) == 0 && strcmp(k_endpoints[i].method, req->method) == 0)
            ep = &k_endpoints[i];
    if (!ep) {
        api_error(resp, 404, "ENDPOINT_NOT_FOUND", "No API endpoint %s %s", req->method, req->path);
        s->nviolations++;
        dspy_str_appendf(&s->violations, "no endpoint %s %s\n", req->method, req->path);
        goto done;
    }
    dspy_json *body = NULL;
    dspy_str why = DSPY_STR_INIT;
    if (strcmp(ep->method, "GET") == 0) {
        body = query_object(req->query);
    } else {
        const char *ct = http_stub_header(req, "Content-Type");
        if (!ct || strncmp(ct, "application/json", 16) != 0) {
            violation(s, resp, ep->msg->name, "POST body needs Content-Type: application/json");
            goto done;
        }
        if (dspy_json_parse(req->body_len ? req->body : "{}", req->body_len ? req->body_len : 2, "request", &body)) {
            violation(s, resp, ep->msg->name, "the body is not JSON");
            goto done;
        }
    }
    if (!check_message(ep->msg, body, ep->msg->name, &why)) {
        violation(s, resp, ep->msg->name, dspy_str_cstr(&why));
    } else {
        ep->fn(s, body, resp);
        if (resp->status >= 200 && resp->status < 300) count_call(s, ep->msg->name);
    }
    dspy_str_free(&why);
    dspy_json_decref(body);
done:
    pthread_mutex_unlock(&s->lock);
}

/* ---- lifecycle and accessors ------------------------------------------------------------------ */

dspy_status mlflow_stub_start(mlflow_stub **out) {
    *out = NULL;
    mlflow_stub *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->experiments = dspy_json_array();
    s->runs = dspy_json_object();
    s->run_order = dspy_json_array();
    s->calls = dspy_json_object();
    s->next_exp = 0;
    /* MLflow stores start with the Default experiment, id 0 */
    dspy_json *d = dspy_json_object();
    dspy_json_set_str(d, "experiment_id", "0");
    dspy_json_set_str(d, "name", "Default");
    dspy_json_set_str(d, "lifecycle_stage", "active");
    dspy_json_append(s->experiments, d);
    dspy_status st = http_stub_start(handler, s, &s->http);
    if (st) {
        mlflow_stub_stop(s);
        return st;
    }
    *out = s;
    return DSPY_OK;
}

void mlflow_stub_stop(mlflow_stub *s) {
    if (!s) return;
    http_stub_stop(s->http);
    dspy_json_decref(s->experiments);
    dspy_json_decref(s->runs);
    dspy_json_decref(s->run_order);
    dspy_json_decref(s->calls);
    dspy_str_free(&s->trace);
    dspy_str_free(&s->violations);
    for (size_t i = 0; i < s->narts; i++) {
        free(s->arts[i].run_id);
        free(s->arts[i].path);
        free(s->arts[i].type);
        free(s->arts[i].data);
    }
    free(s->arts);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

const char *mlflow_stub_url(const mlflow_stub *s) { return http_stub_url(s->http); }

const char *mlflow_stub_add_experiment(mlflow_stub *s, const char *name) {
    pthread_mutex_lock(&s->lock);
    const char *id = add_experiment(s, name);
    pthread_mutex_unlock(&s->lock);
    return id;
}

void mlflow_stub_fail_next(mlflow_stub *s, int n, int http_status) {
    pthread_mutex_lock(&s->lock);
    s->fail_next = n;
    s->fail_status = http_status;
    pthread_mutex_unlock(&s->lock);
}

void mlflow_stub_drop_next(mlflow_stub *s, int n) {
    pthread_mutex_lock(&s->lock);
    s->drop_next = n;
    pthread_mutex_unlock(&s->lock);
}

void mlflow_stub_fail_all(mlflow_stub *s, bool on) {
    pthread_mutex_lock(&s->lock);
    s->fail_all = on;
    pthread_mutex_unlock(&s->lock);
}

int mlflow_stub_requests(mlflow_stub *s) {
    pthread_mutex_lock(&s->lock);
    int n = s->requests;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int mlflow_stub_calls(mlflow_stub *s, const char *rpc) {
    pthread_mutex_lock(&s->lock);
    int n = (int)dspy_json_int_or(s->calls, rpc, 0);
    pthread_mutex_unlock(&s->lock);
    return n;
}

int mlflow_stub_violations(mlflow_stub *s) {
    pthread_mutex_lock(&s->lock);
    int n = s->nviolations;
    pthread_mutex_unlock(&s->lock);
    return n;
}

char *mlflow_stub_violation_text(mlflow_stub *s) {
    pthread_mutex_lock(&s->lock);
    char *t = strdup(dspy_str_cstr(&s->violations));
    pthread_mutex_unlock(&s->lock);
    return t;
}

char *mlflow_stub_trace(mlflow_stub *s) {
    pthread_mutex_lock(&s->lock);
    char *t = strdup(dspy_str_cstr(&s->trace));
    pthread_mutex_unlock(&s->lock);
    return t;
}

dspy_json *mlflow_stub_experiments(mlflow_stub *s) {
    pthread_mutex_lock(&s->lock);
    dspy_json *c = dspy_json_copy(s->experiments);
    pthread_mutex_unlock(&s->lock);
    return c;
}

dspy_json *mlflow_stub_run(mlflow_stub *s, const char *run_id) {
    pthread_mutex_lock(&s->lock);
    const dspy_json *r = run_id ? dspy_json_get(s->runs, run_id) : NULL;
    dspy_json *c = r ? dspy_json_copy(r) : NULL;
    pthread_mutex_unlock(&s->lock);
    return c;
}

dspy_json *mlflow_stub_runs(mlflow_stub *s) {
    pthread_mutex_lock(&s->lock);
    dspy_json *c = dspy_json_copy(s->run_order);
    pthread_mutex_unlock(&s->lock);
    return c;
}

static const artifact *find_artifact(mlflow_stub *s, const char *run_id, const char *path) {
    for (size_t i = 0; i < s->narts; i++)
        if (strcmp(s->arts[i].run_id, run_id) == 0 && strcmp(s->arts[i].path, path) == 0) return &s->arts[i];
    return NULL;
}

char *mlflow_stub_artifact(mlflow_stub *s, const char *run_id, const char *path, size_t *len) {
    pthread_mutex_lock(&s->lock);
    const artifact *a = find_artifact(s, run_id, path);
    char *c = a ? malloc(a->len + 1) : NULL;
    if (c) {
        memcpy(c, a->data, a->len + 1);
        *len = a->len;
    }
    pthread_mutex_unlock(&s->lock);
    return c;
}

char *mlflow_stub_artifact_type(mlflow_stub *s, const char *run_id, const char *path) {
    pthread_mutex_lock(&s->lock);
    const artifact *a = find_artifact(s, run_id, path);
    char *c = a ? strdup(a->type) : NULL;
    pthread_mutex_unlock(&s->lock);
    return c;
}
