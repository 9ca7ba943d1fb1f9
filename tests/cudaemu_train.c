// cudaemu_train.c: the CUDA kernels of a training iteration outside the network against their CPU code: the DDIM
// step (forward, backward, x0 prediction, add_noise) for each prediction type with and without clipping and noise,
// the classifier-free-guidance combine, the global gradient sum of squares (with its non-finite check), AdamW, and
// the low-level rewards (scores and image gradients, each alone and all combined).
//
// Tolerances (max |gpu - cpu| / max |cpu|):
//   - DDIM, guidance, AdamW: the kernels use explicitly rounded fp32 (double where the CPU uses double) operations in
//     the CPU code's order, so fp32 results are bit-identical: 0. bf16 storage: 2^-8, the output's rounding;
//   - the sum of squares: double sums in another order; the CPU adds up to 2.5M terms in sequence, whose rounding
//     error grows like sqrt(n) 2^-53 (~2e-13 here; n 2^-53 at worst for n = 5M is 5e-10): 1e-11;
//   - rewards: REWARD_SCORE_TOL / REWARD_GRAD_TOL below. bf16 images are rounded, so both sides score the same values;
//     a bf16 gradient adds 2^-8 (its rounding; the combination sums in fp32 and rounds once).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cudaemu_util.h"
#include "../src/diffusion/ddim.h"
#include "../src/ops/ops.h"
#include "../src/rewards/reward.h"
#include "../src/train/optim.h"

#define BF16_TOL (1.0 / 256.0)

static const char *dtn(DType dt) { return dt == DTYPE_BF16 ? "bf16" : "f32"; }
static Tensor rnd(int ndim, const int64_t *shape, uint64_t tag, float scale, DType dt, Tensor *gpu) {
    Tensor c = cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape);
    cu_fill(&c, tag, scale, dt == DTYPE_BF16);
    if (gpu) *gpu = cu_upload(&c, dt);
    return c;
}
static void release(Tensor *ts, int n) {
    for (int i = 0; i < n; i++) cu_free(&ts[i]);
}
static void cmp(const char *what, const char *cfg, DType dt, const Tensor *g, const Tensor *c, double tol) {
    char w[256];
    snprintf(w, sizeof w, "%s %s %s", what, cfg, dtn(dt));
    cu_compare(w, g, c, dt == DTYPE_BF16 ? tol + BF16_TOL : tol);
}

// ---------------------------------------------------------------------------------------------------------------
static void test_ddim(DType dt, PredictionType pred, int clip, float eta) {
    DdimConfig cfg = ddim_default_config();
    cfg.prediction = pred, cfg.clip_sample = clip, cfg.clip_sample_range = 1.0f;
    Ddim s;
    ddim_init(&s, &cfg);
    ddim_set_timesteps(&s, 10);
    const char *pn[] = {"eps", "v", "sample"};
    char name[64];
    snprintf(name, sizeof name, "[%s%s eta %.0f]", pn[pred], clip ? " clip" : "", (double)eta);
    int64_t sh[4] = {2, 4, 5, 7};
    Tensor gm, gx, gz, gg, gg0, gno;
    Tensor m = rnd(4, sh, 1, 1.5f, dt, &gm), x = rnd(4, sh, 2, 1.5f, dt, &gx), z = rnd(4, sh, 3, 1.0f, dt, &gz);
    Tensor g = rnd(4, sh, 4, 1.0f, dt, &gg), g0 = rnd(4, sh, 5, 1.0f, dt, &gg0), no = rnd(4, sh, 6, 1.0f, dt, &gno);
    Tensor xp = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, sh), x0 = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, sh);
    Tensor dm = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, sh), dx = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, sh);
    Tensor gxp = cu_alloc(DEVICE_CUDA, dt, 4, sh), gx0 = cu_alloc(DEVICE_CUDA, dt, 4, sh);
    Tensor gdm = cu_alloc(DEVICE_CUDA, dt, 4, sh), gdx = cu_alloc(DEVICE_CUDA, dt, 4, sh);
    const int steps[3] = {0, 5, 9}; // 9: the last step, to final_alpha_cumprod
    for (int k = 0; k < 3; k++) {
        int i = steps[k];
        ddim_step(&s, i, eta, &xp, &x0, &m, &x, &z);
        ddim_step(&s, i, eta, &gxp, &gx0, &gm, &gx, &gz);
        cmp("ddim_step x_prev", name, dt, &gxp, &xp, 0);
        cmp("ddim_step x0", name, dt, &gx0, &x0, 0);
        ddim_step_backward(&s, i, eta, &dm, &dx, &g, &g0, &m, &x);
        ddim_step_backward(&s, i, eta, &gdm, &gdx, &gg, &gg0, &gm, &gx);
        cmp("ddim_step_backward dm", name, dt, &gdm, &dm, 0);
        cmp("ddim_step_backward dx", name, dt, &gdx, &dx, 0);
        ddim_step_backward(&s, i, eta, &dm, NULL, NULL, &g0, &m, &x); // the x0 read-out's gradient alone
        ddim_step_backward(&s, i, eta, &gdm, NULL, NULL, &gg0, &gm, &gx);
        cmp("ddim x0 backward dm", name, dt, &gdm, &dm, 0);
        ddim_predict_x0(&s, i, &x0, &m, &x);
        ddim_predict_x0(&s, i, &gx0, &gm, &gx);
        cmp("ddim_predict_x0", name, dt, &gx0, &x0, 0);
    }
    ddim_add_noise(&s, 981, &xp, &x, &no);
    ddim_add_noise(&s, 981, &gxp, &gx, &gno);
    cmp("ddim_add_noise", name, dt, &gxp, &xp, 0);
    release((Tensor[]){m, gm, x, gx, z, gz, g, gg, g0, gg0, no, gno, xp, x0, dm, dx, gxp, gx0, gdm, gdx}, 20);
    ddim_free(&s);
}

