// reward.h: the reward interface. A reward maps a batch of images (and their prompts) to one score per image and,
// on request, the gradient of sum_b dscore[b] * score[b] with respect to the images. Rewards combine with weights.
// Images are the VAE decoder's output: [B, 3, H, W] with values nominally in [-1, 1]; rewards that read colours
// use u = x / 2 + 1/2 (unclamped, so the gradient never vanishes outside [0, 1]).
#pragma once
#include "../core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Reward Reward;
struct Reward {
    char name[32];
    float weight;                    // in a combination
    float params[4];                 // reward-specific (e.g. colour target RGB)
    void *ctx;                       // reward-specific state (the learned rewards' models: clip_reward.h)
    // scores [B] written; when dimages != NULL it is written with d(sum_b dscore[b] score[b]) / d images
    void (*score)(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                  Tensor *dimages, const float *dscore);
};

// The built-in differentiable low-level rewards, by name (docs/REWARDS.md gives each formula):
//   symmetry      -mean (u - mirror(u))^2                 left-right symmetry (1 = perfectly symmetric -> 0)
//   brightness    mean luma                               (0.299 R + 0.587 G + 0.114 B)
//   saturation    mean over pixels of the channel std     sqrt(var_c(u) + 1e-6)
//   sharpness     mean squared 3x3 Laplacian of the luma  (negative weight = smoothness)
//   colour        -mean |u - target|^2                    target RGB in params[0..2], in [0, 1]
//   compress      -mean log(1 + |DCT8x8(luma*255) / Q50|) a differentiable JPEG-size proxy (quality-50 table)
// The learned rewards hps, pickscore, clipscore and aesthetic need their models (rewards/clip_reward.h: loaded by
// setup_rewards, not reward_init). Unknown names are a user error listing the known ones.
void reward_init(Reward *r, const char *name, float weight, const float *params, int nparams);
const char *reward_known_names(void);
// adherence: prompt adherence on the procedural scene set (rewards/adherence.c, docs/DATA.md). On the GPU the
// reward set calls adherence_score_cuda_add: scores [B] written, dimages += the gradient of weight dscore score
// (device arrays), ws of adherence_scratch_bytes (rewards/adherence_cuda.h).
void adherence_score_cuda_add(const Reward *r, float weight, const Tensor *images, const char *const *prompts,
                              float *scores, Tensor *dimages, const float *dscore, void *ws);
void adherence_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                     Tensor *dimages, const float *dscore);

// A weighted sum of rewards: total[b] = sum_k w_k score_k[b]; per-reward scores (k-major [K, B]) optional.
// Images on the GPU are scored there (every reward; the learned ones through the ops): total, per_reward and
// dscore are then fp32 device arrays and nothing is read back; a single reward's score() behaves the same way.
typedef struct {
    Reward *items;
    int n;
} RewardSet;
void rewardset_score(const RewardSet *set, const Tensor *images, const char *const *prompts, float *total,
                     float *per_reward, Tensor *dimages, const float *dscore);
// 1 when every reward of the set has a GPU path (all of them: the low-level rewards, adherence, the learned rewards).
int rewardset_on_gpu(const RewardSet *set);
// Images on the GPU: plans the learned rewards there for images of this shape (their weights move to the GPU, their
// activations are allocated, a dry run sizes the ops' scratch); nothing for the other rewards or on the CPU. Call it
// while planning, before allocations are frozen, and before rewardset_workspace_bytes.
void rewardset_plan(const RewardSet *set, const Tensor *images);
// GPU scratch bytes rewardset_score needs for these images (0 on the CPU), for the memory plan.
size_t rewardset_workspace_bytes(const RewardSet *set, const Tensor *images);

#ifdef __cplusplus
}
#endif
