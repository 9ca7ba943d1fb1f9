// gradcheck_norm.c: finite-difference checks of groupnorm, groupnorm followed by an activation (groupnorm_act) and
// layernorm (input, gamma, beta), forward and backward checks against a naive double-precision reference (also at
// sizes that take the parallel paths), groupnorm_act against groupnorm and the activation op composed, the
// skipped-gradient (NULL / no data) paths of the backward, and groupnorm_act over a channel concatenation [a | b] read
// in place (finite differences, and against the op on the concatenated copy, with groups inside either part and
// straddling the two).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/ops/ops.h"
#include "gradcheck.h"

typedef struct {
    Tensor x, y, dx, dy;          // [B, C, *] (groupnorm) or [..., C] (layernorm)
    Tensor mean, rstd;            // [B, groups] or [rows]
    Tensor gamma, beta, dgamma, dbeta; // [C]
    int groups;                   // 0: layernorm
    int fused;                    // groupnorm_act with activation act
    Activation act;
    float eps;
    int64_t C, S;                 // channels and elements per channel run (S = 1 for layernorm)
    int64_t nseg, seg;            // normalised segments and their length
} Ctx;

static void fwd(void *p) {
    Ctx *c = p;
    if (c->fused)
        groupnorm_act_forward(&c->y, &c->mean, &c->rstd, &c->x, &c->gamma, &c->beta, c->groups, c->eps, c->act);
    else if (c->groups)
        groupnorm_forward(&c->y, &c->mean, &c->rstd, &c->x, &c->gamma, &c->beta, c->groups, c->eps);
    else
        layernorm_forward(&c->y, &c->mean, &c->rstd, &c->x, &c->gamma, &c->beta, c->eps);
}

static void bwd_with(Ctx *c, Tensor *dx, Tensor *dgamma, Tensor *dbeta) {
    if (c->fused)
        groupnorm_act_backward(dx, dgamma, dbeta, &c->dy, &c->x, &c->mean, &c->rstd, &c->gamma, &c->beta, c->groups,
                               c->act);
    else if (c->groups)
        groupnorm_backward(dx, dgamma, dbeta, &c->dy, &c->x, &c->mean, &c->rstd, &c->gamma, c->groups);
    else
        layernorm_backward(dx, dgamma, dbeta, &c->dy, &c->x, &c->mean, &c->rstd, &c->gamma);
}

static void bwd(void *p) {
    Ctx *c = p;
    bwd_with(c, &c->dx, &c->dgamma, &c->dbeta);
}

// groups > 0: groupnorm on shape [B, C, *]; groups == 0: layernorm on shape [..., C]
static Ctx make(int ndim, const int64_t *shape, int groups, float eps) {
    Ctx c = {.groups = groups, .eps = eps};
    c.x = gc_tensor(ndim, shape), c.y = gc_tensor(ndim, shape);
    c.dx = gc_tensor(ndim, shape), c.dy = gc_tensor(ndim, shape);
    int64_t n = tensor_numel(&c.x);
    if (groups) {
        c.C = shape[1], c.S = n / (shape[0] * shape[1]);
        c.mean = GC_TENSOR(shape[0], groups), c.rstd = GC_TENSOR(shape[0], groups);
    } else {
        c.C = shape[ndim - 1], c.S = 1;
        c.mean = gc_tensor(ndim - 1, shape), c.rstd = gc_tensor(ndim - 1, shape);
    }
    c.nseg = tensor_numel(&c.mean), c.seg = n / c.nseg;
    c.gamma = GC_TENSOR(c.C), c.beta = GC_TENSOR(c.C);
    c.dgamma = GC_TENSOR(c.C), c.dbeta = GC_TENSOR(c.C);
    gc_fill_uniform(&c.x, -1.0f, 3.0f, 1); // non-zero mean, so a mean bug cannot hide
    gc_fill_uniform(&c.gamma, 0.5f, 1.5f, 2);
    gc_fill_uniform(&c.beta, -0.5f, 0.5f, 3);
    gc_fill_uniform(&c.dy, -1.0f, 1.0f, 4);
    return c;
}

static int64_t channel_of(const Ctx *c, int64_t i) { return (i / c->S) % c->C; }

