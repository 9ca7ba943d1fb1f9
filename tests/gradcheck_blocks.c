// gradcheck_blocks.c: finite-difference checks of every input and parameter gradient of the blocks of
// src/models/blocks.h at tiny sizes: ResnetBlock2D (with temb and shortcut; without; with a skip input read in place,
// a group straddling the two parts, and its output against the resnet on the concatenated copy), Transformer2DModel
// (conv and linear projections, depth 2, LoRA adapters), Downsample2D (both paddings), Upsample2D, the VAE mid
// attention.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/models/blocks.h"
#include "gradcheck.h"

typedef enum { K_RESNET, K_TRANSFORMER, K_DOWN, K_UP, K_VAE_ATTN } Kind;

typedef struct {
    Kind kind;
    Arena params, grads, acts;
    ResnetParams rp, rg;
    ResnetActs ra;
    TransformerParams tp, tg;
    TransformerActs ta;
    SamplerParams sp, sg;
    VaeAttnParams vp, vg;
    VaeAttnActs va;
    Tensor x, dx, out, dout, temb, dtemb, ctx, scratch;
    Tensor skip, dskip; // resnets: the second part of [x | skip] (no data: none)
    int has_temb;
} Ctx;

static void fwd(void *p) {
    Ctx *c = p;
    Scratch s = scratch_make(&c->scratch, &c->x);
    switch (c->kind) {
    case K_RESNET:
        resnet_forward(&c->rp, &c->ra, &c->out, &c->x, c->skip.data ? &c->skip : NULL, c->has_temb ? &c->temb : NULL,
                       s);
        break;
    case K_TRANSFORMER: transformer_forward(&c->tp, &c->ta, &c->out, &c->x, &c->ctx, s); break;
    case K_DOWN: downsample_forward(&c->sp, &c->out, &c->x, s); break;
    case K_UP: upsample_forward(&c->sp, &c->out, &c->x, s); break;
    case K_VAE_ATTN: vae_attn_forward(&c->vp, &c->va, &c->out, &c->x, s); break;
    }
}

static void bwd(void *p) {
    Ctx *c = p;
    Scratch s = scratch_make(&c->scratch, &c->x);
    switch (c->kind) {
    case K_RESNET:
        resnet_backward(&c->rp, &c->rg, &c->ra, &c->dx, c->skip.data ? &c->dskip : NULL, c->has_temb ? &c->dtemb : NULL,
                        &c->dout, &c->x, c->skip.data ? &c->skip : NULL, c->has_temb ? &c->temb : NULL, s);
        break;
    case K_TRANSFORMER: transformer_backward(&c->tp, &c->tg, &c->ta, &c->dx, NULL, &c->dout, &c->x, &c->ctx, s); break;
    case K_DOWN: downsample_backward(&c->sp, &c->sg, &c->dx, &c->dout, &c->x, s); break;
    case K_UP: upsample_backward(&c->sp, &c->sg, &c->dx, &c->dout, &c->x, s); break;
    case K_VAE_ATTN: vae_attn_backward(&c->vp, &c->vg, &c->va, &c->dx, &c->dout, &c->x, s); break;
    }
}

static void start(Ctx *c, Kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    arena_init(&c->params, "params", DEVICE_CPU);
    arena_init(&c->grads, "grads", DEVICE_CPU);
    arena_init(&c->acts, "acts", DEVICE_CPU);
}

// Allocates everything once the block is planned; parameters get values of the size real checkpoints have
// relative to their fan-in, norm scales around 1.
static void finish(Ctx *c, int64_t scratch_need, const int64_t *xshape, const int64_t *oshape) {
    PLAN(&c->acts, &c->scratch, "", "scratch", scratch_need > 0 ? scratch_need : 1);
    arena_alloc(&c->params);
    arena_alloc(&c->grads);
    arena_alloc(&c->acts);
    for (int i = 0; i < c->params.n; i++) {
        ArenaEntry *e = &c->params.entries[i];
        int norm_scale = e->desc.ndim == 1 && strstr(e->name, "norm") && strstr(e->name, ".weight");
        if (norm_scale)
            gc_fill_uniform(&e->desc, 0.7f, 1.3f, 100 + (uint64_t)i);
        else
            gc_fill_uniform(&e->desc, -0.6f, 0.6f, 100 + (uint64_t)i);
    }
    c->x = gc_tensor(4, xshape), c->dx = gc_tensor(4, xshape);
    c->out = gc_tensor(4, oshape), c->dout = gc_tensor(4, oshape);
    gc_fill_uniform(&c->x, -1.5f, 1.5f, 1);
}

static void release(Ctx *c) {
    Tensor *owned[] = {&c->x, &c->dx, &c->out, &c->dout, &c->temb, &c->dtemb, &c->ctx, &c->skip, &c->dskip};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) gc_free(owned[i]->data);
    if (c->kind == K_TRANSFORMER) {
        transformer_free(&c->tp);
        transformer_free(&c->tg);
        transformer_acts_free(&c->ta);
    }
    arena_free(&c->params);
    arena_free(&c->grads);
    arena_free(&c->acts);
}

