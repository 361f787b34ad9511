/* dspy/progress.h — a progress bar that prints exactly what tqdm prints.
 *
 * What it does: renders tqdm's default bar,
 *   {desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]
 * e.g. "Average Metric: 51.00 / 99 (51.5%): 100%|██████████| 100/100 [00:35<00:00,  2.79it/s]",
 * and tqdm's unknown-total form "Processing: 42it [00:03, 12.00it/s]", following
 * tqdm.std.tqdm.format_meter (tqdm 4.64-4.67, unit "it", no unit_scale, unicode bar, no postfix):
 * format_interval's [H:]MM:SS, "{:5.2f}it/s" or "s/it" below one item per second, "?" before
 * any rate, the eighth-block partial cell, a 10-cell bar when the width is unknown, and the
 * bar fitted then the line trimmed to a known width (wide East Asian characters count 2).
 * The live object mirrors how DSPy drives tqdm (Evaluate, dspy_behaviour.md §8.3).
 * What it does not: ascii bars, unit scaling, postfix, nested/positioned bars, colour.
 *
 * Thread safety: dspy_progress_format is pure and reentrant. A dspy_progress may be updated
 * from many threads at once (one mutex inside); close it once, after the other threads are
 * done with it.
 */
#ifndef DSPY_PROGRESS_H
#define DSPY_PROGRESS_H

#include "dspy/export.h"

#include <stddef.h>
#include <stdio.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Formats one tqdm line (no '\r', no newline) into buf, like snprintf: at most cap-1 bytes plus
 * a NUL (nothing when cap == 0); returns the full length in bytes, so a return >= cap means the
 * line was cut (possibly inside a UTF-8 character: size buf from the return value).
 *   desc       NULL or "" for none; ": " is appended unless desc already ends with ": "
 *   n          items done
 *   total      expected items; <= 0 means unknown (tqdm total=None), giving "{n}it [...]".
 *              As in tqdm, n >= total + 0.5 also switches to the unknown-total form.
 *   elapsed_s  seconds since start; the rate is n / elapsed_s (unknown when either is 0)
 *   ncols      terminal width; <= 0 means unknown (tqdm ncols=None): a 10-cell bar, no trim */
DSPY_API size_t dspy_progress_format(char *buf, size_t cap, const char *desc, long n, long total, double elapsed_s,
                                     int ncols);

typedef struct dspy_progress dspy_progress;

/* Starts a bar on `out` (NULL: a silent bar that only counts). On a terminal it draws at once
 * ("  0%|...| 0/100 [00:00<?, ?it/s]"), then redraws in place with '\r' at most ~10 times a
 * second, sized to the terminal width, with tqdm's smoothed rate (EMA, smoothing 0.3). On
 * anything else (file, pipe) nothing is printed until dspy_progress_close, which prints one
 * line. desc may be NULL; it is copied. DSPY_ERR_NOMEM on allocation failure (*bar NULL). */
DSPY_API dspy_status dspy_progress_new(const char *desc, long total, FILE *out, dspy_progress **bar);

/* Adds `n` finished items (tqdm.update(n)). */
DSPY_API void dspy_progress_update(dspy_progress *bar, long n);

/* Replaces the description (tqdm.set_description); the next redraw shows it. DSPY_ERR_NOMEM
 * keeps the old one. */
DSPY_API dspy_status dspy_progress_set_desc(dspy_progress *bar, const char *desc);

/* Items counted so far. */
DSPY_API long dspy_progress_n(dspy_progress *bar);

/* Prints the final line with the overall average rate, as tqdm's close(leave=True) does:
 * on a terminal "\r<line><padding>\n", elsewhere "<line>\n" (10-cell bar); then frees the bar.
 * NULL-safe. */
DSPY_API void dspy_progress_close(dspy_progress *bar);

#ifdef __cplusplus
}
#endif
#endif
