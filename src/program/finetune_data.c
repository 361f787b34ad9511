/* finetune_data.c — dspy/bootstrap.h: fine-tuning records from trace data, the JSONL file,
 * LocalProvider's output_dir and train kwargs.
 *
 * Follows DSPy 3.3.1 BootstrapFinetune._prepare_finetune_data and build_call_data_from_trace
 * (spec §10.3, CC-29.1, CC-29.3), dspy/clients/utils_finetune.py (get_finetune_directory,
 * save_data) and LocalProvider.finetune / create_output_dir (§10.5, CC-30.4–5). The file name is
 * the SHA-256 of the file's bytes (spec §16.7) instead of DSPy's sha256(pickle.dumps(data)).
 */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dspy/adapter.h"
#include "dspy/bootstrap.h"
#include "dspy/hash.h"
#include "dspy/random.h"
#include "dspy/rng.h"
#include "dspy/settings.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "fine-tuning data: out of memory"); }

dspy_finetune_data_params dspy_finetune_data_params_default(void) {
    dspy_finetune_data_params p = {
        .pred_ind = -1,
        .filter_by_score = false,
        .exclude_demos = false,
        .format = NULL,
        .format_user = NULL,
        .profile = -1,
    };
    return p;
}

typedef struct default_fmt {
    dspy_adapter_kind adapter;
    int profile;
} default_fmt;

/* ChatAdapter.format_finetune_data(signature=pred.signature, demos, inputs, outputs). */
static dspy_status format_default(void *user, const dspy_trace_step *step, const dspy_json *demos, dspy_json **out) {
    const default_fmt *f = user;
    const dspy_signature *sig = dspy_predict_signature(step->predictor);
    if (!sig) return dspy_fail(DSPY_ERR_ARG, "fine-tuning data: a trace step's predictor is not a Predict");
    dspy_profile prof = f->profile >= 0 ? (dspy_profile)f->profile : dspy_predict_profile(step->predictor);
    return dspy_adapter_format_finetune_data(f->adapter, prof, sig, demos, step->inputs,
                                             dspy_prediction_fields(step->prediction), out);
}

dspy_status dspy_finetune_data_prepare(const dspy_trace_data *data, const dspy_finetune_data_params *params,
                                       dspy_json **out, dspy_finetune_data_counts *counts) {
    *out = NULL;
    dspy_finetune_data_params p = params ? *params : dspy_finetune_data_params_default();
    dspy_finetune_data_counts c = {0};
    default_fmt df = {dspy_settings_adapter(NULL), p.profile};
    dspy_finetune_format_fn fmt = p.format ? p.format : format_default;
    void *fmt_user = p.format ? p.format_user : &df;
    dspy_json *records = dspy_json_array(), *empty = dspy_json_array();
    dspy_json **list = NULL;
    dspy_status st = DSPY_OK;
    if (!records || !empty) {
        st = nomem();
        goto done;
    }
    for (size_t i = 0; i < dspy_trace_data_len(data); i++) {
        const dspy_trace_item *it = dspy_trace_data_item(data, i);
        c.items++;
        if (p.filter_by_score && !(it->has_score && it->score != 0)) {
            c.filtered_out++;
            continue;
        }
        if (it->failed || !it->prediction) {
            /* DSPy would crash formatting a FailedPrediction; we skip the example (§16.6) */
            c.failed++;
            continue;
        }
        size_t before = dspy_json_size(records);
        for (size_t k = 0; k < it->n_trace; k++) {
            if (p.pred_ind >= 0 && (uint64_t)p.pred_ind != k) continue;
            const dspy_trace_step *step = &it->trace[k];
            if (!step->prediction) continue;
            const dspy_json *demos = p.exclude_demos ? empty : dspy_predict_demos(step->predictor);
            dspy_json *rec = NULL;
            if ((st = fmt(fmt_user, step, demos ? demos : empty, &rec))) {
                dspy_fail_wrap(st, "fine-tuning data for example %zu, trace step %zu", it->example_ind, k);
                goto done;
            }
            if ((st = dspy_json_append(records, rec))) goto done;
        }
        if (dspy_json_size(records) > before) c.kept++;
    }
    /* random.Random(0).shuffle(data) */
    size_t n = dspy_json_size(records);
    c.records = n;
    if (n > 1) {
        if (!(list = malloc(n * sizeof *list))) {
            st = nomem();
            goto done;
        }
        for (size_t i = 0; i < n; i++) list[i] = dspy_json_incref(dspy_json_at(records, i));
        dspy_pyrandom r;
        dspy_pyrandom_seed(&r, 0);
        dspy_pyrandom_shuffle(&r, list, n, sizeof *list);
        dspy_json *shuffled = dspy_json_array();
        if (!shuffled) {
            st = nomem();
            goto done;
        }
        for (size_t i = 0; i < n && !st; i++) {
            st = dspy_json_append(shuffled, list[i]);
            list[i] = NULL;
        }
        dspy_json_decref(records);
        records = shuffled;
        if (st) goto done;
    }
    *out = records;
    records = NULL;
    if (counts) *counts = c;
done:
    for (size_t i = 0; list && i < n; i++) dspy_json_decref(list[i]);
    free(list);
    dspy_json_decref(records);
    dspy_json_decref(empty);
    return st;
}

