/* dspy/gguf.h — GGUF files (llama.cpp, Ollama, LM Studio): export a model directory, read one back.
 *
 * Format: GGUF version 3 as ggml's gguf.cpp reads it (little-endian): the magic "GGUF", the
 * version, the tensor and key/value counts, typed key/value metadata, one info record per tensor
 * (name, dimensions fastest-first, ggml type, offset), then the tensor data, each tensor aligned
 * to `general.alignment` (32 unless the file says otherwise). Metadata names and the Llama layout
 * follow llama.cpp's gguf-py (constants.py) and convert_hf_to_gguf.py:
 *   - names: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
 *     ffn_gate, ffn_up, ffn_down}, output_norm, output (absent when the embeddings are tied),
 *     rope_freqs (Llama 3.1 frequency factors, one per rotary pair);
 *   - for architecture "llama" the q/k projection rows are permuted from Hugging Face's
 *     rotate-half RoPE layout to the interleaved pairs llama.cpp rotates (per head, row
 *     j*HS/2 + i moves to 2i + j); "qwen2" files keep HF's layout (llama.cpp ropes them NEOX-style);
 *   - 1-D tensors (norms, biases, rope_freqs) stay F32 whatever the dtype asked for; a matrix
 *     whose rows are not a multiple of 32 falls back from Q8_0 to F16, as the converter does;
 *   - Q8_0 is ggml's block of 32: an fp16 scale d = max|x|/127 and 32 int8 round(x/d)
 *     (round half away from zero), 34 bytes;
 *   - the tokenizer is stored as tokenizer.ggml.{model "gpt2", pre, tokens, token_type, merges,
 *     bos/eos/eot/eom ids, add_bos_token}, the chat template as tokenizer.chat_template.
 *
 * Reading maps the file (read-only) and checks every length, type, dimension and offset against
 * the file's size; each violation is one DSPY_ERR_FORMAT naming the file and the key or tensor.
 * Import turns a GGUF written this way (by us or by llama.cpp's converter) back into what the
 * safetensors loader gives: a dspy_model_config and a dspy_checkpoint of Hugging Face names and
 * layouts (q/k un-permuted; Q8_0 dequantized to F32; F32/F16/BF16 tensors point into the mapping
 * where no permutation is needed). Architectures: llama, qwen2. Tensor types read: F32, F16,
 * BF16, Q8_0 (other quantizations are named in a clear error). Pre-tokenizers: "llama-bpe",
 * "qwen2". Not done: sharded (split) GGUF files, LoRA adapters, sentencepiece ("llama")
 * vocabularies, rope scaling other than llama3.
 *
 * The model loaders accept a path ending in ".gguf" wherever they take a model directory:
 * dspy_model_config_load, dspy_checkpoint_open, dspy_tokenizer_load, dspy_chat_template_load.
 *
 * Thread safety: an open file is immutable; any number of threads may read it.
 */
#ifndef DSPY_GGUF_H
#define DSPY_GGUF_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/model.h"
#include "dspy/safetensors.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- export ----------------------------------------------------------------------------- */

/* Storage type of the exported matrices (ggml type ids in comments). */
typedef enum dspy_gguf_dtype {
    DSPY_GGUF_DTYPE_F32 = 0,  /* ggml F32 (0), general.file_type 0 */
    DSPY_GGUF_DTYPE_F16,      /* ggml F16 (1), file_type 1 */
    DSPY_GGUF_DTYPE_BF16,     /* ggml BF16 (30), file_type 32 */
    DSPY_GGUF_DTYPE_Q8_0      /* ggml Q8_0 (8), file_type 7 */
} dspy_gguf_dtype;

/* "f32", "f16", "bf16", "q8_0" (and "?" for an invalid value). */
DSPY_API const char *dspy_gguf_dtype_name(dspy_gguf_dtype t);
/* Parses the names above (case-insensitive); false if unknown. */
DSPY_API bool dspy_gguf_dtype_parse(const char *name, dspy_gguf_dtype *out);

typedef struct dspy_gguf_export_params {
    dspy_gguf_dtype dtype; /* default F16 */
    const char *name;      /* general.name; NULL: the model directory's last path component */
} dspy_gguf_export_params;

