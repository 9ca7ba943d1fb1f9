// cudaemu_reward_clip.c: the learned rewards (hps, pickscore, clipscore, aesthetic) on the GPU against the CPU, on
// the small random-weight fixture models of reward_clip.c: a reward set of one learned reward (weight 0.7) scores a
// batch and takes the image gradient of sum_b dscore[b] total[b] on both devices, as the engine calls it (device
// score arrays; the GPU planned by rewardset_plan, then device allocations frozen while scoring), at a
// square batch of two and a non-square image, fp32 images and (once) bf16 images.
//
// Tolerance (max |gpu - cpu| / max |cpu|, scores and gradient): both devices compute in fp32 with the same weights;
// the GPU's GEMMs, attention and row reductions sum in other orders than OpenBLAS and the CPU ops, so each
// activation differs by a few fp32 roundings (~1e-7 relative) through a few layers: 2e-5 allows that and still
// catches any wrong index or scale (those give O(1) errors). bf16 images: the CPU scores the bf16-rounded images, the
// GPU casts them to fp32 first (exact), so the same bound holds; the bf16 gradient output adds 2^-8.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cudaemu_util.h"
#include "../src/ops/ops.h"
#include "fixture.h"
#include "reward_cases.h"

#define TOL 2e-5

static void load(ClipReward *c, Reward *r, const Case *k) {
    case_load(c, r, k, 0, 0.7f);
    if (c->model.has_text) { // the fixture's token ids for both prompts (the models use a private vocabulary)
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/reward_%s_ref.safetensors", k->reward);
        SafeTensors st;
        safetensors_open(&st, path);
        Tensor ids = fixture_get(&st, "ids");
        int T = (int)ids.shape[1];
        clip_reward_cache_ids(c, "p0", (int32_t *)ids.data, T);
        clip_reward_cache_ids(c, "p1", (int32_t *)ids.data + T, T);
        safetensors_close(&st);
    }
}

static Tensor dev_f32(int64_t n, const float *host) {
    Tensor t = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, (int64_t[]){n});
    if (host) device_copy(t.data, DEVICE_CUDA, host, DEVICE_CPU, sizeof(float) * (size_t)n);
    return t;
}

static void check(const Case *k, int64_t B, int64_t H, int64_t W, DType dt) {
    ClipReward cc, cg;
    Reward rc, rg;
    load(&cc, &rc, k);
    load(&cg, &rg, k);
    RewardSet sc = {&rc, 1}, sg = {&rg, 1};
    int64_t shape[4] = {B, 3, H, W};
    Tensor x = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, shape), dx = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, shape);
    cu_fill(&x, 31 + (uint64_t)H, 0.8f, dt == DTYPE_BF16); // some pixels beyond [-1, 1]: the clamp's zero gradient
    Tensor gx = cu_upload(&x, dt), gdx = cu_alloc(DEVICE_CUDA, dt, 4, shape);
    const char *prompts[] = {"p1", "p0"};
    float dscore[2] = {1.0f, -0.5f}, total[2], per[2];
    rewardset_score(&sc, &x, prompts, total, per, &dx, dscore);

    Tensor gtotal = dev_f32(B, NULL), gper = dev_f32(B, NULL), gds = dev_f32(B, dscore);
    rewardset_plan(&sg, &gx); // planning, as the engine does
    ops_workspace_reserve(DEVICE_CUDA, rewardset_workspace_bytes(&sg, &gx));
    long long before = device_alloc_count();
    device_freeze_allocations(1);
    rewardset_score(&sg, &gx, prompts, gtotal.data, gper.data, &gdx, gds.data);
    rewardset_score(&sg, &gx, prompts, gtotal.data, gper.data, &gdx, gds.data); // again: nothing carried over
    device_freeze_allocations(0);
    tu_check(device_alloc_count() == before, "%s: no device allocation while scoring (%lld)", k->reward,
             device_alloc_count() - before);

    char what[128];
    snprintf(what, sizeof what, "%s %s B%lld %lldx%lld score", k->reward, dt == DTYPE_BF16 ? "bf16" : "f32",
             (long long)B, (long long)H, (long long)W);
    Tensor ct = tensor_f32_1d(total, B), cp = tensor_f32_1d(per, B);
    cu_compare(what, &gper, &cp, TOL);
    cu_compare("  total (weight 0.7)", &gtotal, &ct, TOL);
    cu_compare("  image gradient", &gdx, &dx, dt == DTYPE_BF16 ? TOL + 1.0 / 256 : TOL);
    cu_free(&gtotal), cu_free(&gper), cu_free(&gds), cu_free(&gx), cu_free(&gdx), cu_free(&x), cu_free(&dx);
    clip_reward_free(&cc);
    clip_reward_free(&cg);
}

int main(void) {
    cu_require_gpu();
    for (int i = 0; i < 4; i++) {
        check(&CASES[i], 2, 64, 64, DTYPE_F32);
        check(&CASES[i], 1, 24, 40, DTYPE_F32);
    }
    check(&CASES[0], 2, 40, 32, DTYPE_BF16);
    return tu_report();
}
