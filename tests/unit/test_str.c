/* test_str.c — string builder, views, Python strip, UTF-8, arena, file I/O. */
#include <stdlib.h>

#include "check.h"
#include "dspy/arena.h"
#include "dspy/str.h"

static void test_builder(void) {
    dspy_str s = DSPY_STR_INIT;
    CHECK_STR(dspy_str_cstr(&s), "");
    dspy_str_append(&s, "abc");
    dspy_str_appendc(&s, '-');
    dspy_str_appendf(&s, "%d/%s", 42, "x");
    dspy_str_repeat(&s, "ab", 3);
    CHECK_STR(dspy_str_cstr(&s), "abc-42/xababab");
    CHECK_INT(s.len, 14);
    for (int i = 0; i < 10000; i++) dspy_str_appendc(&s, 'z');
    CHECK_INT(s.len, 10014);
    char *t = dspy_str_take(&s);
    CHECK(t && t[10013] == 'z' && t[10014] == '\0');
    CHECK(s.ptr == NULL);
    free(t);
    dspy_str_free(&s);
}

static void test_strip(void) {
    CHECK(dspy_strv_eqz(dspy_strv_strip(dspy_strv_of("  a b \n\t")), "a b"));
    CHECK(dspy_strv_eqz(dspy_strv_strip(dspy_strv_of("\xc2\xa0x\xe3\x80\x80")), "x")); /* NBSP, U+3000 */
    CHECK(dspy_strv_eqz(dspy_strv_strip(dspy_strv_of("\xe2\x80\x8bx")), "\xe2\x80\x8bx")); /* ZWSP kept */
    CHECK(dspy_strv_eqz(dspy_strv_strip(dspy_strv_of("   ")), ""));
    CHECK(dspy_strv_eqz(dspy_strv_lstrip(dspy_strv_of(" a ")), "a "));
    CHECK(dspy_strv_eqz(dspy_strv_rstrip(dspy_strv_of(" a ")), " a"));
    CHECK(dspy_strv_starts_with(dspy_strv_of("[[ ## a"), "[[ ##"));
    CHECK(dspy_strv_ends_with(dspy_strv_of("x ## ]]"), "## ]]"));
}

static void test_utf8(void) {
    size_t off = 99;
    CHECK(dspy_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15, &off));
    CHECK(!dspy_utf8_valid("ab\xc3", 3, &off) && off == 2);
    CHECK(!dspy_utf8_valid("\xc0\xaf", 2, &off) && off == 0);      /* overlong */
    CHECK(!dspy_utf8_valid("a\xed\xa0\x80", 4, &off) && off == 1); /* surrogate */
    char buf[4];
    unsigned cp;
    CHECK_INT(dspy_utf8_encode(0x1F600, buf), 4);
    CHECK_INT(dspy_utf8_decode(buf, 4, &cp), 4);
    CHECK_INT(cp, 0x1F600);
}

static void test_arena(void) {
    dspy_arena *a = dspy_arena_new(64);
    CHECK(a != NULL);
    char *s = dspy_arena_printf(a, "%s-%d", "x", 7);
    CHECK_STR(s, "x-7");
    for (int i = 0; i < 1000; i++) {
        char *p = dspy_arena_alloc(a, 100);
        CHECK(p && ((uintptr_t)p & 15) == 0);
        p[99] = 1;
    }
    CHECK(dspy_arena_used(a) >= 100000);
    dspy_arena_reset(a);
    CHECK_INT(dspy_arena_used(a), 0);
    CHECK_STR(dspy_arena_strndup(a, "hello", 4), "hell");
    dspy_arena_free(a);
    dspy_arena_free(NULL);
}

static void test_files(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/f.bin", test_tmpdir());
    CHECK_OK(dspy_write_file(path, "a\0b", 3));
    char *data;
    size_t n;
    CHECK_OK(dspy_read_file(path, &data, &n));
    CHECK(n == 3 && data[1] == '\0' && data[2] == 'b' && data[3] == '\0');
    free(data);
    CHECK_STATUS(dspy_read_file("/nonexistent/x", &data, &n), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "/nonexistent/x");
    CHECK(data == NULL);
}

int main(void) {
    RUN(test_builder);
    RUN(test_strip);
    RUN(test_utf8);
    RUN(test_arena);
    RUN(test_files);
    return check_summary("test_str");
}
