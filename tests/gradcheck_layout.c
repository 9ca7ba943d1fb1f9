// gradcheck_layout.c: forward spot checks and finite-difference checks of the weightless layout ops: nearest
// upsampling, channel concat, broadcast add, the classifier-free-guidance combine, timestep embedding (including exact
// diffusers fp32 values), embedding lookup and sum/mean reductions.
#include <math.h>
#include <stdio.h>

#include "../src/ops/ops.h"
#include "gradcheck.h"

static int g_checks;

// Counts one check; prints and returns 1 when cond fails.
static int expect(int cond, const char *name, const char *what) {
    g_checks++;
    printf("%s %-28s %s\n", cond ? "ok  " : "FAIL", name, what);
    return !cond;
}

// Runs a gradcheck with n_wrt checked tensors and one output; counts one check.
static int run(GradCheck *g, Tensor *y, Tensor *dy) {
    g->out[0] = y, g->dout[0] = dy, g->n_out = 1;
    g_checks++;
    return gradcheck_run(g);
}

// ---------------------------------------------------------------------------------------------------------------
typedef struct {
    Tensor x, y, dx, dy;
} UpCtx;
static void up_fwd(void *p) {
    UpCtx *c = p;
    upsample2x_forward(&c->y, &c->x);
}
static void up_bwd(void *p) {
    UpCtx *c = p;
    upsample2x_backward(&c->dx, &c->dy);
}

static int check_upsample(const char *name, int64_t B, int64_t C, int64_t H, int64_t W, int max_elems) {
    UpCtx c = {.x = GC_TENSOR(B, C, H, W), .dx = GC_TENSOR(B, C, H, W), .y = GC_TENSOR(B, C, 2 * H, 2 * W),
               .dy = GC_TENSOR(B, C, 2 * H, 2 * W)};
    gc_fill_uniform(&c.x, -1, 1, 1);
    up_fwd(&c);
    const float *x = c.x.data, *y = c.y.data;
    int bad = 0;
    for (int64_t bc = 0; bc < B * C; bc++)
        for (int64_t oy = 0; oy < 2 * H; oy++)
            for (int64_t ox = 0; ox < 2 * W; ox++)
                bad += y[(bc * 2 * H + oy) * 2 * W + ox] != x[(bc * H + oy / 2) * W + ox / 2];
    int f = expect(bad == 0, name, "forward: out[y][x] == in[y/2][x/2]");
    GradCheck g = {.name = name, .ctx = &c, .forward = up_fwd, .backward = up_bwd, .n_wrt = 1, .max_elems = max_elems};
    g.wrt[0] = &c.x, g.grad[0] = &c.dx;
    return f + run(&g, &c.y, &c.dy);
}

// ---------------------------------------------------------------------------------------------------------------
typedef struct {
    Tensor a, b, y, da, db, dy;
} CatCtx;
static void cat_fwd(void *p) {
    CatCtx *c = p;
    concat_channels_forward(&c->y, &c->a, &c->b);
}
static void cat_bwd(void *p) {
    CatCtx *c = p;
    concat_channels_backward(&c->da, &c->db, &c->dy);
}

static int check_concat(const char *name, int64_t B, int64_t Ca, int64_t Cb, int64_t H, int64_t W, int max_elems) {
    CatCtx c = {.a = GC_TENSOR(B, Ca, H, W), .da = GC_TENSOR(B, Ca, H, W), .b = GC_TENSOR(B, Cb, H, W),
                .db = GC_TENSOR(B, Cb, H, W), .y = GC_TENSOR(B, Ca + Cb, H, W), .dy = GC_TENSOR(B, Ca + Cb, H, W)};
    gc_fill_uniform(&c.a, -1, 1, 2);
    gc_fill_uniform(&c.b, -1, 1, 3);
    cat_fwd(&c);
    const float *a = c.a.data, *b = c.b.data, *y = c.y.data;
    int bad = 0;
    for (int64_t n = 0; n < B; n++)
        for (int64_t ch = 0; ch < Ca + Cb; ch++)
            for (int64_t s = 0; s < H * W; s++) {
                float want = ch < Ca ? a[(n * Ca + ch) * H * W + s] : b[(n * Cb + ch - Ca) * H * W + s];
                bad += y[((n * (Ca + Cb)) + ch) * H * W + s] != want;
            }
    int f = expect(bad == 0, name, "forward: [a | b] along channels");
    GradCheck g = {.name = name, .ctx = &c, .forward = cat_fwd, .backward = cat_bwd,
                   .n_wrt = 2, .max_elems = max_elems};
    g.wrt[0] = &c.a, g.grad[0] = &c.da;
    g.wrt[1] = &c.b, g.grad[1] = &c.db;
    return f + run(&g, &c.y, &c.dy);
}

