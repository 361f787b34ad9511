/* gguf_export.c — a Hugging Face model directory written as one GGUF file, and an Ollama Modelfile.
 *
 * Follows convert_hf_to_gguf.py for Llama (LlamaModel) and Qwen2 (Qwen2Model): the same metadata
 * keys and types (gguf-py's GGUFWriter: counts as u32, eps and rope base as f32), tensor names,
 * type choice (1-D tensors F32; matrices in the asked type, Q8_0 falling back to F16 for rows that
 * are not a multiple of 32), the llama q/k permutation, rope_freqs.weight for Llama 3.1 RoPE, and
 * no output.weight when the embeddings are tied. Tensors are converted one at a time, so memory
 * stays at about one tensor. Does not read GGUF (gguf_read.c) or the tokenizer files
 * (gguf_vocab.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dspy/chat_template.h"
#include "dspy/str.h"
#include "model/gguf_internal.h"

static const char *const k_dtype_names[] = {"f32", "f16", "bf16", "q8_0"};

const char *dspy_gguf_dtype_name(dspy_gguf_dtype t) { return (unsigned)t < 4 ? k_dtype_names[t] : "?"; }

bool dspy_gguf_dtype_parse(const char *name, dspy_gguf_dtype *out) {
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, k_dtype_names[i]) == 0) {
            *out = (dspy_gguf_dtype)i;
            return true;
        }
    return false;
}

dspy_gguf_export_params dspy_gguf_export_params_default(void) {
    dspy_gguf_export_params p = {DSPY_GGUF_DTYPE_F16, NULL};
    return p;
}

/* One tensor to write. */
typedef struct {
    char gguf[64];
    char hf[96];
    uint32_t type;
    int32_t ndim;
    int64_t ne[2];     /* GGUF order: ne[0] = HF's last dimension */
    int64_t perm;      /* heads for the llama q/k permutation, 0 for none */
    bool rope_freqs;   /* computed, not read */
} plan_t;

static const uint32_t k_ggml_of[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0};
static const uint32_t k_file_type_of[] = {0, 1, 32, 7};

static void plan_add(plan_t *pl, int *k, const char *gguf, const char *hf, int64_t rows, int64_t cols, uint32_t mtype,
                     int64_t perm) {
    plan_t *p = &pl[(*k)++];
    memset(p, 0, sizeof *p);
    snprintf(p->gguf, sizeof p->gguf, "%s", gguf);
    snprintf(p->hf, sizeof p->hf, "%s", hf);
    p->perm = perm;
    if (cols == 0) { /* 1-D: always F32 */
        p->ndim = 1;
        p->ne[0] = rows;
        p->type = GGML_TYPE_F32;
        return;
    }
    p->ndim = 2;
    p->ne[0] = cols;
    p->ne[1] = rows;
    p->type = mtype == GGML_TYPE_Q8_0 && cols % GGUF_QK8_0 != 0 ? GGML_TYPE_F16 : mtype;
}

/* The tensors of `c` in file order. Returns the count. */
static int build_plan(const dspy_model_config *c, uint32_t mtype, plan_t *pl) {
    int k = 0;
    int64_t C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int64_t Q = (int64_t)c->num_attention_heads * c->head_dim, KV = (int64_t)c->num_key_value_heads * c->head_dim;
    bool llama = c->arch == DSPY_ARCH_LLAMA;
    int64_t hq = llama ? c->num_attention_heads : 0, hk = llama ? c->num_key_value_heads : 0;
    plan_add(pl, &k, "token_embd.weight", "model.embed_tokens.weight", V, C, mtype, 0);
    if (c->rope_type == DSPY_ROPE_LLAMA3) {
        plan_add(pl, &k, "rope_freqs.weight", "", c->head_dim / 2, 0, mtype, 0);
        pl[k - 1].rope_freqs = true;
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char g[64], h[96];
#define LAYER(gs, hs, rows, cols, perm)                                  \
    do {                                                                 \
        snprintf(g, sizeof g, "blk.%d.%s", l, gs);                       \
        snprintf(h, sizeof h, "model.layers.%d.%s", l, hs);              \
        plan_add(pl, &k, g, h, rows, cols, mtype, perm);                 \
    } while (0)
        LAYER("attn_norm.weight", "input_layernorm.weight", C, 0, 0);
        LAYER("attn_q.weight", "self_attn.q_proj.weight", Q, C, hq);
        if (c->qkv_bias) LAYER("attn_q.bias", "self_attn.q_proj.bias", Q, 0, hq);
        LAYER("attn_k.weight", "self_attn.k_proj.weight", KV, C, hk);
        if (c->qkv_bias) LAYER("attn_k.bias", "self_attn.k_proj.bias", KV, 0, hk);
        LAYER("attn_v.weight", "self_attn.v_proj.weight", KV, C, 0);
        if (c->qkv_bias) LAYER("attn_v.bias", "self_attn.v_proj.bias", KV, 0, 0);
        LAYER("attn_output.weight", "self_attn.o_proj.weight", C, Q, 0);
        if (c->o_bias) LAYER("attn_output.bias", "self_attn.o_proj.bias", C, 0, 0);
        LAYER("ffn_norm.weight", "post_attention_layernorm.weight", C, 0, 0);
        LAYER("ffn_gate.weight", "mlp.gate_proj.weight", I, C, 0);
        LAYER("ffn_up.weight", "mlp.up_proj.weight", I, C, 0);
        LAYER("ffn_down.weight", "mlp.down_proj.weight", C, I, 0);
#undef LAYER
    }
    plan_add(pl, &k, "output_norm.weight", "model.norm.weight", C, 0, mtype, 0);
    if (!c->tie_word_embeddings) plan_add(pl, &k, "output.weight", "lm_head.weight", V, C, mtype, 0);
    return k;
}

