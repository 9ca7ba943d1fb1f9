// clip_text.c: CLIP text transformer (transformers CLIPTextModel / CLIPTextModelWithProjection), config, parameter
// plan under the HF names, and the forward: embeddings, pre-LN causal encoder layers, final layer norm, EOS pooling
// and the optional text projection.
#include "clip_text.h"

#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../io/json.h"
#include "clip_text_train.h"
#include "weights.h"

// ---------------------------------------------------------------------------------------------------------------
// config

static Activation parse_act(const char *path, const char *s) {
    if (!strcmp(s, "quick_gelu")) return ACT_QUICK_GELU;
    if (!strcmp(s, "gelu")) return ACT_GELU;
    if (!strcmp(s, "gelu_new") || !strcmp(s, "gelu_pytorch_tanh")) return ACT_GELU_TANH;
    dt_user_error("'%s': hidden_act '%s' is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)", path, s);
}

static int has_architecture(const JsonDoc *doc, const char *name) {
    if (!json_has(doc, "architectures")) return 0;
    const char *arch[8];
    int n = json_get_string_list(doc, "architectures", arch, 8);
    for (int i = 0; i < n; i++)
        if (!strcmp(arch[i], name)) return 1;
    return 0;
}

// Defaults are transformers' CLIPTextConfig defaults.
void clip_text_config_load(ClipTextConfig *c, const char *path) {
    JsonDoc doc;
    json_load(&doc, path);
    memset(c, 0, sizeof *c);
    c->hidden = json_get_int(&doc, "hidden_size", 512);
    c->ff = json_get_int(&doc, "intermediate_size", 2048);
    c->heads = json_get_int(&doc, "num_attention_heads", 8);
    c->layers = json_get_int(&doc, "num_hidden_layers", 12);
    c->max_pos = json_get_int(&doc, "max_position_embeddings", 77);
    c->vocab = json_get_int(&doc, "vocab_size", 49408);
    c->proj_dim = json_get_int(&doc, "projection_dim", 512);
    c->eos_token_id = json_get_int(&doc, "eos_token_id", 49407);
    c->act = parse_act(path, json_get_string(&doc, "hidden_act", "quick_gelu"));
    c->eps = (float)json_get_number(&doc, "layer_norm_eps", 1e-5);
    c->with_projection = has_architecture(&doc, "CLIPTextModelWithProjection");
    USER_CHECK(c->hidden > 0 && c->ff > 0 && c->heads > 0 && c->layers > 0 && c->max_pos > 0 && c->vocab > 0 &&
                   c->proj_dim > 0,
               "'%s': hidden_size, intermediate_size, num_attention_heads, num_hidden_layers, "
               "max_position_embeddings, vocab_size and projection_dim must be positive",
               path);
    USER_CHECK(c->hidden % c->heads == 0, "'%s': hidden_size %d is not divisible by num_attention_heads %d", path,
               c->hidden, c->heads);
    USER_CHECK(c->layers <= 1024 && c->hidden <= 65536 && c->ff <= 1 << 20 && c->max_pos <= 1 << 16 &&
                   c->vocab <= 1 << 24 && c->proj_dim <= 65536,
               "'%s': a size is implausibly large", path);
    USER_CHECK(c->eps > 0.0f && c->eps < 1.0f, "'%s': layer_norm_eps must be in (0, 1)", path);
    json_free(&doc);
}

const char *clip_text_config_str(const ClipTextConfig *c, char *buf, size_t n) {
    snprintf(buf, n, "%s, %d layers, hidden %d, %d heads (%d), ff %d, %s, %d positions, vocab %d",
             c->with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel", c->layers, c->hidden, c->heads,
             c->hidden / c->heads, c->ff, activation_name(c->act), c->max_pos, c->vocab);
    if (c->with_projection) {
        size_t k = strlen(buf);
        snprintf(buf + k, n - k, ", projection %d", c->proj_dim);
    }
    return buf;
}

