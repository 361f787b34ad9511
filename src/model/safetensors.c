/* safetensors.c — read (mmap + full validation) and write safetensors files; sharded checkpoints.
 *
 * Follows the format and the checks of huggingface/safetensors (safetensors/src/tensor.rs:
 * header length bound, known dtypes, span == numel * size, spans contiguous from 0 to the end of
 * the buffer) and the writer layout of `safetensors.torch.save_file` (metadata first, compact
 * JSON, header padded with spaces to 8 bytes). Does not read PyTorch .bin pickles.
 */
#include "dspy/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dspy/gguf.h"
#include "dspy/str.h"
#include "model/checkpoint_internal.h"

#define HEADER_MAX ((uint64_t)100 * 1000 * 1000) /* the Rust library's limit */
#define INDEX_MAX ((size_t)256 << 20)                /* model.safetensors.index.json */

/* ---- dtypes ----------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} k_dtypes[DSPY_DTYPE_COUNT] = {
    [DSPY_DTYPE_F32] = {"F32", 4},         [DSPY_DTYPE_BF16] = {"BF16", 2},
    [DSPY_DTYPE_F16] = {"F16", 2},         [DSPY_DTYPE_F64] = {"F64", 8},
    [DSPY_DTYPE_I64] = {"I64", 8},         [DSPY_DTYPE_I32] = {"I32", 4},
    [DSPY_DTYPE_I16] = {"I16", 2},         [DSPY_DTYPE_I8] = {"I8", 1},
    [DSPY_DTYPE_U8] = {"U8", 1},           [DSPY_DTYPE_BOOL] = {"BOOL", 1},
    [DSPY_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [DSPY_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};

const char *dspy_dtype_name(dspy_dtype t) {
    return (unsigned)t < DSPY_DTYPE_COUNT ? k_dtypes[t].name : "?";
}

size_t dspy_dtype_size(dspy_dtype t) { return (unsigned)t < DSPY_DTYPE_COUNT ? k_dtypes[t].size : 0; }

bool dspy_dtype_parse(const char *name, dspy_dtype *out) {
    for (int i = 0; i < DSPY_DTYPE_COUNT; i++)
        if (strcmp(name, k_dtypes[i].name) == 0) {
            *out = (dspy_dtype)i;
            return true;
        }
    return false;
}

/* ---- element conversions ---------------------------------------------------------------- */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t dspy_f32_to_bf16(float x) {
    uint32_t u = f2u(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN, as c10::BFloat16 */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float dspy_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

/* Round-to-nearest-even fp32 -> fp16 (F. Giesen's float_to_half_fast3_rtne). */
uint16_t dspy_f32_to_f16(float x) {
    const uint32_t f32inf = 255u << 23, f16max = (127u + 16u) << 23;
    const float denorm_magic = u2f(((127u - 15u) + (23u - 10u) + 1u) << 23);
    uint32_t u = f2u(x);
    uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint16_t o;
    if (u >= f16max) {
        o = u > f32inf ? 0x7e00 : 0x7c00;
    } else if (u < (113u << 23)) {
        float t = u2f(u) + denorm_magic;
        o = (uint16_t)(f2u(t) - f2u(denorm_magic));
    } else {
        uint32_t odd = (u >> 13) & 1u;
        u += ((uint32_t)(15 - 127) << 23) + 0xfffu;
        u += odd;
        o = (uint16_t)(u >> 13);
    }
    return (uint16_t)(o | (sign >> 16));
}

float dspy_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * 5.9604644775390625e-08f; /* 2^-24 */
        return u2f(f2u(v) | sign);
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* ---- tensors ---------------------------------------------------------------------------- */

int64_t dspy_tensor_numel(const dspy_tensor_info *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

void dspy_tensor_shape_str(const int64_t *shape, int32_t ndim, char *buf, size_t cap) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendc(&s, '[');
    for (int i = 0; i < ndim; i++) dspy_str_appendf(&s, "%s%lld", i ? ", " : "", (long long)shape[i]);
    dspy_str_appendc(&s, ']');
    snprintf(buf, cap, "%s", dspy_str_cstr(&s));
    dspy_str_free(&s);
}

dspy_status dspy_tensor_to_f32(const dspy_tensor_info *t, float *dst) {
    size_t n = (size_t)dspy_tensor_numel(t);
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case DSPY_DTYPE_F32:
        memcpy(dst, p, n * 4);
        return DSPY_OK;
    case DSPY_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = dspy_bf16_to_f32(h);
        }
        return DSPY_OK;
    case DSPY_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = dspy_f16_to_f32(h);
        }
        return DSPY_OK;
    case DSPY_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return DSPY_OK;
    default:
        return dspy_fail(DSPY_ERR_FORMAT,
                         "%s: tensor \"%s\" has dtype %s; only F32, BF16, F16 and F64 weights can be "
                         "loaded (convert the checkpoint with transformers' save_pretrained)",
                         t->file, t->name, dspy_dtype_name(t->dtype));
    }
}