// max|a - ref| / max|ref|
static double rel_err(const float *a, const double *ref, int64_t n) {
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - ref[i]));
        m = fmax(m, fabs(ref[i]));
    }
    return e / m;
}

static int report(const char *what, const char *name, int nerr, const char **labels, const double *errs, double tol) {
    int ok = 1;
    for (int k = 0; k < nerr; k++) ok &= errs[k] <= tol;
    printf("%s %-28s %s:", ok ? "ok  " : "FAIL", name, what);
    for (int k = 0; k < nerr; k++) printf(" %s %.2e", labels[k], errs[k]);
    printf(" (tol %.0e)\n", tol);
    return !ok;
}

// Forward and backward against the definitions evaluated naively in double: segment mean, biased variance,
// y = (x - mean) / sqrt(var + eps) gamma + beta; dx = rstd (dyhat - mean(dyhat) - xhat mean(dyhat xhat)),
// dgamma = sum dy xhat, dbeta = sum dy.
static int check_reference(Ctx *c, const char *name) {
    int64_t n = tensor_numel(&c->x);
    const float *x = tensor_f32(&c->x), *ga = tensor_f32(&c->gamma), *be = tensor_f32(&c->beta);
    const float *dy = tensor_f32(&c->dy);
    double *y = calloc((size_t)n, sizeof(double)), *dx = calloc((size_t)n, sizeof(double));
    double *mean = calloc((size_t)c->nseg, sizeof(double)), *rstd = calloc((size_t)c->nseg, sizeof(double));
    double *dg = calloc((size_t)c->C, sizeof(double)), *db = calloc((size_t)c->C, sizeof(double));
    for (int64_t k = 0; k < c->nseg; k++) {
        const float *xs = x + k * c->seg;
        double s = 0.0, v = 0.0;
        for (int64_t i = 0; i < c->seg; i++) s += xs[i];
        double m = s / (double)c->seg;
        for (int64_t i = 0; i < c->seg; i++) v += (xs[i] - m) * (xs[i] - m);
        double var = v / (double)c->seg, r = 1.0 / sqrt(var + (double)c->eps);
        mean[k] = m, rstd[k] = r;
        double mdy = 0.0, mdyx = 0.0;
        for (int64_t i = 0; i < c->seg; i++) {
            int64_t gi = k * c->seg + i, ch = channel_of(c, gi);
            double xh = (xs[i] - m) * r;
            y[gi] = xh * ga[ch] + be[ch];
            mdy += (double)dy[gi] * ga[ch] / (double)c->seg;
            mdyx += (double)dy[gi] * ga[ch] * xh / (double)c->seg;
            dg[ch] += dy[gi] * xh;
            db[ch] += dy[gi];
        }
        for (int64_t i = 0; i < c->seg; i++) {
            int64_t gi = k * c->seg + i, ch = channel_of(c, gi);
            double xh = (xs[i] - m) * r;
            dx[gi] = r * ((double)dy[gi] * ga[ch] - mdy - xh * mdyx);
        }
    }
    fwd(c);
    tensor_fill(&c->dgamma, 0.0f);
    tensor_fill(&c->dbeta, 0.0f);
    bwd(c);
    const char *fl[] = {"y", "mean", "rstd"}, *bl[] = {"dx", "dgamma", "dbeta"};
    double fe[] = {rel_err(tensor_f32(&c->y), y, n), rel_err(tensor_f32(&c->mean), mean, c->nseg),
                   rel_err(tensor_f32(&c->rstd), rstd, c->nseg)};
    double bk[] = {rel_err(tensor_f32(&c->dx), dx, n), rel_err(tensor_f32(&c->dgamma), dg, c->C),
                    rel_err(tensor_f32(&c->dbeta), db, c->C)};
    int f = report("forward vs double", name, 3, fl, fe, 1e-5);
    f += report("backward vs double", name, 3, bl, bk, 1e-5);
    gc_free(y), gc_free(dx), gc_free(mean), gc_free(rstd), gc_free(dg), gc_free(db);
    return f;
}

static int same(const Tensor *a, const float *b) {
    return memcmp(a->data, b, sizeof(float) * (size_t)tensor_numel(a)) == 0;
}

