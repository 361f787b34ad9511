/* json_repair.h — a lenient JSON reader in the spirit of Python's json_repair.loads (private to
 * src/program).
 *
 * DSPy's JSONAdapter and parse_value call json_repair.loads on LM text. This reproduces the
 * repairs that matter for LM answers, not the whole heuristic engine:
 *   - strict JSON first (json.loads); otherwise a repair pass:
 *   - text before the first '{' or '[' is skipped (prose, ```json fences);
 *   - strings in ' " or “ ” quotes; a quote that is not followed by , : } ] or the end is
 *     taken as part of the string; unquoted keys and values (up to , } ] or newline);
 *   - true/false/null in any letter case, numbers, missing or trailing commas, missing ':' ,
 *     unclosed objects/arrays/strings at the end of the text, line and block comments;
 *   - several top-level values become a list (a repeated value of the same shape replaces the
 *     previous one, as json_repair does);
 *   - nothing found gives the empty string "" (json_repair's failure value).
 * Known differences: json_repair's handling of doubled quotes, stray '...' and key/array
 * merging heuristics are not reproduced; such inputs may repair differently.
 */
#ifndef DSPY_PROGRAM_JSON_REPAIR_H
#define DSPY_PROGRAM_JSON_REPAIR_H

#include <stddef.h>

#include "dspy/json.h"

/* New reference in *out; only DSPY_ERR_NOMEM can fail. */
dspy_status dspy_json_repair_loads(const char *s, size_t n, dspy_json **out);

/* The first balanced {...} substring (DSPy's regex \{(?:[^{}]|(?R))*\} with DOTALL): sets
 * start/len and returns true, or returns false when there is none. */
bool dspy_json_first_braced(const char *s, size_t n, size_t *start, size_t *len);

#endif