/* ---- reading one file ------------------------------------------------------------------- */

struct dspy_safetensors {
    char *path;
    void *map;
    size_t map_len;
    dspy_tensor_info *tensors; /* by offset */
    size_t n;
    const dspy_tensor_info **by_name; /* sorted by name */
    json_t *metadata;          /* the __metadata__ object or NULL */
};

void dspy_safetensors_free(dspy_safetensors *f) {
    if (!f) return;
    if (f->tensors)
        for (size_t i = 0; i < f->n; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    json_decref(f->metadata);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

static int cmp_offset(const void *a, const void *b) {
    const dspy_tensor_info *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name_ptr(const void *a, const void *b) {
    return strcmp((*(const dspy_tensor_info *const *)a)->name, (*(const dspy_tensor_info *const *)b)->name);
}

/* Reads a non-negative JSON integer (jansson integer) into *out. */
static bool json_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static dspy_status parse_tensor(const char *path, const char *name, json_t *v, uint64_t data_len,
                                dspy_tensor_info *t) {
    if (!json_is_object(v))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": header entry must be an object with "
                                          "dtype, shape and data_offsets", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": \"dtype\" is missing or not a string", path, name);
    if (!dspy_dtype_parse(json_string_value(jd), &t->dtype))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%s\"", path, name,
                         json_string_value(jd));
    if (!json_is_array(js))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": \"shape\" is missing or not a list", path, name);
    if (json_array_size(js) > DSPY_TENSOR_MAX_DIMS)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": %zu dimensions (at most %d supported)",
                         path, name, json_array_size(js), DSPY_TENSOR_MAX_DIMS);
    t->ndim = (int32_t)json_array_size(js);
    uint64_t numel = 1;
    bool overflow = false;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d;
        if (!json_u64(json_array_get(js, (size_t)i), &d) || d > (uint64_t)INT64_MAX)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": shape entry %d is not a non-negative integer",
                             path, name, i);
        t->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(numel, d, &numel)) overflow = true;
    }
    uint64_t need;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)dspy_dtype_size(t->dtype), &need))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": shape is too large", path, name);
    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_u64(json_array_get(jo, 0), &b) ||
        !json_u64(json_array_get(jo, 1), &e))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": \"data_offsets\" must be [begin, end] "
                                          "non-negative integers", path, name);
    char shp[160];
    dspy_tensor_shape_str(t->shape, t->ndim, shp, sizeof shp);
    if (e < b)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] end before they begin",
                         path, name, (unsigned long long)b, (unsigned long long)e);
    if (e - b != need)
        return dspy_fail(DSPY_ERR_FORMAT,
                         "%s: tensor \"%s\": shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] "
                         "span %llu (the header lies about the size)",
                         path, name, shp, dspy_dtype_name(t->dtype), (unsigned long long)need,
                         (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b));
    if (e > data_len)
        return dspy_fail(DSPY_ERR_FORMAT,
                         "%s: tensor \"%s\": data_offsets [%llu, %llu] run past the end of the data "
                         "buffer (%llu bytes); the file is truncated or the header is wrong",
                         path, name, (unsigned long long)b, (unsigned long long)e,
                         (unsigned long long)data_len);
    t->offset = (size_t)b;
    t->nbytes = (size_t)need;
    return DSPY_OK;
}

