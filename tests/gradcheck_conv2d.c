// gradcheck_conv2d.c: conv2d forward against a direct double-precision convolution, and finite-difference checks
// of conv2d (input, weight, bias) and pad2d for the kernel / stride / pad combinations the models use. The CPU
// conv picks its path by shape (1x1 in place; small images grouped several per GEMM; "same" stride-1 convs copy
// shifted runs; row chunks for very large images): each path has cases here, and grouped batches are compared with
// the same images run one at a time. The 1x1 convolution of a channel concatenation read in place
// (conv1x1_forward_cat) is checked by finite differences and against conv2d on the concatenated copy.
#include <math.h>
#include <stdio.h>

#include "../src/ops/ops.h"
#include "gradcheck.h"

typedef struct {
    Tensor x, w, b, y, dx, dw, db, dy;
    int stride, pad, bias;
} ConvCtx;

// A problem's tensors: x ~ U(-1, 1), w, b ~ U(-0.5, 0.5) from streams stream, stream + 1, stream + 2, and with
// fill_dy dy ~ U(-1, 1) from stream + 3.
static ConvCtx conv_ctx_make(int64_t B, int64_t IC, int64_t OC, int64_t H, int64_t W, int64_t K, int stride, int pad,
                             int bias, uint64_t stream, int fill_dy) {
    int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
    ConvCtx c = {.stride = stride, .pad = pad, .bias = bias};
    c.x = GC_TENSOR(B, IC, H, W), c.dx = GC_TENSOR(B, IC, H, W);
    c.w = GC_TENSOR(OC, IC, K, K), c.dw = GC_TENSOR(OC, IC, K, K);
    c.b = GC_TENSOR(OC), c.db = GC_TENSOR(OC);
    c.y = GC_TENSOR(B, OC, OH, OW), c.dy = GC_TENSOR(B, OC, OH, OW);
    gc_fill_uniform(&c.x, -1, 1, stream);
    gc_fill_uniform(&c.w, -0.5f, 0.5f, stream + 1);
    gc_fill_uniform(&c.b, -0.5f, 0.5f, stream + 2);
    if (fill_dy) gc_fill_uniform(&c.dy, -1, 1, stream + 3);
    return c;
}

static void conv_fwd(void *p) {
    ConvCtx *c = p;
    conv2d_forward(&c->y, &c->x, &c->w, c->bias ? &c->b : NULL, c->stride, c->pad);
}
static void conv_bwd(void *p) {
    ConvCtx *c = p;
    conv2d_backward(&c->dx, &c->dw, c->bias ? &c->db : NULL, &c->dy, &c->x, &c->w, c->stride, c->pad);
}

// max |y - direct| / max |direct| with the direct convolution summed in double; returns 1 on failure.
static int conv_direct_check(const ConvCtx *c, const char *name) {
    int64_t B = c->x.shape[0], IC = c->x.shape[1], H = c->x.shape[2], W = c->x.shape[3];
    int64_t OC = c->w.shape[0], KH = c->w.shape[2], KW = c->w.shape[3], OH = c->y.shape[2], OW = c->y.shape[3];
    const float *x = c->x.data, *w = c->w.data, *b = c->b.data, *y = c->y.data;
    double max_err = 0.0, max_ref = 0.0;
    for (int64_t n = 0; n < B; n++)
        for (int64_t o = 0; o < OC; o++)
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    double s = c->bias ? b[o] : 0.0;
                    for (int64_t i = 0; i < IC; i++)
                        for (int64_t ky = 0; ky < KH; ky++)
                            for (int64_t kx = 0; kx < KW; kx++) {
                                int64_t iy = oy * c->stride - c->pad + ky, ix = ox * c->stride - c->pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                s += (double)x[((n * IC + i) * H + iy) * W + ix] *
                                     w[((o * IC + i) * KH + ky) * KW + kx];
                            }
                    double e = fabs(y[((n * OC + o) * OH + oy) * OW + ox] - s);
                    if (e > max_err) max_err = e;
                    if (fabs(s) > max_ref) max_ref = fabs(s);
                }
    double rel = max_err / max_ref;
    int ok = rel <= 1e-5;
    printf("%s %-28s forward vs direct: max|y-ref| %.3e  max|ref| %.3e  rel %.3e\n", ok ? "ok  " : "FAIL", name,
           max_err, max_ref, rel);
    return !ok;
}