// Each gradient alone (the others NULL or without data) equals its value from the full backward, bit for bit.
static int check_partial(Ctx *c, const char *name) {
    fwd(c);
    tensor_fill(&c->dgamma, 0.0f);
    tensor_fill(&c->dbeta, 0.0f);
    bwd(c);
    size_t nx = (size_t)tensor_numel(&c->x), nc = (size_t)c->C;
    float *dx = malloc(sizeof(float) * nx), *dg = malloc(sizeof(float) * nc), *db = malloc(sizeof(float) * nc);
    memcpy(dx, c->dx.data, sizeof(float) * nx);
    memcpy(dg, c->dgamma.data, sizeof(float) * nc);
    memcpy(db, c->dbeta.data, sizeof(float) * nc);
    Tensor none = {0};
    tensor_fill(&c->dx, 0.0f);
    bwd_with(c, &c->dx, NULL, &none);
    int ok = same(&c->dx, dx);
    tensor_fill(&c->dgamma, 0.0f);
    bwd_with(c, NULL, &c->dgamma, NULL);
    ok &= same(&c->dgamma, dg);
    tensor_fill(&c->dbeta, 0.0f);
    bwd_with(c, &none, &none, &c->dbeta);
    ok &= same(&c->dbeta, db);
    printf("%s %-28s skipped gradients leave the others unchanged\n", ok ? "ok  " : "FAIL", name);
    gc_free(dx), gc_free(dg), gc_free(db);
    return !ok;
}

// groupnorm_act equals groupnorm followed by the activation op, forward and backward (z recomputed, dz = dout
// act'(z), then the groupnorm backward), bit for bit: the CPU fused op is that composition.
static int check_composition(Ctx *c, const char *name) {
    fwd(c);
    tensor_fill(&c->dgamma, 0.0f);
    tensor_fill(&c->dbeta, 0.0f);
    bwd(c);
    int64_t shape[4], nd = c->x.ndim;
    for (int i = 0; i < nd; i++) shape[i] = c->x.shape[i];
    Tensor z = gc_tensor((int)nd, shape), y = gc_tensor((int)nd, shape), dz = gc_tensor((int)nd, shape),
           dx = gc_tensor((int)nd, shape), mean = gc_tensor(c->mean.ndim, c->mean.shape),
           rstd = gc_tensor(c->rstd.ndim, c->rstd.shape), dg = GC_TENSOR(c->C), db = GC_TENSOR(c->C);
    groupnorm_forward(&z, &mean, &rstd, &c->x, &c->gamma, &c->beta, c->groups, c->eps);
    activation_forward(&y, &z, c->act);
    activation_backward(&dz, &c->dy, &z, c->act);
    groupnorm_backward(&dx, &dg, &db, &dz, &c->x, &mean, &rstd, &c->gamma, c->groups);
    int ok = same(&c->y, tensor_f32(&y)) && same(&c->mean, tensor_f32(&mean)) && same(&c->rstd, tensor_f32(&rstd)) &&
             same(&c->dx, tensor_f32(&dx)) && same(&c->dgamma, tensor_f32(&dg)) && same(&c->dbeta, tensor_f32(&db));
    printf("%s %-28s equals groupnorm and %s composed\n", ok ? "ok  " : "FAIL", name, activation_name(c->act));
    return !ok;
}

static int gradcheck(Ctx *c, const char *name) {
    GradCheck g = {.name = name, .ctx = c, .forward = fwd, .backward = bwd};
    g.wrt[0] = &c->x, g.grad[0] = &c->dx;
    g.wrt[1] = &c->gamma, g.grad[1] = &c->dgamma, g.is_param[1] = 1;
    g.wrt[2] = &c->beta, g.grad[2] = &c->dbeta, g.is_param[2] = 1;
    g.n_wrt = 3;
    g.out[0] = &c->y, g.dout[0] = &c->dy, g.n_out = 1;
    return gradcheck_run(&g);
}

// groupnorm_act_forward_cat / backward_cat on [a | b]
typedef struct {
    Tensor a, b, da, db, y, dy, mean, rstd, gamma, beta, dgamma, dbeta;
    int groups;
    Activation act;
} CatCtx;

