// vae.c: AutoencoderKL configuration, parameters, the decoder forward and backward, and the encoder forward
// (diffusers autoencoder_kl.py and vae.py: Encoder, Decoder, UNetMidBlock2D, Down/UpDecoderBlock2D). Every norm of
// the VAE uses eps 1e-6; its resnets have no time input.
#include "vae.h"

#include <string.h>

#include "../core/device.h"
#include "../io/json.h"

const char *const vae_weight_renames[][2] = {
    {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}, {NULL, NULL}};

// ---------------------------------------------------------------------------------------------------------------
// configuration

static void expect_block_types(const JsonDoc *d, const char *key, const char *want, int levels) {
    const char *v[VAE_MAX_LEVELS + 1];
    int n = json_get_string_list(d, key, v, VAE_MAX_LEVELS);
    USER_CHECK(n == levels, "'%s': %s has %d entries, block_out_channels %d", d->path, key, n, levels);
    for (int i = 0; i < n; i++)
        USER_CHECK(!strcmp(v[i], want), "'%s': unsupported %s entry \"%s\" (drtune supports %s)", d->path, key, v[i],
                   want);
}

void vae_load_config(VAEConfig *cfg, const char *path) {
    JsonDoc d;
    json_load_config(&d, path);
    const char *file = d.path;
    VAEConfig *c = cfg;
    memset(c, 0, sizeof *c);
    const char *cls = json_get_string(&d, "_class_name", "AutoencoderKL");
    USER_CHECK(!strcmp(cls, "AutoencoderKL"), "'%s': _class_name \"%s\" is not AutoencoderKL", file, cls);
    const char *act = json_get_string(&d, "act_fn", "silu");
    USER_CHECK(!strcmp(act, "silu"), "'%s': unsupported act_fn = \"%s\" (drtune supports \"silu\")", file, act);
    static const char *const must_be_null[] = {"shift_factor", "latents_mean", "latents_std"};
    for (int i = 0; i < 3; i++)
        USER_CHECK(!json_has(&d, must_be_null[i]), "'%s': unsupported %s (drtune supports null)", file,
                   must_be_null[i]);
    c->levels = json_get_required_int_list(&d, "block_out_channels", c->block_out, VAE_MAX_LEVELS);
    expect_block_types(&d, "down_block_types", "DownEncoderBlock2D", c->levels);
    expect_block_types(&d, "up_block_types", "UpDecoderBlock2D", c->levels);
    c->in_channels = json_get_int(&d, "in_channels", 3);
    c->out_channels = json_get_int(&d, "out_channels", 3);
    c->latent_channels = json_get_int(&d, "latent_channels", 4);
    c->layers = json_get_int(&d, "layers_per_block", 1);
    c->groups = json_get_int(&d, "norm_num_groups", 32);
    c->scaling_factor = (float)json_get_number(&d, "scaling_factor", 0.18215);
    c->quant_conv = json_get_bool(&d, "use_quant_conv", 1);
    c->post_quant_conv = json_get_bool(&d, "use_post_quant_conv", 1);
    c->mid_attention = json_get_bool(&d, "mid_block_add_attention", 1);
    USER_CHECK(c->layers >= 1 && c->layers < VAE_MAX_LAYERS, "'%s': layers_per_block %d (1..%d supported)", file,
               c->layers, VAE_MAX_LAYERS - 1);
    USER_CHECK(c->in_channels > 0 && c->out_channels > 0 && c->latent_channels > 0 && c->groups > 0 &&
                   c->scaling_factor > 0,
               "'%s': in_channels, out_channels, latent_channels, norm_num_groups and scaling_factor must be positive",
               file);
    for (int i = 0; i < c->levels; i++)
        json_check_multiple(&d, "block_out_channels", c->block_out[i], "norm_num_groups", c->groups);
    json_free(&d);
}

// ---------------------------------------------------------------------------------------------------------------
// parameters

static void plan_mid(Arena *a, VAEMid *m, const char *prefix, int C, const VAEConfig *c) {
    char p[256];
    resnet_plan_params(a, &m->res[0], plan_prefix(p, sizeof p, prefix, "resnets.0"), C, C, 0, c->groups, VAE_EPS);
    if (c->mid_attention)
        vae_attn_plan_params(a, &m->attn, plan_prefix(p, sizeof p, prefix, "attentions.0"), C, c->groups, VAE_EPS);
    resnet_plan_params(a, &m->res[1], plan_prefix(p, sizeof p, prefix, "resnets.1"), C, C, 0, c->groups, VAE_EPS);
}

// Decoder up level i works at block_out[levels-1-i] with layers + 1 resnets; encoder down level i at block_out[i].
static void plan_level(Arena *a, VAELevel *lv, const char *prefix, int cin, int cout, int n_layers, int sampler,
                       int up, const VAEConfig *c) {
    char p[256];
    lv->n_layers = n_layers, lv->has_sampler = sampler;
    for (int j = 0; j < n_layers; j++)
        resnet_plan_params(a, &lv->res[j], plan_prefix(p, sizeof p, prefix, "resnets.%d", j), j ? cout : cin, cout, 0,
                           c->groups, VAE_EPS);
    if (sampler && up) upsample_plan_params(a, &lv->sampler, plan_prefix(p, sizeof p, prefix, "upsamplers.0"), cout);
    if (sampler && !up)
        downsample_plan_params(a, &lv->sampler, plan_prefix(p, sizeof p, prefix, "downsamplers.0"), cout, 1);
}

void vae_plan_params(Arena *a, VAE *v, const VAEConfig *cfg, int parts) {
    memset(v, 0, sizeof *v);
    v->cfg = *cfg, v->parts = parts;
    const VAEConfig *c = &v->cfg;
    int L = c->levels, top = c->block_out[L - 1], lat = c->latent_channels;
    char p[256];
    if (parts & VAE_ENCODER) {
        layer_plan_conv(a, &v->enc_conv_in, "encoder", "conv_in", c->block_out[0], c->in_channels, 3);
        for (int i = 0; i < L; i++)
            plan_level(a, &v->enc_down[i], plan_prefix(p, sizeof p, "", "encoder.down_blocks.%d", i),
                       c->block_out[i > 0 ? i - 1 : 0], c->block_out[i], c->layers, i < L - 1, 0, c);
        plan_mid(a, &v->enc_mid, "encoder.mid_block", top, c);
        layer_plan_norm(a, &v->enc_norm_out, "encoder", "conv_norm_out", top);
        layer_plan_conv(a, &v->enc_conv_out, "encoder", "conv_out", 2 * lat, top, 3);
        if (c->quant_conv) layer_plan_conv(a, &v->quant_conv, "", "quant_conv", 2 * lat, 2 * lat, 1);
    }
    if (parts & VAE_DECODER) {
        if (c->post_quant_conv) layer_plan_conv(a, &v->post_quant_conv, "", "post_quant_conv", lat, lat, 1);
        layer_plan_conv(a, &v->dec_conv_in, "decoder", "conv_in", top, lat, 3);
        plan_mid(a, &v->dec_mid, "decoder.mid_block", top, c);
        for (int i = 0; i < L; i++)
            plan_level(a, &v->dec_up[i], plan_prefix(p, sizeof p, "", "decoder.up_blocks.%d", i),
                       c->block_out[L - (i > 0 ? i : 1)], c->block_out[L - 1 - i], c->layers + 1, i < L - 1, 1, c);
        layer_plan_norm(a, &v->dec_norm_out, "decoder", "conv_norm_out", c->block_out[0]);
        layer_plan_conv(a, &v->dec_conv_out, "decoder", "conv_out", c->out_channels, c->block_out[0], 3);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// activations

typedef struct {
    int64_t need, flow; // largest scratch need and stage (floats)
} PlanSizes;

static void plan_stage(Arena *a, Tensor *slot, const char *prefix, const char *name, int64_t B, int64_t C, int64_t H,
                       int64_t W, PlanSizes *sz) {
    PLAN(a, slot, prefix, name, B, C, H, W);
    sz->flow = max64(sz->flow, B * C * H * W);
}

// u: where the block's activations other than its output go (a, or its recompute unit's arena)
static void plan_mid_acts(Arena *a, Arena *u, VAEMidActs *x, const VAEMid *m, const char *prefix, int attn,
                          int64_t B, int64_t H, int64_t W, PlanSizes *sz) {
    char p[256];
    int64_t C = m->res[0].cout;
    x->recompute = u != a;
    sz->need = max64(sz->need, resnet_plan_acts(u, &x->res[0], plan_prefix(p, sizeof p, prefix, "resnets.0"),
                                                &m->res[0], B, H, W));
    plan_stage(u, &x->out[0], prefix, "resnets.0.out", B, C, H, W, sz);
    if (attn) {
        sz->need = max64(sz->need, vae_attn_plan_acts(u, &x->attn, plan_prefix(p, sizeof p, prefix, "attentions.0"),
                                                      &m->attn, B, H, W));
        plan_stage(u, &x->out[1], prefix, "attentions.0.out", B, C, H, W, sz);
    }
    sz->need = max64(sz->need, resnet_plan_acts(u, &x->res[1], plan_prefix(p, sizeof p, prefix, "resnets.1"),
                                                &m->res[1], B, H, W));
    plan_stage(a, &x->out[2], prefix, "resnets.1.out", B, C, H, W, sz);
}

// Plans a level working at *h x *w and moves them to the size after its sampler. u[j] (NULL: a for all): where
// resnet j's activations other than its output go (a, or its recompute unit's arena).
static void plan_level_acts(Arena *a, Arena *const *u, VAELevelActs *x, const VAELevel *lv, const char *prefix,
                            int up, int64_t B, int64_t *h, int64_t *w, PlanSizes *sz) {
    char p[256];
    int64_t C = lv->res[0].cout;
    for (int j = 0; j < lv->n_layers; j++) {
        Arena *r = u ? u[j] : a;
        x->recompute[j] = r != a;
        sz->need = max64(sz->need, resnet_plan_acts(r, &x->res[j], plan_prefix(p, sizeof p, prefix, "resnets.%d", j),
                                                    &lv->res[j], B, *h, *w));
        plan_stage(a, &x->res_out[j], prefix, plan_prefix(p, sizeof p, "", "resnets.%d.out", j), B, C, *h, *w, sz);
    }
    if (!lv->has_sampler) return;
    sz->need = max64(sz->need, up ? upsample_scratch(&lv->sampler, a->float_dtype, B, *h, *w)
                                  : downsample_scratch(&lv->sampler, a->float_dtype, B, *h, *w));
    *h = up ? 2 * *h : *h / 2, *w = up ? 2 * *w : *w / 2;
    plan_stage(a, &x->sampler_out, prefix, up ? "upsamplers.0.out" : "downsamplers.0.out", B, C, *h, *w, sz);
}

static int up_unit(int i, int j) { return 1 + i * VAE_MAX_LAYERS + j; } // unit 0: the mid block

// Where unit u's activations are planned: an arena of its own (placed in the region) when flagged, else a.
static Arena *unit_arena(Arena *a, VAEDecodeActs *x, int u, const unsigned char *flags) {
    if (!flags || !flags[u]) return a;
    return x->unit_plan[u] = recompute_unit_new(a, "vae-recompute");
}

// The decoder's plan with the units flagged in flags[] (NULL: none).
static void plan_decode(Arena *a, VAEDecodeActs *x, const VAE *v, int64_t B, int64_t h, int64_t w,
                        const unsigned char *flags) {
    const VAEConfig *c = &v->cfg;
    CHECK(v->parts & VAE_DECODER, "plan the VAE with VAE_DECODER", "VAE decoder activations without a decoder");
    USER_CHECK(B >= 1 && h > 0 && w > 0, "VAE decode: batch %lld of %lld x %lld latents", (long long)B, (long long)h,
               (long long)w);
    memset(x, 0, sizeof *x);
    x->B = B, x->h = h, x->w = w;
    PlanSizes sz = {0, 0};
    int L = c->levels;
    int64_t f = (int64_t)1 << (L - 1);
    char p[256];
    PlanStorage before = plan_storage_set(a, &v->dec_conv_in.weight); // activations stored as the weights
    PLAN(a, &x->z, "", "decoder.input", B, c->latent_channels, h, w);
    if (a->float_dtype != DTYPE_F32 || a->channels_last)
        PLAN(a, &x->out, "", "decoder.output", B, c->out_channels, f * h, f * w);
    if (c->post_quant_conv) plan_stage(a, &x->pq_out, "", "post_quant_conv.out", B, c->latent_channels, h, w, &sz);
    else sz.flow = max64(sz.flow, B * c->latent_channels * h * w); // the latents' gradient passes through the flow
    plan_stage(a, &x->conv_in_out, "", "decoder.conv_in.out", B, c->block_out[L - 1], h, w, &sz);
    plan_mid_acts(a, unit_arena(a, x, 0, flags), &x->mid, &v->dec_mid, "decoder.mid_block", c->mid_attention, B, h, w,
                  &sz);
    int64_t H = h, W = w;
    for (int i = 0; i < L; i++) {
        Arena *u[VAE_MAX_LAYERS];
        for (int j = 0; j < v->dec_up[i].n_layers; j++) u[j] = unit_arena(a, x, up_unit(i, j), flags);
        plan_level_acts(a, u, &x->up[i], &v->dec_up[i], plan_prefix(p, sizeof p, "", "decoder.up_blocks.%d", i), 1, B,
                        &H, &W, &sz);
    }
    PLAN_F32(a, &x->norm_mean, "", "decoder.conv_norm_out.mean", B, c->groups);
    PLAN_F32(a, &x->norm_rstd, "", "decoder.conv_norm_out.rstd", B, c->groups);
    sz.need = max64(sz.need, head_scratch(a->float_dtype, B, c->block_out[0], H, W, c->groups));
    PLAN(a, &x->gflow[0], "", "grad.flow.0", sz.flow);
    PLAN(a, &x->gflow[1], "", "grad.flow.1", sz.flow);
    PLAN_F32(a, &x->scratch, "", "scratch", sz.need);
    for (int u = 0; u < VAE_MAX_UNITS; u++) x->n_recompute += x->unit_plan[u] != NULL;
    size_t region = recompute_region_bytes(x->unit_plan, VAE_MAX_UNITS);
    if (region) arena_add(a, &x->region, "vae.recompute", DTYPE_F32, 1, (int64_t[]){(int64_t)(region / sizeof(float))});
    plan_storage_restore(a, before);
}

void vae_decode_acts_free(VAEDecodeActs *x) {
    for (int u = 0; u < VAE_MAX_UNITS; u++)
        if (x->unit_plan[u]) {
            arena_free(x->unit_plan[u]);
            free(x->unit_plan[u]);
            x->unit_plan[u] = NULL;
        }
}

typedef struct {
    const VAE *v;
    Device d;
    int64_t B, h, w;
    size_t *unit_bytes; // out: each flagged unit's bytes (NULL: not wanted)
} PlanArgs;
static size_t plan_bytes(void *ctx, const unsigned char *flags) {
    const PlanArgs *p = ctx;
    Arena a;
    arena_init(&a, "vae-acts", p->d);
    VAEDecodeActs *x = xcalloc(1, sizeof *x);
    plan_decode(&a, x, p->v, p->B, p->h, p->w, flags);
    size_t n = a.size;
    for (int u = 0; p->unit_bytes && u < VAE_MAX_UNITS; u++) p->unit_bytes[u] = x->unit_plan[u] ? x->unit_plan[u]->size : 0;
    vae_decode_acts_free(x);
    free(x);
    arena_free(&a);
    return n;
}

void vae_plan_decode_acts_recompute(Arena *a, VAEDecodeActs *x, const VAE *v, int64_t B, int64_t h, int64_t w,
                                    const UNetRecompute *rc) {
    UNetRecomputeMode mode = rc ? rc->mode : UNET_RECOMPUTE_OFF;
    unsigned char all[VAE_MAX_UNITS], flags[VAE_MAX_UNITS] = {0};
    size_t unit_bytes[VAE_MAX_UNITS], start = a->size;
    memset(all, 1, sizeof all); // every unit (those beyond this decoder's are never planned)
    PlanArgs pa = {v, a->device, B, h, w, NULL};
    size_t off = mode == UNET_RECOMPUTE_OFF ? 0 : plan_bytes(&pa, NULL);
    if (mode != UNET_RECOMPUTE_OFF) {
        pa.unit_bytes = unit_bytes;
        plan_bytes(&pa, all);
        pa.unit_bytes = NULL;
    }
    if (mode == UNET_RECOMPUTE_ALL) memcpy(flags, all, sizeof flags);
    if (mode == UNET_RECOMPUTE_AUTO && (double)off > rc->budget)
        recompute_pick(unit_bytes, VAE_MAX_UNITS, rc->budget, plan_bytes, &pa, flags);
    plan_decode(a, x, v, B, h, w, flags);
    x->bytes_off = mode == UNET_RECOMPUTE_OFF ? a->size - start : off;
}

UNetRecompute vae_recompute_share(const UNetRecompute *rc, size_t unet_bytes) {
    UNetRecompute r = rc ? *rc : (UNetRecompute){UNET_RECOMPUTE_OFF, 0};
    if (r.mode == UNET_RECOMPUTE_AUTO) r.budget = r.budget > (double)unet_bytes ? r.budget - (double)unet_bytes : 0;
    return r;
}

void vae_plan_decode_acts(Arena *a, VAEDecodeActs *x, const VAE *v, int64_t B, int64_t h, int64_t w) {
    vae_plan_decode_acts_recompute(a, x, v, B, h, w, NULL);
}

void vae_plan_encode_acts(Arena *a, VAEEncodeActs *x, const VAE *v, int64_t B, int64_t H, int64_t W) {
    const VAEConfig *c = &v->cfg;
    int L = c->levels;
    int64_t f = (int64_t)1 << (L - 1);
    CHECK(v->parts & VAE_ENCODER, "plan the VAE with VAE_ENCODER", "VAE encoder activations without an encoder");
    USER_CHECK(B >= 1 && H > 0 && W > 0 && H % f == 0 && W % f == 0,
               "VAE encode: image size %lld x %lld must be a positive multiple of %lld", (long long)H, (long long)W,
               (long long)f);
    memset(x, 0, sizeof *x);
    x->B = B, x->H = H, x->W = W;
    PlanSizes sz = {0, 0};
    char p[256];
    plan_stage(a, &x->conv_in_out, "", "encoder.conv_in.out", B, c->block_out[0], H, W, &sz);
    int64_t h = H, w = W;
    for (int i = 0; i < L; i++)
        plan_level_acts(a, NULL, &x->down[i], &v->enc_down[i],
                        plan_prefix(p, sizeof p, "", "encoder.down_blocks.%d", i), 0, B, &h, &w, &sz);
    plan_mid_acts(a, a, &x->mid, &v->enc_mid, "encoder.mid_block", c->mid_attention, B, h, w, &sz);
    PLAN_F32(a, &x->norm_mean, "", "encoder.conv_norm_out.mean", B, c->groups);
    PLAN_F32(a, &x->norm_rstd, "", "encoder.conv_norm_out.rstd", B, c->groups);
    plan_stage(a, &x->conv_out_out, "", "encoder.conv_out.out", B, 2 * c->latent_channels, h, w, &sz);
    PLAN(a, &x->moments, "", "moments", B, 2 * c->latent_channels, h, w);
    sz.need = max64(sz.need, head_scratch(a->float_dtype, B, c->block_out[L - 1], h, w, c->groups));
    PLAN_F32(a, &x->scratch, "", "scratch", sz.need);
    x->flow = sz.flow;
}

// ---------------------------------------------------------------------------------------------------------------
// forward

static const Tensor *mid_forward(const VAEMid *m, VAEMidActs *x, const Tensor *in, int attn, Scratch s) {
    resnet_forward(&m->res[0], &x->res[0], &x->out[0], in, NULL, NULL, s);
    if (attn) vae_attn_forward(&m->attn, &x->attn, &x->out[1], &x->out[0], s);
    resnet_forward(&m->res[1], &x->res[1], &x->out[2], attn ? &x->out[1] : &x->out[0], NULL, NULL, s);
    return &x->out[2];
}

static const Tensor *level_forward(const VAELevel *lv, VAELevelActs *x, const Tensor *h, int up, Scratch s) {
    for (int j = 0; j < lv->n_layers; j++) {
        resnet_forward(&lv->res[j], &x->res[j], &x->res_out[j], h, NULL, NULL, s);
        h = &x->res_out[j];
    }
    if (lv->has_sampler && up) upsample_forward(&lv->sampler, &x->sampler_out, h, s);
    if (lv->has_sampler && !up) downsample_forward(&lv->sampler, &x->sampler_out, h, s);
    return vae_level_out(x, lv);
}

void vae_decode(const VAE *v, VAEDecodeActs *x, Tensor *image, const Tensor *latents) {
    const VAEConfig *c = &v->cfg;
    int L = c->levels;
    int64_t f = (int64_t)1 << (L - 1);
    tensor_expect_shape(latents, "VAE latents", x->B, c->latent_channels, x->h, x->w);
    tensor_expect_shape(image, "VAE image", x->B, c->out_channels, f * x->h, f * x->w);
    recompute_bind(x->unit_plan, VAE_MAX_UNITS, &x->region);
    Scratch s = scratch_make(&x->scratch, &x->z);
    tensor_cast(&x->z, latents); // into the activations' dtype
    tensor_scale(&x->z, 1.0f / c->scaling_factor);
    const Tensor *h = &x->z;
    if (c->post_quant_conv) {
        conv2d_forward(&x->pq_out, h, &v->post_quant_conv.weight, &v->post_quant_conv.bias, 1, 0);
        h = &x->pq_out;
    }
    conv2d_forward(&x->conv_in_out, h, &v->dec_conv_in.weight, &v->dec_conv_in.bias, 1, 1);
    h = mid_forward(&v->dec_mid, &x->mid, &x->conv_in_out, c->mid_attention, s);
    for (int i = 0; i < L; i++) h = level_forward(&v->dec_up[i], &x->up[i], h, 1, s);
    Tensor *out = x->out.data ? &x->out : image; // bf16 or channels last: the output is cast to the caller's image
    head_forward(&v->dec_norm_out, &v->dec_conv_out, out, &x->norm_mean, &x->norm_rstd, h, c->groups, VAE_EPS, s);
    if (out != image) tensor_cast(image, out);
}

// logvar = clamp(logvar, -30, 20), NaN kept (torch.clamp)
static void clamp_logvar(Tensor *t) {
    CHECK(t->device == DEVICE_CPU, "the log-variance clamp has no CUDA kernel yet", "VAE encode: %s logvar",
          device_name(t->device));
    float *p = tensor_f32(t);
    for (int64_t i = 0; i < tensor_numel(t); i++) p[i] = p[i] < -30.0f ? -30.0f : p[i] > 20.0f ? 20.0f : p[i];
}

void vae_encode(const VAE *v, VAEEncodeActs *x, Tensor *mean, Tensor *logvar, const Tensor *image) {
    const VAEConfig *c = &v->cfg;
    int L = c->levels;
    tensor_expect_shape(image, "VAE image", x->B, c->in_channels, x->H, x->W);
    Scratch s = scratch_make(&x->scratch, &x->conv_in_out);
    conv2d_forward(&x->conv_in_out, image, &v->enc_conv_in.weight, &v->enc_conv_in.bias, 1, 1);
    const Tensor *h = &x->conv_in_out;
    for (int i = 0; i < L; i++) h = level_forward(&v->enc_down[i], &x->down[i], h, 0, s);
    h = mid_forward(&v->enc_mid, &x->mid, h, c->mid_attention, s);
    head_forward(&v->enc_norm_out, &v->enc_conv_out, &x->conv_out_out, &x->norm_mean, &x->norm_rstd, h, c->groups,
                 VAE_EPS, s);
    if (c->quant_conv)
        conv2d_forward(&x->moments, &x->conv_out_out, &v->quant_conv.weight, &v->quant_conv.bias, 1, 0);
    else
        tensor_copy(&x->moments, &x->conv_out_out);
    concat_channels_backward(mean, logvar, &x->moments); // the split [mean | logvar] along the channels
    clamp_logvar(logvar);
}

// ---------------------------------------------------------------------------------------------------------------
// decoder backward

void vae_mid_backward(const VAEMid *m, VAEMid *g, VAEMidActs *x, const Tensor *in, int attn, GradFlow *f,
                      Scratch s) {
    // a recomputed block re-runs its forward (rewriting its kept output with the same values) into the region
    if (x->recompute) mid_forward(m, x, in, attn, s);
    const Tensor *mid_in = attn ? &x->out[1] : &x->out[0];
    Tensor din = view_like(f->other, mid_in), dout = view_like(f->cur, &x->out[2]);
    resnet_backward(&m->res[1], GRAD(g, res[1]), &x->res[1], &din, NULL, NULL, &dout, mid_in, NULL, NULL, s);
    flow_swap(f);
    if (attn) {
        din = view_like(f->other, &x->out[0]), dout = view_like(f->cur, &x->out[1]);
        vae_attn_backward(&m->attn, GRAD(g, attn), &x->attn, &din, &dout, &x->out[0], s);
        flow_swap(f);
    }
    din = view_like(f->other, in), dout = view_like(f->cur, &x->out[0]);
    resnet_backward(&m->res[0], GRAD(g, res[0]), &x->res[0], &din, NULL, NULL, &dout, in, NULL, NULL, s);
    flow_swap(f);
}

void vae_level_backward(const VAELevel *lv, VAELevel *g, VAELevelActs *x, const Tensor *in, int up, GradFlow *f,
                        Scratch s) {
    if (lv->has_sampler) {
        const Tensor *last = &x->res_out[lv->n_layers - 1];
        Tensor din = view_like(f->other, last), dout = view_like(f->cur, &x->sampler_out);
        if (up) upsample_backward(&lv->sampler, GRAD(g, sampler), &din, &dout, last, s);
        else downsample_backward(&lv->sampler, GRAD(g, sampler), &din, &dout, last, s);
        flow_swap(f);
    }
    for (int j = lv->n_layers - 1; j >= 0; j--) {
        const Tensor *rin = j ? &x->res_out[j - 1] : in;
        if (x->recompute[j]) resnet_forward(&lv->res[j], &x->res[j], &x->res_out[j], rin, NULL, NULL, s);
        Tensor din = view_like(f->other, rin), dout = view_like(f->cur, &x->res_out[j]);
        resnet_backward(&lv->res[j], GRAD(g, res[j]), &x->res[j], &din, NULL, NULL, &dout, rin, NULL, NULL, s);
        flow_swap(f);
    }
}

void vae_decode_backward(const VAE *v, VAE *g, VAEDecodeActs *x, const Tensor *dimage, Tensor *dlatents) {
    const VAEConfig *c = &v->cfg;
    int L = c->levels;
    Scratch s = scratch_make(&x->scratch, &x->z);
    GradFlow f = {&x->gflow[0], &x->gflow[1]};
    if (x->out.data) { // bf16 or channels last: the upstream gradient as the activations (the output buffer is free)
        tensor_cast(&x->out, dimage);
        dimage = &x->out;
    }
    // image = conv_out(SiLU(conv_norm_out(h)))
    head_backward(&v->dec_norm_out, &v->dec_conv_out, GRAD(g, dec_norm_out), GRAD(g, dec_conv_out), &x->norm_mean,
                  &x->norm_rstd, vae_level_out(&x->up[L - 1], &v->dec_up[L - 1]), dimage, c->groups, VAE_EPS, &f, s);
    for (int i = L - 1; i >= 0; i--)
        vae_level_backward(&v->dec_up[i], GRAD(g, dec_up[i]), &x->up[i],
                           i ? vae_level_out(&x->up[i - 1], &v->dec_up[i - 1]) : &x->mid.out[2], 1, &f, s);
    vae_mid_backward(&v->dec_mid, GRAD(g, dec_mid), &x->mid, &x->conv_in_out, c->mid_attention, &f, s);
    const Tensor *dec_in = c->post_quant_conv ? &x->pq_out : &x->z;
    Tensor din = view_like(f.other, dec_in), dout = view_like(f.cur, &x->conv_in_out);
    conv2d_backward(&din, GRAD(g, dec_conv_in.weight), GRAD(g, dec_conv_in.bias), &dout, dec_in, &v->dec_conv_in.weight,
                    1, 1);
    flow_swap(&f);
    if (c->post_quant_conv) {
        dout = view_like(f.cur, &x->pq_out);
        // bf16 activations: the latents' gradient in their dtype first (the other flow buffer is free now)
        int conv = dlatents && dlatents->data && !tensor_same_storage(dlatents, &x->z);
        Tensor dza = conv ? view_like(f.other, &x->z) : (Tensor){0};
        conv2d_backward(dza.data ? &dza : dlatents, GRAD(g, post_quant_conv.weight), GRAD(g, post_quant_conv.bias),
                        &dout, &x->z, &v->post_quant_conv.weight, 1, 0);
        if (dza.data) tensor_cast(dlatents, &dza);
    } else if (dlatents && dlatents->data) {
        dout = view_like(f.cur, &x->z);
        tensor_cast(dlatents, &dout);
    }
    if (dlatents && dlatents->data) tensor_scale(dlatents, 1.0f / c->scaling_factor);
}