/* ---- the folder and the file -------------------------------------------------------------------- */

/* os.path.abspath: joined with the working directory, "." and ".." resolved lexically, no
 * trailing or doubled slashes. */
static dspy_status abspath(const char *path, char **out) {
    *out = NULL;
    dspy_str full = DSPY_STR_INIT;
    if (path[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        if (!cwd) return dspy_fail(DSPY_ERR_IO, "cannot read the working directory: %s", strerror(errno));
        dspy_str_append(&full, cwd);
        dspy_str_appendc(&full, '/');
        free(cwd);
    }
    dspy_str_append(&full, path);
    if (!dspy_str_ok(&full)) return nomem();
    char *res = malloc(full.len + 2);
    if (!res) {
        dspy_str_free(&full);
        return nomem();
    }
    size_t n = 0;
    for (char *p = full.ptr; *p;) {
        while (*p == '/') p++;
        if (!*p) break;
        char *e = p;
        while (*e && *e != '/') e++;
        size_t l = (size_t)(e - p);
        if (l == 1 && p[0] == '.') {
        } else if (l == 2 && p[0] == '.' && p[1] == '.') {
            while (n > 0 && res[n - 1] != '/') n--;
            if (n > 0) n--;
        } else {
            res[n++] = '/';
            memcpy(res + n, p, l);
            n += l;
        }
        p = e;
    }
    if (n == 0) res[n++] = '/';
    res[n] = '\0';
    dspy_str_free(&full);
    *out = res;
    return DSPY_OK;
}

dspy_status dspy_finetune_dir(const char *dir, char **out) {
    *out = NULL;
    dspy_str d = DSPY_STR_INIT;
    const char *env;
    if (dir && *dir) {
        dspy_str_append(&d, dir);
    } else if ((env = getenv("DSPY_FINETUNEDIR")) && *env) {
        dspy_str_append(&d, env);
    } else if ((env = getenv("DSPY_CACHEDIR")) && *env) {
        dspy_str_appendf(&d, "%s/finetune", env);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home) return dspy_fail(DSPY_ERR_ARG, "no fine-tuning folder: set DSPY_FINETUNEDIR, DSPY_CACHEDIR or HOME");
        dspy_str_appendf(&d, "%s/.dspy_cache/finetune", home);
    }
    if (!dspy_str_ok(&d)) return nomem();
    char *abs;
    dspy_status st = abspath(dspy_str_cstr(&d), &abs);
    dspy_str_free(&d);
    if (st) return st;
    if ((st = dspy_mkdir_p(abs))) {
        free(abs);
        return dspy_fail_append(st, " (set DSPY_FINETUNEDIR to a writable folder)");
    }
    *out = abs;
    return DSPY_OK;
}

dspy_status dspy_finetune_data_write(const dspy_json *records, const char *dir, char **path) {
    *path = NULL;
    if (!records || dspy_json_typeof(records) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_ARG, "fine-tuning data: the records must be a JSON array");
    dspy_str body = DSPY_STR_INIT;
    for (size_t i = 0; i < dspy_json_size(records); i++) {
        dspy_status st = dspy_json_dump(dspy_json_at(records, i), DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &body);
        if (st) {
            dspy_str_free(&body);
            return st;
        }
        dspy_str_appendc(&body, '\n');
    }
    if (!dspy_str_ok(&body)) {
        dspy_str_free(&body);
        return nomem();
    }
    char hex[DSPY_SHA256_HEX_LEN + 1], *folder = NULL;
    dspy_status st = dspy_sha256_hex(body.ptr, body.len, hex);
    if (!st) st = dspy_finetune_dir(dir, &folder);
    dspy_str p = DSPY_STR_INIT;
    if (!st) {
        dspy_str_appendf(&p, "%s/%s.jsonl", folder, hex);
        if (!dspy_str_ok(&p)) st = nomem();
    }
    if (!st) st = dspy_write_file(dspy_str_cstr(&p), body.ptr, body.len);
    if (!st) *path = dspy_str_take(&p);
    dspy_str_free(&p);
    dspy_str_free(&body);
    free(folder);
    return st;
}

