// cuda_guidance.cu: the classifier-free-guidance combine and its backward (ops/guidance.c) on the GPU, with the CPU's
// operation order: fp32 for the forward, double with one rounding for the backward.
#include "cuda_common.cuh"
#include "../../core/device_cuda.h"
#include "../../core/tensor.h"
#include "cuda_api.h"

template <class T> __global__ static void cfg_fwd_kernel(T *eps, const T *rows, int64_t n, int guided, float w) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float u = ld_f32(rows, i);
    st_f32(eps, i, guided ? __fadd_rn(u, __fmul_rn(w, __fsub_rn(ld_f32(rows, n + i), u))) : u);
}

template <class T>
__global__ static void cfg_bwd_kernel(T *drows, const T *deps, int64_t n, int guided, double w, double scale) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    double d = ld_f32(deps, i);
    if (!guided) {
        st_f32(drows, i, (float)__dmul_rn(scale, d));
        return;
    }
    st_f32(drows, i, (float)__dmul_rn(__dmul_rn(__dsub_rn(1.0, w), scale), d));
    st_f32(drows, n + i, (float)__dmul_rn(__dmul_rn(w, scale), d));
}

extern "C" void cfg_combine_forward_cuda(void *eps, const void *rows, int64_t n, int guided, float w, int dt) {
    if (dt == DTYPE_BF16)
        CUDA_LAUNCH(cfg_fwd_kernel<__nv_bfloat16>, cuda_blocks(n, 256), 256, 0, cuda_stream(), (__nv_bfloat16 *)eps,
                    (const __nv_bfloat16 *)rows, n, guided, w);
    else
        CUDA_LAUNCH(cfg_fwd_kernel<float>, cuda_blocks(n, 256), 256, 0, cuda_stream(), (float *)eps,
                    (const float *)rows, n, guided, w);
}

extern "C" void cfg_combine_backward_cuda(void *drows, const void *deps, int64_t n, int guided, double w, double scale,
                                          int dt) {
    if (dt == DTYPE_BF16)
        CUDA_LAUNCH(cfg_bwd_kernel<__nv_bfloat16>, cuda_blocks(n, 256), 256, 0, cuda_stream(),
                    (__nv_bfloat16 *)drows, (const __nv_bfloat16 *)deps, n, guided, w, scale);
    else
        CUDA_LAUNCH(cfg_bwd_kernel<float>, cuda_blocks(n, 256), 256, 0, cuda_stream(), (float *)drows,
                    (const float *)deps, n, guided, w, scale);
}
