/* test_gguf.c — GGUF export and import without llama.cpp (tests/e2e/test_gguf_llama_cpp.c runs
 * llama.cpp itself on the files).
 *
 * Known answers for Q8_0 blocks (ggml's quantize_row_q8_0_ref: scale max|x|/127 stored as fp16,
 * round half away from zero) and for the q/k permutation (convert_hf_to_gguf.py's
 * reshape(heads, 2, HS/2, C).swapaxes(1, 2) written out by hand); writer/reader round trips
 * with gguf.cpp's layout rules (contiguous, 32-byte aligned tensors); one malformed file per
 * reader rule; model directory -> GGUF -> checkpoint/config/tokenizer/chat template for every
 * dtype (f32 bit-exact logits, the tokenizer against all 13,110 HF reference encodings, the
 * chat template against transformers' renderings); llama3 RoPE recovered from rope_freqs;
 * errors through the library and the CLI.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat_vector.h"
#include "check.h"
#include "dspy/chat_template.h"
#include "dspy/engine.h"
#include "dspy/gguf.h"
#include "dspy/model.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"
#include "model/gguf_internal.h"
#include "model/tokenizer_internal.h"

static const char *tmp_path(const char *name) {
    static char buf[32][512];
    static int k;
    char *p = buf[k++ % 32];
    snprintf(p, 512, "%s/%s", test_tmpdir(), name);
    return p;
}

/* ---- Q8_0 and the permutation ----------------------------------------------------------- */

static void test_q8_0(void) {
    float x[64];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) * 0.25f; /* amax 4 at j = 0 */
    for (int j = 0; j < 32; j++) x[32 + j] = 0.0f;
    x[32] = 127.0f; /* second block: d = 1 exactly */
    x[33] = 2.5f;   /* half-way cases: away from zero (3, -3), not to even (2, -2) */
    x[34] = -2.5f;
    x[35] = 0.5f;
    uint8_t q[68];
    dspy_gguf_quantize_q8_0(x, 64, q);
    uint16_t d0, d1;
    memcpy(&d0, q, 2);
    memcpy(&d1, q + 34, 2);
    CHECK_INT(d0, dspy_f32_to_f16(4.0f / 127.0f));
    CHECK_INT(d1, 0x3c00);
    CHECK_INT((int8_t)q[2], -127);
    CHECK_INT((int8_t)q[2 + 17], 8);     /* 0.25 * 127/4 = 7.9375 */
    CHECK_INT((int8_t)q[2 + 1], -119);   /* -3.75 * 31.75 = -119.0625 */
    CHECK_INT((int8_t)q[2 + 16], 0);
    CHECK_INT((int8_t)q[36], 127);
    CHECK_INT((int8_t)q[37], 3);
    CHECK_INT((int8_t)q[38], -3);
    CHECK_INT((int8_t)q[39], 1);
    float y[64];
    dspy_gguf_dequantize_q8_0(q, 64, y);
    CHECK(y[37 - 36 + 32] == 3.0f);
    double worst = 0;
    for (int j = 0; j < 32; j++) worst = fmax(worst, fabs(y[j] - x[j]));
    CHECK(worst <= 0.5 * 4.0 / 127.0 + 1e-3);
    float z[32] = {0};
    uint8_t qz[34];
    dspy_gguf_quantize_q8_0(z, 32, qz);
    int nz = 0;
    for (int j = 0; j < 34; j++) nz += qz[j] != 0;
    CHECK_INT(nz, 0);
}

