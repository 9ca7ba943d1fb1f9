// clip_vision.h: the CLIP vision transformer (open_clip VisionTransformer, transformers CLIPVisionModel +
// visual_projection) as the image tower of the CLIP-based rewards: patch convolution, class token, positional
// embedding, ln_pre, pre-LN encoder layers (bidirectional attention), token-0 pooling, ln_post and the projection.
// The weights are frozen: the backward computes only the gradient of the input image, and the activations it
// reads live in one arena planned up front for a batch (or only each layer's input, recomputed layer by layer, with
// checkpointing). Only the public op API is used, so the tower runs wherever the ops run.
#pragma once
#include "../core/arena.h"
#include "../ops/ops.h"
#include "clip_text.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int width;       // D (hidden_size)
    int layers;      // L
    int heads;       // H
    int ff;          // intermediate size (mlp_ratio D)
    int patch;       // p (patch_size; the convolution's kernel and stride)
    int image_size;  // S: the tower reads S x S images, (S / p)^2 + 1 tokens
    int proj_dim;    // E (output of the projection)
    Activation act;  // gelu (open_clip nn.GELU, HF "gelu") or quick_gelu (OpenAI CLIP)
    float eps;       // layer norm eps
} ClipVisionConfig;

// "vision 2 layers, width 16, 2 heads, ff 64, patch 7, image 35 (26 tokens), gelu, projection 24"
const char *clip_vision_config_str(const ClipVisionConfig *c, char *buf, size_t n);

typedef struct {
    ClipVisionConfig cfg;
    Tensor patch_w;                 // [D, 3, p, p] (no bias)
    Tensor class_emb;               // [D]
    Tensor pos_emb;                 // [T, D]
    Tensor pre_ln_w, pre_ln_b;      // [D]
    ClipTextLayer *layers;          // [L]: the same pre-LN layer parameters as the text tower
    Tensor post_ln_w, post_ln_b;    // [D]
    Tensor proj;                    // [E, D] (transformers' visual_projection.weight; open_clip's proj transposed)
    Arena params;                   // under the transformers CLIPModel names
} ClipVision;

// Registers every parameter in m->params (not allocated), under the transformers CLIPModel names
// (vision_model.*, visual_projection.weight).
void clip_vision_plan(ClipVision *m, const ClipVisionConfig *c);
void clip_vision_free(ClipVision *m);

// What one layer's backward reads (all [B, T, D] unless noted).
typedef struct {
    Tensor in, mid;                 // the layer's input (residual stream) and the residual after attention
    Tensor ln1_mean, ln1_rstd;      // [B*T]
    MHACache mha;                   // q, k, v, attn, lse [B, H, T]
    Tensor ln2_mean, ln2_rstd;      // [B*T]
    Tensor fc1;                     // [B, T, FF] before the activation
} ClipVisionSaved;

// One batch's activation memory, planned for B images at once.
typedef struct {
    int B, T, checkpoint;
    Arena mem;
    Tensor pixels;                  // [B, 3, S, S] the normalised input (written by the caller)
    Tensor patches;                 // [B, D, g, g] patch convolution output
    Tensor x0, pre_mean, pre_rstd;  // tokens before ln_pre, its statistics
    ClipVisionSaved *saved;         // [L]; with checkpointing only saved[i].in is per layer, the rest is shared
    Tensor out;                     // [B, T, D] last layer's output
    Tensor h, act, tmp;             // transients: LN output [B, T, D], activation [B, T, FF], projection out [B, T, D]
    Tensor pooled, post_mean, post_rstd, pooled_ln; // [B, D], [B], [B], [B, D]
    Tensor features;                // [B, E] the projected image features
    Tensor dres, dmid, dh, dff, dff2, dpatches, dpooled, dpooled_ln; // backward buffers
    int32_t *cls_idx;               // [B] zeros (token 0 pooling)
} ClipVisionRun;

// Plans and allocates the activations of B images on the device of m's weights; checkpoint: keep only each layer's
// input and recompute the layer before its backward (less memory, one more forward of every layer).
void clip_vision_run_init(ClipVisionRun *r, const ClipVision *m, int B, int checkpoint);
void clip_vision_run_free(ClipVisionRun *r);
// Bytes of the run's activation arena.
size_t clip_vision_run_bytes(const ClipVisionRun *r);
// r->features [B, E] from r->pixels [B, 3, S, S].
void clip_vision_forward(const ClipVision *m, ClipVisionRun *r);
// dpixels [B, 3, S, S] (written; may be NULL) from dfeatures [B, E] of the last forward. grads: NULL for the input
// gradient alone (rewards: weights frozen, nothing extra computed), or a ClipVision planned with clip_vision_plan
// and allocated, into which every parameter gradient accumulates (+=).
void clip_vision_backward(const ClipVision *m, ClipVisionRun *r, const Tensor *dfeatures, Tensor *dpixels,
                          ClipVision *grads);

#ifdef __cplusplus
}
#endif
