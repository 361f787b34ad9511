/* test_tokenizer.c — the Llama 3 tokenizer against HF tokenizers' ids.
 *
 * References: ../shared/models/llama3-tokenizer/test_vectors.jsonl (13,110 texts with the ids
 * HF tokenizers 0.23.2 gives, no BOS; see that folder's README) and chat_vectors.jsonl. Every
 * vector is encoded through the hand-written matcher, through PCRE2, and with the heap-only BPE
 * loop, and decoded back. Also: special-token handling, offsets, decoding of invalid UTF-8,
 * streaming, bad tokenizer files, a Qwen2-style tokenizer built in a temp dir, and NFC against
 * tests/ref/nfc_vectors.jsonl (CPython unicodedata, scripts/make_ref_nfc.py).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"
#include "model/tokenizer_internal.h"
#include "model/unicode_tables.h"

#define TOK_JSON "models/llama3-tokenizer/tokenizer.json"

static dspy_tokenizer *g_tok;

typedef struct {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} vec;

static vec *g_vecs;
static size_t g_nvecs;

static void load_vectors(void) {
    char *data;
    size_t n;
    if (dspy_read_file(test_shared("models/llama3-tokenizer/test_vectors.jsonl"), &data, &n) != DSPY_OK) return;
    size_t cap = 16384;
    g_vecs = calloc(cap, sizeof *g_vecs);
    char *line = data;
    while (line < data + n) {
        char *nl = memchr(line, '\n', (size_t)(data + n - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + n - line);
        if (ll > 0) {
            json_error_t err;
            json_t *j = json_loadb(line, ll, JSON_ALLOW_NUL, &err);
            CHECK(j != NULL);
            if (j && g_nvecs < cap) {
                vec *v = &g_vecs[g_nvecs++];
                json_t *t = json_object_get(j, "text"), *ids = json_object_get(j, "ids");
                v->len = json_string_length(t);
                v->text = malloc(v->len + 1);
                memcpy(v->text, json_string_value(t), v->len + 1);
                v->n = json_array_size(ids);
                v->ids = malloc((v->n + 1) * sizeof *v->ids);
                for (size_t i = 0; i < v->n; i++) v->ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
            }
            json_decref(j);
        }
        line += ll + 1;
    }
    free(data);
}

static void free_vectors(void) {
    for (size_t i = 0; i < g_nvecs; i++) {
        free(g_vecs[i].text);
        free(g_vecs[i].ids);
    }
    free(g_vecs);
}

/* Encodes every vector with `tok`; counts mismatches, prints the first few. With `roundtrip`,
 * also checks decode(encode(x)) == x. */
static void run_vectors(const dspy_tokenizer *tok, bool roundtrip, const char *label) {
    size_t bad = 0, bad_rt = 0;
    for (size_t k = 0; k < g_nvecs; k++) {
        vec *v = &g_vecs[k];
        int32_t *ids;
        size_t n;
        if (dspy_tokenizer_encode(tok, v->text, v->len, false, true, &ids, &n) != DSPY_OK) {
            bad++;
            continue;
        }
        if (n != v->n || memcmp(ids, v->ids, n * sizeof *ids) != 0) {
            if (bad++ < 5) {
                fprintf(stderr, "%s: mismatch for \"%s\":\n  got ", label, v->text);
                for (size_t i = 0; i < n; i++) fprintf(stderr, "%d ", ids[i]);
                fprintf(stderr, "\n  want ");
                for (size_t i = 0; i < v->n; i++) fprintf(stderr, "%d ", v->ids[i]);
                fprintf(stderr, "\n");
            }
        }
        if (roundtrip) {
            char *text;
            size_t tl;
            if (dspy_tokenizer_decode(tok, ids, n, false, &text, &tl) != DSPY_OK || tl != v->len ||
                memcmp(text, v->text, tl) != 0) {
                if (bad_rt++ < 5) fprintf(stderr, "%s: round trip differs for \"%s\"\n", label, v->text);
            }
            free(text);
        }
        free(ids);
    }
    check_report(bad == 0, __FILE__, __LINE__, "%s: %zu of %zu vectors encode differently", label, bad, g_nvecs);
    if (roundtrip)
        check_report(bad_rt == 0, __FILE__, __LINE__, "%s: %zu of %zu vectors do not round-trip", label, bad_rt, g_nvecs);
}

static void test_vectors(void) {
    CHECK(g_nvecs == 13110);
    run_vectors(g_tok, true, "llama3 matcher");
}

/* Concurrent encodes on one tokenizer give the reference ids (the tokenizer is read-only). */
typedef struct {
    int part;
    size_t bad;
} thread_job;

