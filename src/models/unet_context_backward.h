// unet_context_backward.h: the UNet backward that also returns the gradient of the cross-attention context
// (encoder_hidden_states), which unet_backward does not compute. Training a text encoder jointly with the UNet, as
// `drtune pretrain` does for the small model, needs it.
#pragma once
#include "unet.h"

#ifdef __cplusplus
extern "C" {
#endif

// Backward of the last unet_forward: parameter gradients accumulate into grads (required), dcontext [B, T,
// cross_dim] is written. The UNet must carry no LoRA adapters. The parameter gradients equal unet_backward's.
void unet_backward_context(const UNet *net, UNet *grads, UNetActs *acts, const Tensor *deps, Tensor *dcontext);

#ifdef __cplusplus
}
#endif
