/* cache.c — dspy/cache.h: a bounded LRU in memory over an SQLite table on disk.
 *
 * Memory layer: a chained hash table of 64-hex keys plus a doubly linked recency list, under
 * one mutex; values are immutable JSON trees (callers get deep copies).
 * Disk layer: `<dir>/lm_cache.sqlite` with table lm_cache(key TEXT PRIMARY KEY, value TEXT,
 * created_at REAL). WAL journal + synchronous=FULL, so a committed put survives a crash of the
 * process (and of the machine). Connections come from a pool: a thread takes one for the
 * duration of a get/put and gives it back, so no connection is ever used by two threads at once.
 * Follows DSPy 3.3.1 dspy/clients/cache.py for semantics (not its file format).
 */
#include "dspy/cache.h"
#include "dspy/hash.h"

#include <errno.h>
#include <pthread.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define CACHE_FILE "lm_cache.sqlite"

typedef struct mem_node {
    char key[65];
    dspy_json *value;
    struct mem_node *prev, *next; /* recency list: head = most recent */
    struct mem_node *chain;       /* hash bucket chain */
} mem_node;

typedef struct conn {
    sqlite3 *db;
    sqlite3_stmt *get, *put;
    struct conn *next;
} conn;

struct dspy_cache {
    atomic_int refs;
    size_t mem_max;
    int32_t busy_ms;
    char *path; /* NULL: memory only */

    pthread_mutex_t mem_lock;
    mem_node **buckets;
    size_t nbuckets, count;
    mem_node *head, *tail;

    pthread_mutex_t pool_lock;
    conn *pool;

    pthread_mutex_t stats_lock;
    dspy_cache_stats stats;
};

dspy_cache_params dspy_cache_params_default(void) {
    dspy_cache_params p;
    p.dir = NULL;
    p.disk = true;
    p.memory_max_entries = 1000000;
    p.busy_timeout_ms = 10000;
    return p;
}

/* ---- keys ------------------------------------------------------------------------------- */

static bool is_ignored(const char *k, const char *const *ignored) {
    for (; ignored && *ignored; ignored++)
        if (strcmp(k, *ignored) == 0) return true;
    return false;
}

dspy_status dspy_cache_key(const dspy_json *request, const char *const *ignored, char out[65]) {
    out[0] = '\0';
    if (!request || dspy_json_typeof(request) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "cache key: the request must be a JSON object");
    dspy_json *params = dspy_json_object();
    if (!params) return dspy_fail(DSPY_ERR_NOMEM, "cache key: out of memory");
    for (void *it = dspy_json_iter(request); it; it = dspy_json_next(request, it)) {
        const char *k = dspy_json_iter_key(it);
        if (is_ignored(k, ignored)) continue;
        if (dspy_json_set(params, k, dspy_json_incref(dspy_json_iter_value(it)))) {
            dspy_json_decref(params);
            return dspy_fail(DSPY_ERR_NOMEM, "cache key: out of memory");
        }
    }
    dspy_str s = DSPY_STR_INIT;
    dspy_status st = dspy_json_dump(params, DSPY_JSON_COMPACT | DSPY_JSON_SORT_KEYS | DSPY_JSON_UTF8, &s);
    dspy_json_decref(params);
    if (st == DSPY_OK && !dspy_str_ok(&s)) st = dspy_fail(DSPY_ERR_NOMEM, "cache key: out of memory");
    if (st == DSPY_OK) st = dspy_sha256_hex(dspy_str_cstr(&s), s.len, out);
    dspy_str_free(&s);
    return st;
}

/* ---- memory layer ----------------------------------------------------------------------- */

static size_t key_hash(const char *key) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return (size_t)h;
}

static mem_node *mem_find(dspy_cache *c, const char *key) {
    if (!c->nbuckets) return NULL;
    for (mem_node *n = c->buckets[key_hash(key) & (c->nbuckets - 1)]; n; n = n->chain)
        if (strcmp(n->key, key) == 0) return n;
    return NULL;
}

static void list_unlink(dspy_cache *c, mem_node *n) {
    if (n->prev) n->prev->next = n->next; else c->head = n->next;
    if (n->next) n->next->prev = n->prev; else c->tail = n->prev;
    n->prev = n->next = NULL;
}

static void list_push_front(dspy_cache *c, mem_node *n) {
    n->prev = NULL;
    n->next = c->head;
    if (c->head) c->head->prev = n;
    c->head = n;
    if (!c->tail) c->tail = n;
}

