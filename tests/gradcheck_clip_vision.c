// gradcheck_clip_vision.c: finite-difference checks of the CLIP vision tower's backward (src/models/clip_vision.c):
// the input-image gradient, and the parameter gradients used to train a small CLIP (patch convolution, class
// token, positional embedding, attention, MLP and layer-norm parameters of both layers, ln_post, the projection), with
// exact GELU and with QuickGELU, with and without layer recompute.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/models/clip_vision.h"
#include "gradcheck.h"

typedef struct {
    ClipVision m, g;
    ClipVisionRun r;
    Tensor feat, dfeat, dpix;
} Ctx;

static void fwd(void *p) {
    Ctx *c = p;
    clip_vision_forward(&c->m, &c->r);
    memcpy(c->feat.data, c->r.features.data, tensor_bytes(&c->feat));
}

static void bwd(void *p) {
    Ctx *c = p;
    clip_vision_backward(&c->m, &c->r, &c->dfeat, &c->dpix, &c->g);
}

static int check(Activation act, int checkpoint) {
    ClipVisionConfig cfg = {.width = 16, .layers = 2, .heads = 2, .ff = 32, .patch = 4, .image_size = 12,
                            .proj_dim = 8, .act = act, .eps = 1e-5f};
    Ctx c;
    clip_vision_plan(&c.m, &cfg);
    arena_alloc(&c.m.params);
    clip_vision_plan(&c.g, &cfg);
    arena_alloc(&c.g.params);
    for (int i = 0; i < c.m.params.n; i++) {
        Tensor *t = &c.m.params.entries[i].desc;
        int64_t fan = t->ndim >= 2 ? tensor_numel(t) / t->shape[0] : 1;
        gc_fill_normal(t, t->ndim >= 2 ? 1.0f / sqrtf((float)fan) : 0.3f, 40 + (uint64_t)i);
        if (strstr(c.m.params.entries[i].name, "norm") && strstr(c.m.params.entries[i].name, "weight"))
            gc_fill_uniform(t, 0.8f, 1.2f, 90 + (uint64_t)i);
    }
    clip_vision_run_init(&c.r, &c.m, 2, checkpoint);
    gc_fill_uniform(&c.r.pixels, -2, 2, 7);
    c.feat = GC_TENSOR(2, 8), c.dfeat = GC_TENSOR(2, 8), c.dpix = GC_TENSOR(2, 3, 12, 12);
    char name[96];
    snprintf(name, sizeof name, "clip_vision %s%s", activation_name(act), checkpoint ? " ckpt" : "");
    // Two pre-LN layers, ln_post and a projection accumulate float32 rounding of about 1e-6 of the features (the
    // level measured against torch in reward_clip), far above the harness's one-ulp noise estimate: differences
    // with h = 4e-2 (Richardson-extrapolated, truncation O(h^4)) and rtol 1e-3 sit above that floor (measured worst:
    // 2.9e-5 against max 4.3e-2 for the image gradient); a missing or wrong term shows as an O(1) relative error.
    GradCheck g = {.name = name, .ctx = &c, .forward = fwd, .backward = bwd, .n_out = 1, .max_elems = 96, .h = 4e-2,
                   .rtol = 1e-3};
    g.out[0] = &c.feat, g.dout[0] = &c.dfeat;
    g.wrt[0] = &c.r.pixels, g.grad[0] = &c.dpix;
    const char *params[] = {"vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.class_embedding",
                            "vision_model.embeddings.position_embedding.weight",
                            "vision_model.encoder.layers.0.self_attn.q_proj.weight",
                            "vision_model.encoder.layers.0.self_attn.out_proj.bias",
                            "vision_model.encoder.layers.0.self_attn.v_proj.bias",
                            "vision_model.encoder.layers.1.mlp.fc1.weight",
                            "vision_model.encoder.layers.1.layer_norm2.weight",
                            "vision_model.post_layernorm.bias", "visual_projection.weight"};
    g.n_wrt = 1 + (int)(sizeof params / sizeof params[0]);
    CHECK(g.n_wrt <= GC_MAX, "", "%d checked tensors", g.n_wrt);
    Tensor pw[GC_MAX], pg[GC_MAX];
    for (int k = 0; k < g.n_wrt - 1; k++) {
        pw[k] = arena_get(&c.m.params, params[k]), pg[k] = arena_get(&c.g.params, params[k]);
        g.wrt[k + 1] = &pw[k], g.grad[k + 1] = &pg[k], g.is_param[k + 1] = 1;
    }
    int f = gradcheck_run(&g);
    clip_vision_run_free(&c.r);
    clip_vision_free(&c.m);
    clip_vision_free(&c.g);
    return f;
}

int main(void) {
    int f = 0;
    f += check(ACT_GELU, 0);
    f += check(ACT_QUICK_GELU, 1);
    return gc_report(f, 2);
}