// ---------------------------------------------------------------------------------------------------------------
// parameters

static void add_param(Arena *a, Tensor *slot, const char *name, int64_t d0, int64_t d1) {
    int64_t shape[2] = {d0, d1};
    arena_add(a, slot, name, DTYPE_F32, d1 ? 2 : 1, shape);
}

static void plan_layer(Arena *a, ClipTextLayer *l, int i, int64_t C, int64_t FF) {
    char n[128];
#define P(slot, suffix, d0, d1) (snprintf(n, sizeof n, "text_model.encoder.layers.%d.%s", i, suffix), \
                                 add_param(a, slot, n, d0, d1))
    P(&l->attn.wk, "self_attn.k_proj.weight", C, C);
    P(&l->attn.bk, "self_attn.k_proj.bias", C, 0);
    P(&l->attn.wv, "self_attn.v_proj.weight", C, C);
    P(&l->attn.bv, "self_attn.v_proj.bias", C, 0);
    P(&l->attn.wq, "self_attn.q_proj.weight", C, C);
    P(&l->attn.bq, "self_attn.q_proj.bias", C, 0);
    P(&l->attn.wo, "self_attn.out_proj.weight", C, C);
    P(&l->attn.bo, "self_attn.out_proj.bias", C, 0);
    P(&l->ln1_w, "layer_norm1.weight", C, 0);
    P(&l->ln1_b, "layer_norm1.bias", C, 0);
    P(&l->fc1_w, "mlp.fc1.weight", FF, C);
    P(&l->fc1_b, "mlp.fc1.bias", FF, 0);
    P(&l->fc2_w, "mlp.fc2.weight", C, FF);
    P(&l->fc2_b, "mlp.fc2.bias", C, 0);
    P(&l->ln2_w, "layer_norm2.weight", C, 0);
    P(&l->ln2_b, "layer_norm2.bias", C, 0);
#undef P
}

void clip_text_plan(ClipText *m, const ClipTextConfig *c) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->layers = xcalloc((size_t)c->layers, sizeof *m->layers);
    Arena *a = &m->params;
    arena_init(a, "text_encoder", DEVICE_CPU);
    int64_t C = c->hidden;
    add_param(a, &m->token_embedding, "text_model.embeddings.token_embedding.weight", c->vocab, C);
    add_param(a, &m->position_embedding, "text_model.embeddings.position_embedding.weight", c->max_pos, C);
    for (int i = 0; i < c->layers; i++) plan_layer(a, &m->layers[i], i, C, c->ff);
    add_param(a, &m->final_ln_w, "text_model.final_layer_norm.weight", C, 0);
    add_param(a, &m->final_ln_b, "text_model.final_layer_norm.bias", C, 0);
    if (c->with_projection) add_param(a, &m->projection, "text_projection.weight", c->proj_dim, C);
}

const char *const clip_text_weight_renames[][2] = {{"text_model.", ""}, {NULL, NULL}};

void clip_text_load(ClipText *m, const char *dir) {
    char path[4096];
    ClipTextConfig c;
    snprintf(path, sizeof path, "%s/config.json", dir);
    clip_text_config_load(&c, path);
    clip_text_plan(m, &c);
    arena_alloc(&m->params);
    char *file = weights_folder_file(dir);
    weights_load(&m->params, file, clip_text_weight_renames);
    free(file);
}

