// cudaemu_bf16_job.c: train.precision = bf16 end to end on the GPU (emulated in CI, a real one as cuda_bf16_job):
// the default job shortened as in cudaemu_train_job (LoRA: bf16 compute copies of the frozen base and of the
// adapters), and one iteration's full fine-tuning gradient with `drtune grad` (a bf16 compute copy of every weight),
// each against the fp32 CPU run. bf16 rounds every stored activation and weight to 8 bits of mantissa, so the
// results follow the fp32 ones within bf16's deviation rather than fp32 rounding: for one UNet forward + backward
// on the fixture models, PyTorch's own bf16 (autocast or a bf16 model) moves the output by 1.5-2.3% and the
// gradients by 7-17% relative L2 (tools/reference/bf16_deviation.py), and drtune's bf16 stays within twice that
// (cudaemu_unet, the sharp check). Over a guided rollout the deviation grows: this test's bounds are loose and
// check the plumbing (compute copies, casts at the model boundaries, refresh after updates and loads). A resumed bf16 run must repeat the uninterrupted one exactly: the compute copies are refreshed
// from the fp32 masters after a checkpoint is loaded. bf16 (and train.channels_last) on the CPU is a user error.
#include <string.h>

#include "cudaemu_util.h"

#define BASE "train --config configs/default.ini --train.warmup=0 --train.batch=2 --sampler.steps=8 " \
             "--log.sample_seeds= --output.checkpoint_every=1"
#define RUN BASE " --train.device=cuda --train.precision=bf16"
#define JOB RUN " --train.iterations=3"
#define GRAD "grad --config configs/default.ini --train.batch=2 --sampler.steps=8 --train.trainable=full"

static void run(const char *what, const char *args, const char *expect) {
    TuChild c;
    double t0 = dt_now();
    int rc = tu_run_drtune(args, &c);
    tu_check(rc == 0 && (!expect || strstr(c.out, expect)), "%s (exit %d, %.1f s)%s%s", what, rc, dt_now() - t0,
             rc ? ": " : "", rc ? c.err : "");
    tu_child_free(&c);
}

