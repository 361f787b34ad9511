/* bench_serve_load.c — issue 15's load acceptance for `dspy serve`, against a real server
 * process on 127.0.0.1 at default settings (a tiny random Llama, the real Llama 3 tokenizer).
 *
 *   lockout   IDLE idle sockets and SLOW clients that send one byte every 5 s (reconnecting
 *             when cut off) while one well-behaved client sends GOOD small requests: how many
 *             are answered normally, and how fast.
 *   long      one request asking for max_tokens = 1e9 (it gets the whole KV cache), streaming,
 *             then a 2-token request: its latency (preemption must let it through); and the
 *             n = 128, max_tokens = 1e9 request: refused at once (n cap, KV budget).
 *   big       a 7.8 MB chat body: the server's peak RSS over the body size (amplification) and
 *             its RSS afterwards (memory returned).
 *   crowd     CLIENTS concurrent clients, ROUNDS rounds of REQS requests in all (completions
 *             of MAXTOK tokens, default 1, over keep-alive connections; every STREAM-th one
 *             streamed, default none; prompts of 8 lengths); a 503 is retried after its
 *             Retry-After and counts only if a retry succeeds. Per round: errors, latency
 *             percentiles (p50, p99, max), the server's RSS and, where nvidia-smi sees the
 *             server, its GPU memory. Issue 10's B3 is `--scenario crowd --model DIR --device
 *             cuda --max-tokens 16 --stream-every 2` (256 clients, 2,000 requests, 5 rounds).
 *
 * Usage: bench_serve_load [--scenario all|lockout|long|big|crowd] [--good N] [--idle N] [--slow N]
 *        [--clients N] [--reqs N] [--rounds N] [--max-tokens N] [--stream-every N] [--model DIR]
 *        [--device cpu|cuda]
 * Prints one line per measurement; exits 1 when an acceptance threshold is missed. Sends
 * traffic to 127.0.0.1 only, bounded in count and time. Not a test (bench/, DESIGN §8.6).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "http_client.h"
#include "dspy/clock.h"
#include "dspy/local.h"
#include "dspy/model.h"
#include "dspy/str.h"

static int g_port;
static char g_model[1024];

static long status_kb(pid_t pid, const char *key) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0) kb = strtol(line + kl, NULL, 10);
    if (f) fclose(f);
    return kb;
}

static long rss_kb(pid_t pid) { return status_kb(pid, "VmRSS:"); }

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- HTTP with libcurl ------------------------------------------------------------------- */

typedef test_http_reply reply;

/* POST /v1/completions on a kept-alive handle; status 0 on a transport error (reset, timeout). */
static void post(CURL *h, const char *body, reply *r) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", g_port);
    test_http(h, url, body, 120, r);
}

static const char k_small[] = "{\"prompt\":\"Hello\",\"max_tokens\":2,\"temperature\":0}";

/* ---- lockout ------------------------------------------------------------------------------ */

typedef struct attackers {
    int n_idle, n_slow;
    atomic_bool stop;
    atomic_long reconnects;
} attackers;

static void *attack_main(void *arg) {
    attackers *a = arg;
    int n = a->n_idle + a->n_slow;
    int *fd = calloc((size_t)n, sizeof *fd);
    size_t *sent = calloc((size_t)n, sizeof *sent);
    static const char drip[] = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    for (int i = 0; i < n; i++) fd[i] = dial();
    double next = dspy_now_s();
    while (!atomic_load(&a->stop)) {
        if (dspy_now_s() >= next) {
            next += 5.0;
            for (int i = a->n_idle; i < n; i++) { /* one byte every 5 s; reconnect when cut off */
                char b;
                bool dead = fd[i] < 0 || recv(fd[i], &b, 1, MSG_DONTWAIT) == 0 ||
                            send(fd[i], drip + sent[i] % (sizeof drip - 1), 1, MSG_NOSIGNAL) != 1;
                if (dead) {
                    if (fd[i] >= 0) close(fd[i]);
                    fd[i] = dial();
                    sent[i] = 0;
                    atomic_fetch_add(&a->reconnects, 1);
                } else {
                    sent[i]++;
                }
            }
            for (int i = 0; i < a->n_idle; i++) { /* idle sockets: reopened when the server closes them */
                char b;
                if (fd[i] < 0 || recv(fd[i], &b, 1, MSG_DONTWAIT) == 0) {
                    if (fd[i] >= 0) close(fd[i]);
                    fd[i] = dial();
                    atomic_fetch_add(&a->reconnects, 1);
                }
            }
        }
        usleep(100 * 1000);
    }
    for (int i = 0; i < n; i++)
        if (fd[i] >= 0) close(fd[i]);
    free(fd);
    free(sent);
    return NULL;
}

