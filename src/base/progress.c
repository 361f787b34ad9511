/* progress.c — tqdm-compatible progress line (format_meter) and a live bar (see progress.h).
 *
 * Follows tqdm/std.py (format_meter, format_interval, Bar.__format__, EMA, update/close) and
 * tqdm/utils.py (disp_len, disp_trim). Float steps keep Python's order of operations so that
 * rounding matches: frac = n / total, percentage = frac * 100, bar cells from
 * int(frac * ncells * 8), rate = n / elapsed, remaining = (total - n) / rate.
 */
#include "dspy/progress.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "dspy/clock.h"
#include "dspy/str.h"

/* Code points whose Unicode East Asian Width is F or W (display width 2), as Python 3.11's
 * unicodedata (Unicode 14.0) reports them for assigned characters; generated with
 * unicodedata.east_asian_width. (CPython also reports unassigned code points as F; those count
 * 1 here.) */
static const unsigned wide_ranges[][2] = {
    {0x1100, 0x115F}, {0x231A, 0x231B}, {0x2329, 0x232A}, {0x23E9, 0x23EC}, {0x23F0, 0x23F0},
    {0x23F3, 0x23F3}, {0x25FD, 0x25FE}, {0x2614, 0x2615}, {0x2648, 0x2653}, {0x267F, 0x267F},
    {0x2693, 0x2693}, {0x26A1, 0x26A1}, {0x26AA, 0x26AB}, {0x26BD, 0x26BE}, {0x26C4, 0x26C5},
    {0x26CE, 0x26CE}, {0x26D4, 0x26D4}, {0x26EA, 0x26EA}, {0x26F2, 0x26F3}, {0x26F5, 0x26F5},
    {0x26FA, 0x26FA}, {0x26FD, 0x26FD}, {0x2705, 0x2705}, {0x270A, 0x270B}, {0x2728, 0x2728},
    {0x274C, 0x274C}, {0x274E, 0x274E}, {0x2753, 0x2755}, {0x2757, 0x2757}, {0x2795, 0x2797},
    {0x27B0, 0x27B0}, {0x27BF, 0x27BF}, {0x2B1B, 0x2B1C}, {0x2B50, 0x2B50}, {0x2B55, 0x2B55},
    {0x2E80, 0x2E99}, {0x2E9B, 0x2EF3}, {0x2F00, 0x2FD5}, {0x2FF0, 0x2FFB}, {0x3000, 0x303E},
    {0x3041, 0x3096}, {0x3099, 0x30FF}, {0x3105, 0x312F}, {0x3131, 0x318E}, {0x3190, 0x31E3},
    {0x31F0, 0x321E}, {0x3220, 0x3247}, {0x3250, 0x4DBF}, {0x4E00, 0xA48C}, {0xA490, 0xA4C6},
    {0xA960, 0xA97C}, {0xAC00, 0xD7A3}, {0xF900, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFE10, 0xFE19},
    {0xFE30, 0xFE52}, {0xFE54, 0xFE66}, {0xFE68, 0xFE6B}, {0xFF01, 0xFF60}, {0xFFE0, 0xFFE6},
    {0x16FE0, 0x16FE4}, {0x16FF0, 0x16FF1}, {0x17000, 0x187F7}, {0x18800, 0x18CD5}, {0x18D00, 0x18D08},
    {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122}, {0x1B150, 0x1B152},
    {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1F004, 0x1F004}, {0x1F0CF, 0x1F0CF}, {0x1F18E, 0x1F18E},
    {0x1F191, 0x1F19A}, {0x1F200, 0x1F202}, {0x1F210, 0x1F23B}, {0x1F240, 0x1F248}, {0x1F250, 0x1F251},
    {0x1F260, 0x1F265}, {0x1F300, 0x1F320}, {0x1F32D, 0x1F335}, {0x1F337, 0x1F37C}, {0x1F37E, 0x1F393},
    {0x1F3A0, 0x1F3CA}, {0x1F3CF, 0x1F3D3}, {0x1F3E0, 0x1F3F0}, {0x1F3F4, 0x1F3F4}, {0x1F3F8, 0x1F43E},
    {0x1F440, 0x1F440}, {0x1F442, 0x1F4FC}, {0x1F4FF, 0x1F53D}, {0x1F54B, 0x1F54E}, {0x1F550, 0x1F567},
    {0x1F57A, 0x1F57A}, {0x1F595, 0x1F596}, {0x1F5A4, 0x1F5A4}, {0x1F5FB, 0x1F64F}, {0x1F680, 0x1F6C5},
    {0x1F6CC, 0x1F6CC}, {0x1F6D0, 0x1F6D2}, {0x1F6D5, 0x1F6D7}, {0x1F6DD, 0x1F6DF}, {0x1F6EB, 0x1F6EC},
    {0x1F6F4, 0x1F6FC}, {0x1F7E0, 0x1F7EB}, {0x1F7F0, 0x1F7F0}, {0x1F90C, 0x1F93A}, {0x1F93C, 0x1F945},
    {0x1F947, 0x1F9FF}, {0x1FA70, 0x1FA74}, {0x1FA78, 0x1FA7C}, {0x1FA80, 0x1FA86}, {0x1FA90, 0x1FAAC},
    {0x1FAB0, 0x1FABA}, {0x1FAC0, 0x1FAC5}, {0x1FAD0, 0x1FAD9}, {0x1FAE0, 0x1FAE7}, {0x1FAF0, 0x1FAF6},
    {0x20000, 0x2A6DF}, {0x2A700, 0x2B738}, {0x2B740, 0x2B81D}, {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0},
    {0x2F800, 0x2FA1D}, {0x30000, 0x3134A},
};

