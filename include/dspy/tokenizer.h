/* dspy/tokenizer.h — byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json.
 *
 * What it does: the encode/decode that HF `tokenizers` (the Rust library under transformers'
 * PreTrainedTokenizerFast) performs for byte-level BPE models such as Llama 3.x, Qwen2 and
 * GPT-2: added/special tokens matched first (leftmost-longest, honouring lstrip, rstrip,
 * single_word and `special`), the Split pre-tokenizer regex, the GPT-2 byte-to-unicode map,
 * BPE merges by rank (with `ignore_merges`), the TemplateProcessing post-processor (e.g. the
 * `<|begin_of_text|>` prefix) and the ByteLevel decoder.
 *
 * The Llama 3 split regex (and Qwen2's, which differs only in \p{N} vs \p{N}{1,3}) runs through
 * a hand-written matcher with Unicode 14.0 class tables (the version HF's Oniguruma uses); any
 * other Split pattern runs through PCRE2 (UTF + UCP), whose \s and case folding can differ from
 * Oniguruma's in rare characters. Supported normalizers: none and NFC (Unicode 14.0 data; added
 * tokens are matched in the raw text, as HF does for normalized=false tokens). Not supported: WordPiece/Unigram models, byte_fallback
 * (SentencePiece-style) BPE, BERT/RoBERTa post-processors, dropout.
 *
 * Thread safety: a loaded tokenizer is immutable; any number of threads may encode and decode
 * with it at once. A stream decoder belongs to one thread at a time.
 */
#ifndef DSPY_TOKENIZER_H
#define DSPY_TOKENIZER_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/str.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_tokenizer dspy_tokenizer;

/* Loads `path`: a tokenizer.json file, or a directory holding one. A tokenizer_config.json
 * beside it, when present, supplies bos_token/eos_token. A path ending in ".gguf" loads the
 * vocabulary, merges and bos/eos ids stored in that GGUF file (see dspy/gguf.h; byte-level BPE
 * with the "llama-bpe" or "qwen2" pre-tokenizer). *out is NULL on failure.
 * Errors: DSPY_ERR_NOTFOUND (no such file), DSPY_ERR_IO, DSPY_ERR_FORMAT (bad JSON, missing
 * model.vocab / model.merges, a merge naming unknown tokens, an unsupported component; the
 * message names the file and the field), DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_tokenizer_load(const char *path, dspy_tokenizer **out);

/* Frees the tokenizer. NULL-safe. */
DSPY_API void dspy_tokenizer_free(dspy_tokenizer *tok);

/* Encodes `len` bytes of UTF-8 `text` into token ids (*ids malloc'ed, caller frees; *n their
 * count; for empty output *ids is still a valid allocation).
 * add_special: apply the post-processor template (Llama 3: prepend <|begin_of_text|>), as
 *   HF's add_special_tokens=True.
 * parse_special: match special added tokens written in the text (e.g. "<|eot_id|>" becomes
 *   128009), as HF does by default; false treats them as plain text (HF
 *   split_special_tokens=True). Non-special added tokens are always matched.
 * Errors: DSPY_ERR_ARG (text is not valid UTF-8; the message gives the byte offset),
 * DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_tokenizer_encode(const dspy_tokenizer *tok, const char *text, size_t len,
                                           bool add_special, bool parse_special, int32_t **ids, size_t *n);

/* As dspy_tokenizer_encode, but stops as soon as the text needs more than max_tokens ids
 * (0 = no limit): DSPY_ERR_CONTEXT "the text is longer than N tokens", having done work for
 * about max_tokens tokens only, whatever the text's length (a server checks a prompt against the
 * context this way). */
DSPY_API dspy_status dspy_tokenizer_encode_max(const dspy_tokenizer *tok, const char *text, size_t len, bool add_special,
                                               bool parse_special, size_t max_tokens, int32_t **ids, size_t *n);

/* As dspy_tokenizer_encode, and also *starts (malloc'ed, *n entries): the byte offset in
 * `text` where each token begins. Token i covers [starts[i], starts[i+1]) (the last one ends
 * at len). Template tokens added by add_special get the offset where they stand (0 for a
 * prefix, len for a suffix) and cover no bytes. */
