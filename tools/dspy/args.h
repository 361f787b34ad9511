/* args.h — the option parser every `dspy` subcommand uses, with generated --help.
 *
 * A command declares its options as a table of dspy_opt terminated by {0}; dspy_args_parse
 * fills the values (strings from argv, not copied). The syntax is getopt_long's, without its
 * abbreviations (an option is matched by its whole name only, so a new option can never change
 * what an existing script means):
 *   --name VALUE, --name=VALUE    an option with a value (the next word is taken even when it
 *                                 starts with '-', so `--display-table -1` works)
 *   --flag                        a flag (metavar NULL); it reads as "1"; `--flag=x` is an error
 *   -x VALUE, -xVALUE             a one-letter form; the same letters mean the same option in
 *                                 every command that has it (dspy_args_short_names)
 *   -abc                          several one-letter flags at once
 *   -h, --help                    the command's help (exit 0)
 *   --                            everything after it is a positional argument
 * Options marked `multi` may repeat; their values are collected in order; any other option
 * given twice keeps the last value. Positional arguments are an error unless the command
 * accepts them (dspy_args_parse_pos); "-" alone is a positional (standard input).
 * Every usage error is one line on stderr naming the command, with a hint to --help, and the
 * exit status DSPY_EXIT_USAGE.
 */
#ifndef DSPY_TOOL_ARGS_H
#define DSPY_TOOL_ARGS_H

#include <stdbool.h>

#include "dspy/backend.h"
#include "dspy/json.h"
#include "dspy/status.h"

#define DSPY_ARGS_MAX_MULTI 256
#define DSPY_ARGS_MAX_POS 64
#define DSPY_ARGS_MAX_OPTS 96

/* The exit statuses of every command (printed by `dspy --help`). */
enum {
    DSPY_EXIT_OK = 0,    /* success */
    DSPY_EXIT_FAIL = 1,  /* the command failed while running (I/O, network, LM, training) */
    DSPY_EXIT_USAGE = 2  /* bad usage or input found before any work: nothing was started */
};

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
    const char *value[DSPY_ARGS_MAX_OPTS];          /* last value per option, or the default */
    bool given[DSPY_ARGS_MAX_OPTS];
    const char *multi[DSPY_ARGS_MAX_OPTS][DSPY_ARGS_MAX_MULTI];
    int nmulti[DSPY_ARGS_MAX_OPTS];
    const char *pos[DSPY_ARGS_MAX_POS];
    int npos;
} dspy_args;

/* The one-letter forms, common to every command: -o --out, -n --num-threads, -f --force,
 * -v --verbose, -q --quiet, -m --model, -l --limit (a command without the long option has no
 * such letter); -h is --help. */
char dspy_args_short_of(const char *long_name);

/* Returns 0 on success, 1 when --help was printed (the caller returns DSPY_EXIT_OK), or
 * DSPY_EXIT_USAGE on a usage error (message already on stderr). `usage` is the one-line
 * synopsis, `about` the description. No positional argument is accepted. */
int dspy_args_parse(dspy_args *a, const char *cmd, const char *usage, const char *about,
                    const dspy_opt *opts, int argc, char **argv);
/* The same, accepting up to max_pos positional arguments. */
int dspy_args_parse_pos(dspy_args *a, const char *cmd, const char *usage, const char *about,
                        const dspy_opt *opts, int max_pos, int argc, char **argv);
const char *dspy_args_get(const dspy_args *a, const char *name);
bool dspy_args_flag(const dspy_args *a, const char *name);
/* Whether the user gave the option (a default does not count). */
bool dspy_args_given(const dspy_args *a, const char *name);
/* Number of values of a multi option, and the i-th. */
int dspy_args_count(const dspy_args *a, const char *name);
const char *dspy_args_at(const dspy_args *a, const char *name, int i);

/* The --input NAME=VALUE (a string) and --input-json NAME=JSON options of a command that calls
 * a program, as a new JSON object in *out (caller decrefs): --input ones first, then
 * --input-json ones, a later value of a name replacing an earlier one. A value without "NAME="
 * is DSPY_ERR_ARG; `first_field` (may be NULL) names the signature's first input for the hint
 * (Python's positional call is not allowed either). */
dspy_status dspy_args_inputs(const dspy_args *a, const char *first_field, dspy_json **out);
/* Parses an option as an integer / double; returns false (and prints an error) if malformed. */
bool dspy_args_int(const dspy_args *a, const char *name, long *out);
bool dspy_args_double(const dspy_args *a, const char *name, double *out);
/* An integer option in [min, max] (absent: *out unchanged, DSPY_OK). DSPY_ERR_ARG naming the
 * option, its value and the range ("expected an integer >= MIN" when max is INT32_MAX). */
dspy_status dspy_args_int_in(const dspy_args *a, const char *name, long min, long max, long *out);
/* A number option (absent: *out unchanged, DSPY_OK); DSPY_ERR_ARG when it is not a number. */
dspy_status dspy_args_number(const dspy_args *a, const char *name, double *out);

/* The --cpu-kernels option: the given value, else $DSPY_CPU_KERNELS when set (so a launcher's
 * children, e.g. the `dspy serve` of compile and eval, follow it), else the option's default. */
bool dspy_args_cpu_kernels(const dspy_args *a, const char *cmd, dspy_cpu_kernels *out);

/* Prints "error: dspy <cmd>: <dspy_errmsg()>" to stderr and returns DSPY_EXIT_FAIL. */
int dspy_cli_error(const char *cmd);
/* The same for an error found while checking the input, before any work: DSPY_EXIT_USAGE. */
int dspy_cli_usage_error(const char *cmd);

#endif