static void test_permute(void) {
    /* 2 heads of 4 rows (HS = 4), rows of 3 floats; the converter's swapaxes puts HF row
     * j*2 + i of a head at 2i + j: head rows [r0 r1 r2 r3] -> [r0 r2 r1 r3]. */
    float src[24], dst[24], back[24];
    for (int i = 0; i < 24; i++) src[i] = (float)i;
    dspy_gguf_permute_rows(src, dst, 8, 3 * sizeof(float), 2, true);
    static const int want_rows[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    int bad = 0;
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 3; c++) bad += dst[r * 3 + c] != src[want_rows[r] * 3 + c];
    CHECK_INT(bad, 0);
    dspy_gguf_permute_rows(dst, back, 8, 3 * sizeof(float), 2, false);
    CHECK(memcmp(back, src, sizeof src) == 0);
    /* HS = 8: [0 1 2 3 | 4 5 6 7] -> [0 4 1 5 2 6 3 7] */
    float a[8], b[8];
    for (int i = 0; i < 8; i++) a[i] = (float)i;
    dspy_gguf_permute_rows(a, b, 8, sizeof(float), 1, true);
    static const float want8[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    CHECK(memcmp(b, want8, sizeof b) == 0);
}

/* ---- writer and reader ------------------------------------------------------------------ */

static void test_write_read(void) {
    const char *path = tmp_path("rw.gguf");
    dspy_gguf_writer *w;
    CHECK_OK(dspy_gguf_writer_new(path, &w));
    dspy_gguf_kv_str(w, "general.architecture", "llama");
    dspy_gguf_kv_u32(w, "a.u32", 4000000000u);
    dspy_gguf_kv_i32(w, "a.i32", -7);
    dspy_gguf_kv_f32(w, "a.f32", 0.125f);
    dspy_gguf_kv_bool(w, "a.bool", true);
    const char *strs[] = {"x", "", "Ġhello"};
    size_t lens[] = {1, 0, strlen("Ġhello")};
    dspy_gguf_kv_str_arr(w, "a.strs", strs, lens, 3);
    int32_t ints[] = {1, -2, 3};
    dspy_gguf_kv_i32_arr(w, "a.ints", ints, 3);
    int64_t ne1[1] = {5}, ne2[2] = {32, 3}, ne3[2] = {4, 2};
    dspy_gguf_writer_tensor(w, "t.f32", GGML_TYPE_F32, 1, ne1);
    dspy_gguf_writer_tensor(w, "t.q8", GGML_TYPE_Q8_0, 2, ne2);
    dspy_gguf_writer_tensor(w, "t.bf16", GGML_TYPE_BF16, 2, ne3);
    CHECK_OK(dspy_gguf_writer_begin(w));
    float f[5] = {1, 2, 3, 4, 5};
    uint8_t q[3 * 34];
    for (int i = 0; i < (int)sizeof q; i++) q[i] = (uint8_t)i;
    uint16_t h[8];
    for (int i = 0; i < 8; i++) h[i] = dspy_f32_to_bf16((float)i);
    CHECK_STATUS(dspy_gguf_writer_put(w, f, 4), DSPY_ERR_ARG); /* wrong size */
    CHECK_OK(dspy_gguf_writer_put(w, f, sizeof f));
    CHECK_OK(dspy_gguf_writer_put(w, q, sizeof q));
    CHECK_OK(dspy_gguf_writer_put(w, h, sizeof h));
    CHECK_OK(dspy_gguf_writer_close(w));

    dspy_gguf *g;
    CHECK_OK(dspy_gguf_open(path, &g));
    if (!g) return;
    CHECK_INT(dspy_gguf_version(g), 3);
    CHECK_INT(dspy_gguf_alignment(g), 32);
    CHECK_INT(dspy_gguf_kv_count(g), 7);
    CHECK_STR(dspy_gguf_get_str(g, "general.architecture"), "llama");
    int64_t v;
    CHECK(dspy_gguf_get_int(g, "a.u32", &v) && v == 4000000000LL);
    CHECK(dspy_gguf_get_int(g, "a.i32", &v) && v == -7);
    double d;
    CHECK(dspy_gguf_get_float(g, "a.f32", &d) && d == 0.125);
    bool b = false;
    CHECK(dspy_gguf_get_bool(g, "a.bool", &b) && b);
    CHECK(!dspy_gguf_get_int(g, "a.f32", &v)); /* wrong type */
    CHECK(dspy_gguf_get_str(g, "missing") == NULL);
    dspy_gguf_vtype et;
    size_t n;
    CHECK(dspy_gguf_get_arr(g, "a.strs", &et, &n) && et == DSPY_GGUF_STRING && n == 3);
    size_t l;
    const char *s = dspy_gguf_arr_str(g, "a.strs", 2, &l);
    CHECK(l == strlen("Ġhello") && memcmp(s, "Ġhello", l) == 0);
    s = dspy_gguf_arr_str(g, "a.strs", 1, &l);
    CHECK_INT(l, 0);
    CHECK_INT(dspy_gguf_arr_int(g, "a.ints", 1), -2);
    CHECK_INT(dspy_gguf_tensor_count(g), 3);
    const dspy_gguf_tensor *t = dspy_gguf_tensor_find(g, "t.q8");
    CHECK(t && t->type == GGML_TYPE_Q8_0 && t->ndim == 2 && t->ne[0] == 32 && t->ne[1] == 3 && t->nbytes == sizeof q);
    if (t) CHECK(memcmp(t->data, q, sizeof q) == 0);
    /* gguf.cpp's layout: data 32-byte aligned, tensor i right after tensor i-1's padded data */
    const dspy_gguf_tensor *t0 = dspy_gguf_tensor_find(g, "t.f32"), *t2 = dspy_gguf_tensor_find(g, "t.bf16");
    CHECK(t0 && t0->offset == 0 && memcmp(t0->data, f, sizeof f) == 0);
    if (t) CHECK_U64(t->offset, 32);
    if (t2) CHECK_U64(t2->offset, 32 + 128);
    if (t2) CHECK(((uintptr_t)t2->data % 32) == 0 && memcmp(t2->data, h, sizeof h) == 0);
    CHECK_STR(dspy_gguf_type_name(GGML_TYPE_BF16), "BF16");
    dspy_gguf_free(g);

    /* misuse is reported, nothing is left behind */
    CHECK_OK(dspy_gguf_writer_new(tmp_path("dup.gguf"), &w));
    dspy_gguf_kv_u32(w, "k", 1);
    dspy_gguf_kv_u32(w, "k", 2);
    CHECK_STATUS(dspy_gguf_writer_begin(w), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "given twice");
    dspy_gguf_writer_abort(w);
    CHECK_OK(dspy_gguf_writer_new(tmp_path("short.gguf"), &w));
    dspy_gguf_writer_tensor(w, "t", GGML_TYPE_F32, 1, ne1);
    CHECK_OK(dspy_gguf_writer_begin(w));
    CHECK_STATUS(dspy_gguf_writer_close(w), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "never written");
    struct stat sb;
    CHECK(stat(tmp_path("short.gguf"), &sb) != 0);
}

/* ---- malformed files -------------------------------------------------------------------- */

typedef struct {
    unsigned char b[4096];
    size_t n;
} bytes;

static void put(bytes *x, const void *p, size_t n) {
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void put32(bytes *x, uint32_t v) { put(x, &v, 4); }
static void put64(bytes *x, uint64_t v) { put(x, &v, 8); }
static void putstr(bytes *x, const char *s) {
    put64(x, strlen(s));
    put(x, s, strlen(s));
}

static void header(bytes *x, uint32_t version, uint64_t nt, uint64_t nkv) {
    x->n = 0;
    put(x, "GGUF", 4);
    put32(x, version);
    put64(x, nt);
    put64(x, nkv);
}

/* One tensor info; then pads to 32 and adds `data` bytes of zeros. */
static void tensor(bytes *x, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    putstr(x, name);
    put32(x, nd);
    for (uint32_t i = 0; i < nd; i++) put64(x, ne[i]);
    put32(x, type);
    put64(x, off);
}

static void finish(bytes *x, size_t data) {
    while (x->n % 32) x->b[x->n++] = 0;
    memset(x->b + x->n, 0, data);
    x->n += data;
}

static void expect_bad(const bytes *x, const char *needle) {
    const char *path = tmp_path("bad.gguf");
    CHECK_OK(dspy_write_file(path, x->b, x->n));
    dspy_gguf *g = NULL;
    dspy_status st = dspy_gguf_open(path, &g);
    check_report(st == DSPY_ERR_FORMAT && g == NULL, __FILE__, __LINE__, "bad file (%s) -> %s: %s", needle,
                 dspy_status_name(st), dspy_errmsg());
    CHECK_CONTAINS(dspy_errmsg(), needle);
    CHECK_CONTAINS(dspy_errmsg(), "bad.gguf");
    dspy_gguf_free(g);
}

static void test_bad_files(void) {
    bytes x;
    uint64_t ne[2] = {32, 2};
    header(&x, 3, 0, 0);
    memcpy(x.b, "GGUG", 4);
    finish(&x, 0);
    expect_bad(&x, "not a GGUF file");
    header(&x, 1, 0, 0);
    finish(&x, 0);
    expect_bad(&x, "version 1");
    header(&x, 3, 0, 1);
    putstr(&x, "general.architecture");
    put32(&x, DSPY_GGUF_STRING);
    put64(&x, 1000); /* string longer than the file */
    put(&x, "llama", 5);
    expect_bad(&x, "truncated");
    header(&x, 3, 0, 1ull << 40);
    finish(&x, 0);
    expect_bad(&x, "more than the file can hold");
    header(&x, 3, 0, 1);
    putstr(&x, "a");
    put32(&x, 13);
    put32(&x, 0);
    expect_bad(&x, "unknown value type 13");
    header(&x, 3, 0, 1);
    putstr(&x, "a");
    put32(&x, DSPY_GGUF_ARRAY);
    put32(&x, DSPY_GGUF_ARRAY);
    put64(&x, 1);
    finish(&x, 0);
    expect_bad(&x, "array of arrays");
    header(&x, 3, 0, 1);
    putstr(&x, "a");
    put32(&x, DSPY_GGUF_ARRAY);
    put32(&x, DSPY_GGUF_STRING);
    put64(&x, 1ull << 60); /* count far past the file */
    finish(&x, 0);
    expect_bad(&x, "truncated");
    header(&x, 3, 0, 2);
    putstr(&x, "k");
    put32(&x, DSPY_GGUF_U32);
    put32(&x, 1);
    putstr(&x, "k");
    put32(&x, DSPY_GGUF_U32);
    put32(&x, 2);
    finish(&x, 0);
    expect_bad(&x, "appears twice");
    header(&x, 3, 0, 1);
    putstr(&x, "general.alignment");
    put32(&x, DSPY_GGUF_U32);
    put32(&x, 24);
    finish(&x, 0);
    expect_bad(&x, "power of two");
    uint64_t ne5[5] = {1, 1, 1, 1, 1};
    header(&x, 3, 1, 0);
    tensor(&x, "t", 5, ne5, GGML_TYPE_F32, 0);
    finish(&x, 32);
    expect_bad(&x, "5 dimensions");
    header(&x, 3, 1, 0);
    tensor(&x, "t", 2, ne, 77, 0);
    finish(&x, 256);
    expect_bad(&x, "unknown ggml type 77");
    uint64_t ne33[2] = {33, 1};
    header(&x, 3, 1, 0);
    tensor(&x, "t", 2, ne33, GGML_TYPE_Q8_0, 0);
    finish(&x, 256);
    expect_bad(&x, "not a multiple of its block size 32");
    header(&x, 3, 1, 0);
    tensor(&x, "t", 2, ne, GGML_TYPE_F32, 16);
    finish(&x, 512);
    expect_bad(&x, "not a multiple of the alignment");
    header(&x, 3, 1, 0);
    tensor(&x, "t", 2, ne, GGML_TYPE_F32, 0);
    finish(&x, 255); /* one byte short */
    expect_bad(&x, "runs past the end");
    header(&x, 3, 2, 0);
    tensor(&x, "t", 2, ne, GGML_TYPE_F32, 0);
    tensor(&x, "t", 2, ne, GGML_TYPE_F32, 256);
    finish(&x, 512);
    expect_bad(&x, "appears twice");
    uint64_t huge[2] = {1ull << 40, 1ull << 40};
    header(&x, 3, 1, 0);
    tensor(&x, "t", 2, huge, GGML_TYPE_F32, 0);
    finish(&x, 32);
    expect_bad(&x, "too large");
    /* every prefix of a valid file is refused cleanly */
    header(&x, 3, 1, 1);
    putstr(&x, "general.architecture");
    put32(&x, DSPY_GGUF_STRING);
    putstr(&x, "llama");
    tensor(&x, "t", 2, ne, GGML_TYPE_F32, 0);
    finish(&x, 256);
    size_t full = x.n;
    int wrong = 0;
    for (size_t cut = 0; cut < full; cut += 7) {
        x.n = cut;
        const char *path = tmp_path("cut.gguf");
        dspy_write_file(path, x.b, x.n);
        dspy_gguf *g = NULL;
        dspy_status st = dspy_gguf_open(path, &g);
        wrong += st != DSPY_ERR_FORMAT || g != NULL;
        dspy_gguf_free(g);
    }
    CHECK_INT(wrong, 0);
    x.n = full;
    dspy_write_file(tmp_path("ok.gguf"), x.b, x.n);
    dspy_gguf *g = NULL;
    CHECK_OK(dspy_gguf_open(tmp_path("ok.gguf"), &g));
    dspy_gguf_free(g);
    CHECK_STATUS(dspy_gguf_open(tmp_path("no-such.gguf"), &g), DSPY_ERR_NOTFOUND);
}

/* ---- model directory <-> GGUF ----------------------------------------------------------- */

static char g_model[512]; /* a tiny llama, f32, real tokenizer */

static bool make_model(const char *dir, const char *arch, const char *seed) {
    const char *args[] = {"--arch", arch, "--preset", "tiny", "--dtype", "f32", "--seed", seed, "--tokenizer",
                          test_shared("models/llama3-tokenizer"), "--out", dir, NULL};
    test_run_result r = test_run_dspy("init-model", args);
    bool ok = r.status == 0;
    if (!ok) fprintf(stderr, "init-model failed: %s\n", r.err);
    test_run_free(&r);
    return ok;
}

static bool export_to(const char *dir, const char *out, dspy_gguf_dtype dt) {
    dspy_gguf_export_params p = dspy_gguf_export_params_default();
    p.dtype = dt;
    dspy_status st = dspy_gguf_export(dir, out, &p);
    check_report(st == DSPY_OK, __FILE__, __LINE__, "export %s -> %s: %s", dir, out, dspy_errmsg());
    return st == DSPY_OK;
}

static void expect_same_config(const dspy_model_config *a, const dspy_model_config *b) {
    CHECK_INT(a->arch, b->arch);
    CHECK_INT(a->vocab_size, b->vocab_size);
    CHECK_INT(a->hidden_size, b->hidden_size);
    CHECK_INT(a->intermediate_size, b->intermediate_size);
    CHECK_INT(a->num_hidden_layers, b->num_hidden_layers);
    CHECK_INT(a->num_attention_heads, b->num_attention_heads);
    CHECK_INT(a->num_key_value_heads, b->num_key_value_heads);
    CHECK_INT(a->head_dim, b->head_dim);
    CHECK_INT(a->max_position_embeddings, b->max_position_embeddings);
    CHECK(a->rms_norm_eps == b->rms_norm_eps);
    CHECK(a->rope_theta == b->rope_theta);
    CHECK_INT(a->rope_type, b->rope_type);
    if (a->rope_type == DSPY_ROPE_LLAMA3 && b->rope_type == DSPY_ROPE_LLAMA3) {
        CHECK_NEAR(a->rope_factor, b->rope_factor, 1e-6);
        CHECK_NEAR(a->rope_low_freq_factor, b->rope_low_freq_factor, 1e-6);
        CHECK_NEAR(a->rope_high_freq_factor, b->rope_high_freq_factor, 1e-6);
        CHECK_INT(a->rope_original_max_position_embeddings, b->rope_original_max_position_embeddings);
    }
    CHECK_INT(a->tie_word_embeddings, b->tie_word_embeddings);
    CHECK_INT(a->qkv_bias, b->qkv_bias);
    CHECK_INT(a->o_bias, b->o_bias);
    CHECK_INT(a->bos_token_id, b->bos_token_id);
    /* eos: the ids llama.cpp ends generation on (eos, eot, and <|end_of_text|> by its text) come back;
     * 128008 does not, as the shared Llama 3.0 tokenizer names it <|reserved_special_token_4|> */
    for (int j = 0; j < b->n_eos; j++) {
        bool found = false;
        for (int i = 0; i < a->n_eos; i++) found |= a->eos_token_ids[i] == b->eos_token_ids[j];
        check_report(found, __FILE__, __LINE__, "imported eos id %d was an eos id", b->eos_token_ids[j]);
    }
    static const int32_t must[] = {128001, 128009};
    for (int k = 0; k < 2; k++) {
        bool found = false;
        for (int j = 0; j < b->n_eos; j++) found |= b->eos_token_ids[j] == must[k];
        check_report(found, __FILE__, __LINE__, "eos id %d survives the round trip", must[k]);
    }
    CHECK_INT(a->gen_do_sample, b->gen_do_sample);
    CHECK_NEAR(a->gen_temperature, b->gen_temperature, 1e-7);
    CHECK_NEAR(a->gen_top_p, b->gen_top_p, 1e-7);
}

/* Compares every tensor of the original checkpoint with the imported one, as `dt` stores it. */
static void expect_same_tensors(const char *dir, const char *gguf, dspy_gguf_dtype dt) {
    dspy_checkpoint *a = NULL, *b = NULL;
    CHECK_OK(dspy_checkpoint_open(dir, &a));
    CHECK_OK(dspy_checkpoint_open(gguf, &b)); /* the .gguf hook of dspy_checkpoint_open */
    if (!a || !b) goto done;
    CHECK_STR(dspy_checkpoint_where(b), gguf);
    size_t checked = 0, bad = 0;
    for (size_t i = 0; i < dspy_checkpoint_count(a); i++) {
        const dspy_tensor_info *ta = dspy_checkpoint_at(a, i);
        if (strcmp(ta->name, "lm_head.weight") == 0) continue; /* tied: not exported */
        const dspy_tensor_info *tb = dspy_checkpoint_find(b, ta->name);
        check_report(tb != NULL, __FILE__, __LINE__, "%s: tensor %s imported", gguf, ta->name);
        if (!tb) continue;
        CHECK_INT(tb->ndim, ta->ndim);
        for (int d = 0; d < ta->ndim; d++) CHECK_INT(tb->shape[d], ta->shape[d]);
        size_t n = (size_t)dspy_tensor_numel(ta);
        float *x = malloc(n * 4), *y = malloc(n * 4);
        CHECK_OK(dspy_tensor_to_f32(ta, x));
        CHECK_OK(dspy_tensor_to_f32(tb, y));
        bool matrix = ta->ndim == 2;
        for (size_t j = 0; j < n; j++) {
            float want = x[j];
            if (matrix && dt == DSPY_GGUF_DTYPE_BF16) want = dspy_bf16_to_f32(dspy_f32_to_bf16(x[j]));
            if (matrix && dt == DSPY_GGUF_DTYPE_F16) want = dspy_f16_to_f32(dspy_f32_to_f16(x[j]));
            bool ok;
            if (matrix && dt == DSPY_GGUF_DTYPE_Q8_0) {
                /* each value within half a step of its block's scale d (q is rounded with the fp32 d,
                 * the file keeps d in fp16: 127 * 2^-11 d more) */
                size_t blk = j / 32 * 32;
                float amax = 0;
                for (size_t k = blk; k < blk + 32; k++) amax = fmaxf(amax, fabsf(x[k]));
                ok = fabsf(y[j] - x[j]) <= 0.57f * amax / 127.0f + 1e-12f; /* d/2, plus 127 x d's fp16 rounding */
            } else {
                ok = memcmp(&want, &y[j], 4) == 0;
            }
            bad += !ok;
        }
        checked++;
        free(x);
        free(y);
    }
    CHECK(checked >= 20);
    check_report(bad == 0, __FILE__, __LINE__, "%s: %zu values differ from the original", gguf, bad);
    CHECK_INT(dspy_checkpoint_count(b), checked);
done:
    dspy_checkpoint_free(a);
    dspy_checkpoint_free(b);
}

static void test_roundtrip(void) {
    snprintf(g_model, sizeof g_model, "%s", tmp_path("tiny"));
    if (!make_model(g_model, "llama", "3")) {
        CHECK(false);
        return;
    }
    dspy_model_config orig;
    CHECK_OK(dspy_model_config_load(g_model, &orig));
    static const dspy_gguf_dtype dts[] = {DSPY_GGUF_DTYPE_F32, DSPY_GGUF_DTYPE_F16, DSPY_GGUF_DTYPE_BF16,
                                          DSPY_GGUF_DTYPE_Q8_0};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "tiny-%s.gguf", dspy_gguf_dtype_name(dts[i]));
        const char *out = tmp_path(name);
        if (!export_to(g_model, out, dts[i])) continue;
        dspy_model_config c;
        CHECK_OK(dspy_model_config_load(out, &c)); /* the .gguf hook of dspy_model_config_load */
        expect_same_config(&orig, &c);
        expect_same_tensors(g_model, out, dts[i]);
        dspy_gguf *g;
        CHECK_OK(dspy_gguf_open(out, &g));
        if (!g) continue;
        int64_t ft;
        static const int64_t file_types[] = {0, 1, 32, 7};
        CHECK(dspy_gguf_get_int(g, "general.file_type", &ft) && ft == file_types[i]);
        CHECK_STR(dspy_gguf_get_str(g, "general.name"), "tiny");
        const dspy_gguf_tensor *norm = dspy_gguf_tensor_find(g, "blk.0.attn_norm.weight");
        CHECK(norm && norm->type == GGML_TYPE_F32); /* 1-D stays F32 */
        CHECK(dspy_gguf_tensor_find(g, "output.weight") == NULL); /* tied */
        CHECK(dspy_gguf_tensor_find(g, "rope_freqs.weight") == NULL); /* preset: plain RoPE */
        dspy_gguf_free(g);
    }

    /* f32: the imported model computes bit-identical logits */
    dspy_model *a = NULL, *b = NULL;
    CHECK_OK(dspy_model_load(g_model, NULL, &a));
    CHECK_OK(dspy_model_load(tmp_path("tiny-f32.gguf"), NULL, &b));
    if (a && b) {
        int32_t ids[12] = {128000, 9906, 1917, 0, 25, 1234, 77, 128009, 5, 99999, 42, 314};
        int32_t V = dspy_model_config_get(a)->vocab_size;
        float *la = malloc(sizeof(float) * 12 * (size_t)V), *lb = malloc(sizeof(float) * 12 * (size_t)V);
        CHECK_OK(dspy_model_forward_logits(a, ids, 12, la));
        CHECK_OK(dspy_model_forward_logits(b, ids, 12, lb));
        CHECK(memcmp(la, lb, sizeof(float) * 12 * (size_t)V) == 0);
        free(la);
        free(lb);
    }
    dspy_model_free(a);
    dspy_model_free(b);

    /* the CLI on both: `dspy generate --model X.gguf` */
    const char *g1[] = {"--model", g_model, "--prompt", "Hello world", "--max-tokens", "8", "--temperature", "0",
                        "--print-ids", NULL};
    const char *g2[] = {"--model", tmp_path("tiny-f32.gguf"), "--prompt", "Hello world", "--max-tokens", "8",
                        "--temperature", "0", "--print-ids", NULL};
    test_run_result r1 = test_run_dspy("generate", g1), r2 = test_run_dspy("generate", g2);
    CHECK_INT(r1.status, 0);
    CHECK_INT(r2.status, 0);
    CHECK_STR(r2.out, r1.out);
    test_run_free(&r1);
    test_run_free(&r2);
}

