// train_optim.c: AdamW against a double-precision transcription of torch.optim.AdamW over several steps (with
// weight decay and clipping), the learning-rate schedule's values, and the clipping coefficient.
#include <math.h>
#include <stdio.h>

#include "../src/core/rng.h"
#include "../src/train/optim.h"
#include "testutil.h"

enum { N = 1000, STEPS = 7 };

int main(void) {
    AdamWConfig c = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f,
                     .grad_clip = 0.5f};
    static float p[N], g[N], m[N], v[N];
    static double pd[N], md[N], vd[N];
    rng_normal_fill(p, N, 3, 1, 0);
    for (int i = 0; i < N; i++) pd[i] = p[i];
    double worst = 0;
    for (int s = 1; s <= STEPS; s++) {
        rng_normal_fill(g, N, 3, 2, (uint64_t)s * N);
        if (s == 3) g[5] *= 1e4f; // an outlier that clipping must tame
        double norm = sqrt(grad_sumsq(g, N));
        float coef = grad_clip_coef(&c, norm);
        adamw_update(&c, c.lr, s, coef, p, g, m, v, N);
        double b1 = c.beta1, b2 = c.beta2, lr = c.lr;
        for (int i = 0; i < N; i++) {
            double gi = (double)g[i] * (norm > c.grad_clip ? c.grad_clip / (norm + 1e-6) : 1.0);
            pd[i] *= 1.0 - lr * c.weight_decay;
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            double mh = md[i] / (1 - pow(b1, s)), vh = vd[i] / (1 - pow(b2, s));
            pd[i] -= lr * mh / (sqrt(vh) + c.eps);
        }
        for (int i = 0; i < N; i++) {
            double e = fabs(p[i] - pd[i]) / (fabs(pd[i]) + 1e-3);
            if (e > worst) worst = e;
        }
    }
    // fp32 arithmetic over 7 steps: a few ulps of each parameter
    TU_EXPECT(worst < 2e-6, "AdamW differs from the double reference by %.3g (relative)", worst);
    // clipping: coefficient makes the norm equal the limit
    TU_EXPECT(grad_clip_coef(&c, 0.25) == 1.0f, "no clipping below the limit");
    TU_EXPECT(fabsf(grad_clip_coef(&c, 2.0) * 2.0f - 0.5f) < 1e-6f, "clip coefficient");
    AdamWConfig off = c;
    off.grad_clip = 0;
    TU_EXPECT(grad_clip_coef(&off, 1e9) == 1.0f, "clipping off");
    // non-finite gradients are visible in the norm
    g[17] = NAN;
    TU_EXPECT(!isfinite(grad_sumsq(g, N)), "NaN gradient not detected");
    g[17] = INFINITY;
    TU_EXPECT(!isfinite(grad_sumsq(g, N)), "Inf gradient not detected");
    // schedules
    AdamWConfig s = {.lr = 1.0f, .warmup = 4, .cosine = 1, .min_lr_ratio = 0.1f, .total = 14};
    TU_EXPECT(fabsf(adamw_lr(&s, 0) - 0.25f) < 1e-7f && fabsf(adamw_lr(&s, 3) - 1.0f) < 1e-7f, "warm-up is linear");
    TU_EXPECT(fabsf(adamw_lr(&s, 4) - 1.0f) < 1e-6f, "cosine starts at lr");
    TU_EXPECT(fabsf(adamw_lr(&s, 9) - 0.55f) < 1e-6f, "cosine midpoint %.6f", adamw_lr(&s, 9));
    TU_EXPECT(fabsf(adamw_lr(&s, 14) - 0.1f) < 1e-6f && fabsf(adamw_lr(&s, 100) - 0.1f) < 1e-6f, "cosine floor");
    s.cosine = 0;
    TU_EXPECT(adamw_lr(&s, 50) == 1.0f, "constant after warm-up");
    return tu_report();
}