static void bucket_remove(dspy_cache *c, mem_node *n) {
    mem_node **pp = &c->buckets[key_hash(n->key) & (c->nbuckets - 1)];
    while (*pp && *pp != n) pp = &(*pp)->chain;
    if (*pp) *pp = n->chain;
}

static bool mem_grow(dspy_cache *c) {
    size_t nb = c->nbuckets ? c->nbuckets * 2 : 64;
    mem_node **b = calloc(nb, sizeof *b);
    if (!b) return false;
    for (mem_node *n = c->head; n; n = n->next) {
        size_t i = key_hash(n->key) & (nb - 1);
        n->chain = b[i];
        b[i] = n;
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = nb;
    return true;
}

/* Stores a reference to `value` (caller passes ownership of one reference). */
static void mem_put(dspy_cache *c, const char *key, dspy_json *value) {
    if (!c->mem_max) {
        dspy_json_decref(value);
        return;
    }
    dspy_json *old = NULL, *evicted = NULL;
    pthread_mutex_lock(&c->mem_lock);
    mem_node *n = mem_find(c, key);
    if (n) {
        old = n->value;
        n->value = value;
        list_unlink(c, n);
        list_push_front(c, n);
    } else if ((c->count + 1 <= c->nbuckets || mem_grow(c)) && (n = calloc(1, sizeof *n))) {
        snprintf(n->key, sizeof n->key, "%s", key);
        n->value = value;
        size_t i = key_hash(key) & (c->nbuckets - 1);
        n->chain = c->buckets[i];
        c->buckets[i] = n;
        list_push_front(c, n);
        c->count++;
        if (c->count > c->mem_max) {
            mem_node *t = c->tail;
            list_unlink(c, t);
            bucket_remove(c, t);
            c->count--;
            evicted = t->value;
            free(t);
        }
    } else {
        old = value; /* out of memory: the memory layer simply does not keep it */
    }
    pthread_mutex_unlock(&c->mem_lock);
    dspy_json_decref(old);
    dspy_json_decref(evicted);
}

static dspy_json *mem_get(dspy_cache *c, const char *key) {
    if (!c->mem_max) return NULL;
    dspy_json *v = NULL;
    pthread_mutex_lock(&c->mem_lock);
    mem_node *n = mem_find(c, key);
    if (n) {
        list_unlink(c, n);
        list_push_front(c, n);
        v = dspy_json_incref(n->value);
    }
    pthread_mutex_unlock(&c->mem_lock);
    return v;
}

size_t dspy_cache_memory_count(dspy_cache *c) {
    pthread_mutex_lock(&c->mem_lock);
    size_t n = c->count;
    pthread_mutex_unlock(&c->mem_lock);
    return n;
}

void dspy_cache_clear_memory(dspy_cache *c) {
    pthread_mutex_lock(&c->mem_lock);
    mem_node *n = c->head;
    c->head = c->tail = NULL;
    c->count = 0;
    if (c->buckets) memset(c->buckets, 0, c->nbuckets * sizeof *c->buckets);
    pthread_mutex_unlock(&c->mem_lock);
    while (n) {
        mem_node *next = n->next;
        dspy_json_decref(n->value);
        free(n);
        n = next;
    }
}

/* ---- disk layer ------------------------------------------------------------------------- */

static void conn_close(conn *k) {
    if (!k) return;
    sqlite3_finalize(k->get);
    sqlite3_finalize(k->put);
    sqlite3_close(k->db);
    free(k);
}

static dspy_status sql_fail(sqlite3 *db, const char *path, const char *what) {
    return dspy_fail(DSPY_ERR_IO, "%s: %s: %s (check that the directory is writable, or set "
                     "DSPY_CACHEDIR, or turn the LM cache off)", path, what,
                     db ? sqlite3_errmsg(db) : "cannot allocate a connection");
}

static dspy_status conn_open(dspy_cache *c, conn **out) {
    *out = NULL;
    conn *k = calloc(1, sizeof *k);
    if (!k) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", c->path);
    dspy_status st;
    int rc = sqlite3_open_v2(c->path, &k->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        st = sql_fail(k->db, c->path, "cannot open the cache database");
        goto fail;
    }
    sqlite3_busy_timeout(k->db, c->busy_ms);
    /* journal_mode=WAL is persistent in the file; asking again is a no-op. */
    static const char *setup[] = {
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "CREATE TABLE IF NOT EXISTS lm_cache(key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL NOT NULL)",
    };
    for (size_t i = 0; i < sizeof setup / sizeof *setup; i++) {
        char *err = NULL;
        rc = sqlite3_exec(k->db, setup[i], NULL, NULL, &err);
        sqlite3_free(err);
        if (rc != SQLITE_OK) {
            st = sql_fail(k->db, c->path, setup[i]);
            goto fail;
        }
    }
    if (sqlite3_prepare_v2(k->db, "SELECT value FROM lm_cache WHERE key = ?1", -1, &k->get, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(k->db, "INSERT OR REPLACE INTO lm_cache(key, value, created_at) VALUES (?1, ?2, ?3)", -1,
                           &k->put, NULL) != SQLITE_OK) {
        st = sql_fail(k->db, c->path, "cannot prepare the cache statements");
        goto fail;
    }
    *out = k;
    return DSPY_OK;
fail:
    conn_close(k);
    return st;
}

static dspy_status conn_acquire(dspy_cache *c, conn **out) {
    pthread_mutex_lock(&c->pool_lock);
    conn *k = c->pool;
    if (k) c->pool = k->next;
    pthread_mutex_unlock(&c->pool_lock);
    if (k) {
        k->next = NULL;
        *out = k;
        return DSPY_OK;
    }
    return conn_open(c, out);
}

static void conn_release(dspy_cache *c, conn *k) {
    pthread_mutex_lock(&c->pool_lock);
    k->next = c->pool;
    c->pool = k;
    pthread_mutex_unlock(&c->pool_lock);
}

static void count_stat(dspy_cache *c, uint64_t *field) {
    pthread_mutex_lock(&c->stats_lock);
    (*field)++;
    pthread_mutex_unlock(&c->stats_lock);
}

static dspy_status disk_get(dspy_cache *c, const char *key, dspy_json **out) {
    *out = NULL;
    conn *k;
    dspy_status st = conn_acquire(c, &k);
    if (st) return st;
    sqlite3_bind_text(k->get, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(k->get);
    if (rc == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(k->get, 0);
        size_t n = (size_t)sqlite3_column_bytes(k->get, 0);
        st = dspy_json_parse(text ? text : "", n, c->path, out);
        if (st) st = dspy_fail_wrap(DSPY_ERR_IO, "%s: entry %s is corrupt", c->path, key);
    } else if (rc != SQLITE_DONE) {
        st = sql_fail(k->db, c->path, "cannot read from the cache");
    }
    sqlite3_reset(k->get);
    sqlite3_clear_bindings(k->get);
    conn_release(c, k);
    return st;
}

static dspy_status disk_put(dspy_cache *c, const char *key, const char *text, size_t n) {
    conn *k;
    dspy_status st = conn_acquire(c, &k);
    if (st) return st;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    sqlite3_bind_text(k->put, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(k->put, 2, text, (int)n, SQLITE_TRANSIENT);
    sqlite3_bind_double(k->put, 3, (double)tv.tv_sec + tv.tv_usec / 1e6);
    /* Autocommit: when step returns DONE the row is committed to the WAL and synced. */
    if (sqlite3_step(k->put) != SQLITE_DONE) st = sql_fail(k->db, c->path, "cannot write to the cache");
    sqlite3_reset(k->put);
    sqlite3_clear_bindings(k->put);
    conn_release(c, k);
    return st;
}

/* ---- public ----------------------------------------------------------------------------- */


static char *default_dir(void) {
    const char *env = getenv("DSPY_CACHEDIR");
    if (env && *env) return strdup(env);
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : "/tmp";
    }
    size_t n = strlen(home) + sizeof "/.dspy_cache";
    char *d = malloc(n);
    if (d) snprintf(d, n, "%s/.dspy_cache", home);
    return d;
}

dspy_status dspy_cache_open(const dspy_cache_params *p, dspy_cache **out) {
    *out = NULL;
    dspy_cache_params def = dspy_cache_params_default();
    if (!p) p = &def;
    dspy_cache *c = calloc(1, sizeof *c);
    if (!c) return dspy_fail(DSPY_ERR_NOMEM, "cache: out of memory");
    atomic_init(&c->refs, 1);
    c->mem_max = p->memory_max_entries;
    c->busy_ms = p->busy_timeout_ms > 0 ? p->busy_timeout_ms : 10000;
    pthread_mutex_init(&c->mem_lock, NULL);
    pthread_mutex_init(&c->pool_lock, NULL);
    pthread_mutex_init(&c->stats_lock, NULL);
    dspy_status st = DSPY_OK;
    if (p->disk) {
        char *dir = p->dir && *p->dir ? strdup(p->dir) : default_dir();
        if (!dir) {
            st = dspy_fail(DSPY_ERR_NOMEM, "cache: out of memory");
            goto fail;
        }
        st = dspy_mkdir_p(dir);
        if (st) dspy_fail_append(st, " (set DSPY_CACHEDIR to a writable directory)");
        if (st == DSPY_OK) {
            size_t n = strlen(dir) + sizeof "/" CACHE_FILE;
            c->path = malloc(n);
            if (c->path) snprintf(c->path, n, "%s/" CACHE_FILE, dir);
            else st = dspy_fail(DSPY_ERR_NOMEM, "cache: out of memory");
        }
        free(dir);
        if (st) goto fail;
        conn *k; /* open one connection now so a bad path fails here, not at the first call */
        st = conn_open(c, &k);
        if (st) goto fail;
        conn_release(c, k);
    }
    *out = c;
    return DSPY_OK;
fail:
    dspy_cache_free(c);
    return st;
}

dspy_cache *dspy_cache_retain(dspy_cache *c) {
    if (c) atomic_fetch_add(&c->refs, 1);
    return c;
}

void dspy_cache_free(dspy_cache *c) {
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    dspy_cache_clear_memory(c);
    free(c->buckets);
    while (c->pool) {
        conn *k = c->pool;
        c->pool = k->next;
        conn_close(k);
    }
    pthread_mutex_destroy(&c->mem_lock);
    pthread_mutex_destroy(&c->pool_lock);
    pthread_mutex_destroy(&c->stats_lock);
    free(c->path);
    free(c);
}

const char *dspy_cache_path(const dspy_cache *c) { return c->path; }

dspy_status dspy_cache_get(dspy_cache *c, const char *key, dspy_json **out) {
    *out = NULL;
    dspy_json *v = mem_get(c, key);
    if (v) {
        count_stat(c, &c->stats.memory_hits);
    } else if (c->path) {
        dspy_status st = disk_get(c, key, &v);
        if (st) {
            count_stat(c, &c->stats.disk_errors);
            return st;
        }
        if (v) {
            count_stat(c, &c->stats.disk_hits);
            mem_put(c, key, dspy_json_incref(v));
        }
    }
    if (!v) {
        count_stat(c, &c->stats.misses);
        return DSPY_OK;
    }
    *out = dspy_json_copy(v);
    dspy_json_decref(v);
    if (!*out) return dspy_fail(DSPY_ERR_NOMEM, "cache: out of memory");
    return DSPY_OK;
}

dspy_status dspy_cache_put(dspy_cache *c, const char *key, const dspy_json *value) {
    dspy_json *v = dspy_json_copy(value);
    if (!v) return dspy_fail(DSPY_ERR_NOMEM, "cache: out of memory");
    dspy_status st = DSPY_OK;
    if (c->path) {
        dspy_str s = DSPY_STR_INIT;
        st = dspy_json_dump(v, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &s);
        if (st == DSPY_OK && !dspy_str_ok(&s)) st = dspy_fail(DSPY_ERR_NOMEM, "cache: out of memory");
        if (st == DSPY_OK) st = disk_put(c, key, dspy_str_cstr(&s), s.len);
        dspy_str_free(&s);
        if (st) count_stat(c, &c->stats.disk_errors);
    }
    mem_put(c, key, v);
    count_stat(c, &c->stats.puts);
    return st;
}

void dspy_cache_get_stats(dspy_cache *c, dspy_cache_stats *out) {
    pthread_mutex_lock(&c->stats_lock);
    *out = c->stats;
    pthread_mutex_unlock(&c->stats_lock);
}

/* ---- the default cache ------------------------------------------------------------------ */

static pthread_mutex_t g_default_lock = PTHREAD_MUTEX_INITIALIZER;
static dspy_cache *g_default;

dspy_status dspy_cache_default(dspy_cache **out) {
    *out = NULL;
    pthread_mutex_lock(&g_default_lock);
    dspy_status st = DSPY_OK;
    if (!g_default) st = dspy_cache_open(NULL, &g_default);
    if (st == DSPY_OK) *out = dspy_cache_retain(g_default);
    pthread_mutex_unlock(&g_default_lock);
    return st;
}

dspy_status dspy_cache_configure(const dspy_cache_params *p) {
    dspy_cache *c;
    dspy_status st = dspy_cache_open(p, &c);
    if (st) return st;
    pthread_mutex_lock(&g_default_lock);
    dspy_cache *old = g_default;
    g_default = c;
    pthread_mutex_unlock(&g_default_lock);
    dspy_cache_free(old);
    return DSPY_OK;
}
