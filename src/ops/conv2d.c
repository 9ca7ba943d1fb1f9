// conv2d.c: 2-D convolution (torch nn.Conv2d: NCHW, weight [OC, IC, KH, KW]), forward and backward (zero padding
// as its own op is in layout.c).
// On the CPU, small images are grouped so one GEMM covers several images (conv_plan); a 1x1 stride-1 conv of one
// image per GEMM reads its input in place, others im2col into the shared workspace (per row chunk for very large
// images). GEMMs run outside parallel regions so OpenBLAS uses every thread. The 1x1 convolution of a channel
// concatenation read where its parts lie (conv1x1_forward_cat) is at the end.
#include "ops_internal.h"

// Validates in [B, IC, H, W] and w [OC, IC, KH, KW] and derives the output size.
static ConvGeom conv_geom(const Tensor *in, const Tensor *w, int stride, int pad, const char *op) {
    char a[96], b[96];
    CHECK(in->ndim == 4 && w->ndim == 4 && w->shape[1] == in->shape[1], "",
          "%s: input %s and weight %s do not fit (want [B, IC, H, W] and [OC, IC, KH, KW])", op,
          tensor_shape_str(in, a, sizeof a), tensor_shape_str(w, b, sizeof b));
    ConvGeom g = {.B = in->shape[0], .IC = in->shape[1], .OC = w->shape[0], .H = in->shape[2], .W = in->shape[3],
                  .KH = w->shape[2], .KW = w->shape[3], .stride = stride, .pad = pad};
    conv_geom_finish(&g, in, w, op);
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

// The CPU plan of one shape. Images with small outputs are grouped so one GEMM covers nb images (its columns are
// the images side by side, [*, nb * S]): a per-image GEMM on a few dozen columns runs at a fraction of the GEMM
// rate, and the tiny model's convolutions are 2x2 to 32x32. Large images run one image per GEMM, in chunks of
// output rows whose columns stay under CONV_COLS_MAX floats (128 MiB). At 512x512, SD 1.5's UNet convs are one
// chunk per image (two for the 960-channel input of the last up block); the VAE decoder's 512x512 layers, 2.4 GB
// of columns per image, take about twenty.
#define CONV_COLS_MAX ((int64_t)1 << 25)
// grouped images: up to this many GEMM columns (on the tiny model's 2x2 to 8x8 shapes, one thread, groups of 256
// to 4096 columns ran within a few per cent of each other, 1.1x to 1.7x faster than one image per GEMM)
#define CONV_GROUP_COLS 1024

typedef struct {
    int64_t nb, rows; // images per GEMM; output rows per GEMM (OH unless nb == 1)
} ConvPlan;

static ConvPlan conv_plan(const ConvGeom *g, int64_t B) {
    int64_t K = g->IC * g->KH * g->KW, S = g->OH * g->OW;
    ConvPlan p = {.nb = 1, .rows = g->OH};
    if (S < CONV_GROUP_COLS && B > 1 && !conv_pointwise(g)) { // a pointwise conv reads its input in place
        p.nb = CONV_GROUP_COLS / S;
        if (p.nb * S * K > CONV_COLS_MAX) p.nb = CONV_COLS_MAX / (S * K);
        p.nb = p.nb < 1 ? 1 : p.nb > B ? B : p.nb;
    }
    if (p.nb == 1) {
        int64_t rows = CONV_COLS_MAX / (K * g->OW);
        p.rows = rows < 1 ? 1 : rows > g->OH ? g->OH : rows;
    }
    return p;
}

// Floats of CPU scratch: [OC, K] for the backward's batch weight gradient (bwd), columns [K, n] (not for a
// pointwise conv, which reads its input in place) and, for grouped images, the GEMM's side by side result or
// gradient [OC, n] (n = nb * rows * OW).
static int64_t conv_cpu_floats(const ConvGeom *g, int64_t B, int64_t OC, int bwd) {
    ConvPlan p = conv_plan(g, B);
    int64_t K = g->IC * g->KH * g->KW, n = p.nb * p.rows * g->OW;
    int64_t cols = conv_pointwise(g) ? 0 : K * n;
    int64_t side = p.nb > 1 ? OC * n : 0;
    return (bwd ? OC * K : 0) + cols + side;
}

// A stride-1 "same" convolution (OH = H, OW = W, as 3x3 pad 1): a tap's columns of rows [a, b) are one contiguous
// run of the input plane shifted by (kh - pad) rows and off columns, whose ends of each row wrap around (the
// columns that read padding, o < lo or o >= hi).
static int conv_same(const ConvGeom *g) { return g->stride == 1 && g->OH == g->H && g->OW == g->W; }

// The rows [*a, *b) within [oh0, oh1) whose input row oh * stride - pad + kh lies in the image.
static void tap_rows(const ConvGeom *g, int64_t kh, int64_t oh0, int64_t oh1, int64_t *a, int64_t *b) {
    valid_range(kh - g->pad, g->stride, g->H, g->OH, a, b);
    *a = *a > oh0 ? *a : oh0, *b = *b < oh1 ? *b : oh1;
    if (*b < *a) *b = *a;
}

// cols [K, nb * (oh1 - oh0) * OW] (K = IC * KH * KW) from images x [nb, IC, H, W], output rows [oh0, oh1) of each
// image side by side; padding reads zero.
static void im2col(float *cols, const float *x, const ConvGeom *g, int64_t nb, int64_t oh0, int64_t oh1) {
    int64_t K = g->IC * g->KH * g->KW, OW = g->OW, W = g->W, s = g->stride, nh = oh1 - oh0, ld = nb * nh * OW;
    int same = conv_same(g);
#pragma omp parallel for if (K * ld > 65536)
    for (int64_t k = 0; k < K; k++) {
        int64_t kw = k % g->KW, kh = (k / g->KW) % g->KH, c = k / (g->KW * g->KH), off = kw - g->pad, lo, hi, a, b;
        valid_range(off, s, W, OW, &lo, &hi);
        tap_rows(g, kh, oh0, oh1, &a, &b);
        for (int64_t j = 0; j < nb; j++) {
            const float *xc = x + (j * g->IC + c) * g->H * W;
            float *dst = cols + k * ld + j * nh * OW; // [nh, OW]
            for (int64_t i = 0; i < (a - oh0) * OW; i++) dst[i] = 0.0f;
            for (int64_t i = (b - oh0) * OW; i < nh * OW; i++) dst[i] = 0.0f;
            if (a == b) continue;
            if (same && lo < hi) { // one shifted run, then the wrapped ends of each row
                float *d = dst + (a - oh0) * W + lo;
                const float *sr = xc + (a - g->pad + kh) * W + lo + off;
                for (int64_t i = 0, n = (b - 1 - a) * W + hi - lo; i < n; i++) d[i] = sr[i];
                for (int64_t oh = a; oh < b; oh++) {
                    for (int64_t o = 0; o < lo; o++) dst[(oh - oh0) * W + o] = 0.0f;
                    for (int64_t o = hi; o < W; o++) dst[(oh - oh0) * W + o] = 0.0f;
                }
                continue;
            }
            for (int64_t oh = a; oh < b; oh++) {
                float *d = dst + (oh - oh0) * OW;
                const float *src = xc + (oh * s - g->pad + kh) * W + off;
                for (int64_t o = 0; o < lo; o++) d[o] = 0.0f;
                if (s == 1)
                    for (int64_t o = lo; o < hi; o++) d[o] = src[o];
                else
                    for (int64_t o = lo; o < hi; o++) d[o] = src[o * s];
                for (int64_t o = hi; o < OW; o++) d[o] = 0.0f;
            }
        }
    }
}

// dx [nb, IC, H, W] += every entry of cols (im2col layout of output rows [oh0, oh1) of nb images) at the pixel it
// was read from; cols is scratch (same convolutions zero the entries that read padding first). Each thread owns
// whole input channels and adds in a fixed order, so the sum is race-free and independent of the thread count.
static void col2im_add(float *dx, float *cols, const ConvGeom *g, int64_t nb, int64_t oh0, int64_t oh1) {
    int64_t OW = g->OW, W = g->W, s = g->stride, nh = oh1 - oh0, ld = nb * nh * OW, HW = g->H * W;
    int same = conv_same(g);
#pragma omp parallel for if (g->IC * ld * g->KH * g->KW > 65536)
    for (int64_t c = 0; c < g->IC; c++)
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t off = kw - g->pad, lo, hi, a, b;
                valid_range(off, s, W, OW, &lo, &hi);
                tap_rows(g, kh, oh0, oh1, &a, &b);
                for (int64_t j = 0; j < nb && a < b; j++) {
                    float *dc = dx + (j * g->IC + c) * HW, *src = cols + ((c * g->KH + kh) * g->KW + kw) * ld + j * nh * OW;
                    if (lo == hi) break; // this tap reads only padding
                    if (same) { // zero the wrapped ends, then one shifted run
                        for (int64_t oh = a; oh < b; oh++) {
                            for (int64_t o = 0; o < lo; o++) src[(oh - oh0) * W + o] = 0.0f;
                            for (int64_t o = hi; o < W; o++) src[(oh - oh0) * W + o] = 0.0f;
                        }
                        float *d = dc + (a - g->pad + kh) * W + lo + off;
                        const float *sr = src + (a - oh0) * W + lo;
                        int64_t n = (b - 1 - a) * W + hi - lo;
                        for (int64_t i = 0; i < n; i++) d[i] += sr[i];
                        continue;
                    }
                    for (int64_t oh = a; oh < b; oh++) {
                        float *d = dc + (oh * s - g->pad + kh) * W + off;
                        const float *sr = src + (oh - oh0) * OW;
                        if (s == 1)
                            for (int64_t o = lo; o < hi; o++) d[o] += sr[o];
                        else
                            for (int64_t o = lo; o < hi; o++) d[o * s] += sr[o];
                    }
                }
            }
}

