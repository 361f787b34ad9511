/* program_file.c — loading saved programs (dspy.c's and Python DSPy's) and the local model
 * paths inside them (see program_file.h). Follows spec §12 for the file layout and DSPy's
 * default instructions ("Given the fields `a`, `b`, produce the fields `c`.", signature.py).
 */
#include "program_file.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dspy/json.h"
#include "dspy/str.h"

/* "a`, `b" style list between the backquotes of DSPy's default instructions into "a, b". */
static bool backquoted_list(const char *p, const char *end, dspy_str *out) {
    while (p < end) {
        if (*p != '`') return false;
        const char *q = memchr(p + 1, '`', (size_t)(end - p - 1));
        if (!q || q == p + 1) return false;
        dspy_str_appendf(out, "%s%.*s", out->len ? ", " : "", (int)(q - p - 1), p + 1);
        p = q + 1;
        if (p < end) {
            if (end - p < 2 || p[0] != ',' || p[1] != ' ') return false;
            p += 2;
        }
    }
    return true;
}

/* The signature text "a, b -> c" from DSPy's default instructions, or NULL (malloc'd). */
static char *signature_from_instructions(const char *ins) {
    static const char head[] = "Given the fields ", mid[] = ", produce the fields ";
    if (!ins || strncmp(ins, head, sizeof head - 1) != 0) return NULL;
    const char *in = ins + sizeof head - 1, *m = strstr(in, mid);
    size_t n = strlen(ins);
    if (!m || n < 2 || ins[n - 1] != '.') return NULL;
    dspy_str a = DSPY_STR_INIT, b = DSPY_STR_INIT;
    char *r = NULL;
    if (backquoted_list(in, m, &a) && backquoted_list(m + sizeof mid - 1, ins + n - 1, &b) && a.len && b.len) {
        dspy_str_append(&a, " -> ");
        dspy_str_append(&a, dspy_str_cstr(&b));
        r = dspy_str_ok(&a) ? dspy_str_take(&a) : NULL;
    }
    dspy_str_free(&a);
    dspy_str_free(&b);
    return r;
}

/* Infers the program type and signature of a file without metadata.dspy_c. */
static dspy_status infer(const char *path, const dspy_json *state, const char *module, char **sig_out,
                         const char **program_out, int *profile) {
    const dspy_json *pred = dspy_json_get(state, "self");
    const char *program = pred ? "Predict" : NULL;
    if (!pred && (pred = dspy_json_get(state, "predict"))) program = "ChainOfThought";
    if (!pred)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: no predictor named 'self' (a Predict) or 'predict' (a ChainOfThought); "
                         "dspy eval runs those two program types", path);
    const dspy_json *sig = dspy_json_get(pred, "signature"), *fields = dspy_json_get(sig, "fields");
    bool reasoning = false;
    for (size_t i = 0; i < dspy_json_size(fields); i++) {
        const char *pre = dspy_json_str_or(dspy_json_at(fields, i), "prefix", "");
        if (strncmp(pre, "Reasoning:", 10) == 0) reasoning = true;
        if (strncmp(pre, "Reasoning: Let's think step by step", 35) == 0 && *profile < 0) *profile = DSPY_PROFILE_V26;
    }
    if (module) program = strcmp(module, "predict") == 0 ? "Predict" : "ChainOfThought";
    else if (program[0] == 'C' && !reasoning) program = "Predict";
    const char *dv = dspy_json_str(dspy_json_get(dspy_json_get(dspy_json_get(state, "metadata"), "dependency_versions"),
                                                 "dspy"));
    if (*profile < 0 && dv && strncmp(dv, "2.", 2) == 0) *profile = DSPY_PROFILE_V26;
    *program_out = program;
    char *text = signature_from_instructions(dspy_json_str(dspy_json_get(sig, "instructions")));
    if (!text)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: saved by Python DSPy, which does not record the signature, and its "
                         "instructions are not DSPy's default ones to read the fields from; give --signature (e.g. "
                         "\"text -> label: Literal['a', 'b']\")", path);
    size_t want = 0;
    for (const char *p = text; *p; p++) want += *p == ',' || *p == '>';
    want += 1 + (strcmp(program, "ChainOfThought") == 0);
    if (want != dspy_json_size(fields)) {
        free(text);
        return dspy_fail(DSPY_ERR_FORMAT, "%s: the instructions name %zu fields but the file has %zu; give --signature "
                         "and --module", path, want, dspy_json_size(fields));
    }
    *sig_out = text;
    return DSPY_OK;
}

dspy_status program_file_load(const char *path, const char *signature, const char *module, int profile,
                              dspy_module **out, bool *inferred) {
    *out = NULL;
    *inferred = false;
    dspy_json *state = NULL;
    char *sig = NULL;
    dspy_status st = dspy_json_load(path, &state);
    if (st) return dspy_fail_wrap(st, "--program");
    dspy_program_load_params pl = dspy_program_load_params_default();
    pl.signature = signature;
    if (module) pl.program = strcmp(module, "predict") == 0 ? "Predict" : "ChainOfThought";
    pl.format_profile = profile;
    if (!dspy_json_get(dspy_json_get(state, "metadata"), "dspy_c") && (!signature || !module)) {
        const char *program = NULL;
        char *guess = NULL;
        if ((st = infer(path, state, module, &guess, &program, &pl.format_profile))) goto done;
        if (!signature) {
            sig = guess;
            pl.signature = sig;
            *inferred = true;
            fprintf(stderr, "note: %s was saved by Python DSPy, which records no signature: read it from the "
                            "instructions as \"%s\" (a %s); field types are unknown there, so every output is a str "
                            "(give --signature with the exact types, e.g. a Literal, to send the exact prompts)\n",
                    path, sig, program);
        } else {
            free(guess);
        }
        pl.program = program;
    }
    st = dspy_program_load(path, &pl, out);
done:
    free(sig);
    dspy_json_decref(state);
    return st;
}

