/* dspy/safetensors.h — reading (mmap) and writing safetensors files, and sharded checkpoints.
 *
 * Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
 * N bytes of JSON {"__metadata__": {str: str}, NAME: {"dtype", "shape", "data_offsets": [b, e]}},
 * then the data buffer; offsets are relative to the buffer's start. Reading checks everything
 * the Rust library checks: the header fits the file, dtypes are known, each tensor's byte span
 * equals numel * element size, spans lie inside the buffer, do not overlap, and together cover
 * the buffer exactly (no gap, no trailing bytes). Each violation is one error naming the file
 * and the tensor.
 *
 * Writing follows the Python `safetensors.torch.save_file` layout: `__metadata__` first (with
 * "format": "pt"), tensors ordered by element size (largest first, so every tensor stays aligned
 * to its element size) then by caller order, compact JSON, header padded with spaces to a
 * multiple of 8 bytes. Files are written to a temporary name and renamed when complete.
 *
 * Thread safety: an open file is immutable; any number of threads may read it.
 */
#ifndef DSPY_SAFETENSORS_H
#define DSPY_SAFETENSORS_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/model.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSPY_TENSOR_MAX_DIMS 8

/* One tensor of an open file. `data` points into the read-only mapping. */
typedef struct dspy_tensor_info {
    const char *name;
    dspy_dtype dtype;
    int32_t ndim;
    int64_t shape[DSPY_TENSOR_MAX_DIMS];
    const void *data;   /* nbytes bytes, read-only; valid while the file is open */
    size_t nbytes;
    size_t offset;      /* data_offsets[0], relative to the data buffer */
    const char *file;   /* path of the file holding it (borrowed) */
} dspy_tensor_info;

/* Number of elements (1 for a scalar, shape product otherwise). */
DSPY_API int64_t dspy_tensor_numel(const dspy_tensor_info *t);
/* Converts the tensor to fp32 into `dst` (numel floats). F32, BF16, F16 and F64 are supported;
 * other dtypes give DSPY_ERR_FORMAT naming the file and tensor. */
DSPY_API dspy_status dspy_tensor_to_f32(const dspy_tensor_info *t, float *dst);
/* Scans the tensor once for NaN and +-Inf values. *n_bad gets how many there are, *first_bad
 * (may be NULL) the flat index of the first one (-1 when none). Floating dtypes F32, BF16, F16,
 * F64, F8_E4M3 (NaN only; it has no Inf) and F8_E5M2 are checked; integer and bool tensors have
 * none. Always DSPY_OK for a tensor of an open file (DSPY_ERR_ARG for NULL arguments). Reads the
 * whole tensor: on a lazily mapped file this pages it in. Thread-safe (reads only). */
DSPY_API dspy_status dspy_tensor_check_finite(const dspy_tensor_info *t, int64_t *n_bad, int64_t *first_bad);
/* "[2, 3]" into buf. */
DSPY_API void dspy_tensor_shape_str(const int64_t *shape, int32_t ndim, char *buf, size_t cap);

/* ---- one file --------------------------------------------------------------------------- */

typedef struct dspy_safetensors dspy_safetensors;

/* Maps and validates `path`. Errors: DSPY_ERR_IO (cannot open/map), DSPY_ERR_FORMAT (every
 * structural problem, message names the file and the tensor). */
DSPY_API dspy_status dspy_safetensors_open(const char *path, dspy_safetensors **out);
/* NULL-safe; unmaps. Tensor pointers die with it. */
DSPY_API void dspy_safetensors_free(dspy_safetensors *f);
DSPY_API size_t dspy_safetensors_count(const dspy_safetensors *f);
/* Tensors in file order (ascending data offset); i < count. */
DSPY_API const dspy_tensor_info *dspy_safetensors_at(const dspy_safetensors *f, size_t i);
/* NULL when absent. */
DSPY_API const dspy_tensor_info *dspy_safetensors_find(const dspy_safetensors *f, const char *name);
/* A `__metadata__` value, or NULL. */
DSPY_API const char *dspy_safetensors_metadata(const dspy_safetensors *f, const char *key);

/* ---- a checkpoint: model.safetensors or model.safetensors.index.json + shards ----------- */

typedef struct dspy_checkpoint dspy_checkpoint;

/* Opens DIR/model.safetensors, or, when absent, DIR/model.safetensors.index.json and every
 * shard its "weight_map" names (each tensor must be in the shard the index says). A path ending
 * in ".gguf" opens that GGUF file's tensors under their Hugging Face names and layouts
 * (dspy_checkpoint_open_gguf in dspy/gguf.h). */
DSPY_API dspy_status dspy_checkpoint_open(const char *dir, dspy_checkpoint **out);
DSPY_API void dspy_checkpoint_free(dspy_checkpoint *ck);
/* NULL when absent. */
DSPY_API const dspy_tensor_info *dspy_checkpoint_find(const dspy_checkpoint *ck, const char *name);
/* Total tensors over all shards, and the i-th (shard order, then file order). */
DSPY_API size_t dspy_checkpoint_count(const dspy_checkpoint *ck);
DSPY_API const dspy_tensor_info *dspy_checkpoint_at(const dspy_checkpoint *ck, size_t i);
/* What to name in messages: "DIR/model.safetensors" or "DIR/model.safetensors.index.json". */
DSPY_API const char *dspy_checkpoint_where(const dspy_checkpoint *ck);

/* ---- writing ---------------------------------------------------------------------------- */

/* A tensor to write: fp32 source data (numel floats), stored as `dtype` (F32, BF16 or F16;
 * BF16/F16 round to nearest even, as torch's .to() does). */
typedef struct dspy_tensor_out {
    const char *name;
    dspy_dtype dtype;
    int32_t ndim;
    int64_t shape[DSPY_TENSOR_MAX_DIMS];
    const float *data; /* ignored by dspy_safetensors_writer_open; used by dspy_safetensors_write */
} dspy_tensor_out;

/* Writes a whole file. `metadata` is NULL or a NULL-terminated list of key, value, key, value,
 * ... strings added to `__metadata__` after "format": "pt". Duplicate or empty names, and
 * names starting with "__", are DSPY_ERR_ARG. */
DSPY_API dspy_status dspy_safetensors_write(const char *path, const dspy_tensor_out *tensors, size_t n,
                                            const char *const *metadata);

/* Streaming writer (for checkpoints larger than memory): the header is written from the specs,
 * then each tensor's data is supplied by index, in any order, exactly once; close checks that
 * every tensor was supplied and renames the file into place. Abort (or close failing) removes
 * the temporary file. Not thread-safe. */
typedef struct dspy_safetensors_writer dspy_safetensors_writer;
DSPY_API dspy_status dspy_safetensors_writer_open(const char *path, const dspy_tensor_out *specs, size_t n,
                                                  const char *const *metadata, dspy_safetensors_writer **out);
/* data: numel fp32 values for tensor `i` of the specs. */
DSPY_API dspy_status dspy_safetensors_writer_put(dspy_safetensors_writer *w, size_t i, const float *data);
/* Completes and frees the writer (also on failure). */
DSPY_API dspy_status dspy_safetensors_writer_close(dspy_safetensors_writer *w);
/* Discards the partial file and frees the writer. NULL-safe. */
DSPY_API void dspy_safetensors_writer_abort(dspy_safetensors_writer *w);

/* Element conversions (round to nearest even; NaN stays NaN). */
DSPY_API uint16_t dspy_f32_to_bf16(float x);
DSPY_API float dspy_bf16_to_f32(uint16_t h);
DSPY_API uint16_t dspy_f32_to_f16(float x);
DSPY_API float dspy_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif
