// norm.c: group and layer normalisation (torch nn.GroupNorm, nn.LayerNorm), forward and backward, and GroupNorm
// followed by an activation (fused on the GPU: cuda/cuda_norm.cu), whose input may be a channel concatenation read
// where its parts lie. Statistics and gradient reductions are accumulated in double on the CPU, so the fp32 results
// match PyTorch to fp32 rounding.
#include <math.h>

#include "ops_internal.h"

static void expect_same_shape(const Tensor *t, const Tensor *ref, const char *op, const char *what) {
    int ok = t->ndim == ref->ndim;
    for (int i = 0; ok && i < t->ndim; i++) ok = t->shape[i] == ref->shape[i];
    char a[96], b[96];
    CHECK(ok, "", "%s: %s has shape %s, the input %s", op, what, tensor_shape_str(t, a, sizeof a),
          tensor_shape_str(ref, b, sizeof b));
}

static void expect_numel(const Tensor *t, int64_t n, const char *op, const char *what) {
    char a[96];
    CHECK(tensor_numel(t) == n, "", "%s: %s has shape %s, want %lld elements", op, what,
          tensor_shape_str(t, a, sizeof a), (long long)n);
}

// mean and 1 / sqrt(biased variance + eps) of x[n], two passes in double
static void moments(const float *x, int64_t n, float eps, float *mean, float *rstd) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += x[i];
    double m = s / (double)n, v = 0.0;
#pragma omp simd reduction(+ : v)
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - m;
        v += d * d;
    }
    *mean = (float)m;
    *rstd = (float)(1.0 / sqrt(v / (double)n + (double)eps));
}

// in [B, C, *spatial] viewed as [B, C, S]; G = groups of Cg = C / G consecutive channels
// dgamma[c] += sum_k pg[k stride + c], dbeta[c] += sum_k pb[k stride + c] over rows k (either may be unwanted):
// the parameter gradients from per-row partial sums in double.
static void add_param_grads(Tensor *dgamma, Tensor *dbeta, const double *pg, const double *pb, int64_t rows,
                            int64_t stride, int64_t C) {
    float *dg = ops_want(dgamma) ? tensor_f32(dgamma) : NULL, *db = ops_want(dbeta) ? tensor_f32(dbeta) : NULL;
    if (!dg && !db) return;
#pragma omp parallel for if (rows * C > 65536)
    for (int64_t c = 0; c < C; c++) {
        double sg = 0.0, sb = 0.0;
        for (int64_t k = 0; k < rows; k++) {
            sg += pg[k * stride + c];
            sb += pb[k * stride + c];
        }
        if (dg) dg[c] += (float)sg;
        if (db) db[c] += (float)sb;
    }
}

// The input of a GroupNorm: in [B, C, *spatial], or the channel concatenation [a | b] of a [B, Ca, *] and
// b [B, Cb, *] read where they lie (b NULL: a alone), viewed as [B, C, S]. G = groups of Cg = C / G consecutive
// channels; a group may take channels from both parts.
typedef struct {
    const Tensor *a, *b;
    int64_t B, Ca, C, S;
} GnIn;

static GnIn gn_in(const Tensor *a, const Tensor *b, int groups, const char *op) {
    char x[96], y[96];
    CHECK(a->ndim >= 2 && a->shape[0] > 0 && a->shape[1] > 0, "", "%s: input %s is not [B, C, ...]", op,
          tensor_shape_str(a, x, sizeof x));
    GnIn g = {.a = a, .b = ops_want(b) ? b : NULL, .B = a->shape[0], .Ca = a->shape[1], .C = a->shape[1]};
    g.S = tensor_numel(a) / (g.B * g.Ca);
    if (g.b) {
        int ok = b->ndim == a->ndim && b->shape[1] > 0;
        for (int i = 0; ok && i < a->ndim; i++) ok = i == 1 || b->shape[i] == a->shape[i];
        CHECK(ok, "", "%s: inputs %s and %s do not concatenate along channels", op, tensor_shape_str(a, x, sizeof x),
              tensor_shape_str(b, y, sizeof y));
        CHECK(a->device == b->device, "", "%s: the concatenated inputs live on two devices", op);
        ops_expect_same_dtype(a, b, op);
        ops_expect_same_layout(a, b, op);
        g.C += b->shape[1];
    }
    CHECK(groups > 0 && g.C % groups == 0, "", "%s: %lld channels do not split into %d groups", op, (long long)g.C,
          groups);
    return g;
}

// t has the whole input's shape (a's, with C channels)
static void expect_whole(const Tensor *t, const GnIn *g, const char *op, const char *what) {
    int ok = t->ndim == g->a->ndim;
    for (int i = 0; ok && i < t->ndim; i++) ok = t->shape[i] == (i == 1 ? g->C : g->a->shape[i]);
    char x[96];
    CHECK(ok, "", "%s: %s has shape %s, the input %lld channels of %s", op, what, tensor_shape_str(t, x, sizeof x),
          (long long)g->C, tensor_shape_str(g->a, x, sizeof x));
}

// The S values of channel c of sample n: in a (c < Ca) or in b
static inline float *gn_row(float *a, float *b, const GnIn *g, int64_t n, int64_t c) {
    return c < g->Ca ? a + (n * g->Ca + c) * g->S : b + (n * (g->C - g->Ca) + c - g->Ca) * g->S;
}

// mean and 1 / sqrt(biased variance + eps) of group bg: its Cg S values are one contiguous run, or two when the
// group straddles a and b (two passes in double)
static void group_moments(const float *a, const float *b, const GnIn *g, int64_t bg, int64_t Cg, float eps,
                          float *mean, float *rstd) {
    int64_t G = g->C / Cg, n = bg / G, c0 = bg % G * Cg, na = c0 < g->Ca ? (g->Ca - c0 < Cg ? g->Ca - c0 : Cg) : 0;
    const float *x[2] = {na ? gn_row((float *)a, (float *)b, g, n, c0) : NULL,
                         na < Cg ? gn_row((float *)a, (float *)b, g, n, c0 + na) : NULL};
    int64_t len[2] = {na * g->S, (Cg - na) * g->S};
    double s = 0.0;
    for (int r = 0; r < 2; r++) {
        const float *xr = x[r];
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < len[r]; i++) s += xr[i];
    }
    double m = s / (double)(Cg * g->S), v = 0.0;
    for (int r = 0; r < 2; r++) {
        const float *xr = x[r];
#pragma omp simd reduction(+ : v)
        for (int64_t i = 0; i < len[r]; i++) {
            double d = (double)xr[i] - m;
            v += d * d;
        }
    }
    *mean = (float)m;
    *rstd = (float)(1.0 / sqrt(v / (double)(Cg * g->S) + (double)eps));
}

// y [S] = (x - m) * a + b0 for one channel of one sample
static inline void groupnorm_row(float *y, const float *x, int64_t S, float m, float a, float b0) {
#pragma omp simd
    for (int64_t s = 0; s < S; s++) y[s] = (x[s] - m) * a + b0;
}

// out [B, C, *] = act((in - mean[b, g]) * rstd[b, g] * gamma[c] + beta[c]) (act < 0: none); mean, rstd [B, G]
// written; in = [a | b]
static void groupnorm_fwd(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *a, const Tensor *b,
                          const Tensor *gamma, const Tensor *beta, int groups, float eps, int act, const char *op) {
    GnIn in = gn_in(a, b, groups, op);
    int64_t B = in.B, C = in.C, S = in.S, G = groups, Cg = C / G;
    expect_whole(out, &in, op, "output");
    expect_numel(mean, B * G, op, "mean");
    expect_numel(rstd, B * G, op, "rstd");
    tensor_expect_shape(gamma, "groupnorm gamma", C);
    tensor_expect_shape(beta, "groupnorm beta", C);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, op);
        OPS_EXPECT_CUDA_F32(mean, op);
        OPS_EXPECT_CUDA_F32(rstd, op);
        OPS_EXPECT_CUDA(a, op);
        OPS_EXPECT_CUDA(in.b, op);
        OPS_EXPECT_CUDA(gamma, op);
        OPS_EXPECT_CUDA(beta, op);
        ops_expect_same_dtype(out, a, op);
        ops_expect_same_dtype(beta, gamma, op);
        ops_expect_same_layout(out, a, op);
        void *ws = ops_workspace(DEVICE_CUDA, groupnorm_workspace_bytes_cuda(B, C, S, groups));
        groupnorm_forward_cuda(out->data, mean->data, rstd->data, a->data, in.b ? in.b->data : NULL, in.Ca,
                               gamma->data, beta->data, ws, B, C, S, groups, eps, act, ops_dt(a), ops_dt(gamma),
                               tensor_channels_last(a));
        return;
    }
    OPS_EXPECT_CPU(out, op);
    OPS_EXPECT_CPU(mean, op);
    OPS_EXPECT_CPU(rstd, op);
    OPS_EXPECT_CPU(a, op);
    OPS_EXPECT_CPU(in.b, op);
    OPS_EXPECT_CPU(gamma, op);
    OPS_EXPECT_CPU(beta, op);
    float *mu = tensor_f32(mean), *rs = tensor_f32(rstd), *y = tensor_f32(out);
    float *xa = tensor_f32(a), *xb = in.b ? tensor_f32(in.b) : NULL;
    const float *ga = tensor_f32(gamma), *be = tensor_f32(beta);
    // one parallel region: the statistics of each group, then each channel normalised and its activation applied
    // while the row is in cache