// Checks the inputs with each group of parameters, then releases the block; returns the failures, counts checks.
static int run(Ctx *c, const char *name, int *checks) {
    int failures = 0, per = GC_MAX - 3; // x, temb and skip besides the parameters
    for (int first = 0; first < c->params.n; first += per) {
        char label[96];
        int last = first + per < c->params.n ? first + per : c->params.n;
        snprintf(label, sizeof label, "%s p%d-%d", name, first, last - 1);
        GradCheck g = {.name = label, .ctx = c, .forward = fwd, .backward = bwd, .max_elems = 256};
        g.wrt[g.n_wrt] = &c->x, g.grad[g.n_wrt++] = &c->dx;
        if (c->has_temb) g.wrt[g.n_wrt] = &c->temb, g.grad[g.n_wrt++] = &c->dtemb;
        if (c->skip.data) g.wrt[g.n_wrt] = &c->skip, g.grad[g.n_wrt++] = &c->dskip;
        for (int i = first; i < last; i++) {
            printf("     p%-3d %s\n", i, c->params.entries[i].name);
            g.wrt[g.n_wrt] = &c->params.entries[i].desc, g.grad[g.n_wrt] = &c->grads.entries[i].desc;
            g.is_param[g.n_wrt++] = 1;
        }
        g.out[0] = &c->out, g.dout[0] = &c->dout, g.n_out = 1;
        failures += gradcheck_run(&g);
        (*checks)++;
    }
    release(c);
    return failures;
}

// The resnet on [x | skip] read in place gives the output of the resnet on their concatenated copy: the same values
// in the same order of operations but for the shortcut's two GEMMs, so within a few fp32 roundings (1e-6 relative).
static int check_skip_output(Ctx *c, int *checks) {
    int64_t B = c->x.shape[0], Cx = c->x.shape[1], Cs = c->skip.shape[1], H = c->x.shape[2], W = c->x.shape[3];
    Tensor cat = GC_TENSOR(B, Cx + Cs, H, W), ref = GC_TENSOR(B, c->rp.cout, H, W);
    concat_channels_forward(&cat, &c->x, &c->skip);
    fwd(c);
    Tensor keep = c->out, x = c->x, skip = c->skip;
    c->out = ref, c->x = cat, c->skip = (Tensor){0};
    fwd(c);
    c->out = keep, c->x = x, c->skip = skip;
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < tensor_numel(&ref); i++) {
        e = fmax(e, fabs(tensor_f32(&keep)[i] - tensor_f32(&ref)[i]));
        m = fmax(m, fabs(tensor_f32(&ref)[i]));
    }
    int ok = e <= 1e-6 * m;
    printf("%s resnet [x | skip] in place against the concatenated copy: %.2e relative (tol 1e-6)\n",
           ok ? "ok  " : "FAIL", e / m);
    gc_free(cat.data), gc_free(ref.data);
    (*checks)++;
    return !ok;
}

// cskip > 0: the input is [x | skip] with skip's cskip channels read in place (the UNet up path)
static int check_resnet(int cin, int cout, int temb, float eps, int cskip, int *checks) {
    enum { B = 2, H = 4, W = 3, G = 2 };
    Ctx c;
    start(&c, K_RESNET);
    resnet_plan_params(&c.params, &c.rp, "res", cin, cout, temb, G, eps);
    resnet_plan_params(&c.grads, &c.rg, "res", cin, cout, temb, G, eps);
    int64_t need = resnet_plan_acts(&c.acts, &c.ra, "res", &c.rp, B, H, W);
    finish(&c, need, (int64_t[]){B, cin - cskip, H, W}, (int64_t[]){B, cout, H, W});
    if (temb) {
        c.has_temb = 1;
        c.temb = GC_TENSOR(B, temb), c.dtemb = GC_TENSOR(B, temb);
        gc_fill_uniform(&c.temb, -1.0f, 1.0f, 2);
    }
    int f = 0;
    if (cskip) {
        c.skip = GC_TENSOR(B, cskip, H, W), c.dskip = GC_TENSOR(B, cskip, H, W);
        gc_fill_uniform(&c.skip, -1.0f, 2.0f, 5);
        f += check_skip_output(&c, checks);
    }
    char name[64];
    snprintf(name, sizeof name, "resnet(%d%s->%d%s)", cin - cskip, cskip ? " | skip" : "", cout,
             temb ? ", temb" : "");
    return f + run(&c, name, checks);
}

