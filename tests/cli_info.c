// cli_info.c: `drtune info`, `init-weights` and `probe` as a user runs them ($DRTUNE_BIN, repository root): the exact
// parameter counts of the real SD 1.5 / SDXL configs, the error contract (exit 2, one "drtune: error:" line), random
// weights that load back, and a UNet probe round trip against the diffusers fixture.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../src/core/common.h"
#include "fixture.h"

static const char *g_bin;
static char g_tmp[64];
static int g_fails, g_checks;

static void check(int ok, const char *what) {
    g_checks++;
    g_fails += !ok;
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
}

// Runs `drtune <args>` with stdout and stderr captured together; returns the exit code and the output (free it).
static int run(const char *args, char **output) {
    char cmd[2048], log[128];
    snprintf(log, sizeof log, "%s/log.txt", g_tmp);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>&1", g_bin, args, log);
    int status = system(cmd);
    size_t len;
    *output = dt_read_file(log, &len);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_text(const char *path, const char *text) { dt_write_file_atomic(path, text, strlen(text)); }

static void copy(const char *src, const char *dst) {
    size_t len;
    char *data = dt_read_file(src, &len);
    dt_write_file_atomic(dst, data, len);
    free(data);
}

static void check_counts(const char *model, const char *const *counts, int n) {
    char args[256], what[256], *out;
    snprintf(args, sizeof args, "info --model %s", model);
    int rc = run(args, &out);
    snprintf(what, sizeof what, "info %s exits 0", model);
    check(rc == 0, what);
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof what, "info %s reports %s parameters", model, counts[i]);
        char needle[64];
        snprintf(needle, sizeof needle, " %s parameters", counts[i]);
        check(strstr(out, needle) != NULL, what);
    }
    if (g_fails) fputs(out, stdout);
    free(out);
}

// Exit code 2 and exactly one line, starting "drtune: error:".
static void check_user_error(const char *args, const char *what) {
    char *out;
    int rc = run(args, &out);
    const char *nl = strchr(out, '\n');
    int one_line = nl && nl[1] == '\0';
    check(rc == 2 && one_line && !strncmp(out, "drtune: error: ", 15), what);
    printf("     %s", out);
    free(out);
}

// max|a - b| / max|b| (NaN-safe: a NaN difference counts as infinite)
static double rel_diff(const Tensor *a, const Tensor *b) {
    double err = 0, mx = 0;
    const float *x = tensor_f32(a), *y = tensor_f32(b);
    for (int64_t i = 0; i < tensor_numel(b); i++) {
        double e = fabs((double)x[i] - (double)y[i]);
        err = e <= err ? err : (isnan(e) ? INFINITY : e);
        mx = fabs(y[i]) > mx ? fabs(y[i]) : mx;
    }
    return err / (mx > 0 ? mx : 1.0);
}

// Every tensor the probe wrote must be in the fixture and match it under the parity rule (1e-4 relative to the
// reference's largest magnitude); the names in want must be among them. Prints the outputs and the worst gradient.
static void check_probe_output(const char *out_path, const char *ref_path, const char *const *want, int n_want) {
    SafeTensors got, ref;
    safetensors_open(&got, out_path);
    safetensors_open(&ref, ref_path);
    int bad = 0, complete = 1;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < got.n; i++) {
        const char *name = got.tensors[i].name;
        if (!safetensors_find(&ref, name)) {
            printf("     %s is not in the fixture\n", name);
            bad++;
            continue;
        }
        Tensor a = fixture_get(&got, name), b = fixture_get(&ref, name);
        double rel = tensor_numel(&a) == tensor_numel(&b) ? rel_diff(&a, &b) : INFINITY;
        if (strncmp(name, "grad.", 5) != 0 || !(rel <= 1e-4)) printf("     %-40s rel %.2e\n", name, rel);
        if (!(rel <= worst)) worst = rel, worst_name = got.tensors[i].name;
        bad += !(rel <= 1e-4);
        free(a.data);
        free(b.data);
    }
    for (int i = 0; i < n_want; i++) complete &= safetensors_find(&got, want[i]) != NULL;
    char what[512];
    snprintf(what, sizeof what, "probe unet: %d tensors written, %d off the fixture (worst %s, rel %.2e)", got.n, bad,
             worst_name, worst);
    check(bad == 0 && complete, what);
    safetensors_close(&got);
    safetensors_close(&ref);
}