DSPY_API dspy_gguf_export_params dspy_gguf_export_params_default(void);

/* Writes `model_dir` (config.json, model.safetensors, tokenizer.json, the chat template) as one
 * GGUF file at `out_path` (written to a temporary name next to it, renamed when complete; tensors
 * are converted one at a time). `p` may be NULL (defaults). Errors: DSPY_ERR_NOTFOUND/IO/FORMAT
 * from reading the directory (no tokenizer.json is an error: a GGUF carries its vocabulary),
 * DSPY_ERR_ARG for what GGUF or llama.cpp cannot express (a tokenizer whose pre-tokenizer is
 * neither Llama 3's nor Qwen2's, a vocabulary larger than vocab_size, qwen2 with llama3 RoPE),
 * DSPY_ERR_IO writing. Nothing is left at out_path on failure. */
DSPY_API dspy_status dspy_gguf_export(const char *model_dir, const char *out_path, const dspy_gguf_export_params *p);

/* Writes an Ollama Modelfile for `gguf_path` (FROM the file's name, relative to the Modelfile's
 * directory when they share it), with a TEMPLATE in Ollama's Go-template syntax for the chat
 * templates dspy.c recognises (Llama 3.x, Llama 3.0, ChatML), their stop tokens, and the
 * sampling defaults the file records. The template is our translation: it is not checked against
 * an Ollama binary here. Errors: DSPY_ERR_FORMAT (the file has no recognised chat template),
 * DSPY_ERR_IO. */
DSPY_API dspy_status dspy_gguf_write_modelfile(const char *gguf_path, const char *modelfile_path);

/* ---- reading ---------------------------------------------------------------------------- */

typedef struct dspy_gguf dspy_gguf;

/* Value types of GGUF metadata (the file's numbering). */
typedef enum dspy_gguf_vtype {
    DSPY_GGUF_U8 = 0, DSPY_GGUF_I8, DSPY_GGUF_U16, DSPY_GGUF_I16, DSPY_GGUF_U32, DSPY_GGUF_I32,
    DSPY_GGUF_F32, DSPY_GGUF_BOOL, DSPY_GGUF_STRING, DSPY_GGUF_ARRAY, DSPY_GGUF_U64, DSPY_GGUF_I64,
    DSPY_GGUF_F64
} dspy_gguf_vtype;

/* One tensor of an open file. `data` points into the read-only mapping. */
typedef struct dspy_gguf_tensor {
    const char *name;
    uint32_t type;      /* ggml type id: 0 F32, 1 F16, 8 Q8_0, 30 BF16, ... */
    int32_t ndim;       /* 1..4 */
    int64_t ne[4];      /* dimensions, fastest first (ne[0] is a row's length); unused ones 1 */
    const void *data;   /* nbytes bytes, valid while the file is open */
    size_t nbytes;
    uint64_t offset;    /* relative to the data section */
} dspy_gguf_tensor;

/* Maps and validates `path`. Errors: DSPY_ERR_NOTFOUND, DSPY_ERR_IO, DSPY_ERR_FORMAT (not GGUF,
 * version 1, truncated, a bad type, duplicate keys or tensor names, a tensor outside the file
 * or misaligned; the message names the file and the key or tensor). *out NULL on failure. */
DSPY_API dspy_status dspy_gguf_open(const char *path, dspy_gguf **out);
/* NULL-safe; unmaps. */
DSPY_API void dspy_gguf_free(dspy_gguf *g);
DSPY_API const char *dspy_gguf_path(const dspy_gguf *g);
DSPY_API uint32_t dspy_gguf_version(const dspy_gguf *g);
DSPY_API size_t dspy_gguf_alignment(const dspy_gguf *g);

