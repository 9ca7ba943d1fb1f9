// conv2d.c: 2-D convolution (torch nn.Conv2d: NCHW, weight [OC, IC, KH, KW]), forward and backward (zero padding
// as its own op is in layout.c).
// 1x1 stride-1 convs are one GEMM per image; others im2col into the shared workspace, then one GEMM per image (per
// row chunk for very large images). GEMMs run outside parallel regions so OpenBLAS uses every thread.
#include "ops_internal.h"

typedef struct {
    int64_t IC, H, W, KH, KW, OH, OW, stride, pad;
} ConvGeom;

// Validates in [B, IC, H, W] and w [OC, IC, KH, KW] and derives the output size.
static ConvGeom conv_geom(const Tensor *in, const Tensor *w, int stride, int pad, const char *op) {
    char a[96], b[96];
    CHECK(in->ndim == 4 && w->ndim == 4 && w->shape[1] == in->shape[1], "",
          "%s: input %s and weight %s do not fit (want [B, IC, H, W] and [OC, IC, KH, KW])", op,
          tensor_shape_str(in, a, sizeof a), tensor_shape_str(w, b, sizeof b));
    CHECK(stride >= 1 && pad >= 0, "", "%s: stride %d and pad %d (want stride >= 1, pad >= 0)", op, stride, pad);
    ConvGeom g = {.IC = in->shape[1], .H = in->shape[2], .W = in->shape[3], .KH = w->shape[2], .KW = w->shape[3],
                  .stride = stride, .pad = pad};
    CHECK(g.H + 2 * g.pad >= g.KH && g.W + 2 * g.pad >= g.KW, "",
          "%s: kernel %s is larger than the padded input %s (pad %d)", op, tensor_shape_str(w, b, sizeof b),
          tensor_shape_str(in, a, sizeof a), pad);
    g.OH = (g.H + 2 * g.pad - g.KH) / g.stride + 1;
    g.OW = (g.W + 2 * g.pad - g.KW) / g.stride + 1;
    return g;
}

static int conv_pointwise(const ConvGeom *g) { return g->KH == 1 && g->KW == 1 && g->stride == 1 && g->pad == 0; }

// Output positions o in [*lo, *hi) whose input index o * stride + off lies in [0, n); out_n positions in all.
static void valid_range(int64_t off, int64_t stride, int64_t n, int64_t out_n, int64_t *lo, int64_t *hi) {
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = off >= n ? 0 : (n - 1 - off) / stride + 1;
    if (l > out_n) l = out_n;
    if (h > out_n) h = out_n;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

// im2col works on chunks of output rows whose columns stay under this many floats (128 MiB). At 512x512, SD 1.5's
// UNet convs are one chunk per image (two for the 960-channel input of the last up block); the VAE decoder's
// 512x512 layers, 2.4 GB of columns per image, take about twenty.
#define CONV_COLS_MAX ((int64_t)1 << 25)

static int64_t conv_chunk_rows(const ConvGeom *g) {
    int64_t rows = CONV_COLS_MAX / (g->IC * g->KH * g->KW * g->OW);
    return rows < 1 ? 1 : rows > g->OH ? g->OH : rows;
}

// cols [IC * KH * KW, (oh1 - oh0) * OW] from one image x [IC, H, W], output rows [oh0, oh1); padding reads zero.
static void im2col(float *cols, const float *x, const ConvGeom *g, int64_t oh0, int64_t oh1) {
    int64_t nh = oh1 - oh0, rows = g->IC * g->KH * g->KW * nh, OW = g->OW, s = g->stride;
#pragma omp parallel for if (rows * OW > 32768)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oh = oh0 + r % nh, k = r / nh, kw = k % g->KW, kh = (k / g->KW) % g->KH, c = k / (g->KW * g->KH);
        float *dst = cols + r * OW;
        int64_t iy = oh * s - g->pad + kh, off = kw - g->pad, lo, hi;
        if (iy < 0 || iy >= g->H) {
            memset(dst, 0, sizeof(float) * (size_t)OW);
            continue;
        }
        valid_range(off, s, g->W, OW, &lo, &hi);
        const float *src = x + (c * g->H + iy) * g->W;
        for (int64_t o = 0; o < lo; o++) dst[o] = 0.0f;
        if (s == 1)
            memcpy(dst + lo, src + lo + off, sizeof(float) * (size_t)(hi - lo));
        else
            for (int64_t o = lo; o < hi; o++) dst[o] = src[o * s + off];
        for (int64_t o = hi; o < OW; o++) dst[o] = 0.0f;
    }
}

