/* args.c — option parsing and generated help for the dspy subcommands. */
#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/status.h"

static int find_opt(const dspy_args *a, const char *name, size_t n) {
    for (int i = 0; i < a->nopts; i++)
        if (strlen(a->opts[i].name) == n && strncmp(a->opts[i].name, name, n) == 0) return i;
    return -1;
}

static void print_help(const char *cmd, const char *usage, const char *about, const dspy_opt *opts) {
    printf("usage: dspy %s %s\n\n%s\n", cmd, usage, about);
    if (opts[0].name) printf("\noptions:\n");
    for (int i = 0; opts[i].name; i++) {
        char left[128];
        snprintf(left, sizeof left, "--%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
                 opts[i].metavar ? opts[i].metavar : "");
        printf("  %-30s %s%s%s", left, opts[i].help, opts[i].required ? " (required)" : "",
               opts[i].multi ? " (repeatable)" : "");
        if (opts[i].def) printf(" [default: %s]", opts[i].def);
        printf("\n");
    }
    printf("  %-30s %s\n", "--help", "show this help and exit");
}

int dspy_args_parse(dspy_args *a, const char *cmd, const char *usage, const char *about,
                    const dspy_opt *opts, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->opts = opts;
    while (opts[a->nopts].name) a->nopts++;
    for (int i = 0; i < a->nopts; i++) a->value[i] = opts[i].def;
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (only_pos || strncmp(s, "--", 2) != 0 || s[2] == '\0') {
            if (!only_pos && strcmp(s, "--") == 0) {
                only_pos = true;
                continue;
            }
            if (a->npos >= DSPY_ARGS_MAX_POS) {
                fprintf(stderr, "error: dspy %s: too many arguments\n", cmd);
                return 2;
            }
            a->pos[a->npos++] = s;
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
        if (k < 0) {
            fprintf(stderr, "error: dspy %s: unknown option '--%.*s' (see 'dspy %s --help')\n", cmd,
                    (int)n, name, cmd);
            return 2;
        }
        const char *val = "1";
        if (opts[k].metavar) {
            if (eq) val = eq + 1;
            else if (i + 1 < argc) val = argv[++i];
            else {
                fprintf(stderr, "error: dspy %s: option '--%s' needs a value %s\n", cmd, opts[k].name,
                        opts[k].metavar);
                return 2;
            }
        } else if (eq) {
            fprintf(stderr, "error: dspy %s: option '--%s' takes no value\n", cmd, opts[k].name);
            return 2;
        }
        a->value[k] = val;
        a->given[k] = true;
        if (opts[k].multi) {
            if (a->nmulti[k] >= DSPY_ARGS_MAX_MULTI) {
                fprintf(stderr, "error: dspy %s: option '--%s' given too many times\n", cmd, opts[k].name);
                return 2;
            }
            a->multi[k][a->nmulti[k]++] = val;
        }
    }
    for (int i = 0; i < a->nopts; i++) {
        if (opts[i].required && !a->given[i]) {
            fprintf(stderr, "error: dspy %s: missing required option '--%s %s' (see 'dspy %s --help')\n",
                    cmd, opts[i].name, opts[i].metavar ? opts[i].metavar : "", cmd);
            return 2;
        }
    }
    return 0;
}

const char *dspy_args_get(const dspy_args *a, const char *name) {
    int k = find_opt(a, name, strlen(name));
    return k < 0 ? NULL : a->value[k];
}

bool dspy_args_flag(const dspy_args *a, const char *name) {
    int k = find_opt(a, name, strlen(name));
    return k >= 0 && a->given[k];
}

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

int dspy_cli_error(const char *cmd) {
    fprintf(stderr, "error: dspy %s: %s\n", cmd, dspy_errmsg());
    return 1;
}
