/* test_cache.c — LM cache: keys against DSPy's orjson+sha256 (CC-22 and
 * tests/ref/cache_key_vectors.txt from scripts/make_ref_cache_keys.py), the memory LRU bound,
 * persistence across reopen, durability across kill -9, many threads and processes at once. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dspy/cache.h"
#include "dspy/json.h"

static const char *const k_ignored[] = {"api_key", "api_base", "base_url", NULL};

static dspy_json *parse(const char *s) {
    dspy_json *j = NULL;
    CHECK_OK(dspy_json_parse(s, strlen(s), "test", &j));
    return j;
}

static char *path_in_tmp(const char *name) {
    size_t n = strlen(test_tmpdir()) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", test_tmpdir(), name);
    return p;
}

static dspy_cache *open_cache(const char *dir, size_t mem, bool disk) {
    dspy_cache_params p = dspy_cache_params_default();
    p.dir = dir;
    p.memory_max_entries = mem;
    p.disk = disk;
    dspy_cache *c = NULL;
    CHECK_OK(dspy_cache_open(&p, &c));
    return c;
}

static void test_key_cc22(void) {
    dspy_json *r = parse("{\"model\":\"openai/gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],"
                         "\"temperature\":null,\"max_tokens\":null,"
                         "\"_fn_identifier\":\"dspy.clients.lm.litellm_completion\"}");
    char key[65];
    CHECK_OK(dspy_cache_key(r, k_ignored, key));
    CHECK_STR(key, "440b01c3f6e26f86116db1edc738a5f43f89fe2cdb67b47cb0cd0d945b5b4cb0");
    /* api_key / api_base / base_url do not change the key */
    CHECK_OK(dspy_json_set_str(r, "api_key", "sk-123"));
    CHECK_OK(dspy_json_set_str(r, "api_base", "http://127.0.0.1:1/v1"));
    CHECK_OK(dspy_json_set_str(r, "base_url", "http://127.0.0.1:2/v1"));
    CHECK_OK(dspy_cache_key(r, k_ignored, key));
    CHECK_STR(key, "440b01c3f6e26f86116db1edc738a5f43f89fe2cdb67b47cb0cd0d945b5b4cb0");
    /* without the ignore list they do */
    CHECK_OK(dspy_cache_key(r, NULL, key));
    CHECK(strcmp(key, "440b01c3f6e26f86116db1edc738a5f43f89fe2cdb67b47cb0cd0d945b5b4cb0") != 0);
    dspy_json_decref(r);
    dspy_json *arr = parse("[1]");
    CHECK_STATUS(dspy_cache_key(arr, NULL, key), DSPY_ERR_ARG);
    CHECK_STR(key, "");
    dspy_json_decref(arr);
}

static void test_key_vectors(void) {
    char *text;
    size_t n;
    CHECK_OK(dspy_read_file(test_source("tests/ref/cache_key_vectors.txt"), &text, &n));
    if (!text) return;
    int count = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        char *tab = strchr(line, '\t');
        CHECK(tab != NULL);
        if (!tab) break;
        *tab = '\0';
        dspy_json *req = NULL;
        CHECK_OK(dspy_json_parse(tab + 1, strlen(tab + 1), "cache_key_vectors.txt", &req));
        char key[65];
        CHECK_OK(dspy_cache_key(req, k_ignored, key));
        check_report(strcmp(key, line) == 0, __FILE__, __LINE__, "vector %d: key %s, want %s for %s", count, key, line,
                     tab + 1);
        dspy_json_decref(req);
        count++;
    }
    CHECK_INT(count, 14);
    free(text);
}

