/* rng.c — xoshiro256** (Blackman & Vigna) seeded by splitmix64; Box–Muller normals. */
#include "dspy/rng.h"

#include <math.h>

uint64_t dspy_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void dspy_rng_seed(dspy_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = dspy_splitmix64(&seed);
    r->have_spare = false;
    r->spare = 0.0;
}

uint64_t dspy_rng_u64(dspy_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double dspy_rng_uniform(dspy_rng *r) { return (double)(dspy_rng_u64(r) >> 11) * 0x1.0p-53; }

double dspy_rng_uniform_pos(dspy_rng *r) { return ((double)(dspy_rng_u64(r) >> 11) + 1.0) * 0x1.0p-53; }

double dspy_rng_normal(dspy_rng *r) {
    if (r->have_spare) {
        r->have_spare = false;
        return r->spare;
    }
    double u = dspy_rng_uniform_pos(r), v = dspy_rng_uniform_pos(r);
    double mag = sqrt(-2.0 * log(u));
    r->spare = mag * sin(2.0 * M_PI * v);
    r->have_spare = true;
    return mag * cos(2.0 * M_PI * v);
}
