// ddim.c: DDIMScheduler in fp32 with diffusers' rounding: betas from a float32 linspace evaluated with fused
// multiply-adds (as torch's CPU kernel does), cumulative products accumulated in double and rounded per element
// (torch's CPU cumprod), step arithmetic in diffusers' order; timesteps from numpy's double arithmetic.
// The per-element steps run on the GPU when their tensors live there (ops/cuda/cuda_train.cu): the coefficients are
// host values passed as kernel arguments (the schedule is on the host), so nothing is read back.
#include "ddim.h"

#include <math.h>
#include <string.h>

#include "../core/common.h"
#include "../io/json.h"
#include "../ops/ops_internal.h"

DdimConfig ddim_default_config(void) {
    DdimConfig c = {.num_train_timesteps = 1000, .beta_start = 0.00085, .beta_end = 0.012, .scaled_linear = 1,
                    .steps_offset = 1, .set_alpha_to_one = 0, .spacing = SPACING_LEADING,
                    .prediction = PRED_EPSILON, .clip_sample = 0, .clip_sample_range = 1.0f};
    return c;
}

DdimConfig ddim_load_config(const char *path) {
    JsonDoc d;
    json_load(&d, path);
    DdimConfig c = ddim_default_config();
    c.num_train_timesteps = json_get_int(&d, "num_train_timesteps", 1000);
    USER_CHECK(c.num_train_timesteps >= 2 && c.num_train_timesteps <= 100000, "'%s': num_train_timesteps %d out of range",
               path, c.num_train_timesteps);
    c.beta_start = json_get_number(&d, "beta_start", 0.0001);
    c.beta_end = json_get_number(&d, "beta_end", 0.02);
    const char *bs = json_get_string(&d, "beta_schedule", "linear");
    if (!strcmp(bs, "scaled_linear"))
        c.scaled_linear = 1;
    else if (!strcmp(bs, "linear"))
        c.scaled_linear = 0;
    else
        dt_user_error("'%s': beta_schedule '%s' is not supported (use linear or scaled_linear)", path, bs);
    USER_CHECK(!json_has(&d, "trained_betas"), "'%s': trained_betas is not supported", path);
    c.steps_offset = json_get_int(&d, "steps_offset", 0);
    c.set_alpha_to_one = json_get_bool(&d, "set_alpha_to_one", 1);
    const char *sp = json_get_string(&d, "timestep_spacing", "leading");
    if (!strcmp(sp, "leading"))
        c.spacing = SPACING_LEADING;
    else if (!strcmp(sp, "trailing"))
        c.spacing = SPACING_TRAILING;
    else if (!strcmp(sp, "linspace"))
        c.spacing = SPACING_LINSPACE;
    else
        dt_user_error("'%s': timestep_spacing '%s' is not one of leading, trailing, linspace", path, sp);
    const char *pt = json_get_string(&d, "prediction_type", "epsilon");
    if (!strcmp(pt, "epsilon"))
        c.prediction = PRED_EPSILON;
    else if (!strcmp(pt, "v_prediction"))
        c.prediction = PRED_V;
    else if (!strcmp(pt, "sample"))
        c.prediction = PRED_SAMPLE;
    else
        dt_user_error("'%s': prediction_type '%s' is not one of epsilon, v_prediction, sample", path, pt);
    c.clip_sample = json_get_bool(&d, "clip_sample", 1);
    c.clip_sample_range = (float)json_get_number(&d, "clip_sample_range", 1.0);
    USER_CHECK(!json_get_bool(&d, "thresholding", 0), "'%s': thresholding is not supported", path);
    USER_CHECK(!json_get_bool(&d, "rescale_betas_zero_snr", 0), "'%s': rescale_betas_zero_snr is not supported",
               path);
    USER_CHECK(c.beta_start > 0 && c.beta_end > c.beta_start && c.beta_end < 1, "'%s': need 0 < beta_start < beta_end < 1",
               path);
    json_free(&d);
    return c;
}