#pragma omp parallel if (B * C * S > 65536)
    {
#pragma omp for
        for (int64_t bg = 0; bg < B * G; bg++) group_moments(xa, xb, &in, bg, Cg, eps, &mu[bg], &rs[bg]);
#pragma omp for
        for (int64_t bc = 0; bc < B * C; bc++) { // (b * C + c) / Cg == b * G + c / Cg because C == G * Cg
            int64_t c = bc % C, bg = bc / Cg;
            groupnorm_row(y + bc * S, gn_row(xa, xb, &in, bc / C, c), S, mu[bg], rs[bg] * ga[c], be[c]);
            if (act >= 0) activation_forward_f32(y + bc * S, y + bc * S, S, (Activation)act);
        }
    }
}

void groupnorm_forward(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *in, const Tensor *gamma,
                       const Tensor *beta, int groups, float eps) {
    groupnorm_fwd(out, mean, rstd, in, NULL, gamma, beta, groups, eps, -1, "groupnorm_forward");
}

void groupnorm_act_forward(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *in, const Tensor *gamma,
                           const Tensor *beta, int groups, float eps, Activation act) {
    groupnorm_act_forward_cat(out, mean, rstd, in, NULL, gamma, beta, groups, eps, act);
}

void groupnorm_act_forward_cat(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *a, const Tensor *b,
                               const Tensor *gamma, const Tensor *beta, int groups, float eps, Activation act) {
    CHECK((unsigned)act <= (unsigned)ACT_QUICK_GELU, "", "groupnorm_act_forward: unknown activation %d", (int)act);
    groupnorm_fwd(out, mean, rstd, a, b, gamma, beta, groups, eps, (int)act, "groupnorm_act_forward");
}