static void add_metadata(dspy_gguf_writer *w, const dspy_model_config *c, const char *name, dspy_gguf_dtype dt) {
    const char *arch = c->arch == DSPY_ARCH_LLAMA ? "llama" : "qwen2";
    char key[128];
    dspy_gguf_kv_str(w, "general.architecture", arch);
    dspy_gguf_kv_str(w, "general.type", "model");
    dspy_gguf_kv_str(w, "general.name", name);
    dspy_gguf_kv_u32(w, "general.file_type", k_file_type_of[dt]);
    dspy_gguf_kv_u32(w, "general.quantization_version", 2);
#define U32(suffix, v)                                      \
    do {                                                    \
        snprintf(key, sizeof key, "%s.%s", arch, suffix);   \
        dspy_gguf_kv_u32(w, key, (uint32_t)(v));            \
    } while (0)
#define F32(suffix, v)                                      \
    do {                                                    \
        snprintf(key, sizeof key, "%s.%s", arch, suffix);   \
        dspy_gguf_kv_f32(w, key, (float)(v));               \
    } while (0)
    U32("block_count", c->num_hidden_layers);
    U32("context_length", c->max_position_embeddings);
    U32("embedding_length", c->hidden_size);
    U32("feed_forward_length", c->intermediate_size);
    U32("attention.head_count", c->num_attention_heads);
    U32("attention.head_count_kv", c->num_key_value_heads);
    F32("rope.freq_base", c->rope_theta);
    F32("attention.layer_norm_rms_epsilon", c->rms_norm_eps);
    U32("attention.key_length", c->head_dim);
    U32("attention.value_length", c->head_dim);
    U32("vocab_size", c->vocab_size);
    U32("rope.dimension_count", c->head_dim);
#undef U32
#undef F32
    if (c->has_generation_config && c->gen_do_sample) {
        dspy_gguf_kv_f32(w, "general.sampling.temp", (float)c->gen_temperature);
        dspy_gguf_kv_f32(w, "general.sampling.top_p", (float)c->gen_top_p);
        if (c->gen_top_k > 0) dspy_gguf_kv_i32(w, "general.sampling.top_k", c->gen_top_k);
    }
}

