// gradcheck_attention.c: finite-difference checks of attention_backward (self, cross, causal, several query blocks,
// head dimensions and key counts off the CPU kernels' vector and register blocks) and mha_backward (diffusers self
// and cross attention, CLIP causal attention), and a check of attention_forward against a naive double-precision
// softmax(q k^T / sqrt(D)) v.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../src/ops/ops.h"
#include "gradcheck.h"

// ---------------------------------------------------------------------------------------------------------------
// attention core: q [B, Tq, H*D], k, v [B, Tk, H*D] -> out [B, Tq, H*D], lse [B, H, Tq]

typedef struct {
    Tensor q, k, v, out, lse, dq, dk, dv, dout;
    int heads, causal;
} AttnCtx;

static AttnCtx attn_make(int64_t B, int64_t H, int64_t D, int64_t Tq, int64_t Tk, int causal, float qrange,
                         uint64_t stream) {
    AttnCtx c = {.heads = (int)H, .causal = causal};
    c.q = GC_TENSOR(B, Tq, H * D), c.dq = GC_TENSOR(B, Tq, H * D);
    c.k = GC_TENSOR(B, Tk, H * D), c.dk = GC_TENSOR(B, Tk, H * D);
    c.v = GC_TENSOR(B, Tk, H * D), c.dv = GC_TENSOR(B, Tk, H * D);
    c.out = GC_TENSOR(B, Tq, H * D), c.dout = GC_TENSOR(B, Tq, H * D);
    c.lse = GC_TENSOR(B, H, Tq);
    gc_fill_uniform(&c.q, -qrange, qrange, stream);
    gc_fill_uniform(&c.k, -1.0f, 1.0f, stream + 1);
    gc_fill_uniform(&c.v, -1.0f, 1.0f, stream + 2);
    return c;
}

static void attn_fwd(void *p) {
    AttnCtx *c = p;
    attention_forward(&c->out, &c->lse, &c->q, &c->k, &c->v, c->heads, c->causal);
}
static void attn_bwd(void *p) {
    AttnCtx *c = p;
    attention_backward(&c->dq, &c->dk, &c->dv, &c->dout, &c->out, &c->lse, &c->q, &c->k, &c->v, c->heads, c->causal);
}

static int check_attention(const char *name, int64_t B, int64_t H, int64_t D, int64_t Tq, int64_t Tk, int causal,
                           int *checks) {
    AttnCtx c = attn_make(B, H, D, Tq, Tk, causal, 1.5f, 10);
    GradCheck g = {.name = name, .ctx = &c, .forward = attn_fwd, .backward = attn_bwd};
    g.wrt[0] = &c.q, g.grad[0] = &c.dq;
    g.wrt[1] = &c.k, g.grad[1] = &c.dk;
    g.wrt[2] = &c.v, g.grad[2] = &c.dv;
    g.n_wrt = 3;
    g.out[0] = &c.out, g.dout[0] = &c.dout, g.n_out = 1;
    *checks += g.n_wrt;
    return gradcheck_run(&g);
}

// Forward against an explicit [Tq, Tk] softmax in double; errors relative to the largest reference value.
static int check_forward(const char *name, int64_t B, int64_t H, int64_t D, int64_t Tq, int64_t Tk, int causal,
                         float qrange, int *checks) {
    AttnCtx c = attn_make(B, H, D, Tq, Tk, causal, qrange, 20);
    attn_fwd(&c);
    const float *q = c.q.data, *k = c.k.data, *v = c.v.data, *out = c.out.data, *lse = c.lse.data;
    int64_t HD = H * D;
    double *p = malloc(sizeof(double) * (size_t)Tk);
    double err_o = 0, max_o = 0, err_l = 0, max_l = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Tq; i++) {
                int64_t n = causal && i + 1 < Tk ? i + 1 : Tk;
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < n; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++)
                        s += (double)q[(b * Tq + i) * HD + h * D + d] * k[(b * Tk + j) * HD + h * D + d];
                    p[j] = s / sqrt((double)D);
                    m = fmax(m, p[j]);
                }
                for (int64_t j = 0; j < n; j++) {
                    p[j] = exp(p[j] - m);
                    sum += p[j];
                }
                for (int64_t d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < n; j++) o += p[j] / sum * v[(b * Tk + j) * HD + h * D + d];
                    err_o = fmax(err_o, fabs(out[(b * Tq + i) * HD + h * D + d] - o));
                    max_o = fmax(max_o, fabs(o));
                }
                double l = m + log(sum);
                err_l = fmax(err_l, fabs(lse[(b * H + h) * Tq + i] - l));
                max_l = fmax(max_l, fabs(l));
            }
    gc_free(p);
    double rel_o = err_o / max_o, rel_l = err_l / max_l;
    int ok = rel_o <= 1e-5 && rel_l <= 1e-5;
    printf("%s %-28s forward vs double: out rel err %.2e, lse rel err %.2e (tol 1e-5)\n", ok ? "ok  " : "FAIL", name,
           rel_o, rel_l);
    *checks += 1;
    return !ok;
}

