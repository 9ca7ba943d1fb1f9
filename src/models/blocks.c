// blocks.c: the UNet and VAE building blocks of blocks.h, forward and backward side by side. Backwards recompute the
// cheap values (normalised inputs, SiLU and GEGLU outputs, upsampled and padded inputs) into scratch instead of
// keeping them, so a block's saved activations are its conv/linear outputs and normalisation statistics.
#include "blocks.h"

#include "../ops/cuda/cuda_api.h"

#include <stdarg.h>
#include <string.h>

#define TRANSFORMER_GN_EPS 1e-6f // Transformer2DModel's GroupNorm (hard-coded in diffusers)
#define TRANSFORMER_LN_EPS 1e-5f // BasicTransformerBlock's LayerNorms

static int want(const Tensor *t) { return t != NULL && t->data != NULL; }

// ---------------------------------------------------------------------------------------------------------------
// planning

const char *plan_prefix(char *buf, size_t n, const char *prefix, const char *fmt, ...) {
    size_t k = 0;
    if (prefix && prefix[0]) {
        int m = snprintf(buf, n, "%s.", prefix);
        CHECK(m > 0 && (size_t)m < n, "", "tensor name prefix '%s' is too long", prefix);
        k = (size_t)m;
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + k, n - k, fmt, ap);
    va_end(ap);
    CHECK(m >= 0 && (size_t)m < n - k, "", "tensor name under '%s' is too long", prefix ? prefix : "");
    return buf;
}

void plan_tensor(Arena *a, Tensor *slot, const char *prefix, const char *name, int ndim, const int64_t *shape) {
    char full[512];
    arena_add(a, slot, plan_prefix(full, sizeof full, prefix, "%s", name), a->float_dtype, ndim, shape);
}

void plan_tensor_f32(Arena *a, Tensor *slot, const char *prefix, const char *name, int ndim, const int64_t *shape) {
    char full[512];
    arena_add(a, slot, plan_prefix(full, sizeof full, prefix, "%s", name), DTYPE_F32, ndim, shape);
}

PlanStorage plan_storage_set(Arena *a, const Tensor *w) {
    PlanStorage before = {a->float_dtype, a->channels_last};
    arena_set_float_dtype(a, w->dtype);
    arena_set_channels_last(a, w->channels_last);
    return before;
}

void plan_storage_restore(Arena *a, PlanStorage before) {
    arena_set_float_dtype(a, before.dtype);
    arena_set_channels_last(a, before.channels_last);
}

static void plan_weight_bias(Arena *a, Tensor *w, Tensor *b, const char *prefix, const char *name, int ndim,
                             const int64_t *shape) {
    char n[256];
    snprintf(n, sizeof n, "%s.weight", name);
    plan_tensor(a, w, prefix, n, ndim, shape);
    if (b) {
        snprintf(n, sizeof n, "%s.bias", name);
        plan_tensor(a, b, prefix, n, 1, shape);
    }
}

void layer_plan_conv(Arena *a, Layer *l, const char *prefix, const char *name, int64_t cout, int64_t cin, int64_t k) {
    plan_weight_bias(a, &l->weight, &l->bias, prefix, name, 4, (int64_t[]){cout, cin, k, k});
}

void layer_plan_linear(Arena *a, Layer *l, const char *prefix, const char *name, int64_t out, int64_t in, int bias) {
    plan_weight_bias(a, &l->weight, bias ? &l->bias : NULL, prefix, name, 2, (int64_t[]){out, in});
}

void layer_plan_norm(Arena *a, Layer *l, const char *prefix, const char *name, int64_t channels) {
    plan_weight_bias(a, &l->weight, &l->bias, prefix, name, 1, (int64_t[]){channels});
}

