/* gguf_vocab.c — the tokenizer in GGUF metadata: written from a model directory, read back as a
 * tokenizer.json document.
 *
 * Export follows convert_hf_to_gguf.py's byte-level BPE path (get_vocab_base, _set_vocab_gpt2,
 * gguf-py's SpecialVocab): one entry per id up to vocab_size ("[PAD<i>]" of type UNUSED for ids
 * the tokenizer does not define), model-vocabulary tokens in their byte-level spelling (NORMAL),
 * added tokens as their content (CONTROL when special or when they look like "<|...|>", else
 * USER_DEFINED), merges as "a b" strings, tokenizer.ggml.pre from the split regex ("llama-bpe"
 * for Llama 3's, "qwen2" for Qwen2's), bos/eos from the tokenizer's config, eot/eom from the
 * "<|eot_id|>"/"<|im_end|>" and "<|eom_id|>" tokens, add_bos_token from the post-processor, and
 * the chat template (chat_template.jinja, else tokenizer_config.json's "chat_template").
 *
 * Import rebuilds what HF's tokenizer.json says for those two pre-tokenizers (Split with the
 * regex, Isolated; ByteLevel without regex; ByteLevel decoder; TemplateProcessing with the bos
 * token when add_bos_token), so src/model/tokenizer.c loads it as it loads the original.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dspy/str.h"
#include "dspy/tokenizer.h"
#include "model/chat_template_internal.h"
#include "model/gguf_internal.h"

enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };

/* The Split regexes of Llama 3's and Qwen2's tokenizer.json (the files' own strings). */
static const char k_llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_qwen2_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static dspy_status load_json(const char *path, json_t **out) {
    char *text;
    size_t n;
    dspy_status st = dspy_read_file(path, &text, &n);
    if (st) return st;
    json_error_t err;
    *out = json_loadb(text, n, JSON_DECODE_INT_AS_REAL, &err);
    free(text);
    if (!*out)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: line %d column %d: invalid JSON: %s", path, err.line, err.column, err.text);
    return DSPY_OK;
}

/* As convert_hf_to_gguf.py's does_token_look_special, for the byte-level families handled. */
static bool looks_special(const char *s) {
    size_t n = strlen(s);
    return n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0;
}

