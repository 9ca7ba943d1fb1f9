// arith.c: elementwise arithmetic: residual add, broadcast add of per-channel values, axpy, scale, fill, dtype casts
// and the classifier-free-guidance combine. The CUDA branches run the kernels of ops/cuda/cuda_arith.cu (the guidance
// combine: cuda_train.cu) on f32 or bf16 storage (fp32 compute).
#include "ops_internal.h"

// out = a + b (out may alias a or b)
void add_forward(Tensor *out, const Tensor *a, const Tensor *b) {
    ops_expect_same_numel(out, a, "add_forward");
    ops_expect_same_numel(out, b, "add_forward");
    int64_t n = tensor_numel(out);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "add_forward");
        OPS_EXPECT_CUDA(a, "add_forward");
        OPS_EXPECT_CUDA(b, "add_forward");
        CHECK(a->dtype == out->dtype && b->dtype == out->dtype, "", "add_forward: operands of different dtypes");
        ops_expect_same_layout(out, a, "add_forward");
        ops_expect_same_layout(out, b, "add_forward");
        add_forward_cuda(out->data, a->data, b->data, n, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "add_forward");
    OPS_EXPECT_CPU(a, "add_forward");
    OPS_EXPECT_CPU(b, "add_forward");
    float *o = tensor_f32(out);
    const float *x = tensor_f32(a), *y = tensor_f32(b);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) o[i] = x[i] + y[i];
}

// da = dout, db = dout (written; a copy, or a cast when the gradient is stored in another dtype)
void add_backward(Tensor *da, Tensor *db, const Tensor *dout) {
    if (ops_want(da) && da->data != dout->data) {
        ops_expect_same_numel(da, dout, "add_backward");
        tensor_cast(da, dout);
    }
    if (ops_want(db) && db->data != dout->data) {
        ops_expect_same_numel(db, dout, "add_backward");
        tensor_cast(db, dout);
    }
}

// out[b, c, *] = x[b, c, *] + v[b, c]
void add_bcast_forward(Tensor *out, const Tensor *x, const Tensor *v) {
    ops_expect_same_numel(out, x, "add_bcast_forward");
    int64_t B = x->shape[0], C = x->shape[1], S = tensor_numel(x) / (B * C);
    tensor_expect_shape(v, "add_bcast vector", B, C);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "add_bcast_forward");
        OPS_EXPECT_CUDA(x, "add_bcast_forward");
        OPS_EXPECT_CUDA(v, "add_bcast_forward");
        CHECK(x->dtype == out->dtype && v->dtype == out->dtype, "", "add_bcast_forward: operands of different dtypes");
        ops_expect_same_layout(out, x, "add_bcast_forward");
        if (tensor_channels_last(x)) add_bcast_nhwc_forward_cuda(out->data, x->data, v->data, B, S, C, ops_dt(out));
        else add_bcast_forward_cuda(out->data, x->data, v->data, B * C, S, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "add_bcast_forward");
    OPS_EXPECT_CPU(x, "add_bcast_forward");
    OPS_EXPECT_CPU(v, "add_bcast_forward");
    float *o = tensor_f32(out);
    const float *xi = tensor_f32(x), *vi = tensor_f32(v);
#pragma omp parallel for if (B * C * S > 65536)
    for (int64_t bc = 0; bc < B * C; bc++) {
        float add = vi[bc];
        for (int64_t s = 0; s < S; s++) o[bc * S + s] = xi[bc * S + s] + add;
    }
}

// dx = dout (written); dv[b, c] = sum_s dout[b, c, s] (written). Either device: the copy and the sum are ops.
void add_bcast_backward(Tensor *dx, Tensor *dv, const Tensor *dout) {
    int64_t B = dout->shape[0], C = dout->shape[1];
    if (ops_want(dx) && dx->data != dout->data) {
        ops_expect_same_numel(dx, dout, "add_bcast_backward");
        tensor_cast(dx, dout);
    }
    if (ops_want(dv)) {
        tensor_expect_shape(dv, "add_bcast vector grad", B, C);
        if (tensor_channels_last(dout)) { // channels last: the sum over the pixels of each channel column
            OPS_EXPECT_CUDA(dv, "add_bcast_backward");
            ops_expect_same_dtype(dv, dout, "add_bcast_backward");
            add_bcast_nhwc_backward_cuda(dv->data, dout->data, B, tensor_numel(dout) / (B * C), C, ops_dt(dv));
        } else {
            reduce_forward(dv, dout, REDUCE_SUM); // the sum over s of each (b, c)
        }
    }
}

void tensor_axpy(Tensor *y, float alpha, const Tensor *x) {
    ops_expect_same_numel(y, x, "tensor_axpy");
    int64_t n = tensor_numel(y);
    if (OPS_ON_CUDA(y)) {
        OPS_EXPECT_CUDA(y, "tensor_axpy");
        OPS_EXPECT_CUDA(x, "tensor_axpy");
        ops_expect_same_layout(y, x, "tensor_axpy");
        axpy_cuda(y->data, ops_dt(y), alpha, x->data, ops_dt(x), n);
        return;
    }
    OPS_EXPECT_CPU(y, "tensor_axpy");
    OPS_EXPECT_CPU(x, "tensor_axpy");
    float *yy = tensor_f32(y);
    const float *xx = tensor_f32(x);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) yy[i] += alpha * xx[i];
}