// ---------------------------------------------------------------------------------------------------------------
typedef struct {
    Tensor x, v, y, dx, dv, dy;
} BcastCtx;
static void bcast_fwd(void *p) {
    BcastCtx *c = p;
    add_bcast_forward(&c->y, &c->x, &c->v);
}
static void bcast_bwd(void *p) {
    BcastCtx *c = p;
    add_bcast_backward(&c->dx, &c->dv, &c->dy);
}

static int check_add_bcast(void) {
    int64_t B = 2, C = 5, H = 3, W = 4;
    BcastCtx c = {.x = GC_TENSOR(B, C, H, W), .dx = GC_TENSOR(B, C, H, W), .v = GC_TENSOR(B, C),
                  .dv = GC_TENSOR(B, C), .y = GC_TENSOR(B, C, H, W), .dy = GC_TENSOR(B, C, H, W)};
    gc_fill_uniform(&c.x, -1, 1, 4);
    gc_fill_uniform(&c.v, -1, 1, 5);
    GradCheck g = {.name = "add_bcast", .ctx = &c, .forward = bcast_fwd, .backward = bcast_bwd, .n_wrt = 2};
    g.wrt[0] = &c.x, g.grad[0] = &c.dx;
    g.wrt[1] = &c.v, g.grad[1] = &c.dv; // dv is written (v is an activation: the projected time embedding)
    return run(&g, &c.y, &c.dy);
}

// ---------------------------------------------------------------------------------------------------------------
// classifier-free guidance combine over [uncond | cond] rows (or one branch); scale 1 makes the backward the gradient
typedef struct {
    Tensor rows, y, drows, dy;
    float w;
} CfgCtx;
static void cfg_fwd(void *p) {
    CfgCtx *c = p;
    cfg_combine_forward(&c->y, &c->rows, c->w);
}
static void cfg_bwd(void *p) {
    CfgCtx *c = p;
    cfg_combine_backward(&c->drows, &c->dy, c->w, 1.0);
}

static int check_cfg(const char *name, int branches) {
    int64_t B = 2, C = 3, H = 4, W = 5;
    CfgCtx c = {.rows = GC_TENSOR(branches * B, C, H, W), .drows = GC_TENSOR(branches * B, C, H, W),
                .y = GC_TENSOR(B, C, H, W), .dy = GC_TENSOR(B, C, H, W), .w = 7.5f};
    gc_fill_uniform(&c.rows, -1, 1, 6);
    GradCheck g = {.name = name, .ctx = &c, .forward = cfg_fwd, .backward = cfg_bwd, .n_wrt = 1};
    g.wrt[0] = &c.rows, g.grad[0] = &c.drows;
    return run(&g, &c.y, &c.dy);
}

// ---------------------------------------------------------------------------------------------------------------
typedef struct {
    Tensor t, y, dt, dy;
    int flip;
    float shift;
} TsCtx;
static void ts_fwd(void *p) {
    TsCtx *c = p;
    timestep_embedding_forward(&c->y, &c->t, c->flip, c->shift);
}
static void ts_bwd(void *p) {
    TsCtx *c = p;
    timestep_embedding_backward(&c->dt, &c->dy, &c->t, c->flip, c->shift);
}

