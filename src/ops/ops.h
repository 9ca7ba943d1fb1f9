// ops.h: every differentiable operation of the model stack, forward and backward side by side.
//
// Conventions (docs/ARCHITECTURE.md has the long form):
//   - Tensors are descriptors (core/tensor.h). Ops compute in fp32; CPU ops take fp32 storage. Each op dispatches on
//     the device of its output, so a CUDA backend plugs in behind the same calls (src/ops/cuda/).
//   - Image-like tensors are NCHW; token tensors are [B, T, C]. "Rows" means all dims but the last.
//   - Backward: gradients of inputs are WRITTEN (overwrite); gradients of parameters are ACCUMULATED (+=), so one
//     parameter used twice, or a gradient summed over several backward calls, needs no extra buffers.
//     Any gradient pointer may be NULL to skip that gradient.
//   - Values an op needs for its backward (normalisation statistics, attention log-sum-exp) are explicit outputs
//     of the forward, so the caller decides where they live (activation arena) and whether to keep or recompute.
//   - Shapes are checked; a mismatch is an internal failure that names both shapes.
#pragma once
#include "../core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------------------------
// scratch memory shared by ops (grows, never shrinks; ops call it before their parallel regions). On the GPU it is
// part of the memory plan: planners reserve the largest need of their ops (each op with GPU scratch has a
// *_workspace_bytes query), and growing it after planning is an internal failure.
void *ops_workspace(Device d, size_t bytes);
void ops_workspace_reserve(Device d, size_t bytes);
// The GEMM library's own workspace (cuBLASLt): separate from the ops' scratch because ops such as mha_backward hold
// parts of that scratch while they call linear layers. Planned the same way (linear_workspace_bytes).
void *ops_gemm_workspace(Device d, size_t bytes);
void ops_gemm_workspace_reserve(Device d, size_t bytes);
// Bytes held now by the ops' scratch (gemm = 0) or the GEMM workspace (gemm = 1) on device d.
size_t ops_workspace_size(Device d, int gemm);
void ops_workspace_free(void);
// number of OpenMP threads the CPU ops use (n <= 0: unchanged), and the number in use
void ops_set_threads(int n);
int ops_get_threads(void);

// ---------------------------------------------------------------------------------------------------------------
// linear: out[N, OC] = in[N, IC] @ w[OC, IC]^T + b[OC]   (b may be NULL; in/out may carry leading dims)
void linear_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b);
// the same plus a residual: out = in @ w^T + b + res (res [N, OC], not out itself; the backward is linear_backward's,
// the residual's gradient being dout). On the GPU the sum is the GEMM's epilogue: no separate add pass.
void linear_forward_residual(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, const Tensor *res);
void linear_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w);
// GPU scratch (ops_workspace) linear_forward/backward need on device d for N rows and OC outputs (0 on the CPU).
size_t linear_workspace_bytes(Device d, int64_t N, int64_t OC);

// conv2d: out[B, OC, OH, OW] = in[B, IC, H, W] * w[OC, IC, KH, KW] + b[OC], square stride and symmetric zero pad,
// OH = (H + 2 pad - KH) / stride + 1. (The VAE encoder's asymmetric pad is pad2d_forward + conv2d with pad 0.)
void conv2d_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, int stride, int pad);
// the same plus a residual: out = conv(in, w) + b + res (res of out's shape, not out itself; the backward is
// conv2d_backward's, the residual's gradient being dout). The GPU adds it with no pass of its own.
void conv2d_forward_residual(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, const Tensor *res,
                             int stride, int pad);
void conv2d_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w,
                     int stride, int pad);