int main(void) {
    cu_require_gpu();
    TuChild c;
    char args[4096], bdir[512], cdir[512], rdir[512];
    snprintf(args, sizeof args, BASE " --train.device=cpu --train.precision=bf16 --output.dir=%s", tu_path("e"));
    tu_run_drtune(args, &c);
    tu_check(tu_is_user_error(&c, "train.precision = bf16 runs on the GPU"), "bf16 on the CPU is a user error: %s",
             c.err);
    tu_child_free(&c);
    snprintf(args, sizeof args, BASE " --train.device=cpu --train.channels_last=true --output.dir=%s", tu_path("e"));
    tu_run_drtune(args, &c);
    tu_check(tu_is_user_error(&c, "train.channels_last = true is for the GPU"),
             "channels last on the CPU is a user error: %s", c.err);
    tu_child_free(&c);

    snprintf(bdir, sizeof bdir, "%s", tu_path("bf16"));
    snprintf(cdir, sizeof cdir, "%s", tu_path("cpu"));
    snprintf(rdir, sizeof rdir, "%s", tu_path("resumed"));
    snprintf(args, sizeof args, JOB " --output.dir=%s", bdir);
    run("the default job in bf16 on the GPU, with its compute copies in the memory plan", args, "lora-compute");
    snprintf(args, sizeof args, BASE " --train.iterations=3 --train.device=cpu --output.dir=%s", cdir);
    run("the same job in fp32 on the CPU", args, NULL);

    char bm[600], cm[600];
    snprintf(bm, sizeof bm, "%s/metrics.jsonl", bdir);
    snprintf(cm, sizeof cm, "%s/metrics.jsonl", cdir);
    double b[3][8], h[3][8];
    const char *keys[] = {"reward_mean", "grad_norm", "loss"};
    int nb = 0, nh = 0;
    for (int k = 0; k < 3; k++) nb += cu_metric(bm, keys[k], b[k], 8), nh += cu_metric(cm, keys[k], h[k], 8);
    tu_check(nb == 9 && nh == 9, "3 logged iterations on both (%d, %d values)", nb, nh);
    // Iteration 1 samples from the same weights: only the bf16 rollout and decode differ. Guided sampling of this
    // small model is sensitive: four fp32 summation orders of the emulated libraries under the same bf16 storage
    // (double or fp32 accumulation in the GEMM and convolution stand-ins) put this reward 0.01% to 2.9% from the
    // fp32 run. Tolerance 5%.
    double r1 = fabs(b[0][0] - h[0][0]) / fmax(fabs(h[0][0]), 1e-12);
    tu_check(r1 <= 0.05, "iteration 1 reward, bf16 GPU vs fp32 CPU: rel diff %.2e (tol 0.05)", r1);
    // Iteration 1's gradient comes from the same weights: only bf16 storage separates it from the fp32 one. This
    // norm amplifies rounding about 50-fold (fp32 GPU and CPU runs, whose ops differ by fp32 rounding, give full
    // gradients 4.8e-6 apart), so bf16's 2^-9 becomes ~10% with tails beyond: bf16 variants that differ only in how
    // their ops round (cuDNN's fused attention in emulation or drtune's own kernels; the resnets' GroupNorm+SiLU
    // fused or not) measured 0.5%, 1.1%, 6.5% and 16.9% from fp32. Tolerance 25%, as for the later iterations.
    // Later iterations follow updates from the bf16 gradients, and the bf16 compute
    // copies of the updated adapters amplify any rounding-level difference: two builds whose iteration-1 gradient
    // norms differ in the 9th digit (a reordered fp32 sum) reach iteration 3 with gradient norms 7% apart (0.676 and
    // 0.629, against 0.715 in fp32), so the trajectory is checked with room for that spread on top of bf16's own
    // deviation: rewards within 10% of their scale (measured 2.3-5.7%), gradient norms within 25% (5.5-12%).
    double scale = 0, dr = 0, dg = 0;
    for (int i = 0; i < 3; i++) scale = fmax(scale, fabs(h[0][i]));
    for (int i = 0; i < 3; i++) {
        dr = fmax(dr, fabs(b[0][i] - h[0][i]) / scale);
        dg = fmax(dg, fabs(b[1][i] - h[1][i]) / h[1][i]);
    }
    double g1 = fabs(b[1][0] - h[1][0]) / h[1][0];
    tu_check(g1 <= 0.25, "iteration 1 gradient norm, bf16 vs fp32: rel diff %.2e (tol 0.25)", g1);
    tu_check(dr <= 0.10, "reward trajectory, bf16 vs fp32: max diff %.2e of the rewards' scale (tol 0.10)", dr);
    tu_check(dg <= 0.25, "gradient norms, bf16 vs fp32: max rel diff %.2e (tol 0.25)", dg);
    // the first iteration again with train.channels_last (NHWC UNet and decoder, the adapters' compute copies bound
    // into the channels-last UNet): the same bounds against the fp32 CPU run
    char ldir[512], lm[600];
    snprintf(ldir, sizeof ldir, "%s", tu_path("bf16_cl"));
    snprintf(args, sizeof args, RUN " --train.iterations=1 --train.channels_last=true --output.dir=%s", ldir);
    run("the default job's first iteration in bf16 channels last", args, NULL);
    snprintf(lm, sizeof lm, "%s/metrics.jsonl", ldir);
    double lr[8], lg[8];
    int nl = cu_metric(lm, "reward_mean", lr, 8) + cu_metric(lm, "grad_norm", lg, 8);
    double l1 = nl == 2 ? fabs(lr[0] - h[0][0]) / fmax(fabs(h[0][0]), 1e-12) : INFINITY;
    double lg1 = nl == 2 ? fabs(lg[0] - h[1][0]) / h[1][0] : INFINITY;
    tu_check(l1 <= 0.05, "channels last: iteration 1 reward vs fp32 CPU: rel diff %.2e (tol 0.05)", l1);
    tu_check(lg1 <= 0.25, "channels last: iteration 1 gradient norm vs fp32 CPU: rel diff %.2e (tol 0.25)", lg1);
    char ba[600], ca[600];
    snprintf(ba, sizeof ba, "%s/export/pytorch_lora_weights.safetensors", bdir);
    snprintf(ca, sizeof ca, "%s/export/pytorch_lora_weights.safetensors", cdir);
    double rel = cu_files_rel_l2(ba, ca, "");
    // measured 5.8e-3 and 1.1e-2 after 3 updates (two summation orders)
    tu_check(rel <= 3e-2, "exported LoRA adapters, bf16 vs fp32: relative L2 %.2e (tol 3e-2)", rel);

    // stop after 2 iterations, resume to 3: the same run bit for bit (deterministic algorithms, fixed-order sums)
    snprintf(args, sizeof args, RUN " --train.iterations=2 --output.dir=%s", rdir);
    run("bf16: 2 iterations", args, NULL);
    snprintf(args, sizeof args, JOB " --output.dir=%s --resume auto", rdir);
    run("bf16: resumed to 3", args, "resumed from");
    char rm[600], ra[600];
    snprintf(rm, sizeof rm, "%s/metrics.jsonl", rdir);
    snprintf(ra, sizeof ra, "%s/export/pytorch_lora_weights.safetensors", rdir);
    double r[8];
    int nr = cu_metric(rm, "reward_mean", r, 8);
    tu_check(nr == 3 && r[2] == b[0][2], "resumed iteration 3 reward %.9g, uninterrupted %.9g", nr == 3 ? r[2] : NAN,
             b[0][2]);
    rel = cu_files_rel_l2(ra, ba, "");
    tu_check(rel == 0, "resumed run's LoRA adapters equal the uninterrupted run's (relative L2 %.2e)", rel);

    // drtune sample in bf16 with the adapters trained above, against the fp32 CPU: the guided 8-step rollout of this
    // small model, as the first iteration's reward above (measured 3.7e-2 without adapters)
    char sb[600], sc[600];
    snprintf(sb, sizeof sb, "%s/sample_bf16.safetensors", tu_tmpdir(NULL));
    snprintf(sc, sizeof sc, "%s/sample_cpu.safetensors", tu_tmpdir(NULL));
    const char *sdev[2] = {"cuda --precision bf16", "cpu"};
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args,
                 "sample --model data/models/tiny --prompt 'a red circle' --prompt 'a blue square on the left' "
                 "--steps 8 --lora %s --device %s --out %s/sample_%d.png --save %s", ba, sdev[i], tu_tmpdir(NULL), i,
                 i ? sc : sb);
        run(i ? "drtune sample in fp32 on the CPU" : "drtune sample in bf16 on the GPU", args, NULL);
    }
    rel = cu_files_rel_l2(sb, sc, "");
    tu_check(rel <= 0.10, "sampled latents and images, bf16 vs fp32: relative L2 %.2e (tol 0.10)", rel);

    // the UNet timing of tools/gpu/check.sh, from a config alone with random weights
    run("drtune bench unet in bf16 on the GPU", "bench unet --model configs/models/tiny --latent 8 --device cuda "
        "--precision bf16 --reps 1", "forward + backward");

    // one iteration's full fine-tuning gradient: bf16 GPU vs fp32 CPU
    char out[2][600];
    const char *dev[2] = {"cuda --train.precision=bf16", "cpu"};
    for (int i = 0; i < 2; i++) {
        snprintf(out[i], sizeof out[i], "%s/grad_%d.safetensors", tu_tmpdir(NULL), i);
        snprintf(args, sizeof args, GRAD " --train.device=%s --out %s", dev[i], out[i]);
        run(i ? "drtune grad in fp32 on the CPU" : "drtune grad in bf16 on the GPU, full fine-tuning", args, NULL);
    }
    rel = cu_files_rel_l2(out[0], out[1], "grad.");
    // The gradient follows the sampled images, and moves about 15 times their relative change (measured in fp32
    // under one-ulp changes of x_T); with the rollout 0.01-2.9% off (above), the four summation orders measure
    // 5.2e-2, 9.7e-2, 2.9e-1 and 3.7e-1. Tolerance 0.5 (a cosine above 0.87): a dtype bug gives 1 or more. The
    // sharp check of the bf16 backward is cudaemu_unet's, against PyTorch's own bf16 deviation.
    tu_check(rel <= 0.5, "one iteration's full parameter gradient, bf16 vs fp32: relative L2 %.2e (tol 0.5)", rel);
    return tu_report();
}
