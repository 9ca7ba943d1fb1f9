// clip_reward.h: the learned rewards built on a CLIP image tower, with the gradient of the input image:
//   hps        HPS v2 / v2.1 (open_clip ViT-H-14):        cos(f_img, f_txt)
//   pickscore  PickScore v1 (transformers CLIP-H):         exp(logit_scale) cos(f_img, f_txt)
//   clipscore  CLIP score (OpenAI ViT-L/14):               100 cos(f_img, f_txt)   (not clamped at 0)
//   aesthetic  LAION improved aesthetic predictor v2:      MLP(f_img / |f_img|)    (OpenAI ViT-L/14 features)
// Each image goes through the differentiable preprocessing of its model's own pipeline: [-1, 1] -> [0, 1] clamp,
// resize to the tower's S (bicubic or bilinear, antialias on or off), fit (hps: longest side to S and zero padding;
// the others: shortest side to S and a centre crop), OpenAI mean/std. Text features are computed once per prompt
// (fp32, normalised) and cached. The prompts are tokenized with OpenAI's CLIP vocabulary (data/tokenizer/clip), or
// with the model folder's own vocab.json and merges.txt when it has them (the small CLIP of data/models/clip). docs/REWARDS.md has the formulas, defaults and where the weights come from.
#pragma once
#include "../models/clip_model.h"
#include "../models/tokenizer.h"
#include "reward.h"

#ifdef __cplusplus
extern "C" {
#endif

// OpenAI CLIP's pixel mean and std (every model here, the small CLIP's training included).
extern const float CLIP_PIXEL_MEAN[3], CLIP_PIXEL_STD[3];

typedef enum { CLIP_REWARD_HPS, CLIP_REWARD_PICKSCORE, CLIP_REWARD_CLIPSCORE, CLIP_REWARD_AESTHETIC } ClipRewardKind;
typedef enum { CLIP_FIT_PAD, CLIP_FIT_CROP_FLOOR, CLIP_FIT_CROP_ROUND } ClipFit;

typedef struct {
    const char *path;        // the CLIP model folder (clip_model.h); for aesthetic the ViT-L/14 folder
    const char *head_path;   // aesthetic only: the MLP's safetensors (layers.{0,2,4,6,7}.{weight,bias})
    int kernel;              // ResizeKernel, or -1 for the model's default (bicubic)
    int antialias;           // 0 / 1, or -1 for the default (1)
    int checkpoint;          // recompute each ViT layer in the backward instead of keeping its activations
} ClipRewardOptions;

typedef struct ClipReward {
    ClipRewardKind kind;
    ClipModel model;
    ResizeKernel kernel;
    int antialias, checkpoint;
    ClipFit fit;
    float scale;                    // score = scale cos (not used by aesthetic)
    // aesthetic MLP: layers [n_head] of Linear without activation
    Arena head;
    Tensor head_w[8], head_b[8];
    int n_head;
    // text feature cache: normalised features of each prompt seen
    Tokenizer tok;
    int has_tok;
    char *tok_dir;                  // the model folder when it holds vocab.json and merges.txt, else NULL
    char **cache_prompt;
    float *cache_feat;              // [n_cache, E]
    int n_cache, cap_cache;
    // memory planned for the current batch geometry (B images of H x W)
    int B, H, W, RH, RW, top, left; // resized size, pad (top/left > 0) or crop (offsets) of the fit
    ClipVisionRun run;
    Arena mem;
    Tensor x01, resized, fitted;    // [B, 3, H, W], [B, 3, RH, RW], [B, 3, S, S]
    Tensor fn, norm, text, cosv;    // [B, E], [B], [B, E], [B]
    Tensor hs[8];                   // aesthetic activations: hs[0] = fn, hs[k + 1] = layer k output
    Tensor dscore, dfn, dfeat, dpix, dfitted, dresized, dx01; // backward buffers
    Tensor dhs[8];
    Tensor img32, dimg;             // GPU: the images in fp32 and their gradient [B, 3, H, W]
    size_t ws_lead;                 // GPU: the ops' scratch the reward's ops need (ops_workspace bytes)
} ClipReward;

// 1 if name is one of the CLIP rewards.
int clip_reward_known(const char *name);
void clip_reward_load(ClipReward *c, const char *name, const ClipRewardOptions *o);
void clip_reward_free(ClipReward *c);
// Makes r (reward.h) score with c (which must outlive r).
void clip_reward_bind(Reward *r, ClipReward *c, float weight);
// Caches the text feature of prompt from given token ids (T ids, pooled at the EOS rule of the text config), without
// the tokenizer: what the tests use for models with a private vocabulary.
void clip_reward_cache_ids(ClipReward *c, const char *prompt, const int32_t *ids, int T);
// The normalised text feature [E] of prompt (computed on first use, cached; valid until the next new prompt).
const float *clip_reward_text_feature(ClipReward *c, const char *prompt);
// The normalised image features c->fn [B, E] of images [B, 3, H, W] in [-1, 1], through the model's preprocessing
// (what the score compares with the text features).
void clip_reward_image_features(ClipReward *c, const Tensor *images);
// The Reward.score callback: scores [B] and, when dimages != NULL, d(sum_b dscore[b] score[b]) / d images.
// Images on the GPU: scores, dscore and dimages are device arrays (as clip_reward_score_cuda_add, dimages written).
void clip_reward_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                       Tensor *dimages, const float *dscore);
// Images on the GPU: moves the weights to their device and plans the batch there (allocating; a dry run sizes the
// ops' scratch). Call while planning (rewardset_plan does); nothing again for the same geometry.
void clip_reward_plan_device(ClipReward *c, const Tensor *images);
// The ops_workspace bytes the planned reward's ops use from the bottom of that scratch (internal failure when it is
// not planned for these images).
size_t clip_reward_device_bytes(const ClipReward *c, const Tensor *images);
// Images on the GPU, device arrays: scores [B] written; dimages (fp32) += d(sum_b weight dscore[b] score[b]) / d
// images (dimages NULL: no gradient; dscore NULL: zero).
void clip_reward_score_cuda_add(const Reward *r, float weight, const Tensor *images, const char *const *prompts,
                                float *scores, Tensor *dimages, const float *dscore);
// Bytes of the activation memory planned for the last batch (tower and preprocessing).
size_t clip_reward_activation_bytes(const ClipReward *c);

#ifdef __cplusplus
}
#endif
