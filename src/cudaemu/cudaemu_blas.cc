// cudaemu_blas.cc: CPU stand-ins for the cuBLAS calls of cudaemu_blas.h. Operands must be device memory of the
// emulator; the products are computed in double and rounded once, a reference that is at least as exact as the GPU.
#include "cudaemu_blas.h"

#include <stdio.h>
#include <stdlib.h>

struct CudaemuBlas {
    cudaStream_t stream;
    cublasMath_t math;
};

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new CudaemuBlas{nullptr, CUBLAS_DEFAULT_MATH};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->math = m;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    int arows = ta == CUBLAS_OP_N ? m : k, brows = tb == CUBLAS_OP_N ? k : n;
    if (m < 0 || n < 0 || k < 0 || lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) ||
        ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!m || !n) return CUBLAS_STATUS_SUCCESS;
    if ((k && (!cudaemu_is_device(A, sizeof(float)) || !cudaemu_is_device(B, sizeof(float)))) ||
        !cudaemu_is_device(C, sizeof(float)))
        return CUBLAS_STATUS_INVALID_VALUE;
    float al = *alpha, be = *beta;
#pragma omp parallel for collapse(2) if ((long long)m * n * k > 100000)
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0.0;
            for (int p = 0; p < k; p++) {
                double a = ta == CUBLAS_OP_N ? A[i + (long long)p * lda] : A[p + (long long)i * lda];
                double b = tb == CUBLAS_OP_N ? B[p + (long long)j * ldb] : B[j + (long long)p * ldb];
                s += a * b;
            }
            float *c = &C[i + (long long)j * ldc];
            *c = (float)(al * s + (be == 0.0f ? 0.0 : (double)be * *c)); // beta = 0: C is not read (may be NaN)
        }
    return CUBLAS_STATUS_SUCCESS;
}