static void test_memory_lru(void) {
    dspy_cache *c = open_cache(NULL, 3, false);
    CHECK(dspy_cache_path(c) == NULL);
    char key[8];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "k%d", i);
        dspy_json *v = dspy_json_int(i);
        CHECK_OK(dspy_cache_put(c, key, v));
        dspy_json_decref(v);
        if (i == 2) { /* touch k0 so that k1 is the least recently used */
            dspy_json *g;
            CHECK_OK(dspy_cache_get(c, "k0", &g));
            dspy_json_decref(g);
        }
    }
    CHECK_INT(dspy_cache_memory_count(c), 3);
    const char *want_present[] = {"k0", "k3", "k4"}, *want_gone[] = {"k1", "k2"};
    for (int i = 0; i < 3; i++) {
        dspy_json *g = NULL;
        CHECK_OK(dspy_cache_get(c, want_present[i], &g));
        CHECK(g != NULL);
        dspy_json_decref(g);
    }
    for (int i = 0; i < 2; i++) {
        dspy_json *g = (dspy_json *)1;
        CHECK_OK(dspy_cache_get(c, want_gone[i], &g));
        CHECK(g == NULL);
    }
    /* get returns a copy: mutating it leaves the cache alone */
    dspy_json *obj = parse("{\"usage\":{\"total_tokens\":5}}");
    CHECK_OK(dspy_cache_put(c, "obj", obj));
    CHECK_OK(dspy_json_set(obj, "usage", dspy_json_object())); /* the caller's copy changes ... */
    dspy_json *g = NULL;
    CHECK_OK(dspy_cache_get(c, "obj", &g));
    CHECK_INT(dspy_json_int_or(dspy_json_get(g, "usage"), "total_tokens", -1), 5); /* ... not the stored one */
    CHECK_OK(dspy_json_set(g, "usage", dspy_json_object()));
    dspy_json_decref(g);
    CHECK_OK(dspy_cache_get(c, "obj", &g));
    CHECK_INT(dspy_json_int_or(dspy_json_get(g, "usage"), "total_tokens", -1), 5);
    dspy_json_decref(g);
    dspy_json_decref(obj);
    dspy_cache_stats s;
    dspy_cache_get_stats(c, &s);
    CHECK_INT(s.misses, 2);
    CHECK_INT(s.puts, 6);
    dspy_cache_clear_memory(c);
    CHECK_INT(dspy_cache_memory_count(c), 0);
    dspy_cache_free(c);
}

static void test_reopen(void) {
    char *dir = path_in_tmp("reopen/nested");
    dspy_cache *c = open_cache(dir, 100, true);
    char *want = path_in_tmp("reopen/nested/lm_cache.sqlite");
    CHECK_STR(dspy_cache_path(c), want);
    dspy_json *v = parse("{\"choices\":[{\"message\":{\"content\":\"caf\\u00e9 \\ud83d\\ude00\"}}],\"usage\":{}}");
    CHECK_OK(dspy_cache_put(c, "abc", v));
    dspy_cache_free(c);

    c = open_cache(dir, 100, true);
    CHECK_INT(dspy_cache_memory_count(c), 0);
    dspy_json *g = NULL;
    CHECK_OK(dspy_cache_get(c, "abc", &g));
    CHECK(g && dspy_json_equal(g, v));
    dspy_json_decref(g);
    CHECK_INT(dspy_cache_memory_count(c), 1); /* a disk hit is promoted to memory */
    CHECK_OK(dspy_cache_get(c, "abc", &g));
    dspy_json_decref(g);
    dspy_cache_stats s;
    dspy_cache_get_stats(c, &s);
    CHECK_INT(s.disk_hits, 1);
    CHECK_INT(s.memory_hits, 1);
    /* the file is in WAL mode */
    char *wal = path_in_tmp("reopen/nested/lm_cache.sqlite-wal");
    CHECK(access(wal, F_OK) == 0);
    dspy_cache_free(c);
    dspy_json_decref(v);
    free(wal);
    free(want);
    free(dir);
}

static void test_killed_writer(void) {
    char *dir = path_in_tmp("killed");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dspy_cache_params p = dspy_cache_params_default();
        p.dir = dir;
        dspy_cache *c = NULL;
        if (dspy_cache_open(&p, &c)) _exit(3);
        for (int i = 0; i < 20; i++) {
            char key[32];
            snprintf(key, sizeof key, "paid-%d", i);
            dspy_json *v = dspy_json_int(1000 + i);
            if (dspy_cache_put(c, key, v)) _exit(4);
            dspy_json_decref(v);
        }
        kill(getpid(), SIGKILL); /* no close, no checkpoint, no atexit */
        _exit(5);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    dspy_cache *c = open_cache(dir, 100, true);
    for (int i = 0; i < 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "paid-%d", i);
        dspy_json *g = NULL;
        CHECK_OK(dspy_cache_get(c, key, &g));
        CHECK(g && dspy_json_intval(g) == 1000 + i);
        dspy_json_decref(g);
    }
    dspy_cache_free(c);
    free(dir);
}

