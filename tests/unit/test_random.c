/* test_random.c — dspy_pyrandom against CPython 3.11's random.Random, draw for draw.
 *
 * tests/ref/random_vectors.txt is written by scripts/make_ref_random.py (format in that
 * script); every line is replayed from a fresh generator and compared exactly (doubles by bit
 * pattern after strtod of Python's repr). The spec vectors of dspy_behaviour.md §11.4 are also
 * checked directly.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/random.h"
#include "dspy/str.h"

/* Parses "0x..." of any length into 32-bit words, least significant first. */
static size_t parse_hex_words(const char *hex, uint32_t *words, size_t cap) {
    if (strncmp(hex, "0x", 2) == 0) hex += 2;
    size_t len = strlen(hex), n = 0;
    while (len > 0 && n < cap) {
        size_t take = len < 8 ? len : 8;
        char chunk[9];
        memcpy(chunk, hex + len - take, take);
        chunk[take] = '\0';
        words[n++] = (uint32_t)strtoul(chunk, NULL, 16);
        len -= take;
    }
    return n;
}

static uint64_t next_u64(char **p) {
    return strtoull(*p, p, 10);
}

/* Replays one line; returns the number of mismatching values (0 when all match). */
static int replay(char *lineptr, int lineno, int *cases) {
    char op[32], seedhex[64];
    unsigned long long a, b;
    int used = 0;
    if (sscanf(lineptr, "%31s %63s %llu %llu :%n", op, seedhex, &a, &b, &used) != 4 || !used) {
        check_report(false, __FILE__, __LINE__, "random_vectors.txt:%d: bad line", lineno);
        return 1;
    }
    char *p = lineptr + used;
    uint32_t words[8];
    size_t nw = parse_hex_words(seedhex, words, 8);
    dspy_pyrandom r;
    dspy_pyrandom_seed_words(&r, words, nw);
    int bad = 0;
    (*cases)++;
    if (strcmp(op, "uint32") == 0) {
        for (unsigned long long i = 0; i < a; i++) bad += dspy_pyrandom_uint32(&r) != next_u64(&p);
    } else if (strcmp(op, "random") == 0) {
        for (unsigned long long i = 0; i < a; i++) {
            double want = strtod(p, &p), got = dspy_pyrandom_random(&r);
            bad += memcmp(&want, &got, sizeof got) != 0;
        }
    } else if (strcmp(op, "getrandbits") == 0) {
        for (unsigned long long i = 0; i < b; i++)
            bad += dspy_pyrandom_getrandbits(&r, (int)a) != next_u64(&p);
    } else if (strcmp(op, "randbelow") == 0) {
        for (unsigned long long i = 0; i < b; i++) bad += dspy_pyrandom_randbelow(&r, a) != next_u64(&p);
    } else if (strcmp(op, "shuffle") == 0) {
        int32_t *x = malloc((a ? a : 1) * sizeof *x);
        for (unsigned long long i = 0; i < a; i++) x[i] = (int32_t)i;
        dspy_pyrandom_shuffle(&r, x, a, sizeof *x);
        for (unsigned long long i = 0; i < a; i++) bad += (uint64_t)x[i] != next_u64(&p);
        free(x);
    } else if (strcmp(op, "choice") == 0) {
        for (unsigned long long i = 0; i < b; i++) {
            size_t got = 0;
            bad += dspy_pyrandom_choice(&r, a, &got) != DSPY_OK;
            bad += got != next_u64(&p);
        }
    } else if (strcmp(op, "sample") == 0) {
        size_t *out = malloc((b ? b : 1) * sizeof *out);
        bad += dspy_pyrandom_sample(&r, a, b, out) != DSPY_OK;
        for (unsigned long long i = 0; i < b; i++) bad += out[i] != next_u64(&p);
        free(out);
    } else {
        check_report(false, __FILE__, __LINE__, "random_vectors.txt:%d: unknown op %s", lineno, op);
        return 1;
    }
    while (*p == ' ') p++;
    if (*p != '\0') bad++; /* the fixture has more values than were compared */
    check_report(bad == 0, __FILE__, __LINE__, "random_vectors.txt:%d: %s seed=%s %llu %llu: %d mismatches",
                 lineno, op, seedhex, a, b, bad);
    return bad;
}