void clip_text_free(ClipText *m) {
    arena_free(&m->params);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

// ---------------------------------------------------------------------------------------------------------------
// forward

static int hidden_index(int N, int i) { return i < 0 ? N + 1 + i : i; }

void clip_text_run_init(ClipTextRun *r, const ClipText *m, int B, int T, const int *keep, int n_keep,
                        int want_final) {
    const ClipTextConfig *c = &m->cfg;
    CHECK(B > 0 && T > 0 && T <= c->max_pos, "", "clip_text_run_init: %d sequences of %d tokens (at most %d)", B, T,
          c->max_pos);
    memset(r, 0, sizeof *r);
    r->B = B, r->T = T, r->n_layers = c->layers, r->want_final = want_final;
    r->n_run = want_final ? c->layers : 0;
    r->hidden = xcalloc((size_t)c->layers + 1, sizeof *r->hidden);
    Arena *a = &r->mem;
    arena_init(a, "text_acts", DEVICE_CPU);
    int64_t C = c->hidden, BT = (int64_t)B * T;
    int64_t tok[3] = {B, T, C}, ff[3] = {B, T, c->ff}, rows[1] = {BT}, lse[3] = {B, c->heads, T};
    char name[64];
    for (int k = 0; k < n_keep; k++) {
        int i = hidden_index(c->layers, keep[k]);
        CHECK(i >= 0 && i <= c->layers, "", "clip_text_run_init: hidden state %d of %d layers", keep[k], c->layers);
        if (r->hidden[i].ndim) continue;
        snprintf(name, sizeof name, "hidden_states.%d", i);
        arena_add(a, &r->hidden[i], name, DTYPE_F32, 3, tok);
        if (i > r->n_run) r->n_run = i;
    }
    arena_add(a, &r->ids, "ids", DTYPE_I32, 2, (int64_t[]){B, T});
    arena_add(a, &r->x, "x", DTYPE_F32, 3, tok);
    ClipTextLayerActs *l = &r->layer;
    arena_add(a, &l->h1, "h1", DTYPE_F32, 3, tok);
    arena_add(a, &l->ln1_mean, "ln1.mean", DTYPE_F32, 1, rows);
    arena_add(a, &l->ln1_rstd, "ln1.rstd", DTYPE_F32, 1, rows);
    arena_add(a, &l->mha.q, "attn.q", DTYPE_F32, 3, tok);
    arena_add(a, &l->mha.k, "attn.k", DTYPE_F32, 3, tok);
    arena_add(a, &l->mha.v, "attn.v", DTYPE_F32, 3, tok);
    arena_add(a, &l->mha.attn, "attn.heads", DTYPE_F32, 3, tok);
    arena_add(a, &l->mha.lse, "attn.lse", DTYPE_F32, 3, lse);
    arena_add(a, &l->attn_out, "attn.out", DTYPE_F32, 3, tok);
    arena_add(a, &l->h2, "h2", DTYPE_F32, 3, tok);
    arena_add(a, &l->ln2_mean, "ln2.mean", DTYPE_F32, 1, rows);
    arena_add(a, &l->ln2_rstd, "ln2.rstd", DTYPE_F32, 1, rows);
    arena_add(a, &l->fc1, "mlp.fc1", DTYPE_F32, 3, ff);
    arena_add(a, &l->act, "mlp.act", DTYPE_F32, 3, ff);
    arena_add(a, &l->mlp_out, "mlp.out", DTYPE_F32, 3, tok);
    if (want_final) {
        arena_add(a, &r->final_mean, "final.mean", DTYPE_F32, 1, rows);
        arena_add(a, &r->final_rstd, "final.rstd", DTYPE_F32, 1, rows);
        arena_add(a, &r->last, "last_hidden_state", DTYPE_F32, 3, tok);
        arena_add(a, &r->pooled, "pooled", DTYPE_F32, 2, (int64_t[]){B, C});
        if (c->with_projection)
            arena_add(a, &r->projected, "projected", DTYPE_F32, 2, (int64_t[]){B, c->proj_dim});
    }
    arena_alloc(a);
    r->eos = xcalloc((size_t)B, sizeof *r->eos);
}

void clip_text_run_free(ClipTextRun *r) {
    arena_free(&r->mem);
    free(r->hidden);
    free(r->eos);
    memset(r, 0, sizeof *r);
}

const Tensor *clip_text_hidden(const ClipTextRun *r, int i) {
    int k = hidden_index(r->n_layers, i);
    CHECK(k >= 0 && k <= r->n_layers && r->hidden[k].data, "list the index in clip_text_run_init's keep",
          "clip_text_hidden: hidden state %d was not kept", i);
    return &r->hidden[k];
}

int clip_text_eos_index(const ClipTextConfig *c, const int32_t *ids, int T) {
    int best = 0;
    if (c->eos_token_id == 2) {
        for (int t = 1; t < T; t++)
            if (ids[t] > ids[best]) best = t;
        return best;
    }
    for (int t = 0; t < T; t++)
        if (ids[t] == c->eos_token_id) return t;
    return 0;
}

void clip_text_embed(const ClipText *m, Tensor *x, Tensor *ids_t, const int32_t *ids) {
    const ClipTextConfig *c = &m->cfg;
    int64_t B = ids_t->shape[0], T = ids_t->shape[1], C = c->hidden;
    for (int64_t n = 0; n < B * T; n++)
        USER_CHECK(ids[n] >= 0 && ids[n] < c->vocab, "token id %d at position %lld is outside the vocabulary of %d",
                   (int)ids[n], (long long)n, c->vocab);
    memcpy(ids_t->data, ids, sizeof(int32_t) * (size_t)(B * T));
    embedding_forward(x, ids_t, &m->token_embedding);
    Tensor pos = tensor_f32_2d(tensor_f32(&m->position_embedding), T, C);
    for (int64_t b = 0; b < B; b++) {
        Tensor xb = tensor_f32_2d(tensor_f32(x) + b * T * C, T, C);
        add_forward(&xb, &xb, &pos);
    }
}

void clip_text_layer_forward(const ClipTextLayer *p, const ClipTextConfig *c, const Tensor *in, Tensor *mid,
                             Tensor *out, ClipTextLayerActs *a) {
    layernorm_forward(&a->h1, &a->ln1_mean, &a->ln1_rstd, in, &p->ln1_w, &p->ln1_b, c->eps);
    mha_forward(&a->attn_out, &a->mha, &a->h1, NULL, &p->attn, c->heads, 1);
    add_forward(mid, in, &a->attn_out);
    layernorm_forward(&a->h2, &a->ln2_mean, &a->ln2_rstd, mid, &p->ln2_w, &p->ln2_b, c->eps);
    linear_forward(&a->fc1, &a->h2, &p->fc1_w, &p->fc1_b);
    activation_forward(&a->act, &a->fc1, c->act);
    linear_forward(&a->mlp_out, &a->act, &p->fc2_w, &p->fc2_b);
    add_forward(out, mid, &a->mlp_out);
}

static void keep_hidden(ClipTextRun *r, int i) {
    if (r->hidden[i].data) memcpy(r->hidden[i].data, r->x.data, tensor_bytes(&r->x));
}

void clip_text_forward(const ClipText *m, ClipTextRun *r, const int32_t *ids) {
    const ClipTextConfig *c = &m->cfg;
    int64_t C = c->hidden;
    clip_text_embed(m, &r->x, &r->ids, ids);
    keep_hidden(r, 0);
    for (int i = 0; i < r->n_run; i++) { // in place: x is the layer's input, midpoint and output
        clip_text_layer_forward(&m->layers[i], c, &r->x, &r->x, &r->x, &r->layer);
        keep_hidden(r, i + 1);
    }
    if (!r->want_final) return;
    layernorm_forward(&r->last, &r->final_mean, &r->final_rstd, &r->x, &m->final_ln_w, &m->final_ln_b, c->eps);
    const float *last = tensor_f32(&r->last);
    float *pooled = tensor_f32(&r->pooled);
    for (int b = 0; b < r->B; b++) {
        r->eos[b] = clip_text_eos_index(c, ids + (int64_t)b * r->T, r->T);
        memcpy(pooled + b * C, last + ((int64_t)b * r->T + r->eos[b]) * C, sizeof(float) * (size_t)C);
    }
    if (c->with_projection) linear_forward(&r->projected, &r->pooled, &m->projection, NULL);
}
