// ddim.h: the DDIM scheduler exactly as diffusers' DDIMScheduler computes it in fp32 (beta schedules, timestep
// spacings, steps_offset, set_alpha_to_one, eta, epsilon / v / sample prediction), plus the linear form of one step
// that the gradient methods need: x_prev = A x_t + B model_out (+ std z).
#pragma once
#include "../core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PRED_EPSILON, PRED_V, PRED_SAMPLE } PredictionType;
typedef enum { SPACING_LEADING, SPACING_TRAILING, SPACING_LINSPACE } TimestepSpacing;

typedef struct {
    int num_train_timesteps;       // 1000
    double beta_start, beta_end;   // 0.00085, 0.012
    int scaled_linear;             // 1: "scaled_linear", 0: "linear"
    int steps_offset;              // 1 for SD
    int set_alpha_to_one;          // 0 for SD
    TimestepSpacing spacing;       // leading for SD
    PredictionType prediction;     // epsilon for SD 1.5 / SDXL
    int clip_sample;               // 0 for SD
    float clip_sample_range;
} DdimConfig;

typedef struct {
    DdimConfig cfg;
    float *alphas_cumprod;         // [num_train_timesteps]
    float final_alpha_cumprod;
    int num_inference_steps;
    int *timesteps;                // [num_inference_steps], descending
} Ddim;

// SD 1.5 / SDXL defaults.
DdimConfig ddim_default_config(void);
// Reads the keys DDIMScheduler.from_config uses from a scheduler_config.json (any scheduler class of the folder);
// unsupported settings (thresholding, other beta schedules, rescale_betas_zero_snr) are a clear error.
DdimConfig ddim_load_config(const char *path);
void ddim_init(Ddim *s, const DdimConfig *cfg);
void ddim_set_timesteps(Ddim *s, int num_inference_steps);
void ddim_free(Ddim *s);

// Coefficients of sampling step i (timesteps[i] -> the previous timestep of the sequence).
typedef struct {
    int t, t_prev;                 // t_prev < 0: the last step, to final_alpha_cumprod
    float alpha_t, alpha_prev;     // cumulative alphas
    float std_dev;                 // eta * sqrt(variance)
    // linear form: x0 = cx x + cm m, eps = ex x + em m, x_prev = A x + B m (+ std z), in double for gradients
    double cx, cm, ex, em, A, B;
} DdimStep;
DdimStep ddim_step_coef(const Ddim *s, int i, float eta);

// One step: x_prev [B, C, H, W] from x and the model output m (same shape); x0_pred optional (may be NULL);
// noise z is read only when eta > 0. Computed with diffusers' operation order in fp32.
void ddim_step(const Ddim *s, int i, float eta, Tensor *x_prev, Tensor *x0_pred, const Tensor *m, const Tensor *x,
               const Tensor *z);
// Backward of x_prev (and, added, x0_pred) with respect to m and x: dm and dx are written (either may be NULL).
// With clip_sample the clamp's mask needs x0 recomputed from m and x, which are therefore inputs.
void ddim_step_backward(const Ddim *s, int i, float eta, Tensor *dm, Tensor *dx, const Tensor *dx_prev,
                        const Tensor *dx0, const Tensor *m, const Tensor *x);
// x0 prediction alone (the one-step estimate at an early-stop step), clamped as in ddim_step. It has no backward of
// its own: ddim_step_backward with dx_prev NULL and dx0 gives its gradient.
void ddim_predict_x0(const Ddim *s, int i, Tensor *x0, const Tensor *m, const Tensor *x);
// diffusers add_noise: out = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, at train timestep t.
void ddim_add_noise(const Ddim *s, int t, Tensor *out, const Tensor *x0, const Tensor *noise);

#ifdef __cplusplus
}
#endif