// Scratch bytes conv2d_forward/backward need for this shape on in's device (in and w may be descriptors without
// data); on the GPU this plans the shape once (cuDNN descriptors and algorithms), so planners call it for every conv
// and reserve the largest answer (ops_workspace_reserve). On the GPU, in, w and out share one storage dtype.
size_t conv2d_workspace_bytes(const Tensor *in, const Tensor *w, int stride, int pad);
// GPU: only deterministic algorithms (train.deterministic) for the shapes planned from now on.
void conv2d_set_deterministic(int on);
// conv2d channels last (conv2d_nhwc.c): out [B, OH, OW, OC] = in [B, H, W, IC] * w [OC, KH, KW, IC] + b [OC], the
// same convolution on permuted tensors; the backward writes din and accumulates dw (w's layout) and db. The layout
// cuDNN's tensor-core kernels prefer, timed against conv2d by `drtune bench gpu`.
void conv2d_nhwc_forward(Tensor *out, const Tensor *in, const Tensor *w, const Tensor *b, int stride, int pad);
void conv2d_nhwc_backward(Tensor *din, Tensor *dw, Tensor *db, const Tensor *dout, const Tensor *in, const Tensor *w,
                          int stride, int pad);
size_t conv2d_nhwc_workspace_bytes(const Tensor *in, const Tensor *w, int stride, int pad);
// conv2d with a 1x1 kernel (stride 1, no padding) over a channel concatenation [a | b] read where its parts lie
// (a [B, Ca, H, W], b [B, Cb, H, W], as groupnorm_act_forward_cat's; either layout on the GPU): out [B, OC, H, W] =
// w[:, :Ca] a + w[:, Ca:] b + bias, two GEMMs on the weight's column slices, the second added onto the first (in bf16
// the first product is stored before the second is added: one rounding more than a single GEMM); the backward writes
// da and db (both, or neither) and accumulates dw [OC, Ca + Cb, 1, 1] and dbias like conv2d_backward. b NULL: conv2d
// on a.
void conv1x1_forward_cat(Tensor *out, const Tensor *a, const Tensor *b, const Tensor *w, const Tensor *bias);
void conv1x1_backward_cat(Tensor *da, Tensor *db, Tensor *dw, Tensor *dbias, const Tensor *dout, const Tensor *a,
                          const Tensor *b, const Tensor *w);

// pad2d: zero padding out[B, C, H + top + bottom, W + left + right]
void pad2d_forward(Tensor *out, const Tensor *in, int top, int bottom, int left, int right);
void pad2d_backward(Tensor *din, const Tensor *dout, int top, int bottom, int left, int right);

// ---------------------------------------------------------------------------------------------------------------
// group_norm: in/out [B, C, *spatial], `groups` groups of C/groups consecutive channels; biased variance;
// mean, rstd [B, groups] are saved for the backward; gamma, beta [C] (affine).
void groupnorm_forward(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *in, const Tensor *gamma,
                       const Tensor *beta, int groups, float eps);
void groupnorm_backward(Tensor *din, Tensor *dgamma, Tensor *dbeta, const Tensor *dout, const Tensor *in,
                        const Tensor *mean, const Tensor *rstd, const Tensor *gamma, int groups);

// layer_norm over the last dim: in/out [N, C]; mean, rstd [N]; gamma, beta [C].
void layernorm_forward(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *in, const Tensor *gamma,
                       const Tensor *beta, float eps);
void layernorm_backward(Tensor *din, Tensor *dgamma, Tensor *dbeta, const Tensor *dout, const Tensor *in,
                        const Tensor *mean, const Tensor *rstd, const Tensor *gamma);

// ---------------------------------------------------------------------------------------------------------------
// elementwise activations, out and in of one shape (out may alias in for the forward)
typedef enum {
    ACT_SILU,       // x * sigmoid(x)
    ACT_GELU,       // 0.5 x (1 + erf(x / sqrt 2))            (torch F.gelu, HF "gelu")
    ACT_GELU_TANH,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    ACT_QUICK_GELU, // x * sigmoid(1.702 x)                    (CLIP ViT-L "quick_gelu")
} Activation;
const char *activation_name(Activation a);
void activation_forward(Tensor *out, const Tensor *in, Activation act);
void activation_backward(Tensor *din, const Tensor *dout, const Tensor *in, Activation act);

// geglu: in [N, 2D] = [h | g] -> out [N, D] = h * gelu_erf(g)   (diffusers GEGLU: first half value, second gate)
void geglu_forward(Tensor *out, const Tensor *in);
void geglu_backward(Tensor *din, const Tensor *dout, const Tensor *in);

