// activation.c: pointwise activations (SiLU, GELU erf and tanh forms, quick GELU), GEGLU and softmax over the last
// dim, forward and backward. The CUDA kernels (cuda/cuda_activation.cu) use the same formulas.
#include <math.h>

#include "ops_internal.h"
#include "vecmath.h"

#define SQRT1_2 0.70710678118654752f     // 1 / sqrt(2)
#define INV_SQRT_2PI 0.39894228040143268f // 1 / sqrt(2 pi)
#define SQRT_2_PI 0.79788456080286536f    // sqrt(2 / pi)
#define GELU_TANH_C 0.044715f
#define QUICK_GELU_C 1.702f

const char *activation_name(Activation a) {
    switch (a) {
    case ACT_SILU: return "silu";
    case ACT_GELU: return "gelu";
    case ACT_GELU_TANH: return "gelu_tanh";
    case ACT_QUICK_GELU: return "quick_gelu";
    }
    return "unknown";
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erf_f32(x * SQRT1_2)); }
// d/dx gelu_erf = Phi(x) + x phi(x)
static inline float gelu_erf_grad(float x) {
    return 0.5f * (1.0f + erf_f32(x * SQRT1_2)) + x * INV_SQRT_2PI * exp_f32(-0.5f * x * x);
}

static inline float act_f(float x, Activation act) {
    switch (act) {
    case ACT_SILU: return x / (1.0f + exp_f32(-x));
    case ACT_GELU: return gelu_erf(x);
    case ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(SQRT_2_PI * (x + GELU_TANH_C * x * x * x)));
    case ACT_QUICK_GELU: return x / (1.0f + exp_f32(-QUICK_GELU_C * x));
    }
    return 0.0f;
}

static inline float act_df(float x, Activation act) {
    switch (act) {
    case ACT_SILU: {
        float s = sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case ACT_GELU: return gelu_erf_grad(x);
    case ACT_GELU_TANH: {
        float t = tanhf(SQRT_2_PI * (x + GELU_TANH_C * x * x * x));
        float du = SQRT_2_PI * (1.0f + 3.0f * GELU_TANH_C * x * x);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    }
    case ACT_QUICK_GELU: {
        float s = sigmoid(QUICK_GELU_C * x);
        return s + QUICK_GELU_C * x * s * (1.0f - s);
    }
    }
    return 0.0f;
}

// One vector loop per activation: the switch stays out of the loop (y may alias x; dx may alias dy or x).
#define ACT_LOOP(act, body)                                                                                           \
    switch (act) {                                                                                                    \
    case ACT_SILU: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) body(ACT_SILU); break;                        \
    case ACT_GELU: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) body(ACT_GELU); break;                        \
    case ACT_GELU_TANH: for (int64_t i = 0; i < n; i++) body(ACT_GELU_TANH); break;                                 \
    case ACT_QUICK_GELU: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) body(ACT_QUICK_GELU); break;            \
    }
#define ACT_FWD(a) y[i] = act_f(x[i], a)
#define ACT_BWD(a) dx[i] = dy[i] * act_df(x[i], a)

void activation_forward_f32(float *y, const float *x, int64_t n, Activation act) { ACT_LOOP(act, ACT_FWD) }

void activation_backward_f32(float *dx, const float *dy, const float *x, int64_t n, Activation act) {
    ACT_LOOP(act, ACT_BWD)
}

static void expect_valid_activation(Activation act, const char *op) {
    CHECK((unsigned)act <= (unsigned)ACT_QUICK_GELU, "", "%s: unknown activation %d", op, (int)act);
}

// The CUDA path takes the operands of one op in one storage dtype (f32 or bf16).
static void expect_cuda_like(const Tensor *t, const Tensor *ref, const char *op) {
    if (!ops_want(t)) return;
    OPS_EXPECT_CUDA(t, op);
    CHECK(t->dtype == ref->dtype, "", "%s: operands stored as %s and %s", op, dtype_name(t->dtype),
          dtype_name(ref->dtype));
}

