// gradcheck_pretrain.c: finite-difference checks of the backwards `drtune pretrain` adds: the CLIP text encoder (all
// parameter kinds), the AutoencoderKL encoder (from mean and log-variance to its parameters) and the UNet's context
// gradient, whose parameter gradients must also equal unet_backward's bit for bit; also the VAE decoder's latent
// gradient without post_quant_conv when the latents are wider than every decoder stage.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/models/clip_text_train.h"
#include "../src/models/unet.h"
#include "../src/models/vae_encoder_backward.h"
#include "gradcheck.h"

// Parameters get values of the size real checkpoints have relative to their fan-in; norm scales around 1.
static void fill_params(Arena *a, uint64_t stream, float scale) {
    for (int i = 0; i < a->n; i++) {
        ArenaEntry *e = &a->entries[i];
        int norm_scale = e->desc.ndim == 1 && strstr(e->name, "norm") && strstr(e->name, ".weight");
        if (norm_scale)
            gc_fill_uniform(&e->desc, 0.7f, 1.3f, stream + (uint64_t)i);
        else
            gc_fill_uniform(&e->desc, -scale, scale, stream + (uint64_t)i);
    }
}

// The checked tensors: entries whose names contain any of the given parts (at most GC_MAX - n_wrt of them).
static void add_params(GradCheck *g, Arena *p, Arena *gr, const char *const *parts, int n_parts) {
    for (int i = 0; i < p->n && g->n_wrt < GC_MAX; i++)
        for (int k = 0; k < n_parts; k++)
            if (strstr(p->entries[i].name, parts[k])) {
                printf("     %s\n", p->entries[i].name);
                g->wrt[g->n_wrt] = &p->entries[i].desc, g->grad[g->n_wrt] = &gr->entries[i].desc;
                g->is_param[g->n_wrt++] = 1;
                break;
            }
}

// ---------------------------------------------------------------------------------------------------------------
// CLIP text encoder

typedef struct {
    ClipText m, g;
    ClipTextTrainActs r;
    int32_t *ids;
    Tensor dout;
} TextCtx;

static void text_fwd(void *p) {
    TextCtx *c = p;
    clip_text_train_forward(&c->m, &c->r, c->ids);
}
static void text_bwd(void *p) {
    TextCtx *c = p;
    clip_text_backward(&c->m, &c->g, &c->r, &c->dout);
}

static int check_text(Activation act, int *checks) {
    enum { B = 2, T = 6, V = 11 };
    ClipTextConfig cfg = {.hidden = 8, .ff = 12, .heads = 2, .layers = 2, .max_pos = 7, .vocab = V, .proj_dim = 8,
                          .eos_token_id = 2, .act = act, .eps = 1e-5f};
    TextCtx c;
    memset(&c, 0, sizeof c);
    clip_text_plan(&c.m, &cfg);
    arena_alloc(&c.m.params);
    clip_text_plan(&c.g, &cfg);
    arena_alloc(&c.g.params);
    fill_params(&c.m.params, 200, 0.5f);
    clip_text_train_init(&c.r, &c.m, B, T);
    int32_t ids[B * T] = {9, 3, 4, 3, 10, 10, 9, 0, 7, 10, 10, 10};
    c.ids = ids;
    c.dout = GC_TENSOR(B, T, 8);
    // the same values as the frozen encoder's forward
    ClipTextRun run;
    clip_text_run_init(&run, &c.m, B, T, NULL, 0, 1);
    clip_text_forward(&c.m, &run, ids);
    text_fwd(&c);
    int same = !memcmp(run.last.data, c.r.last.data, tensor_bytes(&run.last));
    printf("%s text encoder forward == clip_text_forward (bitwise)\n", same ? "PASS" : "FAIL");
    clip_text_run_free(&run);
    static const char *const groups[2][6] = {
        {"token_embedding", "position_embedding", "layers.0.self_attn.q_proj.weight", "layers.0.self_attn.k_proj",
         "layers.1.self_attn.v_proj.weight", "final_layer_norm"},
        {"layers.0.layer_norm1", "layers.1.self_attn.out_proj", "layers.0.mlp.fc1", "layers.1.mlp.fc2",
         "layers.1.layer_norm2", "layers.1.self_attn.q_proj.bias"}};
    int failures = !same;
    for (int k = 0; k < 2; k++) {
        char label[64];
        snprintf(label, sizeof label, "clip text (%s) group %d", activation_name(act), k);
        GradCheck g = {.name = label, .ctx = &c, .forward = text_fwd, .backward = text_bwd, .max_elems = 256};
        add_params(&g, &c.m.params, &c.g.params, groups[k], 6);
        g.out[0] = &c.r.last, g.dout[0] = &c.dout, g.n_out = 1;
        failures += gradcheck_run(&g);
        (*checks)++;
    }
    clip_text_train_free(&c.r);
    clip_text_free(&c.m);
    clip_text_free(&c.g);
    gc_free(c.dout.data);
    return failures;
}

