/* args.c — option parsing and generated help for the dspy subcommands (see args.h).
 *
 * Follows getopt_long(3)'s syntax (long options with "=" or a separate value, clustered short
 * flags, "-xVALUE", "--" ending the options), except that long options are never abbreviated.
 * Does not: permute option order semantics beyond that (positionals may appear anywhere, as
 * GNU getopt allows), read option files, or localise messages.
 */
#include "args.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/json.h"

static int find_opt(const dspy_args *a, const char *name, size_t n) {
    for (int i = 0; i < a->nopts; i++)
        if (strlen(a->opts[i].name) == n && strncmp(a->opts[i].name, name, n) == 0) return i;
    return -1;
}

static const struct {
    char c;
    const char *name;
} k_short[] = {{'o', "out"}, {'n', "num-threads"}, {'f', "force"}, {'v', "verbose"},
               {'q', "quiet"}, {'m', "model"},       {'l', "limit"}};

char dspy_args_short_of(const char *long_name) {
    for (size_t i = 0; i < sizeof k_short / sizeof k_short[0]; i++)
        if (strcmp(k_short[i].name, long_name) == 0) return k_short[i].c;
    return 0;
}

static int find_short(const dspy_args *a, char c) {
    for (size_t i = 0; i < sizeof k_short / sizeof k_short[0]; i++)
        if (k_short[i].c == c) return find_opt(a, k_short[i].name, strlen(k_short[i].name));
    return -1;
}

static void print_help(const char *cmd, const char *usage, const char *about, const dspy_opt *opts) {
    printf("usage: dspy %s %s\n\n%s\n", cmd, usage, about);
    printf("\noptions:\n");
    for (int i = 0; opts[i].name; i++) {
        char left[160];
        char sh[8] = "    ";
        if (dspy_args_short_of(opts[i].name)) snprintf(sh, sizeof sh, "-%c, ", dspy_args_short_of(opts[i].name));
        snprintf(left, sizeof left, "%s--%s%s%s", sh, opts[i].name, opts[i].metavar ? " " : "",
                 opts[i].metavar ? opts[i].metavar : "");
        printf("  %-34s %s%s%s", left, opts[i].help, opts[i].required ? " (required)" : "",
               opts[i].multi ? " (repeatable)" : "");
        if (opts[i].def) printf(" [default: %s]", opts[i].def);
        printf("\n");
    }
    printf("  %-34s %s\n", "-h, --help", "show this help and exit");
    printf("\nexit status: 0 success, 1 failed while running, 2 bad usage or input (nothing was started)\n");
}

static int usage_error(const char *cmd, const char *fmt, const char *a1, size_t n1, const char *a2) {
    fprintf(stderr, "error: dspy %s: ", cmd);
    if (a2) fprintf(stderr, fmt, (int)n1, a1, a2);
    else fprintf(stderr, fmt, (int)n1, a1);
    fprintf(stderr, " (see 'dspy %s --help')\n", cmd);
    return DSPY_EXIT_USAGE;
}

/* Records value `val` for option k. */
static int store(dspy_args *a, const char *cmd, int k, const char *val) {
    a->value[k] = val;
    a->given[k] = true;
    if (a->opts[k].multi) {
        if (a->nmulti[k] >= DSPY_ARGS_MAX_MULTI) {
            fprintf(stderr, "error: dspy %s: option '--%s' given more than %d times\n", cmd, a->opts[k].name,
                    DSPY_ARGS_MAX_MULTI);
            return DSPY_EXIT_USAGE;
        }
        a->multi[k][a->nmulti[k]++] = val;
    }
    return 0;
}

/* One "-abc" / "-nVALUE" word at argv[*i]. */
static int parse_short(dspy_args *a, const char *cmd, const char *usage, const char *about, int argc, char **argv,
                       int *i) {
    const char *s = argv[*i] + 1;
    for (size_t j = 0; s[j]; j++) {
        char c = s[j];
        if (c == 'h') {
            print_help(cmd, usage, about, a->opts);
            return 1;
        }
        int k = find_short(a, c);
        if (k < 0) return usage_error(cmd, "unknown option '-%.*s'", &s[j], 1, NULL);
        if (!a->opts[k].metavar) {
            int rc = store(a, cmd, k, "1");
            if (rc) return rc;
            continue;
        }
        const char *val;
        if (s[j + 1]) val = &s[j + 1];
        else if (*i + 1 < argc) val = argv[++*i];
        else {
            fprintf(stderr, "error: dspy %s: option '-%c' (--%s) needs a value %s\n", cmd, c, a->opts[k].name,
                    a->opts[k].metavar);
            return DSPY_EXIT_USAGE;
        }
        return store(a, cmd, k, val);
    }
    return 0;
}

