/* cmd_tokenize.c — `dspy tokenize`: encode text (from --text or stdin) with a tokenizer.json
 * and print the ids or the tokens, or decode a list of ids (--decode). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

static dspy_status read_stdin(dspy_str *s) {
    char buf[65536];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, stdin)) > 0) dspy_str_appendn(s, buf, r);
    if (ferror(stdin)) return dspy_fail(DSPY_ERR_IO, "cannot read standard input");
    return dspy_str_ok(s) ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory reading standard input");
}

/* Prints the bytes of a token: printable ASCII and complete UTF-8 characters as they are,
 * \n \r \t \\ escaped, anything else (control bytes, pieces of a character) as \xNN. */
static void print_escaped(const char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        unsigned cp;
        int l;
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c >= 0x20 && c < 0x7f) putchar(c);
        else if (c >= 0x80 && (l = dspy_utf8_decode(p + i, n - i, &cp)) > 0) {
            fwrite(p + i, 1, (size_t)l, stdout);
            i += (size_t)l;
            continue;
        } else printf("\\x%02x", c);
        i++;
    }
}

/* "1,2, 3" -> ids. */
static dspy_status parse_ids(const char *s, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    size_t cap = 16;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ',' && *end != ' ' && *end != '\n')) {
            free(v);
            return dspy_fail(DSPY_ERR_ARG, "--decode: '%.20s' is not a list of token ids like 1,2,3", p);
        }
        if (*n == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            }
            v = nv;
        }
        v[(*n)++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    return DSPY_OK;
}

int cmd_tokenize(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"tokenizer", "PATH", "tokenizer.json, or the model directory holding it", true, false, NULL},
        {"text", "TEXT", "text to encode (default: all of standard input)", false, false, NULL},
        {"ids", NULL, "print the ids comma-separated on one line", false, false, NULL},
        {"no-special", NULL, "encode without the template's special tokens (BOS); decode without special tokens",
         false, false, NULL},
        {"split-special", NULL, "treat special-token markup such as <|eot_id|> in the text as plain text", false,
         false, NULL},
        {"decode", "IDS", "decode comma-separated ids (e.g. 128000,9906) and print the text", false, false, NULL},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse(&a, "tokenize", "--tokenizer PATH [--ids] [--no-special] [--text TEXT | --decode IDS]",
                             "Encode text into token ids (one 'id<TAB>token' line per token, the token's bytes "
                             "escaped), or decode ids into text.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.npos > 0) {
        fprintf(stderr, "error: dspy tokenize: unexpected argument '%s' (use --text, or pipe the text in)\n", a.pos[0]);
        return 2;
    }
    dspy_tokenizer *tok;
    if (dspy_tokenizer_load(dspy_args_get(&a, "tokenizer"), &tok) != DSPY_OK) return dspy_cli_error("tokenize");
    bool no_special = dspy_args_flag(&a, "no-special");
    int ret = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    dspy_str in = DSPY_STR_INIT;
    if (dspy_args_get(&a, "decode")) {
        char *text = NULL;
        size_t tl;
        if (parse_ids(dspy_args_get(&a, "decode"), &ids, &n) != DSPY_OK ||
            dspy_tokenizer_decode(tok, ids, n, no_special, &text, &tl) != DSPY_OK) {
            ret = dspy_cli_error("tokenize");
            goto done;
        }
        fwrite(text, 1, tl, stdout);
        putchar('\n');
        free(text);
        goto done;
    }
    const char *text = dspy_args_get(&a, "text");
    size_t len;
    if (text) {
        len = strlen(text);
    } else {
        if (read_stdin(&in) != DSPY_OK) {
            ret = dspy_cli_error("tokenize");
            goto done;
        }
        text = dspy_str_cstr(&in);
        len = in.len;
    }
    if (dspy_tokenizer_encode(tok, text, len, !no_special, !dspy_args_flag(&a, "split-special"), &ids, &n) != DSPY_OK) {
        ret = dspy_cli_error("tokenize");
        goto done;
    }
    if (dspy_args_flag(&a, "ids")) {
        for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        putchar('\n');
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t bl;
            const char *b = dspy_tokenizer_token_bytes(tok, ids[i], &bl);
            printf("%d\t", ids[i]);
            print_escaped(b, bl);
            putchar('\n');
        }
    }
done:
    if (fflush(stdout) != 0 && ret == 0) {
        fprintf(stderr, "error: dspy tokenize: cannot write standard output\n");
        ret = 1;
    }
    free(ids);
    dspy_str_free(&in);
    dspy_tokenizer_free(tok);
    return ret;
}