/* Counts elements whose masked bits equal `mask` (an all-ones exponent: Inf or NaN). Elements
 * are read with memcpy: tensors of a file need not be aligned. The branch-free count keeps the
 * loop vectorisable; the first hit is looked up afterwards only when there is one. */
#define COUNT_EXP_ONES(T, p, n, mask, count)                     \
    do {                                                         \
        const unsigned char *b_ = (const unsigned char *)(p);    \
        int64_t c_ = 0;                                          \
        for (int64_t i_ = 0; i_ < (n); i_++) {                   \
            T v_;                                                \
            memcpy(&v_, b_ + (size_t)i_ * sizeof(T), sizeof(T)); \
            c_ += (v_ & (mask)) == (mask);                       \
        }                                                        \
        (count) = c_;                                            \
    } while (0)

#define FIRST_EXP_ONES(T, p, n, mask, first)                     \
    do {                                                         \
        const unsigned char *b_ = (const unsigned char *)(p);    \
        (first) = -1;                                            \
        for (int64_t i_ = 0; i_ < (n); i_++) {                   \
            T v_;                                                \
            memcpy(&v_, b_ + (size_t)i_ * sizeof(T), sizeof(T)); \
            if ((v_ & (mask)) == (mask)) {                       \
                (first) = i_;                                    \
                break;                                           \
            }                                                    \
        }                                                        \
    } while (0)

dspy_status dspy_tensor_check_finite(const dspy_tensor_info *t, int64_t *n_bad, int64_t *first_bad) {
    if (!t || !n_bad) return dspy_fail(DSPY_ERR_ARG, "dspy_tensor_check_finite: NULL argument");
    *n_bad = 0;
    if (first_bad) *first_bad = -1;
    int64_t n = dspy_tensor_numel(t), count = 0, first = -1;
    if (t->nbytes < (size_t)n * dspy_dtype_size(t->dtype)) n = 0; /* not a tensor of an open file */
    switch (t->dtype) {
    case DSPY_DTYPE_F32:
        COUNT_EXP_ONES(uint32_t, t->data, n, 0x7f800000u, count);
        if (count && first_bad) FIRST_EXP_ONES(uint32_t, t->data, n, 0x7f800000u, first);
        break;
    case DSPY_DTYPE_BF16:
        COUNT_EXP_ONES(uint16_t, t->data, n, 0x7f80u, count);
        if (count && first_bad) FIRST_EXP_ONES(uint16_t, t->data, n, 0x7f80u, first);
        break;
    case DSPY_DTYPE_F16:
        COUNT_EXP_ONES(uint16_t, t->data, n, 0x7c00u, count);
        if (count && first_bad) FIRST_EXP_ONES(uint16_t, t->data, n, 0x7c00u, first);
        break;
    case DSPY_DTYPE_F64:
        COUNT_EXP_ONES(uint64_t, t->data, n, 0x7ff0000000000000ull, count);
        if (count && first_bad) FIRST_EXP_ONES(uint64_t, t->data, n, 0x7ff0000000000000ull, first);
        break;
    case DSPY_DTYPE_F8_E4M3: /* S.1111.111 is NaN; there is no Inf */
        COUNT_EXP_ONES(uint8_t, t->data, n, 0x7fu, count);
        if (count && first_bad) FIRST_EXP_ONES(uint8_t, t->data, n, 0x7fu, first);
        break;
    case DSPY_DTYPE_F8_E5M2:
        COUNT_EXP_ONES(uint8_t, t->data, n, 0x7cu, count);
        if (count && first_bad) FIRST_EXP_ONES(uint8_t, t->data, n, 0x7cu, first);
        break;
    default:
        break; /* integers and bools are always finite */
    }
    *n_bad = count;
    if (first_bad) *first_bad = first;
    return DSPY_OK;
}