int dspy_args_parse_pos(dspy_args *a, const char *cmd, const char *usage, const char *about,
                        const dspy_opt *opts, int max_pos, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->opts = opts;
    while (opts[a->nopts].name) a->nopts++;
    if (a->nopts > DSPY_ARGS_MAX_OPTS) {
        fprintf(stderr, "error: dspy %s: too many options declared (%d > %d)\n", cmd, a->nopts, DSPY_ARGS_MAX_OPTS);
        return DSPY_EXIT_FAIL;
    }
    for (int i = 0; i < a->nopts; i++) a->value[i] = opts[i].def;
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        bool positional = only_pos || s[0] != '-' || s[1] == '\0';
        if (!positional && strcmp(s, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (positional) {
            if (a->npos >= max_pos || a->npos >= DSPY_ARGS_MAX_POS) {
                if (max_pos == 0)
                    return usage_error(cmd, "unexpected argument '%.*s'%s", s, strlen(s),
                                       s[0] == '-' ? "" : "; every input is given with an option");
                return usage_error(cmd, "unexpected extra argument '%.*s'%s", s, strlen(s), "");
            }
            a->pos[a->npos++] = s;
            continue;
        }
        if (s[1] != '-') {
            int rc = parse_short(a, cmd, usage, about, argc, argv, &i);
            if (rc) return rc;
            continue;
        }
        if (strcmp(s, "--help") == 0) {
            print_help(cmd, usage, about, opts);
            return 1;
        }
        const char *name = s + 2;
        const char *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        int k = find_opt(a, name, n);
        if (k < 0) return usage_error(cmd, "unknown option '--%.*s'", name, n, NULL);
        const char *val = "1";
        if (opts[k].metavar) {
            if (eq) val = eq + 1;
            else if (i + 1 < argc) val = argv[++i];
            else {
                fprintf(stderr, "error: dspy %s: option '--%s' needs a value %s\n", cmd, opts[k].name, opts[k].metavar);
                return DSPY_EXIT_USAGE;
            }
        } else if (eq) {
            fprintf(stderr, "error: dspy %s: option '--%s' takes no value\n", cmd, opts[k].name);
            return DSPY_EXIT_USAGE;
        }
        int rc = store(a, cmd, k, val);
        if (rc) return rc;
    }
    for (int i = 0; i < a->nopts; i++) {
        if (opts[i].required && !a->given[i]) {
            fprintf(stderr, "error: dspy %s: missing required option '--%s%s%s' (see 'dspy %s --help')\n", cmd,
                    opts[i].name, opts[i].metavar ? " " : "", opts[i].metavar ? opts[i].metavar : "", cmd);
            return DSPY_EXIT_USAGE;
        }
    }
    return 0;
}

int dspy_args_parse(dspy_args *a, const char *cmd, const char *usage, const char *about,
                    const dspy_opt *opts, int argc, char **argv) {
    return dspy_args_parse_pos(a, cmd, usage, about, opts, 0, argc, argv);
}

const char *dspy_args_get(const dspy_args *a, const char *name) {
    int k = find_opt(a, name, strlen(name));
    return k < 0 ? NULL : a->value[k];
}

bool dspy_args_flag(const dspy_args *a, const char *name) {
    int k = find_opt(a, name, strlen(name));
    return k >= 0 && a->given[k];
}

bool dspy_args_given(const dspy_args *a, const char *name) { return dspy_args_flag(a, name); }

int dspy_args_count(const dspy_args *a, const char *name) {
    int k = find_opt(a, name, strlen(name));
    return k < 0 ? 0 : a->nmulti[k];
}

const char *dspy_args_at(const dspy_args *a, const char *name, int i) {
    int k = find_opt(a, name, strlen(name));
    return (k < 0 || i < 0 || i >= a->nmulti[k]) ? NULL : a->multi[k][i];
}

bool dspy_args_int(const dspy_args *a, const char *name, long *out) {
    const char *v = dspy_args_get(a, name);
    if (!v) return true;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "error: option '--%s' expects an integer, got '%s'\n", name, v);
        return false;
    }
    *out = x;
    return true;
}

