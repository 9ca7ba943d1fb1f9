// conv2d_nhwc.c: 2-D convolution channels last (NHWC), forward and backward: the convolution of conv2d.c with
// in [B, H, W, IC], w [OC, KH, KW, IC] and out [B, OH, OW, OC]. cuDNN's bf16 tensor-core convolutions are fastest in
// this layout (NCHW problems can be transposed inside cuDNN); `drtune bench gpu` times the two side by side. On the
// GPU it is cuDNN with NHWC descriptors (cuda_conv.cu); a 1x1 stride-1 convolution is a linear layer over the
// B H W pixel rows on either device (on the GPU its forward stays on cuDNN when the bias is stored in another
// dtype than the activations, which the linear op does not take). The CPU reference gathers each output pixel's
// KH KW IC inputs (one contiguous run of IC per tap) into a row of columns and multiplies by the filters as
// [OC, KH KW IC]; it exists to check the GPU against and is not tuned.
#include "ops_internal.h"

// Validates in [B, H, W, IC] and w [OC, KH, KW, IC] and derives the output size.
static ConvGeom nhwc_geom(const Tensor *in, const Tensor *w, int stride, int pad, const char *op) {
    char a[96], b[96];
    CHECK(in->ndim == 4 && w->ndim == 4 && w->shape[3] == in->shape[3], "",
          "%s: input %s and weight %s do not fit (want [B, H, W, IC] and [OC, KH, KW, IC])", op,
          tensor_shape_str(in, a, sizeof a), tensor_shape_str(w, b, sizeof b));
    ConvGeom g = {.B = in->shape[0], .IC = in->shape[3], .OC = w->shape[0], .H = in->shape[1], .W = in->shape[2],
                  .KH = w->shape[1], .KW = w->shape[2], .stride = stride, .pad = pad};
    conv_geom_finish(&g, in, w, op);
    return g;
}

static int nhwc_pointwise(const ConvGeom *g) { return g->KH == 1 && g->KW == 1 && g->stride == 1 && g->pad == 0; }

// The 1x1 stride-1 case as the linear layer it is: rows [B H W, IC] -> [B H W, OC], w viewed [OC, IC].
static void nhwc_as_linear(const ConvGeom *g, const Tensor *in, const Tensor *w, const Tensor *out, Tensor *rin,
                           Tensor *rw, Tensor *rout) {
    int64_t N = g->B * g->H * g->W;
    *rin = tensor_reshape(in, 2, (int64_t[]){N, g->IC});
    *rw = tensor_reshape(w, 2, (int64_t[]){g->OC, g->IC});
    *rout = tensor_reshape(out, 2, (int64_t[]){N, g->OC});
}

static Conv2dCudaShape nhwc_cuda_shape(const Tensor *in, const ConvGeom *g) {
    return (Conv2dCudaShape){.dt = ops_dt(in), .B = (int)g->B, .IC = (int)g->IC, .H = (int)g->H, .W = (int)g->W,
                             .OC = (int)g->OC, .KH = (int)g->KH, .KW = (int)g->KW, .stride = (int)g->stride,
                             .pad = (int)g->pad, .nhwc = 1};
}

// CPU columns: output pixels per chunk so that a chunk's columns [pixels, KH KW IC] stay under 2^24 floats
#define NHWC_COLS_MAX ((int64_t)1 << 24)
static int64_t nhwc_chunk(const ConvGeom *g) {
    int64_t K = g->KH * g->KW * g->IC, P = g->B * g->OH * g->OW, n = NHWC_COLS_MAX / K;
    return n < 1 ? 1 : n > P ? P : n;
}

size_t conv2d_nhwc_workspace_bytes(const Tensor *in, const Tensor *w, int stride, int pad) {
    ConvGeom g = nhwc_geom(in, w, stride, pad, "conv2d_nhwc_workspace_bytes");
    size_t lin = nhwc_pointwise(&g) ? linear_workspace_bytes(in->device, g.B * g.H * g.W, g.OC) : 0;
    if (in->device == DEVICE_CUDA) { // cuDNN's plan too: a 1x1 forward with a bias of another dtype runs there
        Conv2dCudaShape s = nhwc_cuda_shape(in, &g);
        size_t need = conv2d_plan_cuda(&s, NULL);
        return need > lin ? need : lin;
    }
    if (nhwc_pointwise(&g)) return lin;
    int64_t K = g.KH * g.KW * g.IC; // the backward's need (columns and the weight-gradient sum) covers the forward's
    return sizeof(float) * (size_t)(nhwc_chunk(&g) * K + g.OC * K);
}