// dx [IC, H, W] += every entry of cols (im2col layout of output rows [oh0, oh1)) at the pixel it was read from.
// Each thread gathers into whole input rows, so the sum is race-free and independent of the thread count.
static void col2im_add(float *dx, const float *cols, const ConvGeom *g, int64_t oh0, int64_t oh1) {
    int64_t rows = g->IC * g->H, W = g->W, cs = (oh1 - oh0) * g->OW, s = g->stride;
#pragma omp parallel for if (rows * W * g->KH * g->KW > 32768)
    for (int64_t r = 0; r < rows; r++) {
        int64_t c = r / g->H, iy = r % g->H;
        float *dst = dx + r * W;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t t = iy + g->pad - kh;
            if (t < 0 || t % s != 0 || t / s < oh0 || t / s >= oh1) continue;
            for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t off = kw - g->pad, lo, hi;
                valid_range(off, s, W, g->OW, &lo, &hi);
                const float *src = cols + ((c * g->KH + kh) * g->KW + kw) * cs + (t / s - oh0) * g->OW;
                for (int64_t o = lo; o < hi; o++) dst[o * s + off] += src[o];
            }
        }
    }
}

// The GPU's record of a validated convolution (cuda_api.h); in, w and the activations' gradients share in's dtype.
static Conv2dCudaShape conv_cuda_shape(const Tensor *in, const Tensor *w, const ConvGeom *g) {
    return (Conv2dCudaShape){.dt = ops_dt(in), .B = (int)in->shape[0], .IC = (int)g->IC, .H = (int)g->H,
                             .W = (int)g->W, .OC = (int)w->shape[0], .KH = (int)g->KH, .KW = (int)g->KW,
                             .stride = (int)g->stride, .pad = (int)g->pad};
}

size_t conv2d_workspace_bytes(const Tensor *in, const Tensor *w, int stride, int pad) {
    ConvGeom g = conv_geom(in, w, stride, pad, "conv2d_workspace_bytes");
    if (in->device == DEVICE_CUDA) { // cuDNN's plan, or the cuBLASLt route of the 1x1 convolutions
        Conv2dCudaShape s = conv_cuda_shape(in, w, &g);
        size_t need = conv2d_plan_cuda(&s, NULL), gemm = 0;
        if (conv_pointwise(&g)) gemm = conv1x1_cuda_workspace_bytes((int)in->shape[0], (int)w->shape[0]);
        return need > gemm ? need : gemm;
    }
    // CPU: the backward's batch weight gradient [OC, K] and, unless pointwise, one chunk of columns (the forward
    // needs only the columns)
    int64_t OC = w->shape[0], K = g.IC * g.KH * g.KW;
    return sizeof(float) * (size_t)(OC * K + (conv_pointwise(&g) ? 0 : K * conv_chunk_rows(&g) * g.OW));
}

void conv2d_set_deterministic(int on) { conv2d_set_deterministic_cuda(on); }

