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