/* The chat template text of a model directory (NULL when it has none). */
static dspy_status read_chat_template(const char *dir, json_t *tcfg, char **out) {
    *out = NULL;
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/chat_template.jinja", dir);
    if (!dspy_str_ok(&p)) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    if (file_exists(p.ptr)) {
        st = dspy_read_file(p.ptr, out, NULL);
    } else if (tcfg) {
        json_t *ct = dspy_chat_template_from_config(tcfg);
        if (ct && !(*out = strdup(json_string_value(ct)))) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    dspy_str_free(&p);
    return st;
}

/* The vocabulary as GGUF stores it: one token string and type per id below vocab_size (ids the
 * tokenizer does not use get "[PADn]", as llama.cpp's converter writes them), and the merges as
 * "a b" strings. */
typedef struct gguf_tokens {
    size_t V;
    const char **tokens; /* borrowed from the tokenizer.json document, or from owned */
    size_t *lens;
    int32_t *types;
    char **owned; /* the "[PADn]" strings */
    const char **merges; /* into mbuf */
    size_t *mlens, nm;
    dspy_str mbuf;
} gguf_tokens;

static void gguf_tokens_clear(gguf_tokens *t) {
    if (t->owned)
        for (size_t id = 0; id < t->V; id++) free(t->owned[id]);
    free(t->owned);
    free(t->tokens);
    free(t->lens);
    free(t->types);
    free(t->merges);
    free(t->mlens);
    dspy_str_free(&t->mbuf);
}

static dspy_status collect_tokens(gguf_tokens *t, json_t *root, const char *path) {
    size_t V = t->V;
    t->tokens = calloc(V, sizeof *t->tokens);
    t->lens = calloc(V, sizeof *t->lens);
    t->types = calloc(V, sizeof *t->types);
    t->owned = calloc(V, sizeof *t->owned);
    if (!t->tokens || !t->lens || !t->types || !t->owned)
        return dspy_fail(DSPY_ERR_NOMEM, "out of memory for %zu tokens", V);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        double id = json_number_value(val);
        if (id < 0 || id >= (double)V)
            return dspy_fail(DSPY_ERR_ARG, "%s: token \"%s\" has id %.0f, but the model's vocab_size is %zu", path, key,
                             id, V);
        t->tokens[(size_t)id] = key;
        t->types[(size_t)id] = TOK_NORMAL;
    }
    size_t i;
    json_t *at;
    json_array_foreach(json_object_get(root, "added_tokens"), i, at) {
        double id = json_number_value(json_object_get(at, "id"));
        const char *content = json_string_value(json_object_get(at, "content"));
        if (!content || id < 0 || id >= (double)V)
            return dspy_fail(DSPY_ERR_ARG, "%s: added token %zu (id %.0f) is outside the model's vocab_size %zu", path,
                             i, id, V);
        t->tokens[(size_t)id] = content;
        /* CONTROL as convert_hf_to_gguf.py marks them: special ones and <|...|> markers */
        t->types[(size_t)id] = json_is_true(json_object_get(at, "special")) || looks_special(content)
                                   ? TOK_CONTROL
                                   : TOK_USER_DEFINED;
    }
    for (size_t id = 0; id < V; id++) {
        if (!t->tokens[id]) {
            dspy_str s = DSPY_STR_INIT;
            dspy_str_appendf(&s, "[PAD%zu]", id);
            if (!(t->owned[id] = dspy_str_take(&s))) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            t->tokens[id] = t->owned[id];
            t->types[id] = TOK_UNUSED;
        }
        t->lens[id] = strlen(t->tokens[id]);
    }
    return DSPY_OK;
}

static dspy_status collect_merges(gguf_tokens *t, json_t *root) {
    json_t *jm = json_object_get(json_object_get(root, "model"), "merges");
    size_t nm = json_array_size(jm);
    t->merges = calloc(nm ? nm : 1, sizeof *t->merges);
    t->mlens = calloc(nm ? nm : 1, sizeof *t->mlens);
    size_t *moff = calloc(nm ? nm : 1, sizeof *moff);
    if (!t->merges || !t->mlens || !moff) {
        free(moff);
        return dspy_fail(DSPY_ERR_NOMEM, "out of memory for %zu merges", nm);
    }
    size_t i;
    json_t *m;
    /* offsets first: mbuf moves while it grows, so the pointers are taken at the end */
    json_array_foreach(jm, i, m) {
        moff[i] = t->mbuf.len;
        if (json_is_string(m)) {
            dspy_str_append(&t->mbuf, json_string_value(m));
        } else { /* the newer ["a", "b"] form */
            dspy_str_append(&t->mbuf, json_string_value(json_array_get(m, 0)));
            dspy_str_appendc(&t->mbuf, ' ');
            dspy_str_append(&t->mbuf, json_string_value(json_array_get(m, 1)));
        }
        t->mlens[i] = t->mbuf.len - moff[i];
    }
    if (!dspy_str_ok(&t->mbuf)) {
        free(moff);
        return dspy_fail(DSPY_ERR_NOMEM, "out of memory for the merges");
    }
    for (i = 0; i < nm; i++) t->merges[i] = t->mbuf.ptr + moff[i];
    t->nm = nm;
    free(moff);
    return DSPY_OK;
}