// side [R, nb * S] <- t [nb, R, S] (the images side by side), and back (side_to_images: t = side + bias [R], when
// bias is given).
static void images_to_side(float *side, const float *t, int64_t nb, int64_t R, int64_t S) {
#pragma omp parallel for if (nb * R * S > 65536)
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < nb; j++) memcpy(side + (r * nb + j) * S, t + (j * R + r) * S, sizeof(float) * (size_t)S);
}

static void side_to_images(float *t, const float *side, const float *bias, int64_t nb, int64_t R, int64_t S) {
#pragma omp parallel for if (nb * R * S > 65536)
    for (int64_t i = 0; i < nb * R; i++) {
        int64_t j = i / R, r = i % R;
        float bb = bias ? bias[r] : 0.0f, *dst = t + i * S;
        const float *src = side + (r * nb + j) * S;
        for (int64_t k = 0; k < S; k++) dst[k] = src[k] + bb;
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
    if (tensor_channels_last(in)) return conv2d_cl_workspace_bytes(in, w, stride, pad);
    if (in->device == DEVICE_CUDA) { // cuDNN's plan, or the cuBLASLt route of the 1x1 convolutions
        Conv2dCudaShape s = conv_cuda_shape(in, w, &g);
        size_t need = conv2d_plan_cuda(&s, NULL), gemm = 0;
        if (conv_pointwise(&g)) gemm = conv1x1_cuda_workspace_bytes((int)in->shape[0], (int)w->shape[0]);
        return need > gemm ? need : gemm;
    }
    // CPU: the backward's need covers the forward's
    return sizeof(float) * (size_t)conv_cpu_floats(&g, in->shape[0], w->shape[0], 1);
}

void conv2d_set_deterministic(int on) { conv2d_set_deterministic_cuda(on); }

// out [B, OC, OH, OW] = in [B, IC, H, W] * w [OC, IC, KH, KW] + b [OC]
void conv2d_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, int stride, int pad) {
    conv2d_forward_residual(out, in, w, b, NULL, stride, pad);
}

