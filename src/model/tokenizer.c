/* tokenizer.c — loading a HF tokenizer.json (byte-level BPE), decoding, queries, streaming.
 *
 * Reads the parts of the HF `tokenizers` JSON format that byte-level BPE models use: model
 * (BPE: vocab, merges as "a b" strings or [a, b] pairs, ignore_merges), added_tokens,
 * normalizer (none or NFC), pre_tokenizer (Split with behavior Isolated, ByteLevel, or a
 * Sequence of them), post_processor (TemplateProcessing, ByteLevel, Sequence) and decoder
 * (ByteLevel). Anything else is refused with a message naming the file and the component.
 * Encoding lives in tokenizer_encode.c.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/json_parse.h"
#include "dspy/str.h"
#include "model/gguf_internal.h"
#include "model/tokenizer_internal.h"

/* GPT-2 bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order. */
const uint16_t dspy_bytelevel_cp[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    288, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289,
    290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321,
    322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

/* Inverse map for code points below 324, built on first use of a tokenizer (read-only after). */
static int16_t g_inv[324];
static void inv_init(void) {
    for (int i = 0; i < 324; i++) g_inv[i] = -1;
    for (int b = 0; b < 256; b++) g_inv[dspy_bytelevel_cp[b]] = (int16_t)b;
}

/* Maps a tokenizer.json spelling to raw bytes, appended to `out`. Returns false (appending
 * nothing) if a character is not in the byte-level map. */
static bool spelling_to_bytes(const char *s, size_t n, dspy_str *out) {
    /* each character (one byte or more) becomes one byte: n bytes of room are enough, reserved
     * once (a load converts ~700 k spellings; out of memory shows in dspy_str_ok(out)) */
    if (!dspy_str_reserve(out, n)) return true;
    char *o = out->ptr + out->len;
    size_t i = 0;
    while (i < n) {
        unsigned cp = (unsigned char)s[i];
        int l = 1;
        if (cp >= 0x80 && (l = dspy_utf8_decode(s + i, n - i, &cp)) <= 0) return false;
        if (cp >= 324 || g_inv[cp] < 0) return false;
        *o++ = (char)g_inv[cp];
        i += (size_t)l;
    }
    out->len = (size_t)(o - out->ptr);
    out->ptr[out->len] = '\0';
    return true;
}

uint32_t dspy_tok_hash(const char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xff51afd7ed558ccdULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return (uint32_t)h;
}

int32_t dspy_tok_vocab_find(const dspy_tokenizer *tok, const char *p, size_t n) {
    uint32_t h = dspy_tok_hash(p, n);
    for (uint32_t i = h & tok->vocab_mask;; i = (i + 1) & tok->vocab_mask) {
        int32_t id = tok->vocab_slots[i];
        if (id < 0) return -1;
        if (tok->vocab_hash[i] == h) {
            uint32_t o = tok->bytes_off[id], l = tok->bytes_off[id + 1] - o;
            if (l == n && memcmp(tok->bytes_blob + o, p, n) == 0) return id;
        }
    }
}

static void vocab_insert(dspy_tokenizer *tok, int32_t id) {
    const char *p = tok->bytes_blob + tok->bytes_off[id];
    size_t n = tok->bytes_off[id + 1] - tok->bytes_off[id];
    uint32_t h = dspy_tok_hash(p, n);
    uint32_t i = h & tok->vocab_mask;
    while (tok->vocab_slots[i] >= 0) i = (i + 1) & tok->vocab_mask;
    tok->vocab_slots[i] = id;
    tok->vocab_hash[i] = h;
}

static void merge_insert(dspy_tokenizer *tok, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t k = key;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    uint64_t i = k & tok->merge_mask;
    while (tok->merges[i].key != UINT64_MAX && tok->merges[i].key != key) i = (i + 1) & tok->merge_mask;
    /* A repeated pair keeps the later rank, as HF's HashMap collect does. */
    tok->merges[i] = (merge_slot){key, rank, merged};
}

void dspy_tokenizer_free(dspy_tokenizer *tok) {
    if (!tok) return;
    free(tok->path);
    free(tok->bytes_off);
    free(tok->bytes_blob);
    free(tok->str_off);
    free(tok->str_blob);
    free(tok->flags);
    free(tok->vocab_slots);
    free(tok->vocab_hash);
    free(tok->merges);
    free(tok->added);
    free(tok->added_blob);
    free(tok->trie);
    free(tok->pattern);
    pcre2_code_free(tok->re);
    free(tok->tmpl_prefix);
    free(tok->tmpl_suffix);
    free(tok);
}

/* ---- loading ---------------------------------------------------------------------------- */

#define FAIL(code, ...)                          \
    do {                                         \
        st = dspy_fail(code, __VA_ARGS__);       \
        goto fail;                               \
    } while (0)

static const char *type_of(json_t *obj) {
    json_t *t = json_object_get(obj, "type");
    return json_is_string(t) ? json_string_value(t) : "(no type)";
}

static bool jbool(json_t *obj, const char *key) { return json_is_true(json_object_get(obj, key)); }

/* A JSON file through jansson (tokenizer_config.json: its flags). */
static dspy_status json_load_path(const char *path, size_t flags, json_t **out) {
    *out = NULL;
    json_error_t err;
    char *data;
    size_t n;
    dspy_status st = dspy_read_regular_file(path, (size_t)1 << 30, &data, &n);
    if (st != DSPY_OK) return st;
    json_t *j = json_loadb(data, n, flags, &err);
    free(data);
    if (!j)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: line %d column %d: invalid JSON: %s (is the file truncated?)",
                         path, err.line, err.column, err.text);
    *out = j;
    return DSPY_OK;
}