static void *encode_part(void *arg) {
    thread_job *j = arg;
    for (size_t k = (size_t)j->part; k < g_nvecs; k += 4) {
        int32_t *ids;
        size_t n;
        if (dspy_tokenizer_encode(g_tok, g_vecs[k].text, g_vecs[k].len, false, true, &ids, &n) != DSPY_OK) {
            j->bad++;
            continue;
        }
        if (n != g_vecs[k].n || memcmp(ids, g_vecs[k].ids, n * sizeof *ids) != 0) j->bad++;
        free(ids);
    }
    return NULL;
}

static void test_threads(void) {
    pthread_t th[4];
    thread_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){i, 0};
        CHECK(pthread_create(&th[i], NULL, encode_part, &jobs[i]) == 0);
    }
    size_t bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        bad += jobs[i].bad;
    }
    CHECK_INT(bad, 0);
}

/* Runs last: switches the shared tokenizer to PCRE2 and heap-only BPE for good. */
static void test_vectors_pcre2(void) {
    CHECK_OK(dspy_tokenizer_debug_force_pcre2(g_tok));
    CHECK_STR(dspy_tokenizer_pretokenizer(g_tok), "pcre2");
    dspy_tokenizer_debug_bpe_small_limit(g_tok, 0); /* heap BPE for every word, too */
    run_vectors(g_tok, false, "pcre2 + heap bpe");
}

static void test_basics(void) {
    const dspy_tokenizer *tok = g_tok;
    CHECK_STR(dspy_tokenizer_pretokenizer(tok), "llama3");
    CHECK_INT(dspy_tokenizer_vocab_size(tok), 128256);
    CHECK_INT(dspy_tokenizer_bos_id(tok), 128000);
    CHECK_INT(dspy_tokenizer_eos_id(tok), 128009);
    CHECK_INT(dspy_tokenizer_token_to_id(tok, "<|eot_id|>"), 128009);
    CHECK_INT(dspy_tokenizer_token_to_id(tok, "Ġhello"), 24748);
    CHECK_INT(dspy_tokenizer_token_to_id(tok, "ĊĊ"), 271);
    CHECK_INT(dspy_tokenizer_token_to_id(tok, "no such token at all"), -1);
    CHECK_STR(dspy_tokenizer_id_to_token(tok, 24748), "Ġhello");
    CHECK_STR(dspy_tokenizer_id_to_token(tok, 128006), "<|start_header_id|>");
    CHECK(dspy_tokenizer_id_to_token(tok, 128256) == NULL);
    CHECK(dspy_tokenizer_id_to_token(tok, -1) == NULL);
    CHECK(dspy_tokenizer_is_special(tok, 128009));
    CHECK(!dspy_tokenizer_is_special(tok, 271));
    size_t bl;
    const char *b = dspy_tokenizer_token_bytes(tok, 271, &bl);
    CHECK(b && bl == 2 && memcmp(b, "\n\n", 2) == 0);

    /* Meta's test sentence, with and without the BOS template. */
    int32_t *ids;
    size_t n;
    const char *s = "This is a test sentence.";
    CHECK_OK(dspy_tokenizer_encode(tok, s, strlen(s), true, true, &ids, &n));
    int32_t want[] = {128000, 2028, 374, 264, 1296, 11914, 13};
    CHECK(n == 7 && memcmp(ids, want, sizeof want) == 0);
    free(ids);

    /* Empty text: nothing, or just BOS. */
    CHECK_OK(dspy_tokenizer_encode(tok, "", 0, false, true, &ids, &n));
    CHECK_INT(n, 0);
    free(ids);
    CHECK_OK(dspy_tokenizer_encode(tok, "", 0, true, true, &ids, &n));
    CHECK(n == 1 && ids[0] == 128000);
    free(ids);

    /* Invalid UTF-8 is refused with the offset. */
    CHECK_STATUS(dspy_tokenizer_encode(tok, "ab\xff", 3, false, true, &ids, &n), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "offset 2");
    CHECK(ids == NULL);
}

