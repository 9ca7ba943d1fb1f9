// cuda_common.cuh: what every .cu file of drtune includes first. It selects the real CUDA toolkit or the in-repo
// emulator (src/cudaemu/, built with DRTUNE_CUDAEMU for ctest -L cudaemu), so one kernel source serves both, and
// gives the launch macro, error checks and small helpers the kernels share. Kernels use only the CUDA subset that
// cudaemu.h provides.
#pragma once
#ifdef DRTUNE_CUDAEMU
#include "../../cudaemu/cudaemu.h"
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif
#include <stdint.h>

#include "../../core/common.h"

#define CUDA_CHECK(call)                                                                                     \
    do {                                                                                                     \
        cudaError_t _e = (call);                                                                             \
        if (_e != cudaSuccess) dt_fatal(__FILE__, __LINE__, "check the GPU and driver (nvidia-smi)", "%s: %s", \
                                        #call, cudaGetErrorString(_e));                                      \
    } while (0)

// CUDA_LAUNCH(kernel, grid, block, dyn_smem_bytes, stream, args...): kernel<<<grid, block, smem, stream>>>(args)
// on a GPU, the emulator's launcher otherwise. An empty grid launches nothing; a bad configuration is an internal
// failure naming the kernel. A template kernel with several template arguments needs an alias without commas.
#ifdef DRTUNE_CUDAEMU
#define CUDA_LAUNCH_RAW_(kernel, grid, block, smem, stream, ...)                                             \
    CUDAEMU_LAUNCH(kernel, grid, block, smem, stream, __VA_ARGS__)
#define CUDA_DYN_SHARED(T, name) T *name = (T *)cudaemu_dyn_smem()
#else
#define CUDA_LAUNCH_RAW_(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define CUDA_DYN_SHARED(T, name)                                                                             \
    extern __shared__ __align__(16) unsigned char cuda_dyn_smem_[];                                          \
    T *name = (T *)cuda_dyn_smem_
#endif
#define CUDA_LAUNCH(kernel, grid, block, smem, stream, ...)                                                  \
    do {                                                                                                     \
        dim3 g_ = (grid), b_ = (block);                                                                      \
        if ((long long)g_.x * g_.y * g_.z > 0) {                                                             \
            CUDA_LAUNCH_RAW_(kernel, g_, b_, (smem), (stream), __VA_ARGS__);                                 \
            cudaError_t e_ = cudaGetLastError();                                                             \
            if (e_ != cudaSuccess)                                                                           \
                dt_fatal(__FILE__, __LINE__, "", "launching %s: %s", #kernel, cudaGetErrorString(e_));       \
        }                                                                                                    \
    } while (0)

static inline unsigned cuda_blocks(long long n, int threads) { return (unsigned)((n + threads - 1) / threads); }
// Blocks of a grid-stride loop over n elements: one per `threads` elements, at most 65535 (each thread then takes
// several).
static inline unsigned cuda_stride_blocks(long long n, int threads) {
    unsigned b = cuda_blocks(n, threads);
    return b < 65535 ? b : 65535;
}

// storage <-> fp32 at the kernel boundary: activations are fp32 or bf16, compute is fp32
__device__ __forceinline__ float ld_f32(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld_f32(const __nv_bfloat16 *p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st_f32(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st_f32(__nv_bfloat16 *p, int64_t i, float v) { p[i] = __float2bfloat16(v); }
