// cudaemu_linear.c: the cuBLASLt path of the linear layer and of 1x1 convolutions against the CPU ops, and the
// cuBLASLt calls themselves against a naive column-major reference. Part 1 drives the cuBLASLt API directly (on the
// emulator: its semantics and error statuses; on a real GPU, as cuda_linear, the library's semantics): transposes,
// leading dimensions, alpha/beta with beta = 0 over NaN, bias and bias-gradient epilogues, bf16 operands, strided
// batches. Part 2 compares linear_forward/backward on the GPU with the CPU op at shapes that are multiples of
// nothing, with and without bias, fp32 and bf16, with a residual added in the epilogue (and the CPU's residual form
// equal to linear then add bit for bit), with weight and bias gradients accumulated over two calls and the bias
// gradient alone. Part 3 does the same for conv2d with a 1x1 kernel.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/cudaemu/cudaemu_blas.h"
#include "../src/ops/cuda/cuda_api.h"
#include "../src/ops/ops.h"
#include "cudaemu_util.h"

// The rank's compute stream (core/device_cuda.h declares it for C++ only).
cudaStream_t cuda_stream(void);

// ---------------------------------------------------------------------------------------------------------------
// part 1: the cuBLASLt calls

typedef struct {
    const char *what;
    int ta, tb, epi, bf16_ab, bf16_d, batch, b_shared; // b_shared: B's batch stride is 0
    int64_t m, n, k, pad;                                // pad: extra rows in every leading dimension
    float alpha, beta;
} LtCase;

// A device copy of n host floats stored as dt (bf16 values are the rounded ones, which h then holds too).
static void *dev_from(float *h, int64_t n, DType dt) {
    if (dt == DTYPE_BF16) cu_round_bf16(h, n);
    size_t es = dt == DTYPE_BF16 ? 2 : 4;
    void *t = xmalloc((size_t)n * es + 1), *d = device_alloc(DEVICE_CUDA, (size_t)n * es + 256);
    dtype_convert(t, dt, h, DTYPE_F32, n);
    device_copy(d, DEVICE_CUDA, t, DEVICE_CPU, (size_t)n * es);
    free(t);
    return d;
}
static void dev_to(float *h, const void *d, int64_t n, DType dt) {
    size_t es = dt == DTYPE_BF16 ? 2 : 4;
    void *t = xmalloc((size_t)n * es + 1);
    device_copy(t, DEVICE_CPU, d, DEVICE_CUDA, (size_t)n * es);
    dtype_convert(h, DTYPE_F32, t, dt, n);
    free(t);
}
static void host_fill(float *x, int64_t n, uint64_t tag) {
    rng_normal_fill(x, n, 99, RNG_STREAM(RNG_PURPOSE_TEST, tag, 0), 0);
}
// max |x - ref| / max |ref|; a NaN fails unless the reference holds NaN there too (padding left untouched)
static double rel_err(const float *x, const double *ref, int64_t n) {
    double e = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(ref[i]) && isnan(x[i])) continue;
        double d = fabs(x[i] - ref[i]);
        if (!(d <= e)) e = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    }
    return e / (mx > 0 ? mx : 1);
}

static cublasLtMatrixLayout_t lt_layout(DType dt, int64_t rows, int64_t cols, int64_t ld, int batch, int64_t stride) {
    cublasLtMatrixLayout_t l;
    cublasLtMatrixLayoutCreate(&l, dt == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F, (uint64_t)rows, (uint64_t)cols, ld);
    int32_t bc = batch;
    cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
    cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride);
    return l;
}