/* ---- LocalProvider: output_dir and train kwargs ------------------------------------------------- */

/* random.choices(string.ascii_lowercase + string.digits, k=6), from a per-process generator
 * seeded by the clock and the pid (the names only need to differ between runs). */
static void random_tag(char out[7]) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    static _Thread_local dspy_rng rng;
    static _Thread_local bool seeded;
    if (!seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        dspy_rng_seed(&rng, ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
                                (uint64_t)(uintptr_t)&rng);
        seeded = true;
    }
    for (int i = 0; i < 6; i++) out[i] = alphabet[dspy_rng_u64(&rng) % 36];
    out[6] = '\0';
}

dspy_status dspy_finetune_output_dir(const char *data_path, const char *model, char **out) {
    *out = NULL;
    if (!data_path || !model) return dspy_fail(DSPY_ERR_ARG, "finetune output_dir: a data path and a model are needed");
    if (strncmp(model, "openai/", 7) == 0) model += 7;
    if (strncmp(model, "local:", 6) == 0) model += 6;
    char tag[7], when[32];
    random_tag(tag);
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(when, sizeof when, "%Y-%m-%d_%H-%M-%S", &tmv);
    dspy_str id = DSPY_STR_INIT;
    dspy_str_appendf(&id, "_%s_", tag);
    for (const char *c = model; *c; c++) dspy_str_appendc(&id, *c == '/' ? '-' : *c);
    dspy_str_appendf(&id, "_%s", when);
    /* data_path.replace(".jsonl", "_" + model_identifier): every occurrence */
    dspy_str s = DSPY_STR_INIT;
    for (const char *p = data_path; *p;) {
        if (strncmp(p, ".jsonl", 6) == 0) {
            dspy_str_append(&s, dspy_str_cstr(&id));
            p += 6;
        } else {
            dspy_str_appendc(&s, *p++);
        }
    }
    bool ok = dspy_str_ok(&id) && dspy_str_ok(&s);
    dspy_str_free(&id);
    if (!ok) {
        dspy_str_free(&s);
        return nomem();
    }
    *out = dspy_str_take(&s);
    return *out ? DSPY_OK : nomem();
}

dspy_status dspy_finetune_train_kwargs(const dspy_json *user_kwargs, const char *output_dir, char **out) {
    *out = NULL;
    if (user_kwargs && dspy_json_typeof(user_kwargs) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "train_kwargs must be a JSON object, e.g. {\"num_train_epochs\": 3}");
    if (!output_dir) return dspy_fail(DSPY_ERR_ARG, "train_kwargs: no output_dir");
    dspy_json *kw = dspy_json_object();
    if (!kw) return nomem();
    dspy_status st = DSPY_OK;
    struct {
        const char *key;
        dspy_json *val;
    } defs[] = {
        {"device", dspy_json_null()},
        {"use_peft", dspy_json_bool(false)},
        {"num_train_epochs", dspy_json_int(5)},
        {"per_device_train_batch_size", dspy_json_int(1)},
        {"gradient_accumulation_steps", dspy_json_int(8)},
        {"learning_rate", dspy_json_real(1e-5)},
        {"max_seq_length", dspy_json_null()},
        {"packing", dspy_json_bool(true)},
        {"bf16", dspy_json_bool(true)},
        {"output_dir", dspy_json_string(output_dir)},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        if (st) dspy_json_decref(defs[i].val);
        else if (!defs[i].val) st = nomem();
        else st = dspy_json_set(kw, defs[i].key, defs[i].val); /* steals the value */
    }
    /* {**default_train_kwargs, **train_kwargs} */
    for (void *it = user_kwargs ? dspy_json_iter(user_kwargs) : NULL; !st && it; it = dspy_json_next(user_kwargs, it))
        st = dspy_json_set(kw, dspy_json_iter_key(it), dspy_json_copy(dspy_json_iter_value(it)));
    if (!st && !(*out = dspy_json_dumps(kw, DSPY_JSON_COMPACT | DSPY_JSON_UTF8))) st = nomem();
    dspy_json_decref(kw);
    return st;
}