static bool scenario_lockout(int n_idle, int n_slow, int n_good) {
    attackers a = {.n_idle = n_idle, .n_slow = n_slow};
    atomic_init(&a.stop, false);
    atomic_init(&a.reconnects, 0);
    pthread_t th;
    pthread_create(&th, NULL, attack_main, &a);
    sleep(2);
    CURL *h = curl_easy_init();
    reply r = {0};
    int ok = 0;
    double worst = 0, total = 0;
    for (int i = 0; i < n_good; i++) {
        double t0 = dspy_now_s();
        post(h, k_small, &r);
        double dt = dspy_now_s() - t0;
        if (r.status == 200) ok++;
        if (dt > worst) worst = dt;
        total += dt;
        usleep(400 * 1000); /* spread over the attackers' 5 s rhythm and the 30 s request deadline */
    }
    atomic_store(&a.stop, true);
    pthread_join(th, NULL);
    curl_easy_cleanup(h);
    test_http_reply_free(&r);
    double pct = 100.0 * ok / (n_good ? n_good : 1);
    printf("lockout: %d idle + %d slow-byte sockets (%ld reconnects after server cut-offs): good client %d/%d "
           "answered (%.1f %%), mean %.3f s, worst %.3f s\n", n_idle, n_slow, atomic_load(&a.reconnects), ok, n_good,
           pct, total / (n_good ? n_good : 1), worst);
    return pct >= 95.0;
}

/* ---- long request ------------------------------------------------------------------------- */

static bool scenario_long(void) {
    bool pass = true;
    CURL *h = curl_easy_init();
    reply r = {0};
    double t0 = dspy_now_s();
    post(h, "{\"prompt\":\"Once\",\"n\":128,\"max_tokens\":1000000000}", &r);
    printf("long: n=128, max_tokens=1e9 -> HTTP %ld in %.3f s: %.160s\n", r.status, dspy_now_s() - t0,
           dspy_str_cstr(&r.body));
    if (r.status != 400) pass = false;

    /* a long streaming request that takes the whole KV cache (max_tokens clamped to the context) */
    int fd = dial();
    static const char body[] = "{\"prompt\":\"Once upon a time\",\"max_tokens\":1000000000,\"temperature\":0,\"stream\":true}";
    char req[512];
    int k = snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                      "Content-Length: %zu\r\n\r\n%s", sizeof body - 1, body);
    send(fd, req, (size_t)k, MSG_NOSIGNAL);
    char buf[4096];
    size_t got = 0;
    double ts = dspy_now_s();
    while (got < 2000 && dspy_now_s() - ts < 30) { /* it is streaming tokens */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) > 0) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            got += (size_t)n;
        }
    }
    double worst = 0;
    int ok = 0;
    for (int i = 0; i < 5; i++) {
        t0 = dspy_now_s();
        post(h, k_small, &r);
        double dt = dspy_now_s() - t0;
        if (r.status == 200) ok++;
        if (dt > worst) worst = dt;
        /* keep reading the stream so it is never blocked on us */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        while (poll(&p, 1, 0) > 0 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
    }
    close(fd);
    printf("long: a 2-token request while a max_tokens=1e9 request streams (%zu bytes read before): %d/5 answered, "
           "worst latency %.3f s\n", got, ok, worst);
    if (ok != 5 || worst >= 2.0) pass = false;
    curl_easy_cleanup(h);
    test_http_reply_free(&r);
    return pass;
}

/* ---- a large body ------------------------------------------------------------------------ */

/* A 7.8 MB chat body (one long user message): the peak RSS it costs the server over its size,
 * and whether the memory is given back afterwards. */
