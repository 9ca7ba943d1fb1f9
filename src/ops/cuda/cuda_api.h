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
// linear: out [N, OC] = in [N, IC] w [OC, IC]^T + b [OC] (+ res [N, OC]) (b, res may be NULL; res is added in the
// GEMM's epilogue, beta = 1, and may be out itself: the product is then added to out in place), as
// linear_forward_residual / linear_backward
size_t linear_cuda_workspace_bytes(int64_t N, int OC);
// w (and dw) may be the column slice [OC, IC] of a wider weight whose rows are ldw apart (ldw = IC: all of it; the
// input of a channel concatenation, conv1x1_forward_cat)
void linear_forward_cuda(void *out, const void *in, const void *w, const void *b, const void *res, int64_t N, int IC,
                         int OC, int64_t ldw, int dt);
void linear_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in, const void *w,
                          int64_t N, int IC, int OC, int64_t ldw, int dt);
// one GEMM, column-major as cuBLASLt sees it: D [m, n] (ldd) = op(A) op(B) + beta D, op = transpose when ta / tb;
// A and B of storage dtype dt, D of dt or fp32 (d_f32), fp32 accumulation; the GEMM workspace as linear's
void gemm_cuda(int ta, int tb, int64_t m, int64_t n, int64_t k, const void *A, int64_t lda, const void *B,
               int64_t ldb, float beta, void *D, int64_t ldd, int dt, int d_f32);
// conv2d with a 1x1 kernel, stride 1, no padding (NCHW): out [B, OC, S] = w [OC, IC] in [B, IC, S] + b (+ res
// [B, OC, S], which may be out), S = H W; b, res may be NULL; w and dw rows ldw apart, as linear's
size_t conv1x1_cuda_workspace_bytes(int B, int OC);
void conv1x1_forward_cuda(void *out, const void *in, const void *w, const void *b, const void *res, int B, int IC,
                          int OC, int64_t S, int64_t ldw, int dt);
void conv1x1_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in, const void *w, int B,
                           int IC, int OC, int64_t S, int64_t ldw, int dt);

// elementwise (cuda_elementwise.cu)

// random numbers (cuda_rng.cu): the same samples as rng_normal_fill on the CPU, bit for bit
void rng_normal_fill_cuda(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);

// ---- token transpose (cuda_transpose.cu): dst [B, K, R] = src [B, R, K] per sample (+ res [B, K, R], may be NULL)
void transpose_batched_cuda(void *dst, const void *src, const void *res, int64_t B, int64_t R, int64_t K, int dt);
// the same transpose converting the storage dtype (dt_dst, dt_src: f32 or bf16; no residual): NCHW <-> NHWC casts
void transpose_cast_cuda(void *dst, int dt_dst, const void *src, int dt_src, int64_t B, int64_t R, int64_t K);

// ---- normalisation and activations (cuda_norm.cu, cuda_activation.cu)
// `act` is an Activation code (ops.h), or -1 for none; `pdt` is the storage dtype of gamma and beta; mean and rstd
// are f32 [B G] / [N]; dgamma, dbeta are f32 and accumulated; din, dgamma, dbeta may be NULL (not wanted). `ws` is
// ops_workspace(DEVICE_CUDA, *_workspace_bytes_cuda(...)).
size_t groupnorm_workspace_bytes_cuda(int64_t B, int64_t C, int64_t S, int groups);
// The GroupNorm input is [in | in_b] along channels (in [B, Ca, S], in_b [B, C - Ca, S], channels last [B, S, *]),
// read where the parts lie; in_b NULL: in alone (Ca = C). Its gradient goes to [din | din_b] likewise.
void groupnorm_forward_cuda(void *out, float *mean, float *rstd, const void *in, const void *in_b, int64_t Ca,
                            const void *gamma, const void *beta, void *ws, int64_t B, int64_t C, int64_t S, int groups,
                            float eps, int act, int dt, int pdt, int channels_last);
// beta is read only with an activation (to recompute its input)
void groupnorm_backward_cuda(void *din, void *din_b, float *dgamma, float *dbeta, const void *dout, const void *in,
                             const void *in_b, int64_t Ca, const float *mean, const float *rstd, const void *gamma,
                             const void *beta, void *ws, int64_t B, int64_t C, int64_t S, int groups, int act, int dt,
                             int pdt, int channels_last);
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