// Forward check plus gradcheck of x, w (and b); adds 2 to *checks. max_elems 0 checks every element.
static int conv_case(const char *name, int64_t B, int64_t IC, int64_t OC, int64_t H, int64_t W, int64_t K,
                     int stride, int pad, int bias, int max_elems, int *checks) {
    ConvCtx c = conv_ctx_make(B, IC, OC, H, W, K, stride, pad, bias, 1, 0);
    conv_fwd(&c);
    int f = conv_direct_check(&c, name);
    GradCheck g = {.name = name, .ctx = &c, .forward = conv_fwd, .backward = conv_bwd, .max_elems = max_elems};
    g.wrt[0] = &c.x, g.grad[0] = &c.dx;
    g.wrt[1] = &c.w, g.grad[1] = &c.dw, g.is_param[1] = 1;
    g.n_wrt = 2;
    if (bias) g.wrt[2] = &c.b, g.grad[2] = &c.db, g.is_param[2] = 1, g.n_wrt = 3;
    g.out[0] = &c.y, g.dout[0] = &c.dy, g.n_out = 1;
    f += gradcheck_run(&g);
    *checks += 2;
    return f;
}

// Prints the relative error max|a - ref| / max|ref|; returns 1 above tol.
static int rel_check(const char *name, const char *what, double max_err, double max_ref, double tol) {
    double rel = max_err / max_ref;
    printf("%s %-28s %s: max|a-ref| %.3e  max|ref| %.3e  rel %.3e\n", rel <= tol ? "ok  " : "FAIL", name, what,
           max_err, max_ref, rel);
    return !(rel <= tol);
}

// An image whose im2col columns exceed the 128 MiB chunk cap, so forward and backward run in several row chunks:
// output, input grad, weight grad and bias grad against direct double sums (B = 1). Adds 4 to *checks.
static int conv_chunked_case(const char *name, int64_t IC, int64_t OC, int64_t H, int64_t W, int stride, int pad,
                             int *checks) {
    int64_t K = 3, OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
    ConvCtx c = conv_ctx_make(1, IC, OC, H, W, K, stride, pad, 1, 11, 1);
    conv_fwd(&c);
    conv_bwd(&c);
    const float *x = c.x.data, *w = c.w.data, *b = c.b.data, *y = c.y.data, *gy = c.dy.data;
    const float *dx = c.dx.data, *dw = c.dw.data, *db = c.db.data;
    double e[4] = {0}, r[4] = {0}; // out, din, dw, db
    for (int64_t o = 0; o < OC; o++)
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                double sum = b[o];
                for (int64_t i = 0; i < IC; i++)
                    for (int64_t ky = 0; ky < K; ky++)
                        for (int64_t kx = 0; kx < K; kx++) {
                            int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                            if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                sum += (double)x[(i * H + iy) * W + ix] * w[((o * IC + i) * K + ky) * K + kx];
                        }
                e[0] = fmax(e[0], fabs(y[(o * OH + oy) * OW + ox] - sum)), r[0] = fmax(r[0], fabs(sum));
            }
    for (int64_t i = 0; i < IC; i++)
        for (int64_t iy = 0; iy < H; iy++)
            for (int64_t ix = 0; ix < W; ix++) {
                double sum = 0.0;
                for (int64_t ky = 0; ky < K; ky++)
                    for (int64_t kx = 0; kx < K; kx++) {
                        int64_t ty = iy + pad - ky, tx = ix + pad - kx;
                        if (ty < 0 || tx < 0 || ty % stride || tx % stride || ty / stride >= OH || tx / stride >= OW)
                            continue;
                        for (int64_t o = 0; o < OC; o++)
                            sum += (double)gy[(o * OH + ty / stride) * OW + tx / stride] *
                                   w[((o * IC + i) * K + ky) * K + kx];
                    }
                e[1] = fmax(e[1], fabs(dx[(i * H + iy) * W + ix] - sum)), r[1] = fmax(r[1], fabs(sum));
            }
    for (int64_t o = 0; o < OC; o++) {
        double bsum = 0.0;
        for (int64_t s = 0; s < OH * OW; s++) bsum += gy[o * OH * OW + s];
        e[3] = fmax(e[3], fabs(db[o] - bsum)), r[3] = fmax(r[3], fabs(bsum));
        for (int64_t i = 0; i < IC; i++)
            for (int64_t ky = 0; ky < K; ky++)
                for (int64_t kx = 0; kx < K; kx++) {
                    double sum = 0.0;
                    for (int64_t oy = 0; oy < OH; oy++) {
                        int64_t iy = oy * stride - pad + ky;
                        if (iy < 0 || iy >= H) continue;
                        for (int64_t ox = 0; ox < OW; ox++) {
                            int64_t ix = ox * stride - pad + kx;
                            if (ix >= 0 && ix < W)
                                sum += (double)gy[(o * OH + oy) * OW + ox] * x[(i * H + iy) * W + ix];
                        }
                    }
                    double a = dw[((o * IC + i) * K + ky) * K + kx];
                    e[2] = fmax(e[2], fabs(a - sum)), r[2] = fmax(r[2], fabs(sum));
                }
    }
    *checks += 4;
    return rel_check(name, "forward vs direct", e[0], r[0], 1e-5) + rel_check(name, "din vs direct", e[1], r[1], 1e-5) +
           rel_check(name, "dw vs direct", e[2], r[2], 1e-5) + rel_check(name, "db vs direct", e[3], r[3], 1e-5);
}

