/* test_train_ref.c — the C training step against PyTorch (fixtures by scripts/make_ref_train.py:
 * torch 2.11, transformers 5.17 eager attention with a 4D block-diagonal causal mask, peft).
 *
 * For each case of tests/ref/train/train_ref.json (full fine-tuning and LoRA on tiny random
 * Llama/Qwen2 models, one packed sequence of three examples): the summed loss within 1e-4
 * relative, and every trainable tensor's gradient within 1e-3 relative (norm of the difference
 * over the norm of PyTorch's), plus the whole gradient vector likewise. LoRA cases load
 * PyTorch's initial A and B. Skips cleanly when the fixtures are absent.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dspy/model.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"
#include "train/backward.h"

#define LOSS_TOL 1e-4
#define GRAD_TOL 1e-3

static int32_t *ints(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *v = malloc(*n * sizeof *v);
    for (size_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

/* Gradient of `p` against the reference tensor (rows listed in `sparse`, or all); adds to the
 * whole-vector sums. Returns the relative error. */
static double compare(const dspy_param *p, const dspy_tensor_info *ref, json_t *sparse, double *d2_all,
                      double *r2_all) {
    size_t n = (size_t)dspy_tensor_numel(ref);
    float *r = malloc(n * sizeof(float));
    CHECK_OK(dspy_tensor_to_f32(ref, r));
    double d2 = 0, r2 = 0;
    if (sparse) {
        size_t cols = (size_t)p->shape[1], nrows = json_array_size(sparse);
        CHECK_U64(n, nrows * cols);
        char *is_ref = calloc((size_t)p->shape[0], 1);
        for (size_t k = 0; k < nrows; k++) {
            size_t row = (size_t)json_integer_value(json_array_get(sparse, k));
            is_ref[row] = 1;
            for (size_t c = 0; c < cols; c++) {
                double d = p->g[row * cols + c] - (double)r[k * cols + c];
                d2 += d * d;
                r2 += (double)r[k * cols + c] * r[k * cols + c];
            }
        }
        for (size_t row = 0; row < (size_t)p->shape[0]; row++) /* PyTorch's other rows are exactly 0 */
            if (!is_ref[row])
                for (size_t c = 0; c < cols; c++) d2 += (double)p->g[row * cols + c] * p->g[row * cols + c];
        free(is_ref);
    } else {
        CHECK_U64(n, p->n);
        for (size_t i = 0; i < n && i < p->n; i++) {
            double d = p->g[i] - (double)r[i];
            d2 += d * d;
            r2 += (double)r[i] * r[i];
        }
    }
    free(r);
    *d2_all += d2;
    *r2_all += r2;
    return r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
}

