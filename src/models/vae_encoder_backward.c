// vae_encoder_backward.c: the AutoencoderKL encoder's backward (vae_encoder_backward.h): the log-variance clamp,
// quant_conv, the output head, the mid block and the down levels in reverse, from the gradients of the latent
// distribution's mean and log-variance to the encoder's parameter gradients.
#include "vae_encoder_backward.h"

#include <string.h>

#include "../core/common.h"
#include "../core/device.h"

void vae_encode_grad_init(VAEEncodeGrad *gb, const VAEEncodeActs *x) {
    memset(gb, 0, sizeof *gb);
    arena_init(&gb->mem, "vae_encoder_grad", DEVICE_CPU);
    PLAN(&gb->mem, &gb->gflow[0], "", "grad.flow.0", x->flow);
    PLAN(&gb->mem, &gb->gflow[1], "", "grad.flow.1", x->flow);
    arena_add(&gb->mem, &gb->dmoments, "grad.moments", DTYPE_F32, 4, x->moments.shape);
    arena_alloc(&gb->mem);
}

void vae_encode_grad_free(VAEEncodeGrad *gb) {
    arena_free(&gb->mem);
    memset(gb, 0, sizeof *gb);
}

void vae_encode_backward(const VAE *v, VAE *g, VAEEncodeActs *x, VAEEncodeGrad *gb, const Tensor *image,
                         const Tensor *dmean, const Tensor *dlogvar) {
    const VAEConfig *c = &v->cfg;
    int L = c->levels;
    int64_t lat = c->latent_channels, hw = x->moments.shape[2] * x->moments.shape[3];
    tensor_expect_shape(image, "VAE image", x->B, c->in_channels, x->H, x->W);
    CHECK(image->device == DEVICE_CPU, "the encoder backward's clamp mask has no CUDA kernel yet",
          "VAE encode backward on %s", device_name(image->device));
    Scratch s = scratch_make(&x->scratch, &x->conv_in_out);
    GradFlow f = {&gb->gflow[0], &gb->gflow[1]};
    // moments = [mean | logvar]; the clamp passes the gradient where -30 <= logvar <= 20 (torch.clamp)
    concat_channels_forward(&gb->dmoments, dmean, dlogvar);
    float *dm = tensor_f32(&gb->dmoments);
    const float *mo = tensor_f32(&x->moments);
    for (int64_t b = 0; b < x->B; b++)
        for (int64_t i = lat * hw; i < 2 * lat * hw; i++) {
            int64_t k = b * 2 * lat * hw + i;
            if (!(mo[k] >= -30.0f && mo[k] <= 20.0f)) dm[k] = 0.0f;
        }
    Tensor dconv = view_like(f.cur, &x->conv_out_out);
    if (c->quant_conv)
        conv2d_backward(&dconv, GRAD(g, quant_conv.weight), GRAD(g, quant_conv.bias), &gb->dmoments,
                        &x->conv_out_out, &v->quant_conv.weight, 1, 0);
    else
        tensor_copy(&dconv, &gb->dmoments);
    // conv_out_out = conv_out(SiLU(conv_norm_out(h))); dconv is f.cur, read before the gradient of h replaces it
    head_backward(&v->enc_norm_out, &v->enc_conv_out, GRAD(g, enc_norm_out), GRAD(g, enc_conv_out), &x->norm_mean,
                  &x->norm_rstd, &x->mid.out[2], &dconv, c->groups, VAE_EPS, &f, s);
    vae_mid_backward(&v->enc_mid, GRAD(g, enc_mid), &x->mid, vae_level_out(&x->down[L - 1], &v->enc_down[L - 1]),
                     c->mid_attention, &f, s);
    for (int i = L - 1; i >= 0; i--)
        vae_level_backward(&v->enc_down[i], GRAD(g, enc_down[i]), &x->down[i],
                           i ? vae_level_out(&x->down[i - 1], &v->enc_down[i - 1]) : &x->conv_in_out, 0, &f, s);
    Tensor dout = view_like(f.cur, &x->conv_in_out);
    conv2d_backward(NULL, GRAD(g, enc_conv_in.weight), GRAD(g, enc_conv_in.bias), &dout, image,
                    &v->enc_conv_in.weight, 1, 1);
}
