/* dspy/hf_datasets.h — download a Hugging Face dataset split through the dataset viewer API.
 *
 * Uses the public REST API of https://datasets-server.huggingface.co (no Python `datasets`):
 *   GET /info?dataset=D&config=C                 -> features (ClassLabel names)
 *   GET /rows?dataset=D&config=C&split=S&offset=O&length=L
 *       -> {"rows":[{"row_idx":i,"row":{...},"truncated_cells":[]}], "num_rows_total":N, ...}
 * Pages are fetched in order until num_rows_total rows are held. A split is returned only when
 * complete: every page must parse, row_idx must run 0..N-1 without gaps, no cell may be
 * truncated and the viewer must not mark the split partial; anything else is an error that
 * names the offset of the bad page.
 *
 * Requests: `Authorization: Bearer <token>` when a token is given or HF_TOKEN is set; a connect
 * timeout and a total timeout per request; retries with exponential backoff on HTTP 5xx, 429,
 * timeouts and dropped connections. When the very first request of a load cannot connect at
 * all (no network, DNS failure, nothing listening), the load fails at once, without retries,
 * with a message that points to local data (`--data-dir`).
 *
 * Cache: a complete split is saved as JSONL (one row object per line, atomic write) and the
 * /info answer as JSON under <cache_dir>/<owner>__<name>/<config>/; later loads read them and
 * make no request. Delete the folder to download again.
 *
 * Thread safety: the functions may run concurrently on different threads (each load uses its
 * own connection); libcurl is initialised once, thread-safely.
 */
#ifndef DSPY_HF_DATASETS_H
#define DSPY_HF_DATASETS_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include "dspy/example.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSPY_HF_DEFAULT_ENDPOINT "https://datasets-server.huggingface.co"

typedef struct dspy_hf_params {
    const char *endpoint;    /* base URL; NULL: $DSPY_HF_ENDPOINT, else DSPY_HF_DEFAULT_ENDPOINT */
    const char *token;       /* bearer token; NULL: $HF_TOKEN; "" sends none */
    const char *cache_dir;   /* NULL: $DSPY_CACHEDIR/hf, else $HOME/.dspy_cache/hf */
    bool use_cache;          /* read and write the cache (default true) */
    long connect_timeout_ms; /* per request (default 5000) */
    long timeout_ms;         /* whole request, per attempt (default 30000) */
    int max_retries;         /* retries after the first attempt (default 5) */
    long backoff_ms;         /* first retry delay, doubled each retry (default 500) */
    long max_backoff_ms;     /* delay cap (default 8000) */
    int page_size;           /* rows per /rows request, 1..100 (default 100, the API maximum) */
} dspy_hf_params;

DSPY_API dspy_hf_params dspy_hf_params_default(void);

/* The names of ClassLabel feature `feature` of dataset/config, in label-id order (from /info,
 * or its cached copy). *names is a malloc'd array of *n malloc'd strings: free with
 * dspy_hf_names_free. Errors: DSPY_ERR_IO (network, cache), DSPY_ERR_REMOTE (HTTP error),
 * DSPY_ERR_TIMEOUT, DSPY_ERR_FORMAT (no such ClassLabel feature, bad JSON). */
DSPY_API dspy_status dspy_hf_class_names(const dspy_hf_params *p, const char *dataset, const char *config,
                                         const char *feature, char ***names, size_t *n);
DSPY_API void dspy_hf_names_free(char **names, size_t n);

/* Every row of dataset/config/split, in row order, as examples whose fields are the row's
 * columns with their JSON values (a ClassLabel column stays an integer id); input keys None.
 * Errors as above; *out is NULL on failure, never a partial split. */
DSPY_API dspy_status dspy_hf_load_split(const dspy_hf_params *p, const char *dataset, const char *config,
                                        const char *split, dspy_dataset **out);

#ifdef __cplusplus
}
#endif

#endif
