// cudaemu_blas.cc: the CPU implementation of the cuBLASLt subset declared in cudaemu_blas.h (what it supports and
// checks is listed there). Descriptors are plain structs; the heuristic validates the problem and returns one
// emulated algorithm stamped with a fingerprint of that problem; cublasLtMatmul validates again, checks pointers
// and workspace, and runs the product as an OpenBLAS sgemm (fp32 accumulation, as the library's fp32 compute
// types) followed by the epilogue in fp32.
#include "cudaemu_blas.h"

#include "cudaemu.h"

#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <memory>
#include <vector>

#include <cblas.h>

struct CudaemuLt {
    uint64_t magic;
};
struct CudaemuLtMatmulDesc {
    int32_t compute, scale, pointer_mode, transa, transb, bias_type;
    uint32_t epilogue;
    const void *bias;
    int64_t bias_stride;
};
struct CudaemuLtLayout {
    uint32_t type;
    int32_t order, batch;
    uint64_t rows, cols;
    int64_t ld, stride;
};
struct CudaemuLtPreference {
    uint32_t search_mode;
    uint64_t max_workspace;
    uint32_t align[4]; // minimum alignment promised for A, B, C, D
};

static const uint64_t LT_MAGIC = 0x4c54454d55ull, ALGO_MAGIC = 0x414c474f454d55ull;
static const size_t ALGO_WORKSPACE = (size_t)4 << 20;

// (the functions keep the C linkage of their declarations in cudaemu_blas.h)

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new CudaemuLt{LT_MAGIC};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    if (!handle || handle->magic != LT_MAGIC) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->magic = 0;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasLtGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "unknown cuBLAS status";
    }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
    if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
    *desc = new CudaemuLtMatmulDesc{(int32_t)compute, (int32_t)scale, 0, CUBLAS_OP_N, CUBLAS_OP_N, -1,
                                    CUBLASLT_EPILOGUE_DEFAULT, nullptr, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}