/* tokenizer.json as read: its tree and, where the fast reader left them out of it, the text of
 * model.vocab and model.merges (into `text`, the file, kept until they are read). */
typedef struct {
    json_t *root;
    char *text;
    dspy_json_span spans[2]; /* model.vocab, model.merges */
} tok_doc;

static void doc_free(tok_doc *d) {
    json_decref(d->root);
    free(d->text);
    *d = (tok_doc){0};
}

/* Through the fast reader, with the two big members left as text (tokenizer_lists.c says why);
 * a top level that is not an object or array, or anything it declines, goes to jansson, which
 * builds them too or says why not. */
static dspy_status read_document(const char *path, tok_doc *d) {
    size_t n;
    dspy_status st = dspy_read_regular_file(path, (size_t)1 << 30, &d->text, &n);
    if (st != DSPY_OK) return st;
    d->root = dspy_json_parse_fast_spans(d->text, n, d->spans, 2);
    if (d->root && (json_is_object(d->root) || json_is_array(d->root))) return DSPY_OK;
    json_decref(d->root);
    json_error_t err;
    d->root = json_loadb(d->text, n, 0, &err);
    free(d->text);
    d->text = NULL;
    d->spans[0].at = d->spans[1].at = NULL;
    if (!d->root)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: line %d column %d: invalid JSON: %s (is the file truncated?)", path,
                         err.line, err.column, err.text);
    return DSPY_OK;
}

/* Llama 3's Split pattern, and Qwen2's (single-digit numbers). */
static const char k_llama3_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* GPT-2's, which ByteLevel(use_regex=true) applies. */
static const char k_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static dspy_status set_pattern(dspy_tokenizer *tok, const char *pattern, const char *where) {
    if (tok->pattern)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: pre_tokenizer has more than one regex split; dspy.c supports one", where);
    tok->pattern = strdup(pattern);
    if (!tok->pattern) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", where);
    if (strcmp(pattern, k_llama3_pattern) == 0) tok->pretok = PRETOK_LLAMA3;
    else if (strcmp(pattern, k_qwen2_pattern) == 0) tok->pretok = PRETOK_QWEN2;
    else return dspy_tok_compile_pcre2(tok, pattern, where);
    return DSPY_OK;
}

/* One pre-tokenizer (not a Sequence). */
static dspy_status parse_pretok_one(dspy_tokenizer *tok, json_t *pt, const char *path) {
    const char *type = type_of(pt);
    if (strcmp(type, "ByteLevel") == 0) {
        if (jbool(pt, "add_prefix_space"))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: pre_tokenizer ByteLevel with add_prefix_space=true is not supported", path);
        if (json_object_get(pt, "use_regex") == NULL || jbool(pt, "use_regex")) return set_pattern(tok, k_gpt2_pattern, path);
        return DSPY_OK;
    }
    if (strcmp(type, "Split") == 0) {
        json_t *pat = json_object_get(pt, "pattern");
        json_t *re = json_object_get(pat, "Regex");
        json_t *lit = json_object_get(pat, "String");
        const char *beh = json_string_value(json_object_get(pt, "behavior"));
        if (!beh || strcmp(beh, "Isolated") != 0 || jbool(pt, "invert"))
            return dspy_fail(DSPY_ERR_FORMAT,
                             "%s: pre_tokenizer Split with behavior '%s'%s is not supported (only Isolated, invert=false)",
                             path, beh ? beh : "(none)", jbool(pt, "invert") ? " and invert=true" : "");
        if (json_is_string(re)) return set_pattern(tok, json_string_value(re), path);
        if (json_is_string(lit)) {
            dspy_str q = DSPY_STR_INIT;
            dspy_str_append(&q, "\\Q");
            dspy_str_append(&q, json_string_value(lit));
            dspy_str_append(&q, "\\E");
            dspy_status st = dspy_str_ok(&q) ? set_pattern(tok, q.ptr, path) : DSPY_ERR_NOMEM;
            dspy_str_free(&q);
            return st;
        }
        return dspy_fail(DSPY_ERR_FORMAT, "%s: pre_tokenizer Split has no pattern.Regex or pattern.String", path);
    }
    return dspy_fail(DSPY_ERR_FORMAT, "%s: pre_tokenizer type '%s' is not supported (dspy.c handles byte-level BPE: Split + ByteLevel)",
                     path, type);
}

