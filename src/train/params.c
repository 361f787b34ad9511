/* params.c — dspy_train_params: defaults, DSPy train_kwargs by name, validation (dspy/train.h).
 *
 * Key names are DSPy's train_kwargs and the Hugging Face TrainingArguments / SFTConfig /
 * LoraConfig fields it sets (dspy_behaviour.md §10.5-10.6); values are parsed from text the
 * way a CLI flag or a JSON train_kwargs value gives them.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dspy/str.h"
#include "dspy/train.h"

dspy_train_params dspy_train_params_default(void) {
    dspy_train_params p = {
        .num_train_epochs = 5,
        .per_device_train_batch_size = 1,
        .gradient_accumulation_steps = 8,
        .learning_rate = 1e-5,
        .max_seq_length = 4096,
        .packing = true,
        .bf16 = true,
        .use_peft = false,
        .output_dir = NULL,
        .device = NULL,
        .lr_scheduler_type = DSPY_LR_CONSTANT,
        .warmup_ratio = 0.03,
        .warmup_steps = 0,
        .weight_decay = 0.0,
        .max_grad_norm = 2.0,
        .adam_beta1 = 0.9,
        .adam_beta2 = 0.999,
        .adam_epsilon = 1e-8,
        .seed = 42,
        .save_steps = 10000,
        .save_total_limit = 1,
        .max_steps = -1,
        .lora_r = 32,
        .lora_alpha = 64.0,
        .lora_dropout = 0.05,
        .resume = false,
        .epoch_save_after_s = 300,
        .n_threads = 0,
        .cpu_kernels = NULL,
        .chat_date = NULL,
        .share_prefix = true,
    };
    return p;
}

const char *dspy_lr_schedule_name(dspy_lr_schedule s) {
    switch (s) {
    case DSPY_LR_CONSTANT: return "constant";
    case DSPY_LR_CONSTANT_WITH_WARMUP: return "constant_with_warmup";
    case DSPY_LR_LINEAR: return "linear";
    case DSPY_LR_COSINE: return "cosine";
    }
    return "?";
}

typedef enum { K_INT32, K_INT64, K_UINT64, K_DOUBLE, K_BOOL, K_STR, K_SCHED } kind;

typedef struct {
    const char *name;
    kind k;
    size_t off;
    bool none_ok; /* "None"/"null" accepted: NULL for strings, the default for max_seq_length
                     (4096, §16.4), 0 otherwise (max_grad_norm None: no clipping, as in HF;
                     save_total_limit None: keep all) */
} keydef;

#define F(field) offsetof(dspy_train_params, field)
static const keydef k_keys[] = {
    {"num_train_epochs", K_INT32, F(num_train_epochs), false},
    {"per_device_train_batch_size", K_INT32, F(per_device_train_batch_size), false},
    {"gradient_accumulation_steps", K_INT32, F(gradient_accumulation_steps), false},
    {"learning_rate", K_DOUBLE, F(learning_rate), false},
    {"max_seq_length", K_INT32, F(max_seq_length), true},
    {"packing", K_BOOL, F(packing), false},
    {"bf16", K_BOOL, F(bf16), false},
    {"use_peft", K_BOOL, F(use_peft), false},
    {"output_dir", K_STR, F(output_dir), true},
    {"device", K_STR, F(device), true},
    {"lr_scheduler_type", K_SCHED, F(lr_scheduler_type), false},
    {"warmup_ratio", K_DOUBLE, F(warmup_ratio), false},
    {"warmup_steps", K_INT32, F(warmup_steps), false},
    {"weight_decay", K_DOUBLE, F(weight_decay), false},
    {"max_grad_norm", K_DOUBLE, F(max_grad_norm), true},
    {"adam_beta1", K_DOUBLE, F(adam_beta1), false},
    {"adam_beta2", K_DOUBLE, F(adam_beta2), false},
    {"adam_epsilon", K_DOUBLE, F(adam_epsilon), false},
    {"seed", K_UINT64, F(seed), false},
    {"save_steps", K_INT32, F(save_steps), false},
    {"save_total_limit", K_INT32, F(save_total_limit), true},
    {"max_steps", K_INT64, F(max_steps), false},
    {"lora_r", K_INT32, F(lora_r), false},
    {"lora_alpha", K_DOUBLE, F(lora_alpha), false},
    {"lora_dropout", K_DOUBLE, F(lora_dropout), false},
    {"resume", K_BOOL, F(resume), false},
    {"epoch_save_after_s", K_DOUBLE, F(epoch_save_after_s), false},
    {"n_threads", K_INT32, F(n_threads), false},
    {"cpu_kernels", K_STR, F(cpu_kernels), true},
    {"chat_date", K_STR, F(chat_date), true},
    {"share_prefix", K_BOOL, F(share_prefix), false},
};
#undef F

