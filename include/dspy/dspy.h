/* dspy/dspy.h — the whole public API in one include, and the index of include/dspy/.
 *
 * Includes every header of include/dspy/ (each also stands alone; include only what you use to
 * keep builds fast). Link with `pkg-config --libs dspy` or CMake's dspy::dspy. The library's
 * version is in dspy/version.h (DSPY_VERSION_STRING at compile time, dspy_version() at run
 * time). Public functions carry DSPY_API (dspy/export.h); every header has extern "C" guards.
 *
 * The headers are flat (dspy/<name>.h) so that an include never changes when code moves; they
 * are grouped below by layer, lowest first: a layer uses only the groups listed before it
 * (DESIGN.md §1). Most programs need the "program" and "lm" groups; the rest is there
 * for those who build their own pieces.
 */
#ifndef DSPY_DSPY_H
#define DSPY_DSPY_H

/* ---- base: utilities every layer uses ------------------------------------------------------ */
#include "dspy/export.h"   /* DSPY_API */
#include "dspy/version.h"  /* DSPY_VERSION_*, dspy_version() */
#include "dspy/status.h"   /* dspy_status, dspy_fail, dspy_errmsg */
#include "dspy/str.h"      /* string builder and views, whole-file read/write */
#include "dspy/arena.h"    /* bump allocator for per-call data */
#include "dspy/json.h"     /* JSON values, Python-compatible serialisation */
#include "dspy/log.h"      /* leveled logging to a replaceable sink */
#include "dspy/clock.h"    /* monotonic time, sleeping, timed waits */
#include "dspy/hash.h"     /* SHA-256, uuid4 */
#include "dspy/rng.h"      /* xoshiro256** / splitmix64 for numerics */
#include "dspy/random.h"   /* CPython's random.Random, bit for bit */
#include "dspy/pool.h"     /* thread pool, parallel for */
#include "dspy/progress.h" /* tqdm-identical progress bar */

/* ---- data: examples and datasets ---------------------------------------------------------- */
#include "dspy/example.h"     /* dspy.Example, datasets */
#include "dspy/csv.h"         /* RFC 4180 reader */
#include "dspy/jsonl.h"       /* JSON Lines */
#include "dspy/hf_datasets.h" /* Hugging Face dataset viewer API */
#include "dspy/data_source.h" /* a task's examples from JSONL, CSV or the Hub */
#include "dspy/datasets.h"    /* label lists, Banking77 and the tutorial split */

/* ---- kern: compute backends ---------------------------------------------------------------- */
#include "dspy/tensor.h"  /* dtypes, devices, the tensor handle */
#include "dspy/backend.h" /* which backends this build and machine offer */

/* ---- model: checkpoints, tokenizer, chat template ---------------------------------------- */
#include "dspy/safetensors.h"   /* safetensors read (mmap) / write */
#include "dspy/gguf.h"          /* GGUF export and read-back */
#include "dspy/model.h"         /* config, weights, the loaded model */
#include "dspy/tokenizer.h"     /* byte-level BPE */
#include "dspy/chat_template.h" /* apply_chat_template, exactly */

/* ---- structured outputs and the engine ----------------------------------------------------- */
#include "dspy/constraint.h" /* token automata that restrict generation */
#include "dspy/structured.h" /* JSON schema / field layouts -> automata */
#include "dspy/engine.h"     /* continuous batching over a loaded model */

/* ---- train: supervised fine-tuning ----------------------------------------------------------- */
#include "dspy/sft_data.h" /* chat JSONL -> labelled token sequences, packing */
#include "dspy/train.h"    /* train_sft_locally in C */

/* ---- server: the OpenAI-compatible HTTP server --------------------------------------------- */
#include "dspy/server.h" /* dspy_server_new / run / start (on a thread) / join */

/* ---- lm: language models and their servers ------------------------------------------------- */
#include "dspy/cache.h"   /* the LM response cache (LRU over SQLite) */
#include "dspy/history.h" /* LM call history, inspect_history */
#include "dspy/lm.h"      /* dspy.LM over OpenAI-compatible HTTP, scripted LMs */
#include "dspy/oracle.h"  /* a labelled stand-in teacher for offline runs */
#include "dspy/local.h"   /* serve a local model: in process, or a `dspy serve` child */

/* ---- program: DSPy's modules, adapters, optimizers ----------------------------------------- */
#include "dspy/type.h"       /* field types of signatures */
#include "dspy/signature.h"  /* typed input/output fields plus instructions */
#include "dspy/prediction.h" /* dspy.Prediction */
#include "dspy/adapter.h"    /* ChatAdapter, JSONAdapter */
#include "dspy/callback.h"   /* callback hooks */
#include "dspy/settings.h"   /* dspy.settings */
#include "dspy/trace.h"      /* settings.trace */
#include "dspy/module.h"     /* Predict, ChainOfThought, custom modules */
#include "dspy/parallel.h"   /* ParallelExecutor */
#include "dspy/evaluate.h"   /* dspy.Evaluate */
#include "dspy/bootstrap.h"  /* bootstrap_trace_data, fine-tuning data */
#include "dspy/compile.h"    /* BootstrapFinetune.compile, launch()/kill() */

/* ---- track: experiment tracking ------------------------------------------------------------ */
#include "dspy/track.h" /* run directories, metrics, MLflow, HTML reports */

#endif