dspy_status dspy_safetensors_open(const char *path, dspy_safetensors **out) {
    *out = NULL;
    dspy_status st = DSPY_OK;
    json_t *hdr = NULL;
    dspy_safetensors *f = calloc(1, sizeof *f);
    if (!f) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
    f->path = strdup(path);
    int fd = -1;
    uint64_t size = 0;
    if ((st = dspy_open_regular(path, &fd, &size)) != DSPY_OK) goto fail;
    if (size < 8) {
        close(fd);
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: file is %llu bytes, too short for a safetensors file "
                                        "(it starts with an 8-byte header length)", path, (unsigned long long)size);
        goto fail;
    }
    f->map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        st = dspy_fail(DSPY_ERR_IO, "%s: cannot mmap %llu bytes: %s", path, (unsigned long long)size,
                       strerror(errno));
        goto fail;
    }
    f->map_len = (size_t)size;
    const unsigned char *base = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen > size - 8) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes); "
                                        "the file is truncated or not safetensors",
                       path, (unsigned long long)hlen, (unsigned long long)size);
        goto fail;
    }
    if (hlen > HEADER_MAX || hlen < 2) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: header length %llu is not plausible (2 .. %llu bytes)", path,
                       (unsigned long long)hlen, (unsigned long long)HEADER_MAX);
        goto fail;
    }
    json_error_t jerr;
    hdr = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!hdr) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: header is not valid JSON (column %d: %s)", path, jerr.column,
                       jerr.text);
        goto fail;
    }
    if (!json_is_object(hdr)) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: header must be a JSON object", path);
        goto fail;
    }
    uint64_t data_len = size - 8 - hlen;
    size_t cap = json_object_size(hdr);
    f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
    f->by_name = calloc(cap ? cap : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(hdr, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"__metadata__\" must be an object of strings", path);
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"__metadata__\".\"%s\" must be a string", path, mk);
                    goto fail;
                }
            }
            f->metadata = json_incref(val);
            continue;
        }
        dspy_tensor_info *t = &f->tensors[f->n];
        st = parse_tensor(path, key, val, data_len, t);
        if (st) goto fail;
        t->name = strdup(key);
        if (!t->name) {
            st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        f->n++;
    }
    qsort(f->tensors, f->n, sizeof *f->tensors, cmp_offset);
    uint64_t expect = 0;
    for (size_t i = 0; i < f->n; i++) {
        dspy_tensor_info *t = &f->tensors[i];
        if (t->offset < expect) {
            const dspy_tensor_info *p = &f->tensors[i - 1];
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: tensors \"%s\" [%zu, %zu) and \"%s\" [%zu, %zu) overlap", path,
                           p->name, p->offset, p->offset + p->nbytes, t->name, t->offset, t->offset + t->nbytes);
            goto fail;
        }
        if (t->offset > expect) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: data bytes [%llu, %zu) before tensor \"%s\" belong to no tensor "
                                            "(tensors must be contiguous)",
                           path, (unsigned long long)expect, t->offset, t->name);
            goto fail;
        }
        expect = t->offset + t->nbytes;
        t->data = base + 8 + hlen + t->offset;
        t->file = f->path;
    }
    if (expect != data_len) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: the data buffer has %llu bytes but the tensors cover %llu "
                                        "(trailing bytes belong to no tensor)",
                       path, (unsigned long long)data_len, (unsigned long long)expect);
        goto fail;
    }
    for (size_t i = 0; i < f->n; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name_ptr);
    json_decref(hdr);
    *out = f;
    return DSPY_OK;
fail:
    json_decref(hdr);
    dspy_safetensors_free(f);
    return st;
}

size_t dspy_safetensors_count(const dspy_safetensors *f) { return f->n; }

const dspy_tensor_info *dspy_safetensors_at(const dspy_safetensors *f, size_t i) {
    return i < f->n ? &f->tensors[i] : NULL;
}