static dspy_status parse_pretok(dspy_tokenizer *tok, json_t *pt, const char *path) {
    tok->pretok = PRETOK_NONE;
    if (!pt || json_is_null(pt)) return DSPY_OK;
    if (strcmp(type_of(pt), "Sequence") == 0) {
        json_t *arr = json_object_get(pt, "pretokenizers");
        if (!json_is_array(arr))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: pre_tokenizer Sequence has no \"pretokenizers\" array", path);
        size_t i;
        json_t *p;
        json_array_foreach(arr, i, p) {
            dspy_status st = parse_pretok_one(tok, p, path);
            if (st != DSPY_OK) return st;
        }
        return DSPY_OK;
    }
    return parse_pretok_one(tok, pt, path);
}

static dspy_status parse_normalizer(dspy_tokenizer *tok, json_t *nm, const char *path) {
    if (!nm || json_is_null(nm)) return DSPY_OK;
    const char *type = type_of(nm);
    if (strcmp(type, "NFC") == 0) {
        tok->nfc = true;
        return DSPY_OK;
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(nm, "normalizers");
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            dspy_status st = parse_normalizer(tok, x, path);
            if (st != DSPY_OK) return st;
        }
        return DSPY_OK;
    }
    return dspy_fail(DSPY_ERR_FORMAT, "%s: normalizer type '%s' is not supported (only none or NFC)", path, type);
}

static dspy_status append_ids(int32_t **arr, int32_t *n, int32_t id) {
    int32_t *na = realloc(*arr, (size_t)(*n + 1) * sizeof *na);
    if (!na) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    na[(*n)++] = id;
    *arr = na;
    return DSPY_OK;
}

static dspy_status parse_postproc(dspy_tokenizer *tok, json_t *pp, const char *path) {
    if (!pp || json_is_null(pp)) return DSPY_OK;
    const char *type = type_of(pp);
    if (strcmp(type, "ByteLevel") == 0) return DSPY_OK; /* offsets only */
    if (strcmp(type, "Sequence") == 0) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(pp, "processors"), i, x) {
            dspy_status st = parse_postproc(tok, x, path);
            if (st != DSPY_OK) return st;
        }
        return DSPY_OK;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: post_processor type '%s' is not supported (only TemplateProcessing, ByteLevel)",
                         path, type);
    json_t *single = json_object_get(pp, "single"), *specials = json_object_get(pp, "special_tokens");
    if (!json_is_array(single))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: post_processor TemplateProcessing has no \"single\" array", path);
    bool after_seq = false;
    size_t i;
    json_t *item;
    json_array_foreach(single, i, item) {
        if (json_object_get(item, "Sequence")) {
            after_seq = true;
            continue;
        }
        json_t *sp = json_object_get(item, "SpecialToken");
        const char *name = json_string_value(json_object_get(sp, "id"));
        json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
        if (!name || !json_is_array(ids))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: post_processor.single[%zu]: special token '%s' is not in special_tokens",
                             path, i, name ? name : "(none)");
        size_t k;
        json_t *idj;
        json_array_foreach(ids, k, idj) {
            dspy_status st = after_seq ? append_ids(&tok->tmpl_suffix, &tok->n_suffix, (int32_t)json_integer_value(idj))
                                       : append_ids(&tok->tmpl_prefix, &tok->n_prefix, (int32_t)json_integer_value(idj));
            if (st != DSPY_OK) return st;
        }
    }
    return DSPY_OK;
}

static dspy_status build_trie(dspy_tokenizer *tok) {
    size_t cap = 1;
    for (int32_t t = 0; t < tok->n_added; t++) cap += tok->added[t].len;
    tok->trie = malloc(cap * sizeof *tok->trie);
    if (!tok->trie) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    tok->trie[0] = (trie_node){-1, -1, -1, 0};
    tok->n_trie = 1;
    for (int32_t t = 0; t < tok->n_added; t++) {
        const unsigned char *s = (const unsigned char *)tok->added_blob + tok->added[t].off;
        int32_t node = 0;
        for (uint32_t j = 0; j < tok->added[t].len; j++) {
            int32_t c = tok->trie[node].first_child;
            while (c >= 0 && tok->trie[c].byte != s[j]) c = tok->trie[c].next_sibling;
            if (c < 0) {
                c = tok->n_trie++;
                tok->trie[c] = (trie_node){-1, tok->trie[node].first_child, -1, s[j]};
                tok->trie[node].first_child = c;
            }
            node = c;
        }
        tok->trie[node].token = t; /* a repeated content keeps the later entry */
        tok->trie_first[s[0]] = 1;
    }
    return DSPY_OK;
}