static void lt_case(cublasLtHandle_t h, const LtCase *c) {
    DType abt = c->bf16_ab ? DTYPE_BF16 : DTYPE_F32, dt = c->bf16_d ? DTYPE_BF16 : DTYPE_F32;
    int64_t m = c->m, n = c->n, k = c->k;
    int64_t ar = c->ta ? k : m, ac = c->ta ? m : k, br = c->tb ? n : k, bc = c->tb ? k : n;
    int64_t lda = ar + c->pad, ldb = br + c->pad, ldd = m + c->pad;
    int64_t sa = lda * ac + 5, sb = c->b_shared ? 0 : ldb * bc + 3, sd = ldd * n + 7, nb = c->batch;
    int64_t na = sa * (nb - 1) + lda * ac, nbb = sb * (nb - 1) + ldb * bc, nd = sd * (nb - 1) + ldd * n;
    int bgrad = c->epi == CUBLASLT_EPILOGUE_BGRADA || c->epi == CUBLASLT_EPILOGUE_BGRADB;
    int64_t blen = c->epi == CUBLASLT_EPILOGUE_BGRADB ? n : m, bstride = c->epi == CUBLASLT_EPILOGUE_BIAS ? m : 0;
    int64_t nbias = blen + bstride * (nb - 1);
    float *a = xmalloc(sizeof(float) * na), *b = xmalloc(sizeof(float) * nbb), *d = xmalloc(sizeof(float) * nd);
    float *bias = xmalloc(sizeof(float) * nbias);
    host_fill(a, na, 1), host_fill(b, nbb, 2), host_fill(d, nd, 3), host_fill(bias, nbias, 4);
    if (c->beta == 0.0f)
        for (int64_t i = 0; i < nd; i++) d[i] = NAN; // beta = 0 must not read C
    void *ga = dev_from(a, na, abt), *gb = dev_from(b, nbb, abt), *gd = dev_from(d, nd, dt);
    void *gbias = dev_from(bias, nbias, dt);
    // reference (op(A) op(B) in double, epilogue after alpha and beta)
    double *ref = xcalloc((size_t)nd, sizeof(double)), *bref = xcalloc((size_t)nbias, sizeof(double));
    for (int64_t i = 0; i < nd; i++) ref[i] = d[i];
    for (int64_t t = 0; t < nb; t++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                double s = 0;
                for (int64_t q = 0; q < k; q++) {
                    double x = a[t * sa + (c->ta ? q + i * lda : i + q * lda)];
                    double y = b[t * sb + (c->tb ? j + q * ldb : q + j * ldb)];
                    s += x * y;
                }
                double v = c->alpha * s + (c->beta != 0.0f ? c->beta * d[t * sd + i + j * ldd] : 0.0);
                if (c->epi == CUBLASLT_EPILOGUE_BIAS) v += bias[t * bstride + i];
                ref[t * sd + i + j * ldd] = v;
            }
    if (bgrad)
        for (int64_t r = 0; r < blen; r++) {
            double s = 0;
            for (int64_t q = 0; q < k; q++)
                s += c->epi == CUBLASLT_EPILOGUE_BGRADA ? a[c->ta ? q + r * lda : r + q * lda]
                                                        : b[c->tb ? r + q * ldb : q + r * ldb];
            bref[r] = s;
        }
    // the call as the wrappers make it: descriptors, heuristic, matmul on the compute stream
    cublasLtMatmulDesc_t op;
    cublasLtMatmulDescCreate(&op, c->bf16_ab ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC, CUDA_R_32F);
    int32_t ta = c->ta, tb = c->tb;
    uint32_t epi = (uint32_t)c->epi;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    if (c->epi != CUBLASLT_EPILOGUE_DEFAULT) {
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &gbias, sizeof gbias);
        if (nb > 1) cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bstride, sizeof bstride);
    }
    cublasLtMatrixLayout_t la = lt_layout(abt, ar, ac, lda, (int)nb, sa), lb = lt_layout(abt, br, bc, ldb, (int)nb, sb),
                           ld = lt_layout(dt, m, n, ldd, (int)nb, sd);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    uint64_t wsz = (uint64_t)4 << 20;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz);
    void *ws = device_alloc(DEVICE_CUDA, wsz);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, ld, ld, pref, 1, &res, &found);
    if (s == CUBLAS_STATUS_SUCCESS && found == 1)
        s = cublasLtMatmul(h, op, &c->alpha, ga, la, gb, lb, &c->beta, gd, ld, gd, ld, &res.algo, ws, wsz,
                           cuda_stream());
    float *got = xmalloc(sizeof(float) * nd), *bgot = xmalloc(sizeof(float) * nbias);
    dev_to(got, gd, nd, dt);
    dev_to(bgot, gbias, nbias, dt);
    // fp32 D: double sums rounded once on the emulator, fp32 sums of k <= 40 terms on a GPU (k u = 2.4e-6 at most);
    // bf16 D: one rounding to bf16, at most 2^-8 relative (its unit roundoff), plus that fp32 term
    double tol = c->bf16_d ? 1.0 / 256 + 4e-6 : 4e-6, e = s == CUBLAS_STATUS_SUCCESS ? rel_err(got, ref, nd) : INFINITY;
    if (bgrad && s == CUBLAS_STATUS_NOT_SUPPORTED && !device_cuda_emulated()) // the wrappers fall back then
        printf("skip lt %-34s the library has no algorithm for this bias-gradient epilogue\n", c->what);
    else {
        tu_check(e <= tol, "lt %-34s status %d, D max rel err %.2e (tol %.1e)", c->what, (int)s, e, tol);
        if (bgrad) {
            double eb = rel_err(bgot, bref, blen);
            tu_check(eb <= tol, "lt %-34s bias gradient max rel err %.2e (tol %.1e)", c->what, eb, tol);
        }
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
    device_free(DEVICE_CUDA, ga), device_free(DEVICE_CUDA, gb), device_free(DEVICE_CUDA, gd);
    device_free(DEVICE_CUDA, gbias), device_free(DEVICE_CUDA, ws);
    free(a), free(b), free(d), free(bias), free(ref), free(bref), free(got), free(bgot);
}