const dspy_tensor_info *dspy_safetensors_find(const dspy_safetensors *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *dspy_safetensors_metadata(const dspy_safetensors *f, const char *key) {
    return f->metadata ? json_string_value(json_object_get(f->metadata, key)) : NULL;
}

/* ---- checkpoints ------------------------------------------------------------------------ */

struct dspy_checkpoint {
    char *where;
    dspy_safetensors **files;
    size_t nfiles;
    json_t *weight_map; /* name -> shard file name; NULL for a single file */
    char **shard_names; /* per file, the name used in weight_map */
    /* adopted tensors (a GGUF file): used instead of files when ext_by_name is set */
    const dspy_tensor_info *ext;
    const dspy_tensor_info **ext_by_name;
    size_t n_ext;
    void *owner;
    void (*owner_free)(void *);
};

void dspy_checkpoint_free(dspy_checkpoint *ck) {
    if (!ck) return;
    for (size_t i = 0; i < ck->nfiles; i++) {
        dspy_safetensors_free(ck->files[i]);
        if (ck->shard_names) free(ck->shard_names[i]);
    }
    free(ck->files);
    free(ck->shard_names);
    json_decref(ck->weight_map);
    free(ck->ext_by_name);
    if (ck->owner_free) ck->owner_free(ck->owner);
    free(ck->where);
    free(ck);
}

dspy_status dspy_checkpoint_adopt(const char *where, const dspy_tensor_info *tensors, size_t n, void *owner,
                                  void (*owner_free)(void *), dspy_checkpoint **out) {
    *out = NULL;
    dspy_checkpoint *ck = calloc(1, sizeof *ck);
    if (ck) {
        ck->owner = owner;
        ck->owner_free = owner_free;
    }
    if (!ck || !(ck->where = strdup(where)) || !(ck->ext_by_name = calloc(n ? n : 1, sizeof *ck->ext_by_name))) {
        if (!ck) owner_free(owner);
        dspy_checkpoint_free(ck);
        return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", where);
    }
    ck->ext = tensors;
    ck->n_ext = n;
    for (size_t i = 0; i < n; i++) ck->ext_by_name[i] = &tensors[i];
    qsort(ck->ext_by_name, n, sizeof *ck->ext_by_name, cmp_name_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ck->ext_by_name[i - 1]->name, ck->ext_by_name[i]->name) == 0) {
            dspy_status st = dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" appears twice", where, ck->ext_by_name[i]->name);
            dspy_checkpoint_free(ck);
            return st;
        }
    *out = ck;
    return DSPY_OK;
}

static char *path_join(const char *dir, const char *name) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "%s/%s", dir, name);
    return dspy_str_take(&s);
}

static dspy_status open_sharded(dspy_checkpoint *ck, const char *dir, const char *index_path) {
    json_error_t jerr;
    char *text = NULL;
    size_t text_len = 0;
    dspy_status rst = dspy_read_regular_file(index_path, INDEX_MAX, &text, &text_len);
    if (rst != DSPY_OK) return rst;
    json_t *idx = json_loadb(text, text_len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!idx)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: line %d, column %d: %s", index_path, jerr.line, jerr.column,
                         jerr.text);
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(idx);
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"weight_map\" is missing or not an object", index_path);
    }
    ck->weight_map = json_incref(wm);
    json_decref(idx);
    size_t n = json_object_size(wm);
    ck->files = calloc(n ? n : 1, sizeof *ck->files);
    ck->shard_names = calloc(n ? n : 1, sizeof *ck->shard_names);
    if (!ck->files || !ck->shard_names) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", index_path);
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        const char *file = json_string_value(val);
        if (!file || !*file || strchr(file, '/'))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: weight_map[\"%s\"] must be a file name in the same directory",
                             index_path, key);
        size_t k = 0;
        while (k < ck->nfiles && strcmp(ck->shard_names[k], file) != 0) k++;
        if (k == ck->nfiles) {
            char *p = path_join(dir, file);
            if (!p) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", index_path);
            dspy_status st = dspy_safetensors_open(p, &ck->files[k]);
            free(p);
            if (st) return dspy_fail_wrap(st, "%s: shard \"%s\"", index_path, file);
            ck->shard_names[k] = strdup(file);
            ck->nfiles++;
        }
        if (!dspy_safetensors_find(ck->files[k], key))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is mapped to \"%s\", which does not hold it",
                             index_path, key, file);
    }
    return DSPY_OK;
}

