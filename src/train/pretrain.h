// pretrain.h: `drtune pretrain`, standard diffusion training of a small latent diffusion model (AutoencoderKL, then
// UNet + CLIP text encoder) on the procedural scenes of data/scenes.h, exported as a diffusers folder, so the whole
// fine-tuning job can be tried without downloading SD weights (docs/SMALL_MODEL.md).
#pragma once
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PRETRAIN_PATH_MAX 1024

typedef enum { RECON_L1, RECON_L2 } ReconLoss;

// Every field is a key of the schema in pretrain_config.c ("section.key").
typedef struct {
    struct {
        char config[PRETRAIN_PATH_MAX]; // architecture folder (unet/, vae/, text_encoder/ configs, scheduler/)
        char out[PRETRAIN_PATH_MAX];    // exported diffusers folder
    } model;
    struct {
        int seed;                       // scene seed of scenes.h
        int image_size;                 // H = W in pixels
        int vocab_captions;             // training captions the tokenizer's merges are learnt from
        int latent_cache;               // scenes encoded once for stage 2
    } data;
    struct {
        int iterations, batch;
        double lr, kl_weight;
        ReconLoss loss;
    } vae;
    struct {
        int iterations, batch;
        double lr, cfg_dropout;
    } unet;
    struct {
        int seed, warmup, threads;
        double weight_decay, grad_clip;
    } train;
    struct {
        char dir[PRETRAIN_PATH_MAX];    // checkpoints, log, sample grids
        int checkpoint_every, keep, log_every;
    } output;
    struct {
        int prompts, steps, batch, seed;
        double guidance;
    } eval;
} PretrainConfig;

// Defaults, then the INI file (path may be NULL), then "--section.key=value" overrides. Bad input is a user error
// naming the file and line or the key.
void pretrain_config_load(PretrainConfig *c, const char *path, int n_overrides, char *const *overrides);
void pretrain_config_print_help(FILE *f);
// The resolved configuration as INI text (malloc'd).
char *pretrain_config_to_ini(const PretrainConfig *c);

// Runs (or with resume continues from the newest checkpoint in output.dir) both stages and exports model.out.
// stop_after > 0 stops after that many iterations of this invocation, with a checkpoint written.
int pretrain_run(const PretrainConfig *c, int resume, int stop_after);
// Prompt adherence of the exported folder on held-out captions: prints and returns the fraction with the right colour;
// *shape_acc receives the shape accuracy (may be NULL). A grid of the first images goes to output.dir/eval.png.
double pretrain_eval(const PretrainConfig *c, const char *model_dir, double *shape_acc);

// The tokenizer of the small model: byte-level BPE merges learnt from the words of n captions until every word is
// one symbol, written as a CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json,
// special_tokens_map.json) with <|startoftext|> and <|endoftext|> as the two largest ids. Returns the vocabulary size.
int pretrain_write_tokenizer(const char *dir, const char *const *captions, int n);

#ifdef __cplusplus
}
#endif