// The emulator's answers to invalid calls (the library's documented statuses; the emulator's extra checks).
static void lt_errors(cublasLtHandle_t h) {
    const int64_t m = 8, n = 6, k = 5;
    void *A = device_alloc(DEVICE_CUDA, 4 * (m + 1) * k), *B = device_alloc(DEVICE_CUDA, 4 * k * n),
         *D = device_alloc(DEVICE_CUDA, 4 * m * n + 4), *ws = device_alloc(DEVICE_CUDA, 1 << 20);
    float host[64] = {0}, one = 1.0f, zero = 0.0f;
    cublasLtMatmulDesc_t op;
    cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    int32_t t = CUBLAS_OP_N;
    TU_EXPECT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, 8) == CUBLAS_STATUS_INVALID_VALUE,
              "SetAttribute with the wrong size");
    TU_EXPECT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, NULL, 4) == CUBLAS_STATUS_INVALID_VALUE,
              "SetAttribute without a buffer");
    cublasLtMatrixLayout_t la = lt_layout(DTYPE_F32, m, k, m, 1, 0), lb = lt_layout(DTYPE_F32, k, n, k, 1, 0),
                           ld = lt_layout(DTYPE_F32, m, n, m, 1, 0), lbad = lt_layout(DTYPE_F32, m + 1, k, m + 1, 1, 0),
                           lh = NULL, lsmall_ld = NULL;
    cublasLtMatrixLayoutCreate(&lh, CUDA_R_16F, (uint64_t)m, (uint64_t)k, m);
    cublasLtMatrixLayoutCreate(&lsmall_ld, CUDA_R_32F, (uint64_t)m, (uint64_t)k, m - 1);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    uint64_t wsz = 1 << 20;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz);
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    TU_EXPECT(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, ld, ld, pref, 0, &r, &found) == CUBLAS_STATUS_INVALID_VALUE,
              "heuristic asked for no algorithm");
    TU_EXPECT(cublasLtMatmulAlgoGetHeuristic(NULL, op, la, lb, ld, ld, pref, 1, &r, &found) ==
                  CUBLAS_STATUS_NOT_INITIALIZED, "heuristic without a handle");
    TU_EXPECT(cublasLtMatmulAlgoGetHeuristic(h, op, lbad, lb, ld, ld, pref, 1, &r, &found) ==
                  CUBLAS_STATUS_INVALID_VALUE, "A with m + 1 rows");
    TU_EXPECT(cublasLtMatmulAlgoGetHeuristic(h, op, lsmall_ld, lb, ld, ld, pref, 1, &r, &found) ==
                  CUBLAS_STATUS_INVALID_VALUE, "leading dimension below the rows");
    TU_EXPECT(cublasLtMatmulAlgoGetHeuristic(h, op, lh, lh, ld, ld, pref, 1, &r, &found) ==
                  CUBLAS_STATUS_NOT_SUPPORTED, "fp16 operands");
    uint32_t epi = CUBLASLT_EPILOGUE_BGRADB;
    cublasLtMatmulDesc_t opg;
    cublasLtMatmulDescCreate(&opg, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatmulDescSetAttribute(opg, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    TU_EXPECT(cublasLtMatmulAlgoGetHeuristic(h, opg, la, lb, ld, ld, pref, 1, &r, &found) == CUBLAS_STATUS_SUCCESS &&
                  cublasLtMatmul(h, opg, &one, A, la, B, lb, &zero, D, ld, D, ld, &r.algo, ws, wsz, cuda_stream()) ==
                      CUBLAS_STATUS_INVALID_VALUE, "bias gradient epilogue without a bias pointer");
    TU_EXPECT(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, ld, ld, pref, 1, &r, &found) == CUBLAS_STATUS_SUCCESS &&
                  found == 1 && r.workspaceSize > 0, "heuristic: one algorithm that needs workspace");
    TU_EXPECT(cublasLtMatmul(h, op, &one, A, la, B, lb, &zero, D, ld, D, ld, &r.algo, ws, wsz, cuda_stream()) ==
                  CUBLAS_STATUS_SUCCESS, "a valid call");
    TU_EXPECT(cublasLtMatmul(h, op, &one, A, la, B, lb, &zero, D, ld, D, ld, &r.algo, ws, r.workspaceSize - 1,
                             cuda_stream()) == CUBLAS_STATUS_INVALID_VALUE, "workspace smaller than the algorithm's");
    TU_EXPECT(cublasLtMatmul(h, op, &one, host, la, B, lb, &zero, D, ld, D, ld, &r.algo, ws, wsz, cuda_stream()) ==
                  CUBLAS_STATUS_INVALID_VALUE, "A in host memory");
    TU_EXPECT(cublasLtMatmul(h, op, &one, A, la, B, lb, &zero, (char *)D + 4, ld, (char *)D + 4, ld, &r.algo, ws, wsz,
                             cuda_stream()) == CUBLAS_STATUS_INVALID_VALUE, "D less aligned than the preference said");
    cublasLtMatrixLayout_t la2 = lt_layout(DTYPE_F32, m, k, m + 1, 1, 0); // same problem but A's leading dimension
    TU_EXPECT(cublasLtMatmul(h, op, &one, A, la2, B, lb, &zero, D, ld, D, ld, &r.algo, ws, wsz, cuda_stream()) ==
                  CUBLAS_STATUS_INVALID_VALUE, "an algorithm chosen for another problem");
    TU_EXPECT(cublasLtMatmul(h, op, &one, A, la2, B, lb, &zero, D, ld, D, ld, NULL, NULL, 0, cuda_stream()) ==
                  CUBLAS_STATUS_SUCCESS, "the implicit heuristic (algo NULL)");
    cublasLtMatrixLayoutDestroy(la2);
    cublasLtMatrixLayout_t lbig = lt_layout(DTYPE_F32, m, n, m, 1, 0);
    int64_t big_ld = 4 * m;
    cublasLtMatrixLayoutSetAttribute(lbig, CUBLASLT_MATRIX_LAYOUT_LD, &big_ld, sizeof big_ld);
    TU_EXPECT(cublasLtMatmul(h, op, &one, A, la, B, lb, &zero, D, lbig, D, lbig, NULL, NULL, 0, cuda_stream()) ==
                  CUBLAS_STATUS_INVALID_VALUE, "D's layout reaches past its allocation");
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatrixLayoutDestroy(lbad), cublasLtMatrixLayoutDestroy(lh), cublasLtMatrixLayoutDestroy(lsmall_ld);
    cublasLtMatrixLayoutDestroy(lbig);
    cublasLtMatmulDescDestroy(op), cublasLtMatmulDescDestroy(opg);
    device_free(DEVICE_CUDA, A), device_free(DEVICE_CUDA, B), device_free(DEVICE_CUDA, D);
    device_free(DEVICE_CUDA, ws);
}

