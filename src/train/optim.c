// optim.c: AdamW, learning-rate schedule and gradient clipping of optim.h, on the CPU and (the *_device forms) on the
// GPU with the same fp32 arithmetic.
#include "optim.h"

#include <math.h>

#include "../ops/cuda/cuda_api.h"
#include "../ops/ops.h"

float adamw_lr(const AdamWConfig *c, int it) {
    if (c->warmup > 0 && it < c->warmup) return c->lr * (float)(it + 1) / (float)c->warmup;
    if (!c->cosine || c->total <= c->warmup) return c->lr;
    double progress = (double)(it - c->warmup) / (double)(c->total - c->warmup);
    if (progress > 1.0) progress = 1.0;
    double floor_ = c->min_lr_ratio, f = floor_ + (1.0 - floor_) * 0.5 * (1.0 + cos(M_PI * progress));
    return (float)(c->lr * f);
}

double grad_sumsq(const float *g, int64_t n) {
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n > 65536)
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    return s;
}

float grad_clip_coef(const AdamWConfig *c, double norm) {
    if (c->grad_clip <= 0.0f || norm <= (double)c->grad_clip) return 1.0f;
    return (float)((double)c->grad_clip / (norm + 1e-6));
}

// The step's scalars, shared by the CPU and GPU forms: bias corrections in double, as torch computes its Python
// scalars; torch.optim.AdamW (single-tensor path): p *= 1 - lr wd; m.lerp_(g, 1 - b1); v = b2 v + (1 - b2) g g;
// denom = sqrt(v) / sqrt(bc2) + eps; p -= (lr / bc1) m / denom
typedef struct {
    float decay, step_size, sqrt_bc2;
} AdamScalars;
static AdamScalars adam_scalars(const AdamWConfig *c, float lr, int step) {
    const double bc1 = 1.0 - pow((double)c->beta1, step), bc2 = 1.0 - pow((double)c->beta2, step);
    AdamScalars s = {1.0f - lr * c->weight_decay, (float)(lr / bc1), (float)sqrt(bc2)};
    return s;
}

void adamw_update(const AdamWConfig *c, float lr, int step, float gscale, float *p, const float *g, float *m, float *v,
                  int64_t n) {
    const float b1 = c->beta1, b2 = c->beta2;
    const AdamScalars s = adam_scalars(c, lr, step);
    const float decay = s.decay, step_size = s.step_size, sqrt_bc2 = s.sqrt_bc2;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        m[i] += (gi - m[i]) * (1.0f - b1);
        v[i] = v[i] * b2 + (1.0f - b2) * gi * gi;
        float denom = sqrtf(v[i]) / sqrt_bc2 + c->eps;
        p[i] = p[i] * decay - step_size * (m[i] / denom);
    }
}

size_t grad_sumsq_device_workspace_bytes(int64_t n) { return grad_sumsq_workspace_bytes_cuda(n); }

void grad_sumsq_device(double *sumsq, const float *g, int64_t n, int accumulate) {
    grad_sumsq_cuda(sumsq, g, n, accumulate, ops_workspace(DEVICE_CUDA, grad_sumsq_workspace_bytes_cuda(n)));
}

void adamw_update_device(const AdamWConfig *c, float lr, int step, const double *sumsq, float *p, const float *g,
                         float *m, float *v, int64_t n) {
    const AdamScalars s = adam_scalars(c, lr, step);
    adamw_update_cuda(p, g, m, v, n, sumsq, 1.0f - c->beta1, c->beta2, 1.0f - c->beta2, c->eps, s.decay, s.step_size,
                      s.sqrt_bc2, c->grad_clip);
}
