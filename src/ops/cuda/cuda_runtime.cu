// cuda_runtime.cu: device memory, copies and the cuBLAS handle behind core/device.h.
#include "cuda_api.h"
#include "cuda_common.cuh"

static cublasHandle_t g_cublas = nullptr;

extern "C" int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" error
        return 0;
    }
    return n;
}

extern "C" void *cuda_alloc(size_t bytes) {
    void *p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 256));
    CUDA_CHECK(cudaMemset(p, 0, bytes ? bytes : 256));
    return p;
}

extern "C" void cuda_free(void *p) { CUDA_CHECK(cudaFree(p)); }
extern "C" void cuda_zero(void *p, size_t bytes) { CUDA_CHECK(cudaMemset(p, 0, bytes)); }

extern "C" void cuda_copy(void *dst, int dst_on_device, const void *src, int src_on_device, size_t bytes) {
    cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                        : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
}

extern "C" void cuda_synchronize(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

extern "C" const char *cuda_device_name(void) {
    static cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    return prop.name;
}

cublasHandle_t cuda_cublas(void) {
    if (!g_cublas) {
        CUBLAS_CHECK(cublasCreate(&g_cublas));
        // exact fp32: no TF32 tensor-core rounding unless a caller opts in
        CUBLAS_CHECK(cublasSetMathMode(g_cublas, CUBLAS_PEDANTIC_MATH));
    }
    return g_cublas;
}