typedef struct worker {
    dspy_cache *c;
    int id, ok;
} worker;

static void *thread_main(void *arg) {
    worker *w = arg;
    for (int i = 0; i < 40; i++) {
        char key[32];
        snprintf(key, sizeof key, "t%d-%d", w->id, i);
        dspy_json *v = dspy_json_int(w->id * 1000 + i), *g = NULL;
        if (dspy_cache_put(w->c, key, v) == DSPY_OK && dspy_cache_get(w->c, key, &g) == DSPY_OK && g &&
            dspy_json_intval(g) == w->id * 1000 + i)
            w->ok++;
        dspy_json_decref(v);
        dspy_json_decref(g);
    }
    return NULL;
}

static void test_threads_and_processes(void) {
    char *dir = path_in_tmp("shared");
    dspy_cache *c = open_cache(dir, 0, true); /* disk only: every get goes to SQLite */
    fflush(NULL);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            dspy_cache_params p = dspy_cache_params_default();
            p.dir = dir;
            p.memory_max_entries = 0;
            dspy_cache *cc = NULL;
            if (dspy_cache_open(&p, &cc)) _exit(3);
            for (int i = 0; i < 100; i++) {
                char key[32];
                snprintf(key, sizeof key, "p%d-%d", k, i);
                dspy_json *v = dspy_json_int(i);
                if (dspy_cache_put(cc, key, v)) _exit(4);
                dspy_json_decref(v);
            }
            dspy_cache_free(cc);
            _exit(0);
        }
    }
    pthread_t th[8];
    worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker){c, i, 0};
        pthread_create(&th[i], NULL, thread_main, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(w[i].ok, 40);
    }
    for (int k = 0; k < 2; k++) {
        int status = -1;
        CHECK(waitpid(kids[k], &status, 0) == kids[k]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    int found = 0;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 100; i++) {
            char key[32];
            snprintf(key, sizeof key, "p%d-%d", k, i);
            dspy_json *g = NULL;
            if (dspy_cache_get(c, key, &g) == DSPY_OK && g && dspy_json_intval(g) == i) found++;
            dspy_json_decref(g);
        }
    CHECK_INT(found, 200);
    dspy_cache_free(c);
    free(dir);
}

static void test_bad_dir(void) {
    char *file = path_in_tmp("not-a-dir");
    CHECK_OK(dspy_write_file(file, "x", 1));
    char *dir = path_in_tmp("not-a-dir/cache");
    dspy_cache_params p = dspy_cache_params_default();
    p.dir = dir;
    dspy_cache *c = (dspy_cache *)1;
    CHECK_STATUS(dspy_cache_open(&p, &c), DSPY_ERR_IO);
    CHECK(c == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "not-a-dir");
    CHECK_CONTAINS(dspy_errmsg(), "DSPY_CACHEDIR");
    free(dir);
    free(file);
}

static void test_default_cache(void) {
    char *dir = path_in_tmp("default-cachedir");
    setenv("DSPY_CACHEDIR", dir, 1);
    dspy_cache *c = NULL;
    CHECK_OK(dspy_cache_default(&c));
    char *want = path_in_tmp("default-cachedir/lm_cache.sqlite");
    CHECK_STR(c ? dspy_cache_path(c) : NULL, want);
    dspy_cache *c2 = NULL;
    CHECK_OK(dspy_cache_default(&c2));
    CHECK(c == c2);
    dspy_cache_free(c2);
    /* configure replaces the default; the old one stays valid for its holders */
    dspy_cache_params p = dspy_cache_params_default();
    p.disk = false;
    CHECK_OK(dspy_cache_configure(&p));
    CHECK_OK(dspy_cache_default(&c2));
    CHECK(c2 != c && dspy_cache_path(c2) == NULL);
    CHECK_STR(dspy_cache_path(c), want);
    dspy_cache_free(c2);
    dspy_cache_free(c);
    free(want);
    free(dir);
    unsetenv("DSPY_CACHEDIR");
}

int main(void) {
    RUN(test_key_cc22);
    RUN(test_key_vectors);
    RUN(test_memory_lru);
    RUN(test_reopen);
    RUN(test_killed_writer);
    RUN(test_threads_and_processes);
    RUN(test_bad_dir);
    RUN(test_default_cache);
    return check_summary("test_cache");
}