void ddim_init(Ddim *s, const DdimConfig *cfg) {
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    int N = cfg->num_train_timesteps;
    s->alphas_cumprod = xmalloc(sizeof(float) * (size_t)N);
    // torch.linspace(lo, hi, N, dtype=float32): lo + step*i for the first half, hi - step*(N-1-i) for the second,
    // each one fused multiply-add in float
    float lo = (float)(cfg->scaled_linear ? sqrt(cfg->beta_start) : cfg->beta_start);
    float hi = (float)(cfg->scaled_linear ? sqrt(cfg->beta_end) : cfg->beta_end);
    float step = (hi - lo) / (float)(N - 1);
    double prod = 1.0;
    for (int i = 0; i < N; i++) {
        float b = i < N / 2 ? fmaf(step, (float)i, lo) : fmaf(-step, (float)(N - 1 - i), hi);
        if (cfg->scaled_linear) b = b * b;
        float alpha = 1.0f - b;
        prod *= (double)alpha;
        s->alphas_cumprod[i] = (float)prod;
    }
    s->final_alpha_cumprod = cfg->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
}

void ddim_set_timesteps(Ddim *s, int n) {
    int N = s->cfg.num_train_timesteps;
    USER_CHECK(n >= 1 && n <= N, "number of sampling steps %d must be in [1, %d]", n, N);
    free(s->timesteps);
    s->timesteps = xmalloc(sizeof(int) * (size_t)n);
    s->num_inference_steps = n;
    for (int k = 0; k < n; k++) {
        double t;
        if (s->cfg.spacing == SPACING_LEADING) {
            t = rint((double)(n - 1 - k) * (double)(N / n)) + s->cfg.steps_offset;
        } else if (s->cfg.spacing == SPACING_TRAILING) {
            t = rint((double)N - (double)k * ((double)N / (double)n)) - 1.0;
        } else { // numpy linspace(0, N-1, n): i * step, the last one exactly N-1; reversed
            int i = n - 1 - k;
            t = (n == 1) ? 0.0 : (i == n - 1 ? (double)(N - 1) : rint((double)i * ((double)(N - 1) / (double)(n - 1))));
        }
        USER_CHECK(t >= 0 && t < N, "timestep %d out of range [0, %d) (check steps_offset)", (int)t, N);
        s->timesteps[k] = (int)t;
    }
}

void ddim_free(Ddim *s) {
    free(s->alphas_cumprod);
    free(s->timesteps);
    memset(s, 0, sizeof *s);
}

DdimStep ddim_step_coef(const Ddim *s, int i, float eta) {
    CHECK(i >= 0 && i < s->num_inference_steps, "call ddim_set_timesteps first", "step index %d out of range", i);
    DdimStep c;
    c.t = s->timesteps[i];
    c.t_prev = c.t - s->cfg.num_train_timesteps / s->num_inference_steps;
    c.alpha_t = s->alphas_cumprod[c.t];
    c.alpha_prev = c.t_prev >= 0 ? s->alphas_cumprod[c.t_prev] : s->final_alpha_cumprod;
    float beta_t = 1.0f - c.alpha_t, beta_prev = 1.0f - c.alpha_prev;
    float variance = (beta_prev / beta_t) * (1.0f - c.alpha_t / c.alpha_prev);
    c.std_dev = eta * sqrtf(variance);
    double sa = sqrt((double)c.alpha_t), sb = sqrt((double)beta_t);
    switch (s->cfg.prediction) {
    case PRED_EPSILON: c.cx = 1.0 / sa, c.cm = -sb / sa, c.ex = 0.0, c.em = 1.0; break;
    case PRED_V: c.cx = sa, c.cm = -sb, c.ex = sb, c.em = sa; break;
    case PRED_SAMPLE: c.cx = 0.0, c.cm = 1.0, c.ex = 1.0 / sb, c.em = -sa / sb; break;
    }
    double dir = sqrt((double)(1.0f - c.alpha_prev - c.std_dev * c.std_dev)), sp = sqrt((double)c.alpha_prev);
    c.A = sp * c.cx + dir * c.ex;
    c.B = sp * c.cm + dir * c.em;
    return c;
}