dspy_status dspy_gguf_vocab_export(const char *dir, const dspy_model_config *cfg, dspy_gguf_writer *w) {
    dspy_status st = DSPY_OK;
    json_t *root = NULL, *tcfg = NULL;
    dspy_tokenizer *tok = NULL;
    char *chat = NULL;
    int32_t *probe = NULL;
    gguf_tokens t = {.V = (size_t)cfg->vocab_size, .mbuf = DSPY_STR_INIT};
    size_t V = t.V;
    dspy_str path = DSPY_STR_INIT, where = DSPY_STR_INIT;

    dspy_str_appendf(&path, "%s/tokenizer.json", dir);
    if (!dspy_str_ok(&path)) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!file_exists(path.ptr)) {
        st = dspy_fail(DSPY_ERR_NOTFOUND, "%s: no tokenizer.json; a GGUF file carries the vocabulary, so export needs "
                       "the model's tokenizer (copy it into the directory)", dir);
        goto done;
    }
    if ((st = dspy_tokenizer_load(dir, &tok))) goto done;
    const char *kind = dspy_tokenizer_pretokenizer(tok);
    const char *pre = strcmp(kind, "llama3") == 0 ? "llama-bpe" : strcmp(kind, "qwen2") == 0 ? "qwen2" : NULL;
    if (!pre) {
        st = dspy_fail(DSPY_ERR_ARG, "%s: the tokenizer's pre-tokenizer is not Llama 3's or Qwen2's split regex "
                       "(dspy.c found \"%s\"); llama.cpp identifies pre-tokenizers by name and only those two are "
                       "mapped", path.ptr, kind);
        goto done;
    }
    if ((st = load_json(path.ptr, &root))) goto done;
    dspy_str_appendf(&where, "%s/tokenizer_config.json", dir);
    if (!dspy_str_ok(&where)) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (file_exists(where.ptr) && (st = load_json(where.ptr, &tcfg))) goto done;
    if ((st = collect_tokens(&t, root, path.ptr)) || (st = collect_merges(&t, root))) goto done;

    /* special ids: bos/eos as the tokenizer's config says, falling back to config.json */
    int32_t bos = dspy_tokenizer_bos_id(tok), eos = dspy_tokenizer_eos_id(tok);
    if (bos < 0) bos = cfg->bos_token_id;
    if (eos < 0 && cfg->n_eos > 0) eos = cfg->eos_token_ids[0];
    int32_t eot = dspy_tokenizer_token_to_id(tok, "<|eot_id|>");
    if (eot < 0) eot = dspy_tokenizer_token_to_id(tok, "<|im_end|>");
    int32_t eom = dspy_tokenizer_token_to_id(tok, "<|eom_id|>");
    /* whether BOS/EOS are added is read off what the tokenizer does to an empty text */
    size_t np = 0;
    if ((st = dspy_tokenizer_encode(tok, "", 0, true, true, &probe, &np))) goto done;
    bool add_bos = np > 0 && bos >= 0 && probe[0] == bos;
    bool add_eos = np > (add_bos ? 1u : 0u) && eos >= 0 && probe[np - 1] == eos;
    if ((st = read_chat_template(dir, tcfg, &chat))) goto done;

    dspy_gguf_kv_str(w, "tokenizer.ggml.model", "gpt2");
    dspy_gguf_kv_str(w, "tokenizer.ggml.pre", pre);
    dspy_gguf_kv_str_arr(w, "tokenizer.ggml.tokens", t.tokens, t.lens, V);
    dspy_gguf_kv_i32_arr(w, "tokenizer.ggml.token_type", t.types, V);
    dspy_gguf_kv_str_arr(w, "tokenizer.ggml.merges", t.merges, t.mlens, t.nm);
    if (bos >= 0 && (size_t)bos < V) dspy_gguf_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0 && (size_t)eos < V) dspy_gguf_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (eot >= 0 && (size_t)eot < V) dspy_gguf_kv_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)eot);
    if (eom >= 0 && (size_t)eom < V) dspy_gguf_kv_u32(w, "tokenizer.ggml.eom_token_id", (uint32_t)eom);
    dspy_gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    dspy_gguf_kv_bool(w, "tokenizer.ggml.add_eos_token", add_eos);
    if (chat) dspy_gguf_kv_str(w, "tokenizer.chat_template", chat);
