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
