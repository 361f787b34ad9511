/* test_model_config.c — config.json / generation_config.json parsing, presets, writing, RoPE.
 *
 * The configs are the real shapes transformers writes: Llama-3.2-1B's config.json in the
 * transformers-4 layout, and the transformers-5 layout (`rope_parameters`, `dtype`) exactly as
 * transformers 5.17 saved the fixtures in tests/ref/models. Every validation error is checked
 * for its message.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "dspy/model.h"
#include "dspy/str.h"

/* Llama-3.2-1B-Instruct's config.json (transformers 4.45). */
static const char *k_llama32 =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"head_dim\": 64,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 8192,"
    " \"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 16, \"num_key_value_heads\": 8, \"pretraining_tp\": 1,"
    " \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0,"
    " \"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},"
    " \"rope_theta\": 500000.0, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
    " \"transformers_version\": \"4.45.0.dev0\", \"use_cache\": true, \"vocab_size\": 128256}";

/* The same model in the transformers-5 layout. */
static const char *k_llama32_v5 =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"bos_token_id\": 128000, \"dtype\": \"bfloat16\","
    " \"eos_token_id\": [128001, 128008, 128009], \"head_dim\": 64, \"hidden_size\": 2048,"
    " \"intermediate_size\": 8192, \"max_position_embeddings\": 131072, \"model_type\": \"llama\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 16, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05,"
    " \"rope_parameters\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_theta\": 500000.0, \"rope_type\": \"llama3\"},"
    " \"tie_word_embeddings\": true, \"vocab_size\": 128256}";

static bool cfg_equal(const dspy_model_config *a, const dspy_model_config *b) {
    bool eos = a->n_eos == b->n_eos;
    for (int i = 0; eos && i < a->n_eos; i++) eos = a->eos_token_ids[i] == b->eos_token_ids[i];
    return eos && a->arch == b->arch && a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->intermediate_size == b->intermediate_size && a->num_hidden_layers == b->num_hidden_layers &&
           a->num_attention_heads == b->num_attention_heads && a->num_key_value_heads == b->num_key_value_heads &&
           a->head_dim == b->head_dim && a->max_position_embeddings == b->max_position_embeddings &&
           a->rms_norm_eps == b->rms_norm_eps && a->rope_theta == b->rope_theta && a->rope_type == b->rope_type &&
           a->rope_factor == b->rope_factor && a->rope_low_freq_factor == b->rope_low_freq_factor &&
           a->rope_high_freq_factor == b->rope_high_freq_factor &&
           a->rope_original_max_position_embeddings == b->rope_original_max_position_embeddings &&
           a->tie_word_embeddings == b->tie_word_embeddings && a->qkv_bias == b->qkv_bias && a->o_bias == b->o_bias &&
           a->bos_token_id == b->bos_token_id && a->dtype == b->dtype &&
           a->has_generation_config == b->has_generation_config && a->gen_do_sample == b->gen_do_sample &&
           a->gen_temperature == b->gen_temperature && a->gen_top_p == b->gen_top_p && a->gen_top_k == b->gen_top_k;
}

static dspy_status parse(const char *s, dspy_model_config *c) {
    return dspy_model_config_parse(s, strlen(s), "model/config.json", c);
}

