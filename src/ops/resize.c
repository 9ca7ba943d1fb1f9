// resize.c: the differentiable image preprocessing of the CLIP-based rewards: resize exactly as
// torch.nn.functional.interpolate computes it (bilinear or bicubic, align_corners=False, antialias off or on) and its
// exact adjoint, centre crop, the [-1, 1] -> [0, 1] clamp and the per-channel mean/std normalisation.
//
// A resize is separable: out = Wy . in . Wx^T per image plane, where Wy [OH, H] and Wx [OW, W] hold each output
// pixel's taps. The tap tables follow ATen's index/weight computation (UpSample.h, UpSampleKernel.cpp) in fp32:
//   no antialias: src = scale (i + 1/2) - 1/2; bilinear taps floor(src) and the next (src clamped at 0 first),
//                 bicubic taps floor(src) - 1 .. + 2 with A = -0.75 and border replicate;
//   antialias:    Pillow's filter over [center - support, center + support), support = (1 | 2) max(scale, 1),
//                 filter argument scaled by 1 / max(scale, 1), weights normalised to sum 1 (bicubic a = -0.5).
// The forward runs the width pass then the height pass; the backward is the transpose of each, in reverse order.
#include <math.h>

#include "ops_internal.h"

const char *resize_kernel_name(ResizeKernel k) { return k == RESIZE_BICUBIC ? "bicubic" : "bilinear"; }

// Taps of one axis: output i reads in[start[i] + j] with weight w[i * max_taps + j], j < count[i].
typedef struct {
    int64_t n_out, max_taps;
    int64_t *start, *count;
    float *w;
} ResizeTaps;

static float cubic_near(float x, float A) { return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f; }      // |x| <= 1
static float cubic_far(float x, float A) { return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A; } // 1 < |x| < 2

static float aa_filter(float x, ResizeKernel k) {
    if (x < 0.0f) x = -x;
    if (k == RESIZE_BILINEAR) return x < 1.0f ? 1.0f - x : 0.0f;
    if (x < 1.0f) return cubic_near(x, -0.5f);
    if (x < 2.0f) return cubic_far(x, -0.5f);
    return 0.0f;
}

// Adds weight v at input index j (clamped to [0, n_in)) to output i's window starting at start.
static void taps_add(ResizeTaps *t, int64_t i, int64_t j, int64_t n_in, float v) {
    j = j < 0 ? 0 : j >= n_in ? n_in - 1 : j;
    t->w[i * t->max_taps + (j - t->start[i])] += v;
}

static float taps_support(int64_t n_in, int64_t n_out, ResizeKernel k, int antialias) {
    float scale = (float)n_in / (float)n_out;
    return (k == RESIZE_BICUBIC ? 2.0f : 1.0f) * (antialias && scale >= 1.0f ? scale : 1.0f);
}

static int64_t taps_max(int64_t n_in, int64_t n_out, ResizeKernel k, int antialias) {
    int64_t m = antialias ? (int64_t)ceilf(taps_support(n_in, n_out, k, antialias)) * 2 + 1 : 4;
    return m > n_in ? n_in : m;
}

