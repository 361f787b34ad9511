/* cmd_serve.c — `dspy serve`: the OpenAI-compatible server for one model directory (see
 * dspy/server.h). Prints "dspy serve: listening on http://HOST:PORT (model NAME; max-seqs N)" on stderr
 * ("; weights fp8" or "; weights w8a8" added with those --weights)
 * once connections are accepted; SIGTERM, SIGINT or SIGHUP shuts it down gracefully (exit 0).
 * The API key comes from --api-key-file or DSPY_API_KEY (--api-key still works, with a warning). */
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "dspy/engine.h"
#include "dspy/server.h"
#include "dspy/str.h"

static dspy_server *volatile g_server;

static void on_signal(int sig) {
    (void)sig;
    dspy_server *s = g_server;
    if (s) dspy_server_stop(s);
}

static pid_t g_parent;

/* Belt and braces for PR_SET_PDEATHSIG: it fires when the thread that started us ends, and
 * only if the parent was alive when it was set. A changed parent pid means we were orphaned. */
static void *watch_parent(void *arg) {
    (void)arg;
    while (getppid() == g_parent) usleep(250 * 1000);
    fprintf(stderr, "dspy serve: parent process %ld is gone; stopping\n", (long)g_parent);
    dspy_server *s = g_server;
    if (s) dspy_server_stop(s);
    return NULL;
}

/* --parent-pid: die with the launcher. SIGKILL, not SIGTERM: nothing to save, and a graceful
 * shutdown would keep serving a dead parent for the grace period. */
static bool tie_to_parent(const dspy_args *a) {
    const char *v = dspy_args_get(a, "parent-pid");
    if (!v) return true;
    char *end;
    long pid = strtol(v, &end, 10);
    if (*end || pid <= 1) {
        fprintf(stderr, "error: dspy serve: --parent-pid must be a process id (got '%s')\n", v);
        return false;
    }
    g_parent = (pid_t)pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != g_parent) { /* it died before the line above */
        fprintf(stderr, "error: dspy serve: parent process %ld is already gone\n", pid);
        return false;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, watch_parent, NULL) == 0) pthread_detach(th);
    return true;
}

static bool get_i32(const dspy_args *a, const char *name, long lo, long hi, int32_t *out) {
    long v;
    if (!dspy_args_int(a, name, &v)) return false;
    if (v < lo || v > hi) {
        fprintf(stderr, "error: dspy serve: --%s must be in %ld..%ld (got %ld)\n", name, lo, hi, v);
        return false;
    }
    *out = (int32_t)v;
    return true;
}

/* The API key: --api-key-file (first line), else DSPY_API_KEY, else --api-key (with a warning:
 * a command line is readable by every local user). *key is malloc'd or NULL (no key). */
static bool read_api_key(const dspy_args *a, char **key) {
    *key = NULL;
    const char *file = dspy_args_get(a, "api-key-file"), *flag = dspy_args_get(a, "api-key");
    const char *env = getenv("DSPY_API_KEY");
    if (file && flag) {
        fprintf(stderr, "error: dspy serve: give --api-key-file or --api-key, not both\n");
        return false;
    }
    if (file) {
        char *text = NULL;
        if (dspy_read_regular_file(file, 64 * 1024, &text, NULL) != DSPY_OK) {
            fprintf(stderr, "error: dspy serve: --api-key-file: %s\n", dspy_errmsg());
            return false;
        }
        text[strcspn(text, "\r\n")] = '\0';
        if (!*text) {
            free(text);
            fprintf(stderr, "error: dspy serve: --api-key-file %s: the first line is empty; put the key there\n", file);
            return false;
        }
        *key = text;
        return true;
    }
    if (env && *env) return (*key = strdup(env)) != NULL;
    if (flag) {
        fprintf(stderr, "dspy serve: warning: --api-key is visible to every local user (ps, /proc); prefer "
                        "--api-key-file or DSPY_API_KEY\n");
        return (*key = strdup(flag)) != NULL;
    }
    return true;
}

