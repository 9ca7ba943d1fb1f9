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

// ---- normalisation and activations (cuda_norm.cu, cuda_activation.cu)


// ---- attention (cuda_attention.cu)
// q, out [B, Tq, H*D], k, v [B, Tk, H*D] of storage dtype dt; lse [B, H, Tq] f32; dq, dk, dv written (any may be
// NULL: not computed). ws: attention_workspace_bytes_cuda(...) bytes of device scratch for the backward
// (rowsum(dout * out) per head row; fp32 dk/dv partials when few keys make the queries split over blocks).
size_t attention_workspace_bytes_cuda(int B, int Tq, int Tk, int H, int D);
void attention_forward_cuda(void *out, float *lse, const void *q, const void *k, const void *v, int B, int Tq, int Tk,
                            int H, int D, int causal, int dt);
void attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, const void *out, const float *lse,
                             const void *q, const void *k, const void *v, void *ws, int B, int Tq, int Tk, int H,
                             int D, int causal, int dt);


// ---- layout, arithmetic, embeddings, reductions, casts (cuda_layout.cu, cuda_arith.cu)


// ---- diffusion, optimiser, rewards (cuda_train.cu)


// ---- convolution through cuDNN (cuda_conv.cu)


#ifdef __cplusplus
}
#endif
