// cuda_linear.cu: linear layers and 1x1 convolutions on the GPU through cuBLASLt, matching ops/linear.c and the
// pointwise case of ops/conv2d.c. Every GEMM goes through one wrapper, gemm_run: its matmul descriptor, layouts and
// heuristic algorithm are created once per problem (shape, transposes, types, epilogue, pointer alignments) and
// cached; the workspace is the GEMM workspace (ops_gemm_workspace), sized by linear_cuda_workspace_bytes /
// conv1x1_cuda_workspace_bytes so planners reserve it; the call is queued on the rank's compute stream. The emulator (src/cudaemu/cudaemu_blas.h)
// serves the same calls in ctest -L cudaemu.
//
// Row-major tensors are column-major matrices transposed, so each product is written for cuBLASLt as D^T = ...:
//   linear forward  out[N, OC] = in w^T + b:  D [OC, N] = w^T(op T of [IC, OC]) . in [IC, N], BIAS epilogue (b[OC]);
//                  with a residual, C = res [OC, N] and beta = 1: the sum in the epilogue, one rounding
//   linear din      din[N, IC] = dout w:      D [IC, N] = w [IC, OC] . dout [OC, N]
//   linear dw      dw[OC, IC] += dout^T in:   D [IC, OC] = in [IC, N] . dout^T (op T of [OC, N]), beta = 1, fp32 D;
//                  BGRADB sums op(B) = dout over k = N: the bias gradient in the same pass
//   conv1x1 (NCHW, S = H W pixels): out[b] [OC, S] = w [OC, IC] in[b] [IC, S] is D_b [S, OC] = in_b [S, IC] .
//                  w^T [IC, OC], strided-batched over the images (w shared: batch stride 0); din likewise; dw sums
//                  over the images, one beta = 1 GEMM each, with BGRADB giving each image's bias-gradient sum.
// Precision: fp32 storage uses CUBLAS_COMPUTE_32F_PEDANTIC (fp32 products and sums, never TF32: for parity with the
// CPU); bf16 storage uses bf16 A/B with CUBLAS_COMPUTE_32F (fp32 accumulation on tensor cores), bf16 activations
// out and an fp32 weight gradient. Bias gradients are fp32 and accumulated (+=) like every parameter gradient: the
// epilogue writes this call's sum into the workspace and bias_grad_finish_kernel adds it, so db never depends on
// what the epilogue does with old contents.
#include "cuda_common.cuh"
#ifdef DRTUNE_CUDAEMU
#include "../../cudaemu/cudaemu_blas.h"
#else
#include <cublasLt.h>
#endif
#include "../../core/device_cuda.h"
#include "../../core/tensor.h"
#include "../ops.h"
#include "cuda_api.h"

// cuBLASLt workspace: 32 MiB, NVIDIA's recommendation for Hopper (enough for split-K and stream-K kernels).
#define LT_WORKSPACE ((size_t)32 << 20)
// rows of dout one block of the column-sum kernel reduces (the bias gradient without a weight gradient)
#define COLSUM_ROWS 256
#define COLSUM_MAX_CHUNKS 64

#define LT_CHECK(call)                                                                                       \
    do {                                                                                                     \
        cublasStatus_t _s = (call);                                                                          \
        if (_s != CUBLAS_STATUS_SUCCESS)                                                                     \
            dt_fatal(__FILE__, __LINE__, "", "%s: cuBLASLt status %d (%s)", #call, (int)_s,                  \
                     cublasLtGetStatusString(_s));                                                           \
    } while (0)

// ---------------------------------------------------------------------------------------------------------------
// the GEMM wrapper

// One problem: D[m, n] (column-major, batch strided) = alpha op(A) op(B) + beta D, with an epilogue.
typedef struct {
    int32_t transa, transb, epilogue, ab_type, d_type, compute;
    int64_t m, n, k, lda, ldb, ldd;
    int64_t batch, stride_a, stride_b, stride_d;
    uint32_t align[4]; // A, B, D, bias: the pointers' alignment, which decides the algorithms that may run
} GemmKey;

