// clip_text_train.h: the CLIP text encoder as a trainable model: a forward that keeps every layer's activations and
// the backward that accumulates parameter gradients from the gradient of last_hidden_state (what SD's UNet reads).
// `drtune pretrain` trains the small model's text encoder jointly with its UNet through these.
#pragma once
#include "clip_text.h"

#ifdef __cplusplus
extern "C" {
#endif

// Activations of one forward of B sequences of T tokens, kept for clip_text_backward.
typedef struct {
    int B, T, n_layers;
    Arena mem;
    Tensor ids;                  // [B, T] i32
    Tensor *res;                 // [N + 1] residual stream entering layer i ([N]: the final layer norm's input)
    Tensor *mid;                 // [N] residual stream after layer i's attention (layer_norm2's input)
    ClipTextLayerActs *layer;    // [N]
    Tensor final_mean, final_rstd;
    Tensor last;                 // last_hidden_state [B, T, C]
    Tensor dres, dmid, dtok, dff; // backward buffers [B, T, C] x 3, [B, T, FF]
} ClipTextTrainActs;

void clip_text_train_init(ClipTextTrainActs *r, const ClipText *m, int B, int T);
void clip_text_train_free(ClipTextTrainActs *r);
// r->last = last_hidden_state of ids [B, T]; the same values as clip_text_forward (the same ops in the same order).
void clip_text_train_forward(const ClipText *m, ClipTextTrainActs *r, const int32_t *ids);
// Backward of the last forward from dlast [B, T, C]: parameter gradients accumulate into grads (a ClipText planned
// with clip_text_plan and allocated).
void clip_text_backward(const ClipText *m, ClipText *grads, ClipTextTrainActs *r, const Tensor *dlast);

#ifdef __cplusplus
}
#endif