static void part_lt(void) {
    cublasLtHandle_t h;
    if (cublasLtCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        tu_check(0, "cublasLtCreate");
        return;
    }
    enum { N_ = CUBLAS_OP_N, T_ = CUBLAS_OP_T, DEF = CUBLASLT_EPILOGUE_DEFAULT, BIAS = CUBLASLT_EPILOGUE_BIAS,
           BGA = CUBLASLT_EPILOGUE_BGRADA, BGB = CUBLASLT_EPILOGUE_BGRADB };
    const LtCase cases[] = {
        {"f32 NN beta 0 over NaN", N_, N_, DEF, 0, 0, 1, 0, 7, 5, 3, 0, 1.0f, 0.0f},
        {"f32 TN padded ld, alpha 0.5 beta 1", T_, N_, DEF, 0, 0, 1, 0, 37, 23, 19, 3, 0.5f, 1.0f},
        {"f32 NT bias", N_, T_, BIAS, 0, 0, 1, 0, 23, 37, 19, 2, 1.0f, 0.0f},
        {"f32 TT bias, alpha 2 beta 1", T_, T_, BIAS, 0, 0, 1, 0, 19, 11, 29, 1, 2.0f, 1.0f},
        {"f32 NT BGRADB beta 1", N_, T_, BGB, 0, 0, 1, 0, 19, 23, 37, 0, 1.0f, 1.0f},
        {"f32 TN BGRADA", T_, N_, BGA, 0, 0, 1, 0, 21, 13, 17, 1, 1.0f, 0.0f},
        {"bf16 A/B f32 D NT BGRADB beta 1", N_, T_, BGB, 1, 0, 1, 0, 19, 23, 37, 1, 1.0f, 1.0f},
        {"bf16 A/B/D TN bias", T_, N_, BIAS, 1, 1, 1, 0, 23, 37, 19, 0, 1.0f, 0.0f},
        {"f32 batch 3, B shared, beta 1", N_, N_, DEF, 0, 0, 3, 1, 35, 23, 19, 1, 1.0f, 1.0f},
        {"bf16 batch 2 TN bias per batch", T_, N_, BIAS, 1, 1, 2, 0, 17, 9, 13, 2, 1.0f, 0.0f},
        {"f32 batch 2 NT beta 0", N_, T_, DEF, 0, 0, 2, 0, 13, 31, 7, 0, 1.0f, 0.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) lt_case(h, &cases[i]);
    if (device_cuda_emulated()) lt_errors(h);
    cublasLtDestroy(h);
}

// ---------------------------------------------------------------------------------------------------------------
// parts 2 and 3: the ops against the CPU

// Tolerances, relative to the largest reference magnitude. fp32: the CPU (OpenBLAS) sums K <= 1031 fp32 products in
// its own order and the emulated GPU exactly; random-sign sums have rounding errors near sqrt(K) u = 1.9e-6 of their
// absolute sum, which is a few times their value: 1e-5 covers it with margin (measured values are printed).
// bf16 activations (out, din): one rounding of the fp32 result to bf16, at most 2^-8 relative (bf16's unit roundoff),
// plus the fp32 term; the inputs are bf16 values whose products fp32 holds exactly, so the fp32 parameter gradients
// (dw, db) keep the fp32 tolerance.
#define TOL_F32 1e-5
#define TOL_BF16 (1.0 / 256 + TOL_F32)

static Tensor cpu_t(int ndim, const int64_t *shape, uint64_t tag, int round) {
    Tensor t = cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape);
    cu_fill(&t, tag, 1.0f, round);
    return t;
}

