// cudaemu_adherence.c: the prompt-adherence reward on the GPU against the CPU: scores and image gradients for a
// batch with parseable prompts and one that does not parse (score 0, no gradient), images with more pixels than one
// block of the reduction handles, f32 and bf16 storage; alone, and in a weighted set with symmetry (the set adds
// the gradients in fp32 on the GPU). Scores and dscore are device arrays on the GPU (rewards/reward.h).
#include <string.h>

#include "../src/ops/ops.h"
#include "../src/rewards/reward.h"
#include "cudaemu_util.h"

static const char *PROMPTS[4] = {"a red circle", "a blue square", "not a scene at all",
                                 "a small green triangle on the left"};

static void compare_scores(const char *what, const float *dev, const float *cpu, int n) {
    float got[8];
    device_copy(got, DEVICE_CPU, dev, DEVICE_CUDA, sizeof(float) * (size_t)n);
    double err = 0, mx = 0;
    for (int b = 0; b < n; b++) err = fmax(err, fabs((double)got[b] - cpu[b])), mx = fmax(mx, fabs(cpu[b]));
    // the same double sums in another order, rounded to float once: a float ulp of the largest score
    tu_check(err <= 1.2e-7 * mx, "%-40s max abs err %.3e (max %.3e)", what, err, mx);
}

static void check(int64_t H, int64_t W, DType dt, int set) {
    const int B = 4;
    int64_t si[4] = {B, 3, H, W}, sb[1] = {B}, sk[1] = {2 * B};
    Tensor x = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, si), dx = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, si);
    cu_fill(&x, (uint64_t)(H * 100 + W), 0.6f, dt == DTYPE_BF16);
    Reward r[2];
    reward_init(&r[0], "adherence", set ? 0.75f : 1.0f, NULL, 0);
    reward_init(&r[1], "symmetry", -2.0f, NULL, 0);
    RewardSet rs = {.items = r, .n = 2};
    float s_cpu[8], total_cpu[4], ds[4] = {-0.25f, 0.5f, 1.0f, -1.5f};
    if (set) rewardset_score(&rs, &x, PROMPTS, total_cpu, s_cpu, &dx, ds);
    else r[0].score(&r[0], &x, PROMPTS, s_cpu, &dx, ds);
    Tensor gx = cu_upload(&x, dt), gdx = cu_alloc(DEVICE_CUDA, dt, 4, si);
    Tensor gds = cu_upload(&(Tensor){.data = ds, .dtype = DTYPE_F32, .device = DEVICE_CPU, .ndim = 1, .shape = {B}},
                           DTYPE_F32);
    Tensor gs = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, sk), gt = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, sb);
    ops_workspace_reserve(DEVICE_CUDA, rewardset_workspace_bytes(&rs, &gx));
    if (set) rewardset_score(&rs, &gx, PROMPTS, gt.data, gs.data, &gdx, gds.data);
    else r[0].score(&r[0], &gx, PROMPTS, gs.data, &gdx, gds.data);
    char what[96];
    snprintf(what, sizeof what, "%s scores %lldx%lld %s", set ? "set" : "adherence", (long long)H, (long long)W,
             dtype_name(dt));
    compare_scores(what, gs.data, s_cpu, set ? 2 * B : B);
    if (set) {
        snprintf(what, sizeof what, "set totals %lldx%lld %s", (long long)H, (long long)W, dtype_name(dt));
        compare_scores(what, gt.data, total_cpu, B);
    }
    snprintf(what, sizeof what, "%s gradient %lldx%lld %s", set ? "set" : "adherence", (long long)H, (long long)W,
             dtype_name(dt));
    // f32: computed in double, rounded once, then the same fp32 additions as the CPU; bf16: the stored gradient is
    // rounded to 8 bits (2^-8 relative)
    cu_compare(what, &gdx, &dx, dt == DTYPE_BF16 ? 4e-3 : 2.4e-7);
    cu_free(&x), cu_free(&dx), cu_free(&gx), cu_free(&gdx), cu_free(&gds), cu_free(&gs), cu_free(&gt);
}

int main(void) {
    cu_require_gpu();
    check(8, 12, DTYPE_F32, 0);
    check(64, 80, DTYPE_F32, 0); // 5120 pixels: two reduction blocks per image
    check(33, 17, DTYPE_BF16, 0);
    check(16, 24, DTYPE_F32, 1);
    check(19, 21, DTYPE_BF16, 1);
    return tu_report();
}
