/* cmd_version.c — `dspy version`: version and compute backends. */
#include <stdio.h>

#include "args.h"
#include "dspy/backend.h"
#include "dspy/version.h"

int cmd_version(int argc, char **argv) {
    static const dspy_opt opts[] = {{0}};
    dspy_args a;
    int rc = dspy_args_parse(&a, "version", "", "Print the dspy.c version and the compute backends.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    printf("dspy.c %s\n", dspy_version());
    printf("cpu: fp32 reference path\n");
    const char *why = "";
    int n = dspy_cuda_device_count(&why);
    if (!dspy_cuda_compiled()) printf("cuda: not built\n");
    else if (n == 0) printf("cuda: built; no device (%s)\n", why);
    for (int i = 0; i < n; i++) {
        char name[256];
        if (dspy_cuda_device_name(i, name, sizeof name) == DSPY_OK) printf("cuda:%d: %s\n", i, name);
    }
    return 0;
}
