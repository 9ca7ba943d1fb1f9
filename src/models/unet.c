// unet.c: UNet2DConditionModel parameters, activation plan, forward and backward (configuration: unet_config.c),
// in the stage order of diffusers unet_2d_condition.py.
#include "unet.h"

#include <string.h>

#include "../core/device.h"

// ---------------------------------------------------------------------------------------------------------------
// parameters

static void plan_down_level(Arena *a, UNet *net, int i, int cin) {
    const UNetConfig *c = &net->cfg;
    UNetLevel *lv = &net->down[i];
    int out = c->block_out[i];
    char p[256];
    lv->n_layers = c->layers[i], lv->has_attn = c->down_attn[i], lv->has_sampler = i < c->levels - 1;
    for (int j = 0; j < lv->n_layers; j++) {
        resnet_plan_params(a, &lv->res[j], plan_prefix(p, sizeof p, "", "down_blocks.%d.resnets.%d", i, j),
                           j ? out : cin, out, c->temb_dim, c->groups, c->norm_eps);
        if (lv->has_attn)
            transformer_plan_params(a, &lv->attn[j], plan_prefix(p, sizeof p, "", "down_blocks.%d.attentions.%d", i, j),
                                    out, c->heads[i], c->depth[i], c->cross_dim, c->linear_proj, c->groups);
    }
    if (lv->has_sampler)
        downsample_plan_params(a, &lv->sampler, plan_prefix(p, sizeof p, "", "down_blocks.%d.downsamplers.0", i), out,
                               c->downsample_padding == 0);
}

// Up level i works at k = levels-1-i; resnet j takes [hidden | skip]: hidden has prev channels for j = 0 (out
// after), the skip has out channels except for the last resnet, whose skip comes from the level below (in).
static void plan_up_level(Arena *a, UNet *net, int i, int prev) {
    const UNetConfig *c = &net->cfg;
    UNetLevel *lv = &net->up[i];
    int k = c->levels - 1 - i, out = c->block_out[k], in = c->block_out[k > 0 ? k - 1 : 0];
    char p[256];
    lv->n_layers = c->layers[k] + 1, lv->has_attn = c->up_attn[i], lv->has_sampler = i < c->levels - 1;
    for (int j = 0; j < lv->n_layers; j++) {
        int cin = (j ? out : prev) + (j == lv->n_layers - 1 ? in : out);
        resnet_plan_params(a, &lv->res[j], plan_prefix(p, sizeof p, "", "up_blocks.%d.resnets.%d", i, j), cin, out,
                           c->temb_dim, c->groups, c->norm_eps);
        if (lv->has_attn)
            transformer_plan_params(a, &lv->attn[j], plan_prefix(p, sizeof p, "", "up_blocks.%d.attentions.%d", i, j),
                                    out, c->heads[k], c->depth[k], c->cross_dim, c->linear_proj, c->groups);
    }
    if (lv->has_sampler)
        upsample_plan_params(a, &lv->sampler, plan_prefix(p, sizeof p, "", "up_blocks.%d.upsamplers.0", i), out);
}

void unet_plan_params(Arena *a, UNet *net, const UNetConfig *cfg) {
    memset(net, 0, sizeof *net);
    net->cfg = *cfg;
    const UNetConfig *c = &net->cfg;
    int L = c->levels, T = c->temb_dim, top = c->block_out[L - 1];
    layer_plan_conv(a, &net->conv_in, "", "conv_in", c->block_out[0], c->in_channels, 3);
    layer_plan_linear(a, &net->time_linear_1, "", "time_embedding.linear_1", T, c->block_out[0], 1);
    layer_plan_linear(a, &net->time_linear_2, "", "time_embedding.linear_2", T, T, 1);
    if (c->text_time) {
        layer_plan_linear(a, &net->add_linear_1, "", "add_embedding.linear_1", T, c->add_in_dim, 1);
        layer_plan_linear(a, &net->add_linear_2, "", "add_embedding.linear_2", T, T, 1);
    }
    for (int i = 0; i < L; i++) plan_down_level(a, net, i, c->block_out[i > 0 ? i - 1 : 0]);
    resnet_plan_params(a, &net->mid_res[0], "mid_block.resnets.0", top, top, T, c->groups, c->norm_eps);
    transformer_plan_params(a, &net->mid_attn, "mid_block.attentions.0", top, c->heads[L - 1], c->depth[L - 1],
                            c->cross_dim, c->linear_proj, c->groups);
    resnet_plan_params(a, &net->mid_res[1], "mid_block.resnets.1", top, top, T, c->groups, c->norm_eps);
    for (int i = 0; i < L; i++) plan_up_level(a, net, i, c->block_out[L - (i > 0 ? i : 1)]);
    layer_plan_norm(a, &net->conv_norm_out, "", "conv_norm_out", c->block_out[0]);
    layer_plan_conv(a, &net->conv_out, "", "conv_out", c->out_channels, c->block_out[0], 3);
}