// ---------------------------------------------------------------------------------------------------------------
// VAE encoder

typedef struct {
    VAE v, g;
    Arena params, grads, acts;
    VAEEncodeActs x;
    VAEEncodeGrad gb;
    Tensor image, mean, logvar, dmean, dlogvar;
} VaeCtx;

static void vae_fwd(void *p) {
    VaeCtx *c = p;
    vae_encode(&c->v, &c->x, &c->mean, &c->logvar, &c->image);
}
static void vae_bwd(void *p) {
    VaeCtx *c = p;
    vae_encode_backward(&c->v, &c->g, &c->x, &c->gb, &c->image, &c->dmean, &c->dlogvar);
}

static int check_vae(int *checks) {
    enum { B = 2, H = 8, L = 3 };
    VAEConfig cfg = {.in_channels = 3, .out_channels = 3, .latent_channels = L, .levels = 3, .layers = 1,
                     .groups = 2, .block_out = {4, 6, 6}, .scaling_factor = 1.0f, .quant_conv = 1,
                     .post_quant_conv = 1, .mid_attention = 1};
    VaeCtx c;
    memset(&c, 0, sizeof c);
    arena_init(&c.params, "vae", DEVICE_CPU);
    arena_init(&c.grads, "vae_grads", DEVICE_CPU);
    arena_init(&c.acts, "acts", DEVICE_CPU);
    vae_plan_params(&c.params, &c.v, &cfg, VAE_ENCODER);
    vae_plan_params(&c.grads, &c.g, &cfg, VAE_ENCODER);
    vae_plan_encode_acts(&c.acts, &c.x, &c.v, B, H, H);
    arena_alloc(&c.params);
    arena_alloc(&c.grads);
    arena_alloc(&c.acts);
    fill_params(&c.params, 300, 0.5f);
    vae_encode_grad_init(&c.gb, &c.x);
    c.image = GC_TENSOR(B, 3, H, H);
    gc_fill_uniform(&c.image, -1.0f, 1.0f, 4);
    c.mean = GC_TENSOR(B, L, H / 4, H / 4), c.logvar = GC_TENSOR(B, L, H / 4, H / 4);
    c.dmean = GC_TENSOR(B, L, H / 4, H / 4), c.dlogvar = GC_TENSOR(B, L, H / 4, H / 4);
    static const char *const groups[2][5] = {
        {"encoder.conv_in.weight", "down_blocks.0.resnets.0.conv1.weight", "down_blocks.0.downsamplers.0",
         "down_blocks.1.resnets.0.conv_shortcut", "quant_conv.weight"},
        {"mid_block.attentions.0.to_q.weight", "mid_block.attentions.0.group_norm", "mid_block.resnets.1.norm2",
         "encoder.conv_norm_out.weight", "encoder.conv_out"}};
    int failures = 0;
    for (int k = 0; k < 2; k++) {
        char label[64];
        snprintf(label, sizeof label, "vae encoder group %d", k);
        GradCheck g = {.name = label, .ctx = &c, .forward = vae_fwd, .backward = vae_bwd, .max_elems = 256};
        add_params(&g, &c.params, &c.grads, groups[k], 5);
        g.out[0] = &c.mean, g.dout[0] = &c.dmean, g.out[1] = &c.logvar, g.dout[1] = &c.dlogvar, g.n_out = 2;
        failures += gradcheck_run(&g);
        (*checks)++;
    }
    vae_encode_grad_free(&c.gb);
    arena_free(&c.params);
    arena_free(&c.grads);
    arena_free(&c.acts);
    gc_free(c.image.data), gc_free(c.mean.data), gc_free(c.logvar.data), gc_free(c.dmean.data), gc_free(c.dlogvar.data);
    return failures;
}