typedef struct {
    GemmKey key;
    int used, ok; // ok: the heuristic found an algorithm
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} GemmPlan;

static struct {
    cublasLtHandle_t lt;
    GemmPlan *plans; // open addressing, capacity a power of two, at most half full
    size_t cap, count;
} g_lt;

static uint32_t ptr_alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t r = 256;
    while (r > 1 && (a & (r - 1))) r >>= 1;
    return r;
}

static uint64_t key_hash(const GemmKey *k) {
    const unsigned char *c = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static cublasLtMatrixLayout_t make_layout(int32_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                          int64_t stride) {
    cublasLtMatrixLayout_t l;
    LT_CHECK(cublasLtMatrixLayoutCreate(&l, (cudaDataType)type, (uint64_t)rows, (uint64_t)cols, ld));
    if (batch > 1) {
        int32_t bc = (int32_t)batch;
        LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                  sizeof stride));
    }
    return l;
}

// Descriptors and the heuristic's best algorithm for a new problem (bias: the first call's pointer, which the
// heuristic reads for its alignment).
static void plan_init(GemmPlan *p, const GemmKey *k, const void *bias) {
    memset(p, 0, sizeof *p);
    p->key = *k;
    p->used = 1;
    cublasStatus_t cs = cublasLtMatmulDescCreate(&p->op, (cublasComputeType_t)k->compute, CUDA_R_32F);
    if (cs != CUBLAS_STATUS_SUCCESS && k->compute == CUBLAS_COMPUTE_32F_PEDANTIC) // see the retry below
        cs = cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    LT_CHECK(cs);
    int32_t ta = k->transa, tb = k->transb;
    uint32_t epi = (uint32_t)k->epilogue;
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (k->epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
        int32_t bt = k->d_type; // bias and bias gradient are stored like D
        LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
        LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    int64_t ar = k->transa == CUBLAS_OP_N ? k->m : k->k, ac = k->transa == CUBLAS_OP_N ? k->k : k->m;
    int64_t br = k->transb == CUBLAS_OP_N ? k->k : k->n, bc = k->transb == CUBLAS_OP_N ? k->n : k->k;
    p->a = make_layout(k->ab_type, ar, ac, k->lda, k->batch, k->stride_a);
    p->b = make_layout(k->ab_type, br, bc, k->ldb, k->batch, k->stride_b);
    p->d = make_layout(k->d_type, k->m, k->n, k->ldd, k->batch, k->stride_d);

    cublasLtMatmulPreference_t pref;
    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = LT_WORKSPACE;
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t aligns[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++) {
        uint32_t al = k->align[i < 2 ? i : 2]; // C is D
        LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, aligns[i], &al, sizeof al));
    }
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g_lt.lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &res, &found);
    p->ok = s == CUBLAS_STATUS_SUCCESS && found > 0 && res.state == CUBLAS_STATUS_SUCCESS;
    if (!p->ok && k->compute == CUBLAS_COMPUTE_32F_PEDANTIC) {
        // no pedantic kernel with this epilogue: CUBLAS_COMPUTE_32F is fp32 arithmetic too (cuBLASLt uses TF32 only
        // for CUBLAS_COMPUTE_32F_FAST_TF32); pedantic only also rules out the opt-in fp32 emulation
        int32_t c = CUBLAS_COMPUTE_32F;
        LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, &c, sizeof c));
        s = cublasLtMatmulAlgoGetHeuristic(g_lt.lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &res, &found);
        p->ok = s == CUBLAS_STATUS_SUCCESS && found > 0 && res.state == CUBLAS_STATUS_SUCCESS;
    }
    LT_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (p->ok) p->algo = res.algo;
    else if (s != CUBLAS_STATUS_SUCCESS && s != CUBLAS_STATUS_NOT_SUPPORTED) LT_CHECK(s);
}