dspy_status dspy_checkpoint_open(const char *dir, dspy_checkpoint **out) {
    *out = NULL;
    if (dspy_gguf_is_path(dir)) return dspy_checkpoint_open_gguf(dir, NULL, out);
    dspy_status st;
    dspy_checkpoint *ck = calloc(1, sizeof *ck);
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    if (!ck || !single || !index) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    if (access(single, F_OK) == 0) {
        ck->where = single;
        single = NULL;
        ck->files = calloc(1, sizeof *ck->files);
        if (!ck->files) {
            st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", dir);
            goto fail;
        }
        st = dspy_safetensors_open(ck->where, &ck->files[0]);
        if (st) goto fail;
        ck->nfiles = 1;
    } else if (access(index, F_OK) == 0) {
        ck->where = index;
        index = NULL;
        st = open_sharded(ck, dir, ck->where);
        if (st) goto fail;
    } else {
        st = dspy_fail(DSPY_ERR_NOTFOUND, "%s: no model.safetensors or model.safetensors.index.json "
                                          "(expected a Hugging Face model directory)", dir);
        goto fail;
    }
    free(single);
    free(index);
    *out = ck;
    return DSPY_OK;
fail:
    free(single);
    free(index);
    dspy_checkpoint_free(ck);
    return st;
}

const dspy_tensor_info *dspy_checkpoint_find(const dspy_checkpoint *ck, const char *name) {
    if (ck->ext_by_name) {
        size_t lo = 0, hi = ck->n_ext;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            int c = strcmp(ck->ext_by_name[mid]->name, name);
            if (c == 0) return ck->ext_by_name[mid];
            if (c < 0) lo = mid + 1;
            else hi = mid;
        }
        return NULL;
    }
    if (ck->weight_map) {
        const char *file = json_string_value(json_object_get(ck->weight_map, name));
        if (file)
            for (size_t k = 0; k < ck->nfiles; k++)
                if (strcmp(ck->shard_names[k], file) == 0) return dspy_safetensors_find(ck->files[k], name);
    }
    for (size_t k = 0; k < ck->nfiles; k++) {
        const dspy_tensor_info *t = dspy_safetensors_find(ck->files[k], name);
        if (t) return t;
    }
    return NULL;
}

size_t dspy_checkpoint_count(const dspy_checkpoint *ck) {
    if (ck->ext_by_name) return ck->n_ext;
    size_t n = 0;
    for (size_t k = 0; k < ck->nfiles; k++) n += dspy_safetensors_count(ck->files[k]);
    return n;
}

const dspy_tensor_info *dspy_checkpoint_at(const dspy_checkpoint *ck, size_t i) {
    if (ck->ext_by_name) return i < ck->n_ext ? &ck->ext[i] : NULL;
    for (size_t k = 0; k < ck->nfiles; k++) {
        size_t n = dspy_safetensors_count(ck->files[k]);
        if (i < n) return dspy_safetensors_at(ck->files[k], i);
        i -= n;
    }
    return NULL;
}

const char *dspy_checkpoint_where(const dspy_checkpoint *ck) { return ck->where; }

/* ---- writing ---------------------------------------------------------------------------- */

struct dspy_safetensors_writer {
    char *path;
    char *tmp;
    FILE *fp;
    size_t n;
    dspy_tensor_out *specs;  /* copies (names owned) */
    uint64_t *offsets;       /* absolute file offset of each tensor's data */
    bool *done;
};

static void writer_free(dspy_safetensors_writer *w) {
    if (!w) return;
    if (w->specs)
        for (size_t i = 0; i < w->n; i++) free((char *)w->specs[i].name);
    free(w->specs);
    free(w->offsets);
    free(w->done);
    free(w->path);
    free(w->tmp);
    free(w);
}

void dspy_safetensors_writer_abort(dspy_safetensors_writer *w) {
    if (!w) return;
    if (w->fp) fclose(w->fp);
    if (w->tmp) unlink(w->tmp);
    writer_free(w);
}

static uint64_t spec_numel(const dspy_tensor_out *t) {
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (uint64_t)t->shape[i];
    return n;
}