/* bos/eos from tokenizer_config.json beside the tokenizer.json (absent file: keep defaults). */
static dspy_status read_config(dspy_tokenizer *tok, const char *cfg_path) {
    struct stat sb;
    if (stat(cfg_path, &sb) != 0) return DSPY_OK;
    json_t *cfg;
    /* Integers as reals: configs hold model_max_length = 1e30, beyond jansson's integers. */
    dspy_status st = json_load_path(cfg_path, JSON_DECODE_INT_AS_REAL, &cfg);
    if (st != DSPY_OK) return st;
    const char *keys[2] = {"bos_token", "eos_token"};
    int32_t *dst[2] = {&tok->bos_id, &tok->eos_id};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(cfg, keys[k]);
        if (json_is_object(v)) v = json_object_get(v, "content");
        if (json_is_string(v)) *dst[k] = dspy_tokenizer_token_to_id(tok, json_string_value(v));
        else if (json_is_null(v)) *dst[k] = -1;
    }
    json_decref(cfg);
    return DSPY_OK;
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

/* The parts of tokenizer.json a byte-level BPE needs, each checked for its type and for the
 * options this tokenizer does not implement (refused rather than tokenizing differently).
 * model.vocab and model.merges are d's spans where it has them, else members of the tree. */
static dspy_status check_document(dspy_tokenizer *tok, const char *P, tok_doc *d, json_t **vocab_out,
                                  json_t **merges_out, json_t **added_out) {
    json_t *root = d->root;
    if (!json_is_object(root)) return dspy_fail(DSPY_ERR_FORMAT, "%s: top level is %s, not an object", P, dspy_tok_jtype(root));
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return dspy_fail(DSPY_ERR_FORMAT, "%s: \"model\" is %s; expected the BPE model object", P, dspy_tok_jtype(model));
    json_t *mtype = json_object_get(model, "type");
    if (mtype && (!json_is_string(mtype) || strcmp(json_string_value(mtype), "BPE") != 0))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: model.type is '%s'; dspy.c supports only byte-level BPE", P,
             json_is_string(mtype) ? json_string_value(mtype) : dspy_tok_jtype(mtype));
    if (jbool(model, "byte_fallback"))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: model.byte_fallback=true (SentencePiece-style BPE) is not supported", P);
    json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: model.dropout=%g is not supported (inference needs deterministic BPE)", P,
             json_number_value(dropout));
    const char *cont = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    const char *eow = json_string_value(json_object_get(model, "end_of_word_suffix"));
    if ((cont && *cont) || (eow && *eow))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: model.continuing_subword_prefix/end_of_word_suffix are not supported", P);
    tok->ignore_merges = jbool(model, "ignore_merges");
    const dspy_json_span *vs = &d->spans[0], *ms = &d->spans[1];
    json_t *vocab = json_object_get(model, "vocab");
    const char *vtype = vs->at ? dspy_tok_text_type(vs->at, vs->len) : dspy_tok_jtype(vocab);
    if (strcmp(vtype, "an object") != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: model.vocab is %s; expected an object of token -> id", P, vtype);
    json_t *merges = json_object_get(model, "merges");
    const char *mtype_s = ms->at ? dspy_tok_text_type(ms->at, ms->len) : dspy_tok_jtype(merges);
    if (strcmp(mtype_s, "an array") != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: model.merges is %s; a BPE tokenizer.json needs the list of merges", P, mtype_s);
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added) && !json_is_null(added))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: added_tokens is %s; expected an array", P, dspy_tok_jtype(added));
    *vocab_out = vocab;
    *merges_out = merges;
    *added_out = added;
    return DSPY_OK;
}

/* Ids: the model vocabulary plus the added tokens, with each id's spelling (pointers into the
 * vocabulary list and the document) in *spell_out (malloc'd, n_ids entries; NULL where an id is
 * unused). */
static dspy_status load_ids(dspy_tokenizer *tok, const char *P, const tok_vocab *v, json_t *added, const char ***spell_out) {
    int64_t max_id = -1;
    for (size_t i = 0; i < v->n; i++)
        if (v->id[i] > max_id) max_id = v->id[i];
    size_t ai;
    json_t *at;
    json_array_foreach(added, ai, at) {
        json_t *idj = json_object_get(at, "id");
        json_t *content = json_object_get(at, "content");
        if (!json_is_integer(idj) || json_integer_value(idj) < 0 || json_integer_value(idj) >= (1 << 24) ||
            !json_is_string(content) || json_string_length(content) == 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: added_tokens[%zu] needs an integer \"id\" and a non-empty \"content\"", P, ai);
        if (json_integer_value(idj) > max_id) max_id = json_integer_value(idj);
    }
    if (max_id < 0) return dspy_fail(DSPY_ERR_FORMAT, "%s: model.vocab is empty", P);
    tok->n_ids = (int32_t)(max_id + 1);
    size_t nid = (size_t)tok->n_ids;
    const char **spell = *spell_out = calloc(nid, sizeof *spell);
    tok->flags = calloc(nid, 1);
    tok->bytes_off = calloc(nid + 1, sizeof *tok->bytes_off);
    tok->str_off = calloc(nid + 1, sizeof *tok->str_off);
    if (!spell || !tok->flags || !tok->bytes_off || !tok->str_off) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < v->n; i++) {
        const int32_t id = v->id[i];
        const char *key = v->blob + v->off[i];
        if (spell[id]) return dspy_fail(DSPY_ERR_FORMAT, "%s: model.vocab: id %d is given to both \"%s\" and \"%s\"", P, id, spell[id], key);
        spell[id] = key;
        tok->flags[id] = TOK_PRESENT;
    }

    /* Added tokens. */
    tok->n_added = (int32_t)json_array_size(added);
    dspy_str ablob = DSPY_STR_INIT;
    tok->added = calloc((size_t)tok->n_added + 1, sizeof *tok->added);
    if (!tok->added) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    json_array_foreach(added, ai, at) {
        added_token *a = &tok->added[ai];
        json_t *content = json_object_get(at, "content");
        a->id = (int32_t)json_integer_value(json_object_get(at, "id"));
        a->off = (uint32_t)ablob.len;
        a->len = (uint32_t)json_string_length(content);
        a->special = jbool(at, "special");
        a->lstrip = jbool(at, "lstrip");
        a->rstrip = jbool(at, "rstrip");
        a->single_word = jbool(at, "single_word");
        dspy_str_appendn(&ablob, json_string_value(content), a->len);
        spell[a->id] = json_string_value(content);
        tok->flags[a->id] |= TOK_PRESENT | TOK_ADDED | (a->special ? TOK_SPECIAL : 0);
    }
    if (!dspy_str_ok(&ablob)) {
        dspy_str_free(&ablob);
        return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    }
    tok->added_blob = ablob.ptr ? ablob.ptr : calloc(1, 1);
    return build_trie(tok);
}

