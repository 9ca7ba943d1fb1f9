// ops_internal.h: helpers shared by the op implementations (not part of the public op API).
#pragma once
#include <cblas.h>
#include <string.h>

#include "../core/common.h"
#include "../core/device.h"
#include "ops.h"
#include "cuda/cuda_api.h"

// The CPU activations over n contiguous fp32 values, one thread (activation.c): y = act(x) (y may alias x) and
// dx = dy * act'(x) (dx may alias dy or x); for ops that apply an activation inside their own loops.
void activation_forward_f32(float *y, const float *x, int64_t n, Activation act);
void activation_backward_f32(float *dx, const float *dy, const float *x, int64_t n, Activation act);

// A NULL gradient pointer or a descriptor without data both mean "not wanted".
static inline int ops_want(const Tensor *t) { return t != NULL && t->data != NULL; }
// A tensor reaching a CPU kernel must be an fp32 CPU tensor; anything else is a caller error with a clear message.
// Tensors not wanted (ops_want) are not checked.
void ops_expect_cpu_(const Tensor *t, const char *op, const char *file, int line);
#define OPS_EXPECT_CPU(t, op) do { if (ops_want(t)) ops_expect_cpu_((t), (op), __FILE__, __LINE__); } while (0)
// CHECKs that a and b hold as many elements (an op's operands of one shape, possibly viewed differently).
void ops_expect_same_numel(const Tensor *a, const Tensor *b, const char *op);
// d[o] += sum over n < B, s < S of g[(n OC + o) S + s], summed in double: the bias gradient of a linear layer
// (S = 1) or a convolution (S output pixels).
void ops_bias_grad_add(float *d, const float *g, int64_t B, int64_t OC, int64_t S);
// 1 if the op should run on CUDA (out lives there).
int ops_on_cuda_(const Tensor *t, const char *op);
#define OPS_ON_CUDA(t) ops_on_cuda_((t), __func__)
// On the CUDA path every tensor an op reads or writes must live on the GPU, stored as f32 or bf16 (compute is fp32;
// statistics such as GroupNorm's mean/rstd and attention's log-sum-exp, and parameter gradients, are f32: check
// them with OPS_EXPECT_CUDA_F32). Tensors not wanted (ops_want) are not checked.
void ops_expect_cuda_(const Tensor *t, const char *op, int f32_only, const char *file, int line);
#define OPS_EXPECT_CUDA(t, op) do { if (ops_want(t)) ops_expect_cuda_((t), (op), 0, __FILE__, __LINE__); } while (0)
#define OPS_EXPECT_CUDA_F32(t, op) do { if (ops_want(t)) ops_expect_cuda_((t), (op), 1, __FILE__, __LINE__); } while (0)
// CHECKs that a and b have one storage dtype (the activation operands of one CUDA op share it).
// Both tensors (when wanted) stored in one dtype: the CUDA kernels take one storage dtype per operand group.
static inline void ops_expect_same_dtype(const Tensor *a, const Tensor *b, const char *op) {
    if (ops_want(a) && ops_want(b))
        CHECK(a->dtype == b->dtype, "", "%s: operands stored as %s and %s", op, dtype_name(a->dtype),
              dtype_name(b->dtype));
}
// 4-D operands of one op (when both are wanted) share their memory layout: a mix is an internal error.
static inline void ops_expect_same_layout(const Tensor *a, const Tensor *b, const char *op) {
    if (ops_want(a) && ops_want(b) && a->ndim == 4 && b->ndim == 4)
        CHECK(a->channels_last == b->channels_last, "", "%s: operands stored %s and %s", op,
              a->channels_last ? "channels last" : "NCHW", b->channels_last ? "channels last" : "NCHW");
}
// The geometry of one convolution (conv2d.c in NCHW, conv2d_nhwc.c channels last): batch, channels, input and kernel
// sizes, square stride, symmetric pad, and the output size.
typedef struct {
    int64_t B, IC, OC, H, W, KH, KW, OH, OW, stride, pad;
} ConvGeom;
// Checks stride, pad and that the kernel fits the padded input of g (B .. KW set by the caller from in and w, which
// the messages name), then derives the output size.
void conv_geom_finish(ConvGeom *g, const Tensor *in, const Tensor *w, const char *op);
// conv2d on channels-last tensors (conv2d_nhwc.c): in, out, w (and res, din) channels last, dw either way; conv2d's
// entry points hand such problems over.
size_t conv2d_cl_workspace_bytes(const Tensor *in, const Tensor *w, int stride, int pad);
void conv2d_cl_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, const Tensor *res, int stride,
                       int pad);
void conv2d_cl_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w,
                        int stride, int pad);
// The dtype code a CUDA launcher takes for a tensor's storage (the DType value: DTYPE_F32 or DTYPE_BF16).
static inline int ops_dt(const Tensor *t) { return (int)t->dtype; }
