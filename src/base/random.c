/* random.c — CPython-compatible random.Random: MT19937 plus the Python-level draw algorithms.
 *
 * Follows CPython 3.11 Modules/_randommodule.c (init_genrand, init_by_array, genrand_uint32,
 * random_random, getrandbits) and Lib/random.py (_randbelow_with_getrandbits, shuffle, choice,
 * sample). MT19937 itself is Matsumoto & Nishimura's 2002 reference algorithm. Every draw must
 * consume the generator exactly as CPython does, so the order of calls below is part of the
 * contract. Verified against CPython by tests/ref/random_vectors.txt.
 */
#include "dspy/random.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define N DSPY_PYRANDOM_N
#define M 397
#define MATRIX_A 0x9908b0dfU
#define UPPER_MASK 0x80000000U
#define LOWER_MASK 0x7fffffffU

static void init_genrand(dspy_pyrandom *r, uint32_t s) {
    uint32_t *mt = r->mt;
    mt[0] = s;
    for (int i = 1; i < N; i++) mt[i] = 1812433253U * (mt[i - 1] ^ (mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = N;
}

static void init_by_array(dspy_pyrandom *r, const uint32_t *key, size_t key_length) {
    uint32_t *mt = r->mt;
    init_genrand(r, 19650218U);
    size_t i = 1, j = 0;
    size_t k = N > key_length ? N : key_length;
    for (; k; k--) {
        mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525U)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= N) {
            mt[0] = mt[N - 1];
            i = 1;
        }
        if (j >= key_length) j = 0;
    }
    for (k = N - 1; k; k--) {
        mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941U)) - (uint32_t)i;
        i++;
        if (i >= N) {
            mt[0] = mt[N - 1];
            i = 1;
        }
    }
    mt[0] = 0x80000000U; /* MSB is 1, assuring a non-zero initial array */
}

void dspy_pyrandom_seed_words(dspy_pyrandom *r, const uint32_t *words, size_t n_words) {
    while (n_words > 0 && words[n_words - 1] == 0) n_words--;
    if (n_words == 0) {
        /* CPython: key = [0], key length 1. */
        const uint32_t zero = 0;
        init_by_array(r, &zero, 1);
        return;
    }
    init_by_array(r, words, n_words);
}

