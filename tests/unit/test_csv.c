/* test_csv.c — RFC 4180 reader: quoting, line ends, errors with line numbers, Banking77 files. */
#include <stdlib.h>

#include "check.h"
#include "dspy/csv.h"
#include "dspy/str.h"

static dspy_csv *parse(const char *text) {
    dspy_csv *csv = NULL;
    CHECK_OK(dspy_csv_parse(text, strlen(text), "t.csv", &csv));
    return csv;
}

static void test_basic_lf_and_crlf(void) {
    const char *texts[] = {"a,b\n1,2\n3,4\n", "a,b\r\n1,2\r\n3,4\r\n", "a,b\r\n1,2\n3,4"};
    for (int i = 0; i < 3; i++) {
        dspy_csv *csv = parse(texts[i]);
        if (!csv) continue;
        CHECK_INT(dspy_csv_rows(csv), 2);
        CHECK_INT(dspy_csv_cols(csv), 2);
        CHECK_STR(dspy_csv_header(csv, 0), "a");
        CHECK_STR(dspy_csv_header(csv, 1), "b");
        CHECK_STR(dspy_csv_cell(csv, 0, 0, NULL), "1");
        CHECK_STR(dspy_csv_cell(csv, 1, 1, NULL), "4"); /* no CR left over, final newline optional */
        CHECK_INT(dspy_csv_col_index(csv, "b"), 1);
        CHECK_INT(dspy_csv_col_index(csv, "c"), -1);
        CHECK(dspy_csv_cell(csv, 2, 0, NULL) == NULL);
        CHECK(dspy_csv_cell(csv, 0, 2, NULL) == NULL);
        CHECK_INT(dspy_csv_row_line(csv, 1), 3);
        dspy_csv_free(csv);
    }
}

static void test_quotes_and_embedded_newlines(void) {
    const char *text = "text,category\r\n"
                       "\"\nHow do I unblock my PIN?\",card\r\n"
                       "\"He said \"\"hi\"\", then left\",x\r\n"
                       "\"a,b\",\"\"\r\n"
                       "\"two\r\nlines\",y\r\n"
                       "plain \"quote\" inside,z\r\n"
                       ",\r\n"
                       "last,\"no newline\"";
    dspy_csv *csv = parse(text);
    if (!csv) return;
    CHECK_INT(dspy_csv_rows(csv), 7);
    CHECK_STR(dspy_csv_cell(csv, 0, 0, NULL), "\nHow do I unblock my PIN?");
    CHECK_STR(dspy_csv_cell(csv, 1, 0, NULL), "He said \"hi\", then left");
    CHECK_STR(dspy_csv_cell(csv, 2, 0, NULL), "a,b");
    CHECK_STR(dspy_csv_cell(csv, 2, 1, NULL), "");
    CHECK_STR(dspy_csv_cell(csv, 3, 0, NULL), "two\r\nlines"); /* bytes inside quotes kept */
    CHECK_STR(dspy_csv_cell(csv, 4, 0, NULL), "plain \"quote\" inside");
    CHECK_STR(dspy_csv_cell(csv, 5, 0, NULL), "");
    CHECK_STR(dspy_csv_cell(csv, 5, 1, NULL), "");
    CHECK_STR(dspy_csv_cell(csv, 6, 1, NULL), "no newline");
    /* record start lines count the line breaks inside quoted fields */
    CHECK_INT(dspy_csv_row_line(csv, 0), 2);
    CHECK_INT(dspy_csv_row_line(csv, 1), 4);
    CHECK_INT(dspy_csv_row_line(csv, 3), 6);
    CHECK_INT(dspy_csv_row_line(csv, 4), 8);
    dspy_csv_free(csv);
}

static void test_empty_lines_bom_and_nul(void) {
    dspy_csv *csv = parse("\xEF\xBB\xBFh\n\nx\n\n");
    if (csv) {
        CHECK_STR(dspy_csv_header(csv, 0), "h");
        CHECK_INT(dspy_csv_rows(csv), 1);
        dspy_csv_free(csv);
    }
    const char with_nul[] = "h\n\"a\0b\"\n";
    csv = NULL;
    CHECK_OK(dspy_csv_parse(with_nul, sizeof with_nul - 1, "nul.csv", &csv));
    if (csv) {
        size_t len = 0;
        const char *c = dspy_csv_cell(csv, 0, 0, &len);
        CHECK_INT(len, 3);
        CHECK(c && c[1] == '\0' && c[2] == 'b');
        dspy_csv_free(csv);
    }
}