static void test_specials(void) {
    const dspy_tokenizer *tok = g_tok;
    int32_t *ids;
    size_t n;
    const char *s = "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>";
    CHECK_OK(dspy_tokenizer_encode(tok, s, strlen(s), false, true, &ids, &n));
    int32_t want[] = {128006, 882, 128007, 271, 6151, 128009};
    CHECK(n == 6 && memcmp(ids, want, sizeof want) == 0);
    char *text;
    size_t tl;
    CHECK_OK(dspy_tokenizer_decode(tok, ids, n, false, &text, &tl));
    CHECK_STR(text, s);
    free(text);
    CHECK_OK(dspy_tokenizer_decode(tok, ids, n, true, &text, &tl));
    CHECK_STR(text, "user\n\nhi");
    free(text);
    free(ids);

    /* parse_special=false: the markup is plain text. "<|" = 27, "eot" = 68, "_id" = 851, "|>" = 91. */
    const char *e = "<|eot_id|>";
    CHECK_OK(dspy_tokenizer_encode(tok, e, strlen(e), false, false, &ids, &n));
    CHECK(n > 1);
    CHECK(n > 0 && ids[0] == 27);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] < 128000);
    CHECK_OK(dspy_tokenizer_decode(tok, ids, n, false, &text, &tl));
    CHECK_STR(text, e);
    free(text);
    free(ids);

    /* Unknown special-looking text is plain text; a special token at the very end. */
    const char *u = "x<|not_a_token|><|end_of_text|>";
    CHECK_OK(dspy_tokenizer_encode(tok, u, strlen(u), false, true, &ids, &n));
    CHECK(n > 2 && ids[n - 1] == 128001 && ids[n - 2] != 128001);
    free(ids);

    /* Decoding an unknown id is an error. */
    int32_t badid[] = {1, 999999};
    CHECK_STATUS(dspy_tokenizer_decode(tok, badid, 2, false, &text, &tl), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "999999");
}

static void test_offsets(void) {
    const char *s = "Hello world!<|eot_id|> 🦙";
    int32_t *ids;
    size_t *starts, n;
    CHECK_OK(dspy_tokenizer_encode_offsets(g_tok, s, strlen(s), true, true, &ids, &starts, &n));
    /* BOS, "Hello", " world", "!", <|eot_id|>, then " \xF0\x9F" (11410), "\xA6", "\x99". */
    CHECK_INT(n, 8);
    if (n == 8) {
        CHECK_INT(ids[0], 128000);
        CHECK_INT(starts[0], 0);
        CHECK_INT(starts[1], 0);
        CHECK_INT(starts[2], 5);
        CHECK_INT(starts[3], 11);
        CHECK_INT(ids[4], 128009);
        CHECK_INT(starts[4], 12);
        CHECK_INT(ids[5], 11410);
        CHECK_INT(starts[5], 22);
        CHECK_INT(starts[6], 25);
        CHECK_INT(starts[7], 26);
        /* Each token's bytes equal the text between its start and the next one. */
        for (size_t i = 1; i < n; i++) {
            size_t end = i + 1 < n ? starts[i + 1] : strlen(s), bl;
            const char *b = dspy_tokenizer_token_bytes(g_tok, ids[i], &bl);
            CHECK(b && bl == end - starts[i] && memcmp(b, s + starts[i], bl) == 0);
        }
    }
    free(ids);
    free(starts);
}

static void test_decode_lossy_and_stream(void) {
    const dspy_tokenizer *tok = g_tok;
    /* 🦙 = F0 9F A6 99 is three tokens: 9468 (F0 9F), 99 ("\xA6"), 247 ("\x99"). */
    int32_t llama[] = {9468, 99, 247};
    char *text;
    size_t tl;
    CHECK_OK(dspy_tokenizer_decode(tok, llama, 3, false, &text, &tl));
    CHECK_STR(text, "🦙");
    free(text);
    /* The first two alone: one U+FFFD for the unfinished sequence (from_utf8_lossy). */
    CHECK_OK(dspy_tokenizer_decode(tok, llama, 2, false, &text, &tl));
    CHECK_STR(text, "\xEF\xBF\xBD");
    free(text);
    /* A lone continuation byte then ASCII: U+FFFD then the letter. */
    int32_t cont[] = {99, 64};
    CHECK_OK(dspy_tokenizer_decode(tok, cont, 2, false, &text, &tl));
    CHECK_STR(text, "\xEF\xBF\xBD" "a");
    free(text);

    dspy_tokenizer_stream *st;
    CHECK_OK(dspy_tokenizer_stream_new(tok, true, &st));
    dspy_str out = DSPY_STR_INIT;
    CHECK_OK(dspy_tokenizer_stream_push(st, 9906, &out)); /* "Hello" */
    CHECK_STR(dspy_str_cstr(&out), "Hello");
    CHECK_OK(dspy_tokenizer_stream_push(st, 9468, &out));
    CHECK_STR(dspy_str_cstr(&out), "Hello"); /* held back */
    CHECK_OK(dspy_tokenizer_stream_push(st, 99, &out));
    CHECK_STR(dspy_str_cstr(&out), "Hello");
    CHECK_OK(dspy_tokenizer_stream_push(st, 247, &out));
    CHECK_STR(dspy_str_cstr(&out), "Hello🦙");
    CHECK_OK(dspy_tokenizer_stream_push(st, 128009, &out)); /* skipped special */
    CHECK_STR(dspy_str_cstr(&out), "Hello🦙");
    CHECK_STATUS(dspy_tokenizer_stream_push(st, -5, &out), DSPY_ERR_ARG);
    CHECK_OK(dspy_tokenizer_stream_push(st, 9468, &out));
    CHECK_OK(dspy_tokenizer_stream_push(st, 0, &out)); /* "!" proves F0 9F invalid */
    CHECK_STR(dspy_str_cstr(&out), "Hello🦙\xEF\xBF\xBD!");
    CHECK_OK(dspy_tokenizer_stream_push(st, 9468, &out));
    CHECK_OK(dspy_tokenizer_stream_flush(st, &out));
    CHECK_STR(dspy_str_cstr(&out), "Hello🦙\xEF\xBF\xBD!\xEF\xBF\xBD");
    dspy_tokenizer_stream_free(st);
    dspy_tokenizer_stream_free(NULL);

    /* Streaming every vector token by token gives the same text as decode. */
    size_t bad = 0;
    for (size_t k = 0; k < g_nvecs; k += 7) {
        CHECK_OK(dspy_tokenizer_stream_new(tok, false, &st));
        dspy_str_clear(&out);
        for (size_t i = 0; i < g_vecs[k].n; i++) dspy_tokenizer_stream_push(st, g_vecs[k].ids[i], &out);
        dspy_tokenizer_stream_flush(st, &out);
        if (out.len != g_vecs[k].len || memcmp(dspy_str_cstr(&out), g_vecs[k].text, out.len) != 0) bad++;
        dspy_tokenizer_stream_free(st);
    }
    CHECK_INT(bad, 0);
    dspy_str_free(&out);
}

