// clip_vision.c: the CLIP vision transformer of the rewards (open_clip VisionTransformer = transformers
// CLIPVisionTransformer + visual_projection): parameter plan under the transformers names, the activation plan, the
// forward and the input-image backward with frozen weights (no parameter gradients), optionally recomputing each
// layer from its saved input (checkpointing).
#include "clip_vision.h"

#include <stdio.h>
#include <string.h>

#include "../core/common.h"

const char *clip_vision_config_str(const ClipVisionConfig *c, char *buf, size_t n) {
    int g = c->image_size / c->patch;
    snprintf(buf, n, "vision %d layers, width %d, %d heads, ff %d, patch %d, image %d (%d tokens), %s, projection %d",
             c->layers, c->width, c->heads, c->ff, c->patch, c->image_size, g * g + 1, activation_name(c->act),
             c->proj_dim);
    return buf;
}

// ---------------------------------------------------------------------------------------------------------------
// parameters

static void add_param(Arena *a, Tensor *slot, const char *name, int ndim, const int64_t *shape) {
    arena_add(a, slot, name, DTYPE_F32, ndim, shape);
}
#define ADD(slot, name, ...) \
    add_param(a, slot, name, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

void clip_vision_plan(ClipVision *m, const ClipVisionConfig *c) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    CHECK(c->width % c->heads == 0 && c->image_size % c->patch == 0 && c->layers > 0, "",
          "clip_vision_plan: width %d, heads %d, image %d, patch %d", c->width, c->heads, c->image_size, c->patch);
    m->layers = xcalloc((size_t)c->layers, sizeof *m->layers);
    Arena *a = &m->params;
    arena_init(a, "reward_vision", DEVICE_CPU);
    int64_t D = c->width, FF = c->ff, g = c->image_size / c->patch, T = g * g + 1;
    ADD(&m->patch_w, "vision_model.embeddings.patch_embedding.weight", D, 3, c->patch, c->patch);
    ADD(&m->class_emb, "vision_model.embeddings.class_embedding", D);
    ADD(&m->pos_emb, "vision_model.embeddings.position_embedding.weight", T, D);
    ADD(&m->pre_ln_w, "vision_model.pre_layrnorm.weight", D);
    ADD(&m->pre_ln_b, "vision_model.pre_layrnorm.bias", D);
    char n[128];
    for (int i = 0; i < c->layers; i++) {
        ClipTextLayer *l = &m->layers[i];
#define L(slot, suffix, ...) \
    (snprintf(n, sizeof n, "vision_model.encoder.layers.%d.%s", i, suffix), ADD(slot, n, __VA_ARGS__))
        L(&l->attn.wq, "self_attn.q_proj.weight", D, D);
        L(&l->attn.bq, "self_attn.q_proj.bias", D);
        L(&l->attn.wk, "self_attn.k_proj.weight", D, D);
        L(&l->attn.bk, "self_attn.k_proj.bias", D);
        L(&l->attn.wv, "self_attn.v_proj.weight", D, D);
        L(&l->attn.bv, "self_attn.v_proj.bias", D);
        L(&l->attn.wo, "self_attn.out_proj.weight", D, D);
        L(&l->attn.bo, "self_attn.out_proj.bias", D);
        L(&l->ln1_w, "layer_norm1.weight", D);
        L(&l->ln1_b, "layer_norm1.bias", D);
        L(&l->fc1_w, "mlp.fc1.weight", FF, D);
        L(&l->fc1_b, "mlp.fc1.bias", FF);
        L(&l->fc2_w, "mlp.fc2.weight", D, FF);
        L(&l->fc2_b, "mlp.fc2.bias", D);
        L(&l->ln2_w, "layer_norm2.weight", D);
        L(&l->ln2_b, "layer_norm2.bias", D);
#undef L
    }
    ADD(&m->post_ln_w, "vision_model.post_layernorm.weight", D);
    ADD(&m->post_ln_b, "vision_model.post_layernorm.bias", D);
    ADD(&m->proj, "visual_projection.weight", c->proj_dim, D);
}