// group_norm followed by an activation (the "GroupNorm, SiLU" of UNet and VAE blocks): out = act(group_norm(in)),
// the arguments of groupnorm_forward/backward. On the GPU each direction is one fused pass over memory; the backward
// recomputes the normalised value from in, mean, rstd, gamma and beta (nothing else is kept).
void groupnorm_act_forward(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *in, const Tensor *gamma,
                           const Tensor *beta, int groups, float eps, Activation act);
void groupnorm_act_backward(Tensor *din, Tensor *dgamma, Tensor *dbeta, const Tensor *dout, const Tensor *in,
                            const Tensor *mean, const Tensor *rstd, const Tensor *gamma, const Tensor *beta,
                            int groups, Activation act);
// The same over a channel concatenation in = [a | b] (a [B, Ca, *], b [B, Cb, *]: one device, dtype and layout) read
// where its parts lie, never copied into one tensor (the UNet up path's [hidden | skip]): out and dout are
// [B, Ca + Cb, *], and the input gradient is written to da and db (both, or neither). b NULL: the ops above.
void groupnorm_act_forward_cat(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *a, const Tensor *b,
                               const Tensor *gamma, const Tensor *beta, int groups, float eps, Activation act);
void groupnorm_act_backward_cat(Tensor *da, Tensor *db, Tensor *dgamma, Tensor *dbeta, const Tensor *dout,
                                const Tensor *a, const Tensor *b, const Tensor *mean, const Tensor *rstd,
                                const Tensor *gamma, const Tensor *beta, int groups, Activation act);
// GPU scratch (ops_workspace) of the norms on an input of in's shape, either direction, with or without activation
// (a concatenation: of the whole's shape)
size_t groupnorm_workspace_bytes(const Tensor *in, int groups);
size_t layernorm_workspace_bytes(const Tensor *in);

// softmax over the last dim: out [N, C]; the backward needs only the output
void softmax_forward(Tensor *out, const Tensor *in);
void softmax_backward(Tensor *din, const Tensor *dout, const Tensor *out);

// ---------------------------------------------------------------------------------------------------------------
// attention core on projected heads: q [B, Tq, H*D], k, v [B, Tk, H*D] -> out [B, Tq, H*D],
// out = softmax(q k^T / sqrt(D) (+ causal mask: key j > query i excluded)) v per head.
// lse [B, H, Tq] (log-sum-exp of each score row) is saved; the backward recomputes the probabilities from it
// (memory-efficient: no [Tq, Tk] matrix is kept between forward and backward).
void attention_forward(Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v, int heads,
                       int causal);
void attention_backward(Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *out,
                        const Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v, int heads, int causal);
// GPU: a deterministic attention backward from now on (drtune's own kernels instead of cuDNN's fused one)
void attention_set_deterministic(int on);
// GPU: bf16 attention through cuDNN's fused attention where cuDNN plans the shape (on by default)
void attention_set_cudnn(int on);
// bytes of ops_workspace that attention_forward/backward use on device d for activations of dtype dt (planners
// reserve the largest need)
size_t attention_workspace_bytes(Device d, DType dt, int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim);

// multi-head attention with separate projections (diffusers Attention, CLIP attention):
// q = x Wq^T (+bq), k = ctx Wk^T (+bk), v = ctx Wv^T (+bv), out = attn(q, k, v) Wo^T (+bo); ctx = x when NULL.
// x [B, Tq, C], ctx [B, Tk, Cctx]. Biases may have data == NULL (absent).
typedef struct {
    Tensor wq, wk, wv, wo;  // [C, C], [C, Cctx], [C, Cctx], [Cout, C]
    Tensor bq, bk, bv, bo;  // [C], [C], [C], [Cout]; data == NULL when absent
} MHAParams;
typedef struct {
    Tensor q, k, v;     // [B, Tq, C], [B, Tk, C], [B, Tk, C]
    Tensor attn;        // [B, Tq, C] attention output before the out projection
    Tensor lse;         // [B, H, Tq]
} MHACache;
void mha_forward(Tensor *out, MHACache *cache, const Tensor *x, const Tensor *ctx, const MHAParams *p, int heads,
                 int causal);
