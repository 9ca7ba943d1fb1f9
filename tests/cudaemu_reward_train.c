// cudaemu_reward_train.c: a learned reward in a training run on the GPU against the same run on the CPU:
// `drtune train --train.device=cuda` (the emulated GPU in CI, a real one as cuda_reward_train) and
// --train.device=cpu with reward.names = hps, symmetry on the tiny HPS-architecture model (reward_hps_model.h) and
// the tiny diffusion model, 2 iterations of 2 images. Both runs must log the same rewards, losses and gradient norms
// and export the same LoRA adapters within fp32 rounding (the GPU sums in other orders: GEMM, convolution and
// attention tiles, block reductions; ~1e-6 after two iterations, checked at 1e-4 as cudaemu_train_job does).
#include <string.h>

#include "cudaemu_util.h"
#include "reward_hps_model.h"

int main(void) {
    cu_require_gpu();
    const char *tmp = tu_tmpdir("cudaemu_reward_train");
    char hps[600], config[600], text[4096], args[4096], dir[2][600];
    snprintf(hps, sizeof hps, "%s/hps", tmp);
    write_hps_model(hps);
    snprintf(config, sizeof config, "%s/run.ini", tmp);
    snprintf(text, sizeof text,
             "[model]\npath = data/models/tiny\n[sampler]\nsteps = 4\n[method]\nk = 2\nm = 2\n"
             "[reward]\nnames = hps, symmetry\nweights = 10.0, 1.0\nhps_path = %s\n"
             "[train]\nbatch = 2\niterations = 2\nseed = 3\nthreads = 2\n"
             "[data]\nprompts = data/prompts/default.txt\n[log]\nsample_seeds = \nprogress = off\n"
             "[output]\ncheckpoint_every = 0\n",
             hps);
    tu_write_text(config, text);
    const char *dev[2] = {"cuda", "cpu"};
    for (int i = 0; i < 2; i++) {
        TuChild c;
        snprintf(dir[i], sizeof dir[i], "%s/%s", tmp, dev[i]);
        snprintf(args, sizeof args, "train --config %s --train.device=%s --output.dir=%s", config, dev[i], dir[i]);
        double t0 = dt_now();
        int rc = tu_run_drtune(args, &c);
        tu_check(rc == 0 && (i || strstr(c.out, "(cuda)")), "train with hps on %s (exit %d, %.1f s)%s%s", dev[i], rc,
                 dt_now() - t0, rc ? ": " : "", rc ? c.err : "");
        tu_child_free(&c);
    }
    cu_compare_train_runs(dir[0], dir[1], 2);
    return tu_report();
}
