// cuda_transpose.cu: the per-sample transpose between NCHW images and [B, H*W, C] token rows that brackets every
// transformer block of the UNet (models/blocks.c), and the same transpose with a dtype conversion that moves tensors
// between NCHW and channels last (tensor_cast). 32 x 32 tiles through shared memory (one padding column against
// bank conflicts) so both the read and the write are coalesced.
#include "cuda_vec.cuh"
#include "../../core/device_cuda.h"
#include "../../core/tensor.h"
#include "cuda_api.h"

enum { TT = 32, TROWS = 8 };

// dst [B, K, R] = src [B, R, K]^T per sample (+ res [B, K, R] when res != NULL: the residual stream added on the
// way, as add_forward would after), values converted from TS to TD storage through fp32 (exact for equal types);
// grid (tiles of R times tiles of K, B): the tile pairs on x, which has room for a megapixel image's pixel tiles
// (y and z stop at 65535); block (32, 8)
template <class TD, class TS>
__global__ static void transpose_kernel(TD *dst, const TS *src, const TD *res, int64_t R, int64_t K) {
    __shared__ float tile[TT][TT + 1];
    int64_t tk = (K + TT - 1) / TT, b = blockIdx.y;
    int64_t r0 = (int64_t)blockIdx.x / tk * TT, k0 = (int64_t)blockIdx.x % tk * TT;
    const TS *s = src + b * R * K;
    TD *d = dst + b * R * K;
    for (int i = threadIdx.y; i < TT; i += TROWS) {
        int64_t r = r0 + i, k = k0 + threadIdx.x;
        if (r < R && k < K) tile[i][threadIdx.x] = ld_f32(s, r * K + k);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < TT; i += TROWS) {
        int64_t k = k0 + i, r = r0 + threadIdx.x;
        if (r < R && k < K) {
            float v = tile[threadIdx.x][i];
            st_f32(d, k * R + r, res ? v + ld_f32(res + b * R * K, k * R + r) : v);
        }
    }
}
static dim3 transpose_grid(int64_t B, int64_t R, int64_t K) {
    CHECK(B <= 65535, "", "transpose: %lld samples (at most 65535)", (long long)B);
    return dim3((unsigned)((int64_t)cuda_blocks(K, TT) * cuda_blocks(R, TT)), (unsigned)B);
}

extern "C" void transpose_batched_cuda(void *dst, const void *src, const void *res, int64_t B, int64_t R, int64_t K,
                                       int dt) {
    dim3 grid = transpose_grid(B, R, K), block(TT, TROWS);
    CUDA_DT_DISPATCH(dt, T, {
        auto k = transpose_kernel<T, T>;
        CUDA_LAUNCH(k, grid, block, 0, cuda_stream(), (T *)dst, (const T *)src, (const T *)res, R, K);
    });
}

extern "C" void transpose_cast_cuda(void *dst, int dt_dst, const void *src, int dt_src, int64_t B, int64_t R,
                                    int64_t K) {
    dim3 grid = transpose_grid(B, R, K), block(TT, TROWS);
    CUDA_DT_DISPATCH(dt_dst, TD, CUDA_DT_DISPATCH(dt_src, TS, {
        auto k = transpose_kernel<TD, TS>;
        CUDA_LAUNCH(k, grid, block, 0, cuda_stream(), (TD *)dst, (const TS *)src, (const TD *)nullptr, R, K);
    }));
}
