// clip_text_train.h: the CLIP text encoder as a trainable model: a forward that keeps every layer's activations and
// the backward that accumulates parameter gradients from the gradient of last_hidden_state (what SD's UNet reads).
// `drtune pretrain` trains the small model's text encoder jointly with its UNet through these. The embedding and
// layer steps are declared here too: clip_text_forward runs the same ones, so both forwards agree bit for bit.
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

// The pieces both forwards run. clip_text_embed: ids [B, T] checked against the vocabulary (a user error otherwise)
// and copied into ids_t [B, T] i32, then x [B, T, C] = token_embedding[ids] + position_embedding[0..T).
void clip_text_embed(const ClipText *m, Tensor *x, Tensor *ids_t, const int32_t *ids);
// One pre-LN encoder layer: mid = in + out_proj(causal_attn(layer_norm1(in))), out = mid + fc2(act(fc1(
// layer_norm2(mid)))), all [B, T, C]; in, mid and out may be one tensor (clip_text_forward updates x in place).
void clip_text_layer_forward(const ClipTextLayer *p, const ClipTextConfig *c, const Tensor *in, Tensor *mid,
                             Tensor *out, ClipTextLayerActs *a);
// Backward of the last forward from dlast [B, T, C]: parameter gradients accumulate into grads (a ClipText planned
// with clip_text_plan and allocated).
void clip_text_backward(const ClipText *m, ClipText *grads, ClipTextTrainActs *r, const Tensor *dlast);

#ifdef __cplusplus
}
#endif
