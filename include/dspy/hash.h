/* dspy/hash.h — SHA-256 digests (one-shot and incremental), as lowercase hex or raw bytes.
 *
 * What it does: FIPS 180-4 SHA-256 through OpenSSL libcrypto's EVP interface, e.g. for the
 * content hash that names fine-tuning data files (dspy_behaviour.md §10.5, where any content
 * hash is acceptable) and for cache keys.
 * Also random uuid4 ids (Python's uuid.uuid4()), from the same library's generator.
 * What it does not: other digests, HMAC, or reproducing Python's sha256(pickle.dumps(...)).
 *
 * Thread safety: the one-shot functions are thread-safe; a dspy_sha256_ctx belongs to one
 * thread at a time.
 */
#ifndef DSPY_HASH_H
#define DSPY_HASH_H

#include "dspy/export.h"

#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSPY_SHA256_LEN 32     /* digest bytes */
#define DSPY_SHA256_HEX_LEN 64 /* hex characters, without the NUL */

/* SHA-256 of n bytes at data, written as 64 lowercase hex digits plus NUL into out.
 * data may be NULL when n == 0. DSPY_ERR_BACKEND if libcrypto fails (out is then ""). */
DSPY_API dspy_status dspy_sha256_hex(const void *data, size_t n, char out[DSPY_SHA256_HEX_LEN + 1]);

/* The same digest as 32 raw bytes. */
DSPY_API dspy_status dspy_sha256(const void *data, size_t n, uint8_t out[DSPY_SHA256_LEN]);

/* Incremental hashing: new -> update* -> final (or final_hex) -> free. After final the context
 * is reset and may hash a new message. */
typedef struct dspy_sha256_ctx dspy_sha256_ctx;

/* Creates a context in *out (NULL on failure: DSPY_ERR_NOMEM or DSPY_ERR_BACKEND). */
DSPY_API dspy_status dspy_sha256_new(dspy_sha256_ctx **out);
/* Feeds n more bytes (data may be NULL when n == 0). */
DSPY_API dspy_status dspy_sha256_update(dspy_sha256_ctx *ctx, const void *data, size_t n);
/* Writes the digest of everything fed since new (or the last final) and resets the context. */
DSPY_API dspy_status dspy_sha256_final(dspy_sha256_ctx *ctx, uint8_t out[DSPY_SHA256_LEN]);
DSPY_API dspy_status dspy_sha256_final_hex(dspy_sha256_ctx *ctx, char out[DSPY_SHA256_HEX_LEN + 1]);
/* Frees the context; NULL-safe. */
DSPY_API void dspy_sha256_free(dspy_sha256_ctx *ctx);

/* A fresh random uuid4 as uuid.uuid4().hex: 32 lowercase hex digits plus NUL (the version and
 * variant bits set as RFC 4122 says). Thread-safe. */
DSPY_API void dspy_uuid4_hex(char out[33]);
/* The same as str(uuid.uuid4()): "8-4-4-4-12" hex digits plus NUL. */
DSPY_API void dspy_uuid4(char out[37]);

#ifdef __cplusplus
}
#endif
#endif
