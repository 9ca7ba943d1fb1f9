// vae_encoder_backward.h: the backward of the AutoencoderKL encoder (vae.h has its forward), so the autoencoder can
// be trained end to end: `drtune pretrain` trains the small model's VAE with a reconstruction loss and a KL term.
#pragma once
#include "vae.h"

#ifdef __cplusplus
extern "C" {
#endif

// The encoder backward's own buffers (VAEEncodeActs holds the forward's values only).
typedef struct {
    Arena mem;
    Tensor gflow[2]; // flat, the largest encoder stage
    Tensor dmoments; // [B, 2 latent, H/f, W/f]
} VAEEncodeGrad;

void vae_encode_grad_init(VAEEncodeGrad *gb, const VAEEncodeActs *acts);
void vae_encode_grad_free(VAEEncodeGrad *gb);
// Backward of the last vae_encode of image (the same tensor): dmean and dlogvar [B, latent, H/f, W/f] (gradients of
// the outputs, the log-variance after its clamp to [-30, 20]); encoder and quant_conv parameter gradients
// accumulate into grads. No gradient flows into the image.
void vae_encode_backward(const VAE *vae, VAE *grads, VAEEncodeActs *acts, VAEEncodeGrad *gb, const Tensor *image,
                         const Tensor *dmean, const Tensor *dlogvar);

#ifdef __cplusplus
}
#endif
