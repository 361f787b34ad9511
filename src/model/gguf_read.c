/* gguf_read.c — mapping and validating a GGUF file; metadata and tensor lookups.
 *
 * Follows the GGUF layout that ggml's gguf.cpp reads (versions 2 and 3; version 1 used 32-bit
 * counts and is refused): every count and length is checked against the bytes left in the file
 * before it is used, so a truncated or hostile header gives an error, never a read past the
 * mapping. Tensor sizes use ggml's block sizes (gguf-py's GGML_QUANT_SIZES); ne[0] must be a
 * multiple of the block. Does not interpret the model: see gguf_import.c.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dspy/str.h"
#include "model/gguf_internal.h"

typedef struct gguf_kv {
    char *key;
    dspy_gguf_vtype type;
    dspy_gguf_vtype elem;     /* arrays: element type */
    uint64_t n;               /* arrays: element count */
    const unsigned char *val; /* the value's bytes in the mapping (arrays: the first element) */
    char *str;                /* STRING: NUL-terminated copy */
    dspy_strv *strs;          /* array of STRING: one view per element */
} gguf_kv;

struct dspy_gguf {
    char *path;
    void *map;
    size_t map_len;
    uint32_t version;
    size_t alignment;
    gguf_kv *kv;
    size_t n_kv;
    dspy_gguf_tensor *tensors;
    size_t n_tensors;
    char *bos_text;
};

/* ---- ggml types ------------------------------------------------------------------------- */

static const struct {
    uint32_t id;
    const char *name;
    uint32_t block, bytes;
} k_types[] = {
    {0, "F32", 1, 4},       {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},     {8, "Q8_0", 32, 34},    {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},  {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292},  {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50}, {20, "IQ4_NL", 32, 18}, {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82}, {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
    {26, "I32", 1, 4},      {27, "I64", 1, 8},       {28, "F64", 1, 8},      {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},     {34, "TQ1_0", 256, 54},  {35, "TQ2_0", 256, 66}, {39, "MXFP4", 32, 17},
};

bool dspy_gguf_type_block(uint32_t type, uint32_t *block, uint32_t *bytes) {
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].id == type) {
            *block = k_types[i].block;
            *bytes = k_types[i].bytes;
            return true;
        }
    return false;
}

const char *dspy_gguf_type_name(uint32_t type) {
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].id == type) return k_types[i].name;
    return "?";
}

static size_t vtype_size(dspy_gguf_vtype t) {
    switch (t) {
    case DSPY_GGUF_U8: case DSPY_GGUF_I8: case DSPY_GGUF_BOOL: return 1;
    case DSPY_GGUF_U16: case DSPY_GGUF_I16: return 2;
    case DSPY_GGUF_U32: case DSPY_GGUF_I32: case DSPY_GGUF_F32: return 4;
    case DSPY_GGUF_U64: case DSPY_GGUF_I64: case DSPY_GGUF_F64: return 8;
    default: return 0;
    }
}

const char *dspy_gguf_vtype_name(uint32_t t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return t < 13 ? names[t] : "?";
}

/* ---- a bounds-checked cursor ------------------------------------------------------------ */

typedef struct {
    const unsigned char *p, *end;
    const char *path;
} cursor;

static bool take(cursor *c, size_t n, const unsigned char **out) {
    if ((size_t)(c->end - c->p) < n) return false;
    *out = c->p;
    c->p += n;
    return true;
}

static bool rd_u32(cursor *c, uint32_t *v) {
    const unsigned char *b;
    if (!take(c, 4, &b)) return false;
    memcpy(v, b, 4);
    return true;
}

static bool rd_u64(cursor *c, uint64_t *v) {
    const unsigned char *b;
    if (!take(c, 8, &b)) return false;
    memcpy(v, b, 8);
    return true;
}

static bool rd_str(cursor *c, dspy_strv *s) {
    uint64_t n;
    const unsigned char *b;
    if (!rd_u64(c, &n) || n > (uint64_t)(c->end - c->p) || !take(c, (size_t)n, &b)) return false;
    s->ptr = (const char *)b;
    s->len = (size_t)n;
    return true;
}

static dspy_status truncated(const cursor *c, const char *what) {
    return dspy_fail(DSPY_ERR_FORMAT, "%s: truncated GGUF header while reading %s (the file is cut short or not GGUF)",
                     c->path, what);
}

/* ---- opening ---------------------------------------------------------------------------- */

void dspy_gguf_free(dspy_gguf *g) {
    if (!g) return;
    for (size_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str);
        free(g->kv[i].strs);
    }
    free(g->kv);
    for (size_t i = 0; g->tensors && i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->tensors);
    free(g->bos_text);
    if (g->map) munmap(g->map, g->map_len);
    free(g->path);
    free(g);
}

