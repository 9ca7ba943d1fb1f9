// parity_sample.c: `drtune sample` against diffusers' StableDiffusionPipeline with a DDIM scheduler on the same
// random pipeline folder (tests/fixtures/sample_ref.safetensors, tools/reference/make_sample_fixture.py): the float
// images within 1e-4 of the largest reference value, and the PNG pixels equal to diffusers' uint8 pixels except for
// at most a handful of values off by one. Cases: two prompts with guidance, without and with a negative prompt.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/common.h"
#include "../src/io/png.h"
#include "fixture.h"
#include "testutil.h"

#define FIXTURE "tests/fixtures/sample_ref.safetensors"
#define MAX_OFF_BY_ONE 16 // pixel values allowed to differ by one (of 24,576 per case)

static const char *g_bin;

// Runs `drtune <args>`; prints its output when it fails.
static int run(const char *args) {
    TuChild c;
    int rc = tu_run_drtune(args, &c);
    if (rc != 0) printf("drtune %s (exit %d)\n%s%s", args, rc, c.out, c.err);
    tu_child_free(&c);
    return rc;
}

// s as one single-quoted shell word
static void shell_quote(char *dst, size_t n, const char *s) {
    size_t k = 0;
    dst[k++] = '\'';
    for (; *s && k + 6 < n; s++) {
        if (*s == '\'') {
            memcpy(dst + k, "'\\''", 4);
            k += 4;
        } else {
            dst[k++] = *s;
        }
    }
    dst[k++] = '\'';
    dst[k] = 0;
}

static const char *meta(const SafeTensors *st, const char *key) {
    const char *v = safetensors_metadata(st, key);
    CHECK(v, "regenerate with tools/reference/make_sample_fixture.py", "fixture metadata has no '%s'", key);
    return v;
}

// One case: samples with drtune, compares the saved images and the PNG grid with the reference.
static void check_case(const SafeTensors *ref, const char *prompts_arg, const char *negative, const char *suffix) {
    char args[16384], png[4200], saved[4200], neg[512] = "", what[256], name[64];
    snprintf(png, sizeof png, "%s/sample%s.png", tu_tmpdir(NULL), suffix);
    snprintf(saved, sizeof saved, "%s/sample%s.safetensors", tu_tmpdir(NULL), suffix);
    if (negative) {
        char q[400];
        shell_quote(q, sizeof q, negative);
        snprintf(neg, sizeof neg, "--negative %s", q);
    }
    snprintf(args, sizeof args, "sample --model %s %s --latents %s --steps %s --guidance %s --eta %s %s --out %s "
             "--save %s", tu_path("pipe"), prompts_arg, FIXTURE, meta(ref, "steps"), meta(ref, "guidance"),
             meta(ref, "eta"), neg, png, saved);
    if (!tu_check(run(args) == 0, "drtune sample%s exits 0", negative ? " --negative" : "")) return;

    snprintf(name, sizeof name, "images%s", suffix);
    Tensor want = fixture_get(ref, name); // [B, H, W, 3] in [0, 1]
    int64_t B = want.shape[0], H = want.shape[1], W = want.shape[2];
    SafeTensors got;
    safetensors_open(&got, saved);
    Tensor img = fixture_get(&got, "image"); // [B, 3, H, W] in [-1, 1]
    safetensors_close(&got);
    CHECK(img.shape[0] == B && img.shape[1] == 3 && img.shape[2] == H && img.shape[3] == W, "", "image shape");
    Tensor conv = tensor_make(xmalloc(tensor_bytes(&want)), DTYPE_F32, DEVICE_CPU, 4, want.shape);
    const float *x = img.data;
    float *u = conv.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < 3; c++)
            for (int64_t p = 0; p < H * W; p++) { // diffusers: (x / 2 + 0.5).clamp(0, 1), NHWC
                float v = x[(b * 3 + c) * H * W + p] / 2.0f + 0.5f;
                u[(b * H * W + p) * 3 + c] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            }
    snprintf(what, sizeof what, "images%s vs diffusers", negative ? " (negative prompt)" : "");
    tu_count(fixture_compare(what, &conv, &want, 1e-4));

    // the PNG grid: B cells of H x W in one row, 2-pixel gaps (pngio_write_grid)
    snprintf(name, sizeof name, "pixels%s", suffix);
    Tensor pix = fixture_get(ref, name); // [B, H, W, 3] i32
    int gh, gw;
    float *grid = pngio_read(png, &gh, &gw);
    CHECK(gh == H && gw == B * W + (B - 1) * 2, "", "grid of %d x %d pixels", gh, gw);
    int64_t off = 0, worse = 0, n = B * H * W * 3;
    const int32_t *pv = pix.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t xx = 0; xx < W; xx++)
                for (int64_t c = 0; c < 3; c++) {
                    float g = grid[(c * gh + y) * gw + b * (W + 2) + xx];
                    long v = lrintf((g + 1.0f) / 2.0f * 255.0f);
                    long d = labs(v - pv[((b * H + y) * W + xx) * 3 + c]);
                    off += d == 1;
                    worse += d > 1;
                }
    tu_check(off <= MAX_OFF_BY_ONE && worse == 0,
             "PNG pixels%s vs diffusers' uint8: %lld of %lld values off by one, %lld off by more (allowed: %d, 0)",
             negative ? " (negative prompt)" : "", (long long)off, (long long)n, (long long)worse, MAX_OFF_BY_ONE);
    free(grid);
    free(pix.data);
    free(conv.data);
    free(img.data);
    free(want.data);
}

int main(void) {
    g_bin = getenv("DRTUNE_BIN");
    if (!g_bin || !*g_bin) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    SafeTensors ref;
    safetensors_open(&ref, FIXTURE);
    tu_tmpdir("parity_sample");
    char args[8192];
    snprintf(args, sizeof args, "init-weights --model configs/models/tiny-random --out %s --seed %s", tu_path("pipe"),
             meta(&ref, "init_seed"));
    int ready = tu_check(run(args) == 0, "init-weights of the fixture's pipeline folder");

    cJSON *prompts = cJSON_Parse(meta(&ref, "prompts"));
    CHECK(cJSON_IsArray(prompts), "", "fixture metadata 'prompts' is not a JSON list");
    char prompts_arg[2048] = "", q[512];
    size_t k = 0;
    for (cJSON *p = prompts->child; p; p = p->next) {
        shell_quote(q, sizeof q, p->valuestring);
        k += (size_t)snprintf(prompts_arg + k, sizeof prompts_arg - k, "%s--prompt %s", k ? " " : "", q);
    }
    cJSON_Delete(prompts);
    if (ready) {
        check_case(&ref, prompts_arg, NULL, "");
        check_case(&ref, prompts_arg, meta(&ref, "negative_prompt"), "_negative");
    }
    safetensors_close(&ref);
    return tu_report();
}
