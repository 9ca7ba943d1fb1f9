// unet_context_backward.c: unet_backward's stages (unet.c, blocks.c) with one addition: each cross-attention also
// sends its key and value gradients back to the shared context, where all transformers' contributions are summed.
// The attention projections run through mha_backward, which returns that gradient.
#include "unet_context_backward.h"

#include <string.h>

#include "../core/common.h"

#define TRANSFORMER_GN_EPS 1e-6f // Transformer2DModel's GroupNorm (blocks.c)
#define TRANSFORMER_LN_EPS 1e-5f // BasicTransformerBlock's LayerNorms (blocks.c)

// The attention's projections and saved values in the shape mha_backward takes.
static MHAParams mha_params(const AttnParams *p) {
    CHECK(!p->to_q.lora_a.data && !p->to_k.lora_a.data && !p->to_v.lora_a.data && !p->to_out.lora_a.data,
          "detach the LoRA adapters first", "unet_backward_context: an attention projection has a LoRA adapter");
    return (MHAParams){p->to_q.weight, p->to_k.weight, p->to_v.weight, p->to_out.weight,
                       p->to_q.bias,   p->to_k.bias,   p->to_v.bias,   p->to_out.bias};
}
static MHACache mha_cache(const AttnActs *x) { return (MHACache){x->q, x->k, x->v, x->o, x->lse}; }

// Backward of one BasicTransformerBlock (blocks.c basic_backward); dctx accumulates the attn2 context gradient.
static void basic_backward_ctx(const BasicBlockParams *p, BasicBlockParams *g, const BasicBlockActs *x, Tensor *din,
                               const Tensor *dout, const Tensor *in, const Tensor *ctx, Tensor *dctx, Scratch s) {
    int64_t B = in->shape[0], T = in->shape[1], C = in->shape[2];
    Tensor dh = SCRATCH(&s, B, T, C), l = SCRATCH(&s, B, T, C);
    Tensor mean = SCRATCH(&s, B, T), rstd = SCRATCH(&s, B, T);
    {   // out = h2 + ff_out(GEGLU(ff_in(norm3(h2))))
        Scratch t = s;
        Tensor big = SCRATCH(&t, B, T, 8 * C), mid = SCRATCH(&t, B, T, 4 * C);
        Tensor gg = VIEW(&big, B, T, 4 * C), dl = VIEW(&mid, B, T, C);
        layernorm_forward(&l, &mean, &rstd, &x->h2, &p->norm3.weight, &p->norm3.bias, TRANSFORMER_LN_EPS);
        geglu_forward(&gg, &x->ff_h);
        linear_backward(&mid, &g->ff_out.weight, &g->ff_out.bias, dout, &gg, &p->ff_out.weight);
        geglu_backward(&big, &mid, &x->ff_h);
        linear_backward(&dl, &g->ff_in.weight, &g->ff_in.bias, &big, &l, &p->ff_in.weight);
        layernorm_backward(&dh, &g->norm3.weight, &g->norm3.bias, &dl, &x->h2, &x->ln3_mean, &x->ln3_rstd,
                           &p->norm3.weight);
        tensor_axpy(&dh, 1.0f, dout);
    }
    {   // h2 = h1 + attn2(norm2(h1), ctx)
        Scratch t = s;
        Tensor dl = SCRATCH(&t, B, T, C), dc = scratch_take(&t, 3, ctx->shape);
        MHAParams mp = mha_params(&p->attn2), mg = mha_params(&g->attn2);
        MHACache mc = mha_cache(&x->attn2);
        layernorm_forward(&l, &mean, &rstd, &x->h1, &p->norm2.weight, &p->norm2.bias, TRANSFORMER_LN_EPS);
        mha_backward(&dl, &dc, &mg, &dh, &mc, &l, ctx, &mp, p->attn2.heads, 0);
        tensor_axpy(dctx, 1.0f, &dc);
        layernorm_backward(&l, &g->norm2.weight, &g->norm2.bias, &dl, &x->h1, &x->ln2_mean, &x->ln2_rstd,
                           &p->norm2.weight);
        tensor_axpy(&dh, 1.0f, &l);
    }
    {   // h1 = in + attn1(norm1(in))
        Scratch t = s;
        Tensor dl = SCRATCH(&t, B, T, C);
        MHAParams mp = mha_params(&p->attn1), mg = mha_params(&g->attn1);
        MHACache mc = mha_cache(&x->attn1);
        layernorm_forward(&l, &mean, &rstd, in, &p->norm1.weight, &p->norm1.bias, TRANSFORMER_LN_EPS);
        mha_backward(&dl, NULL, &mg, &dh, &mc, &l, NULL, &mp, p->attn1.heads, 0);
        layernorm_backward(din, &g->norm1.weight, &g->norm1.bias, &dl, in, &x->ln1_mean, &x->ln1_rstd,
                           &p->norm1.weight);
        tensor_axpy(din, 1.0f, &dh);
    }
}