// With z = xhat gamma[c] + beta[c] (the forward's output before the activation), dz = dout act'(z) (dz = dout without
// an activation), xhat = (x - mean) rstd, dzhat = dz gamma[c], n = Cg S and means over the group:
// din = rstd (dzhat - mean(dzhat) - xhat mean(dzhat xhat)) (written; [da | db] for in = [a | b]);
// dgamma[c] += sum_{b,s} dz xhat; dbeta[c] += sum_{b,s} dz.
static void groupnorm_bwd(Tensor *da, Tensor *db, Tensor *dgamma, Tensor *dbeta, const Tensor *dout, const Tensor *a,
                          const Tensor *b, const Tensor *mean, const Tensor *rstd, const Tensor *gamma,
                          const Tensor *beta, int groups, int act, const char *op) {
    GnIn in = gn_in(a, b, groups, op);
    int64_t B = in.B, C = in.C, S = in.S, G = groups, Cg = C / G;
    int want_dx = ops_want(da);
    expect_whole(dout, &in, op, "dout");
    if (want_dx) {
        expect_same_shape(da, a, op, "din");
        CHECK(!in.b || ops_want(db), "", "%s: the input gradient of a concatenation wants both parts", op);
        if (in.b) expect_same_shape(db, in.b, op, "din (second part)");
    }
    expect_numel(mean, B * G, op, "mean");
    expect_numel(rstd, B * G, op, "rstd");
    tensor_expect_shape(gamma, "groupnorm gamma", C);
    if (act >= 0) tensor_expect_shape(beta, "groupnorm beta", C);
    if (ops_want(dgamma)) tensor_expect_shape(dgamma, "groupnorm gamma grad", C);
    if (ops_want(dbeta)) tensor_expect_shape(dbeta, "groupnorm beta grad", C);
    const Tensor *dbp = want_dx && in.b ? db : NULL; // the second part's gradient
    if (OPS_ON_CUDA(dout)) {
        OPS_EXPECT_CUDA(dout, op);
        OPS_EXPECT_CUDA(a, op);
        OPS_EXPECT_CUDA(in.b, op);
        OPS_EXPECT_CUDA_F32(mean, op);
        OPS_EXPECT_CUDA_F32(rstd, op);
        OPS_EXPECT_CUDA(gamma, op);
        if (act >= 0) OPS_EXPECT_CUDA(beta, op);
        OPS_EXPECT_CUDA(da, op);
        OPS_EXPECT_CUDA(dbp, op);
        OPS_EXPECT_CUDA_F32(dgamma, op);
        OPS_EXPECT_CUDA_F32(dbeta, op);
        ops_expect_same_dtype(dout, a, op);
        ops_expect_same_dtype(da, a, op);
        ops_expect_same_dtype(dbp, a, op);
        if (act >= 0) ops_expect_same_dtype(beta, gamma, op);
        ops_expect_same_layout(dout, a, op);
        ops_expect_same_layout(da, a, op);
        ops_expect_same_layout(dbp, a, op);
        void *ws = ops_workspace(DEVICE_CUDA, groupnorm_workspace_bytes_cuda(B, C, S, groups));
        groupnorm_backward_cuda(want_dx ? da->data : NULL, dbp ? dbp->data : NULL,
                                ops_want(dgamma) ? dgamma->data : NULL, ops_want(dbeta) ? dbeta->data : NULL,
                                dout->data, a->data, in.b ? in.b->data : NULL, in.Ca, mean->data, rstd->data,
                                gamma->data, act >= 0 ? beta->data : NULL, ws, B, C, S, groups, act, ops_dt(a),
                                ops_dt(gamma), tensor_channels_last(a));
        return;
    }
    OPS_EXPECT_CPU(dout, op);
    OPS_EXPECT_CPU(a, op);
    OPS_EXPECT_CPU(in.b, op);
    OPS_EXPECT_CPU(mean, op);
    OPS_EXPECT_CPU(rstd, op);
    OPS_EXPECT_CPU(gamma, op);
    if (act >= 0) OPS_EXPECT_CPU(beta, op);
    OPS_EXPECT_CPU(da, op);
    OPS_EXPECT_CPU(dbp, op);
    OPS_EXPECT_CPU(dgamma, op);
    OPS_EXPECT_CPU(dbeta, op);
    const float *dy = tensor_f32(dout), *mu = tensor_f32(mean), *rs = tensor_f32(rstd), *ga = tensor_f32(gamma);
    float *xa = tensor_f32(a), *xb = in.b ? tensor_f32(in.b) : NULL;
    // scratch: sdy [B, C] = sum_s dz, sdyx [B, C] = sum_s dz xhat; with an activation, dz [B, C, S]
    int64_t n = B * C * S;
    size_t bytes = sizeof(double) * 2 * (size_t)(B * C) + (act >= 0 ? sizeof(float) * (size_t)n : 0);
    double *sdy = ops_workspace(DEVICE_CPU, bytes), *sdyx = sdy + B * C;
    float *dz = act >= 0 ? (float *)(sdyx + B * C) : NULL;
    float *dxa = want_dx ? tensor_f32(da) : NULL, *dxb = dbp ? tensor_f32(dbp) : NULL;
    float *dg = ops_want(dgamma) ? tensor_f32(dgamma) : NULL, *dbe = ops_want(dbeta) ? tensor_f32(dbeta) : NULL;
    const float *be = act >= 0 ? tensor_f32(beta) : NULL;
    double inv_n = 1.0 / (double)(Cg * S);
    const float *dzy = dz ? dz : dy; // the gradient entering the normalisation
    // one parallel region: per channel row, dz = dout act'(z) on the recomputed z (z = xhat gamma + beta) and the
    // row sums; then din from the sums of the row's group, and the parameter gradients from the sums
#pragma omp parallel if (n > 65536)
    {
#pragma omp for
        for (int64_t bc = 0; bc < B * C; bc++) {
            int64_t c = bc % C, bg = bc / Cg;
            const float *dyi = dy + bc * S, *xi = gn_row(xa, xb, &in, bc / C, c);
            if (dz) {
                float *dzi = dz + bc * S;
                groupnorm_row(dzi, xi, S, mu[bg], rs[bg] * ga[c], be[c]);
                activation_backward_f32(dzi, dyi, dzi, S, (Activation)act);
                dyi = dzi;
            }
            double m = mu[bg], r = rs[bg], s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+ : s1, s2)
            for (int64_t s = 0; s < S; s++) {
                s1 += dyi[s];
                s2 += (double)dyi[s] * (((double)xi[s] - m) * r);
            }
            sdy[bc] = s1;
            sdyx[bc] = s2;
        }
        if (want_dx) {
#pragma omp for nowait
            for (int64_t bc = 0; bc < B * C; bc++) {
                int64_t b0 = bc / C, c = bc % C, c0 = c - c % Cg, bg = bc / Cg;
                double mdy = 0.0, mdyx = 0.0; // mean(dzhat), mean(dzhat xhat) over the group
                for (int64_t k = c0; k < c0 + Cg; k++) {
                    mdy += ga[k] * sdy[b0 * C + k];
                    mdyx += ga[k] * sdyx[b0 * C + k];
                }
                float m = mu[bg], r = rs[bg], gr = ga[c] * r;
                float av = (float)(mdy * inv_n * r), e = (float)(mdyx * inv_n * r);
                const float *dyi = dzy + bc * S, *xi = gn_row(xa, xb, &in, b0, c);
                float *dxi = gn_row(dxa, dxb, &in, b0, c);
#pragma omp simd
                for (int64_t s = 0; s < S; s++) dxi[s] = (dyi[s] * gr - av) - ((xi[s] - m) * r) * e;
            }
        }
        if (dg || dbe) {
#pragma omp for
            for (int64_t c = 0; c < C; c++) { // dgamma[c] += sum_b sdyx[b, c], dbeta[c] += sum_b sdy[b, c]
                double sg = 0.0, sb = 0.0;
                for (int64_t k = 0; k < B; k++) sg += sdyx[k * C + c], sb += sdy[k * C + c];
                if (dg) dg[c] += (float)sg;
                if (dbe) dbe[c] += (float)sb;
            }
        }
    }
}

