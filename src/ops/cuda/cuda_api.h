// cuda_api.h: the extern "C" launchers of the CUDA backend. Host code calls only these; every kernel lives in a .cu
// file of this folder. Pointers are device pointers; shapes follow the matching CPU op in ops.h.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// runtime (cuda_runtime.cu)
int cuda_device_count(void);
void *cuda_alloc(size_t bytes);
void cuda_free(void *p);
void cuda_zero(void *p, size_t bytes);
void cuda_copy(void *dst, int dst_on_device, const void *src, int src_on_device, size_t bytes);
void cuda_synchronize(void);
const char *cuda_device_name(void);

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

#ifdef __cplusplus
}
#endif
