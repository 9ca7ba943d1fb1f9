// cmd_smoke.c: `drtune smoke`, a short end-to-end run of the numerical core a new user can watch: memory groups
// planned and allocated as arenas, a small conv / GroupNorm / attention network trained with Adam on a fixed random
// regression target, and a check that the loss falls. It exercises the same ops the diffusion models use.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "core/common.h"
#include "core/rng.h"
#include "ops/ops.h"

enum { B = 2, CI = 4, C = 32, H = 8, W = 8, G = 8, HEADS = 4, STEPS = 30 };

typedef struct {
    Tensor conv1_w, conv1_b, gn_w, gn_b, wq, wk, wv, wo, bo, conv2_w, conv2_b;
} Net;

typedef struct {
    Tensor h1, gn, gn_mean, gn_rstd, act, tok, attn_out, tok_out, h2, out;
    MHACache mha;
} Acts;

static void net_plan(Arena *a, Net *n) {
    arena_add(a, &n->conv1_w, "conv1.weight", DTYPE_F32, 4, (int64_t[]){C, CI, 3, 3});
    arena_add(a, &n->conv1_b, "conv1.bias", DTYPE_F32, 1, (int64_t[]){C});
    arena_add(a, &n->gn_w, "norm.weight", DTYPE_F32, 1, (int64_t[]){C});
    arena_add(a, &n->gn_b, "norm.bias", DTYPE_F32, 1, (int64_t[]){C});
    arena_add(a, &n->wq, "attn.to_q.weight", DTYPE_F32, 2, (int64_t[]){C, C});
    arena_add(a, &n->wk, "attn.to_k.weight", DTYPE_F32, 2, (int64_t[]){C, C});
    arena_add(a, &n->wv, "attn.to_v.weight", DTYPE_F32, 2, (int64_t[]){C, C});
    arena_add(a, &n->wo, "attn.to_out.weight", DTYPE_F32, 2, (int64_t[]){C, C});
    arena_add(a, &n->bo, "attn.to_out.bias", DTYPE_F32, 1, (int64_t[]){C});
    arena_add(a, &n->conv2_w, "conv2.weight", DTYPE_F32, 4, (int64_t[]){CI, C, 3, 3});
    arena_add(a, &n->conv2_b, "conv2.bias", DTYPE_F32, 1, (int64_t[]){CI});
}

static void acts_plan(Arena *a, Acts *x) {
    int64_t img[4] = {B, C, H, W}, tok[3] = {B, H * W, C};
    arena_add(a, &x->h1, "h1", DTYPE_F32, 4, img);
    arena_add(a, &x->gn, "gn", DTYPE_F32, 4, img);
    arena_add(a, &x->gn_mean, "gn.mean", DTYPE_F32, 2, (int64_t[]){B, G});
    arena_add(a, &x->gn_rstd, "gn.rstd", DTYPE_F32, 2, (int64_t[]){B, G});
    arena_add(a, &x->act, "act", DTYPE_F32, 4, img);
    arena_add(a, &x->tok, "tokens", DTYPE_F32, 3, tok);
    arena_add(a, &x->mha.q, "attn.q", DTYPE_F32, 3, tok);
    arena_add(a, &x->mha.k, "attn.k", DTYPE_F32, 3, tok);
    arena_add(a, &x->mha.v, "attn.v", DTYPE_F32, 3, tok);
    arena_add(a, &x->mha.attn, "attn.out_heads", DTYPE_F32, 3, tok);
    arena_add(a, &x->mha.lse, "attn.lse", DTYPE_F32, 3, (int64_t[]){B, HEADS, H * W});
    arena_add(a, &x->attn_out, "attn.out", DTYPE_F32, 3, tok);
    arena_add(a, &x->tok_out, "tokens_out", DTYPE_F32, 4, img);
    arena_add(a, &x->h2, "h2", DTYPE_F32, 4, img);
    arena_add(a, &x->out, "out", DTYPE_F32, 4, (int64_t[]){B, CI, H, W});
}

// [B, C, H*W] <-> [B, H*W, C]
static void transpose_bct(float *dst, const float *src, int64_t nb, int64_t rows, int64_t cols) {
    for (int64_t b = 0; b < nb; b++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) dst[(b * cols + c) * rows + r] = src[(b * rows + r) * cols + c];
}

static double net_forward(Net *n, Acts *a, const Tensor *x, const Tensor *target, Tensor *dout) {
    MHAParams p = {.wq = n->wq, .wk = n->wk, .wv = n->wv, .wo = n->wo, .bo = n->bo};
    conv2d_forward(&a->h1, x, &n->conv1_w, &n->conv1_b, 1, 1);
    groupnorm_forward(&a->gn, &a->gn_mean, &a->gn_rstd, &a->h1, &n->gn_w, &n->gn_b, G, 1e-5f);
    activation_forward(&a->act, &a->gn, ACT_SILU);
    transpose_bct(a->tok.data, a->act.data, B, C, H * W);
    mha_forward(&a->attn_out, &a->mha, &a->tok, NULL, &p, HEADS, 0);
    transpose_bct(a->tok_out.data, a->attn_out.data, B, H * W, C);
    add_forward(&a->h2, &a->tok_out, &a->act); // residual
    conv2d_forward(&a->out, &a->h2, &n->conv2_w, &n->conv2_b, 1, 1);
    // loss = mean squared error; dout = d loss / d out
    const float *o = a->out.data, *t = target->data;
    float *d = dout->data;
    int64_t m = tensor_numel(&a->out);
    double loss = 0;
    for (int64_t i = 0; i < m; i++) {
        double e = (double)o[i] - t[i];
        loss += e * e;
        d[i] = (float)(2.0 * e / (double)m);
    }
    return loss / (double)m;
}

