/* checkpoint.c — training checkpoints written atomically, found, and restored (train/checkpoint.h).
 *
 * Weights and AdamW moments are fp32 safetensors (exact, so a resumed run continues bit for
 * bit); the small state is JSON. The directory is assembled under a temporary name and renamed
 * into place; the directory entry is fsync'ed so the rename survives a crash. Follows the
 * Hugging Face Trainer's checkpoint-N naming (not its file set: no pickles here).
 */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dspy/json.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"

/* Removes a directory holding only files (what checkpoints are). */
static dspy_status remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? DSPY_OK : dspy_fail(DSPY_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    struct dirent *e;
    dspy_status st = DSPY_OK;
    while ((e = readdir(d)) && !st) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        dspy_str p = DSPY_STR_INIT;
        dspy_str_appendf(&p, "%s/%s", dir, e->d_name);
        if (unlink(dspy_str_cstr(&p)) != 0 && errno != ENOENT)
            st = dspy_fail(DSPY_ERR_IO, "%s: cannot remove: %s", dspy_str_cstr(&p), strerror(errno));
        dspy_str_free(&p);
    }
    closedir(d);
    if (!st && rmdir(dir) != 0 && errno != ENOENT)
        st = dspy_fail(DSPY_ERR_IO, "%s: cannot remove: %s", dir, strerror(errno));
    return st;
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* N when `name` is "<prefix>N" with N all digits, else -1. */
static int64_t step_of(const char *name, const char *prefix) {
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0 || !name[pl]) return -1;
    int64_t n = 0;
    for (const char *c = name + pl; *c; c++) {
        if (*c < '0' || *c > '9' || n > INT64_MAX / 10 - 10) return -1;
        n = n * 10 + (*c - '0');
    }
    return n;
}

typedef struct {
    int64_t *steps;
    size_t n, cap;
} steplist;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Steps of the checkpoint-N directories (sorted) in out_dir; removes .tmp-checkpoint-* when
 * clean_tmp (and every checkpoint-* too when remove_all). */
static dspy_status scan(const char *out_dir, bool clean_tmp, bool remove_all, steplist *out) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(out_dir);
    if (!d) return errno == ENOENT ? DSPY_OK : dspy_fail(DSPY_ERR_IO, "%s: cannot open: %s", out_dir, strerror(errno));
    struct dirent *e;
    dspy_status st = DSPY_OK;
    while ((e = readdir(d)) && !st) {
        int64_t s = step_of(e->d_name, "checkpoint-");
        bool tmp = step_of(e->d_name, ".tmp-checkpoint-") >= 0;
        if ((tmp && clean_tmp) || (s >= 0 && remove_all)) {
            dspy_str p = DSPY_STR_INIT;
            dspy_str_appendf(&p, "%s/%s", out_dir, e->d_name);
            st = remove_dir(dspy_str_cstr(&p));
            dspy_str_free(&p);
            continue;
        }
        if (s < 0) continue;
        if (out->n == out->cap) {
            size_t nc = out->cap ? out->cap * 2 : 8;
            int64_t *nv = realloc(out->steps, nc * sizeof *nv);
            if (!nv) {
                st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
                break;
            }
            out->steps = nv;
            out->cap = nc;
        }
        out->steps[out->n++] = s;
    }
    closedir(d);
    if (st) {
        free(out->steps);
        memset(out, 0, sizeof *out);
        return st;
    }
    if (out->n) qsort(out->steps, out->n, sizeof *out->steps, cmp_i64);
    return DSPY_OK;
}

dspy_status dspy_ckpt_remove_all(const char *out_dir) {
    steplist sl;
    dspy_status st = scan(out_dir, true, true, &sl);
    free(sl.steps);
    return st;
}

/* ---- writing ------------------------------------------------------------------------------- */

static void fill_spec(dspy_tensor_out *t, const char *name, const dspy_param *p, const float *data) {
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = DSPY_DTYPE_F32;
    t->ndim = p->ndim;
    t->shape[0] = p->shape[0];
    t->shape[1] = p->ndim == 2 ? p->shape[1] : 0;
    t->data = data;
}

