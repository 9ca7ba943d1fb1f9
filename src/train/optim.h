// optim.h: AdamW (decoupled weight decay, bias-corrected moments, as torch.optim.AdamW) over flat fp32 buffers,
// the learning-rate schedule (linear warm-up, then constant or cosine), global-norm gradient clipping and the guard
// that skips a step whose gradients are not finite. Flat buffers let the same code update a whole parameter arena
// or one rank's shard of it.
#pragma once
#include <stddef.h>
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

// The GPU forms, on device pointers, queued on the compute stream with nothing read back (ops/cuda/cuda_train.cu):
// *sumsq (a device double) = sum of g^2 (added to *sumsq when accumulate), in a fixed order (block partial sums in
// the ops workspace, then one final pass), so it is the same on every run; workspace bytes it needs for n gradients.
size_t grad_sumsq_device_workspace_bytes(int64_t n);
void grad_sumsq_device(double *sumsq, const float *g, int64_t n, int accumulate);
// adamw_update with the gradient norm read on the device: norm = sqrt(*sumsq) (all ranks' sum), the clip
// coefficient of grad_clip_coef, and no update at all when the norm is not finite. The caller reads *sumsq once
// after the step (its one host read of the iteration) to log the norm and count the step as applied or skipped.
void adamw_update_device(const AdamWConfig *c, float lr, int step, const double *sumsq, float *p, const float *g,
                         float *m, float *v, int64_t n);

#ifdef __cplusplus
}
#endif