static bool parse_bool(const char *v, bool *out) {
    static const char *t[] = {"true", "1", "yes", "on"}, *f[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, t[i]) == 0) return *out = true, true;
        if (strcasecmp(v, f[i]) == 0) return *out = false, true;
    }
    return false;
}

static bool parse_double(const char *v, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(d)) return false;
    *out = d;
    return true;
}

/* An integer, also written as an integral float ("5.0", "1e3"), as Python json gives it. */
static bool parse_int(const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno) {
        double d;
        if (!parse_double(v, &d) || d != floor(d) || d < (double)lo || d > (double)hi) return false;
        x = (long long)d;
    }
    if (x < lo || x > hi) return false;
    *out = x;
    return true;
}

static bool is_none(const char *v) {
    return strcmp(v, "None") == 0 || strcmp(v, "null") == 0 || strcmp(v, "none") == 0;
}

dspy_status dspy_train_params_set(dspy_train_params *p, const char *key, const char *value) {
    if (!p || !key || !value) return dspy_fail(DSPY_ERR_ARG, "train_kwargs: NULL key or value");
    dspy_str name = DSPY_STR_INIT;
    const char *k = key;
    while (*k == '-') k++; /* "--learning-rate" as well as "learning_rate" */
    for (; *k; k++) dspy_str_appendc(&name, *k == '-' ? '_' : *k);
    if (!dspy_str_ok(&name)) return dspy_fail(DSPY_ERR_NOMEM, "train_kwargs: out of memory");
    const keydef *d = NULL;
    for (size_t i = 0; i < sizeof k_keys / sizeof k_keys[0]; i++)
        if (strcmp(k_keys[i].name, dspy_str_cstr(&name)) == 0) d = &k_keys[i];
    if (!d) {
        dspy_str known = DSPY_STR_INIT;
        for (size_t i = 0; i < sizeof k_keys / sizeof k_keys[0]; i++)
            dspy_str_appendf(&known, "%s%s", i ? ", " : "", k_keys[i].name);
        dspy_status st = dspy_fail(DSPY_ERR_ARG, "train_kwargs: unknown key '%s'; known keys: %s", key,
                                   dspy_str_cstr(&known));
        dspy_str_free(&known);
        dspy_str_free(&name);
        return st;
    }
    dspy_str_free(&name);
    char *field = (char *)p + d->off;
    if (d->none_ok && is_none(value)) {
        if (d->k == K_STR) *(const char **)(void *)field = NULL;
        else if (d->k == K_DOUBLE) *(double *)(void *)field = 0.0;
        else if (d->off == offsetof(dspy_train_params, max_seq_length))
            *(int32_t *)(void *)field = dspy_train_params_default().max_seq_length;
        else *(int32_t *)(void *)field = 0;
        return DSPY_OK;
    }
    int64_t i64;
    double dbl;
    bool b;
    switch (d->k) {
    case K_INT32:
        if (!parse_int(value, INT32_MIN, INT32_MAX, &i64))
            return dspy_fail(DSPY_ERR_ARG, "train_kwargs: %s is '%s'; expected an integer", d->name, value);
        *(int32_t *)(void *)field = (int32_t)i64;
        return DSPY_OK;
    case K_INT64:
        if (!parse_int(value, INT64_MIN / 2, INT64_MAX / 2, &i64))
            return dspy_fail(DSPY_ERR_ARG, "train_kwargs: %s is '%s'; expected an integer", d->name, value);
        *(int64_t *)(void *)field = i64;
        return DSPY_OK;
    case K_UINT64:
        if (!parse_int(value, 0, INT64_MAX / 2, &i64))
            return dspy_fail(DSPY_ERR_ARG, "train_kwargs: %s is '%s'; expected a non-negative integer", d->name,
                             value);
        *(uint64_t *)(void *)field = (uint64_t)i64;
        return DSPY_OK;
    case K_DOUBLE:
        if (!parse_double(value, &dbl))
            return dspy_fail(DSPY_ERR_ARG, "train_kwargs: %s is '%s'; expected a number", d->name, value);
        *(double *)(void *)field = dbl;
        return DSPY_OK;
    case K_BOOL:
        if (!parse_bool(value, &b))
            return dspy_fail(DSPY_ERR_ARG, "train_kwargs: %s is '%s'; expected true or false", d->name, value);
        *(bool *)(void *)field = b;
        return DSPY_OK;
    case K_STR:
        *(const char **)(void *)field = value;
        return DSPY_OK;
    case K_SCHED:
        for (int s = DSPY_LR_CONSTANT; s <= DSPY_LR_COSINE; s++)
            if (strcmp(value, dspy_lr_schedule_name((dspy_lr_schedule)s)) == 0) {
                *(dspy_lr_schedule *)(void *)field = (dspy_lr_schedule)s;
                return DSPY_OK;
            }
        return dspy_fail(DSPY_ERR_ARG,
                         "train_kwargs: lr_scheduler_type is '%s'; expected constant, constant_with_warmup, linear "
                         "or cosine",
                         value);
    }
    return DSPY_OK;
}

