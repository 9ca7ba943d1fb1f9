// attention.c: scaled dot-product attention (memory-efficient: the score matrix is rebuilt per query block, never
// kept) and the multi-head attention layer around it (q/k/v/out projections), forward and backward. Tensors on the
// GPU go to the kernels of cuda/cuda_attention.cu. On the CPU the products run in small register-blocked kernels
// vectorised over keys, on transposed copies of the head's keys and values: at head dimensions like 8 or 16 a GEMM
// library spends much of its time packing operands and filling short vectors, and these kernels keep every lane busy
// at any D (the forward at larger D keeps the GEMM library, as fast there).
#include <math.h>
#include <omp.h>

#include "ops_internal.h"

// Query rows per block: a thread holds one [ATTN_BQ, Tk] score block (two in the backward).
#define ATTN_BQ 64
// Keys per vector chunk of the CPU kernels: every loop over keys runs in whole chunks; the transposed keys and
// values are zero-padded, and the probabilities of padding (and causally hidden) keys are 0, up to a multiple of it.
#define ATTN_W 16
// Largest head dimension whose forward products run in the kernels below; above it the GEMM library is faster there
// (its packing then costs little against D multiply-adds per score). The backward uses the kernels at every D.
#define ATTN_SMALL_D 16

// The kernels below are written for a constant row and column count each, inlined at every call so the compiler
// keeps their accumulators in vector registers.
#define ATTN_KERNEL static inline __attribute__((always_inline))

// a * b + c, fused where the hardware does that fast (the build uses -ffp-contract=off: only fmaf fuses)
#ifdef FP_FAST_FMAF
#define ATTN_FMA(a, b, c) fmaf((a), (b), (c))
#else
#define ATTN_FMA(a, b, c) ((a) * (b) + (c))
#endif

typedef struct {
    int64_t B, Tq, Tk, H, D, HD;
} AttnDims;

// q [B, Tq, H*D], k, v [B, Tk, H*D]; head h of token t is columns [h*D, (h+1)*D).
static AttnDims attn_dims(const Tensor *q, const Tensor *k, const Tensor *v, int heads, const char *op) {
    char a[96];
    CHECK(q->ndim == 3, "", "%s: q must be [B, Tq, H*D], got %s", op, tensor_shape_str(q, a, sizeof a));
    AttnDims d = {.B = q->shape[0], .Tq = q->shape[1], .Tk = k->shape[1], .H = heads, .HD = q->shape[2]};
    CHECK(heads > 0 && d.HD > 0 && d.HD % heads == 0, "", "%s: width %lld is not a positive multiple of %d heads", op,
          (long long)d.HD, heads);
    d.D = d.HD / heads;
    tensor_expect_shape(k, "attention k", d.B, d.Tk, d.HD);
    tensor_expect_shape(v, "attention v", d.B, d.Tk, d.HD);
    CHECK(d.Tk > 0, "", "%s: no keys", op);
    return d;
}

static int64_t attn_pad(int64_t n) { return (n + ATTN_W - 1) / ATTN_W * ATTN_W; }

// Floats of per-thread scratch: `mats` score blocks [ATTN_BQ, Tkp], two transposed head copies [D, Tkp] and one row
// vector, rounded to cache lines (Tkp: Tk padded to whole chunks).
static size_t attn_scratch_per_thread(int64_t Tk, int64_t D, int mats) {
    size_t Tkp = (size_t)attn_pad(Tk);
    return ((size_t)mats * ATTN_BQ * Tkp + 2 * (size_t)D * Tkp + ATTN_BQ + 15) & ~(size_t)15;
}
static size_t attn_scratch_bytes(int64_t Tk, int64_t D, int mats) {
    return sizeof(float) * (size_t)omp_get_max_threads() * attn_scratch_per_thread(Tk, D, mats);
}

// Runs of query blocks each (batch, head) is cut into, so that the threads get about `per_thread` tasks each.
static int64_t attn_runs(int64_t B, int64_t H, int64_t Tq, int per_thread) {
    if (B * H == 0) return 1;
    int64_t nblk = (Tq + ATTN_BQ - 1) / ATTN_BQ, runs = (per_thread * omp_get_max_threads() + B * H - 1) / (B * H);
    runs = runs < nblk ? runs : nblk;
    return runs > 0 ? runs : 1;
}
// The backward: per-thread scratch, then each task's dk and dv accumulators [2, D, Tkp] (tasks: B H runs).
#define ATTN_BWD_RUNS 2
static size_t attn_backward_bytes(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D) {
    size_t tasks = (size_t)(B * H * attn_runs(B, H, Tq, ATTN_BWD_RUNS));
    return attn_scratch_bytes(Tk, D, 2) + sizeof(float) * tasks * 2 * (size_t)D * (size_t)attn_pad(Tk);
}

