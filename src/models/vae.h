// vae.h: diffusers AutoencoderKL (the SD 1.x / SD 2.x / SDXL VAE): the decoder with its backward, which carries
// the reward gradient from the image back to the latents, and the encoder forward (mean and log-variance).
#pragma once
#include "blocks.h"
#include "unet.h" // UNetRecompute: one recompute setting (train.recompute) for the UNet and the decoder

#ifdef __cplusplus
extern "C" {
#endif

#define VAE_MAX_LEVELS 4
#define VAE_MAX_LAYERS 4 // resnets per decoder level (layers_per_block + 1)
#define VAE_EPS 1e-6f    // every norm of the VAE

typedef struct {
    int in_channels, out_channels, latent_channels, levels, layers, groups;
    int block_out[VAE_MAX_LEVELS];
    float scaling_factor;
    int quant_conv, post_quant_conv, mid_attention; // use_quant_conv, use_post_quant_conv, mid_block_add_attention
} VAEConfig;

// A decoder up level or an encoder down level: resnets, then the up/downsampler of every level but the last.
typedef struct {
    ResnetParams res[VAE_MAX_LAYERS];
    SamplerParams sampler;
    int n_layers, has_sampler;
} VAELevel;

typedef struct {
    ResnetParams res[2];
    VaeAttnParams attn;
} VAEMid;

enum { VAE_DECODER = 1, VAE_ENCODER = 2 };

typedef struct {
    VAEConfig cfg;
    int parts; // VAE_DECODER | VAE_ENCODER: the halves planned
    Layer post_quant_conv, dec_conv_in, dec_norm_out, dec_conv_out;
    VAEMid dec_mid;
    VAELevel dec_up[VAE_MAX_LEVELS];
    Layer enc_conv_in, enc_norm_out, enc_conv_out, quant_conv;
    VAEMid enc_mid;
    VAELevel enc_down[VAE_MAX_LEVELS];
} VAE;

typedef struct {
    ResnetActs res[VAE_MAX_LAYERS];
    Tensor res_out[VAE_MAX_LAYERS], sampler_out;
    unsigned char recompute[VAE_MAX_LAYERS]; // decoder: resnet j's activations are rebuilt in its backward
} VAELevelActs;

// The output of a level: its sampler's, else its last resnet's.
static inline const Tensor *vae_level_out(const VAELevelActs *x, const VAELevel *lv) {
    return lv->has_sampler ? &x->sampler_out : &x->res_out[lv->n_layers - 1];
}

typedef struct {
    ResnetActs res[2];
    VaeAttnActs attn;
    Tensor out[3]; // after resnet 0, attention, resnet 1
    unsigned char recompute; // decoder: all but out[2] rebuilt in the backward
} VAEMidActs;

// Decoder recompute units: the mid block, then each resnet of each up level.
#define VAE_MAX_UNITS (1 + VAE_MAX_LEVELS * VAE_MAX_LAYERS)

// Decoder activations for a batch of B latents of h x w, kept for vae_decode_backward.
typedef struct {
    int64_t B, h, w;
    Tensor z;                  // [B, latent, h, w] latents / scaling_factor
    Tensor out;                // bf16 activations: the image [B, out, f h, f w] before its cast (else no data)
    Tensor pq_out, conv_in_out;
    VAEMidActs mid;
    VAELevelActs up[VAE_MAX_LEVELS];
    Tensor norm_mean, norm_rstd;
    Tensor gflow[2], scratch;  // backward gradient buffers; block scratch
    // activation recompute (the flags are in mid and up[]): a flagged unit's other tensors are planned in its own
    // arena and live in the shared region (recompute_bind)
    int n_recompute;
    Arena *unit_plan[VAE_MAX_UNITS];
    Tensor region;             // flat, as many bytes as the largest flagged unit (none: no data)
    size_t bytes_off;          // the activation plan without recompute (for the saving)
} VAEDecodeActs;

// Encoder activations for a batch of B images of H x W.
typedef struct {
    int64_t B, H, W;
    Tensor conv_in_out;
    VAELevelActs down[VAE_MAX_LEVELS];
    VAEMidActs mid;
    Tensor norm_mean, norm_rstd;
    Tensor conv_out_out, moments; // [B, 2 latent, H/f, W/f] before and after quant_conv
    Tensor scratch;
    int64_t flow;                 // floats of the largest stage: the backward's gradient buffers
} VAEEncodeActs;

// The legacy attention names (query/key/value/proj_attn) some VAE files use, for weights_load.
extern const char *const vae_weight_renames[][2];

// Reads and validates dir/config.json (or the .json file given).
void vae_load_config(VAEConfig *cfg, const char *path);
// Registers the parameters of the halves in parts under their diffusers names (decoder.*, post_quant_conv.*;
// encoder.*, quant_conv.*).
void vae_plan_params(Arena *a, VAE *vae, const VAEConfig *cfg, int parts);
void vae_plan_decode_acts(Arena *a, VAEDecodeActs *acts, const VAE *vae, int64_t B, int64_t h, int64_t w);
// The same with activation recompute (rc NULL: off): all flags every unit; auto flags the largest units until the
// decoder's plan fits rc->budget bytes (nothing when it fits without). The gradients are the same bit for bit.
void vae_plan_decode_acts_recompute(Arena *a, VAEDecodeActs *acts, const VAE *vae, int64_t B, int64_t h, int64_t w,
                                    const UNetRecompute *rc);
// The decoder's part of a recompute setting once the UNet's activations (unet_bytes) are planned: under auto, the
// budget they leave (the setting's budget covers both).
UNetRecompute vae_recompute_share(const UNetRecompute *rc, size_t unet_bytes);
// Frees what the plan allocated beside its arena (the units' plans).
void vae_decode_acts_free(VAEDecodeActs *acts);
void vae_plan_encode_acts(Arena *a, VAEEncodeActs *acts, const VAE *vae, int64_t B, int64_t H, int64_t W);

// Backward of a mid block (resnet, attention when attn, resnet) from f->cur at its output to f->other at `in`; shared
// by the decoder's and the encoder's backward. Parameter gradients accumulate into g (NULL: none).
void vae_mid_backward(const VAEMid *m, VAEMid *g, VAEMidActs *x, const Tensor *in, int attn, GradFlow *f,
                      Scratch s);
// Backward of an up (decoder, up = 1) or down (encoder, up = 0) level from f->cur at its output to f->other at
// `in`: its up/downsampler, then its resnets in reverse.
void vae_level_backward(const VAELevel *lv, VAELevel *g, VAELevelActs *x, const Tensor *in, int up, GradFlow *f,
                        Scratch s);

// image [B, out, h f, w f] (f = 2^(levels-1)) = decoder(post_quant_conv(latents / scaling_factor)), in [-1, 1]
// nominally, not clamped.
void vae_decode(const VAE *vae, VAEDecodeActs *acts, Tensor *image, const Tensor *latents);
// Backward of the last decode: dlatents [B, latent, h, w] (gradient w.r.t. the latents before the division) is
// written (NULL: not wanted); decoder parameter gradients accumulate into grads (NULL: none).
void vae_decode_backward(const VAE *vae, VAE *grads, VAEDecodeActs *acts, const Tensor *dimage, Tensor *dlatents);
// mean, logvar [B, latent, H/f, W/f] of the latent distribution of image [B, in, H, W] (logvar clamped to
// [-30, 20] as diffusers' DiagonalGaussianDistribution does).
void vae_encode(const VAE *vae, VAEEncodeActs *acts, Tensor *mean, Tensor *logvar, const Tensor *image);

#ifdef __cplusplus
}
#endif