static void check_llama32(const dspy_model_config *c) {
    CHECK_INT(c->arch, DSPY_ARCH_LLAMA);
    CHECK_INT(c->vocab_size, 128256);
    CHECK_INT(c->hidden_size, 2048);
    CHECK_INT(c->intermediate_size, 8192);
    CHECK_INT(c->num_hidden_layers, 16);
    CHECK_INT(c->num_attention_heads, 32);
    CHECK_INT(c->num_key_value_heads, 8);
    CHECK_INT(c->head_dim, 64);
    CHECK_INT(c->max_position_embeddings, 131072);
    CHECK_NEAR(c->rms_norm_eps, 1e-5, 0);
    CHECK_NEAR(c->rope_theta, 500000.0, 0);
    CHECK_INT(c->rope_type, DSPY_ROPE_LLAMA3);
    CHECK_NEAR(c->rope_factor, 32.0, 0);
    CHECK_NEAR(c->rope_low_freq_factor, 1.0, 0);
    CHECK_NEAR(c->rope_high_freq_factor, 4.0, 0);
    CHECK_INT(c->rope_original_max_position_embeddings, 8192);
    CHECK(c->tie_word_embeddings);
    CHECK(!c->qkv_bias && !c->o_bias);
    CHECK_INT(c->bos_token_id, 128000);
    CHECK_INT(c->n_eos, 3);
    CHECK_INT(c->eos_token_ids[2], 128009);
    CHECK_INT(c->dtype, DSPY_DTYPE_BF16);
    CHECK_U64(dspy_model_config_params(c), 1235814400ull); /* Llama-3.2-1B: 1.24B */
}

static void test_llama32_layouts(void) {
    dspy_model_config a, b;
    CHECK_OK(parse(k_llama32, &a));
    check_llama32(&a);
    CHECK_OK(parse(k_llama32_v5, &b));
    check_llama32(&b);
}

static void test_defaults_and_variants(void) {
    dspy_model_config c;
    /* head_dim and num_key_value_heads absent: hidden/heads and heads; HF Llama defaults. */
    CHECK_OK(parse("{\"model_type\": \"llama\", \"hidden_size\": 96, \"num_attention_heads\": 6,"
                   " \"num_hidden_layers\": 1, \"intermediate_size\": 10, \"vocab_size\": 50}", &c));
    CHECK_INT(c.head_dim, 16);
    CHECK_INT(c.num_key_value_heads, 6);
    CHECK_INT(c.max_position_embeddings, 2048);
    CHECK_NEAR(c.rms_norm_eps, 1e-6, 0);
    CHECK_NEAR(c.rope_theta, 10000.0, 0);
    CHECK_INT(c.rope_type, DSPY_ROPE_DEFAULT);
    CHECK(!c.tie_word_embeddings);
    CHECK_INT(c.dtype, DSPY_DTYPE_F32);
    CHECK_INT(c.bos_token_id, 1);
    CHECK_INT(c.n_eos, 1);
    CHECK_INT(c.eos_token_ids[0], 2);
    /* head_dim null counts as absent; eos null means none; rope_scaling with the old "type" key. */
    CHECK_OK(parse("{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_attention_heads\": 4, \"head_dim\": null,"
                   " \"num_hidden_layers\": 1, \"intermediate_size\": 10, \"vocab_size\": 50, \"eos_token_id\": null,"
                   " \"bos_token_id\": null, \"rope_scaling\": {\"type\": \"default\"}, \"attention_bias\": true}",
                   &c));
    CHECK_INT(c.head_dim, 16);
    CHECK_INT(c.n_eos, 0);
    CHECK_INT(c.bos_token_id, -1);
    CHECK(c.qkv_bias && c.o_bias);
    /* qwen2 as transformers 5.17 writes it (from tests/ref/models/qwen2_bias). */
    CHECK_OK(parse("{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 1,"
                   " \"dtype\": \"float32\", \"eos_token_id\": 2, \"hidden_act\": \"silu\", \"hidden_size\": 64,"
                   " \"intermediate_size\": 128, \"layer_types\": [\"full_attention\", \"full_attention\"],"
                   " \"max_position_embeddings\": 256, \"max_window_layers\": 28, \"model_type\": \"qwen2\","
                   " \"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"num_key_value_heads\": 2,"
                   " \"pad_token_id\": null, \"rms_norm_eps\": 1e-05, \"rope_parameters\": {\"rope_theta\": 1000000.0,"
                   " \"rope_type\": \"default\"}, \"sliding_window\": null, \"tie_word_embeddings\": true,"
                   " \"use_cache\": true, \"use_sliding_window\": false, \"vocab_size\": 1000}", &c));
    CHECK_INT(c.arch, DSPY_ARCH_QWEN2);
    CHECK(c.qkv_bias && !c.o_bias);
    CHECK_NEAR(c.rope_theta, 1e6, 0);
    CHECK_INT(c.eos_token_ids[0], 2);
    CHECK_INT(c.head_dim, 16);
    /* integral reals are accepted for integer keys */
    CHECK_OK(parse("{\"model_type\": \"llama\", \"hidden_size\": 64.0, \"num_attention_heads\": 4,"
                   " \"num_hidden_layers\": 1, \"intermediate_size\": 10, \"vocab_size\": 50}", &c));
    CHECK_INT(c.hidden_size, 64);
}