// linear: out [N, OC] = in [rows..., IC] w^T + b, backward twice (parameter gradients accumulate), then db alone
static void linear_case(int ndim, const int64_t *xs, int64_t OC, int bias, DType dt) {
    int bf = dt == DTYPE_BF16;
    int64_t IC = xs[ndim - 1], N = 1;
    for (int i = 0; i < ndim - 1; i++) N *= xs[i];
    int64_t ys[4];
    memcpy(ys, xs, sizeof(int64_t) * (size_t)ndim);
    ys[ndim - 1] = OC;
    int64_t sw[2] = {OC, IC}, sb[1] = {OC};
    Tensor x = cpu_t(ndim, xs, 11, bf), w = cpu_t(2, sw, 12, bf), b = cpu_t(1, sb, 13, bf), dy = cpu_t(ndim, ys, 14, bf);
    Tensor dw = cpu_t(2, sw, 15, 0), db = cpu_t(1, sb, 16, 0), y = cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, ys),
           dx = cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, xs), db1 = cpu_t(1, sb, 16, 0);
    Tensor gx = cu_upload(&x, dt), gw = cu_upload(&w, dt), gb = cu_upload(&b, dt), gdy = cu_upload(&dy, dt);
    Tensor gdw = cu_upload(&dw, DTYPE_F32), gdb = cu_upload(&db, DTYPE_F32), gdb1 = cu_upload(&db1, DTYPE_F32);
    Tensor gy = cu_alloc(DEVICE_CUDA, dt, ndim, ys), gdx = cu_alloc(DEVICE_CUDA, dt, ndim, xs);
    Tensor none = {0};
    const Tensor *pb = bias ? &b : NULL, *pgb = bias ? &gb : NULL;
    double ta = bf ? TOL_BF16 : TOL_F32;

    linear_forward(&y, &x, &w, pb);
    linear_forward(&gy, &gx, &gw, pgb);
    char tag[64], what[128];
    snprintf(tag, sizeof tag, "linear %s %lldx%lldx%lld%s", dtype_name(dt), (long long)N, (long long)IC, (long long)OC,
             bias ? " bias" : "");
    snprintf(what, sizeof what, "%s forward", tag);
    cu_compare(what, &gy, &y, ta);
    { // with a residual: the GPU adds it in the GEMM's epilogue; the CPU after the product, as add_forward
        Tensor r = cpu_t(ndim, ys, 17, bf), yr = cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, ys);
        Tensor gr = cu_upload(&r, dt), gyr = cu_alloc(DEVICE_CUDA, dt, ndim, ys);
        linear_forward_residual(&yr, &x, &w, pb, &r);
        linear_forward_residual(&gyr, &gx, &gw, pgb, &gr);
        snprintf(what, sizeof what, "%s forward + residual", tag);
        cu_compare(what, &gyr, &yr, ta);
        Tensor ya = cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, ys);
        add_forward(&ya, &y, &r);
        tu_check(!memcmp(ya.data, yr.data, tensor_bytes(&ya)), "%s: CPU residual = linear then add, bit for bit", tag);
        Tensor *rt[] = {&r, &yr, &gr, &gyr, &ya};
        for (int i = 0; i < 5; i++) cu_free(rt[i]);
    }
    for (int call = 0; call < 2; call++) {
        linear_backward(&dx, &dw, bias ? &db : &none, &dy, &x, &w);
        linear_backward(&gdx, &gdw, bias ? &gdb : &none, &gdy, &gx, &gw);
    }
    snprintf(what, sizeof what, "%s din", tag);
    cu_compare(what, &gdx, &dx, ta);
    snprintf(what, sizeof what, "%s dw (+= twice)", tag);
    cu_compare(what, &gdw, &dw, TOL_F32);
    if (bias) {
        snprintf(what, sizeof what, "%s db (+= twice)", tag);
        cu_compare(what, &gdb, &db, TOL_F32);
        linear_backward(NULL, NULL, &db1, &dy, &x, &w); // the bias gradient alone: the column-sum kernels
        linear_backward(NULL, NULL, &gdb1, &gdy, &gx, &gw);
        snprintf(what, sizeof what, "%s db alone", tag);
        cu_compare(what, &gdb1, &db1, TOL_F32);
    }
    Tensor *all[] = {&x, &w, &b, &dy, &dw, &db, &y, &dx, &db1, &gx, &gw, &gb, &gdy, &gdw, &gdb, &gdb1, &gy, &gdx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu_free(all[i]);
}

