/* test_safetensors.c — safetensors reading/writing, sharded checkpoints, model loading errors.
 *
 * Round trips (write -> mmap -> equal), a file written by Hugging Face (the fixtures), element
 * conversions against known bit patterns, and one malformed input per rule with its message:
 * truncated files, headers that lie about sizes, overlaps, gaps, unknown dtypes, missing
 * tensors, wrong shapes, impossible configs — through the library and through the CLI (one
 * `error:` line, non-zero exit).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "f8_ref.h"
#include "dspy/backend.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

static const char *tmp_path(const char *name) {
    static char buf[32][512];
    static int k;
    char *p = buf[k++ % 32];
    snprintf(p, 512, "%s/%s", test_tmpdir(), name);
    return p;
}

static void test_conversions(void) {
    CHECK_INT(dspy_f32_to_bf16(1.0f), 0x3f80);
    CHECK_INT(dspy_f32_to_bf16(-2.0f), 0xc000);
    float tie_even, tie_odd, above;
    uint32_t u = 0x3f808000u; /* exactly between 0x3f80 and 0x3f81: rounds to even 0x3f80 */
    memcpy(&tie_even, &u, 4);
    u = 0x3f818000u; /* between 0x3f81 and 0x3f82: rounds to even 0x3f82 */
    memcpy(&tie_odd, &u, 4);
    u = 0x3f808001u;
    memcpy(&above, &u, 4);
    CHECK_INT(dspy_f32_to_bf16(tie_even), 0x3f80);
    CHECK_INT(dspy_f32_to_bf16(tie_odd), 0x3f82);
    CHECK_INT(dspy_f32_to_bf16(above), 0x3f81);
    CHECK_INT(dspy_f32_to_bf16(NAN), 0x7fc0);
    CHECK_INT(dspy_f32_to_bf16(INFINITY), 0x7f80);
    CHECK(dspy_bf16_to_f32(0x3f80) == 1.0f);
    CHECK_INT(dspy_f32_to_f16(1.0f), 0x3c00);
    CHECK_INT(dspy_f32_to_f16(65504.0f), 0x7bff);
    CHECK_INT(dspy_f32_to_f16(65520.0f), 0x7c00);            /* rounds up to inf */
    CHECK_INT(dspy_f32_to_f16(ldexpf(1, -24)), 0x0001);      /* smallest subnormal */
    CHECK_INT(dspy_f32_to_f16(ldexpf(1, -25)), 0x0000);      /* tie to even: 0 */
    CHECK_INT(dspy_f32_to_f16(ldexpf(3, -25)), 0x0002);      /* tie to even: 2 */
    CHECK_INT(dspy_f32_to_f16(-0.0f), 0x8000);
    CHECK_INT(dspy_f32_to_f16(NAN) & 0x7e00, 0x7e00);
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaNs */
        if (dspy_f32_to_f16(dspy_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK_INT(bad, 0);
    CHECK(dspy_f16_to_f32(0x0001) == ldexpf(1, -24));
    CHECK(dspy_f16_to_f32(0xfc00) == -INFINITY);
}

static void test_roundtrip(void) {
    float a[6] = {1, -2, 3.5f, 1e-8f, -0.0f, 65504};
    float b[4] = {1.00390625f, 3.14159f, -1e30f, 7};
    float s[1] = {42};
    dspy_tensor_out t[] = {
        {"layer.b16", DSPY_DTYPE_BF16, 2, {2, 2}, b},
        {"layer.f32", DSPY_DTYPE_F32, 2, {2, 3}, a},
        {"scalar", DSPY_DTYPE_F32, 0, {0}, s},
        {"empty", DSPY_DTYPE_F32, 2, {0, 5}, NULL},
        {"half", DSPY_DTYPE_F16, 1, {3}, a},
    };
    const char *meta[] = {"epoch", "3", NULL};
    const char *path = tmp_path("rt.safetensors");
    CHECK_OK(dspy_safetensors_write(path, t, 5, meta));
    char *raw;
    size_t len;
    CHECK_OK(dspy_read_file(path, &raw, &len));
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)raw[i];
    CHECK_INT(hl % 8, 0);
    CHECK(strncmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\",\"epoch\":\"3\"},\"layer.f32\":{\"dtype\":\"F32\","
                           "\"shape\":[2,3],\"data_offsets\":[0,24]}", 99) == 0);
    CHECK_U64(len, 8 + hl + 24 + 4 + 0 + 8 + 6);
    free(raw);

    dspy_safetensors *f;
    CHECK_OK(dspy_safetensors_open(path, &f));
    if (!f) return;
    CHECK_U64(dspy_safetensors_count(f), 5);
    CHECK_STR(dspy_safetensors_metadata(f, "format"), "pt");
    CHECK_STR(dspy_safetensors_metadata(f, "epoch"), "3");
    CHECK(dspy_safetensors_metadata(f, "nope") == NULL);
    CHECK(dspy_safetensors_find(f, "missing") == NULL);
    /* file order: 4-byte types first, then 2-byte, each in caller order */
    CHECK_STR(dspy_safetensors_at(f, 0)->name, "layer.f32");
    CHECK_STR(dspy_safetensors_at(f, 4)->name, "half");
    const dspy_tensor_info *tf = dspy_safetensors_find(f, "layer.f32");
    CHECK(tf && tf->dtype == DSPY_DTYPE_F32 && tf->ndim == 2 && tf->shape[1] == 3 && tf->nbytes == 24);
    float out[8];
    CHECK_OK(dspy_tensor_to_f32(tf, out));
    CHECK(memcmp(out, a, sizeof a) == 0);
    const dspy_tensor_info *tb = dspy_safetensors_find(f, "layer.b16");
    CHECK_OK(dspy_tensor_to_f32(tb, out));
    for (int i = 0; i < 4; i++) CHECK(out[i] == dspy_bf16_to_f32(dspy_f32_to_bf16(b[i])));
    CHECK(out[0] == 1.0f); /* tie rounds to even */
    const dspy_tensor_info *ts = dspy_safetensors_find(f, "scalar");
    CHECK(ts && ts->ndim == 0 && dspy_tensor_numel(ts) == 1 && *(const float *)ts->data == 42);
    const dspy_tensor_info *te = dspy_safetensors_find(f, "empty");
    CHECK(te && dspy_tensor_numel(te) == 0 && te->nbytes == 0);
    const dspy_tensor_info *th = dspy_safetensors_find(f, "half");
    CHECK_OK(dspy_tensor_to_f32(th, out));
    CHECK(out[0] == 1 && out[1] == -2 && out[2] == 3.5f);
    dspy_safetensors_free(f);

    /* writer argument errors */
    dspy_tensor_out dup[] = {{"x", DSPY_DTYPE_F32, 1, {1}, s}, {"x", DSPY_DTYPE_F32, 1, {1}, s}};
    CHECK_STATUS(dspy_safetensors_write(tmp_path("dup.safetensors"), dup, 2, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "tensor \"x\" appears twice");
    dspy_tensor_out i64[] = {{"x", DSPY_DTYPE_I64, 1, {1}, s}};
    CHECK_STATUS(dspy_safetensors_write(tmp_path("i64.safetensors"), i64, 1, NULL), DSPY_ERR_ARG);
    dspy_safetensors_writer *w;
    CHECK_OK(dspy_safetensors_writer_open(tmp_path("partial.safetensors"), t, 2, NULL, &w));
    CHECK_OK(dspy_safetensors_writer_put(w, 1, a));
    CHECK_STATUS(dspy_safetensors_writer_put(w, 1, a), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_safetensors_writer_close(w), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "tensor \"layer.b16\" was never written");
    FILE *gone = fopen(tmp_path("partial.safetensors"), "rb");
    CHECK(gone == NULL);
    if (gone) fclose(gone);
}

