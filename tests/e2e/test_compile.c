/* test_compile.c — `dspy compile` end to end, with a scripted teacher served over HTTP on
 * 127.0.0.1 (tests/support/http_stub.h: an OpenAI-compatible chat-completions endpoint answering
 * ChatAdapter text with Banking77's gold labels) and a tiny random Llama student (`dspy
 * init-model` with the real Llama 3 tokenizer) trained on the CPU:
 *   - every step runs: bootstrap -> JSONL -> fine-tune -> a real `dspy serve` process ->
 *     evaluation over HTTP with 4 threads -> inspect_history -> save; `dspy eval --program` of
 *     the saved program (its own server, its own empty LM cache) gives the same score and the
 *     very same student completions (compared in the two LM caches);
 *   - teacher faults: the stub drops a connection, answers 429 once, garbles one text for good
 *     and fails another with HTTP 500 for good: compile still finishes, and the failures are
 *     counted and reported;
 *   - kill -9 of the compile process after some teacher answers, then a rerun: nothing the
 *     teacher already answered is asked again (counted at the stub);
 *   - --metric exact --filter-traces: the stub gives wrong labels for some texts; only the traces
 *     whose label is the gold label reach the JSONL (lines counted and checked).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dspy/datasets.h"
#include "dspy/hash.h"
#include "dspy/json.h"
#include "dspy/oracle.h"
#include "dspy/str.h"
#include "http_stub.h"

extern char **environ;

#define N_TRAIN "10"
#define N_DEV "4"

static char g_student[1024], g_data[1024];

/* ---- the teacher stub ------------------------------------------------------------------- */

enum fault { F_NONE, F_DROP_ONCE, F_429_ONCE, F_GARBLE, F_500, F_WRONG };

typedef struct fault_rule {
    char text[512];
    enum fault kind;
    int fired_phase; /* the phase a one-shot fault last fired in */
} fault_rule;

typedef struct stub_state {
    pthread_mutex_t lock;
    dspy_oracle *oracle;
    fault_rule rules[8];
    int n_rules;
    /* request keys (sha256 of messages + response_format) answered with 200, tagged by phase */
    char (*keys)[65];
    int *key_phase;
    int n_keys, cap_keys;
    int phase;
    int requests, answered, asked_again;        /* this phase */
    int dropped, limited, garbled, failed500, wrong; /* all phases */
    int pause_after; /* > 0: once this many answers were given in the phase, hold further requests */
    atomic_int held, release;
} stub_state;

static stub_state g_stub;

/* The [[ ## text ## ]] value of the last user message (malloc'd) or NULL. */
static char *input_text(const dspy_json *messages) {
    const char *content = NULL;
    for (size_t i = dspy_json_size(messages); i-- > 0 && !content;) {
        const dspy_json *m = dspy_json_at(messages, i);
        if (strcmp(dspy_json_str_or(m, "role", ""), "user") == 0) content = dspy_json_str_or(m, "content", NULL);
    }
    const char *at = content ? strstr(content, "[[ ## text ## ]]\n") : NULL;
    if (!at) return NULL;
    at += strlen("[[ ## text ## ]]\n");
    const char *end = strstr(at, "\n\n");
    return end ? strndup(at, (size_t)(end - at)) : strdup(at);
}

static fault_rule *rule_of(const char *text) {
    for (int i = 0; text && i < g_stub.n_rules; i++)
        if (strcmp(g_stub.rules[i].text, text) == 0) return &g_stub.rules[i];
    return NULL;
}

static int find_key(const char *key) {
    for (int i = 0; i < g_stub.n_keys; i++)
        if (strcmp(g_stub.keys[i], key) == 0) return i;
    return -1;
}

