/* test_hash.c — SHA-256 against the FIPS 180-4 / NIST CAVP example digests. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/hash.h"

static const char *ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
static const char *EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char *MSG448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
static const char *HEX448 = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
static const char *MSG896 =
    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmn"
    "opqrstnopqrstu";
static const char *HEX896 = "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1";
static const char *MILLION_A = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

static void test_one_shot(void) {
    char hex[DSPY_SHA256_HEX_LEN + 1];
    CHECK_OK(dspy_sha256_hex("abc", 3, hex));
    CHECK_STR(hex, ABC);
    CHECK_OK(dspy_sha256_hex(NULL, 0, hex));
    CHECK_STR(hex, EMPTY);
    CHECK_OK(dspy_sha256_hex(MSG448, strlen(MSG448), hex));
    CHECK_STR(hex, HEX448);
    CHECK_OK(dspy_sha256_hex(MSG896, strlen(MSG896), hex));
    CHECK_STR(hex, HEX896);
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    CHECK_OK(dspy_sha256_hex(a, 1000000, hex));
    CHECK_STR(hex, MILLION_A);
    free(a);
    uint8_t raw[DSPY_SHA256_LEN];
    CHECK_OK(dspy_sha256("abc", 3, raw));
    CHECK(raw[0] == 0xba && raw[1] == 0x78 && raw[31] == 0xad);
}

static void test_incremental(void) {
    dspy_sha256_ctx *c = NULL;
    CHECK_OK(dspy_sha256_new(&c));
    if (!c) return;
    char hex[DSPY_SHA256_HEX_LEN + 1];
    /* One million 'a' in uneven chunks that straddle the 64-byte block boundary. */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    size_t left = 1000000;
    int failed = 0;
    while (left > 0) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        failed += dspy_sha256_update(c, chunk, n) != DSPY_OK;
        left -= n;
    }
    CHECK_INT(failed, 0);
    CHECK_OK(dspy_sha256_final_hex(c, hex));
    CHECK_STR(hex, MILLION_A);
    /* The context is reset after final and can hash again, byte by byte. */
    int bad = 0;
    for (const char *p = MSG448; *p; p++) bad += dspy_sha256_update(c, p, 1) != DSPY_OK;
    CHECK_INT(bad, 0);
    CHECK_OK(dspy_sha256_update(c, NULL, 0));
    CHECK_OK(dspy_sha256_final_hex(c, hex));
    CHECK_STR(hex, HEX448);
    CHECK_OK(dspy_sha256_final_hex(c, hex));
    CHECK_STR(hex, EMPTY);
    dspy_sha256_free(c);
    dspy_sha256_free(NULL);
}

int main(void) {
    RUN(test_one_shot);
    RUN(test_incremental);
    return check_summary("test_hash");
}
