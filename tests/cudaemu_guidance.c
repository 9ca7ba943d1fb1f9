// cudaemu_guidance.c: the classifier-free-guidance op on the GPU against the CPU: the forward and the scaled
// backward, guided and not, at sizes that are not multiples of the block; f32 must be exact (the same rounded
// operations in the same order), bf16 within one bf16 rounding of the output.
#include "cudaemu_util.h"
#include "../src/ops/ops.h"

static void check(int64_t n, int guided, DType dt) {
    int64_t sr[1] = {guided ? 2 * n : n}, se[1] = {n};
    Tensor rows = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, sr), drows = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, sr);
    Tensor eps = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, se), deps = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, se);
    cu_fill(&rows, (uint64_t)n, 1.0f, dt == DTYPE_BF16);
    cu_fill(&deps, (uint64_t)n + 1, 1.0f, dt == DTYPE_BF16);
    cfg_combine_forward(&eps, &rows, 7.5f);
    cfg_combine_backward(&drows, &deps, 7.5f, 0.125);
    Tensor grows = cu_upload(&rows, dt), gdeps = cu_upload(&deps, dt);
    Tensor geps = cu_alloc(DEVICE_CUDA, dt, 1, se), gdrows = cu_alloc(DEVICE_CUDA, dt, 1, sr);
    cfg_combine_forward(&geps, &grows, 7.5f);
    cfg_combine_backward(&gdrows, &gdeps, 7.5f, 0.125);
    char what[96];
    double tol = dt == DTYPE_BF16 ? 4e-3 : 0.0; // bf16: the output's own rounding, 2^-8 relative
    snprintf(what, sizeof what, "cfg forward n=%lld %s %s", (long long)n, guided ? "guided" : "one branch",
             dtype_name(dt));
    cu_compare(what, &geps, &eps, tol);
    snprintf(what, sizeof what, "cfg backward n=%lld %s %s", (long long)n, guided ? "guided" : "one branch",
             dtype_name(dt));
    cu_compare(what, &gdrows, &drows, tol);
    cu_free(&rows), cu_free(&drows), cu_free(&eps), cu_free(&deps);
    cu_free(&grows), cu_free(&gdeps), cu_free(&geps), cu_free(&gdrows);
}

int main(void) {
    cu_require_gpu();
    check(1, 1, DTYPE_F32);
    check(1000, 1, DTYPE_F32);
    check(777, 0, DTYPE_F32);
    check(513, 1, DTYPE_BF16);
    return tu_report();
}
