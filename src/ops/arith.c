// arith.c: elementwise arithmetic: residual add, broadcast add of per-channel values, axpy, scale, fill.
#include "ops_internal.h"

// out = a + b (out may alias a or b)
void add_forward(Tensor *out, const Tensor *a, const Tensor *b) {
    ops_expect_same_numel(out, a, "add_forward");
    ops_expect_same_numel(out, b, "add_forward");
    int64_t n = tensor_numel(out);
    if (OPS_ON_CUDA(out)) {
        add_forward_cuda(out->data, a->data, b->data, n);
        return;
    }
    OPS_EXPECT_CPU(out, "add_forward");
    float *o = tensor_f32(out);
    const float *x = tensor_f32(a), *y = tensor_f32(b);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) o[i] = x[i] + y[i];
}

// da = dout, db = dout (written)
void add_backward(Tensor *da, Tensor *db, const Tensor *dout) {
    if (ops_want(da) && da->data != dout->data) {
        ops_expect_same_numel(da, dout, "add_backward");
        tensor_copy(da, dout);
    }
    if (ops_want(db) && db->data != dout->data) {
        ops_expect_same_numel(db, dout, "add_backward");
        tensor_copy(db, dout);
    }
}

// out[b, c, *] = x[b, c, *] + v[b, c]
void add_bcast_forward(Tensor *out, const Tensor *x, const Tensor *v) {
    ops_expect_same_numel(out, x, "add_bcast_forward");
    int64_t B = x->shape[0], C = x->shape[1], S = tensor_numel(x) / (B * C);
    tensor_expect_shape(v, "add_bcast vector", B, C);
    OPS_EXPECT_CPU(out, "add_bcast_forward");
    float *o = tensor_f32(out);
    const float *xi = tensor_f32(x), *vi = tensor_f32(v);
#pragma omp parallel for if (B * C * S > 65536)
    for (int64_t bc = 0; bc < B * C; bc++) {
        float add = vi[bc];
        for (int64_t s = 0; s < S; s++) o[bc * S + s] = xi[bc * S + s] + add;
    }
}

// dx = dout (written); dv[b, c] = sum_s dout[b, c, s] (written)
void add_bcast_backward(Tensor *dx, Tensor *dv, const Tensor *dout) {
    int64_t B = dout->shape[0], C = dout->shape[1];
    OPS_EXPECT_CPU(dout, "add_bcast_backward");
    if (ops_want(dx) && dx->data != dout->data) {
        ops_expect_same_numel(dx, dout, "add_bcast_backward");
        tensor_copy(dx, dout);
    }
    if (ops_want(dv)) {
        tensor_expect_shape(dv, "add_bcast vector grad", B, C);
        reduce_forward(dv, dout, REDUCE_SUM); // the sum over s of each (b, c)
    }
}

void tensor_axpy(Tensor *y, float alpha, const Tensor *x) {
    ops_expect_same_numel(y, x, "tensor_axpy");
    int64_t n = tensor_numel(y);
    if (OPS_ON_CUDA(y)) {
        axpy_cuda(y->data, alpha, x->data, n);
        return;
    }
    OPS_EXPECT_CPU(y, "tensor_axpy");
    float *yy = tensor_f32(y);
    const float *xx = tensor_f32(x);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) yy[i] += alpha * xx[i];
}

void tensor_scale(Tensor *y, float alpha) {
    int64_t n = tensor_numel(y);
    if (OPS_ON_CUDA(y)) {
        scale_cuda(y->data, alpha, n);
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
        fill_cuda(y->data, value, n);
        return;
    }
    OPS_EXPECT_CPU(y, "tensor_fill");
    float *yy = tensor_f32(y);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) yy[i] = value;
}
