/* tokenizer_lists.c — a tokenizer.json's model.vocab and model.merges, read from the jansson
 * tree (a file the fast reader declined) or straight from JSON text — the file's, where
 * dspy_json_parse_fast_spans left them out of the tree and checked them, or the text
 * gguf_vocab.c writes from a GGUF's metadata: the same lists, in the same order, with the same
 * messages either way.
 *
 * Why the text: as jansson values, Llama 3's 128 k vocabulary entries and 280 k merges were
 * ~700 k allocations, made and freed by every process that tokenizes (~40 % of a load, more
 * under ASan, where every test process pays it). Read here, the vocabulary is one blob of
 * spellings and two arrays, and a merge is decoded in place.
 */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

const char *dspy_tok_jtype(json_t *j) {
    if (!j) return "missing";
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

const char *dspy_tok_text_type(const char *at, size_t len) {
    if (!at) return "missing";
    dspy_json_cur c;
    dspy_json_cur_init(&c, at, len);
    switch (dspy_json_cur_peek(&c)) {
    case -1: return "missing";
    case '{': return "an object";
    case '[': return "an array";
    case '"': return "a string";
    case 't': case 'f': return "a boolean";
    case 'n': return "null";
    default: {
        int64_t v;
        return dspy_json_cur_int(&c, &v) ? "an integer" : "a number";
    }
    }
}

void dspy_tok_vocab_free(tok_vocab *v) {
    free(v->blob);
    free(v->off);
    free(v->len);
    free(v->id);
    *v = (tok_vocab){0};
}

/* Appends spelling s[0, n) with id to v (arrays growing by doubling; blob offsets kept, as the
 * blob may move). */
static bool vocab_add(tok_vocab *v, size_t *cap, dspy_str *blob, const char *s, size_t n, int32_t id) {
    if (v->n == *cap) {
        const size_t c = *cap ? 2 * *cap : 1024;
        uint32_t *off = realloc(v->off, c * sizeof *off);
        if (off) v->off = off;
        uint32_t *ln = realloc(v->len, c * sizeof *ln);
        if (ln) v->len = ln;
        int32_t *ids = realloc(v->id, c * sizeof *ids);
        if (ids) v->id = ids;
        if (!off || !ln || !ids) return false;
        *cap = c;
    }
    if (blob->len + n + 1 > UINT32_MAX) return false;
    v->off[v->n] = (uint32_t)blob->len;
    v->len[v->n] = (uint32_t)n;
    v->id[v->n++] = id;
    dspy_str_appendn(blob, s, n);
    dspy_str_appendc(blob, '\0');
    return dspy_str_ok(blob);
}

/* A key given twice keeps its first place and takes the later id; the later entry goes. */
static bool vocab_dedup(tok_vocab *v) {
    size_t slots = 2;
    while (slots < 2 * v->n + 2) slots <<= 1;
    int32_t *first = malloc(slots * sizeof *first); /* kept entry's index, -1 empty */
    if (!first) return false;
    memset(first, 0xff, slots * sizeof *first);
    size_t kept = 0;
    for (size_t i = 0; i < v->n; i++) {
        const char *s = v->blob + v->off[i];
        const uint32_t n = v->len[i];
        size_t h = dspy_tok_hash(s, n) & (slots - 1);
        while (first[h] >= 0 && !(v->len[first[h]] == n && memcmp(v->blob + v->off[first[h]], s, n) == 0))
            h = (h + 1) & (slots - 1);
        if (first[h] >= 0) {
            v->id[first[h]] = v->id[i];
            continue;
        }
        first[h] = (int32_t)kept;
        v->off[kept] = v->off[i], v->len[kept] = n, v->id[kept] = v->id[i];
        kept++;
    }
    free(first);
    v->n = kept;
    return true;
}

static bool id_ok(int64_t id) { return id >= 0 && id < (1 << 24); }

/* The text's entries into out (the object at `at` was checked with the rest of the document). */
static dspy_status vocab_from_text(const char *at, size_t len, const char *P, tok_vocab *out, size_t *cap,
                                   dspy_str *blob) {
    dspy_status st = DSPY_OK;
    dspy_json_cur c;
    dspy_json_cur_init(&c, at, len);
    bool ok = dspy_json_cur_enter(&c, '{');
    for (size_t i = 0; ok; i++) {
        const int k = dspy_json_cur_item(&c, i);
        if (k <= 0) {
            ok = k == 0;
            break;
        }
        const char *s;
        size_t n;
        int64_t id;
        if (!dspy_json_cur_key(&c, &s, &n)) {
            ok = false;
            break;
        }
        if (!dspy_json_cur_int(&c, &id) || !id_ok(id)) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: model.vocab[\"%.*s\"] is not a valid id", P, (int)n, s);
            break;
        }
        if (!vocab_add(out, cap, blob, s, n, (int32_t)id)) {
            st = dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
            break;
        }
    }
    dspy_json_cur_free(&c);
    if (st == DSPY_OK && !ok) /* checked when the document was read: a bug if it happens */
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: model.vocab is not a well-formed JSON object", P);
    return st;
}