static dspy_status write_json(const char *dir, const char *file, dspy_json *j) {
    if (!j) return dspy_fail(DSPY_ERR_NOMEM, "checkpoint: out of memory");
    dspy_str text = DSPY_STR_INIT, path = DSPY_STR_INIT;
    dspy_status st = dspy_json_dump(j, DSPY_JSON_INDENT(2), &text);
    dspy_json_decref(j);
    dspy_str_append(&text, "\n");
    dspy_str_appendf(&path, "%s/%s", dir, file);
    if (!st && (!dspy_str_ok(&text) || !dspy_str_ok(&path))) st = dspy_fail(DSPY_ERR_NOMEM, "checkpoint: out of memory");
    if (!st) st = dspy_write_file(path.ptr, text.ptr, text.len);
    dspy_str_free(&text);
    dspy_str_free(&path);
    return st;
}

static dspy_json *state_json(const dspy_ckpt_state *st, bool lora) {
    dspy_json *j = dspy_json_object();
    dspy_json *mt = dspy_json_array();
    if (!j || !mt) {
        dspy_json_decref(j);
        dspy_json_decref(mt);
        return NULL;
    }
    char rng[32];
    snprintf(rng, sizeof rng, "%016llx", (unsigned long long)st->dropout_rng);
    for (int i = 0; i < DSPY_PYRANDOM_N; i++) dspy_json_append(mt, dspy_json_int(st->data_rng.mt[i]));
    dspy_json *rs = dspy_json_object();
    if (rs) {
        dspy_json_set(rs, "mt", mt);
        dspy_json_set(rs, "mti", dspy_json_int(st->data_rng.mti));
    } else {
        dspy_json_decref(mt);
    }
    dspy_json_set(j, "format", dspy_json_string("dspy.c trainer checkpoint 1"));
    dspy_json_set(j, "global_step", dspy_json_int(st->step));
    dspy_json_set(j, "epoch", dspy_json_int(st->epoch));
    dspy_json_set(j, "sequences_done_in_epoch", dspy_json_int(st->seq_pos));
    dspy_json_set(j, "dropout_rng", dspy_json_string(rng));
    dspy_json_set(j, "data_order_rng", rs);
    dspy_json_set(j, "elapsed_s", dspy_json_real(st->elapsed_s));
    dspy_json_set(j, "use_peft", dspy_json_bool(lora));
    dspy_json_set(j, "fingerprint", dspy_json_string(st->fingerprint));
    return j;
}