static void cat_fwd(void *p) {
    CatCtx *c = p;
    groupnorm_act_forward_cat(&c->y, &c->mean, &c->rstd, &c->a, &c->b, &c->gamma, &c->beta, c->groups, 1e-5f, c->act);
}
static void cat_bwd(void *p) {
    CatCtx *c = p;
    groupnorm_act_backward_cat(&c->da, &c->db, &c->dgamma, &c->dbeta, &c->dy, &c->a, &c->b, &c->mean, &c->rstd,
                               &c->gamma, &c->beta, c->groups, c->act);
}

static double max_rel(const float *x, const float *ref, int64_t n) {
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(x[i] - ref[i])), m = fmax(m, fabs(ref[i]));
    return m > 0.0 ? e / m : e;
}

// Against the fused op on the concatenated copy: the same sums in double over the same values (only the order of
// the statistics' two runs differs), so within an fp32 rounding (tolerance 1e-6 relative).
static int cat_case(const char *name, int64_t B, int64_t Ca, int64_t Cb, int64_t H, int64_t W, int groups,
                    Activation act, int grad, int *checks) {
    int64_t C = Ca + Cb;
    CatCtx c = {.groups = groups, .act = act};
    c.a = GC_TENSOR(B, Ca, H, W), c.b = GC_TENSOR(B, Cb, H, W), c.da = GC_TENSOR(B, Ca, H, W);
    c.db = GC_TENSOR(B, Cb, H, W), c.y = GC_TENSOR(B, C, H, W), c.dy = GC_TENSOR(B, C, H, W);
    c.mean = GC_TENSOR(B, groups), c.rstd = GC_TENSOR(B, groups);
    c.gamma = GC_TENSOR(C), c.beta = GC_TENSOR(C), c.dgamma = GC_TENSOR(C), c.dbeta = GC_TENSOR(C);
    gc_fill_uniform(&c.a, -1.0f, 3.0f, 11);
    gc_fill_uniform(&c.b, -2.0f, 1.0f, 12); // another mean than a's: a group across both sees both
    gc_fill_uniform(&c.gamma, 0.5f, 1.5f, 13);
    gc_fill_uniform(&c.beta, -0.5f, 0.5f, 14);
    gc_fill_uniform(&c.dy, -1.0f, 1.0f, 15);
    int f = 0;
    if (grad) {
        GradCheck g = {.name = name, .ctx = &c, .forward = cat_fwd, .backward = cat_bwd};
        g.wrt[0] = &c.a, g.grad[0] = &c.da;
        g.wrt[1] = &c.b, g.grad[1] = &c.db;
        g.wrt[2] = &c.gamma, g.grad[2] = &c.dgamma, g.is_param[2] = 1;
        g.wrt[3] = &c.beta, g.grad[3] = &c.dbeta, g.is_param[3] = 1;
        g.n_wrt = 4;
        g.out[0] = &c.y, g.dout[0] = &c.dy, g.n_out = 1;
        f += gradcheck_run(&g);
        (*checks)++;
    }
    Tensor x = GC_TENSOR(B, C, H, W), y = GC_TENSOR(B, C, H, W), dx = GC_TENSOR(B, C, H, W);
    Tensor mean = GC_TENSOR(B, groups), rstd = GC_TENSOR(B, groups), dg = GC_TENSOR(C), dbe = GC_TENSOR(C);
    Tensor dab = GC_TENSOR(B, C, H, W);
    concat_channels_forward(&x, &c.a, &c.b);
    groupnorm_act_forward(&y, &mean, &rstd, &x, &c.gamma, &c.beta, groups, 1e-5f, act);
    groupnorm_act_backward(&dx, &dg, &dbe, &c.dy, &x, &mean, &rstd, &c.gamma, &c.beta, groups, act);
    tensor_fill(&c.dgamma, 0.0f);
    tensor_fill(&c.dbeta, 0.0f);
    cat_fwd(&c);
    cat_bwd(&c);
    concat_channels_forward(&dab, &c.da, &c.db);
    int64_t n = B * C * H * W;
    double e[6] = {max_rel(tensor_f32(&c.y), tensor_f32(&y), n),
                   max_rel(tensor_f32(&c.mean), tensor_f32(&mean), B * groups),
                   max_rel(tensor_f32(&c.rstd), tensor_f32(&rstd), B * groups),
                   max_rel(tensor_f32(&dab), tensor_f32(&dx), n),
                   max_rel(tensor_f32(&c.dgamma), tensor_f32(&dg), C),
                   max_rel(tensor_f32(&c.dbeta), tensor_f32(&dbe), C)};
    const char *lab[6] = {"y", "mean", "rstd", "d[a|b]", "dgamma", "dbeta"};
    f += report("in place vs the concatenated copy", name, 6, lab, e, 1e-6);
    (*checks)++;
    Tensor *all[] = {&c.a, &c.b, &c.da, &c.db, &c.y, &c.dy, &c.mean, &c.rstd, &c.gamma, &c.beta, &c.dgamma,
                     &c.dbeta, &x, &y, &dx, &mean, &rstd, &dg, &dbe, &dab};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) gc_free(all[i]->data);
    return f;
}