void attention_set_deterministic(int on) { attention_set_deterministic_cuda(on); }
void attention_set_cudnn(int on) { attention_set_cudnn_cuda(on ? 2 : 0); }

size_t attention_workspace_bytes(Device dev, DType dt, int64_t B, int64_t Tq, int64_t Tk, int heads,
                                 int64_t head_dim) {
    if (dev == DEVICE_CUDA)
        return attention_workspace_bytes_cuda((int)B, (int)Tq, (int)Tk, heads, (int)head_dim, (int)dt);
    size_t f = attn_scratch_bytes(Tk, head_dim, 1), b = attn_backward_bytes(B, heads, Tq, Tk, head_dim);
    return f > b ? f : b;
}

// The CUDA path: every activation operand (the wanted ones) on the GPU in one storage dtype (f32 or bf16), lse f32,
// and sizes that the kernels' int indices and grid (batch x heads in grid.y) hold.
static void attn_expect_cuda(const Tensor *const *acts, int n, const Tensor *lse, AttnDims d, const char *op) {
    DType dt = acts[0]->dtype;
    for (int i = 0; i < n; i++) {
        OPS_EXPECT_CUDA(acts[i], op);
        if (ops_want(acts[i]))
            CHECK(acts[i]->dtype == dt, "", "%s: the activations must share one dtype, got %s and %s", op,
                  dtype_name(dt), dtype_name(acts[i]->dtype));
    }
    OPS_EXPECT_CUDA_F32(lse, op);
    CHECK(d.B * d.Tq < INT32_MAX && d.B * d.Tk < INT32_MAX && d.B * d.H < 65536, "",
          "%s: too many tokens or batch x heads for the GPU kernels", op);
}

// exp(x) for softmax arguments (x <= 0 up to rounding): Cephes expf range reduction and polynomial, 2^n through the
// exponent bits (fused multiply-adds where the hardware has them); about 1 ulp. Written branch-free so the row loops
// vectorise. Clamping keeps 2^n a normal number; the exponent is built in unsigned arithmetic, so a NaN argument
// gives NaN (never undefined behaviour).
static inline float attn_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + 12582912.0f; // 1.5 * 2^23: the low mantissa bits now hold round(x log2 e)
    float n = t - 12582912.0f;
    float r = ATTN_FMA(n, 2.12194440e-4f, ATTN_FMA(n, -0.693359375f, x));
    float p = 1.9875691500e-4f;
    p = ATTN_FMA(p, r, 1.3981999507e-3f);
    p = ATTN_FMA(p, r, 8.3334519073e-3f);
    p = ATTN_FMA(p, r, 4.1665795894e-2f);
    p = ATTN_FMA(p, r, 1.6666665459e-1f);
    p = ATTN_FMA(p, r, 5.0000001201e-1f);
    p = ATTN_FMA(p, r * r, r) + 1.0f;
    union { float f; uint32_t u; } s = {.f = t};
    s.u = (s.u - 0x4B400000u + 127u) << 23;
    return p * s.f;
}

// Keys visible to query row i (causal: keys 0..i).
static inline int64_t attn_keys(int64_t i, int64_t Tk, int causal) { return causal && i + 1 < Tk ? i + 1 : Tk; }

// ---------------------------------------------------------------------------------------------------------------
// CPU kernels. A head's keys (values, gradients) are held transposed, xt [D, ldt] (row c: component c of every key),
// so each product is vectorised over ATTN_W keys whatever D is. np: keys, a multiple of ATTN_W. Rows of x, g and
// out have stride ld (the H*D of a token).

// xt [D, ldt] = head columns of x [n, ld] transposed, keys n..np zero.
static void attn_transpose_in(float *xt, int64_t ldt, const float *x, int64_t ld, int64_t n, int64_t np, int64_t D) {
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < D; c++) xt[c * ldt + j] = x[j * ld + c];
    for (int64_t c = 0; c < D; c++)
        for (int64_t j = n; j < np; j++) xt[c * ldt + j] = 0.0f;
}

