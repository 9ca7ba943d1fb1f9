// reward_cases.h: the small random-weight fixture models of the four learned rewards (one per real architecture's
// options: open_clip with GELU for hps, transformers CLIP with GELU for pickscore and QuickGELU for clipscore, the
// aesthetic MLP on the latter), shared by the CPU parity test (reward_clip) and the GPU one (cudaemu_reward_clip).
#pragma once
#include <stddef.h>

#include "../src/rewards/clip_reward.h"

typedef struct {
    const char *reward, *dir, *head;
} Case;

static const Case CASES[] = {
    {"hps", "tests/fixtures/models/reward_oc_gelu", NULL},
    {"pickscore", "tests/fixtures/models/reward_hf_gelu", NULL},
    {"clipscore", "tests/fixtures/models/reward_hf_quick", NULL},
    {"aesthetic", "tests/fixtures/models/reward_hf_quick", "tests/fixtures/models/reward_aesthetic/model.safetensors"},
};

// Loads case k's model with its documented preprocessing defaults and binds it as reward r of the given weight.
static inline void case_load(ClipReward *c, Reward *r, const Case *k, int checkpoint, float weight) {
    ClipRewardOptions o = {.path = k->dir, .head_path = k->head, .kernel = -1, .antialias = -1,
                           .checkpoint = checkpoint};
    clip_reward_load(c, k->reward, &o);
    clip_reward_bind(r, c, weight);
}
