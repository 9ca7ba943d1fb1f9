// pretrain_internal.h: the state `drtune pretrain` shares between its stages (pretrain.c) and its files
// (pretrain_io.c: initialisation, checkpoints, export).
#pragma once
#include "../diffusion/ddim.h"
#include "../models/clip_text_train.h"
#include "../models/tokenizer.h"
#include "../models/unet.h"
#include "../models/vae.h"
#include "optim.h"
#include "pretrain.h"

// A trained parameter group: its arena, gradient arena and AdamW moments (flat over the arena, padding included).
typedef struct {
    Arena *p, *g;
    float *m, *v;
    int64_t n;
} ParamGroup;

// g over the arena p and its gradient arena grads, with zeroed moments (free m and v).
void param_group_init(ParamGroup *g, Arena *p, Arena *grads);
// Clips (global norm over all n groups) and applies one AdamW step at `iteration` of a's schedule, counting it in
// *adam_step, then zeroes the gradients. Returns the gradient norm; a step whose norm is not finite is skipped.
double param_groups_step(ParamGroup *groups, int n, const AdamWConfig *a, int iteration, int *adam_step);
// Deterministic initial values (PyTorch's defaults where they matter: matrices U(-b, b), b = 1 / sqrt(fan_in), norm
// weights 1, biases 0, CLIP token / position embeddings N(0, 0.02) / N(0, 0.01)), keyed by (seed, component, entry).
void pretrain_init_params(Arena *a, uint64_t seed, int component);

typedef struct {
    const PretrainConfig *c;
    UNet unet, unet_g;
    Arena unet_p, unet_ga;
    VAE vae, vae_g;
    Arena vae_p, vae_ga;
    ClipText te, te_g;
    Tokenizer tok;
    Ddim sched;
    int vocab;
    float scaling_factor;        // 1 during stage 1; 1 / std of the cached latents afterwards
    // progress: the stage being trained, iterations done in it, optimizer steps applied, the last loss
    int stage, iteration, adam_step;
    double last_loss;
    ParamGroup groups[2];
    int n_groups;
    char tok_dir[PRETRAIN_PATH_MAX + 32];
} Pretrainer;

// Plans and allocates the three models (parameters and gradients) from the architecture folder with the given
// vocabulary size, and fills the parameters with their deterministic initial values.
void pretrain_models_init(Pretrainer *t);
void pretrain_models_free(Pretrainer *t);
// Sets the trained groups of a stage (1: the VAE; 2: the UNet and the text encoder) with zeroed moments.
void pretrain_groups_set(Pretrainer *t, int stage);

// Writes output.dir/ckpt-s<stage>-<iteration> (parameters, moments, state.json) through a temporary folder renamed
// into place, then removes the oldest beyond output.keep.
void pretrain_checkpoint_save(Pretrainer *t);
// The newest checkpoint of output.dir restored into t (stage, iteration, parameters, moments); 0 when none exists.
int pretrain_checkpoint_load(Pretrainer *t);
// The diffusers folder dir: configs (vocab_size and scaling_factor filled in), tokenizer and fp16 weights.
void pretrain_export(const Pretrainer *t, const char *dir);