// The cached plan of a problem, made at its first use.
static GemmPlan *plan_get(const GemmKey *k, const void *bias) {
    if (!g_lt.lt) LT_CHECK(cublasLtCreate(&g_lt.lt));
    if (2 * (g_lt.count + 1) > g_lt.cap) { // grow (host memory; descriptors are kept)
        size_t cap = g_lt.cap ? 2 * g_lt.cap : 64;
        GemmPlan *np = (GemmPlan *)xcalloc(cap, sizeof *np);
        for (size_t i = 0; i < g_lt.cap; i++) {
            if (!g_lt.plans[i].used) continue;
            size_t j = key_hash(&g_lt.plans[i].key) & (cap - 1);
            while (np[j].used) j = (j + 1) & (cap - 1);
            np[j] = g_lt.plans[i];
        }
        free(g_lt.plans);
        g_lt.plans = np;
        g_lt.cap = cap;
    }
    size_t j = key_hash(k) & (g_lt.cap - 1);
    while (g_lt.plans[j].used) {
        if (!memcmp(&g_lt.plans[j].key, k, sizeof *k)) return &g_lt.plans[j];
        j = (j + 1) & (g_lt.cap - 1);
    }
    plan_init(&g_lt.plans[j], k, bias);
    g_lt.count++;
    return &g_lt.plans[j];
}

// Runs the problem key (its align filled here) on the compute stream with workspace ws (LT_WORKSPACE bytes);
// bias: the bias (BIAS) or where the bias gradient goes (BGRADB). Returns 0, running nothing, when the heuristic
// has no algorithm for a bias-gradient epilogue (the caller sums the bias gradient itself); any other problem
// without an algorithm is an internal failure.
static int gemm_run(GemmKey *k, const void *A, const void *B, const void *C, void *D, float beta, void *bias,
                    void *ws) {
    if (!C) C = D;
    k->align[0] = ptr_alignment(A);
    k->align[1] = ptr_alignment(B);
    uint32_t ac = ptr_alignment(C), ad = ptr_alignment(D);
    k->align[2] = ac < ad ? ac : ad; // C and D share a layout and one alignment preference
    k->align[3] = bias ? ptr_alignment(bias) : 0;
    GemmPlan *p = plan_get(k, bias);
    if (!p->ok) {
        if (k->epilogue == CUBLASLT_EPILOGUE_BGRADB) return 0;
        dt_fatal(__FILE__, __LINE__, "", "cuBLASLt has no algorithm for a %lld x %lld x %lld GEMM (types %d/%d, "
                 "epilogue %d)", (long long)k->m, (long long)k->n, (long long)k->k, k->ab_type, k->d_type,
                 k->epilogue);
    }
    if (bias) LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    const float alpha = 1.0f;
    LT_CHECK(cublasLtMatmul(g_lt.lt, p->op, &alpha, A, p->a, B, p->b, &beta, C, p->d, D, p->d, &p->algo, ws,
                            LT_WORKSPACE, cuda_stream()));
    return 1;
}

static GemmKey gemm_key(int dt, int d_f32, int ta, int tb, int epilogue, int64_t m, int64_t n, int64_t k,
                        int64_t lda, int64_t ldb, int64_t ldd) {
    GemmKey key;
    memset(&key, 0, sizeof key); // padding too: keys are hashed and compared as bytes
    int bf16 = dt == DTYPE_BF16;
    key.transa = ta;
    key.transb = tb;
    key.epilogue = epilogue;
    key.ab_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    key.d_type = bf16 && !d_f32 ? CUDA_R_16BF : CUDA_R_32F;
    key.compute = bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
    key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldd = ldd;
    key.batch = 1;
    return key;
}

// ---------------------------------------------------------------------------------------------------------------
// kernels: bias broadcast (1x1 conv forward) and bias-gradient sums, fp32 throughout

// out[r, s] = b[r % C] (+ res[r, s]; res may be NULL) for rows r = (image, channel) of S pixels: grid.x over rows,
// block threads over pixels
template <typename T> __global__ static void bias_rows_kernel(T *out, const T *b, const T *res, int C, int64_t S) {
    int64_t r = blockIdx.x;
    T v = b[r % C];
    T *o = out + r * S;
    const T *rr = res ? res + r * S : nullptr;
    for (int64_t s = (int64_t)blockIdx.y * blockDim.x + threadIdx.x; s < S; s += (int64_t)gridDim.y * blockDim.x)
        if (rr) st_f32(o, s, ld_f32(rr, s) + ld_f32(&v, 0));
        else o[s] = v;
}

