/* args.h — the option parser every `dspy` subcommand uses, with generated --help.
 *
 * A command declares its options as a table of dspy_opt terminated by {0}; dspy_args_parse
 * fills the values (strings from argv, not copied). Flags (metavar NULL) take no value and
 * read as "1" when present. Options marked `multi` may repeat; their values are collected in
 * order. `--name=value` and `--name value` both work. Positional arguments are collected too.
 * Unknown options, missing values and missing required options are errors that name the
 * command and print a hint to `--help`.
 */
#ifndef DSPY_TOOL_ARGS_H
#define DSPY_TOOL_ARGS_H

#include <stdbool.h>

#define DSPY_ARGS_MAX_MULTI 256
#define DSPY_ARGS_MAX_POS 64

typedef struct dspy_opt {
    const char *name;    /* without the leading "--" */
    const char *metavar; /* NULL for a flag */
    const char *help;
    bool required;
    bool multi;
    const char *def;     /* default shown in help and returned when absent (may be NULL) */
} dspy_opt;

typedef struct dspy_args {
    const dspy_opt *opts;
    int nopts;
    const char *value[64];          /* last value per option, or the default */
    bool given[64];
    const char *multi[64][DSPY_ARGS_MAX_MULTI];
    int nmulti[64];
    const char *pos[DSPY_ARGS_MAX_POS];
    int npos;
} dspy_args;

/* Returns 0 on success, 1 when --help was printed (caller returns 0), 2 on a usage error
 * (message already on stderr). `usage` is the one-line synopsis, `about` the description. */
int dspy_args_parse(dspy_args *a, const char *cmd, const char *usage, const char *about,
                    const dspy_opt *opts, int argc, char **argv);
const char *dspy_args_get(const dspy_args *a, const char *name);
bool dspy_args_flag(const dspy_args *a, const char *name);
/* Number of values of a multi option, and the i-th. */
int dspy_args_count(const dspy_args *a, const char *name);
const char *dspy_args_at(const dspy_args *a, const char *name, int i);
/* Parses an option as an integer / double; returns false (and prints an error) if malformed. */
bool dspy_args_int(const dspy_args *a, const char *name, long *out);
bool dspy_args_double(const dspy_args *a, const char *name, double *out);

/* Prints "error: <dspy_errmsg()>" to stderr and returns the CLI exit code for a status. */
int dspy_cli_error(const char *cmd);

#endif