int64_t unet_param_count(const UNetConfig *cfg) {
    Arena a;
    arena_init(&a, "count", DEVICE_CPU);
    UNet *net = xcalloc(1, sizeof *net);
    unet_plan_params(&a, net, cfg);
    int64_t n = arena_numel(&a);
    unet_free(net);
    free(net);
    arena_free(&a);
    return n;
}

void unet_free(UNet *net) {
    for (int i = 0; i < UNET_MAX_LEVELS; i++)
        for (int j = 0; j < UNET_MAX_LAYERS; j++) {
            transformer_free(&net->down[i].attn[j]);
            transformer_free(&net->up[i].attn[j]);
        }
    transformer_free(&net->mid_attn);
}

// ---------------------------------------------------------------------------------------------------------------
// activations

// The output of layer j of a level (its transformer's when it has one), and of the whole level.
static const Tensor *layer_out(const UNetLevelActs *A, const UNetLevel *lv, int j) {
    return lv->has_attn ? &A->attn_out[j] : &A->res_out[j];
}
static const Tensor *level_out(const UNetLevelActs *A, const UNetLevel *lv) {
    return lv->has_sampler ? &A->sampler_out : layer_out(A, lv, lv->n_layers - 1);
}

// Registers a stage output [B, C, H, W] and grows the gradient buffer size to it.
static void plan_stage(Arena *a, Tensor *slot, const char *prefix, const char *name, int64_t B, int64_t C, int64_t H,
                       int64_t W, int64_t *flow) {
    PLAN(a, slot, prefix, name, B, C, H, W);
    *flow = max64(*flow, B * C * H * W);
}

typedef struct {
    int64_t need, flow; // largest scratch need and stage (floats)
} PlanSizes;

static int down_unit(int i, int j) { return i * UNET_MAX_LAYERS + j; }
static int up_unit(int i, int j) { return UNET_MID_UNIT + 1 + i * UNET_MAX_LAYERS + j; }

// Where unit u's tensors are planned: an arena of its own, placed in the shared region, when it is flagged.
static Arena *unit_arena(Arena *a, UNetActs *x, int u) {
    if (!x->recompute[u]) return a;
    CHECK(!x->unit_plan[u], "", "UNet recompute unit %d planned twice", u);
    return x->unit_plan[u] = recompute_unit_new(a, "unet-recompute");
}

// Plans level i of the down (up = 0) or up path at *h x *w and moves them past its sampler. The down path pushes
// every layer output on the skip stack; the up path pops one skip per resnet, whose input [hidden | skip] is read
// where the two lie (no concatenated copy). A layer's output is kept in a (the next layer's input, a skip); the rest
// may go to its unit's arena.
static void plan_level_acts(Arena *a, UNetActs *x, const UNetLevel *lv, UNetLevelActs *A, int i, int up, int64_t *h,
                            int64_t *w, int *top, const Tensor *hidden, PlanSizes *sz) {
    int64_t B = x->B, C = lv->res[0].cout;
    const char *path = up ? "up_blocks" : "down_blocks";
    char rp[128], ap[128];
    for (int j = 0; j < lv->n_layers; j++) {
        Arena *u = unit_arena(a, x, up ? up_unit(i, j) : down_unit(i, j));
        plan_prefix(rp, sizeof rp, "", "%s.%d.resnets.%d", path, i, j);
        if (up) --*top;
        sz->need = max64(sz->need, resnet_plan_acts(u, &A->res[j], rp, &lv->res[j], B, *h, *w));
        plan_stage(lv->has_attn ? u : a, &A->res_out[j], rp, "out", B, C, *h, *w, &sz->flow);
        if (lv->has_attn) {
            plan_prefix(ap, sizeof ap, "", "%s.%d.attentions.%d", path, i, j);
            sz->need = max64(sz->need, transformer_plan_acts(u, &A->attn[j], ap, &lv->attn[j], B, *h, *w, x->T));
            plan_stage(a, &A->attn_out[j], ap, "out", B, C, *h, *w, &sz->flow);
        }
        hidden = layer_out(A, lv, j);
        if (!up) x->skip[x->n_skips++] = hidden;
    }
    if (!lv->has_sampler) return;
    plan_prefix(rp, sizeof rp, "", "%s.%d.%s.0", path, i, up ? "upsamplers" : "downsamplers");
    sz->need = max64(sz->need, up ? upsample_scratch(&lv->sampler, a->float_dtype, B, *h, *w)
                                  : downsample_scratch(&lv->sampler, a->float_dtype, B, *h, *w));
    *h = up ? 2 * *h : *h / 2, *w = up ? 2 * *w : *w / 2;
    plan_stage(a, &A->sampler_out, rp, "out", B, C, *h, *w, &sz->flow);
    if (!up) x->skip[x->n_skips++] = &A->sampler_out;
}