// cols [p1 - p0, KH KW IC]: for output pixels p0 .. p1 (of all B OH OW), each tap's IC inputs (zero in the padding)
static void nhwc_im2col(float *cols, const float *x, const ConvGeom *g, int64_t p0, int64_t p1) {
    int64_t K = g->KH * g->KW * g->IC, S = g->OH * g->OW;
#pragma omp parallel for if ((p1 - p0) * K > 65536)
    for (int64_t p = p0; p < p1; p++) {
        int64_t n = p / S, oy = p % S / g->OW, ox = p % g->OW;
        float *row = cols + (p - p0) * K;
        for (int64_t ky = 0; ky < g->KH; ky++)
            for (int64_t kx = 0; kx < g->KW; kx++, row += g->IC) {
                int64_t iy = oy * g->stride - g->pad + ky, ix = ox * g->stride - g->pad + kx;
                if (iy < 0 || iy >= g->H || ix < 0 || ix >= g->W) memset(row, 0, sizeof(float) * (size_t)g->IC);
                else memcpy(row, x + ((n * g->H + iy) * g->W + ix) * g->IC, sizeof(float) * (size_t)g->IC);
            }
    }
}

// dx += the column gradient cols [p1 - p0, KH KW IC] scattered back to the inputs it read. Threads split the
// channels (every tap of a channel block writes only that block), so nothing races.
static void nhwc_col2im_add(float *dx, const float *cols, const ConvGeom *g, int64_t p0, int64_t p1) {
    int64_t K = g->KH * g->KW * g->IC, S = g->OH * g->OW, blocks = (g->IC + 15) / 16;
#pragma omp parallel for if ((p1 - p0) * K > 65536)
    for (int64_t cb = 0; cb < blocks; cb++) {
        int64_t c0 = cb * 16, c1 = c0 + 16 < g->IC ? c0 + 16 : g->IC;
        for (int64_t p = p0; p < p1; p++) {
            int64_t n = p / S, oy = p % S / g->OW, ox = p % g->OW;
            const float *row = cols + (p - p0) * K;
            for (int64_t ky = 0; ky < g->KH; ky++)
                for (int64_t kx = 0; kx < g->KW; kx++, row += g->IC) {
                    int64_t iy = oy * g->stride - g->pad + ky, ix = ox * g->stride - g->pad + kx;
                    if (iy < 0 || iy >= g->H || ix < 0 || ix >= g->W) continue;
                    float *d = dx + ((n * g->H + iy) * g->W + ix) * g->IC;
                    for (int64_t c = c0; c < c1; c++) d[c] += row[c];
                }
        }
    }
}

// out [B, OH, OW, OC] = in [B, H, W, IC] * w [OC, KH, KW, IC] + b [OC] (+ res, out's shape, not out itself)
static void nhwc_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, const Tensor *res, int stride,
                         int pad, const char *op) {
    ConvGeom g = nhwc_geom(in, w, stride, pad, op);
    tensor_expect_shape(out, "conv2d_nhwc output", g.B, g.OH, g.OW, g.OC);
    if (ops_want(b)) tensor_expect_shape(b, "conv2d_nhwc bias", g.OC);
    if (ops_want(res)) {
        ops_expect_same_numel(out, res, op);
        CHECK(res->data != out->data, "", "%s: the residual must not be the output", op);
    }
    if (nhwc_pointwise(&g) && (!ops_want(b) || b->dtype == in->dtype)) { // the linear op takes one storage dtype
        Tensor ri, rw, ro, rr;
        nhwc_as_linear(&g, in, w, out, &ri, &rw, &ro);
        if (ops_want(res)) rr = tensor_reshape(res, 2, ro.shape);
        linear_forward_residual(&ro, &ri, &rw, b, ops_want(res) ? &rr : NULL);
        return;
    }
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, op);
        OPS_EXPECT_CUDA(in, op);
        OPS_EXPECT_CUDA(w, op);
        OPS_EXPECT_CUDA(b, op);
        OPS_EXPECT_CUDA(res, op);
        ops_expect_same_dtype(w, in, op);
        ops_expect_same_dtype(out, in, op);
        ops_expect_same_dtype(res, out, op);
        Conv2dCudaShape s = nhwc_cuda_shape(in, &g);
        size_t ws = conv2d_plan_cuda(&s, NULL);
        conv2d_forward_cuda(out->data, in->data, w->data, ops_want(b) ? b->data : NULL, ops_want(b) ? ops_dt(b) : 0,
                            ops_want(res) ? res->data : NULL, &s, ops_workspace(DEVICE_CUDA, ws), ws);
        return;
    }
    OPS_EXPECT_CPU(out, op);
    OPS_EXPECT_CPU(in, op);
    OPS_EXPECT_CPU(w, op);
    OPS_EXPECT_CPU(b, op);
    OPS_EXPECT_CPU(res, op);
    float *o = tensor_f32(out);
    const float *x = tensor_f32(in), *wt = tensor_f32(w), *bias = ops_want(b) ? tensor_f32(b) : NULL;
    int64_t K = g.KH * g.KW * g.IC, P = g.B * g.OH * g.OW, chunk = nhwc_chunk(&g);
    float *cols = ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)(chunk * K));
    if (bias) {
#pragma omp parallel for if (P * g.OC > 65536)
        for (int64_t p = 0; p < P; p++) memcpy(o + p * g.OC, bias, sizeof(float) * (size_t)g.OC);
    }
    for (int64_t p0 = 0; p0 < P; p0 += chunk) { // out rows [np, OC] (+)= cols [np, K] w^T [K, OC]
        int64_t p1 = p0 + chunk < P ? p0 + chunk : P;
        nhwc_im2col(cols, x, &g, p0, p1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(p1 - p0), (int)g.OC, (int)K, 1.0f, cols, (int)K,
                    wt, (int)K, bias ? 1.0f : 0.0f, o + p0 * g.OC, (int)g.OC);
    }
    if (ops_want(res)) add_forward(out, out, res);
}