static ResizeTaps taps_make(int64_t n_in, int64_t n_out, ResizeKernel k, int antialias) {
    ResizeTaps t = {.n_out = n_out};
    float scale = (float)n_in / (float)n_out; // area_pixel_compute_scale, align_corners = False
    float support = taps_support(n_in, n_out, k, antialias);
    t.max_taps = taps_max(n_in, n_out, k, antialias);
    t.start = xcalloc((size_t)n_out, sizeof *t.start);
    t.count = xcalloc((size_t)n_out, sizeof *t.count);
    t.w = xcalloc((size_t)(n_out * t.max_taps), sizeof *t.w);
    for (int64_t i = 0; i < n_out; i++) {
        if (antialias) {
            float center = scale * ((float)i + 0.5f), invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
            int64_t lo = (int64_t)(center - support + 0.5f), hi = (int64_t)(center + support + 0.5f);
            lo = lo < 0 ? 0 : lo;
            hi = hi > n_in ? n_in : hi;
            CHECK(hi - lo <= t.max_taps && hi > lo, "", "resize: %lld taps (at most %lld)", (long long)(hi - lo),
                  (long long)t.max_taps);
            t.start[i] = lo, t.count[i] = hi - lo;
            float total = 0.0f, *w = t.w + i * t.max_taps;
            for (int64_t j = 0; j < hi - lo; j++) {
                w[j] = aa_filter(((float)(j + lo) - center + 0.5f) * invscale, k);
                total += w[j];
            }
            if (total != 0.0f)
                for (int64_t j = 0; j < hi - lo; j++) w[j] /= total;
            continue;
        }
        float src = scale * ((float)i + 0.5f) - 0.5f;
        if (k == RESIZE_BILINEAR) {
            if (src < 0.0f) src = 0.0f;
            int64_t i0 = (int64_t)floorf(src);
            if (i0 > n_in - 1) i0 = n_in - 1;
            float l = src - (float)i0;
            t.start[i] = i0, t.count[i] = i0 < n_in - 1 ? 2 : 1;
            taps_add(&t, i, i0, n_in, 1.0f - l);
            taps_add(&t, i, i0 + 1, n_in, l);
        } else {
            int64_t f = (int64_t)floorf(src);
            float x = src - (float)f;
            int64_t lo = f - 1 < 0 ? 0 : f - 1 > n_in - 1 ? n_in - 1 : f - 1;
            int64_t hi = f + 2 < 0 ? 0 : f + 2 > n_in - 1 ? n_in - 1 : f + 2;
            t.start[i] = lo, t.count[i] = hi - lo + 1;
            const float A = -0.75f;
            taps_add(&t, i, f - 1, n_in, cubic_far(x + 1.0f, A));
            taps_add(&t, i, f, n_in, cubic_near(x, A));
            taps_add(&t, i, f + 1, n_in, cubic_near(1.0f - x, A));
            taps_add(&t, i, f + 2, n_in, cubic_far(2.0f - x, A));
        }
    }
    return t;
}

static void taps_free(ResizeTaps *t) {
    free(t->start);
    free(t->count);
    free(t->w);
}

// ---------------------------------------------------------------------------------------------------------------
// The GPU reads the same tables, packed in one host blob of 4-byte words per axis: start[n_out], count[n_out],
// lo[n_in], hi[n_in] (the outputs lo[c] <= i < hi[c] read input c: the backward gathers them) and w[n_out max_taps].
static int64_t taps_words(int64_t n_in, int64_t n_out, ResizeKernel k, int antialias) {
    return 2 * n_out + 2 * n_in + n_out * taps_max(n_in, n_out, k, antialias);
}

static void taps_pack(int32_t *blob, int64_t off, int64_t n_in, int64_t n_out, ResizeKernel k, int antialias,
                      ResizeAxisCuda *a) {
    ResizeTaps t = taps_make(n_in, n_out, k, antialias);
    *a = (ResizeAxisCuda){.max_taps = t.max_taps, .start = off, .count = off + n_out, .lo = off + 2 * n_out,
                          .hi = off + 2 * n_out + n_in, .w = off + 2 * n_out + 2 * n_in};
    int32_t *lo = blob + a->lo, *hi = blob + a->hi;
    for (int64_t c = 0; c < n_in; c++) lo[c] = (int32_t)n_out, hi[c] = 0;
    for (int64_t i = 0; i < n_out; i++) {
        blob[a->start + i] = (int32_t)t.start[i], blob[a->count + i] = (int32_t)t.count[i];
        for (int64_t j = 0; j < t.count[i]; j++) {
            int64_t c = t.start[i] + j;
            if (i < lo[c]) lo[c] = (int32_t)i;
            if (i + 1 > hi[c]) hi[c] = (int32_t)(i + 1);
        }
    }
    for (int64_t c = 0; c < n_in; c++)
        if (lo[c] > hi[c]) lo[c] = hi[c] = 0; // read by no output
    memcpy(blob + a->w, t.w, sizeof(float) * (size_t)(n_out * t.max_taps));
    taps_free(&t);
}