static dspy_status read_kv(cursor *c, gguf_kv *kv) {
    dspy_strv key;
    uint32_t type;
    if (!rd_str(c, &key)) return truncated(c, "a metadata key");
    kv->key = strndup(key.ptr, key.len);
    if (!kv->key) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", c->path);
    if (!rd_u32(c, &type)) return truncated(c, kv->key);
    if (type > DSPY_GGUF_F64)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: metadata \"%s\" has unknown value type %u", c->path, kv->key, type);
    kv->type = (dspy_gguf_vtype)type;
    if (type == DSPY_GGUF_STRING) {
        dspy_strv s;
        if (!rd_str(c, &s)) return truncated(c, kv->key);
        kv->val = (const unsigned char *)s.ptr;
        kv->n = s.len;
        kv->str = strndup(s.ptr, s.len);
        if (!kv->str) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", c->path);
        return DSPY_OK;
    }
    if (type != DSPY_GGUF_ARRAY) {
        if (!take(c, vtype_size(kv->type), &kv->val)) return truncated(c, kv->key);
        return DSPY_OK;
    }
    uint32_t elem;
    uint64_t n;
    if (!rd_u32(c, &elem) || !rd_u64(c, &n)) return truncated(c, kv->key);
    if (elem > DSPY_GGUF_F64 || elem == DSPY_GGUF_ARRAY)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: metadata \"%s\" is an array of %s, which GGUF readers do not accept",
                         c->path, kv->key, elem == DSPY_GGUF_ARRAY ? "arrays" : "an unknown type");
    kv->elem = (dspy_gguf_vtype)elem;
    kv->n = n;
    kv->val = c->p;
    if (elem == DSPY_GGUF_STRING) {
        /* each element takes at least its 8-byte length: bound n before allocating */
        if (n > (uint64_t)(c->end - c->p) / 8) return truncated(c, kv->key);
        kv->strs = malloc((size_t)(n ? n : 1) * sizeof *kv->strs);
        if (!kv->strs) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory for \"%s\"", c->path, kv->key);
        for (uint64_t i = 0; i < n; i++)
            if (!rd_str(c, &kv->strs[i])) return truncated(c, kv->key);
        return DSPY_OK;
    }
    size_t es = vtype_size(kv->elem);
    const unsigned char *b;
    if (n > (uint64_t)(c->end - c->p) / es || !take(c, (size_t)n * es, &b)) return truncated(c, kv->key);
    return DSPY_OK;
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp(((const gguf_kv *)a)->key, ((const gguf_kv *)b)->key);
}

static dspy_status read_tensor(cursor *c, dspy_gguf_tensor *t) {
    dspy_strv name;
    uint32_t nd, type;
    if (!rd_str(c, &name)) return truncated(c, "a tensor name");
    t->name = strndup(name.ptr, name.len);
    if (!t->name) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", c->path);
    if (!rd_u32(c, &nd)) return truncated(c, t->name);
    if (nd < 1 || nd > 4)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" has %u dimensions (GGUF allows 1 to 4)", c->path, t->name, nd);
    t->ndim = (int32_t)nd;
    uint64_t numel = 1;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v;
        if (!rd_u64(c, &v)) return truncated(c, t->name);
        if (v > (uint64_t)INT64_MAX || __builtin_mul_overflow(numel, v, &numel))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": dimension %u is too large", c->path, t->name, d);
        t->ne[d] = (int64_t)v;
    }
    if (!rd_u32(c, &type) || !rd_u64(c, &t->offset)) return truncated(c, t->name);
    t->type = type;
    uint32_t block, bytes;
    if (!dspy_gguf_type_block(type, &block, &bytes))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" has unknown ggml type %u", c->path, t->name, type);
    if (t->ne[0] % block != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" of type %s has rows of %lld values, not a multiple of its "
                         "block size %u", c->path, t->name, dspy_gguf_type_name(type), (long long)t->ne[0], block);
    uint64_t nb;
    if (__builtin_mul_overflow(numel / block, (uint64_t)bytes, &nb))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is too large", c->path, t->name);
    t->nbytes = (size_t)nb;
    return DSPY_OK;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const dspy_gguf_tensor *)a)->name, ((const dspy_gguf_tensor *)b)->name);
}