// ---------------------------------------------------------------------------------------------------------------
// multi-head attention: x [B, Tq, C], ctx [B, Tk, Cctx] or none, out [B, Tq, Cout]

typedef struct {
    Tensor x, ctx, dx, dctx, out, dout;
    MHAParams p, g;
    MHACache cache;
    int heads, causal, cross;
} MhaCtx;

static void mha_fwd(void *v) {
    MhaCtx *c = v;
    mha_forward(&c->out, &c->cache, &c->x, c->cross ? &c->ctx : NULL, &c->p, c->heads, c->causal);
}
static void mha_bwd(void *v) {
    MhaCtx *c = v;
    mha_backward(&c->dx, c->cross ? &c->dctx : NULL, &c->g, &c->dout, &c->cache, &c->x, c->cross ? &c->ctx : NULL,
                 &c->p, c->heads, c->causal);
}

// A parameter and its gradient, registered with the check; absent (data NULL) when !present.
static void param(GradCheck *g, Tensor *w, Tensor *dw, int present, int64_t d0, int64_t d1, uint64_t stream) {
    if (!present) return;
    *w = d1 ? GC_TENSOR(d0, d1) : GC_TENSOR(d0);
    *dw = d1 ? GC_TENSOR(d0, d1) : GC_TENSOR(d0);
    gc_fill_uniform(w, -0.5f, 0.5f, stream);
    g->wrt[g->n_wrt] = w, g->grad[g->n_wrt] = dw, g->is_param[g->n_wrt] = 1, g->n_wrt++;
}

static int check_mha(const char *name, int64_t B, int64_t Tq, int64_t Tk, int64_t heads, int64_t D, int64_t Cctx,
                     int64_t Cout, int cross, int qkv_bias, int causal, int *checks) {
    int64_t C = heads * D, Ckv = cross ? Cctx : C;
    if (!cross) Tk = Tq;
    MhaCtx c = {.heads = (int)heads, .causal = causal, .cross = cross};
    c.x = GC_TENSOR(B, Tq, C), c.dx = GC_TENSOR(B, Tq, C);
    c.out = GC_TENSOR(B, Tq, Cout), c.dout = GC_TENSOR(B, Tq, Cout);
    c.cache.q = GC_TENSOR(B, Tq, C), c.cache.attn = GC_TENSOR(B, Tq, C);
    c.cache.k = GC_TENSOR(B, Tk, C), c.cache.v = GC_TENSOR(B, Tk, C);
    c.cache.lse = GC_TENSOR(B, heads, Tq);
    gc_fill_uniform(&c.x, -1.0f, 1.0f, 30);
    GradCheck g = {.name = name, .ctx = &c, .forward = mha_fwd, .backward = mha_bwd};
    g.wrt[0] = &c.x, g.grad[0] = &c.dx, g.n_wrt = 1;
    if (cross) {
        c.ctx = GC_TENSOR(B, Tk, Cctx), c.dctx = GC_TENSOR(B, Tk, Cctx);
        gc_fill_uniform(&c.ctx, -1.0f, 1.0f, 31);
        g.wrt[1] = &c.ctx, g.grad[1] = &c.dctx, g.n_wrt = 2;
    }
    param(&g, &c.p.wq, &c.g.wq, 1, C, C, 40);
    param(&g, &c.p.wk, &c.g.wk, 1, C, Ckv, 41);
    param(&g, &c.p.wv, &c.g.wv, 1, C, Ckv, 42);
    param(&g, &c.p.wo, &c.g.wo, 1, Cout, C, 43);
    param(&g, &c.p.bq, &c.g.bq, qkv_bias, C, 0, 44);
    param(&g, &c.p.bk, &c.g.bk, qkv_bias, C, 0, 45);
    param(&g, &c.p.bv, &c.g.bv, qkv_bias, C, 0, 46);
    param(&g, &c.p.bo, &c.g.bo, 1, Cout, 0, 47);
    g.out[0] = &c.out, g.dout[0] = &c.dout, g.n_out = 1;
    *checks += g.n_wrt;
    return gradcheck_run(&g);
}