// out = conv(in, w) + b (+ res). The GPU puts the residual into the output with the bias before the convolution adds
// to it (or makes it the 1x1 GEMM's C): no add pass of its own. The CPU adds it after, as add_forward.
void conv2d_forward_residual(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, const Tensor *res,
                             int stride, int pad) {
    ConvGeom g = conv_geom(in, w, stride, pad, "conv2d_forward");
    int64_t B = in->shape[0], OC = w->shape[0], K = g.IC * g.KH * g.KW, S = g.OH * g.OW, HW = g.H * g.W;
    tensor_expect_shape(out, "conv2d output", B, OC, g.OH, g.OW);
    if (ops_want(b)) tensor_expect_shape(b, "conv2d bias", OC);
    if (ops_want(res)) {
        ops_expect_same_numel(out, res, "conv2d residual");
        CHECK(res->data != out->data, "", "conv2d_forward_residual: the residual must not be the output");
    }
    if (tensor_channels_last(in) || tensor_channels_last(out)) { // channels last (GPU): cuDNN with NHWC descriptors
        conv2d_cl_forward(out, in, w, b, res, stride, pad);
        return;
    }
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "conv2d_forward");
        OPS_EXPECT_CUDA(in, "conv2d_forward");
        OPS_EXPECT_CUDA(w, "conv2d_forward");
        OPS_EXPECT_CUDA(b, "conv2d_forward");
        OPS_EXPECT_CUDA(res, "conv2d_forward");
        ops_expect_same_dtype(w, in, "conv2d_forward");
        ops_expect_same_dtype(out, in, "conv2d_forward");
        if (ops_want(res)) ops_expect_same_dtype(res, out, "conv2d_forward");
        const void *r = ops_want(res) ? res->data : NULL;
        if (conv_pointwise(&g) && (!ops_want(b) || b->dtype == out->dtype)) { // 1x1: cuBLASLt GEMMs (cuda_linear.cu)
            conv1x1_forward_cuda(out->data, in->data, w->data, ops_want(b) ? b->data : NULL, r, (int)B, (int)g.IC,
                                 (int)OC, HW, g.IC, ops_dt(out));
            return;
        }
        Conv2dCudaShape s = conv_cuda_shape(in, w, &g);
        size_t ws = conv2d_plan_cuda(&s, NULL);
        conv2d_forward_cuda(out->data, in->data, w->data, ops_want(b) ? b->data : NULL, ops_want(b) ? ops_dt(b) : 0, r,
                            &s, ops_workspace(DEVICE_CUDA, ws), ws);
        return;
    }
    OPS_EXPECT_CPU(out, "conv2d_forward");
    OPS_EXPECT_CPU(in, "conv2d_forward");
    OPS_EXPECT_CPU(w, "conv2d_forward");
    OPS_EXPECT_CPU(b, "conv2d_forward");
    float *o = tensor_f32(out);
    const float *x = tensor_f32(in), *wt = tensor_f32(w), *bias = ops_want(b) ? tensor_f32(b) : NULL;
    ConvPlan p = conv_plan(&g, B);
    int pointwise = conv_pointwise(&g);
    float *cols = ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)conv_cpu_floats(&g, B, OC, 0));
    if (p.nb == 1) { // one image per GEMM, written in place over the bias
        float beta = 0.0f;
        if (bias) {
#pragma omp parallel for if (B * OC * S > 65536)
            for (int64_t r = 0; r < B * OC; r++)
                for (int64_t i = 0; i < S; i++) o[r * S + i] = bias[r % OC];
            beta = 1.0f;
        }
        for (int64_t n = 0; n < B; n++)
            for (int64_t oh0 = 0; oh0 < g.OH; oh0 += p.rows) {
                int64_t oh1 = oh0 + p.rows < g.OH ? oh0 + p.rows : g.OH, cs = (oh1 - oh0) * g.OW;
                const float *src = x + n * g.IC * HW; // pointwise: the input is its own columns [IC, S]
                if (!pointwise) im2col(cols, src, &g, 1, oh0, oh1), src = cols;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)OC, (int)cs, (int)K, 1.0f, wt, (int)K, src,
                            (int)cs, beta, o + n * OC * S + oh0 * g.OW, (int)S);
            }
    } else { // nb images per GEMM: columns [K, nb * S], result side [OC, nb * S], then out = side + bias per image
        float *side = cols + K * p.nb * S;
        for (int64_t n0 = 0; n0 < B; n0 += p.nb) {
            int64_t nb = n0 + p.nb < B ? p.nb : B - n0, ns = nb * S;
            const float *xn = x + n0 * g.IC * HW;
            im2col(cols, xn, &g, nb, 0, g.OH);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)OC, (int)ns, (int)K, 1.0f, wt, (int)K, cols,
                        (int)ns, 0.0f, side, (int)ns);
            side_to_images(o + n0 * OC * S, side, bias, nb, OC, S);
        }
    }
    if (ops_want(res)) add_forward(out, out, res);
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
    if (tensor_channels_last(in) || tensor_channels_last(dout)) {
        conv2d_cl_backward(din, dw, db, dout, in, w, stride, pad);
        return;
    }
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
                                  (int)g.IC, (int)OC, HW, g.IC, ops_dt(dout));
            return;
        }
        Conv2dCudaShape s = conv_cuda_shape(in, w, &g);
        size_t ws = conv2d_plan_cuda(&s, NULL);
        conv2d_backward_cuda(ops_want(din) ? din->data : NULL, ops_want(dw) ? tensor_f32(dw) : NULL,
                             ops_want(db) ? tensor_f32(db) : NULL, dout->data, in->data, w->data, &s, 0,
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
    // this call's gradient whatever it held before. The columns [K, n] of one GEMM serve first as the input columns
    // for dw, then as the column gradient for din; grouped images also gather dout side by side, gys [OC, n].
    int pointwise = conv_pointwise(&g);
    ConvPlan p = conv_plan(&g, B);
    float *dwb = ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)conv_cpu_floats(&g, B, OC, 1));
    float *cols = dwb + OC * K, *gys = p.nb > 1 ? cols + K * p.nb * S : NULL;
    int first = 1;
    for (int64_t n0 = 0; n0 < B; n0 += p.nb) {
        int64_t nb = n0 + p.nb < B ? p.nb : B - n0;
        const float *gn = gy + n0 * OC * S, *xn = x + n0 * g.IC * HW;
        float *dxn = ops_want(din) ? tensor_f32(din) + n0 * g.IC * HW : NULL;
        if (p.nb > 1) { // grouped: whole images, side by side
            int64_t ns = nb * S;
            images_to_side(gys, gn, nb, OC, S);
            if (ops_want(dw)) {
                im2col(cols, xn, &g, nb, 0, g.OH);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)OC, (int)K, (int)ns, 1.0f, gys, (int)ns,
                            cols, (int)ns, first ? 0.0f : 1.0f, dwb, (int)K);
                first = 0;
            }
            if (dxn) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)ns, (int)OC, 1.0f, wt, (int)K, gys,
                            (int)ns, 0.0f, cols, (int)ns);
                memset(dxn, 0, sizeof(float) * (size_t)(nb * g.IC * HW));
                col2im_add(dxn, cols, &g, nb, 0, g.OH);
            }
            continue;
        }
        if (pointwise) { // the input is its own columns [IC, S]
            if (ops_want(dw)) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)OC, (int)K, (int)S, 1.0f, gn, (int)S, xn,
                            (int)S, first ? 0.0f : 1.0f, dwb, (int)K);
                first = 0;
            }
            if (dxn)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)S, (int)OC, 1.0f, wt, (int)K, gn,
                            (int)S, 0.0f, dxn, (int)S);
            continue;
        }
        if (dxn) memset(dxn, 0, sizeof(float) * (size_t)(g.IC * HW));
        for (int64_t oh0 = 0; oh0 < g.OH; oh0 += p.rows) {
            int64_t oh1 = oh0 + p.rows < g.OH ? oh0 + p.rows : g.OH, cs = (oh1 - oh0) * g.OW;
            if (ops_want(dw)) {
                im2col(cols, xn, &g, 1, oh0, oh1);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)OC, (int)K, (int)cs, 1.0f, gn + oh0 * g.OW,
                            (int)S, cols, (int)cs, first ? 0.0f : 1.0f, dwb, (int)K);
                first = 0;
            }
            if (dxn) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)cs, (int)OC, 1.0f, wt, (int)K,
                            gn + oh0 * g.OW, (int)S, 0.0f, cols, (int)cs);
                col2im_add(dxn, cols, &g, 1, oh0, oh1);
            }
        }
    }
    if (ops_want(dw)) {
        float *d = tensor_f32(dw);
#pragma omp parallel for simd if (OC * K > 65536)
        for (int64_t i = 0; i < OC * K; i++) d[i] += dwb[i];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1x1 convolution over a channel concatenation [a | b] read where its parts lie (the UNet up path's resnet
// shortcuts): the weight's column slices w[:, :Ca] and w[:, Ca:] (rows IC = Ca + Cb apart) multiply the two parts,
// the second product added onto the first; the weight gradient goes to the same slices of dw.

typedef struct {
    int64_t B, Ca, Cb, IC, OC, H, W;
} CatGeom;

static CatGeom cat_geom(const Tensor *a, const Tensor *b, const Tensor *w, const char *op) {
    char x[96], y[96];
    CHECK(a->ndim == 4 && b->ndim == 4 && a->shape[0] == b->shape[0] && a->shape[2] == b->shape[2] &&
              a->shape[3] == b->shape[3],
          "", "%s: inputs %s and %s do not concatenate along channels", op, tensor_shape_str(a, x, sizeof x),
          tensor_shape_str(b, y, sizeof y));
    CatGeom g = {.B = a->shape[0], .Ca = a->shape[1], .Cb = b->shape[1], .IC = a->shape[1] + b->shape[1],
                 .OC = w->shape[0], .H = a->shape[2], .W = a->shape[3]};
    CHECK(w->ndim == 4 && w->shape[1] == g.IC && w->shape[2] == 1 && w->shape[3] == 1, "",
          "%s: weight %s is not [OC, %lld, 1, 1]", op, tensor_shape_str(w, x, sizeof x), (long long)g.IC);
    CHECK(a->device == b->device, "", "%s: the concatenated inputs live on two devices", op);
    ops_expect_same_dtype(a, b, op);
    ops_expect_same_layout(a, b, op);
    return g;
}

// out [B, OC, H, W] = w[:, :Ca] a + w[:, Ca:] b + bias
void conv1x1_forward_cat(Tensor *out, const Tensor *a, const Tensor *b, const Tensor *w, const Tensor *bias) {
    if (!ops_want(b)) {
        conv2d_forward(out, a, w, bias, 1, 0);
        return;
    }
    const char *op = "conv1x1_forward_cat";
    CatGeom g = cat_geom(a, b, w, op);
    int64_t S = g.H * g.W;
    tensor_expect_shape(out, "conv1x1_forward_cat output", g.B, g.OC, g.H, g.W);
    if (ops_want(bias)) tensor_expect_shape(bias, "conv1x1_forward_cat bias", g.OC);
    if (OPS_ON_CUDA(out)) {
        const Tensor *all[5] = {out, a, b, w, bias};
        for (int i = 0; i < 5; i++) {
            OPS_EXPECT_CUDA(all[i], op);
            ops_expect_same_dtype(all[i], out, op); // the GEMMs take one storage dtype, the bias's too
            ops_expect_same_layout(all[i], out, op);
        }
        const char *w1 = (const char *)w->data + g.Ca * dtype_size(w->dtype);
        const void *bb = ops_want(bias) ? bias->data : NULL;
        if (tensor_channels_last(a)) { // pixel rows [B H W, C]: linear layers on the column slices
            linear_forward_cuda(out->data, a->data, w->data, bb, NULL, g.B * S, (int)g.Ca, (int)g.OC, g.IC,
                                ops_dt(out));
            linear_forward_cuda(out->data, b->data, w1, NULL, out->data, g.B * S, (int)g.Cb, (int)g.OC, g.IC,
                                ops_dt(out));
        } else {
            conv1x1_forward_cuda(out->data, a->data, w->data, bb, NULL, (int)g.B, (int)g.Ca, (int)g.OC, S, g.IC,
                                 ops_dt(out));
            conv1x1_forward_cuda(out->data, b->data, w1, NULL, out->data, (int)g.B, (int)g.Cb, (int)g.OC, S, g.IC,
                                 ops_dt(out));
        }
        return;
    }
    const Tensor *all[5] = {out, a, b, w, bias};
    for (int i = 0; i < 5; i++) OPS_EXPECT_CPU(all[i], op);
    float *o = tensor_f32(out);
    const float *xa = tensor_f32(a), *xb = tensor_f32(b), *wt = tensor_f32(w);
    const float *bv = ops_want(bias) ? tensor_f32(bias) : NULL;
    if (bv) {
#pragma omp parallel for if (g.B * g.OC * S > 65536)
        for (int64_t r = 0; r < g.B * g.OC; r++)
            for (int64_t i = 0; i < S; i++) o[r * S + i] = bv[r % g.OC];
    }
    for (int64_t n = 0; n < g.B; n++) {
        float *on = o + n * g.OC * S;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g.OC, (int)S, (int)g.Ca, 1.0f, wt, (int)g.IC,
                    xa + n * g.Ca * S, (int)S, bv ? 1.0f : 0.0f, on, (int)S);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g.OC, (int)S, (int)g.Cb, 1.0f, wt + g.Ca,
                    (int)g.IC, xb + n * g.Cb * S, (int)S, 1.0f, on, (int)S);
    }
}

