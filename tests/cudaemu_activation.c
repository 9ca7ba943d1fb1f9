// cudaemu_activation.c: the CUDA activations (SiLU, GELU erf and tanh, quick GELU), GEGLU and softmax against the CPU
// ops, forward and backward, in fp32 and bf16 storage, at sizes that are and are not multiples of the block and
// pack sizes (and in place where the ops allow it). Runs on the emulated GPU (label cudaemu) and, as cuda_activation,
// on a real one.
//
// Tolerances (max |gpu - cpu| / max |cpu| per tensor):
//   fp32: the same formulas; expf / erff / tanhf differ by an ulp or two between the C library and CUDA: 1e-6. The
//         softmax normaliser and the backward's dot product are fp32 sums over C <= 1000 terms on the GPU (double on
//         the CPU), a relative error up to ~sqrt(C) 2^-24 ~ 2e-6 that the backward's dout - dot can expose: 4e-6.
//   bf16: inputs are rounded to bf16 before either side sees them; each output is stored in bf16, off by at most half
//         an ulp, 2^-8 of its magnitude, plus the fp32 differences: 2^-8 + 4e-6. The softmax backward reads the
//         forward's stored output on both sides (the GPU's bf16 values).
#include <string.h>

#include "../src/ops/ops.h"
#include "cudaemu_util.h"

#define TOL_F32 1e-6
#define TOL_SOFTMAX_F32 4e-6
#define TOL_BF16 (1.0 / 256 + 4e-6)

static Tensor cpu(int ndim, const int64_t *shape) { return cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape); }


