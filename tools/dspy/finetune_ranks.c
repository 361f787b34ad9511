/* finetune_ranks.c — `dspy finetune --gpus N`: the data-parallel run as N processes, one per GPU.
 *
 * The launcher re-executes this program once per GPU with the same arguments (less --gpus) and
 * torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so a rank
 * started by torchrun or a multi-node launcher and one started here run the same code
 * (src/train/trainer.c). NVLink multicast stays off in every rank (NCCL_NVLS_ENABLE=0,
 * TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1, unless the caller set them).
 * Ranks other than 0 draw no progress bar. Each rank dies with the launcher, even when the
 * launcher is killed with SIGKILL (DSPY_PARENT_PID: the rank sets PR_SET_PDEATHSIG); when one
 * rank fails the launcher stops the others (they would wait in the next all-reduce forever)
 * and exits with the failed rank's status.
 */
#include "finetune_ranks.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dspy/backend.h"

extern char **environ;

enum { GRACE_MS = 5000 };

/* A TCP port free on this machine a moment ago (the kernel's pick), for rank 0's store; 0 when
 * none could be had (then torchrun's default 29500). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Our environment with the rank's variables (written into owned[0..5], replacing ours of the
 * same names) and multicast off unless set; a malloc'd array of borrowed strings, NULL when out
 * of memory. */
static char **rank_env(int rank, int world, int port, char owned[][64], int n_owned) {
    static const char *const k_multicast_off[] = {"NCCL_NVLS_ENABLE=0", "TORCH_SYMM_MEM_DISABLE_MULTICAST=1",
                                                  "NVSHMEM_DISABLE_NVLS=1"};
    size_t n = 0;
    while (environ[n]) n++;
    char **env = calloc(n + (size_t)n_owned + 4, sizeof *env);
    if (!env) return NULL;
    snprintf(owned[0], 64, "RANK=%d", rank);
    snprintf(owned[1], 64, "WORLD_SIZE=%d", world);
    snprintf(owned[2], 64, "LOCAL_RANK=%d", rank);
    snprintf(owned[3], 64, "MASTER_ADDR=127.0.0.1");
    snprintf(owned[4], 64, "MASTER_PORT=%d", port ? port : 29500);
    snprintf(owned[5], 64, "DSPY_PARENT_PID=%ld", (long)getpid());
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool ours = false;
        for (int j = 0; j < n_owned && !ours; j++) {
            size_t eq = (size_t)(strchr(owned[j], '=') - owned[j]);
            ours = strncmp(environ[i], owned[j], eq + 1) == 0;
        }
        if (!ours) env[k++] = environ[i];
    }
    for (int j = 0; j < n_owned; j++) env[k++] = owned[j];
    for (size_t j = 0; j < sizeof k_multicast_off / sizeof *k_multicast_off; j++) {
        size_t eq = (size_t)(strchr(k_multicast_off[j], '=') - k_multicast_off[j]);
        bool set = false;
        for (size_t i = 0; i < k && !set; i++) set = strncmp(env[i], k_multicast_off[j], eq + 1) == 0;
        if (!set) env[k++] = (char *)k_multicast_off[j];
    }
    env[k] = NULL;
    return env;
}

static void stop_all(const pid_t *pid, int n, int sig) {
    for (int i = 0; i < n; i++)
        if (pid[i] > 0) kill(pid[i], sig);
}

/* The exit status a rank's wait status stands for (128 + signal when killed). */
static int exit_code(int ws) { return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0); }

int dspy_cli_finetune_ranks(int gpus, int argc, char **argv) {
    const char *why = NULL;
    int have = dspy_cuda_device_count(&why);
    if (have < gpus) {
        fprintf(stderr, "error: dspy finetune: --gpus %d needs %d GPUs; %d %s visible%s%s\n", gpus, gpus,
                have < 0 ? 0 : have, have == 1 ? "is" : "are", why ? ": " : "", why ? why : "");
        return 2;
    }
    /* the ranks' command line: ours without --gpus N, ranks > 0 quiet */
    char **av = calloc((size_t)argc + 3, sizeof *av);
    pid_t *pid = calloc((size_t)gpus, sizeof *pid);
    char (*owned)[64] = calloc(6, 64);
    int rc = 1;
    if (!av || !pid || !owned) {
        fprintf(stderr, "error: dspy finetune: out of memory\n");
        goto done;
    }
    int k = 0;
    av[k++] = "/proc/self/exe";
    av[k++] = "finetune";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gpus")) {
            i++;
            continue;
        }
        if (!strncmp(argv[i], "--gpus=", 7)) continue;
        av[k++] = argv[i];
    }
    const int quiet_at = k;
    const int port = free_port();
    fprintf(stderr, "dspy finetune: %d ranks, one per GPU (cuda:0..%d), rendezvous at 127.0.0.1:%d\n", gpus, gpus - 1,
            port ? port : 29500);
    for (int r = 0; r < gpus; r++) {
        av[quiet_at] = r > 0 ? "--quiet" : NULL;
        av[quiet_at + 1] = NULL;
        char **env = rank_env(r, gpus, port, owned, 6);
        int e = env ? posix_spawn(&pid[r], "/proc/self/exe", NULL, NULL, av, env) : ENOMEM;
        free(env);
        if (e) {
            fprintf(stderr, "error: dspy finetune: cannot start rank %d: %s\n", r, strerror(e));
            pid[r] = 0;
            stop_all(pid, gpus, SIGTERM);
            for (int j = 0; j < r; j++) waitpid(pid[j], NULL, 0);
            goto done;
        }
    }
    /* wait for all; the first failure stops the rest (SIGTERM, then SIGKILL after a grace) */
    int left = gpus, failed = -1;
    rc = 0;
    struct timespec stop_at = {0};
    while (left > 0) {
        int ws = 0;
        pid_t w = waitpid(-1, &ws, failed >= 0 ? WNOHANG : 0);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) break;
        if (w == 0) { /* stopping: past the grace, kill what is left */
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > stop_at.tv_sec || (now.tv_sec == stop_at.tv_sec && now.tv_nsec >= stop_at.tv_nsec))
                stop_all(pid, gpus, SIGKILL);
            struct timespec nap = {0, 50 * 1000 * 1000};
            nanosleep(&nap, NULL);
            continue;
        }
        int r = 0;
        while (r < gpus && pid[r] != w) r++;
        if (r == gpus) continue;
        pid[r] = 0;
        left--;
        if (exit_code(ws) != 0 && failed < 0) {
            failed = r;
            rc = exit_code(ws);
            if (left > 0) fprintf(stderr, "error: dspy finetune: rank %d failed (exit %d); stopping the other ranks\n", r, rc);
            stop_all(pid, gpus, SIGTERM);
            clock_gettime(CLOCK_MONOTONIC, &stop_at);
            stop_at.tv_sec += GRACE_MS / 1000;
        }
    }
done:
    free(av);
    free(pid);
    free(owned);
    return rc;
}

bool dspy_cli_rank_tie_to_parent(void) {
    const char *v = getenv("DSPY_PARENT_PID");
    if (!v || !*v) return true;
    char *end;
    long ppid = strtol(v, &end, 10);
    if (*end || ppid <= 1) return true;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)ppid) { /* the launcher died before the line above */
        fprintf(stderr, "error: dspy finetune: the launcher (process %ld) is already gone\n", ppid);
        return false;
    }
    return true;
}