/* Each bad config gives DSPY_ERR_FORMAT with a message naming the file and the key. */
static void test_errors(void) {
    static const struct {
        const char *json;
        const char *msg;
    } cases[] = {
        {"{\"model_type\": \"llama\", \"num_attention_heads\": 32, \"num_key_value_heads\": 3, \"vocab_size\": 10}",
         "model/config.json: \"num_key_value_heads\" is 3, which does not divide num_attention_heads=32"},
        {"{\"model_type\": \"gpt2\"}", "model/config.json: \"model_type\" is \"gpt2\"; supported: llama, qwen2"},
        {"{\"hidden_size\": 64}", "\"model_type\" is missing"},
        {"[1, 2]", "model/config.json: must be a JSON object"},
        {"{\"model_type\": \"llama\",", "model/config.json: line 1"},
        {"{\"model_type\": \"llama\", \"hidden_size\": \"64\"}", "model/config.json: \"hidden_size\" must be an integer"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64.5}", "\"hidden_size\" must be an integer"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 0, \"num_attention_heads\": 4, \"vocab_size\": 10}",
         "\"hidden_size\" is 0; it must be positive"},
        {"{\"model_type\": \"llama\", \"num_hidden_layers\": -2, \"vocab_size\": 10}",
         "\"num_hidden_layers\" is -2; it must be positive"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 100, \"num_attention_heads\": 3, \"vocab_size\": 10}",
         "\"hidden_size\" 100 is not divisible by num_attention_heads=3 and \"head_dim\" is not given"},
        {"{\"model_type\": \"llama\", \"head_dim\": 15, \"vocab_size\": 10}",
         "\"head_dim\" is 15; RoPE needs an even head dimension"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 99999999999}",
         "\"hidden_size\" is 99999999999; it must be between"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rms_norm_eps\": 0}", "\"rms_norm_eps\" is 0"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rms_norm_eps\": \"x\"}", "\"rms_norm_eps\" must be a number"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rope_theta\": -1}", "\"rope_theta\" is -1"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
         "\"rope_scaling\" has rope_type \"yarn\", which is not supported (supported: default, llama3)"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rope_parameters\": {\"rope_type\": \"linear\","
         " \"rope_theta\": 10000.0, \"factor\": 2.0}}",
         "\"rope_parameters\" has rope_type \"linear\""},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8,"
         " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}",
         "\"rope_scaling\" of rope_type llama3 needs a number \"low_freq_factor\""},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8,"
         " \"low_freq_factor\": 4, \"high_freq_factor\": 1, \"original_max_position_embeddings\": 8192}}",
         "must satisfy 0 < low < high"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 0.5,"
         " \"low_freq_factor\": 1, \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}",
         "llama3 scaling needs a factor >= 1"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"rope_scaling\": 3}", "\"rope_scaling\" must be an object or null"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"eos_token_id\": 10}",
         "\"eos_token_id\" 10 is outside the vocabulary (vocab_size=10)"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"eos_token_id\": [1, \"2\"]}",
         "\"eos_token_id\"[1] must be a non-negative integer"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"eos_token_id\": -3}", "\"eos_token_id\" is -3"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"bos_token_id\": 12, \"eos_token_id\": 1}",
         "\"bos_token_id\" 12 is outside the vocabulary"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"torch_dtype\": \"int8\"}",
         "\"torch_dtype\" is \"int8\"; expected float32, bfloat16 or float16"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_act\": \"gelu\"}",
         "\"hidden_act\" is \"gelu\"; only \"silu\" is supported"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"mlp_bias\": true}", "\"mlp_bias\" is true"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"tie_word_embeddings\": 1}",
         "\"tie_word_embeddings\" must be true or false"},
        /* absurd sizes: rejected by size, before anything is allocated, with the size needed (the
         * counts are transformers' LlamaConfig defaults put through the parameter formula in Python) */
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"num_hidden_layers\": 1000000000}",
         "this config describes 2.024e+17 parameters (num_hidden_layers=1000000000"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 2000000000, \"hidden_size\": 1048576, "
         "\"num_attention_heads\": 1024}",
         "this config describes 4.336e+15 parameters"},
        {"{\"model_type\": \"qwen2\", \"vocab_size\": 10, \"use_sliding_window\": true}",
         "sliding-window attention is not supported"},
        {"{\"model_type\": \"qwen2\", \"vocab_size\": 10, \"layer_types\": [\"full_attention\", \"sliding_attention\"]}",
         "\"layer_types\"[1] is not \"full_attention\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dspy_model_config c;
        memset(&c, 0x55, sizeof c);
        dspy_status st = parse(cases[i].json, &c);
        check_report(st == DSPY_ERR_FORMAT, __FILE__, __LINE__, "case %zu: status %s for %s", i, dspy_status_name(st),
                     cases[i].json);
        CHECK_CONTAINS(dspy_errmsg(), cases[i].msg);
        CHECK_INT(c.hidden_size, 0); /* zeroed on failure */
    }
}