// dx is written (self-attention: the sum of the q, k and v paths); dctx is written when ctx != NULL (may be NULL).
void mha_backward(Tensor *dx, Tensor *dctx, MHAParams *grads, const Tensor *dout, const MHACache *cache,
                  const Tensor *x, const Tensor *ctx, const MHAParams *p, int heads, int causal);
// bytes of ops_workspace that mha_backward uses on device d with activations of dtype dt (x [B, Tq, C],
// context [B, Tk, Ckv]); the forward needs attention_workspace_bytes only
size_t mha_workspace_bytes(Device d, DType dt, int64_t B, int64_t Tq, int64_t Tk, int64_t C, int64_t Ckv, int heads);

// ---------------------------------------------------------------------------------------------------------------
// layout and arithmetic
// nearest 2x upsampling: in [B, C, H, W] -> out [B, C, 2H, 2W], out[y][x] = in[y/2][x/2]
void upsample2x_forward(Tensor *out, const Tensor *in);
void upsample2x_backward(Tensor *din, const Tensor *dout);
// channel concat: a [B, Ca, *], b [B, Cb, *] -> out [B, Ca + Cb, *]
void concat_channels_forward(Tensor *out, const Tensor *a, const Tensor *b);
void concat_channels_backward(Tensor *da, Tensor *db, const Tensor *dout);
// residual add: out = a + b (out may alias a or b); backward copies dout into da and db
void add_forward(Tensor *out, const Tensor *a, const Tensor *b);
void add_backward(Tensor *da, Tensor *db, const Tensor *dout);
// per-(sample, channel) broadcast add: out[b, c, *] = x[b, c, *] + v[b, c]  (time embedding into a resnet)
// (the backward's dv is reduce_forward(dv, dout): its GPU scratch is reduce_workspace_bytes(dv, dout))
void add_bcast_forward(Tensor *out, const Tensor *x, const Tensor *v);
void add_bcast_backward(Tensor *dx, Tensor *dv, const Tensor *dout);
// y += alpha * x (gradient accumulation across branches); y = alpha * y; fill
void tensor_axpy(Tensor *y, float alpha, const Tensor *x);
void tensor_scale(Tensor *y, float alpha);
void tensor_fill(Tensor *y, float value);
// dst = src in dst's storage dtype (f32 <-> bf16, round to nearest even; the same dtype copies), on one device
void tensor_cast(Tensor *dst, const Tensor *src);

// classifier-free guidance combine of one UNet evaluation over both branches: rows [2B, *] = [uncond | cond] ->
// out [B, *] = u + w (c - u) (fp32, in this order); with rows [B, *] (no guidance) out = rows. The backward writes
// drows = [(1 - w) scale dout | w scale dout] (scale dout without guidance), each product in double then rounded.
void cfg_combine_forward(Tensor *out, const Tensor *rows, float w);
void cfg_combine_backward(Tensor *drows, const Tensor *dout, float w, double scale);

// sinusoidal timestep embedding (diffusers get_timestep_embedding, max_period 10000, scale 1, computed in fp32):
// t [N] -> out [N, D]; freq_i = exp(-ln(10000) i / (D/2 - freq_shift)); [sin | cos], or [cos | sin] when flipped.
void timestep_embedding_forward(Tensor *out, const Tensor *t, int flip_sin_to_cos, float freq_shift);
void timestep_embedding_backward(Tensor *dt, const Tensor *dout, const Tensor *t, int flip_sin_to_cos,
                                 float freq_shift);

// embedding lookup: ids [N] (i32, on the device of out) -> out [N, C] = table[ids]; backward accumulates rows into
// dtable [V, C] (fp32). The CPU checks every id; on the GPU an id outside the table gives a NaN row and no gradient.
void embedding_forward(Tensor *out, const Tensor *ids, const Tensor *table);
void embedding_backward(Tensor *dtable, const Tensor *dout, const Tensor *ids);