// GPU scratch of resize_forward/backward between in (din) and out (dout): 0 on the CPU
size_t resize_workspace_bytes(const Tensor *in, const Tensor *out, ResizeKernel k, int antialias) {
    if (in->device != DEVICE_CUDA) return 0;
    int64_t H = in->shape[2], W = in->shape[3], OH = out->shape[2], OW = out->shape[3];
    size_t words = (size_t)(taps_words(W, OW, k, antialias) + taps_words(H, OH, k, antialias));
    return resize_workspace_bytes_cuda(in->shape[0] * in->shape[1], H, OW, words * 4);
}

// The CUDA branch of either direction: small = in (din), big = out (dout) of the forward's shapes.
static void resize_cuda(Tensor *dst, const Tensor *src, const Tensor *in, const Tensor *out, ResizeKernel k,
                        int antialias, int backward, const char *op) {
    OPS_EXPECT_CUDA(dst, op);
    OPS_EXPECT_CUDA(src, op);
    ops_expect_same_dtype(dst, src, op);
    int64_t P = in->shape[0] * in->shape[1], H = in->shape[2], W = in->shape[3], OH = out->shape[2],
            OW = out->shape[3], wx = taps_words(W, OW, k, antialias), wy = taps_words(H, OH, k, antialias);
    int32_t *blob = xcalloc((size_t)(wx + wy), sizeof *blob);
    ResizeAxisCuda ax, ay;
    taps_pack(blob, 0, W, OW, k, antialias, &ax);
    taps_pack(blob, wx, H, OH, k, antialias, &ay);
    void *ws = ops_workspace(DEVICE_CUDA, resize_workspace_bytes(in, out, k, antialias));
    size_t tb = sizeof *blob * (size_t)(wx + wy);
    if (backward) resize_backward_cuda(dst->data, src->data, P, H, W, OH, OW, blob, tb, ax, ay, ws, ops_dt(dst));
    else resize_forward_cuda(dst->data, src->data, P, H, W, OH, OW, blob, tb, ax, ay, ws, ops_dt(dst));
    free(blob); // the copy on the stream was staged before it returned
}

static void resize_check(const Tensor *small_or_in, const Tensor *out, const char *op) {
    char a[96], b[96];
    CHECK(small_or_in->ndim == 4 && out->ndim == 4 && small_or_in->shape[0] == out->shape[0] &&
              small_or_in->shape[1] == out->shape[1] && out->shape[2] > 0 && out->shape[3] > 0 &&
              small_or_in->shape[2] > 0 && small_or_in->shape[3] > 0,
          "", "%s: want NCHW tensors with the same N and C, got %s and %s", op,
          tensor_shape_str(small_or_in, a, sizeof a), tensor_shape_str(out, b, sizeof b));
}

// out [B, C, OH, OW] = resize of in [B, C, H, W]
void resize_forward(Tensor *out, const Tensor *in, ResizeKernel k, int antialias) {
    resize_check(in, out, "resize_forward");
    if (OPS_ON_CUDA(out)) {
        resize_cuda(out, in, in, out, k, antialias, 0, "resize_forward");
        return;
    }
    OPS_EXPECT_CPU(out, "resize_forward");
    OPS_EXPECT_CPU(in, "resize_forward");
    int64_t P = in->shape[0] * in->shape[1], H = in->shape[2], W = in->shape[3], OH = out->shape[2],
            OW = out->shape[3];
    ResizeTaps tx = taps_make(W, OW, k, antialias), ty = taps_make(H, OH, k, antialias);
    float *tmp = ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)(P * H * OW)); // [P, H, OW]
    const float *x = tensor_f32(in);
    float *o = tensor_f32(out);