// out = act(in), any shape (out may alias in)
void activation_forward(Tensor *out, const Tensor *in, Activation act) {
    ops_expect_same_numel(out, in, "activation_forward");
    expect_valid_activation(act, "activation_forward");
    int64_t n = tensor_numel(out);
    if (OPS_ON_CUDA(out)) {
        expect_cuda_like(out, in, "activation_forward");
        OPS_EXPECT_CUDA(in, "activation_forward");
        activation_forward_cuda(out->data, in->data, n, (int)act, ops_dt(in));
        return;
    }
    OPS_EXPECT_CPU(out, "activation_forward");
    OPS_EXPECT_CPU(in, "activation_forward");
    float *y = tensor_f32(out);
    const float *x = tensor_f32(in);
    int64_t chunk = 16384; // elements per task: whole vectors, cache-sized
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i += chunk) activation_forward_f32(y + i, x + i, n - i < chunk ? n - i : chunk, act);
}

// din = dout * act'(in) (written; din may alias dout)
void activation_backward(Tensor *din, const Tensor *dout, const Tensor *in, Activation act) {
    if (!ops_want(din)) return;
    ops_expect_same_numel(din, in, "activation_backward");
    ops_expect_same_numel(dout, in, "activation_backward");
    expect_valid_activation(act, "activation_backward");
    int64_t n = tensor_numel(in);
    if (OPS_ON_CUDA(dout)) {
        expect_cuda_like(din, in, "activation_backward");
        expect_cuda_like(dout, in, "activation_backward");
        OPS_EXPECT_CUDA(in, "activation_backward");
        activation_backward_cuda(din->data, dout->data, in->data, n, (int)act, ops_dt(in));
        return;
    }
    OPS_EXPECT_CPU(din, "activation_backward");
    OPS_EXPECT_CPU(dout, "activation_backward");
    OPS_EXPECT_CPU(in, "activation_backward");
    float *dx = tensor_f32(din);
    const float *dy = tensor_f32(dout), *x = tensor_f32(in);
    int64_t chunk = 16384;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i += chunk)
        activation_backward_f32(dx + i, dy + i, x + i, n - i < chunk ? n - i : chunk, act);
}

// in [N, 2D] = [h | g], out [N, D]: rows and D of a geglu pair
static void geglu_dims(const Tensor *out, const Tensor *in, const char *op, int64_t *N, int64_t *D) {
    char a[96], b[96];
    int64_t D2 = in->shape[in->ndim - 1];
    *N = tensor_rows(in), *D = D2 / 2;
    CHECK(D2 % 2 == 0 && tensor_rows(out) == *N && out->shape[out->ndim - 1] == *D, "",
          "%s: input %s and output %s are not [N, 2D] and [N, D]", op, tensor_shape_str(in, a, sizeof a),
          tensor_shape_str(out, b, sizeof b));
}

// out[n, j] = h[n, j] * gelu_erf(g[n, j]) with h = in[n, j], g = in[n, D + j]
void geglu_forward(Tensor *out, const Tensor *in) {
    int64_t N, D;
    geglu_dims(out, in, "geglu_forward", &N, &D);
    if (OPS_ON_CUDA(out)) {
        expect_cuda_like(out, in, "geglu_forward");
        OPS_EXPECT_CUDA(in, "geglu_forward");
        geglu_forward_cuda(out->data, in->data, N, D, ops_dt(in));
        return;
    }
    OPS_EXPECT_CPU(out, "geglu_forward");
    OPS_EXPECT_CPU(in, "geglu_forward");
    float *y = tensor_f32(out);
    const float *x = tensor_f32(in);
#pragma omp parallel for if (N * D > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *h = x + n * 2 * D, *g = h + D;
        float *yn = y + n * D;
#pragma omp simd
        for (int64_t j = 0; j < D; j++) yn[j] = h[j] * gelu_erf(g[j]);
    }
}