static void test_chat_vectors(void) {
    char *data;
    size_t n;
    CHECK_OK(dspy_read_file(test_shared("models/llama3-tokenizer/chat_vectors.jsonl"), &data, &n));
    if (!data) return;
    int lines = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        const char *r = json_string_value(json_object_get(j, "rendered"));
        json_t *want = json_object_get(j, "ids");
        int32_t *ids;
        size_t k;
        /* The rendered text already starts with <|begin_of_text|>: no template prefix. */
        CHECK_OK(dspy_tokenizer_encode(g_tok, r, strlen(r), false, true, &ids, &k));
        bool same = k == json_array_size(want);
        for (size_t i = 0; same && i < k; i++) same = ids[i] == json_integer_value(json_array_get(want, i));
        CHECK(same);
        free(ids);
        json_decref(j);
        lines++;
    }
    CHECK_INT(lines, 2);
    free(data);
}

/* Writes `text` to dir/name and returns the path (static buffer). */
static const char *write_tmp(const char *name, const char *text) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    CHECK_OK(dspy_write_file(path, text, strlen(text)));
    return path;
}

static void test_bad_files(void) {
    dspy_tokenizer *tok = (dspy_tokenizer *)1;
    CHECK_STATUS(dspy_tokenizer_load("/nonexistent/tokenizer.json", &tok), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "/nonexistent/tokenizer.json");
    CHECK(tok == NULL);
    CHECK_STATUS(dspy_tokenizer_load(test_tmpdir(), &tok), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "no tokenizer.json");

    const char *p = write_tmp("nomerges.json",
                              "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"decoder\": {\"type\": \"ByteLevel\"}}");
    CHECK_STATUS(dspy_tokenizer_load(p, &tok), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "nomerges.json");
    CHECK_CONTAINS(dspy_errmsg(), "model.merges");
    CHECK(tok == NULL);

    /* Truncated copy of the real file. */
    char *data;
    size_t n;
    CHECK_OK(dspy_read_file(test_shared(TOK_JSON), &data, &n));
    if (data) {
        char path[1024];
        snprintf(path, sizeof path, "%s/truncated.json", test_tmpdir());
        CHECK_OK(dspy_write_file(path, data, n / 2));
        CHECK_STATUS(dspy_tokenizer_load(path, &tok), DSPY_ERR_FORMAT);
        CHECK_CONTAINS(dspy_errmsg(), "truncated.json");
        CHECK_CONTAINS(dspy_errmsg(), "invalid JSON");
        free(data);
    }

    p = write_tmp("wordpiece.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
    CHECK_STATUS(dspy_tokenizer_load(p, &tok), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "WordPiece");
    p = write_tmp("notjson.json", "hello");
    CHECK_STATUS(dspy_tokenizer_load(p, &tok), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "line 1");
}

static void test_nfc(void) {
    char *data;
    size_t n;
    CHECK_OK(dspy_read_file(test_source("tests/ref/nfc_vectors.jsonl"), &data, &n));
    if (!data) return;
    size_t total = 0, bad = 0, changed_n = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        json_t *t = json_object_get(j, "text");
        if (!t) {
            CHECK_STR(json_string_value(json_object_get(j, "unicode")), dspy_unicode_version);
            json_decref(j);
            continue;
        }
        const char *text = json_string_value(t), *want = json_string_value(json_object_get(j, "nfc"));
        dspy_str out = DSPY_STR_INIT;
        size_t *map;
        bool changed;
        CHECK_OK(dspy_nfc((const unsigned char *)text, strlen(text), 100, &out, &map, &changed));
        const char *got = changed ? dspy_str_cstr(&out) : text;
        total++;
        if (changed) changed_n++;
        if (strcmp(got, want) != 0 && bad++ < 5) fprintf(stderr, "NFC mismatch for %s: got %s want %s\n", text, got, want);
        if (changed) {
            /* The map points into the original text, starting at the base, ending at base + n. */
            CHECK(map[0] == 100 && map[out.len] == 100 + strlen(text));
            free(map);
        }
        dspy_str_free(&out);
        json_decref(j);
    }
    CHECK_INT(total, 750);
    CHECK(changed_n > 500);
    CHECK_INT(bad, 0);
    free(data);
}

