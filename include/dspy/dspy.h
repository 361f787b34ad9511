/* dspy/dspy.h — the whole public API in one include.
 *
 * Includes every header of include/dspy/ (each also stands alone; include only what you use to
 * keep builds fast). Link with `pkg-config --libs dspy` or CMake's dspy::dspy. The library's
 * version is in dspy/version.h (DSPY_VERSION_STRING at compile time, dspy_version() at run
 * time). Public functions carry DSPY_API (dspy/export.h); every header has extern "C" guards.
 */
#ifndef DSPY_DSPY_H
#define DSPY_DSPY_H

#include "dspy/adapter.h"
#include "dspy/arena.h"
#include "dspy/backend.h"
#include "dspy/bootstrap.h"
#include "dspy/cache.h"
#include "dspy/callback.h"
#include "dspy/chat_template.h"
#include "dspy/clock.h"
#include "dspy/compile.h"
#include "dspy/constraint.h"
#include "dspy/csv.h"
#include "dspy/data_source.h"
#include "dspy/datasets.h"
#include "dspy/engine.h"
#include "dspy/evaluate.h"
#include "dspy/example.h"
#include "dspy/export.h"
#include "dspy/gguf.h"
#include "dspy/hash.h"
#include "dspy/hf_datasets.h"
#include "dspy/history.h"
#include "dspy/json.h"
#include "dspy/jsonl.h"
#include "dspy/lm.h"
#include "dspy/local.h"
#include "dspy/log.h"
#include "dspy/model.h"
#include "dspy/module.h"
#include "dspy/oracle.h"
#include "dspy/parallel.h"
#include "dspy/pool.h"
#include "dspy/prediction.h"
#include "dspy/progress.h"
#include "dspy/random.h"
#include "dspy/rng.h"
#include "dspy/safetensors.h"
#include "dspy/server.h"
#include "dspy/settings.h"
#include "dspy/sft_data.h"
#include "dspy/signature.h"
#include "dspy/status.h"
#include "dspy/str.h"
#include "dspy/structured.h"
#include "dspy/tensor.h"
#include "dspy/tokenizer.h"
#include "dspy/trace.h"
#include "dspy/track.h"
#include "dspy/train.h"
#include "dspy/type.h"
#include "dspy/version.h"

#endif