static dspy_status check_specs(const char *path, const dspy_tensor_out *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!t[i].name || !*t[i].name || strncmp(t[i].name, "__", 2) == 0)
            return dspy_fail(DSPY_ERR_ARG, "%s: tensor %zu has an empty name or one starting with \"__\"", path, i);
        if (!dspy_utf8_valid(t[i].name, strlen(t[i].name), NULL))
            return dspy_fail(DSPY_ERR_ARG, "%s: tensor %zu: name is not valid UTF-8", path, i);
        if (t[i].dtype != DSPY_DTYPE_F32 && t[i].dtype != DSPY_DTYPE_BF16 && t[i].dtype != DSPY_DTYPE_F16)
            return dspy_fail(DSPY_ERR_ARG, "%s: tensor \"%s\": can only write F32, BF16 or F16, not %s", path,
                             t[i].name, dspy_dtype_name(t[i].dtype));
        if (t[i].ndim < 0 || t[i].ndim > DSPY_TENSOR_MAX_DIMS)
            return dspy_fail(DSPY_ERR_ARG, "%s: tensor \"%s\": %d dimensions", path, t[i].name, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            if (t[i].shape[d] < 0)
                return dspy_fail(DSPY_ERR_ARG, "%s: tensor \"%s\": negative dimension", path, t[i].name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0)
                return dspy_fail(DSPY_ERR_ARG, "%s: tensor \"%s\" appears twice", path, t[i].name);
    }
    return DSPY_OK;
}

