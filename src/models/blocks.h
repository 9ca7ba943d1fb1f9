// blocks.h: the building blocks the UNet and the VAE are made of (diffusers ResnetBlock2D, Transformer2DModel,
// Downsample2D, Upsample2D, the VAE mid-block attention), each with its parameters planned under the diffusers
// names, the activations its backward needs, and a forward and a backward side by side.
#pragma once
#include "../core/arena.h"
#include "../core/common.h"
#include "../ops/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// A second params struct planned into a gradient arena receives a block's parameter gradients (accumulated);
// passing NULL for it computes input gradients only. Input gradients are written.

// ---------------------------------------------------------------------------------------------------------------
// planning helpers

#define PLAN_NDIM(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Registers "prefix.name" (just "name" when prefix is empty) as a tensor of the given shape stored in the arena's
// float dtype (weights and activations: f32, or bf16 under train.precision = bf16); plan_tensor_f32 / PLAN_F32 for
// what stays fp32 whatever the precision (normalisation statistics, attention log-sum-exp).
void plan_tensor(Arena *a, Tensor *slot, const char *prefix, const char *name, int ndim, const int64_t *shape);
void plan_tensor_f32(Arena *a, Tensor *slot, const char *prefix, const char *name, int ndim, const int64_t *shape);
#define PLAN(a, slot, prefix, name, ...) \
    plan_tensor((a), (slot), (prefix), (name), PLAN_NDIM(__VA_ARGS__), (int64_t[]){__VA_ARGS__})
#define PLAN_F32(a, slot, prefix, name, ...) \
    plan_tensor_f32((a), (slot), (prefix), (name), PLAN_NDIM(__VA_ARGS__), (int64_t[]){__VA_ARGS__})
// A model plans its activations in its weights' storage (dtype and memory layout): plan_storage_set switches a to
// w's and returns a's setting before, which plan_storage_restore puts back.
typedef struct {
    DType dtype;
    uint8_t channels_last;
} PlanStorage;
PlanStorage plan_storage_set(Arena *a, const Tensor *w);
void plan_storage_restore(Arena *a, PlanStorage before);
// buf = "prefix." followed by the formatted part (just the part when prefix is empty); returns buf.
const char *plan_prefix(char *buf, size_t n, const char *prefix, const char *fmt, ...) DT_PRINTF(4, 5);

// dst = src in dst's dtype (the bf16 compute copy of fp32 weights), for two allocated arenas on one device planned
// with the same entries: the same element offsets (arena.h), so one cast over the whole buffer, padding included;
// filters whose memory layouts differ (a channels-last copy) are then cast again one by one, transposed. Internal
// failure when the entries differ.
void arena_cast(Arena *dst, const Arena *src);

// A layer's weight and bias (conv, linear or norm affine); bias.data is NULL when the layer has none.
typedef struct {
    Tensor weight, bias;
} Layer;
void layer_plan_conv(Arena *a, Layer *l, const char *prefix, const char *name, int64_t cout, int64_t cin, int64_t k);
void layer_plan_linear(Arena *a, Layer *l, const char *prefix, const char *name, int64_t out, int64_t in, int bias);
void layer_plan_norm(Arena *a, Layer *l, const char *prefix, const char *name, int64_t channels);

// The gradient slot matching a parameter, or NULL when no gradients are wanted.
#define GRAD(g, field) ((g) ? &(g)->field : NULL)

// ---------------------------------------------------------------------------------------------------------------
// scratch: temporaries of one block call (forward or backward), carved front to back from one fp32 region of the
// activation arena. Blocks take a Scratch by value, so what a callee takes is free again when it returns. Each
// block's *_plan_acts returns the floats its calls need; the model sizes the region as the largest need. Pieces
// are stored in the activations' dtype (SCRATCH), or in fp32 for statistics (SCRATCH_F32).

#define SCRATCH_ALIGN 64 // floats: each piece starts on a 256-byte boundary

typedef struct {
    float *base;
    int64_t cap, used; // floats
    Device device;
    DType dtype;       // the pieces' storage (the activations')
    uint8_t channels_last; // the pieces' memory layout (the activations')
} Scratch;

// region: the fp32 scratch tensor of an activation arena; like: an activation (its dtype and memory layout)
Scratch scratch_make(const Tensor *region, const Tensor *like);