/* Spellings (NUL-separated) and raw bytes per id, each in one blob with offsets. */
static dspy_status load_spellings(dspy_tokenizer *tok, const char *P, const char **spell) {
    size_t nid = (size_t)tok->n_ids;
    dspy_str buf = DSPY_STR_INIT;
    /* Added tokens decode as HF's ByteLevel decoder does: through
     * the byte map when every character is in it, else as their UTF-8. */
    dspy_str sblob = DSPY_STR_INIT;
    for (size_t id = 0; id < nid; id++) {
        tok->bytes_off[id] = (uint32_t)buf.len;
        tok->str_off[id] = (uint32_t)sblob.len;
        if (!spell[id]) continue;
        size_t sl = strlen(spell[id]);
        dspy_str_appendn(&sblob, spell[id], sl);
        dspy_str_appendc(&sblob, '\0');
        size_t before = buf.len;
        if (!spelling_to_bytes(spell[id], sl, &buf)) {
            if (!(tok->flags[id] & TOK_ADDED)) {
                dspy_str_free(&sblob);
                dspy_str_free(&buf);
                return dspy_fail(DSPY_ERR_FORMAT, "%s: model.vocab token \"%s\" (id %zu) is not in the byte-level alphabet; "
                     "only byte-level BPE (GPT-2 byte map) is supported", P, spell[id], id);
            }
            buf.len = before;
            dspy_str_appendn(&buf, spell[id], sl);
        }
    }
    tok->bytes_off[nid] = (uint32_t)buf.len;
    tok->str_off[nid] = (uint32_t)sblob.len;
    if (!dspy_str_ok(&buf) || !dspy_str_ok(&sblob)) {
        dspy_str_free(&sblob);
        dspy_str_free(&buf);
        return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    }
    tok->bytes_blob = buf.ptr ? buf.ptr : calloc(1, 1);
    tok->str_blob = sblob.ptr ? sblob.ptr : calloc(1, 1);
    return DSPY_OK;
}

/* The hash from model-vocabulary bytes to ids, and the id of each single byte (byte-level BPE
 * starts every word from these). */
static dspy_status build_vocab_hash(dspy_tokenizer *tok, const char *P, const tok_vocab *v) {
    uint32_t vslots = pow2_at_least((uint64_t)v->n * 2 + 2);
    tok->vocab_mask = vslots - 1;
    tok->vocab_slots = malloc(vslots * sizeof *tok->vocab_slots);
    tok->vocab_hash = malloc(vslots * sizeof *tok->vocab_hash);
    if (!tok->vocab_slots || !tok->vocab_hash) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    memset(tok->vocab_slots, 0xff, vslots * sizeof *tok->vocab_slots);
    for (size_t i = 0; i < v->n; i++) vocab_insert(tok, v->id[i]);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        tok->byte_id[b] = dspy_tok_vocab_find(tok, &c, 1);
        if (tok->byte_id[b] < 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: model.vocab has no token for byte 0x%02x; byte-level BPE needs all 256", P, b);
    }
    return DSPY_OK;
}

/* The merges ("a b" or ["a", "b"]) as rank-ordered pairs of ids, each checked against the
 * vocabulary (the pair and its merge must both be tokens). */