static void test_tokenizer_and_template(void) {
    const char *gguf = tmp_path("tiny-bf16.gguf");
    dspy_tokenizer *tok = NULL;
    CHECK_OK(dspy_tokenizer_load(gguf, &tok));
    if (!tok) return;
    CHECK_STR(dspy_tokenizer_pretokenizer(tok), "llama3");
    CHECK_INT(dspy_tokenizer_vocab_size(tok), 128256);
    CHECK_INT(dspy_tokenizer_bos_id(tok), 128000);
    CHECK_INT(dspy_tokenizer_eos_id(tok), 128009);
    CHECK(dspy_tokenizer_is_special(tok, 128009));
    /* the vocabulary and merges the GGUF's metadata gives (written as JSON text, read back by
     * tokenizer_lists.c) build the tables tokenizer.json's give, byte for byte */
    dspy_tokenizer *ref = NULL;
    CHECK_OK(dspy_tokenizer_load(test_shared("models/llama3-tokenizer/tokenizer.json"), &ref));
    if (ref) {
        CHECK_INT(tok->n_merges, ref->n_merges);
        CHECK(tok->merge_mask == ref->merge_mask &&
              memcmp(tok->merges, ref->merges, (size_t)(ref->merge_mask + 1) * sizeof *ref->merges) == 0);
        CHECK(tok->vocab_mask == ref->vocab_mask &&
              memcmp(tok->vocab_slots, ref->vocab_slots, ((size_t)ref->vocab_mask + 1) * sizeof *ref->vocab_slots) == 0);
        CHECK(tok->bytes_off[128000] == ref->bytes_off[128000] &&
              memcmp(tok->bytes_blob, ref->bytes_blob, ref->bytes_off[128000]) == 0);
        dspy_tokenizer_free(ref);
    }
    /* every reference encoding of HF's tokenizer */
    char *text = NULL;
    size_t len;
    CHECK_OK(dspy_read_file(test_shared("models/llama3-tokenizer/test_vectors.jsonl"), &text, &len));
    size_t lines = 0, bad = 0;
    for (char *line = text, *next; text && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (!o) continue;
        const char *t = json_string_value(json_object_get(o, "text"));
        json_t *want = json_object_get(o, "ids");
        int32_t *ids = NULL;
        size_t n = 0;
        bool ok = t && dspy_tokenizer_encode(tok, t, json_string_length(json_object_get(o, "text")), false, true, &ids,
                                             &n) == DSPY_OK &&
                  n == json_array_size(want);
        for (size_t i = 0; ok && i < n; i++) ok = ids[i] == json_integer_value(json_array_get(want, i));
        bad += !ok;
        lines++;
        free(ids);
        json_decref(o);
    }
    free(text);
    CHECK_INT(lines, 13110);
    check_report(bad == 0, __FILE__, __LINE__, "%zu of %zu reference encodings differ through the GGUF tokenizer", bad,
                 lines);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(dspy_tokenizer_encode(tok, "Hi", 2, true, true, &ids, &n));
    CHECK(n == 2 && ids[0] == 128000); /* add_bos_token */
    free(ids);
    dspy_tokenizer_free(tok);

    /* the chat template against transformers' renderings */
    dspy_chat_template *tpl = NULL;
    CHECK_OK(dspy_chat_template_load(gguf, &tpl));
    if (!tpl) return;
    CHECK_STR(dspy_chat_template_name(tpl), "llama3");
    CHECK_OK(dspy_read_file(test_shared("models/llama3-tokenizer/chat_vectors.jsonl"), &text, &len));
    size_t vectors = 0;
    for (char *line = text, *next; text && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (!o) continue;
        dspy_str out = DSPY_STR_INIT;
        CHECK_OK(test_chat_render_vector(tpl, o, &out));
        CHECK_STR(dspy_str_cstr(&out), json_string_value(json_object_get(o, "rendered")));
        dspy_str_free(&out);
        vectors++;
        json_decref(o);
    }
    free(text);
    CHECK_INT(vectors, 2);
    dspy_chat_template_free(tpl);
}