// The plan for the units flagged in flags[] (NULL: none).
static void plan_acts(Arena *a, UNetActs *x, const UNet *net, int64_t B, int64_t H, int64_t W, int64_t T,
                      const unsigned char *flags) {
    const UNetConfig *c = &net->cfg;
    int L = c->levels;
    int64_t f = (int64_t)1 << (L - 1), temb = c->temb_dim, G = c->groups;
    USER_CHECK(B >= 1 && T >= 1 && H > 0 && W > 0 && H % f == 0 && W % f == 0,
               "latent size %lld x %lld: this UNet needs positive multiples of %lld (batch %lld, context %lld)",
               (long long)H, (long long)W, (long long)f, (long long)B, (long long)T);
    memset(x, 0, sizeof *x);
    x->B = B, x->H = H, x->W = W, x->T = T;
    for (int u = 0; flags && u < UNET_MAX_UNITS; u++) x->recompute[u] = flags[u];
    PlanSizes sz = {0, 0};
    PlanStorage before = plan_storage_set(a, &net->conv_in.weight); // activations stored as the weights
    PLAN(a, &x->x, "", "input.x", B, c->in_channels, H, W);
    if (a->float_dtype != DTYPE_F32 || a->channels_last) PLAN(a, &x->out, "", "output", B, c->out_channels, H, W);
    PLAN(a, &x->ctx, "", "input.context", B, T, c->cross_dim);
    PLAN(a, &x->t_proj, "", "time_proj", B, c->block_out[0]);
    PLAN(a, &x->t_h, "", "time_embedding.linear_1.out", B, temb);
    if (c->text_time) {
        PLAN(a, &x->add_in, "", "add_embedding.in", B, c->add_in_dim);
        PLAN(a, &x->add_h, "", "add_embedding.linear_1.out", B, temb);
    }
    PLAN(a, &x->emb, "", "emb", B, temb);
    PLAN(a, &x->emb_act, "", "emb_act", B, temb);
    plan_stage(a, &x->conv_in_out, "conv_in", "out", B, c->block_out[0], H, W, &sz.flow);
    x->skip[x->n_skips++] = &x->conv_in_out;
    int64_t h = H, w = W, top_c = c->block_out[L - 1];
    for (int i = 0; i < L; i++) plan_level_acts(a, x, &net->down[i], &x->down[i], i, 0, &h, &w, NULL, NULL, &sz);
    Arena *m = unit_arena(a, x, UNET_MID_UNIT); // the mid block keeps only its output
    sz.need = max64(sz.need, resnet_plan_acts(m, &x->mid_res[0], "mid_block.resnets.0", &net->mid_res[0], B, h, w));
    plan_stage(m, &x->mid_out[0], "mid_block.resnets.0", "out", B, top_c, h, w, &sz.flow);
    sz.need = max64(sz.need, transformer_plan_acts(m, &x->mid_attn, "mid_block.attentions.0", &net->mid_attn, B, h, w,
                                                   T));
    plan_stage(m, &x->mid_out[1], "mid_block.attentions.0", "out", B, top_c, h, w, &sz.flow);
    sz.need = max64(sz.need, resnet_plan_acts(m, &x->mid_res[1], "mid_block.resnets.1", &net->mid_res[1], B, h, w));
    plan_stage(a, &x->mid_out[2], "mid_block.resnets.1", "out", B, top_c, h, w, &sz.flow);
    int top = x->n_skips;
    const Tensor *hidden = &x->mid_out[2];
    for (int i = 0; i < L; i++) {
        plan_level_acts(a, x, &net->up[i], &x->up[i], i, 1, &h, &w, &top, hidden, &sz);
        hidden = level_out(&x->up[i], &net->up[i]);
    }
    CHECK(top == 0, "", "UNet skip stack: %d skips left after the up levels", top);
    PLAN_F32(a, &x->norm_mean, "", "conv_norm_out.mean", B, G);
    PLAN_F32(a, &x->norm_rstd, "", "conv_norm_out.rstd", B, G);
    // the output head and the time embedding run on scratch too
    sz.need = max64(sz.need, head_scratch(a->float_dtype, B, c->block_out[0], H, W, G));
    int64_t time_rows = scratch_floats(B * max64(temb, c->add_in_dim));
    sz.need = max64(sz.need, 4 * time_rows + scratch_floats(6 * B * c->add_time_dim));
    for (int k = 0; k < x->n_skips; k++) {
        char p[64];
        snprintf(p, sizeof p, "grad.skip.%d", k);
        arena_add(a, &x->dskip[k], p, a->float_dtype, 4, x->skip[k]->shape);
    }
    PLAN(a, &x->gflow[0], "", "grad.flow.0", sz.flow);
    PLAN(a, &x->gflow[1], "", "grad.flow.1", sz.flow);
    PLAN(a, &x->demb_act, "", "grad.emb_act", B, temb);
    PLAN(a, &x->dtemb, "", "grad.resnet_temb", B, temb);
    PLAN_F32(a, &x->scratch, "", "scratch", sz.need);
    for (int u = 0; u < UNET_MAX_UNITS; u++) {
        x->recompute[u] = x->unit_plan[u] != NULL; // flags beyond this UNet's units dropped
        x->n_recompute += x->recompute[u];
    }
    size_t region = recompute_region_bytes(x->unit_plan, UNET_MAX_UNITS); // the flagged units take turns in it
    if (region) arena_add(a, &x->region, "recompute", DTYPE_F32, 1, (int64_t[]){(int64_t)(region / sizeof(float))});
    plan_storage_restore(a, before);
}