// R rows: s [R, lds] = alpha x [R, D] kt [D, np] (kt's rows ldt apart). Inlined with R a constant, the accumulators
// [R, ATTN_W] stay in registers.
ATTN_KERNEL void attn_rows_keys_r(int R, float *s, int64_t lds, const float *x, int64_t ld, const float *kt,
                                    int64_t ldt, int64_t np, int64_t D, float alpha) {
    for (int64_t j0 = 0; j0 < np; j0 += ATTN_W) {
        float acc[8][ATTN_W] = {{0}};
        for (int64_t c = 0; c < D; c++) {
            const float *kc = kt + c * ldt + j0;
            for (int r = 0; r < R; r++) {
                const float xr = x[r * ld + c];
#pragma omp simd
                for (int jj = 0; jj < ATTN_W; jj++) acc[r][jj] = ATTN_FMA(xr, kc[jj], acc[r][jj]);
            }
        }
        for (int r = 0; r < R; r++)
#pragma omp simd
            for (int jj = 0; jj < ATTN_W; jj++) s[r * lds + j0 + jj] = alpha * acc[r][jj];
    }
}
// s [rows, lds] = alpha x [rows, D] k^T, k given as kt [D, np]: the scores (and dP = dout v^T).
static void attn_rows_keys(float *s, int64_t lds, const float *x, int64_t ld, int64_t rows, const float *kt,
                           int64_t ldt, int64_t np, int64_t D, float alpha) {
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) attn_rows_keys_r(8, s + r * lds, lds, x + r * ld, ld, kt, ldt, np, D, alpha);
    for (; r < rows; r++) attn_rows_keys_r(1, s + r * lds, lds, x + r * ld, ld, kt, ldt, np, D, alpha);
}

// R rows by C columns: out[r, c] = alpha sum_j p[r, j] vt[c, j] over np keys; one vector accumulator per output.
ATTN_KERNEL void attn_rows_cols_rc(int R, int C, float *out, int64_t ld, const float *p, int64_t ldp,
                                     const float *vt, int64_t ldt, int64_t np, float alpha) {
    float acc[4][4][ATTN_W] = {{{0}}};
    for (int64_t j0 = 0; j0 < np; j0 += ATTN_W)
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++)
#pragma omp simd
                for (int jj = 0; jj < ATTN_W; jj++)
                    acc[r][c][jj] = ATTN_FMA(p[r * ldp + j0 + jj], vt[c * ldt + j0 + jj], acc[r][c][jj]);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int jj = 0; jj < ATTN_W; jj++) s += acc[r][c][jj];
            out[r * ld + c] = alpha * s;
        }
}
// out [rows, D] = alpha p [rows, np] v, v given as vt [D, np]: the attention output (and dq = dS k).
static void attn_rows_cols(float *out, int64_t ld, const float *p, int64_t ldp, int64_t rows, const float *vt,
                           int64_t ldt, int64_t np, int64_t D, float alpha) {
    for (int64_t r = 0; r < rows; r += 4) {
        const float *pr = p + r * ldp;
        float *o = out + r * ld;
        if (rows - r >= 4) {
            int64_t c = 0;
            for (; c + 4 <= D; c += 4) attn_rows_cols_rc(4, 4, o + c, ld, pr, ldp, vt + c * ldt, ldt, np, alpha);
            for (; c < D; c++) attn_rows_cols_rc(4, 1, o + c, ld, pr, ldp, vt + c * ldt, ldt, np, alpha);
        } else {
            for (int64_t i = 0; i < rows - r; i++) {
                int64_t c = 0;
                for (; c + 4 <= D; c += 4)
                    attn_rows_cols_rc(1, 4, o + i * ld + c, ld, pr + i * ldp, ldp, vt + c * ldt, ldt, np, alpha);
                for (; c < D; c++)
                    attn_rows_cols_rc(1, 1, o + i * ld + c, ld, pr + i * ldp, ldp, vt + c * ldt, ldt, np, alpha);
            }
        }
    }
}

