// pretrain_clip.h: `drtune pretrain-clip`, contrastive training of a small CLIP (ViT image tower + text tower) on the
// procedural scenes of data/scenes.h, exported as a transformers CLIPModel folder that the `clipscore` reward loads
// like OpenAI's CLIP: a learned, high-level reward with real weights that ships with drtune (docs/SMALL_MODEL.md),
// and its retrieval accuracy on held-out scenes.
#pragma once
#include "pretrain.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char out[PRETRAIN_PATH_MAX];       // exported folder (config.json, model.safetensors, tokenizer files)
    char tokenizer[PRETRAIN_PATH_MAX]; // CLIP tokenizer folder of the captions (the small model's)
    int data_seed;                     // scene seed of scenes.h (training split 0; held-out split 1 for evaluation)
    int image_size, patch, width, layers, heads; // image tower: S x S images, p x p patches, D, L, H (ff 4 D)
    int text_width, text_layers, context;        // text tower: C, N, positions (ff 4 C, heads as the image tower)
    int proj_dim;                      // E: the shared embedding width
    int iterations, batch, warmup, seed, log_every, threads;
    double lr, weight_decay;
} ClipPretrainConfig;

// The defaults of data/models/clip.
void clip_pretrain_defaults(ClipPretrainConfig *c);
// Trains from scratch and exports c->out; returns 0.
int clip_pretrain_run(const ClipPretrainConfig *c);

// CLIP's symmetric contrastive loss over a batch of B pairs: logits[i][j] = exp(logit_scale) <fi_i, ft_j> (image i,
// caption j; fi, ft [B, E], normalised by the caller), the mean of the cross-entropy of each image's caption and of
// each caption's image. Pairs whose captions are the same text (captions may be NULL: all distinct) are not negatives:
// they are left out of both softmaxes. Writes dfi, dft [B, E] and *dlogit_scale (the loss's gradients; computed in
// double), *acc (may be NULL) the in-batch top-1 image -> caption accuracy; returns the loss.
double clip_contrastive_loss(const float *fi, const float *ft, int B, int E, float logit_scale,
                             const char *const *captions, float *dfi, float *dft, float *dlogit_scale, double *acc);

// Retrieval accuracy of a CLIP folder on n held-out scenes (split 1 of seed, indices first..first+n-1), scored through
// the clipscore reward's own path (clip_reward.h: loading, tokenizer, preprocessing). A caption counts as retrieved
// when its text equals the true caption (scenes with identical captions are interchangeable).
typedef struct {
    int n;
    double i2t_top1, i2t_top5, t2i_top1, t2i_top5; // fractions in [0, 1]
    double chance_top1;                            // expected top-1 of random ranking (duplicates counted)
} ClipRetrieval;
void clip_retrieval_eval(const char *model_dir, int seed, int first, int n, ClipRetrieval *out);

#ifdef __cplusplus
}
#endif