// part[c, o] = sum of dout[n, o] over the rows n of chunk c: block (32, 8) = 32 columns x 8 row lanes, coalesced
// along o; the 8 lanes' sums meet in shared memory in a fixed order (deterministic).
template <typename T>
__global__ static void bias_colsum_kernel(float *part, const T *g, int64_t N, int OC, int64_t rows_per_chunk) {
    __shared__ float acc[8][33];
    int o = blockIdx.x * 32 + threadIdx.x;
    int64_t n0 = (int64_t)blockIdx.y * rows_per_chunk, n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
    float s = 0.0f;
    if (o < OC)
        for (int64_t n = n0 + threadIdx.y; n < n1; n += 8) s += ld_f32(g, n * OC + o);
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && o < OC) {
        float t = 0.0f;
        for (int y = 0; y < 8; y++) t += acc[y][threadIdx.x];
        part[(int64_t)blockIdx.y * OC + o] = t;
    }
}

// part[r] = sum over s of dout[r, s] for rows r = (image, channel) of S pixels: one warp per row, lanes strided
// over the pixels (coalesced), a shuffle reduction at the end.
template <typename T> __global__ static void bias_rowsum_kernel(float *part, const T *g, int64_t rows, int64_t S) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    float s = 0.0f;
    if (r < rows)
        for (int64_t i = lane; i < S; i += 32) s += ld_f32(g, r * S + i);
    for (int d = 16; d > 0; d >>= 1) s += __shfl_xor_sync(0xffffffffu, s, d);
    if (lane == 0 && r < rows) part[r] = s;
}

// db[o] += sum over c < C of part[c, o], in order
__global__ static void bias_grad_finish_kernel(float *db, const float *part, int C, int OC) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    float s = 0.0f;
    for (int c = 0; c < C; c++) s += part[(int64_t)c * OC + o];
    db[o] += s;
}

static int64_t colsum_chunks(int64_t N) {
    int64_t c = (N + COLSUM_ROWS - 1) / COLSUM_ROWS;
    return c < 1 ? 1 : c > COLSUM_MAX_CHUNKS ? COLSUM_MAX_CHUNKS : c;
}

// workspace: [cuBLASLt workspace | partial bias sums (floats)]
static size_t ws_bytes(int64_t partial_floats) { return LT_WORKSPACE + sizeof(float) * (size_t)partial_floats; }

// ---------------------------------------------------------------------------------------------------------------
// a plain GEMM for the other GPU ops (cuda_attention_gemm.cu), through the same plan cache

extern "C" void gemm_cuda(int ta, int tb, int64_t m, int64_t n, int64_t k, const void *A, int64_t lda, const void *B,
                          int64_t ldb, float beta, void *D, int64_t ldd, int dt, int d_f32) {
    if (!m || !n) return;
    void *ws = ops_gemm_workspace(DEVICE_CUDA, ws_bytes(0));
    GemmKey key = gemm_key(dt, d_f32, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                           CUBLASLT_EPILOGUE_DEFAULT, m, n, k, lda, ldb, ldd);
    gemm_run(&key, A, B, NULL, D, beta, NULL, ws);
}

// ---------------------------------------------------------------------------------------------------------------
// linear

extern "C" size_t linear_cuda_workspace_bytes(int64_t N, int OC) { return ws_bytes(colsum_chunks(N) * OC); }

extern "C" void linear_forward_cuda(void *out, const void *in, const void *w, const void *b, const void *res,
                                    int64_t N, int IC, int OC, int64_t ldw, int dt) {
    if (!N) return;
    CHECK(IC > 0 && OC > 0, "", "linear_forward_cuda: %d inputs, %d outputs", IC, OC);
    void *ws = ops_gemm_workspace(DEVICE_CUDA, linear_cuda_workspace_bytes(N, OC));
    // D [OC, N] = op_T(w [IC, OC], ld ldw) in [IC, N] (+ b along OC) (+ C = res [OC, N], beta = 1)
    GemmKey k = gemm_key(dt, 0, CUBLAS_OP_T, CUBLAS_OP_N, b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, OC,
                         N, IC, ldw, IC, OC);
    gemm_run(&k, w, in, res, out, res ? 1.0f : 0.0f, (void *)b, ws);
}

