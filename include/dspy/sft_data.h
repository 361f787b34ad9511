/* dspy/sft_data.h — supervised fine-tuning data: chat JSONL to labelled token sequences, packing.
 *
 * What it does:
 *   - reads chat JSONL as DSPy's format_finetune_data writes it, one object per line:
 *       {"messages": [{"role": "system", "content": "..."}, {"role": "user", ...},
 *                     {"role": "assistant", ...}]}
 *     (other keys of the line are ignored);
 *   - renders each conversation with the model's chat template (dspy_chat_render, no generation
 *     prompt) and encodes the text with the model's tokenizer (no extra special tokens: the
 *     template writes <|begin_of_text|> itself; special tokens written in the text are parsed),
 *     as transformers' apply_chat_template(tokenize=True) does;
 *   - marks the tokens that carry a label. EXACTLY these: every token whose first byte lies in an
 *     assistant span of dspy_chat_render, i.e. the assistant message's (trimmed) content and the
 *     end-of-turn token after it (<|eot_id|> for Llama 3, <|im_end|> for ChatML). Not labelled:
 *     <|begin_of_text|>, the system block (date lines included), every user/system message, the
 *     role headers (<|start_header_id|>assistant<|end_header_id|> and the "\n\n" after them),
 *     and for ChatML the "\n" after <|im_end|>. With several assistant messages, each one is
 *     labelled. This is what open-instruct's encode_sft_example (DSPy's train_sft_locally)
 *     computes for Llama 3 conversations: loss on the assistant content and its <|eot_id|>
 *     (dspy_behaviour.md §10.6, project decision §16.2);
 *   - skips and reports bad lines, each with its line number and one kind (see dspy_sft_issue),
 *     and goes on with the rest: a line that is not JSON or not an object, "messages" missing or
 *     not a non-empty list, a message that is not an object or lacks string "role"/"content",
 *     a role other than system/user/assistant, no assistant message, a conversation longer than
 *     max_seq_length tokens (never truncated), a token id outside the model's vocabulary;
 *   - packs examples into sequences of at most max_seq_length tokens, whole examples only, in the
 *     order given (next-fit: an example that does not fit closes the sequence and starts the
 *     next). Inside a sequence positions restart at 0 for every example and each example has its
 *     own segment id (0, 1, 2, ...), so a trainer that masks attention by segment never lets one
 *     example see another. The first token of every packed example is never labelled.
 *
 * Label convention (HF's): labels[t] = ids[t] when token t carries a label, else -100; the loss
 * at t compares the model's prediction from tokens [0, t) of the same example with ids[t].
 * Packed sequences also carry the shifted form (targets) that train/backward.h takes.
 *
 * What it does not: truncation, the date of today in the Llama 3 system block (the date string is
 * a parameter; NULL gives the template's fallback "26 Jul 2024", which is also what `dspy
 * generate --messages` renders), tool messages, multimodal content.
 *
 * Thread safety: a loaded dataset is immutable; read it from any number of threads.
 */
#ifndef DSPY_SFT_DATA_H
#define DSPY_SFT_DATA_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/chat_template.h"
#include "dspy/status.h"
#include "dspy/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSPY_SFT_IGNORE (-100) /* label of a token outside the loss (PyTorch's ignore_index) */

typedef struct dspy_sft_params {
    int32_t max_seq_length; /* longest example and longest packed sequence, in tokens (default 4096) */
    int32_t vocab_size;     /* the model's vocabulary: a token id >= this skips the example; 0 = no check */
    const char *chat_date;  /* Llama 3 "Today Date:" value; NULL = "26 Jul 2024" (borrowed) */
} dspy_sft_params;

/* max_seq_length 4096, vocab_size 0, chat_date NULL. */
DSPY_API dspy_sft_params dspy_sft_params_default(void);

/* Why a line was skipped. */
typedef enum dspy_sft_issue_kind {
    DSPY_SFT_BAD_JSON = 1,   /* invalid UTF-8, invalid JSON, or not a JSON object */
    DSPY_SFT_BAD_SHAPE,      /* "messages" missing / not a non-empty list; a message not an object,
                                or without a string "role" and a string "content" */
    DSPY_SFT_UNKNOWN_ROLE,   /* a role other than system, user, assistant */
    DSPY_SFT_NO_ASSISTANT,   /* no assistant message: nothing to learn from */
    DSPY_SFT_TOO_LONG,       /* more tokens than max_seq_length */
    DSPY_SFT_BAD_TOKEN       /* a token id >= vocab_size (tokenizer larger than the model) */
} dspy_sft_issue_kind;

/* "bad_json", "bad_shape", "unknown_role", "no_assistant", "too_long", "bad_token". */
DSPY_API const char *dspy_sft_issue_kind_name(dspy_sft_issue_kind k);

typedef struct dspy_sft_issue {
    int64_t line;             /* 1-based line number in the file */
    dspy_sft_issue_kind kind;
    const char *message;      /* what is wrong and how to fix it, e.g. "message 2 has role 'tool'; ..." */
} dspy_sft_issue;