// Activation recompute (the UNet's blocks, the VAE decoder's resnets): a flagged unit keeps only its output; the rest
// of what its backward needs is planned in an arena of its own (units[u], NULL when unit u is not flagged) from
// offset 0, and all flagged units take turns in one region, as large as the largest, where the backward re-runs the
// unit's forward first. recompute_bind points the units' tensors into the region (call before each forward);
// recompute_region_bytes is its size; recompute_pick flags units by size, largest first, until plan(ctx, flags)
// bytes fit the budget or every unit (unit_bytes[u] > 0) is flagged.
void recompute_bind(Arena *const *units, int n, const Tensor *region);
// A new unit arena (free with arena_free and free) that plans as a does: its device, float dtype and memory layout.
Arena *recompute_unit_new(const Arena *a, const char *group);
size_t recompute_region_bytes(Arena *const *units, int n);
void recompute_pick(const size_t *unit_bytes, int n, double budget, size_t (*plan)(void *ctx, const unsigned char *flags),
                    void *ctx, unsigned char *flags);
Tensor scratch_take(Scratch *s, int ndim, const int64_t *shape);
Tensor scratch_take_dtype(Scratch *s, DType dt, int ndim, const int64_t *shape);
#define SCRATCH(s, ...) scratch_take((s), PLAN_NDIM(__VA_ARGS__), (int64_t[]){__VA_ARGS__})
#define SCRATCH_F32(s, ...) scratch_take_dtype((s), DTYPE_F32, PLAN_NDIM(__VA_ARGS__), (int64_t[]){__VA_ARGS__})
// Floats a piece of n elements occupies.
static inline int64_t scratch_floats(int64_t n) { return (n + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN; }
// floats a piece of n elements of dtype dt takes (scratch_take's rule): plans count the activation-dtype pieces with
// it (bf16 pieces take half), the fp32 statistics with scratch_floats
static inline int64_t scratch_floats_dt(DType dt, int64_t n) {
    return scratch_floats((n * (int64_t)dtype_size(dt) + 3) / 4);
}

// The data of t seen with another shape of at most as many elements (internal failure otherwise).
Tensor tensor_view(const Tensor *t, int ndim, const int64_t *shape);
#define VIEW(t, ...) tensor_view((t), PLAN_NDIM(__VA_ARGS__), (int64_t[]){__VA_ARGS__})

// buf seen with the shape (and memory layout) of t.
static inline Tensor view_like(const Tensor *buf, const Tensor *t) {
    Tensor v = tensor_view(buf, t->ndim, t->shape);
    v.channels_last = t->channels_last;
    return v;
}

// A model backward passes gradients between two flat buffers: cur holds the gradient of the current stage's output,
// other receives the gradient of its input; flow_swap after each stage.
typedef struct {
    Tensor *cur, *other;
} GradFlow;
static inline void flow_swap(GradFlow *f) {
    Tensor *t = f->cur;
    f->cur = f->other, f->other = t;
}

// ---------------------------------------------------------------------------------------------------------------
// NCHW <-> token layout (row-major over (h, w)): [B, C, H, W] <-> [B, H*W, C]. Each backward is the other forward.
void nchw_to_tokens_forward(Tensor *out, const Tensor *in);
void nchw_to_tokens_backward(Tensor *din, const Tensor *dout);
void tokens_to_nchw_forward(Tensor *out, const Tensor *in);
// the same plus a residual of out's shape (not out itself): out = NCHW(in) + res, the add in the transpose on the GPU
void tokens_to_nchw_forward_residual(Tensor *out, const Tensor *in, const Tensor *res);
void tokens_to_nchw_backward(Tensor *din, const Tensor *dout);

// ---------------------------------------------------------------------------------------------------------------
// attention (diffusers Attention with AttnProcessor2_0): q = to_q(x), k = to_k(ctx), v = to_v(ctx) (ctx = x for
// self-attention), out = to_out.0(softmax(q k^T / sqrt(d)) v) per head. Every projection of every attention goes
// through one helper in blocks.c (attn_proj_forward / attn_proj_backward): the single place adapters attach to.
// A projection with a LoRA adapter (PEFT convention) computes y = x W^T + b + lora_scale (x A^T) B^T; its rank must
// not exceed the projection's input or output width. In a gradient struct, lora_a / lora_b receive dA, dB.

typedef struct {
    Tensor weight, bias;   // [out, in], [out] (bias.data NULL when absent)
    Tensor lora_a, lora_b; // [rank, in], [out, rank] (data NULL without an adapter)
    float lora_scale;      // alpha / rank
} AttnProj;

typedef struct {
    AttnProj to_q, to_k, to_v, to_out;
    int heads;
} AttnParams;

typedef struct {
    Tensor q, k, v; // [B, Tq, C], [B, Tk, C], [B, Tk, C]
    Tensor o;       // [B, Tq, C] attention output before to_out
    Tensor lse;     // [B, heads, Tq]
} AttnActs;

// ---------------------------------------------------------------------------------------------------------------
// ResnetBlock2D: out = conv2(SiLU(norm2(conv1(SiLU(norm1(x))) + time_emb_proj(temb_act)))) + shortcut(x);
// shortcut is conv_shortcut (1x1) when cin != cout. temb_act is SiLU(time embedding) [B, temb], computed once by
// the model for all its resnets (the VAE's resnets have no time input: temb = 0).

typedef struct {
    Layer norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut;
    int cin, cout, temb, groups;
    float eps;
} ResnetParams;

typedef struct {
    Tensor mean1, rstd1; // [B, groups] norm1 statistics
    Tensor h1;           // [B, cout, H, W] conv1 output plus the time projection
    Tensor mean2, rstd2; // [B, groups] norm2 statistics
} ResnetActs;

void resnet_plan_params(Arena *a, ResnetParams *p, const char *prefix, int cin, int cout, int temb, int groups,
                        float eps);
int64_t resnet_plan_acts(Arena *a, ResnetActs *x, const char *prefix, const ResnetParams *p, int64_t B, int64_t H,
                         int64_t W);
// [in | skip] [B, cin, H, W] -> out [B, cout, H, W]: in [B, cin - cs, H, W] and skip [B, cs, H, W] (the UNet up
// path's [hidden | skip]) are read where they lie, never copied into one tensor; skip NULL: in has all cin channels
void resnet_forward(const ResnetParams *p, ResnetActs *x, Tensor *out, const Tensor *in, const Tensor *skip,
                    const Tensor *temb_act, Scratch s);
// [din | dskip] (like [in | skip]) and dtemb [B, temb] written (din NULL: no input gradient; dtemb may be NULL)
void resnet_backward(const ResnetParams *p, ResnetParams *g, const ResnetActs *x, Tensor *din, Tensor *dskip,
                     Tensor *dtemb, const Tensor *dout, const Tensor *in, const Tensor *skip, const Tensor *temb_act,
                     Scratch s);

// ---------------------------------------------------------------------------------------------------------------
// Transformer2DModel: x + proj_out(blocks(proj_in(GroupNorm(x, eps 1e-6)))) with proj_in/proj_out 1x1 convs
// (use_linear_projection false: applied before/after the token transpose) or linears on tokens. Each
// BasicTransformerBlock: h += attn1(norm1(h)); h += attn2(norm2(h), ctx); h += ff(norm3(h)) with LayerNorm eps
// 1e-5, no norm on the context, ff = Linear(C, 8C) -> GEGLU -> Linear(4C, C).

typedef struct {
    Layer norm1, norm2, norm3;
    AttnParams attn1, attn2;
    Layer ff_in, ff_out; // ff.net.0.proj [8C, C], ff.net.2 [C, 4C]
} BasicBlockParams;

typedef struct {
    Layer norm, proj_in, proj_out;
    BasicBlockParams *blocks; // [depth]
    int channels, depth, linear, groups;
} TransformerParams;

typedef struct {
    Tensor ln1_mean, ln1_rstd, ln2_mean, ln2_rstd, ln3_mean, ln3_rstd; // [B, T]
    AttnActs attn1, attn2;
    Tensor h1, h2; // [B, T, C] residual stream after attn1, after attn2
    Tensor ff_h;   // [B, T, 8C] GEGLU input
    Tensor out;    // [B, T, C] block output
} BasicBlockActs;

typedef struct {
    Tensor mean, rstd;      // [B, groups]
    Tensor tokens;          // [B, T, C] proj_in output (input of block 0)
    BasicBlockActs *blocks; // [depth]
} TransformerActs;

void transformer_plan_params(Arena *a, TransformerParams *p, const char *prefix, int channels, int heads, int depth,
                             int cross_dim, int linear, int groups);
int64_t transformer_plan_acts(Arena *a, TransformerActs *x, const char *prefix, const TransformerParams *p,
                              int64_t B, int64_t H, int64_t W, int64_t ctx_len);
// in, out [B, C, H, W]; ctx [B, ctx_len, cross_dim]
void transformer_forward(const TransformerParams *p, TransformerActs *x, Tensor *out, const Tensor *in,
                         const Tensor *ctx, Scratch s);
// din [B, C, H, W] written (may be NULL); dctx [B, ctx_len, cross_dim] accumulates the context gradient (may be
// NULL: none computed)
void transformer_backward(const TransformerParams *p, TransformerParams *g, const TransformerActs *x, Tensor *din,
                          Tensor *dctx, const Tensor *dout, const Tensor *in, const Tensor *ctx, Scratch s);
void transformer_free(TransformerParams *p);
void transformer_acts_free(TransformerActs *x);

// ---------------------------------------------------------------------------------------------------------------
// Downsample2D: conv 3x3 stride 2 pad 1 (UNet), or, with asym_pad, zero pad (left 0, right 1, top 0, bottom 1) then
// conv 3x3 stride 2 pad 0 (VAE encoder). Upsample2D: nearest 2x, then conv 3x3 pad 1. Both keep no activations.

typedef struct {
    Layer conv;
    int channels, asym_pad;
} SamplerParams;

void downsample_plan_params(Arena *a, SamplerParams *p, const char *prefix, int channels, int asym_pad);
int64_t downsample_scratch(const SamplerParams *p, DType dt, int64_t B, int64_t H, int64_t W);
// in [B, C, H, W] -> out [B, C, H/2, W/2] (H, W even)
void downsample_forward(const SamplerParams *p, Tensor *out, const Tensor *in, Scratch s);
void downsample_backward(const SamplerParams *p, SamplerParams *g, Tensor *din, const Tensor *dout, const Tensor *in,
                         Scratch s);

void upsample_plan_params(Arena *a, SamplerParams *p, const char *prefix, int channels);
int64_t upsample_scratch(const SamplerParams *p, DType dt, int64_t B, int64_t H, int64_t W);
// in [B, C, H, W] -> out [B, C, 2H, 2W]
void upsample_forward(const SamplerParams *p, Tensor *out, const Tensor *in, Scratch s);
void upsample_backward(const SamplerParams *p, SamplerParams *g, Tensor *din, const Tensor *dout, const Tensor *in,
                       Scratch s);

// ---------------------------------------------------------------------------------------------------------------
// Output head of the UNet and of the VAE decoder and encoder: out = conv(SiLU(GroupNorm(h))), conv 3x3 pad 1. The
// backward recomputes the normalised input and its SiLU into scratch and reads the saved statistics.

// Scratch floats of head_forward / head_backward on h [B, C, H, W].
int64_t head_scratch(DType dt, int64_t B, int64_t C, int64_t H, int64_t W, int64_t groups);
// h [B, C, H, W] -> out [B, cout, H, W]; the norm statistics are saved in mean, rstd [B, groups].
void head_forward(const Layer *norm, const Layer *conv, Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *h,
                  int groups, float eps, Scratch s);
// From dout (may be f->cur seen with out's shape): the gradient of h is written to f->cur (no flow_swap; f->other
// is overwritten), parameter gradients accumulate into dnorm, dconv (NULL: none).
void head_backward(const Layer *norm, const Layer *conv, Layer *dnorm, Layer *dconv, const Tensor *mean,
                   const Tensor *rstd, const Tensor *h, const Tensor *dout, int groups, float eps, GradFlow *f,
                   Scratch s);

// ---------------------------------------------------------------------------------------------------------------
// VAE mid-block attention: x + to_out(attention(GroupNorm(x)) over the H*W tokens), one head, biases everywhere.

typedef struct {
    Layer group_norm;
    AttnParams attn;
    int channels, groups;
    float eps;
} VaeAttnParams;

typedef struct {
    Tensor mean, rstd; // [B, groups]
    AttnActs attn;
} VaeAttnActs;

void vae_attn_plan_params(Arena *a, VaeAttnParams *p, const char *prefix, int channels, int groups, float eps);
int64_t vae_attn_plan_acts(Arena *a, VaeAttnActs *x, const char *prefix, const VaeAttnParams *p, int64_t B,
                           int64_t H, int64_t W);
// in, out [B, C, H, W]
void vae_attn_forward(const VaeAttnParams *p, VaeAttnActs *x, Tensor *out, const Tensor *in, Scratch s);
void vae_attn_backward(const VaeAttnParams *p, VaeAttnParams *g, const VaeAttnActs *x, Tensor *din,
                       const Tensor *dout, const Tensor *in, Scratch s);

#ifdef __cplusplus
}
#endif