static void add_key(const char *key) {
    if (find_key(key) >= 0) return;
    if (g_stub.n_keys == g_stub.cap_keys) {
        g_stub.cap_keys = g_stub.cap_keys ? 2 * g_stub.cap_keys : 64;
        g_stub.keys = realloc(g_stub.keys, (size_t)g_stub.cap_keys * sizeof *g_stub.keys);
        g_stub.key_phase = realloc(g_stub.key_phase, (size_t)g_stub.cap_keys * sizeof *g_stub.key_phase);
    }
    memcpy(g_stub.keys[g_stub.n_keys], key, 65);
    g_stub.key_phase[g_stub.n_keys++] = g_stub.phase;
}

static void completion(http_stub_response *resp, const char *content) {
    dspy_json *o = NULL;
    dspy_json_parse("{\"id\":\"chatcmpl-stub\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"stub-teacher\","
                    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":"
                    "\"stop\"}],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":20,\"total_tokens\":120}}",
                    strlen("{\"id\":\"chatcmpl-stub\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"stub-"
                           "teacher\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
                           "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":20,"
                           "\"total_tokens\":120}}"),
                    "stub", &o);
    dspy_json *msg = dspy_json_get(dspy_json_at(dspy_json_get(o, "choices"), 0), "message");
    dspy_json_set_str(msg, "content", content);
    dspy_json_dump(o, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &resp->body);
    dspy_json_decref(o);
}

static void teacher_handler(void *ud, const http_stub_request *req, http_stub_response *resp) {
    (void)ud;
    if (strcmp(req->path, "/v1/chat/completions") != 0) {
        resp->status = 404;
        dspy_str_append(&resp->body, "{\"error\":{\"message\":\"no such route\"}}");
        return;
    }
    dspy_json *body = NULL;
    if (dspy_json_parse(req->body, req->body_len, "request", &body) != DSPY_OK) {
        resp->status = 400;
        dspy_str_append(&resp->body, "{\"error\":{\"message\":\"bad JSON\"}}");
        return;
    }
    const dspy_json *messages = dspy_json_get(body, "messages");
    const dspy_json *rf = dspy_json_get(body, "response_format");
    dspy_str k = DSPY_STR_INIT;
    dspy_json_dump(messages, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &k);
    if (rf) dspy_json_dump(rf, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &k);
    char key[65];
    dspy_sha256_hex(k.ptr, k.len, key);
    dspy_str_free(&k);
    char *text = input_text(messages);
    char *reply = NULL;
    bool hold = false;

    pthread_mutex_lock(&g_stub.lock);
    fault_rule *rule = rule_of(text);
    enum fault f = rule ? rule->kind : F_NONE;
    g_stub.requests++;
    int seen = find_key(key);
    if (seen >= 0 && g_stub.key_phase[seen] < g_stub.phase) g_stub.asked_again++;
    if (g_stub.pause_after > 0 && g_stub.answered >= g_stub.pause_after) {
        hold = true;
    } else if ((f == F_DROP_ONCE || f == F_429_ONCE) && seen < 0 && rule->fired_phase != g_stub.phase) {
        rule->fired_phase = g_stub.phase;
        if (f == F_DROP_ONCE) {
            g_stub.dropped++;
            resp->action = HTTP_STUB_DROP;
        } else {
            g_stub.limited++;
            resp->status = 429;
            dspy_str_append(&resp->headers, "Retry-After: 0\r\n");
            dspy_str_append(&resp->body, "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"}}");
        }
    } else if (f == F_500) {
        g_stub.failed500++;
        resp->status = 500;
        dspy_str_append(&resp->body, "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}");
    } else {
        if (f == F_GARBLE) {
            g_stub.garbled++;
            reply = strdup("I'm sorry, I can't classify this message.");
        } else if (dspy_oracle_reply(g_stub.oracle, messages, rf != NULL, &reply) != DSPY_OK) {
            reply = strdup("unknown text");
        } else if (f == F_WRONG) { /* a well-formed answer with another (valid) label */
            g_stub.wrong++;
            free(reply);
            reply = strdup(rf ? "{\"reasoning\": \"It is about the app.\", \"label\": \"apple_pay_or_google_pay\"}"
                              : "[[ ## reasoning ## ]]\nIt is about the app.\n\n[[ ## label ## ]]\n"
                                "apple_pay_or_google_pay\n\n[[ ## completed ## ]]");
        }
        completion(resp, reply);
        add_key(key);
        g_stub.answered++;
    }
    pthread_mutex_unlock(&g_stub.lock);
    if (hold) { /* keep the client waiting until the test has killed it */
        atomic_fetch_add(&g_stub.held, 1);
        while (!atomic_load(&g_stub.release)) usleep(10000);
        resp->action = HTTP_STUB_DROP;
    }
    free(reply);
    free(text);
    dspy_json_decref(body);
}

