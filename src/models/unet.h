// unet.h: diffusers UNet2DConditionModel (SD 1.x, SD 2.x, SDXL) read from a diffusers unet/config.json, with the
// diffusers tensor names, a planned activation arena for one forward + backward at a given batch and latent size,
// and a backward that accumulates parameter gradients and optionally returns the gradient of the input latents.
#pragma once
#include "blocks.h"

#ifdef __cplusplus
extern "C" {
#endif

#define UNET_MAX_LEVELS 4
#define UNET_MAX_LAYERS 4 // resnets per up block (layers_per_block + 1)
#define UNET_MAX_SKIPS (1 + UNET_MAX_LEVELS * UNET_MAX_LAYERS)
// Recompute units: layer j of down level i (its resnet and transformer) is unit i * UNET_MAX_LAYERS + j, the mid
// block is UNET_MID_UNIT, layer j of up level i (its resnet on [hidden | skip], and transformer) is
// UNET_MID_UNIT + 1 + i * UNET_MAX_LAYERS + j.
#define UNET_MID_UNIT (UNET_MAX_LEVELS * UNET_MAX_LAYERS)
#define UNET_MAX_UNITS (UNET_MID_UNIT + 1 + UNET_MAX_LEVELS * UNET_MAX_LAYERS)

typedef struct {
    int in_channels, out_channels, levels;
    int sample_size;                // default latent size (the pipelines' default image is sample_size x VAE factor)
    int block_out[UNET_MAX_LEVELS];
    int down_attn[UNET_MAX_LEVELS]; // 1: CrossAttnDownBlock2D, 0: DownBlock2D
    int up_attn[UNET_MAX_LEVELS];   // 1: CrossAttnUpBlock2D, 0: UpBlock2D (up level i works at block_out[levels-1-i])
    int layers[UNET_MAX_LEVELS];    // layers_per_block of down level i; up level i has layers[levels-1-i] + 1
    int heads[UNET_MAX_LEVELS];     // attention heads of down level i (the mid block uses heads[levels-1])
    int depth[UNET_MAX_LEVELS];     // transformer_layers_per_block of down level i (the mid block: depth[levels-1])
    int cross_dim, linear_proj, groups, downsample_padding;
    float norm_eps, freq_shift;
    int flip_sin_to_cos, temb_dim;
    int text_time;                  // addition_embed_type "text_time" (SDXL)
    int add_time_dim, add_in_dim;   // addition_time_embed_dim, projection_class_embeddings_input_dim
    int text_embed_dim;             // add_in_dim - 6 add_time_dim: width of the pooled text embedding
} UNetConfig;

// One down or up level: its resnets, their transformers (CrossAttn blocks) and its down/upsampler.
typedef struct {
    ResnetParams res[UNET_MAX_LAYERS];
    TransformerParams attn[UNET_MAX_LAYERS];
    SamplerParams sampler;
    int n_layers, has_attn, has_sampler;
} UNetLevel;

typedef struct {
    UNetConfig cfg;
    Layer conv_in, time_linear_1, time_linear_2, add_linear_1, add_linear_2, conv_norm_out, conv_out;
    UNetLevel down[UNET_MAX_LEVELS], up[UNET_MAX_LEVELS];
    ResnetParams mid_res[2];
    TransformerParams mid_attn;
} UNet;

typedef struct {
    ResnetActs res[UNET_MAX_LAYERS];
    TransformerActs attn[UNET_MAX_LAYERS];
    Tensor res_out[UNET_MAX_LAYERS], attn_out[UNET_MAX_LAYERS], sampler_out;
} UNetLevelActs;

// Activations of one forward, kept for the backward. Planned slots point into this struct: keep it in place.
typedef struct {
    int64_t B, H, W, T;
    Tensor x, ctx;                   // copies of the inputs [B, C, H, W], [B, T, cross_dim]
    Tensor out;                      // bf16 activations: the output [B, out, H, W] before its cast (else no data)
    Tensor t_proj, t_h;              // [B, block_out[0]] sinusoidal embedding, [B, temb] time_embedding.linear_1
    Tensor add_in, add_h;            // [B, add_in_dim] = [text_embeds | time_ids embedding], [B, temb] linear_1
    Tensor emb, emb_act;             // [B, temb] time embedding, SiLU of it (every resnet's time input)
    Tensor conv_in_out;
    UNetLevelActs down[UNET_MAX_LEVELS], up[UNET_MAX_LEVELS];
    ResnetActs mid_res[2];
    TransformerActs mid_attn;
    Tensor mid_out[3];               // after mid resnet 0, attention, resnet 1
    Tensor norm_mean, norm_rstd;     // conv_norm_out statistics [B, groups]
    const Tensor *skip[UNET_MAX_SKIPS];
    int n_skips;
    Tensor dskip[UNET_MAX_SKIPS];    // backward: each skip's gradient from the up path
    Tensor gflow[2];                 // backward: flat gradient buffers (largest stage)
    Tensor demb_act, dtemb;          // backward: [B, temb] summed and per-resnet time-input gradients
    Tensor scratch;                  // flat, the largest need of any block call
    // activation recompute: a flagged unit keeps only its output (and reads its kept input); everything else it
    // saves for its backward lives in the shared region, where the backward re-runs the unit's forward first
    unsigned char recompute[UNET_MAX_UNITS]; // 1: the unit is recomputed
    int n_recompute;
    Arena *unit_plan[UNET_MAX_UNITS];        // a flagged unit's tensors, planned from offset 0 of the region
    Tensor region;                           // flat, as many bytes as the largest flagged unit (none: no data)
    size_t bytes_off;                        // the activation plan without recompute (for the saving)
    // backward: called as the parameter gradients of each part become final (NULL: not called); see
    // unet_param_part. Set it for the last backward before an optimiser step to start reducing gradients early.
    void (*ready)(void *ctx, int part);
    void *ready_ctx;
} UNetActs;

// Reads and validates dir/config.json (or the .json file given); unsupported options are user errors naming the key.
void unet_load_config(UNetConfig *cfg, const char *path);
// Registers every parameter (the 686 / 1680 tensors of SD 1.5 / SDXL) under its diffusers name. Planning a second
// UNet into a gradient arena gives the struct unet_backward accumulates into.
void unet_plan_params(Arena *a, UNet *net, const UNetConfig *cfg);
// Parameters of a configuration (no allocation).
int64_t unet_param_count(const UNetConfig *cfg);
// Registers the activations of one forward + backward for batch B, latent H x W (multiples of 2^(levels-1)) and
// context length T.
void unet_plan_acts(Arena *a, UNetActs *acts, const UNet *net, int64_t B, int64_t H, int64_t W, int64_t T);

// Activation recompute (train.recompute): off keeps every activation for the backward; all flags every unit; auto
// flags units from the largest down until the activation plan is at most budget bytes (every unit when it cannot
// get there; none when it fits already). The backward then re-runs each flagged unit's forward just before its
// backward, so the gradients are the same bit for bit, for about one extra forward of the flagged units.
typedef enum { UNET_RECOMPUTE_OFF, UNET_RECOMPUTE_AUTO, UNET_RECOMPUTE_ALL } UNetRecomputeMode;
typedef struct {
    UNetRecomputeMode mode;
    double budget;       // auto: bytes the activation plan should fit in
} UNetRecompute;
// "off", "auto", "all" and back (-1: not a mode).
int unet_recompute_parse(const char *name);
const char *unet_recompute_name(UNetRecomputeMode mode);
// unet_plan_acts with recompute (rc NULL: off).
void unet_plan_acts_recompute(Arena *a, UNetActs *acts, const UNet *net, int64_t B, int64_t H, int64_t W, int64_t T,
                              const UNetRecompute *rc);
// Units of this UNet (flags beyond them are never set).
int unet_units(const UNetConfig *cfg);

// eps [B, out, H, W] = UNet(x [B, in, H, W], timesteps [B] (float), context [B, T, cross_dim],
//                          text_embeds [B, text_embed_dim] and time_ids [B, 6] (text_time models only, else NULL))
void unet_forward(const UNet *net, UNetActs *acts, Tensor *eps, const Tensor *x, const Tensor *timesteps,
                  const Tensor *context, const Tensor *text_embeds, const Tensor *time_ids);
// Backward of the last forward: parameter gradients accumulate into grads (NULL: none), dx [B, in, H, W] and
// dcontext [B, T, cross_dim] (the gradient of the cross-attention context, for training a text encoder) are written
// (NULL: not wanted). No gradient flows into the timesteps or the added conditions.
void unet_backward(const UNet *net, UNet *grads, UNetActs *acts, const Tensor *deps, Tensor *dx, Tensor *dcontext);
// The backward finishes the parameter gradients part by part, in this order: 0 conv_norm_out + conv_out, then
// up_blocks.(L-1) .. up_blocks.0, mid_block, down_blocks.(L-1) .. down_blocks.0, and last (part 2L + 2) conv_in
// with the time and added embeddings (every resnet feeds the time embedding's gradient). The part of a parameter
// or LoRA module by its diffusers name ("up_blocks.1.attentions.0...", "conv_in.weight"); internal failure when
// the name is not the UNet's.
int unet_backward_parts(const UNetConfig *cfg);
int unet_param_part(const UNetConfig *cfg, const char *name);

void unet_free(UNet *net);
void unet_acts_free(UNetActs *acts);

#ifdef __cplusplus
}
#endif
