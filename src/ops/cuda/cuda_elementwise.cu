// cuda_elementwise.cu: simple arithmetic on the GPU, the same formulas as the CPU ops (ops/arith.c). The activations
// are in cuda_activation.cu.
#include "cuda_common.cuh"
#include "../../core/device_cuda.h"
#include "cuda_api.h"

__global__ static void add_kernel(float *out, const float *a, const float *b, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}
__global__ static void axpy_kernel(float *y, float alpha, const float *x, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += alpha * x[i];
}
__global__ static void scale_kernel(float *y, float alpha, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] *= alpha;
}
__global__ static void fill_kernel(float *y, float v, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = v;
}

#define LAUNCH(kernel, n, ...) CUDA_LAUNCH(kernel, cuda_blocks((n), 256), 256, 0, cuda_stream(), __VA_ARGS__)

extern "C" void add_forward_cuda(void *out, const void *a, const void *b, int64_t n) {
    LAUNCH(add_kernel, n, (float *)out, (const float *)a, (const float *)b, n);
}
extern "C" void axpy_cuda(void *y, float alpha, const void *x, int64_t n) {
    LAUNCH(axpy_kernel, n, (float *)y, alpha, (const float *)x, n);
}
extern "C" void scale_cuda(void *y, float alpha, int64_t n) { LAUNCH(scale_kernel, n, (float *)y, alpha, n); }
extern "C" void fill_cuda(void *y, float value, int64_t n) { LAUNCH(fill_kernel, n, (float *)y, value, n); }