static dspy_status load_merges(dspy_tokenizer *tok, const char *P, tok_merges *m) {
    dspy_str buf = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    size_t nm = m->n;
    if (nm > INT32_MAX / 4) FAIL(DSPY_ERR_FORMAT, "%s: model.merges has too many entries (%zu)", P, nm);
    tok->n_merges = (int32_t)nm;
    uint32_t mslots = pow2_at_least((uint64_t)nm * 2 + 2);
    tok->merge_mask = mslots - 1;
    tok->merges = malloc(mslots * sizeof *tok->merges);
    if (!tok->merges) FAIL(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    memset(tok->merges, 0xff, mslots * sizeof *tok->merges);
    const char *l, *r;
    size_t ll, rl;
    for (size_t mi = 0;; mi++) {
        const int k = dspy_tok_merges_next(m, P, &l, &ll, &r, &rl, &st);
        if (k < 0) goto fail;
        if (k == 0) break;
        dspy_str_clear(&buf);
        const bool okl = spelling_to_bytes(l, ll, &buf);
        size_t lb = buf.len;
        const bool okr = okl && spelling_to_bytes(r, rl, &buf);
        if (!dspy_str_ok(&buf)) FAIL(DSPY_ERR_NOMEM, "tokenizer: out of memory");
        /* a spelling outside the byte-level alphabet is not in the vocabulary either */
        int32_t a = okl ? dspy_tok_vocab_find(tok, buf.ptr, lb) : -1;
        int32_t b = okr ? dspy_tok_vocab_find(tok, buf.ptr + lb, buf.len - lb) : -1;
        if (a < 0 || b < 0)
            FAIL(DSPY_ERR_FORMAT, "%s: model.merges[%zu]: token \"%.*s\" is not in model.vocab", P, mi,
                 a < 0 ? (int)ll : (int)rl, a < 0 ? l : r);
        int32_t ab = dspy_tok_vocab_find(tok, buf.ptr, buf.len);
        if (ab < 0)
            FAIL(DSPY_ERR_FORMAT, "%s: model.merges[%zu]: the merge of \"%.*s\" and \"%.*s\" is not in model.vocab", P,
                 mi, (int)ll, l, (int)rl, r);
        merge_insert(tok, a, b, (int32_t)mi, ab);
    }
fail: /* also the way out on success (st DSPY_OK) */
    dspy_str_free(&buf);
    return st;
}

/* The pipeline around BPE (normalizer, pre-tokenizer, post-processor, decoder) and the bos/eos
 * ids: from the GGUF metadata, else the post-processor's first prefix token and
 * tokenizer_config.json beside the file. */
static dspy_status load_pipeline(dspy_tokenizer *tok, const char *P, json_t *root, bool gguf, int32_t gguf_bos,
                                 int32_t gguf_eos) {
    dspy_status st;
    if ((st = parse_normalizer(tok, json_object_get(root, "normalizer"), P)) != DSPY_OK) return st;
    if ((st = parse_pretok(tok, json_object_get(root, "pre_tokenizer"), P)) != DSPY_OK) return st;
    if ((st = parse_postproc(tok, json_object_get(root, "post_processor"), P)) != DSPY_OK) return st;
    for (int32_t k = 0; k < tok->n_prefix + tok->n_suffix; k++) {
        int32_t id = k < tok->n_prefix ? tok->tmpl_prefix[k] : tok->tmpl_suffix[k - tok->n_prefix];
        if (id < 0 || id >= tok->n_ids || !tok->flags[id])
            return dspy_fail(DSPY_ERR_FORMAT, "%s: post_processor uses id %d, which is not in the vocabulary", P, id);
    }
    json_t *dec = json_object_get(root, "decoder");
    if (!json_is_object(dec) || strcmp(type_of(dec), "ByteLevel") != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: decoder is '%s'; dspy.c supports the ByteLevel decoder only", P,
             json_is_object(dec) ? type_of(dec) : dspy_tok_jtype(dec));

    if (tok->n_prefix > 0) tok->bos_id = tok->tmpl_prefix[0];
    if (gguf) { /* bos/eos come from the GGUF metadata, not a tokenizer_config.json */
        tok->bos_id = gguf_bos;
        tok->eos_id = gguf_eos;
    } else {
        dspy_str cfg_path = DSPY_STR_INIT;
        dspy_str_append(&cfg_path, P);
        char *slash = strrchr(cfg_path.ptr, '/');
        if (slash) cfg_path.len = (size_t)(slash + 1 - cfg_path.ptr);
        else cfg_path.len = 0;
        dspy_str_append(&cfg_path, "tokenizer_config.json");
        st = dspy_str_ok(&cfg_path) ? read_config(tok, cfg_path.ptr) : dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
        dspy_str_free(&cfg_path);
        if (st) return st;
    }
    return DSPY_OK;
}

dspy_status dspy_tokenizer_load(const char *path, dspy_tokenizer **out) {
    *out = NULL;
    dspy_status st = DSPY_OK;
    tok_doc doc = {.spans = {{.outer = "model", .inner = "vocab"}, {.outer = "model", .inner = "merges"}}};
    tok_vocab vocab_list = {0};
    tok_merges merge_list = {0};
    const char **spell = NULL; /* per id: spelling (into vocab_list or doc.root) */
    dspy_str buf = DSPY_STR_INIT;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, inv_init);

    if (!path || !*path) return dspy_fail(DSPY_ERR_ARG, "tokenizer: no path given");
    dspy_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    tok->bos_id = tok->eos_id = -1;
    tok->bpe_small_limit = 64;

    /* A GGUF file carries its vocabulary: gguf_vocab.c rebuilds the tokenizer.json document. */
    bool gguf = dspy_gguf_is_path(path);
    int32_t gguf_bos = -1, gguf_eos = -1;
    struct stat sb;
    if (!gguf && stat(path, &sb) != 0)
        FAIL(DSPY_ERR_NOTFOUND, "%s: no such file or directory (give a tokenizer.json or the model directory holding it)", path);
    dspy_str_append(&buf, path);
    if (!gguf && S_ISDIR(sb.st_mode)) {
        dspy_str_append(&buf, "/tokenizer.json");
        if (stat(buf.ptr, &sb) != 0) FAIL(DSPY_ERR_NOTFOUND, "%s: directory has no tokenizer.json", path);
    }
    if (!dspy_str_ok(&buf)) FAIL(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    tok->path = dspy_str_take(&buf);
    const char *P = tok->path;
    st = gguf ? dspy_gguf_tokenizer_json(P, &doc.root, &doc.text, doc.spans, &gguf_bos, &gguf_eos) : read_document(P, &doc);
    if (st != DSPY_OK) goto fail;
    json_t *vocab = NULL, *merges = NULL, *added = NULL;
    const dspy_json_span *vs = &doc.spans[0], *ms = &doc.spans[1];
    if ((st = check_document(tok, P, &doc, &vocab, &merges, &added)) != DSPY_OK) goto fail;
    if ((st = dspy_tok_vocab_read(vocab, vs, P, &vocab_list)) != DSPY_OK) goto fail;
    if ((st = load_ids(tok, P, &vocab_list, added, &spell)) != DSPY_OK) goto fail;
    if ((st = load_spellings(tok, P, spell)) != DSPY_OK) goto fail;
    if ((st = build_vocab_hash(tok, P, &vocab_list)) != DSPY_OK) goto fail;
    dspy_tok_merges_open(&merge_list, merges, ms);
    if ((st = load_merges(tok, P, &merge_list)) != DSPY_OK) goto fail;
    if ((st = load_pipeline(tok, P, doc.root, gguf, gguf_bos, gguf_eos)) != DSPY_OK) goto fail;
    dspy_tok_merges_close(&merge_list);
    dspy_tok_vocab_free(&vocab_list);
    doc_free(&doc);
    free(spell);
    *out = tok;
    return DSPY_OK;
fail:
    dspy_tok_merges_close(&merge_list);
    dspy_tok_vocab_free(&vocab_list);
    doc_free(&doc);
    free(spell);
    dspy_str_free(&buf);
    dspy_tokenizer_free(tok);
    return st;
}

/* ---- queries ---------------------------------------------------------------------------- */

int32_t dspy_tokenizer_vocab_size(const dspy_tokenizer *tok) { return tok ? tok->n_ids : 0; }
int32_t dspy_tokenizer_bos_id(const dspy_tokenizer *tok) { return tok ? tok->bos_id : -1; }
int32_t dspy_tokenizer_eos_id(const dspy_tokenizer *tok) { return tok ? tok->eos_id : -1; }

bool dspy_tokenizer_is_special(const dspy_tokenizer *tok, int32_t id) {
    return tok && id >= 0 && id < tok->n_ids && (tok->flags[id] & TOK_SPECIAL);
}

const char *dspy_tokenizer_pretokenizer(const dspy_tokenizer *tok) {
    switch (tok ? tok->pretok : PRETOK_NONE) {
    case PRETOK_LLAMA3: return "llama3";
    case PRETOK_QWEN2: return "qwen2";
    case PRETOK_PCRE2: return "pcre2";
    default: return "none";
    }
}

int32_t dspy_tokenizer_token_to_id(const dspy_tokenizer *tok, const char *token) {
    if (!tok || !token) return -1;
    const unsigned char *s = (const unsigned char *)token;
    int32_t node = 0;
    for (; *s && node >= 0; s++) {
        int32_t c = tok->trie[node].first_child;
        while (c >= 0 && tok->trie[c].byte != *s) c = tok->trie[c].next_sibling;
        node = c;
    }
    if (node > 0 && tok->trie[node].token >= 0) return tok->added[tok->trie[node].token].id;
    dspy_str b = DSPY_STR_INIT;
    int32_t id = -1;
    if (spelling_to_bytes(token, strlen(token), &b) && dspy_str_ok(&b)) id = dspy_tok_vocab_find(tok, dspy_str_cstr(&b), b.len);
    dspy_str_free(&b);
    return id;
}

const char *dspy_tokenizer_id_to_token(const dspy_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->n_ids || !tok->flags[id]) return NULL;
    return tok->str_blob + tok->str_off[id];
}