// conv2d 1x1: out [B, OC, H, W] = w [OC, IC, 1, 1] * in [B, IC, H, W] + b
static void conv1x1_case(int64_t B, int64_t IC, int64_t OC, int64_t H, int64_t W, int bias, DType dt) {
    int bf = dt == DTYPE_BF16;
    int64_t xs[4] = {B, IC, H, W}, ys[4] = {B, OC, H, W}, sw[4] = {OC, IC, 1, 1}, sb[1] = {OC};
    Tensor x = cpu_t(4, xs, 21, bf), w = cpu_t(4, sw, 22, bf), b = cpu_t(1, sb, 23, bf), dy = cpu_t(4, ys, 24, bf);
    Tensor dw = cpu_t(4, sw, 25, 0), db = cpu_t(1, sb, 26, 0), db1 = cpu_t(1, sb, 26, 0);
    Tensor y = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, ys), dx = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, xs);
    Tensor gx = cu_upload(&x, dt), gw = cu_upload(&w, dt), gb = cu_upload(&b, dt), gdy = cu_upload(&dy, dt);
    Tensor gdw = cu_upload(&dw, DTYPE_F32), gdb = cu_upload(&db, DTYPE_F32), gdb1 = cu_upload(&db1, DTYPE_F32);
    Tensor gy = cu_alloc(DEVICE_CUDA, dt, 4, ys), gdx = cu_alloc(DEVICE_CUDA, dt, 4, xs);
    Tensor none = {0};
    char what[96];
    double ta = bf ? TOL_BF16 : TOL_F32;
    snprintf(what, sizeof what, "conv1x1 %s [%lld,%lld,%lld,%lld]->%lld%s", dtype_name(dt), (long long)B,
             (long long)IC, (long long)H, (long long)W, (long long)OC, bias ? " bias" : "");
    char w2[128];
    conv2d_forward(&y, &x, &w, bias ? &b : NULL, 1, 0);
    conv2d_forward(&gy, &gx, &gw, bias ? &gb : NULL, 1, 0);
    snprintf(w2, sizeof w2, "%s forward", what);
    cu_compare(w2, &gy, &y, ta);
    for (int call = 0; call < 2; call++) {
        conv2d_backward(&dx, &dw, bias ? &db : &none, &dy, &x, &w, 1, 0);
        conv2d_backward(&gdx, &gdw, bias ? &gdb : &none, &gdy, &gx, &gw, 1, 0);
    }
    snprintf(w2, sizeof w2, "%s din", what);
    cu_compare(w2, &gdx, &dx, ta);
    snprintf(w2, sizeof w2, "%s dw (+= twice)", what);
    cu_compare(w2, &gdw, &dw, TOL_F32);
    if (bias) {
        snprintf(w2, sizeof w2, "%s db (+= twice)", what);
        cu_compare(w2, &gdb, &db, TOL_F32);
        conv2d_backward(NULL, NULL, &db1, &dy, &x, &w, 1, 0);
        conv2d_backward(NULL, NULL, &gdb1, &gdy, &gx, &gw, 1, 0);
        snprintf(w2, sizeof w2, "%s db alone", what);
        cu_compare(w2, &gdb1, &db1, TOL_F32);
    }
    Tensor *all[] = {&x, &w, &b, &dy, &dw, &db, &db1, &y, &dx, &gx, &gw, &gb, &gdy, &gdw, &gdb, &gdb1, &gy, &gdx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu_free(all[i]);
}

