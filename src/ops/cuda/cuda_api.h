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

// linear (cuda_linear.cu), fp32 in and out, TF32 disabled (exact fp32 GEMM)
void linear_forward_cuda(void *out, const void *in, const void *w, const void *b, int N, int IC, int OC);
void linear_backward_cuda(void *din, void *dw, void *db, const void *dout, const void *in, const void *w, int N,
                          int IC, int OC);

// elementwise (cuda_elementwise.cu)
void add_forward_cuda(void *out, const void *a, const void *b, int64_t n);
void axpy_cuda(void *y, float alpha, const void *x, int64_t n);
void scale_cuda(void *y, float alpha, int64_t n);
void fill_cuda(void *y, float value, int64_t n);

// random numbers (cuda_rng.cu): the same samples as rng_normal_fill on the CPU, bit for bit
void rng_normal_fill_cuda(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);

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


#ifdef __cplusplus
}
#endif
