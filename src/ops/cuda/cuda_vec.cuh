// cuda_vec.cuh: storage-dtype dispatch, 4-wide vector access and deterministic warp/block sums for the memory-bound
// kernels (layout, arithmetic, training). Kernels are templated on the storage type T (float or __nv_bfloat16); a launcher picks T from the DType
// code it is given. Four elements are moved per load or store (16 bytes in fp32, 8 in bf16) when every pointer of
// a launch is aligned for it; the kernels fall back to scalar accesses otherwise and for the tail.
#pragma once
#include "cuda_common.cuh"
#include "../../core/tensor.h"

// Runs the statement list with T = the storage type of DType code dt (DTYPE_BF16 or else fp32).
#define CUDA_DT_DISPATCH(dt, T, ...)                                                                         \
    do {                                                                                                     \
        if ((dt) == DTYPE_BF16) {                                                                            \
            typedef __nv_bfloat16 T;                                                                         \
            __VA_ARGS__;                                                                                     \
        } else {                                                                                             \
            typedef float T;                                                                                 \
            __VA_ARGS__;                                                                                     \
        }                                                                                                    \
    } while (0)

// Four consecutive elements of storage type T, aligned so that one access moves all of them.
template <class T> struct alignas(4 * sizeof(T)) Vec4 {
    T v[4];
};

// Elementwise kernels take four consecutive elements per thread: the first of them, and the grid for n elements
// (blocks of CUDA_VEC_THREADS threads).
#define CUDA_VEC_THREADS 256
__device__ __forceinline__ int64_t cuda_quad_index(void) {
    return ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
}
static inline unsigned cuda_quad_blocks(int64_t n) { return cuda_blocks((n + 3) / 4, CUDA_VEC_THREADS); }

// 1 when p is aligned for Vec4<T> of a dtype of `size` bytes (NULL counts as aligned).
static inline int cuda_vec_aligned(const void *p, size_t size) { return ((uintptr_t)p % (4 * size)) == 0; }

template <class T> __device__ __forceinline__ Vec4<T> ld_vec4(const T *p, int64_t i) {
    return *reinterpret_cast<const Vec4<T> *>(p + i);
}
template <class T> __device__ __forceinline__ void st_vec4(T *p, int64_t i, const Vec4<T> &v) {
    *reinterpret_cast<Vec4<T> *>(p + i) = v;
}

// Sum over the 32 lanes of a warp (every lane gets it); a fixed butterfly, so the result does not depend on timing.
template <class A> __device__ __forceinline__ A warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// Sum over the block (blockDim.x a multiple of 32, every thread calling it); the result is valid in thread 0.
// sh: 32 elements of shared memory, reusable right after the call returns in every thread.
template <class A> __device__ __forceinline__ A block_sum(A v, A *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); // sh may still be read by a previous call
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) v = warp_sum(lane < nw ? sh[lane] : (A)0);
    return v;
}
