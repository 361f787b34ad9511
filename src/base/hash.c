/* hash.c — SHA-256 on OpenSSL libcrypto EVP (see dspy/hash.h). Follows FIPS 180-4 through
 * EVP_sha256(); nothing here implements the compression function itself. */
#include "dspy/hash.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

struct dspy_sha256_ctx {
    EVP_MD_CTX *md;
};

static dspy_status crypto_fail(const char *what) {
    unsigned long e = ERR_get_error();
    char buf[256] = "no OpenSSL error queued";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return dspy_fail(DSPY_ERR_BACKEND, "sha256: %s failed in libcrypto (%s); check the OpenSSL installation", what,
                     buf);
}

static void to_hex(const uint8_t *d, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < DSPY_SHA256_LEN; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[DSPY_SHA256_HEX_LEN] = '\0';
}

dspy_status dspy_sha256(const void *data, size_t n, uint8_t out[DSPY_SHA256_LEN]) {
    unsigned int len = 0;
    if (!EVP_Digest(n ? data : "", n, out, &len, EVP_sha256(), NULL) || len != DSPY_SHA256_LEN)
        return crypto_fail("EVP_Digest");
    return DSPY_OK;
}

dspy_status dspy_sha256_hex(const void *data, size_t n, char out[DSPY_SHA256_HEX_LEN + 1]) {
    uint8_t d[DSPY_SHA256_LEN];
    out[0] = '\0';
    dspy_status st = dspy_sha256(data, n, d);
    if (st != DSPY_OK) return st;
    to_hex(d, out);
    return DSPY_OK;
}

dspy_status dspy_sha256_new(dspy_sha256_ctx **out) {
    *out = NULL;
    dspy_sha256_ctx *c = calloc(1, sizeof *c);
    if (!c) return dspy_fail(DSPY_ERR_NOMEM, "sha256: out of memory for a context");
    c->md = EVP_MD_CTX_new();
    if (!c->md) {
        free(c);
        return crypto_fail("EVP_MD_CTX_new");
    }
    if (!EVP_DigestInit_ex(c->md, EVP_sha256(), NULL)) {
        dspy_sha256_free(c);
        return crypto_fail("EVP_DigestInit_ex");
    }
    *out = c;
    return DSPY_OK;
}

dspy_status dspy_sha256_update(dspy_sha256_ctx *ctx, const void *data, size_t n) {
    if (n == 0) return DSPY_OK;
    if (!EVP_DigestUpdate(ctx->md, data, n)) return crypto_fail("EVP_DigestUpdate");
    return DSPY_OK;
}

dspy_status dspy_sha256_final(dspy_sha256_ctx *ctx, uint8_t out[DSPY_SHA256_LEN]) {
    unsigned int len = 0;
    if (!EVP_DigestFinal_ex(ctx->md, out, &len) || len != DSPY_SHA256_LEN)
        return crypto_fail("EVP_DigestFinal_ex");
    if (!EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL)) return crypto_fail("EVP_DigestInit_ex");
    return DSPY_OK;
}

dspy_status dspy_sha256_final_hex(dspy_sha256_ctx *ctx, char out[DSPY_SHA256_HEX_LEN + 1]) {
    uint8_t d[DSPY_SHA256_LEN];
    out[0] = '\0';
    dspy_status st = dspy_sha256_final(ctx, d);
    if (st != DSPY_OK) return st;
    to_hex(d, out);
    return DSPY_OK;
}

void dspy_sha256_free(dspy_sha256_ctx *ctx) {
    if (!ctx) return;
    EVP_MD_CTX_free(ctx->md);
    free(ctx);
}

void dspy_uuid4_hex(char out[33]) {
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) {
        struct timeval tv; /* RAND_bytes cannot fail on Linux with getrandom; keep ids unique anyway */
        gettimeofday(&tv, NULL);
        for (int i = 0; i < 16; i++) b[i] = (unsigned char)((tv.tv_usec >> (i % 4 * 8)) ^ (rand() & 0xFF));
    }
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80); /* variant RFC 4122 */
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[32] = '\0';
}

void dspy_uuid4(char out[37]) {
    char h[33];
    dspy_uuid4_hex(h);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}
