// cuda_api.h: the extern "C" launchers of the CUDA backend. Host code calls only these; every kernel lives in a .cu
// file of this folder. Pointers are device pointers; shapes follow the matching CPU op in ops.h. Launchers queue
// work on the rank's compute stream (core/device_cuda.h) and never allocate or synchronise. Storage dtype codes
// (`dt`) are DType values: DTYPE_F32 or DTYPE_BF16 for activations and weights; statistics and parameter gradients
// are always fp32.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- linear and 1x1 convolution through cuBLASLt (cuda_linear.cu)
// in, w, b, out, din and dout share the storage dtype dt (f32: exact fp32 GEMMs, no TF32; bf16: fp32 accumulation);
// dw and db are fp32 and accumulated (+=), din written. Scratch: the ops workspace, at least the *_workspace_bytes.
// linear: out [N, OC] = in [N, IC] w [OC, IC]^T + b [OC] (b may be NULL), as linear_forward / linear_backward
size_t linear_cuda_workspace_bytes(int64_t N, int OC);
void linear_forward_cuda(void *out, const void *in, const void *w, const void *b, int64_t N, int IC, int OC, int dt);
void linear_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in, const void *w,
                          int64_t N, int IC, int OC, int dt);
// conv2d with a 1x1 kernel, stride 1, no padding (NCHW): out [B, OC, S] = w [OC, IC] in [B, IC, S] + b, S = H W
size_t conv1x1_cuda_workspace_bytes(int B, int OC);
void conv1x1_forward_cuda(void *out, const void *in, const void *w, const void *b, int B, int IC, int OC, int64_t S,
                          int dt);
void conv1x1_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in, const void *w, int B,
                           int IC, int OC, int64_t S, int dt);

// elementwise (cuda_elementwise.cu)
void add_forward_cuda(void *out, const void *a, const void *b, int64_t n);
void axpy_cuda(void *y, float alpha, const void *x, int64_t n);
void scale_cuda(void *y, float alpha, int64_t n);
void fill_cuda(void *y, float value, int64_t n);

// random numbers (cuda_rng.cu): the same samples as rng_normal_fill on the CPU, bit for bit
void rng_normal_fill_cuda(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);

// ---- token transpose (cuda_transpose.cu): dst [B, K, R] = src [B, R, K] per sample
void transpose_batched_cuda(void *dst, const void *src, int64_t B, int64_t R, int64_t K, int dt);

// ---- classifier-free guidance (cuda_guidance.cu), ops/guidance.c
void cfg_combine_forward_cuda(void *eps, const void *rows, int64_t n, int guided, float w, int dt);
void cfg_combine_backward_cuda(void *drows, const void *deps, int64_t n, int guided, double w, double scale, int dt);

// ---- normalisation and activations (cuda_norm.cu, cuda_activation.cu)
// `act` is an Activation code (ops.h), or -1 for none; `pdt` is the storage dtype of gamma and beta; mean and rstd
// are f32 [B G] / [N]; dgamma, dbeta are f32 and accumulated; din, dgamma, dbeta may be NULL (not wanted). `ws` is
// ops_workspace(DEVICE_CUDA, *_workspace_bytes_cuda(...)).
size_t groupnorm_workspace_bytes_cuda(int64_t B, int64_t C, int64_t S, int groups);
void groupnorm_forward_cuda(void *out, float *mean, float *rstd, const void *in, const void *gamma, const void *beta,
                            void *ws, int64_t B, int64_t C, int64_t S, int groups, float eps, int act, int dt,
                            int pdt);
// beta is read only with an activation (to recompute its input)
void groupnorm_backward_cuda(void *din, float *dgamma, float *dbeta, const void *dout, const void *in,
                             const float *mean, const float *rstd, const void *gamma, const void *beta, void *ws,
                             int64_t B, int64_t C, int64_t S, int groups, int act, int dt, int pdt);
size_t layernorm_workspace_bytes_cuda(int64_t N, int64_t C);
void layernorm_forward_cuda(void *out, float *mean, float *rstd, const void *in, const void *gamma, const void *beta,
                            int64_t N, int64_t C, float eps, int dt, int pdt);
void layernorm_backward_cuda(void *din, float *dgamma, float *dbeta, const void *dout, const void *in,
                             const float *mean, const float *rstd, const void *gamma, void *ws, int64_t N, int64_t C,
                             int dt, int pdt);
// pointwise activations over n elements (out may alias in, din may alias dout); GEGLU in [N, 2D] -> out [N, D];
// softmax over the last dim of [N, C] (out may alias in, din may alias dout)
void activation_forward_cuda(void *out, const void *in, int64_t n, int act, int dt);
void activation_backward_cuda(void *din, const void *dout, const void *in, int64_t n, int act, int dt);
void geglu_forward_cuda(void *out, const void *in, int64_t N, int64_t D, int dt);
void geglu_backward_cuda(void *din, const void *dout, const void *in, int64_t N, int64_t D, int dt);
void softmax_forward_cuda(void *out, const void *in, int64_t N, int64_t C, int dt);
void softmax_backward_cuda(void *din, const void *dout, const void *out, int64_t N, int64_t C, int dt);


// ---- attention (cuda_attention.cu)


// ---- layout, arithmetic, embeddings, reductions, casts (cuda_layout.cu, cuda_arith.cu)


// ---- diffusion, optimiser, rewards (cuda_train.cu)


// ---- convolution through cuDNN (cuda_conv.cu)
// One convolution problem as conv2d in ops.h: in [B, IC, H, W], w [OC, IC, KH, KW], out [B, OC, OH, OW], square
// stride, symmetric pad; dt is the storage dtype of in, w, out and their gradients (f32 or bf16).
typedef struct {
    int dt, B, IC, H, W, OC, KH, KW, stride, pad;
} Conv2dCudaShape;
// Deterministic algorithms only (train.deterministic) for the shapes planned from now on.
void conv2d_set_deterministic_cuda(int on);
// Plans a shape once (descriptors, one algorithm per direction) and returns the workspace bytes its calls need;
// algos (may be NULL) receives cuDNN's forward, data-gradient and weight-gradient algorithm numbers.
size_t conv2d_plan_cuda(const Conv2dCudaShape *s, int algos[3]);
// out = conv(in, w) + b (b may be NULL; bias_dt: its storage dtype). ws: at least conv2d_plan_cuda's bytes.
void conv2d_forward_cuda(void *out, const void *in, const void *w, const void *b, int bias_dt,
                         const Conv2dCudaShape *s, void *ws, size_t ws_bytes);
// din written; dw [OC, IC, KH, KW] and db [OC] (fp32) accumulated; any of the three may be NULL.
void conv2d_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in, const void *w,
                          const Conv2dCudaShape *s, void *ws, size_t ws_bytes);

#ifdef __cplusplus
}
#endif