/* One usable example. Arrays are owned by the dataset. */
typedef struct dspy_sft_example {
    const int32_t *ids;    /* (n) token ids */
    const int32_t *labels; /* (n) ids[t] or DSPY_SFT_IGNORE */
    int32_t n;             /* tokens */
    int32_t n_labels;      /* tokens that carry a label (>= 1) */
    int64_t line;          /* its line in the file */
} dspy_sft_example;

typedef struct dspy_sft_dataset dspy_sft_dataset;

/* Reads the chat JSONL file `path`, tokenizing with `tok` and rendering with `tpl` (both
 * borrowed, used only during the call). `p` may be NULL (defaults). Bad lines become issues and
 * never fail the call. Errors: DSPY_ERR_NOTFOUND / DSPY_ERR_IO (the file), DSPY_ERR_ARG
 * (max_seq_length < 2), DSPY_ERR_NOMEM. *out NULL on failure. A file without any usable line
 * loads fine with count 0: the caller decides (the trainer refuses it). */
DSPY_API dspy_status dspy_sft_load(const char *path, const dspy_tokenizer *tok, const dspy_chat_template *tpl,
                                   const dspy_sft_params *p, dspy_sft_dataset **out);
/* The same over JSONL text in memory; `name` names it in messages (NULL: "<jsonl>"). */
DSPY_API dspy_status dspy_sft_parse(const char *data, size_t len, const char *name, const dspy_tokenizer *tok,
                                    const dspy_chat_template *tpl, const dspy_sft_params *p,
                                    dspy_sft_dataset **out);
/* NULL-safe. */
DSPY_API void dspy_sft_free(dspy_sft_dataset *ds);

/* Usable examples, in file order; i < count. */
DSPY_API size_t dspy_sft_count(const dspy_sft_dataset *ds);
DSPY_API dspy_sft_example dspy_sft_at(const dspy_sft_dataset *ds, size_t i);
/* Lines that were skipped, in file order; i < n_issues. */
DSPY_API size_t dspy_sft_n_issues(const dspy_sft_dataset *ds);
DSPY_API const dspy_sft_issue *dspy_sft_issue_at(const dspy_sft_dataset *ds, size_t i);
/* Lines read that were not blank (usable + skipped). */
DSPY_API size_t dspy_sft_n_lines(const dspy_sft_dataset *ds);
/* Tokens and labelled tokens over all usable examples. */
DSPY_API int64_t dspy_sft_total_tokens(const dspy_sft_dataset *ds);
DSPY_API int64_t dspy_sft_total_labels(const dspy_sft_dataset *ds);

/* ---- packing ------------------------------------------------------------------------------ */

/* A packed sequence: consecutive examples with their own positions and segment ids. Arrays
 * are owned by the pack. */
typedef struct dspy_sft_seq {
    const int32_t *ids;    /* (T) */
    const int32_t *pos;    /* (T) position inside its example: 0, 1, ... restarting per example */
    const int32_t *labels; /* (T) ids[t] or DSPY_SFT_IGNORE; the first token of each example ignored */
    const int32_t *seg;    /* (T) 0 for the first example, 1 for the second, ... */
    const int32_t *targets; /* (T) the same labels shifted, as the trainer consumes them:
                               targets[t] = labels[t + 1] when token t + 1 is in the same example,
                               else -100 (the last token of every example) */
    int32_t T;             /* tokens (<= max_seq_length) */
    int32_t n_labels;      /* labelled tokens */
    int32_t n_examples;    /* examples packed in it */
} dspy_sft_seq;

typedef struct dspy_sft_pack dspy_sft_pack;

/* Packs the examples order[0..n) (indices into ds, each < count; repeats allowed) into
 * sequences of at most max_len tokens, next-fit in the given order. packing false puts one
 * example per sequence. Errors: DSPY_ERR_ARG (an index out of range, max_len smaller than an
 * example), DSPY_ERR_NOMEM. *out NULL on failure. */
DSPY_API dspy_status dspy_sft_pack_new(const dspy_sft_dataset *ds, const size_t *order, size_t n, int32_t max_len,
                                       bool packing, dspy_sft_pack **out);
/* NULL-safe. */
DSPY_API void dspy_sft_pack_free(dspy_sft_pack *pk);
DSPY_API size_t dspy_sft_pack_count(const dspy_sft_pack *pk);
DSPY_API dspy_sft_seq dspy_sft_pack_at(const dspy_sft_pack *pk, size_t i);
/* How many sequences packing `order` would give, without building them (for planning). Same
 * errors as dspy_sft_pack_new. */
DSPY_API dspy_status dspy_sft_pack_count_only(const dspy_sft_dataset *ds, const size_t *order, size_t n,
                                              int32_t max_len, bool packing, size_t *count);

/* The training order of epoch `epoch` (0-based): indices 0..count-1 shuffled in place with
 * Python's random.Random(seed + epoch).shuffle, so Python reproduces it with
 * `order = list(range(n)); random.Random(seed + epoch).shuffle(order)`. `order` has count entries. */
DSPY_API void dspy_sft_epoch_order(const dspy_sft_dataset *ds, uint64_t seed, int64_t epoch, size_t *order);

#ifdef __cplusplus
}
#endif
#endif