/* The form of a device name (whether that device exists is checked when training starts). */
static bool device_name_ok(const char *d) {
    if (!d || strcmp(d, "cpu") == 0 || strcmp(d, "auto") == 0 || strcmp(d, "cuda") == 0) return true;
    if (strncmp(d, "cuda:", 5) != 0 || !d[5]) return false;
    for (const char *c = d + 5; *c; c++)
        if (*c < '0' || *c > '9') return false;
    return strlen(d + 5) <= 4;
}

dspy_status dspy_train_params_validate(const dspy_train_params *p) {
#define NEED(cond, ...)                                                      \
    do {                                                                     \
        if (!(cond)) return dspy_fail(DSPY_ERR_ARG, "train_kwargs: " __VA_ARGS__); \
    } while (0)
    NEED(p->num_train_epochs >= 1, "num_train_epochs is %d; it must be at least 1", p->num_train_epochs);
    NEED(p->per_device_train_batch_size >= 1, "per_device_train_batch_size is %d; it must be at least 1",
         p->per_device_train_batch_size);
    NEED(p->gradient_accumulation_steps >= 1, "gradient_accumulation_steps is %d; it must be at least 1",
         p->gradient_accumulation_steps);
    NEED(p->learning_rate > 0 && isfinite(p->learning_rate), "learning_rate is %g; it must be positive",
         p->learning_rate);
    NEED(p->max_seq_length >= 2, "max_seq_length is %d; it must be at least 2", p->max_seq_length);
    NEED(p->warmup_ratio >= 0 && p->warmup_ratio < 1, "warmup_ratio is %g; it must be in [0, 1)", p->warmup_ratio);
    NEED(p->warmup_steps >= 0, "warmup_steps is %d; it must be >= 0", p->warmup_steps);
    NEED(p->weight_decay >= 0, "weight_decay is %g; it must be >= 0", p->weight_decay);
    NEED(p->adam_beta1 >= 0 && p->adam_beta1 < 1, "adam_beta1 is %g; it must be in [0, 1)", p->adam_beta1);
    NEED(p->adam_beta2 >= 0 && p->adam_beta2 < 1, "adam_beta2 is %g; it must be in [0, 1)", p->adam_beta2);
    NEED(p->adam_epsilon > 0, "adam_epsilon is %g; it must be positive", p->adam_epsilon);
    NEED(p->save_steps >= 1, "save_steps is %d; it must be at least 1", p->save_steps);
    NEED(p->epoch_save_after_s >= 0, "epoch_save_after_s is %g; it must be >= 0 (0: a checkpoint at every epoch end)",
         p->epoch_save_after_s);
    NEED(p->save_total_limit >= 0, "save_total_limit is %d; it must be >= 0 (0 keeps all)", p->save_total_limit);
    NEED(p->max_steps != 0, "max_steps is 0; use -1 to train num_train_epochs epochs");
    NEED(p->n_threads >= 0, "n_threads is %d; it must be >= 0", p->n_threads);
    NEED(!p->cpu_kernels || strcmp(p->cpu_kernels, "fast") == 0 || strcmp(p->cpu_kernels, "reference") == 0,
         "cpu_kernels is '%s'; expected fast or reference (None: reference)", p->cpu_kernels);
    NEED((unsigned)p->lr_scheduler_type <= DSPY_LR_COSINE, "lr_scheduler_type is out of range");
    if (p->use_peft) {
        NEED(p->lora_r >= 1, "lora_r is %d; it must be at least 1", p->lora_r);
        NEED(p->lora_alpha > 0, "lora_alpha is %g; it must be positive", p->lora_alpha);
        NEED(p->lora_dropout >= 0 && p->lora_dropout < 1, "lora_dropout is %g; it must be in [0, 1)",
             p->lora_dropout);
    }
    NEED(device_name_ok(p->device),
         "device is '%s'; expected cpu, auto, cuda or cuda:N (None: cpu)", p->device);
#undef NEED
    return DSPY_OK;
}