int cmd_serve(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"model", "DIR", "model directory (config.json, model.safetensors, tokenizer files)", true, false, NULL},
        {"tokenizer", "DIR", "directory with tokenizer.json / tokenizer_config.json (default: the model directory)", false, false, NULL},
        {"host", "HOST", "address to bind", false, false, "127.0.0.1"},
        {"port", "PORT", "port to listen on; 0 picks a free one", false, false, "8000"},
        {"api-key-file", "PATH", "require 'Authorization: Bearer KEY' on /v1 routes, KEY being the file's first line (or set DSPY_API_KEY)", false, false, NULL},
        {"api-key", "KEY", "as --api-key-file, but visible to every local user in /proc (discouraged)", false, false, NULL},
        {"allowed-hosts", "NAMES", "comma-separated Host names accepted besides IP addresses and localhost ('*': any)", false, false, NULL},
        {"cors-origin", "ORIGIN", "let browser pages from ORIGIN ('*': any) call the API (default: no CORS)", false, false, NULL},
        {"served-model-name", "NAME", "model id in the API (default: the --model path as given)", false, false, NULL},
        {"max-seqs", "N", "sequences decoded together (continuous batching)", false, false, "8"},
        {"max-queue", "N", "requests waiting for the engine before answering 503", false, false, "256"},
        {"kv-tokens", "N", "KV cache tokens over all sequences (0: on a GPU --kv-memory-percent of the free memory, at most --max-seqs whole contexts; on the CPU min(context, 16384)); sequences take blocks as they grow", false, false, "0"},
        {"kv-memory-percent", "P", "with --kv-tokens 0 on a GPU: the share of the memory free after the weights that the KV cache takes (1-95)", false, false, "30"},
        {"max-batch-tokens", "N", "prompt tokens prefilled per step over all sequences (0: 256 on the CPU, 4096 on a GPU)", false, false, "0"},
        {"spec-tokens", "K", "speculative decoding: greedy, unconstrained sequences draft up to K tokens a step by prompt lookup, checked in the same pass (0: off; at most 32)", false, false, "0"},
        {"jump-tokens", "K", "jump-forward: constrained sequences draft up to K tokens a step of the text their output format fixes next (a field header, the rest of a label), checked in the same pass (-1: 8 on the CPU, 0 on a GPU; 0: off; at most 32)", false, false, "-1"},
        {"default-max-tokens", "N", "max_tokens for requests without one (0: the rest of the context)", false, false, "1024"},
        {"max-n", "N", "the largest n (choices) a request may ask", false, false, "16"},
        {"structured-max-tokens", "N", "structured outputs: tokens a free-text field or JSON string may take unless the request says (0: unbounded)", false, false, "256"},
        {"max-request-tokens", "N", "a request's KV budget, n x (prompt + max_tokens) (0: the KV capacity)", false, false, "0"},
        {"max-connections", "N", "HTTP connections open at once (requests on more get 503 + Retry-After)", false, false, "1024"},
        {"max-per-client", "N", "HTTP connections from one IP address (0: no limit)", false, false, "512"},
        {"max-body", "BYTES", "largest request body (413 above it)", false, false, "8388608"},
        {"request-timeout", "SECONDS", "a request must arrive within this from its first line (closed after it)", false, false, "30"},
        {"shutdown-grace", "SECONDS", "on SIGTERM, in-flight requests get this long before they are aborted", false, false, "30"},
        {"chat-date", "DATE", "Llama 3.x chat template 'Today Date' (default: today, e.g. 26 Jul 2024)", false, false, NULL},
        {"threads", "N", "compute threads (0: the OpenMP default)", false, false, "0"},
        {"device", "DEV", "auto (CUDA when a GPU is visible), cpu, cuda or cuda:N", false, false, "auto"},
        {"gpus", "N", "N replicas of the model, one per GPU (GPUs 0..N-1 of CUDA_VISIBLE_DEVICES), behind this one port; each request goes to the least busy", false, false, "1"},
        {"replicas", "N", "as --gpus, on any device (on the CPU the copies share the cores)", false, false, "1"},
        {"weights", "W", "bf16 (the checkpoint's weights) or fp8 (every matrix rounded to FP8 E4M3 with a power-of-two "
         "scale per row; on CUDA batched decode steps read half the bytes; the answers are the rounded model's) or "
         "w8a8 (fp8, and prompt steps multiply FP8-rounded activations too: on CUDA ~1.6x their GEMMs; ~2 % relative "
         "error a projection)",
         false, false, "bf16"},
        {"strict", NULL, "refuse a checkpoint whose weights hold NaN/Inf (default: a warning)", false, false, NULL},
        {"cpu-kernels", "K", "on the CPU: fast (BF16 weights, SIMD) or reference (the fp32 parity kernels); "
         "default $DSPY_CPU_KERNELS, else fast", false, false, "fast"},
        {"parent-pid", "PID", "exit when process PID ends, even by SIGKILL (set by the launcher, e.g. dspy eval)", false, false, NULL},
        {0},
    };
    dspy_args a;
    int rc = dspy_args_parse(&a, "serve", "--model DIR [options]",
                             "Serve a model over an OpenAI-compatible HTTP API (/v1/models, /v1/chat/completions,\n"
                             "/v1/completions, /health) with continuous batching. Stop it with SIGTERM or Ctrl-C.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!tie_to_parent(&a)) return 1;
    dspy_server_params p = dspy_server_params_default();
    p.model_dir = dspy_args_get(&a, "model");
    p.tokenizer_dir = dspy_args_get(&a, "tokenizer");
    p.host = dspy_args_get(&a, "host");
    if (!dspy_args_cpu_kernels(&a, "serve", &p.cpu_kernels)) return 2;
    char *key = NULL;
    if (!read_api_key(&a, &key)) return 2;
    p.api_key = key;
    p.allowed_hosts = dspy_args_get(&a, "allowed-hosts");
    p.cors_origin = dspy_args_get(&a, "cors-origin");
    p.served_model_name = dspy_args_get(&a, "served-model-name");
    p.chat_date = dspy_args_get(&a, "chat-date");
    p.device = dspy_args_get(&a, "device");
    p.strict = dspy_args_flag(&a, "strict");
    p.weights = dspy_args_get(&a, "weights");
    int32_t port, max_body, timeout_s, grace_s, max_req, gpus = 1;
    if (!get_i32(&a, "port", 0, 65535, &port) || !get_i32(&a, "max-seqs", 1, 4096, &p.max_seqs) ||
        !get_i32(&a, "max-n", 1, 128, &p.max_n) || !get_i32(&a, "max-request-tokens", 0, INT32_MAX, &max_req) ||
        !get_i32(&a, "max-per-client", 0, 100000, &p.max_per_client) ||
        !get_i32(&a, "max-queue", 1, 1000000, &p.max_queue) ||
        !get_i32(&a, "max-connections", 1, 100000, &p.max_connections) ||
        !get_i32(&a, "kv-tokens", 0, INT32_MAX, &p.kv_tokens) ||
        !get_i32(&a, "kv-memory-percent", 1, 95, &p.kv_memory_percent) ||
        !get_i32(&a, "max-batch-tokens", 0, 1 << 20, &p.max_batch_tokens) ||
        !get_i32(&a, "spec-tokens", 0, DSPY_ENGINE_MAX_SPEC, &p.spec_tokens) ||
        !get_i32(&a, "jump-tokens", -1, DSPY_ENGINE_MAX_SPEC, &p.jump_tokens) ||
        !get_i32(&a, "structured-max-tokens", 0, 1 << 20, &p.structured_max_tokens) ||
        !get_i32(&a, "default-max-tokens", 0, INT32_MAX, &p.default_max_tokens) ||
        !get_i32(&a, "max-body", 1, INT32_MAX, &max_body) || !get_i32(&a, "request-timeout", 1, 86400, &timeout_s) ||
        !get_i32(&a, "shutdown-grace", 0, 86400, &grace_s) || !get_i32(&a, "threads", 0, 4096, &p.n_threads) ||
        !get_i32(&a, "gpus", 1, 64, &gpus) || !get_i32(&a, "replicas", 1, 64, &p.replicas)) {
        free(key);
        return 2;
    }
    if (gpus > 1) {
        if (p.replicas > 1) {
            fprintf(stderr, "error: dspy serve: --gpus and --replicas say the same thing; give one\n");
            free(key);
            return 2;
        }
        p.replicas = gpus;
        if (!dspy_args_get(&a, "device") || !strcmp(p.device, "auto")) p.device = "cuda";
    }
    p.max_request_tokens = max_req;
    p.port = port;
    p.max_body_bytes = (size_t)max_body;
    p.read_timeout_ms = timeout_s * 1000;
    p.shutdown_grace_ms = grace_s * 1000;

    signal(SIGPIPE, SIG_IGN);
    /* each connection is a descriptor: make room for max_connections of them (the usual soft
     * limit of 1024 would refuse connections at accept, before any 503 could be sent) */
    struct rlimit rl;
    rlim_t want = (rlim_t)p.max_connections + 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    dspy_server *s = NULL;
    dspy_status nst = dspy_server_new(&p, &s);
    if (key) explicit_bzero(key, strlen(key));
    free(key);
    if (nst != DSPY_OK) return dspy_cli_error("serve");
    g_server = s;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    const char *host = p.host ? p.host : "127.0.0.1";
    bool v6 = strchr(host, ':') != NULL;
    const bool f8 = p.weights && (strcmp(p.weights, "fp8") == 0 || strcmp(p.weights, "w8a8") == 0);
    fprintf(stderr, "dspy serve: listening on http://%s%s%s:%d (model %s; max-seqs %d%s%s)\n", v6 ? "[" : "", host,
            v6 ? "]" : "", dspy_server_port(s), dspy_server_model_name(s), p.max_seqs, f8 ? "; weights " : "", f8 ? p.weights : "");
    fflush(stderr);
    dspy_status st = dspy_server_run(s);
    signal(SIGTERM, SIG_IGN); /* a second signal must not turn a clean exit into a kill */
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    g_server = NULL;
    if (st != DSPY_OK) {
        int code = dspy_cli_error("serve");
        dspy_server_free(s);
        return code;
    }
    dspy_server_free(s);
    fprintf(stderr, "dspy serve: stopped\n");
    return 0;
}
