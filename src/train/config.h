// config.h: the training configuration. One schema table (config.c) defines every key once; parsing the INI file,
// command-line overrides, defaults, `drtune train --help`, the resolved config written into runs and checkpoints,
// and docs/CONFIG.md are all derived from it, so they cannot disagree.
#pragma once
#include <stddef.h>
#include <stdio.h>

#include "engine.h"
#include "metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TRAINABLE_LORA, TRAINABLE_FULL } Trainable;
typedef enum { SCHEDULE_CONSTANT, SCHEDULE_COSINE } LrSchedule;
typedef enum { EXPORT_LORA, EXPORT_MERGED, EXPORT_BOTH, EXPORT_NONE } ExportMode;
typedef enum { TRAIN_DEVICE_AUTO, TRAIN_DEVICE_CPU, TRAIN_DEVICE_CUDA } TrainDevice;
typedef enum { PRECISION_FP32, PRECISION_BF16 } TrainPrecision;

#define CONFIG_PATH_MAX 1024
#define CONFIG_TEXT_MAX 1024
#define CONFIG_MAX_REWARDS 8
#define CONFIG_MAX_TARGETS 16
#define CONFIG_MAX_SEEDS 64

// Every field is set by the schema; list fields come with their element count.
typedef struct {
    struct {
        char path[CONFIG_PATH_MAX];            // diffusers model folder
    } model;
    struct {
        int steps;                             // N, DDIM sampling steps
        double guidance;                       // classifier-free guidance scale w
        double eta;                            // DDIM eta
        int height, width;                     // image size in pixels (multiples of 8)
        char negative_prompt[CONFIG_TEXT_MAX]; // the unconditional branch's prompt
    } sampler;
    struct {
        Method name;                           // engine.h: drtune, refl, draft, draft-lv, alignprop
        int k;                                 // DRTune trained steps / DRaFT K / AlignProp max k
        int m;                                 // early-stop upper bound (drtune, refl); 0 = no early stop
        int phase;                             // DRTune phase p; -1 = random per iteration
        int t_min;                             // early-stop step; -1 = random per iteration
        int k_fixed;                           // AlignProp k; -1 = random per iteration
        int draw_in_executed;                  // DRTune: space trained steps inside [t_min, N]
        int lv_copies;                         // DRaFT-LV re-noised copies
        int cfg;                               // train through both CFG branches
    } method;
    struct {
        char names[CONFIG_MAX_REWARDS][32];
        int n_names;
        double weights[CONFIG_MAX_REWARDS];
        int n_weights;                         // == n_names after validation
        double scales[CONFIG_MAX_REWARDS];     // normalisation: score / scale is weighted; none given = all 1
        int n_scales;                          // 0 or n_names
        double colour[3];                      // target RGB of the colour reward, in [0, 1]
        int n_colour;                          // always 3
        char hps_path[CONFIG_PATH_MAX];        // learned rewards' models (src/rewards/clip_reward.h); "" = unset
        char pickscore_path[CONFIG_PATH_MAX];
        char clipscore_path[CONFIG_PATH_MAX];
        char aesthetic_path[CONFIG_PATH_MAX];  // the aesthetic MLP (safetensors)
        char aesthetic_clip_path[CONFIG_PATH_MAX]; // its CLIP ViT-L/14 image tower
        int resize;                            // ResizeKernel of the learned rewards' preprocessing
        int antialias;
        int checkpoint;                        // recompute the reward towers' layers in the backward
    } reward;
    struct {
        Trainable trainable;
        int lora_rank;
        double lora_alpha;
        char lora_targets[CONFIG_MAX_TARGETS][64];
        int n_lora_targets;
        int iterations;
        int batch;                             // global batch (all ranks together)
        int seed;
        double lr, weight_decay, beta1, beta2, adam_eps;
        int warmup;                            // iterations of linear warm-up
        LrSchedule schedule;
        double min_lr_ratio;                   // cosine floor, as a fraction of lr
        double grad_clip;                      // global L2 norm limit; 0 = off
        int threads;                           // 0 = all cores
        TrainDevice device;                    // auto: the GPU when one is visible
        int deterministic;                     // deterministic GPU algorithms (cuDNN) only
        int cudnn_attention;                   // bf16 attention through cuDNN's fused attention where it plans
        int channels_last;                     // GPU: UNet and VAE decoder activations and filters NHWC
        int cuda_graphs;                       // the guided UNet evaluation as a replayed CUDA graph
        TrainPrecision precision;              // GPU storage of weights and activations (fp32 masters either way)
        double reduce_bucket_mb;               // gradient reduction bucket during the backward; 0 = after it
        UNetRecomputeMode recompute;           // UNet and decoder activation recompute: off, auto, all (models/unet.h)
        double activation_budget_gb;           // recompute = auto: the UNet + decoder activations' budget; 0 = device's
    } train;
    struct {
        char prompts[CONFIG_PATH_MAX];         // prompt file (src/io/prompts.h)
    } data;
    struct {
        int every;                             // progress line / console interval, in iterations
        int sample_every;                      // sample grid interval; 0 = only before and after training
        int sample_seeds[CONFIG_MAX_SEEDS];
        int n_sample_seeds;
        ProgressMode progress;
    } log;
    struct {
        char dir[CONFIG_PATH_MAX];
        int checkpoint_every;                  // 0 = only the final checkpoint
        int keep;                              // checkpoints kept; 0 = all
        ExportMode export_mode;                // key output.export
    } output;
    struct {                                   // read by launch/retrain.sh, not by drtune train
        char prompts[CONFIG_PATH_MAX];         // held-out prompt file of the evaluation gate
        int seeds[CONFIG_MAX_SEEDS];           // one gate image per seed
        int n_seeds;
        char target[32];                       // reward that must improve; "" = reward.names[0]
        double min_gain;                       // the target must gain more than this
        char guards[CONFIG_MAX_REWARDS][32];   // rewards that must not regress beyond margin
        int n_guards;
        double margin;
        int keep;                              // promoted rounds kept
    } retrain;
} Config;

// Every key at its default.
void config_defaults(Config *c);
// Applies the keys of an INI file on top of c. User error (file:line, the key) on an unknown section or key, a bad
// value, a duplicate key or a malformed line.
void config_parse_file(Config *c, const char *path);
// Same for INI text held in memory; `name` is used in messages in place of a file name.
void config_parse_string(Config *c, const char *text, const char *name);
// Applies command-line overrides "--section.key=value" in order; each key at most once.
void config_apply_overrides(Config *c, int n, char *const *args);
// Cross-field checks (method.k <= sampler.steps, reward.weights matching reward.names, ...): user error naming
// the keys involved.
void config_validate(const Config *c);
// Defaults, then the file (when path != NULL), then the overrides, then config_validate.
// The weights the rewards are combined with: reward.weights[i] / reward.scales[i] (the weight of the normalised
// score score / scale, as a weight of the raw score), n_names values.
void config_reward_weights(const Config *c, double *w);
void config_load(Config *c, const char *path, int n_overrides, char *const *overrides);

// The resolved configuration as INI text (malloc'd into *text; returns its length). Parsing it again gives the
// same Config.
size_t config_to_ini(const Config *c, char **text);
// The key reference for `drtune train --help`.
void config_print_help(FILE *f);
// docs/CONFIG.md.
void config_write_markdown(FILE *f);

#ifdef __cplusplus
}
#endif
