// guidance.c: classifier-free guidance as an op, so the engine's guided UNet evaluation runs on any device with the
// same rounding: the forward combines the unconditional and conditional rows, eps = eps_u + w (eps_c - eps_u) in
// fp32; the backward spreads a scaled upstream gradient over the rows, (1 - w) s d and w s d, computed in double and
// rounded once (as the engine always has). Without guidance (one branch) the forward copies and the backward scales.
#include "ops_internal.h"

// eps [B, ...] from rows [2B, ...] (guided: unconditional rows first) or [B, ...] (w ignored)
void cfg_combine_forward(Tensor *eps, const Tensor *rows, float w) {
    int64_t n = tensor_numel(eps), r = tensor_numel(rows);
    CHECK(r == n || r == 2 * n, "", "cfg_combine: %lld row elements for %lld outputs", (long long)r, (long long)n);
    int guided = r == 2 * n;
    if (OPS_ON_CUDA(eps)) {
        OPS_EXPECT_CUDA(eps, "cfg_combine_forward");
        OPS_EXPECT_CUDA(rows, "cfg_combine_forward");
        CHECK(rows->dtype == eps->dtype, "", "cfg_combine: rows and output dtypes differ");
        cfg_combine_forward_cuda(eps->data, rows->data, n, guided, w, ops_dt(eps));
        return;
    }
    OPS_EXPECT_CPU(eps, "cfg_combine_forward");
    OPS_EXPECT_CPU(rows, "cfg_combine_forward");
    float *o = tensor_f32(eps);
    const float *er = tensor_f32(rows);
    if (!guided) {
        memcpy(o, er, sizeof(float) * (size_t)n);
        return;
    }
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) o[i] = er[i] + w * (er[n + i] - er[i]); // uncond + w (cond - uncond)
}

// drows [2B, ...] (or [B, ...]) = the gradient of rows for upstream deps [B, ...] scaled by `scale`
void cfg_combine_backward(Tensor *drows, const Tensor *deps, double w, double scale) {
    int64_t n = tensor_numel(deps), r = tensor_numel(drows);
    CHECK(r == n || r == 2 * n, "", "cfg_combine_backward: %lld row elements for %lld inputs", (long long)r,
          (long long)n);
    int guided = r == 2 * n;
    if (OPS_ON_CUDA(drows)) {
        OPS_EXPECT_CUDA(drows, "cfg_combine_backward");
        OPS_EXPECT_CUDA(deps, "cfg_combine_backward");
        CHECK(drows->dtype == deps->dtype, "", "cfg_combine_backward: dtypes differ");
        cfg_combine_backward_cuda(drows->data, deps->data, n, guided, w, scale, ops_dt(deps));
        return;
    }
    OPS_EXPECT_CPU(drows, "cfg_combine_backward");
    OPS_EXPECT_CPU(deps, "cfg_combine_backward");
    const float *d = tensor_f32(deps);
    float *dr = tensor_f32(drows);
    if (!guided) {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; i++) dr[i] = (float)(scale * d[i]);
        return;
    }
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) { // eps = (1 - w) eps_u + w eps_c
        dr[i] = (float)((1.0 - w) * scale * d[i]);
        dr[n + i] = (float)(w * scale * d[i]);
    }
}
