// gradcheck_conv2d_nhwc.c: conv2d_nhwc (channels last) on the CPU: finite-difference checks of input, weight and
// bias, and the same problems against conv2d (NCHW) on permuted copies, forward and backward, including the
// gradient contract (din written over whatever it held, dw and db accumulated). The 1x1 stride-1 case runs as a
// linear layer and has its own cases.
#include <math.h>
#include <stdio.h>

#include "../src/ops/ops.h"
#include "gradcheck.h"

typedef struct {
    Tensor x, w, b, y, dx, dw, db, dy; // NHWC: x [B, H, W, IC], w [OC, KH, KW, IC], y [B, OH, OW, OC]
    int stride, pad, bias;
} NhwcCtx;

// A problem's tensors: x ~ U(-1, 1), w, b ~ U(-0.5, 0.5), dy ~ U(-1, 1) from streams stream .. stream + 3.
static NhwcCtx nhwc_ctx_make(int64_t B, int64_t IC, int64_t OC, int64_t H, int64_t W, int64_t K, int stride, int pad,
                             int bias, uint64_t stream) {
    int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
    NhwcCtx c = {.stride = stride, .pad = pad, .bias = bias};
    c.x = GC_TENSOR(B, H, W, IC), c.dx = GC_TENSOR(B, H, W, IC), c.w = GC_TENSOR(OC, K, K, IC);
    c.dw = GC_TENSOR(OC, K, K, IC), c.b = GC_TENSOR(OC), c.db = GC_TENSOR(OC);
    c.y = GC_TENSOR(B, OH, OW, OC), c.dy = GC_TENSOR(B, OH, OW, OC);
    gc_fill_uniform(&c.x, -1, 1, stream);
    gc_fill_uniform(&c.w, -0.5f, 0.5f, stream + 1);
    gc_fill_uniform(&c.b, -0.5f, 0.5f, stream + 2);
    gc_fill_uniform(&c.dy, -1, 1, stream + 3);
    return c;
}

static void nhwc_fwd(void *p) {
    NhwcCtx *c = p;
    conv2d_nhwc_forward(&c->y, &c->x, &c->w, c->bias ? &c->b : NULL, c->stride, c->pad);
}
static void nhwc_bwd(void *p) {
    NhwcCtx *c = p;
    conv2d_nhwc_backward(&c->dx, &c->dw, c->bias ? &c->db : NULL, &c->dy, &c->x, &c->w, c->stride, c->pad);
}

// dst [A, C, H, W] from src [A, H, W, C] (to_nchw) or the reverse
static void permute(float *dst, const float *src, int64_t A, int64_t C, int64_t H, int64_t W, int to_nchw) {
    for (int64_t a = 0; a < A; a++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < H * W; s++) {
                int64_t nchw = (a * C + c) * H * W + s, nhwc = (a * H * W + s) * C + c;
                if (to_nchw) dst[nchw] = src[nhwc];
                else dst[nhwc] = src[nchw];
            }
}

// max |a - ref| / max |ref| over n values (a in NHWC order permuted to ref's NCHW order by the caller)
static int rel_check(const char *name, const char *what, const float *a, const float *ref, int64_t n, double tol) {
    double e = 0.0, r = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - ref[i]));
        r = fmax(r, fabs((double)ref[i]));
    }
    int ok = e <= tol * r;
    printf("%s %-30s %-5s vs conv2d: max|d| %.3e  max|ref| %.3e  rel %.3e\n", ok ? "ok  " : "FAIL", name, what, e, r,
           e / r);
    return !ok;
}