static void run_case(json_t *cj, const dspy_train_seq *s) {
    const char *name = json_string_value(json_object_get(cj, "name"));
    const char *mode = json_string_value(json_object_get(cj, "mode"));
    dspy_str dir = DSPY_STR_INIT, file = DSPY_STR_INIT;
    dspy_str_appendf(&dir, "tests/ref/models/%s", json_string_value(json_object_get(cj, "model")));
    dspy_str_appendf(&file, "tests/ref/train/%s", json_string_value(json_object_get(cj, "file")));
    dspy_model *m = NULL;
    dspy_safetensors *ref = NULL;
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_model_load(test_source(dspy_str_cstr(&dir)), NULL, &m));
    CHECK_OK(dspy_safetensors_open(test_source(dspy_str_cstr(&file)), &ref));
    if (!m || !ref) goto done;
    bool lora = strcmp(mode, "lora") == 0;
    dspy_lora_config lc = dspy_lora_config_default();
    if (lora) {
        json_t *lj = json_object_get(cj, "lora");
        lc.r = (int32_t)json_integer_value(json_object_get(lj, "r"));
        lc.alpha = (float)json_number_value(json_object_get(lj, "alpha"));
        lc.dropout = 0;
    }
    CHECK_OK(dspy_trainable_new(m, lora ? &lc : NULL, 1, &t));
    if (!t) goto done;
    CHECK_INT(dspy_trainable_nparams(t), json_integer_value(json_object_get(cj, "n_tensors")));
    if (lora) { /* PyTorch's initial adapters */
        int loaded = 0;
        for (size_t i = 0; i < dspy_trainable_nparams(t); i++) {
            dspy_param *p = dspy_trainable_param(t, i);
            dspy_str key = DSPY_STR_INIT;
            dspy_str_appendf(&key, "init.%s", p->name);
            const dspy_tensor_info *ti = dspy_safetensors_find(ref, dspy_str_cstr(&key));
            dspy_str_free(&key);
            if (ti && (size_t)dspy_tensor_numel(ti) == p->n && ti->shape[0] == p->shape[0]) {
                CHECK_OK(dspy_tensor_to_f32(ti, p->w));
                loaded++;
            }
        }
        CHECK_INT(loaded, dspy_trainable_nparams(t));
    }
    double loss = 0;
    int64_t n = 0;
    CHECK_OK(dspy_trainable_step(t, s, 1.0f, &loss, &n));
    double want = json_number_value(json_object_get(cj, "loss_sum"));
    CHECK_INT(n, json_integer_value(json_object_get(cj, "n_labels")));
    double lrel = fabs(loss - want) / fabs(want);
    check_report(lrel <= LOSS_TOL, __FILE__, __LINE__, "%s: loss %.9g vs PyTorch %.9g (rel %.3g > %g)", name, loss,
                 want, lrel, LOSS_TOL);
    double d2 = 0, r2 = 0, worst = 0;
    const char *worst_name = "";
    json_t *sparse = json_object_get(cj, "sparse_rows");
    for (size_t i = 0; i < dspy_trainable_nparams(t); i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        const dspy_tensor_info *ti = dspy_safetensors_find(ref, p->name);
        check_report(ti != NULL, __FILE__, __LINE__, "%s: no reference gradient for %s", name, p->name);
        if (!ti) continue;
        double rel = compare(p, ti, json_object_get(sparse, p->name), &d2, &r2);
        check_report(rel <= GRAD_TOL, __FILE__, __LINE__, "%s: gradient of %s: rel err %.3g > %g", name, p->name, rel,
                     GRAD_TOL);
        if (rel > worst) worst = rel, worst_name = p->name;
    }
    double all = sqrt(d2 / r2);
    CHECK(all <= GRAD_TOL);
    printf("  %-26s loss %.6f (PyTorch %.6f, rel %.1e); grads: all rel %.1e, worst tensor %.1e (%s)\n", name, loss,
           want, lrel, all, worst, worst_name);
done:
    dspy_trainable_free(t);
    dspy_safetensors_free(ref);
    dspy_model_free(m);
    dspy_str_free(&dir);
    dspy_str_free(&file);
}

int main(void) {
    const char *path = test_source("tests/ref/train/train_ref.json");
    if (access(path, R_OK) != 0) {
        check_skip("tests/ref/train/train_ref.json is absent (run scripts/make_ref_train.py)");
        return check_summary("test_train_ref");
    }
    json_error_t err;
    json_t *man = json_load_file(path, 0, &err);
    CHECK(man != NULL);
    if (!man) return check_summary("test_train_ref");
    json_t *b = json_object_get(man, "batch");
    size_t T = 0, n2 = 0, n3 = 0, n4 = 0;
    int32_t *ids = ints(json_object_get(b, "ids"), &T), *pos = ints(json_object_get(b, "pos"), &n2);
    int32_t *seg = ints(json_object_get(b, "seg"), &n3), *labels = ints(json_object_get(b, "labels"), &n4);
    CHECK(T > 0 && n2 == T && n3 == T && n4 == T);
    dspy_train_seq s = {ids, pos, labels, seg, (int32_t)T, 0};
    size_t i;
    json_t *cj;
    check_current = "cases";
    CHECK(json_array_size(json_object_get(man, "cases")) >= 5);
    json_array_foreach(json_object_get(man, "cases"), i, cj) run_case(cj, &s);
    free(ids), free(pos), free(seg), free(labels);
    json_decref(man);
    return check_summary("test_train_ref");
}
