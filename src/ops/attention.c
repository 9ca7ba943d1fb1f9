// attention.c: scaled dot-product attention (memory-efficient: the score matrix is rebuilt per query block, never
// kept) and the multi-head attention layer around it (q/k/v/out projections), forward and backward. Tensors on the
// GPU go to the kernels of cuda/cuda_attention.cu.
#include <math.h>
#include <omp.h>

#include "ops_internal.h"

// Query rows per block: a thread holds one [ATTN_BQ, Tk] score block (two in the backward).
#define ATTN_BQ 64

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

// Floats of per-thread scratch: `mats` score-sized blocks [ATTN_BQ, Tk] and one row vector, padded to cache lines.
static size_t attn_scratch_per_thread(int64_t Tk, int mats) {
    return ((size_t)mats * ATTN_BQ * (size_t)Tk + ATTN_BQ + 15) & ~(size_t)15;
}
static size_t attn_scratch_bytes(int64_t Tk, int mats) {
    return sizeof(float) * (size_t)omp_get_max_threads() * attn_scratch_per_thread(Tk, mats);
}

size_t attention_workspace_bytes(Device dev, int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim) {
    if (dev == DEVICE_CUDA) return attention_workspace_bytes_cuda((int)B, (int)Tq, (int)Tk, heads, (int)head_dim);
    return attn_scratch_bytes(Tk, 2); // the backward's; the forward needs half of it
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
// exponent bits; about 1 ulp. Written branch-free so the row loops vectorise. Clamping keeps 2^n a normal number;
// the exponent is built in unsigned arithmetic, so a NaN argument gives NaN (never undefined behaviour).
static inline float attn_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + 12582912.0f; // 1.5 * 2^23: the low mantissa bits now hold round(x log2 e)
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    union { float f; uint32_t u; } s = {.f = t};
    s.u = (s.u - 0x4B400000u + 127u) << 23;
    return p * s.f;
}

// Keys visible to query row i (causal: keys 0..i).
static inline int64_t attn_keys(int64_t i, int64_t Tk, int causal) { return causal && i + 1 < Tk ? i + 1 : Tk; }

// out [B, Tq, H*D] = softmax(q k^T / sqrt(D)) v per head; lse [B, H, Tq] = log sum_j exp(score_ij).
// One task is one (batch, head, query block): S [bq, kn] = q_blk k^T * scale, row softmax in place, out = P v / sum.
void attention_forward(Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v, int heads,
                       int causal) {
    AttnDims d = attn_dims(q, k, v, heads, "attention_forward");
    tensor_expect_shape(out, "attention output", d.B, d.Tq, d.HD);
    tensor_expect_shape(lse, "attention lse", d.B, d.H, d.Tq);
    if (OPS_ON_CUDA(out)) {
        const Tensor *acts[] = {out, q, k, v};
        attn_expect_cuda(acts, 4, lse, d, "attention_forward");
        attention_forward_cuda(out->data, lse->data, q->data, k->data, v->data, (int)d.B, (int)d.Tq, (int)d.Tk,
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
    const int64_t nblk = (d.Tq + ATTN_BQ - 1) / ATTN_BQ, tasks = d.B * d.H * nblk;
    const size_t per = attn_scratch_per_thread(d.Tk, 1);
    float *ws = ops_workspace(DEVICE_CPU, attn_scratch_bytes(d.Tk, 1));
    // Fewer tasks than threads: run them in turn and let each sgemm use every thread instead.
#pragma omp parallel for schedule(dynamic) if (tasks >= omp_get_max_threads())
    for (int64_t t = 0; t < tasks; t++) {
        int64_t bh = t / nblk, b = bh / d.H, h = bh % d.H, q0 = (t % nblk) * ATTN_BQ;
        int64_t bq = d.Tq - q0 < ATTN_BQ ? d.Tq - q0 : ATTN_BQ;
        int64_t kn = causal ? attn_keys(q0 + bq - 1, d.Tk, 1) : d.Tk; // keys any row of the block sees
        float *S = ws + (size_t)omp_get_thread_num() * per, *inv = S + (size_t)ATTN_BQ * (size_t)d.Tk;
        const float *qb = qp + (b * d.Tq + q0) * d.HD + h * d.D;
        const float *kb = kp + b * d.Tk * d.HD + h * d.D, *vb = vp + b * d.Tk * d.HD + h * d.D;
        float *ob = op + (b * d.Tq + q0) * d.HD + h * d.D, *lb = lp + bh * d.Tq + q0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)kn, (int)d.D, scale, qb, (int)d.HD, kb,
                    (int)d.HD, 0.0f, S, (int)d.Tk);
        for (int64_t r = 0; r < bq; r++) {
            float *s = S + r * d.Tk;
            int64_t n = attn_keys(q0 + r, d.Tk, causal);
            float m = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : m)
            for (int64_t j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < n; j++) {
                s[j] = attn_exp(s[j] - m);
                sum += s[j];
            }
            for (int64_t j = n; j < kn; j++) s[j] = 0.0f;
            lb[r] = m + logf(sum);
            inv[r] = 1.0f / sum;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)d.D, (int)kn, 1.0f, S, (int)d.Tk, vb,
                    (int)d.HD, 0.0f, ob, (int)d.HD);
        for (int64_t r = 0; r < bq; r++)
            for (int64_t c = 0; c < d.D; c++) ob[r * d.HD + c] *= inv[r];
    }
}

