// linear.c: fully connected layer (torch nn.Linear), forward and backward: GEMMs through OpenBLAS on the CPU,
// through cuBLASLt on the GPU (ops/cuda/cuda_linear.cu).
#include "ops_internal.h"

// The GPU path: every operand on the GPU, activations and weights in the storage dtype dt (f32 or bf16), parameter
// gradients in f32.
static void linear_expect_cuda(const Tensor *t, DType dt, int f32_only, const char *op) {
    if (!ops_want(t)) return;
    if (f32_only) OPS_EXPECT_CUDA_F32(t, op);
    else {
        OPS_EXPECT_CUDA(t, op);
        CHECK(t->dtype == dt, "", "%s: operands stored as %s and %s (one storage dtype per op)", op,
              dtype_name(t->dtype), dtype_name(dt));
    }
}

size_t linear_workspace_bytes(Device d, int64_t N, int64_t OC) {
    return d == DEVICE_CUDA ? linear_cuda_workspace_bytes(N, (int)OC) : 0;
}

// out [N, OC] = in [N, IC] @ w[OC, IC]^T + b[OC] (+ res [N, OC]). The GPU adds the residual in the GEMM's epilogue
// (cuBLASLt: beta = 1 with C = res, one rounding of the sum); the CPU adds it after the product, as add_forward would.
void linear_forward_residual(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, const Tensor *res) {
    int64_t N = tensor_rows(in), IC = in->shape[in->ndim - 1], OC = w->shape[0];
    tensor_expect_shape(w, "linear weight", OC, IC);
    CHECK(tensor_rows(out) == N && out->shape[out->ndim - 1] == OC, "", "linear: output has %lld x %lld, want %lld x %lld",
          (long long)tensor_rows(out), (long long)out->shape[out->ndim - 1], (long long)N, (long long)OC);
    if (ops_want(b)) tensor_expect_shape(b, "linear bias", OC);
    if (ops_want(res)) {
        ops_expect_same_numel(out, res, "linear residual");
        CHECK(res->data != out->data, "", "linear_forward_residual: the residual must not be the output");
    }
    if (OPS_ON_CUDA(out)) {
        const Tensor *ops[5] = {out, in, w, b, res};
        for (int i = 0; i < 5; i++) linear_expect_cuda(ops[i], out->dtype, 0, "linear_forward");
        linear_forward_cuda(out->data, in->data, w->data, ops_want(b) ? b->data : NULL,
                            ops_want(res) ? res->data : NULL, N, (int)IC, (int)OC, IC, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "linear_forward");
    OPS_EXPECT_CPU(in, "linear_forward");
    OPS_EXPECT_CPU(w, "linear_forward");
    float *o = tensor_f32(out);
    float beta = 0.0f;
    if (ops_want(b)) {
        const float *bb = tensor_f32(b);
#pragma omp parallel for if (N * OC > 65536)
        for (int64_t n = 0; n < N; n++) memcpy(o + n * OC, bb, sizeof(float) * (size_t)OC);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)OC, (int)IC, 1.0f, tensor_f32(in), (int)IC,
                tensor_f32(w), (int)IC, beta, o, (int)OC);
    if (ops_want(res)) add_forward(out, out, res);
}

void linear_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b) {
    linear_forward_residual(out, in, w, b, NULL);
}

// din [N, IC] = dout @ w (written); dw [OC, IC] += dout^T @ in; db [OC] += sum_n dout
void linear_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w) {
    int64_t N = tensor_rows(in), IC = in->shape[in->ndim - 1], OC = w->shape[0];
    tensor_expect_shape(w, "linear weight", OC, IC);
    CHECK(tensor_rows(dout) == N && dout->shape[dout->ndim - 1] == OC, "", "linear_backward: dout shape mismatch");
    if (ops_want(din)) CHECK(tensor_numel(din) == N * IC, "", "linear_backward: din shape mismatch");
    if (ops_want(dw)) tensor_expect_shape(dw, "linear weight grad", OC, IC);
    if (ops_want(db)) tensor_expect_shape(db, "linear bias grad", OC);
    if (OPS_ON_CUDA(dout)) {
        const Tensor *ops[4] = {dout, in, w, din};
        for (int i = 0; i < 4; i++) linear_expect_cuda(ops[i], dout->dtype, 0, "linear_backward");
        linear_expect_cuda(dw, dout->dtype, 1, "linear_backward");
        linear_expect_cuda(db, dout->dtype, 1, "linear_backward");
        linear_backward_cuda(ops_want(din) ? din->data : NULL, ops_want(dw) ? (float *)dw->data : NULL,
                             ops_want(db) ? (float *)db->data : NULL, dout->data, in->data, w->data, N, (int)IC,
                             (int)OC, IC, ops_dt(dout));
        return;
    }
    OPS_EXPECT_CPU(dout, "linear_backward");
    const float *g = tensor_f32(dout), *x = tensor_f32(in), *wt = tensor_f32(w);
    if (ops_want(din))
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)IC, (int)OC, 1.0f, g, (int)OC, wt,
                    (int)IC, 0.0f, tensor_f32(din), (int)IC);
    if (ops_want(dw))
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)IC, (int)N, 1.0f, g, (int)OC, x, (int)IC,
                    1.0f, tensor_f32(dw), (int)IC);
    if (ops_want(db)) ops_bias_grad_add(tensor_f32(db), g, N, OC, 1);
}
