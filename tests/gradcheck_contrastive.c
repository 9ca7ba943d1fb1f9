// gradcheck_contrastive.c: finite-difference check of the small CLIP's contrastive loss (clip_contrastive_loss in
// src/train/pretrain_clip.c): the gradients of the image features, the text features and the logit scale, with
// distinct captions and with repeated captions (pairs left out of the softmaxes).
#include <stdio.h>
#include <string.h>

#include "../src/train/pretrain_clip.h"
#include "gradcheck.h"

enum { B = 6, E = 8 };

typedef struct {
    Tensor fi, ft, ls, loss, dfi, dft, dls, dloss;
    const char *const *captions;
} Ctx;

static void fwd(void *p) {
    Ctx *c = p;
    float dfi[B * E], dft[B * E], dls;
    tensor_f32(&c->loss)[0] = (float)clip_contrastive_loss(tensor_f32(&c->fi), tensor_f32(&c->ft), B, E,
                                                           tensor_f32(&c->ls)[0], c->captions, dfi, dft, &dls, NULL);
}

static void bwd(void *p) {
    Ctx *c = p;
    float *dfi = tensor_f32(&c->dfi), *dft = tensor_f32(&c->dft), r = tensor_f32(&c->dloss)[0];
    clip_contrastive_loss(tensor_f32(&c->fi), tensor_f32(&c->ft), B, E, tensor_f32(&c->ls)[0], c->captions, dfi, dft,
                          tensor_f32(&c->dls), NULL);
    for (int i = 0; i < B * E; i++) dfi[i] *= r, dft[i] *= r;
    tensor_f32(&c->dls)[0] *= r;
}

static int check(const char *name, const char *const *captions) {
    Ctx c = {.fi = GC_TENSOR(B, E), .ft = GC_TENSOR(B, E), .ls = GC_TENSOR(1), .loss = GC_TENSOR(1),
             .dfi = GC_TENSOR(B, E), .dft = GC_TENSOR(B, E), .dls = GC_TENSOR(1), .dloss = GC_TENSOR(1),
             .captions = captions};
    gc_fill_normal(&c.fi, 0.4f, 11);
    gc_fill_normal(&c.ft, 0.4f, 12);
    tensor_f32(&c.ls)[0] = 1.2f;
    // The loss is computed in double and rounded once to fp32 (relative 6e-8 of a value about 2): with h = 1e-2
    // (Richardson, truncation O(h^4)) the harness's default rtol 2e-4 holds with room; a wrong or missing term
    // (a softmax direction, the duplicate mask, the scale's chain rule) is an O(1) error.
    GradCheck g = {.name = name, .ctx = &c, .forward = fwd, .backward = bwd, .n_wrt = 3, .n_out = 1};
    g.wrt[0] = &c.fi, g.grad[0] = &c.dfi;
    g.wrt[1] = &c.ft, g.grad[1] = &c.dft;
    g.wrt[2] = &c.ls, g.grad[2] = &c.dls;
    g.out[0] = &c.loss, g.dout[0] = &c.dloss;
    return gradcheck_run(&g);
}

int main(void) {
    static const char *const repeated[B] = {"a red circle", "a blue square", "a red circle", "two green triangles",
                                            "a blue square", "a red circle"};
    int f = 0;
    f += check("contrastive loss, distinct captions", NULL);
    f += check("contrastive loss, repeated captions", repeated);
    return gc_report(f, 2);
}