/* ---- model paths ------------------------------------------------------------------------------ */

/* The absolute folder of `path` (malloc'd). */
static char *folder_of(const char *path) {
    char *abs = realpath(path, NULL);
    if (!abs) return NULL;
    char *slash = strrchr(abs, '/');
    if (slash == abs) slash[1] = '\0';
    else if (slash) *slash = '\0';
    return abs;
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

typedef dspy_status (*rewrite_fn)(const char *dir, const char *model_path, const void *ctx, dspy_str *out);

/* Replaces the model of every distinct "openai/local:" LM of `m` with what `fn` gives. */
static dspy_status rewrite_local(dspy_module *m, const char *dir, rewrite_fn fn, const void *ctx) {
    dspy_named_predictor *np = NULL;
    size_t n = 0;
    dspy_status st = dspy_module_named_predictors(m, &np, &n);
    for (size_t i = 0; !st && i < n; i++) {
        dspy_lm *lm = dspy_predict_lm(np[i].predictor);
        const char *model = lm ? dspy_lm_model(lm) : NULL;
        if (!model || strncmp(model, "openai/local:", 13) != 0) continue;
        dspy_str nm = DSPY_STR_INIT;
        if ((st = fn(dir, model + 13, ctx, &nm)) || !nm.len) {
            dspy_str_free(&nm);
            continue;
        }
        dspy_json *ov = dspy_json_object();
        dspy_lm *copy = NULL;
        st = ov && dspy_str_ok(&nm) ? dspy_json_set_str(ov, "model", dspy_str_cstr(&nm))
                                    : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_lm_copy(lm, ov, &copy);
        /* every predictor sharing this LM gets the same copy */
        for (size_t j = i; !st && j < n; j++)
            if (dspy_predict_lm(np[j].predictor) == lm && j != i) st = dspy_module_set_lm(np[j].predictor, copy);
        if (!st) st = dspy_module_set_lm(np[i].predictor, copy);
        dspy_lm_free(copy);
        dspy_json_decref(ov);
        dspy_str_free(&nm);
    }
    dspy_named_predictors_free(np, n);
    return st;
}

static dspy_status resolve_one(const char *dir, const char *model_path, const void *ctx, dspy_str *out) {
    const char *override = ctx;
    if (override) {
        char *abs = realpath(override, NULL);
        if (!abs || !is_dir(abs)) {
            free(abs);
            return dspy_fail(DSPY_ERR_NOTFOUND, "--model %s: not a model directory", override);
        }
        dspy_str_appendf(out, "openai/local:%s", abs);
        free(abs);
        return DSPY_OK;
    }
    if (model_path[0] != '/') dspy_str_appendf(out, "openai/local:%s/%s", dir, model_path);
    const char *p = out->len ? dspy_str_cstr(out) + 13 : model_path;
    if (!is_dir(p))
        return dspy_fail(DSPY_ERR_NOTFOUND, "the program's model directory %s does not exist (moved?); point the "
                         "program at it with --model DIR", p);
    return DSPY_OK;
}

dspy_status program_file_resolve_models(dspy_module *m, const char *program_path, const char *model_dir) {
    char *dir = folder_of(program_path);
    if (!dir) return dspy_fail(DSPY_ERR_NOTFOUND, "%s: cannot resolve its folder", program_path);
    dspy_status st = rewrite_local(m, dir, resolve_one, model_dir);
    free(dir);
    return st;
}

static dspy_status relativize_one(const char *dir, const char *model_path, const void *ctx, dspy_str *out) {
    (void)ctx;
    size_t n = strlen(dir);
    char *abs = realpath(model_path, NULL);
    const char *p = abs ? abs : model_path;
    if (strncmp(p, dir, n) == 0 && p[n] == '/' && p[n + 1]) dspy_str_appendf(out, "openai/local:%s", p + n + 1);
    free(abs);
    return DSPY_OK;
}

dspy_status program_file_relativize_models(dspy_module *m, const char *program_path) {
    /* the file may not exist yet: resolve its folder */
    dspy_str d = DSPY_STR_INIT;
    const char *slash = strrchr(program_path, '/');
    if (slash) dspy_str_appendn(&d, program_path, (size_t)(slash - program_path) + (slash == program_path));
    else dspy_str_append(&d, ".");
    char *dir = dspy_str_ok(&d) ? realpath(dspy_str_cstr(&d), NULL) : NULL;
    dspy_str_free(&d);
    if (!dir) return dspy_fail(DSPY_ERR_NOTFOUND, "%s: its folder does not exist", program_path);
    dspy_status st = rewrite_local(m, dir, relativize_one, NULL);
    free(dir);
    return st;
}