int unet_units(const UNetConfig *c) {
    int n = 1;
    for (int i = 0; i < c->levels; i++) n += 2 * c->layers[i] + 1;
    return n;
}

// Bytes of the activation plan for the units flagged in flags[].
static size_t plan_bytes(const UNet *net, Device d, int64_t B, int64_t H, int64_t W, int64_t T,
                         const unsigned char *flags, size_t *unit_bytes) {
    Arena a;
    arena_init(&a, "unet-acts", d);
    UNetActs *x = xcalloc(1, sizeof *x);
    plan_acts(&a, x, net, B, H, W, T, flags);
    size_t n = a.size;
    for (int u = 0; unit_bytes && u < UNET_MAX_UNITS; u++) unit_bytes[u] = x->unit_plan[u] ? x->unit_plan[u]->size : 0;
    unet_acts_free(x);
    free(x);
    arena_free(&a);
    return n;
}

typedef struct {
    const UNet *net;
    Device d;
    int64_t B, H, W, T;
} PlanArgs;
static size_t plan_bytes_of(void *ctx, const unsigned char *flags) {
    const PlanArgs *p = ctx;
    return plan_bytes(p->net, p->d, p->B, p->H, p->W, p->T, flags, NULL);
}

void unet_plan_acts_recompute(Arena *a, UNetActs *x, const UNet *net, int64_t B, int64_t H, int64_t W, int64_t T,
                              const UNetRecompute *rc) {
    UNetRecomputeMode mode = rc ? rc->mode : UNET_RECOMPUTE_OFF;
    unsigned char all[UNET_MAX_UNITS], flags[UNET_MAX_UNITS] = {0};
    size_t unit_bytes[UNET_MAX_UNITS], start = a->size;
    memset(all, 1, sizeof all); // every unit (those beyond this UNet's are never planned)
    // the plan without recompute, and what each unit puts in the region when flagged
    size_t off = mode == UNET_RECOMPUTE_OFF ? 0 : plan_bytes(net, a->device, B, H, W, T, NULL, NULL);
    if (mode != UNET_RECOMPUTE_OFF) plan_bytes(net, a->device, B, H, W, T, all, unit_bytes);
    if (mode == UNET_RECOMPUTE_ALL) memcpy(flags, all, sizeof flags);
    if (mode == UNET_RECOMPUTE_AUTO && (double)off > rc->budget) {
        PlanArgs pa = {net, a->device, B, H, W, T};
        recompute_pick(unit_bytes, UNET_MAX_UNITS, rc->budget, plan_bytes_of, &pa, flags);
    }
    plan_acts(a, x, net, B, H, W, T, flags);
    x->bytes_off = mode == UNET_RECOMPUTE_OFF ? a->size - start : off;
}

static const char *const RECOMPUTE_NAMES[] = {"off", "auto", "all"};

int unet_recompute_parse(const char *name) {
    for (int m = 0; m < 3; m++)
        if (!strcmp(name, RECOMPUTE_NAMES[m])) return m;
    return -1;
}

const char *unet_recompute_name(UNetRecomputeMode mode) { return RECOMPUTE_NAMES[mode]; }

void unet_plan_acts(Arena *a, UNetActs *x, const UNet *net, int64_t B, int64_t H, int64_t W, int64_t T) {
    unet_plan_acts_recompute(a, x, net, B, H, W, T, NULL);
}