// Backward of one Transformer2DModel (blocks.c transformer_backward) with the context gradient.
static void transformer_backward_ctx(const TransformerParams *p, TransformerParams *g, const TransformerActs *x,
                                     Tensor *din, const Tensor *dout, const Tensor *in, const Tensor *ctx,
                                     Tensor *dctx, Scratch s) {
    int64_t B = in->shape[0], C = p->channels, H = in->shape[2], W = in->shape[3], T = H * W;
    Tensor ga = SCRATCH(&s, B, T, C), gb = SCRATCH(&s, B, T, C);
    Tensor *cur = &ga, *other = &gb, *swap;
    const Tensor *last = &x->blocks[p->depth - 1].out;
    if (p->linear) { // out = proj_out(last) + in
        tokens_to_nchw_backward(other, dout);
        linear_backward(cur, &g->proj_out.weight, &g->proj_out.bias, other, last, &p->proj_out.weight);
    } else {
        Tensor img = VIEW(other, B, C, H, W), dimg = VIEW(cur, B, C, H, W);
        tokens_to_nchw_forward(&img, last);
        conv2d_backward(&dimg, &g->proj_out.weight, &g->proj_out.bias, dout, &img, &p->proj_out.weight, 1, 0);
        tokens_to_nchw_backward(other, &dimg);
        swap = cur, cur = other, other = swap;
    }
    for (int k = p->depth - 1; k >= 0; k--) {
        basic_backward_ctx(&p->blocks[k], &g->blocks[k], &x->blocks[k], other, cur,
                           k ? &x->blocks[k - 1].out : &x->tokens, ctx, dctx, s);
        swap = cur, cur = other, other = swap;
    }
    // tokens = proj_in(GroupNorm(in)); cur holds d tokens
    Tensor n = SCRATCH(&s, B, C, H, W), mean = SCRATCH(&s, B, p->groups), rstd = SCRATCH(&s, B, p->groups), dn;
    groupnorm_forward(&n, &mean, &rstd, in, &p->norm.weight, &p->norm.bias, p->groups, TRANSFORMER_GN_EPS);
    if (p->linear) {
        Tensor dtk = VIEW(&n, B, T, C);
        nchw_to_tokens_forward(other, &n);
        linear_backward(&dtk, &g->proj_in.weight, &g->proj_in.bias, cur, other, &p->proj_in.weight);
        dn = VIEW(other, B, C, H, W);
        nchw_to_tokens_backward(&dn, &dtk);
    } else {
        Tensor dpr = VIEW(other, B, C, H, W);
        nchw_to_tokens_backward(&dpr, cur);
        dn = VIEW(cur, B, C, H, W);
        conv2d_backward(&dn, &g->proj_in.weight, &g->proj_in.bias, &dpr, &n, &p->proj_in.weight, 1, 0);
    }
    groupnorm_backward(din, &g->norm.weight, &g->norm.bias, &dn, in, &x->mean, &x->rstd, &p->norm.weight, p->groups);
    tensor_axpy(din, 1.0f, dout);
}

// ---------------------------------------------------------------------------------------------------------------
// the UNet stages (unet.c)

static const Tensor *layer_out(const UNetLevelActs *A, const UNetLevel *lv, int j) {
    return lv->has_attn ? &A->attn_out[j] : &A->res_out[j];
}
static const Tensor *level_out(const UNetLevelActs *A, const UNetLevel *lv) {
    return lv->has_sampler ? &A->sampler_out : layer_out(A, lv, lv->n_layers - 1);
}