// ---- attention (cuda_attention.cu, cuda_sdpa.cu)
// q, out [B, Tq, H*D], k, v [B, Tk, H*D] of storage dtype dt; lse [B, H, Tq] f32 (natural-log log-sum-exp of the
// scaled scores); dq, dk, dv written (any may be NULL: not computed). ws: attention_workspace_bytes_cuda(...) bytes
// of device scratch (the own backward's rowsum(dout * out) per head row and fp32 dk/dv partials when few keys make
// the queries split over blocks; cuDNN's workspace when its fused attention runs).
// bf16, non-causal attention with a head dim that is a multiple of 8 (at most 256) runs on cuDNN's fused attention
// (cuda_sdpa.cu) when cuDNN plans it; everything else, and every direction cuDNN refuses, on the own kernels.
size_t attention_workspace_bytes_cuda(int B, int Tq, int Tk, int H, int D, int dt);
void attention_forward_cuda(void *out, float *lse, const void *q, const void *k, const void *v, void *ws, int B,
                            int Tq, int Tk, int H, int D, int causal, int dt);
void attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, const void *out, const float *lse,
                             const void *q, const void *k, const void *v, void *ws, int B, int Tq, int Tk, int H,
                             int D, int causal, int dt);
// Non-causal attention with a head dim over 256 runs as cuBLASLt GEMMs over chunks of query rows whose fp32 scores
// take at most this many floats (0: the default, 2^23); tests set small chunks.
void attention_set_gemm_chunk_cuda(int64_t floats);
void attention_set_gemm_cuda(int on); // 0: the generic kernels there instead (for A/B timings)
// cuDNN's part (cuda_sdpa.cu). Mode: 0 own kernels only, 1 cuDNN for the forward, 2 for both directions (the
// default; the environment's DRTUNE_CUDNN_ATTENTION=0|1|2 sets it before the first call). Deterministic: the fused
// backward (not deterministic) is not used. attention_cudnn_cuda: which directions of this attention run on cuDNN
// (bit 0 forward, bit 1 backward), planning them on first use; reason: why the first refused plan was refused ("" if
// none was). The *_cudnn calls run a planned direction; the backward writes all of dq, dk and dv.
void attention_set_cudnn_cuda(int mode);
void attention_set_deterministic_cuda(int on);
int attention_cudnn_cuda(int B, int Tq, int Tk, int H, int D, int causal, int dt);
const char *attention_cudnn_reason_cuda(void);
void attention_cudnn_calls_cuda(long long *fwd, long long *bwd); // *_cudnn calls so far (queued or captured)
size_t attention_cudnn_workspace_bytes_cuda(int B, int Tq, int Tk, int H, int D, int dt);
void attention_forward_cudnn(void *out, float *lse, const void *q, const void *k, const void *v, void *ws, int B,
                             int Tq, int Tk, int H, int D);
void attention_backward_cudnn(void *dq, void *dk, void *dv, const void *dout, const void *out, const float *lse,
                              const void *q, const void *k, const void *v, void *ws, int B, int Tq, int Tk, int H,
                              int D);


// ---- layout, arithmetic, embeddings, reductions, casts (cuda_layout.cu, cuda_arith.cu)
// Activation operands of one op share the storage dtype dt; reductions and axpy take one per operand. rows = B C H.
void upsample2x_forward_cuda(void *out, const void *in, int64_t rows, int64_t W, int dt);
void upsample2x_backward_cuda(void *din, const void *dout, int64_t rows, int64_t W, int dt);
// channels last: in [rows = B H, W, C], out [B 2H, 2W, C]
void upsample2x_nhwc_forward_cuda(void *out, const void *in, int64_t rows, int64_t W, int64_t C, int dt);
void upsample2x_nhwc_backward_cuda(void *din, const void *dout, int64_t rows, int64_t W, int64_t C, int dt);
// whole [B, Ca + Cb, S] and its parts a [B, Ca, S], b [B, Cb, S]; the backward skips a NULL da or db (channels last:
// B = the pixels of all samples, S = 1)
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
// channels last: out [B, S, C] = x + v[b, c]; the backward's dv [B, C] = the sum over s of dout (written)
void add_bcast_nhwc_forward_cuda(void *out, const void *x, const void *v, int64_t B, int64_t S, int64_t C, int dt);
void add_bcast_nhwc_backward_cuda(void *dv, const void *dout, int64_t B, int64_t S, int64_t C, int dt);
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


// ---- CLIP reward preprocessing and token ops (cuda_reward_ops.cu), as ops/resize.c and ops/tokens.c. Activation
// operands of one op share the storage dtype dt; norms, rowdot scores and parameter gradients are fp32.
// resize over P = B C image planes [P, H, W] -> [P, OH, OW]: each axis's tap table (ops/resize.c) packed in one host
// blob of 4-byte words; an axis gives the word offsets of its start[n_out], count[n_out] (int32: output i reads
// in[start[i] + j] with w[i max_taps + j], j < count[i]), lo[n_in], hi[n_in] (int32: input c is read by the outputs
// lo[c] <= i < hi[c]) and w[n_out max_taps] (f32). ws: resize_workspace_bytes_cuda bytes (an fp32 [P, H, OW]
// intermediate, then the tables, copied there on the stream). The backward is the gather-form adjoint (din written).
typedef struct {
    int64_t max_taps, start, count, lo, hi, w;
} ResizeAxisCuda;
size_t resize_workspace_bytes_cuda(int64_t P, int64_t H, int64_t OW, size_t table_bytes);
void resize_forward_cuda(void *out, const void *in, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                         const void *tables, size_t table_bytes, ResizeAxisCuda ax, ResizeAxisCuda ay, void *ws,
                         int dt);