#pragma omp parallel for if (P * H * OW > 16384)
    for (int64_t r = 0; r < P * H; r++) { // width pass, row r of all planes
        const float *src = x + r * W;
        for (int64_t i = 0; i < OW; i++) {
            const float *w = tx.w + i * tx.max_taps, *s = src + tx.start[i];
            float acc = 0.0f;
            for (int64_t j = 0; j < tx.count[i]; j++) acc += w[j] * s[j];
            tmp[r * OW + i] = acc;
        }
    }
#pragma omp parallel for if (P * OH * OW > 16384)
    for (int64_t r = 0; r < P * OH; r++) { // height pass
        int64_t p = r / OH, i = r % OH;
        const float *w = ty.w + i * ty.max_taps;
        float *dst = o + r * OW;
        for (int64_t c = 0; c < OW; c++) dst[c] = 0.0f;
        for (int64_t j = 0; j < ty.count[i]; j++) {
            const float *s = tmp + (p * H + ty.start[i] + j) * OW;
            for (int64_t c = 0; c < OW; c++) dst[c] += w[j] * s[c];
        }
    }
    taps_free(&tx);
    taps_free(&ty);
}

// din [B, C, H, W] = Wy^T . dout . Wx (written): the exact adjoint of resize_forward
void resize_backward(Tensor *din, const Tensor *dout, ResizeKernel k, int antialias) {
    if (!ops_want(din)) return;
    resize_check(din, dout, "resize_backward");
    if (OPS_ON_CUDA(din)) {
        resize_cuda(din, dout, din, dout, k, antialias, 1, "resize_backward");
        return;
    }
    OPS_EXPECT_CPU(din, "resize_backward");
    OPS_EXPECT_CPU(dout, "resize_backward");
    int64_t P = din->shape[0] * din->shape[1], H = din->shape[2], W = din->shape[3], OH = dout->shape[2],
            OW = dout->shape[3];
    ResizeTaps tx = taps_make(W, OW, k, antialias), ty = taps_make(H, OH, k, antialias);
    float *tmp = ops_workspace(DEVICE_CPU, sizeof(float) * (size_t)(P * H * OW)); // [P, H, OW]
    const float *g = tensor_f32(dout);
    float *d = tensor_f32(din);
    memset(tmp, 0, sizeof(float) * (size_t)(P * H * OW));
#pragma omp parallel for if (P * OH * OW > 16384)
    for (int64_t p = 0; p < P; p++) // height pass transposed: one plane per thread (rows scatter within a plane)
        for (int64_t i = 0; i < OH; i++) {
            const float *w = ty.w + i * ty.max_taps, *src = g + (p * OH + i) * OW;
            for (int64_t j = 0; j < ty.count[i]; j++) {
                float *dst = tmp + (p * H + ty.start[i] + j) * OW;
                for (int64_t c = 0; c < OW; c++) dst[c] += w[j] * src[c];
            }
        }
#pragma omp parallel for if (P * H * W > 16384)
    for (int64_t r = 0; r < P * H; r++) { // width pass transposed
        float *dst = d + r * W;
        const float *src = tmp + r * OW;
        for (int64_t c = 0; c < W; c++) dst[c] = 0.0f;
        for (int64_t i = 0; i < OW; i++) {
            const float *w = tx.w + i * tx.max_taps;
            float *s = dst + tx.start[i];
            for (int64_t j = 0; j < tx.count[i]; j++) s[j] += w[j] * src[i];
        }
    }
    taps_free(&tx);
    taps_free(&ty);
}

// ---------------------------------------------------------------------------------------------------------------
// out [B, C, OH, OW] = in[:, :, top : top + OH, left : left + OW]
static void crop_check(const Tensor *in, const Tensor *out, int top, int left, const char *op) {
    char a[96], b[96];
    CHECK(in->ndim == 4 && out->ndim == 4 && in->shape[0] == out->shape[0] && in->shape[1] == out->shape[1] &&
              top >= 0 && left >= 0 && top + out->shape[2] <= in->shape[2] && left + out->shape[3] <= in->shape[3],
          "", "%s: %s at (%d, %d) does not fit in %s", op, tensor_shape_str(out, a, sizeof a), top, left,
          tensor_shape_str(in, b, sizeof b));
}

