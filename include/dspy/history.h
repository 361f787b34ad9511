/* dspy/history.h — bounded LM call history and DSPy's inspect_history printout.
 *
 * A history is a bounded FIFO of entries. An entry is a JSON object with DSPy's keys
 * (spec dspy_behaviour.md §6.5): "prompt" (null when messages are given), "messages",
 * "kwargs" (no key starting with "api_"), "response" (the provider's response object),
 * "outputs" (list of strings), "usage" ({} on a cache hit), "cost" (null), "timestamp"
 * (Python datetime.now().isoformat(), local time), "uuid", "model", "response_model",
 * "model_type". LMs append one entry per call to their own history and to the global one
 * (GLOBAL_HISTORY, capped at 10000).
 *
 * Rendering follows DSPy 3.3.1's pretty_print_history (spec §7) byte for byte: for each of the
 * last n entries, oldest first, the timestamp, each message with its capitalised role, the first
 * output and a note when there are more. Colours (red/blue/green ANSI) are used only when the
 * output is a terminal (isatty), as the project decided; DSPy prints them to stdout always and
 * drops them when a file is given.
 *
 * Thread safety: all functions may be called concurrently on the same history. Entries are
 * shared by reference and must not be modified after they are appended.
 */
#ifndef DSPY_HISTORY_H
#define DSPY_HISTORY_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dspy/json.h"
#include "dspy/status.h"
#include "dspy/str.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_history dspy_history;

/* A history keeping at most `max_size` entries (0 = unbounded). NULL on OOM. */
DSPY_API dspy_history *dspy_history_new(size_t max_size);
DSPY_API void dspy_history_free(dspy_history *h); /* NULL-safe */

/* Appends `entry` (a JSON object; a reference is kept, not a copy), dropping the oldest entry
 * when full. DSPY_ERR_ARG if `entry` is not an object. */
DSPY_API dspy_status dspy_history_append(dspy_history *h, dspy_json *entry);
DSPY_API size_t dspy_history_len(dspy_history *h);
/* Entry i, oldest first (new reference), or NULL when out of range. */
DSPY_API dspy_json *dspy_history_at(dspy_history *h, size_t i);
/* The entries of Python's history[-n:] as a new JSON array (n = 0 gives all of them, as the
 * Python slice does). NULL on OOM. */
DSPY_API dspy_json *dspy_history_last(dspy_history *h, int32_t n);
DSPY_API void dspy_history_clear(dspy_history *h);
/* Changes the bound (0 = unbounded), dropping the oldest entries beyond it. */
DSPY_API void dspy_history_set_max_size(dspy_history *h, size_t max_size);

/* The process-wide history every LM call is appended to (capacity 10000). Never NULL. */
DSPY_API dspy_history *dspy_history_global(void);
/* settings.disable_history: when false, LM calls record no history at all (default true). */
DSPY_API void dspy_history_set_enabled(bool enabled);
DSPY_API bool dspy_history_enabled(void);

/* Appends the pretty_print_history text for `entries` (a JSON array of entries, oldest first)
 * to `out`, with or without ANSI colours. DSPY_ERR_ARG on an entry lacking "messages"/"prompt"
 * or "outputs"; DSPY_ERR_NOMEM on allocation failure. */
DSPY_API dspy_status dspy_history_render(const dspy_json *entries, bool colors, dspy_str *out);
/* Prints the last n entries of `h` (history[-n:]) to `out`; colours iff `out` is a terminal.
 * DSPY_ERR_IO when writing fails. */
DSPY_API dspy_status dspy_history_print(dspy_history *h, int32_t n, FILE *out);
/* dspy.inspect_history(n): dspy_history_print on the global history. */
DSPY_API dspy_status dspy_inspect_history(int32_t n, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
