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
void activation_forward_cuda(void *out, const void *in, int64_t n, int act);
void activation_backward_cuda(void *din, const void *dout, const void *in, int64_t n, int act);
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


// ---- attention (cuda_attention.cu)


// ---- layout, arithmetic, embeddings, reductions, casts (cuda_layout.cu, cuda_arith.cu)


// ---- diffusion, optimiser, rewards (cuda_train.cu)


// ---- convolution through cuDNN (cuda_conv.cu)


#ifdef __cplusplus
}
#endif
