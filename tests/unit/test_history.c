/* test_history.c — bounded histories and inspect_history's exact text (spec §7).
 *
 * The expected strings were produced by running DSPy 3.3.1's pretty_print_history print
 * sequence (dspy/utils/inspect_history.py) under CPython on the same entries, with and without
 * colours; they are pasted here as literals. */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dspy/history.h"
#include "dspy/json.h"

static dspy_json *parse(const char *s) {
    dspy_json *j = NULL;
    CHECK_OK(dspy_json_parse(s, strlen(s), "test", &j));
    return j;
}

/* e1: two messages needing strip, two outputs; e2: prompt only (Unicode whitespace around it),
 * dict output; e3: no timestamp, upper-case role, list content with text and images. */
static const char *E1 = "{\"prompt\":null,\"messages\":[{\"role\":\"system\",\"content\":\"  You are terse.\\n\"},"
                        "{\"role\":\"user\",\"content\":\"[[ ## question ## ]]\\nWhat is 2+2?  \"}],"
                        "\"outputs\":[\"  [[ ## answer ## ]]\\n4\\n\\n[[ ## completed ## ]]\\n\",\"other\"],"
                        "\"timestamp\":\"2025-01-08T12:39:42.143798\"}";
static const char *E2 = "{\"prompt\":\"\\u00a0Say hi\\u2003\",\"messages\":null,\"outputs\":[{\"text\":\"\\nhi\\n\"}],"
                        "\"timestamp\":\"2025-01-08T12:40:00\"}";
static const char *E3 = "{\"messages\":[{\"role\":\"USER\",\"content\":[{\"type\":\"text\",\"text\":\" look \\n\"},"
                        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}},"
                        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}}]}],\"outputs\":[\"ok\"]}";

static const char *WANT_E1 =
    "\n\n\n\n[2025-01-08T12:39:42.143798]\n\nSystem message:\n\nYou are terse.\n\n\nUser message:\n\n"
    "[[ ## question ## ]]\nWhat is 2+2?\n\n\nResponse:\n\n[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]\n\n"
    " \t (and 1 other completions)\n\n\n\n\n";
static const char *WANT_E1_COLOR =
    "\n\n\n\n\x1b[34m[2025-01-08T12:39:42.143798]\x1b[0m\n\n\x1b[31mSystem message:\x1b[0m\n\nYou are terse.\n\n\n"
    "\x1b[31mUser message:\x1b[0m\n\n[[ ## question ## ]]\nWhat is 2+2?\n\n\n\x1b[31mResponse:\x1b[0m\n\n"
    "\x1b[32m[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]\x1b[0m\n\n\x1b[31m \t (and 1 other completions)\x1b[0m\n"
    "\n\n\n\n";
static const char *WANT_E2_E3 =
    "\n\n\n\n[2025-01-08T12:40:00]\n\nUser message:\n\nSay hi\n\n\nResponse:\n\nhi\n\n\n\n\n\n[Unknown time]\n\n"
    "User message:\n\nlook\n<data:image/png;base64,<IMAGE BASE 64 ENCODED(4)>\n\n<image_url: https://x/y.png>\n\n\n\n"
    "Response:\n\nok\n\n\n\n\n\n";
static const char *WANT_E2_E3_COLOR =
    "\n\n\n\n\x1b[34m[2025-01-08T12:40:00]\x1b[0m\n\n\x1b[31mUser message:\x1b[0m\n\nSay hi\n\n\n"
    "\x1b[31mResponse:\x1b[0m\n\n\x1b[32mhi\x1b[0m\n\n\n\n\n\n\x1b[34m[Unknown time]\x1b[0m\n\n"
    "\x1b[31mUser message:\x1b[0m\n\nlook\n\x1b[34m<data:image/png;base64,<IMAGE BASE 64 ENCODED(4)>\x1b[0m\n\n"
    "\x1b[34m<image_url: https://x/y.png>\x1b[0m\n\n\n\n\x1b[31mResponse:\x1b[0m\n\n\x1b[32mok\x1b[0m\n\n\n\n\n\n";

static dspy_history *make3(void) {
    dspy_history *h = dspy_history_new(0);
    const char *src[] = {E1, E2, E3};
    for (int i = 0; i < 3; i++) {
        dspy_json *e = parse(src[i]);
        CHECK_OK(dspy_history_append(h, e));
        dspy_json_decref(e);
    }
    return h;
}

static char *render(dspy_history *h, int32_t n, bool colors) {
    dspy_json *entries = dspy_history_last(h, n);
    dspy_str s = DSPY_STR_INIT;
    CHECK_OK(dspy_history_render(entries, colors, &s));
    dspy_json_decref(entries);
    return dspy_str_take(&s);
}

static void test_render_exact(void) {
    dspy_history *h = make3();
    struct {
        int32_t n;
        bool colors;
        const char *want1, *want2;
    } cases[] = {
        {2, false, WANT_E2_E3, ""},
        {2, true, WANT_E2_E3_COLOR, ""},
        {-1, false, WANT_E2_E3, ""}, /* history[1:] */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *got = render(h, cases[i].n, cases[i].colors);
        CHECK_STR(got, cases[i].want1);
        free(got);
    }
    /* n = 0 is history[-0:] = everything; n larger than the history is everything too */
    char *all0 = render(h, 0, false), *all9 = render(h, 9, false);
    size_t l1 = strlen(WANT_E1) - 4; /* e1's text without the closing "\n\n\n\n" */
    CHECK(strncmp(all0, WANT_E1, l1) == 0 && strcmp(all0 + l1, WANT_E2_E3) == 0);
    CHECK_STR(all9, all0);
    free(all0);
    free(all9);
    dspy_history_free(h);

    dspy_history *one = dspy_history_new(10);
    dspy_json *e = parse(E1);
    CHECK_OK(dspy_history_append(one, e));
    dspy_json_decref(e);
    char *got = render(one, 1, false);
    CHECK_STR(got, WANT_E1);
    free(got);
    got = render(one, 1, true);
    CHECK_STR(got, WANT_E1_COLOR);
    free(got);
    dspy_history_free(one);

    dspy_history *empty = dspy_history_new(10);
    got = render(empty, 1, true);
    CHECK_STR(got, "\n\n\n\n");
    free(got);
    dspy_history_free(empty);
}