static void stub_phase(int phase, int pause_after) {
    pthread_mutex_lock(&g_stub.lock);
    g_stub.phase = phase;
    g_stub.pause_after = pause_after;
    g_stub.requests = g_stub.answered = g_stub.asked_again = 0;
    atomic_store(&g_stub.held, 0);
    atomic_store(&g_stub.release, 0);
    pthread_mutex_unlock(&g_stub.lock);
}

static int stub_get(int *field) {
    pthread_mutex_lock(&g_stub.lock);
    int v = *field;
    pthread_mutex_unlock(&g_stub.lock);
    return v;
}

/* ---- processes -------------------------------------------------------------------------- */

static pid_t spawn(char *const argv[], const char *log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static int wait_exit(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int run(char *const argv[], const char *log) {
    pid_t pid = spawn(argv, log);
    return pid < 0 ? -1 : wait_exit(pid);
}

static char *slurp(const char *path) {
    char *t = NULL;
    size_t n;
    if (dspy_read_file(path, &t, &n) != DSPY_OK) return strdup("");
    return t;
}

static void dump_log(const char *path) {
    char *t = slurp(path);
    size_t n = strlen(t);
    fprintf(stderr, "---- %s (last 6000 bytes) ----\n%s\n----\n", path, t + (n > 6000 ? n - 6000 : 0));
    free(t);
}

static int count_lines(const char *path) {
    char *t = slurp(path);
    int n = 0;
    for (char *p = t; *p; p++) n += *p == '\n';
    free(t);
    return n;
}

static int count_substr(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* The common `dspy compile` argv (NULL-terminated into argv, extra args appended). */
static int compile_argv(char **argv, const char *out, const char *const *extra, int n_extra) {
    int n = 0;
    argv[n++] = (char *)test_bin("dspy");
    argv[n++] = "compile";
    argv[n++] = "--student";
    argv[n++] = g_student;
    argv[n++] = "--teacher";
    argv[n++] = "openai/stub-teacher";
    argv[n++] = "--teacher-api-key";
    argv[n++] = "test-key";
    argv[n++] = "--data-dir";
    argv[n++] = g_data;
    argv[n++] = "--limit-train";
    argv[n++] = N_TRAIN;
    argv[n++] = "--limit-dev";
    argv[n++] = N_DEV;
    argv[n++] = "--num-threads";
    argv[n++] = "4";
    argv[n++] = "--max-tokens";
    argv[n++] = "12";
    argv[n++] = "--train-kwargs";
    argv[n++] = "num_train_epochs=1";
    argv[n++] = "--train-kwargs";
    argv[n++] = "gradient_accumulation_steps=1";
    argv[n++] = "--train-kwargs"; /* one optimizer step on one example: seconds, also under ASan */
    argv[n++] = "max_steps=1";
    argv[n++] = "--train-kwargs";
    argv[n++] = "packing=false";
    argv[n++] = "--train-kwargs";
    argv[n++] = "learning_rate=1e-3";
    argv[n++] = "--train-threads";
    argv[n++] = "1";
    argv[n++] = "--serve-arg=--threads";
    argv[n++] = "--serve-arg=1";
    argv[n++] = "--chat-date";
    argv[n++] = "26 Jul 2024";
    argv[n++] = "--baselines"; /* the untrained student's evaluation is covered by test_task */
    argv[n++] = "teacher";
    argv[n++] = "--no-json-fallback"; /* the fallback is covered by test_fallback; here it only costs time */
    argv[n++] = "--out";
    argv[n++] = (char *)out;
    for (int i = 0; i < n_extra; i++) argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    return n;
}

/* ---- fixtures --------------------------------------------------------------------------- */

static dspy_dataset *g_trainset; /* the tutorial's trainset, labelled (for the fault rules) */

static bool setup(http_stub **stub) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json") || !test_have_shared("data/banking77/train.csv")) {
        check_skip("../shared (tokenizer, Banking77) is missing");
        return false;
    }
    snprintf(g_data, sizeof g_data, "%s", test_shared("data/banking77"));
    snprintf(g_student, sizeof g_student, "%s/student", test_tmpdir());
    char log[1200], tok[1024];
    snprintf(log, sizeof log, "%s/init-model.log", test_tmpdir());
    snprintf(tok, sizeof tok, "%s", test_shared("models/llama3-tokenizer"));
    char *argv[] = {(char *)test_bin("dspy"), "init-model", "--out", g_student, "--tokenizer", tok, "--seed", "5", NULL};
    if (run(argv, log) != 0) {
        dump_log(log);
        CHECK(!"init-model failed");
        return false;
    }
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = g_data;
    dspy_dataset *train = NULL;
    CHECK_OK(dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &train, NULL));
    CHECK_OK(dspy_banking77_tutorial_trainset_labeled(train, &g_trainset));
    pthread_mutex_init(&g_stub.lock, NULL);
    CHECK_OK(dspy_oracle_new(train, NULL, &g_stub.oracle));
    dspy_dataset_free(train);
    /* fault rules on trainset texts 1..5 (text 0 stays clean) */
    static const enum fault kinds[] = {F_DROP_ONCE, F_429_ONCE, F_GARBLE, F_500, F_WRONG};
    for (int i = 0; i < 5; i++) {
        snprintf(g_stub.rules[i].text, sizeof g_stub.rules[i].text, "%s",
                 dspy_example_get_str(dspy_dataset_get(g_trainset, (size_t)i + 1), "text"));
        g_stub.rules[i].kind = kinds[i];
    }
    g_stub.n_rules = 5;
    CHECK_OK(http_stub_start(teacher_handler, NULL, stub));
    /* compile must choose DSPY_CACHEDIR itself (<out>/cache); no real key may leak in */
    unsetenv("DSPY_CACHEDIR");
    unsetenv("DSPY_FINETUNEDIR");
    unsetenv("OPENAI_API_KEY");
    return *stub != NULL;
}

