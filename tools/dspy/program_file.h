/* program_file.h — saved programs for `dspy compile` and `dspy eval`: loading one saved by
 * Python DSPy or by dspy.c, and the local model paths inside it.
 *
 * Model paths: a fine-tuned LM is "openai/local:<model dir>". Before saving, a model dir
 * inside the program file's folder is written relative to that folder ("openai/local:cache/
 * finetune/abc_..."), so the run folder can move; one outside stays absolute. After loading, a
 * relative path is resolved against the file's folder, and --model DIR re-points every local
 * LM at another directory.
 *
 * Python DSPy's save() records no signature text, program type or field types: only
 * {"<predictor>": {"demos", "signature": {"instructions", "fields": [{"prefix",
 * "description"}]}, "lm"}, "metadata"} (spec §12). dspy.c's own files add metadata.dspy_c with
 * all of it. For a Python file the program type is read from the predictor name ("self":
 * Predict, "predict": ChainOfThought when a field has the "Reasoning:" prefix) and the field
 * names and sides from DSPy's default instructions ("Given the fields `a`, produce the fields
 * `b`."); types are unknown there, so outputs read as str unless --signature gives them.
 */
#ifndef DSPY_TOOL_PROGRAM_FILE_H
#define DSPY_TOOL_PROGRAM_FILE_H

#include <stdbool.h>

#include "dspy/module.h"

/* Loads `path` (dspy_program_load). `signature` / `module` ("cot", "predict"; NULL = the
 * file's) override the file; for a Python-saved file without them they are inferred as above
 * (*inferred set, with a note on stderr). `profile` < 0 keeps the file's format profile. */
dspy_status program_file_load(const char *path, const char *signature, const char *module, int profile,
                              dspy_module **out, bool *inferred);

/* Every "openai/local:<relative dir>" LM of `m` is resolved against `program_path`'s folder;
 * with `model_dir` (may be NULL) every local LM points at that directory instead. A local LM
 * whose directory does not exist is an error (DSPY_ERR_NOTFOUND) naming the path and
 * --model. */
dspy_status program_file_resolve_models(dspy_module *m, const char *program_path, const char *model_dir);

/* The inverse before saving: local model dirs under `program_path`'s folder become relative. */
dspy_status program_file_relativize_models(dspy_module *m, const char *program_path);

#endif