static void test_cfg(DType dt, int two) {
    int64_t so[4] = {3, 4, 5, 7}, sr[4] = {two ? 6 : 3, 4, 5, 7};
    Tensor grows, gd, rows = rnd(4, sr, 7, 1.0f, dt, &grows), d = rnd(4, so, 8, 1.0f, dt, &gd);
    Tensor out = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, so), gout = cu_alloc(DEVICE_CUDA, dt, 4, so);
    Tensor dr = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, sr), gdr = cu_alloc(DEVICE_CUDA, dt, 4, sr);
    const char *name = two ? "[two branches]" : "[one branch]";
    cfg_combine_forward(&out, &rows, 7.5f);
    cfg_combine_forward(&gout, &grows, 7.5f);
    cmp("cfg_combine fwd", name, dt, &gout, &out, 0);
    cfg_combine_backward(&dr, &d, 7.5f, 0.37);
    cfg_combine_backward(&gdr, &gd, 7.5f, 0.37);
    cmp("cfg_combine bwd", name, dt, &gdr, &dr, 0);
    release((Tensor[]){rows, grows, d, gd, out, gout, dr, gdr}, 8);
}

// ---------------------------------------------------------------------------------------------------------------
// the sum of squares of n gradients at an offset into an allocation (unaligned when off % 4 != 0)
static void test_sumsq(int64_t n, int64_t off) {
    int64_t sh[1] = {n + off};
    Tensor g = rnd(1, sh, 9, 1.0f, DTYPE_F32, NULL), gg = cu_upload(&g, DTYPE_F32);
    Tensor acc = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, (int64_t[]){2}); // one device double
    const float *gd = (const float *)gg.data + off, *gh = (const float *)g.data + off;
    ops_workspace_reserve(DEVICE_CUDA, grad_sumsq_device_workspace_bytes(n));
    double ref = grad_sumsq(gh, n), a, b;
    grad_sumsq_device(acc.data, gd, n, 0);
    device_copy(&a, DEVICE_CPU, acc.data, DEVICE_CUDA, sizeof a);
    grad_sumsq_device(acc.data, gd, n, 0); // again, in another random thread and block order
    device_copy(&b, DEVICE_CPU, acc.data, DEVICE_CUDA, sizeof b);
    tu_check(fabs(a - ref) <= 1e-11 * ref, "grad_sumsq n %-8lld offset %lld: rel err %.3e (tol 1e-11)", (long long)n,
             (long long)off, fabs(a - ref) / ref);
    tu_check(memcmp(&a, &b, sizeof a) == 0, "grad_sumsq n %lld: the same bits on a second run", (long long)n);
    grad_sumsq_device(acc.data, gd, n, 1); // accumulate: twice the sum (exact: a doubling)
    device_copy(&b, DEVICE_CPU, acc.data, DEVICE_CUDA, sizeof b);
    tu_check(b == a + a, "grad_sumsq n %lld: accumulates into the running sum", (long long)n);
    release((Tensor[]){g, gg, acc}, 3);
}

