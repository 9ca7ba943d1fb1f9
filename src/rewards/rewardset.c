// rewardset.c: a weighted sum of rewards (reward.h), on the device of the images. On the GPU the set's scratch is
// part of the memory plan: rewardset_plan reserves, once and before the run, what each reward's device path needs
// and the buffer in which one reward's image gradient is formed before it is added to the total.
#include <string.h>

#include "../core/common.h"
#include "../core/device.h"
#include "../ops/ops.h"
#include "adherence_cuda.h"
#include "reward.h"

// GPU scratch of reward r for B images of H x W
static size_t reward_scratch_bytes(const Reward *r, int64_t B, int64_t H, int64_t W) {
    if (r->score == adherence_score) return adherence_scratch_bytes(B, H * W);
    return 0;
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

void rewardset_plan(RewardSet *set, Device d, int64_t B, int64_t H, int64_t W) {
    if (d == DEVICE_CPU) return;
    size_t img = align256(sizeof(float) * (size_t)(B * 3 * H * W)), need = img;
    for (int k = 0; k < set->n; k++) need += align256(reward_scratch_bytes(&set->items[k], B, H, W));
    if (set->scratch && set->scratch_bytes >= need && set->device == d) return; // planned for a larger batch
    CHECK(!set->scratch || set->device == d, "", "one reward set planned on two devices");
    device_free(d, set->scratch);
    set->scratch = device_alloc(d, need);
    set->scratch_bytes = need, set->device = d;
    set->tmp_images = set->scratch;
    char *p = (char *)set->scratch + img;
    for (int k = 0; k < set->n; k++) {
        size_t b = reward_scratch_bytes(&set->items[k], B, H, W);
        set->items[k].scratch = b ? p : NULL;
        p += align256(b);
    }
}

void rewardset_free(RewardSet *set) {
    if (set->scratch) device_free(set->device, set->scratch);
    for (int k = 0; k < set->n; k++) set->items[k].scratch = NULL;
    set->scratch = set->tmp_images = NULL, set->scratch_bytes = 0;
}

void rewardset_score(const RewardSet *set, const Tensor *images, const char *const *prompts, float *total,
                     float *per_reward, Tensor *dimages, const float *dscore) {
    int64_t B = images->shape[0], n = tensor_numel(images);
    float *s = xmalloc(sizeof(float) * (size_t)B), *ds = xmalloc(sizeof(float) * (size_t)B);
    Tensor tmp = dimages ? *dimages : *images;
    void *host_tmp = NULL;
    if (dimages && dimages->device == DEVICE_CPU) tmp.data = host_tmp = xmalloc(sizeof(float) * (size_t)n);
    else if (dimages) {
        CHECK(set->tmp_images && set->scratch_bytes >= tensor_bytes(dimages), "plan the reward set for the GPU",
              "rewardset_score: no planned gradient buffer for %lld elements", (long long)n);
        tmp.data = set->tmp_images;
    }
    for (int64_t b = 0; b < B; b++) total[b] = 0.0f;
    if (dimages) device_zero(dimages->device, dimages->data, tensor_bytes(dimages));
    for (int k = 0; k < set->n; k++) {
        const Reward *r = &set->items[k];
        for (int64_t b = 0; b < B; b++) ds[b] = dscore ? r->weight * dscore[b] : 0.0f;
        r->score(r, images, prompts, s, dimages ? &tmp : NULL, ds);
        for (int64_t b = 0; b < B; b++) {
            total[b] += r->weight * s[b];
            if (per_reward) per_reward[k * B + b] = s[b];
        }
        if (dimages) tensor_axpy(dimages, 1.0f, &tmp);
    }
    free(host_tmp);
    free(s);
    free(ds);
}