// One problem in both layouts. fp32 sums of K = IC KH KW products in another order (the NHWC columns run tap-major,
// the NCHW ones channel-major): relative differences of a few 2^-24 times sqrt(K), far under 1e-5 at these sizes.
// Adds 4 (5 with a bias) to *checks.
static int nhwc_vs_nchw(const char *name, int64_t B, int64_t IC, int64_t OC, int64_t H, int64_t W, int64_t K,
                        int stride, int pad, int bias, int *checks) {
    int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
    NhwcCtx c = nhwc_ctx_make(B, IC, OC, H, W, K, stride, pad, bias, 21);
    Tensor x = GC_TENSOR(B, IC, H, W), w = GC_TENSOR(OC, IC, K, K), y = GC_TENSOR(B, OC, OH, OW);
    Tensor dy = GC_TENSOR(B, OC, OH, OW), dx = GC_TENSOR(B, IC, H, W), dw = GC_TENSOR(OC, IC, K, K);
    Tensor db = GC_TENSOR(OC), got = GC_TENSOR(B * IC * H * W + OC * IC * K * K + B * OC * OH * OW);
    permute(x.data, c.x.data, B, IC, H, W, 1);
    permute(w.data, c.w.data, OC, IC, K, K, 1);
    permute(dy.data, c.dy.data, B, OC, OH, OW, 1);
    // the gradient contract: din holds garbage before (written), dw and db hold 0.25 (accumulated)
    for (int64_t i = 0; i < tensor_numel(&c.dx); i++) ((float *)c.dx.data)[i] = 7.0f;
    for (int64_t i = 0; i < tensor_numel(&c.dw); i++) ((float *)c.dw.data)[i] = ((float *)dw.data)[i] = 0.25f;
    for (int64_t i = 0; i < OC; i++) ((float *)c.db.data)[i] = ((float *)db.data)[i] = 0.25f;
    nhwc_fwd(&c);
    nhwc_bwd(&c);
    conv2d_forward(&y, &x, &w, bias ? &c.b : NULL, stride, pad);
    conv2d_backward(&dx, &dw, bias ? &db : NULL, &dy, &x, &w, stride, pad);
    float *g = got.data;
    int f = 0;
    permute(g, c.y.data, B, OC, OH, OW, 1);
    f += rel_check(name, "out", g, y.data, B * OC * OH * OW, 1e-5);
    permute(g, c.dx.data, B, IC, H, W, 1);
    f += rel_check(name, "din", g, dx.data, B * IC * H * W, 1e-5);
    permute(g, c.dw.data, OC, IC, K, K, 1);
    f += rel_check(name, "dw", g, dw.data, OC * IC * K * K, 1e-5);
    *checks += 3;
    if (bias) f += rel_check(name, "db", c.db.data, db.data, OC, 1e-5), *checks += 1;
    return f;
}

// Finite-difference check of x, w (and b); adds 1 to *checks.
static int nhwc_gradcheck(const char *name, int64_t B, int64_t IC, int64_t OC, int64_t H, int64_t W, int64_t K,
                          int stride, int pad, int bias, int *checks) {
    NhwcCtx c = nhwc_ctx_make(B, IC, OC, H, W, K, stride, pad, bias, 31);
    GradCheck gck = {.name = name, .ctx = &c, .forward = nhwc_fwd, .backward = nhwc_bwd};
    gck.wrt[0] = &c.x, gck.grad[0] = &c.dx;
    gck.wrt[1] = &c.w, gck.grad[1] = &c.dw, gck.is_param[1] = 1;
    gck.n_wrt = 2;
    if (bias) gck.wrt[2] = &c.b, gck.grad[2] = &c.db, gck.is_param[2] = 1, gck.n_wrt = 3;
    gck.out[0] = &c.y, gck.dout[0] = &c.dy, gck.n_out = 1;
    *checks += 1;
    return gradcheck_run(&gck);
}

int main(void) {
    int f = 0, checks = 0;
    f += nhwc_gradcheck("conv2d_nhwc k3 s1 p1", 2, 3, 5, 7, 6, 3, 1, 1, 1, &checks);
    f += nhwc_gradcheck("conv2d_nhwc k3 s2 p1", 2, 3, 5, 7, 6, 3, 2, 1, 1, &checks);
    f += nhwc_gradcheck("conv2d_nhwc k3 s1 p0 (no bias)", 1, 2, 3, 6, 5, 3, 1, 0, 0, &checks);
    f += nhwc_gradcheck("conv2d_nhwc k1 s1 p0 (linear)", 2, 3, 5, 4, 3, 1, 1, 0, 1, &checks);
    f += nhwc_vs_nchw("k3 s1 p1", 2, 6, 5, 9, 7, 3, 1, 1, 1, &checks);
    f += nhwc_vs_nchw("k3 s2 p1", 3, 5, 7, 11, 10, 3, 2, 1, 1, &checks);
    f += nhwc_vs_nchw("k3 s2 p0 (no bias)", 2, 4, 3, 9, 8, 3, 2, 0, 0, &checks);
    f += nhwc_vs_nchw("k5 s1 p2", 2, 3, 4, 7, 6, 5, 1, 2, 1, &checks);
    f += nhwc_vs_nchw("k1 s1 p0 (linear)", 2, 8, 6, 5, 7, 1, 1, 0, 1, &checks);
    f += nhwc_vs_nchw("k1 s1 p1 (padded 1x1)", 2, 3, 4, 5, 4, 1, 1, 1, 1, &checks);
    // threaded im2col / col2im (more than 65536 column values)
    f += nhwc_vs_nchw("k3 s1 p1 (threaded)", 2, 40, 24, 24, 23, 3, 1, 1, 1, &checks);
    // 350 x 350 pixels of 16 x 9 column values: 2 chunks of at most 2^24 floats
    f += nhwc_vs_nchw("k3 s1 p1 (chunked)", 1, 16, 4, 350, 350, 3, 1, 1, 1, &checks);
    return gc_report(f, checks);
}
