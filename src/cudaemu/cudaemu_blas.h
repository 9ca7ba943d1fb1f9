// cudaemu_blas.h: the cuBLASLt subset drtune calls, for the emulator. It declares the same C API as the toolkit's
// cublasLt.h (names, enum values, struct layouts), limited to what the GEMM wrappers of ops/cuda/cuda_linear.cu use:
// handles, matmul / matrix layout / preference descriptors, the heuristic query and cublasLtMatmul. cudaemu_blas.cc
// runs each call as a CPU implementation of its documented column-major semantics (leading dimensions, transposes,
// alpha and beta with beta = 0 never reading C, bias and bias-gradient epilogues, fp32 and bf16 operands, strided
// batches) and returns the library's error statuses for invalid arguments, so the wrappers run unchanged in
// ctest -L cudaemu. The header is plain C so that tests can call the emulated library directly.
//
// What the emulation supports (anything else is refused with CUBLAS_STATUS_NOT_SUPPORTED rather than guessed):
//   - types: A and B both CUDA_R_32F with C/D CUDA_R_32F, or A and B CUDA_R_16BF with C/D CUDA_R_16BF or CUDA_R_32F;
//     compute type CUBLAS_COMPUTE_32F or CUBLAS_COMPUTE_32F_PEDANTIC, scale type CUDA_R_32F, host alpha/beta;
//   - column-major order; C == D in place (same layout) or separate; batch counts equal in all four layouts;
//   - epilogues DEFAULT, BIAS (bias[m] added after alpha and beta, per batch at BIAS_BATCH_STRIDE), BGRADA
//     (bias[m] = sum over k of op(A)) and BGRADB (bias[n] = sum over k of op(B)); bias type = D type; the bias
//     gradient epilogues only with batch count 1 and alpha = 1 (whether the library scales the bias gradient by
//     alpha is not documented);
// Checks beyond the library's documentation, to catch wrapper bugs: every pointer must lie in device memory of the
// emulator over the whole extent its layout describes, pointers must be as aligned as the preference promised the
// heuristic (CUBLAS_STATUS_INVALID_VALUE), and an algorithm from the heuristic is valid only for the problem it was
// chosen for. The emulated algorithm asks for min(max workspace, 4 MiB) of workspace and overwrites it with NaN
// bytes, so a caller that passes too little (CUBLAS_STATUS_INVALID_VALUE) or keeps data there is caught. With
// CUDAEMU_LT_NO_BGRAD=1 the heuristic has no algorithm for the bias-gradient epilogues (to test callers' fallbacks).
// Arithmetic: as the library's fp32 compute types, products and sums in fp32 in an order of the implementation's
// choosing: op(A) op(B) is one OpenBLAS sgemm per batch (bf16 operands widened exactly to fp32 first), then
// alpha, beta C and the bias are applied in fp32 and D is rounded once to its type; bias gradients are fp32 sums.
// (The CPU ops use the same sgemm, so where the GPU path hands cuBLASLt the same operands as the CPU path gives
// OpenBLAS, emulation and CPU may agree exactly; a real GPU sums in its own order.)
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#include "cudaemu.h"
extern "C" {
#else
typedef struct CudaemuStream *cudaStream_t;
#endif

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;
typedef cudaDataType_t cudaDataType;
typedef enum {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
} cublasComputeType_t;

typedef struct CudaemuLt *cublasLtHandle_t;
typedef struct CudaemuLtMatmulDesc *cublasLtMatmulDesc_t;
typedef struct CudaemuLtLayout *cublasLtMatrixLayout_t;
typedef struct CudaemuLtPreference *cublasLtMatmulPreference_t;
typedef struct {
    uint64_t data[8];
} cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;

typedef enum {
    CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0,  // int32_t
    CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,    // int32_t
    CUBLASLT_MATMUL_DESC_POINTER_MODE = 2,  // int32_t (0: host alpha/beta)
    CUBLASLT_MATMUL_DESC_TRANSA = 3,        // int32_t
    CUBLASLT_MATMUL_DESC_TRANSB = 4,        // int32_t
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,      // uint32_t
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,  // void *
    CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE = 10, // int64_t
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26,    // int32_t, -1: the type of D
} cublasLtMatmulDescAttributes_t;
typedef enum {
    CUBLASLT_EPILOGUE_DEFAULT = 1,
    CUBLASLT_EPILOGUE_BIAS = 4,
    CUBLASLT_EPILOGUE_BGRADA = 256,
    CUBLASLT_EPILOGUE_BGRADB = 512,
} cublasLtEpilogue_t;
typedef enum { CUBLASLT_ORDER_COL = 0, CUBLASLT_ORDER_ROW = 1 } cublasLtOrder_t;
typedef enum {
    CUBLASLT_MATRIX_LAYOUT_TYPE = 0,                 // uint32_t
    CUBLASLT_MATRIX_LAYOUT_ORDER = 1,                // int32_t
    CUBLASLT_MATRIX_LAYOUT_ROWS = 2,                 // uint64_t
    CUBLASLT_MATRIX_LAYOUT_COLS = 3,                 // uint64_t
    CUBLASLT_MATRIX_LAYOUT_LD = 4,                   // int64_t
    CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5,          // int32_t
    CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6, // int64_t, elements
} cublasLtMatrixLayoutAttribute_t;
typedef enum {
    CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0,          // uint32_t
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,  // uint64_t, default 0
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5, // uint32_t, default 256
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
} cublasLtMatmulPreferenceAttributes_t;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle);
const char *cublasLtGetStatusString(cublasStatus_t status);

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute, cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size);

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout);
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size);

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size);

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                              cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned);

// D = epilogue(alpha op(A) op(B) + beta C), column-major; algo NULL runs an implicit heuristic with default
// preferences (no workspace).
cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Adesc, const void *B, cublasLtMatrixLayout_t Bdesc,
                              const void *beta, const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspaceSizeInBytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
