/* str.c — string builder, views, whole-file I/O and UTF-8 helpers. */
#include "dspy/str.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void dspy_str_free(dspy_str *s) {
    free(s->ptr);
    s->ptr = NULL;
    s->len = s->cap = 0;
    s->failed = false;
}

void dspy_str_clear(dspy_str *s) {
    s->len = 0;
    if (s->ptr) s->ptr[0] = '\0';
}

bool dspy_str_reserve(dspy_str *s, size_t extra) {
    if (s->failed) return false;
    size_t need = s->len + extra + 1;
    if (need <= s->cap) return true;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < need) cap *= 2;
    char *p = realloc(s->ptr, cap);
    if (!p) {
        s->failed = true;
        dspy_fail(DSPY_ERR_NOMEM, "string builder: out of memory growing to %zu bytes", cap);
        return false;
    }
    s->ptr = p;
    s->cap = cap;
    return true;
}

void dspy_str_appendn(dspy_str *s, const char *p, size_t n) {
    if (!dspy_str_reserve(s, n)) return;
    if (n) memcpy(s->ptr + s->len, p, n);
    s->len += n;
    s->ptr[s->len] = '\0';
}

void dspy_str_append(dspy_str *s, const char *z) { dspy_str_appendn(s, z, strlen(z)); }
void dspy_str_appendv(dspy_str *s, dspy_strv v) { dspy_str_appendn(s, v.ptr, v.len); }
void dspy_str_appendc(dspy_str *s, char c) { dspy_str_appendn(s, &c, 1); }

void dspy_str_appendf(dspy_str *s, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0 && dspy_str_reserve(s, (size_t)n)) {
        vsnprintf(s->ptr + s->len, (size_t)n + 1, fmt, ap2);
        s->len += (size_t)n;
    }
    va_end(ap2);
}

void dspy_str_repeat(dspy_str *s, const char *z, size_t n) {
    size_t zl = strlen(z);
    if (!dspy_str_reserve(s, zl * n)) return;
    for (size_t i = 0; i < n; i++) dspy_str_appendn(s, z, zl);
}

const char *dspy_str_cstr(const dspy_str *s) { return s->ptr ? s->ptr : ""; }
bool dspy_str_ok(const dspy_str *s) { return !s->failed; }

char *dspy_str_take(dspy_str *s) {
    if (s->failed) {
        dspy_str_free(s);
        dspy_fail(DSPY_ERR_NOMEM, "string builder: out of memory");
        return NULL;
    }
    if (!s->ptr && !dspy_str_reserve(s, 0)) return NULL;
    s->ptr[s->len] = '\0';
    char *p = s->ptr;
    s->ptr = NULL;
    s->len = s->cap = 0;
    return p;
}

dspy_strv dspy_strv_of(const char *z) { return (dspy_strv){z, z ? strlen(z) : 0}; }
dspy_strv dspy_strv_make(const char *p, size_t n) { return (dspy_strv){p, n}; }
bool dspy_strv_eq(dspy_strv a, dspy_strv b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}
bool dspy_strv_eqz(dspy_strv a, const char *z) { return dspy_strv_eq(a, dspy_strv_of(z)); }
bool dspy_strv_starts_with(dspy_strv a, const char *prefix) {
    size_t n = strlen(prefix);
    return a.len >= n && memcmp(a.ptr, prefix, n) == 0;
}
bool dspy_strv_ends_with(dspy_strv a, const char *suffix) {
    size_t n = strlen(suffix);
    return a.len >= n && memcmp(a.ptr + a.len - n, suffix, n) == 0;
}

/* Python's str.isspace() set (what str.strip() removes). */
static bool py_space(unsigned cp) {
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f)) return true;
    switch (cp) {
    case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202f: case 0x205f: case 0x3000:
        return true;
    }
    return cp >= 0x2000 && cp <= 0x200a;
}

/* Length of the whitespace code point starting at p, or 0. */
static int space_at(const char *p, size_t n) {
    unsigned cp;
    int l = dspy_utf8_decode(p, n, &cp);
    return (l > 0 && py_space(cp)) ? l : 0;
}

/* Length of the whitespace code point ending at p+n, or 0. */
static int space_before(const char *p, size_t n) {
    size_t start = n;
    int k = 0;
    while (start > 0 && k < 4) {
        start--;
        k++;
        if (((unsigned char)p[start] & 0xC0) != 0x80) break;
    }
    if (k == 0) return 0;
    int l = space_at(p + start, n - start);
    return (l == (int)(n - start)) ? l : 0;
}

dspy_strv dspy_strv_lstrip(dspy_strv a) {
    int l;
    while (a.len && (l = space_at(a.ptr, a.len)) > 0) {
        a.ptr += l;
        a.len -= (size_t)l;
    }
    return a;
}

dspy_strv dspy_strv_rstrip(dspy_strv a) {
    int l;
    while (a.len && (l = space_before(a.ptr, a.len)) > 0) a.len -= (size_t)l;
    return a;
}

dspy_strv dspy_strv_strip(dspy_strv a) { return dspy_strv_rstrip(dspy_strv_lstrip(a)); }

dspy_status dspy_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return dspy_fail(DSPY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (cap - n < 65536) {
            size_t nc = cap ? cap * 2 : 65536 * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory reading file", path);
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return dspy_fail(DSPY_ERR_IO, "%s: read error", path);
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return DSPY_OK;
}

static const char *file_kind(mode_t m) {
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISDIR(m)) return "a directory";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    return "not a regular file";
}

