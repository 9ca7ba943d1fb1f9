// gradcheck_activation.c: finite-difference checks of the pointwise activations, GEGLU and softmax, and their
// forwards (and the activation derivatives) against double-precision evaluations of the definitions, including
// inputs far in the tails where exp overflows; and the error in ulps of the vectorisable exp and erf they use
// (ops/vecmath.h) against double-precision exp and erf over a dense grid.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/ops/ops.h"
#include "../src/ops/vecmath.h"
#include "gradcheck.h"

typedef enum { K_ACT, K_GEGLU, K_SOFTMAX } Kind;

typedef struct {
    Tensor x, dx; // [..., C] ([..., 2D] for geglu)
    Tensor y, dy; // [..., C] ([..., D] for geglu)
    Kind kind;
    Activation act;
} Ctx;

static void fwd(void *p) {
    Ctx *c = p;
    switch (c->kind) {
    case K_ACT: activation_forward(&c->y, &c->x, c->act); break;
    case K_GEGLU: geglu_forward(&c->y, &c->x); break;
    case K_SOFTMAX: softmax_forward(&c->y, &c->x); break;
    }
}

static void bwd(void *p) {
    Ctx *c = p;
    switch (c->kind) {
    case K_ACT: activation_backward(&c->dx, &c->dy, &c->x, c->act); break;
    case K_GEGLU: geglu_backward(&c->dx, &c->dy, &c->x); break;
    case K_SOFTMAX: softmax_backward(&c->dx, &c->dy, &c->y); break;
    }
}

// x [rows, C]; the output has C / 2 columns for geglu
static Ctx make(Kind kind, Activation act, int64_t rows, int64_t C, float lo, float hi) {
    Ctx c = {.kind = kind, .act = act};
    int64_t OC = kind == K_GEGLU ? C / 2 : C;
    c.x = GC_TENSOR(rows, C), c.dx = GC_TENSOR(rows, C);
    c.y = GC_TENSOR(rows, OC), c.dy = GC_TENSOR(rows, OC);
    gc_fill_uniform(&c.x, lo, hi, 11);
    return c;
}

static int gradcheck(Ctx *c, const char *name) {
    GradCheck g = {.name = name, .ctx = c, .forward = fwd, .backward = bwd};
    g.wrt[0] = &c->x, g.grad[0] = &c->dx, g.n_wrt = 1;
    g.out[0] = &c->y, g.dout[0] = &c->dy, g.n_out = 1;
    return gradcheck_run(&g);
}

static double ref_act(double x, Activation a) {
    switch (a) {
    case ACT_SILU: return x / (1.0 + exp(-x));
    case ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    }
    return NAN;
}

// derivatives as written in model_specs.md section 8 (tanh form: product rule on the definition)
static double ref_dact(double x, Activation a) {
    switch (a) {
    case ACT_SILU: {
        double s = 1.0 / (1.0 + exp(-x));
        return s * (1.0 + x * (1.0 - s));
    }
    case ACT_GELU: return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
    case ACT_GELU_TANH: {
        double k = sqrt(2.0 / M_PI), t = tanh(k * (x + 0.044715 * x * x * x));
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
    }
    case ACT_QUICK_GELU: {
        double s = 1.0 / (1.0 + exp(-1.702 * x));
        return s + 1.702 * x * s * (1.0 - s);
    }
    }
    return NAN;
}

static int verdict(const char *name, const char *what, double err, double tol) {
    int ok = err <= tol; // also false for NaN
    printf("%s %-28s %s: max err %.2e (tol %.0e)\n", ok ? "ok  " : "FAIL", name, what, err, tol);
    return !ok;
}

// Forward against the definition in double; the error of act(x) is measured relative to max(|act(x)|, |x|), the
// scale of its fp32 rounding (0.5 x (1 + erf) loses relative accuracy where erf is close to -1, in PyTorch too).
// The derivative is compared absolutely (it is O(1)). The in-place forward (out == in) must give the same bits.
static int check_act_reference(Activation act, float lo, float hi, const char *name) {
    Ctx c = make(K_ACT, act, 8, 125, lo, hi);
    int64_t n = tensor_numel(&c.x);
    const float *x = tensor_f32(&c.x), *y = tensor_f32(&c.y), *dx = tensor_f32(&c.dx);
    tensor_fill(&c.dy, 1.0f);
    fwd(&c);
    bwd(&c);
    double ef = 0.0, eb = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double r = ref_act(x[i], act), scale = fmax(fabs(r), fabs((double)x[i]));
        if (scale > 0) ef = fmax(ef, fabs(y[i] - r) / scale);
        if (y[i] != y[i]) ef = INFINITY;
        eb = fmax(eb, fabs(dx[i] - ref_dact(x[i], act)));
        if (dx[i] != dx[i]) eb = INFINITY;
    }
    int f = verdict(name, "forward vs double", ef, 1e-5);
    f += verdict(name, "derivative vs double", eb, 1e-5);
    activation_forward(&c.x, &c.x, act); // in place
    int same = memcmp(c.x.data, c.y.data, sizeof(float) * (size_t)n) == 0;
    printf("%s %-28s in-place forward equals out-of-place\n", same ? "ok  " : "FAIL", name);
    return f + !same;
}