static void act_case(int64_t n, Activation act, DType dt, int in_place) {
    int bf = dt == DTYPE_BF16;
    double tol = bf ? TOL_BF16 : TOL_F32;
    int64_t sh[1] = {n};
    Tensor x = cpu(1, sh), y = cpu(1, sh), dy = cpu(1, sh), dx = cpu(1, sh);
    cu_fill(&x, 21, 3.0f, bf); // covers the saturated tails of every activation
    cu_fill(&dy, 22, 1.0f, bf);
    Tensor gx = cu_upload(&x, dt), gdy = cu_upload(&dy, dt);
    Tensor gy = in_place ? cu_upload(&x, dt) : cu_nan(y.ndim, y.shape, dt, 0);
    Tensor gdx = in_place ? cu_upload(&dy, dt) : cu_nan(dx.ndim, dx.shape, dt, 0);
    char what[128];
    activation_forward(&y, &x, act);
    activation_forward(&gy, in_place ? &gy : &gx, act);
    snprintf(what, sizeof what, "%s [%lld] %s%s fwd", activation_name(act), (long long)n, dtype_name(dt),
             in_place ? " in place" : "");
    cu_compare(what, &gy, &y, tol);
    activation_backward(&dx, &dy, &x, act);
    activation_backward(&gdx, in_place ? &gdx : &gdy, &gx, act);
    snprintf(what, sizeof what, "%s [%lld] %s%s bwd", activation_name(act), (long long)n, dtype_name(dt),
             in_place ? " in place" : "");
    cu_compare(what, &gdx, &dx, tol);
    Tensor *all[] = {&x, &y, &dy, &dx, &gx, &gdy, &gy, &gdx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu_free(all[i]);
}

static void geglu_case(int64_t N, int64_t D, DType dt) {
    int bf = dt == DTYPE_BF16;
    double tol = bf ? TOL_BF16 : TOL_F32;
    int64_t si[2] = {N, 2 * D}, so[2] = {N, D};
    Tensor x = cpu(2, si), dx = cpu(2, si), y = cpu(2, so), dy = cpu(2, so);
    cu_fill(&x, 31, 2.0f, bf);
    cu_fill(&dy, 32, 1.0f, bf);
    Tensor gx = cu_upload(&x, dt), gdy = cu_upload(&dy, dt), gy = cu_nan(y.ndim, y.shape, dt, 0);
    Tensor gdx = cu_nan(dx.ndim, dx.shape, dt, 0);
    char what[128];
    geglu_forward(&y, &x);
    geglu_forward(&gy, &gx);
    snprintf(what, sizeof what, "geglu [%lld,%lld] %s fwd", (long long)N, (long long)(2 * D), dtype_name(dt));
    cu_compare(what, &gy, &y, tol);
    geglu_backward(&dx, &dy, &x);
    geglu_backward(&gdx, &gdy, &gx);
    snprintf(what, sizeof what, "geglu [%lld,%lld] %s bwd", (long long)N, (long long)(2 * D), dtype_name(dt));
    cu_compare(what, &gdx, &dx, tol);
    Tensor *all[] = {&x, &y, &dy, &dx, &gx, &gdy, &gy, &gdx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu_free(all[i]);
}

static void softmax_case(int64_t N, int64_t C, float scale, DType dt) {
    int bf = dt == DTYPE_BF16;
    double tol = bf ? TOL_BF16 : TOL_SOFTMAX_F32;
    int64_t sh[2] = {N, C};
    Tensor x = cpu(2, sh), y = cpu(2, sh), dy = cpu(2, sh), dx = cpu(2, sh);
    cu_fill(&x, 41, scale, bf);
    cu_fill(&dy, 42, 1.0f, bf);
    Tensor gx = cu_upload(&x, dt), gdy = cu_upload(&dy, dt), gy = cu_nan(y.ndim, y.shape, dt, 0);
    Tensor gdx = cu_nan(dx.ndim, dx.shape, dt, 0);
    char what[128];
    softmax_forward(&y, &x);
    softmax_forward(&gy, &gx);
    snprintf(what, sizeof what, "softmax [%lld,%lld] x%g %s fwd", (long long)N, (long long)C, scale, dtype_name(dt));
    cu_compare(what, &gy, &y, tol);
    // the backward's reference reads the output the GPU stored
    float *hy = cu_download(&gy);
    memcpy(y.data, hy, sizeof(float) * (size_t)(N * C));
    free(hy);
    softmax_backward(&dx, &dy, &y);
    softmax_backward(&gdx, &gdy, &gy);
    snprintf(what, sizeof what, "softmax [%lld,%lld] x%g %s bwd", (long long)N, (long long)C, scale, dtype_name(dt));
    cu_compare(what, &gdx, &dx, tol);
    // in place: out over in, din over dout
    softmax_forward(&gx, &gx);
    snprintf(what, sizeof what, "softmax [%lld,%lld] x%g %s fwd in place", (long long)N, (long long)C, scale,
             dtype_name(dt));
    cu_compare(what, &gx, &y, tol);
    softmax_backward(&gdy, &gdy, &gy);
    snprintf(what, sizeof what, "softmax [%lld,%lld] x%g %s bwd in place", (long long)N, (long long)C, scale,
             dtype_name(dt));
    cu_compare(what, &gdy, &dx, tol);
    Tensor *all[] = {&x, &y, &dy, &dx, &gx, &gdy, &gy, &gdx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu_free(all[i]);
}

int main(void) {
    cu_require_gpu();
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_F32;
        for (int a = ACT_SILU; a <= ACT_QUICK_GELU; a++) {
            act_case(1031 * 263, (Activation)a, dt, 0); // odd: one element per thread
            act_case(4096 + 256, (Activation)a, dt, 0);  // packs of 4
            act_case(4093, (Activation)a, dt, 1);        // in place
        }
        geglu_case(37, 77, dt);   // D odd
        geglu_case(16, 320, dt);  // packs of 4, 80 threads a row rounded up to 128
        geglu_case(3, 1300, dt);  // a row longer than one pass of its block
        softmax_case(37, 77, 3.0f, dt);
        softmax_case(10, 1000, 8.0f, dt); // wide rows, large logits: the running maximum is rescaled often
        softmax_case(5, 7, 1.0f, dt);     // rows shorter than a warp
    }
    return tu_report();
}