done:
    gguf_tokens_clear(&t);
    free(probe);
    free(chat);
    dspy_str_free(&path);
    dspy_str_free(&where);
    dspy_tokenizer_free(tok);
    json_decref(root);
    json_decref(tcfg);
    return st;
}

/* ---- import ----------------------------------------------------------------------------- */

dspy_status dspy_gguf_tokenizer_json(const char *path, json_t **root_out, char **text_out, dspy_json_span spans[2],
                                     int32_t *bos_out, int32_t *eos_out) {
    *root_out = NULL;
    *text_out = NULL;
    *bos_out = *eos_out = -1;
    dspy_gguf *g = NULL;
    json_t *root = NULL;
    /* the vocabulary and the merges as JSON text (tokenizer_lists.c reads them as a file's):
     * ~400 k jansson values fewer for a Llama 3 vocabulary */
    dspy_str text = DSPY_STR_INIT;
    dspy_status st = dspy_gguf_open(path, &g);
    if (st) return st;
    const char *model = dspy_gguf_get_str(g, "tokenizer.ggml.model");
    const char *pre = dspy_gguf_get_str(g, "tokenizer.ggml.pre");
    if (!model || strcmp(model, "gpt2") != 0) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: tokenizer.ggml.model is \"%s\"; dspy.c reads byte-level BPE (\"gpt2\") "
                       "vocabularies only", path, model ? model : "(absent)");
        goto done;
    }
    const char *regex = NULL;
    if (pre && strcmp(pre, "llama-bpe") == 0) regex = k_llama3_regex;
    else if (pre && strcmp(pre, "qwen2") == 0) regex = k_qwen2_regex;
    if (!regex) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: tokenizer.ggml.pre is \"%s\"; dspy.c knows \"llama-bpe\" and \"qwen2\"", path,
                       pre ? pre : "(absent)");
        goto done;
    }
    dspy_gguf_vtype et, tt, mt;
    size_t n, ntypes, nm;
    if (!dspy_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) || et != DSPY_GGUF_STRING || n == 0) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing or not a list of strings", path);
        goto done;
    }
    bool have_types = dspy_gguf_get_arr(g, "tokenizer.ggml.token_type", &tt, &ntypes);
    if (have_types && (ntypes != n || tt == DSPY_GGUF_STRING || tt == DSPY_GGUF_F32 || tt == DSPY_GGUF_F64)) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: tokenizer.ggml.token_type must be %zu integers", path, n);
        goto done;
    }
    if (!dspy_gguf_get_arr(g, "tokenizer.ggml.merges", &mt, &nm) || mt != DSPY_GGUF_STRING) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: tokenizer.ggml.merges is missing or not a list of strings", path);
        goto done;
    }
    int64_t bos = -1, eos = -1;
    if (dspy_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &bos) && (bos < 0 || (size_t)bos >= n)) bos = -1;
    if (dspy_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &eos) && (eos < 0 || (size_t)eos >= n)) eos = -1;
    bool add_bos = false;
    dspy_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos);

    root = json_object();
    json_t *added = json_array();
    json_t *model_j = json_object();
    if (!root || !added || !model_j) {
        json_decref(added);
        json_decref(model_j);
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "model", model_j); /* root owns both now: every way out frees them */
    bool ok = true;
    dspy_str_appendc(&text, '{');
    size_t vocab_at = 0, in_vocab = 0;
    for (size_t id = 0; id < n && ok; id++) {
        size_t len;
        const char *s = dspy_gguf_arr_str(g, "tokenizer.ggml.tokens", id, &len);
        int64_t type = have_types ? dspy_gguf_arr_int(g, "tokenizer.ggml.token_type", id) : TOK_NORMAL;
        if (type == TOK_UNUSED) continue;
        if (memchr(s, '\0', len)) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: token %zu holds a NUL byte", path, id);
            goto done;
        }
        if (!dspy_utf8_valid(s, len, NULL)) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: token %zu is not valid UTF-8", path, id);
            goto done;
        }
        if (type == TOK_CONTROL || type == TOK_USER_DEFINED) {
            json_t *a = json_object();
            ok = a && json_array_append_new(added, a) == 0;
            if (!ok) break;
            json_object_set_new(a, "id", json_integer((json_int_t)id));
            json_object_set_new(a, "content", json_stringn(s, len));
            json_object_set_new(a, "single_word", json_false());
            json_object_set_new(a, "lstrip", json_false());
            json_object_set_new(a, "rstrip", json_false());
            json_object_set_new(a, "normalized", json_false());
            json_object_set_new(a, "special", json_boolean(type == TOK_CONTROL));
        } else {
            if (in_vocab++) dspy_str_appendc(&text, ',');
            dspy_json_quote(s, len, &text);
            dspy_str_appendf(&text, ":%zu", id);
        }
    }
    dspy_str_appendc(&text, '}');
    const size_t merges_at = text.len;
    dspy_str_appendc(&text, '[');
    for (size_t i = 0; i < nm && ok; i++) {
        size_t len;
        const char *s = dspy_gguf_arr_str(g, "tokenizer.ggml.merges", i, &len);
        if (!dspy_utf8_valid(s, len, NULL) || memchr(s, '\0', len)) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: merge %zu is not valid UTF-8 text", path, i);
            goto done;
        }
        if (i) dspy_str_appendc(&text, ',');
        dspy_json_quote(s, len, &text);
    }
    dspy_str_appendc(&text, ']');
    ok = ok && dspy_str_ok(&text);
    json_object_set_new(model_j, "type", json_string("BPE"));
    json_object_set_new(model_j, "byte_fallback", json_false());
    /* llama.cpp sets ignore_merges for the Llama 3 pre-tokenizer, as Llama 3's tokenizer.json does */
    json_object_set_new(model_j, "ignore_merges", json_boolean(strcmp(pre, "llama-bpe") == 0));
    json_object_set_new(root, "normalizer", json_null());
    json_t *pt = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                           "pretokenizers", "type", "Split", "pattern", "Regex", regex, "behavior", "Isolated",
                           "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0);
    json_t *dec = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                            "use_regex", 1);
    json_t *pp = json_null();
    if (add_bos && bos >= 0) {
        size_t len;
        const char *s = dspy_gguf_arr_str(g, "tokenizer.ggml.tokens", (size_t)bos, &len);
        char *b = strndup(s, len);
        pp = b ? json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}", "type",
                           "TemplateProcessing", "single", "SpecialToken", "id", b, "type_id", 0, "Sequence", "id", "A",
                           "type_id", 0, "special_tokens", b, "id", b, "ids", (int)bos, "tokens", b)
               : NULL;
        free(b);
    }
    ok = ok && pt && dec && pp;
    json_object_set_new(root, "pre_tokenizer", pt);
    json_object_set_new(root, "post_processor", pp);
    json_object_set_new(root, "decoder", dec);
    if (!ok) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory building the tokenizer", path);
        goto done;
    }
    *bos_out = (int32_t)bos;
    *eos_out = (int32_t)eos;
    *root_out = root;
    root = NULL;
    *text_out = dspy_str_take(&text);
    spans[0].at = *text_out + vocab_at, spans[0].len = merges_at - vocab_at, spans[0].items = in_vocab;
    spans[1].at = *text_out + merges_at, spans[1].len = strlen(*text_out) - merges_at, spans[1].items = nm;
done:
    json_decref(root);
    dspy_str_free(&text);
    dspy_gguf_free(g);
    return st;
}