// ---------------------------------------------------------------------------------------------------------------
// VAE decoder without post_quant_conv and with more latent channels than any decoder stage: the latent gradient
// passes through the gradient flow buffers, which must hold it.

typedef struct {
    VAE v, g;
    Arena params, grads, acts;
    VAEDecodeActs x;
    Tensor z, dz, image, dimage;
} DecCtx;

static void dec_fwd(void *p) {
    DecCtx *c = p;
    vae_decode(&c->v, &c->x, &c->image, &c->z);
}
static void dec_bwd(void *p) {
    DecCtx *c = p;
    vae_decode_backward(&c->v, &c->g, &c->x, &c->dimage, &c->dz);
}

static int check_decoder_wide_latents(int *checks) {
    enum { B = 2, h = 3, L = 4 };
    VAEConfig cfg = {.in_channels = 3, .out_channels = 3, .latent_channels = L, .levels = 1, .layers = 1,
                     .groups = 1, .block_out = {2}, .scaling_factor = 0.5f};
    DecCtx c;
    memset(&c, 0, sizeof c);
    arena_init(&c.params, "vae", DEVICE_CPU);
    arena_init(&c.grads, "vae_grads", DEVICE_CPU);
    arena_init(&c.acts, "acts", DEVICE_CPU);
    vae_plan_params(&c.params, &c.v, &cfg, VAE_DECODER);
    vae_plan_params(&c.grads, &c.g, &cfg, VAE_DECODER);
    vae_plan_decode_acts(&c.acts, &c.x, &c.v, B, h, h);
    arena_alloc(&c.params);
    arena_alloc(&c.grads);
    arena_alloc(&c.acts);
    fill_params(&c.params, 400, 0.5f);
    c.z = GC_TENSOR(B, L, h, h), c.dz = GC_TENSOR(B, L, h, h);
    c.image = GC_TENSOR(B, 3, h, h), c.dimage = GC_TENSOR(B, 3, h, h);
    gc_fill_normal(&c.z, 1.0f, 5);
    GradCheck g = {.name = "vae decoder, wide latents, no post_quant_conv", .ctx = &c, .forward = dec_fwd,
                   .backward = dec_bwd, .n_wrt = 1, .wrt = {&c.z}, .grad = {&c.dz}, .n_out = 1,
                   .out = {&c.image}, .dout = {&c.dimage}};
    int failures = gradcheck_run(&g);
    (*checks)++;
    arena_free(&c.params);
    arena_free(&c.grads);
    arena_free(&c.acts);
    return failures;
}

// ---------------------------------------------------------------------------------------------------------------
// UNet context gradient

typedef struct {
    UNet net, g, g_ref;
    Arena params, grads, grads_ref, acts;
    UNetActs x;
    Tensor in, t, ctx, dctx, eps, deps;
} UnetCtx;

static void unet_fwd(void *p) {
    UnetCtx *c = p;
    unet_forward(&c->net, &c->x, &c->eps, &c->in, &c->t, &c->ctx, NULL, NULL);
}
static void unet_bwd(void *p) {
    UnetCtx *c = p;
    unet_backward(&c->net, &c->g, &c->x, &c->deps, NULL, &c->dctx);
}