// din [B, H, W, IC] written; dw and db [OC] accumulated (any may be NULL). dw is [OC, KH, KW, IC] as w, or with
// dw_kcrs the same gradient stored [OC, IC, KH, KW] (a model's fp32 gradient of a channels-last compute filter).
static void nhwc_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w,
                          int stride, int pad, int dw_kcrs, const char *op) {
    ConvGeom g = nhwc_geom(in, w, stride, pad, op);
    tensor_expect_shape(dout, "conv2d_nhwc output grad", g.B, g.OH, g.OW, g.OC);
    if (ops_want(din)) tensor_expect_shape(din, "conv2d_nhwc input grad", g.B, g.H, g.W, g.IC);
    if (ops_want(dw) && dw_kcrs) tensor_expect_shape(dw, "conv2d weight grad", g.OC, g.IC, g.KH, g.KW);
    else if (ops_want(dw)) tensor_expect_shape(dw, "conv2d_nhwc weight grad", g.OC, g.KH, g.KW, g.IC);
    if (ops_want(db)) tensor_expect_shape(db, "conv2d_nhwc bias grad", g.OC);
    if (nhwc_pointwise(&g)) { // [OC, 1, 1, IC] and [OC, IC, 1, 1] are one layout
        Tensor ri, rw, rdo, rdi, rdw;
        nhwc_as_linear(&g, in, w, dout, &ri, &rw, &rdo);
        if (ops_want(din)) rdi = tensor_reshape(din, 2, ri.shape);
        if (ops_want(dw)) rdw = tensor_reshape(dw, 2, rw.shape);
        linear_backward(ops_want(din) ? &rdi : NULL, ops_want(dw) ? &rdw : NULL, db, &rdo, &ri, &rw);
        return;
    }
    if (OPS_ON_CUDA(dout)) {
        OPS_EXPECT_CUDA(dout, op);
        OPS_EXPECT_CUDA(in, op);
        OPS_EXPECT_CUDA(w, op);
        OPS_EXPECT_CUDA(din, op);
        OPS_EXPECT_CUDA_F32(dw, op);
        OPS_EXPECT_CUDA_F32(db, op);
        ops_expect_same_dtype(dout, in, op);
        ops_expect_same_dtype(w, in, op);
        ops_expect_same_dtype(din, in, op);
        if (!ops_want(din) && !ops_want(dw) && !ops_want(db)) return;
        Conv2dCudaShape s = nhwc_cuda_shape(in, &g);
        size_t ws = conv2d_plan_cuda(&s, NULL);
        conv2d_backward_cuda(ops_want(din) ? din->data : NULL, ops_want(dw) ? tensor_f32(dw) : NULL,
                             ops_want(db) ? tensor_f32(db) : NULL, dout->data, in->data, w->data, &s, dw_kcrs,
                             ops_workspace(DEVICE_CUDA, ws), ws);
        return;
    }
    OPS_EXPECT_CPU(dout, op);
    OPS_EXPECT_CPU(in, op);
    OPS_EXPECT_CPU(w, op);
    OPS_EXPECT_CPU(din, op);
    OPS_EXPECT_CPU(dw, op);
    OPS_EXPECT_CPU(db, op);
    CHECK(!dw_kcrs, "", "%s: a weight gradient of another layout on the CPU (channels last is GPU only)", op);
    const float *gy = tensor_f32(dout), *x = tensor_f32(in), *wt = tensor_f32(w);
    int64_t K = g.KH * g.KW * g.IC, P = g.B * g.OH * g.OW, chunk = nhwc_chunk(&g);
    if (ops_want(db)) ops_bias_grad_add(tensor_f32(db), gy, P, g.OC, 1);
    if (!ops_want(din) && !ops_want(dw)) return;
    // this call's weight gradient is summed in dwb [OC, K] and added to dw once; the columns of a chunk serve first
    // as the input columns for dw, then as the column gradient for din
    float *dwb = ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)(chunk * K + g.OC * K)), *cols = dwb + g.OC * K;
    float *dx = ops_want(din) ? tensor_f32(din) : NULL;
    if (dx) memset(dx, 0, sizeof(float) * (size_t)tensor_numel(din));
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        int64_t p1 = p0 + chunk < P ? p0 + chunk : P, np = p1 - p0;
        const float *gn = gy + p0 * g.OC;
        if (ops_want(dw)) { // dwb [OC, K] (+)= dout^T [OC, np] cols [np, K]
            nhwc_im2col(cols, x, &g, p0, p1);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.OC, (int)K, (int)np, 1.0f, gn, (int)g.OC, cols,
                        (int)K, p0 == 0 ? 0.0f : 1.0f, dwb, (int)K);
        }
        if (dx) { // cols [np, K] = dout [np, OC] w [OC, K], scattered back
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)np, (int)K, (int)g.OC, 1.0f, gn, (int)g.OC, wt,
                        (int)K, 0.0f, cols, (int)K);
            nhwc_col2im_add(dx, cols, &g, p0, p1);
        }
    }
    if (ops_want(dw)) {
        float *d = tensor_f32(dw);
#pragma omp parallel for simd if (g.OC * K > 65536)
        for (int64_t i = 0; i < g.OC * K; i++) d[i] += dwb[i];
    }
}

