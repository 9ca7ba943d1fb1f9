// gradcheck_linear.c: finite-difference check of linear_forward / linear_backward (with and without bias,
// and with leading batch dims).
#include "../src/ops/ops.h"
#include "gradcheck.h"

typedef struct {
    Tensor x, w, b, y, dx, dw, db, dy;
    int bias;
} Ctx;

static void fwd(void *p) {
    Ctx *c = p;
    linear_forward(&c->y, &c->x, &c->w, c->bias ? &c->b : NULL);
}
static void bwd(void *p) {
    Ctx *c = p;
    linear_backward(&c->dx, &c->dw, c->bias ? &c->db : NULL, &c->dy, &c->x, &c->w);
}

static int check(int bias, int64_t B, int64_t T, int64_t IC, int64_t OC) {
    Ctx c = {.bias = bias};
    c.x = GC_TENSOR(B, T, IC), c.dx = GC_TENSOR(B, T, IC);
    c.w = GC_TENSOR(OC, IC), c.dw = GC_TENSOR(OC, IC);
    c.b = GC_TENSOR(OC), c.db = GC_TENSOR(OC);
    c.y = GC_TENSOR(B, T, OC), c.dy = GC_TENSOR(B, T, OC);
    gc_fill_uniform(&c.x, -1, 1, 1);
    gc_fill_uniform(&c.w, -0.5f, 0.5f, 2);
    gc_fill_uniform(&c.b, -0.5f, 0.5f, 3);
    GradCheck g = {.name = bias ? "linear(bias)" : "linear(no bias)", .ctx = &c, .forward = fwd, .backward = bwd};
    g.wrt[0] = &c.x, g.grad[0] = &c.dx;
    g.wrt[1] = &c.w, g.grad[1] = &c.dw, g.is_param[1] = 1;
    g.n_wrt = 2;
    if (bias) g.wrt[2] = &c.b, g.grad[2] = &c.db, g.is_param[2] = 1, g.n_wrt = 3;
    g.out[0] = &c.y, g.dout[0] = &c.dy, g.n_out = 1;
    return gradcheck_run(&g);
}

int main(void) {
    int f = 0;
    f += check(1, 3, 5, 7, 11);
    f += check(0, 2, 3, 13, 5);
    return gc_report(f, 2);
}
