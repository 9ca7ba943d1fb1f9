// gradcheck_preprocess.c: finite-difference checks of the CLIP rewards' preprocessing and token ops (resize.c,
// tokens.c): resize (bilinear / bicubic x antialias, down, up and non-square), crop, the clamped affine map (away
// from its kinks), the mean/std normalisation, patch tokens (patches, class token, positional embedding), token
// selection, row L2 normalisation and the row dot product.
#include <stdio.h>

#include "../src/ops/ops.h"
#include "gradcheck.h"

typedef enum { K_RESIZE, K_CROP, K_CLAMP, K_NORMALIZE, K_TOKENS, K_SELECT, K_L2, K_DOT } Kind;

typedef struct {
    Kind kind;
    Tensor x, dx, y, dy;      // main input and output
    Tensor b, db, c, dc;      // extra inputs (class token / pos, or the second dot operand)
    Tensor norm;              // l2normalize
    ResizeKernel k;
    int aa, top, left;
    int32_t idx[4];
} Ctx;

static const float MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f}, STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

static void fwd(void *p) {
    Ctx *c = p;
    switch (c->kind) {
    case K_RESIZE: resize_forward(&c->y, &c->x, c->k, c->aa); break;
    case K_CROP: crop2d_forward(&c->y, &c->x, c->top, c->left); break;
    case K_CLAMP: clamp_affine_forward(&c->y, &c->x, 0.5f, 0.5f, 0.0f, 1.0f); break;
    case K_NORMALIZE: normalize_forward(&c->y, &c->x, MEAN, STD); break;
    case K_TOKENS: patch_tokens_forward(&c->y, &c->x, &c->b, &c->c); break;
    case K_SELECT: token_select_forward(&c->y, &c->x, c->idx); break;
    case K_L2: l2normalize_forward(&c->y, &c->norm, &c->x); break;
    case K_DOT: rowdot_forward(&c->y, &c->x, &c->b); break;
    }
}

static void bwd(void *p) {
    Ctx *c = p;
    switch (c->kind) {
    case K_RESIZE: resize_backward(&c->dx, &c->dy, c->k, c->aa); break;
    case K_CROP: crop2d_backward(&c->dx, &c->dy, c->top, c->left); break;
    case K_CLAMP: clamp_affine_backward(&c->dx, &c->dy, &c->x, 0.5f, 0.5f, 0.0f, 1.0f); break;
    case K_NORMALIZE: normalize_backward(&c->dx, &c->dy, STD); break;
    case K_TOKENS: patch_tokens_backward(&c->dx, &c->db, &c->dc, &c->dy); break;
    case K_SELECT: token_select_backward(&c->dx, &c->dy, c->idx); break;
    case K_L2: l2normalize_backward(&c->dx, &c->dy, &c->y, &c->norm); break;
    case K_DOT: rowdot_backward(&c->dx, &c->db, &c->dy, &c->x, &c->b); break;
    }
}

static int run(Ctx *c, const char *name) {
    GradCheck g = {.name = name, .ctx = c, .forward = fwd, .backward = bwd};
    g.wrt[0] = &c->x, g.grad[0] = &c->dx, g.n_wrt = 1;
    if (c->kind == K_TOKENS) {
        g.wrt[1] = &c->b, g.grad[1] = &c->db, g.is_param[1] = 1;
        g.wrt[2] = &c->c, g.grad[2] = &c->dc, g.is_param[2] = 1, g.n_wrt = 3;
    }
    if (c->kind == K_DOT) g.wrt[1] = &c->b, g.grad[1] = &c->db, g.n_wrt = 2;
    g.out[0] = &c->y, g.dout[0] = &c->dy, g.n_out = 1;
    return gradcheck_run(&g);
}

static int check_resize(ResizeKernel k, int aa, int64_t H, int64_t W, int64_t OH, int64_t OW) {
    Ctx c = {.kind = K_RESIZE, .k = k, .aa = aa, .x = GC_TENSOR(2, 3, H, W), .dx = GC_TENSOR(2, 3, H, W),
             .y = GC_TENSOR(2, 3, OH, OW), .dy = GC_TENSOR(2, 3, OH, OW)};
    gc_fill_uniform(&c.x, -1, 1, 1);
    char name[96];
    snprintf(name, sizeof name, "resize %s aa%d %lldx%lld->%lldx%lld", resize_kernel_name(k), aa, (long long)H,
             (long long)W, (long long)OH, (long long)OW);
    return run(&c, name);
}