bool dspy_args_double(const dspy_args *a, const char *name, double *out) {
    const char *v = dspy_args_get(a, name);
    if (!v) return true;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end) {
        fprintf(stderr, "error: option '--%s' expects a number, got '%s'\n", name, v);
        return false;
    }
    *out = x;
    return true;
}

bool dspy_args_cpu_kernels(const dspy_args *a, const char *cmd, dspy_cpu_kernels *out) {
    const char *env = getenv("DSPY_CPU_KERNELS");
    const char *v = dspy_args_given(a, "cpu-kernels") || !env || !*env ? dspy_args_get(a, "cpu-kernels") : env;
    if (!dspy_cpu_kernels_parse(v, out)) return true;
    fprintf(stderr, "error: dspy %s: --cpu-kernels%s: %s\n", cmd,
            dspy_args_given(a, "cpu-kernels") || !env || !*env ? "" : " (from $DSPY_CPU_KERNELS)", dspy_errmsg());
    return false;
}

int dspy_cli_error(const char *cmd) {
    fprintf(stderr, "error: dspy %s: %s\n", cmd, dspy_errmsg());
    return DSPY_EXIT_FAIL;
}

int dspy_cli_usage_error(const char *cmd) {
    fprintf(stderr, "error: dspy %s: %s\n", cmd, dspy_errmsg());
    return DSPY_EXIT_USAGE;
}

static dspy_status add_input(dspy_json *inputs, const char *arg, bool as_json, const char *first_field) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        if (as_json || !first_field)
            return dspy_fail(DSPY_ERR_ARG, "--input%s '%s': expected name=%s", as_json ? "-json" : "", arg,
                             as_json ? "JSON" : "value");
        return dspy_fail(DSPY_ERR_ARG, "--input '%s': expected name=value, e.g. --input %s=%s (Positional arguments are "
                         "not allowed when calling `dspy.Predict`)", arg, first_field, arg);
    }
    char *name = strndup(arg, (size_t)(eq - arg));
    if (!name) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_json *v = NULL;
    dspy_status st = DSPY_OK;
    if (as_json) {
        st = dspy_json_parse(eq + 1, strlen(eq + 1), name, &v);
        if (st) st = dspy_fail_wrap(st, "--input-json");
    } else if (!(v = dspy_json_string(eq + 1))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    if (!st) st = dspy_json_set(inputs, name, v);
    free(name);
    return st;
}

dspy_status dspy_args_inputs(const dspy_args *a, const char *first_field, dspy_json **out) {
    *out = NULL;
    dspy_json *inputs = dspy_json_object();
    if (!inputs) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    for (int i = 0; !st && i < dspy_args_count(a, "input"); i++)
        st = add_input(inputs, dspy_args_at(a, "input", i), false, first_field);
    for (int i = 0; !st && i < dspy_args_count(a, "input-json"); i++)
        st = add_input(inputs, dspy_args_at(a, "input-json", i), true, first_field);
    if (st) {
        dspy_json_decref(inputs);
        return st;
    }
    *out = inputs;
    return DSPY_OK;
}

dspy_status dspy_args_int_in(const dspy_args *a, const char *name, long min, long max, long *out) {
    const char *v = dspy_args_get(a, name);
    if (!v) return DSPY_OK;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        if (max >= INT32_MAX) return dspy_fail(DSPY_ERR_ARG, "--%s '%s': expected an integer >= %ld", name, v, min);
        return dspy_fail(DSPY_ERR_ARG, "--%s '%s': expected an integer from %ld to %ld", name, v, min, max);
    }
    *out = x;
    return DSPY_OK;
}

dspy_status dspy_args_number(const dspy_args *a, const char *name, double *out) {
    const char *v = dspy_args_get(a, name);
    if (!v) return DSPY_OK;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end) return dspy_fail(DSPY_ERR_ARG, "--%s '%s': expected a number", name, v);
    *out = x;
    return DSPY_OK;
}