static bool is_wide(unsigned cp) {
    size_t lo = 0, hi = sizeof wide_ranges / sizeof wide_ranges[0];
    if (cp < wide_ranges[0][0]) return false;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < wide_ranges[mid][0]) hi = mid;
        else if (cp > wide_ranges[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

/* Length in bytes of an ANSI CSI sequence at p (tqdm's RE_ANSI: ESC '[' [;0-9]* letter), or 0. */
static size_t ansi_len(const char *p, size_t n) {
    if (n < 3 || p[0] != '\x1b' || p[1] != '[') return 0;
    size_t i = 2;
    while (i < n && (p[i] == ';' || (p[i] >= '0' && p[i] <= '9'))) i++;
    if (i < n && ((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z'))) return i + 1;
    return 0;
}

/* Steps over one display unit at p: an ANSI sequence (width 0) or one code point (width 1 or
 * 2; an invalid byte counts as one cell). Returns its byte length and sets *width. */
static size_t next_unit(const char *p, size_t n, int *width) {
    size_t a = ansi_len(p, n);
    if (a) {
        *width = 0;
        return a;
    }
    unsigned cp;
    int len = dspy_utf8_decode(p, n, &cp);
    if (len <= 0) {
        *width = 1;
        return 1;
    }
    *width = is_wide(cp) ? 2 : 1;
    return (size_t)len;
}

/* tqdm.utils.disp_len */
static size_t disp_len(const char *p, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        int cw;
        i += next_unit(p + i, n - i, &cw);
        w += (size_t)cw;
    }
    return w;
}

/* tqdm.utils.disp_trim: drops whole characters from the end until the display width fits, and
 * closes an ANSI colour that the kept text opened. */
static void disp_trim(dspy_str *s, size_t width) {
    size_t w = 0, keep = 0;
    bool ansi = false;
    for (size_t i = 0; i < s->len;) {
        int cw;
        size_t ul = next_unit(s->ptr + i, s->len - i, &cw);
        if (w + (size_t)cw > width) break;
        if (cw == 0) ansi = true;
        w += (size_t)cw;
        i += ul;
        keep = i;
    }
    if (keep == s->len) return;
    s->len = keep;
    s->ptr[keep] = '\0';
    if (ansi && !(keep >= 4 && memcmp(s->ptr + keep - 4, "\x1b[0m", 4) == 0)) dspy_str_append(s, "\x1b[0m");
}

/* tqdm.format_interval: int(t) seconds as [H:]MM:SS (Python floor division). Non-finite or
 * absurd values, which make Python raise, are clamped. */
static void append_interval(dspy_str *s, double t) {
    long long sec = (long long)(isfinite(t) ? fmax(-9e18, fmin(9e18, t)) : 0);
    long long mins = sec / 60, ss = sec % 60;
    if (ss < 0) {
        ss += 60;
        mins--;
    }
    long long h = mins / 60, m = mins % 60;
    if (m < 0) {
        m += 60;
        h--;
    }
    if (h) dspy_str_appendf(s, "%lld:%02lld:%02lld", h, m, ss);
    else dspy_str_appendf(s, "%02lld:%02lld", m, ss);
}

/* format_meter into the empty builder `out`, with an optional rate override (rate < 0:
 * n / elapsed, as tqdm does when its smoothed rate is unavailable and at close). */
static void format_meter(dspy_str *out, const char *desc, long n, long total, double elapsed, int ncols,
                         double rate_override) {
    static const char *const blocks[9] = {" ", "\u258f", "\u258e", "\u258d", "\u258c",
                                          "\u258b", "\u258a", "\u2589", "\u2588"};
    if (!desc) desc = "";
    bool have_total = total > 0 && (double)n < (double)total + 0.5;
    double rate = rate_override >= 0 ? rate_override : (elapsed != 0 ? (double)n / elapsed : 0);
    bool have_rate = rate != 0 && !isnan(rate);
    double inv_rate = have_rate ? 1.0 / rate : 0;

    dspy_str rate_fmt = DSPY_STR_INIT;
    if (have_rate && inv_rate > 1) dspy_str_appendf(&rate_fmt, "%5.2fs/it", inv_rate);
    else if (have_rate) dspy_str_appendf(&rate_fmt, "%5.2fit/s", rate);
    else dspy_str_append(&rate_fmt, "?it/s");

    if (!have_total) {
        if (*desc) dspy_str_appendf(out, "%s: ", desc);
        dspy_str_appendf(out, "%ldit [", n);
        append_interval(out, elapsed);
        dspy_str_appendf(out, ", %s]", dspy_str_cstr(&rate_fmt));
        dspy_str_free(&rate_fmt);
        return;
    }

    dspy_str r_bar = DSPY_STR_INIT;
    dspy_str_appendf(&r_bar, "| %ld/%ld [", n, total);
    append_interval(&r_bar, elapsed);
    dspy_str_append(&r_bar, "<");
    if (have_rate) append_interval(&r_bar, (double)(total - n) / rate);
    else dspy_str_append(&r_bar, "?");
    dspy_str_appendf(&r_bar, ", %s]", dspy_str_cstr(&rate_fmt));
    dspy_str_free(&rate_fmt);

    double frac = (double)n / (double)total;
    double percentage = frac * 100;
    dspy_str_append(out, desc);
    size_t dl = strlen(desc);
    if (dl > 0 && !(dl >= 2 && desc[dl - 2] == ':' && desc[dl - 1] == ' ')) dspy_str_append(out, ": ");
    dspy_str_appendf(out, "%3.0f%%|", percentage);

    long cells = 10;
    if (ncols > 0) {
        size_t nobar = disp_len(dspy_str_cstr(out), out->len) + disp_len(dspy_str_cstr(&r_bar), r_bar.len);
        cells = (long)ncols - (long)nobar;
        if (cells < 1) cells = 1;
    }
    if (frac < 0) frac = 0;
    if (frac > 1) frac = 1;
    double cells8 = frac * (double)cells * 8;
    long long units = (long long)cells8;
    long long full = units / 8, part = units % 8;
    for (long long i = 0; i < full; i++) dspy_str_append(out, blocks[8]);
    if (full < cells) {
        dspy_str_append(out, blocks[part]);
        for (long long i = full + 1; i < cells; i++) dspy_str_appendc(out, ' ');
    }
    dspy_str_appendv(out, dspy_strv_make(dspy_str_cstr(&r_bar), r_bar.len));
    dspy_str_free(&r_bar);
    if (ncols > 0 && dspy_str_ok(out)) disp_trim(out, (size_t)ncols);
}

size_t dspy_progress_format(char *buf, size_t cap, const char *desc, long n, long total, double elapsed_s,
                            int ncols) {
    dspy_str s = DSPY_STR_INIT;
    format_meter(&s, desc, n, total, elapsed_s, ncols, -1);
    size_t len = dspy_str_ok(&s) ? s.len : 0;
    if (cap > 0) {
        size_t c = len < cap - 1 ? len : cap - 1;
        if (c) memcpy(buf, dspy_str_cstr(&s), c);
        buf[c] = '\0';
    }
    dspy_str_free(&s);
    return len;
}

/* ---- live bar ---- */

typedef struct {
    double last;
    int calls;
} ema; /* tqdm.std.EMA with smoothing 0.3 */

static void ema_add(ema *e, double x) {
    e->last = 0.3 * x + 0.7 * e->last;
    e->calls++;
}

static double ema_value(const ema *e) {
    return e->calls ? e->last / (1 - pow(0.7, e->calls)) : e->last;
}

struct dspy_progress {
    pthread_mutex_t mu;
    FILE *out;
    bool tty;
    char *desc;
    long n, total;
    double start_t;
    double last_print_t; /* time and count at the last redraw by update (tqdm's EMA basis) */
    long last_print_n;
    double last_draw_t;  /* any redraw, for the ~10/s limit */
    ema ema_dn, ema_dt;
    size_t last_width;   /* display width of the previous line, to blank its tail */
};

#define MIN_INTERVAL 0.1 /* tqdm's mininterval */

static int terminal_cols(FILE *f) {
    struct winsize ws;
    if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 0;
}

/* tqdm's status_printer on a terminal: '\r' + line + blanks over the rest of the old line.
 * `final` uses the overall rate (tqdm close) instead of the EMA. Caller holds mu. */
static void draw(dspy_progress *b, double now, bool final) {
    double rate = -1;
    double dt = ema_value(&b->ema_dt);
    if (!final && dt != 0) rate = ema_value(&b->ema_dn) / dt;
    dspy_str line = DSPY_STR_INIT;
    format_meter(&line, b->desc, b->n, b->total, now - b->start_t, terminal_cols(b->out), rate);
    if (dspy_str_ok(&line)) {
        size_t w = disp_len(line.ptr, line.len);
        fputc('\r', b->out);
        fwrite(line.ptr, 1, line.len, b->out);
        for (size_t i = w; i < b->last_width; i++) fputc(' ', b->out);
        b->last_width = w;
        fflush(b->out);
    }
    dspy_str_free(&line);
    b->last_draw_t = now;
}

dspy_status dspy_progress_new(const char *desc, long total, FILE *out, dspy_progress **bar) {
    *bar = NULL;
    dspy_progress *b = calloc(1, sizeof *b);
    char *d = strdup(desc ? desc : "");
    if (!b || !d) {
        free(b);
        free(d);
        return dspy_fail(DSPY_ERR_NOMEM, "progress bar: out of memory");
    }
    pthread_mutex_init(&b->mu, NULL);
    b->out = out;
    b->tty = out && isatty(fileno(out));
    b->desc = d;
    b->total = total;
    b->start_t = b->last_print_t = dspy_now_s();
    if (b->tty) draw(b, b->start_t, false);
    *bar = b;
    return DSPY_OK;
}

void dspy_progress_update(dspy_progress *b, long n) {
    pthread_mutex_lock(&b->mu);
    b->n += n;
    if (b->tty) {
        double now = dspy_now_s();
        double dt = now - b->last_print_t;
        if (dt >= MIN_INTERVAL && now - b->last_draw_t >= MIN_INTERVAL) {
            long dn = b->n - b->last_print_n;
            if (dt > 0 && dn) {
                ema_add(&b->ema_dn, (double)dn);
                ema_add(&b->ema_dt, dt);
            }
            draw(b, now, false);
            b->last_print_n = b->n;
            b->last_print_t = now;
        }
    }
    pthread_mutex_unlock(&b->mu);
}

dspy_status dspy_progress_set_desc(dspy_progress *b, const char *desc) {
    char *d = strdup(desc ? desc : "");
    if (!d) return dspy_fail(DSPY_ERR_NOMEM, "progress bar: out of memory for the description");
    pthread_mutex_lock(&b->mu);
    free(b->desc);
    b->desc = d;
    if (b->tty) {
        double now = dspy_now_s();
        if (now - b->last_draw_t >= MIN_INTERVAL) draw(b, now, false);
    }
    pthread_mutex_unlock(&b->mu);
    return DSPY_OK;
}

long dspy_progress_n(dspy_progress *b) {
    pthread_mutex_lock(&b->mu);
    long n = b->n;
    pthread_mutex_unlock(&b->mu);
    return n;
}

void dspy_progress_close(dspy_progress *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    double now = dspy_now_s();
    if (b->tty) {
        draw(b, now, true);
        fputc('\n', b->out);
        fflush(b->out);
    } else if (b->out) {
        dspy_str line = DSPY_STR_INIT;
        format_meter(&line, b->desc, b->n, b->total, now - b->start_t, 0, -1);
        if (dspy_str_ok(&line)) {
            fwrite(line.ptr, 1, line.len, b->out);
            fputc('\n', b->out);
            fflush(b->out);
        }
        dspy_str_free(&line);
    }
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_destroy(&b->mu);
    free(b->desc);
    free(b);
}