// A batch of B images (grouped several per GEMM when small) against each image alone (one image per GEMM): output,
// input grad, weight grad (summed over the single-image calls) and bias grad. Adds 4 to *checks.
static int conv_group_case(const char *name, int64_t B, int64_t IC, int64_t OC, int64_t H, int64_t W, int64_t K,
                           int stride, int pad, int *checks) {
    int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
    int64_t xn = IC * H * W, yn = OC * OH * OW, wn = OC * IC * K * K;
    ConvCtx c = conv_ctx_make(B, IC, OC, H, W, K, stride, pad, 1, 21, 1);
    conv_fwd(&c);
    conv_bwd(&c);
    Tensor y1 = GC_TENSOR(1, OC, OH, OW), dx1 = GC_TENSOR(1, IC, H, W), dw1 = GC_TENSOR(OC, IC, K, K);
    Tensor db1 = GC_TENSOR(OC), dwsum = GC_TENSOR(OC, IC, K, K), dbsum = GC_TENSOR(OC);
    const float *y = c.y.data, *dx = c.dx.data, *dw = c.dw.data, *db = c.db.data;
    float *ys = y1.data, *dxs = dx1.data, *dws = dw1.data, *dbs = db1.data, *wsum = dwsum.data, *bsum = dbsum.data;
    double e[4] = {0}, r[4] = {0}; // out, din, dw, db
    for (int64_t n = 0; n < B; n++) {
        Tensor x1 = tensor_f32_4d((float *)c.x.data + n * xn, 1, IC, H, W);
        Tensor dy1 = tensor_f32_4d((float *)c.dy.data + n * yn, 1, OC, OH, OW);
        for (int64_t i = 0; i < wn; i++) dws[i] = 0.0f;
        for (int64_t i = 0; i < OC; i++) dbs[i] = 0.0f;
        conv2d_forward(&y1, &x1, &c.w, &c.b, stride, pad);
        conv2d_backward(&dx1, &dw1, &db1, &dy1, &x1, &c.w, stride, pad);
        for (int64_t i = 0; i < yn; i++)
            e[0] = fmax(e[0], fabs(y[n * yn + i] - ys[i])), r[0] = fmax(r[0], fabs(ys[i]));
        for (int64_t i = 0; i < xn; i++)
            e[1] = fmax(e[1], fabs(dx[n * xn + i] - dxs[i])), r[1] = fmax(r[1], fabs(dxs[i]));
        for (int64_t i = 0; i < wn; i++) wsum[i] += dws[i];
        for (int64_t i = 0; i < OC; i++) bsum[i] += dbs[i];
    }
    for (int64_t i = 0; i < wn; i++) e[2] = fmax(e[2], fabs(dw[i] - wsum[i])), r[2] = fmax(r[2], fabs(wsum[i]));
    for (int64_t i = 0; i < OC; i++) e[3] = fmax(e[3], fabs(db[i] - bsum[i])), r[3] = fmax(r[3], fabs(bsum[i]));
    *checks += 4;
    // the same products summed in another grouping: float rounding only (rel ~1e-7 per sum of a few hundred terms)
    return rel_check(name, "forward vs one by one", e[0], r[0], 1e-6) +
           rel_check(name, "din vs one by one", e[1], r[1], 1e-6) +
           rel_check(name, "dw vs one by one", e[2], r[2], 1e-5) + rel_check(name, "db vs one by one", e[3], r[3], 1e-5);
}