static void time_backward(const UNet *net, UNet *g, UNetActs *x, Scratch s) {
    const UNetConfig *c = &net->cfg;
    CHECK(!c->text_time, "", "unet_backward_context: text_time (SDXL) conditioning is not supported");
    Tensor demb = SCRATCH(&s, x->B, c->temb_dim), act = SCRATCH(&s, x->B, c->temb_dim);
    Tensor dact = SCRATCH(&s, x->B, c->temb_dim);
    activation_backward(&demb, &x->demb_act, &x->emb, ACT_SILU);
    activation_forward(&act, &x->t_h, ACT_SILU);
    linear_backward(&dact, &g->time_linear_2.weight, &g->time_linear_2.bias, &demb, &act, &net->time_linear_2.weight);
    activation_backward(&dact, &dact, &x->t_h, ACT_SILU);
    linear_backward(NULL, &g->time_linear_1.weight, &g->time_linear_1.bias, &dact, &x->t_proj,
                    &net->time_linear_1.weight);
}

static void resnet_step(const ResnetParams *p, ResnetParams *g, const ResnetActs *a, Tensor *din, const Tensor *dout,
                        const Tensor *in, UNetActs *x, Scratch s) {
    resnet_backward(p, g, a, din, &x->dtemb, dout, in, &x->emb_act, s);
    tensor_axpy(&x->demb_act, 1.0f, &x->dtemb);
}

static void up_level_backward(const UNet *net, UNet *g, UNetActs *x, int i, GradFlow *f, int *k, Tensor *dctx,
                              Scratch s) {
    const UNetLevel *lv = &net->up[i];
    UNetLevel *lg = &g->up[i];
    UNetLevelActs *A = &x->up[i];
    if (lv->has_sampler) {
        const Tensor *in = layer_out(A, lv, lv->n_layers - 1);
        Tensor din = view_like(f->other, in), dout = view_like(f->cur, &A->sampler_out);
        upsample_backward(&lv->sampler, &lg->sampler, &din, &dout, in, s);
        flow_swap(f);
    }
    for (int j = lv->n_layers - 1; j >= 0; j--) {
        if (lv->has_attn) {
            Tensor din = view_like(f->other, &A->res_out[j]), dout = view_like(f->cur, &A->attn_out[j]);
            transformer_backward_ctx(&lv->attn[j], &lg->attn[j], &A->attn[j], &din, &dout, &A->res_out[j], &x->ctx,
                                     dctx, s);
            flow_swap(f);
        }
        Tensor dcat = view_like(&x->gcat, &A->cat[j]), dout = view_like(f->cur, &A->res_out[j]);
        resnet_step(&lv->res[j], &lg->res[j], &A->res[j], &dcat, &dout, &A->cat[j], x, s);
        const Tensor *hidden = j   ? layer_out(A, lv, j - 1)
                               : i ? level_out(&x->up[i - 1], &net->up[i - 1])
                                   : &x->mid_out[2];
        Tensor dh = view_like(f->cur, hidden);
        concat_channels_backward(&dh, &x->dskip[(*k)++], &dcat);
    }
}

static void down_level_backward(const UNet *net, UNet *g, UNetActs *x, int i, GradFlow *f, int *k, Tensor *dctx,
                                Scratch s) {
    const UNetLevel *lv = &net->down[i];
    UNetLevel *lg = &g->down[i];
    UNetLevelActs *A = &x->down[i];
    if (lv->has_sampler) {
        const Tensor *in = layer_out(A, lv, lv->n_layers - 1);
        Tensor din = view_like(f->other, in), dout = view_like(f->cur, &A->sampler_out);
        tensor_axpy(&dout, 1.0f, &x->dskip[(*k)--]);
        downsample_backward(&lv->sampler, &lg->sampler, &din, &dout, in, s);
        flow_swap(f);
    }
    for (int j = lv->n_layers - 1; j >= 0; j--) {
        Tensor dout = view_like(f->cur, layer_out(A, lv, j));
        tensor_axpy(&dout, 1.0f, &x->dskip[(*k)--]);
        if (lv->has_attn) {
            Tensor din = view_like(f->other, &A->res_out[j]);
            transformer_backward_ctx(&lv->attn[j], &lg->attn[j], &A->attn[j], &din, &dout, &A->res_out[j], &x->ctx,
                                     dctx, s);
            flow_swap(f);
        }
        const Tensor *in = j   ? layer_out(A, lv, j - 1)
                           : i ? level_out(&x->down[i - 1], &net->down[i - 1])
                               : &x->conv_in_out;
        Tensor din = view_like(f->other, in), dres = view_like(f->cur, &A->res_out[j]);
        resnet_step(&lv->res[j], &lg->res[j], &A->res[j], &din, &dres, in, x, s);
        flow_swap(f);
    }
}