/* ---- checks on a finished run ------------------------------------------------------------ */

/* The line after "[[ ## label ## ]]" (malloc'd) or NULL. */
static char *label_of(const char *reply) {
    const char *at = strstr(reply, "[[ ## label ## ]]\n");
    if (!at) return NULL;
    at += strlen("[[ ## label ## ]]\n");
    return strndup(at, strcspn(at, "\n"));
}

static double report_num(const dspy_json *rep, const char *key) { return dspy_json_num_or(rep, key, -1.0); }

/* Student completions in an LM cache directory: a sorted "key\tcontent\n" text (malloc'd). */
static char *student_cache(const char *dir) {
    dspy_str path = DSPY_STR_INIT, out = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/lm_cache.sqlite", dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    if (sqlite3_open_v2(dspy_str_cstr(&path), &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT key, value FROM lm_cache ORDER BY key", -1, &q, NULL) == SQLITE_OK) {
        while (sqlite3_step(q) == SQLITE_ROW) {
            const char *k = (const char *)sqlite3_column_text(q, 0), *v = (const char *)sqlite3_column_text(q, 1);
            dspy_json *j = NULL;
            if (!v || dspy_json_parse(v, strlen(v), "cache", &j) != DSPY_OK) continue;
            const char *model = dspy_json_str_or(j, "model", "");
            const dspy_json *c0 = dspy_json_at(dspy_json_get(j, "choices"), 0);
            const char *content = dspy_json_str_or(dspy_json_get(c0, "message"), "content", "");
            if (strstr(model, "stub-teacher") == NULL) dspy_str_appendf(&out, "%s\t%s\n", k, content);
            dspy_json_decref(j);
        }
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    dspy_str_free(&path);
    return dspy_str_take(&out);
}

