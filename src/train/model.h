// model.h: a loaded diffusers pipeline as the training and sampling commands use it (tokenizers and frozen text
// encoders, UNet, VAE decoder, DDIM scheduler), prompt conditioning for the UNet, and the per-sample noise keyed by
// global sample index so results do not depend on how samples are split across ranks.
#pragma once
#include <stdint.h>

#include "../models/pipeline.h"
#include "engine.h"
#include "lora.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char dir[1024];
    Pipeline text;
    UNet unet;
    Arena unet_params;
    VAE vae;
    Arena vae_params;
    Ddim sched;
    // train.precision = bf16 (or train.channels_last): bf16 (fp32) copies of the UNet and VAE weights that the engine
    // computes with (model_set_precision); the fp32 weights above stay the masters the optimiser updates and the
    // exports read
    int has_compute, unet_trained; // unet_trained: the fp32 UNet is updated (full fine-tuning), so it stays on the GPU
    UNet unet_c;
    Arena unet_c_params;
    VAE vae_c;
    Arena vae_c_params;
} Model;

// Loads dir (model_index.json, tokenizer(s), text encoder(s), unet, vae decoder, scheduler) and sets `steps`
// sampling steps. Every problem with the folder is a user error naming the file.
void model_load(Model *m, const char *dir, int steps);
void model_free(Model *m);
// Moves the UNet and VAE weights to device d (one copy each); the text encoders stay on the host, where prompts are
// encoded once per batch and the engine copies the embeddings over.
void model_to_device(Model *m, Device d);

// Makes the dt (bf16) compute copies of the UNet and VAE weights on the device of the fp32 ones (already moved
// there), and, when l != NULL, the adapters' bf16 copies bound into the compute UNet. Frozen fp32 weights go back
// to the host (the VAE, and the UNet unless unet_trained: full fine-tuning), where only a final merge reads them.
// Nothing for dt = f32, unless channels_last (train.channels_last, GPU): then the copies (fp32 ones for dt = f32) are
// channels last, and so are the UNet's and the decoder's activations planned on them (the filters transposed in the
// copies; the fp32 masters, their gradients and everything outside the two models stay NCHW).
void model_set_precision(Model *m, Lora *l, int unet_trained, DType dt, int channels_last);
// Refreshes the compute copies of what changes (the adapters of l, and every UNet weight when the UNet is trained)
// from the fp32 masters after an update or a load; nothing without compute copies.
void model_sync_compute(Model *m, Lora *l);
// The UNet and VAE the engine computes with: the compute copies when there are any, else the fp32 weights.
UNet *model_compute_unet(Model *m);
const VAE *model_compute_vae(const Model *m);

// Conditioning of B prompts for the UNet rows ([uncond; cond] when cfg), for images of H x W pixels (SDXL's
// add_time_ids). The negative prompt applies to every row (NULL or "" for none). cond points into emb.
void model_condition(const Model *m, const char *const *prompts, const char *negative, int B, int cfg, int H, int W,
                     PromptEmbeds *emb, UNetCond *cond);

// One image from a seed, as drtune eval and the training's sample grids draw them: its latent and DDIM noise from
// (seed, sample 0), sampled with the engine's guidance and eta (e planned for one image of H x W pixels), decoded and
// scored: the image in e->image, its rewards in e->reward[0] and e->per_reward.
void model_sample_seeded(const Model *m, Engine *e, const char *prompt, const char *negative, int H, int W,
                         uint64_t seed);

// x_T [B, C, h, w]: sample b's latent from stream (seed, LATENT, ids[b]).
void noise_latents(Tensor *xT, uint64_t seed, const int64_t *ids);
// z [N, B, C, h, w]: the DDIM noise of sample ids[b] at step t (index N - t) from stream (seed, STEP_NOISE, ids[b], t).
void noise_steps(Tensor *z, uint64_t seed, const int64_t *ids);
// [n, B, C, h, w]: DRaFT-LV re-noising of copy j of sample ids[b] at iteration `it`.
void noise_copies(Tensor *nz, uint64_t seed, const int64_t *ids, int64_t it);

#ifdef __cplusplus
}
#endif