void crop2d_forward(Tensor *out, const Tensor *in, int top, int left) {
    crop_check(in, out, top, left, "crop2d_forward");
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "crop2d_forward");
        OPS_EXPECT_CUDA(in, "crop2d_forward");
        ops_expect_same_dtype(out, in, "crop2d_forward");
        crop2d_forward_cuda(out->data, in->data, in->shape[0] * in->shape[1], in->shape[2], in->shape[3],
                            out->shape[2], out->shape[3], top, left, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "crop2d_forward");
    OPS_EXPECT_CPU(in, "crop2d_forward");
    int64_t P = in->shape[0] * in->shape[1], H = in->shape[2], W = in->shape[3], OH = out->shape[2],
            OW = out->shape[3];
    const float *x = tensor_f32(in);
    float *o = tensor_f32(out);
#pragma omp parallel for if (P * OH * OW > 65536)
    for (int64_t r = 0; r < P * OH; r++)
        memcpy(o + r * OW, x + ((r / OH) * H + top + r % OH) * W + left, sizeof(float) * (size_t)OW);
}

// din [B, C, H, W] = dout placed at (top, left), zero elsewhere (written)
void crop2d_backward(Tensor *din, const Tensor *dout, int top, int left) {
    if (!ops_want(din)) return;
    crop_check(din, dout, top, left, "crop2d_backward");
    if (OPS_ON_CUDA(din)) {
        OPS_EXPECT_CUDA(din, "crop2d_backward");
        OPS_EXPECT_CUDA(dout, "crop2d_backward");
        ops_expect_same_dtype(din, dout, "crop2d_backward");
        crop2d_backward_cuda(din->data, dout->data, din->shape[0] * din->shape[1], din->shape[2], din->shape[3],
                             dout->shape[2], dout->shape[3], top, left, ops_dt(din));
        return;
    }
    OPS_EXPECT_CPU(din, "crop2d_backward");
    OPS_EXPECT_CPU(dout, "crop2d_backward");
    int64_t P = din->shape[0] * din->shape[1], H = din->shape[2], W = din->shape[3], OH = dout->shape[2],
            OW = dout->shape[3];
    float *d = tensor_f32(din);
    const float *g = tensor_f32(dout);
    memset(d, 0, tensor_bytes(din));
#pragma omp parallel for if (P * OH * OW > 65536)
    for (int64_t r = 0; r < P * OH; r++)
        memcpy(d + ((r / OH) * H + top + r % OH) * W + left, g + r * OW, sizeof(float) * (size_t)OW);
}

// ---------------------------------------------------------------------------------------------------------------
// out = min(max(a x + b, lo), hi), elementwise (out may alias in)
void clamp_affine_forward(Tensor *out, const Tensor *in, float a, float b, float lo, float hi) {
    ops_expect_same_numel(out, in, "clamp_affine_forward");
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "clamp_affine_forward");
        OPS_EXPECT_CUDA(in, "clamp_affine_forward");
        ops_expect_same_dtype(out, in, "clamp_affine_forward");
        clamp_affine_forward_cuda(out->data, in->data, tensor_numel(in), a, b, lo, hi, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "clamp_affine_forward");
    OPS_EXPECT_CPU(in, "clamp_affine_forward");
    int64_t n = tensor_numel(in);
    const float *x = tensor_f32(in);
    float *o = tensor_f32(out);
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float v = a * x[i] + b;
        o[i] = v < lo ? lo : v > hi ? hi : v;
    }
}