/* A file written by Hugging Face's safetensors (the parity fixtures). */
static void test_hf_file(void) {
    const char *p = test_source("tests/ref/models/llama_tied_gqa/model.safetensors");
    dspy_safetensors *f;
    if (dspy_safetensors_open(p, &f) == DSPY_ERR_NOTFOUND) {
        check_skip("fixture absent");
        return;
    }
    CHECK(f != NULL);
    if (!f) return;
    CHECK_STR(dspy_safetensors_metadata(f, "format"), "pt");
    const dspy_tensor_info *t = dspy_safetensors_find(f, "model.embed_tokens.weight");
    CHECK(t && t->dtype == DSPY_DTYPE_F32 && t->shape[0] == 1000 && t->shape[1] == 64);
    CHECK(dspy_safetensors_find(f, "lm_head.weight") == NULL); /* tied: not saved */
    dspy_safetensors_free(f);
}

/* Writes 8-byte length + header (+ padding to `hlen_field` when given) + `data_len` zero bytes. */
static const char *raw_file(const char *name, const char *header, size_t data_len, int64_t hlen_override) {
    const char *path = tmp_path(name);
    FILE *fp = fopen(path, "wb");
    uint64_t hl = hlen_override >= 0 ? (uint64_t)hlen_override : strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < data_len; i++) fputc(0, fp);
    fclose(fp);
    return path;
}

