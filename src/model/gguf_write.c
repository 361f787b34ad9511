/* gguf_write.c — writing GGUF v3 files as a stream; Q8_0 blocks; the Llama q/k row permutation.
 *
 * The layout is what ggml's gguf.cpp expects and gguf-py's GGUFWriter produces: header, metadata
 * in the caller's order, tensor infos, padding to the 32-byte alignment, then each tensor's data
 * in declaration order, each padded to the alignment, so tensor i starts where the padded data of
 * tensors 0..i-1 ends (gguf.cpp checks exactly that). The file is written under a temporary name
 * and renamed when complete. Q8_0 matches ggml's quantize_row_q8_0_ref bit for bit (fp32 scale
 * max|x|/127 rounded to fp16 for storage, values rounded half away from zero with the unrounded
 * scale), as gguf-py's quants.py does.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dspy/safetensors.h"
#include "dspy/str.h"
#include "model/gguf_internal.h"

/* ---- Q8_0 and the permutation ----------------------------------------------------------- */

void dspy_gguf_quantize_q8_0(const float *x, size_t n, uint8_t *out) {
    for (size_t b = 0; b < n / GGUF_QK8_0; b++) {
        const float *v = x + b * GGUF_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < GGUF_QK8_0; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t *o = out + b * GGUF_Q8_0_BLOCK_BYTES;
        uint16_t h = dspy_f32_to_f16(d);
        memcpy(o, &h, 2);
        for (int j = 0; j < GGUF_QK8_0; j++) o[2 + j] = (uint8_t)(int8_t)roundf(v[j] * id);
    }
}

void dspy_gguf_dequantize_q8_0(const uint8_t *blocks, size_t n, float *out) {
    for (size_t b = 0; b < n / GGUF_QK8_0; b++) {
        const uint8_t *o = blocks + b * GGUF_Q8_0_BLOCK_BYTES;
        uint16_t h;
        memcpy(&h, o, 2);
        float d = dspy_f16_to_f32(h);
        for (int j = 0; j < GGUF_QK8_0; j++) out[b * GGUF_QK8_0 + j] = (float)(int8_t)o[2 + j] * d;
    }
}

void dspy_gguf_permute_rows(const void *src, void *dst, int64_t rows, size_t row_bytes, int64_t heads,
                            bool to_gguf) {
    /* Per head of HS rows: HF row j*HS/2 + i (j = 0, 1: the two rotate-half halves) is GGUF row
     * 2i + j (the interleaved pair). */
    int64_t hs = rows / heads, half = hs / 2;
    const unsigned char *s = src;
    unsigned char *d = dst;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                int64_t hf = h * hs + j * half + i, gg = h * hs + 2 * i + j;
                int64_t from = to_gguf ? hf : gg, to = to_gguf ? gg : hf;
                memcpy(d + (size_t)to * row_bytes, s + (size_t)from * row_bytes, row_bytes);
            }
}

/* ---- the writer ------------------------------------------------------------------------- */

typedef struct {
    char *name;
    uint32_t type;
    int32_t ndim;
    int64_t ne[4];
    size_t nbytes;
} wtensor;

struct dspy_gguf_writer {
    char *path, *tmp;
    FILE *fp;
    dspy_str kv;       /* serialized metadata */
    uint64_t n_kv;
    char **keys;       /* for the duplicate check */
    wtensor *t;
    size_t n_t, cap_t;
    size_t next;       /* the tensor put() writes next */
    char *error;       /* first misuse seen while declaring (reported by begin) */
};

static size_t pad_to(size_t n, size_t a) { return (n + a - 1) / a * a; }

dspy_status dspy_gguf_writer_new(const char *path, dspy_gguf_writer **out) {
    *out = NULL;
    dspy_gguf_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
    }
    *out = w;
    return DSPY_OK;
}

void dspy_gguf_writer_abort(dspy_gguf_writer *w) {
    if (!w) return;
    if (w->fp) fclose(w->fp);
    if (w->tmp) unlink(w->tmp);
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    dspy_str_free(&w->kv);
    free(w->error);
    free(w->tmp);
    free(w->path);
    free(w);
}