// reductions: in viewed as [N, M] with N = numel(out); out[n] = sum_m in[n, m] (or the mean)
typedef enum { REDUCE_SUM, REDUCE_MEAN } ReduceOp;
void reduce_forward(Tensor *out, const Tensor *in, ReduceOp op);
// GPU scratch bytes reduce_forward needs for these shapes (long rows are summed in parts); 0 on the CPU
size_t reduce_workspace_bytes(const Tensor *out, const Tensor *in);
void reduce_backward(Tensor *din, const Tensor *dout, ReduceOp op);

// ---------------------------------------------------------------------------------------------------------------
// image preprocessing of the CLIP rewards (resize.c)
// resize as torch.nn.functional.interpolate(mode, align_corners=False, antialias): in [B, C, H, W] ->
// out [B, C, OH, OW], any sizes up or down; the backward is the exact adjoint (din written).
typedef enum { RESIZE_BILINEAR, RESIZE_BICUBIC } ResizeKernel;
const char *resize_kernel_name(ResizeKernel k);
void resize_forward(Tensor *out, const Tensor *in, ResizeKernel k, int antialias);
void resize_backward(Tensor *din, const Tensor *dout, ResizeKernel k, int antialias);
// GPU scratch (ops_workspace) of resize_forward/backward between in (din) and out (dout); 0 on the CPU
size_t resize_workspace_bytes(const Tensor *in, const Tensor *out, ResizeKernel k, int antialias);
// crop: out [B, C, OH, OW] = in[:, :, top : top + OH, left : left + OW] (padding is pad2d_forward)
void crop2d_forward(Tensor *out, const Tensor *in, int top, int left);
void crop2d_backward(Tensor *din, const Tensor *dout, int top, int left);
// out = clamp(a x + b, lo, hi) elementwise; no gradient where a x + b reaches a bound (torch.clamp)
void clamp_affine_forward(Tensor *out, const Tensor *in, float a, float b, float lo, float hi);
void clamp_affine_backward(Tensor *din, const Tensor *dout, const Tensor *in, float a, float b, float lo, float hi);
// out[b, c] = (in[b, c] - mean[c]) / std[c] over [B, C, *] (mean, std: C host values, C <= 4)
void normalize_forward(Tensor *out, const Tensor *in, const float *mean, const float *std);
void normalize_backward(Tensor *din, const Tensor *dout, const float *std);

// token ops of the CLIP vision tower and reward heads (tokens.c)
// out [B, 1 + gh gw, D]: [cls ; patches as tokens] + pos, patches [B, D, gh, gw] (the patch convolution's output),
// cls [D], pos [1 + gh gw, D]. The backward writes dpatches and accumulates dcls, dpos (each may be NULL).
void patch_tokens_forward(Tensor *out, const Tensor *patches, const Tensor *cls, const Tensor *pos);
void patch_tokens_backward(Tensor *dpatches, Tensor *dcls, Tensor *dpos, const Tensor *dout);
// out [B, C] = in[b, idx[b], :] for in [B, T, C]; idx holds B host integers. The backward writes din (zero
// except at the selected tokens).
void token_select_forward(Tensor *out, const Tensor *in, const int32_t *idx);
void token_select_backward(Tensor *din, const Tensor *dout, const int32_t *idx);
// out [N, C] = in / max(|in|, 1e-12) per row (F.normalize); norm [N] saved for the backward
void l2normalize_forward(Tensor *out, Tensor *norm, const Tensor *in);
void l2normalize_backward(Tensor *din, const Tensor *dout, const Tensor *out, const Tensor *norm);
// out [N] = sum_c a[n, c] b[n, c]; the backward writes da, db (either may be NULL)
void rowdot_forward(Tensor *out, const Tensor *a, const Tensor *b);
void rowdot_backward(Tensor *da, Tensor *db, const Tensor *dout, const Tensor *a, const Tensor *b);

#ifdef __cplusplus
}
#endif