// Per (batch, head), per query block, with P = exp(S - lse) rebuilt from the saved lse:
//   dv += P^T dout;  dP = dout v^T;  dS = P * (dP - rowsum(dout * out));  dq = dS k * scale;  dk += dS^T q * scale.
// dq, dk, dv are written (dk, dv zeroed, then accumulated over the query blocks of their (batch, head)).
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
        void *ws = ops_workspace(DEVICE_CUDA, attention_workspace_bytes(DEVICE_CUDA, d.B, d.Tq, d.Tk, heads, d.D));
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
    if (want_k) memset(dk->data, 0, tensor_bytes(dk));
    if (want_v) memset(dv->data, 0, tensor_bytes(dv));
    if (!want_q && !want_k && !want_v) return;
    const float *qp = tensor_f32(q), *kp = tensor_f32(k), *vp = tensor_f32(v);
    const float *gp = tensor_f32(dout), *op = tensor_f32(out), *lp = tensor_f32(lse);
    float *dqp = want_q ? tensor_f32(dq) : NULL, *dkp = want_k ? tensor_f32(dk) : NULL;
    float *dvp = want_v ? tensor_f32(dv) : NULL;
    const float scale = 1.0f / sqrtf((float)d.D);
    const int64_t tasks = d.B * d.H;
    const size_t per = attn_scratch_per_thread(d.Tk, 2);
    float *ws = ops_workspace(DEVICE_CPU, attn_scratch_bytes(d.Tk, 2));
#pragma omp parallel for schedule(dynamic) if (tasks >= omp_get_max_threads())
    for (int64_t bh = 0; bh < tasks; bh++) {
        int64_t b = bh / d.H, h = bh % d.H;
        float *P = ws + (size_t)omp_get_thread_num() * per, *dS = P + (size_t)ATTN_BQ * (size_t)d.Tk;
        float *Drow = dS + (size_t)ATTN_BQ * (size_t)d.Tk;
        int64_t kvo = b * d.Tk * d.HD + h * d.D; // offset of this head's keys and values
        const float *kb = kp + kvo, *vb = vp + kvo, *lb = lp + bh * d.Tq;
        for (int64_t q0 = 0; q0 < d.Tq; q0 += ATTN_BQ) {
            int64_t bq = d.Tq - q0 < ATTN_BQ ? d.Tq - q0 : ATTN_BQ;
            int64_t kn = causal ? attn_keys(q0 + bq - 1, d.Tk, 1) : d.Tk;
            int64_t qo = (b * d.Tq + q0) * d.HD + h * d.D; // offset of this block's query rows
            const float *qb = qp + qo, *gb = gp + qo, *ob = op + qo;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)kn, (int)d.D, scale, qb, (int)d.HD,
                        kb, (int)d.HD, 0.0f, P, (int)d.Tk);
            for (int64_t r = 0; r < bq; r++) {
                float *p = P + r * d.Tk;
                const float l = lb[q0 + r];
                int64_t n = attn_keys(q0 + r, d.Tk, causal);
#pragma omp simd
                for (int64_t j = 0; j < n; j++) p[j] = attn_exp(p[j] - l);
                for (int64_t j = n; j < kn; j++) p[j] = 0.0f;
                float s = 0.0f;
                for (int64_t c = 0; c < d.D; c++) s += gb[r * d.HD + c] * ob[r * d.HD + c];
                Drow[r] = s;
            }
            if (want_v)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kn, (int)d.D, (int)bq, 1.0f, P, (int)d.Tk,
                            gb, (int)d.HD, 1.0f, dvp + kvo, (int)d.HD);
            if (!want_q && !want_k) continue;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)kn, (int)d.D, 1.0f, gb, (int)d.HD, vb,
                        (int)d.HD, 0.0f, dS, (int)d.Tk);
            for (int64_t r = 0; r < bq; r++) {
                const float *p = P + r * d.Tk;
                const float Dr = Drow[r];
                float *g = dS + r * d.Tk;
#pragma omp simd
                for (int64_t j = 0; j < kn; j++) g[j] = p[j] * (g[j] - Dr);
            }
            if (want_q)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)d.D, (int)kn, scale, dS,
                            (int)d.Tk, kb, (int)d.HD, 0.0f, dqp + qo, (int)d.HD);
            if (want_k)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kn, (int)d.D, (int)bq, scale, dS, (int)d.Tk,
                            qb, (int)d.HD, 1.0f, dkp + kvo, (int)d.HD);
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
    size_t at = (attention_workspace_bytes(dev, B, Tq, Tk, heads, C / heads) + 255) & ~(size_t)255;
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