/* Converts numel fp32 values into `type` bytes at out. */
static void encode(const float *x, size_t numel, uint32_t type, unsigned char *out) {
    switch (type) {
    case GGML_TYPE_F32: memcpy(out, x, numel * 4); break;
    case GGML_TYPE_Q8_0: dspy_gguf_quantize_q8_0(x, numel, out); break;
    default:
        for (size_t i = 0; i < numel; i++) {
            uint16_t h = type == GGML_TYPE_F16 ? dspy_f32_to_f16(x[i]) : dspy_f32_to_bf16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
    }
}

static size_t encoded_bytes(size_t numel, uint32_t type) {
    uint32_t block, bytes;
    dspy_gguf_type_block(type, &block, &bytes);
    return numel / block * bytes;
}

/* The directory's last path component (trailing slashes ignored), malloc'd. */
static char *base_name(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    return strndup(dir + b, n - b);
}

dspy_status dspy_gguf_export(const char *dir, const char *out_path, const dspy_gguf_export_params *pp) {
    dspy_gguf_export_params p = pp ? *pp : dspy_gguf_export_params_default();
    dspy_status st;
    dspy_model_config c;
    dspy_checkpoint *ck = NULL;
    dspy_gguf_writer *w = NULL;
    plan_t *plan = NULL;
    float *x = NULL, *y = NULL;
    unsigned char *bytes = NULL;
    char *name = NULL;
    if ((unsigned)p.dtype > DSPY_GGUF_DTYPE_Q8_0)
        return dspy_fail(DSPY_ERR_ARG, "gguf export: dtype %d is not one of f32, f16, bf16, q8_0", (int)p.dtype);
    if ((st = dspy_model_config_load(dir, &c))) return st;
    if (c.arch == DSPY_ARCH_QWEN2 && c.rope_type == DSPY_ROPE_LLAMA3)
        return dspy_fail(DSPY_ERR_ARG, "%s: qwen2 with llama3 RoPE scaling cannot be expressed in GGUF (llama.cpp's "
                         "qwen2 reads no rope_freqs)", dir);
    if ((st = dspy_checkpoint_open(dir, &ck))) return st;
    plan = calloc(8 + 16 * (size_t)c.num_hidden_layers, sizeof *plan);
    name = p.name ? strdup(p.name) : base_name(dir);
    if (!plan || !name) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    int n = build_plan(&c, k_ggml_of[p.dtype], plan);
    size_t max_numel = 0;
    for (int i = 0; i < n; i++) {
        plan_t *t = &plan[i];
        size_t numel = (size_t)t->ne[0] * (size_t)(t->ndim == 2 ? t->ne[1] : 1);
        if (numel > max_numel) max_numel = numel;
        if (t->rope_freqs) continue;
        const dspy_tensor_info *ti = dspy_checkpoint_find(ck, t->hf);
        bool shape_ok = ti && ti->ndim == t->ndim &&
                        (t->ndim == 1 ? ti->shape[0] == t->ne[0] : ti->shape[0] == t->ne[1] && ti->shape[1] == t->ne[0]);
        if (!shape_ok) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is %s (config.json implies %lld x %lld)",
                           dspy_checkpoint_where(ck), t->hf, ti ? "of another shape" : "missing",
                           (long long)(t->ndim == 2 ? t->ne[1] : t->ne[0]), (long long)(t->ndim == 2 ? t->ne[0] : 1));
            goto fail;
        }
    }
    if ((st = dspy_gguf_writer_new(out_path, &w))) goto fail;
    add_metadata(w, &c, name, p.dtype);
    if ((st = dspy_gguf_vocab_export(dir, &c, w))) goto fail;
    for (int i = 0; i < n; i++) dspy_gguf_writer_tensor(w, plan[i].gguf, plan[i].type, plan[i].ndim, plan[i].ne);
    if ((st = dspy_gguf_writer_begin(w))) goto fail;
    x = malloc(max_numel * sizeof *x);
    y = malloc(max_numel * sizeof *y);
    bytes = malloc(max_numel * sizeof(float));
    if (!x || !y || !bytes) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: cannot allocate %zu MiB for one tensor", dir, 3 * max_numel * 4 >> 20);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        plan_t *t = &plan[i];
        size_t numel = (size_t)t->ne[0] * (size_t)(t->ndim == 2 ? t->ne[1] : 1);
        const float *src = x;
        if (t->rope_freqs) {
            dspy_model_config base = c;
            base.rope_type = DSPY_ROPE_DEFAULT;
            dspy_rope_inv_freq(&base, y);
            for (size_t j = 0; j < numel; j++)
                x[j] = dspy_gguf_llama3_factor(y[j], c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor,
                                               c.rope_original_max_position_embeddings);
        } else {
            if ((st = dspy_tensor_to_f32(dspy_checkpoint_find(ck, t->hf), x))) goto fail;
            if (t->perm > 0) {
                int64_t rows = t->ndim == 2 ? t->ne[1] : t->ne[0];
                size_t row_bytes = (t->ndim == 2 ? (size_t)t->ne[0] : 1) * sizeof(float);
                dspy_gguf_permute_rows(x, y, rows, row_bytes, t->perm, true);
                src = y;
            }
        }
        encode(src, numel, t->type, bytes);
        if ((st = dspy_gguf_writer_put(w, bytes, encoded_bytes(numel, t->type)))) goto fail;
    }
    st = dspy_gguf_writer_close(w);
    w = NULL;
    if (st) goto fail;
    free(x);
    free(y);
    free(bytes);
    free(plan);
    free(name);
    dspy_checkpoint_free(ck);
    return DSPY_OK;
fail:
    dspy_gguf_writer_abort(w);
    free(x);
    free(y);
    free(bytes);
    free(plan);
    free(name);
    dspy_checkpoint_free(ck);
    return st;
}

/* ---- the Ollama Modelfile --------------------------------------------------------------- */

/* Go templates (Ollama's TEMPLATE syntax) equivalent to the chat templates dspy.c renders, for
 * conversations without tools. Llama 3.x: a system block that always carries the knowledge and
 * date lines (the Jinja fallback date, as dspy.c renders without a date). */