// AdamW over a few steps against adamw_update, both given the same sum of squares (the CPU's); then a NaN gradient
// whose device norm must stop the update
static void test_adamw(int64_t n, int64_t off) {
    AdamWConfig c = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f,
                     .grad_clip = 0.5f};
    int64_t sh[1] = {n + off}, sv[1] = {n};
    Tensor p = rnd(1, sh, 10, 1.0f, DTYPE_F32, NULL), gp = cu_upload(&p, DTYPE_F32);
    Tensor m = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, sh), v = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, sh);
    Tensor gm = cu_upload(&m, DTYPE_F32), gv = cu_upload(&v, DTYPE_F32);
    Tensor gsq = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, (int64_t[]){2});
    float *P = (float *)p.data + off, *M = (float *)m.data + off, *V = (float *)v.data + off;
    float *dP = (float *)gp.data + off, *dM = (float *)gm.data + off, *dV = (float *)gv.data + off;
    char what[96];
    for (int step = 1; step <= 3; step++) {
        Tensor g = rnd(1, sv, 20 + (uint64_t)step, step == 2 ? 3.0f : 0.01f, DTYPE_F32, NULL); // step 2 is clipped
        Tensor gg = cu_upload(&g, DTYPE_F32);
        double sumsq = grad_sumsq(g.data, n);
        device_copy(gsq.data, DEVICE_CUDA, &sumsq, DEVICE_CPU, sizeof sumsq);
        adamw_update(&c, c.lr, step, grad_clip_coef(&c, sqrt(sumsq)), P, g.data, M, V, n);
        adamw_update_device(&c, c.lr, step, gsq.data, dP, gg.data, dM, dV, n);
        Tensor vp = tensor_make(dP, DTYPE_F32, DEVICE_CUDA, 1, sv), cp = tensor_make(P, DTYPE_F32, DEVICE_CPU, 1, sv);
        Tensor vm = tensor_make(dM, DTYPE_F32, DEVICE_CUDA, 1, sv), cm = tensor_make(M, DTYPE_F32, DEVICE_CPU, 1, sv);
        Tensor vv = tensor_make(dV, DTYPE_F32, DEVICE_CUDA, 1, sv), cv = tensor_make(V, DTYPE_F32, DEVICE_CPU, 1, sv);
        snprintf(what, sizeof what, "adamw n %lld off %lld step %d: p", (long long)n, (long long)off, step);
        cu_compare(what, &vp, &cp, 0);
        snprintf(what, sizeof what, "adamw n %lld off %lld step %d: m", (long long)n, (long long)off, step);
        cu_compare(what, &vm, &cm, 0);
        snprintf(what, sizeof what, "adamw n %lld off %lld step %d: v", (long long)n, (long long)off, step);
        cu_compare(what, &vv, &cv, 0);
        if (step == 3) { // a non-finite gradient: the norm computed on the device is NaN and nothing changes
            ((float *)g.data)[n / 2] = NAN;
            device_copy(gg.data, DEVICE_CUDA, g.data, DEVICE_CPU, tensor_bytes(&g));
            ops_workspace_reserve(DEVICE_CUDA, grad_sumsq_device_workspace_bytes(n));
            grad_sumsq_device(gsq.data, gg.data, n, 0);
            adamw_update_device(&c, c.lr, step + 1, gsq.data, dP, gg.data, dM, dV, n);
            double norm;
            device_copy(&norm, DEVICE_CPU, gsq.data, DEVICE_CUDA, sizeof norm);
            tu_check(!isfinite(norm), "adamw n %lld: a NaN gradient gives a non-finite device norm", (long long)n);
            cu_compare("adamw after a NaN gradient: p unchanged", &vp, &cp, 0);
            cu_compare("adamw after a NaN gradient: v unchanged", &vv, &cv, 0);
        }
        release((Tensor[]){g, gg}, 2);
    }
    release((Tensor[]){p, gp, m, v, gm, gv, gsq}, 7);
}

// ---------------------------------------------------------------------------------------------------------------
// Scores: per-element terms computed as on the CPU, summed in double in another order, then rounded to fp32 (the
// double sums differ by ~1e-16 relative, so the fp32 scores by at most 1 ulp): 2^-23 of the largest score.
// Gradients: the elementwise ones repeat the CPU's operations in order (exact); the JPEG proxy's 8x8 DCTs use the
// CPU's basis and order, but the GPU's log1p and sqrt, whose double results may differ from the C library's in the
// last bit, ~1e-16 relative before the fp32 rounding: 1 ulp, 2^-23.
#define REWARD_SCORE_TOL (1.0 / 8388608.0)
#define REWARD_GRAD_TOL (1.0 / 8388608.0)
static const char *const REWARDS[6] = {"symmetry", "brightness", "saturation", "sharpness", "colour", "compress"};

static Tensor dev_copy(const float *h, int64_t n) {
    Tensor c = tensor_make((void *)h, DTYPE_F32, DEVICE_CPU, 1, (int64_t[]){n});
    return cu_upload(&c, DTYPE_F32);
}