/* Llama 3.1 RoPE survives as rope_freqs.weight: the converter's factors, and the parameters back. */
static void test_llama3_rope(void) {
    struct {
        double factor, low, high;
        int orig;
    } cases[] = {{32, 1, 4, 8192}, {8, 0.25, 4, 8192}, {16, 2, 8, 8192}};
    const char *d = tmp_path("rope");
    if (!make_model(d, "llama", "5")) return;
    for (int i = 0; i < 3; i++) { /* one checkpoint, three configs */
        dspy_model_config c;
        CHECK_OK(dspy_model_config_load(d, &c));
        c.rope_type = DSPY_ROPE_LLAMA3;
        c.rope_factor = cases[i].factor;
        c.rope_low_freq_factor = cases[i].low;
        c.rope_high_freq_factor = cases[i].high;
        c.rope_original_max_position_embeddings = cases[i].orig;
        char *json = dspy_model_config_to_json(&c);
        dspy_str p = DSPY_STR_INIT;
        dspy_str_appendf(&p, "%s/config.json", d);
        CHECK_OK(dspy_write_file(p.ptr, json, strlen(json)));
        free(json);
        dspy_str_free(&p);
        dspy_model_config orig;
        CHECK_OK(dspy_model_config_load(d, &orig));
        const char *out = tmp_path("rope.gguf");
        if (!export_to(d, out, DSPY_GGUF_DTYPE_F32)) continue;
        dspy_gguf *g;
        CHECK_OK(dspy_gguf_open(out, &g));
        const dspy_gguf_tensor *rf = g ? dspy_gguf_tensor_find(g, "rope_freqs.weight") : NULL;
        CHECK(rf && rf->type == GGML_TYPE_F32 && rf->ne[0] == c.head_dim / 2);
        if (rf) {
            /* llama.cpp divides each base frequency by these: base/factor == transformers' inv_freq */
            float base[64], scaled[64];
            dspy_model_config b = orig;
            b.rope_type = DSPY_ROPE_DEFAULT;
            dspy_rope_inv_freq(&b, base);
            dspy_rope_inv_freq(&orig, scaled);
            const float *r = rf->data;
            double worst = 0;
            for (int k = 0; k < c.head_dim / 2; k++) worst = fmax(worst, fabs(base[k] / r[k] / scaled[k] - 1));
            CHECK(worst < 1e-6);
        }
        dspy_gguf_free(g);
        dspy_model_config back;
        CHECK_OK(dspy_model_config_load(out, &back));
        CHECK_INT(back.rope_type, DSPY_ROPE_LLAMA3);
        /* the same frequencies (the band itself is recovered exactly when two pairs fall in it) */
        float f1[64], f2[64];
        dspy_rope_inv_freq(&orig, f1);
        dspy_rope_inv_freq(&back, f2);
        double worst = 0;
        for (int k = 0; k < c.head_dim / 2; k++) worst = fmax(worst, fabs(f2[k] / f1[k] - 1));
        check_report(worst < 1e-5, __FILE__, __LINE__, "case %d: inverse frequencies differ by %g", i, worst);
        CHECK_NEAR(back.rope_factor, cases[i].factor, 1e-6);
        if (i == 1) { /* two pairs in the band: low and high come back exactly */
            CHECK_NEAR(back.rope_low_freq_factor, 0.25, 1e-6);
            CHECK_NEAR(back.rope_high_freq_factor, 4, 1e-6);
        }
        dspy_model *m1 = NULL, *m2 = NULL;
        CHECK_OK(dspy_model_load(d, NULL, &m1));
        CHECK_OK(dspy_model_load(out, NULL, &m2));
        if (m1 && m2) {
            int32_t ids[6] = {128000, 9906, 1917, 25, 1234, 77};
            int32_t V = orig.vocab_size;
            float *la = malloc(sizeof(float) * 6 * (size_t)V), *lb = malloc(sizeof(float) * 6 * (size_t)V);
            CHECK_OK(dspy_model_forward_logits(m1, ids, 6, la));
            CHECK_OK(dspy_model_forward_logits(m2, ids, 6, lb));
            double err = 0;
            for (size_t k = 0; k < 6 * (size_t)V; k++) err = fmax(err, fabs(la[k] - lb[k]));
            check_report(err < 1e-5, __FILE__, __LINE__, "case %d: logits differ by %g", i, err);
            free(la);
            free(lb);
        }
        dspy_model_free(m1);
        dspy_model_free(m2);
    }
}