/* Metadata: the i-th key (file order), its type, and lookups by key (-1 when absent). */
DSPY_API size_t dspy_gguf_kv_count(const dspy_gguf *g);
DSPY_API const char *dspy_gguf_kv_key(const dspy_gguf *g, size_t i);
DSPY_API dspy_gguf_vtype dspy_gguf_kv_type(const dspy_gguf *g, size_t i);
DSPY_API int64_t dspy_gguf_find_key(const dspy_gguf *g, const char *key);
/* Scalar getters by key: false when the key is absent or not of a fitting type (any integer
 * type for _int, BOOL included; F32/F64 for _float; STRING for _str, NUL-terminated, owned). */
DSPY_API bool dspy_gguf_get_int(const dspy_gguf *g, const char *key, int64_t *out);
DSPY_API bool dspy_gguf_get_float(const dspy_gguf *g, const char *key, double *out);
DSPY_API bool dspy_gguf_get_bool(const dspy_gguf *g, const char *key, bool *out);
DSPY_API const char *dspy_gguf_get_str(const dspy_gguf *g, const char *key);
/* Arrays by key: the element type and count (false when absent or not an array), then the
 * i-th element: _arr_str gives a pointer into the mapping (not NUL-terminated) and its length;
 * _arr_int any integer element. i must be below the count. */
DSPY_API bool dspy_gguf_get_arr(const dspy_gguf *g, const char *key, dspy_gguf_vtype *elem, size_t *n);
DSPY_API const char *dspy_gguf_arr_str(const dspy_gguf *g, const char *key, size_t i, size_t *len);
DSPY_API int64_t dspy_gguf_arr_int(const dspy_gguf *g, const char *key, size_t i);

/* Tensors, sorted by name. */
DSPY_API size_t dspy_gguf_tensor_count(const dspy_gguf *g);
DSPY_API const dspy_gguf_tensor *dspy_gguf_tensor_at(const dspy_gguf *g, size_t i);
/* NULL when absent. */
DSPY_API const dspy_gguf_tensor *dspy_gguf_tensor_find(const dspy_gguf *g, const char *name);
/* "F32", "Q8_0", ... for a ggml type id ("?" when unknown). */
DSPY_API const char *dspy_gguf_type_name(uint32_t type);

/* ---- import ----------------------------------------------------------------------------- */

/* True when `path` names a GGUF file by its extension (".gguf", any case). */
DSPY_API bool dspy_gguf_is_path(const char *path);

/* The model config a GGUF file describes: sizes from {arch}.* keys, tied embeddings when there
 * is no output.weight, biases when blk.0 has them, llama3 RoPE parameters recovered from
 * rope_freqs.weight (original context 8192 unless {arch}.rope.scaling.original_context_length
 * says otherwise), bos and the eos set (eos, eot, eom ids and the end-of-generation tokens
 * llama.cpp recognises by text), sampling defaults from general.sampling.*. Errors:
 * DSPY_ERR_FORMAT naming the key. */
DSPY_API dspy_status dspy_gguf_model_config(const dspy_gguf *g, dspy_model_config *cfg);
/* Opens `path` and reads its config (dspy_model_config_load does this for .gguf paths). */
DSPY_API dspy_status dspy_gguf_config_load(const char *path, dspy_model_config *cfg);

/* Opens `path` as a checkpoint of Hugging Face tensors (names such as
 * "model.layers.0.self_attn.q_proj.weight", HF shapes and layouts), and, when `cfg` is not NULL,
 * fills it as dspy_gguf_model_config does. The checkpoint keeps the file mapped; tensors that
 * need un-permuting or dequantizing live in memory it owns. dspy_checkpoint_where() is the path.
 * Errors: as dspy_gguf_open and dspy_gguf_model_config; DSPY_ERR_FORMAT for a tensor of a type
 * other than F32/F16/BF16/Q8_0 or of the wrong shape; DSPY_ERR_NOMEM. *out NULL on failure. */
DSPY_API dspy_status dspy_checkpoint_open_gguf(const char *path, dspy_model_config *cfg, dspy_checkpoint **out);

/* The chat template (Jinja source) stored in the file and the bos token's text; both owned by
 * `g`, NULL when absent. */
DSPY_API const char *dspy_gguf_chat_template(const dspy_gguf *g);
DSPY_API const char *dspy_gguf_bos_text(const dspy_gguf *g);

#ifdef __cplusplus
}
#endif
#endif