void unet_acts_free(UNetActs *x) {
    for (int i = 0; i < UNET_MAX_LEVELS; i++)
        for (int j = 0; j < UNET_MAX_LAYERS; j++) {
            transformer_acts_free(&x->down[i].attn[j]);
            transformer_acts_free(&x->up[i].attn[j]);
        }
    transformer_acts_free(&x->mid_attn);
    for (int u = 0; u < UNET_MAX_UNITS; u++)
        if (x->unit_plan[u]) {
            arena_free(x->unit_plan[u]);
            free(x->unit_plan[u]);
            x->unit_plan[u] = NULL;
        }
}

// ---------------------------------------------------------------------------------------------------------------
// forward: time embedding; conv_in; down levels pushing every resnet / transformer / downsampler output on the skip
// stack; the mid block; up levels whose resnets read [hidden | skip] in place; conv_out(SiLU(conv_norm_out(h))).

// emb = time_embedding(time_proj(t)) (+ add_embedding([text_embeds | add_time_proj(time_ids)])); emb_act = SiLU(emb)
static void time_forward(const UNet *net, UNetActs *x, const Tensor *t, const Tensor *text_embeds,
                         const Tensor *time_ids, Scratch s) {
    const UNetConfig *c = &net->cfg;
    Tensor act = SCRATCH(&s, x->B, c->temb_dim);
    timestep_embedding_forward(&x->t_proj, t, c->flip_sin_to_cos, c->freq_shift);
    linear_forward(&x->t_h, &x->t_proj, &net->time_linear_1.weight, &net->time_linear_1.bias);
    activation_forward(&act, &x->t_h, ACT_SILU);
    linear_forward(&x->emb, &act, &net->time_linear_2.weight, &net->time_linear_2.bias);
    if (c->text_time) {
        Tensor tid = SCRATCH(&s, 6 * x->B, c->add_time_dim), aug = SCRATCH(&s, x->B, c->temb_dim);
        Tensor te = SCRATCH(&s, x->B, c->text_embed_dim); // the pooled text embedding in the activations' dtype
        tensor_cast(&te, text_embeds);
        timestep_embedding_forward(&tid, time_ids, c->flip_sin_to_cos, c->freq_shift);
        Tensor tid_rows = VIEW(&tid, x->B, 6 * c->add_time_dim);
        concat_channels_forward(&x->add_in, &te, &tid_rows);
        linear_forward(&x->add_h, &x->add_in, &net->add_linear_1.weight, &net->add_linear_1.bias);
        activation_forward(&act, &x->add_h, ACT_SILU);
        linear_forward(&aug, &act, &net->add_linear_2.weight, &net->add_linear_2.bias);
        add_forward(&x->emb, &x->emb, &aug);
    }
    activation_forward(&x->emb_act, &x->emb, ACT_SILU);
}

static void check_inputs(const UNet *net, const UNetActs *x, const Tensor *eps, const Tensor *in, const Tensor *t,
                         const Tensor *ctx, const Tensor *text_embeds, const Tensor *time_ids) {
    const UNetConfig *c = &net->cfg;
    tensor_expect_shape(in, "UNet sample", x->B, c->in_channels, x->H, x->W);
    tensor_expect_shape(eps, "UNet output", x->B, c->out_channels, x->H, x->W);
    tensor_expect_shape(t, "UNet timesteps", x->B);
    tensor_expect_shape(ctx, "UNet context", x->B, x->T, c->cross_dim);
    CHECK(c->text_time == (text_embeds != NULL) && c->text_time == (time_ids != NULL),
          "text_embeds and time_ids go with addition_embed_type \"text_time\" (SDXL) and only there",
          "UNet: text_time %d, text_embeds %s, time_ids %s", c->text_time, text_embeds ? "given" : "missing",
          time_ids ? "given" : "missing");
    if (c->text_time) {
        tensor_expect_shape(text_embeds, "UNet text_embeds", x->B, c->text_embed_dim);
        tensor_expect_shape(time_ids, "UNet time_ids", x->B, 6);
    }
}

// Layer j of a level (a recompute unit): the resnet on [hidden | skip] (up levels: skip given), the transformer.
static void layer_forward(const UNetLevel *lv, UNetLevelActs *A, int j, const Tensor *hidden, const Tensor *skip,
                          UNetActs *x, Scratch s) {
    resnet_forward(&lv->res[j], &A->res[j], &A->res_out[j], hidden, skip, &x->emb_act, s);
    if (lv->has_attn) transformer_forward(&lv->attn[j], &A->attn[j], &A->attn_out[j], &A->res_out[j], &x->ctx, s);
}

