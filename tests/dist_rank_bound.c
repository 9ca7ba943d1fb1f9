// dist_rank_bound.c: what the rank count changes over a whole run. The default job (configs/default.ini: the small
// model, LoRA, batch 4, 60 iterations) on 1, 2 and 4 ranks: each rank computes its slice of the batch as one batch,
// so the per-rank batch changes the rounding of every sample (GEMM shapes, summation order) and the gradient sums
// are added in another order; training then amplifies the differences. The final LoRA weights must stay within
// the bound docs/DISTRIBUTED.md states ("What the rank count changes"), measured on this job. The same rank count
// gives the same bits (tests/dist_train.c).
#include "dist_harness.h"

// ||w_R - w_1|| / ||w_1|| of the final LoRA weights: measured 6.3e-3 (2 ranks) and 9.5e-4 (4 ranks) on the 2-core
// development VM; the bound leaves a factor of about 3 for other CPUs' kernels.
#define BOUND 2e-2

int main(void) {
    dh_init("dist_rank_bound");
    const int ranks[3] = {0, 2, 4};
    char path[3][512];
    for (int i = 0; i < 3; i++) {
        int r = ranks[i] ? ranks[i] : 1;
        char args[2048], log[512];
        snprintf(args, sizeof args,
                 "--config configs/default.ini --log.sample_seeds= --log.progress=off --output.export=none "
                 "--train.threads=1 --output.dir=%s/r%d",
                 dh_tmp, r);
        snprintf(log, sizeof log, "%s/r%d.log", dh_tmp, r);
        double t0 = dh_now();
        int rc = dh_wait(dh_spawn(ranks[i], "", args, log), 900);
        dh_check(rc == 0, "the default job on %d rank%s: exit %d (%.1f s)", r, r > 1 ? "s" : "", rc, dh_now() - t0);
        snprintf(path[i], sizeof path[i], "%s/r%d/checkpoints/ckpt-000060.h5", dh_tmp, r);
    }
    for (int i = 1; i < 3; i++) {
        double d = dh_rel_diff(path[0], path[i], "params");
        dh_check(d <= BOUND, "final LoRA weights, 1 rank vs %d ranks: relative difference %.2e (bound %.0e)",
                 ranks[i], d, BOUND);
    }
    return dh_finish();
}