/* A small Qwen2-style tokenizer: the 256 byte tokens, a few merges in pair form, ChatML added
 * tokens, Qwen2's split pattern (single digits), no post-processor. */
static dspy_tokenizer *small_qwen_style(bool nfc) {
    dspy_str j = DSPY_STR_INIT;
    dspy_str_append(&j, nfc ? "{\"normalizer\": {\"type\": \"NFC\"}, " : "{\"normalizer\": null, ");
    dspy_str_append(&j, "\"added_tokens\": ["
                        "{\"id\": 262, \"content\": \"<|im_start|>\", \"special\": true},"
                        "{\"id\": 263, \"content\": \"<|im_end|>\", \"special\": true},"
                        "{\"id\": 264, \"content\": \"[x]\", \"special\": false, \"lstrip\": true, \"rstrip\": true}],"
                        "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                        "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|"
                        "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
                        "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": false},"
                        "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},"
                        "\"post_processor\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"},"
                        "\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int b = 0; b < 256; b++) {
        char u[8];
        int l = dspy_utf8_encode(dspy_bytelevel_cp[b], u);
        dspy_str_append(&j, u[0] == '"' || u[0] == '\\' ? "\"\\" : "\"");
        dspy_str_appendf(&j, "%.*s\": %d, ", l, u, b);
    }
    /* 256 "ab", 257 "abc", 258 "Ġa", 259 "11", 260 "Ġab", 261 "ĠĠ" */
    dspy_str_append(&j, "\"ab\": 256, \"abc\": 257, \"Ġa\": 258, \"11\": 259, \"Ġab\": 260, \"ĠĠ\": 261},"
                        "\"merges\": [[\"Ġ\", \"a\"], [\"a\", \"b\"], [\"ab\", \"c\"], [\"1\", \"1\"], [\"Ġa\", \"b\"],"
                        "[\"Ġ\", \"Ġ\"]]}}");
    CHECK(dspy_str_ok(&j));
    const char *p = write_tmp("tokenizer.json", j.ptr);
    dspy_str_free(&j);
    dspy_tokenizer *tok;
    CHECK_OK(dspy_tokenizer_load(p, &tok));
    return tok;
}