static int check_unet(int *checks) {
    enum { B = 2, H = 4, T = 5 };
    UnetCtx c;
    memset(&c, 0, sizeof c);
    UNetConfig cfg;
    unet_load_config(&cfg, "configs/models/tiny-random/unet");
    arena_init(&c.params, "unet", DEVICE_CPU);
    arena_init(&c.grads, "grads", DEVICE_CPU);
    arena_init(&c.grads_ref, "grads_ref", DEVICE_CPU);
    arena_init(&c.acts, "acts", DEVICE_CPU);
    unet_plan_params(&c.params, &c.net, &cfg);
    unet_plan_params(&c.grads, &c.g, &cfg);
    unet_plan_params(&c.grads_ref, &c.g_ref, &cfg);
    unet_plan_acts(&c.acts, &c.x, &c.net, B, H, H, T);
    arena_alloc(&c.params);
    arena_alloc(&c.grads);
    arena_alloc(&c.grads_ref);
    arena_alloc(&c.acts);
    fill_params(&c.params, 400, 0.25f);
    c.in = GC_TENSOR(B, 4, H, H), c.eps = GC_TENSOR(B, 4, H, H), c.deps = GC_TENSOR(B, 4, H, H);
    c.ctx = GC_TENSOR(B, T, cfg.cross_dim), c.dctx = GC_TENSOR(B, T, cfg.cross_dim), c.t = GC_TENSOR(B);
    gc_fill_uniform(&c.in, -1.0f, 1.0f, 5);
    gc_fill_uniform(&c.ctx, -1.0f, 1.0f, 6);
    gc_fill_uniform(&c.deps, -1.0f, 1.0f, 7);
    ((float *)c.t.data)[0] = 17.0f, ((float *)c.t.data)[1] = 803.0f;
    // parameter gradients: the same as unet_backward's, bit for bit
    unet_fwd(&c);
    unet_backward(&c.net, &c.g_ref, &c.x, &c.deps, NULL, NULL);
    unet_bwd(&c);
    int same = !memcmp(c.grads.base, c.grads_ref.base, c.grads.size);
    printf("%s parameter gradients with the context gradient == without it (bitwise)\n", same ? "PASS" : "FAIL");
    arena_zero(&c.grads);
    // h = 8e-2: what remains of the difference is the forward's rounding noise (it halves from h = 4e-2 to 8e-2,
    // the truncation error still below it), and the mid block's to_v gradients are small (at most 7e-3), so the
    // larger step keeps them clear of it
    GradCheck g = {.name = "unet context", .ctx = &c, .forward = unet_fwd, .backward = unet_bwd, .max_elems = 256,
                 .h = 8e-2, .rtol = 5e-3};
    g.wrt[0] = &c.ctx, g.grad[0] = &c.dctx, g.n_wrt = 1;
    static const char *const parts[] = {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
                                        "mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
                                        "up_blocks.2.attentions.1.transformer_blocks.0.attn1.to_q"};
    add_params(&g, &c.params, &c.grads, parts, 3);
    g.out[0] = &c.eps, g.dout[0] = &c.deps, g.n_out = 1;
    int failures = gradcheck_run(&g) + !same;
    (*checks) += 2;
    unet_acts_free(&c.x);
    unet_free(&c.net), unet_free(&c.g), unet_free(&c.g_ref);
    arena_free(&c.params), arena_free(&c.grads), arena_free(&c.grads_ref), arena_free(&c.acts);
    Tensor owned[] = {c.in, c.eps, c.deps, c.ctx, c.dctx, c.t};
    for (int i = 0; i < 6; i++) gc_free(owned[i].data);
    return failures;
}

int main(void) {
    int f = 0, checks = 0;
    f += check_text(ACT_QUICK_GELU, &checks);
    f += check_text(ACT_GELU, &checks);
    f += check_vae(&checks);
    f += check_decoder_wide_latents(&checks);
    f += check_unet(&checks);
    return gc_report(f, checks);
}
