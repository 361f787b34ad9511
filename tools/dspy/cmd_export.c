/* cmd_export.c — `dspy export`: a model directory as one GGUF file (llama.cpp, Ollama, LM Studio).
 *
 * Checks every option before reading the model, writes the file through dspy_gguf_export (a
 * temporary name renamed when complete) and, with --ollama, a Modelfile beside it. Prints one
 * summary line per file written. The reverse direction needs no command: `dspy generate` and
 * `dspy serve` take a .gguf path as --model.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "dspy/gguf.h"
#include "dspy/str.h"

int cmd_export(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"format", "FMT", "output format (only gguf)", false, false, "gguf"},
        {"model", "DIR", "model directory (config.json, model.safetensors, tokenizer.json, chat template)", true, false,
         NULL},
        {"out", "FILE", "the .gguf file to write (its directory is created)", true, false, NULL},
        {"dtype", "TYPE", "storage of the matrices: f32, f16, bf16 or q8_0 (norms stay f32)", false, false, "f16"},
        {"name", "NAME", "general.name in the file (default: the model directory's name)", false, false, NULL},
        {"ollama", NULL, "also write an Ollama Modelfile next to the file", false, false, NULL},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse(&a, "export", "--model DIR --out FILE.gguf [--dtype f32|f16|bf16|q8_0] [--ollama]",
                             "Write a model directory as a GGUF v3 file that llama.cpp, Ollama and LM Studio\n"
                             "load: Llama/Qwen2 metadata, the BPE tokenizer with merges, the chat template and\n"
                             "the weights (q/k rows in llama.cpp's RoPE order). The file goes back into dspy.c\n"
                             "with `dspy generate --model FILE.gguf` or `dspy serve --model FILE.gguf`.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (strcmp(dspy_args_get(&a, "format"), "gguf") != 0) {
        fprintf(stderr, "error: dspy export: --format %s is not supported (only gguf)\n", dspy_args_get(&a, "format"));
        return 2;
    }
    dspy_gguf_export_params p = dspy_gguf_export_params_default();
    if (!dspy_gguf_dtype_parse(dspy_args_get(&a, "dtype"), &p.dtype)) {
        fprintf(stderr, "error: dspy export: --dtype must be f32, f16, bf16 or q8_0, not '%s'\n",
                dspy_args_get(&a, "dtype"));
        return 2;
    }
    p.name = dspy_args_get(&a, "name");
    const char *dir = dspy_args_get(&a, "model"), *out = dspy_args_get(&a, "out");
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "error: dspy export: --model %s is not a directory (give a Hugging Face model directory)\n",
                dir);
        return 2;
    }
    if (!dspy_gguf_is_path(out)) {
        fprintf(stderr, "error: dspy export: --out %s must end in .gguf\n", out);
        return 2;
    }
    const char *slash = strrchr(out, '/');
    if (slash && slash != out) {
        dspy_str parent = DSPY_STR_INIT;
        dspy_str_appendn(&parent, out, (size_t)(slash - out));
        dspy_status st = dspy_mkdir_p(dspy_str_cstr(&parent));
        dspy_str_free(&parent);
        if (st) return dspy_cli_error("export");
    }
    if (dspy_gguf_export(dir, out, &p)) return dspy_cli_error("export");
    dspy_gguf *g;
    if (dspy_gguf_open(out, &g)) return dspy_cli_error("export");
    dspy_model_config c;
    dspy_status st = dspy_gguf_model_config(g, &c);
    if (!st && stat(out, &sb) == 0)
        printf("wrote %s: GGUF v%u, %s, %s, %zu tensors, %.1f MB\n", out, dspy_gguf_version(g),
               c.arch == DSPY_ARCH_LLAMA ? "llama" : "qwen2", dspy_gguf_dtype_name(p.dtype), dspy_gguf_tensor_count(g),
               (double)sb.st_size / 1e6);
    dspy_gguf_free(g);
    if (st) return dspy_cli_error("export");
    if (dspy_args_flag(&a, "ollama")) {
        dspy_str mf = DSPY_STR_INIT;
        if (slash) dspy_str_appendn(&mf, out, (size_t)(slash - out + 1));
        dspy_str_append(&mf, "Modelfile");
        st = dspy_gguf_write_modelfile(out, dspy_str_cstr(&mf));
        if (!st) printf("wrote %s (ollama create NAME -f %s)\n", dspy_str_cstr(&mf), dspy_str_cstr(&mf));
        dspy_str_free(&mf);
        if (st) return dspy_cli_error("export");
    }
    return 0;
}