void groupnorm_backward(Tensor *din, Tensor *dgamma, Tensor *dbeta, const Tensor *dout, const Tensor *in,
                        const Tensor *mean, const Tensor *rstd, const Tensor *gamma, int groups) {
    groupnorm_bwd(din, NULL, dgamma, dbeta, dout, in, NULL, mean, rstd, gamma, NULL, groups, -1,
                  "groupnorm_backward");
}

void groupnorm_act_backward(Tensor *din, Tensor *dgamma, Tensor *dbeta, const Tensor *dout, const Tensor *in,
                            const Tensor *mean, const Tensor *rstd, const Tensor *gamma, const Tensor *beta,
                            int groups, Activation act) {
    groupnorm_act_backward_cat(din, NULL, dgamma, dbeta, dout, in, NULL, mean, rstd, gamma, beta, groups, act);
}

void groupnorm_act_backward_cat(Tensor *da, Tensor *db, Tensor *dgamma, Tensor *dbeta, const Tensor *dout,
                                const Tensor *a, const Tensor *b, const Tensor *mean, const Tensor *rstd,
                                const Tensor *gamma, const Tensor *beta, int groups, Activation act) {
    CHECK((unsigned)act <= (unsigned)ACT_QUICK_GELU, "", "groupnorm_act_backward: unknown activation %d", (int)act);
    groupnorm_bwd(da, db, dgamma, dbeta, dout, a, b, mean, rstd, gamma, beta, groups, (int)act,
                  "groupnorm_act_backward");
}