// The mid block (a recompute unit): resnet 0, attention, resnet 1 on the last down level's output.
static void mid_forward(const UNet *net, UNetActs *x, const Tensor *in, Scratch s) {
    resnet_forward(&net->mid_res[0], &x->mid_res[0], &x->mid_out[0], in, NULL, &x->emb_act, s);
    transformer_forward(&net->mid_attn, &x->mid_attn, &x->mid_out[1], &x->mid_out[0], &x->ctx, s);
    resnet_forward(&net->mid_res[1], &x->mid_res[1], &x->mid_out[2], &x->mid_out[1], NULL, &x->emb_act, s);
}

void unet_forward(const UNet *net, UNetActs *x, Tensor *eps, const Tensor *in, const Tensor *timesteps,
                  const Tensor *context, const Tensor *text_embeds, const Tensor *time_ids) {
    const UNetConfig *c = &net->cfg;
    int L = c->levels;
    check_inputs(net, x, eps, in, timesteps, context, text_embeds, time_ids);
    recompute_bind(x->unit_plan, UNET_MAX_UNITS, &x->region);
    Scratch s = scratch_make(&x->scratch, &x->x);
    tensor_cast(&x->x, in); // into the activations' dtype
    tensor_cast(&x->ctx, context);
    time_forward(net, x, timesteps, text_embeds, time_ids, s);
    conv2d_forward(&x->conv_in_out, &x->x, &net->conv_in.weight, &net->conv_in.bias, 1, 1);
    const Tensor *h = &x->conv_in_out;
    for (int i = 0; i < L; i++) {
        const UNetLevel *lv = &net->down[i];
        UNetLevelActs *A = &x->down[i];
        for (int j = 0; j < lv->n_layers; j++) {
            layer_forward(lv, A, j, h, NULL, x, s);
            h = layer_out(A, lv, j);
        }
        if (lv->has_sampler) downsample_forward(&lv->sampler, &A->sampler_out, h, s);
        h = level_out(A, lv);
    }
    mid_forward(net, x, h, s);
    h = &x->mid_out[2];
    int top = x->n_skips;
    for (int i = 0; i < L; i++) {
        const UNetLevel *lv = &net->up[i];
        UNetLevelActs *A = &x->up[i];
        for (int j = 0; j < lv->n_layers; j++) {
            layer_forward(lv, A, j, h, x->skip[--top], x, s);
            h = layer_out(A, lv, j);
        }
        if (lv->has_sampler) upsample_forward(&lv->sampler, &A->sampler_out, h, s);
        h = level_out(A, lv);
    }
    Tensor *out = x->out.data ? &x->out : eps; // bf16 or channels last: the output is cast to the caller's eps
    head_forward(&net->conv_norm_out, &net->conv_out, out, &x->norm_mean, &x->norm_rstd, h, c->groups, c->norm_eps, s);
    if (out != eps) tensor_cast(eps, out);
}

// ---------------------------------------------------------------------------------------------------------------
// backward: the same stages in reverse. The up path's resnets write each skip's gradient to dskip; the down path adds
// it back when it reaches that skip.

// Parameter gradients of the time embedding from demb_act, the summed gradient of every resnet's time input.
static void time_backward(const UNet *net, UNet *g, UNetActs *x, Scratch s) {
    const UNetConfig *c = &net->cfg;
    Tensor demb = SCRATCH(&s, x->B, c->temb_dim), act = SCRATCH(&s, x->B, c->temb_dim);
    Tensor dact = SCRATCH(&s, x->B, c->temb_dim);
    activation_backward(&demb, &x->demb_act, &x->emb, ACT_SILU);
    // emb = linear_2(SiLU(linear_1(t_proj))) + add_linear_2(SiLU(add_linear_1(add_in)))
    activation_forward(&act, &x->t_h, ACT_SILU);
    linear_backward(&dact, &g->time_linear_2.weight, &g->time_linear_2.bias, &demb, &act, &net->time_linear_2.weight);
    activation_backward(&dact, &dact, &x->t_h, ACT_SILU);
    linear_backward(NULL, &g->time_linear_1.weight, &g->time_linear_1.bias, &dact, &x->t_proj,
                    &net->time_linear_1.weight);
    if (!c->text_time) return;
    activation_forward(&act, &x->add_h, ACT_SILU);
    linear_backward(&dact, &g->add_linear_2.weight, &g->add_linear_2.bias, &demb, &act, &net->add_linear_2.weight);
    activation_backward(&dact, &dact, &x->add_h, ACT_SILU);
    linear_backward(NULL, &g->add_linear_1.weight, &g->add_linear_1.bias, &dact, &x->add_in, &net->add_linear_1.weight);
}

