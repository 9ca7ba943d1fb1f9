// cudaemu_adherence.c: the prompt-adherence reward on the GPU against the CPU: scores and image gradients for a
// batch with parseable prompts and one that does not parse (score 0, no gradient), images with more pixels than one
// block of the reduction handles, f32 and bf16 storage.
#include <string.h>

#include "../src/rewards/adherence_cuda.h"
#include "../src/rewards/reward.h"
#include "cudaemu_util.h"

static void check(int64_t H, int64_t W, DType dt) {
    const int B = 4;
    const char *prompts[4] = {"a red circle", "a blue square", "not a scene at all", "a small green triangle on the left"};
    int64_t si[4] = {B, 3, H, W};
    Tensor x = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, si), dx = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, si);
    cu_fill(&x, (uint64_t)(H * 100 + W), 0.6f, dt == DTYPE_BF16);
    Reward r;
    reward_init(&r, "adherence", 1.0f, NULL, 0);
    float s_cpu[4], s_gpu[4], ds[4] = {-0.25f, 0.5f, 1.0f, -1.5f};
    r.score(&r, &x, prompts, s_cpu, &dx, ds);
    Tensor gx = cu_upload(&x, dt), gdx = cu_alloc(DEVICE_CUDA, dt, 4, si);
    r.scratch = device_alloc(DEVICE_CUDA, adherence_scratch_bytes(B, H * W));
    r.score(&r, &gx, prompts, s_gpu, &gdx, ds);
    double err = 0, mx = 0;
    for (int b = 0; b < B; b++) err = fmax(err, fabs((double)s_gpu[b] - s_cpu[b])), mx = fmax(mx, fabs(s_cpu[b]));
    // the same double sums in another order, rounded to float once: a float ulp of the largest score
    tu_check(err <= 1.2e-7 * mx && s_gpu[2] == 0.0f, "adherence scores %lldx%lld %s: max abs err %.3e (max %.3e)",
             (long long)H, (long long)W, dtype_name(dt), err, mx);
    char what[96];
    snprintf(what, sizeof what, "adherence gradient %lldx%lld %s", (long long)H, (long long)W, dtype_name(dt));
    // f32: computed in double, rounded once (1 ulp); bf16: the stored gradient is rounded to 8 bits (2^-8)
    cu_compare(what, &gdx, &dx, dt == DTYPE_BF16 ? 4e-3 : 2e-7);
    device_free(DEVICE_CUDA, r.scratch);
    cu_free(&x), cu_free(&dx), cu_free(&gx), cu_free(&gdx);
}

int main(void) {
    cu_require_gpu();
    check(8, 12, DTYPE_F32);
    check(64, 80, DTYPE_F32); // 5120 pixels: two reduction blocks per image
    check(33, 17, DTYPE_BF16);
    return tu_report();
}
