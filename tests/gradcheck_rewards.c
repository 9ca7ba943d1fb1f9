// gradcheck_rewards.c: every built-in reward's image gradient against finite differences, plus the weighted
// combination and a few known values (a mirrored image is perfectly symmetric, a constant image has no edges).
#include <math.h>
#include <stdio.h>

#include "../src/rewards/reward.h"
#include "gradcheck.h"

typedef struct {
    Reward r;
    RewardSet set;
    int use_set;
    Tensor img, dimg, score, dscore;
} Ctx;

static void fwd(void *p) {
    Ctx *c = p;
    if (c->use_set)
        rewardset_score(&c->set, &c->img, NULL, c->score.data, NULL, NULL, NULL);
    else
        c->r.score(&c->r, &c->img, NULL, c->score.data, NULL, NULL);
}
static void bwd(void *p) {
    Ctx *c = p;
    float tmp[8];
    if (c->use_set)
        rewardset_score(&c->set, &c->img, NULL, tmp, NULL, &c->dimg, c->dscore.data);
    else
        c->r.score(&c->r, &c->img, NULL, tmp, &c->dimg, c->dscore.data);
}

static int check(Ctx *c, const char *name, int64_t H, int64_t W) {
    c->img = GC_TENSOR(2, 3, H, W), c->dimg = GC_TENSOR(2, 3, H, W);
    c->score = GC_TENSOR(2), c->dscore = GC_TENSOR(2);
    gc_fill_uniform(&c->img, -1.0f, 1.0f, 11);
    GradCheck g = {.name = name, .ctx = c, .forward = fwd, .backward = bwd, .n_wrt = 1, .n_out = 1};
    g.wrt[0] = &c->img, g.grad[0] = &c->dimg;
    g.out[0] = &c->score, g.dout[0] = &c->dscore;
    return gradcheck_run(&g);
}

int main(void) {
    int failures = 0, checks = 0;
    const char *names[] = {"symmetry", "brightness", "saturation", "sharpness", "colour", "compress"};
    const float target[3] = {0.9f, 0.2f, 0.1f};
    for (int i = 0; i < 6; i++) {
        Ctx c = {0};
        reward_init(&c.r, names[i], 1.0f, i == 4 ? target : NULL, i == 4 ? 3 : 0);
        // odd sizes; the JPEG proxy needs whole 8x8 blocks, plus a ragged border that must get zero gradient
        failures += check(&c, names[i], i == 5 ? 17 : 7, i == 5 ? 19 : 9);
        checks++;
    }
    Ctx c = {0};
    Reward items[2];
    reward_init(&items[0], "symmetry", 2.0f, NULL, 0);
    reward_init(&items[1], "colour", -0.5f, target, 3);
    c.set = (RewardSet){.items = items, .n = 2};
    c.use_set = 1;
    failures += check(&c, "weighted set", 6, 5);
    checks++;

    // known values: a left-right mirrored image scores 0 symmetry; a constant image has 0 sharpness
    float buf[3 * 4 * 6], s[1];
    Tensor img = tensor_f32_4d(buf, 1, 3, 4, 6);
    for (int k = 0; k < 3 * 4 * 6; k++) {
        int x = k % 6;
        buf[k] = 0.1f * (float)(x < 3 ? x : 5 - x) + 0.01f * (float)(k / 6);
    }
    Reward r;
    reward_init(&r, "symmetry", 1, NULL, 0);
    r.score(&r, &img, NULL, s, NULL, NULL);
    checks++;
    if (s[0] != 0.0f) failures++, printf("FAIL mirrored image symmetry %g\n", s[0]);
    for (int k = 0; k < 3 * 4 * 6; k++) buf[k] = 0.3f;
    reward_init(&r, "sharpness", 1, NULL, 0);
    r.score(&r, &img, NULL, s, NULL, NULL);
    checks++;
    if (fabsf(s[0]) > 1e-12f) failures++, printf("FAIL constant image sharpness %g\n", s[0]);
    reward_init(&r, "brightness", 1, NULL, 0);
    r.score(&r, &img, NULL, s, NULL, NULL);
    checks++;
    if (fabsf(s[0] - 0.65f) > 1e-6f) failures++, printf("FAIL brightness of u = 0.65 is %g\n", s[0]);
    return gc_report(failures, checks);
}
