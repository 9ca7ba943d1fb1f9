// gradcheck_guidance.c: the classifier-free-guidance op: finite differences of the combine (guided and not), the
// backward's scale applied exactly, and the forward's fp32 formula eps_u + w (eps_c - eps_u) bit for bit.
#include <math.h>
#include <stdio.h>

#include "../src/ops/ops.h"
#include "gradcheck.h"

typedef struct {
    Tensor rows, drows, eps, deps;
    float w;
} CfgCtx;
static void cfg_fwd(void *p) {
    CfgCtx *c = p;
    cfg_combine_forward(&c->eps, &c->rows, c->w);
}
static void cfg_bwd(void *p) {
    CfgCtx *c = p;
    cfg_combine_backward(&c->drows, &c->deps, c->w, 1.0);
}

static int check(const char *name, int guided, int *checks) {
    const int64_t B = 2, C = 3, H = 5, W = 7;
    CfgCtx c = {.rows = GC_TENSOR(guided ? 2 * B : B, C, H, W), .drows = GC_TENSOR(guided ? 2 * B : B, C, H, W),
                .eps = GC_TENSOR(B, C, H, W), .deps = GC_TENSOR(B, C, H, W), .w = 5.0f};
    gc_fill_normal(&c.rows, 1.0f, 11);
    cfg_fwd(&c);
    int64_t n = B * C * H * W;
    const float *r = c.rows.data, *e = c.eps.data;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += e[i] != (guided ? r[i] + c.w * (r[n + i] - r[i]) : r[i]);
    (*checks)++;
    printf("%s %-24s forward formula, %d elements differ\n", bad ? "FAIL" : "ok  ", name, bad);
    int f = bad != 0;
    gc_fill_normal(&c.deps, 1.0f, 12);
    cfg_combine_backward(&c.drows, &c.deps, c.w, 0.375);
    const float *d = c.deps.data, *dr = c.drows.data;
    bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += guided ? dr[i] != (float)((1.0 - c.w) * 0.375 * d[i]) || dr[n + i] != (float)(c.w * 0.375 * d[i])
                      : dr[i] != (float)(0.375 * d[i]);
    (*checks)++;
    printf("%s %-24s backward scale, %d elements differ\n", bad ? "FAIL" : "ok  ", name, bad);
    f += bad != 0;
    GradCheck g = {.name = name, .ctx = &c, .forward = cfg_fwd, .backward = cfg_bwd, .n_wrt = 1, .n_out = 1};
    g.wrt[0] = &c.rows, g.grad[0] = &c.drows, g.out[0] = &c.eps, g.dout[0] = &c.deps;
    (*checks)++;
    return f + gradcheck_run(&g);
}

int main(void) {
    int checks = 0, f = 0;
    f += check("cfg_combine guided", 1, &checks);
    f += check("cfg_combine one branch", 0, &checks);
    return gc_report(f, checks);
}