// C columns of gt: gt[c, j] += alpha sum_r x[r, c] p[r, j] over rows, for the np keys.
ATTN_KERNEL void attn_keys_cols_c(int C, float *gt, int64_t ldt, const float *x, int64_t ld, const float *p,
                                    int64_t ldp, int64_t rows, int64_t np, float alpha) {
    for (int64_t j0 = 0; j0 < np; j0 += ATTN_W) {
        float acc[8][ATTN_W] = {{0}};
        for (int64_t r = 0; r < rows; r++) {
            const float *pr = p + r * ldp + j0;
            for (int c = 0; c < C; c++) {
                const float xc = x[r * ld + c];
#pragma omp simd
                for (int jj = 0; jj < ATTN_W; jj++) acc[c][jj] = ATTN_FMA(xc, pr[jj], acc[c][jj]);
            }
        }
        for (int c = 0; c < C; c++)
#pragma omp simd
            for (int jj = 0; jj < ATTN_W; jj++) {
                float *g = gt + c * ldt + j0 + jj;
                *g = ATTN_FMA(alpha, acc[c][jj], *g);
            }
    }
}
// gt [D, np] += alpha (p^T x)^T for p [rows, np], x [rows, D]: dv += P^T dout and dk += dS^T q, kept transposed.
static void attn_keys_cols(float *gt, int64_t ldt, const float *x, int64_t ld, const float *p, int64_t ldp,
                           int64_t rows, int64_t np, int64_t D, float alpha) {
    int64_t c = 0;
    for (; c + 8 <= D; c += 8) attn_keys_cols_c(8, gt + c * ldt, ldt, x + c, ld, p, ldp, rows, np, alpha);
    for (; c < D; c++) attn_keys_cols_c(1, gt + c * ldt, ldt, x + c, ld, p, ldp, rows, np, alpha);
}

// ---------------------------------------------------------------------------------------------------------------

// out [B, Tq, H*D] = softmax(q k^T / sqrt(D)) v per head; lse [B, H, Tq] = log sum_j exp(score_ij).
// One task is one (batch, head, query block): S [bq, knp] = q_blk k^T * scale, row softmax in place (hidden and
// padding keys 0), out = P v / sum.
void attention_forward(Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v, int heads,
                       int causal) {
    AttnDims d = attn_dims(q, k, v, heads, "attention_forward");
    tensor_expect_shape(out, "attention output", d.B, d.Tq, d.HD);
    tensor_expect_shape(lse, "attention lse", d.B, d.H, d.Tq);
    if (OPS_ON_CUDA(out)) {
        const Tensor *acts[] = {out, q, k, v};
        attn_expect_cuda(acts, 4, lse, d, "attention_forward");
        void *ws =
            ops_workspace(DEVICE_CUDA, attention_workspace_bytes(DEVICE_CUDA, q->dtype, d.B, d.Tq, d.Tk, heads, d.D));
        attention_forward_cuda(out->data, lse->data, q->data, k->data, v->data, ws, (int)d.B, (int)d.Tq, (int)d.Tk,
                               (int)d.H, (int)d.D, causal, ops_dt(q));
        return;
    }
    OPS_EXPECT_CPU(out, "attention_forward");
    OPS_EXPECT_CPU(lse, "attention_forward");
    OPS_EXPECT_CPU(q, "attention_forward");
    OPS_EXPECT_CPU(k, "attention_forward");
    OPS_EXPECT_CPU(v, "attention_forward");
    const float *qp = tensor_f32(q), *kp = tensor_f32(k), *vp = tensor_f32(v);
    float *op = tensor_f32(out), *lp = tensor_f32(lse);
    const float scale = 1.0f / sqrtf((float)d.D);
    const int small = d.D <= ATTN_SMALL_D;
    // A task is a run of query blocks of one (batch, head), sharing one transposed copy of its keys and values (small
    // D); runs are cut short enough to give each thread about four tasks.
    const int64_t nblk = (d.Tq + ATTN_BQ - 1) / ATTN_BQ, Tkp = attn_pad(d.Tk), runs = attn_runs(d.B, d.H, d.Tq, 4);
    const int64_t run_blk = (nblk + runs - 1) / runs, tasks = d.B * d.H * runs;
    const size_t per = attn_scratch_per_thread(d.Tk, d.D, 1);
    float *ws = ops_workspace(DEVICE_CPU, attn_scratch_bytes(d.Tk, d.D, 1));
#pragma omp parallel for schedule(dynamic)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t bh = t / runs, b = bh / d.H, h = bh % d.H, blk0 = (t % runs) * run_blk;
        int64_t blk1 = blk0 + run_blk < nblk ? blk0 + run_blk : nblk;
        if (blk0 >= blk1) continue;
        float *S = ws + (size_t)omp_get_thread_num() * per; // S [ATTN_BQ, Tkp], kt, vt [D, Tkp], inv [ATTN_BQ]
        float *kt = S + ATTN_BQ * Tkp, *vt = kt + d.D * Tkp, *inv = vt + d.D * Tkp;
        const float *kb = kp + b * d.Tk * d.HD + h * d.D, *vb = vp + b * d.Tk * d.HD + h * d.D;
        int64_t last = blk1 * ATTN_BQ < d.Tq ? blk1 * ATTN_BQ - 1 : d.Tq - 1;
        int64_t kmax = causal ? attn_keys(last, d.Tk, 1) : d.Tk; // keys the run's last row sees
        if (small) {
            attn_transpose_in(kt, Tkp, kb, d.HD, kmax, attn_pad(kmax), d.D);
            attn_transpose_in(vt, Tkp, vb, d.HD, kmax, attn_pad(kmax), d.D);
        }
        for (int64_t q0 = blk0 * ATTN_BQ; q0 < blk1 * ATTN_BQ && q0 < d.Tq; q0 += ATTN_BQ) {
            int64_t bq = d.Tq - q0 < ATTN_BQ ? d.Tq - q0 : ATTN_BQ;
            int64_t kn = causal ? attn_keys(q0 + bq - 1, d.Tk, 1) : d.Tk, knp = attn_pad(kn); // keys the block sees
            const float *qb = qp + (b * d.Tq + q0) * d.HD + h * d.D;
            float *ob = op + (b * d.Tq + q0) * d.HD + h * d.D, *lb = lp + bh * d.Tq + q0;
            if (small)
                attn_rows_keys(S, Tkp, qb, d.HD, bq, kt, Tkp, knp, d.D, scale);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)kn, (int)d.D, scale, qb, (int)d.HD,
                            kb, (int)d.HD, 0.0f, S, (int)Tkp);
            for (int64_t r = 0; r < bq; r++) {
                float *s = S + r * Tkp;
                int64_t n = attn_keys(q0 + r, d.Tk, causal);
                float m = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : m)
                for (int64_t j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
#pragma omp simd reduction(+ : sum)
                for (int64_t j = 0; j < n; j++) {
                    s[j] = attn_exp(s[j] - m);
                    sum += s[j];
                }
                for (int64_t j = n; j < knp; j++) s[j] = 0.0f;
                lb[r] = m + logf(sum);
                inv[r] = 1.0f / sum;
            }
            if (small)
                attn_rows_cols(ob, d.HD, S, Tkp, bq, vt, Tkp, knp, d.D, 1.0f);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)d.D, (int)kn, 1.0f, S, (int)Tkp,
                            vb, (int)d.HD, 0.0f, ob, (int)d.HD);
            for (int64_t r = 0; r < bq; r++)
                for (int64_t c = 0; c < d.D; c++) ob[r * d.HD + c] *= inv[r];
        }
    }
}