int main(void) {
    int f = 0, checks = 0;
    // [a | b]: groups of 3 with a's 4 channels: group 1 straddles (finite differences); groups of 2 that split
    // exactly at a's end; a large case (SDXL's 1280 + 640 channels are 1920 in groups of 60, 21 1/3 of them in a)
    f += cat_case("groupnorm_silu_cat[2,4|2,3,3]/2", 2, 4, 2, 3, 3, 2, ACT_SILU, 1, &checks);
    f += cat_case("groupnorm_gelu_cat[1,4|4,2,3]/4", 1, 4, 4, 2, 3, 4, ACT_GELU, 1, &checks);
    f += cat_case("groupnorm_silu_cat[2,44|20,16,16]/8", 2, 44, 20, 16, 16, 8, ACT_SILU, 0, &checks);
    struct {
        const char *name;
        int ndim;
        int64_t shape[4];
        int groups;
        float eps;
        int grad; // finite differences (small cases only)
    } cases[] = {
        {"groupnorm[2,6,5,3]/3", 4, {2, 6, 5, 3}, 3, 1e-5f, 1},
        {"groupnorm[3,8,7]/4", 3, {3, 8, 7}, 4, 1e-6f, 1},
        {"groupnorm[2,4,3,3]/1", 4, {2, 4, 3, 3}, 1, 1e-5f, 1},
        {"groupnorm[2,5,4]/5", 3, {2, 5, 4}, 5, 1e-6f, 1},
        {"layernorm[3,5,7]", 3, {3, 5, 7}, 0, 1e-5f, 1},
        {"layernorm[4,9]", 2, {4, 9}, 0, 1e-5f, 1},
        {"groupnorm[2,64,32,32]/32", 4, {2, 64, 32, 32}, 32, 1e-6f, 0},
        {"layernorm[2,300,320]", 3, {2, 300, 320}, 0, 1e-5f, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Ctx c = make(cases[i].ndim, cases[i].shape, cases[i].groups, cases[i].eps);
        if (cases[i].grad) {
            f += gradcheck(&c, cases[i].name);
            checks++;
        }
        f += check_reference(&c, cases[i].name);
        f += check_partial(&c, cases[i].name);
        checks += 3;
    }
    struct {
        const char *name;
        int ndim;
        int64_t shape[4];
        int groups;
        Activation act;
    } fused[] = {
        {"groupnorm_silu[2,6,5,3]/3", 4, {2, 6, 5, 3}, 3, ACT_SILU},
        {"groupnorm_gelu[3,8,7]/4", 3, {3, 8, 7}, 4, ACT_GELU},
        {"groupnorm_silu[2,64,32,32]/32", 4, {2, 64, 32, 32}, 32, ACT_SILU},
    };
    for (size_t i = 0; i < sizeof fused / sizeof fused[0]; i++) {
        Ctx c = make(fused[i].ndim, fused[i].shape, fused[i].groups, 1e-5f);
        c.fused = 1, c.act = fused[i].act;
        if (tensor_numel(&c.x) < 1000) {
            f += gradcheck(&c, fused[i].name);
            checks++;
        }
        f += check_composition(&c, fused[i].name);
        f += check_partial(&c, fused[i].name);
        checks += 2;
    }
    return gc_report(f, checks);
}