// x0 and eps of one element in diffusers' operation order (fp32)
static inline void predict(PredictionType p, float sa, float sb, float m, float x, float *x0, float *eps) {
    switch (p) {
    case PRED_EPSILON: *x0 = (x - sb * m) / sa, *eps = m; break;
    case PRED_V: *x0 = sa * x - sb * m, *eps = sa * m + sb * x; break;
    default: *x0 = m, *eps = (x - sa * m) / sb; break; // PRED_SAMPLE
    }
}

// The GPU path: every tensor given (NULL or without data: not used) on the GPU in x's storage dtype.
static int ddim_on_cuda(const char *op, const Tensor *x, const Tensor *const *ts, int n) {
    if (x->device != DEVICE_CUDA) return 0;
    OPS_EXPECT_CUDA(x, op);
    for (int k = 0; k < n; k++)
        if (ops_want(ts[k])) {
            OPS_EXPECT_CUDA(ts[k], op);
            ops_expect_same_dtype(ts[k], x, op);
        }
    return 1;
}
static void *ddim_data(const Tensor *t) { return ops_want(t) ? t->data : NULL; }

// One x_prev / x0 step on the GPU (ddim_step, ddim_predict_x0).
static void ddim_step_cuda_(const Ddim *s, const DdimStep *c, Tensor *x_prev, Tensor *x0, const Tensor *m,
                            const Tensor *x, const Tensor *z) {
    const float sa = sqrtf(c->alpha_t), sb = sqrtf(1.0f - c->alpha_t), sp = sqrtf(c->alpha_prev);
    const float dir = sqrtf(1.0f - c->alpha_prev - c->std_dev * c->std_dev);
    ddim_step_cuda(ddim_data(x_prev), ddim_data(x0), m->data, x->data, ddim_data(z), sa, sb, sp, dir, c->std_dev,
                   s->cfg.clip_sample_range, (int)s->cfg.prediction, s->cfg.clip_sample, tensor_numel(x), ops_dt(x));
}

void ddim_step(const Ddim *s, int i, float eta, Tensor *x_prev, Tensor *x0_pred, const Tensor *m, const Tensor *x,
               const Tensor *z) {
    DdimStep c = ddim_step_coef(s, i, eta);
    int64_t n = tensor_numel(x);
    CHECK(tensor_numel(m) == n && tensor_numel(x_prev) == n, "", "ddim_step: shape mismatch");
    CHECK(eta <= 0.0f || (z && tensor_numel(z) == n), "pass the step noise", "ddim_step: eta > 0 needs noise");
    CHECK(!x0_pred || tensor_numel(x0_pred) == n, "", "ddim_step: x0_pred shape mismatch");
    if (ddim_on_cuda("ddim_step", x, (const Tensor *[]){x_prev, x0_pred, m, eta > 0.0f ? z : NULL}, 4)) {
        ddim_step_cuda_(s, &c, x_prev, x0_pred, m, x, eta > 0.0f ? z : NULL);
        return;
    }
    const float sa = sqrtf(c.alpha_t), sb = sqrtf(1.0f - c.alpha_t), sp = sqrtf(c.alpha_prev);
    const float dir = sqrtf(1.0f - c.alpha_prev - c.std_dev * c.std_dev);
    const float lim = s->cfg.clip_sample_range;
    const float *mm = tensor_f32(m), *xx = tensor_f32(x), *zz = eta > 0.0f ? tensor_f32(z) : NULL;
    float *out = tensor_f32(x_prev), *x0o = x0_pred ? tensor_f32(x0_pred) : NULL;
    for (int64_t k = 0; k < n; k++) {
        float x0, eps;
        predict(s->cfg.prediction, sa, sb, mm[k], xx[k], &x0, &eps);
        if (s->cfg.clip_sample) x0 = fminf(fmaxf(x0, -lim), lim);
        float v = sp * x0 + dir * eps;
        if (zz) v = v + c.std_dev * zz[k];
        if (x0o) x0o[k] = x0;
        out[k] = v;
    }
}

