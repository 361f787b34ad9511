/* train/store.h — the rendezvous of a multi-process training run (private to src/train/).
 *
 * A key-value store served over TCP by rank 0 (MASTER_ADDR:MASTER_PORT, torchrun's names): the
 * ranks use it only to start — rank 0 publishes NCCL's unique id, every rank waits for it — and
 * to meet at barriers outside the steps. Gradients never go through it: they go through NCCL
 * (train/dist.h). Keys are short strings; values small byte strings.
 *
 * Rank 0 (serve = true) listens on every address at the port and answers any number of
 * connections, each on a thread of its own; it also talks to itself over 127.0.0.1, so every
 * rank uses the same calls. Other ranks connect (retrying until the timeout: rank 0 may start
 * later). Every call waits at most timeout_s; a rank that stops answering, or a rank 0 that
 * exits, gives the others an error naming the store and the key, never a hang.
 *
 * Thread safety: one store per process, calls from one thread at a time.
 */
#ifndef DSPY_TRAIN_STORE_H
#define DSPY_TRAIN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"

typedef struct dspy_store dspy_store;

/* host: MASTER_ADDR (a name or an address); port 1..65535. serve: this process is rank 0.
 * Errors: DSPY_ERR_IO (the port is taken, cannot connect within the timeout), DSPY_ERR_ARG. */
dspy_status dspy_store_new(const char *host, int port, bool serve, double timeout_s, dspy_store **out);
/* Sets key to the n bytes at v (replacing an earlier value) and wakes its waiters. */
dspy_status dspy_store_set(dspy_store *s, const char *key, const void *v, size_t n);
/* Waits until key is set, then copies its value into a new buffer (*v, free() it; *n bytes).
 * DSPY_ERR_TIMEOUT when it is not set within the timeout. */
dspy_status dspy_store_get(dspy_store *s, const char *key, void **v, size_t *n);
/* Adds delta to the integer under key (0 when absent) and returns the sum in *out. */
dspy_status dspy_store_add(dspy_store *s, const char *key, int64_t delta, int64_t *out);
/* Returns once `world` ranks called it with the same name (each name used once). */
dspy_status dspy_store_barrier(dspy_store *s, const char *name, int world);
/* NULL-safe. Rank 0's server stops: call it after the last barrier. */
void dspy_store_free(dspy_store *s);

#endif