dspy_status dspy_tok_vocab_read(json_t *tree, const dspy_json_span *text, const char *P, tok_vocab *out) {
    *out = (tok_vocab){0};
    dspy_str blob = DSPY_STR_INIT;
    size_t cap = 0;
    dspy_status st = DSPY_OK;
    if (text->at) {
        st = vocab_from_text(text->at, text->len, P, out, &cap, &blob);
    } else { /* the tree: jansson has kept one entry a key already */
        const char *key;
        json_t *val;
        json_object_foreach(tree, key, val) {
            if (!json_is_integer(val) || !id_ok(json_integer_value(val))) {
                st = dspy_fail(DSPY_ERR_FORMAT, "%s: model.vocab[\"%s\"] is not a valid id", P, key);
                break;
            }
            if (!vocab_add(out, &cap, &blob, key, strlen(key), (int32_t)json_integer_value(val))) {
                st = dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
                break;
            }
        }
    }
    out->blob = dspy_str_take(&blob);
    /* a key given twice: jansson's tree already keeps one entry, the text does not */
    if (st == DSPY_OK && (!out->blob || (text->at && out->n && !vocab_dedup(out))))
        st = dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    if (st != DSPY_OK) dspy_tok_vocab_free(out);
    return st;
}

void dspy_tok_merges_open(tok_merges *m, json_t *tree, const dspy_json_span *text) {
    *m = (tok_merges){.arr = text->at ? NULL : tree};
    if (!text->at) {
        m->n = json_array_size(tree);
        return;
    }
    /* the entries were counted when the text was checked (the merge table is sized before it
     * is filled) */
    m->n = text->items;
    dspy_json_cur_init(&m->cur, text->at, text->len);
    dspy_json_cur_enter(&m->cur, '[');
}

void dspy_tok_merges_close(tok_merges *m) {
    dspy_json_cur_free(&m->cur);
    dspy_str_free(&m->pair);
}

/* "a b": one space, the two spellings either side. */
static bool split_pair(const char *s, size_t n, const char **l, size_t *ll, const char **r, size_t *rl) {
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s))) return false;
    *l = s, *ll = (size_t)(sp - s);
    *r = sp + 1, *rl = n - *ll - 1;
    return true;
}

static int bad_string(size_t i, const char *P, const char *s, size_t n, dspy_status *st) {
    *st = dspy_fail(DSPY_ERR_FORMAT, "%s: model.merges[%zu] \"%.*s\" is not two tokens separated by one space", P, i,
                    (int)n, s);
    return -1;
}

static int bad_type(size_t i, const char *P, const char *type, dspy_status *st) {
    *st = dspy_fail(DSPY_ERR_FORMAT, "%s: model.merges[%zu] is %s; expected \"a b\" or [\"a\", \"b\"]", P, i, type);
    return -1;
}

static int next_from_tree(tok_merges *m, size_t i, const char *P, const char **l, size_t *ll, const char **r,
                          size_t *rl, dspy_status *st) {
    json_t *e = json_array_get(m->arr, i);
    if (json_is_string(e)) {
        const char *s = json_string_value(e);
        const size_t n = json_string_length(e);
        return split_pair(s, n, l, ll, r, rl) ? 1 : bad_string(i, P, s, n, st);
    }
    json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1);
    if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(a) || !json_is_string(b))
        return bad_type(i, P, dspy_tok_jtype(e), st);
    *l = json_string_value(a), *ll = json_string_length(a);
    *r = json_string_value(b), *rl = json_string_length(b);
    return 1;
}

static int next_from_text(tok_merges *m, size_t i, const char *P, const char **l, size_t *ll, const char **r,
                          size_t *rl, dspy_status *st) {
    dspy_json_cur *c = &m->cur;
    const char *s;
    size_t n;
    if (dspy_json_cur_peek(c) == '"') {
        if (!dspy_json_cur_string(c, &s, &n)) return bad_type(i, P, "a malformed string", st);
        return split_pair(s, n, l, ll, r, rl) ? 1 : bad_string(i, P, s, n, st);
    }
    const char *at = c->p;
    /* [a, b]: a is copied out (b may take the cursor's buffer) */
    bool ok = dspy_json_cur_enter(c, '[') && dspy_json_cur_item(c, 0) == 1 && dspy_json_cur_peek(c) == '"' &&
              dspy_json_cur_string(c, &s, &n);
    if (ok) {
        dspy_str_clear(&m->pair);
        dspy_str_appendn(&m->pair, s, n);
        if (!dspy_str_ok(&m->pair)) {
            *st = dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
            return -1;
        }
    }
    ok = ok && dspy_json_cur_item(c, 1) == 1 && dspy_json_cur_peek(c) == '"' && dspy_json_cur_string(c, r, rl) &&
         dspy_json_cur_item(c, 2) == 0;
    if (!ok) return bad_type(i, P, dspy_tok_text_type(at, (size_t)(c->end - at)), st);
    *l = m->pair.ptr ? m->pair.ptr : "", *ll = m->pair.len;
    return 1;
}

int dspy_tok_merges_next(tok_merges *m, const char *P, const char **l, size_t *ll, const char **r, size_t *rl,
                         dspy_status *st) {
    if (m->i >= m->n) return 0;
    const size_t i = m->i++;
    if (m->arr) return next_from_tree(m, i, P, l, ll, r, rl, st);
    if (dspy_json_cur_item(&m->cur, i) != 1) { /* the first pass counted n items: a bug if it happens */
        *st = dspy_fail(DSPY_ERR_FORMAT, "%s: model.merges ended early, at entry %zu", P, i);
        return -1;
    }
    return next_from_text(m, i, P, l, ll, r, rl, st);
}
