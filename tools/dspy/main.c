/* main.c — the `dspy` command: git-style subcommands listed in commands.def. */
#include <stdio.h>
#include <string.h>

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

static void usage(FILE *f) {
    fprintf(f, "usage: dspy <command> [options]\n\n"
               "dspy.c: DSPy programs, bootstrapped fine-tuning and a native Llama engine in C.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(f, "  %-12s %s\n", k_commands[i].name, k_commands[i].summary);
    fprintf(f, "\nRun 'dspy <command> --help' for a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) argv[1] = "version";
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (strcmp(argv[1], k_commands[i].name) == 0) return k_commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "error: dspy: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
