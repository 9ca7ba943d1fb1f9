// cli_info.c: `drtune info`, `init-weights` and `probe` as a user runs them ($DRTUNE_BIN, repository root): the exact
// parameter counts of the real SD 1.5 / SDXL configs, the error contract (exit 2, one "drtune: error:" line), random
// weights that load back, and a UNet probe round trip against the diffusers fixture.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/core/common.h"
#include "fixture.h"
#include "testutil.h"

static const char *g_bin;

// Runs `drtune <args>` with stdout sent to stderr, so the one-line error rule covers everything it printed.
static int run(const char *args, TuChild *c) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "%s 1>&2", args);
    return tu_run_drtune(cmd, c);
}

static void copy(const char *src, const char *dst) {
    size_t len;
    char *data = dt_read_file(src, &len);
    tu_write_bytes(dst, data, len);
    free(data);
}

static void check_counts(const char *model, const char *const *counts, int n) {
    char args[256];
    TuChild c;
    snprintf(args, sizeof args, "info --model %s", model);
    int rc = run(args, &c);
    tu_check(rc == 0, "info %s exits 0", model);
    for (int i = 0; i < n; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, " %s parameters", counts[i]);
        tu_check(strstr(c.err, needle) != NULL, "info %s reports %s parameters", model, counts[i]);
    }
    if (tu_failed) fputs(c.err, stdout);
    tu_child_free(&c);
}

// Exit code 2 and exactly one line, starting "drtune: error:".
static void check_user_error(const char *args, const char *what) {
    TuChild c;
    run(args, &c);
    tu_check(tu_is_user_error(&c, NULL), "%s", what);
    printf("     %s", c.err);
    tu_child_free(&c);
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
    tu_check(bad == 0 && complete, "probe unet: %d tensors written, %d off the fixture (worst %s, rel %.2e)", got.n,
             bad, worst_name, worst);
    safetensors_close(&got);
    safetensors_close(&ref);
}

int main(void) {
    g_bin = getenv("DRTUNE_BIN");
    if (!g_bin || !*g_bin) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    const char *tmp = tu_tmpdir("cli");

    static const char *const sd15[] = {"859,520,964", "83,653,863", "123,060,480"};
    static const char *const sdxl[] = {"2,567,463,684", "83,653,863", "123,060,480", "694,659,840"};
    check_counts("configs/models/sd15", sd15, 3);
    check_counts("configs/models/sdxl", sdxl, 4);

    char args[1024];
    TuChild c;
    check_user_error("info --model /nonexistent/drtune-model", "info on a missing folder: exit 2, one error line");
    mkdir(tu_path("bad"), 0777);
    mkdir(tu_path("bad/unet"), 0777);
    copy("configs/models/sd15/model_index.json", tu_path("bad/model_index.json"));
    tu_write_text(tu_path("bad/unet/config.json"), "{\"block_out_channels\": [320, 640,\n");
    snprintf(args, sizeof args, "info --model %s/bad", tmp);
    check_user_error(args, "info on a malformed config.json: exit 2, one error line");
    check_user_error("info", "info without --model: exit 2, one error line");

    // A small pipeline folder from the fixture configs: random bf16 weights, loaded back by info --load.
    const char *parts[][2] = {{"unet", "tests/fixtures/models/unet_sd15/config.json"},
                              {"text_encoder", "tests/fixtures/models/clip_l/config.json"}};
    mkdir(tu_path("small"), 0777);
    copy("configs/models/sd15/model_index.json", tu_path("small/model_index.json"));
    for (int i = 0; i < 2; i++) {
        char name[64];
        snprintf(name, sizeof name, "small/%s", parts[i][0]);
        mkdir(tu_path(name), 0777);
        snprintf(name, sizeof name, "small/%s/config.json", parts[i][0]);
        copy(parts[i][1], tu_path(name));
    }
    snprintf(args, sizeof args, "init-weights --model %s/small --out %s/rand --seed 3 --dtype bf16", tmp, tmp);
    int rc = run(args, &c);
    tu_check(rc == 0 && strstr(c.err, "unet/diffusion_pytorch_model.safetensors") &&
                 strstr(c.err, "text_encoder/model.safetensors"),
             "init-weights writes the unet and text_encoder weights");
    tu_child_free(&c);
    snprintf(args, sizeof args, "info --model %s/rand --load", tmp);
    rc = run(args, &c);
    tu_check(rc == 0 && strstr(c.err, "peak RSS"), "info --load loads the random weights and reports peak RSS");
    tu_child_free(&c);

    // UNet probe on the diffusers fixture: output, input gradient and every parameter gradient.
    snprintf(args, sizeof args,
             "probe --model tests/fixtures/models/unet_sd15 --component unet --inputs "
             "tests/fixtures/unet_sd15_ref.safetensors --grad tests/fixtures/unet_sd15_ref.safetensors --out "
             "%s/probe.safetensors", tmp);
    rc = run(args, &c);
    tu_check(rc == 0, "probe unet exits 0");
    if (rc) fputs(c.err, stdout);
    tu_child_free(&c);
    if (rc == 0) {
        static const char *const want[] = {"out", "grad_sample", "grad.conv_in.weight"};
        check_probe_output(tu_path("probe.safetensors"), "tests/fixtures/unet_sd15_ref.safetensors", want, 3);
    }
    snprintf(args, sizeof args, "probe --model tests/fixtures/models/clip_l --component text-encoder --inputs "
             "tests/fixtures/clip_l_ref.safetensors --grad x --out %s/t.safetensors", tmp);
    check_user_error(args, "probe --grad on a text encoder: exit 2, one error line");
    return tu_report();
}