static bool scenario_big(pid_t server) {
    dspy_str body = DSPY_STR_INIT;
    dspy_str_append(&body, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    dspy_str_repeat(&body, "lorem ipsum ", 650000);
    dspy_str_append(&body, "\"}],\"max_tokens\":1}");
    long hwm0 = status_kb(server, "VmHWM:"), rss0 = rss_kb(server);
    reply r = {0};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", g_port);
    double t0 = dspy_now_s();
    test_http(NULL, url, body.ptr, 120, &r);
    double dt = dspy_now_s() - t0;
    usleep(200 * 1000);
    long hwm1 = status_kb(server, "VmHWM:"), rss1 = rss_kb(server);
    double amp = (double)(hwm1 - hwm0) * 1024.0 / (double)body.len;
    printf("big body: %.1f MB chat body -> HTTP %ld in %.2f s; peak RSS +%ld KiB (%.1fx the body), RSS before %ld KiB, "
           "after %ld KiB\n", body.len / 1e6, r.status, dt, hwm1 - hwm0, amp, rss0, rss1);
    test_http_reply_free(&r);
    dspy_str_free(&body);
    return r.status == 400 && amp < 6.0 && rss1 < rss0 + 16 * 1024;
}

/* ---- crowd -------------------------------------------------------------------------------- */

typedef struct crowd {
    atomic_int next;   /* requests handed out this round */
    int total, max_tokens, stream_every;
    atomic_int errors, retried, ok;
    atomic_long first_errors; /* status of the first few errors, for the report */
    double *lat;              /* (total) seconds from the first send to the last byte, per request */
} crowd;

/* Request i's body: one of 8 prompt lengths (1 to 8 x 24 words), streamed when stream_every
 * divides i + 1. A streamed reply counts only when it ends with the [DONE] event. */
static void crowd_body(const crowd *c, int i, dspy_str *b, bool *stream) {
    *stream = c->stream_every > 0 && (i + 1) % c->stream_every == 0;
    dspy_str_clear(b);
    dspy_str_appendf(b, "{\"prompt\":\"Request %d:", i);
    for (int w = 0; w < 24 * (1 + i % 8); w++) dspy_str_appendf(b, " word%d", (i + w) % 97);
    dspy_str_appendf(b, "\",\"max_tokens\":%d,\"temperature\":0,\"stream\":%s}", c->max_tokens, *stream ? "true" : "false");
}

static void *crowd_main(void *arg) {
    crowd *c = arg;
    CURL *h = curl_easy_init();
    reply r = {0};
    dspy_str body = {0};
    int i;
    while ((i = atomic_fetch_add(&c->next, 1)) < c->total) {
        int tries = 0;
        bool stream;
        crowd_body(c, i, &body, &stream);
        double t0 = dspy_now_s();
        for (;;) {
            post(h, dspy_str_cstr(&body), &r);
            if (r.status == 503 && tries < 30) {
                tries++;
                usleep((useconds_t)((r.retry_after > 0 ? r.retry_after : 1.0) * 1e6));
                continue;
            }
            break;
        }
        c->lat[i] = dspy_now_s() - t0;
        bool done = !stream || strstr(dspy_str_cstr(&r.body), "data: [DONE]") != NULL;
        if (r.status == 200 && done) {
            atomic_fetch_add(&c->ok, 1);
            if (tries) atomic_fetch_add(&c->retried, 1);
        } else {
            if (atomic_fetch_add(&c->errors, 1) == 0) atomic_store(&c->first_errors, r.status);
        }
    }
    curl_easy_cleanup(h);
    test_http_reply_free(&r);
    dspy_str_free(&body);
    return NULL;
}

/* The GPU memory (MiB) nvidia-smi reports for process `pid`; -1 when it cannot tell (no
 * nvidia-smi, no GPU, or a container that hides other processes' ids). */
static long gpu_mib(pid_t pid) {
    FILE *f = popen("nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null", "r");
    long mib = -1, p, m;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%ld, %ld", &p, &m) == 2 && p == (long)pid) mib = m;
    if (f) pclose(f);
    return mib;
}

static bool scenario_crowd(pid_t server, int clients, int reqs, int rounds, int max_tokens, int stream_every) {
    bool pass = true;
    long rss0 = rss_kb(server), rss_first = 0, rss_last = 0, gpu_first = -1, gpu_last = -1;
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    double *lat = calloc((size_t)(reqs > 0 ? reqs : 1), sizeof *lat);
    for (int round = 0; round < rounds; round++) {
        crowd c = {.total = reqs, .max_tokens = max_tokens, .stream_every = stream_every, .lat = lat};
        atomic_init(&c.next, 0);
        atomic_init(&c.errors, 0);
        atomic_init(&c.retried, 0);
        atomic_init(&c.ok, 0);
        atomic_init(&c.first_errors, 0);
        double t0 = dspy_now_s();
        for (int i = 0; i < clients; i++) pthread_create(&th[i], NULL, crowd_main, &c);
        for (int i = 0; i < clients; i++) pthread_join(th[i], NULL);
        double dt = dspy_now_s() - t0;
        long rss = rss_kb(server), gpu = gpu_mib(server);
        if (round == 0) rss_first = rss, gpu_first = gpu;
        rss_last = rss, gpu_last = gpu;
        test_sort_doubles(lat, reqs);
        double p50 = reqs ? lat[reqs / 2] : 0, p99 = reqs ? lat[(size_t)((reqs - 1) * 0.99)] : 0;
        printf("crowd: round %d: %d clients, %d requests (%d tokens, %s): %d ok (%d after a 503 retry), %d errors "
               "(first: HTTP %ld), %.1f req/s, latency p50 %.3f s p99 %.3f s max %.3f s, server RSS %ld KiB, GPU %ld MiB\n",
               round + 1, clients, reqs, max_tokens, stream_every > 0 ? "mixed streaming" : "not streamed",
               atomic_load(&c.ok), atomic_load(&c.retried), atomic_load(&c.errors), atomic_load(&c.first_errors),
               reqs / dt, p50, p99, reqs ? lat[reqs - 1] : 0, rss, gpu);
        if (atomic_load(&c.errors)) pass = false;
    }
    free(th);
    free(lat);
    printf("crowd: RSS before %ld KiB, after round 1 %ld KiB, after round %d %ld KiB (%+.1f %% from round 1)\n", rss0,
           rss_first, rounds, rss_last, 100.0 * (double)(rss_last - rss_first) / (double)(rss_first ? rss_first : 1));
    if (rss_first > 0 && rss_last > rss_first * 1.25) pass = false;
    if (gpu_first >= 0) {
        /* the engine plans its device memory once: any growth after the first round is a leak */
        printf("crowd: GPU memory after round 1 %ld MiB, after round %d %ld MiB\n", gpu_first, rounds, gpu_last);
        if (gpu_last > gpu_first) pass = false;
    } else {
        printf("crowd: GPU memory: not measured (nvidia-smi does not list the server)\n");
    }
    return pass;
}

/* ---- main --------------------------------------------------------------------------------- */

static const char *opt(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

int main(int argc, char **argv) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *scenario = opt(argc, argv, "--scenario", "all");
    int n_good = atoi(opt(argc, argv, "--good", "100")), n_idle = atoi(opt(argc, argv, "--idle", "161"));
    int n_slow = atoi(opt(argc, argv, "--slow", "200")), clients = atoi(opt(argc, argv, "--clients", "256"));
    int reqs = atoi(opt(argc, argv, "--reqs", "2000")), rounds = atoi(opt(argc, argv, "--rounds", "5"));
    int max_tokens = atoi(opt(argc, argv, "--max-tokens", "1")), stream_every = atoi(opt(argc, argv, "--stream-every", "0"));
    const char *model = opt(argc, argv, "--model", NULL), *device = opt(argc, argv, "--device", NULL);
    if (model) {
        snprintf(g_model, sizeof g_model, "%s", model);
    } else {
        snprintf(g_model, sizeof g_model, "%s/tiny", test_tmpdir());
        dspy_model_config cfg;
        if (dspy_model_config_preset("llama", "tiny", &cfg) != DSPY_OK ||
            dspy_model_write_random(g_model, &cfg, 3, DSPY_DTYPE_BF16, true) != DSPY_OK) {
            fprintf(stderr, "bench_serve_load: %s\n", dspy_errmsg());
            return 2;
        }
    }
    dspy_local_params p = dspy_local_params_default();
    p.dspy_bin = test_bin("dspy");
    p.timeout_s = 120;
    const char *args[] = {"--tokenizer", test_shared("models/llama3-tokenizer"), "--device", device ? device : "cpu"};
    p.extra_args = args;
    p.n_extra_args = device ? 4 : 2;
    dspy_local_server *srv = NULL;
    if (dspy_local_launch(g_model, &p, &srv) != DSPY_OK) {
        fprintf(stderr, "bench_serve_load: %s\n", dspy_errmsg());
        return 2;
    }
    g_port = dspy_local_port(srv);
    printf("server: pid %d, port %d, default settings, RSS %ld KiB\n", (int)dspy_local_pid(srv), g_port,
           rss_kb(dspy_local_pid(srv)));
    bool pass = true, all = strcmp(scenario, "all") == 0;
    if (all || strcmp(scenario, "lockout") == 0) pass &= scenario_lockout(n_idle, n_slow, n_good);
    if (all || strcmp(scenario, "long") == 0) pass &= scenario_long();
    if (all || strcmp(scenario, "big") == 0) pass &= scenario_big(dspy_local_pid(srv));
    if (all || strcmp(scenario, "crowd") == 0) pass &= scenario_crowd(dspy_local_pid(srv), clients, reqs, rounds, max_tokens, stream_every);
    dspy_local_free(srv);
    printf("bench_serve_load: %s\n", pass ? "all acceptance thresholds met" : "a threshold was MISSED");
    check_summary("bench_serve_load");
    curl_global_cleanup();
    return pass ? 0 : 1;
}