// Gradient wrt t, at t in [0.3, 3] where every sin / cos term is well conditioned.
static int check_timestep_grad(const char *name, int64_t N, int64_t D, int flip, float shift) {
    TsCtx c = {.t = GC_TENSOR(N), .dt = GC_TENSOR(N), .y = GC_TENSOR(N, D), .dy = GC_TENSOR(N, D), .flip = flip,
               .shift = shift};
    gc_fill_uniform(&c.t, 0.3f, 3.0f, 6);
    GradCheck g = {.name = name, .ctx = &c, .forward = ts_fwd, .backward = ts_bwd, .n_wrt = 1};
    g.wrt[0] = &c.t, g.grad[0] = &c.dt;
    int f = run(&g, &c.y, &c.dy);
    if (D % 2) {
        int bad = 0;
        for (int64_t n = 0; n < N; n++) bad += ((const float *)c.y.data)[n * D + D - 1] != 0.0f;
        f += expect(bad == 0, name, "odd D: the last column is zero");
    }
    return f;
}

// SD's time_proj (D 320, flip, shift 0) at t = 981 and t = 0 against the fp32 operation order of diffusers, bit
// for bit, and against a double-precision evaluation of the formula.
static int check_timestep_values(void) {
    int64_t D = 320, half = 160;
    TsCtx c = {.t = GC_TENSOR(2), .y = GC_TENSOR(2, D), .flip = 1, .shift = 0.0f};
    float *t = c.t.data;
    t[0] = 981.0f, t[1] = 0.0f;
    ts_fwd(&c);
    const float *y = c.y.data;
    int f = expect(y[0] == cosf(981.0f) && y[half] == sinf(981.0f), "timestep_embedding",
                   "t=981: out[0] == cosf(981), out[160] == sinf(981)");
    int bad = 0;
    double max_err = 0.0;
    for (int64_t i = 0; i < half; i++) {
        float e = -logf(10000.0f) * (float)i;
        e = e / (float)half;
        float arg = 981.0f * expf(e);
        bad += y[i] != cosf(arg) || y[half + i] != sinf(arg);
        double argd = 981.0 * exp(-log(10000.0) * (double)i / (double)half);
        double err = fmax(fabs(y[i] - cos(argd)), fabs(y[half + i] - sin(argd)));
        if (err > max_err) max_err = err;
    }
    f += expect(bad == 0, "timestep_embedding", "t=981: all 320 values equal the diffusers fp32 formula");
    char what[96];
    // fp32 rounding of the frequency (relative 2^-23 after exp) times t = 981 moves the argument by up to ~3e-4
    snprintf(what, sizeof what, "t=981: max |out - double formula| %.2e <= 1e-3", max_err);
    f += expect(max_err <= 1e-3, "timestep_embedding", what);
    bad = 0;
    for (int64_t i = 0; i < half; i++) bad += y[D + i] != 1.0f || y[D + half + i] != 0.0f;
    f += expect(bad == 0, "timestep_embedding", "t=0: [cos | sin] == [1 | 0]");
    return f;
}

// ---------------------------------------------------------------------------------------------------------------
typedef struct {
    Tensor ids, table, y, dtable, dy;
} EmbCtx;
static void emb_fwd(void *p) {
    EmbCtx *c = p;
    embedding_forward(&c->y, &c->ids, &c->table);
}
static void emb_bwd(void *p) {
    EmbCtx *c = p;
    embedding_backward(&c->dtable, &c->dy, &c->ids);
}