static void check_finished_run(const char *out, const char *log, bool with_metric, int n_dev) {
    char path[1400];
    snprintf(path, sizeof path, "%s/report.json", out);
    dspy_json *rep = NULL;
    CHECK_OK(dspy_json_load(path, &rep));
    if (!rep) return;
    int n_train = atoi(N_TRAIN);
    /* garbled: an unparseable teacher answer; 500: a teacher error; both counted, not fatal */
    CHECK_INT((int)report_num(rep, "bootstrap_examples"), n_train);
    CHECK_INT((int)report_num(rep, "teacher_parse_failures"), 1);
    CHECK_INT((int)report_num(rep, "teacher_errors"), 1);
    CHECK_INT((int)report_num(rep, "bootstrap_traces"), n_train - 1);
    int records = (int)report_num(rep, "finetune_records");
    CHECK_INT(records, with_metric ? n_train - 3 : n_train - 2);
    CHECK_INT((int)report_num(rep, "filtered_out"), with_metric ? 1 : 0);
    const char *data_path = dspy_json_str_or(rep, "data_path", "");
    CHECK_INT(count_lines(data_path), records);
    /* named by SHA-256 of its bytes */
    char *bytes = slurp(data_path);
    char hex[65];
    dspy_sha256_hex(bytes, strlen(bytes), hex);
    CHECK_CONTAINS(data_path, hex);
    /* every record: [system, user, assistant]; with the metric, the label is the gold one */
    int gold_ok = 0, three = 0;
    char *save = NULL;
    for (char *line = strtok_r(bytes, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        dspy_json *rec = NULL;
        if (dspy_json_parse(line, strlen(line), "jsonl", &rec) != DSPY_OK) continue;
        const dspy_json *m = dspy_json_get(rec, "messages");
        three += dspy_json_size(m) == 3;
        dspy_json *q = dspy_json_array();
        dspy_json_append(q, dspy_json_copy(dspy_json_at(m, 0)));
        dspy_json_append(q, dspy_json_copy(dspy_json_at(m, 1)));
        char *want = NULL;
        if (dspy_oracle_reply(g_stub.oracle, q, false, &want) == DSPY_OK) {
            char *wl = label_of(want), *gl = label_of(dspy_json_str_or(dspy_json_at(m, 2), "content", ""));
            gold_ok += wl && gl && strcmp(wl, gl) == 0;
            free(wl);
            free(gl);
        }
        free(want);
        dspy_json_decref(q);
        dspy_json_decref(rec);
    }
    free(bytes);
    CHECK_INT(three, records);
    CHECK_INT(gold_ok, with_metric ? records : records - 1); /* without the metric the wrong answer is kept */
    /* the fine-tuned model and the saved program */
    const char *output_dir = dspy_json_str_or(rep, "output_dir", "");
    snprintf(path, sizeof path, "%s/model.safetensors", output_dir);
    CHECK(access(path, R_OK) == 0);
    CHECK((int)report_num(rep, "train_steps") >= 1);
    snprintf(path, sizeof path, "%s/program.json", out);
    dspy_json *prog = NULL;
    CHECK_OK(dspy_json_load(path, &prog));
    const dspy_json *lm = dspy_json_get(dspy_json_get(prog, "predict"), "lm");
    /* saved relative to program.json's folder, so the run folder can move */
    dspy_str want_model = DSPY_STR_INIT;
    size_t nout = strlen(out);
    CHECK(strncmp(output_dir, out, nout) == 0 && output_dir[nout] == '/');
    dspy_str_appendf(&want_model, "openai/local:%s", output_dir + (strncmp(output_dir, out, nout) == 0 ? nout + 1 : 0));
    CHECK_STR(dspy_json_str_or(lm, "model", ""), dspy_str_cstr(&want_model));
    dspy_str_free(&want_model);
    CHECK(dspy_json_get(lm, "api_base") == NULL); /* killed: no dead address saved */
    CHECK_NEAR(dspy_json_num_or(lm, "temperature", -1), 0.0, 0);
    CHECK_INT(dspy_json_int_or(lm, "max_tokens", -1), 12);
    /* served with the date the training data was rendered with */
    CHECK_STR(dspy_json_str_or(dspy_json_get(lm, "launch_kwargs"), "chat_date", ""), "26 Jul 2024");
    dspy_json_decref(prog);
    /* results */
    snprintf(path, sizeof path, "%s/results.json", out);
    dspy_json *res = NULL;
    CHECK_OK(dspy_json_load(path, &res));
    CHECK_INT(dspy_json_size(res), n_dev);
    dspy_json_decref(res);
    snprintf(path, sizeof path, "%s/results.csv", out);
    CHECK_INT(count_lines(path), n_dev + 1);
    /* every step was shown, with progress, the table and inspect_history */
    char *text = slurp(log);
    for (int s = 1; s <= 9; s++) {
        char h[32];
        snprintf(h, sizeof h, "== [%d/9] ", s);
        CHECK_CONTAINS(text, h);
    }
    CHECK_CONTAINS(text, "Average Metric: ");
    CHECK_CONTAINS(text, "User message:");
    CHECK_CONTAINS(text, "Response:");
    CHECK_CONTAINS(text, "1 unparseable answers, 1 teacher errors");
    CHECK_CONTAINS(text, "Evaluate: score ");
    free(text);
    /* the student was served by a real `dspy serve` that answered the evaluation over HTTP */
    snprintf(path, sizeof path, "%s/logs", out);
    CHECK(access(path, R_OK) == 0);
    dspy_json_decref(rep);
}

static char *serve_logs(const char *out) {
    dspy_str cmd = DSPY_STR_INIT, all = DSPY_STR_INIT;
    dspy_str_appendf(&cmd, "%s/logs", out);
    char *dir = strdup(dspy_str_cstr(&cmd));
    dspy_str_free(&cmd);
    FILE *ls = NULL;
    dspy_str_appendf(&cmd, "ls %s", dir);
    ls = popen(dspy_str_cstr(&cmd), "r");
    char name[512];
    while (ls && fgets(name, sizeof name, ls)) {
        name[strcspn(name, "\n")] = '\0';
        dspy_str p = DSPY_STR_INIT;
        dspy_str_appendf(&p, "%s/%s", dir, name);
        char *t = slurp(dspy_str_cstr(&p));
        dspy_str_append(&all, t);
        free(t);
        dspy_str_free(&p);
    }
    if (ls) pclose(ls);
    dspy_str_free(&cmd);
    free(dir);
    return dspy_str_take(&all);
}

/* ---- tests ------------------------------------------------------------------------------ */

static char g_out[1100];
static http_stub *g_http;

static void test_faults_kill_resume_eval(void) {
    http_stub *stub = g_http;
    char url[300];
    snprintf(url, sizeof url, "--teacher-base-url=%s/v1", http_stub_url(stub));
    snprintf(g_out, sizeof g_out, "%s/run", test_tmpdir());
    const char *extra[] = {url};
    char *argv[64];
    compile_argv(argv, g_out, extra, 1);

    /* run 1: kill -9 once 4 teacher answers were given and more are waiting */
    stub_phase(1, 4);
    char log1[1200];
    snprintf(log1, sizeof log1, "%s/compile1.log", test_tmpdir());
    pid_t pid = spawn(argv, log1);
    CHECK(pid > 0);
    for (int i = 0; i < 6000 && atomic_load(&g_stub.held) == 0; i++) usleep(10000);
    CHECK(atomic_load(&g_stub.held) > 0);
    usleep(500000); /* the answers given are committed to the cache before they are used */
    if (pid > 0) {
        kill(pid, SIGKILL);
        CHECK_INT(wait_exit(pid), 128 + SIGKILL);
    }
    atomic_store(&g_stub.release, 1);
    int answered1 = stub_get(&g_stub.answered);
    CHECK_INT(answered1, 4);

    /* run 2: the same command finishes; nothing answered in run 1 is asked again */
    stub_phase(2, 0);
    char log2[1200];
    snprintf(log2, sizeof log2, "%s/compile2.log", test_tmpdir());
    int rc = run(argv, log2);
    CHECK_INT(rc, 0);
    if (rc != 0) dump_log(log2);
    CHECK_INT(stub_get(&g_stub.asked_again), 0);
    CHECK(stub_get(&g_stub.answered) > 0);
    /* the plan printed before spending counted the answers run 1 left in the cache */
    char *plan = slurp(log2);
    const char *hit = strstr(plan, "already in the LM cache (");
    CHECK(hit != NULL);
    if (hit) hit = strstr(hit, "): ");
    CHECK(hit && atoi(hit + 3) >= answered1);
    free(plan);
    /* the faults happened (in run 1 or 2) and did not stop it; the 500 is retried 3 times per run */
    CHECK(stub_get(&g_stub.dropped) >= 1);
    CHECK(stub_get(&g_stub.limited) >= 1);
    CHECK(stub_get(&g_stub.garbled) >= 1);
    CHECK(stub_get(&g_stub.failed500) >= 4);
    check_finished_run(g_out, log2, false, atoi(N_DEV));
    char *logs = serve_logs(g_out);
    CHECK(count_substr(logs, "POST /v1/chat/completions 200") >= atoi(N_DEV));
    free(logs);

    /* dspy eval of the saved program: its own server, its own empty cache, the same score */
    char prog[1200], cache2[1200], log4[1200], res4[1200], rep[1200];
    snprintf(prog, sizeof prog, "%s/program.json", g_out);
    snprintf(cache2, sizeof cache2, "%s/eval-cache", test_tmpdir());
    snprintf(log4, sizeof log4, "%s/eval.log", test_tmpdir());
    snprintf(res4, sizeof res4, "%s/eval-results", test_tmpdir());
    setenv("DSPY_CACHEDIR", cache2, 1);
    char *eargv[] = {(char *)test_bin("dspy"), "eval", "--program", prog, "--data-dir", g_data, "--split",
                     "tutorial-dev", "--limit", N_DEV, "--num-threads", "4", "--max-errors", "100", "--no-json-fallback",
                     "--serve-arg=--threads", "--serve-arg=1", "--out", res4, NULL};
    rc = run(eargv, log4);
    unsetenv("DSPY_CACHEDIR");
    CHECK_INT(rc, 0);
    if (rc != 0) dump_log(log4);
    snprintf(rep, sizeof rep, "%s/report.json", g_out);
    dspy_json *r = NULL;
    CHECK_OK(dspy_json_load(rep, &r));
    char want[96], num[32];
    dspy_py_float_repr(dspy_json_num_or(r, "score", -1), num, sizeof num);
    snprintf(want, sizeof want, "EvaluationResult(score=%s, results=<list of %s results>)", num, N_DEV);
    char *elog = slurp(log4);
    CHECK_CONTAINS(elog, want);
    free(elog);
    dspy_json_decref(r);
    /* the very same completions: compile's cache and eval's cache hold equal student answers */
    char c1[1200];
    snprintf(c1, sizeof c1, "%s/cache", g_out);
    char *a = student_cache(c1), *b = student_cache(cache2);
    CHECK(strlen(b) > 0);
    CHECK_STR(a, b);
    free(a);
    free(b);
}

static void test_metric_exact(void) {
    http_stub *stub = g_http;
    char url[300], out[1100], log[1200];
    snprintf(url, sizeof url, "--teacher-base-url=%s/v1", http_stub_url(stub));
    snprintf(out, sizeof out, "%s/metric", test_tmpdir());
    snprintf(log, sizeof log, "%s/compile-metric.log", test_tmpdir());
    const char *extra[] = {url, "--metric", "exact", "--filter-traces", "--limit-dev", "1", "--baselines", "none"};
    char *argv[64];
    compile_argv(argv, out, extra, 8);
    stub_phase(3, 0);
    int wrong0 = stub_get(&g_stub.wrong);
    int rc = run(argv, log);
    CHECK_INT(rc, 0);
    if (rc != 0) dump_log(log);
    CHECK_INT(stub_get(&g_stub.wrong) - wrong0, 1);
    check_finished_run(out, log, true, 1);
}

/* examples/banking77.c, the tutorial through the C API, offline with the oracle stand-in. */
static void test_example_program(void) {
    char exe[1200], out[1100], log[1200];
    snprintf(exe, sizeof exe, "%s/../examples/banking77", DSPY_BIN_DIR);
    if (access(exe, X_OK) != 0) {
        check_skip("build/examples/banking77 was not built");
        return;
    }
    snprintf(out, sizeof out, "%s/example", test_tmpdir());
    snprintf(log, sizeof log, "%s/example.log", test_tmpdir());
    setenv("DSPY_BIN", test_bin("dspy"), 1);
    setenv("DSPY_EXAMPLE_TRAIN_KWARGS", "{\"num_train_epochs\": 1, \"max_steps\": 1, \"packing\": false, \"gradient_accumulation_steps\": 1}", 1);
    setenv("DSPY_EXAMPLE_MAX_TOKENS", "12", 1);
    char *argv[] = {exe, g_data, g_student, out, "3", "2", NULL};
    int rc = run(argv, log);
    unsetenv("DSPY_EXAMPLE_TRAIN_KWARGS");
    unsetenv("DSPY_EXAMPLE_MAX_TOKENS");
    CHECK_INT(rc, 0);
    if (rc != 0) dump_log(log);
    char *text = slurp(log);
    CHECK_CONTAINS(text, "trainset: 3 unlabeled examples, devset: 2 labelled examples");
    CHECK_CONTAINS(text, "teacher: the ORACLE STAND-IN");
    CHECK_CONTAINS(text, "fine-tuned on 3 records: openai/local:");
    CHECK_CONTAINS(text, "launched http://127.0.0.1:");
    CHECK_CONTAINS(text, "EvaluationResult(score=");
    CHECK_CONTAINS(text, "User message:");
    CHECK_CONTAINS(text, "/program.json");
    free(text);
    char prog[1200];
    snprintf(prog, sizeof prog, "%s/program.json", out);
    CHECK(access(prog, R_OK) == 0);
}

int main(void) {
    if (setup(&g_http)) {
        RUN(test_faults_kill_resume_eval);
        RUN(test_metric_exact);
        RUN(test_example_program);
    }
    atomic_store(&g_stub.release, 1);
    http_stub_stop(g_http);
    dspy_oracle_free(g_stub.oracle);
    dspy_dataset_free(g_trainset);
    free(g_stub.keys);
    free(g_stub.key_phase);
    return check_summary("test_compile");
}