static const char k_tmpl_llama3[] =
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    "{{ if .System }}{{ .System }}{{ end }}<|eot_id|>\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    "{{- if ne .Role \"system\" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>\n"
    "{{- if and $last (ne .Role \"assistant\") }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{{ end }}\n"
    "{{- end }}\n"
    "{{- end }}";
static const char k_tmpl_llama3_0[] =
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>\n"
    "{{- if and $last (ne .Role \"assistant\") }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{{ end }}\n"
    "{{- end }}";

dspy_status dspy_gguf_write_modelfile(const char *gguf_path, const char *modelfile_path) {
    dspy_gguf *g = NULL;
    dspy_chat_template *tpl = NULL;
    dspy_model_config c;
    dspy_str out = DSPY_STR_INIT, probe = DSPY_STR_INIT;
    dspy_status st = dspy_gguf_open(gguf_path, &g);
    if (st) return st;
    if ((st = dspy_gguf_model_config(g, &c))) goto done;
    const char *jinja = dspy_gguf_chat_template(g);
    if (!jinja) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: no tokenizer.chat_template; an Ollama Modelfile needs one", gguf_path);
        goto done;
    }
    if ((st = dspy_chat_template_parse(jinja, dspy_gguf_bos_text(g), &tpl))) goto done;
    /* FROM: "./NAME" when the Modelfile sits beside the file (Ollama resolves FROM against the
     * Modelfile's directory), else the file's absolute path */
    const char *gs = strrchr(gguf_path, '/'), *ms = strrchr(modelfile_path, '/');
    size_t gd = gs ? (size_t)(gs - gguf_path) : 0, md = ms ? (size_t)(ms - modelfile_path) : 0;
    dspy_str_appendf(&out, "# Ollama Modelfile written by `dspy export --ollama`; run: ollama create NAME -f %s\n",
                     ms ? ms + 1 : modelfile_path);
    if (gd == md && strncmp(gguf_path, modelfile_path, gd) == 0) {
        dspy_str_appendf(&out, "FROM ./%s\n", gs ? gs + 1 : gguf_path);
    } else {
        char *abs = realpath(gguf_path, NULL);
        dspy_str_appendf(&out, "FROM %s\n", abs ? abs : gguf_path);
        free(abs);
    }
    const char *stops[3] = {NULL, NULL, NULL};
    switch (dspy_chat_template_kind(tpl)) {
    case DSPY_CHAT_LLAMA3:
    case DSPY_CHAT_LLAMA3_0:
        dspy_str_appendf(&out, "TEMPLATE \"\"\"%s\"\"\"\n",
                         dspy_chat_template_kind(tpl) == DSPY_CHAT_LLAMA3 ? k_tmpl_llama3 : k_tmpl_llama3_0);
        stops[0] = "<|start_header_id|>";
        stops[1] = "<|end_header_id|>";
        stops[2] = "<|eot_id|>";
        break;
    case DSPY_CHAT_CHATML: {
        /* the template's default system block, as our renderer writes it before a lone user turn */
        dspy_chat_msg m = {"user", "@"};
        if ((st = dspy_chat_render(tpl, &m, 1, false, NULL, &probe, NULL, NULL))) goto done;
        const char *u = strstr(dspy_str_cstr(&probe), "<|im_start|>user");
        dspy_str_append(&out, "TEMPLATE \"\"\"{{- if not (and .Messages (eq (index .Messages 0).Role \"system\")) }}");
        dspy_str_appendn(&out, dspy_str_cstr(&probe), u ? (size_t)(u - probe.ptr) : 0);
        dspy_str_append(&out, "{{ end }}\n{{- range $i, $_ := .Messages }}\n"
                              "{{- $last := eq (len (slice $.Messages $i)) 1 }}<|im_start|>{{ .Role }}\n"
                              "{{ .Content }}<|im_end|>\n"
                              "{{ if and $last (ne .Role \"assistant\") }}<|im_start|>assistant\n{{ end }}\n"
                              "{{- end }}\"\"\"\n");
        stops[0] = "<|im_start|>";
        stops[1] = "<|im_end|>";
        break;
    }
    }
    for (int i = 0; i < 3; i++)
        if (stops[i]) dspy_str_appendf(&out, "PARAMETER stop \"%s\"\n", stops[i]);
    if (c.has_generation_config && c.gen_do_sample) {
        dspy_str_appendf(&out, "PARAMETER temperature %g\nPARAMETER top_p %g\n", c.gen_temperature, c.gen_top_p);
        if (c.gen_top_k > 0) dspy_str_appendf(&out, "PARAMETER top_k %d\n", c.gen_top_k);
    } else {
        dspy_str_append(&out, "PARAMETER temperature 0\n");
    }
    if (!dspy_str_ok(&out)) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto done;
    }
    st = dspy_write_file(modelfile_path, out.ptr, out.len);
done:
    dspy_str_free(&out);
    dspy_str_free(&probe);
    dspy_chat_template_free(tpl);
    dspy_gguf_free(g);
    return st;
}