static void expect_bad(const char *path, const char *msg) {
    dspy_safetensors *f = (dspy_safetensors *)1;
    dspy_status st = dspy_safetensors_open(path, &f);
    check_report(st == DSPY_ERR_FORMAT, __FILE__, __LINE__, "%s: status %s (%s)", path, dspy_status_name(st),
                 dspy_errmsg());
    CHECK(f == NULL);
    CHECK_CONTAINS(dspy_errmsg(), path);
    CHECK_CONTAINS(dspy_errmsg(), msg);
}

static void test_malformed(void) {
    const char *p = tmp_path("short.safetensors");
    FILE *fp = fopen(p, "wb");
    fwrite("abcde", 1, 5, fp);
    fclose(fp);
    expect_bad(p, "file is 5 bytes, too short");
    expect_bad(raw_file("hlen.safetensors", "{}", 0, 1000), "header length 1000 runs past the end of the file");
    expect_bad(raw_file("json.safetensors", "{\"a\": ", 0, -1), "header is not valid JSON");
    expect_bad(raw_file("arr.safetensors", "[1, 2]", 0, -1), "header must be a JSON object");
    expect_bad(raw_file("lie.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20, -1),
               "tensor \"w\": shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] span 20");
    expect_bad(raw_file("trunc.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 10, -1),
               "tensor \"w\": data_offsets [0, 24] run past the end of the data buffer (10 bytes)");
    expect_bad(raw_file("overlap.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[16,40]}}", 40, -1),
               "tensors \"a\" [0, 24) and \"b\" [16, 40) overlap");
    expect_bad(raw_file("gap.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 24, -1),
               "data bytes [8, 16) before tensor \"b\" belong to no tensor");
    expect_bad(raw_file("trailing.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, -1),
               "the data buffer has 12 bytes but the tensors cover 8");
    expect_bad(raw_file("dtype.safetensors", "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1),
               "tensor \"a\": unknown dtype \"Q4\"");
    expect_bad(raw_file("nooff.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, -1),
               "tensor \"a\": \"data_offsets\" must be [begin, end]");
    expect_bad(raw_file("neg.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, -1),
               "tensor \"a\": shape entry 0 is not a non-negative integer");
    expect_bad(raw_file("rev.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, -1),
               "data_offsets [8, 0] end before they begin");
    expect_bad(raw_file("dupkey.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1),
               "header is not valid JSON");
    expect_bad(raw_file("meta.safetensors", "{\"__metadata__\":{\"format\":1}}", 0, -1),
               "\"__metadata__\".\"format\" must be a string");
    expect_bad(raw_file("huge.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, -1),
               "tensor \"a\": shape is too large");
    dspy_safetensors *f;
    CHECK_STATUS(dspy_safetensors_open(tmp_path("absent.safetensors"), &f), DSPY_ERR_NOTFOUND);
    /* I64 tensors open (they are measured) but cannot be loaded as weights */
    const char *ip = raw_file("i64.safetensors", "{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, -1);
    CHECK_OK(dspy_safetensors_open(ip, &f));
    float x[1];
    if (f) {
        CHECK_STATUS(dspy_tensor_to_f32(dspy_safetensors_at(f, 0), x), DSPY_ERR_FORMAT);
        CHECK_CONTAINS(dspy_errmsg(), "tensor \"a\" has dtype I64");
        dspy_safetensors_free(f);
    }
}

static void write_text(const char *path, const char *text) { CHECK_OK(dspy_write_file(path, text, strlen(text))); }

static void test_sharded(void) {
    const char *dir = tmp_path("sharded");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    CHECK(system(cmd) == 0);
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    dspy_tensor_out s1[] = {{"a", DSPY_DTYPE_F32, 1, {4}, a}}, s2[] = {{"b", DSPY_DTYPE_BF16, 1, {2}, b}};
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/model-00001-of-00002.safetensors", dir);
    CHECK_OK(dspy_safetensors_write(dspy_str_cstr(&p), s1, 1, NULL));
    dspy_str_clear(&p);
    dspy_str_appendf(&p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK_OK(dspy_safetensors_write(dspy_str_cstr(&p), s2, 1, NULL));
    dspy_str_clear(&p);
    dspy_str_appendf(&p, "%s/model.safetensors.index.json", dir);
    write_text(dspy_str_cstr(&p), "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {\"a\": "
                                  "\"model-00001-of-00002.safetensors\", \"b\": \"model-00002-of-00002.safetensors\"}}");
    dspy_checkpoint *ck;
    CHECK_OK(dspy_checkpoint_open(dir, &ck));
    if (ck) {
        CHECK_U64(dspy_checkpoint_count(ck), 2);
        const dspy_tensor_info *tb = dspy_checkpoint_find(ck, "b");
        CHECK(tb && tb->dtype == DSPY_DTYPE_BF16);
        CHECK(dspy_checkpoint_find(ck, "c") == NULL);
        CHECK_CONTAINS(dspy_checkpoint_where(ck), "model.safetensors.index.json");
        dspy_checkpoint_free(ck);
    }
    write_text(dspy_str_cstr(&p), "{\"weight_map\": {\"a\": \"model-00002-of-00002.safetensors\"}}");
    CHECK_STATUS(dspy_checkpoint_open(dir, &ck), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "tensor \"a\" is mapped to \"model-00002-of-00002.safetensors\", which does not hold it");
    write_text(dspy_str_cstr(&p), "{\"weight_map\": {\"a\": \"model-00009-of-00009.safetensors\"}}");
    CHECK_STATUS(dspy_checkpoint_open(dir, &ck), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "shard \"model-00009-of-00009.safetensors\"");
    write_text(dspy_str_cstr(&p), "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
    CHECK_STATUS(dspy_checkpoint_open(dir, &ck), DSPY_ERR_FORMAT);
    dspy_str_free(&p);
    CHECK_STATUS(dspy_checkpoint_open(tmp_path("nowhere"), &ck), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "no model.safetensors or model.safetensors.index.json");
}

/* ---- model directories with one defect each ------------------------------------------- */

static char *g_good; /* a valid tiny model directory */

static const char *make_good(void) {
    const char *dir = tmp_path("good");
    dspy_model_config c;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &c));
    c.vocab_size = 256;
    c.bos_token_id = 1;
    c.eos_token_ids[0] = 2;
    c.n_eos = 1;
    CHECK_OK(dspy_model_write_random(dir, &c, 7, DSPY_DTYPE_F32, true));
    return dir;
}

/* Copies the good model into `name`, dropping tensor `drop` (or none) and optionally replacing
 * config.json. Returns the directory. */
static const char *variant(const char *name, const char *drop, const char *config) {
    const char *dir = tmp_path(name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, g_good, dir);
    CHECK(system(cmd) == 0);
    dspy_str p = DSPY_STR_INIT;
    if (drop) {
        dspy_str_appendf(&p, "%s/model.safetensors", g_good);
        dspy_safetensors *f;
        CHECK_OK(dspy_safetensors_open(dspy_str_cstr(&p), &f));
        size_t n = dspy_safetensors_count(f), k = 0;
        dspy_tensor_out *t = calloc(n, sizeof *t);
        float **bufs = calloc(n, sizeof *bufs);
        for (size_t i = 0; i < n; i++) {
            const dspy_tensor_info *ti = dspy_safetensors_at(f, i);
            if (strcmp(ti->name, drop) == 0) continue;
            bufs[k] = malloc(sizeof(float) * (size_t)(dspy_tensor_numel(ti) ? dspy_tensor_numel(ti) : 1));
            CHECK_OK(dspy_tensor_to_f32(ti, bufs[k]));
            t[k] = (dspy_tensor_out){ti->name, DSPY_DTYPE_F32, ti->ndim, {ti->shape[0], ti->shape[1]}, bufs[k]};
            k++;
        }
        dspy_str_clear(&p);
        dspy_str_appendf(&p, "%s/model.safetensors", dir);
        CHECK_OK(dspy_safetensors_write(dspy_str_cstr(&p), t, k, NULL));
        for (size_t i = 0; i < k; i++) free(bufs[i]);
        free(bufs);
        free(t);
        dspy_safetensors_free(f);
    }
    if (config) {
        dspy_str_clear(&p);
        dspy_str_appendf(&p, "%s/config.json", dir);
        write_text(dspy_str_cstr(&p), config);
    }
    dspy_str_free(&p);
    return dir;
}

static const char *k_tiny_cfg_fmt =
    "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": %d, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": %d, \"vocab_size\": 256, \"tie_word_embeddings\": %s,"
    " \"max_position_embeddings\": 8192, \"bos_token_id\": 1, \"eos_token_id\": 2}";

static char *tiny_cfg(int inter, int kv, const char *tied) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, k_tiny_cfg_fmt, inter, kv, tied);
    return dspy_str_take(&s);
}

/* Runs `dspy generate` on dir; checks a non-zero exit and exactly one stderr line containing msg. */
static void cli_error(const char *dir, const char *msg) {
    char cmd[2048];
    const char *errf = tmp_path("cli.err");
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt-ids 1,2,3 >/dev/null 2>'%s'", test_bin("dspy"), dir,
             errf);
    int rc = system(cmd);
    CHECK(rc != 0);
    char *err = NULL;
    size_t len = 0;
    CHECK_OK(dspy_read_file(errf, &err, &len));
    if (!err) return;
    CHECK(strncmp(err, "error: dspy generate: ", 22) == 0);
    CHECK_CONTAINS(err, msg);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += err[i] == '\n';
    CHECK_INT(lines, 1);
    free(err);
}

static void expect_load_error(const char *dir, dspy_status want, const char *msg) {
    dspy_model *m = (dspy_model *)1;
    CHECK_STATUS(dspy_model_load(dir, NULL, &m), want);
    CHECK(m == NULL);
    CHECK_CONTAINS(dspy_errmsg(), msg);
    cli_error(dir, msg);
}

static void test_model_errors(void) {
    g_good = strdup(make_good());
    dspy_model *m;
    CHECK_OK(dspy_model_load(g_good, NULL, &m));
    dspy_model_free(m);
    expect_load_error(variant("missing", "model.layers.1.mlp.up_proj.weight", NULL), DSPY_ERR_FORMAT,
                      "model.safetensors: tensor \"model.layers.1.mlp.up_proj.weight\" is missing (model_type llama, "
                      "num_hidden_layers=2)");
    char *c1 = tiny_cfg(96, 2, "true");
    expect_load_error(variant("shape", NULL, c1), DSPY_ERR_FORMAT,
                      "tensor \"model.layers.0.mlp.gate_proj.weight\" has shape [128, 64], but config.json implies "
                      "[96, 64] (intermediate_size, hidden_size)");
    free(c1);
    char *c2 = tiny_cfg(128, 3, "true");
    expect_load_error(variant("kv3", NULL, c2), DSPY_ERR_FORMAT,
                      "config.json: \"num_key_value_heads\" is 3, which does not divide num_attention_heads=4");
    free(c2);
    char *c3 = tiny_cfg(128, 2, "false");
    expect_load_error(variant("untied", NULL, c3), DSPY_ERR_FORMAT,
                      "tensor \"lm_head.weight\" is missing (model_type llama, num_hidden_layers=2; "
                      "tie_word_embeddings is false)");
    free(c3);
    expect_load_error(variant("badjson", NULL, "{\"model_type\": \"llama\", "), DSPY_ERR_FORMAT, "config.json: line 1");
    /* truncated weights file */
    const char *tr = variant("truncated", NULL, NULL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "truncate -s -100 '%s/model.safetensors'", tr);
    CHECK(system(cmd) == 0);
    expect_load_error(tr, DSPY_ERR_FORMAT, "run past the end of the data buffer");
    /* no weights at all */
    const char *nw = variant("noweights", NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm '%s/model.safetensors'", nw);
    CHECK(system(cmd) == 0);
    expect_load_error(nw, DSPY_ERR_NOTFOUND, "no model.safetensors or model.safetensors.index.json");
    expect_load_error(tmp_path("no-such-dir"), DSPY_ERR_NOTFOUND, "no config.json here");
    /* devices: cuda fails clearly without a GPU (and loads with one); unknown names are errors */
    dspy_model_params p = dspy_model_params_default();
    p.device = "cuda";
    if (dspy_cuda_device_count(NULL) == 0) {
        CHECK_STATUS(dspy_model_load(g_good, &p, &m), DSPY_ERR_BACKEND);
        CHECK_CONTAINS(dspy_errmsg(), "device \"cuda\": ");
        CHECK_CONTAINS(dspy_errmsg(), "use --device cpu");
    } else {
        CHECK_OK(dspy_model_load(g_good, &p, &m));
        dspy_model_free(m);
    }
    p.device = "tpu";
    CHECK_STATUS(dspy_model_load(g_good, &p, &m), DSPY_ERR_ARG);
    p.device = "cuda:x";
    CHECK_STATUS(dspy_model_load(g_good, &p, &m), DSPY_ERR_ARG);
    /* bf16 and sharded loads give the same numbers as f32 rounded to bf16 */
    CHECK_OK(dspy_model_load(g_good, NULL, &m));
    const dspy_model_config *c = dspy_model_config_get(m);
    const dspy_model_weights *w = dspy_model_weights_get(m);
    CHECK(w->lm_head.data == w->embed.data);
    CHECK(w->layers[1].bqkv.data == NULL);
    CHECK_INT(dspy_model_matrix_dtype(m), DSPY_DTYPE_F32);
    CHECK_INT(c->vocab_size, 256);
    /* the fused projections hold the checkpoint's tensors in order */
    float *down = malloc(sizeof(float) * 128 * 64), *k = malloc(sizeof(float) * 64 * 64);
    CHECK_OK(dspy_model_tensor_read_f32(m, "model.layers.1.mlp.down_proj.weight", down, 128 * 64));
    CHECK_OK(dspy_model_tensor_read_f32(m, "model.layers.0.self_attn.k_proj.weight", k, (size_t)c->num_key_value_heads * c->head_dim * 64));
    int same = 0;
    const float *wqkv = w->layers[0].wqkv.data;
    size_t qrows = (size_t)c->num_attention_heads * c->head_dim, krows = (size_t)c->num_key_value_heads * c->head_dim;
    for (size_t i = 0; i < krows * 64; i++) same += wqkv[qrows * 64 + i] == k[i];
    CHECK_INT(same, (int)(krows * 64));
    CHECK_STATUS(dspy_model_tensor_read_f32(m, "model.layers.9.mlp.down_proj.weight", down, 10), DSPY_ERR_NOTFOUND);
    CHECK_STATUS(dspy_model_tensor_read_f32(m, "model.layers.1.mlp.down_proj.weight", down, 10), DSPY_ERR_ARG);
    /* tied: lm_head.weight exists (as the embedding), so a wrong size is ARG, not NOTFOUND */
    CHECK_STATUS(dspy_model_tensor_read_f32(m, "lm_head.weight", k, 1), DSPY_ERR_ARG);
    const char *bdir = tmp_path("bf16");
    CHECK_OK(dspy_model_write_random(bdir, c, 7, DSPY_DTYPE_BF16, true));
    dspy_model *mb;
    CHECK_OK(dspy_model_load(bdir, NULL, &mb));
    if (mb) {
        CHECK_INT(dspy_model_matrix_dtype(mb), DSPY_DTYPE_BF16);
        float *db = malloc(sizeof(float) * 128 * 64);
        CHECK_OK(dspy_model_tensor_read_f32(mb, "model.layers.1.mlp.down_proj.weight", db, 128 * 64));
        int diff = 0;
        for (int i = 0; i < 128 * 64; i++) diff += db[i] != dspy_bf16_to_f32(dspy_f32_to_bf16(down[i]));
        CHECK_INT(diff, 0);
        free(db);
        dspy_model_free(mb);
    }
    /* f8_decode on the CPU (F32 and BF16 matrices): every projection and the tied lm_head rounded
     * row by row to E4M3 with a power-of-two scale, as tests/support/f8_ref.c defines it; norms
     * untouched */
    const char *dirs[2] = {g_good, bdir};
    for (int d = 0; d < 2; d++) {
        dspy_model_params fp = dspy_model_params_default();
        fp.f8_decode = true;
        dspy_model *m8 = NULL, *m0 = NULL;
        CHECK_OK(dspy_model_load(dirs[d], &fp, &m8));
        CHECK_OK(dspy_model_load(dirs[d], NULL, &m0));
        if (!m8 || !m0) break;
        CHECK(dspy_model_f8_decode(m8) && !dspy_model_f8_decode(m0));
        const struct { const char *name; int rows, cols; } t[3] = {
            {"model.layers.1.mlp.down_proj.weight", 64, 128}, {"lm_head.weight", 256, 64},
            {"model.layers.0.self_attn.q_proj.weight", c->num_attention_heads * c->head_dim, 64}};
        int bad = 0, moved = 0;
        for (int i = 0; i < 3; i++) {
            const size_t n = (size_t)t[i].rows * t[i].cols;
            float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
            CHECK_OK(dspy_model_tensor_read_f32(m8, t[i].name, a, n));
            CHECK_OK(dspy_model_tensor_read_f32(m0, t[i].name, b, n));
            float *want = malloc(sizeof(float) * n);
            memcpy(want, b, sizeof(float) * n);
            f8_ref_round_rows(want, t[i].rows, t[i].cols);
            for (size_t j = 0; j < n; j++) bad += a[j] != want[j], moved += a[j] != b[j];
            free(a), free(b), free(want);
        }
        CHECK_INT(bad, 0);
        CHECK(moved > 1000); /* the rounding did change the weights */
        float na[64], nb[64];
        CHECK_OK(dspy_model_tensor_read_f32(m8, "model.layers.0.input_layernorm.weight", na, 64));
        CHECK_OK(dspy_model_tensor_read_f32(m0, "model.layers.0.input_layernorm.weight", nb, 64));
        CHECK(memcmp(na, nb, sizeof na) == 0);
        dspy_model_free(m8);
        dspy_model_free(m0);
    }
    /* f8_act (W8A8 prompt GEMMs) needs f8_decode: alone, an argument error that says so, and no
     * model. With it, on the CPU: prompts of up to 16 tokens give the f8_decode model's logits
     * bit for bit (no rounding of the rows there), longer ones differ (their layers' inputs are
     * rounded to E4M3, kern/e4m3.h) but not by much on this tiny model; the last position's
     * logits go through the lm_head unrounded either way (checked in test_kern_cpu) */
    {
        dspy_model_params ap = dspy_model_params_default();
        ap.f8_act = true;
        dspy_model *ma = NULL, *m8 = NULL;
        CHECK(dspy_model_load(g_good, &ap, &ma) == DSPY_ERR_ARG && ma == NULL);
        CHECK(strstr(dspy_errmsg(), "f8_act") && strstr(dspy_errmsg(), "needs f8_decode"));
        ap.f8_decode = true;
        CHECK_OK(dspy_model_load(g_good, &ap, &ma));
        ap.f8_act = false;
        CHECK_OK(dspy_model_load(g_good, &ap, &m8));
        if (ma && m8) {
            CHECK(dspy_model_f8_act(ma) && !dspy_model_f8_act(m8));
            const int lens[2] = {16, 40};
            for (int k = 0; k < 2; k++) {
                const int n = lens[k], V = 256;
                int32_t ids[40];
                for (int i = 0; i < n; i++) ids[i] = (i * 37 + 11 * k) % V;
                float *la = malloc(sizeof(float) * (size_t)n * V), *l8 = malloc(sizeof(float) * (size_t)n * V);
                CHECK_OK(dspy_model_forward_logits(ma, ids, (size_t)n, la));
                CHECK_OK(dspy_model_forward_logits(m8, ids, (size_t)n, l8));
                double num = 0, den = 0;
                for (size_t i = 0; i < (size_t)n * V; i++) num += (la[i] - l8[i]) * (double)(la[i] - l8[i]), den += (double)l8[i] * l8[i];
                const double rel = sqrt(num / den);
                if (n <= 16) CHECK(memcmp(la, l8, sizeof(float) * (size_t)n * V) == 0);
                else check_report(rel > 1e-4 && rel < 0.5, __FILE__, __LINE__, "%d-token W8A8 logits vs FP8: %.3g", n, rel);
                printf("  CPU W8A8, %d-token prompt vs the f8_decode model: %.2e relative\n", n, rel);
                free(la), free(l8);
            }
        }
        dspy_model_free(ma);
        dspy_model_free(m8);
    }
    free(down);
    free(k);
    dspy_model_free(m);
    free(g_good);
}

/* NaN/Inf detection: a clean tensor, then one bad value of each kind at known places, in each
 * floating dtype (bit patterns from IEEE 754 / the bfloat16 and float16 layouts). */
static void test_check_finite(void) {
    float v[37];
    for (int i = 0; i < 37; i++) v[i] = (float)(i - 18) * 0.25f;
    v[5] = 65504.0f; /* the largest finite f16 stays finite */
    float bad[37];
    memcpy(bad, v, sizeof v);
    bad[7] = NAN;
    bad[20] = INFINITY;
    bad[36] = -INFINITY;
    dspy_tensor_out t[] = {
        {"ok32", DSPY_DTYPE_F32, 1, {37}, v},   {"ok16", DSPY_DTYPE_BF16, 1, {37}, v},
        {"okh", DSPY_DTYPE_F16, 1, {37}, v},    {"bad32", DSPY_DTYPE_F32, 1, {37}, bad},
        {"bad16", DSPY_DTYPE_BF16, 1, {37}, bad}, {"badh", DSPY_DTYPE_F16, 1, {37}, bad},
        {"empty", DSPY_DTYPE_F32, 2, {0, 3}, NULL},
    };
    const char *path = tmp_path("finite.safetensors");
    CHECK_OK(dspy_safetensors_write(path, t, 7, NULL));
    dspy_safetensors *f;
    CHECK_OK(dspy_safetensors_open(path, &f));
    if (!f) return;
    static const struct {
        const char *name;
        int64_t n_bad, first;
    } want[] = {{"ok32", 0, -1}, {"ok16", 0, -1}, {"okh", 0, -1}, {"bad32", 3, 7},
                {"bad16", 3, 7}, {"badh", 3, 7},  {"empty", 0, -1}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int64_t n = 99, first = 99;
        CHECK_OK(dspy_tensor_check_finite(dspy_safetensors_find(f, want[i].name), &n, &first));
        CHECK_INT(n, want[i].n_bad);
        CHECK_INT(first, want[i].first);
    }
    /* f16 overflow: 1e5 does not fit and is stored as Inf, which the check sees */
    float big[2] = {1.0f, 1e5f};
    dspy_tensor_out h[] = {{"h", DSPY_DTYPE_F16, 1, {2}, big}};
    CHECK_OK(dspy_safetensors_write(tmp_path("f16inf.safetensors"), h, 1, NULL));
    dspy_safetensors *g;
    CHECK_OK(dspy_safetensors_open(tmp_path("f16inf.safetensors"), &g));
    int64_t n = 0, first = 0;
    if (g) CHECK_OK(dspy_tensor_check_finite(dspy_safetensors_at(g, 0), &n, NULL));
    CHECK_INT(n, 1);
    /* hand-made tensors: F64, F8 and integer dtypes */
    uint64_t d[3] = {0x3ff0000000000000ull, 0x7ff8000000000000ull, 0xfff0000000000000ull};
    dspy_tensor_info ti = {.name = "d", .dtype = DSPY_DTYPE_F64, .ndim = 1, .shape = {3}, .data = d, .nbytes = 24};
    CHECK_OK(dspy_tensor_check_finite(&ti, &n, &first));
    CHECK_INT(n, 2);
    CHECK_INT(first, 1);
    uint8_t e4[4] = {0x38, 0x7f, 0xff, 0x7e}; /* 1.0, NaN, -NaN, 448 */
    ti = (dspy_tensor_info){.name = "e4", .dtype = DSPY_DTYPE_F8_E4M3, .ndim = 1, .shape = {4}, .data = e4, .nbytes = 4};
    CHECK_OK(dspy_tensor_check_finite(&ti, &n, &first));
    CHECK_INT(n, 2);
    CHECK_INT(first, 1);
    uint8_t e5[3] = {0x3c, 0x7b, 0x7c}; /* 1.0, 57344, Inf */
    ti = (dspy_tensor_info){.name = "e5", .dtype = DSPY_DTYPE_F8_E5M2, .ndim = 1, .shape = {3}, .data = e5, .nbytes = 3};
    CHECK_OK(dspy_tensor_check_finite(&ti, &n, &first));
    CHECK_INT(n, 1);
    CHECK_INT(first, 2);
    int32_t ints[2] = {-1, 0x7f800000};
    ti = (dspy_tensor_info){.name = "i", .dtype = DSPY_DTYPE_I32, .ndim = 1, .shape = {2}, .data = ints, .nbytes = 8};
    CHECK_OK(dspy_tensor_check_finite(&ti, &n, &first));
    CHECK_INT(n, 0);
    CHECK_STATUS(dspy_tensor_check_finite(NULL, &n, NULL), DSPY_ERR_ARG);
    dspy_safetensors_free(g);
    dspy_safetensors_free(f);
}

/* Non-regular files where a loader expects a file: refused at once, never read or waited on. */
static void test_not_regular(void) {
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/fifo_model", test_tmpdir());
    CHECK_OK(dspy_mkdir_p(dir));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(mkfifo(p, 0600) == 0);
    dspy_safetensors *f = NULL;
    CHECK_STATUS(dspy_safetensors_open(p, &f), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "model.safetensors: is a FIFO, not a regular file");
    dspy_checkpoint *ck = NULL;
    CHECK_STATUS(dspy_checkpoint_open(dir, &ck), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "is a FIFO");
    /* a directory in the file's place */
    snprintf(dir, sizeof dir, "%s/dir_model", test_tmpdir());
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK_OK(dspy_mkdir_p(p));
    CHECK_STATUS(dspy_safetensors_open(p, &f), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "is a directory, not a regular file");
    /* the index of a sharded checkpoint, and the tokenizer, as FIFOs */
    snprintf(dir, sizeof dir, "%s/fifo_index", test_tmpdir());
    CHECK_OK(dspy_mkdir_p(dir));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK(mkfifo(p, 0600) == 0);
    CHECK_STATUS(dspy_checkpoint_open(dir, &ck), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "index.json: is a FIFO");
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    CHECK(mkfifo(p, 0600) == 0);
    dspy_tokenizer *tok = NULL;
    CHECK_STATUS(dspy_tokenizer_load(dir, &tok), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "tokenizer.json: is a FIFO");
    /* reading helpers: size limit named before reading; missing file is NOTFOUND */
    char *text = NULL;
    snprintf(p, sizeof p, "%s/big.json", test_tmpdir());
    CHECK_OK(dspy_write_file(p, "0123456789", 10));
    CHECK_STATUS(dspy_read_regular_file(p, 9, &text, NULL), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "is 10 bytes, over the 9-byte limit");
    size_t n = 0;
    CHECK_OK(dspy_read_regular_file(p, 10, &text, &n));
    CHECK(text && n == 10 && strcmp(text, "0123456789") == 0);
    free(text);
    snprintf(p, sizeof p, "%s/absent.json", test_tmpdir());
    CHECK_STATUS(dspy_read_regular_file(p, 0, &text, NULL), DSPY_ERR_NOTFOUND);
}

int main(void) {
    RUN(test_conversions);
    RUN(test_roundtrip);
    RUN(test_hf_file);
    RUN(test_malformed);
    RUN(test_sharded);
    RUN(test_model_errors);
    RUN(test_check_finite);
    RUN(test_not_regular);
    return check_summary("test_safetensors");
}
