/* test_progress.c — tqdm-exact progress lines, and the live bar on a file and on a terminal.
 *
 * The expected lines are tqdm.format_meter's output (tqdm 4.64.1), printed by
 * scripts/make_ref_progress.py; the live-bar tests check the behaviour around them: one final
 * line when not a terminal, in-place redraws sized to the terminal when it is one.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dspy/progress.h"
#include "dspy/str.h"

typedef struct {
    const char *desc;
    long n, total;
    double elapsed;
    int ncols;
    const char *want;
} meter_case;

static const meter_case CASES[] = {
    {"Average Metric: 51.00 / 99 (51.5%)", 100, 100, 35.84, 0, "Average Metric: 51.00 / 99 (51.5%): 100%|██████████| 100/100 [00:35<00:00,  2.79it/s]"},
    {"", 0, 100, 0.0, 0, "  0%|          | 0/100 [00:00<?, ?it/s]"},
    {"Average Metric: 0.00 / 0 (0%)", 0, 100, 0.0, 0, "Average Metric: 0.00 / 0 (0%):   0%|          | 0/100 [00:00<?, ?it/s]"},
    {"Average Metric: 1.00 / 1 (100.0%)", 1, 100, 0.42, 0, "Average Metric: 1.00 / 1 (100.0%):   1%|          | 1/100 [00:00<00:41,  2.38it/s]"},
    {"", 37, 100, 12.3, 0, " 37%|███▋      | 37/100 [00:12<00:20,  3.01it/s]"},
    {"Bootstrapped", 3, 7, 2.0, 0, "Bootstrapped:  43%|████▎     | 3/7 [00:02<00:02,  1.50it/s]"},
    {"Processing", 42, 0, 3.5, 0, "Processing: 42it [00:03, 12.00it/s]"},
    {"", 0, 0, 0.0, 0, "0it [00:00, ?it/s]"},
    {"slow", 3, 10, 7.5, 0, "slow:  30%|███       | 3/10 [00:07<00:17,  2.50s/it]"},
    {"hours", 500, 1000, 4000.0, 0, "hours:  50%|█████     | 500/1000 [1:06:40<1:06:40,  8.00s/it]"},
    {"days", 1, 3, 90061.0, 0, "days:  33%|███▎      | 1/3 [25:01:01<50:02:02, 90061.00s/it]"},
    {"one per second", 5, 10, 5.0, 0, "one per second:  50%|█████     | 5/10 [00:05<00:05,  1.00it/s]"},
    {"fast", 123456, 1000000, 0.5, 0, "fast:  12%|█▏        | 123456/1000000 [00:00<00:03, 246912.00it/s]"},
    {"done", 100, 100, 59.99, 0, "done: 100%|██████████| 100/100 [00:59<00:00,  1.67it/s]"},
    {"over", 105, 100, 10.0, 0, "over: 105it [00:10, 10.50it/s]"},
    {"colon: ", 5, 10, 1.0, 0, "colon:  50%|█████     | 5/10 [00:01<00:01,  5.00it/s]"},
    {"Average Metric: 10.00 / 20 (50.0%)", 20, 100, 5.0, 80, "Average Metric: 10.00 / 20 (50.0%):  20%|█▏    | 20/100 [00:05<00:20,  4.00it/s]"},
    {"Average Metric: 10.00 / 20 (50.0%)", 20, 100, 5.0, 120, "Average Metric: 10.00 / 20 (50.0%):  20%|█████████▏                                    | 20/100 [00:05<00:20,  4.00it/s]"},
    {"Average Metric: 10.00 / 20 (50.0%)", 20, 100, 5.0, 30, "Average Metric: 10.00 / 20 (50"},
    {"評価 é", 2, 8, 1.0, 40, "評価 é:  25%|▎| 2/8 [00:01<00:03,  2.00i"},
    {"", 1, 3, 1.0, 50, " 33%|█████          | 1/3 [00:01<00:02,  1.00it/s]"},
    {"Processing", 42, 0, 3.5, 20, "Processing: 42it [00:03, 12.00it/s]"},
};

static void test_format_matches_tqdm(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const meter_case *c = &CASES[i];
        char buf[512];
        size_t len = dspy_progress_format(buf, sizeof buf, c->desc, c->n, c->total, c->elapsed, c->ncols);
        CHECK_STR(buf, c->want);
        CHECK_INT(len, strlen(c->want));
    }
}

static void test_format_buffer(void) {
    /* snprintf-like: the return value is the full length; the buffer holds a cut copy. */
    const char *full = "Processing: 42it [00:03, 12.00it/s]";
    char small[11];
    CHECK_INT(dspy_progress_format(small, sizeof small, "Processing", 42, 0, 3.5, 0), strlen(full));
    CHECK_STR(small, "Processing");
    CHECK_INT(dspy_progress_format(NULL, 0, "Processing", 42, 0, 3.5, 0), strlen(full));
    char buf[128];
    dspy_progress_format(buf, sizeof buf, NULL, 1, 2, 1.0, 0);
    CHECK_STR(buf, " 50%|█████     | 1/2 [00:01<00:01,  1.00it/s]");
}

static bool starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Reads a whole stream from its start. */
static char *slurp(FILE *f) {
    fflush(f);
    rewind(f);
    dspy_str s = DSPY_STR_INIT;
    char buf[256];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) dspy_str_appendn(&s, buf, n);
    return dspy_str_take(&s);
}

