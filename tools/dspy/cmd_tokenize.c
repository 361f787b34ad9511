/* cmd_tokenize.c — `dspy tokenize`: encode text (from --text or stdin) with a tokenizer.json
 * and print the ids or the tokens, decode a list of ids (--decode), or render chat messages
 * with the model's chat template and print the ids the model sees (--messages).
 *
 * --messages renders exactly as `dspy serve` does for a chat request (dspy_chat_render, then
 * encode without adding BOS and with special-token markup parsed, as transformers'
 * apply_chat_template(tokenize=True) does); the server always adds the generation prompt, so
 * pass --add-generation-prompt to see its ids, and --chat-date to fix the Llama 3 date line
 * (the server's default is today, "%d %b %Y").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include "args.h"
#include "messages_opt.h"
#include "dspy/chat_template.h"
#include "dspy/json.h"
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

/* The folder a tokenizer path names: the path itself, or the folder of a tokenizer.json. */
static char *model_dir_of(const char *path) {
    size_t n = strlen(path);
    static const char file[] = "tokenizer.json";
    if (n >= sizeof file - 1 && strcmp(path + n - (sizeof file - 1), file) == 0) {
        size_t d = n - (sizeof file - 1);
        return d == 0 ? strdup(".") : strndup(path, d);
    }
    return strdup(path);
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
        {"messages", "JSON", "chat messages ('[{\"role\": \"user\", \"content\": \"Hi\"}]'): the ids the model sees for "
                             "them, rendered with the chat template as `dspy serve` renders a chat request", false, false,
         NULL},
        {"add-generation-prompt", NULL, "--messages: append the assistant header (the server always does)", false,
         false, NULL},
        {"chat-date", "DATE", "--messages: Llama 3's \"Today Date:\" line, e.g. \"26 Jul 2024\" (default: today, as "
                              "the server)", false, false, NULL},
        {"chat-template", "PATH", "--messages: a chat template (.jinja, tokenizer_config.json or model directory) "
                                  "instead of the tokenizer's folder", false, false, NULL},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse(&a, "tokenize", "--tokenizer PATH [--ids] [--no-special] [--text TEXT | --decode IDS | "
                                             "--messages JSON [--add-generation-prompt] [--chat-date D]]",
                             "Encode text into token ids (one 'id<TAB>token' line per token, the token's bytes "
                             "escaped),\ndecode ids into text, or show the ids a model sees for chat messages.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    int modes = dspy_args_given(&a, "text") + dspy_args_given(&a, "decode") + dspy_args_given(&a, "messages");
    if (modes > 1) {
        fprintf(stderr, "error: dspy tokenize: give at most one of --text, --decode, --messages\n");
        return DSPY_EXIT_USAGE;
    }
    if (!dspy_args_given(&a, "messages") && (dspy_args_given(&a, "add-generation-prompt") ||
                                             dspy_args_given(&a, "chat-date") || dspy_args_given(&a, "chat-template"))) {
        fprintf(stderr, "error: dspy tokenize: --add-generation-prompt, --chat-date and --chat-template go with "
                        "--messages\n");
        return DSPY_EXIT_USAGE;
    }
    dspy_tokenizer *tok;
    if (dspy_tokenizer_load(dspy_args_get(&a, "tokenizer"), &tok) != DSPY_OK) return dspy_cli_usage_error("tokenize");
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
    bool chat = dspy_args_given(&a, "messages");
    if (chat) {
        char date[64];
        if (dspy_args_given(&a, "chat-date")) {
            snprintf(date, sizeof date, "%s", dspy_args_get(&a, "chat-date"));
        } else {
            time_t t = time(NULL);
            struct tm tm;
            localtime_r(&t, &tm);
            strftime(date, sizeof date, "%d %b %Y", &tm);
        }
        char *dir = dspy_args_given(&a, "chat-template") ? strdup(dspy_args_get(&a, "chat-template"))
                                                         : model_dir_of(dspy_args_get(&a, "tokenizer"));
        dspy_status st = dir ? cli_render_messages(dir, dspy_args_get(&a, "messages"),
                                                   dspy_args_flag(&a, "add-generation-prompt"), date, &in, NULL, NULL)
                             : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        free(dir);
        if (st) {
            ret = st == DSPY_ERR_NOMEM || st == DSPY_ERR_IO ? dspy_cli_error("tokenize") : dspy_cli_usage_error("tokenize");
            goto done;
        }
        text = dspy_str_cstr(&in);
        len = in.len;
    } else if (text) {
        len = strlen(text);
    } else {
        if (read_stdin(&in) != DSPY_OK) {
            ret = dspy_cli_error("tokenize");
            goto done;
        }
        text = dspy_str_cstr(&in);
        len = in.len;
    }
    /* a rendered chat already holds its BOS markup: encode it without adding one, markup parsed */
    if (dspy_tokenizer_encode(tok, text, len, !no_special && !chat, chat || !dspy_args_flag(&a, "split-special"), &ids,
                              &n) != DSPY_OK) {
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