void tensor_scale(Tensor *y, float alpha) {
    int64_t n = tensor_numel(y);
    if (OPS_ON_CUDA(y)) {
        OPS_EXPECT_CUDA(y, "tensor_scale");
        scale_cuda(y->data, alpha, n, ops_dt(y));
        return;
    }
    OPS_EXPECT_CPU(y, "tensor_scale");
    float *yy = tensor_f32(y);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) yy[i] *= alpha;
}

void tensor_fill(Tensor *y, float value) {
    int64_t n = tensor_numel(y);
    if (OPS_ON_CUDA(y)) {
        OPS_EXPECT_CUDA(y, "tensor_fill");
        fill_cuda(y->data, value, n, ops_dt(y));
        return;
    }
    OPS_EXPECT_CPU(y, "tensor_fill");
    float *yy = tensor_f32(y);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) yy[i] = value;
}

// dst = src converted to dst's dtype on one device (f32 <-> bf16 round to nearest even; the same dtype copies) and,
// for 4-D tensors, to dst's memory layout (NCHW <-> channels last: a transpose per sample, GPU only)
void tensor_cast(Tensor *dst, const Tensor *src) {
    ops_expect_same_numel(dst, src, "tensor_cast");
    CHECK(dst->device == src->device, "copy between devices with tensor_copy", "tensor_cast: %s to %s",
          device_name(src->device), device_name(dst->device));
    if (dst->ndim == 4 && src->ndim == 4 && tensor_channels_last(dst) != tensor_channels_last(src)) {
        tensor_expect_shape(dst, "tensor_cast output", src->shape[0], src->shape[1], src->shape[2], src->shape[3]);
        OPS_EXPECT_CUDA(dst, "tensor_cast");
        OPS_EXPECT_CUDA(src, "tensor_cast");
        int64_t B = src->shape[0], C = src->shape[1], S = src->shape[2] * src->shape[3];
        if (tensor_channels_last(dst)) // per sample [C, S] -> [S, C]
            transpose_cast_cuda(dst->data, ops_dt(dst), src->data, ops_dt(src), B, C, S);
        else transpose_cast_cuda(dst->data, ops_dt(dst), src->data, ops_dt(src), B, S, C);
        return;
    }
    if (dst->dtype == src->dtype) { // a plain copy, on the device's stream
        tensor_copy(dst, src);
        return;
    }
    int64_t n = tensor_numel(dst);
    if (OPS_ON_CUDA(dst)) {
        OPS_EXPECT_CUDA(dst, "tensor_cast");
        OPS_EXPECT_CUDA(src, "tensor_cast");
        cast_cuda(dst->data, ops_dt(dst), src->data, ops_dt(src), n);
        return;
    }
    CHECK((dst->dtype == DTYPE_F32 || dst->dtype == DTYPE_BF16) && (src->dtype == DTYPE_F32 || src->dtype == DTYPE_BF16),
          "", "tensor_cast: %s to %s is not supported", dtype_name(src->dtype), dtype_name(dst->dtype));
    dtype_convert(dst->data, dst->dtype, src->data, src->dtype, n);
}

// Number of guidance branches (1 or 2) of rows [k B, *] against out [B, *].
static int cfg_branches(const Tensor *rows, const Tensor *out, const char *op) {
    char a[96], b[96];
    int64_t n = tensor_numel(out), r = tensor_numel(rows);
    CHECK(n > 0 && (r == n || r == 2 * n), "", "%s: %s is neither one nor two branches of %s", op,
          tensor_shape_str(rows, a, sizeof a), tensor_shape_str(out, b, sizeof b));
    return (int)(r / n);
}

// out = u + w (c - u) for rows = [u | c]; out = rows with one branch
void cfg_combine_forward(Tensor *out, const Tensor *rows, float w) {
    if (cfg_branches(rows, out, "cfg_combine_forward") == 1) {
        tensor_cast(out, rows);
        return;
    }
    int64_t n = tensor_numel(out);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "cfg_combine_forward");
        OPS_EXPECT_CUDA(rows, "cfg_combine_forward");
        ops_expect_same_dtype(out, rows, "cfg_combine_forward");
        cfg_combine_forward_cuda(out->data, rows->data, w, n, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "cfg_combine_forward");
    OPS_EXPECT_CPU(rows, "cfg_combine_forward");
    float *o = tensor_f32(out);
    const float *er = tensor_f32(rows);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) o[i] = er[i] + w * (er[n + i] - er[i]); // uncond + w (cond - uncond)
}

// drows = [(1 - w) scale dout | w scale dout] (written), or scale dout with one branch
void cfg_combine_backward(Tensor *drows, const Tensor *dout, float w, double scale) {
    int two = cfg_branches(drows, dout, "cfg_combine_backward") == 2;
    int64_t n = tensor_numel(dout);
    const double ca = two ? (1.0 - (double)w) * scale : scale, cb = (double)w * scale;
    if (OPS_ON_CUDA(drows)) {
        OPS_EXPECT_CUDA(drows, "cfg_combine_backward");
        OPS_EXPECT_CUDA(dout, "cfg_combine_backward");
        ops_expect_same_dtype(drows, dout, "cfg_combine_backward");
        cfg_combine_backward_cuda(drows->data, dout->data, ca, cb, two, n, ops_dt(drows));
        return;
    }
    OPS_EXPECT_CPU(drows, "cfg_combine_backward");
    OPS_EXPECT_CPU(dout, "cfg_combine_backward");
    float *dr = tensor_f32(drows);
    const float *d = tensor_f32(dout);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        dr[i] = (float)(ca * d[i]);
        if (two) dr[n + i] = (float)(cb * d[i]);
    }
}