static void test_live_not_a_tty(void) {
    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (!f) return;
    dspy_progress *bar = NULL;
    CHECK_OK(dspy_progress_new("Average Metric: 0.00 / 0 (0%)", 3, f, &bar));
    if (!bar) return;
    dspy_progress_update(bar, 1);
    CHECK_OK(dspy_progress_set_desc(bar, "Average Metric: 1.00 / 1 (100.0%)"));
    dspy_progress_update(bar, 1);
    CHECK_OK(dspy_progress_set_desc(bar, "Average Metric: 2.00 / 3 (66.7%)"));
    dspy_progress_update(bar, 1);
    CHECK_INT(dspy_progress_n(bar), 3);
    char *mid = slurp(f);
    CHECK_STR(mid, ""); /* nothing before close */
    free(mid);
    dspy_progress_close(bar);
    char *out = slurp(f);
    fclose(f);
    /* One line; its rate depends on the clock, so check around it. */
    const char *head = "Average Metric: 2.00 / 3 (66.7%): 100%|██████████| 3/3 [00:00<00:00, ";
    CHECK(out && starts_with(out, head));
    size_t len = out ? strlen(out) : 0;
    CHECK(len > 6 && strcmp(out + len - 6, "it/s]\n") == 0);
    CHECK(out && strchr(out, '\n') == out + len - 1);
    CHECK(out && !strchr(out, '\r'));
    free(out);
    /* A silent bar counts and prints nothing. */
    CHECK_OK(dspy_progress_new("x", 0, NULL, &bar));
    dspy_progress_update(bar, 5);
    CHECK_INT(dspy_progress_n(bar), 5);
    dspy_progress_close(bar);
    dspy_progress_close(NULL);
}

typedef struct {
    dspy_progress *bar;
    int per_thread;
} hammer_arg;

static void *hammer(void *p) {
    hammer_arg *a = p;
    for (int i = 0; i < a->per_thread; i++) {
        dspy_progress_update(a->bar, 1);
        if (i % 100 == 0) dspy_progress_set_desc(a->bar, "busy");
    }
    return NULL;
}

static void test_live_threads(void) {
    FILE *f = tmpfile();
    if (!f) return;
    dspy_progress *bar = NULL;
    CHECK_OK(dspy_progress_new("threads", 4000, f, &bar));
    if (!bar) return;
    pthread_t th[4];
    hammer_arg a = {bar, 1000};
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer, &a);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK_INT(dspy_progress_n(bar), 4000);
    dspy_progress_close(bar);
    char *out = slurp(f);
    fclose(f);
    CHECK(out && starts_with(out, "busy: 100%|██████████| 4000/4000 [00:00<00:00, "));
    free(out);
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Display width of a UTF-8 line with only 1-cell characters. */
static size_t cells(const char *p, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += ((unsigned char)p[i] & 0xC0) != 0x80;
    return w;
}

static void test_live_tty(void) {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        check_skip("no pseudo-terminal available");
        if (master >= 0) close(master);
        return;
    }
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    CHECK(slave >= 0);
    if (slave < 0) {
        close(master);
        return;
    }
    struct termios tio;
    tcgetattr(slave, &tio);
    cfmakeraw(&tio); /* no "\n" -> "\r\n" translation */
    tcsetattr(slave, TCSANOW, &tio);
    struct winsize ws = {.ws_row = 24, .ws_col = 100};
    ioctl(slave, TIOCSWINSZ, &ws);
    FILE *tty = fdopen(slave, "w");
    dspy_progress *bar = NULL;
    CHECK_OK(dspy_progress_new("Average Metric: 0.00 / 0 (0%)", 40, tty, &bar));
    if (!bar) {
        fclose(tty);
        close(master);
        return;
    }
    /* 40 quick updates: only the initial draw can have happened, plus at most one more. */
    for (int i = 0; i < 20; i++) dspy_progress_update(bar, 1);
    nap_ms(150);
    CHECK_OK(dspy_progress_set_desc(bar, "Average Metric: 20.00 / 21 (95.2%)"));
    dspy_progress_update(bar, 1);
    for (int i = 0; i < 19; i++) dspy_progress_update(bar, 1);
    dspy_progress_close(bar);
    fclose(tty);
    dspy_str got = DSPY_STR_INIT;
    char buf[1024];
    ssize_t n;
    int fl = fcntl(master, F_GETFL);
    fcntl(master, F_SETFL, fl | O_NONBLOCK);
    while ((n = read(master, buf, sizeof buf)) > 0) dspy_str_appendn(&got, buf, (size_t)n);
    close(master);
    const char *s = dspy_str_cstr(&got);
    /* Frames: "\r<line>" ... final "\r<line>\n". */
    int frames = 0, full_width = 0;
    const char *last = NULL;
    for (const char *p = s; (p = strchr(p, '\r')) != NULL; p++) {
        frames++;
        const char *e = p + 1 + strcspn(p + 1, "\r\n");
        full_width += cells(p + 1, (size_t)(e - p - 1)) == 100;
        last = p + 1;
    }
    CHECK(frames >= 2 && frames <= 4);
    CHECK_INT(full_width, frames); /* every frame filled the 100-column terminal */
    CHECK(starts_with(s, "\rAverage Metric: 0.00 / 0 (0%):   0%|"));
    CHECK(strstr(s, "| 0/40 [00:00<?, ?it/s]") != NULL);
    CHECK(last && starts_with(last, "Average Metric: 20.00 / 21 (95.2%): 100%|████"));
    CHECK(last && strstr(last, "| 40/40 [00:00<00:00, ") != NULL);
    CHECK(got.len > 0 && s[got.len - 1] == '\n');
    dspy_str_free(&got);
}

int main(void) {
    RUN(test_format_matches_tqdm);
    RUN(test_format_buffer);
    RUN(test_live_not_a_tty);
    RUN(test_live_threads);
    RUN(test_live_tty);
    return check_summary("test_progress");
}