static void test_generation_config(void) {
    dspy_model_config c;
    CHECK_OK(parse(k_llama32, &c));
    const char *g = "{\"bos_token_id\": 128000, \"do_sample\": true, \"eos_token_id\": [128001, 128009],"
                    " \"temperature\": 0.6, \"top_p\": 0.9, \"transformers_version\": \"4.45.0.dev0\"}";
    CHECK_OK(dspy_generation_config_parse(g, strlen(g), "m/generation_config.json", &c));
    CHECK(c.has_generation_config && c.gen_do_sample);
    CHECK_INT(c.n_eos, 2);
    CHECK_INT(c.eos_token_ids[1], 128009);
    CHECK_NEAR(c.gen_temperature, 0.6, 1e-12);
    CHECK_NEAR(c.gen_top_p, 0.9, 1e-12);
    const char *bad = "{\"top_p\": 1.5}";
    CHECK_STATUS(dspy_generation_config_parse(bad, strlen(bad), "m/generation_config.json", &c), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "m/generation_config.json: generation defaults out of range");
    CHECK_NEAR(c.gen_top_p, 0.9, 1e-12); /* unchanged on failure */
}

/* Presets: 1b-shape is Llama-3.2-1B; to_json -> parse gives the same config back. */
static void test_presets_roundtrip(void) {
    const char *archs[] = {"llama", "qwen2"}, *presets[] = {"tiny", "small", "1b-shape"};
    for (int a = 0; a < 2; a++)
        for (int p = 0; p < 3; p++) {
            dspy_model_config c, back;
            CHECK_OK(dspy_model_config_preset(archs[a], presets[p], &c));
            char *cj = dspy_model_config_to_json(&c), *gj = dspy_generation_config_to_json(&c);
            CHECK(cj && gj);
            CHECK_OK(dspy_model_config_parse(cj, strlen(cj), "preset/config.json", &back));
            CHECK_OK(dspy_generation_config_parse(gj, strlen(gj), "preset/generation_config.json", &back));
            CHECK(cfg_equal(&c, &back));
            free(cj);
            free(gj);
        }
    dspy_model_config c, ref;
    CHECK_OK(dspy_model_config_preset("llama", "1b-shape", &c));
    CHECK_OK(parse(k_llama32, &ref));
    CHECK_INT(c.hidden_size, ref.hidden_size);
    CHECK_INT(c.num_key_value_heads, ref.num_key_value_heads);
    CHECK_INT(c.max_position_embeddings, ref.max_position_embeddings);
    CHECK_U64(dspy_model_config_params(&c), dspy_model_config_params(&ref));
    char *cj = dspy_model_config_to_json(&c);
    CHECK_CONTAINS(cj, "  \"rope_scaling\": {\n    \"factor\": 32.0,\n    \"high_freq_factor\": 4.0,");
    CHECK_CONTAINS(cj, "\"rms_norm_eps\": 1e-05,\n");
    CHECK_CONTAINS(cj, "\"eos_token_id\": [\n    128001,\n    128008,\n    128009\n  ],");
    free(cj);
    CHECK_STATUS(dspy_model_config_preset("gpt2", "tiny", &c), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_model_config_preset("llama", "huge", &c), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "unknown preset \"huge\"");
}