/* qwen2: no permutation, q/k/v biases. */
static void test_qwen2(void) {
    const char *d = tmp_path("qwen");
    if (!make_model(d, "qwen2", "7")) return;
    const char *out = tmp_path("qwen.gguf");
    if (!export_to(d, out, DSPY_GGUF_DTYPE_F32)) return;
    dspy_model_config a, b;
    CHECK_OK(dspy_model_config_load(d, &a));
    CHECK_OK(dspy_model_config_load(out, &b));
    expect_same_config(&a, &b);
    expect_same_tensors(d, out, DSPY_GGUF_DTYPE_F32);
    dspy_gguf *g;
    CHECK_OK(dspy_gguf_open(out, &g));
    if (g) {
        CHECK_STR(dspy_gguf_get_str(g, "general.architecture"), "qwen2");
        CHECK(dspy_gguf_tensor_find(g, "blk.1.attn_k.bias") != NULL);
        /* no permutation: q rows as in the HF file */
        dspy_checkpoint *ck;
        CHECK_OK(dspy_checkpoint_open(d, &ck));
        const dspy_tensor_info *q = ck ? dspy_checkpoint_find(ck, "model.layers.0.self_attn.q_proj.weight") : NULL;
        const dspy_gguf_tensor *gq = dspy_gguf_tensor_find(g, "blk.0.attn_q.weight");
        CHECK(q && gq && memcmp(q->data, gq->data, q->nbytes) == 0);
        dspy_checkpoint_free(ck);
        dspy_gguf_free(g);
    }
}