static char *read_fd_all(int fd) {
    dspy_str s = DSPY_STR_INIT;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) dspy_str_appendn(&s, buf, (size_t)n);
    return dspy_str_take(&s);
}

static void test_print_tty_or_file(void) {
    dspy_history *h = dspy_history_new(5);
    dspy_json *e = parse(E1);
    CHECK_OK(dspy_history_append(h, e));
    dspy_json_decref(e);

    /* a regular file: no colours */
    FILE *f = tmpfile();
    CHECK_OK(dspy_history_print(h, 1, f));
    rewind(f);
    char *got = read_fd_all(fileno(f));
    CHECK_STR(got, WANT_E1);
    free(got);
    fclose(f);

    /* a terminal (pseudo-terminal): colours */
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        check_skip("no pseudo-terminals here");
    } else {
        int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
        CHECK(slave >= 0 && isatty(slave));
        FILE *tty = fdopen(slave, "w");
        CHECK_OK(dspy_history_print(h, 1, tty));
        fclose(tty);
        /* the pty line discipline turns "\n" into "\r\n": undo that before comparing */
        char *raw = read_fd_all(master), *w = raw;
        for (char *r = raw; *r; r++)
            if (!(r[0] == '\r' && r[1] == '\n')) *w++ = *r;
        *w = '\0';
        CHECK_STR(raw, WANT_E1_COLOR);
        free(raw);
    }
    if (master >= 0) close(master);
    dspy_history_free(h);
}

static void test_bounded(void) {
    dspy_history *h = dspy_history_new(3);
    for (int i = 0; i < 10; i++) {
        dspy_json *e = dspy_json_object();
        CHECK_OK(dspy_json_set(e, "i", dspy_json_int(i)));
        CHECK_OK(dspy_history_append(h, e));
        dspy_json_decref(e);
    }
    CHECK_INT(dspy_history_len(h), 3);
    for (size_t i = 0; i < 3; i++) {
        dspy_json *e = dspy_history_at(h, i);
        CHECK_INT(dspy_json_int_or(e, "i", -1), 7 + (int)i);
        dspy_json_decref(e);
    }
    CHECK(dspy_history_at(h, 3) == NULL);
    dspy_json *last2 = dspy_history_last(h, 2);
    CHECK_INT(dspy_json_size(last2), 2);
    CHECK_INT(dspy_json_int_or(dspy_json_at(last2, 0), "i", -1), 8);
    dspy_json_decref(last2);
    dspy_history_set_max_size(h, 1);
    CHECK_INT(dspy_history_len(h), 1);
    dspy_json *e = dspy_history_at(h, 0);
    CHECK_INT(dspy_json_int_or(e, "i", -1), 9);
    dspy_json_decref(e);
    dspy_json *arr = dspy_json_array();
    CHECK_STATUS(dspy_history_append(h, arr), DSPY_ERR_ARG);
    dspy_json_decref(arr);
    dspy_history_clear(h);
    CHECK_INT(dspy_history_len(h), 0);
    dspy_history_free(h);

    /* entries must have outputs; prompt-less entries without messages are rejected clearly */
    dspy_json *bad = parse("[{\"messages\":[],\"prompt\":null,\"outputs\":[\"x\"]}]");
    dspy_str s = DSPY_STR_INIT;
    CHECK_STATUS(dspy_history_render(bad, false, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "neither messages nor a prompt");
    dspy_str_free(&s);
    dspy_json_decref(bad);
}

static void *appender(void *arg) {
    dspy_history *h = arg;
    for (int i = 0; i < 500; i++) {
        dspy_json *e = dspy_json_object();
        dspy_json_set(e, "i", dspy_json_int(i));
        dspy_history_append(h, e);
        dspy_json_decref(e);
        if (i % 50 == 0) dspy_json_decref(dspy_history_last(h, 5));
    }
    return NULL;
}

static void test_threads_and_global(void) {
    dspy_history *h = dspy_history_new(100);
    pthread_t th[8];
    for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, appender, h);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    CHECK_INT(dspy_history_len(h), 100);
    dspy_history_free(h);

    dspy_history *g = dspy_history_global();
    CHECK(g == dspy_history_global());
    CHECK(dspy_history_enabled());
    dspy_json *e = parse(E1);
    CHECK_OK(dspy_history_append(g, e));
    dspy_json_decref(e);
    FILE *f = tmpfile();
    CHECK_OK(dspy_inspect_history(1, f));
    rewind(f);
    char *got = read_fd_all(fileno(f));
    CHECK_STR(got, WANT_E1);
    free(got);
    fclose(f);
    dspy_history_clear(g);
}

int main(void) {
    RUN(test_render_exact);
    RUN(test_print_tty_or_file);
    RUN(test_bounded);
    RUN(test_threads_and_global);
    return check_summary("test_history");
}