static void test_small_qwen_style(void) {
    dspy_tokenizer *tok = small_qwen_style(false);
    if (!tok) return;
    CHECK_STR(dspy_tokenizer_pretokenizer(tok), "qwen2");
    CHECK_INT(dspy_tokenizer_bos_id(tok), -1);
    CHECK_INT(dspy_tokenizer_vocab_size(tok), 265);
    int32_t *ids;
    size_t n;
    /* "abc ab 11" -> "abc" " ab" " " "1" "1": digits split one by one, so "11" never merges. */
    const char *s = "abc ab 11<|im_end|>";
    CHECK_OK(dspy_tokenizer_encode(tok, s, strlen(s), true, true, &ids, &n));
    int32_t want[] = {257, 260, ' ', '1', '1', 263};
    CHECK(n == 6 && memcmp(ids, want, sizeof want) == 0);
    free(ids);
    /* lstrip/rstrip: the spaces around "[x]" belong to the added token. */
    s = "ab  [x]  ab";
    CHECK_OK(dspy_tokenizer_encode(tok, s, strlen(s), false, true, &ids, &n));
    int32_t want2[] = {256, 264, 256};
    CHECK(n == 3 && memcmp(ids, want2, sizeof want2) == 0);
    free(ids);
    /* Same through PCRE2. */
    CHECK_OK(dspy_tokenizer_debug_force_pcre2(tok));
    s = "abc ab 11<|im_end|>";
    CHECK_OK(dspy_tokenizer_encode(tok, s, strlen(s), true, true, &ids, &n));
    CHECK(n == 6 && memcmp(ids, want, sizeof want) == 0);
    free(ids);
    dspy_tokenizer_free(tok);

    /* With an NFC normalizer, "e" + U+0301 encodes as the bytes of U+00E9, and offsets point at
     * the original text. Without it, the three bytes stay. */
    tok = small_qwen_style(true);
    if (!tok) return;
    size_t *starts;
    s = "ab e\xcc\x81<|im_end|>e\xcc\x81";
    CHECK_OK(dspy_tokenizer_encode_offsets(tok, s, strlen(s), false, true, &ids, &starts, &n));
    int32_t want3[] = {256, ' ', 0xc3, 0xa9, 263, 0xc3, 0xa9};
    CHECK(n == 7 && memcmp(ids, want3, sizeof want3) == 0);
    if (n == 7) {
        CHECK_INT(starts[1], 2);
        CHECK_INT(starts[2], 3);
        CHECK_INT(starts[3], 3);
        CHECK_INT(starts[4], 6);
        CHECK_INT(starts[5], 16);
    }
    free(ids);
    free(starts);
    dspy_tokenizer_free(tok);
}

/* The CLI: `dspy tokenize` prints ids, tokens, and decodes. All but the first call use the
 * small tokenizer (fast to load, so the test stays quick under ASan). */
static void cli(const char *tokenizer, const char *args, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer '%s' %s 2>&1", test_bin("dspy"), tokenizer, args);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, cap - 1, p) : 0;
    out[n] = '\0';
    if (p) pclose(p);
}

static void test_cli(void) {
    char out[4096];
    cli(test_shared(TOK_JSON), "--ids --text 'This is a test sentence.'", out, sizeof out);
    CHECK_STR(out, "128000,2028,374,264,1296,11914,13\n");
    dspy_tokenizer *small = small_qwen_style(false);
    dspy_tokenizer_free(small);
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer.json", test_tmpdir());
    cli(path, "--text 'abc ab\t🦙'", out, sizeof out);
    CHECK_STR(out, "257\tabc\n260\t ab\n9\t\\t\n240\t\\xf0\n159\t\\x9f\n166\t\\xa6\n153\t\\x99\n");
    cli(path, "--decode 257,263", out, sizeof out);
    CHECK_STR(out, "abc<|im_end|>\n");
    cli(path, "--decode 257,263 --no-special", out, sizeof out);
    CHECK_STR(out, "abc\n");
    cli(path, "--decode 1,x", out, sizeof out);
    CHECK_CONTAINS(out, "error: dspy tokenize: --decode");
}

/* dspy_tokenizer_encode_max: the same ids up to the limit, DSPY_ERR_CONTEXT past it, and bounded
 * work: a 4 MB piece with no break in it (one pre-tokenizer piece) and 4 MB of short words are
 * both refused without being encoded whole. */
