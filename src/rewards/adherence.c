// adherence.c: the prompt-adherence reward of the procedural scene set (data/scenes.h): how much of the image has
// the colour the prompt asks for, against the strongest other palette colour; and the checker accuracy used by
// evaluation. docs/DATA.md gives the formula.
#include <math.h>
#include <string.h>

#include "../core/common.h"
#include "../data/scenes.h"
#include "../ops/ops_internal.h"
#include "adherence_cuda.h"
#include "reward.h"

_Static_assert(COLOUR_COUNT == ADHERENCE_COLOURS, "the GPU kernel's palette size");

#define ADHERENCE_S 0.25   // kernel width in u units
#define ADHERENCE_TAU 0.02 // temperature of the smooth maximum over the other colours

void adherence_score_cuda_add(const Reward *r, float weight, const Tensor *images, const char *const *prompts,
                              float *scores, Tensor *dimages, const float *dscore, void *ws) {
    (void)r;
    CHECK(images->ndim == 4 && images->shape[1] == 3, "", "rewards take [B, 3, H, W] images");
    const int64_t B = images->shape[0], HW = images->shape[2] * images->shape[3];
    OPS_EXPECT_CUDA(images, "adherence");
    if (dimages) {
        CHECK(tensor_numel(dimages) == tensor_numel(images), "", "reward gradient shape mismatch");
        OPS_EXPECT_CUDA(dimages, "adherence");
    }
    float pal[COLOUR_COUNT][3];
    for (int k = 0; k < COLOUR_COUNT; k++) scene_colour_rgb((SceneColour)k, pal[k]);
    int *targets = xmalloc(sizeof(int) * (size_t)(B > 0 ? B : 1));
    for (int64_t b = 0; b < B; b++) {
        Scene sc;
        targets[b] = prompts && prompts[b] && scene_parse(prompts[b], &sc) ? (int)sc.obj[0].colour : -1;
    }
    adherence_score_cuda(images->data, ops_dt(images), B, HW, (const float(*)[3])pal, ADHERENCE_S, ADHERENCE_TAU,
                         targets, dscore, weight, scores, dimages ? dimages->data : NULL,
                         dimages ? ops_dt(dimages) : DTYPE_F32, ws);
    free(targets);
}