// dh = dout * gelu_erf(g), dg = dout * h * gelu_erf'(g) (din [N, 2D] written)
void geglu_backward(Tensor *din, const Tensor *dout, const Tensor *in) {
    if (!ops_want(din)) return;
    int64_t N, D;
    geglu_dims(dout, in, "geglu_backward", &N, &D);
    char a[96], b[96];
    CHECK(tensor_numel(din) == tensor_numel(in), "", "geglu_backward: din %s, input %s",
          tensor_shape_str(din, a, sizeof a), tensor_shape_str(in, b, sizeof b));
    if (OPS_ON_CUDA(din)) {
        expect_cuda_like(din, in, "geglu_backward");
        expect_cuda_like(dout, in, "geglu_backward");
        OPS_EXPECT_CUDA(in, "geglu_backward");
        geglu_backward_cuda(din->data, dout->data, in->data, N, D, ops_dt(in));
        return;
    }
    OPS_EXPECT_CPU(din, "geglu_backward");
    OPS_EXPECT_CPU(dout, "geglu_backward");
    OPS_EXPECT_CPU(in, "geglu_backward");
    float *dx = tensor_f32(din);
    const float *dy = tensor_f32(dout), *x = tensor_f32(in);
#pragma omp parallel for if (N * D > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *h = x + n * 2 * D, *g = h + D, *dyn = dy + n * D;
        float *dh = dx + n * 2 * D, *dg = dh + D;
#pragma omp simd
        for (int64_t j = 0; j < D; j++) {
            float d = dyn[j], hj = h[j], gj = g[j];
            dh[j] = d * gelu_erf(gj);
            dg[j] = d * hj * gelu_erf_grad(gj);
        }
    }
}

static void expect_same_shape(const Tensor *t, const Tensor *ref, const char *op) {
    int ok = t->ndim == ref->ndim;
    for (int i = 0; ok && i < t->ndim; i++) ok = t->shape[i] == ref->shape[i];
    char a[96], b[96];
    CHECK(ok, "", "%s: shapes %s and %s differ", op, tensor_shape_str(t, a, sizeof a),
          tensor_shape_str(ref, b, sizeof b));
}

// out [N, C] = exp(in - max_c in) / sum_c exp(in - max_c in), row by row (out may alias in)
void softmax_forward(Tensor *out, const Tensor *in) {
    expect_same_shape(out, in, "softmax_forward");
    int64_t N = tensor_rows(in), C = in->shape[in->ndim - 1];
    if (OPS_ON_CUDA(out)) {
        expect_cuda_like(out, in, "softmax_forward");
        OPS_EXPECT_CUDA(in, "softmax_forward");
        softmax_forward_cuda(out->data, in->data, N, C, ops_dt(in));
        return;
    }
    OPS_EXPECT_CPU(out, "softmax_forward");
    OPS_EXPECT_CPU(in, "softmax_forward");
    float *y = tensor_f32(out);
    const float *x = tensor_f32(in);
#pragma omp parallel for if (N * C > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x + n * C;
        float *yn = y + n * C;
        float mx = -INFINITY;
        for (int64_t c = 0; c < C; c++) mx = xn[c] > mx ? xn[c] : mx;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < C; c++) {
            yn[c] = exp_f32(xn[c] - mx);
            sum += yn[c];
        }
        double inv = 1.0 / sum;
        for (int64_t c = 0; c < C; c++) yn[c] = (float)(yn[c] * inv);
    }
}

// din = out * (dout - sum_c dout * out), row by row (written; din may alias dout)
void softmax_backward(Tensor *din, const Tensor *dout, const Tensor *out) {
    if (!ops_want(din)) return;
    expect_same_shape(dout, out, "softmax_backward");
    expect_same_shape(din, out, "softmax_backward");
    int64_t N = tensor_rows(out), C = out->shape[out->ndim - 1];
    if (OPS_ON_CUDA(din)) {
        expect_cuda_like(din, out, "softmax_backward");
        expect_cuda_like(dout, out, "softmax_backward");
        OPS_EXPECT_CUDA(out, "softmax_backward");
        softmax_backward_cuda(din->data, dout->data, out->data, N, C, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(din, "softmax_backward");
    OPS_EXPECT_CPU(dout, "softmax_backward");
    OPS_EXPECT_CPU(out, "softmax_backward");
    float *dx = tensor_f32(din);
    const float *dy = tensor_f32(dout), *y = tensor_f32(out);
#pragma omp parallel for if (N * C > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *dyn = dy + n * C, *yn = y + n * C;
        float *dxn = dx + n * C;
        double dot = 0.0;
        for (int64_t c = 0; c < C; c++) dot += (double)dyn[c] * yn[c];
        float d = (float)dot;
        for (int64_t c = 0; c < C; c++) dxn[c] = yn[c] * (dyn[c] - d);
    }
}