const char *dspy_tokenizer_token_bytes(const dspy_tokenizer *tok, int32_t id, size_t *len) {
    *len = 0;
    if (!tok || id < 0 || id >= tok->n_ids || !tok->flags[id]) return NULL;
    *len = tok->bytes_off[id + 1] - tok->bytes_off[id];
    return tok->bytes_blob + tok->bytes_off[id];
}

/* ---- decoding --------------------------------------------------------------------------- */

/* Appends p[0, n) to out as UTF-8, one U+FFFD per maximal invalid subpart (Unicode §3.9,
 * as Rust's from_utf8_lossy). When !final, an unfinished but so-far valid sequence at the end is
 * left unconsumed: returns where it starts; otherwise returns n. */
static size_t utf8_lossy(dspy_str *out, const unsigned char *p, size_t n, bool final) {
    static const char fffd[] = "\xEF\xBF\xBD";
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            dspy_str_appendn(out, (const char *)p + run, i - run);
            dspy_str_appendn(out, fffd, 3);
            run = ++i;
            continue;
        }
        int k = 1;
        for (; k <= need; k++) {
            if (i + (size_t)k >= n) {
                dspy_str_appendn(out, (const char *)p + run, i - run);
                if (!final) return i;
                dspy_str_appendn(out, fffd, 3);
                return n;
            }
            unsigned b = p[i + (size_t)k];
            if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) break;
        }
        if (k <= need) {
            dspy_str_appendn(out, (const char *)p + run, i - run);
            dspy_str_appendn(out, fffd, 3);
            i += (size_t)k;
            run = i;
            continue;
        }
        i += (size_t)need + 1;
    }
    dspy_str_appendn(out, (const char *)p + run, n - run);
    return n;
}