static void test_fixture(void) {
    char *data;
    size_t n;
    CHECK_OK(dspy_read_file(test_source("tests/ref/random_vectors.txt"), &data, &n));
    if (!data) return;
    int cases = 0, lineno = 0;
    char *save = NULL;
    for (char *ln = strtok_r(data, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (ln[0] == '#' || ln[0] == '\0') continue;
        replay(ln, lineno, &cases);
    }
    CHECK(cases > 250); /* every kind of case was present */
    free(data);
}

static void test_spec_vectors(void) {
    dspy_pyrandom r;
    dspy_pyrandom_seed(&r, 0);
    const uint32_t first[5] = {3626764237u, 1654615998u, 3255389356u, 3823568514u, 1806341205u};
    for (int i = 0; i < 5; i++) CHECK_U64(dspy_pyrandom_uint32(&r), first[i]);

    int x[1000];
    for (int i = 0; i < 1000; i++) x[i] = i;
    dspy_pyrandom_seed(&r, 0);
    dspy_pyrandom_shuffle(&r, x, 1000, sizeof x[0]);
    const int want1000[10] = {439, 621, 160, 549, 237, 389, 658, 507, 124, 290};
    for (int i = 0; i < 10; i++) CHECK_INT(x[i], want1000[i]);

    for (int i = 0; i < 500; i++) x[i] = i;
    dspy_pyrandom_seed(&r, 0);
    dspy_pyrandom_shuffle(&r, x, 500, sizeof x[0]);
    const int want500[10] = {419, 459, 130, 431, 370, 26, 201, 56, 366, 108};
    for (int i = 0; i < 10; i++) CHECK_INT(x[i], want500[i]);
}

/* Shuffling records of an odd, large size moves whole records, like a list of objects. */
static void test_shuffle_wide_elements(void) {
    typedef struct {
        char name[100];
        int id;
    } rec;
    rec a[300];
    int ids[300];
    for (int i = 0; i < 300; i++) {
        snprintf(a[i].name, sizeof a[i].name, "item-%d", i);
        a[i].id = ids[i] = i;
    }
    dspy_pyrandom r;
    dspy_pyrandom_seed(&r, 42);
    dspy_pyrandom_shuffle(&r, a, 300, sizeof a[0]);
    dspy_pyrandom_seed(&r, 42);
    dspy_pyrandom_shuffle(&r, ids, 300, sizeof ids[0]);
    int same = 0;
    for (int i = 0; i < 300; i++) {
        char want[100];
        snprintf(want, sizeof want, "item-%d", ids[i]);
        same += a[i].id == ids[i] && strcmp(a[i].name, want) == 0;
    }
    CHECK_INT(same, 300);
}

static void test_errors_and_edges(void) {
    dspy_pyrandom r;
    dspy_pyrandom_seed(&r, 7);
    size_t idx = 99, out[4];
    CHECK_STATUS(dspy_pyrandom_choice(&r, 0, &idx), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "empty sequence");
    CHECK_STATUS(dspy_pyrandom_sample(&r, 3, 4, out), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "k=4 is larger than the population (3)");
    /* randbelow(0) is defined as 0 and consumes nothing. */
    dspy_pyrandom s = r;
    CHECK_U64(dspy_pyrandom_randbelow(&r, 0), 0);
    CHECK_U64(dspy_pyrandom_uint32(&r), dspy_pyrandom_uint32(&s));
    /* getrandbits(96) as words equals three raw outputs, low word first. */
    dspy_pyrandom_seed(&r, 5);
    s = r;
    uint32_t w[3];
    dspy_pyrandom_getrandbits_words(&r, 96, w);
    for (int i = 0; i < 3; i++) CHECK_U64(w[i], dspy_pyrandom_uint32(&s));
    /* Seeding with high zero words is the same as without them. */
    uint32_t k1[1] = {42}, k3[3] = {42, 0, 0};
    dspy_pyrandom_seed_words(&r, k1, 1);
    dspy_pyrandom_seed_words(&s, k3, 3);
    CHECK(memcmp(&r, &s, sizeof r) == 0);
    dspy_pyrandom_seed_words(&r, NULL, 0);
    dspy_pyrandom_seed(&s, 0);
    CHECK(memcmp(&r, &s, sizeof r) == 0);
    /* random() is in [0, 1). */
    int in_range = 0;
    for (int i = 0; i < 10000; i++) {
        double v = dspy_pyrandom_random(&r);
        in_range += v >= 0.0 && v < 1.0;
    }
    CHECK_INT(in_range, 10000);
}

int main(void) {
    RUN(test_fixture);
    RUN(test_spec_vectors);
    RUN(test_shuffle_wide_elements);
    RUN(test_errors_and_edges);
    return check_summary("test_random");
}