// din = a dout where lo < a x + b < hi, else 0 (torch's clamp passes no gradient at the bounds themselves)
void clamp_affine_backward(Tensor *din, const Tensor *dout, const Tensor *in, float a, float b, float lo, float hi) {
    if (!ops_want(din)) return;
    ops_expect_same_numel(din, in, "clamp_affine_backward");
    ops_expect_same_numel(dout, in, "clamp_affine_backward");
    if (OPS_ON_CUDA(din)) {
        OPS_EXPECT_CUDA(din, "clamp_affine_backward");
        OPS_EXPECT_CUDA(dout, "clamp_affine_backward");
        OPS_EXPECT_CUDA(in, "clamp_affine_backward");
        ops_expect_same_dtype(din, dout, "clamp_affine_backward");
        ops_expect_same_dtype(din, in, "clamp_affine_backward");
        clamp_affine_backward_cuda(din->data, dout->data, in->data, tensor_numel(in), a, b, lo, hi, ops_dt(din));
        return;
    }
    OPS_EXPECT_CPU(din, "clamp_affine_backward");
    OPS_EXPECT_CPU(dout, "clamp_affine_backward");
    OPS_EXPECT_CPU(in, "clamp_affine_backward");
    int64_t n = tensor_numel(in);
    const float *x = tensor_f32(in), *g = tensor_f32(dout);
    float *d = tensor_f32(din);
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float v = a * x[i] + b;
        d[i] = v > lo && v < hi ? a * g[i] : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// out[b, c, *] = (in[b, c, *] - mean[c]) / std[c]   (torchvision Normalize; out may alias in)
static int64_t normalize_plane(const Tensor *t, const Tensor *other, const char *op) {
    char a[96];
    ops_expect_same_numel(t, other, op);
    CHECK(t->ndim >= 2 && t->shape[1] <= 4, "", "%s: want [B, C <= 4, ...], got %s", op,
          tensor_shape_str(t, a, sizeof a));
    return tensor_numel(t) / (t->shape[0] * t->shape[1]);
}

void normalize_forward(Tensor *out, const Tensor *in, const float *mean, const float *std) {
    int64_t S = normalize_plane(in, out, "normalize_forward"), C = in->shape[1], P = in->shape[0] * C;
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "normalize_forward");
        OPS_EXPECT_CUDA(in, "normalize_forward");
        ops_expect_same_dtype(out, in, "normalize_forward");
        normalize_forward_cuda(out->data, in->data, mean, std, P, C, S, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "normalize_forward");
    OPS_EXPECT_CPU(in, "normalize_forward");
    const float *x = tensor_f32(in);
    float *o = tensor_f32(out);
#pragma omp parallel for if (P * S > 65536)
    for (int64_t p = 0; p < P; p++) {
        float m = mean[p % C], s = std[p % C];
        for (int64_t i = 0; i < S; i++) o[p * S + i] = (x[p * S + i] - m) / s;
    }
}

// din[b, c, *] = dout[b, c, *] / std[c] (written)
void normalize_backward(Tensor *din, const Tensor *dout, const float *std) {
    if (!ops_want(din)) return;
    int64_t S = normalize_plane(din, dout, "normalize_backward"), C = din->shape[1], P = din->shape[0] * C;
    if (OPS_ON_CUDA(din)) {
        OPS_EXPECT_CUDA(din, "normalize_backward");
        OPS_EXPECT_CUDA(dout, "normalize_backward");
        ops_expect_same_dtype(din, dout, "normalize_backward");
        normalize_backward_cuda(din->data, dout->data, std, P, C, S, ops_dt(din));
        return;
    }
    OPS_EXPECT_CPU(din, "normalize_backward");
    OPS_EXPECT_CPU(dout, "normalize_backward");
    const float *g = tensor_f32(dout);
    float *d = tensor_f32(din);
#pragma omp parallel for if (P * S > 65536)
    for (int64_t p = 0; p < P; p++) {
        float s = std[p % C];
        for (int64_t i = 0; i < S; i++) d[p * S + i] = g[p * S + i] / s;
    }
}