static dspy_status parse(dspy_gguf *g) {
    cursor c = {g->map, (const unsigned char *)g->map + g->map_len, g->path};
    const unsigned char *magic;
    if (!take(&c, 4, &magic) || memcmp(magic, GGUF_MAGIC, 4) != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: not a GGUF file (it does not start with \"GGUF\")", g->path);
    if (!rd_u32(&c, &g->version)) return truncated(&c, "the version");
    if (g->version == 1 || g->version > 3)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: GGUF version %u is not supported (versions 2 and 3 are)", g->path,
                         g->version);
    uint64_t n_tensors, n_kv;
    if (!rd_u64(&c, &n_tensors) || !rd_u64(&c, &n_kv)) return truncated(&c, "the counts");
    /* a key/value takes at least 8+4+1 bytes, a tensor info at least 8+4+8+4+8: bound the counts */
    if (n_kv > g->map_len / 13 || n_tensors > g->map_len / 32)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: header claims %llu keys and %llu tensors, more than the file can hold",
                         g->path, (unsigned long long)n_kv, (unsigned long long)n_tensors);
    g->kv = calloc((size_t)n_kv + 1, sizeof *g->kv);
    g->tensors = calloc((size_t)n_tensors + 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", g->path);
    dspy_status st;
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv++;
        if ((st = read_kv(&c, &g->kv[i]))) return st;
    }
    qsort(g->kv, g->n_kv, sizeof *g->kv, cmp_kv);
    for (size_t i = 1; i < g->n_kv; i++)
        if (strcmp(g->kv[i - 1].key, g->kv[i].key) == 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: metadata key \"%s\" appears twice", g->path, g->kv[i].key);
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = dspy_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        int64_t a;
        if (!dspy_gguf_get_int(g, "general.alignment", &a) || a <= 0 || a > (1 << 24) || (a & (a - 1)) != 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: general.alignment must be a power of two", g->path);
        g->alignment = (size_t)a;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors++;
        if ((st = read_tensor(&c, &g->tensors[i]))) return st;
    }
    size_t hdr = (size_t)(c.p - (const unsigned char *)g->map);
    size_t data_off = (hdr + g->alignment - 1) / g->alignment * g->alignment;
    for (size_t i = 0; i < g->n_tensors; i++) {
        dspy_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" starts at offset %llu, not a multiple of the "
                             "alignment %zu", g->path, t->name, (unsigned long long)t->offset, g->alignment);
        if (data_off > g->map_len || t->offset > g->map_len - data_off || t->nbytes > g->map_len - data_off - t->offset)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" (%zu bytes at offset %llu) runs past the end of the "
                             "file (%zu bytes); the file is truncated", g->path, t->name, t->nbytes,
                             (unsigned long long)t->offset, g->map_len);
        t->data = (const unsigned char *)g->map + data_off + t->offset;
    }
    qsort(g->tensors, g->n_tensors, sizeof *g->tensors, cmp_tensor);
    for (size_t i = 1; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i - 1].name, g->tensors[i].name) == 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" appears twice", g->path, g->tensors[i].name);
    int64_t bos;
    dspy_gguf_vtype et;
    size_t ntok;
    if (dspy_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &bos) &&
        dspy_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &ntok) && et == DSPY_GGUF_STRING && bos >= 0 &&
        (uint64_t)bos < ntok) {
        size_t len;
        const char *s = dspy_gguf_arr_str(g, "tokenizer.ggml.tokens", (size_t)bos, &len);
        g->bos_text = strndup(s, len);
        if (!g->bos_text) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", g->path);
    }
    return DSPY_OK;
}

