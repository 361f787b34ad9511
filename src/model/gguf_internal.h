/* gguf_internal.h — private parts of the GGUF module: the streaming writer, ggml type sizes,
 * Q8_0 blocks, the Llama q/k row permutation, and the tokenizer bridges used by the loaders.
 *
 * Not a public API: src/model only (and white-box tests).
 */
#ifndef DSPY_MODEL_GGUF_INTERNAL_H
#define DSPY_MODEL_GGUF_INTERNAL_H

#include <jansson.h>

#include "base/json_parse.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/gguf.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_QK8_0 32               /* values per Q8_0 block */
#define GGUF_Q8_0_BLOCK_BYTES 34    /* fp16 scale + 32 int8 */

/* ggml type ids used here. */
enum {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_BF16 = 30
};

/* Block size (values) and bytes per block of a ggml type; false when the id is unknown. */
bool dspy_gguf_type_block(uint32_t type, uint32_t *block, uint32_t *bytes);

/* "u32", "string", ... for a metadata value type. */
const char *dspy_gguf_vtype_name(uint32_t t);

/* Q8_0 (n a multiple of 32): quantize n floats into n/32 blocks, and back. */
void dspy_gguf_quantize_q8_0(const float *x, size_t n, uint8_t *out);
void dspy_gguf_dequantize_q8_0(const uint8_t *blocks, size_t n, float *out);

/* llama.cpp's q/k row order for architecture "llama": `rows` rows grouped in `heads` heads of rows/heads rows each. to_gguf moves HF's rotate-half order to interleaved
 * pairs (convert_hf_to_gguf.py's LlamaModel.permute); the inverse undoes it. Rows are moved
 * whole (row_bytes each), so this works for any row type, Q8_0 included. */
void dspy_gguf_permute_rows(const void *src, void *dst, int64_t rows, size_t row_bytes, int64_t heads,
                            bool to_gguf);

/* The factor llama.cpp divides rotary frequency `freq` (the base inverse frequency of one pair)
 * by under Llama 3.1 scaling, computed as convert_hf_to_gguf.py's LlamaModel
 * generate_extra_tensors does (float32 tensor arithmetic): 1 for short wavelengths, `factor`
 * for long ones, 1/((1-s)/factor + s) between. */
float dspy_gguf_llama3_factor(float freq, double factor, double low, double high, double old_ctx);

/* ---- the streaming writer --------------------------------------------------------------- */

typedef struct dspy_gguf_writer dspy_gguf_writer;

/* Starts a file at `path` (nothing is written until dspy_gguf_writer_begin). */
dspy_status dspy_gguf_writer_new(const char *path, dspy_gguf_writer **out);
/* Metadata, in call order. A repeated key is an error reported by begin. */
void dspy_gguf_kv_str(dspy_gguf_writer *w, const char *key, const char *v);
void dspy_gguf_kv_u32(dspy_gguf_writer *w, const char *key, uint32_t v);
void dspy_gguf_kv_i32(dspy_gguf_writer *w, const char *key, int32_t v);
void dspy_gguf_kv_f32(dspy_gguf_writer *w, const char *key, float v);
void dspy_gguf_kv_bool(dspy_gguf_writer *w, const char *key, bool v);
/* String array: n strings, each given as pointer + length. */
void dspy_gguf_kv_str_arr(dspy_gguf_writer *w, const char *key, const char *const *v, const size_t *lens, size_t n);
void dspy_gguf_kv_i32_arr(dspy_gguf_writer *w, const char *key, const int32_t *v, size_t n);
/* Declares the next tensor: ne fastest-first (ndim 1..4). */
void dspy_gguf_writer_tensor(dspy_gguf_writer *w, const char *name, uint32_t type, int32_t ndim, const int64_t *ne);
/* Writes the header, metadata and tensor infos to a temporary file next to `path`. */
dspy_status dspy_gguf_writer_begin(dspy_gguf_writer *w);
/* The data of the next declared tensor (exactly its byte size), in declaration order. */
dspy_status dspy_gguf_writer_put(dspy_gguf_writer *w, const void *data, size_t n);
/* Checks every tensor was written, syncs, renames into place, frees the writer (also on
 * failure, when the temporary file is removed). */
dspy_status dspy_gguf_writer_close(dspy_gguf_writer *w);
/* Discards everything. NULL-safe. */
void dspy_gguf_writer_abort(dspy_gguf_writer *w);

/* ---- tokenizer bridges (gguf_vocab.c) --------------------------------------------------- */

/* Adds the tokenizer.* metadata of model directory `dir` (tokenizer.json, tokenizer_config.json,
 * the chat template) for a model of `vocab_size` ids. */
dspy_status dspy_gguf_vocab_export(const char *dir, const dspy_model_config *cfg, dspy_gguf_writer *w);

/* A tokenizer.json document equivalent to the file's tokenizer.ggml.* metadata, and its bos/eos
 * ids (-1 when absent), for dspy_tokenizer_load: *root (jansson, caller decrefs) holds all of it
 * but model.vocab and model.merges, which are JSON text in *text (malloc'd, caller frees) at
 * spans[0] (the vocab object) and spans[1] (the merges array), as dspy_json_parse_fast_spans
 * leaves a tokenizer.json file (model/tokenizer_lists.c reads both). */
dspy_status dspy_gguf_tokenizer_json(const char *path, json_t **root, char **text, dspy_json_span spans[2], int32_t *bos,
                                     int32_t *eos);

#endif