// One resnet: cur (d out) -> other (d in; [d in | d skip] with a skip); its time-input gradient joins demb_act.
static void resnet_step(const ResnetParams *p, ResnetParams *g, const ResnetActs *a, Tensor *din, Tensor *dskip,
                        const Tensor *dout, const Tensor *in, const Tensor *skip, UNetActs *x, Scratch s) {
    resnet_backward(p, g, a, din, dskip, g ? &x->dtemb : NULL, dout, in, skip, &x->emb_act, s);
    if (g) tensor_axpy(&x->demb_act, 1.0f, &x->dtemb);
}

static void up_level_backward(const UNet *net, UNet *g, UNetActs *x, int i, GradFlow *f, int *k, Tensor *dctx,
                              Scratch s) {
    const UNetLevel *lv = &net->up[i];
    UNetLevel *lg = g ? &g->up[i] : NULL;
    UNetLevelActs *A = &x->up[i];
    if (lv->has_sampler) {
        const Tensor *in = layer_out(A, lv, lv->n_layers - 1);
        Tensor din = view_like(f->other, in), dout = view_like(f->cur, &A->sampler_out);
        upsample_backward(&lv->sampler, GRAD(lg, sampler), &din, &dout, in, s);
        flow_swap(f);
    }
    for (int j = lv->n_layers - 1; j >= 0; j--) {
        const Tensor *hidden = j   ? layer_out(A, lv, j - 1)
                               : i ? level_out(&x->up[i - 1], &net->up[i - 1])
                                   : &x->mid_out[2];
        // a recomputed unit re-runs its forward (rewriting its kept output with the same values) into the region
        if (x->recompute[up_unit(i, j)]) layer_forward(lv, A, j, hidden, x->skip[*k], x, s);
        if (lv->has_attn) {
            Tensor din = view_like(f->other, &A->res_out[j]), dout = view_like(f->cur, &A->attn_out[j]);
            transformer_backward(&lv->attn[j], GRAD(lg, attn[j]), &A->attn[j], &din, dctx, &dout, &A->res_out[j],
                                 &x->ctx, s);
            flow_swap(f);
        }
        Tensor dh = view_like(f->other, hidden), dout = view_like(f->cur, &A->res_out[j]);
        resnet_step(&lv->res[j], GRAD(lg, res[j]), &A->res[j], &dh, &x->dskip[*k], &dout, hidden, x->skip[*k], x, s);
        (*k)++;
        flow_swap(f);
    }
}

static void down_level_backward(const UNet *net, UNet *g, UNetActs *x, int i, GradFlow *f, int *k, Tensor *dctx,
                                Scratch s) {
    const UNetLevel *lv = &net->down[i];
    UNetLevel *lg = g ? &g->down[i] : NULL;
    UNetLevelActs *A = &x->down[i];
    if (lv->has_sampler) {
        const Tensor *in = layer_out(A, lv, lv->n_layers - 1);
        Tensor din = view_like(f->other, in), dout = view_like(f->cur, &A->sampler_out);
        tensor_axpy(&dout, 1.0f, &x->dskip[(*k)--]);
        downsample_backward(&lv->sampler, GRAD(lg, sampler), &din, &dout, in, s);
        flow_swap(f);
    }
    for (int j = lv->n_layers - 1; j >= 0; j--) {
        const Tensor *in = j   ? layer_out(A, lv, j - 1)
                           : i ? level_out(&x->down[i - 1], &net->down[i - 1])
                               : &x->conv_in_out;
        if (x->recompute[down_unit(i, j)]) layer_forward(lv, A, j, in, NULL, x, s);
        Tensor dout = view_like(f->cur, layer_out(A, lv, j));
        tensor_axpy(&dout, 1.0f, &x->dskip[(*k)--]);
        if (lv->has_attn) {
            Tensor din = view_like(f->other, &A->res_out[j]);
            transformer_backward(&lv->attn[j], GRAD(lg, attn[j]), &A->attn[j], &din, dctx, &dout, &A->res_out[j],
                                 &x->ctx, s);
            flow_swap(f);
        }
        Tensor din = view_like(f->other, in), dres = view_like(f->cur, &A->res_out[j]);
        resnet_step(&lv->res[j], GRAD(lg, res[j]), &A->res[j], &din, NULL, &dres, in, NULL, x, s);
        flow_swap(f);
    }
}