static dspy_json *adapter_config(const dspy_lora_config *lora) {
    dspy_json *j = dspy_json_object(), *tm = dspy_json_array();
    static const char *mods[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    if (!j || !tm) {
        dspy_json_decref(j);
        dspy_json_decref(tm);
        return NULL;
    }
    for (int i = 0; i < 7; i++) dspy_json_append(tm, dspy_json_string(mods[i]));
    dspy_json_set(j, "peft_type", dspy_json_string("LORA"));
    dspy_json_set(j, "task_type", dspy_json_string("CAUSAL_LM"));
    dspy_json_set(j, "r", dspy_json_int(lora->r));
    /* the float settings as their shortest decimal (0.05, not 0.05000000074505806) */
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", (double)lora->alpha);
    dspy_json_set(j, "lora_alpha", dspy_json_real(strtod(buf, NULL)));
    snprintf(buf, sizeof buf, "%.7g", (double)lora->dropout);
    dspy_json_set(j, "lora_dropout", dspy_json_real(strtod(buf, NULL)));
    dspy_json_set(j, "bias", dspy_json_string("none"));
    dspy_json_set(j, "target_modules", tm);
    return j;
}

dspy_status dspy_ckpt_save(const char *out_dir, const dspy_model_config *cfg, const dspy_lora_config *lora,
                           dspy_trainable *t, dspy_optimizer *o, const dspy_ckpt_state *st, int32_t keep,
                           char **path) {
    if (path) *path = NULL;
    bool is_lora = lora && lora->enabled;
    dspy_str tmp = DSPY_STR_INIT, fin = DSPY_STR_INIT, f = DSPY_STR_INIT;
    dspy_str_appendf(&tmp, "%s/.tmp-checkpoint-%lld", out_dir, (long long)st->step);
    dspy_str_appendf(&fin, "%s/checkpoint-%lld", out_dir, (long long)st->step);
    size_t np = dspy_trainable_nparams(t);
    dspy_tensor_out *w = calloc(np ? np : 1, sizeof *w), *m = calloc(np ? 2 * np : 1, sizeof *m);
    char **names = calloc(np ? 2 * np : 1, sizeof *names);
    dspy_status s = DSPY_OK;
    if (!w || !m || !names || !dspy_str_ok(&tmp) || !dspy_str_ok(&fin)) {
        s = dspy_fail(DSPY_ERR_NOMEM, "checkpoint: out of memory");
        goto done;
    }
    /* a device trainer's weights and moments come back to their host mirrors first */
    if ((s = dspy_trainable_to_host(t)) || (s = dspy_optimizer_to_host(o))) goto done;
    if ((s = remove_dir(tmp.ptr))) goto done;
    if (mkdir(tmp.ptr, 0755) != 0) {
        s = dspy_fail(DSPY_ERR_IO, "%s: cannot create directory: %s", tmp.ptr, strerror(errno));
        goto done;
    }
    for (size_t i = 0; i < np; i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        fill_spec(&w[i], p->name, p, p->w);
        if (asprintf(&names[2 * i], "%s.exp_avg", p->name) < 0) names[2 * i] = NULL;
        if (asprintf(&names[2 * i + 1], "%s.exp_avg_sq", p->name) < 0) names[2 * i + 1] = NULL;
        if (!names[2 * i] || !names[2 * i + 1]) {
            s = dspy_fail(DSPY_ERR_NOMEM, "checkpoint: out of memory");
            goto done;
        }
        fill_spec(&m[2 * i], names[2 * i], p, dspy_optimizer_exp_avg(o, i));
        fill_spec(&m[2 * i + 1], names[2 * i + 1], p, dspy_optimizer_exp_avg_sq(o, i));
    }
    static const char *const meta[] = {"producer", "dspy.c trainer", NULL};
    dspy_str_appendf(&f, "%s/%s", tmp.ptr, is_lora ? "adapter_model.safetensors" : "model.safetensors");
    if ((s = dspy_safetensors_write(dspy_str_cstr(&f), w, np, meta))) goto done;
    dspy_str_clear(&f);
    dspy_str_appendf(&f, "%s/optimizer.safetensors", tmp.ptr);
    if ((s = dspy_safetensors_write(dspy_str_cstr(&f), m, 2 * np, meta))) goto done;
    if (is_lora) {
        if ((s = write_json(tmp.ptr, "adapter_config.json", adapter_config(lora)))) goto done;
    } else {
        dspy_model_config c32 = *cfg;
        c32.dtype = DSPY_DTYPE_F32;
        if ((s = dspy_write_text_owned(tmp.ptr, "config.json", dspy_model_config_to_json(&c32)))) goto done;
        if ((s = dspy_write_text_owned(tmp.ptr, "generation_config.json", dspy_generation_config_to_json(&c32)))) goto done;
    }
    if ((s = write_json(tmp.ptr, "trainer_state.json", state_json(st, is_lora)))) goto done;
    fsync_dir(tmp.ptr);
    if ((s = remove_dir(fin.ptr))) goto done;
    if (rename(tmp.ptr, fin.ptr) != 0) {
        s = dspy_fail(DSPY_ERR_IO, "%s: cannot rename into %s: %s", tmp.ptr, fin.ptr, strerror(errno));
        goto done;
    }
    fsync_dir(out_dir);
    if (keep > 0) {
        steplist sl;
        if ((s = scan(out_dir, false, false, &sl))) goto done;
        for (size_t i = 0; i + (size_t)keep < sl.n && !s; i++) {
            if (sl.steps[i] == st->step) continue;
            dspy_str old = DSPY_STR_INIT;
            dspy_str_appendf(&old, "%s/checkpoint-%lld", out_dir, (long long)sl.steps[i]);
            s = remove_dir(dspy_str_cstr(&old));
            dspy_str_free(&old);
        }
        free(sl.steps);
        if (s) goto done;
    }
    if (path) {
        *path = dspy_str_take(&fin);
        if (!*path) s = DSPY_ERR_NOMEM;
    }
done:
    if (s && tmp.ptr) {
        dspy_status keep_st = s;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dspy_errmsg());
        remove_dir(tmp.ptr);
        dspy_fail(keep_st, "%s", msg);
    }
    for (size_t i = 0; names && i < 2 * np; i++) free(names[i]);
    free(names);
    free(w);
    free(m);
    dspy_str_free(&tmp);
    dspy_str_free(&fin);
    dspy_str_free(&f);
    return s;
}