void dspy_pyrandom_seed(dspy_pyrandom *r, uint64_t seed) {
    uint32_t words[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    dspy_pyrandom_seed_words(r, words, 2);
}

uint32_t dspy_pyrandom_uint32(dspy_pyrandom *r) {
    static const uint32_t mag01[2] = {0x0U, MATRIX_A};
    uint32_t *mt = r->mt;
    uint32_t y;
    if (r->mti >= N) {
        int kk;
        for (kk = 0; kk < N - M; kk++) {
            y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
            mt[kk] = mt[kk + M] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        for (; kk < N - 1; kk++) {
            y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
            mt[kk] = mt[kk + (M - N)] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        y = (mt[N - 1] & UPPER_MASK) | (mt[0] & LOWER_MASK);
        mt[N - 1] = mt[M - 1] ^ (y >> 1) ^ mag01[y & 0x1U];
        r->mti = 0;
    }
    y = mt[r->mti++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
}

double dspy_pyrandom_random(dspy_pyrandom *r) {
    uint32_t a = dspy_pyrandom_uint32(r) >> 5, b = dspy_pyrandom_uint32(r) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

void dspy_pyrandom_getrandbits_words(dspy_pyrandom *r, size_t k, uint32_t *out) {
    if (k == 0) return;
    if (k <= 32) {
        out[0] = dspy_pyrandom_uint32(r) >> (32 - k);
        return;
    }
    /* CPython fills the words least significant first; only the last one is shifted. */
    size_t words = (k - 1) / 32 + 1;
    for (size_t i = 0; i < words; i++, k -= 32) {
        uint32_t w = dspy_pyrandom_uint32(r);
        if (k < 32) w >>= (32 - k);
        out[i] = w;
    }
}

uint64_t dspy_pyrandom_getrandbits(dspy_pyrandom *r, int k) {
    DSPY_ASSERT(k >= 0 && k <= 64);
    uint32_t w[2] = {0, 0};
    dspy_pyrandom_getrandbits_words(r, (size_t)k, w);
    return (uint64_t)w[0] | ((uint64_t)w[1] << 32);
}

static int bit_length(uint64_t n) {
    return n ? 64 - __builtin_clzll(n) : 0;
}

uint64_t dspy_pyrandom_randbelow(dspy_pyrandom *r, uint64_t n) {
    if (n == 0) return 0;
    int k = bit_length(n);
    uint64_t v = dspy_pyrandom_getrandbits(r, k);
    while (v >= n) v = dspy_pyrandom_getrandbits(r, k);
    return v;
}

static void swap_bytes(unsigned char *a, unsigned char *b, size_t size) {
    unsigned char tmp[64];
    while (size > 0) {
        size_t c = size < sizeof tmp ? size : sizeof tmp;
        memcpy(tmp, a, c);
        memcpy(a, b, c);
        memcpy(b, tmp, c);
        a += c;
        b += c;
        size -= c;
    }
}

void dspy_pyrandom_shuffle(dspy_pyrandom *r, void *base, size_t n, size_t elem_size) {
    unsigned char *p = base;
    for (size_t i = n > 0 ? n - 1 : 0; i >= 1; i--) {
        size_t j = (size_t)dspy_pyrandom_randbelow(r, (uint64_t)i + 1);
        if (j != i) swap_bytes(p + i * elem_size, p + j * elem_size, elem_size);
    }
}

dspy_status dspy_pyrandom_choice(dspy_pyrandom *r, size_t n, size_t *out) {
    if (n == 0) return dspy_fail(DSPY_ERR_ARG, "random choice: cannot choose from an empty sequence");
    *out = (size_t)dspy_pyrandom_randbelow(r, n);
    return DSPY_OK;
}

/* random.sample's threshold: 21 + 4 ** ceil(log(k*3, 4)) for k > 5, else 21. math.log(x, 4) is
 * log(x) / log(4) in C doubles; a result past SIZE_MAX saturates (n can never exceed it). */
static size_t sample_setsize(size_t k) {
    size_t setsize = 21;
    if (k > 5) {
        double e = ceil(log((double)k * 3.0) / log(4.0));
        if (e >= 32) return SIZE_MAX;
        setsize += (size_t)1 << (2 * (int)e);
    }
    return setsize;
}

/* Open-addressing set of indices for the set branch (CPython uses a Python set; only
 * membership matters for the draws). */
static bool set_insert(size_t *slots, size_t mask, size_t v) {
    size_t h = (size_t)((v * 0x9E3779B97F4A7C15ULL) >> 17) & mask;
    while (slots[h] != SIZE_MAX) {
        if (slots[h] == v) return false;
        h = (h + 1) & mask;
    }
    slots[h] = v;
    return true;
}

dspy_status dspy_pyrandom_sample(dspy_pyrandom *r, size_t n, size_t k, size_t *out) {
    if (k > n)
        return dspy_fail(DSPY_ERR_ARG,
                         "random sample: k=%zu is larger than the population (%zu); ask for at "
                         "most %zu items",
                         k, n, n);
    if (n <= sample_setsize(k)) {
        size_t *pool = malloc((n ? n : 1) * sizeof *pool);
        if (!pool) return dspy_fail(DSPY_ERR_NOMEM, "random sample: out of memory for %zu items", n);
        for (size_t i = 0; i < n; i++) pool[i] = i;
        for (size_t i = 0; i < k; i++) {
            size_t j = (size_t)dspy_pyrandom_randbelow(r, n - i);
            out[i] = pool[j];
            pool[j] = pool[n - i - 1];
        }
        free(pool);
        return DSPY_OK;
    }
    size_t cap = 16;
    while (cap < 2 * k) cap *= 2;
    size_t *slots = malloc(cap * sizeof *slots);
    if (!slots) return dspy_fail(DSPY_ERR_NOMEM, "random sample: out of memory for k=%zu", k);
    memset(slots, 0xff, cap * sizeof *slots);
    for (size_t i = 0; i < k; i++) {
        size_t j = (size_t)dspy_pyrandom_randbelow(r, n);
        while (!set_insert(slots, cap - 1, j)) j = (size_t)dspy_pyrandom_randbelow(r, n);
        out[i] = j;
    }
    free(slots);
    return DSPY_OK;
}
