/* finetune_ranks.h — `dspy finetune --gpus N`: one process per GPU (see finetune_ranks.c). */
#ifndef DSPY_TOOL_FINETUNE_RANKS_H
#define DSPY_TOOL_FINETUNE_RANKS_H

#include <stdbool.h>

/* Starts `gpus` ranks of `dspy finetune` with argv (the command's own arguments, argv[0] the
 * command name; --gpus is left out), waits for them, and returns the exit status: 0 when every
 * rank finished, else the first failed rank's (the others are stopped). 2 when fewer GPUs are
 * visible than asked for. The options must have been checked before: nothing here reads them. */
int dspy_cli_finetune_ranks(int gpus, int argc, char **argv);

/* In a rank the launcher started (DSPY_PARENT_PID set): dies with the launcher, even when it is
 * killed with SIGKILL. False (with a message on stderr) when the launcher is already gone. */
bool dspy_cli_rank_tie_to_parent(void);

#endif