/* inv_freq against a double-precision evaluation of transformers' formulas. */
static void test_rope_inv_freq(void) {
    dspy_model_config c;
    CHECK_OK(parse(k_llama32, &c));
    float f[32];
    dspy_rope_inv_freq(&c, f);
    int low = 0, mid = 0, high = 0;
    for (int i = 0; i < 32; i++) {
        double base = 1.0 / pow(500000.0, (2.0 * i) / 64.0);
        double wl = 2 * M_PI / base, want;
        if (wl < 8192.0 / 4) want = base, high++;
        else if (wl > 8192.0 / 1) want = base / 32, low++;
        else {
            double s = (8192.0 / wl - 1.0) / (4.0 - 1.0);
            want = (1 - s) * base / 32 + s * base, mid++;
        }
        CHECK_NEAR(f[i] / want, 1.0, 2e-6);
    }
    CHECK(low > 0 && mid > 0 && high > 0); /* every branch of the llama3 rule is exercised */
    c.rope_type = DSPY_ROPE_DEFAULT;
    dspy_rope_inv_freq(&c, f);
    CHECK(f[0] == 1.0f);
    for (int i = 0; i < 32; i++) CHECK_NEAR(f[i] / (1.0 / pow(500000.0, i / 32.0)), 1.0, 1e-6);
}

static void test_load_dir(void) {
    const char *dir = test_tmpdir();
    /* a FIFO named config.json is refused at once (opening it for reading would block) */
    char fifo_dir[600], fifo[700];
    snprintf(fifo_dir, sizeof fifo_dir, "%s/fifo", dir);
    snprintf(fifo, sizeof fifo, "%s/config.json", fifo_dir);
    CHECK_OK(dspy_mkdir_p(fifo_dir));
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK_STATUS(dspy_model_config_load(fifo_dir, &(dspy_model_config){0}), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "config.json: is a FIFO, not a regular file");
    CHECK_STATUS(dspy_model_config_load(dir, &(dspy_model_config){0}), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "config.json");
    dspy_model_config c;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &c));
    CHECK_OK(dspy_model_write_random(dir, &c, 1, DSPY_DTYPE_BF16, false));
    dspy_model_config back;
    CHECK_OK(dspy_model_config_load(dir, &back));
    CHECK(back.has_generation_config);
    CHECK_INT(back.n_eos, 3);
    CHECK_INT(back.dtype, DSPY_DTYPE_BF16);
}

int main(void) {
    RUN(test_llama32_layouts);
    RUN(test_defaults_and_variants);
    RUN(test_errors);
    RUN(test_generation_config);
    RUN(test_presets_roundtrip);
    RUN(test_rope_inv_freq);
    RUN(test_load_dir);
    return check_summary("test_model_config");
}
