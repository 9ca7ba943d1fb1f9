// cuda_linear.cu: linear layer on the GPU through cuBLAS (fp32), matching ops/linear.c.
#include "cuda_common.cuh"
#ifdef DRTUNE_CUDAEMU
#include "../../cudaemu/cudaemu_blas.h"
#else
#include <cublas_v2.h>
#endif
#include "../../core/device_cuda.h"
#include "cuda_api.h"

#define CUBLAS_CHECK(call)                                                                                   \
    do {                                                                                                     \
        cublasStatus_t _s = (call);                                                                          \
        if (_s != CUBLAS_STATUS_SUCCESS) dt_fatal(__FILE__, __LINE__, "", "%s: cuBLAS status %d", #call,    \
                                                  (int)_s);                                                  \
    } while (0)

// The rank's cuBLAS handle, bound to the compute stream; exact fp32 (no TF32) unless a caller opts in.
static cublasHandle_t cuda_cublas(void) {
    static cublasHandle_t h = nullptr;
    if (!h) {
        CUBLAS_CHECK(cublasCreate(&h));
        CUBLAS_CHECK(cublasSetStream(h, cuda_stream()));
        CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
    }
    return h;
}

// out[n, o] = b[o]: broadcast the bias before a beta = 1 GEMM
__global__ static void bias_broadcast_kernel(float *out, const float *b, int N, int OC) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (long long)N * OC) out[i] = b[i % OC];
}

// db[o] += sum_n dout[n, o]: one block per output column group, fp32 partial sums per thread
__global__ static void bias_grad_kernel(float *db, const float *dout, int N, int OC) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++) s += dout[(long long)n * OC + o];
    db[o] += s;
}

extern "C" void linear_forward_cuda(void *out, const void *in, const void *w, const void *b, int N, int IC, int OC) {
    float beta = 0.0f, alpha = 1.0f;
    if (b) {
        CUDA_LAUNCH(bias_broadcast_kernel, cuda_blocks((long long)N * OC, 256), 256, 0, cuda_stream(), (float *)out,
                    (const float *)b, N, OC);
        beta = 1.0f;
    }
    // row-major out[N, OC] = in[N, IC] w[OC, IC]^T  <=>  column-major out^T[OC, N] = w^T... (cuBLAS column-major)
    CUBLAS_CHECK(cublasSgemm(cuda_cublas(), CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &alpha, (const float *)w, IC,
                             (const float *)in, IC, &beta, (float *)out, OC));
}

extern "C" void linear_backward_cuda(void *din, void *dw, void *db, const void *dout, const void *in, const void *w,
                                     int N, int IC, int OC) {
    float one = 1.0f, zero = 0.0f;
    if (din) // din[N, IC] = dout[N, OC] w[OC, IC]
        CUBLAS_CHECK(cublasSgemm(cuda_cublas(), CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, &one, (const float *)w, IC,
                                 (const float *)dout, OC, &zero, (float *)din, IC));
    if (dw) // dw[OC, IC] += dout^T in
        CUBLAS_CHECK(cublasSgemm(cuda_cublas(), CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, &one, (const float *)in, IC,
                                 (const float *)dout, OC, &one, (float *)dw, IC));
    if (db) {
        CUDA_LAUNCH(bias_grad_kernel, cuda_blocks(OC, 128), 128, 0, cuda_stream(), (float *)db, (const float *)dout, N,
                    OC);
    }
}