dspy_status dspy_tokenizer_decode(const dspy_tokenizer *tok, const int32_t *ids, size_t n,
                                  bool skip_special, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    if (!tok) return dspy_fail(DSPY_ERR_ARG, "tokenizer: decode needs a tokenizer");
    dspy_str raw = DSPY_STR_INIT, text = DSPY_STR_INIT;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids || !tok->flags[id]) {
            dspy_str_free(&raw);
            return dspy_fail(DSPY_ERR_ARG, "tokenizer: id %d at position %zu is not in the vocabulary (size %d)", id, i,
                             tok->n_ids);
        }
        if (skip_special && (tok->flags[id] & TOK_SPECIAL)) continue;
        dspy_str_appendn(&raw, tok->bytes_blob + tok->bytes_off[id], tok->bytes_off[id + 1] - tok->bytes_off[id]);
    }
    dspy_str_reserve(&text, raw.len + 1);
    utf8_lossy(&text, (const unsigned char *)dspy_str_cstr(&raw), raw.len, true);
    bool ok = dspy_str_ok(&raw) && dspy_str_ok(&text);
    dspy_str_free(&raw);
    if (!ok) {
        dspy_str_free(&text);
        return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory decoding %zu ids", n);
    }
    size_t tl = text.len;
    *out = dspy_str_take(&text);
    if (!*out) return DSPY_ERR_NOMEM;
    if (len) *len = tl;
    return DSPY_OK;
}

struct dspy_tokenizer_stream {
    const dspy_tokenizer *tok;
    bool skip_special;
    dspy_str pending; /* held bytes (an unfinished character) followed by the new token */
};

dspy_status dspy_tokenizer_stream_new(const dspy_tokenizer *tok, bool skip_special, dspy_tokenizer_stream **out) {
    *out = NULL;
    if (!tok) return dspy_fail(DSPY_ERR_ARG, "tokenizer: stream needs a tokenizer");
    dspy_tokenizer_stream *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    s->tok = tok;
    s->skip_special = skip_special;
    *out = s;
    return DSPY_OK;
}

dspy_status dspy_tokenizer_stream_push(dspy_tokenizer_stream *s, int32_t id, dspy_str *out) {
    const dspy_tokenizer *tok = s->tok;
    if (id < 0 || id >= tok->n_ids || !tok->flags[id])
        return dspy_fail(DSPY_ERR_ARG, "tokenizer: id %d is not in the vocabulary (size %d)", id, tok->n_ids);
    if (s->skip_special && (tok->flags[id] & TOK_SPECIAL)) return DSPY_OK;
    dspy_str_appendn(&s->pending, tok->bytes_blob + tok->bytes_off[id], tok->bytes_off[id + 1] - tok->bytes_off[id]);
    if (!dspy_str_ok(&s->pending)) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    if (s->pending.len == 0) return DSPY_OK;
    const unsigned char *p = (const unsigned char *)s->pending.ptr;
    size_t used = utf8_lossy(out, p, s->pending.len, false);
    size_t rest = s->pending.len - used;
    memmove(s->pending.ptr, s->pending.ptr + used, rest);
    s->pending.len = rest;
    s->pending.ptr[rest] = '\0';
    return dspy_str_ok(out) ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
}

dspy_status dspy_tokenizer_stream_flush(dspy_tokenizer_stream *s, dspy_str *out) {
    utf8_lossy(out, (const unsigned char *)dspy_str_cstr(&s->pending), s->pending.len, true);
    dspy_str_clear(&s->pending);
    return dspy_str_ok(out) ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
}

void dspy_tokenizer_stream_free(dspy_tokenizer_stream *s) {
    if (!s) return;
    dspy_str_free(&s->pending);
    free(s);
}