dspy_status dspy_open_regular(const char *path, int *fd, uint64_t *size) {
    *fd = -1;
    if (size) *size = 0;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. */
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0)
        return dspy_fail(errno == ENOENT ? DSPY_ERR_NOTFOUND : DSPY_ERR_IO, "%s: cannot open: %s", path,
                         strerror(errno));
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        dspy_status st = dspy_fail(DSPY_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(f);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return dspy_fail(DSPY_ERR_IO, "%s: is %s, not a regular file; point to the file itself", path,
                         file_kind(sb.st_mode));
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    if (size) *size = (uint64_t)sb.st_size;
    return DSPY_OK;
}

dspy_status dspy_read_regular_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    int fd;
    uint64_t size;
    dspy_status st = dspy_open_regular(path, &fd, &size);
    if (st != DSPY_OK) return st;
    char *buf = NULL;
    if (max_bytes && size > max_bytes) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: is %llu bytes, over the %zu-byte limit for this kind of file", path,
                       (unsigned long long)size, max_bytes);
        goto fail;
    }
    if (size >= SIZE_MAX) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: too large to read (%llu bytes)", path, (unsigned long long)size);
        goto fail;
    }
    buf = malloc((size_t)size + 1);
    if (!buf) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory reading %llu bytes", path, (unsigned long long)size);
        goto fail;
    }
    /* The size seen by fstat bounds the read: a file that grows meanwhile is read up to it. */
    size_t n = 0;
    while (n < (size_t)size) {
        ssize_t r = read(fd, buf + n, (size_t)size - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = dspy_fail(DSPY_ERR_IO, "%s: read error: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return DSPY_OK;
fail:
    free(buf);
    close(fd);
    return st;
}

dspy_status dspy_write_file(const char *path, const void *data, size_t n) {
    dspy_str tmp = DSPY_STR_INIT;
    dspy_str_appendf(&tmp, "%s.tmp.%ld", path, (long)getpid());
    if (!dspy_str_ok(&tmp)) return DSPY_ERR_NOMEM;
    FILE *f = fopen(tmp.ptr, "wb");
    if (!f) {
        dspy_status st = dspy_fail(DSPY_ERR_IO, "%s: cannot create: %s", tmp.ptr, strerror(errno));
        dspy_str_free(&tmp);
        return st;
    }
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    int rc = fclose(f);
    if (w != n || rc != 0) {
        remove(tmp.ptr);
        dspy_str_free(&tmp);
        return dspy_fail(DSPY_ERR_IO, "%s: write failed (disk full?)", path);
    }
    if (rename(tmp.ptr, path) != 0) {
        dspy_status st = dspy_fail(DSPY_ERR_IO, "%s: cannot rename temp file: %s", path, strerror(errno));
        remove(tmp.ptr);
        dspy_str_free(&tmp);
        return st;
    }
    dspy_str_free(&tmp);
    return DSPY_OK;
}

dspy_status dspy_write_text_owned(const char *dir, const char *name, char *text) {
    if (!text) return dspy_fail(DSPY_ERR_NOMEM, "%s/%s: out of memory", dir, name);
    dspy_str path = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/%s", dir, name);
    dspy_status st = dspy_str_ok(&path) ? dspy_write_file(path.ptr, text, strlen(text))
                                        : dspy_fail(DSPY_ERR_NOMEM, "%s/%s: out of memory", dir, name);
    dspy_str_free(&path);
    free(text);
    return st;
}

dspy_status dspy_file_commit(FILE **fpp, char **tmp, const char *path) {
    FILE *fp = *fpp;
    *fpp = NULL;
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        dspy_status st = dspy_fail(DSPY_ERR_IO, "%s: write failed: %s", *tmp, strerror(errno));
        fclose(fp);
        return st;
    }
    if (fclose(fp) != 0) return dspy_fail(DSPY_ERR_IO, "%s: write failed: %s", *tmp, strerror(errno));
    if (rename(*tmp, path) != 0)
        return dspy_fail(DSPY_ERR_IO, "%s: cannot rename the temporary file into place: %s", path, strerror(errno));
    free(*tmp);
    *tmp = NULL;
    return DSPY_OK;
}

dspy_status dspy_mkdir_p(const char *dir) {
    char *p = strdup(dir);
    if (!p) return dspy_fail(DSPY_ERR_NOMEM, "out of memory creating %s", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            dspy_status st = dspy_fail(DSPY_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return st;
        }
        *s = c;
        if (c == '\0') break;
    }
    free(p);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return dspy_fail(DSPY_ERR_IO, "%s: exists and is not a directory", dir);
    return DSPY_OK;
}

int dspy_utf8_decode(const char *p, size_t n, unsigned *cp) {
    const unsigned char *s = (const unsigned char *)p;
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    unsigned min;
    if ((c & 0xE0) == 0xC0) { len = 2; c &= 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; c &= 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; c &= 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

bool dspy_utf8_valid(const char *p, size_t n, size_t *bad_off) {
    size_t i = 0;
    while (i < n) {
        if ((unsigned char)p[i] < 0x80) {
            i++;
            continue;
        }
        unsigned cp;
        int l = dspy_utf8_decode(p + i, n - i, &cp);
        if (l == 0) {
            if (bad_off) *bad_off = i;
            return false;
        }
        i += (size_t)l;
    }
    return true;
}

int dspy_utf8_encode(unsigned cp, char *buf) {
    unsigned char *b = (unsigned char *)buf;
    if (cp < 0x80) { b[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { b[0] = (unsigned char)(0xC0 | (cp >> 6)); b[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (unsigned char)(0xF0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}