static void test_errors(void) {
    /* no tokenizer.json: nothing written */
    const char *d = tmp_path("notok");
    dspy_model_config c;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &c));
    c.vocab_size = 512;
    c.bos_token_id = -1;
    c.n_eos = 0;
    CHECK_OK(dspy_model_write_random(d, &c, 1, DSPY_DTYPE_BF16, true));
    const char *out = tmp_path("notok.gguf");
    CHECK_STATUS(dspy_gguf_export(d, out, NULL), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "no tokenizer.json");
    struct stat sb;
    CHECK(stat(out, &sb) != 0);
    /* a vocabulary larger than the model's */
    const char *args[] = {"--preset", "tiny", "--vocab", "512", "--tokenizer", test_shared("models/llama3-tokenizer"),
                          "--out", tmp_path("small-vocab"), NULL};
    test_run_result r = test_run_dspy("init-model", args);
    test_run_free(&r);
    CHECK_STATUS(dspy_gguf_export(tmp_path("small-vocab"), out, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "vocab_size is 512");
    CHECK(stat(out, &sb) != 0);
    /* a tensor type dspy.c does not read: a file with a Q4_K matrix */
    dspy_gguf_writer *w;
    CHECK_OK(dspy_gguf_writer_new(tmp_path("q4k.gguf"), &w));
    dspy_gguf_kv_str(w, "general.architecture", "llama");
    const char *keys[] = {"llama.embedding_length", "llama.feed_forward_length", "llama.block_count",
                          "llama.attention.head_count", "llama.context_length"};
    uint32_t vals[] = {256, 256, 1, 4, 128};
    for (int i = 0; i < 5; i++) dspy_gguf_kv_u32(w, keys[i], vals[i]);
    dspy_gguf_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    int64_t ne[2] = {256, 16};
    dspy_gguf_writer_tensor(w, "token_embd.weight", 12 /* Q4_K */, 2, ne);
    CHECK_OK(dspy_gguf_writer_begin(w));
    static unsigned char q4k[16 * 144];
    CHECK_OK(dspy_gguf_writer_put(w, q4k, sizeof q4k));
    CHECK_OK(dspy_gguf_writer_close(w));
    dspy_checkpoint *ck = NULL;
    CHECK_STATUS(dspy_checkpoint_open(tmp_path("q4k.gguf"), &ck), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "Q4_K");
    CHECK(ck == NULL);
    /* an architecture dspy.c does not run */
    CHECK_OK(dspy_gguf_writer_new(tmp_path("gemma.gguf"), &w));
    dspy_gguf_kv_str(w, "general.architecture", "gemma2");
    CHECK_OK(dspy_gguf_writer_begin(w));
    CHECK_OK(dspy_gguf_writer_close(w));
    CHECK_STATUS(dspy_model_config_load(tmp_path("gemma.gguf"), &c), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "\"gemma2\" is not supported");
    dspy_tokenizer *tok = NULL;
    CHECK_STATUS(dspy_tokenizer_load(tmp_path("gemma.gguf"), &tok), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "tokenizer.ggml.model");
    /* a vocabulary with a token that is not UTF-8, and one whose merges list is: said as such
     * (the vocabulary goes through JSON text, tokenizer_lists.c) */
    for (int bad_merge = 0; bad_merge < 2; bad_merge++) {
        char name[64];
        snprintf(name, sizeof name, "badtok%d.gguf", bad_merge);
        CHECK_OK(dspy_gguf_writer_new(tmp_path(name), &w));
        dspy_gguf_kv_str(w, "general.architecture", "llama");
        dspy_gguf_kv_str(w, "tokenizer.ggml.model", "gpt2");
        dspy_gguf_kv_str(w, "tokenizer.ggml.pre", "llama-bpe");
        const char *toks[] = {"a", bad_merge ? "b" : "\xc3(", "ab"};
        const size_t tl[] = {1, bad_merge ? 1 : 2, 2};
        dspy_gguf_kv_str_arr(w, "tokenizer.ggml.tokens", toks, tl, 3);
        const char *merges[] = {bad_merge ? "a \xff" : "a b"};
        const size_t ml[] = {3};
        dspy_gguf_kv_str_arr(w, "tokenizer.ggml.merges", merges, ml, 1);
        CHECK_OK(dspy_gguf_writer_begin(w));
        CHECK_OK(dspy_gguf_writer_close(w));
        CHECK_STATUS(dspy_tokenizer_load(tmp_path(name), &tok), DSPY_ERR_FORMAT);
        CHECK_CONTAINS(dspy_errmsg(), bad_merge ? "merge 0 is not valid UTF-8" : "token 1 is not valid UTF-8");
        CHECK(tok == NULL);
    }

    /* the CLI: options checked before any work, one error line, non-zero exit */
    const char *bad_dtype[] = {"--model", g_model, "--out", tmp_path("x.gguf"), "--dtype", "q4_0", NULL};
    r = test_run_dspy("export", bad_dtype);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "--dtype must be f32, f16, bf16 or q8_0");
    test_run_free(&r);
    const char *bad_fmt[] = {"--format", "onnx", "--model", g_model, "--out", tmp_path("x.gguf"), NULL};
    r = test_run_dspy("export", bad_fmt);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "--format onnx is not supported");
    test_run_free(&r);
    const char *bad_out[] = {"--model", g_model, "--out", tmp_path("x.bin"), NULL};
    r = test_run_dspy("export", bad_out);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "must end in .gguf");
    test_run_free(&r);
    const char *no_model[] = {"--model", tmp_path("nope"), "--out", tmp_path("x.gguf"), NULL};
    r = test_run_dspy("export", no_model);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "is not a directory");
    test_run_free(&r);
    const char *gen_missing[] = {"--model", tmp_path("missing.gguf"), "--prompt-ids", "1", NULL};
    r = test_run_dspy("generate", gen_missing);
    CHECK(r.status != 0);
    CHECK_CONTAINS(r.err, "error: ");
    CHECK_CONTAINS(r.err, "missing.gguf");
    test_run_free(&r);
    /* the CLI happy path: file, Modelfile, summary line */
    const char *sub = tmp_path("out/sub/m.gguf");
    const char *ok[] = {"--model", g_model, "--out", sub, "--dtype", "q8_0", "--ollama", NULL};
    r = test_run_dspy("export", ok);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "GGUF v3, llama, q8_0, 20 tensors");
    test_run_free(&r);
    char *mf = test_slurp(tmp_path("out/sub/Modelfile"));
    CHECK_CONTAINS(mf, "FROM ./m.gguf\n");
    CHECK_CONTAINS(mf, "<|start_header_id|>{{ .Role }}<|end_header_id|>");
    CHECK_CONTAINS(mf, "PARAMETER stop \"<|eot_id|>\"");
    CHECK_CONTAINS(mf, "PARAMETER temperature 0.6\nPARAMETER top_p 0.9\n"); /* the preset's generation_config */
    free(mf);
}

int main(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        fprintf(stderr, "test_gguf: ../shared/models/llama3-tokenizer is missing\n");
        return 1;
    }
    RUN(test_q8_0);
    RUN(test_permute);
    RUN(test_write_read);
    RUN(test_bad_files);
    RUN(test_roundtrip);
    RUN(test_tokenizer_and_template);
    RUN(test_llama3_rope);
    RUN(test_qwen2);
    RUN(test_errors);
    return check_summary("test_gguf");
}