void arena_cast(Arena *dst, const Arena *src) {
    CHECK(dst->n == src->n && dst->n > 0, "", "arena '%s' (%d tensors) is not a copy of '%s' (%d)", dst->group, dst->n,
          src->group, src->n);
    DType dt = dst->entries[0].desc.dtype, st = src->entries[0].desc.dtype;
    for (int i = 0; i < dst->n; i++) {
        const ArenaEntry *d = &dst->entries[i], *s = &src->entries[i];
        CHECK(d->desc.dtype == dt && s->desc.dtype == st && tensor_numel(&d->desc) == tensor_numel(&s->desc) &&
                  d->offset / dtype_size(dt) == s->offset / dtype_size(st),
              "", "arena '%s': '%s' does not match '%s' of '%s'", dst->group, d->name, s->name, src->group);
    }
    int64_t n = (int64_t)(src->size / dtype_size(st));
    CHECK((int64_t)(dst->size / dtype_size(dt)) == n, "", "arenas '%s' and '%s' differ in size", dst->group, src->group);
    Tensor td = tensor_make(dst->base, dt, dst->device, 1, &n), ts = tensor_make(src->base, st, src->device, 1, &n);
    tensor_cast(&td, &ts);
    // filters of more than one tap whose memory layouts differ (a channels-last copy): cast again, transposed (the
    // flat pass above wrote them in the source's layout: the one launch over the whole copy is kept, the filters are
    // a fraction of it)
    for (int i = 0; i < dst->n; i++) {
        const Tensor *d = &dst->entries[i].desc, *s = &src->entries[i].desc;
        if (d->ndim != 4 || d->channels_last == s->channels_last || d->shape[2] * d->shape[3] == 1) continue;
        Tensor bd = *d, bs = *s;
        bd.data = (char *)dst->base + dst->entries[i].offset;
        bs.data = (char *)src->base + src->entries[i].offset;
        tensor_cast(&bd, &bs);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// scratch and views

void recompute_bind(Arena *const *units, int n, const Tensor *region) {
    for (int u = 0; u < n; u++) {
        const Arena *r = units[u];
        for (int k = 0; r && k < r->n; k++) {
            Tensor *t = r->entries[k].slot;
            t->data = (char *)region->data + r->entries[k].offset, t->device = region->device;
        }
    }
}

Arena *recompute_unit_new(const Arena *a, const char *group) {
    Arena *r = xcalloc(1, sizeof *r);
    arena_init(r, group, a->device);
    r->float_dtype = a->float_dtype;
    r->channels_last = a->channels_last;
    return r;
}

size_t recompute_region_bytes(Arena *const *units, int n) {
    size_t region = 0;
    for (int u = 0; u < n; u++)
        if (units[u] && units[u]->size > region) region = units[u]->size;
    return region;
}

void recompute_pick(const size_t *unit_bytes, int n, double budget, size_t (*plan)(void *ctx, const unsigned char *flags),
                    void *ctx, unsigned char *flags) {
    // the largest units first; flagging k of them saves their sum less the largest (the region)
    int *order = xcalloc((size_t)n, sizeof *order), m = 0;
    for (int u = 0; u < n; u++)
        if (unit_bytes[u]) {
            int k = m++;
            for (; k > 0 && unit_bytes[order[k - 1]] < unit_bytes[u]; k--) order[k] = order[k - 1];
            order[k] = u;
        }
    for (int k = 0; k < m; k++) {
        flags[order[k]] = 1;
        if (k > 0 && (double)plan(ctx, flags) <= budget) break;
    }
    free(order);
}

Scratch scratch_make(const Tensor *region, const Tensor *like) {
    CHECK(region->dtype == DTYPE_F32, "", "scratch must be an f32 region, got %s", dtype_name(region->dtype));
    return (Scratch){.base = region->data, .cap = tensor_numel(region), .used = 0, .device = region->device,
                     .dtype = like->dtype, .channels_last = like->channels_last};
}

Tensor scratch_take_dtype(Scratch *s, DType dt, int ndim, const int64_t *shape) {
    Tensor t = tensor_make(NULL, dt, s->device, ndim, shape);
    t.channels_last = s->channels_last;
    // a piece of n elements takes at most scratch_floats(n) floats (narrower dtypes take fewer)
    int64_t bytes = (int64_t)tensor_bytes(&t), n = scratch_floats((bytes + 3) / 4);
    char b[96];
    CHECK(s->used + n <= s->cap, "a block's *_plan_acts under-counts its scratch",
          "scratch: %s needs %lld floats, %lld of %lld are left", tensor_shape_str(&t, b, sizeof b), (long long)n,
          (long long)(s->cap - s->used), (long long)s->cap);
    t.data = s->base + s->used;
    s->used += n;
    return t;
}

Tensor scratch_take(Scratch *s, int ndim, const int64_t *shape) { return scratch_take_dtype(s, s->dtype, ndim, shape); }

Tensor tensor_view(const Tensor *t, int ndim, const int64_t *shape) {
    Tensor v = tensor_make(t->data, t->dtype, t->device, ndim, shape);
    v.channels_last = t->channels_last;
    char a[96], b[96];
    CHECK(tensor_numel(&v) <= tensor_numel(t), "", "view %s does not fit in %s", tensor_shape_str(&v, a, sizeof a),
          tensor_shape_str(t, b, sizeof b));
    return v;
}

// ---------------------------------------------------------------------------------------------------------------
// layout: dst [B, K, R] = src [B, R, K] transposed per sample, in 32 x 32 tiles (+ res [B, K, R]: on the GPU added
// by the transpose itself, on the CPU after it; the same values either way, the transposed ones being exact copies)

static void transpose_batched(Tensor *dst, const Tensor *src, const Tensor *res, int64_t B, int64_t R, int64_t K) {
    if (dst->device == DEVICE_CUDA) {
        CHECK(src->device == DEVICE_CUDA && src->dtype == dst->dtype, "", "token transpose: %s %s into %s %s",
              device_name(src->device), dtype_name(src->dtype), device_name(dst->device), dtype_name(dst->dtype));
        CHECK(!res || (res->device == DEVICE_CUDA && res->dtype == dst->dtype && res->data != dst->data), "",
              "token transpose: the residual must be another GPU tensor of the output's dtype");
        transpose_batched_cuda(dst->data, src->data, res ? res->data : NULL, B, R, K, (int)dst->dtype);
        return;
    }
    enum { TILE = 32 };
    float *d = tensor_f32(dst);
    const float *x = tensor_f32(src);
    int64_t tr = (R + TILE - 1) / TILE, tk = (K + TILE - 1) / TILE, tiles = B * tr * tk;
#pragma omp parallel for if (B * R * K > 65536)
    for (int64_t t = 0; t < tiles; t++) {
        int64_t b = t / (tr * tk), r0 = (t / tk) % tr * TILE, k0 = t % tk * TILE;
        int64_t r1 = r0 + TILE < R ? r0 + TILE : R, k1 = k0 + TILE < K ? k0 + TILE : K;
        const float *xs = x + b * R * K;
        float *ds = d + b * R * K;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t k = k0; k < k1; k++) ds[k * R + r] = xs[r * K + k];
    }
    if (res) add_forward(dst, dst, res);
}

// Channels-last images [B, C, H, W] are stored as their tokens [B, H*W, C]: the transposes below are copies (with the
// residual: an add) of the flat data.
static Tensor flat(const Tensor *t) {
    int64_t n = tensor_numel(t);
    return tensor_reshape(t, 1, &n);
}

// out [B, H*W, C] = in [B, C, H, W]
void nchw_to_tokens_forward(Tensor *out, const Tensor *in) {
    char a[96];
    CHECK(in->ndim == 4, "", "nchw_to_tokens: want [B, C, H, W], got %s", tensor_shape_str(in, a, sizeof a));
    int64_t B = in->shape[0], C = in->shape[1], S = in->shape[2] * in->shape[3];
    tensor_expect_shape(out, "tokens", B, S, C);
    if (tensor_channels_last(in)) {
        Tensor o = flat(out), i = flat(in);
        tensor_cast(&o, &i);
        return;
    }
    transpose_batched(out, in, NULL, B, C, S);
}

void nchw_to_tokens_backward(Tensor *din, const Tensor *dout) {
    if (want(din)) tokens_to_nchw_forward(din, dout);
}

// out [B, C, H, W] = in [B, H*W, C] (+ res [B, C, H, W] for the _residual form)
void tokens_to_nchw_forward_residual(Tensor *out, const Tensor *in, const Tensor *res) {
    char a[96];
    CHECK(out->ndim == 4, "", "tokens_to_nchw: want a [B, C, H, W] output, got %s",
          tensor_shape_str(out, a, sizeof a));
    int64_t B = out->shape[0], C = out->shape[1], S = out->shape[2] * out->shape[3];
    tensor_expect_shape(in, "tokens", B, S, C);
    if (res) tensor_expect_shape(res, "residual", B, C, out->shape[2], out->shape[3]);
    if (tensor_channels_last(out)) {
        CHECK(!res || tensor_channels_last(res), "", "tokens_to_nchw: a channels-last output with an NCHW residual");
        Tensor o = flat(out), i = flat(in), r = res ? flat(res) : o;
        if (res) add_forward(&o, &i, &r);
        else tensor_cast(&o, &i);
        return;
    }
    transpose_batched(out, in, res, B, S, C);
}

void tokens_to_nchw_forward(Tensor *out, const Tensor *in) { tokens_to_nchw_forward_residual(out, in, NULL); }

void tokens_to_nchw_backward(Tensor *din, const Tensor *dout) {
    if (want(din)) nchw_to_tokens_forward(din, dout);
}

// ---------------------------------------------------------------------------------------------------------------
// attention

// Rank of a projection's adapter (0 without one), checked against the widths the scratch is planned for.
static int64_t lora_rank(const AttnProj *p) {
    if (!want(&p->lora_a)) return 0;
    int64_t r = p->lora_a.shape[0], out = p->weight.shape[0], in = p->weight.shape[1];
    USER_CHECK(r <= in && r <= out, "LoRA rank %lld exceeds the width of a %lld -> %lld attention projection",
               (long long)r, (long long)in, (long long)out);
    return r;
}

// Scratch of one projection call over N rows with an adapter of the largest allowed rank.
static int64_t proj_scratch(DType dt, int64_t N, int64_t in, int64_t out) {
    int64_t r = scratch_floats_dt(dt, N * (in < out ? in : out));
    return max64(r + scratch_floats_dt(dt, N * out), 2 * r + scratch_floats_dt(dt, N * in));
}

// The one place every attention projection runs: out [.., out] = in [.., in] W^T (+ b) (+ res) (+ lora_scale (in A^T)
// B^T); res (may be NULL) is the residual stream, added in the GEMM's epilogue on the GPU.
static void attn_proj_forward(Tensor *out, const Tensor *in, const AttnProj *p, const Tensor *res, Scratch s) {
    linear_forward_residual(out, in, &p->weight, &p->bias, res);
    int64_t r = lora_rank(p), N = tensor_rows(in);
    if (!r) return;
    Tensor t = SCRATCH(&s, N, r), y = scratch_take(&s, out->ndim, out->shape);
    linear_forward(&t, in, &p->lora_a, NULL);
    linear_forward(&y, &t, &p->lora_b, NULL);
    tensor_axpy(out, p->lora_scale, &y);
}

// din written, g (may be NULL) accumulated. With an adapter, t = lora_scale in A^T and u = lora_scale dout B give
// dB += dout^T t, dA += u^T in, din += u A.
static void attn_proj_backward(Tensor *din, AttnProj *g, const Tensor *dout, const Tensor *in, const AttnProj *p,
                               Scratch s) {
    linear_backward(din, GRAD(g, weight), GRAD(g, bias), dout, in, &p->weight);
    int64_t r = lora_rank(p), N = tensor_rows(in);
    if (!r) return;
    Tensor t = SCRATCH(&s, N, r), u = SCRATCH(&s, N, r), v = scratch_take(&s, in->ndim, in->shape);
    linear_forward(&t, in, &p->lora_a, NULL);
    tensor_scale(&t, p->lora_scale);
    linear_backward(&u, GRAD(g, lora_b), NULL, dout, &t, &p->lora_b);
    tensor_scale(&u, p->lora_scale);
    linear_backward(want(din) ? &v : NULL, GRAD(g, lora_a), NULL, &u, in, &p->lora_a);
    if (want(din)) tensor_axpy(din, 1.0f, &v);
}

static void attn_proj_plan(Arena *a, AttnProj *p, const char *prefix, const char *name, int64_t out, int64_t in,
                           int bias) {
    plan_weight_bias(a, &p->weight, bias ? &p->bias : NULL, prefix, name, 2, (int64_t[]){out, in});
}

// to_q [C, C], to_k and to_v [C, Cctx] (biases when qkv_bias), to_out.0 [C, C] with bias
static void attn_plan_params(Arena *a, AttnParams *p, const char *prefix, int64_t C, int64_t cctx, int heads,
                             int qkv_bias) {
    p->heads = heads;
    attn_proj_plan(a, &p->to_q, prefix, "to_q", C, C, qkv_bias);
    attn_proj_plan(a, &p->to_k, prefix, "to_k", C, cctx, qkv_bias);
    attn_proj_plan(a, &p->to_v, prefix, "to_v", C, cctx, qkv_bias);
    attn_proj_plan(a, &p->to_out, prefix, "to_out.0", C, C, 1);
}

static void attn_plan_acts(Arena *a, AttnActs *x, const char *prefix, const AttnParams *p, int64_t B, int64_t Tq,
                           int64_t Tk) {
    int64_t C = p->to_q.weight.shape[0];
    PLAN(a, &x->q, prefix, "q", B, Tq, C);
    PLAN(a, &x->k, prefix, "k", B, Tk, C);
    PLAN(a, &x->v, prefix, "v", B, Tk, C);
    PLAN(a, &x->o, prefix, "o", B, Tq, C);
    PLAN_F32(a, &x->lse, prefix, "lse", B, p->heads, Tq);
}

// Scratch of attn_forward (the projections') and of attn_backward, for Tq queries and Tk keys.
static int64_t attn_forward_scratch(const AttnParams *p, DType dt, int64_t B, int64_t Tq, int64_t Tk) {
    int64_t C = p->to_q.weight.shape[0], q = proj_scratch(dt, B * Tq, p->to_q.weight.shape[1], C);
    int64_t kv = proj_scratch(dt, B * Tk, p->to_k.weight.shape[1], C);
    int64_t o = proj_scratch(dt, B * Tq, C, p->to_out.weight.shape[0]);
    return max64(max64(q, kv), o);
}
static int64_t attn_backward_scratch(const AttnParams *p, DType dt, int64_t B, int64_t Tq, int64_t Tk) {
    int64_t C = p->to_q.weight.shape[0];
    return 2 * scratch_floats_dt(dt, B * Tq * C) + 2 * scratch_floats_dt(dt, B * Tk * C) +
           scratch_floats_dt(dt, B * Tk * p->to_k.weight.shape[1]) + attn_forward_scratch(p, dt, B, Tq, Tk);
}

// out [B, Tq, C] from in [B, Tq, C] and ctx [B, Tk, Cctx] (NULL: self-attention)
static void attn_forward(const AttnParams *p, AttnActs *x, Tensor *out, const Tensor *in, const Tensor *ctx,
                         const Tensor *res, Scratch s) {
    const Tensor *kv = ctx ? ctx : in;
    attn_proj_forward(&x->q, in, &p->to_q, NULL, s);
    attn_proj_forward(&x->k, kv, &p->to_k, NULL, s);
    attn_proj_forward(&x->v, kv, &p->to_v, NULL, s);
    attention_forward(&x->o, &x->lse, &x->q, &x->k, &x->v, p->heads, 0);
    attn_proj_forward(out, &x->o, &p->to_out, res, s);
}

// din written (self-attention: the sum of the q, k and v paths); dctx (cross-attention, may be NULL) accumulates
// the key and value paths' gradient of the context.
static void attn_backward(const AttnParams *p, AttnParams *g, const AttnActs *x, Tensor *din, Tensor *dctx,
                          const Tensor *dout, const Tensor *in, const Tensor *ctx, Scratch s) {
    Tensor d_o = scratch_take(&s, 3, x->o.shape), dq = scratch_take(&s, 3, x->q.shape);
    Tensor dk = scratch_take(&s, 3, x->k.shape), dv = scratch_take(&s, 3, x->v.shape);
    attn_proj_backward(&d_o, GRAD(g, to_out), dout, &x->o, &p->to_out, s);
    attention_backward(&dq, &dk, &dv, &d_o, &x->o, &x->lse, &x->q, &x->k, &x->v, p->heads, 0);
    attn_proj_backward(din, GRAD(g, to_q), &dq, in, &p->to_q, s);
    if (ctx || !want(din)) {
        const Tensor *kv = ctx ? ctx : in;
        int wctx = ctx && want(dctx);
        Tensor dkv = wctx ? scratch_take(&s, ctx->ndim, ctx->shape) : (Tensor){0};
        attn_proj_backward(wctx ? &dkv : NULL, GRAD(g, to_k), &dk, kv, &p->to_k, s);
        if (wctx) tensor_axpy(dctx, 1.0f, &dkv);
        attn_proj_backward(wctx ? &dkv : NULL, GRAD(g, to_v), &dv, kv, &p->to_v, s);
        if (wctx) tensor_axpy(dctx, 1.0f, &dkv);
        return;
    }
    Tensor tmp = tensor_view(&d_o, in->ndim, in->shape);
    attn_proj_backward(&tmp, GRAD(g, to_k), &dk, in, &p->to_k, s);
    tensor_axpy(din, 1.0f, &tmp);
    attn_proj_backward(&tmp, GRAD(g, to_v), &dv, in, &p->to_v, s);
    tensor_axpy(din, 1.0f, &tmp);
}

// ---------------------------------------------------------------------------------------------------------------
// ResnetBlock2D

void resnet_plan_params(Arena *a, ResnetParams *p, const char *prefix, int cin, int cout, int temb, int groups,
                        float eps) {
    CHECK(cin % groups == 0 && cout % groups == 0, "", "resnet '%s': %d and %d channels do not split into %d groups",
          prefix, cin, cout, groups);
    memset(p, 0, sizeof *p);
    p->cin = cin, p->cout = cout, p->temb = temb, p->groups = groups, p->eps = eps;
    layer_plan_norm(a, &p->norm1, prefix, "norm1", cin);
    layer_plan_conv(a, &p->conv1, prefix, "conv1", cout, cin, 3);
    if (temb) layer_plan_linear(a, &p->time_emb_proj, prefix, "time_emb_proj", cout, temb, 1);
    layer_plan_norm(a, &p->norm2, prefix, "norm2", cout);
    layer_plan_conv(a, &p->conv2, prefix, "conv2", cout, cout, 3);
    if (cin != cout) layer_plan_conv(a, &p->conv_shortcut, prefix, "conv_shortcut", cout, cin, 1);
}

int64_t resnet_plan_acts(Arena *a, ResnetActs *x, const char *prefix, const ResnetParams *p, int64_t B, int64_t H,
                         int64_t W) {
    PLAN_F32(a, &x->mean1, prefix, "norm1.mean", B, p->groups);
    PLAN_F32(a, &x->rstd1, prefix, "norm1.rstd", B, p->groups);
    PLAN(a, &x->h1, prefix, "h1", B, p->cout, H, W);
    PLAN_F32(a, &x->mean2, prefix, "norm2.mean", B, p->groups);
    PLAN_F32(a, &x->rstd2, prefix, "norm2.rstd", B, p->groups);
    int64_t img = scratch_floats_dt(a->float_dtype, B * max64(p->cin, p->cout) * H * W);
    return 3 * img + scratch_floats_dt(a->float_dtype, B * p->cout) + 2 * scratch_floats(B * p->groups); // backward
}

// The resnet's input [in | skip] (skip NULL: in alone) has cin channels; with a skip there is a shortcut conv.
static void resnet_expect_input(const ResnetParams *p, const Tensor *in, const Tensor *skip) {
    int64_t B = in->shape[0], H = in->shape[2], W = in->shape[3], cs = skip ? skip->shape[1] : 0;
    tensor_expect_shape(in, "resnet input", B, p->cin - cs, H, W);
    if (skip) tensor_expect_shape(skip, "resnet skip input", B, cs, H, W);
    CHECK(!skip || p->cin != p->cout, "", "resnet: a skip input without a shortcut conv (%d to %d channels)", p->cin,
          p->cout);
}

void resnet_forward(const ResnetParams *p, ResnetActs *x, Tensor *out, const Tensor *in, const Tensor *skip,
                    const Tensor *temb_act, Scratch s) {
    int64_t B = in->shape[0], H = in->shape[2], W = in->shape[3];
    resnet_expect_input(p, in, skip);
    Tensor buf = SCRATCH(&s, B * max64(p->cin, p->cout) * H * W);
    Tensor n1 = VIEW(&buf, B, p->cin, H, W), n2 = VIEW(&buf, B, p->cout, H, W);
    // each "GroupNorm, SiLU" is one fused op (one pass over memory on the GPU), reading [in | skip] where it lies
    groupnorm_act_forward_cat(&n1, &x->mean1, &x->rstd1, in, skip, &p->norm1.weight, &p->norm1.bias, p->groups,
                              p->eps, ACT_SILU);
    conv2d_forward(&x->h1, &n1, &p->conv1.weight, &p->conv1.bias, 1, 1);
    if (p->temb) {
        Tensor tp = SCRATCH(&s, B, p->cout); // [B, cout]
        linear_forward(&tp, temb_act, &p->time_emb_proj.weight, &p->time_emb_proj.bias);
        add_bcast_forward(&x->h1, &x->h1, &tp);
    }
    groupnorm_act_forward(&n2, &x->mean2, &x->rstd2, &x->h1, &p->norm2.weight, &p->norm2.bias, p->groups, p->eps,
                          ACT_SILU);
    // out = conv2(n2) + shortcut: the residual is added by the convolution (no pass of its own on the GPU)
    if (p->cin != p->cout) {
        Tensor sc = SCRATCH(&s, B, p->cout, H, W); // the shortcut, before conv2 reads n2
        conv1x1_forward_cat(&sc, in, skip, &p->conv_shortcut.weight, &p->conv_shortcut.bias);
        conv2d_forward_residual(out, &n2, &p->conv2.weight, &p->conv2.bias, &sc, 1, 1);
    } else {
        conv2d_forward_residual(out, &n2, &p->conv2.weight, &p->conv2.bias, in, 1, 1);
    }
}

// Three image-sized buffers a, b, c, reused as the values die; each "GroupNorm, SiLU" backward recomputes the
// normalised value itself (groupnorm_act_backward), so only the activation's output is rebuilt here:
//   a = SiLU(norm2(h1)), b = d a (conv2's input gradient) -> c = d h1;
//   a = SiLU(norm1([in | skip])), b = d a (conv1's) -> [din | dskip]; a (and b) = d shortcut's [in | skip].
void resnet_backward(const ResnetParams *p, ResnetParams *g, const ResnetActs *x, Tensor *din, Tensor *dskip,
                     Tensor *dtemb, const Tensor *dout, const Tensor *in, const Tensor *skip, const Tensor *temb_act,
                     Scratch s) {
    resnet_expect_input(p, in, skip);
    int64_t B = in->shape[0], H = in->shape[2], W = in->shape[3], Ci = p->cin, Co = p->cout;
    int64_t img = B * max64(Ci, Co) * H * W;
    Tensor a = SCRATCH(&s, img), b = SCRATCH(&s, img), c = SCRATCH(&s, img);
    Tensor mean = SCRATCH_F32(&s, B, p->groups), rstd = SCRATCH_F32(&s, B, p->groups);

    // out = conv2(SiLU(norm2(h1))) + shortcut
    Tensor s2 = VIEW(&a, B, Co, H, W), ds2 = VIEW(&b, B, Co, H, W), dh1 = VIEW(&c, B, Co, H, W);
    groupnorm_act_forward(&s2, &mean, &rstd, &x->h1, &p->norm2.weight, &p->norm2.bias, p->groups, p->eps, ACT_SILU);
    conv2d_backward(&ds2, GRAD(g, conv2.weight), GRAD(g, conv2.bias), dout, &s2, &p->conv2.weight, 1, 1);
    groupnorm_act_backward(&dh1, GRAD(g, norm2.weight), GRAD(g, norm2.bias), &ds2, &x->h1, &x->mean2, &x->rstd2,
                           &p->norm2.weight, &p->norm2.bias, p->groups, ACT_SILU);

    // h1 = conv1(SiLU(norm1(in))) + time_emb_proj(temb_act)
    if (p->temb) {
        Tensor dtp = SCRATCH(&s, B, Co);
        add_bcast_backward(NULL, &dtp, &dh1);
        linear_backward(dtemb, GRAD(g, time_emb_proj.weight), GRAD(g, time_emb_proj.bias), &dtp, temb_act,
                        &p->time_emb_proj.weight);
    }
    Tensor s1 = VIEW(&a, B, Ci, H, W), ds1 = VIEW(&b, B, Ci, H, W);
    groupnorm_act_forward_cat(&s1, &mean, &rstd, in, skip, &p->norm1.weight, &p->norm1.bias, p->groups, p->eps,
                              ACT_SILU);
    conv2d_backward(&ds1, GRAD(g, conv1.weight), GRAD(g, conv1.bias), &dh1, &s1, &p->conv1.weight, 1, 1);
    groupnorm_act_backward_cat(din, dskip, GRAD(g, norm1.weight), GRAD(g, norm1.bias), &ds1, in, skip, &x->mean1,
                               &x->rstd1, &p->norm1.weight, &p->norm1.bias, p->groups, ACT_SILU);

    // shortcut (ds1 is dead: its buffer takes the skip's part)
    if (Ci != Co) {
        Tensor dsc = VIEW(&a, B, in->shape[1], H, W), dss = skip ? VIEW(&b, B, skip->shape[1], H, W) : (Tensor){0};
        conv1x1_backward_cat(want(din) ? &dsc : NULL, want(din) && skip ? &dss : NULL, GRAD(g, conv_shortcut.weight),
                             GRAD(g, conv_shortcut.bias), dout, in, skip, &p->conv_shortcut.weight);
        if (want(din)) tensor_axpy(din, 1.0f, &dsc);
        if (want(din) && skip) tensor_axpy(dskip, 1.0f, &dss);
    } else if (want(din)) {
        tensor_axpy(din, 1.0f, dout);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// BasicTransformerBlock

static void basic_plan_params(Arena *a, BasicBlockParams *p, const char *prefix, int64_t C, int heads, int cross) {
    char q[256];
    layer_plan_norm(a, &p->norm1, prefix, "norm1", C);
    attn_plan_params(a, &p->attn1, plan_prefix(q, sizeof q, prefix, "attn1"), C, C, heads, 0);
    layer_plan_norm(a, &p->norm2, prefix, "norm2", C);
    attn_plan_params(a, &p->attn2, plan_prefix(q, sizeof q, prefix, "attn2"), C, cross, heads, 0);
    layer_plan_norm(a, &p->norm3, prefix, "norm3", C);
    layer_plan_linear(a, &p->ff_in, prefix, "ff.net.0.proj", 8 * C, C, 1);
    layer_plan_linear(a, &p->ff_out, prefix, "ff.net.2", C, 4 * C, 1);
}

static int64_t basic_plan_acts(Arena *a, BasicBlockActs *x, const char *prefix, const BasicBlockParams *p,
                               int64_t B, int64_t T, int64_t Tk) {
    char q[256];
    int64_t C = p->norm1.weight.shape[0];
    PLAN_F32(a, &x->ln1_mean, prefix, "norm1.mean", B, T);
    PLAN_F32(a, &x->ln1_rstd, prefix, "norm1.rstd", B, T);
    attn_plan_acts(a, &x->attn1, plan_prefix(q, sizeof q, prefix, "attn1"), &p->attn1, B, T, T);
    PLAN(a, &x->h1, prefix, "h1", B, T, C);
    PLAN_F32(a, &x->ln2_mean, prefix, "norm2.mean", B, T);
    PLAN_F32(a, &x->ln2_rstd, prefix, "norm2.rstd", B, T);
    attn_plan_acts(a, &x->attn2, plan_prefix(q, sizeof q, prefix, "attn2"), &p->attn2, B, T, Tk);
    PLAN(a, &x->h2, prefix, "h2", B, T, C);
    PLAN_F32(a, &x->ln3_mean, prefix, "norm3.mean", B, T);
    PLAN_F32(a, &x->ln3_rstd, prefix, "norm3.rstd", B, T);
    PLAN(a, &x->ff_h, prefix, "ff_h", B, T, 8 * C);
    PLAN(a, &x->out, prefix, "out", B, T, C);
    DType dt = a->float_dtype;
    int64_t tc = scratch_floats_dt(dt, B * T * C);
    int64_t fwd = tc + scratch_floats_dt(dt, 4 * B * T * C) + // l, gg (the residual sums go straight to h1, h2, out)
                  max64(attn_forward_scratch(&p->attn1, dt, B, T, T), attn_forward_scratch(&p->attn2, dt, B, T, Tk));
    int64_t phases = max64(scratch_floats_dt(dt, 8 * B * T * C) + scratch_floats_dt(dt, 4 * B * T * C),
                           tc + max64(attn_backward_scratch(&p->attn1, dt, B, T, T),
                                      attn_backward_scratch(&p->attn2, dt, B, T, Tk)));
    return max64(fwd, 2 * tc + 2 * scratch_floats(B * T) + phases);
}

// out [B, T, C] from in [B, T, C]
static void basic_forward(const BasicBlockParams *p, BasicBlockActs *x, const Tensor *in, const Tensor *ctx,
                          Scratch s) {
    int64_t B = in->shape[0], T = in->shape[1], C = in->shape[2];
    Tensor l = SCRATCH(&s, B, T, C), gg = SCRATCH(&s, B, T, 4 * C);
    // each sub-layer's output projection adds the residual stream in its GEMM's epilogue (h1 = attn1 + in, ...)
    layernorm_forward(&l, &x->ln1_mean, &x->ln1_rstd, in, &p->norm1.weight, &p->norm1.bias, TRANSFORMER_LN_EPS);
    attn_forward(&p->attn1, &x->attn1, &x->h1, &l, NULL, in, s);
    layernorm_forward(&l, &x->ln2_mean, &x->ln2_rstd, &x->h1, &p->norm2.weight, &p->norm2.bias, TRANSFORMER_LN_EPS);
    attn_forward(&p->attn2, &x->attn2, &x->h2, &l, ctx, &x->h1, s);
    layernorm_forward(&l, &x->ln3_mean, &x->ln3_rstd, &x->h2, &p->norm3.weight, &p->norm3.bias, TRANSFORMER_LN_EPS);
    linear_forward(&x->ff_h, &l, &p->ff_in.weight, &p->ff_in.bias);
    geglu_forward(&gg, &x->ff_h);
    linear_forward_residual(&x->out, &gg, &p->ff_out.weight, &p->ff_out.bias, &x->h2);
}

// din [B, T, C] written (may be NULL). dh carries the residual-stream gradient from the output back to the input.
static void basic_backward(const BasicBlockParams *p, BasicBlockParams *g, const BasicBlockActs *x, Tensor *din,
                           Tensor *dctx, const Tensor *dout, const Tensor *in, const Tensor *ctx, Scratch s) {
    int64_t B = in->shape[0], T = in->shape[1], C = in->shape[2];
    Tensor dh = SCRATCH(&s, B, T, C), l = SCRATCH(&s, B, T, C);
    Tensor mean = SCRATCH_F32(&s, B, T), rstd = SCRATCH_F32(&s, B, T);
    {   // out = h2 + ff_out(GEGLU(ff_in(norm3(h2))))
        Scratch t = s;
        Tensor big = SCRATCH(&t, B, T, 8 * C), mid = SCRATCH(&t, B, T, 4 * C);
        Tensor gg = VIEW(&big, B, T, 4 * C), dl = VIEW(&mid, B, T, C);
        layernorm_forward(&l, &mean, &rstd, &x->h2, &p->norm3.weight, &p->norm3.bias, TRANSFORMER_LN_EPS);
        geglu_forward(&gg, &x->ff_h);
        linear_backward(&mid, GRAD(g, ff_out.weight), GRAD(g, ff_out.bias), dout, &gg, &p->ff_out.weight);
        geglu_backward(&big, &mid, &x->ff_h);
        linear_backward(&dl, GRAD(g, ff_in.weight), GRAD(g, ff_in.bias), &big, &l, &p->ff_in.weight);
        layernorm_backward(&dh, GRAD(g, norm3.weight), GRAD(g, norm3.bias), &dl, &x->h2, &x->ln3_mean,
                           &x->ln3_rstd, &p->norm3.weight);
        tensor_axpy(&dh, 1.0f, dout);
    }
    {   // h2 = h1 + attn2(norm2(h1), ctx)
        Scratch t = s;
        Tensor dl = SCRATCH(&t, B, T, C);
        layernorm_forward(&l, &mean, &rstd, &x->h1, &p->norm2.weight, &p->norm2.bias, TRANSFORMER_LN_EPS);
        attn_backward(&p->attn2, GRAD(g, attn2), &x->attn2, &dl, dctx, &dh, &l, ctx, t);
        layernorm_backward(&l, GRAD(g, norm2.weight), GRAD(g, norm2.bias), &dl, &x->h1, &x->ln2_mean, &x->ln2_rstd,
                           &p->norm2.weight);
        tensor_axpy(&dh, 1.0f, &l);
    }
    {   // h1 = in + attn1(norm1(in))
        Scratch t = s;
        Tensor dl = SCRATCH(&t, B, T, C);
        layernorm_forward(&l, &mean, &rstd, in, &p->norm1.weight, &p->norm1.bias, TRANSFORMER_LN_EPS);
        attn_backward(&p->attn1, GRAD(g, attn1), &x->attn1, &dl, NULL, &dh, &l, NULL, t);
        layernorm_backward(din, GRAD(g, norm1.weight), GRAD(g, norm1.bias), &dl, in, &x->ln1_mean, &x->ln1_rstd,
                           &p->norm1.weight);
        if (want(din)) tensor_axpy(din, 1.0f, &dh);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Transformer2DModel

void transformer_plan_params(Arena *a, TransformerParams *p, const char *prefix, int channels, int heads, int depth,
                             int cross_dim, int linear, int groups) {
    CHECK(depth >= 1 && heads >= 1 && channels % heads == 0 && channels % groups == 0, "",
          "transformer '%s': %d channels, %d heads, depth %d, %d groups", prefix, channels, heads, depth, groups);
    memset(p, 0, sizeof *p);
    p->channels = channels, p->depth = depth, p->linear = linear;
    p->groups = groups;
    p->blocks = xcalloc((size_t)depth, sizeof *p->blocks);
    int64_t C = channels;
    layer_plan_norm(a, &p->norm, prefix, "norm", C);
    if (linear)
        layer_plan_linear(a, &p->proj_in, prefix, "proj_in", C, C, 1);
    else
        layer_plan_conv(a, &p->proj_in, prefix, "proj_in", C, C, 1);
    for (int k = 0; k < depth; k++) {
        char q[256];
        basic_plan_params(a, &p->blocks[k], plan_prefix(q, sizeof q, prefix, "transformer_blocks.%d", k), C, heads,
                          cross_dim);
    }
    if (linear)
        layer_plan_linear(a, &p->proj_out, prefix, "proj_out", C, C, 1);
    else
        layer_plan_conv(a, &p->proj_out, prefix, "proj_out", C, C, 1);
}

int64_t transformer_plan_acts(Arena *a, TransformerActs *x, const char *prefix, const TransformerParams *p,
                              int64_t B, int64_t H, int64_t W, int64_t ctx_len) {
    int64_t T = H * W, C = p->channels, need = 0;
    x->blocks = xcalloc((size_t)p->depth, sizeof *x->blocks);
    PLAN_F32(a, &x->mean, prefix, "norm.mean", B, p->groups);
    PLAN_F32(a, &x->rstd, prefix, "norm.rstd", B, p->groups);
    PLAN(a, &x->tokens, prefix, "tokens", B, T, C);
    for (int k = 0; k < p->depth; k++) {
        char q[256];
        need = max64(need, basic_plan_acts(a, &x->blocks[k], plan_prefix(q, sizeof q, prefix, "transformer_blocks.%d",
                                                                         k), &p->blocks[k], B, T, ctx_len));
    }
    int64_t tc = scratch_floats_dt(a->float_dtype, B * T * C);
    int64_t fwd = max64(2 * tc, need);
    int64_t bwd = 2 * tc + max64(need, tc + 2 * scratch_floats(B * p->groups));
    return max64(fwd, bwd);
}

void transformer_forward(const TransformerParams *p, TransformerActs *x, Tensor *out, const Tensor *in,
                         const Tensor *ctx, Scratch s) {
    int64_t B = in->shape[0], C = p->channels, H = in->shape[2], W = in->shape[3], T = H * W;
    tensor_expect_shape(in, "transformer input", B, C, H, W);
    {   // tokens = proj_in(GroupNorm(in)), the 1x1 conv before the transpose or the linear after it
        Scratch t = s;
        Tensor n = SCRATCH(&t, B, C, H, W), pr = SCRATCH(&t, B, C, H, W);
        groupnorm_forward(&n, &x->mean, &x->rstd, in, &p->norm.weight, &p->norm.bias, p->groups, TRANSFORMER_GN_EPS);
        if (p->linear) {
            Tensor tk = VIEW(&pr, B, T, C);
            nchw_to_tokens_forward(&tk, &n);
            linear_forward(&x->tokens, &tk, &p->proj_in.weight, &p->proj_in.bias);
        } else {
            conv2d_forward(&pr, &n, &p->proj_in.weight, &p->proj_in.bias, 1, 0);
            nchw_to_tokens_forward(&x->tokens, &pr);
        }
    }
    for (int k = 0; k < p->depth; k++)
        basic_forward(&p->blocks[k], &x->blocks[k], k ? &x->blocks[k - 1].out : &x->tokens, ctx, s);
    const Tensor *last = &x->blocks[p->depth - 1].out;
    Tensor pr = SCRATCH(&s, B, T, C);
    if (p->linear) {
        linear_forward(&pr, last, &p->proj_out.weight, &p->proj_out.bias);
        tokens_to_nchw_forward_residual(out, &pr, in); // the residual added by the transpose
    } else { // the residual added by the 1x1 convolution (no pass of its own on the GPU)
        Tensor img = VIEW(&pr, B, C, H, W);
        tokens_to_nchw_forward(&img, last);
        conv2d_forward_residual(out, &img, &p->proj_out.weight, &p->proj_out.bias, in, 1, 0);
    }
}

// Token gradients alternate between two buffers: cur holds d(output of the current stage), other receives the next.
void transformer_backward(const TransformerParams *p, TransformerParams *g, const TransformerActs *x, Tensor *din,
                          Tensor *dctx, const Tensor *dout, const Tensor *in, const Tensor *ctx, Scratch s) {
    int64_t B = in->shape[0], C = p->channels, H = in->shape[2], W = in->shape[3], T = H * W;
    Tensor ga = SCRATCH(&s, B, T, C), gb = SCRATCH(&s, B, T, C);
    Tensor *cur = &ga, *other = &gb, *swap;
    const Tensor *last = &x->blocks[p->depth - 1].out;
    // out = proj_out(last) + in
    if (p->linear) {
        tokens_to_nchw_backward(other, dout);
        linear_backward(cur, GRAD(g, proj_out.weight), GRAD(g, proj_out.bias), other, last, &p->proj_out.weight);
    } else {
        Tensor img = VIEW(other, B, C, H, W), dimg = VIEW(cur, B, C, H, W);
        tokens_to_nchw_forward(&img, last);
        conv2d_backward(&dimg, GRAD(g, proj_out.weight), GRAD(g, proj_out.bias), dout, &img, &p->proj_out.weight, 1,
                        0);
        tokens_to_nchw_backward(other, &dimg);
        swap = cur, cur = other, other = swap;
    }
    for (int k = p->depth - 1; k >= 0; k--) {
        basic_backward(&p->blocks[k], g ? &g->blocks[k] : NULL, &x->blocks[k], other, dctx, cur,
                       k ? &x->blocks[k - 1].out : &x->tokens, ctx, s);
        swap = cur, cur = other, other = swap;
    }
    // tokens = proj_in(GroupNorm(in)); cur holds d tokens
    Tensor n = SCRATCH(&s, B, C, H, W), mean = SCRATCH_F32(&s, B, p->groups), rstd = SCRATCH_F32(&s, B, p->groups), dn;
    groupnorm_forward(&n, &mean, &rstd, in, &p->norm.weight, &p->norm.bias, p->groups, TRANSFORMER_GN_EPS);
    if (p->linear) {
        Tensor dtk = VIEW(&n, B, T, C);
        nchw_to_tokens_forward(other, &n);
        linear_backward(&dtk, GRAD(g, proj_in.weight), GRAD(g, proj_in.bias), cur, other, &p->proj_in.weight);
        dn = VIEW(other, B, C, H, W);
        nchw_to_tokens_backward(&dn, &dtk);
    } else {
        Tensor dpr = VIEW(other, B, C, H, W);
        nchw_to_tokens_backward(&dpr, cur);
        dn = VIEW(cur, B, C, H, W);
        conv2d_backward(&dn, GRAD(g, proj_in.weight), GRAD(g, proj_in.bias), &dpr, &n, &p->proj_in.weight, 1, 0);
    }
    groupnorm_backward(din, GRAD(g, norm.weight), GRAD(g, norm.bias), &dn, in, &x->mean, &x->rstd, &p->norm.weight,
                       p->groups);
    if (want(din)) tensor_axpy(din, 1.0f, dout);
}

void transformer_free(TransformerParams *p) {
    free(p->blocks);
    p->blocks = NULL;
}

void transformer_acts_free(TransformerActs *x) {
    free(x->blocks);
    x->blocks = NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// Downsample2D and Upsample2D

void downsample_plan_params(Arena *a, SamplerParams *p, const char *prefix, int channels, int asym_pad) {
    memset(p, 0, sizeof *p);
    p->channels = channels, p->asym_pad = asym_pad;
    layer_plan_conv(a, &p->conv, prefix, "conv", channels, channels, 3);
}

int64_t downsample_scratch(const SamplerParams *p, DType dt, int64_t B, int64_t H, int64_t W) {
    return p->asym_pad ? 2 * scratch_floats_dt(dt, B * p->channels * (H + 1) * (W + 1)) : 0;
}

void downsample_forward(const SamplerParams *p, Tensor *out, const Tensor *in, Scratch s) {
    if (!p->asym_pad) {
        conv2d_forward(out, in, &p->conv.weight, &p->conv.bias, 2, 1);
        return;
    }
    Tensor pd = SCRATCH(&s, in->shape[0], in->shape[1], in->shape[2] + 1, in->shape[3] + 1);
    pad2d_forward(&pd, in, 0, 1, 0, 1);
    conv2d_forward(out, &pd, &p->conv.weight, &p->conv.bias, 2, 0);
}

void downsample_backward(const SamplerParams *p, SamplerParams *g, Tensor *din, const Tensor *dout, const Tensor *in,
                         Scratch s) {
    if (!p->asym_pad) {
        conv2d_backward(din, GRAD(g, conv.weight), GRAD(g, conv.bias), dout, in, &p->conv.weight, 2, 1);
        return;
    }
    Tensor pd = SCRATCH(&s, in->shape[0], in->shape[1], in->shape[2] + 1, in->shape[3] + 1);
    Tensor dpd = scratch_take(&s, 4, pd.shape);
    pad2d_forward(&pd, in, 0, 1, 0, 1);
    conv2d_backward(want(din) ? &dpd : NULL, GRAD(g, conv.weight), GRAD(g, conv.bias), dout, &pd, &p->conv.weight, 2,
                    0);
    pad2d_backward(din, &dpd, 0, 1, 0, 1);
}

void upsample_plan_params(Arena *a, SamplerParams *p, const char *prefix, int channels) {
    memset(p, 0, sizeof *p);
    p->channels = channels;
    layer_plan_conv(a, &p->conv, prefix, "conv", channels, channels, 3);
}

int64_t upsample_scratch(const SamplerParams *p, DType dt, int64_t B, int64_t H, int64_t W) {
    return 2 * scratch_floats_dt(dt, B * p->channels * 4 * H * W);
}

void upsample_forward(const SamplerParams *p, Tensor *out, const Tensor *in, Scratch s) {
    Tensor up = SCRATCH(&s, in->shape[0], in->shape[1], 2 * in->shape[2], 2 * in->shape[3]);
    upsample2x_forward(&up, in);
    conv2d_forward(out, &up, &p->conv.weight, &p->conv.bias, 1, 1);
}

void upsample_backward(const SamplerParams *p, SamplerParams *g, Tensor *din, const Tensor *dout, const Tensor *in,
                       Scratch s) {
    Tensor up = SCRATCH(&s, in->shape[0], in->shape[1], 2 * in->shape[2], 2 * in->shape[3]);
    Tensor dup = scratch_take(&s, 4, up.shape);
    upsample2x_forward(&up, in);
    conv2d_backward(want(din) ? &dup : NULL, GRAD(g, conv.weight), GRAD(g, conv.bias), dout, &up, &p->conv.weight, 1,
                    1);
    upsample2x_backward(din, &dup);
}

// ---------------------------------------------------------------------------------------------------------------
// output head

int64_t head_scratch(DType dt, int64_t B, int64_t C, int64_t H, int64_t W, int64_t groups) {
    return 2 * scratch_floats_dt(dt, B * C * H * W) + 2 * scratch_floats(B * groups);
}

void head_forward(const Layer *norm, const Layer *conv, Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *h,
                  int groups, float eps, Scratch s) {
    Tensor n = scratch_take(&s, 4, h->shape);
    groupnorm_forward(&n, mean, rstd, h, &norm->weight, &norm->bias, groups, eps);
    activation_forward(&n, &n, ACT_SILU);
    conv2d_forward(out, &n, &conv->weight, &conv->bias, 1, 1);
}

void head_backward(const Layer *norm, const Layer *conv, Layer *dnorm, Layer *dconv, const Tensor *mean,
                   const Tensor *rstd, const Tensor *h, const Tensor *dout, int groups, float eps, GradFlow *f,
                   Scratch s) {
    Tensor n = scratch_take(&s, 4, h->shape), act = scratch_take(&s, 4, h->shape);
    Tensor smean = SCRATCH_F32(&s, h->shape[0], groups), srstd = SCRATCH_F32(&s, h->shape[0], groups);
    Tensor dact = view_like(f->other, h), dh = view_like(f->cur, h);
    groupnorm_forward(&n, &smean, &srstd, h, &norm->weight, &norm->bias, groups, eps);
    activation_forward(&act, &n, ACT_SILU);
    conv2d_backward(&dact, GRAD(dconv, weight), GRAD(dconv, bias), dout, &act, &conv->weight, 1, 1);
    activation_backward(&dact, &dact, &n, ACT_SILU);
    groupnorm_backward(&dh, GRAD(dnorm, weight), GRAD(dnorm, bias), &dact, h, mean, rstd, &norm->weight, groups);
}

// ---------------------------------------------------------------------------------------------------------------
// VAE mid-block attention

void vae_attn_plan_params(Arena *a, VaeAttnParams *p, const char *prefix, int channels, int groups, float eps) {
    CHECK(channels % groups == 0, "", "attention '%s': %d channels do not split into %d groups", prefix, channels,
          groups);
    memset(p, 0, sizeof *p);
    p->channels = channels, p->groups = groups, p->eps = eps;
    layer_plan_norm(a, &p->group_norm, prefix, "group_norm", channels);
    attn_plan_params(a, &p->attn, prefix, channels, channels, 1, 1);
}

int64_t vae_attn_plan_acts(Arena *a, VaeAttnActs *x, const char *prefix, const VaeAttnParams *p, int64_t B,
                           int64_t H, int64_t W) {
    int64_t T = H * W, tc = scratch_floats_dt(a->float_dtype, B * T * p->channels);
    PLAN_F32(a, &x->mean, prefix, "group_norm.mean", B, p->groups);
    PLAN_F32(a, &x->rstd, prefix, "group_norm.rstd", B, p->groups);
    attn_plan_acts(a, &x->attn, prefix, &p->attn, B, T, T);
    return 4 * tc + 2 * scratch_floats(B * p->groups) + attn_backward_scratch(&p->attn, a->float_dtype, B, T, T);
}

void vae_attn_forward(const VaeAttnParams *p, VaeAttnActs *x, Tensor *out, const Tensor *in, Scratch s) {
    int64_t B = in->shape[0], C = p->channels, H = in->shape[2], W = in->shape[3], T = H * W;
    tensor_expect_shape(in, "attention input", B, C, H, W);
    Tensor n = SCRATCH(&s, B, C, H, W), tk = SCRATCH(&s, B, T, C), o = SCRATCH(&s, B, T, C);
    groupnorm_forward(&n, &x->mean, &x->rstd, in, &p->group_norm.weight, &p->group_norm.bias, p->groups, p->eps);
    nchw_to_tokens_forward(&tk, &n);
    attn_forward(&p->attn, &x->attn, &o, &tk, NULL, NULL, s);
    tokens_to_nchw_forward(out, &o);
    add_forward(out, out, in);
}

void vae_attn_backward(const VaeAttnParams *p, VaeAttnParams *g, const VaeAttnActs *x, Tensor *din,
                       const Tensor *dout, const Tensor *in, Scratch s) {
    int64_t B = in->shape[0], C = p->channels, H = in->shape[2], W = in->shape[3], T = H * W;
    Tensor d_o = SCRATCH(&s, B, T, C), n = SCRATCH(&s, B, C, H, W), tk = SCRATCH(&s, B, T, C);
    Tensor dtk = SCRATCH(&s, B, T, C), mean = SCRATCH_F32(&s, B, p->groups), rstd = SCRATCH_F32(&s, B, p->groups);
    tokens_to_nchw_backward(&d_o, dout);
    groupnorm_forward(&n, &mean, &rstd, in, &p->group_norm.weight, &p->group_norm.bias, p->groups, p->eps);
    nchw_to_tokens_forward(&tk, &n);
    attn_backward(&p->attn, GRAD(g, attn), &x->attn, &dtk, NULL, &d_o, &tk, NULL, s);
    nchw_to_tokens_backward(&n, &dtk);
    groupnorm_backward(din, GRAD(g, group_norm.weight), GRAD(g, group_norm.bias), &n, in, &x->mean, &x->rstd,
                       &p->group_norm.weight, p->groups);
    if (want(din)) tensor_axpy(din, 1.0f, dout);
}