DSPY_API dspy_status dspy_tokenizer_encode_offsets(const dspy_tokenizer *tok, const char *text, size_t len,
                                                   bool add_special, bool parse_special, int32_t **ids,
                                                   size_t **starts, size_t *n);

/* Decodes ids into UTF-8 text (*out malloc'ed and NUL-terminated, *len its length; len may be
 * NULL). Special tokens are rendered as their text unless skip_special. Byte sequences that
 * are not valid UTF-8 become U+FFFD, one per maximal invalid subpart, as HF's ByteLevel
 * decoder (Rust from_utf8_lossy) does. No clean-up of tokenization spaces is applied, so
 * decode(encode(x)) == x. Errors: DSPY_ERR_ARG (an id outside the vocabulary), DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_tokenizer_decode(const dspy_tokenizer *tok, const int32_t *ids, size_t n,
                                           bool skip_special, char **out, size_t *len);

/* The id of a token given in its tokenizer.json spelling ("Ġhello", "<|eot_id|>"), or -1. */
DSPY_API int32_t dspy_tokenizer_token_to_id(const dspy_tokenizer *tok, const char *token);

/* The tokenizer.json spelling of `id` (owned by the tokenizer), or NULL if `id` is unused or
 * out of range. */
DSPY_API const char *dspy_tokenizer_id_to_token(const dspy_tokenizer *tok, int32_t id);

/* The raw bytes a token decodes to (special tokens: their content), owned by the tokenizer;
 * *len their count. NULL (and *len 0) for an unused or out-of-range id. */
DSPY_API const char *dspy_tokenizer_token_bytes(const dspy_tokenizer *tok, int32_t id, size_t *len);

/* One past the largest id (model vocabulary plus added tokens): 128256 for Llama 3. */
DSPY_API int32_t dspy_tokenizer_vocab_size(const dspy_tokenizer *tok);

/* true if `id` is an added token marked special. */
DSPY_API bool dspy_tokenizer_is_special(const dspy_tokenizer *tok, int32_t id);

/* bos/eos ids from tokenizer_config.json (bos falls back to the post-processor's first
 * prefix token); -1 when unknown. Llama 3.x: 128000 and, per its config, 128009. */
DSPY_API int32_t dspy_tokenizer_bos_id(const dspy_tokenizer *tok);
DSPY_API int32_t dspy_tokenizer_eos_id(const dspy_tokenizer *tok);

/* Which split implementation this tokenizer uses: "llama3" (hand-written matcher), "qwen2"
 * (same matcher, single digits), "pcre2" (other patterns), or "none". */
DSPY_API const char *dspy_tokenizer_pretokenizer(const dspy_tokenizer *tok);

/* Streaming decoder for generation: feed ids one at a time, get text as soon as it forms
 * complete UTF-8 characters; bytes of an unfinished character are held back until the next
 * token completes it (or proves it invalid, giving U+FFFD). */
typedef struct dspy_tokenizer_stream dspy_tokenizer_stream;

/* New stream over `tok` (which must outlive it). *out NULL on failure (DSPY_ERR_NOMEM). */
DSPY_API dspy_status dspy_tokenizer_stream_new(const dspy_tokenizer *tok, bool skip_special,
                                               dspy_tokenizer_stream **out);
/* Appends to `out` the text that `id` completes (possibly nothing). Errors: DSPY_ERR_ARG for an
 * id outside the vocabulary (the stream is unchanged), DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_tokenizer_stream_push(dspy_tokenizer_stream *s, int32_t id, dspy_str *out);
/* Appends U+FFFD for bytes still held (an unfinished character at the end) and resets. */
DSPY_API dspy_status dspy_tokenizer_stream_flush(dspy_tokenizer_stream *s, dspy_str *out);
/* NULL-safe. */
DSPY_API void dspy_tokenizer_stream_free(dspy_tokenizer_stream *s);

#ifdef __cplusplus
}
#endif
#endif
