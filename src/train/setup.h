// setup.h: the parts of a training run that commands other than the training loop need too (drtune grad, eval,
// bench memory): the reward set, the trainable set (LoRA adapters or every UNet parameter) with its gradient
// slots, the method's choices from the configuration, the latent size of an image, and LoRA adapters read back
// from a file whose rank and targets are not known in advance.
#pragma once
#include <stdint.h>

#include "config.h"
#include "lora.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    Reward items[CONFIG_MAX_REWARDS];
    RewardSet set;
    struct ClipReward *learned[CONFIG_MAX_REWARDS]; // the learned rewards' models (NULL for the others)
} SetupRewards;

// Where the learned rewards' models are (the reward.*_path keys; NULL or "" = not given) and how they preprocess.
typedef struct {
    const char *hps, *pickscore, *clipscore, *aesthetic, *aesthetic_clip;
    int kernel, antialias, checkpoint; // ResizeKernel, 0 / 1, 0 / 1
} RewardModels;
// The reward model settings of a configuration.
RewardModels setup_reward_models(const Config *c);
// Sets one model path from a command-line "NAME=PATH" (NAME: hps, pickscore, clipscore, aesthetic (the MLP) or
// aesthetic_clip); opt names the option in errors. PATH points into spec.
void setup_reward_path(RewardModels *m, const char *opt, const char *spec);

// n rewards by name with their weights; colour (RGB in [0, 1]) is the colour reward's target; models (may be NULL
// when no learned reward is named) locates the learned rewards' models, which are loaded here. Unknown names are
// user errors listing the known ones.
void setup_rewards(SetupRewards *r, int n, const char (*names)[32], const double *weights, const double *colour,
                   const RewardModels *models);
void setup_rewards_free(SetupRewards *r);

// The trainable set of a configuration as flat fp32 buffers: n values p and their gradients g, in the planning
// order of `params` / `grads`, whose entries name them (diffusers UNet names, or "<module>.lora_A.weight").
typedef struct {
    Trainable kind;
    UNet slots;             // the gradient struct the UNet backward accumulates into
    Arena grad_mem;         // full fine-tuning: the UNet's gradients
    Lora lora;              // LoRA: the adapters and their gradients
    const Arena *params, *grads;
    float *p, *g;
    int64_t n;              // floats in p and g (arena padding included)
} TrainSet;

// LoRA adapters (train.lora_rank, lora_alpha, lora_targets, initialised from train.seed) or every UNet parameter.
// ranks > 0: full fine-tuning's gradient arena is padded to the shard layout of that many ranks (dist.h), so that a
// reduce-scatter sees one flat buffer.
void setup_trainable(TrainSet *t, Model *m, const Config *c, int ranks);
void setup_trainable_free(TrainSet *t);

// CPU threads of this process: `requested` when > 0; otherwise OMP_NUM_THREADS when set; otherwise, when several
// ranks of the job share this host, its cores divided equally between them (else OpenMP's default, all cores).
// Returns the number in use.
int setup_threads(int requested);

// The device a command runs on, selected for this rank (GPU local rank mod the visible count): `choice` as
// train.device takes it. auto is the GPU when one is visible (every reward, learned ones included, has a GPU path;
// `rewards` may be NULL); cuda without a GPU is a user error naming `key`.
Device setup_device(TrainDevice choice, const RewardSet *rewards, const char *key);
// The storage dtype of precision p (the setting `key`) on device d (bf16 on the CPU is a user error naming key and
// device_key, the device setting: the CPU computes in fp32). The model's compute copies are made by
// model_set_precision once it is on the device.
DType setup_precision(TrainPrecision p, Device d, const char *key, const char *device_key);
// A command-line option's "fp32" or "bf16" as a TrainPrecision; a user error naming the option otherwise.
TrainPrecision setup_precision_parse(const char *name, const char *option);
// train.channels_last (key), checked for device d (a user error on the CPU): what model_set_precision takes.
int setup_channels_last(int on, Device d, const char *key, const char *device_key);
// A command-line option's "auto", "cpu" or "cuda" as a TrainDevice; a user error naming the option otherwise.
TrainDevice setup_device_parse(const char *name, const char *option);
// Moves a loaded model (and the LoRA adapters attached to it, when l != NULL) to device d.
void setup_model_to_device(Model *m, Lora *l, Device d);

// The method section as the engine takes it.
MethodConfig setup_method(const Config *c);

// Latent h x w of an H x W image for the model's VAE; a user error naming `what` (e.g. "sampler.height and
// sampler.width") when H or W is not a multiple of the VAE's factor.
void setup_latent_size(const Model *m, int H, int W, const char *what, int *h, int *w);

// Attaches the adapters of a file written by lora_save (drtune train's export) to the model: the rank comes from
// the lora_A shapes and the targets from the module names, so any rank and target set trained here loads. The
// UNet's gradient slots are planned into *no_grads (left without data). User error when the file has no adapters.
void setup_lora_from_file(Lora *l, UNet *no_grads, Model *m, const char *path);

#ifdef __cplusplus
}
#endif