// ids cycle through a pattern with repeats, which exercise the accumulation of rows
static int check_embedding(const char *name, int64_t B, int64_t T, int64_t V, int64_t C, int max_elems) {
    static int32_t ids[4096];
    for (int64_t n = 0; n < B * T; n++) ids[n] = (int32_t)((n * 5 + n / 3) % V);
    EmbCtx c = {.table = GC_TENSOR(V, C), .dtable = GC_TENSOR(V, C), .y = GC_TENSOR(B, T, C),
                .dy = GC_TENSOR(B, T, C)};
    c.ids = tensor_make(ids, DTYPE_I32, DEVICE_CPU, 2, (int64_t[]){B, T});
    gc_fill_uniform(&c.table, -1, 1, 7);
    emb_fwd(&c);
    const float *tab = c.table.data, *y = c.y.data;
    int bad = 0;
    for (int64_t n = 0; n < B * T; n++)
        for (int64_t k = 0; k < C; k++) bad += y[n * C + k] != tab[ids[n] * C + k];
    int f = expect(bad == 0, name, "forward: out[n] == table[ids[n]]");
    GradCheck g = {.name = name, .ctx = &c, .forward = emb_fwd, .backward = emb_bwd,
                   .n_wrt = 1, .max_elems = max_elems};
    g.wrt[0] = &c.table, g.grad[0] = &c.dtable, g.is_param[0] = 1;
    return f + run(&g, &c.y, &c.dy);
}

// ---------------------------------------------------------------------------------------------------------------
typedef struct {
    Tensor x, y, dx, dy;
    ReduceOp op;
} RedCtx;
static void red_fwd(void *p) {
    RedCtx *c = p;
    reduce_forward(&c->y, &c->x, c->op);
}
static void red_bwd(void *p) {
    RedCtx *c = p;
    reduce_backward(&c->dx, &c->dy, c->op);
}

static int check_reduce(const char *name, ReduceOp op, int64_t N, int64_t M1, int64_t M2, int max_elems) {
    RedCtx c = {.x = GC_TENSOR(N, M1, M2), .dx = GC_TENSOR(N, M1, M2), .y = GC_TENSOR(N), .dy = GC_TENSOR(N),
                .op = op};
    gc_fill_uniform(&c.x, -1, 1, 8);
    red_fwd(&c);
    const float *x = c.x.data, *y = c.y.data;
    double max_err = 0.0;
    for (int64_t n = 0; n < N; n++) {
        double s = 0.0;
        for (int64_t m = 0; m < M1 * M2; m++) s += x[n * M1 * M2 + m];
        if (op == REDUCE_MEAN) s /= (double)(M1 * M2);
        max_err = fmax(max_err, fabs(y[n] - s));
    }
    int f = expect(max_err <= 1e-6, name, "forward matches a double sum");
    GradCheck g = {.name = name, .ctx = &c, .forward = red_fwd, .backward = red_bwd,
                   .n_wrt = 1, .max_elems = max_elems};
    g.wrt[0] = &c.x, g.grad[0] = &c.dx;
    return f + run(&g, &c.y, &c.dy);
}

int main(void) {
    int f = 0;
    f += check_upsample("upsample2x", 2, 3, 5, 3, 0);
    f += check_concat("concat_channels", 2, 3, 2, 4, 3, 0);
    f += check_add_bcast();
    f += check_cfg("cfg_combine (two branches)", 2);
    f += check_cfg("cfg_combine (one branch)", 1);
    f += check_timestep_grad("timestep_emb (flip, shift 0)", 3, 32, 1, 0.0f);
    f += check_timestep_grad("timestep_emb (shift 1, odd D)", 2, 17, 0, 1.0f);
    f += check_timestep_values();
    f += check_embedding("embedding", 2, 5, 7, 6, 0);
    f += check_reduce("reduce sum", REDUCE_SUM, 3, 4, 5, 0);
    f += check_reduce("reduce mean", REDUCE_MEAN, 3, 4, 5, 0);
    // large enough for the threaded loops; a random subset of elements is checked
    f += check_upsample("upsample2x (threaded)", 2, 16, 24, 32, 256);
    f += check_concat("concat_channels (threaded)", 2, 96, 64, 24, 24, 256);
    f += check_embedding("embedding (threaded)", 2, 77, 50, 512, 256);
    f += check_reduce("reduce mean (threaded)", REDUCE_MEAN, 4, 128, 160, 256);
    return gc_report(f, g_checks);
}