void resize_backward_cuda(void *din, const void *dout, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                          const void *tables, size_t table_bytes, ResizeAxisCuda ax, ResizeAxisCuda ay, void *ws,
                          int dt);
// small [P, OH, OW] at (top, left) of big [P, H, W]; the backward writes all of din (zero outside the window)
void crop2d_forward_cuda(void *out, const void *in, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, int top,
                         int left, int dt);
void crop2d_backward_cuda(void *din, const void *dout, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                          int top, int left, int dt);
void clamp_affine_forward_cuda(void *out, const void *in, int64_t n, float a, float b, float lo, float hi, int dt);
void clamp_affine_backward_cuda(void *din, const void *dout, const void *in, int64_t n, float a, float b, float lo,
                                float hi, int dt);
// [P = B C, S] planes; mean, std: C <= 4 host floats
void normalize_forward_cuda(void *out, const void *in, const float *mean, const float *std, int64_t P, int64_t C,
                            int64_t S, int dt);
void normalize_backward_cuda(void *din, const void *dout, const float *std, int64_t P, int64_t C, int64_t S, int dt);
// out [B, T, D], patches [B, D, T - 1] (dt), cls [D] and pos [T, D] (pdt); dpatches written, dcls/dpos (f32)
// accumulated; any of the three may be NULL
void patch_tokens_forward_cuda(void *out, const void *patches, const void *cls, const void *pos, int64_t B, int64_t T,
                               int64_t D, int dt, int pdt);
void patch_tokens_backward_cuda(void *dpatches, float *dcls, float *dpos, const void *dout, int64_t B, int64_t T,
                                int64_t D, int dt);
// rows [B, C] = tok [B, T, C] at idx[b] (B host int32 in [0, T)); the backward writes all of dtok
void token_select_forward_cuda(void *out, const void *in, const int32_t *idx, int64_t B, int64_t T, int64_t C, int dt);
void token_select_backward_cuda(void *din, const void *dout, const int32_t *idx, int64_t B, int64_t T, int64_t C,
                                int dt);
// rows of [N, C]: norm [N] f32; rowdot's out and dout [N] f32; da, db written (either may be NULL)
void l2normalize_forward_cuda(void *out, float *norm, const void *in, int64_t N, int64_t C, int dt);
void l2normalize_backward_cuda(void *din, const void *dout, const void *out, const float *norm, int64_t N, int64_t C,
                               int dt);
void rowdot_forward_cuda(float *out, const void *a, const void *b, int64_t N, int64_t C, int dt);
void rowdot_backward_cuda(void *da, void *db, const float *dout, const void *a, const void *b, int64_t N, int64_t C,
                          int dt);


// ---- convolution through cuDNN (cuda_conv.cu)
// One convolution problem as conv2d in ops.h: in [B, IC, H, W], w [OC, IC, KH, KW], out [B, OC, OH, OW], square
// stride, symmetric pad; dt is the storage dtype of in, w, out and their gradients (f32 or bf16). nhwc: the same
// problem channels last (conv2d_nhwc): in [B, H, W, IC], w [OC, KH, KW, IC], out [B, OH, OW, OC].
typedef struct {
    int dt, B, IC, H, W, OC, KH, KW, stride, pad, nhwc;
} Conv2dCudaShape;
// Deterministic algorithms only (train.deterministic) for the shapes planned from now on.
void conv2d_set_deterministic_cuda(int on);
// Plans a shape once (descriptors, one algorithm per direction) and returns the workspace bytes its calls need;
// algos (may be NULL) receives cuDNN's forward, data-gradient and weight-gradient algorithm numbers.
size_t conv2d_plan_cuda(const Conv2dCudaShape *s, int algos[3]);
// out = conv(in, w) + b (+ res) (b, res may be NULL; bias_dt: b's storage dtype; res: out's shape and dtype, not out
// itself). ws: at least conv2d_plan_cuda's bytes.
void conv2d_forward_cuda(void *out, const void *in, const void *w, const void *b, int bias_dt, const void *res,
                         const Conv2dCudaShape *s, void *ws, size_t ws_bytes);
// din written; dw and db [OC] (fp32) accumulated; any of the three may be NULL. dw is in w's layout, or with
// dw_kcrs (NHWC problems only) [OC, IC, KH, KW] while w is [OC, KH, KW, IC].
void conv2d_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in, const void *w,
                          const Conv2dCudaShape *s, int dw_kcrs, void *ws, size_t ws_bytes);

#ifdef __cplusplus
}
#endif