// Rank-2 LoRA adapters on every attention projection of the transformer, planned with the parameters.
static void add_lora(Ctx *c) {
    for (int k = 0; k < c->tp.depth; k++)
        for (int a = 0; a < 2; a++) {
            AttnParams *ap = a ? &c->tp.blocks[k].attn2 : &c->tp.blocks[k].attn1;
            AttnParams *ag = a ? &c->tg.blocks[k].attn2 : &c->tg.blocks[k].attn1;
            AttnProj *p[4] = {&ap->to_q, &ap->to_k, &ap->to_v, &ap->to_out};
            AttnProj *g[4] = {&ag->to_q, &ag->to_k, &ag->to_v, &ag->to_out};
            for (int j = 0; j < 4; j++) {
                char n[128];
                int64_t out = p[j]->weight.shape[0], in = p[j]->weight.shape[1];
                snprintf(n, sizeof n, "blocks.%d.attn%d.proj%d.lora_A.weight", k, a + 1, j);
                arena_add(&c->params, &p[j]->lora_a, n, DTYPE_F32, 2, (int64_t[]){2, in});
                arena_add(&c->grads, &g[j]->lora_a, n, DTYPE_F32, 2, (int64_t[]){2, in});
                snprintf(n, sizeof n, "blocks.%d.attn%d.proj%d.lora_B.weight", k, a + 1, j);
                arena_add(&c->params, &p[j]->lora_b, n, DTYPE_F32, 2, (int64_t[]){out, 2});
                arena_add(&c->grads, &g[j]->lora_b, n, DTYPE_F32, 2, (int64_t[]){out, 2});
                p[j]->lora_scale = 0.75f;
            }
        }
}

static int check_transformer(int linear, int lora, int *checks) {
    enum { B = 2, C = 8, HEADS = 2, DEPTH = 2, CROSS = 6, TK = 5, H = 3, W = 4, G = 2 };
    Ctx c;
    start(&c, K_TRANSFORMER);
    transformer_plan_params(&c.params, &c.tp, "attn", C, HEADS, DEPTH, CROSS, linear, G);
    transformer_plan_params(&c.grads, &c.tg, "attn", C, HEADS, DEPTH, CROSS, linear, G);
    if (lora) add_lora(&c);
    int64_t need = transformer_plan_acts(&c.acts, &c.ta, "attn", &c.tp, B, H, W, TK);
    finish(&c, need, (int64_t[]){B, C, H, W}, (int64_t[]){B, C, H, W});
    c.ctx = GC_TENSOR(B, TK, CROSS);
    gc_fill_uniform(&c.ctx, -1.0f, 1.0f, 3);
    return run(&c, lora ? "transformer(lora)" : linear ? "transformer(linear)" : "transformer(conv)", checks);
}

static int check_sampler(Kind kind, int asym, int *checks) {
    enum { B = 2, C = 3, H = 6, W = 4 };
    Ctx c;
    start(&c, kind);
    int64_t need, oh = kind == K_UP ? 2 * H : H / 2, ow = kind == K_UP ? 2 * W : W / 2;
    if (kind == K_UP) {
        upsample_plan_params(&c.params, &c.sp, "up", C);
        upsample_plan_params(&c.grads, &c.sg, "up", C);
        need = upsample_scratch(&c.sp, DTYPE_F32, B, H, W);
    } else {
        downsample_plan_params(&c.params, &c.sp, "down", C, asym);
        downsample_plan_params(&c.grads, &c.sg, "down", C, asym);
        need = downsample_scratch(&c.sp, DTYPE_F32, B, H, W);
    }
    finish(&c, need, (int64_t[]){B, C, H, W}, (int64_t[]){B, C, oh, ow});
    return run(&c, kind == K_UP ? "upsample" : asym ? "downsample(pad 0,1,0,1)" : "downsample(pad 1)", checks);
}

static int check_vae_attn(int *checks) {
    enum { B = 2, C = 8, H = 3, W = 3, G = 2 };
    Ctx c;
    start(&c, K_VAE_ATTN);
    vae_attn_plan_params(&c.params, &c.vp, "attn", C, G, 1e-6f);
    vae_attn_plan_params(&c.grads, &c.vg, "attn", C, G, 1e-6f);
    int64_t need = vae_attn_plan_acts(&c.acts, &c.va, "attn", &c.vp, B, H, W);
    finish(&c, need, (int64_t[]){B, C, H, W}, (int64_t[]){B, C, H, W});
    return run(&c, "vae attention", checks);
}

int main(void) {
    int f = 0, checks = 0;
    f += check_resnet(4, 8, 6, 1e-5f, 0, &checks);
    f += check_resnet(6, 6, 0, 1e-6f, 0, &checks);
    f += check_resnet(6, 4, 6, 1e-5f, 2, &checks); // groups of 3: group 1 takes channel 3 of x and both of skip's
    f += check_transformer(0, 0, &checks);
    f += check_transformer(1, 0, &checks);
    f += check_transformer(1, 1, &checks);
    f += check_sampler(K_DOWN, 0, &checks);
    f += check_sampler(K_DOWN, 1, &checks);
    f += check_sampler(K_UP, 0, &checks);
    f += check_vae_attn(&checks);
    return gc_report(f, checks);
}
