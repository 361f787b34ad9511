/* checkpoint_internal.h — building a dspy_checkpoint from tensors that do not come from
 * safetensors files (the GGUF importer), so the model loader reads every source the same way.
 *
 * Not a public API: src/model only.
 */
#ifndef DSPY_MODEL_CHECKPOINT_INTERNAL_H
#define DSPY_MODEL_CHECKPOINT_INTERNAL_H

#include "dspy/safetensors.h"

/* A checkpoint over `n` tensors whose names and data belong to `owner`; owner_free(owner) runs
 * when the checkpoint is freed (and here, on failure). `where` names it in messages. Tensor
 * names must be unique (DSPY_ERR_FORMAT otherwise). */
dspy_status dspy_checkpoint_adopt(const char *where, const dspy_tensor_info *tensors, size_t n, void *owner,
                                  void (*owner_free)(void *), dspy_checkpoint **out);

#endif
