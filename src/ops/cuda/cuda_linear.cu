// cuda_linear.cu: linear layer on the GPU through cuBLAS (fp32), matching ops/linear.c.
#include "cuda_api.h"
#include "cuda_common.cuh"

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
        bias_broadcast_kernel<<<cuda_blocks((long long)N * OC, 256), 256>>>((float *)out, (const float *)b, N, OC);
        CUDA_CHECK(cudaGetLastError());
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
        bias_grad_kernel<<<cuda_blocks(OC, 128), 128>>>((float *)db, (const float *)dout, N, OC);
        CUDA_CHECK(cudaGetLastError());
    }
}