// Per image, with u = x/2 + 1/2, palette colours c_k and t the first object's colour in the prompt:
//   F_k = mean over pixels of exp(-|u - c_k|^2 / (2 s^2))                 soft fraction of pixels near c_k
//   M   = sum_{k != t} w_k F_k,  w = softmax_{k != t}(F_k / tau)           smooth maximum of the others
//   score = F_t - M
// dscore/dF_t = 1, dscore/dF_k = -w_k (1 + (F_k - M) / tau) for k != t, and
// dF_k/du = -exp(-|u - c_k|^2 / (2 s^2)) (u - c_k) / (s^2 HW). Prompts that do not parse score 0 with zero gradient.
void adherence_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                     Tensor *dimages, const float *dscore) {
    (void)r;
    CHECK(images->ndim == 4 && images->shape[1] == 3, "", "rewards take [B, 3, H, W] images");
    if (dimages) CHECK(tensor_numel(dimages) == tensor_numel(images), "", "reward gradient shape mismatch");
    const int64_t B = images->shape[0], HW = images->shape[2] * images->shape[3];
    if (images->device == DEVICE_CUDA) { // alone on the GPU: dimages is written (reward.h)
        if (dimages) tensor_fill(dimages, 0.0f);
        void *ws = ops_workspace(DEVICE_CUDA, adherence_scratch_bytes(B, HW));
        adherence_score_cuda_add(r, 1.0f, images, prompts, scores, dimages, dscore, ws);
        return;
    }
    const float *xs = tensor_f32(images);
    float *dxs = dimages ? tensor_f32(dimages) : NULL;
    double pal[COLOUR_COUNT][3];
    for (int k = 0; k < COLOUR_COUNT; k++) {
        float rgb[3];
        scene_colour_rgb((SceneColour)k, rgb);
        for (int c = 0; c < 3; c++) pal[k][c] = rgb[c];
    }
    const double inv2s2 = 1.0 / (2.0 * ADHERENCE_S * ADHERENCE_S);
#pragma omp parallel for
    for (int64_t b = 0; b < B; b++) {
        const float *x = xs + b * 3 * HW;
        float *dx = dxs ? dxs + b * 3 * HW : NULL;
        Scene sc;
        if (!prompts || !prompts[b] || !scene_parse(prompts[b], &sc)) {
            scores[b] = 0.0f;
            if (dx) memset(dx, 0, sizeof(float) * (size_t)(3 * HW));
            continue;
        }
        const int t = (int)sc.obj[0].colour;
        double F[COLOUR_COUNT] = {0};
        for (int64_t p = 0; p < HW; p++)
            for (int k = 0; k < COLOUR_COUNT; k++) {
                double d2 = 0;
                for (int c = 0; c < 3; c++) {
                    double d = 0.5 * x[c * HW + p] + 0.5 - pal[k][c];
                    d2 += d * d;
                }
                F[k] += exp(-d2 * inv2s2);
            }
        double top = -1.0, z = 0.0, M = 0.0, w[COLOUR_COUNT] = {0};
        for (int k = 0; k < COLOUR_COUNT; k++) {
            F[k] /= (double)HW;
            if (k != t && F[k] > top) top = F[k];
        }
        for (int k = 0; k < COLOUR_COUNT; k++)
            if (k != t) z += w[k] = exp((F[k] - top) / ADHERENCE_TAU);
        for (int k = 0; k < COLOUR_COUNT; k++) M += (w[k] /= z) * F[k];
        scores[b] = (float)(F[t] - M);
        if (!dx) continue;
        double g[COLOUR_COUNT]; // dscore/dF_k, times the upstream gradient and d(F_k)/d(kernel) = 1/HW
        for (int k = 0; k < COLOUR_COUNT; k++)
            g[k] = (k == t ? 1.0 : -w[k] * (1.0 + (F[k] - M) / ADHERENCE_TAU)) * dscore[b] / (double)HW;
        for (int64_t p = 0; p < HW; p++) {
            double u[3], du[3] = {0, 0, 0};
            for (int c = 0; c < 3; c++) u[c] = 0.5 * x[c * HW + p] + 0.5;
            for (int k = 0; k < COLOUR_COUNT; k++) {
                double d2 = 0;
                for (int c = 0; c < 3; c++) d2 += (u[c] - pal[k][c]) * (u[c] - pal[k][c]);
                double e = g[k] * exp(-d2 * inv2s2) * 2.0 * inv2s2;
                for (int c = 0; c < 3; c++) du[c] -= e * (u[c] - pal[k][c]);
            }
            for (int c = 0; c < 3; c++) dx[c * HW + p] = (float)(0.5 * du[c]); // du/dx = 1/2
        }
    }
}

double scene_adherence_accuracy(const float *images, int B, int H, int W, const char *const *prompts, int *colour_ok,
                                int *shape_ok) {
    int both = 0;
    for (int b = 0; b < B; b++) {
        Scene sc;
        int cok = 0, sok = 0;
        if (prompts && prompts[b] && scene_parse(prompts[b], &sc)) {
            const SceneObject *o = &sc.obj[0];
            int m = 1;
            for (int j = 1; j < sc.n; j++) m += sc.obj[j].colour != o->colour;
            SceneCheck k;
            scene_check_colour(images + (size_t)b * 3 * (size_t)H * (size_t)W, H, W, o->colour, &k);
            cok = k.colour_conf >= 0.5f / (float)m;
            sok = k.shape_conf > 0.0f && k.shape == o->shape;
        }
        if (colour_ok) colour_ok[b] = cok;
        if (shape_ok) shape_ok[b] = sok;
        both += cok && sok;
    }
    return B > 0 ? (double)both / (double)B : 0.0;
}