size_t groupnorm_workspace_bytes(const Tensor *in, int groups) {
    GnIn g = gn_in(in, NULL, groups, "groupnorm_workspace_bytes");
    return groupnorm_workspace_bytes_cuda(g.B, g.C, g.S, groups);
}

// in/out [N, C] (N = all leading dims): out = (in - mean[n]) * rstd[n] * gamma[c] + beta[c]; mean, rstd [N] written
void layernorm_forward(Tensor *out, Tensor *mean, Tensor *rstd, const Tensor *in, const Tensor *gamma,
                       const Tensor *beta, float eps) {
    int64_t N = tensor_rows(in), C = in->shape[in->ndim - 1];
    expect_same_shape(out, in, "layernorm_forward", "output");
    expect_numel(mean, N, "layernorm_forward", "mean");
    expect_numel(rstd, N, "layernorm_forward", "rstd");
    tensor_expect_shape(gamma, "layernorm gamma", C);
    tensor_expect_shape(beta, "layernorm beta", C);
    if (OPS_ON_CUDA(out)) {
        const char *op = "layernorm_forward";
        OPS_EXPECT_CUDA(out, op);
        OPS_EXPECT_CUDA_F32(mean, op);
        OPS_EXPECT_CUDA_F32(rstd, op);
        OPS_EXPECT_CUDA(in, op);
        OPS_EXPECT_CUDA(gamma, op);
        OPS_EXPECT_CUDA(beta, op);
        ops_expect_same_dtype(out, in, op);
        ops_expect_same_dtype(beta, gamma, op);
        layernorm_forward_cuda(out->data, mean->data, rstd->data, in->data, gamma->data, beta->data, N, C, eps,
                               ops_dt(in), ops_dt(gamma));
        return;
    }
    OPS_EXPECT_CPU(out, "layernorm_forward");
    OPS_EXPECT_CPU(mean, "layernorm_forward");
    OPS_EXPECT_CPU(rstd, "layernorm_forward");
    OPS_EXPECT_CPU(in, "layernorm_forward");
    OPS_EXPECT_CPU(gamma, "layernorm_forward");
    OPS_EXPECT_CPU(beta, "layernorm_forward");
    float *y = tensor_f32(out), *mu = tensor_f32(mean), *rs = tensor_f32(rstd);
    const float *x = tensor_f32(in), *ga = tensor_f32(gamma), *be = tensor_f32(beta);
#pragma omp parallel for if (N * C > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *xi = x + n * C;
        float *yi = y + n * C;
        moments(xi, C, eps, &mu[n], &rs[n]);
        float m = mu[n], r = rs[n];
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yi[c] = ((xi[c] - m) * r) * ga[c] + be[c];
    }
}