dspy_status dspy_gguf_open(const char *path, dspy_gguf **out) {
    *out = NULL;
    dspy_status st;
    dspy_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = dspy_fail(errno == ENOENT ? DSPY_ERR_NOTFOUND : DSPY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = dspy_fail(DSPY_ERR_IO, "%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    if (sb.st_size < 24) {
        close(fd);
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: %lld bytes, too short for a GGUF file", path, (long long)sb.st_size);
        goto fail;
    }
    g->map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (g->map == MAP_FAILED) {
        g->map = NULL;
        st = dspy_fail(DSPY_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
        goto fail;
    }
    g->map_len = (size_t)sb.st_size;
    if ((st = parse(g))) goto fail;
    *out = g;
    return DSPY_OK;
fail:
    dspy_gguf_free(g);
    return st;
}

const char *dspy_gguf_path(const dspy_gguf *g) { return g->path; }
uint32_t dspy_gguf_version(const dspy_gguf *g) { return g->version; }
size_t dspy_gguf_alignment(const dspy_gguf *g) { return g->alignment; }
size_t dspy_gguf_kv_count(const dspy_gguf *g) { return g->n_kv; }
const char *dspy_gguf_kv_key(const dspy_gguf *g, size_t i) { return i < g->n_kv ? g->kv[i].key : NULL; }
dspy_gguf_vtype dspy_gguf_kv_type(const dspy_gguf *g, size_t i) { return g->kv[i].type; }
const char *dspy_gguf_bos_text(const dspy_gguf *g) { return g->bos_text; }

int64_t dspy_gguf_find_key(const dspy_gguf *g, const char *key) {
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(g->kv[mid].key, key);
        if (c == 0) return (int64_t)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static const gguf_kv *kv_get(const dspy_gguf *g, const char *key) {
    int64_t i = dspy_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

/* An integer of type t at p (little-endian, as the host). */
static bool int_at(dspy_gguf_vtype t, const unsigned char *p, int64_t *out) {
    switch (t) {
    case DSPY_GGUF_U8: case DSPY_GGUF_BOOL: *out = p[0]; return true;
    case DSPY_GGUF_I8: *out = (int8_t)p[0]; return true;
    case DSPY_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case DSPY_GGUF_I16: { int16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case DSPY_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case DSPY_GGUF_I32: { int32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case DSPY_GGUF_U64: { uint64_t v; memcpy(&v, p, 8); if (v > (uint64_t)INT64_MAX) return false; *out = (int64_t)v; return true; }
    case DSPY_GGUF_I64: { int64_t v; memcpy(&v, p, 8); *out = v; return true; }
    default: return false;
    }
}

bool dspy_gguf_get_int(const dspy_gguf *g, const char *key, int64_t *out) {
    const gguf_kv *kv = kv_get(g, key);
    return kv && int_at(kv->type, kv->val, out);
}

bool dspy_gguf_get_float(const dspy_gguf *g, const char *key, double *out) {
    const gguf_kv *kv = kv_get(g, key);
    if (!kv) return false;
    if (kv->type == DSPY_GGUF_F32) {
        float f;
        memcpy(&f, kv->val, 4);
        *out = f;
        return true;
    }
    if (kv->type == DSPY_GGUF_F64) {
        memcpy(out, kv->val, 8);
        return true;
    }
    return false;
}

bool dspy_gguf_get_bool(const dspy_gguf *g, const char *key, bool *out) {
    const gguf_kv *kv = kv_get(g, key);
    if (!kv || kv->type != DSPY_GGUF_BOOL) return false;
    *out = kv->val[0] != 0;
    return true;
}

const char *dspy_gguf_get_str(const dspy_gguf *g, const char *key) {
    const gguf_kv *kv = kv_get(g, key);
    return kv && kv->type == DSPY_GGUF_STRING ? kv->str : NULL;
}

bool dspy_gguf_get_arr(const dspy_gguf *g, const char *key, dspy_gguf_vtype *elem, size_t *n) {
    const gguf_kv *kv = kv_get(g, key);
    if (!kv || kv->type != DSPY_GGUF_ARRAY) return false;
    *elem = kv->elem;
    *n = (size_t)kv->n;
    return true;
}

const char *dspy_gguf_arr_str(const dspy_gguf *g, const char *key, size_t i, size_t *len) {
    const gguf_kv *kv = kv_get(g, key);
    if (!kv || kv->type != DSPY_GGUF_ARRAY || kv->elem != DSPY_GGUF_STRING || i >= kv->n) {
        *len = 0;
        return NULL;
    }
    *len = kv->strs[i].len;
    return kv->strs[i].ptr;
}

int64_t dspy_gguf_arr_int(const dspy_gguf *g, const char *key, size_t i) {
    const gguf_kv *kv = kv_get(g, key);
    int64_t v = 0;
    if (kv && kv->type == DSPY_GGUF_ARRAY && i < kv->n && vtype_size(kv->elem))
        int_at(kv->elem, kv->val + i * vtype_size(kv->elem), &v);
    return v;
}

size_t dspy_gguf_tensor_count(const dspy_gguf *g) { return g->n_tensors; }

const dspy_gguf_tensor *dspy_gguf_tensor_at(const dspy_gguf *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const dspy_gguf_tensor *dspy_gguf_tensor_find(const dspy_gguf *g, const char *name) {
    dspy_gguf_tensor key = {.name = name};
    return bsearch(&key, g->tensors, g->n_tensors, sizeof *g->tensors, cmp_tensor);
}

bool dspy_gguf_is_path(const char *path) {
    size_t n = path ? strlen(path) : 0;
    if (n < 5) return false;
    const char *s = path + n - 5;
    return s[0] == '.' && tolower((unsigned char)s[1]) == 'g' && tolower((unsigned char)s[2]) == 'g' &&
           tolower((unsigned char)s[3]) == 'u' && tolower((unsigned char)s[4]) == 'f';
}
