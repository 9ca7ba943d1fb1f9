// tools_gpu_scripts.c: the CPU side of the GPU check (tools/gpu/): the scripts parse (bash -n; shellcheck where it is
// installed), bundle.sh's ldd check sorts a bundle's libraries into carried / provided / missing and fails on a
// missing one, and check.sh --summary turns drtune's and PyTorch's `result` lines into the ratio table.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

// Runs a shell command with its output in tu_path(log); returns its exit code.
static int sh(const char *log, const char *fmt, const char *a, const char *b) {
    char cmd[4096], inner[3800];
    snprintf(inner, sizeof inner, fmt, a, b);
    snprintf(cmd, sizeof cmd, "(%s) >'%s' 2>&1", inner, tu_path(log));
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static int file_has(const char *log, const char *needle) {
    char *text = tu_read_all(tu_path(log), NULL);
    int ok = text && strstr(text, needle) != NULL;
    free(text);
    return ok;
}

static void show(const char *log) {
    char *text = tu_read_all(tu_path(log), NULL);
    fprintf(stderr, "--- %s\n%s\n", log, text ? text : "(none)");
    free(text);
}

// check.sh --summary on the run folder dir with `awk` found first in path_dir (NULL: the system's): the step rows,
// the drtune/PyTorch ratios and the attention, convolution and channels-last tables.
static void check_summary(const char *dir, const char *path_dir) {
    char env[600] = "";
    if (path_dir) snprintf(env, sizeof env, "PATH='%s':\"$PATH\" ", path_dir);
    tu_check(sh("summary.log", "%stools/gpu/check.sh --summary '%s'", env, dir) == 0, "check.sh --summary exits 0%s",
             path_dir ? " (gawk)" : "");
    int ok = file_has("summary.log", "| bench | passed | 40 |") &&
             file_has("summary.log", "| sd15 | 64 | forward | 50 | 25.000 | 2.00 | 40.000 | 1.25 | 16 | 40.0% | "
                                     "5000.0 | 3000.000 | 45 |") &&
             file_has("summary.log", "| sd15 | 64 | forward+backward | 200 | 400.000 | 0.50 | 250.000 | 0.80 | 12 | "
                                     "25.0% | 5000.0 | 9000.000 | - |");
    if (!tu_check(ok, "check.sh --summary: the step rows and the drtune/PyTorch ratios")) show("summary.log");
    ok = file_has("summary.log", "| sd15 | attn self | B1 H8 Tq4096 Tk4096 D40 | fwd | 0.500 | 2.000 | 4.00 |") &&
         file_has("summary.log", "| sd15 | attn self | B1 H8 Tq4096 Tk4096 D40 | bwd | 1.500 | 6.000 | 4.00 |") &&
         file_has("summary.log", "- sd15: cuDNN's fused attention is not used: SDPA backward: no engine");
    if (!tu_check(ok, "check.sh --summary: the attention rows, fused next to the own kernels")) show("summary.log");
    ok = file_has("summary.log", "| sd15 | [1,320,64,64]->320 | fwd | 1.000 | 0.800 | 1.25 |") &&
         file_has("summary.log", "| sd15 | [1,320,64,64]->320 | bwd | 2.000 | 2.500 | 0.80 |");
    if (!tu_check(ok, "check.sh --summary: the 3x3 convolution rows, NCHW next to NHWC")) show("summary.log");
    ok = file_has("summary.log", "| sd15 | 64 | forward | 50 | 40 | 1.25 | 20.000 | 2.00 |") &&
         file_has("summary.log", "| sd15 | 64 | forward+backward | 200 | 250 | 0.80 | 500.000 | 0.50 |");
    if (!tu_check(ok, "check.sh --summary: the UNet channels last next to NCHW")) show("summary.log");
}

int main(void) {
    const char *scripts = "tools/gpu/check.sh tools/gpu/bundle.sh tools/gpu/fetch_debs.sh";
    tu_check(sh("bash_n.log", "for f in %s; do bash -n $f || exit 1; done%s", scripts, "") == 0,
             "bash -n: the GPU check's scripts parse");
    if (system("command -v shellcheck >/dev/null 2>&1") == 0) {
        if (!tu_check(sh("shellcheck.log", "shellcheck %s%s", scripts, "") == 0, "shellcheck: no findings"))
            show("shellcheck.log");
    } else {
        printf("shellcheck not installed: not run\n");
    }

    // bundle.sh: a bundle of the drtune program of this build
    const char *bin = getenv("DRTUNE_BIN");
    if (bin && system("command -v ldd >/dev/null && command -v strip >/dev/null") == 0) {
        const char *build = tu_path("build"), *out = tu_path("bundle");
        mkdir(build, 0755);
        int rc = sh("collect.log", "cp '%s' '%s/drtune'", bin, build);
        if (rc == 0) rc = sh("collect.log", "tools/gpu/bundle.sh collect '%s' '%s'", build, out);
        if (!tu_check(rc == 0, "bundle.sh collect: the bundle of drtune passes its ldd check")) show("collect.log");
        tu_check(file_has("collect.log", "carried  libopenblas.so.0"), "OpenBLAS is carried");
        tu_check(file_has("collect.log", "carried  libcjson.so.1"), "cJSON is carried");
        tu_check(file_has("collect.log", "provided libc.so.6"), "the C library is the GPU machine's");
        tu_check(!file_has("collect.log", "MISSING"), "nothing missing");
        // without a carried library, ldd finds this machine's copy, which the GPU machine lacks: the check fails
        rc = sh("missing.log", "rm '%s/lib/libcjson.so.1' && tools/gpu/bundle.sh check '%s'", out, out);
        if (!tu_check(rc == 1 && file_has("missing.log", "MISSING  libcjson.so.1"),
                      "bundle.sh check: a library neither carried nor provided fails the check (exit %d)", rc))
            show("missing.log");
    } else {
        printf("DRTUNE_BIN, ldd or strip missing: bundle.sh not run\n");
    }

    // check.sh --summary: drtune 50 / 200 ms, PyTorch bf16 25 / 400 ms, autocast 40 / 250 ms
    char dir[4096]; // tu_path answers in one buffer: keep the run folder's name
    snprintf(dir, sizeof dir, "%s", tu_path("run"));
    mkdir(dir, 0755);
    char path[4200];
    snprintf(path, sizeof path, "%s/.steps", dir);
    tu_write_text(path, "| bench | passed | 40 |\n");
    snprintf(path, sizeof path, "%s/bench.log", dir);
    // bench gpu's convolution rows (NCHW and NHWC) and attention rows (its printf layout), cuDNN next to the own
    // kernels, and a refusal line
    tu_write_text(path, "model configs/models/sd15: ...\n"
                        "  conv2d 3x3         [1,320,64,64]->320             fwd       1.000    100.00   20.0%\n"
                        "                                                    bwd       2.000    100.00   20.0%\n"
                        "  conv2d 3x3 NHWC    [1,320,64,64]->320             fwd       0.800    125.00   25.0%\n"
                        "                                                    bwd       2.500     80.00   16.0%\n"
                        "  attn self cuDNN    B1 H8 Tq4096 Tk4096 D40        fwd       0.500    100.00   20.0%\n"
                        "                                                    bwd       1.500    100.00   20.0%\n"
                        "  attn self own      B1 H8 Tq4096 Tk4096 D40        fwd       2.000     25.00    5.0%\n"
                        "                                                    bwd       6.000     25.00    5.0%\n"
                        "  (cuDNN's fused attention is not used: SDPA backward: no engine)\n"
                        "result model=sd15 latent=64 batch=1 dtype=bf16 device=cuda "
                        "fwd_ms=50 fwdbwd_ms=200 fwd_tflops=16 fwdbwd_tflops=12 mfu_fwd=0.4 mfu_fwdbwd=0.25 "
                        "planned_mib=4000.0 used_mib=5000.0 fwd_graph_ms=45 fwd_cl_ms=40 fwdbwd_cl_ms=250\n");
    snprintf(path, sizeof path, "%s/torch.log", dir);
    tu_write_text(path, "result model=sd15 latent=64 batch=1 dtype=bf16 device=cuda fwd_ms=25.000 "
                        "fwd_peak_mib=3000.000 fwdbwd_ms=400.000 fwdbwd_peak_mib=9000.000\n"
                        "result model=sd15 latent=64 batch=1 dtype=bf16-autocast device=cuda fwd_ms=40.000 "
                        "fwd_peak_mib=3500.000 fwdbwd_ms=250.000 fwdbwd_peak_mib=12000.000\n"
                        "result model=sd15 latent=64 batch=1 dtype=bf16 device=cuda layout=channels_last fwd_ms=20.000 "
                        "fwd_peak_mib=3000.000 fwdbwd_ms=500.000 fwdbwd_peak_mib=9000.000\n");
    check_summary(dir, NULL);
    // gawk as awk too where it is installed: its built-in function names (or, and, ...) cannot be redefined
    if (access("/usr/bin/gawk", X_OK) == 0) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s", tu_path("gawk-bin"));
        mkdir(bin, 0755);
        char link[4200 + 8];
        snprintf(link, sizeof link, "%s/awk", bin);
        tu_check(symlink("/usr/bin/gawk", link) == 0, "awk -> gawk in %s", bin);
        check_summary(dir, bin);
    }
    return tu_report();
}