typedef struct {
    Tensor x, y, dx, dy;
    int top, bottom, left, right;
} PadCtx;

static void pad_fwd(void *p) {
    PadCtx *c = p;
    pad2d_forward(&c->y, &c->x, c->top, c->bottom, c->left, c->right);
}
static void pad_bwd(void *p) {
    PadCtx *c = p;
    pad2d_backward(&c->dx, &c->dy, c->top, c->bottom, c->left, c->right);
}

// Forward placement check plus gradcheck of x; adds 2 to *checks.
static int pad_case(const char *name, int top, int bottom, int left, int right, int *checks) {
    int64_t B = 2, C = 3, H = 5, W = 4, OH = H + top + bottom, OW = W + left + right;
    PadCtx c = {.top = top, .bottom = bottom, .left = left, .right = right};
    c.x = GC_TENSOR(B, C, H, W), c.dx = GC_TENSOR(B, C, H, W);
    c.y = GC_TENSOR(B, C, OH, OW), c.dy = GC_TENSOR(B, C, OH, OW);
    gc_fill_uniform(&c.x, -1, 1, 4);
    gc_fill_uniform(&c.y, 5, 6, 5); // stale values the forward must overwrite
    pad_fwd(&c);
    const float *x = c.x.data, *y = c.y.data;
    int bad = 0;
    for (int64_t bc = 0; bc < B * C; bc++)
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                int64_t iy = oy - top, ix = ox - left;
                float want = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[(bc * H + iy) * W + ix] : 0.0f;
                bad += y[(bc * OH + oy) * OW + ox] != want;
            }
    printf("%s %-28s forward: %d misplaced values\n", bad ? "FAIL" : "ok  ", name, bad);
    GradCheck g = {.name = name, .ctx = &c, .forward = pad_fwd, .backward = pad_bwd};
    g.wrt[0] = &c.x, g.grad[0] = &c.dx, g.n_wrt = 1;
    g.out[0] = &c.y, g.dout[0] = &c.dy, g.n_out = 1;
    *checks += 2;
    return (bad != 0) + gradcheck_run(&g);
}

// conv1x1_*_cat on [a | b]
typedef struct {
    Tensor a, b, da, db, w, dw, bias, dbias, y, dy;
} CatCtx;

static void cat_fwd(void *p) {
    CatCtx *c = p;
    conv1x1_forward_cat(&c->y, &c->a, &c->b, &c->w, &c->bias);
}
static void cat_bwd(void *p) {
    CatCtx *c = p;
    conv1x1_backward_cat(&c->da, &c->db, &c->dw, &c->dbias, &c->dy, &c->a, &c->b, &c->w);
}

static double max_abs_diff(const Tensor *x, const float *ref, int64_t n, double *max_ref) {
    double e = 0.0;
    *max_ref = 0.0;
    for (int64_t i = 0; i < n; i++)
        e = fmax(e, fabs(tensor_f32(x)[i] - ref[i])), *max_ref = fmax(*max_ref, fabs(ref[i]));
    return e;
}