static void test_errors(void) {
    dspy_csv *csv = (dspy_csv *)1;
    const char *unterminated = "a,b\n1,2\n3,\"open\nstill open\n";
    CHECK_STATUS(dspy_csv_parse(unterminated, strlen(unterminated), "data/x.csv", &csv), DSPY_ERR_FORMAT);
    CHECK(csv == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "data/x.csv: line 3:");
    CHECK_CONTAINS(dspy_errmsg(), "unterminated quoted field");

    /* invalid UTF-8 on line 3, 4th byte of the line, file offset 13 */
    const char *bad = "a,b\r\n1,2\r\nxy,\xC3(\r\n";
    CHECK_STATUS(dspy_csv_parse(bad, strlen(bad), "u.csv", &csv), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "u.csv: line 3: invalid UTF-8 at byte offset 13");
    CHECK_CONTAINS(dspy_errmsg(), "byte 4 of the line");
    /* inside a quoted field after an embedded newline */
    const char *bad2 = "a\n\"x\ny\xFF\"\n";
    CHECK_STATUS(dspy_csv_parse(bad2, strlen(bad2), "u2.csv", &csv), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "line 3: invalid UTF-8 at byte offset 6 (byte 2 of the line");

    const char *ragged = "a,b\n1,2\n3\n";
    CHECK_STATUS(dspy_csv_parse(ragged, strlen(ragged), "r.csv", &csv), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "r.csv: line 3: record has 1 field but the header has 2");

    const char *after = "a,b\n\"x\"y,2\n";
    CHECK_STATUS(dspy_csv_parse(after, strlen(after), "q.csv", &csv), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "q.csv: line 2: unexpected character 'y' after the closing quote");

    CHECK_STATUS(dspy_csv_parse("", 0, "e.csv", &csv), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "e.csv: empty CSV");

    CHECK_STATUS(dspy_csv_load("/nonexistent/file.csv", &csv), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "/nonexistent/file.csv");
}

static void test_banking77(void) {
    if (!test_have_shared("data/banking77/train.csv")) {
        check_skip("shared/data/banking77 not present");
        return;
    }
    dspy_csv *tr = NULL, *te = NULL;
    CHECK_OK(dspy_csv_load(test_shared("data/banking77/train.csv"), &tr));
    CHECK_OK(dspy_csv_load(test_shared("data/banking77/test.csv"), &te));
    if (!tr || !te) goto done;
    CHECK_INT(dspy_csv_rows(tr), 10003);
    CHECK_INT(dspy_csv_rows(te), 3080);
    CHECK_INT(dspy_csv_cols(tr), 2);
    CHECK_STR(dspy_csv_header(tr, 0), "text");
    CHECK_STR(dspy_csv_header(tr, 1), "category");
    CHECK_STR(dspy_csv_cell(tr, 0, 0, NULL), "I am still waiting on my card?");
    CHECK_STR(dspy_csv_cell(tr, 0, 1, NULL), "card_arrival");
    CHECK_STR(dspy_csv_cell(tr, 4, 0, NULL), "How do I know if I will get my card, or if it is lost?");
    /* README facts: 10 train / 3 test texts hold '\n', 21 / 8 hold '"', no CR anywhere,
     * max length 433 / 368 characters */
    dspy_csv *both[2] = {tr, te};
    int want_nl[2] = {10, 3}, want_q[2] = {21, 8}, want_max[2] = {433, 368};
    for (int k = 0; k < 2; k++) {
        int nl = 0, q = 0, cr = 0, maxc = 0;
        for (size_t r = 0; r < dspy_csv_rows(both[k]); r++) {
            size_t len;
            const char *t = dspy_csv_cell(both[k], r, 0, &len);
            nl += memchr(t, '\n', len) != NULL;
            q += memchr(t, '"', len) != NULL;
            cr += memchr(t, '\r', len) != NULL;
            int chars = 0;
            for (size_t i = 0; i < len; i++) chars += ((unsigned char)t[i] & 0xC0) != 0x80;
            if (chars > maxc) maxc = chars;
        }
        CHECK_INT(nl, want_nl[k]);
        CHECK_INT(q, want_q[k]);
        CHECK_INT(cr, 0);
        CHECK_INT(maxc, want_max[k]);
    }
    bool found = false;
    for (size_t r = 0; r < dspy_csv_rows(tr); r++)
        found |= strcmp(dspy_csv_cell(tr, r, 0, NULL), "\nHow do I unblock my PIN?") == 0;
    CHECK(found);
done:
    dspy_csv_free(tr);
    dspy_csv_free(te);
}

int main(void) {
    RUN(test_basic_lf_and_crlf);
    RUN(test_quotes_and_embedded_newlines);
    RUN(test_empty_lines_bom_and_nul);
    RUN(test_errors);
    RUN(test_banking77);
    return check_summary("test_csv");
}