static void net_backward(Net *n, Net *g, Acts *a, Acts *d, const Tensor *x, const Tensor *dout) {
    MHAParams p = {.wq = n->wq, .wk = n->wk, .wv = n->wv, .wo = n->wo, .bo = n->bo};
    MHAParams gp = {.wq = g->wq, .wk = g->wk, .wv = g->wv, .wo = g->wo, .bo = g->bo};
    conv2d_backward(&d->h2, &g->conv2_w, &g->conv2_b, dout, &a->h2, &n->conv2_w, 1, 1);
    // residual: d act = d h2 (direct) + the attention path
    transpose_bct(d->attn_out.data, d->h2.data, B, C, H * W);
    mha_backward(&d->tok, NULL, &gp, &d->attn_out, &a->mha, &a->tok, NULL, &p, HEADS, 0);
    transpose_bct(d->act.data, d->tok.data, B, H * W, C);
    tensor_axpy(&d->act, 1.0f, &d->h2);
    activation_backward(&d->gn, &d->act, &a->gn, ACT_SILU);
    groupnorm_backward(&d->h1, &g->gn_w, &g->gn_b, &d->gn, &a->h1, &a->gn_mean, &a->gn_rstd, &n->gn_w, G);
    conv2d_backward(NULL, &g->conv1_w, &g->conv1_b, &d->h1, x, &n->conv1_w, 1, 1);
}

int cmd_smoke(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("drtune smoke: training a small conv + GroupNorm + attention network with Adam\n");
    Net net, grad, m1, m2;
    Acts acts, dacts;
    Arena params, grads, opt, act, dact;
    arena_init(&params, "params", DEVICE_CPU);
    arena_init(&grads, "grads", DEVICE_CPU);
    arena_init(&opt, "optimizer", DEVICE_CPU);
    arena_init(&act, "activations", DEVICE_CPU);
    arena_init(&dact, "act-grads", DEVICE_CPU);
    net_plan(&params, &net);
    net_plan(&grads, &grad);
    Arena opt_m;
    arena_init(&opt_m, "opt-m", DEVICE_CPU);
    net_plan(&opt_m, &m1);
    net_plan(&opt, &m2);
    acts_plan(&act, &acts);
    acts_plan(&dact, &dacts);
    Arena *all[] = {&params, &grads, &opt_m, &opt, &act, &dact};
    printf("memory plan:\n");
    for (int i = 0; i < 6; i++) {
        arena_alloc(all[i]);
        arena_print(all[i]);
    }
    // deterministic init: normal(0, 1/sqrt(fan_in)), norms at 1
    for (int i = 0; i < params.n; i++) {
        Tensor *t = &params.entries[i].desc;
        int64_t fan_in = t->ndim > 1 ? tensor_numel(t) / t->shape[0] : 1;
        rng_normal_fill(t->data, tensor_numel(t), 7, RNG_STREAM(RNG_PURPOSE_INIT, i, 0), 0);
        tensor_scale(t, t->ndim > 1 ? 1.0f / sqrtf((float)fan_in) : 0.1f);
    }
    tensor_fill(&net.gn_w, 1.0f);
    float xbuf[B * CI * H * W], tbuf[B * CI * H * W], dbuf[B * CI * H * W];
    Tensor x = tensor_f32_4d(xbuf, B, CI, H, W), target = tensor_f32_4d(tbuf, B, CI, H, W),
           dout = tensor_f32_4d(dbuf, B, CI, H, W);
    rng_normal_fill(xbuf, B * CI * H * W, 7, RNG_STREAM(RNG_PURPOSE_DATA, 0, 0), 0);
    // target: a fixed smooth function of the input (mirror plus a shift) the net can learn
    for (int b = 0; b < B; b++)
        for (int c = 0; c < CI; c++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++)
                    tbuf[((b * CI + c) * H + y) * W + xx] = 0.5f * xbuf[((b * CI + c) * H + y) * W + (W - 1 - xx)] + 0.1f * c;
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    double first = 0, last = 0;
    double t0 = dt_now();
    for (int step = 1; step <= STEPS; step++) {
        double loss = net_forward(&net, &acts, &x, &target, &dout);
        arena_zero(&grads);
        net_backward(&net, &grad, &acts, &dacts, &x, &dout);
        float c1 = 1.0f - powf(b1, (float)step), c2 = 1.0f - powf(b2, (float)step);
        float *p = params.base, *g = grads.base, *m = opt_m.base, *v = opt.base;
        size_t nf = params.size / sizeof(float); // padding slots are zero in all four arenas
        for (size_t i = 0; i < nf; i++) {
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            p[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
        }
        if (step == 1) first = loss;
        last = loss;
        if (step == 1 || step % 10 == 0) printf("  step %3d  loss %.6f\n", step, loss);
    }
    printf("%d steps in %.2f s; loss %.4f -> %.4f; peak RSS %.1f MiB\n", STEPS, dt_now() - t0, first, last,
           dt_peak_rss() / 1048576.0);
    for (int i = 0; i < 6; i++) arena_free(all[i]);
    ops_workspace_free();
    if (!(last < 0.5 * first) || !isfinite(last)) {
        fprintf(stderr, "drtune: error: smoke run did not learn (loss %.4f -> %.4f)\n", first, last);
        return 1;
    }
    printf("smoke: ok\n");
    return 0;
}
