// optim.h: AdamW (decoupled weight decay, bias-corrected moments, as torch.optim.AdamW) over flat fp32 buffers,
// the learning-rate schedule (linear warm-up, then constant or cosine), global-norm gradient clipping and the guard
// that skips a step whose gradients are not finite. Flat buffers let the same code update a whole parameter arena
// or one rank's shard of it.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int warmup;            // iterations of linear warm-up from 0
    int cosine;            // 0: constant after warm-up; 1: cosine decay to min_lr_ratio * lr at `total`
    float min_lr_ratio;
    int total;             // iterations of the run (for the cosine)
    float grad_clip;       // global L2 norm limit; 0 = off
} AdamWConfig;

// Learning rate at iteration `it` (0-based) of the schedule.
float adamw_lr(const AdamWConfig *c, int it);
// Sum of squares of g in double (the caller adds the pieces of all buffers, and of all ranks, before the sqrt).
double grad_sumsq(const float *g, int64_t n);
// Clip coefficient for a global norm: min(1, clip / (norm + 1e-6)); 1 when clipping is off.
float grad_clip_coef(const AdamWConfig *c, double norm);
// One AdamW update of n parameters at optimizer step `step` (1-based, counts applied steps only), with the
// gradient scaled by `gscale` (the clip coefficient) on the fly:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= lr wd p;  p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
void adamw_update(const AdamWConfig *c, float lr, int step, float gscale, float *p, const float *g, float *m, float *v,
                  int64_t n);

#ifdef __cplusplus
}
#endif