int main(void) {
    g_bin = getenv("DRTUNE_BIN");
    if (!g_bin || !*g_bin) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/drtune_cli_XXXXXX");
    CHECK(mkdtemp(g_tmp), "", "cannot create a temporary folder");

    static const char *const sd15[] = {"859,520,964", "83,653,863", "123,060,480"};
    static const char *const sdxl[] = {"2,567,463,684", "83,653,863", "123,060,480", "694,659,840"};
    check_counts("configs/models/sd15", sd15, 3);
    check_counts("configs/models/sdxl", sdxl, 4);

    char path[256], args[1024], *out;
    check_user_error("info --model /nonexistent/drtune-model", "info on a missing folder: exit 2, one error line");
    snprintf(path, sizeof path, "%s/bad", g_tmp);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/bad/unet", g_tmp);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/bad/model_index.json", g_tmp);
    copy("configs/models/sd15/model_index.json", path);
    snprintf(path, sizeof path, "%s/bad/unet/config.json", g_tmp);
    write_text(path, "{\"block_out_channels\": [320, 640,\n");
    snprintf(args, sizeof args, "info --model %s/bad", g_tmp);
    check_user_error(args, "info on a malformed config.json: exit 2, one error line");
    check_user_error("info", "info without --model: exit 2, one error line");

    // A small pipeline folder from the fixture configs: random bf16 weights, loaded back by info --load.
    const char *parts[][2] = {{"unet", "tests/fixtures/models/unet_sd15/config.json"},
                              {"text_encoder", "tests/fixtures/models/clip_l/config.json"}};
    snprintf(path, sizeof path, "%s/small", g_tmp);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/small/model_index.json", g_tmp);
    copy("configs/models/sd15/model_index.json", path);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/small/%s", g_tmp, parts[i][0]);
        mkdir(path, 0777);
        snprintf(path, sizeof path, "%s/small/%s/config.json", g_tmp, parts[i][0]);
        copy(parts[i][1], path);
    }
    snprintf(args, sizeof args, "init-weights --model %s/small --out %s/rand --seed 3 --dtype bf16", g_tmp, g_tmp);
    int rc = run(args, &out);
    check(rc == 0 && strstr(out, "unet/diffusion_pytorch_model.safetensors") &&
              strstr(out, "text_encoder/model.safetensors"),
          "init-weights writes the unet and text_encoder weights");
    free(out);
    snprintf(args, sizeof args, "info --model %s/rand --load", g_tmp);
    rc = run(args, &out);
    check(rc == 0 && strstr(out, "peak RSS"), "info --load loads the random weights and reports peak RSS");
    free(out);

    // UNet probe on the diffusers fixture: output, input gradient and every parameter gradient.
    snprintf(args, sizeof args,
             "probe --model tests/fixtures/models/unet_sd15 --component unet --inputs "
             "tests/fixtures/unet_sd15_ref.safetensors --grad tests/fixtures/unet_sd15_ref.safetensors --out "
             "%s/probe.safetensors", g_tmp);
    rc = run(args, &out);
    check(rc == 0, "probe unet exits 0");
    if (rc) fputs(out, stdout);
    free(out);
    if (rc == 0) {
        static const char *const want[] = {"out", "grad_sample", "grad.conv_in.weight"};
        snprintf(path, sizeof path, "%s/probe.safetensors", g_tmp);
        check_probe_output(path, "tests/fixtures/unet_sd15_ref.safetensors", want, 3);
    }
    snprintf(args, sizeof args, "probe --model tests/fixtures/models/clip_l --component text-encoder --inputs "
             "tests/fixtures/clip_l_ref.safetensors --grad x --out %s/t.safetensors", g_tmp);
    check_user_error(args, "probe --grad on a text encoder: exit 2, one error line");

    snprintf(args, sizeof args, "rm -rf '%s'", g_tmp);
    CHECK(system(args) == 0, "", "cannot remove %s", g_tmp);
    printf("%s: %d of %d checks failed\n", g_fails ? "FAILED" : "passed", g_fails, g_checks);
    return g_fails != 0;
}