/* ---- finding and loading ------------------------------------------------------------------- */

dspy_status dspy_ckpt_find_latest(const char *out_dir, char **path, int64_t *step) {
    *path = NULL;
    *step = 0;
    steplist sl;
    dspy_status st = scan(out_dir, true, false, &sl);
    if (st) return st;
    for (size_t i = sl.n; i-- > 0;) {
        dspy_str p = DSPY_STR_INIT, s = DSPY_STR_INIT;
        dspy_str_appendf(&p, "%s/checkpoint-%lld", out_dir, (long long)sl.steps[i]);
        dspy_str_appendf(&s, "%s/trainer_state.json", dspy_str_cstr(&p));
        struct stat sb;
        bool ok = stat(dspy_str_cstr(&s), &sb) == 0;
        dspy_str_free(&s);
        if (ok) {
            *path = dspy_str_take(&p);
            *step = sl.steps[i];
            free(sl.steps);
            return *path ? DSPY_OK : DSPY_ERR_NOMEM;
        }
        dspy_str_free(&p);
    }
    free(sl.steps);
    return dspy_fail(DSPY_ERR_NOTFOUND, "%s: no checkpoint-N directory to resume from", out_dir);
}

/* Copies tensor `name` of f (fp32, n elements) into dst. */
static dspy_status read_tensor(const dspy_safetensors *f, const char *file, const char *name, float *dst, size_t n) {
    const dspy_tensor_info *ti = dspy_safetensors_find(f, name);
    if (!ti) return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is missing", file, name);
    if (ti->dtype != DSPY_DTYPE_F32 || (size_t)dspy_tensor_numel(ti) != n)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is %s with %lld elements; expected F32 with %zu", file,
                         name, dspy_dtype_name(ti->dtype), (long long)dspy_tensor_numel(ti), n);
    memcpy(dst, ti->data, n * sizeof(float));
    return DSPY_OK;
}

static dspy_status load_state(const char *dir, dspy_ckpt_state *st, bool *lora) {
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/trainer_state.json", dir);
    dspy_json *j = NULL;
    dspy_status s = dspy_json_load(dspy_str_cstr(&p), &j);
    if (s) goto done;
    memset(st, 0, sizeof *st);
    const char *where = dspy_str_cstr(&p);
    const char *rng = NULL, *fp = NULL;
    if ((s = dspy_json_get_int(j, "global_step", where, &st->step)) || (s = dspy_json_get_int(j, "epoch", where, &st->epoch)) ||
        (s = dspy_json_get_int(j, "sequences_done_in_epoch", where, &st->seq_pos)) ||
        (s = dspy_json_get_strv(j, "dropout_rng", where, &rng)) ||
        (s = dspy_json_get_strv(j, "fingerprint", where, &fp)) ||
        (s = dspy_json_get_num(j, "elapsed_s", where, &st->elapsed_s)))
        goto done;
    st->dropout_rng = strtoull(rng, NULL, 16);
    snprintf(st->fingerprint, sizeof st->fingerprint, "%s", fp);
    *lora = dspy_json_bool_or(j, "use_peft", false);
    dspy_json *rs = dspy_json_get(j, "data_order_rng");
    dspy_json *mt = rs ? dspy_json_get(rs, "mt") : NULL;
    if (!mt || dspy_json_size(mt) != DSPY_PYRANDOM_N) {
        s = dspy_fail(DSPY_ERR_FORMAT, "%s: \"data_order_rng\" must hold \"mt\" with %d words", where, DSPY_PYRANDOM_N);
        goto done;
    }
    for (int i = 0; i < DSPY_PYRANDOM_N; i++) st->data_rng.mt[i] = (uint32_t)dspy_json_intval(dspy_json_at(mt, i));
    st->data_rng.mti = (int)dspy_json_int_or(rs, "mti", DSPY_PYRANDOM_N);
    if (st->step < 0 || st->epoch < 0 || st->seq_pos < 0 || st->data_rng.mti < 0 || st->data_rng.mti > DSPY_PYRANDOM_N)
        s = dspy_fail(DSPY_ERR_FORMAT, "%s: negative or out-of-range counters", where);
done:
    dspy_json_decref(j);
    dspy_str_free(&p);
    return s;
}