// out [B, OC, OH, OW] = in [B, IC, H, W] * w [OC, IC, KH, KW] + b [OC]
void conv2d_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, int stride, int pad) {
    ConvGeom g = conv_geom(in, w, stride, pad, "conv2d_forward");
    int64_t B = in->shape[0], OC = w->shape[0], K = g.IC * g.KH * g.KW, S = g.OH * g.OW, HW = g.H * g.W;
    tensor_expect_shape(out, "conv2d output", B, OC, g.OH, g.OW);
    if (ops_want(b)) tensor_expect_shape(b, "conv2d bias", OC);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "conv2d_forward");
        OPS_EXPECT_CUDA(in, "conv2d_forward");
        OPS_EXPECT_CUDA(w, "conv2d_forward");
        OPS_EXPECT_CUDA(b, "conv2d_forward");
        ops_expect_same_dtype(w, in, "conv2d_forward");
        ops_expect_same_dtype(out, in, "conv2d_forward");
        if (conv_pointwise(&g) && (!ops_want(b) || b->dtype == out->dtype)) { // 1x1: cuBLASLt GEMMs (cuda_linear.cu)
            conv1x1_forward_cuda(out->data, in->data, w->data, ops_want(b) ? b->data : NULL, (int)B, (int)g.IC,
                                 (int)OC, HW, ops_dt(out));
            return;
        }
        Conv2dCudaShape s = conv_cuda_shape(in, w, &g);
        size_t ws = conv2d_plan_cuda(&s, NULL);
        conv2d_forward_cuda(out->data, in->data, w->data, ops_want(b) ? b->data : NULL, ops_want(b) ? ops_dt(b) : 0,
                            &s, ops_workspace(DEVICE_CUDA, ws), ws);
        return;
    }
    OPS_EXPECT_CPU(out, "conv2d_forward");
    OPS_EXPECT_CPU(in, "conv2d_forward");
    OPS_EXPECT_CPU(w, "conv2d_forward");
    OPS_EXPECT_CPU(b, "conv2d_forward");
    float *o = tensor_f32(out);
    const float *x = tensor_f32(in), *wt = tensor_f32(w);
    float beta = 0.0f;
    if (ops_want(b)) {
        const float *bb = tensor_f32(b);
#pragma omp parallel for if (B * OC * S > 65536)
        for (int64_t r = 0; r < B * OC; r++)
            for (int64_t i = 0; i < S; i++) o[r * S + i] = bb[r % OC];
        beta = 1.0f;
    }
    if (conv_pointwise(&g)) {
        for (int64_t n = 0; n < B; n++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)OC, (int)S, (int)g.IC, 1.0f, wt, (int)g.IC,
                        x + n * g.IC * HW, (int)S, beta, o + n * OC * S, (int)S);
        return;
    }
    int64_t chunk = conv_chunk_rows(&g);
    float *cols = ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)(K * chunk * g.OW)); // [K, chunk * OW]
    for (int64_t n = 0; n < B; n++)
        for (int64_t oh0 = 0; oh0 < g.OH; oh0 += chunk) {
            int64_t oh1 = oh0 + chunk < g.OH ? oh0 + chunk : g.OH, cs = (oh1 - oh0) * g.OW;
            im2col(cols, x + n * g.IC * HW, &g, oh0, oh1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)OC, (int)cs, (int)K, 1.0f, wt, (int)K, cols,
                        (int)cs, beta, o + n * OC * S + oh0 * g.OW, (int)S);
        }
}