dspy_status dspy_safetensors_writer_open(const char *path, const dspy_tensor_out *specs, size_t n,
                                         const char *const *metadata, dspy_safetensors_writer **out) {
    *out = NULL;
    dspy_status st = check_specs(path, specs, n);
    if (st) return st;
    json_t *hdr = NULL;
    char *text = NULL;
    size_t *order = NULL;
    dspy_safetensors_writer *w = calloc(1, sizeof *w);
    if (!w) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
    w->n = n;
    w->path = strdup(path);
    w->specs = calloc(n ? n : 1, sizeof *w->specs);
    w->offsets = calloc(n ? n : 1, sizeof *w->offsets);
    w->done = calloc(n ? n : 1, sizeof *w->done);
    order = calloc(n ? n : 1, sizeof *order);
    hdr = json_object();
    json_t *meta = json_object();
    if (!w->path || !w->specs || !w->offsets || !w->done || !order || !hdr || !meta) {
        json_decref(meta);
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    json_object_set_new(meta, "format", json_string("pt"));
    for (size_t i = 0; metadata && metadata[i] && metadata[i + 1]; i += 2)
        json_object_set_new(meta, metadata[i], json_string(metadata[i + 1]));
    json_object_set_new(hdr, "__metadata__", meta);
    for (size_t i = 0; i < n; i++) {
        w->specs[i] = specs[i];
        w->specs[i].data = NULL;
        w->specs[i].name = strdup(specs[i].name);
        if (!w->specs[i].name) {
            st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
    }
    /* Order: element size descending (keeps alignment), then caller order (stable). */
    size_t k = 0;
    for (size_t sz = 8; sz >= 1; sz /= 2)
        for (size_t i = 0; i < n; i++)
            if (dspy_dtype_size(specs[i].dtype) == sz) order[k++] = i;
    uint64_t off = 0;
    uint64_t *rel = calloc(n ? n : 1, sizeof *rel);
    if (!rel) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t j = 0; j < n; j++) {
        size_t i = order[j];
        uint64_t bytes = spec_numel(&specs[i]) * dspy_dtype_size(specs[i].dtype);
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        json_object_set_new(e, "dtype", json_string(dspy_dtype_name(specs[i].dtype)));
        for (int d = 0; d < specs[i].ndim; d++) json_array_append_new(shape, json_integer(specs[i].shape[d]));
        json_object_set_new(e, "shape", shape);
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + bytes)));
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(hdr, specs[i].name, e);
        rel[i] = off;
        off += bytes;
    }
    text = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        free(rel);
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    size_t hlen = strlen(text);
    size_t pad = (8 - hlen % 8) % 8;
    for (size_t i = 0; i < n; i++) w->offsets[i] = 8 + hlen + pad + rel[i];
    free(rel);
    dspy_str tmp = DSPY_STR_INIT;
    dspy_str_appendf(&tmp, "%s.tmp.XXXXXX", path);
    w->tmp = dspy_str_take(&tmp);
    if (!w->tmp) {
        st = DSPY_ERR_NOMEM;
        goto fail;
    }
    int fd = mkstemp(w->tmp);
    if (fd < 0) {
        st = dspy_fail(DSPY_ERR_IO, "%s: cannot create a temporary file next to it: %s", path, strerror(errno));
        free(w->tmp);
        w->tmp = NULL;
        goto fail;
    }
    fchmod(fd, 0644);
    w->fp = fdopen(fd, "wb");
    if (!w->fp) {
        close(fd);
        st = dspy_fail(DSPY_ERR_IO, "%s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    unsigned char len8[8];
    uint64_t total = hlen + pad;
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(total >> (8 * i));
    if (fwrite(len8, 1, 8, w->fp) != 8 || fwrite(text, 1, hlen, w->fp) != hlen ||
        fwrite("        ", 1, pad, w->fp) != pad) {
        st = dspy_fail(DSPY_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
        goto fail;
    }
    free(text);
    free(order);
    json_decref(hdr);
    *out = w;
    return DSPY_OK;
fail:
    free(text);
    free(order);
    json_decref(hdr);
    dspy_safetensors_writer_abort(w);
    return st;
}

dspy_status dspy_safetensors_writer_put(dspy_safetensors_writer *w, size_t i, const float *data) {
    if (i >= w->n) return dspy_fail(DSPY_ERR_ARG, "%s: tensor index %zu out of range (%zu tensors)", w->path, i, w->n);
    if (w->done[i]) return dspy_fail(DSPY_ERR_ARG, "%s: tensor \"%s\" written twice", w->path, w->specs[i].name);
    const dspy_tensor_out *t = &w->specs[i];
    uint64_t n = spec_numel(t);
    if (fseeko(w->fp, (off_t)w->offsets[i], SEEK_SET) != 0)
        return dspy_fail(DSPY_ERR_IO, "%s: seek failed: %s", w->tmp, strerror(errno));
    if (t->dtype == DSPY_DTYPE_F32) {
        if (n && fwrite(data, 4, (size_t)n, w->fp) != n)
            return dspy_fail(DSPY_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    } else {
        uint16_t buf[4096];
        for (uint64_t s = 0; s < n; s += 4096) {
            size_t m = (size_t)(n - s < 4096 ? n - s : 4096);
            for (size_t j = 0; j < m; j++)
                buf[j] = t->dtype == DSPY_DTYPE_BF16 ? dspy_f32_to_bf16(data[s + j]) : dspy_f32_to_f16(data[s + j]);
            if (fwrite(buf, 2, m, w->fp) != m)
                return dspy_fail(DSPY_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
        }
    }
    w->done[i] = true;
    return DSPY_OK;
}

dspy_status dspy_safetensors_writer_close(dspy_safetensors_writer *w) {
    dspy_status st = DSPY_OK;
    for (size_t i = 0; i < w->n; i++)
        if (!w->done[i]) {
            st = dspy_fail(DSPY_ERR_STATE, "%s: tensor \"%s\" was never written", w->path, w->specs[i].name);
            dspy_safetensors_writer_abort(w);
            return st;
        }
    st = dspy_file_commit(&w->fp, &w->tmp, w->path); /* in place: w->tmp NULL, nothing for abort to remove */
    dspy_safetensors_writer_abort(w);
    return st;
}

dspy_status dspy_safetensors_write(const char *path, const dspy_tensor_out *tensors, size_t n,
                                   const char *const *metadata) {
    dspy_safetensors_writer *w;
    dspy_status st = dspy_safetensors_writer_open(path, tensors, n, metadata, &w);
    if (st) return st;
    for (size_t i = 0; i < n; i++) {
        st = dspy_safetensors_writer_put(w, i, tensors[i].data);
        if (st) {
            dspy_safetensors_writer_abort(w);
            return st;
        }
    }
    return dspy_safetensors_writer_close(w);
}