static void misuse(dspy_gguf_writer *w, const char *what, const char *name) {
    if (w->error) return;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "%s \"%s\"", what, name);
    w->error = dspy_str_take(&s);
    if (!w->error) w->error = strdup("out of memory");
}

static void put_bytes(dspy_str *s, const void *p, size_t n) { dspy_str_appendn(s, p, n); }
static void put_u32(dspy_str *s, uint32_t v) { put_bytes(s, &v, 4); }
static void put_u64(dspy_str *s, uint64_t v) { put_bytes(s, &v, 8); }
static void put_str(dspy_str *s, const char *p, size_t n) {
    put_u64(s, n);
    put_bytes(s, p, n);
}

/* Starts a key: its name and value type; false (recorded) for a repeated key. */
static bool key_begin(dspy_gguf_writer *w, const char *key, dspy_gguf_vtype type) {
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0) {
            misuse(w, "metadata key given twice:", key);
            return false;
        }
    char **keys = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *keys);
    char *k = strdup(key);
    if (!keys || !k) {
        free(k);
        if (keys) w->keys = keys;
        misuse(w, "out of memory at key", key);
        return false;
    }
    w->keys = keys;
    w->keys[w->n_kv++] = k;
    put_str(&w->kv, key, strlen(key));
    put_u32(&w->kv, (uint32_t)type);
    return true;
}

void dspy_gguf_kv_str(dspy_gguf_writer *w, const char *key, const char *v) {
    if (key_begin(w, key, DSPY_GGUF_STRING)) put_str(&w->kv, v, strlen(v));
}

void dspy_gguf_kv_u32(dspy_gguf_writer *w, const char *key, uint32_t v) {
    if (key_begin(w, key, DSPY_GGUF_U32)) put_u32(&w->kv, v);
}

void dspy_gguf_kv_i32(dspy_gguf_writer *w, const char *key, int32_t v) {
    if (key_begin(w, key, DSPY_GGUF_I32)) put_bytes(&w->kv, &v, 4);
}

void dspy_gguf_kv_f32(dspy_gguf_writer *w, const char *key, float v) {
    if (key_begin(w, key, DSPY_GGUF_F32)) put_bytes(&w->kv, &v, 4);
}

void dspy_gguf_kv_bool(dspy_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    if (key_begin(w, key, DSPY_GGUF_BOOL)) put_bytes(&w->kv, &b, 1);
}

void dspy_gguf_kv_str_arr(dspy_gguf_writer *w, const char *key, const char *const *v, const size_t *lens, size_t n) {
    if (!key_begin(w, key, DSPY_GGUF_ARRAY)) return;
    put_u32(&w->kv, DSPY_GGUF_STRING);
    put_u64(&w->kv, n);
    for (size_t i = 0; i < n; i++) put_str(&w->kv, v[i], lens[i]);
}

void dspy_gguf_kv_i32_arr(dspy_gguf_writer *w, const char *key, const int32_t *v, size_t n) {
    if (!key_begin(w, key, DSPY_GGUF_ARRAY)) return;
    put_u32(&w->kv, DSPY_GGUF_I32);
    put_u64(&w->kv, n);
    put_bytes(&w->kv, v, n * 4);
}

void dspy_gguf_writer_tensor(dspy_gguf_writer *w, const char *name, uint32_t type, int32_t ndim, const int64_t *ne) {
    uint32_t block, bytes;
    if (ndim < 1 || ndim > 4 || !dspy_gguf_type_block(type, &block, &bytes)) {
        misuse(w, "bad dimensions or type for tensor", name);
        return;
    }
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) {
            misuse(w, "tensor declared twice:", name);
            return;
        }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) {
            misuse(w, "out of memory at tensor", name);
            return;
        }
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) {
        misuse(w, "out of memory at tensor", name);
        return;
    }
    t->type = type;
    t->ndim = ndim;
    uint64_t numel = 1;
    for (int d = 0; d < 4; d++) t->ne[d] = d < ndim ? ne[d] : 1;
    for (int d = 0; d < ndim; d++) numel *= (uint64_t)ne[d];
    if (ne[0] % block != 0) {
        free(t->name);
        misuse(w, "row length is not a multiple of the block size for tensor", name);
        return;
    }
    t->nbytes = (size_t)(numel / block * bytes);
    w->n_t++;
}

