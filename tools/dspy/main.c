/* main.c — the `dspy` command: git-style subcommands listed in commands.def.
 *
 * `dspy help CMD` is `dspy CMD --help`; `dspy --help` (or `dspy help`) lists the commands and
 * the exit statuses every command uses (args.h).
 */
#include <stdio.h>
#include <string.h>

#include "args.h"

#define DSPY_COMMAND(name, fn, summary) int fn(int argc, char **argv);
#include "commands.def"
#undef DSPY_COMMAND

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} command;

static const command k_commands[] = {
#define DSPY_COMMAND(name, fn, summary) {name, fn, summary},
#include "commands.def"
#undef DSPY_COMMAND
};

static const size_t k_ncommands = sizeof k_commands / sizeof k_commands[0];

static void usage(FILE *f) {
    fprintf(f, "usage: dspy <command> [options]\n\n"
               "dspy.c: DSPy programs, bootstrapped fine-tuning and a native Llama engine in C.\n\n"
               "commands:\n");
    for (size_t i = 0; i < k_ncommands; i++) fprintf(f, "  %-12s %s\n", k_commands[i].name, k_commands[i].summary);
    fprintf(f, "\nRun 'dspy <command> --help' (or 'dspy help <command>') for a command's options.\n"
               "\nexit status (every command):\n"
               "  %d  success\n"
               "  %d  the command failed while running (I/O, network, LM, training); the message says why,\n"
               "     and what was already computed stays on disk\n"
               "  %d  bad usage or input, found before any work started: an unknown option or stray word,\n"
               "     a missing or malformed value, a path that does not exist, an output that exists\n"
               "     without --force; nothing was written and no LM was called\n",
            DSPY_EXIT_OK, DSPY_EXIT_FAIL, DSPY_EXIT_USAGE);
}

static const command *find(const char *name) {
    for (size_t i = 0; i < k_ncommands; i++)
        if (strcmp(name, k_commands[i].name) == 0) return &k_commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return DSPY_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || (strcmp(argv[1], "help") == 0 && argc == 2)) {
        usage(stdout);
        return DSPY_EXIT_OK;
    }
    if (strcmp(argv[1], "help") == 0) {
        const command *c = find(argv[2]);
        if (!c) {
            fprintf(stderr, "error: dspy help: unknown command '%s' (see 'dspy --help')\n", argv[2]);
            return DSPY_EXIT_USAGE;
        }
        if (argc > 3) {
            fprintf(stderr, "error: dspy help: expected one command name, got %d words\n", argc - 2);
            return DSPY_EXIT_USAGE;
        }
        char *help[] = {"--help", NULL};
        return c->fn(1, help);
    }
    if (strcmp(argv[1], "--version") == 0) argv[1] = "version";
    const command *c = find(argv[1]);
    if (c) return c->fn(argc - 2, argv + 2);
    fprintf(stderr, "error: dspy: unknown command '%s' (see 'dspy --help')\n", argv[1]);
    return DSPY_EXIT_USAGE;
}