// Copies buf into the field if size matches its type exactly (the library's rule for every SetAttribute).
template <class T> static cublasStatus_t set_exact(T *field, const void *buf, size_t size) {
    if (!buf || size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(field, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    if (!d) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return set_exact(&d->compute, buf, size);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return set_exact(&d->scale, buf, size);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: return set_exact(&d->pointer_mode, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSA: return set_exact(&d->transa, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return set_exact(&d->transb, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set_exact(&d->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set_exact(&d->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: return set_exact(&d->bias_stride, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return set_exact(&d->bias_type, buf, size);
    }
    return CUBLAS_STATUS_NOT_SUPPORTED; // an attribute of the library that the emulation does not implement
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
    *layout = new CudaemuLtLayout{(uint32_t)type, CUBLASLT_ORDER_COL, 1, rows, cols, ld, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size) {
    if (!l) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: return set_exact(&l->type, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return set_exact(&l->order, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return set_exact(&l->rows, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_COLS: return set_exact(&l->cols, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_LD: return set_exact(&l->ld, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return set_exact(&l->batch, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return set_exact(&l->stride, buf, size);
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
    *pref = new CudaemuLtPreference{0, 0, {256, 256, 256, 256}};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size) {
    if (!p) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: return set_exact(&p->search_mode, buf, size);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return set_exact(&p->max_workspace, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: {
        uint32_t a = 0;
        cublasStatus_t s = set_exact(&a, buf, size);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
        if (a == 0 || (a & (a - 1))) return CUBLAS_STATUS_INVALID_VALUE; // a power of two
        p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = a;
        return CUBLAS_STATUS_SUCCESS;
    }
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

// ---------------------------------------------------------------------------------------------------------------
// validation shared by the heuristic and the matmul

struct Problem {
    int64_t m, n, k;
    int batch;
    cudaDataType_t ab, cd;
    int bias_len; // 0 without a bias operand
};

static size_t type_size(uint32_t t) { return t == CUDA_R_32F ? 4 : 2; }

// Elements a layout spans from its first to its last element (0 for an empty one).
static int64_t layout_extent(const CudaemuLtLayout *l) {
    if (!l->rows || !l->cols || l->batch < 1) return 0;
    return (int64_t)(l->batch - 1) * l->stride + (int64_t)(l->cols - 1) * l->ld + (int64_t)l->rows;
}

static cublasStatus_t check_problem(cublasLtHandle_t h, const CudaemuLtMatmulDesc *d, const CudaemuLtLayout *a,
                                    const CudaemuLtLayout *b, const CudaemuLtLayout *c, const CudaemuLtLayout *dl,
                                    Problem *p) {
    if (!h || h->magic != LT_MAGIC) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!d || !a || !b || !c || !dl) return CUBLAS_STATUS_INVALID_VALUE;
    // types
    if (a->type != b->type || c->type != dl->type) return CUBLAS_STATUS_NOT_SUPPORTED;
    bool f32 = a->type == CUDA_R_32F && dl->type == CUDA_R_32F;
    bool bf16 = a->type == CUDA_R_16BF && (dl->type == CUDA_R_16BF || dl->type == CUDA_R_32F);
    if (!(f32 || bf16)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->compute != CUBLAS_COMPUTE_32F && d->compute != CUBLAS_COMPUTE_32F_PEDANTIC) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->scale != CUDA_R_32F || d->pointer_mode != 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    // shapes and layouts
    const CudaemuLtLayout *all[4] = {a, b, c, dl};
    for (const CudaemuLtLayout *l : all) {
        if (l->order != CUBLASLT_ORDER_COL) return CUBLAS_STATUS_NOT_SUPPORTED;
        if (l->ld < (int64_t)(l->rows > 1 ? l->rows : 1) || l->stride < 0 || l->batch < 1)
            return CUBLAS_STATUS_INVALID_VALUE;
        if (l->batch != dl->batch) return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (d->transa != CUBLAS_OP_N && d->transa != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
    if (d->transb != CUBLAS_OP_N && d->transb != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
    int64_t m = (int64_t)dl->rows, n = (int64_t)dl->cols;
    int64_t am = d->transa == CUBLAS_OP_N ? a->rows : a->cols, ak = d->transa == CUBLAS_OP_N ? a->cols : a->rows;
    int64_t bk = d->transb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->transb == CUBLAS_OP_N ? b->cols : b->rows;
    if (am != m || bn != n || ak != bk || (int64_t)c->rows != m || (int64_t)c->cols != n)
        return CUBLAS_STATUS_INVALID_VALUE;
    // batches of D must not overlap
    if (dl->batch > 1 && m && n && dl->stride < (int64_t)(n - 1) * dl->ld + m) return CUBLAS_STATUS_INVALID_VALUE;
    // epilogue
    int bias_len = 0;
    switch (d->epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT: break;
    case CUBLASLT_EPILOGUE_BIAS: bias_len = (int)m; break;
    case CUBLASLT_EPILOGUE_BGRADA: bias_len = (int)m; break;
    case CUBLASLT_EPILOGUE_BGRADB: bias_len = (int)n; break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (bias_len) {
        if (d->bias_type != -1 && (uint32_t)d->bias_type != dl->type) return CUBLAS_STATUS_NOT_SUPPORTED;
        if (d->epilogue != CUBLASLT_EPILOGUE_BIAS && dl->batch > 1) return CUBLAS_STATUS_NOT_SUPPORTED;
        if (d->bias_stride < 0) return CUBLAS_STATUS_INVALID_VALUE;
    }
    *p = Problem{m, n, ak, dl->batch, (cudaDataType_t)a->type, (cudaDataType_t)dl->type, bias_len};
    return CUBLAS_STATUS_SUCCESS;
}

// FNV-1a over everything that defines the problem an algorithm was chosen for.
static uint64_t fingerprint(const CudaemuLtMatmulDesc *d, const CudaemuLtLayout *const l[4], const uint32_t align[4]) {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](const void *p, size_t n) {
        const unsigned char *c = (const unsigned char *)p;
        for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    };
    int32_t dv[6] = {d->compute, d->scale, d->transa, d->transb, d->bias_type, (int32_t)d->epilogue};
    mix(dv, sizeof dv);
    for (int i = 0; i < 4; i++) {
        int64_t v[6] = {(int64_t)l[i]->type, (int64_t)l[i]->rows, (int64_t)l[i]->cols, l[i]->ld, l[i]->batch,
                        l[i]->stride};
        mix(v, sizeof v);
    }
    mix(align, sizeof(uint32_t) * 4);
    return h;
}

static uint32_t bias_alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t r = 256;
    while (r > 1 && (a & (r - 1))) r >>= 1;
    return r;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                                         cublasLtMatrixLayout_t A, cublasLtMatrixLayout_t B,
                                                         cublasLtMatrixLayout_t C, cublasLtMatrixLayout_t D,
                                                         cublasLtMatmulPreference_t pref, int requested,
                                                         cublasLtMatmulHeuristicResult_t results[], int *returned) {
    if (!handle || handle->magic != LT_MAGIC) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (requested <= 0 || !results || !returned || !pref) return CUBLAS_STATUS_INVALID_VALUE;
    *returned = 0;
    Problem p;
    cublasStatus_t s = check_problem(handle, desc, A, B, C, D, &p);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    // CUDAEMU_LT_NO_BGRAD=1: no algorithm for the bias-gradient epilogues, as a library build without those kernels
    // would answer (tests of the callers' fallback)
    const char *nb = getenv("CUDAEMU_LT_NO_BGRAD");
    if (nb && *nb == '1' && (desc->epilogue == CUBLASLT_EPILOGUE_BGRADA || desc->epilogue == CUBLASLT_EPILOGUE_BGRADB))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const CudaemuLtLayout *l[4] = {A, B, C, D};
    memset(&results[0], 0, sizeof results[0]);
    size_t ws = pref->max_workspace < ALGO_WORKSPACE ? (size_t)pref->max_workspace : ALGO_WORKSPACE;
    results[0].algo.data[0] = ALGO_MAGIC;
    results[0].algo.data[1] = fingerprint(desc, l, pref->align);
    results[0].algo.data[2] = ws;
    for (int i = 0; i < 4; i++) results[0].algo.data[3] |= (uint64_t)pref->align[i] << (16 * i);
    results[0].algo.data[4] = desc->bias ? bias_alignment(desc->bias) : 0;
    results[0].workspaceSize = ws;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------------------
// the product

static float load(const void *base, cudaDataType_t t, int64_t i) {
    if (t == CUDA_R_32F) return ((const float *)base)[i];
    return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
}
static void store(void *base, cudaDataType_t t, int64_t i, float v) {
    if (t == CUDA_R_32F) ((float *)base)[i] = v;
    else ((__nv_bfloat16 *)base)[i] = __float2bfloat16(v);
}
static bool on_device(const void *p, int64_t elems, size_t esize) {
    return elems <= 0 || cudaemu_is_device(p, (size_t)elems * esize);
}
static bool aligned(const void *p, uint32_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

// One batch's stored operand (rows x cols at leading dimension ld) as fp32 for sgemm: f32 data in place, bf16 data
// widened (exactly) into buf with leading dimension rows. Returns the matrix and sets *ld_out.
static const float *operand_f32(const void *base, cudaDataType_t t, const CudaemuLtLayout *l, std::vector<float> &buf,
                                int64_t *ld_out) {
    if (t == CUDA_R_32F) {
        *ld_out = l->ld;
        return (const float *)base;
    }
    int64_t r = (int64_t)l->rows, c = (int64_t)l->cols;
    buf.resize((size_t)(r * c));
    for (int64_t j = 0; j < c; j++)
        for (int64_t i = 0; i < r; i++) buf[(size_t)(i + j * r)] = load(base, t, i + j * l->ld);
    *ld_out = r;
    return buf.data();
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                                         const void *A, cublasLtMatrixLayout_t Adesc, const void *B,
                                         cublasLtMatrixLayout_t Bdesc, const void *beta, const void *C,
                                         cublasLtMatrixLayout_t Cdesc, void *D, cublasLtMatrixLayout_t Ddesc,
                                         const cublasLtMatmulAlgo_t *algo, void *workspace,
                                         size_t workspaceSizeInBytes, cudaStream_t stream) {
    Problem p;
    cublasStatus_t s = check_problem(handle, desc, Adesc, Bdesc, Cdesc, Ddesc, &p);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    if (p.bias_len && desc->epilogue != CUBLASLT_EPILOGUE_BIAS && al != 1.0f) return CUBLAS_STATUS_NOT_SUPPORTED;
    // the algorithm: from the heuristic for exactly this problem, or the implicit one (no workspace)
    size_t ws = 0;
    uint32_t align[4] = {1, 1, 1, 1};
    if (algo) {
        const CudaemuLtLayout *l[4] = {Adesc, Bdesc, Cdesc, Ddesc};
        for (int i = 0; i < 4; i++) align[i] = (uint32_t)(algo->data[3] >> (16 * i)) & 0xffffu;
        if (algo->data[0] != ALGO_MAGIC || algo->data[1] != fingerprint(desc, l, align))
            return CUBLAS_STATUS_INVALID_VALUE; // an algorithm chosen for another problem
        if (algo->data[4] && desc->bias && !aligned(desc->bias, (uint32_t)algo->data[4]))
            return CUBLAS_STATUS_INVALID_VALUE;
        ws = (size_t)algo->data[2];
    }
    if (workspaceSizeInBytes < ws || (ws && !cudaemu_is_device(workspace, ws))) return CUBLAS_STATUS_INVALID_VALUE;
    if (!aligned(A, align[0]) || !aligned(B, align[1]) || !aligned(C, align[2]) || !aligned(D, align[3]))
        return CUBLAS_STATUS_INVALID_VALUE; // less aligned than the preference promised the heuristic
    size_t esa = type_size(p.ab), esd = type_size(p.cd);
    if (!on_device(A, p.k ? layout_extent(Adesc) : 0, esa) || !on_device(B, p.k ? layout_extent(Bdesc) : 0, esa) ||
        !on_device(D, layout_extent(Ddesc), esd) || (be != 0.0f && !on_device(C, layout_extent(Cdesc), esd)))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (C == D && (Cdesc->ld != Ddesc->ld || Cdesc->stride != Ddesc->stride))
        return CUBLAS_STATUS_INVALID_VALUE; // in place needs the same layout
    if (p.bias_len) {
        int64_t blen = p.bias_len + (int64_t)(p.batch - 1) * desc->bias_stride;
        if (!desc->bias || !on_device(desc->bias, blen, esd)) return CUBLAS_STATUS_INVALID_VALUE;
    }
    cudaStreamCaptureStatus cap = cudaemu_capture_status(stream);
    if (cap == cudaStreamCaptureStatusInvalidated) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (cap == cudaStreamCaptureStatusActive) {
        // recorded: the descriptors (the bias pointer among their attributes), the algorithm and the host scalars
        // are read now, as the library reads them at the call; the operands are read when the graph runs
        auto dd = std::make_shared<CudaemuLtMatmulDesc>(*desc);
        auto la = std::make_shared<CudaemuLtLayout>(*Adesc), lb = std::make_shared<CudaemuLtLayout>(*Bdesc);
        auto lc = std::make_shared<CudaemuLtLayout>(*Cdesc), ld = std::make_shared<CudaemuLtLayout>(*Ddesc);
        cublasLtMatmulAlgo_t al_copy = algo ? *algo : cublasLtMatmulAlgo_t{};
        bool has_algo = algo != nullptr;
        cudaemu_capture_add(stream, [=] {
            cublasStatus_t r = cublasLtMatmul(handle, dd.get(), &al, A, la.get(), B, lb.get(), &be, C, lc.get(), D,
                                              ld.get(), has_algo ? &al_copy : nullptr, workspace, workspaceSizeInBytes,
                                              stream);
            if (r != CUBLAS_STATUS_SUCCESS) cudaemu_fail("cublasLtMatmul", "a captured call failed when its graph ran");
        });
        return CUBLAS_STATUS_SUCCESS;
    }
    if (ws) memset(workspace, 0xff, ws); // NaN bytes: nothing may be kept in the workspace across calls
    if (!p.m || !p.n) return CUBLAS_STATUS_SUCCESS;

    // Each batch: P = op(A) op(B) by OpenBLAS sgemm (fp32 products and sums, as CUBLAS_COMPUTE_32F), then the
    // epilogue per element in fp32: alpha P + beta C (+ bias), rounded once to D's type.
    int64_t m = p.m, n = p.n, k = p.k;
    bool ta = desc->transa == CUBLAS_OP_T, tb = desc->transb == CUBLAS_OP_T;
    std::vector<float> P((size_t)(m * n)), wa, wb; // P [m, n] column-major; wa, wb: widened bf16 operands
    for (int bt = 0; bt < p.batch; bt++) {
        const char *a0 = (const char *)A + (size_t)(bt * Adesc->stride) * esa;
        const char *b0 = (const char *)B + (size_t)(bt * Bdesc->stride) * esa;
        const char *c0 = (const char *)C + (size_t)(bt * Cdesc->stride) * esd;
        char *d0 = (char *)D + (size_t)(bt * Ddesc->stride) * esd;
        int64_t lda = 1, ldb = 1;
        const float *a = k ? operand_f32(a0, p.ab, Adesc, wa, &lda) : nullptr;
        const float *b = k ? operand_f32(b0, p.ab, Bdesc, wb, &ldb) : nullptr;
        if (k)
            cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                        (int)k, 1.0f, a, (int)lda, b, (int)ldb, 0.0f, P.data(), (int)m);
        else std::fill(P.begin(), P.end(), 0.0f);
        const char *bias = desc->epilogue == CUBLASLT_EPILOGUE_BIAS
                               ? (const char *)desc->bias + (size_t)(bt * desc->bias_stride) * esd
                               : nullptr;
#pragma omp parallel for if (m * n > 65536)
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                float v = al * P[(size_t)(i + j * m)];
                if (be != 0.0f) v = fmaf(be, load(c0, p.cd, i + j * Cdesc->ld), v); // beta = 0: C is not read
                if (bias) v += load(bias, p.cd, i);
                store(d0, p.cd, i + j * Ddesc->ld, v);
            }
        if (desc->epilogue == CUBLASLT_EPILOGUE_BGRADA || desc->epilogue == CUBLASLT_EPILOGUE_BGRADB) {
            // bias[r] = sum over q < k of op(A)[r, q] (BGRADA) or op(B)[q, r] (BGRADB), summed in fp32
            bool ga = desc->epilogue == CUBLASLT_EPILOGUE_BGRADA;
            const float *src = ga ? a : b;
            int64_t ld = ga ? lda : ldb;
            bool rows_contiguous = ga ? ta : !tb; // op(A)[r, q] = A[q + r lda] when transposed
#pragma omp parallel for if ((ga ? m : n) * k > 65536)
            for (int64_t r = 0; r < (ga ? m : n); r++) {
                float sum = 0.0f;
                for (int64_t q = 0; q < k; q++) sum += src[rows_contiguous ? q + r * ld : r + q * ld];
                store((void *)desc->bias, p.cd, r, sum);
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}