void clip_vision_free(ClipVision *m) {
    arena_free(&m->params);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

// ---------------------------------------------------------------------------------------------------------------
// activations

void clip_vision_run_init(ClipVisionRun *r, const ClipVision *m, int B, int checkpoint) {
    const ClipVisionConfig *c = &m->cfg;
    memset(r, 0, sizeof *r);
    int64_t D = c->width, g = c->image_size / c->patch, T = g * g + 1, S = c->image_size, BT = (int64_t)B * T;
    r->B = B, r->T = (int)T, r->checkpoint = checkpoint;
    Arena *a = &r->mem;
    arena_init(a, "reward_acts", m->params.device); // where the weights are
    ADD(&r->pixels, "pixels", B, 3, S, S);
    ADD(&r->patches, "patches", B, D, g, g);
    ADD(&r->x0, "tokens", B, T, D);
    ADD(&r->pre_mean, "ln_pre.mean", BT);
    ADD(&r->pre_rstd, "ln_pre.rstd", BT);
    r->saved = xcalloc((size_t)c->layers, sizeof *r->saved);
    char n[96];
    for (int i = 0; i < c->layers; i++) {
        ClipVisionSaved *s = &r->saved[i];
#define S_(slot, what, ...) (snprintf(n, sizeof n, "layer%d.%s", i, what), ADD(slot, n, __VA_ARGS__))
        S_(&s->in, "in", B, T, D);
        if (checkpoint && i > 0) continue; // the rest is shared: layer 0's buffers, recomputed per layer
        S_(&s->mid, "mid", B, T, D);
        S_(&s->ln1_mean, "ln1.mean", BT);
        S_(&s->ln1_rstd, "ln1.rstd", BT);
        S_(&s->mha.q, "q", B, T, D);
        S_(&s->mha.k, "k", B, T, D);
        S_(&s->mha.v, "v", B, T, D);
        S_(&s->mha.attn, "attn", B, T, D);
        S_(&s->mha.lse, "lse", B, c->heads, T);
        S_(&s->ln2_mean, "ln2.mean", BT);
        S_(&s->ln2_rstd, "ln2.rstd", BT);
        S_(&s->fc1, "fc1", B, T, c->ff);
#undef S_
    }
    ADD(&r->out, "out", B, T, D);
    ADD(&r->h, "h", B, T, D);
    ADD(&r->act, "act", B, T, c->ff);
    ADD(&r->tmp, "tmp", B, T, D);
    ADD(&r->pooled, "pooled", B, D);
    ADD(&r->post_mean, "ln_post.mean", B);
    ADD(&r->post_rstd, "ln_post.rstd", B);
    ADD(&r->pooled_ln, "pooled_ln", B, D);
    ADD(&r->features, "features", B, c->proj_dim);
    ADD(&r->dres, "d.res", B, T, D);
    ADD(&r->dmid, "d.mid", B, T, D);
    ADD(&r->dh, "d.h", B, T, D);
    ADD(&r->dff, "d.ff", B, T, c->ff);
    ADD(&r->dff2, "d.ff2", B, T, c->ff);
    ADD(&r->dpatches, "d.patches", B, D, g, g);
    ADD(&r->dpooled, "d.pooled", B, D);
    ADD(&r->dpooled_ln, "d.pooled_ln", B, D);
    arena_alloc(a);
    if (checkpoint)
        for (int i = 1; i < c->layers; i++) {
            Tensor in = r->saved[i].in;
            r->saved[i] = r->saved[0];
            r->saved[i].in = in;
        }
    r->cls_idx = xcalloc((size_t)B, sizeof *r->cls_idx);
}
#undef ADD

void clip_vision_run_free(ClipVisionRun *r) {
    arena_free(&r->mem);
    free(r->saved);
    free(r->cls_idx);
    memset(r, 0, sizeof *r);
}

size_t clip_vision_run_bytes(const ClipVisionRun *r) { return r->mem.size; }

// ---------------------------------------------------------------------------------------------------------------
// forward and backward of one pre-LN encoder layer (bidirectional attention)

// s->in -> out (s->mid and the saved values written; r->h, r->act, r->tmp are transients)
static void layer_forward(const ClipTextLayer *p, const ClipVisionConfig *c, ClipVisionSaved *s, Tensor *out,
                          ClipVisionRun *r) {
    layernorm_forward(&r->h, &s->ln1_mean, &s->ln1_rstd, &s->in, &p->ln1_w, &p->ln1_b, c->eps);
    mha_forward(&r->tmp, &s->mha, &r->h, NULL, &p->attn, c->heads, 0);
    add_forward(&s->mid, &s->in, &r->tmp);
    layernorm_forward(&r->h, &s->ln2_mean, &s->ln2_rstd, &s->mid, &p->ln2_w, &p->ln2_b, c->eps);
    linear_forward(&s->fc1, &r->h, &p->fc1_w, &p->fc1_b);
    activation_forward(&r->act, &s->fc1, c->act);
    linear_forward(&r->tmp, &r->act, &p->fc2_w, &p->fc2_b);
    add_forward(out, &s->mid, &r->tmp);
}

// r->dres holds d out on entry and d s->in on return. Without g only input gradients are computed, and the layer
// inputs that weight gradients would read (r->h, r->act) are passed for their shapes alone; with g (a ClipVision's
// gradient layer, parameter gradients accumulate) those inputs are recomputed from the saved values first.
static void layer_backward(const ClipTextLayer *p, ClipTextLayer *g, const ClipVisionConfig *c,
                           ClipVisionSaved *s, ClipVisionRun *r) {
    if (g) {
        layernorm_forward(&r->h, &s->ln2_mean, &s->ln2_rstd, &s->mid, &p->ln2_w, &p->ln2_b, c->eps);
        activation_forward(&r->act, &s->fc1, c->act);
    }
    linear_backward(&r->dff, g ? &g->fc2_w : NULL, g ? &g->fc2_b : NULL, &r->dres, &r->act, &p->fc2_w);
    activation_backward(&r->dff2, &r->dff, &s->fc1, c->act);
    linear_backward(&r->dh, g ? &g->fc1_w : NULL, g ? &g->fc1_b : NULL, &r->dff2, &r->h, &p->fc1_w);
    layernorm_backward(&r->dmid, g ? &g->ln2_w : NULL, g ? &g->ln2_b : NULL, &r->dh, &s->mid, &s->ln2_mean,
                       &s->ln2_rstd, &p->ln2_w);
    tensor_axpy(&r->dmid, 1.0f, &r->dres);
    if (g) layernorm_forward(&r->h, &s->ln1_mean, &s->ln1_rstd, &s->in, &p->ln1_w, &p->ln1_b, c->eps);
    mha_backward(&r->dh, NULL, g ? &g->attn : NULL, &r->dmid, &s->mha, &r->h, NULL, &p->attn, c->heads, 0);
    layernorm_backward(&r->dres, g ? &g->ln1_w : NULL, g ? &g->ln1_b : NULL, &r->dh, &s->in, &s->ln1_mean,
                       &s->ln1_rstd, &p->ln1_w);
    tensor_axpy(&r->dres, 1.0f, &r->dmid);
}

// ---------------------------------------------------------------------------------------------------------------
// the tower

void clip_vision_forward(const ClipVision *m, ClipVisionRun *r) {
    const ClipVisionConfig *c = &m->cfg;
    conv2d_forward(&r->patches, &r->pixels, &m->patch_w, NULL, c->patch, 0);
    patch_tokens_forward(&r->x0, &r->patches, &m->class_emb, &m->pos_emb);
    layernorm_forward(&r->saved[0].in, &r->pre_mean, &r->pre_rstd, &r->x0, &m->pre_ln_w, &m->pre_ln_b, c->eps);
    for (int i = 0; i < c->layers; i++)
        layer_forward(&m->layers[i], c, &r->saved[i], i + 1 < c->layers ? &r->saved[i + 1].in : &r->out, r);
    token_select_forward(&r->pooled, &r->out, r->cls_idx);
    layernorm_forward(&r->pooled_ln, &r->post_mean, &r->post_rstd, &r->pooled, &m->post_ln_w, &m->post_ln_b,
                      c->eps);
    linear_forward(&r->features, &r->pooled_ln, &m->proj, NULL);
}

void clip_vision_backward(const ClipVision *m, ClipVisionRun *r, const Tensor *dfeatures, Tensor *dpixels,
                          ClipVision *g) {
    const ClipVisionConfig *c = &m->cfg;
#define G(field) (g ? &g->field : NULL)
    linear_backward(&r->dpooled_ln, G(proj), NULL, dfeatures, &r->pooled_ln, &m->proj);
    layernorm_backward(&r->dpooled, G(post_ln_w), G(post_ln_b), &r->dpooled_ln, &r->pooled, &r->post_mean,
                       &r->post_rstd, &m->post_ln_w);
    token_select_backward(&r->dres, &r->dpooled, r->cls_idx);
    for (int i = c->layers - 1; i >= 0; i--) {
        if (r->checkpoint) layer_forward(&m->layers[i], c, &r->saved[i], &r->out, r); // recompute (out unused now)
        layer_backward(&m->layers[i], G(layers[i]), c, &r->saved[i], r);
    }
    layernorm_backward(&r->dh, G(pre_ln_w), G(pre_ln_b), &r->dres, &r->x0, &r->pre_mean, &r->pre_rstd,
                       &m->pre_ln_w);
    patch_tokens_backward(&r->dpatches, G(class_emb), G(pos_emb), &r->dh);
    conv2d_backward(dpixels, G(patch_w), NULL, &r->dpatches, &r->pixels, &m->patch_w, c->patch, 0);
#undef G
}