// db[OC] += column sums of dout [N, OC] without a GEMM: chunked partial sums, then the ordered finish
template <typename T> static void linear_bias_grad(float *db, const T *dout, int64_t N, int OC, float *part) {
    int64_t chunks = colsum_chunks(N), rows = (N + chunks - 1) / chunks;
    CUDA_LAUNCH(bias_colsum_kernel<T>, dim3(cuda_blocks(OC, 32), (unsigned)chunks), dim3(32, 8), 0, cuda_stream(),
                part, dout, N, OC, rows);
    CUDA_LAUNCH(bias_grad_finish_kernel, cuda_blocks(OC, 256), 256, 0, cuda_stream(), db, (const float *)part,
                (int)chunks, OC);
}

extern "C" void linear_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in,
                                     const void *w, int64_t N, int IC, int OC, int64_t ldw, int dt) {
    if (!N) return; // nothing to add; din has no elements
    CHECK(IC > 0 && OC > 0, "", "linear_backward_cuda: %d inputs, %d outputs", IC, OC);
    char *ws = (char *)ops_gemm_workspace(DEVICE_CUDA, linear_cuda_workspace_bytes(N, OC));
    float *part = (float *)(ws + LT_WORKSPACE);
    if (din) { // D [IC, N] = w [IC, OC] dout [OC, N]
        GemmKey k = gemm_key(dt, 0, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, IC, N, OC, ldw, OC, IC);
        gemm_run(&k, w, dout, NULL, din, 0.0f, NULL, ws);
    }
    int db_done = 0;
    if (dw) { // D [IC, OC] += in [IC, N] op_T(dout [OC, N]); BGRADB: part[OC] = sum over N of dout
        GemmKey k = gemm_key(dt, 1, CUBLAS_OP_N, CUBLAS_OP_T, db ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_DEFAULT,
                             IC, OC, N, IC, OC, ldw);
        if (gemm_run(&k, in, dout, NULL, dw, 1.0f, db ? part : NULL, ws)) {
            if (db) CUDA_LAUNCH(bias_grad_finish_kernel, cuda_blocks(OC, 256), 256, 0, cuda_stream(), db,
                                (const float *)part, 1, OC);
            db_done = 1;
        } else { // no BGRADB algorithm: the plain GEMM, then the sums below
            k = gemm_key(dt, 1, CUBLAS_OP_N, CUBLAS_OP_T, CUBLASLT_EPILOGUE_DEFAULT, IC, OC, N, IC, OC, ldw);
            gemm_run(&k, in, dout, NULL, dw, 1.0f, NULL, ws);
        }
    }
    if (db && !db_done) {
        if (dt == DTYPE_BF16) linear_bias_grad(db, (const __nv_bfloat16 *)dout, N, OC, part);
        else linear_bias_grad(db, (const float *)dout, N, OC, part);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1x1 convolution, stride 1, no padding (NCHW): per image a GEMM over the S = H W pixels

extern "C" size_t conv1x1_cuda_workspace_bytes(int B, int OC) { return ws_bytes((int64_t)B * OC); }

extern "C" void conv1x1_forward_cuda(void *out, const void *in, const void *w, const void *b, const void *res, int B,
                                     int IC, int OC, int64_t S, int64_t ldw, int dt) {
    if (!B || !S) return;
    CHECK(IC > 0 && OC > 0, "", "conv1x1_forward_cuda: %d inputs, %d outputs", IC, OC);
    void *ws = ops_gemm_workspace(DEVICE_CUDA, conv1x1_cuda_workspace_bytes(B, OC));
    // The bias runs along D's columns here (D_b = out[b]^T [S, OC]), where cuBLASLt's BIAS epilogue cannot add it:
    // it is broadcast into out first (with the residual, when there is one) and the GEMM accumulates onto it
    // (beta = 1). A residual alone is the GEMM's C.
    if (b) {
        dim3 grid((unsigned)((int64_t)B * OC), (unsigned)((S + 1023) / 1024 < 16 ? (S + 1023) / 1024 : 16));
        if (dt == DTYPE_BF16)
            CUDA_LAUNCH(bias_rows_kernel<__nv_bfloat16>, grid, 256, 0, cuda_stream(), (__nv_bfloat16 *)out,
                        (const __nv_bfloat16 *)b, (const __nv_bfloat16 *)res, OC, S);
        else CUDA_LAUNCH(bias_rows_kernel<float>, grid, 256, 0, cuda_stream(), (float *)out, (const float *)b,
                         (const float *)res, OC, S);
    }
    // D_b [S, OC] = in_b [S, IC] op_N(w^T as [IC, OC], ld ldw), images strided, w shared (stride 0)
    GemmKey k = gemm_key(dt, 0, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, S, OC, IC, S, ldw, S);
    k.batch = B, k.stride_a = IC * S, k.stride_b = 0, k.stride_d = OC * S;
    gemm_run(&k, in, w, b ? NULL : res, out, b || res ? 1.0f : 0.0f, NULL, ws);
}

extern "C" void conv1x1_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in,
                                      const void *w, int B, int IC, int OC, int64_t S, int64_t ldw, int dt) {
    if (!B || !S) return;
    CHECK(IC > 0 && OC > 0, "", "conv1x1_backward_cuda: %d inputs, %d outputs", IC, OC);
    char *ws = (char *)ops_gemm_workspace(DEVICE_CUDA, conv1x1_cuda_workspace_bytes(B, OC));
    float *part = (float *)(ws + LT_WORKSPACE); // [B, OC] per-image bias-gradient sums
    size_t es = dt == DTYPE_BF16 ? 2 : 4;
    if (din) { // din_b^T [S, IC] = dout_b^T [S, OC] op_T(w^T as [IC, OC])
        GemmKey k = gemm_key(dt, 0, CUBLAS_OP_N, CUBLAS_OP_T, CUBLASLT_EPILOGUE_DEFAULT, S, IC, OC, S, ldw, S);
        k.batch = B, k.stride_a = OC * S, k.stride_b = 0, k.stride_d = IC * S;
        gemm_run(&k, dout, w, NULL, din, 0.0f, NULL, ws);
    }
    // dw^T [IC, OC] += op_T(in_b as [S, IC]) dout_b [S, OC], one GEMM per image (the sum over images is not a
    // batch); BGRADB gives image b's bias-gradient sum over its pixels in part[b]
    int db_done = 0;
    if (dw) {
        db_done = db != NULL;
        for (int i = 0; i < B; i++) {
            const char *inb = (const char *)in + (size_t)i * IC * S * es, *gb = (const char *)dout + (size_t)i * OC * S * es;
            GemmKey k = gemm_key(dt, 1, CUBLAS_OP_T, CUBLAS_OP_N,
                                 db_done ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_DEFAULT, IC, OC, S, S, S, ldw);
            if (!gemm_run(&k, inb, gb, NULL, dw, 1.0f, db_done ? part + (size_t)i * OC : NULL, ws)) {
                k.epilogue = CUBLASLT_EPILOGUE_DEFAULT; // no BGRADB algorithm: the sums below
                gemm_run(&k, inb, gb, NULL, dw, 1.0f, NULL, ws);
                db_done = 0;
            }
        }
    }
    if (db && !db_done) {
        int64_t rows = (int64_t)B * OC;
        if (dt == DTYPE_BF16)
            CUDA_LAUNCH(bias_rowsum_kernel<__nv_bfloat16>, cuda_blocks(rows, 8), 256, 0, cuda_stream(), part,
                        (const __nv_bfloat16 *)dout, rows, S);
        else CUDA_LAUNCH(bias_rowsum_kernel<float>, cuda_blocks(rows, 8), 256, 0, cuda_stream(), part,
                         (const float *)dout, rows, S);
    }
    if (db) CUDA_LAUNCH(bias_grad_finish_kernel, cuda_blocks(OC, 256), 256, 0, cuda_stream(), db, (const float *)part,
                        B, OC);
}