// Any float input is safe (no undefined behaviour in the exponent: the sanitizer build reports it otherwise): a NaN
// in one query row makes that row NaN, a huge finite query keeps its row finite, and every other row is the clean
// forward's, bit for bit.
static int check_nonfinite(int *checks) {
    const int64_t B = 2, H = 2, D = 4, Tq = 5, Tk = 6;
    AttnCtx clean = attn_make(B, H, D, Tq, Tk, 0, 1.5f, 90), bad = attn_make(B, H, D, Tq, Tk, 0, 1.5f, 90);
    attn_fwd(&clean);
    float *q = bad.q.data;
    int64_t nan_row = 0, inf_row = (1 * Tq + 2) * H + 1, big_row = (1 * Tq + 3) * H + 0; // (b, t, head) rows
    q[nan_row * D] = NAN;
    q[inf_row * D + 1] = INFINITY;
    q[big_row * D + 2] = 1e30f;
    attn_fwd(&bad);
    const float *a = clean.out.data, *o = bad.out.data;
    int ok = 1;
    for (int64_t r = 0; r < B * Tq * H; r++)
        for (int64_t d = 0; d < D; d++) {
            float x = o[r * D + d];
            if (r == nan_row) ok &= isnan(x);
            else if (r == big_row) ok &= isfinite(x);
            else if (r != inf_row) ok &= x == a[r * D + d];
        }
    (*checks)++;
    printf("%s attention with NaN, infinite and 1e30 queries: only their rows change, the NaN row is NaN\n",
           ok ? "ok  " : "FAIL");
    return !ok;
}

int main(void) {
    int f = 0, n = 0;
    f += check_nonfinite(&n);
    // forward against the explicit softmax: one and several query blocks, causal, and scores in the hundreds
    f += check_forward("attention(cross)", 2, 3, 5, 7, 9, 0, 1.5f, &n);
    f += check_forward("attention(causal)", 2, 3, 5, 7, 7, 1, 1.5f, &n);
    f += check_forward("attention(causal, 3 blocks)", 1, 2, 40, 150, 150, 1, 1.5f, &n);
    f += check_forward("attention(cross, 3 blocks)", 2, 1, 64, 130, 77, 0, 1.5f, &n);
    f += check_forward("attention(causal, Tq < Tk)", 1, 2, 8, 70, 100, 1, 1.5f, &n);
    f += check_forward("attention(peaked scores)", 1, 2, 16, 65, 33, 0, 60.0f, &n);
    // the CPU kernels' edges: 16-key chunks with a partial last one, row groups of 8 and 4 with leftover rows, column
    // groups with leftover columns (D 8, 5, 13), and the GEMM path just above D 16
    f += check_forward("attention(D 8, Tk 77)", 2, 2, 8, 131, 77, 0, 1.5f, &n);
    f += check_forward("attention(D 5, causal, Tk 37)", 1, 3, 5, 70, 37, 1, 1.5f, &n);
    f += check_forward("attention(D 13, Tk 16)", 1, 2, 13, 67, 16, 0, 1.5f, &n);
    f += check_forward("attention(D 17, Tk 50)", 1, 2, 17, 67, 50, 0, 1.5f, &n);
    // gradients of the core wrt q, k, v
    f += check_attention("attention(self)", 2, 3, 5, 7, 7, 0, &n);
    f += check_attention("attention(cross)", 2, 3, 5, 7, 9, 0, &n);
    f += check_attention("attention(causal)", 2, 3, 5, 7, 7, 1, &n);
    f += check_attention("attention(causal, 2 blocks)", 1, 2, 3, 67, 67, 1, &n);
    f += check_attention("attention(causal, Tq > Tk)", 1, 2, 3, 67, 9, 1, &n);
    f += check_attention("attention(cross, 2 blocks)", 1, 2, 3, 70, 5, 0, &n);
    f += check_attention("attention(D 8, 2 blocks)", 1, 2, 8, 70, 21, 0, &n);
    f += check_attention("attention(D 5, causal, 2 blocks)", 1, 2, 5, 69, 35, 1, &n);
    f += check_attention("attention(D 13, cross)", 2, 1, 13, 14, 19, 0, &n);
    f += check_attention("attention(D 17, cross)", 1, 2, 17, 13, 17, 0, &n);
    // the layer wrt inputs, weights and biases: diffusers self (all biases here) and cross (out bias only),
    // CLIP causal self-attention with biases
    f += check_mha("mha(self, biases)", 2, 7, 0, 3, 5, 0, 13, 0, 1, 0, &n);
    f += check_mha("mha(cross, no qkv bias)", 2, 7, 9, 3, 5, 11, 15, 1, 0, 0, &n);
    f += check_mha("mha(causal, biases)", 2, 7, 0, 3, 5, 0, 15, 0, 1, 1, &n);
    return gc_report(f, n);
}
