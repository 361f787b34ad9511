/* tokenizer_internal.h — the tokenizer's data layout, shared by tokenizer.c (loading, decoding,
 * queries) and tokenizer_encode.c (added-token split, pre-tokenizer, BPE). Private to
 * src/model; tests may include it for the debug hooks at the bottom.
 */
#ifndef DSPY_MODEL_TOKENIZER_INTERNAL_H
#define DSPY_MODEL_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/json_parse.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

enum { TOK_PRESENT = 1, TOK_ADDED = 2, TOK_SPECIAL = 4 };

typedef enum {
    PRETOK_NONE = 0,   /* no split: the whole text is one pre-token */
    PRETOK_LLAMA3,     /* the Llama 3 pattern, hand-written matcher (max_digits 3) */
    PRETOK_QWEN2,      /* the Qwen2 pattern: as Llama 3 with \p{N} single digits */
    PRETOK_PCRE2       /* any other Split pattern (or GPT-2's ByteLevel regex) through PCRE2 */
} pretok_kind;

/* An added token (tokenizer.json "added_tokens"). */
typedef struct {
    int32_t id;
    uint32_t off, len; /* content in tok->added_blob */
    bool special, lstrip, rstrip, single_word;
} added_token;

/* Byte trie over added-token contents: node 0 is the root; children as sibling lists. */
typedef struct {
    int32_t first_child, next_sibling;
    int32_t token;     /* index into tok->added, or -1 */
    unsigned char byte;
} trie_node;

/* Open-addressing slot of the merge table: key = (left id << 32) | right id. */
typedef struct {
    uint64_t key;      /* UINT64_MAX = empty */
    int32_t rank, merged;
} merge_slot;

struct dspy_tokenizer {
    char *path;

    /* Per id: raw bytes and tokenizer.json spelling, as offsets into two blobs. */
    int32_t n_ids;
    uint32_t *bytes_off; /* n_ids + 1 entries */
    char *bytes_blob;
    uint32_t *str_off;   /* n_ids + 1 entries */
    char *str_blob;      /* NUL after each spelling */
    uint8_t *flags;      /* TOK_* per id */

    /* Model vocabulary: raw bytes -> id (open addressing; slot = id or -1; hash cached). */
    int32_t *vocab_slots;
    uint32_t *vocab_hash;
    uint32_t vocab_mask;
    int32_t byte_id[256];  /* id of each single-byte token */

    merge_slot *merges;
    uint64_t merge_mask;
    int32_t n_merges;
    bool ignore_merges;

    /* Added tokens and their trie. */
    added_token *added;
    int32_t n_added;
    char *added_blob;
    trie_node *trie;
    int32_t n_trie;
    uint8_t trie_first[256];   /* 1 if some added token starts with this byte */

    /* Normalizer and pre-tokenizer. */
    bool nfc;                  /* NFC normalizer */
    pretok_kind pretok;
    char *pattern;             /* the Split regex from the file (NULL for PRETOK_NONE) */
    pcre2_code *re;            /* compiled pattern when pretok == PRETOK_PCRE2 */

    /* Post-processor template (single sequence). */
    int32_t *tmpl_prefix, *tmpl_suffix;
    int32_t n_prefix, n_suffix;

    int32_t bos_id, eos_id;
    int bpe_small_limit;       /* words up to this many bytes use the quadratic merge loop */
};

/* Byte-level map (GPT-2 bytes_to_unicode): byte -> code point. */
extern const uint16_t dspy_bytelevel_cp[256];

/* Hash of a byte string (vocabulary table). */
uint32_t dspy_tok_hash(const char *p, size_t n);

/* Vocabulary lookup of raw bytes; -1 if absent. */
int32_t dspy_tok_vocab_find(const dspy_tokenizer *tok, const char *p, size_t n);

/* Compiles `pattern` with PCRE2 (UTF | UCP) into tok->re. `where` names the file for errors. */
dspy_status dspy_tok_compile_pcre2(dspy_tokenizer *tok, const char *pattern, const char *where);

/* ---- model.vocab and model.merges (tokenizer_lists.c), from the jansson tree (tree, at NULL)
 * (text->at NULL) or from JSON text (text: dspy_json_parse_fast_spans' span of a file, already
 * checked, or the text gguf_vocab.c writes; text->items its entries) ---- */

/* jansson's type of j as a message names it ("an object", "missing", ...); the same names for
 * the JSON value whose text starts at `at` (NULL: "missing"). */
const char *dspy_tok_jtype(json_t *j);
const char *dspy_tok_text_type(const char *at, size_t len);

/* model.vocab in document order. A key given twice appears once, at its first place, with its
 * later id (jansson's tree and HF's map both keep the later). Every id in 0 .. 2^24 - 1. */
typedef struct {
    char *blob;          /* the spellings, a NUL after each */
    uint32_t *off, *len; /* per entry: where its spelling starts in blob, its length */
    int32_t *id;
    size_t n;
} tok_vocab;

dspy_status dspy_tok_vocab_read(json_t *tree, const dspy_json_span *text, const char *P, tok_vocab *out);
void dspy_tok_vocab_free(tok_vocab *v);

/* model.merges, entry by entry: "a b" strings or ["a", "b"] pairs. */
typedef struct {
    json_t *arr;         /* the tree's array, or NULL: the text's, through cur */
    dspy_json_cur cur;
    size_t n, i;         /* entries, the next one */
    dspy_str pair;       /* a pair's left spelling, copied (the right one may take cur's buffer) */
} tok_merges;

void dspy_tok_merges_open(tok_merges *m, json_t *tree, const dspy_json_span *text);
/* 1: the next entry's two spellings in l[0, ll) and r[0, rl) (valid until the next call); 0:
 * no more; -1: it is malformed (*st says which and why). */
int dspy_tok_merges_next(tok_merges *m, const char *P, const char **l, size_t *ll, const char **r, size_t *rl,
                         dspy_status *st);
void dspy_tok_merges_close(tok_merges *m);

/* Test hooks. Forces the PCRE2 path for the tokenizer's own pattern (Llama 3 / Qwen2 pattern
 * only), and sets the word length up to which BPE uses the quadratic loop (0 = always heap). */
dspy_status dspy_tokenizer_debug_force_pcre2(dspy_tokenizer *tok);
void dspy_tokenizer_debug_bpe_small_limit(dspy_tokenizer *tok, int limit);

#endif