// Finite differences of a, b, w and the bias, then every output and gradient against conv2d on the concatenated
// copy: the same products summed in another order (two GEMMs of Ca and Cb terms, not one of Ca + Cb), so within a
// few fp32 roundings (tolerance 1e-6 relative). Adds 2 to *checks.
static int cat_case(const char *name, int64_t B, int64_t Ca, int64_t Cb, int64_t OC, int64_t H, int64_t W,
                    int *checks) {
    int64_t IC = Ca + Cb;
    CatCtx c;
    c.a = GC_TENSOR(B, Ca, H, W), c.b = GC_TENSOR(B, Cb, H, W), c.da = GC_TENSOR(B, Ca, H, W);
    c.db = GC_TENSOR(B, Cb, H, W), c.w = GC_TENSOR(OC, IC, 1, 1), c.dw = GC_TENSOR(OC, IC, 1, 1);
    c.bias = GC_TENSOR(OC), c.dbias = GC_TENSOR(OC), c.y = GC_TENSOR(B, OC, H, W), c.dy = GC_TENSOR(B, OC, H, W);
    gc_fill_uniform(&c.a, -1, 1, 21);
    gc_fill_uniform(&c.b, -1, 1, 22);
    gc_fill_uniform(&c.w, -0.5f, 0.5f, 23);
    gc_fill_uniform(&c.bias, -0.5f, 0.5f, 24);
    GradCheck g = {.name = name, .ctx = &c, .forward = cat_fwd, .backward = cat_bwd};
    g.wrt[0] = &c.a, g.grad[0] = &c.da;
    g.wrt[1] = &c.b, g.grad[1] = &c.db;
    g.wrt[2] = &c.w, g.grad[2] = &c.dw, g.is_param[2] = 1;
    g.wrt[3] = &c.bias, g.grad[3] = &c.dbias, g.is_param[3] = 1;
    g.n_wrt = 4;
    g.out[0] = &c.y, g.dout[0] = &c.dy, g.n_out = 1;
    int f = gradcheck_run(&g);
    // against conv2d on [a | b] (gradcheck left dy filled)
    Tensor x = GC_TENSOR(B, IC, H, W), y = GC_TENSOR(B, OC, H, W), dx = GC_TENSOR(B, IC, H, W);
    Tensor dw = GC_TENSOR(OC, IC, 1, 1), db = GC_TENSOR(OC), dab = GC_TENSOR(B, IC, H, W);
    concat_channels_forward(&x, &c.a, &c.b);
    conv2d_forward(&y, &x, &c.w, &c.bias, 1, 0);
    conv2d_backward(&dx, &dw, &db, &c.dy, &x, &c.w, 1, 0);
    tensor_fill(&c.dw, 0.0f);
    tensor_fill(&c.dbias, 0.0f);
    cat_fwd(&c);
    cat_bwd(&c);
    concat_channels_forward(&dab, &c.da, &c.db);
    const Tensor *got[4] = {&c.y, &dab, &c.dw, &c.dbias};
    const Tensor *ref[4] = {&y, &dx, &dw, &db};
    const char *what[4] = {"out vs conv2d on the copy", "d[a|b] vs conv2d", "dw vs conv2d", "dbias vs conv2d"};
    for (int i = 0; i < 4; i++) {
        double m, e = max_abs_diff(got[i], tensor_f32(ref[i]), tensor_numel(ref[i]), &m);
        f += rel_check(name, what[i], e, m, 1e-6);
    }
    Tensor *all[] = {&c.a, &c.b, &c.da, &c.db, &c.w, &c.dw, &c.bias, &c.dbias, &c.y, &c.dy,
                     &x,   &y,   &dx,   &dw,   &db,  &dab};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) gc_free(all[i]->data);
    *checks += 2;
    return f;
}