void unet_backward_context(const UNet *net, UNet *g, UNetActs *x, const Tensor *deps, Tensor *dctx) {
    const UNetConfig *c = &net->cfg;
    int L = c->levels;
    CHECK(g, "", "unet_backward_context needs a gradient struct");
    tensor_expect_shape(deps, "UNet output gradient", x->B, c->out_channels, x->H, x->W);
    tensor_expect_shape(dctx, "UNet context gradient", x->B, x->T, c->cross_dim);
    Scratch s = scratch_make(&x->scratch);
    GradFlow f = {&x->gflow[0], &x->gflow[1]};
    tensor_fill(&x->demb_act, 0.0f);
    tensor_fill(dctx, 0.0f);
    {   // eps = conv_out(SiLU(conv_norm_out(h)))
        const Tensor *h = level_out(&x->up[L - 1], &net->up[L - 1]);
        Scratch t = s;
        Tensor n = scratch_take(&t, 4, h->shape), act = scratch_take(&t, 4, h->shape);
        Tensor mean = SCRATCH(&t, x->B, c->groups), rstd = SCRATCH(&t, x->B, c->groups);
        Tensor dact = view_like(f.other, h), dh = view_like(f.cur, h);
        groupnorm_forward(&n, &mean, &rstd, h, &net->conv_norm_out.weight, &net->conv_norm_out.bias, c->groups,
                          c->norm_eps);
        activation_forward(&act, &n, ACT_SILU);
        conv2d_backward(&dact, &g->conv_out.weight, &g->conv_out.bias, deps, &act, &net->conv_out.weight, 1, 1);
        activation_backward(&dact, &dact, &n, ACT_SILU);
        groupnorm_backward(&dh, &g->conv_norm_out.weight, &g->conv_norm_out.bias, &dact, h, &x->norm_mean,
                           &x->norm_rstd, &net->conv_norm_out.weight, c->groups);
    }
    int k = 0; // the up path meets the skips in push order
    for (int i = L - 1; i >= 0; i--) up_level_backward(net, g, x, i, &f, &k, dctx, s);
    {   // mid block: resnet 1, attention, resnet 0
        const Tensor *in = level_out(&x->down[L - 1], &net->down[L - 1]);
        Tensor din = view_like(f.other, &x->mid_out[1]), dout = view_like(f.cur, &x->mid_out[2]);
        resnet_step(&net->mid_res[1], &g->mid_res[1], &x->mid_res[1], &din, &dout, &x->mid_out[1], x, s);
        flow_swap(&f);
        din = view_like(f.other, &x->mid_out[0]), dout = view_like(f.cur, &x->mid_out[1]);
        transformer_backward_ctx(&net->mid_attn, &g->mid_attn, &x->mid_attn, &din, &dout, &x->mid_out[0], &x->ctx,
                                 dctx, s);
        flow_swap(&f);
        din = view_like(f.other, in), dout = view_like(f.cur, &x->mid_out[0]);
        resnet_step(&net->mid_res[0], &g->mid_res[0], &x->mid_res[0], &din, &dout, in, x, s);
        flow_swap(&f);
    }
    k = x->n_skips - 1; // the down path meets them in reverse
    for (int i = L - 1; i >= 0; i--) down_level_backward(net, g, x, i, &f, &k, dctx, s);
    CHECK(k == 0, "", "UNet backward: skip %d reached conv_in", k);
    Tensor dout = view_like(f.cur, &x->conv_in_out);
    tensor_axpy(&dout, 1.0f, &x->dskip[0]);
    conv2d_backward(NULL, &g->conv_in.weight, &g->conv_in.bias, &dout, &x->x, &net->conv_in.weight, 1, 1);
    time_backward(net, g, x, s);
}