int main(void) {
    cu_require_gpu();
    part_lt();
    // the planner's part: the workspace reserved once for the largest problem
    size_t ws = linear_workspace_bytes(DEVICE_CUDA, 1031, 263), wc = conv1x1_cuda_workspace_bytes(3, 37);
    ops_gemm_workspace_reserve(DEVICE_CUDA, ws > wc ? ws : wc);
    const DType dts[2] = {DTYPE_F32, DTYPE_BF16};
    for (int d = 0; d < 2; d++) {
        int64_t small[2] = {37, 19}, big[2] = {1031, 517}, lead[3] = {3, 7, 19};
        for (int bias = 0; bias < 2; bias++) linear_case(2, small, 23, bias, dts[d]);
        linear_case(2, big, 263, 1, dts[d]);
        linear_case(3, lead, 5, 1, dts[d]);
        for (int bias = 0; bias < 2; bias++) conv1x1_case(2, 19, 23, 5, 7, bias, dts[d]);
        conv1x1_case(3, 64, 37, 13, 11, 1, dts[d]);
    }
    if (device_cuda_emulated()) { // a cuBLASLt without the bias-gradient epilogue: the kernels sum db (new shapes,
        setenv("CUDAEMU_LT_NO_BGRAD", "1", 1); // so the plans are made afresh)
        for (int d = 0; d < 2; d++) {
            int64_t xs[2] = {29, 17};
            linear_case(2, xs, 13, 1, dts[d]);
            conv1x1_case(2, 17, 13, 3, 5, 1, dts[d]);
        }
        unsetenv("CUDAEMU_LT_NO_BGRAD");
    }
    return tu_report();
}