static dspy_status write_all(dspy_gguf_writer *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->fp) != n)
        return dspy_fail(DSPY_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    return DSPY_OK;
}

static dspy_status write_pad(dspy_gguf_writer *w, size_t n) {
    static const unsigned char zeros[GGUF_DEFAULT_ALIGNMENT];
    return write_all(w, zeros, n);
}

dspy_status dspy_gguf_writer_begin(dspy_gguf_writer *w) {
    if (w->error) return dspy_fail(DSPY_ERR_ARG, "%s: %s", w->path, w->error);
    dspy_str h = DSPY_STR_INIT;
    put_bytes(&h, GGUF_MAGIC, 4);
    put_u32(&h, 3);
    put_u64(&h, w->n_t);
    put_u64(&h, w->n_kv);
    dspy_str_appendn(&h, w->kv.ptr ? w->kv.ptr : "", w->kv.len);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        put_str(&h, w->t[i].name, strlen(w->t[i].name));
        put_u32(&h, (uint32_t)w->t[i].ndim);
        for (int d = 0; d < w->t[i].ndim; d++) put_u64(&h, (uint64_t)w->t[i].ne[d]);
        put_u32(&h, w->t[i].type);
        put_u64(&h, off);
        off += pad_to(w->t[i].nbytes, GGUF_DEFAULT_ALIGNMENT);
    }
    if (!dspy_str_ok(&h) || !dspy_str_ok(&w->kv)) {
        dspy_str_free(&h);
        return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory for the header", w->path);
    }
    dspy_str tmp = DSPY_STR_INIT;
    dspy_str_appendf(&tmp, "%s.tmp.XXXXXX", w->path);
    w->tmp = dspy_str_take(&tmp);
    int fd = w->tmp ? mkstemp(w->tmp) : -1;
    if (fd < 0) {
        dspy_status st = dspy_fail(DSPY_ERR_IO, "%s: cannot create a temporary file next to it: %s", w->path,
                                   strerror(errno));
        free(w->tmp);
        w->tmp = NULL;
        dspy_str_free(&h);
        return st;
    }
    fchmod(fd, 0644);
    w->fp = fdopen(fd, "wb");
    if (!w->fp) {
        close(fd);
        dspy_str_free(&h);
        return dspy_fail(DSPY_ERR_IO, "%s: %s", w->tmp, strerror(errno));
    }
    dspy_status st = write_all(w, h.ptr, h.len);
    if (!st) st = write_pad(w, pad_to(h.len, GGUF_DEFAULT_ALIGNMENT) - h.len);
    dspy_str_free(&h);
    return st;
}

dspy_status dspy_gguf_writer_put(dspy_gguf_writer *w, const void *data, size_t n) {
    if (!w->fp) return dspy_fail(DSPY_ERR_STATE, "%s: put before begin", w->path);
    if (w->next >= w->n_t) return dspy_fail(DSPY_ERR_STATE, "%s: more tensors put than declared", w->path);
    const wtensor *t = &w->t[w->next];
    if (n != t->nbytes)
        return dspy_fail(DSPY_ERR_ARG, "%s: tensor \"%s\" needs %zu bytes, got %zu", w->path, t->name, t->nbytes, n);
    dspy_status st = write_all(w, data, n);
    if (!st) st = write_pad(w, pad_to(n, GGUF_DEFAULT_ALIGNMENT) - n);
    if (!st) w->next++;
    return st;
}

dspy_status dspy_gguf_writer_close(dspy_gguf_writer *w) {
    dspy_status st = DSPY_OK;
    if (!w->fp) st = dspy_fail(DSPY_ERR_STATE, "%s: closed before begin", w->path);
    else if (w->next != w->n_t)
        st = dspy_fail(DSPY_ERR_STATE, "%s: tensor \"%s\" was never written", w->path, w->t[w->next].name);
    if (st) {
        dspy_gguf_writer_abort(w);
        return st;
    }
    st = dspy_file_commit(&w->fp, &w->tmp, w->path); /* in place: w->tmp NULL, nothing for abort to remove */
    dspy_gguf_writer_abort(w);
    return st;
}