// da = w[:, :Ca]^T dout, db = w[:, Ca:]^T dout (written); dw [OC, IC, 1, 1] += dout [a | b]^T; dbias += sum dout
void conv1x1_backward_cat(Tensor *da, Tensor *db, Tensor *dw, Tensor *dbias, const Tensor *dout, const Tensor *a,
                          const Tensor *b, const Tensor *w) {
    if (!ops_want(b)) {
        conv2d_backward(da, dw, dbias, dout, a, w, 1, 0);
        return;
    }
    const char *op = "conv1x1_backward_cat";
    CatGeom g = cat_geom(a, b, w, op);
    int64_t S = g.H * g.W;
    tensor_expect_shape(dout, "conv1x1_backward_cat output grad", g.B, g.OC, g.H, g.W);
    CHECK(ops_want(da) == ops_want(db), "", "%s: the input gradient of a concatenation wants both parts", op);
    if (ops_want(da)) {
        tensor_expect_shape(da, "conv1x1_backward_cat input grad", g.B, g.Ca, g.H, g.W);
        tensor_expect_shape(db, "conv1x1_backward_cat input grad (second part)", g.B, g.Cb, g.H, g.W);
    }
    if (ops_want(dw)) tensor_expect_shape(dw, "conv1x1_backward_cat weight grad", g.OC, g.IC, 1, 1);
    if (ops_want(dbias)) tensor_expect_shape(dbias, "conv1x1_backward_cat bias grad", g.OC);
    if (OPS_ON_CUDA(dout)) {
        const Tensor *acts[6] = {dout, a, b, w, da, db};
        for (int i = 0; i < 6; i++) {
            OPS_EXPECT_CUDA(acts[i], op);
            ops_expect_same_dtype(acts[i], dout, op);
            ops_expect_same_layout(acts[i], dout, op);
        }
        OPS_EXPECT_CUDA_F32(dw, op);
        OPS_EXPECT_CUDA_F32(dbias, op);
        const char *w1 = (const char *)w->data + g.Ca * dtype_size(w->dtype);
        float *dw0 = ops_want(dw) ? tensor_f32(dw) : NULL, *dw1 = dw0 ? dw0 + g.Ca : NULL;
        float *dbv = ops_want(dbias) ? tensor_f32(dbias) : NULL;
        void *dap = ops_want(da) ? da->data : NULL, *dbp = ops_want(db) ? db->data : NULL;
        if (tensor_channels_last(a)) {
            linear_backward_cuda(dap, dw0, dbv, dout->data, a->data, w->data, g.B * S, (int)g.Ca, (int)g.OC, g.IC,
                                 ops_dt(dout));
            linear_backward_cuda(dbp, dw1, NULL, dout->data, b->data, w1, g.B * S, (int)g.Cb, (int)g.OC, g.IC,
                                 ops_dt(dout));
        } else {
            conv1x1_backward_cuda(dap, dw0, dbv, dout->data, a->data, w->data, (int)g.B, (int)g.Ca, (int)g.OC, S, g.IC,
                                  ops_dt(dout));
            conv1x1_backward_cuda(dbp, dw1, NULL, dout->data, b->data, w1, (int)g.B, (int)g.Cb, (int)g.OC, S, g.IC,
                                  ops_dt(dout));
        }
        return;
    }
    const Tensor *all[8] = {dout, a, b, w, da, db, dw, dbias};
    for (int i = 0; i < 8; i++) OPS_EXPECT_CPU(all[i], op);
    const float *gy = tensor_f32(dout), *xa = tensor_f32(a), *xb = tensor_f32(b), *wt = tensor_f32(w);
    if (ops_want(dbias)) ops_bias_grad_add(tensor_f32(dbias), gy, g.B, g.OC, S);
    // as conv2d_backward: the batch's weight gradient summed in dwb [OC, IC], then added to dw once
    float *dwb = ops_want(dw) ? ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)(g.OC * g.IC)) : NULL;
    for (int64_t n = 0; n < g.B; n++) {
        const float *gn = gy + n * g.OC * S, *an = xa + n * g.Ca * S, *bn = xb + n * g.Cb * S;
        if (dwb) {
            float beta = n ? 1.0f : 0.0f;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g.OC, (int)g.Ca, (int)S, 1.0f, gn, (int)S, an,
                        (int)S, beta, dwb, (int)g.IC);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g.OC, (int)g.Cb, (int)S, 1.0f, gn, (int)S, bn,
                        (int)S, beta, dwb + g.Ca, (int)g.IC);
        }
        if (ops_want(da)) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.Ca, (int)S, (int)g.OC, 1.0f, wt, (int)g.IC, gn,
                        (int)S, 0.0f, tensor_f32(da) + n * g.Ca * S, (int)S);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.Cb, (int)S, (int)g.OC, 1.0f, wt + g.Ca,
                        (int)g.IC, gn, (int)S, 0.0f, tensor_f32(db) + n * g.Cb * S, (int)S);
        }
    }
    if (dwb) {
        float *d = tensor_f32(dw);
#pragma omp parallel for simd if (g.OC * g.IC > 65536)
        for (int64_t i = 0; i < g.OC * g.IC; i++) d[i] += dwb[i];
    }
}