int main(void) {
    int f = 0, checks = 0;
    f += cat_case("conv1x1_cat [2,3|5,4x3]->4", 2, 3, 5, 4, 4, 3, &checks);
    f += cat_case("conv1x1_cat [3,16|8,9x7]->12", 3, 16, 8, 12, 9, 7, &checks);
    f += conv_case("conv2d k3 s1 p1", 2, 3, 5, 7, 6, 3, 1, 1, 1, 0, &checks);
    f += conv_case("conv2d k3 s2 p1", 2, 3, 5, 7, 6, 3, 2, 1, 1, 0, &checks);
    f += conv_case("conv2d k1 s1 p0", 2, 3, 5, 7, 6, 1, 1, 0, 1, 0, &checks);
    f += conv_case("conv2d k3 s2 p0", 2, 3, 5, 7, 6, 3, 2, 0, 1, 0, &checks);
    f += conv_case("conv2d k1 s1 p0 (no bias)", 2, 4, 3, 5, 5, 1, 1, 0, 0, 0, &checks);
    f += conv_case("conv2d k3 s1 p0 (no bias)", 1, 2, 3, 6, 5, 3, 1, 0, 0, 0, &checks);
    // large enough for the threaded im2col / col2im / bias loops; a random subset of elements is checked
    f += conv_case("conv2d k3 s1 p1 (threaded)", 2, 16, 8, 20, 19, 3, 1, 1, 1, 512, &checks);
    f += conv_case("conv2d k3 s2 p1 (threaded)", 2, 16, 8, 21, 20, 3, 2, 1, 1, 512, &checks);
    f += conv_case("conv2d k1 s1 p0 (threaded)", 2, 16, 8, 64, 33, 1, 1, 0, 1, 512, &checks);
    // "same" stride-1 convs (shifted runs) at their edges: wide wrap (5x5), a one-pixel image, a 1-wide image whose
    // outer taps read only padding; stride-1 convs that are not "same" (grown output, padded 1x1)
    f += conv_case("conv2d k5 s1 p2 (same)", 2, 3, 4, 7, 6, 5, 1, 2, 1, 0, &checks);
    f += conv_case("conv2d k3 s1 p1 (1x1 image)", 3, 4, 5, 1, 1, 3, 1, 1, 1, 0, &checks);
    f += conv_case("conv2d k5 s1 p2 (1-wide image)", 2, 2, 3, 3, 1, 5, 1, 2, 1, 0, &checks);
    f += conv_case("conv2d k3 s1 p2 (grown)", 2, 3, 4, 5, 6, 3, 1, 2, 1, 0, &checks);
    f += conv_case("conv2d k1 s1 p1 (padded 1x1)", 2, 3, 4, 5, 4, 1, 1, 1, 1, 0, &checks);
    // small images grouped several per GEMM: 16x16 outputs are 4 images per GEMM, so 5 images leave a group of one;
    // the tiny model's 2x2 and 8x8 layers and a stride-2 layer of 8x9 outputs
    f += conv_case("conv2d k3 s1 p1 (grouped)", 5, 3, 4, 16, 16, 3, 1, 1, 1, 512, &checks);
    f += conv_case("conv2d k3 s2 p1 (grouped)", 5, 3, 4, 17, 15, 3, 2, 1, 1, 512, &checks);
    f += conv_group_case("conv2d k3 s1 p1 (groups of 4)", 5, 3, 4, 16, 16, 3, 1, 1, &checks);
    f += conv_group_case("conv2d k3 s1 p1 (2x2, 48 ch)", 2, 48, 48, 2, 2, 3, 1, 1, &checks);
    f += conv_group_case("conv2d k3 s1 p1 (8x8, 32 ch)", 8, 32, 32, 8, 8, 3, 1, 1, &checks);
    f += conv_group_case("conv2d k3 s2 p1 (grouped)", 5, 3, 4, 17, 15, 3, 2, 1, &checks);
    f += conv_group_case("conv2d k1 s1 p0 (in place)", 3, 8, 6, 5, 7, 1, 1, 0, &checks);
    // 1400 x 1400: the columns (2 x 9 x 1400^2 and 8 x 9 x 700^2 floats) need two row chunks
    f += conv_chunked_case("conv2d k3 s1 p1 (chunked)", 2, 2, 1400, 1400, 1, 1, &checks);
    f += conv_chunked_case("conv2d k3 s2 p1 (chunked)", 8, 2, 1400, 1399, 2, 1, &checks);
    f += pad_case("pad2d (0,1,0,1)", 0, 1, 0, 1, &checks);
    f += pad_case("pad2d (2,1,0,3)", 2, 1, 0, 3, &checks);
    return gc_report(f, checks);
}