// out = h * gelu_erf(g); error relative to max(|out|, |h g|) (see above)
static int check_geglu_reference(void) {
    Ctx c = make(K_GEGLU, ACT_GELU, 6, 2 * 33, -6.0f, 6.0f);
    int64_t N = 6, D = 33;
    fwd(&c);
    const float *x = tensor_f32(&c.x), *y = tensor_f32(&c.y);
    double e = 0.0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < D; j++) {
            double h = x[n * 2 * D + j], g = x[n * 2 * D + D + j], r = h * ref_act(g, ACT_GELU);
            double scale = fmax(fabs(r), fabs(h * g));
            float a = y[n * D + j];
            e = a == a ? fmax(e, fabs(a - r) / scale) : INFINITY;
        }
    return verdict("geglu[6,66]", "forward vs double", e, 1e-5);
}

// softmax rows against exp(x) / sum exp(x) in double, per element relative; the rows sum to 1
static int check_softmax_reference(float lo, float hi, const char *name) {
    int64_t N = 7, C = 53;
    Ctx c = make(K_SOFTMAX, ACT_SILU, N, C, lo, hi);
    fwd(&c);
    const float *x = tensor_f32(&c.x), *y = tensor_f32(&c.y);
    double e = 0.0, es = 0.0;
    for (int64_t n = 0; n < N; n++) {
        double mx = -INFINITY, s = 0.0, sy = 0.0;
        for (int64_t k = 0; k < C; k++) mx = fmax(mx, x[n * C + k]);
        for (int64_t k = 0; k < C; k++) s += exp(x[n * C + k] - mx);
        for (int64_t k = 0; k < C; k++) {
            double r = exp(x[n * C + k] - mx) / s;
            float a = y[n * C + k];
            e = a == a ? fmax(e, fabs(a - r) / r) : INFINITY;
            sy += a;
        }
        es = fmax(es, fabs(sy - 1.0));
    }
    return verdict(name, "forward vs double", e, 1e-5) + verdict(name, "row sums - 1", es, 1e-5);
}

// the spacing of the floats around |r| (the subnormal spacing below FLT_MIN)
static double ulp_at(double r) {
    int e;
    frexp(fabs(r), &e);
    return ldexp(1.0, (e - 24 > -149 ? e - 24 : -149));
}

// erf_f32 and exp_f32 against erf and exp in double at 2^22 points spread evenly over the range where their
// results are not 0, +-1 or inf, plus the special values. Measured over every float: erf_f32 2.55 ulp at most (at
// x = 0.99; libm's erff 0.97), exp_f32 1.36 (libm's expf 0.50); the tolerances leave half an ulp for other
// compilers' rounding of the same operations.
static int check_vecmath(void) {
    const int64_t n = (int64_t)1 << 22;
    double ee = 0.0, ex = 0.0;
    for (int64_t i = 0; i <= n; i++) {
        float x = -4.0f + 8.0f * (float)i / (float)n, y = -103.0f + 191.0f * (float)i / (float)n;
        double re = erf((double)x), rx = exp((double)y);
        ee = fmax(ee, fabs(erf_f32(x) - re) / ulp_at(re));
        ex = fmax(ex, fabs(exp_f32(y) - rx) / ulp_at(rx));
    }
    // tiny arguments (erf(x) ~ 2x / sqrt(pi)), and the ends of the ranges
    for (float x = 1e-30f; x < 1.0f; x *= 1.01f) ee = fmax(ee, fabs(erf_f32(-x) - erf(-(double)x)) / ulp_at(erf(x)));
    int special = erf_f32(5.0f) == 1.0f && erf_f32(-INFINITY) == -1.0f && erf_f32(0.0f) == 0.0f &&
                  isnan(erf_f32(NAN)) && isinf(exp_f32(89.0f)) && exp_f32(-110.0f) == 0.0f && isnan(exp_f32(NAN)) &&
                  exp_f32(0.0f) == 1.0f;
    int f = verdict("erf_f32", "ulps vs double erf", ee, 3.0);
    f += verdict("exp_f32", "ulps vs double exp", ex, 2.0);
    printf("%s %-28s special values (0, +-1, inf, NaN)\n", special ? "ok  " : "FAIL", "erf_f32, exp_f32");
    return f + !special;
}

int main(void) {
    int f = 0, checks = 0;
    const Activation acts[] = {ACT_SILU, ACT_GELU, ACT_GELU_TANH, ACT_QUICK_GELU};
    char name[64];
    for (int i = 0; i < 4; i++) {
        Ctx c = make(K_ACT, acts[i], 4, 37, -5.0f, 5.0f);
        snprintf(name, sizeof name, "activation %s", activation_name(acts[i]));
        f += gradcheck(&c, name);
        f += check_act_reference(acts[i], -6.0f, 6.0f, name);
        snprintf(name, sizeof name, "activation %s (tails)", activation_name(acts[i]));
        f += check_act_reference(acts[i], -100.0f, 100.0f, name);
        checks += 7;
    }
    Ctx g = make(K_GEGLU, ACT_GELU, 6, 2 * 5, -3.0f, 3.0f); // [6, 10] -> [6, 5]
    f += gradcheck(&g, "geglu[6,10]");
    f += check_geglu_reference();
    Ctx s = make(K_SOFTMAX, ACT_SILU, 5, 9, -3.0f, 3.0f);
    f += gradcheck(&s, "softmax[5,9]");
    f += check_softmax_reference(-8.0f, 8.0f, "softmax[7,53]");
    f += check_softmax_reference(80.0f, 120.0f, "softmax[7,53] (x ~ 100)");
    checks += 2 + 2 + 4;
    f += check_vecmath();
    checks += 3;
    return gc_report(f, checks);
}
