/* unicode_nfc.c — Unicode Normalization Form C for tokenizers whose normalizer is NFC (Qwen2).
 *
 * Follows UAX #15: full canonical decomposition (Hangul syllables algorithmically), canonical
 * ordering of combining marks, then canonical composition with the reference algorithm's
 * blocking rule. Text without any code point flagged DSPY_UCLS_NFC is already NFC and is
 * returned untouched, so Latin, CJK and most other text never takes the slow path. Tables are
 * Unicode 14.0 (unicode_tables.c).
 */
#include <stdlib.h>
#include <string.h>

#include "model/unicode_tables.h"

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21, TCOUNT = 28,
       NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static dspy_status nomem(size_t n) { return dspy_fail(DSPY_ERR_NOMEM, "NFC: out of memory normalizing %zu bytes", n); }

static unsigned ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    unsigned lo = 0, hi = dspy_nfc_ccc_count;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        uint32_t c = dspy_nfc_ccc[mid] >> 8;
        if (c == cp) return dspy_nfc_ccc[mid] & 0xFF;
        if (c < cp) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* Full decomposition of cp into d (room for 8); returns the count. */
static int decompose(uint32_t cp, uint32_t *d) {
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t si = cp - SBASE;
        d[0] = LBASE + si / NCOUNT;
        d[1] = VBASE + (si % NCOUNT) / TCOUNT;
        if (si % TCOUNT == 0) return 2;
        d[2] = TBASE + si % TCOUNT;
        return 3;
    }
    if (cp >= 0xC0) {
        unsigned lo = 0, hi = dspy_nfc_decomp_count;
        while (lo < hi) {
            unsigned mid = (lo + hi) / 2;
            uint32_t c = dspy_nfc_decomp_index[mid][0];
            if (c == cp) {
                uint32_t off = dspy_nfc_decomp_index[mid][1] >> 3, len = dspy_nfc_decomp_index[mid][1] & 7;
                memcpy(d, dspy_nfc_decomp_data + off, len * sizeof *d);
                return (int)len;
            }
            if (c < cp) lo = mid + 1;
            else hi = mid;
        }
    }
    d[0] = cp;
    return 1;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    unsigned lo = 0, hi = dspy_nfc_compose_count;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        uint32_t x = dspy_nfc_compose[mid][0], y = dspy_nfc_compose[mid][1];
        if (x == a && y == b) return dspy_nfc_compose[mid][2];
        if (x < a || (x == a && y < b)) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

dspy_status dspy_nfc(const unsigned char *s, size_t n, size_t base, dspy_str *out, size_t **map, bool *changed) {
    *changed = false;
    *map = NULL;
    bool maybe = false;
    for (size_t i = 0; i < n && !maybe;) {
        unsigned cp;
        int l = s[i] < 0x80 ? (cp = s[i], 1) : dspy_utf8_decode((const char *)s + i, n - i, &cp);
        if (l <= 0) return dspy_fail(DSPY_ERR_ARG, "NFC: invalid UTF-8 at byte %zu", i);
        if (cp >= 0x300 && (dspy_ucls(cp) & DSPY_UCLS_NFC)) maybe = true;
        i += (size_t)l;
    }
    if (!maybe) return DSPY_OK;

    /* Decompose: code points with the byte offset of the character they came from. */
    size_t cap = n + 16, m = 0;
    uint32_t *cps = malloc(cap * sizeof *cps);
    size_t *org = malloc(cap * sizeof *org);
    dspy_status st = DSPY_OK;
    if (!cps || !org) {
        st = nomem(n);
        goto done;
    }
    for (size_t i = 0; i < n;) {
        unsigned cp;
        int l = dspy_utf8_decode((const char *)s + i, n - i, &cp);
        uint32_t d[8];
        int k = decompose(cp, d);
        if (m + (size_t)k > cap) {
            cap = cap * 2 + 8;
            uint32_t *nc = realloc(cps, cap * sizeof *cps);
            if (!nc) {
                st = nomem(n);
                goto done;
            }
            cps = nc;
            size_t *no = realloc(org, cap * sizeof *org);
            if (!no) {
                st = nomem(n);
                goto done;
            }
            org = no;
        }
        for (int j = 0; j < k; j++) {
            cps[m] = d[j];
            org[m++] = i;
        }
        i += (size_t)l;
    }
    /* Canonical ordering: stable insertion sort of each run of non-starters by class. */
    for (size_t i = 1; i < m; i++) {
        unsigned c = ccc_of(cps[i]);
        if (c == 0) continue;
        size_t j = i;
        while (j > 0) {
            unsigned pc = ccc_of(cps[j - 1]);
            if (pc == 0 || pc <= c) break;
            uint32_t t = cps[j];
            cps[j] = cps[j - 1];
            cps[j - 1] = t;
            size_t to = org[j];
            org[j] = org[j - 1];
            org[j - 1] = to;
            j--;
        }
    }
    /* Composition (UAX #15 reference algorithm). */
    size_t w = m ? 1 : 0, starter = 0;
    unsigned last = m ? ccc_of(cps[0]) : 0;
    if (last != 0) last = 256;
    for (size_t i = 1; i < m; i++) {
        uint32_t ch = cps[i];
        unsigned cc = ccc_of(ch);
        uint32_t comp = compose(cps[starter], ch);
        if (comp && (last < cc || last == 0)) {
            cps[starter] = comp;
            continue;
        }
        if (cc == 0) starter = w;
        last = cc;
        cps[w] = ch;
        org[w++] = org[i];
    }
    m = w;
    /* Encode, with the byte map. */
    dspy_str_clear(out);
    size_t *mp = malloc((m * 4 + 1) * sizeof *mp);
    if (!mp) {
        st = nomem(n);
        goto done;
    }
    for (size_t i = 0; i < m; i++) {
        char b[4];
        int l = dspy_utf8_encode(cps[i], b);
        for (int j = 0; j < l; j++) mp[out->len + (size_t)j] = base + org[i];
        dspy_str_appendn(out, b, (size_t)l);
    }
    mp[out->len] = base + n;
    if (!dspy_str_ok(out)) {
        free(mp);
        st = nomem(n);
        goto done;
    }
    *changed = out->len != n || memcmp(out->ptr, s, n) != 0;
    if (*changed) *map = mp;
    else free(mp);
    goto done;
done:
    free(cps);
    free(org);
    return st;
}