void ddim_step_backward(const Ddim *s, int i, float eta, Tensor *dm, Tensor *dx, const Tensor *dx_prev,
                        const Tensor *dx0, const Tensor *m, const Tensor *x) {
    DdimStep c = ddim_step_coef(s, i, eta);
    int64_t n = tensor_numel(x);
    const float sa = sqrtf(c.alpha_t), sb = sqrtf(1.0f - c.alpha_t), lim = s->cfg.clip_sample_range;
    const double sp = sqrt((double)c.alpha_prev), dir = sqrt((double)(1.0f - c.alpha_prev - c.std_dev * c.std_dev));
    if (ddim_on_cuda("ddim_step_backward", x, (const Tensor *[]){dm, dx, dx_prev, dx0, m}, 5)) {
        ddim_step_backward_cuda(ddim_data(dm), ddim_data(dx), ddim_data(dx_prev), ddim_data(dx0), m->data, x->data, sa,
                                sb, lim, (int)s->cfg.prediction, s->cfg.clip_sample, sp, dir, c.cx, c.cm, c.ex, c.em,
                                n, ops_dt(x));
        return;
    }
    const float *g = dx_prev ? tensor_f32(dx_prev) : NULL, *g0 = dx0 ? tensor_f32(dx0) : NULL;
    const float *mm = tensor_f32(m), *xx = tensor_f32(x);
    float *om = dm ? tensor_f32(dm) : NULL, *ox = dx ? tensor_f32(dx) : NULL;
    for (int64_t k = 0; k < n; k++) {
        // gradient reaching x0 (through x_prev and directly), masked by the clamp when clipping
        double gx0 = (g ? sp * g[k] : 0.0) + (g0 ? g0[k] : 0.0);
        if (s->cfg.clip_sample) {
            float x0, eps;
            predict(s->cfg.prediction, sa, sb, mm[k], xx[k], &x0, &eps);
            if (x0 < -lim || x0 > lim) gx0 = 0.0;
        }
        double geps = g ? dir * g[k] : 0.0;
        if (om) om[k] = (float)(gx0 * c.cm + geps * c.em);
        if (ox) ox[k] = (float)(gx0 * c.cx + geps * c.ex);
    }
}

void ddim_predict_x0(const Ddim *s, int i, Tensor *x0, const Tensor *m, const Tensor *x) {
    DdimStep c = ddim_step_coef(s, i, 0.0f);
    int64_t n = tensor_numel(x);
    if (ddim_on_cuda("ddim_predict_x0", x, (const Tensor *[]){x0, m}, 2)) {
        ddim_step_cuda_(s, &c, NULL, x0, m, x, NULL);
        return;
    }
    const float sa = sqrtf(c.alpha_t), sb = sqrtf(1.0f - c.alpha_t), lim = s->cfg.clip_sample_range;
    const float *mm = tensor_f32(m), *xx = tensor_f32(x);
    float *o = tensor_f32(x0);
    for (int64_t k = 0; k < n; k++) {
        float v, eps;
        predict(s->cfg.prediction, sa, sb, mm[k], xx[k], &v, &eps);
        o[k] = s->cfg.clip_sample ? fminf(fmaxf(v, -lim), lim) : v;
    }
}

void ddim_add_noise(const Ddim *s, int t, Tensor *out, const Tensor *x0, const Tensor *noise) {
    CHECK(t >= 0 && t < s->cfg.num_train_timesteps, "", "add_noise timestep %d out of range", t);
    int64_t n = tensor_numel(x0);
    float a = s->alphas_cumprod[t];
    float sa = sqrtf(a), sb = sqrtf(1.0f - a);
    if (ddim_on_cuda("ddim_add_noise", x0, (const Tensor *[]){out, noise}, 2)) {
        ddim_add_noise_cuda(out->data, x0->data, noise->data, sa, sb, n, ops_dt(x0));
        return;
    }
    const float *x = tensor_f32(x0), *z = tensor_f32(noise);
    float *o = tensor_f32(out);
    for (int64_t k = 0; k < n; k++) o[k] = sa * x[k] + sb * z[k];
}
