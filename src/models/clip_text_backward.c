// clip_text_backward.c: the trainable CLIP text encoder of clip_text_train.h: a forward that keeps each layer's
// activations (clip_text_forward shares one set between layers) and its backward through the final layer norm, the
// pre-LN causal encoder layers and the token and position embeddings.
#include "clip_text_train.h"

#include <stdio.h>
#include <string.h>

#include "../core/common.h"

void clip_text_train_init(ClipTextTrainActs *r, const ClipText *m, int B, int T) {
    const ClipTextConfig *c = &m->cfg;
    CHECK(B > 0 && T > 0 && T <= c->max_pos, "", "clip_text_train_init: %d sequences of %d tokens (at most %d)", B, T,
          c->max_pos);
    memset(r, 0, sizeof *r);
    r->B = B, r->T = T, r->n_layers = c->layers;
    int N = c->layers;
    r->res = xcalloc((size_t)N + 1, sizeof *r->res);
    r->mid = xcalloc((size_t)N, sizeof *r->mid);
    r->layer = xcalloc((size_t)N, sizeof *r->layer);
    Arena *a = &r->mem;
    arena_init(a, "text_train_acts", DEVICE_CPU);
    int64_t tok[3] = {B, T, c->hidden}, ff[3] = {B, T, c->ff}, rows[1] = {(int64_t)B * T};
    int64_t lse[3] = {B, c->heads, T};
    char n[96];
#define ADD(slot, dt, shape, ...) (snprintf(n, sizeof n, __VA_ARGS__), arena_add(a, (slot), n, (dt), \
                                   (int)(sizeof shape / sizeof shape[0]), shape))
    ADD(&r->ids, DTYPE_I32, ((int64_t[]){B, T}), "ids");
    for (int i = 0; i <= N; i++) ADD(&r->res[i], DTYPE_F32, tok, "res.%d", i);
    for (int i = 0; i < N; i++) {
        ClipTextLayerActs *l = &r->layer[i];
        ADD(&r->mid[i], DTYPE_F32, tok, "mid.%d", i);
        ADD(&l->h1, DTYPE_F32, tok, "layers.%d.h1", i);
        ADD(&l->ln1_mean, DTYPE_F32, rows, "layers.%d.ln1.mean", i);
        ADD(&l->ln1_rstd, DTYPE_F32, rows, "layers.%d.ln1.rstd", i);
        ADD(&l->mha.q, DTYPE_F32, tok, "layers.%d.attn.q", i);
        ADD(&l->mha.k, DTYPE_F32, tok, "layers.%d.attn.k", i);
        ADD(&l->mha.v, DTYPE_F32, tok, "layers.%d.attn.v", i);
        ADD(&l->mha.attn, DTYPE_F32, tok, "layers.%d.attn.heads", i);
        ADD(&l->mha.lse, DTYPE_F32, lse, "layers.%d.attn.lse", i);
        ADD(&l->attn_out, DTYPE_F32, tok, "layers.%d.attn.out", i);
        ADD(&l->h2, DTYPE_F32, tok, "layers.%d.h2", i);
        ADD(&l->ln2_mean, DTYPE_F32, rows, "layers.%d.ln2.mean", i);
        ADD(&l->ln2_rstd, DTYPE_F32, rows, "layers.%d.ln2.rstd", i);
        ADD(&l->fc1, DTYPE_F32, ff, "layers.%d.mlp.fc1", i);
        ADD(&l->act, DTYPE_F32, ff, "layers.%d.mlp.act", i);
        ADD(&l->mlp_out, DTYPE_F32, tok, "layers.%d.mlp.out", i);
    }
    ADD(&r->final_mean, DTYPE_F32, rows, "final.mean");
    ADD(&r->final_rstd, DTYPE_F32, rows, "final.rstd");
    ADD(&r->last, DTYPE_F32, tok, "last_hidden_state");
    ADD(&r->dres, DTYPE_F32, tok, "grad.res");
    ADD(&r->dmid, DTYPE_F32, tok, "grad.mid");
    ADD(&r->dtok, DTYPE_F32, tok, "grad.tokens");
    ADD(&r->dff, DTYPE_F32, ff, "grad.ff");
#undef ADD
    arena_alloc(a);
}

void clip_text_train_free(ClipTextTrainActs *r) {
    arena_free(&r->mem);
    free(r->res);
    free(r->mid);
    free(r->layer);
    memset(r, 0, sizeof *r);
}

void clip_text_train_forward(const ClipText *m, ClipTextTrainActs *r, const int32_t *ids) {
    const ClipTextConfig *c = &m->cfg;
    clip_text_embed(m, &r->res[0], &r->ids, ids);
    for (int i = 0; i < r->n_layers; i++)
        clip_text_layer_forward(&m->layers[i], c, &r->res[i], &r->mid[i], &r->res[i + 1], &r->layer[i]);
    layernorm_forward(&r->last, &r->final_mean, &r->final_rstd, &r->res[r->n_layers], &m->final_ln_w, &m->final_ln_b,
                      c->eps);
}

void clip_text_backward(const ClipText *m, ClipText *g, ClipTextTrainActs *r, const Tensor *dlast) {
    const ClipTextConfig *c = &m->cfg;
    int64_t T = r->T, C = c->hidden;
    tensor_expect_shape(dlast, "text encoder output gradient", r->B, T, C);
    // dres: gradient of the residual stream at the current layer boundary
    layernorm_backward(&r->dres, &g->final_ln_w, &g->final_ln_b, dlast, &r->res[r->n_layers], &r->final_mean,
                       &r->final_rstd, &m->final_ln_w);
    for (int i = r->n_layers - 1; i >= 0; i--) {
        const ClipTextLayer *p = &m->layers[i];
        ClipTextLayer *q = &g->layers[i];
        ClipTextLayerActs *l = &r->layer[i];
        // res[i+1] = mid + fc2(act(fc1(layer_norm2(mid))))
        linear_backward(&r->dff, &q->fc2_w, &q->fc2_b, &r->dres, &l->act, &p->fc2_w);
        activation_backward(&r->dff, &r->dff, &l->fc1, c->act);
        linear_backward(&r->dtok, &q->fc1_w, &q->fc1_b, &r->dff, &l->h2, &p->fc1_w);
        layernorm_backward(&r->dmid, &q->ln2_w, &q->ln2_b, &r->dtok, &r->mid[i], &l->ln2_mean, &l->ln2_rstd,
                           &p->ln2_w);
        tensor_axpy(&r->dmid, 1.0f, &r->dres);
        // mid = res[i] + out_proj(causal_attn(layer_norm1(res[i])))
        mha_backward(&r->dtok, NULL, &q->attn, &r->dmid, &l->mha, &l->h1, NULL, &p->attn, c->heads, 1);
        layernorm_backward(&r->dres, &q->ln1_w, &q->ln1_b, &r->dtok, &r->res[i], &l->ln1_mean, &l->ln1_rstd,
                           &p->ln1_w);
        tensor_axpy(&r->dres, 1.0f, &r->dmid);
    }
    embedding_backward(&g->token_embedding, &r->dres, &r->ids);
    Tensor dpos = tensor_f32_2d(tensor_f32(&g->position_embedding), T, C);
    for (int b = 0; b < r->B; b++) {
        Tensor db = tensor_f32_2d(tensor_f32(&r->dres) + b * T * C, T, C);
        tensor_axpy(&dpos, 1.0f, &db);
    }
}