static void test_encode_max(void) {
    const char *text = "The quick brown fox jumps over the lazy dog, 12345 times!";
    int32_t *all = NULL, *lim = NULL;
    size_t n = 0, m = 0;
    CHECK_OK(dspy_tokenizer_encode(g_tok, text, strlen(text), true, true, &all, &n));
    CHECK_OK(dspy_tokenizer_encode_max(g_tok, text, strlen(text), true, true, n, &lim, &m));
    CHECK(m == n && lim && memcmp(all, lim, n * sizeof *all) == 0);
    free(lim);
    lim = NULL;
    CHECK_STATUS(dspy_tokenizer_encode_max(g_tok, text, strlen(text), true, true, n - 1, &lim, &m), DSPY_ERR_CONTEXT);
    CHECK(lim == NULL && m == 0);
    CHECK_CONTAINS(dspy_errmsg(), "longer than");
    free(all);
    size_t big = 4u << 20;
    char *a = malloc(big);
    memset(a, 'a', big);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_STATUS(dspy_tokenizer_encode_max(g_tok, a, big, false, false, 8192, &lim, &m), DSPY_ERR_CONTEXT);
    for (size_t i = 0; i < big; i++) a[i] = i % 5 == 4 ? ' ' : 'w';
    CHECK_STATUS(dspy_tokenizer_encode_max(g_tok, a, big, false, false, 8192, &lim, &m), DSPY_ERR_CONTEXT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(dt < 1.0); /* whole, these take seconds and hundreds of MB */
    free(a);
}

/* Two loaded tokenizers hold the same tables, byte for byte. */
static bool same_tables(const dspy_tokenizer *a, const dspy_tokenizer *b) {
    if (a->n_ids != b->n_ids || a->n_merges != b->n_merges || a->vocab_mask != b->vocab_mask ||
        a->merge_mask != b->merge_mask || a->n_added != b->n_added || a->bos_id != b->bos_id || a->eos_id != b->eos_id)
        return false;
    const size_t n = (size_t)a->n_ids;
    return memcmp(a->flags, b->flags, n) == 0 && memcmp(a->bytes_off, b->bytes_off, (n + 1) * 4) == 0 &&
           memcmp(a->bytes_blob, b->bytes_blob, a->bytes_off[n]) == 0 && memcmp(a->str_off, b->str_off, (n + 1) * 4) == 0 &&
           memcmp(a->str_blob, b->str_blob, a->str_off[n]) == 0 &&
           memcmp(a->vocab_slots, b->vocab_slots, ((size_t)a->vocab_mask + 1) * sizeof *a->vocab_slots) == 0 &&
           memcmp(a->merges, b->merges, (size_t)(a->merge_mask + 1) * sizeof *a->merges) == 0 &&
           memcmp(a->byte_id, b->byte_id, sizeof a->byte_id) == 0;
}

/* tokenizer.json's vocabulary and merges are read from the file's text (tokenizer_lists.c);
 * a file the fast reader declines (here: one 19-digit integer in a member nobody reads) goes
 * through jansson's tree. Both ways must build the same tables, and say the same things of
 * bad entries. */
static void test_text_and_tree(void) {
    char *data;
    size_t n;
    CHECK_OK(dspy_read_file(test_shared(TOK_JSON), &data, &n));
    if (!data) return;
    char *tree = malloc(n + 64);
    const char *brace = memchr(data, '{', n);
    CHECK(brace != NULL);
    if (!tree || !brace) return;
    const size_t head = (size_t)(brace + 1 - data);
    int k = snprintf(tree, 64, "%.*s\"x_declined\": 1000000000000000000,", (int)head, data);
    memcpy(tree + k, data + head, n - head);
    char path[1024], cfg[1024];
    snprintf(path, sizeof path, "%s/tree", test_tmpdir());
    CHECK(mkdir(path, 0700) == 0);
    snprintf(cfg, sizeof cfg, "%s/tree/tokenizer_config.json", test_tmpdir());
    char *cdata;
    size_t cn;
    CHECK_OK(dspy_read_file(test_shared("models/llama3-tokenizer/tokenizer_config.json"), &cdata, &cn));
    if (cdata) CHECK_OK(dspy_write_file(cfg, cdata, cn));
    free(cdata);
    snprintf(path, sizeof path, "%s/tree/tokenizer.json", test_tmpdir());
    CHECK_OK(dspy_write_file(path, tree, (size_t)k + n - head));
    dspy_tokenizer *t = NULL;
    CHECK_OK(dspy_tokenizer_load(path, &t));
    CHECK(t && same_tables(g_tok, t));
    dspy_tokenizer_free(t);
    free(tree);
    free(data);

    /* Small documents, each as written (text) and with the declined integer (tree). */
    static const struct {
        const char *vocab, *merges, *want; /* want: a part of the error, or NULL: loads */
    } cases[] = {
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a b\"]", NULL},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[[\"a\", \"b\"]]", NULL},
        {"{\"a\": 0, \"b\": 1, \"a\": 2, \"ab\": 3}", "[\"a b\"]", NULL}, /* a repeated key: its last id */
        {"{\"a\": \"x\"}", "[]", "model.vocab[\"a\"] is not a valid id"},
        {"{\"q\\\"\": 1.5}", "[]", "model.vocab[\"q\"\"] is not a valid id"},
        {"{\"a\": 16777216}", "[]", "model.vocab[\"a\"] is not a valid id"},
        {"[\"a\"]", "[]", "model.vocab is an array; expected an object"},
        {"7", "[]", "model.vocab is an integer"},
        {"{\"a\": 0}", "{}", "model.merges is an object; a BPE"},
        {"{\"a\": 0}", "null", "model.merges is null"},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a b c\"]", "model.merges[0] \"a b c\" is not two tokens"},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a b\", \"ab\"]", "model.merges[1] \"ab\" is not two tokens"},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a b\", 3]", "model.merges[1] is an integer; expected"},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[[\"a\"]]", "model.merges[0] is an array; expected"},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[[\"a\", \"b\", \"c\"]]", "model.merges[0] is an array; expected"},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[[\"a\", 2]]", "model.merges[0] is an array; expected"},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[{\"a\": \"b\"}]", "model.merges[0] is an object; expected"},
        {"{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a \\u4e2d\"]", "model.merges[0]: token \"\xe4\xb8\xad\" is not in model.vocab"},
        {"{\"a\": 0, \"b\": 1}", "[[\"a\", \"b\"]]", "the merge of \"a\" and \"b\" is not in model.vocab"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dspy_tokenizer *both[2] = {NULL, NULL};
        char msg[2][512];
        for (int w = 0; w < 2; w++) {
            /* every byte token is needed: the 256 are added after the case's own entries, at
             * ids from 100 (a case's "a"/"b" keep theirs; the byte "a" then repeats the key) */
            dspy_str j = DSPY_STR_INIT;
            dspy_str_appendf(&j, "{%s\"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"merges\": %s, "
                             "\"vocab\": ", w ? "\"x_declined\": 1000000000000000000, " : "", cases[c].merges);
            const char *v = cases[c].vocab;
            if (v[0] == '{' && strcmp(v, "{}") != 0) {
                dspy_str_appendn(&j, v, strlen(v) - 1);
                for (int b = 0; b < 256; b++) {
                    char u[8];
                    int l = dspy_utf8_encode(dspy_bytelevel_cp[b], u);
                    if (l == 1 && (u[0] == 'a' || u[0] == 'b')) continue;
                    dspy_str_appendf(&j, ", \"%s%.*s\": %d", u[0] == '"' || u[0] == '\\' ? "\\" : "", l, u, 100 + b);
                }
                dspy_str_append(&j, "}");
            } else {
                dspy_str_append(&j, v);
            }
            dspy_str_append(&j, "}}");
            char name[64];
            snprintf(name, sizeof name, "case%zu_%d.json", c, w);
            const char *p = write_tmp(name, dspy_str_cstr(&j));
            dspy_str_free(&j);
            dspy_status st = dspy_tokenizer_load(p, &both[w]);
            snprintf(msg[w], sizeof msg[w], "%s", st == DSPY_OK ? "" : strstr(dspy_errmsg(), ".json: ") ? strstr(dspy_errmsg(), ".json: ") + 7 : dspy_errmsg());
            if (cases[c].want)
                check_report(st == DSPY_ERR_FORMAT && strstr(msg[w], cases[c].want), __FILE__, __LINE__,
                             "case %zu (%s): %s, want \"%s\"", c, w ? "tree" : "text", msg[w], cases[c].want);
            else
                check_report(st == DSPY_OK, __FILE__, __LINE__, "case %zu (%s): %s", c, w ? "tree" : "text", msg[w]);
        }
        CHECK_STR(msg[0], msg[1]);
        CHECK((both[0] != NULL) == (both[1] != NULL));
        if (both[0] && both[1]) CHECK(same_tables(both[0], both[1]));
        if (both[0] && c == 2) { /* the repeated "a": id 2, at the first place */
            CHECK_INT(dspy_tokenizer_token_to_id(both[0], "a"), 2);
            CHECK(dspy_tokenizer_id_to_token(both[0], 0) == NULL);
            int32_t *ids;
            size_t m;
            CHECK_OK(dspy_tokenizer_encode(both[0], "ab", 2, false, true, &ids, &m));
            CHECK(m == 1 && ids[0] == 3);
            free(ids);
        }
        dspy_tokenizer_free(both[0]);
        dspy_tokenizer_free(both[1]);
    }
}

int main(void) {
    if (!test_have_shared(TOK_JSON)) {
        check_skip("../shared/models/llama3-tokenizer is absent");
        return check_summary("test_tokenizer");
    }
    CHECK_OK(dspy_tokenizer_load(test_shared(TOK_JSON), &g_tok));
    if (!g_tok) return check_summary("test_tokenizer");
    load_vectors();
    RUN(test_basics);
    RUN(test_vectors);
    RUN(test_specials);
    RUN(test_offsets);
    RUN(test_decode_lossy_and_stream);
    RUN(test_chat_vectors);
    RUN(test_bad_files);
    RUN(test_nfc);
    RUN(test_small_qwen_style);
    RUN(test_text_and_tree);
    RUN(test_threads);
    RUN(test_cli);
    RUN(test_vectors_pcre2);
    RUN(test_encode_max);
    free_vectors();
    dspy_tokenizer_free(g_tok);
    return check_summary("test_tokenizer");
}