static void test_rewards(DType dt, int64_t B, int64_t H, int64_t W) {
    int64_t sh[4] = {B, 3, H, W}, sb[1] = {B}, sk[2] = {6, B};
    char name[64], what[96];
    snprintf(name, sizeof name, "[%lld, 3, %lld, %lld]", (long long)B, (long long)H, (long long)W);
    Tensor gx, x = rnd(4, sh, 30, 0.6f, dt, &gx);
    Tensor dx = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, sh), gdx = cu_alloc(DEVICE_CUDA, dt, 4, sh);
    Tensor sc = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, sb), gsc = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, sb);
    float dscore[8];
    for (int b = 0; b < B; b++) dscore[b] = -0.25f * (float)(b + 1);
    Tensor gds = dev_copy(dscore, B);
    const float target[3] = {0.8f, 0.3f, 0.1f};
    Reward rs[6];
    for (int k = 0; k < 6; k++) {
        reward_init(&rs[k], REWARDS[k], 0.5f + 0.25f * (float)k, target, k == 4 ? 3 : 0);
        ops_workspace_reserve(DEVICE_CUDA, rewardset_workspace_bytes(&(RewardSet){&rs[k], 1}, &gx));
        tensor_fill(&gdx, NAN); // written, not added to
        rs[k].score(&rs[k], &x, NULL, sc.data, &dx, dscore);
        rs[k].score(&rs[k], &gx, NULL, gsc.data, &gdx, gds.data);
        snprintf(what, sizeof what, "%s score", REWARDS[k]);
        cmp(what, name, dt, &gsc, &sc, REWARD_SCORE_TOL - (dt == DTYPE_BF16 ? BF16_TOL : 0)); // fp32 scores
        snprintf(what, sizeof what, "%s gradient", REWARDS[k]);
        cmp(what, name, dt, &gdx, &dx, REWARD_GRAD_TOL);
        rs[k].score(&rs[k], &gx, NULL, gsc.data, NULL, NULL); // scores alone
        snprintf(what, sizeof what, "%s score alone", REWARDS[k]);
        cmp(what, name, dt, &gsc, &sc, REWARD_SCORE_TOL - (dt == DTYPE_BF16 ? BF16_TOL : 0));
    }
    // all six, weighted
    RewardSet set = {rs, 6};
    ops_workspace_reserve(DEVICE_CUDA, rewardset_workspace_bytes(&set, &gx));
    Tensor tot = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, sb), gtot = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, sb);
    Tensor per = cu_alloc(DEVICE_CPU, DTYPE_F32, 2, sk), gper = cu_alloc(DEVICE_CUDA, DTYPE_F32, 2, sk);
    rewardset_score(&set, &x, NULL, tot.data, per.data, &dx, dscore);
    rewardset_score(&set, &gx, NULL, gtot.data, gper.data, &gdx, gds.data);
    double fp32 = dt == DTYPE_BF16 ? -BF16_TOL : 0; // scores and totals are fp32 whatever the images' dtype
    cmp("reward set per-reward scores", name, dt, &gper, &per, REWARD_SCORE_TOL + fp32);
    // totals: six fp32 products and sums of scores that may each differ by an ulp
    cmp("reward set totals", name, dt, &gtot, &tot, 6 * REWARD_SCORE_TOL + fp32);
    cmp("reward set gradient", name, dt, &gdx, &dx, REWARD_GRAD_TOL);
    if (dt == DTYPE_BF16) { // bf16 images, the gradient kept in fp32
        Tensor g32 = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sh);
        rs[3].score(&rs[3], &gx, NULL, gsc.data, &g32, gds.data);
        rs[3].score(&rs[3], &x, NULL, sc.data, &dx, dscore);
        cmp("sharpness fp32 gradient of bf16 images", name, DTYPE_F32, &g32, &dx, REWARD_GRAD_TOL);
        cu_free(&g32);
    }
    release((Tensor[]){x, gx, dx, gdx, sc, gsc, gds, tot, gtot, per, gper}, 11);
}

int main(void) {
    cu_require_gpu();
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_F32;
        test_ddim(dt, PRED_EPSILON, 0, 0.0f);
        test_ddim(dt, PRED_EPSILON, 1, 1.0f);
        test_ddim(dt, PRED_V, 1, 0.0f);
        test_ddim(dt, PRED_SAMPLE, 0, 0.5f);
        test_cfg(dt, 1);
        test_cfg(dt, 0);
    }
    test_sumsq(1, 0);
    test_sumsq(1031, 3);
    test_sumsq((1 << 20) + 3, 0);
    test_sumsq(5000000, 1);
    test_adamw(1031, 0);
    test_adamw(4099, 1);
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_F32;
        test_rewards(dt, 2, 13, 19);  // partial 8x8 blocks at the edges
        test_rewards(dt, 1, 16, 24);
        test_rewards(dt, 3, 40, 72);
    }
    return tu_report();
}
