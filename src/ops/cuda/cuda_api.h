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

// random numbers (cuda_rng.cu): the same samples as rng_normal_fill on the CPU, bit for bit
void rng_normal_fill_cuda(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);

// ---- normalisation and activations (cuda_norm.cu, cuda_activation.cu)


// ---- attention (cuda_attention.cu)


// ---- layout, arithmetic, embeddings, reductions, casts (cuda_layout.cu, cuda_arith.cu)
// Activation operands of one op share the storage dtype dt; reductions and axpy take one per operand. rows = B C H.
void upsample2x_forward_cuda(void *out, const void *in, int64_t rows, int64_t W, int dt);
void upsample2x_backward_cuda(void *din, const void *dout, int64_t rows, int64_t W, int dt);
// whole [B, Ca + Cb, S] and its parts a [B, Ca, S], b [B, Cb, S]; the backward skips a NULL da or db
void concat_channels_forward_cuda(void *out, const void *a, const void *b, int64_t B, int64_t Ca, int64_t Cb,
                                  int64_t S, int dt);
void concat_channels_backward_cuda(void *da, void *db, const void *dout, int64_t B, int64_t Ca, int64_t Cb, int64_t S,
                                   int dt);
// small [BC, H, W] inside big [BC, H + top + bottom, W + left + right]
void pad2d_forward_cuda(void *out, const void *in, int64_t BC, int64_t H, int64_t W, int top, int bottom, int left,
                        int right, int dt);
void pad2d_backward_cuda(void *din, const void *dout, int64_t BC, int64_t H, int64_t W, int top, int bottom, int left,
                         int right, int dt);
// t [N] fp32 on the device; out [N, D]; ln10000 = logf(10000) as the host computes it; dt_ [N] fp32 written
void timestep_embedding_forward_cuda(void *out, const float *t, int64_t N, int64_t D, int flip, float freq_shift,
                                     float ln10000, int dt);
void timestep_embedding_backward_cuda(float *dt_, const void *dout, const float *t, int64_t N, int64_t D, int flip,
                                      float freq_shift, float ln10000, int dt);
// ids [N] i32 on the device; table [V, C]; an id outside the table gives a NaN row (and no gradient)
void embedding_forward_cuda(void *out, const int32_t *ids, const void *table, int64_t N, int64_t V, int64_t C, int dt);
void embedding_backward_cuda(float *dtable, const void *dout, const int32_t *ids, int64_t N, int64_t V, int64_t C,
                             int dt);
// in [N, M] -> out [N] (sum, or mean when mean != 0); ws: reduce_workspace_bytes_cuda(N, M) bytes (may be 0)
size_t reduce_workspace_bytes_cuda(int64_t N, int64_t M);
void reduce_forward_cuda(void *out, int dt_out, const void *in, int dt_in, int64_t N, int64_t M, int mean, void *ws);
void reduce_backward_cuda(void *din, int dt_in, const void *dout, int dt_out, int64_t N, int64_t M, int mean);
void add_forward_cuda(void *out, const void *a, const void *b, int64_t n, int dt);
// out [BC, S] = x + v[bc]
void add_bcast_forward_cuda(void *out, const void *x, const void *v, int64_t BC, int64_t S, int dt);
void axpy_cuda(void *y, int dty, float alpha, const void *x, int dtx, int64_t n);
void scale_cuda(void *y, float alpha, int64_t n, int dt);
void fill_cuda(void *y, float value, int64_t n, int dt);
void cast_cuda(void *dst, int dt_dst, const void *src, int dt_src, int64_t n);


// ---- diffusion, optimiser, rewards (cuda_train.cu)
// DDIM (diffusion/ddim.c): coefficients as the CPU computes them; pred = PredictionType; x_prev, x0, z may be NULL
void ddim_step_cuda(void *x_prev, void *x0, const void *m, const void *x, const void *z, float sa, float sb, float sp,
                    float dir, float std_dev, float lim, int pred, int clip, int64_t n, int dt);
// dm, dx written (either may be NULL); dx_prev, dx0 may be NULL
void ddim_step_backward_cuda(void *dm, void *dx, const void *dx_prev, const void *dx0, const void *m, const void *x,
                             float sa, float sb, float lim, int pred, int clip, double sp, double dir, double cx,
                             double cm, double ex, double em, int64_t n, int dt);
void ddim_add_noise_cuda(void *out, const void *x0, const void *noise, float sa, float sb, int64_t n, int dt);
// classifier-free guidance: rows [2, n] = [uncond | cond] -> out [n] = u + w (c - u); drows = [ca dout | cb dout]
// (two rows) or ca dout (one)
void cfg_combine_forward_cuda(void *out, const void *rows, float w, int64_t n, int dt);
void cfg_combine_backward_cuda(void *drows, const void *dout, double ca, double cb, int two, int64_t n, int dt);
// optimiser (train/optim.c), fp32: *sumsq (device double) = (accumulate ? *sumsq : 0) + sum g^2, deterministic;
// ws: grad_sumsq_workspace_bytes_cuda(n) bytes
size_t grad_sumsq_workspace_bytes_cuda(int64_t n);
void grad_sumsq_cuda(double *sumsq, const float *g, int64_t n, int accumulate, void *ws);
// AdamW with the clip coefficient from sqrt(*sumsq) (device) and no update when that norm is not finite
void adamw_update_cuda(float *p, const float *g, float *m, float *v, int64_t n, const double *sumsq,
                       float one_minus_b1, float b2, float one_minus_b2, float eps, float decay, float step_size,
                       float sqrt_bc2, float clip);
// low-level rewards (rewards/lowlevel.c): kind 0 symmetry, 1 brightness, 2 saturation, 3 sharpness, 4 colour,
// 5 compress; x [B, 3, H, W]; scores [B] fp32 written; with dx != NULL (any storage dtype dt_dx),
// dx += d(sum_b weight dscore[b] score[b]) / dx
// (dscore [B] fp32 on the device; NULL: zero); target: the colour's RGB (3 host floats); q50, dct: the JPEG proxy's
// quantisation table (64 host floats) and 8x8 DCT basis (64 host doubles); ws: the bytes below
size_t reward_lowlevel_workspace_bytes_cuda(int kind, int64_t B, int64_t H, int64_t W);
void reward_lowlevel_cuda(int kind, const void *x, int dt, void *dx, int dt_dx, float *scores, const float *dscore,
                          float weight, int64_t B, int64_t H, int64_t W, const float *target, const float *q50,
                          const double *dct, void *ws);
// total[b] = (first ? 0 : total[b]) + weight scores[b]
void reward_total_cuda(float *total, const float *scores, float weight, int64_t B, int first);


// ---- convolution through cuDNN (cuda_conv.cu)


#ifdef __cplusplus
}
#endif