static dspy_status read_state(const char *dir, const char *fingerprint, dspy_ckpt_state *st, bool *lora) {
    dspy_status s = load_state(dir, st, lora);
    if (s) return s;
    if (strcmp(st->fingerprint, fingerprint) != 0)
        return dspy_fail(DSPY_ERR_ARG,
                         "%s was written for other settings, data or base model (fingerprint %.12s..., this run "
                         "%.12s...); resume with the same train_kwargs, data file and model, or start afresh "
                         "without resume",
                         dir, st->fingerprint, fingerprint);
    return DSPY_OK;
}

dspy_status dspy_ckpt_read_state(const char *dir, const char *fingerprint, dspy_ckpt_state *st) {
    bool lora = false;
    return read_state(dir, fingerprint, st, &lora);
}

dspy_status dspy_ckpt_load(const char *dir, const char *fingerprint, dspy_trainable *t, dspy_optimizer *o,
                           dspy_ckpt_state *st) {
    bool lora = false;
    dspy_status s = read_state(dir, fingerprint, st, &lora);
    if (s) return s;
    dspy_str wp = DSPY_STR_INIT, op = DSPY_STR_INIT;
    dspy_str_appendf(&wp, "%s/%s", dir, lora ? "adapter_model.safetensors" : "model.safetensors");
    dspy_str_appendf(&op, "%s/optimizer.safetensors", dir);
    dspy_safetensors *wf = NULL, *of = NULL;
    if ((s = dspy_safetensors_open(dspy_str_cstr(&wp), &wf)) || (s = dspy_safetensors_open(dspy_str_cstr(&op), &of)))
        goto done;
    size_t np = dspy_trainable_nparams(t);
    for (size_t i = 0; i < np && !s; i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        s = read_tensor(wf, dspy_str_cstr(&wp), p->name, p->w, p->n);
        dspy_str nm = DSPY_STR_INIT;
        dspy_str_appendf(&nm, "%s.exp_avg", p->name);
        if (!s) s = read_tensor(of, dspy_str_cstr(&op), dspy_str_cstr(&nm), dspy_optimizer_exp_avg(o, i), p->n);
        dspy_str_append(&nm, "_sq");
        if (!s) s = read_tensor(of, dspy_str_cstr(&op), dspy_str_cstr(&nm), dspy_optimizer_exp_avg_sq(o, i), p->n);
        dspy_str_free(&nm);
    }
    /* a device trainer's mirrors go up to the device */
    if (!s && !(s = dspy_trainable_to_device(t)) && !(s = dspy_optimizer_to_device(o))) {
        dspy_optimizer_set_steps(o, st->step);
        dspy_trainable_rng_set(t, st->dropout_rng);
    }
done:
    dspy_safetensors_free(wf);
    dspy_safetensors_free(of);
    dspy_str_free(&wp);
    dspy_str_free(&op);
    return s;
}
