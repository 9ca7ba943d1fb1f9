// cuda_transpose.cu: the per-sample transpose between NCHW images and [B, H*W, C] token rows that brackets every
// transformer block of the UNet (models/blocks.c). 32 x 32 tiles through shared memory (one padding column against
// bank conflicts) so both the read and the write are coalesced.
#include "cuda_common.cuh"
#include "../../core/device_cuda.h"
#include "../../core/tensor.h"
#include "cuda_api.h"

enum { TT = 32, TROWS = 8 };

// dst [B, K, R] = src [B, R, K]^T per sample (+ res [B, K, R] when res != NULL: the residual stream added on the
// way, as add_forward would after); grid (tiles of K, tiles of R, B), block (32, 8)
template <class T> __global__ static void transpose_kernel(T *dst, const T *src, const T *res, int64_t R, int64_t K) {
    __shared__ T tile[TT][TT + 1];
    int64_t b = blockIdx.z, r0 = (int64_t)blockIdx.y * TT, k0 = (int64_t)blockIdx.x * TT;
    const T *s = src + b * R * K;
    T *d = dst + b * R * K;
    for (int i = threadIdx.y; i < TT; i += TROWS) {
        int64_t r = r0 + i, k = k0 + threadIdx.x;
        if (r < R && k < K) tile[i][threadIdx.x] = s[r * K + k];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < TT; i += TROWS) {
        int64_t k = k0 + i, r = r0 + threadIdx.x;
        if (r < R && k < K) {
            if (res) st_f32(d, k * R + r, ld_f32(&tile[threadIdx.x][i], 0) + ld_f32(res + b * R * K, k * R + r));
            else d[k * R + r] = tile[threadIdx.x][i];
        }
    }
}

extern "C" void transpose_batched_cuda(void *dst, const void *src, const void *res, int64_t B, int64_t R, int64_t K,
                                       int dt) {
    dim3 grid(cuda_blocks(K, TT), cuda_blocks(R, TT), (unsigned)B), block(TT, TROWS);
    if (dt == DTYPE_BF16)
        CUDA_LAUNCH(transpose_kernel<__nv_bfloat16>, grid, block, 0, cuda_stream(), (__nv_bfloat16 *)dst,
                    (const __nv_bfloat16 *)src, (const __nv_bfloat16 *)res, R, K);
    else
        CUDA_LAUNCH(transpose_kernel<float>, grid, block, 0, cuda_stream(), (float *)dst, (const float *)src,
                    (const float *)res, R, K);
}