// Per row, with xhat = (x - mean) rstd and dyhat = dout gamma:
// din = rstd (dyhat - mean_c(dyhat) - xhat mean_c(dyhat xhat)) (written);
// dgamma[c] += sum_n dout xhat; dbeta[c] += sum_n dout.
// The parameter sums go through per-chunk partials over a fixed number of row chunks: no races, and the result
// does not depend on the thread count.
void layernorm_backward(Tensor *din, Tensor *dgamma, Tensor *dbeta, const Tensor *dout, const Tensor *in,
                        const Tensor *mean, const Tensor *rstd, const Tensor *gamma) {
    int64_t N = tensor_rows(in), C = in->shape[in->ndim - 1];
    expect_same_shape(dout, in, "layernorm_backward", "dout");
    if (ops_want(din)) expect_same_shape(din, in, "layernorm_backward", "din");
    expect_numel(mean, N, "layernorm_backward", "mean");
    expect_numel(rstd, N, "layernorm_backward", "rstd");
    tensor_expect_shape(gamma, "layernorm gamma", C);
    if (ops_want(dgamma)) tensor_expect_shape(dgamma, "layernorm gamma grad", C);
    if (ops_want(dbeta)) tensor_expect_shape(dbeta, "layernorm beta grad", C);
    if (OPS_ON_CUDA(dout)) {
        const char *op = "layernorm_backward";
        OPS_EXPECT_CUDA(dout, op);
        OPS_EXPECT_CUDA(in, op);
        OPS_EXPECT_CUDA_F32(mean, op);
        OPS_EXPECT_CUDA_F32(rstd, op);
        OPS_EXPECT_CUDA(gamma, op);
        OPS_EXPECT_CUDA(din, op);
        OPS_EXPECT_CUDA_F32(dgamma, op);
        OPS_EXPECT_CUDA_F32(dbeta, op);
        ops_expect_same_dtype(dout, in, op);
        ops_expect_same_dtype(din, in, op);
        void *ws = ops_want(dgamma) || ops_want(dbeta)
                       ? ops_workspace(DEVICE_CUDA, layernorm_workspace_bytes_cuda(N, C))
                       : NULL;
        layernorm_backward_cuda(ops_want(din) ? din->data : NULL, ops_want(dgamma) ? dgamma->data : NULL,
                                ops_want(dbeta) ? dbeta->data : NULL, dout->data, in->data, mean->data, rstd->data,
                                gamma->data, ws, N, C, ops_dt(in), ops_dt(gamma));
        return;
    }
    OPS_EXPECT_CPU(dout, "layernorm_backward");
    OPS_EXPECT_CPU(in, "layernorm_backward");
    OPS_EXPECT_CPU(mean, "layernorm_backward");
    OPS_EXPECT_CPU(rstd, "layernorm_backward");
    OPS_EXPECT_CPU(gamma, "layernorm_backward");
    OPS_EXPECT_CPU(din, "layernorm_backward");
    OPS_EXPECT_CPU(dgamma, "layernorm_backward");
    OPS_EXPECT_CPU(dbeta, "layernorm_backward");
    const float *dy = tensor_f32(dout), *x = tensor_f32(in), *mu = tensor_f32(mean), *rs = tensor_f32(rstd),
                *ga = tensor_f32(gamma);
    float *dx = ops_want(din) ? tensor_f32(din) : NULL;
    int want_params = ops_want(dgamma) || ops_want(dbeta);
    int64_t K = N < 64 ? N : 64; // row chunks
    // part [K, 2, C]: per chunk, sum dout xhat then sum dout
    double *part = want_params ? ops_workspace(DEVICE_CPU, sizeof(double) * 2 * (size_t)(K * C)) : NULL;
    double inv_c = 1.0 / (double)C;
#pragma omp parallel for if (N * C > 65536)
    for (int64_t k = 0; k < K; k++) {
        double *pg = part ? part + 2 * k * C : NULL, *pb = part ? pg + C : NULL;
        if (part) memset(pg, 0, sizeof(double) * 2 * (size_t)C);
        for (int64_t n = N * k / K; n < N * (k + 1) / K; n++) {
            const float *dyi = dy + n * C, *xi = x + n * C;
            double m = mu[n], r = rs[n];
            if (part) {
#pragma omp simd
                for (int64_t c = 0; c < C; c++) {
                    pg[c] += (double)dyi[c] * (((double)xi[c] - m) * r);
                    pb[c] += dyi[c];
                }
            }
            if (dx) {
                double mdy = 0.0, mdyx = 0.0; // mean(dyhat), mean(dyhat xhat) over the row
#pragma omp simd reduction(+ : mdy, mdyx)
                for (int64_t c = 0; c < C; c++) {
                    double g = (double)dyi[c] * ga[c];
                    mdy += g;
                    mdyx += g * (((double)xi[c] - m) * r);
                }
                float mf = mu[n], rf = rs[n];
                float a = (float)(mdy * inv_c * r), e = (float)(mdyx * inv_c * r);
                float *dxi = dx + n * C;
#pragma omp simd
                for (int64_t c = 0; c < C; c++) dxi[c] = (dyi[c] * ga[c] * rf - a) - ((xi[c] - mf) * rf) * e;
            }
        }
    }
    if (want_params) add_param_grads(dgamma, dbeta, part, part + C, K, 2 * C, C);
}

size_t layernorm_workspace_bytes(const Tensor *in) {
    return layernorm_workspace_bytes_cuda(tensor_rows(in), in->shape[in->ndim - 1]);
}