// Per (batch, head), per query block, with P = exp(S - lse) rebuilt from the saved lse:
//   dv += P^T dout;  dP = dout v^T;  dS = P * (dP - rowsum(dout * out));  dq = dS k * scale;  dk += dS^T q * scale.
// A task is a run of query blocks of one (batch, head); dq is written per block, dk and dv accumulate transposed in the
// task's own accumulators, summed over the runs of each (batch, head) at the end.
void attention_backward(Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *out,
                        const Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v, int heads, int causal) {
    AttnDims d = attn_dims(q, k, v, heads, "attention_backward");
    tensor_expect_shape(dout, "attention dout", d.B, d.Tq, d.HD);
    tensor_expect_shape(out, "attention output", d.B, d.Tq, d.HD);
    tensor_expect_shape(lse, "attention lse", d.B, d.H, d.Tq);
    int want_q = ops_want(dq), want_k = ops_want(dk), want_v = ops_want(dv);
    if (want_q) tensor_expect_shape(dq, "attention dq", d.B, d.Tq, d.HD);
    if (want_k) tensor_expect_shape(dk, "attention dk", d.B, d.Tk, d.HD);
    if (want_v) tensor_expect_shape(dv, "attention dv", d.B, d.Tk, d.HD);
    if (OPS_ON_CUDA(dout)) {
        const Tensor *acts[] = {dout, out, q, k, v, dq, dk, dv};
        attn_expect_cuda(acts, 8, lse, d, "attention_backward");
        void *ws = ops_workspace(DEVICE_CUDA, attention_workspace_bytes(DEVICE_CUDA, q->dtype, d.B, d.Tq, d.Tk, heads, d.D));
        attention_backward_cuda(want_q ? dq->data : NULL, want_k ? dk->data : NULL, want_v ? dv->data : NULL,
                                dout->data, out->data, lse->data, q->data, k->data, v->data, ws, (int)d.B, (int)d.Tq,
                                (int)d.Tk, (int)d.H, (int)d.D, causal, ops_dt(q));
        return;
    }
    OPS_EXPECT_CPU(dout, "attention_backward");
    OPS_EXPECT_CPU(out, "attention_backward");
    OPS_EXPECT_CPU(lse, "attention_backward");
    OPS_EXPECT_CPU(q, "attention_backward");
    OPS_EXPECT_CPU(k, "attention_backward");
    OPS_EXPECT_CPU(v, "attention_backward");
    OPS_EXPECT_CPU(dq, "attention_backward");
    OPS_EXPECT_CPU(dk, "attention_backward");
    OPS_EXPECT_CPU(dv, "attention_backward");
    if (!want_q && !want_k && !want_v) return;
    const float *qp = tensor_f32(q), *kp = tensor_f32(k), *vp = tensor_f32(v);
    const float *gp = tensor_f32(dout), *op = tensor_f32(out), *lp = tensor_f32(lse);
    float *dqp = want_q ? tensor_f32(dq) : NULL, *dkp = want_k ? tensor_f32(dk) : NULL;
    float *dvp = want_v ? tensor_f32(dv) : NULL;
    const float scale = 1.0f / sqrtf((float)d.D);
    const int64_t nblk = (d.Tq + ATTN_BQ - 1) / ATTN_BQ, Tkp = attn_pad(d.Tk);
    const int64_t runs = attn_runs(d.B, d.H, d.Tq, ATTN_BWD_RUNS), run_blk = (nblk + runs - 1) / runs;
    const int64_t tasks = d.B * d.H * runs;
    const size_t per = attn_scratch_per_thread(d.Tk, d.D, 2);
    float *ws = ops_workspace(DEVICE_CPU, attn_backward_bytes(d.B, d.H, d.Tq, d.Tk, d.D));
    float *acc = ws + (size_t)omp_get_max_threads() * per; // the tasks' dkt, dvt [D, Tkp] each
#pragma omp parallel for schedule(dynamic)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t bh = t / runs, b = bh / d.H, h = bh % d.H, blk0 = (t % runs) * run_blk;
        int64_t blk1 = blk0 + run_blk < nblk ? blk0 + run_blk : nblk;
        float *dkt = acc + (size_t)t * 2 * (size_t)(d.D * Tkp), *dvt = dkt + d.D * Tkp;
        memset(dkt, 0, sizeof(float) * (size_t)(2 * d.D * Tkp));
        if (blk0 >= blk1) continue;
        // P, dS [ATTN_BQ, Tkp]; kt, vt [D, Tkp]; Drow [ATTN_BQ]
        float *P = ws + (size_t)omp_get_thread_num() * per, *dS = P + ATTN_BQ * Tkp;
        float *kt = dS + ATTN_BQ * Tkp, *vt = kt + d.D * Tkp, *Drow = vt + d.D * Tkp;
        int64_t kvo = b * d.Tk * d.HD + h * d.D; // offset of this head's keys and values
        const float *lb = lp + bh * d.Tq;
        int64_t last = blk1 * ATTN_BQ < d.Tq ? blk1 * ATTN_BQ - 1 : d.Tq - 1;
        int64_t kmax = causal ? attn_keys(last, d.Tk, 1) : d.Tk; // keys the run's last row sees
        attn_transpose_in(kt, Tkp, kp + kvo, d.HD, kmax, attn_pad(kmax), d.D);
        attn_transpose_in(vt, Tkp, vp + kvo, d.HD, kmax, attn_pad(kmax), d.D);
        for (int64_t q0 = blk0 * ATTN_BQ; q0 < blk1 * ATTN_BQ && q0 < d.Tq; q0 += ATTN_BQ) {
            int64_t bq = d.Tq - q0 < ATTN_BQ ? d.Tq - q0 : ATTN_BQ;
            int64_t kn = causal ? attn_keys(q0 + bq - 1, d.Tk, 1) : d.Tk, knp = attn_pad(kn);
            int64_t qo = (b * d.Tq + q0) * d.HD + h * d.D; // offset of this block's query rows
            const float *qb = qp + qo, *gb = gp + qo, *ob = op + qo;
            attn_rows_keys(P, Tkp, qb, d.HD, bq, kt, Tkp, knp, d.D, scale);
            for (int64_t r = 0; r < bq; r++) {
                float *p = P + r * Tkp;
                const float l = lb[q0 + r];
                int64_t n = attn_keys(q0 + r, d.Tk, causal);
#pragma omp simd
                for (int64_t j = 0; j < n; j++) p[j] = attn_exp(p[j] - l);
                for (int64_t j = n; j < knp; j++) p[j] = 0.0f;
                float s = 0.0f;
                for (int64_t c = 0; c < d.D; c++) s += gb[r * d.HD + c] * ob[r * d.HD + c];
                Drow[r] = s;
            }
            if (want_v) attn_keys_cols(dvt, Tkp, gb, d.HD, P, Tkp, bq, knp, d.D, 1.0f);
            if (!want_q && !want_k) continue;
            attn_rows_keys(dS, Tkp, gb, d.HD, bq, vt, Tkp, knp, d.D, 1.0f);
            for (int64_t r = 0; r < bq; r++) {
                const float *p = P + r * Tkp;
                const float Dr = Drow[r];
                float *g = dS + r * Tkp;
#pragma omp simd
                for (int64_t j = 0; j < knp; j++) g[j] = p[j] * (g[j] - Dr);
            }
            if (want_q) attn_rows_cols(dqp + qo, d.HD, dS, Tkp, bq, kt, Tkp, knp, d.D, scale);
            if (want_k) attn_keys_cols(dkt, Tkp, qb, d.HD, dS, Tkp, bq, knp, d.D, scale);
        }
    }
    // dk, dv [B, Tk, H*D]: the sums of their runs' accumulators, in run order (the same result every call)
    if (!want_k && !want_v) return;