// din [B, IC, H, W] = col2im(w^T @ dout) (written); dw [OC, IC, KH, KW] += dout @ im2col(in)^T;
// db [OC] += sum over batch and space of dout
void conv2d_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w,
                     int stride, int pad) {
    ConvGeom g = conv_geom(in, w, stride, pad, "conv2d_backward");
    int64_t B = in->shape[0], OC = w->shape[0], K = g.IC * g.KH * g.KW, S = g.OH * g.OW, HW = g.H * g.W;
    tensor_expect_shape(dout, "conv2d output grad", B, OC, g.OH, g.OW);
    if (ops_want(din)) tensor_expect_shape(din, "conv2d input grad", B, g.IC, g.H, g.W);
    if (ops_want(dw)) tensor_expect_shape(dw, "conv2d weight grad", OC, g.IC, g.KH, g.KW);
    if (ops_want(db)) tensor_expect_shape(db, "conv2d bias grad", OC);
    if (OPS_ON_CUDA(dout)) {
        OPS_EXPECT_CUDA(dout, "conv2d_backward");
        OPS_EXPECT_CUDA(in, "conv2d_backward");
        OPS_EXPECT_CUDA(w, "conv2d_backward");
        OPS_EXPECT_CUDA(din, "conv2d_backward");
        OPS_EXPECT_CUDA_F32(dw, "conv2d_backward");
        OPS_EXPECT_CUDA_F32(db, "conv2d_backward");
        ops_expect_same_dtype(dout, in, "conv2d_backward");
        ops_expect_same_dtype(w, in, "conv2d_backward");
        ops_expect_same_dtype(din, in, "conv2d_backward");
        if (!ops_want(din) && !ops_want(dw) && !ops_want(db)) return;
        if (conv_pointwise(&g)) { // 1x1: cuBLASLt GEMMs (cuda_linear.cu)
            conv1x1_backward_cuda(ops_want(din) ? din->data : NULL, ops_want(dw) ? tensor_f32(dw) : NULL,
                                  ops_want(db) ? tensor_f32(db) : NULL, dout->data, in->data, w->data, (int)B,
                                  (int)g.IC, (int)OC, HW, ops_dt(dout));
            return;
        }
        Conv2dCudaShape s = conv_cuda_shape(in, w, &g);
        size_t ws = conv2d_plan_cuda(&s, NULL);
        conv2d_backward_cuda(ops_want(din) ? din->data : NULL, ops_want(dw) ? tensor_f32(dw) : NULL,
                             ops_want(db) ? tensor_f32(db) : NULL, dout->data, in->data, w->data, &s,
                             ops_workspace(DEVICE_CUDA, ws), ws);
        return;
    }
    OPS_EXPECT_CPU(dout, "conv2d_backward");
    OPS_EXPECT_CPU(in, "conv2d_backward");
    OPS_EXPECT_CPU(w, "conv2d_backward");
    OPS_EXPECT_CPU(din, "conv2d_backward");
    OPS_EXPECT_CPU(dw, "conv2d_backward");
    OPS_EXPECT_CPU(db, "conv2d_backward");
    const float *gy = tensor_f32(dout), *x = tensor_f32(in), *wt = tensor_f32(w);
    if (ops_want(db)) ops_bias_grad_add(tensor_f32(db), gy, B, OC, S);
    if (!ops_want(din) && !ops_want(dw)) return;
    // The weight gradient of the whole batch is summed in dwb [OC, K] and added to dw once, so dw receives exactly
    // this call's gradient whatever it held before. Non-pointwise shapes also need the columns of one chunk,
    // cols [K, chunk * OW], which serve first as the input columns for dw, then as the column gradient for din.
    int pointwise = conv_pointwise(&g);
    int64_t chunk = pointwise ? g.OH : conv_chunk_rows(&g);
    float *dwb = ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)(OC * K + (pointwise ? 0 : K * chunk * g.OW)));
    float *cols = dwb + OC * K;
    for (int64_t n = 0; n < B; n++) {
        const float *gn = gy + n * OC * S, *xn = x + n * g.IC * HW;
        float *dxn = ops_want(din) ? tensor_f32(din) + n * g.IC * HW : NULL;
        if (pointwise) {
            if (ops_want(dw))
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)OC, (int)K, (int)S, 1.0f, gn, (int)S, xn,
                            (int)S, n == 0 ? 0.0f : 1.0f, dwb, (int)K);
            if (dxn)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)S, (int)OC, 1.0f, wt, (int)K, gn,
                            (int)S, 0.0f, dxn, (int)S);
            continue;
        }
        if (dxn) memset(dxn, 0, sizeof(float) * (size_t)(g.IC * HW));
        for (int64_t oh0 = 0; oh0 < g.OH; oh0 += chunk) {
            int64_t oh1 = oh0 + chunk < g.OH ? oh0 + chunk : g.OH, cs = (oh1 - oh0) * g.OW;
            if (ops_want(dw)) {
                im2col(cols, xn, &g, oh0, oh1);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)OC, (int)K, (int)cs, 1.0f, gn + oh0 * g.OW,
                            (int)S, cols, (int)cs, n == 0 && oh0 == 0 ? 0.0f : 1.0f, dwb, (int)K);
            }
            if (dxn) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)cs, (int)OC, 1.0f, wt, (int)K,
                            gn + oh0 * g.OW, (int)S, 0.0f, cols, (int)cs);
                col2im_add(dxn, cols, &g, oh0, oh1);
            }
        }
    }
    if (ops_want(dw)) {
        float *d = tensor_f32(dw);
#pragma omp parallel for simd if (OC * K > 65536)
        for (int64_t i = 0; i < OC * K; i++) d[i] += dwb[i];
    }
}