int main(void) {
    int f = 0, n = 0;
    for (int k = 0; k < 2; k++)
        for (int aa = 0; aa < 2; aa++) {
            f += check_resize((ResizeKernel)k, aa, 19, 23, 7, 5), n++;
            f += check_resize((ResizeKernel)k, aa, 4, 6, 9, 13), n++;
        }
    {
        Ctx c = {.kind = K_CROP, .top = 2, .left = 1, .x = GC_TENSOR(2, 3, 7, 6), .dx = GC_TENSOR(2, 3, 7, 6),
                 .y = GC_TENSOR(2, 3, 4, 4), .dy = GC_TENSOR(2, 3, 4, 4)};
        gc_fill_uniform(&c.x, -1, 1, 2);
        f += run(&c, "crop2d"), n++;
    }
    {   // values kept 0.05 away from the kinks at x = -1 and x = 1 (finite differences straddle no kink)
        Ctx c = {.kind = K_CLAMP, .x = GC_TENSOR(2, 3, 5, 5), .dx = GC_TENSOR(2, 3, 5, 5), .y = GC_TENSOR(2, 3, 5, 5),
                 .dy = GC_TENSOR(2, 3, 5, 5)};
        gc_fill_uniform(&c.x, -0.95f, 0.95f, 3);
        float *x = c.x.data;
        for (int i = 0; i < 150; i += 3) x[i] = i % 2 ? 1.2f + 0.001f * i : -1.1f - 0.001f * i; // saturated
        f += run(&c, "clamp_affine"), n++;
    }
    {
        Ctx c = {.kind = K_NORMALIZE, .x = GC_TENSOR(2, 3, 4, 5), .dx = GC_TENSOR(2, 3, 4, 5),
                 .y = GC_TENSOR(2, 3, 4, 5), .dy = GC_TENSOR(2, 3, 4, 5)};
        gc_fill_uniform(&c.x, 0, 1, 4);
        f += run(&c, "normalize"), n++;
    }
    {
        Ctx c = {.kind = K_TOKENS, .x = GC_TENSOR(2, 8, 3, 5), .dx = GC_TENSOR(2, 8, 3, 5), .b = GC_TENSOR(8),
                 .db = GC_TENSOR(8), .c = GC_TENSOR(16, 8), .dc = GC_TENSOR(16, 8), .y = GC_TENSOR(2, 16, 8),
                 .dy = GC_TENSOR(2, 16, 8)};
        gc_fill_uniform(&c.x, -1, 1, 5);
        gc_fill_uniform(&c.b, -1, 1, 6);
        gc_fill_uniform(&c.c, -1, 1, 7);
        f += run(&c, "patch_tokens"), n++;
    }
    {
        Ctx c = {.kind = K_SELECT, .idx = {0, 4, 2}, .x = GC_TENSOR(3, 5, 7), .dx = GC_TENSOR(3, 5, 7),
                 .y = GC_TENSOR(3, 7), .dy = GC_TENSOR(3, 7)};
        gc_fill_uniform(&c.x, -1, 1, 8);
        f += run(&c, "token_select"), n++;
    }
    {
        Ctx c = {.kind = K_L2, .x = GC_TENSOR(3, 24), .dx = GC_TENSOR(3, 24), .y = GC_TENSOR(3, 24),
                 .dy = GC_TENSOR(3, 24), .norm = GC_TENSOR(3)};
        gc_fill_uniform(&c.x, -1, 1, 9);
        f += run(&c, "l2normalize"), n++;
    }
    {
        Ctx c = {.kind = K_DOT, .x = GC_TENSOR(3, 24), .dx = GC_TENSOR(3, 24), .b = GC_TENSOR(3, 24),
                 .db = GC_TENSOR(3, 24), .y = GC_TENSOR(3), .dy = GC_TENSOR(3)};
        gc_fill_uniform(&c.x, -1, 1, 10);
        gc_fill_uniform(&c.b, -1, 1, 11);
        f += run(&c, "rowdot"), n++;
    }
    return gc_report(f, n);
}
