// cuda_common.cuh: error checking and the shared cuBLAS handle for the CUDA backend's .cu files.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "../../core/common.h"

#define CUDA_CHECK(call)                                                                                     \
    do {                                                                                                     \
        cudaError_t _e = (call);                                                                             \
        if (_e != cudaSuccess) dt_fatal(__FILE__, __LINE__, "check the GPU and driver", "%s: %s", #call,    \
                                        cudaGetErrorString(_e));                                             \
    } while (0)
#define CUBLAS_CHECK(call)                                                                                   \
    do {                                                                                                     \
        cublasStatus_t _s = (call);                                                                          \
        if (_s != CUBLAS_STATUS_SUCCESS) dt_fatal(__FILE__, __LINE__, "", "%s: cuBLAS status %d", #call,    \
                                                  (int)_s);                                                  \
    } while (0)

cublasHandle_t cuda_cublas(void);
static inline unsigned cuda_blocks(long long n, int threads) { return (unsigned)((n + threads - 1) / threads); }