#pragma omp parallel for schedule(static)
    for (int64_t bt = 0; bt < d.B * d.Tk; bt++) {
        int64_t b = bt / d.Tk, j = bt % d.Tk;
        for (int64_t h = 0; h < d.H; h++) {
            const float *a = acc + (size_t)((b * d.H + h) * runs) * 2 * (size_t)(d.D * Tkp) + j;
            for (int64_t c = 0; c < d.D; c++) {
                float sk = 0.0f, sv = 0.0f;
                for (int64_t r = 0; r < runs; r++) {
                    sk += a[(r * 2 * d.D + c) * Tkp];
                    sv += a[(r * 2 * d.D + d.D + c) * Tkp];
                }
                if (want_k) dkp[bt * d.HD + h * d.D + c] = sk;
                if (want_v) dvp[bt * d.HD + h * d.D + c] = sv;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// multi-head attention layer: x [B, Tq, C], ctx [B, Tk, Cctx] (x when NULL); cache q [B, Tq, C], k, v [B, Tk, C],
// attn [B, Tq, C], lse [B, H, Tq]; out [B, Tq, Cout].

static void mha_check(const MHACache *c, const Tensor *x, const Tensor *kv, const MHAParams *p, int heads,
                      const char *op) {
    char a[96], b[96];
    CHECK(x->ndim == 3 && kv->ndim == 3 && x->shape[0] == kv->shape[0], "",
          "%s: x %s and context %s must be [B, T, C] with one batch size", op, tensor_shape_str(x, a, sizeof a),
          tensor_shape_str(kv, b, sizeof b));
    int64_t B = x->shape[0], Tq = x->shape[1], Tk = kv->shape[1], C = p->wq.shape[0];
    tensor_expect_shape(&c->q, "mha cache q", B, Tq, C);
    tensor_expect_shape(&c->k, "mha cache k", B, Tk, C);
    tensor_expect_shape(&c->v, "mha cache v", B, Tk, C);
    tensor_expect_shape(&c->attn, "mha cache attn", B, Tq, C);
    tensor_expect_shape(&c->lse, "mha cache lse", B, (int64_t)heads, Tq);
}

void mha_forward(Tensor *out, MHACache *cache, const Tensor *x, const Tensor *ctx, const MHAParams *p, int heads,
                 int causal) {
    const Tensor *kv = ctx ? ctx : x;
    mha_check(cache, x, kv, p, heads, "mha_forward");
    linear_forward(&cache->q, x, &p->wq, &p->bq);
    linear_forward(&cache->k, kv, &p->wk, &p->bk);
    linear_forward(&cache->v, kv, &p->wv, &p->bv);
    attention_forward(&cache->attn, &cache->lse, &cache->q, &cache->k, &cache->v, heads, causal);
    linear_forward(out, &cache->attn, &p->wo, &p->bo);
}

// Workspace layout on either device: [attention scratch | dattn | dq | dk | dv | tmp], each part 256-byte aligned
// and stored in the activations' dtype. attention_backward asks ops_workspace for exactly the leading scratch size,
// which never reallocates a larger workspace, so the buffers after it survive. tmp receives one projection's input
// gradient before it is added (tensor_axpy) to dx or dctx. off[0..4]: byte offsets of dattn, dq, dk, dv, tmp.
static size_t mha_workspace_layout(Device dev, DType dt, int64_t B, int64_t Tq, int64_t Tk, int64_t C, int64_t Ckv,
                                   int heads, size_t off[5]) {
    const size_t es = dtype_size(dt);
    const size_t parts[5] = {es * (size_t)(B * Tq * C), es * (size_t)(B * Tq * C), es * (size_t)(B * Tk * C),
                             es * (size_t)(B * Tk * C), es * (size_t)(B * Tk * Ckv)};
    size_t at = (attention_workspace_bytes(dev, dt, B, Tq, Tk, heads, C / heads) + 255) & ~(size_t)255;
    for (int i = 0; i < 5; i++) {
        off[i] = at;
        at += (parts[i] + 255) & ~(size_t)255;
    }
    return at;
}

size_t mha_workspace_bytes(Device dev, DType dt, int64_t B, int64_t Tq, int64_t Tk, int64_t C, int64_t Ckv,
                           int heads) {
    size_t off[5];
    return mha_workspace_layout(dev, dt, B, Tq, Tk, C, Ckv, heads, off);
}

void mha_backward(Tensor *dx, Tensor *dctx, MHAParams *grads, const Tensor *dout, const MHACache *cache,
                  const Tensor *x, const Tensor *ctx, const MHAParams *p, int heads, int causal) {
    const Tensor *kv = ctx ? ctx : x; // the ops below check their operands' devices and dtypes
    mha_check(cache, x, kv, p, heads, "mha_backward");
    Tensor *dkv = ctx ? dctx : dx; // where the k and v paths' input gradients land
    int want_kv = ops_want(dkv);
    const Device dev = dout->device;
    size_t off[5];
    size_t bytes = mha_workspace_layout(dev, cache->attn.dtype, x->shape[0], x->shape[1], kv->shape[1],
                                        cache->attn.shape[2], kv->shape[2], heads, off);
    char *ws = ops_workspace(dev, bytes);
    Tensor tdattn = cache->attn, tdq = cache->q, tdk = cache->k, tdv = cache->v, tmp = *kv;
    tdattn.data = ws + off[0], tdq.data = ws + off[1], tdk.data = ws + off[2], tdv.data = ws + off[3];
    tmp.data = ws + off[4], tmp.dtype = cache->attn.dtype;
    Tensor *gwq = grads ? &grads->wq : NULL, *gwk = grads ? &grads->wk : NULL, *gwv = grads ? &grads->wv : NULL;
    Tensor *gwo = grads ? &grads->wo : NULL, *gbq = grads ? &grads->bq : NULL, *gbk = grads ? &grads->bk : NULL;
    Tensor *gbv = grads ? &grads->bv : NULL, *gbo = grads ? &grads->bo : NULL;

    linear_backward(&tdattn, gwo, gbo, dout, &cache->attn, &p->wo);
    attention_backward(&tdq, &tdk, &tdv, &tdattn, &cache->attn, &cache->lse, &cache->q, &cache->k, &cache->v, heads,
                       causal);
    linear_backward(dx, gwq, gbq, &tdq, x, &p->wq);
    if (ctx) {
        linear_backward(want_kv ? dkv : NULL, gwk, gbk, &tdk, kv, &p->wk);
    } else {
        linear_backward(want_kv ? &tmp : NULL, gwk, gbk, &tdk, kv, &p->wk);
        if (want_kv) tensor_axpy(dkv, 1.0f, &tmp);
    }
    linear_backward(want_kv ? &tmp : NULL, gwv, gbv, &tdv, kv, &p->wv);
    if (want_kv) tensor_axpy(dkv, 1.0f, &tmp);
}