void conv2d_nhwc_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, int stride, int pad) {
    nhwc_forward(out, in, w, b, NULL, stride, pad, "conv2d_nhwc_forward");
}

void conv2d_nhwc_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w,
                          int stride, int pad) {
    nhwc_backward(din, dw, db, dout, in, w, stride, pad, 0, "conv2d_nhwc_backward");
}

// ---------------------------------------------------------------------------------------------------------------
// conv2d on channels-last tensors (Tensor.channels_last: NCHW shapes, NHWC storage): the same problem seen with its
// storage shapes

static Tensor cl_storage(const Tensor *t) { // [N, C, H, W] channels last -> [N, H, W, C]
    Tensor r = tensor_reshape(t, 4, (int64_t[]){t->shape[0], t->shape[2], t->shape[3], t->shape[1]});
    r.channels_last = 0;
    return r;
}

// Channels-last tensors are GPU only: on the CPU the refusal every CPU op gives (before the storage views drop the
// flag); on the GPU every operand in that layout.
static void cl_expect(const Tensor *t, const char *what, const char *op) {
    if (!ops_want(t)) return;
    if (t->device != DEVICE_CUDA) OPS_EXPECT_CPU(t, op);
    CHECK(tensor_channels_last(t), "", "%s: the %s is stored NCHW in a channels-last convolution", op, what);
}

size_t conv2d_cl_workspace_bytes(const Tensor *in, const Tensor *w, int stride, int pad) {
    Tensor x = cl_storage(in), wt = cl_storage(w);
    return conv2d_nhwc_workspace_bytes(&x, &wt, stride, pad);
}

void conv2d_cl_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, const Tensor *res, int stride,
                       int pad) {
    cl_expect(in, "input", "conv2d_forward");
    cl_expect(out, "output", "conv2d_forward");
    cl_expect(w, "filter", "conv2d_forward");
    cl_expect(res, "residual", "conv2d_forward");
    Tensor o = cl_storage(out), x = cl_storage(in), wt = cl_storage(w), r = {0};
    if (ops_want(res)) r = cl_storage(res);
    nhwc_forward(&o, &x, &wt, b, ops_want(res) ? &r : NULL, stride, pad, "conv2d_forward");
}

void conv2d_cl_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w,
                        int stride, int pad) {
    cl_expect(in, "input", "conv2d_backward");
    cl_expect(dout, "output gradient", "conv2d_backward");
    cl_expect(w, "filter", "conv2d_backward");
    cl_expect(din, "input gradient", "conv2d_backward");
    Tensor go = cl_storage(dout), x = cl_storage(in), wt = cl_storage(w), gi, gw;
    if (ops_want(din)) gi = cl_storage(din);
    int kcrs = ops_want(dw) && !tensor_channels_last(dw);
    if (ops_want(dw)) gw = kcrs ? *dw : cl_storage(dw);
    nhwc_backward(ops_want(din) ? &gi : NULL, ops_want(dw) ? &gw : NULL, db, &go, &x, &wt, stride, pad, kcrs,
                  "conv2d_backward");
}