void unet_backward(const UNet *net, UNet *g, UNetActs *x, const Tensor *deps, Tensor *dx, Tensor *dcontext) {
    const UNetConfig *c = &net->cfg;
    int L = c->levels;
    tensor_expect_shape(deps, "UNet output gradient", x->B, c->out_channels, x->H, x->W);
    if (dcontext) {
        tensor_expect_shape(dcontext, "UNet context gradient", x->B, x->T, c->cross_dim);
        tensor_fill(dcontext, 0.0f); // every cross-attention adds its share
    }
    Scratch s = scratch_make(&x->scratch, &x->x);
    GradFlow f = {&x->gflow[0], &x->gflow[1]};
    if (g) tensor_fill(&x->demb_act, 0.0f);
    if (x->out.data) { // bf16 or channels last: the upstream gradient as the activations (the output buffer is free)
        tensor_cast(&x->out, deps);
        deps = &x->out;
    }
    // eps = conv_out(SiLU(conv_norm_out(h)))
    head_backward(&net->conv_norm_out, &net->conv_out, GRAD(g, conv_norm_out), GRAD(g, conv_out), &x->norm_mean,
                  &x->norm_rstd, level_out(&x->up[L - 1], &net->up[L - 1]), deps, c->groups, c->norm_eps, &f, s);
    int part = 0;
#define PART_DONE() (x->ready ? x->ready(x->ready_ctx, part++) : (void)part++)
    PART_DONE();
    int k = 0; // the up path meets the skips in push order
    for (int i = L - 1; i >= 0; i--) {
        up_level_backward(net, g, x, i, &f, &k, dcontext, s);
        PART_DONE();
    }
    {   // mid block: resnet 1, attention, resnet 0
        const Tensor *in = level_out(&x->down[L - 1], &net->down[L - 1]);
        if (x->recompute[UNET_MID_UNIT]) mid_forward(net, x, in, s);
        Tensor din = view_like(f.other, &x->mid_out[1]), dout = view_like(f.cur, &x->mid_out[2]);
        resnet_step(&net->mid_res[1], GRAD(g, mid_res[1]), &x->mid_res[1], &din, NULL, &dout, &x->mid_out[1], NULL, x,
                    s);
        flow_swap(&f);
        din = view_like(f.other, &x->mid_out[0]), dout = view_like(f.cur, &x->mid_out[1]);
        transformer_backward(&net->mid_attn, GRAD(g, mid_attn), &x->mid_attn, &din, dcontext, &dout, &x->mid_out[0],
                             &x->ctx, s);
        flow_swap(&f);
        din = view_like(f.other, in), dout = view_like(f.cur, &x->mid_out[0]);
        resnet_step(&net->mid_res[0], GRAD(g, mid_res[0]), &x->mid_res[0], &din, NULL, &dout, in, NULL, x, s);
        flow_swap(&f);
    }
    PART_DONE();
    k = x->n_skips - 1; // the down path meets them in reverse
    for (int i = L - 1; i >= 0; i--) {
        down_level_backward(net, g, x, i, &f, &k, dcontext, s);
        PART_DONE();
    }
    CHECK(k == 0, "", "UNet backward: skip %d reached conv_in", k);
    Tensor dout = view_like(f.cur, &x->conv_in_out);
    tensor_axpy(&dout, 1.0f, &x->dskip[0]);
    int conv = dx && dx->data && !tensor_same_storage(dx, &x->x);
    Tensor dxa = conv ? view_like(f.other, &x->x) : (Tensor){0};
    conv2d_backward(dxa.data ? &dxa : dx, GRAD(g, conv_in.weight), GRAD(g, conv_in.bias), &dout, &x->x,
                    &net->conv_in.weight, 1, 1);
    if (dxa.data) tensor_cast(dx, &dxa);
    if (g) time_backward(net, g, x, s);
    PART_DONE();
#undef PART_DONE
    CHECK(part == unet_backward_parts(c), "", "UNet backward finished %d parts of %d", part, unet_backward_parts(c));
}

int unet_backward_parts(const UNetConfig *cfg) { return 2 * cfg->levels + 3; }

int unet_param_part(const UNetConfig *cfg, const char *name) {
    int L = cfg->levels, i = -1, n = 0;
    if (!strncmp(name, "conv_out.", 9) || !strncmp(name, "conv_norm_out.", 14)) return 0;
    if (sscanf(name, "up_blocks.%d.%n", &i, &n) == 1 && n > 0 && i >= 0 && i < L) return 1 + (L - 1 - i);
    if (!strncmp(name, "mid_block.", 10)) return L + 1;
    if (sscanf(name, "down_blocks.%d.%n", &i, &n) == 1 && n > 0 && i >= 0 && i < L) return L + 2 + (L - 1 - i);
    if (!strncmp(name, "conv_in.", 8) || !strncmp(name, "time_embedding.", 15) || !strncmp(name, "add_embedding.", 14))
        return 2 * L + 2;
    FATAL("", "'%s' is not a parameter of this UNet", name);
}
