// cudaemu_sd15_iter.c: training at SD 1.5's architecture (configs/models/sd15-small: SD 1.5's UNet blocks, heads
// and attention layout, VAE and text encoder at reduced width, random weights from `drtune init-weights`) on the GPU
// against the CPU, fp32 storage:
//   - the UNet alone: one forward of a 16x16 latent with a text context, then the backward of a reward-style
//     gradient (the symmetry loss of the UNet's output, each device differentiating its own output, so the
//     forward's rounding differences reach the backward as in an iteration): output, input and context gradients
//     and every parameter gradient;
//   - one whole training iteration (`drtune grad`, full fine-tuning): 2 guided DDIM steps of a 128x128 image, the
//     decoder, the symmetry reward and the backward through the trained step: the full parameter gradient; again
//     with train.channels_last (NHWC UNet and decoder on the GPU).
// Emulated GPU in CI (label cudaemu); cuda_sd15_iter on a real one.
#include "cudaemu_unet.h"

#define LATENT 16

// dout = d/d out of mean over elements of (out - out mirrored left-right)^2 = 4 / n (out - mirrored out)
static void symmetry_grad(float *d, const float *o, const int64_t *shape) {
    int64_t rows = shape[0] * shape[1] * shape[2], W = shape[3], n = rows * W;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t x = 0; x < W; x++) d[r * W + x] = 4.0f / (float)n * (o[r * W + x] - o[r * W + W - 1 - x]);
}

// Sets r->dout from the run's own output.
static void set_dout(CuUNetRun *r, const Tensor *proto) {
    Tensor h = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, proto->shape);
    float *o = r->out.device == DEVICE_CPU ? NULL : cu_download(&r->out);
    symmetry_grad(h.data, o ? o : r->out.data, h.shape);
    r->dout = cu_unet_input(&h, r->out.device);
    free(o);
    cu_free(&h);
}

// One iteration's full parameter gradient from `drtune grad` on both devices, and on the GPU channels last.
static void check_iteration(const char *pipe) {
    const char *dev[3] = {"cuda", "cpu", "cuda"}, *name[3] = {"cuda", "cpu", "cuda_cl"};
    char out[3][600], args[4096];
    for (int i = 0; i < 3; i++) {
        snprintf(out[i], sizeof out[i], "%s/grad_%s.safetensors", tu_tmpdir(NULL), name[i]);
        snprintf(args, sizeof args,
                 "grad --config configs/default.ini --model.path=%s --sampler.height=128 --sampler.width=128 "
                 "--sampler.steps=2 --method.k=1 --method.m=2 --reward.names=symmetry --reward.weights=1 "
                 "--train.batch=1 --train.trainable=full --train.device=%s --train.channels_last=%s --out %s",
                 pipe, dev[i], i == 2 ? "true" : "false", out[i]);
        double t0 = dt_now();
        TuChild c;
        int rc = tu_run_drtune(args, &c);
        tu_check(rc == 0, "drtune grad --train.device=%s%s, one iteration (exit %d, %.1f s)%s%s", dev[i],
                 i == 2 ? " --train.channels_last=true" : "", rc, dt_now() - t0, rc ? ": " : "", rc ? c.err : "");
        tu_child_free(&c);
        if (rc) return;
    }
    // The CPU alone moves this gradient by 5.2e-6..6.7e-6 under fp32 reorderings (1 vs 2 threads, x_T changed by
    // one ulp in six draws, four other OpenBLAS sgemm kernels); the emulated GPU measures 5.8e-6. 1e-5 leaves room
    // for a real GPU's own summation order.
    double rel = cu_files_rel_l2(out[0], out[1], "grad.");
    tu_check(rel <= 1e-5, "one iteration's full parameter gradient, GPU vs CPU: relative L2 %.2e (tol 1e-5)", rel);
    // channels last: the UNet and the decoder NHWC (fp32 compute copies), the gradient into the NCHW masters'
    rel = cu_files_rel_l2(out[2], out[1], "grad.");
    tu_check(rel <= 1e-5, "the same, GPU channels last vs CPU: relative L2 %.2e (tol 1e-5)", rel);
}

int main(void) {
    cu_require_gpu();
    char args[1024], dir[700];
    char pipe[600];
    snprintf(pipe, sizeof pipe, "%s", tu_path("sd15"));
    snprintf(args, sizeof args, "init-weights --model configs/models/sd15-small --seed 5 --out %s", pipe);
    snprintf(dir, sizeof dir, "%s/unet", pipe);
    TuChild ch;
    int rc = tu_run_drtune(args, &ch);
    tu_child_free(&ch);
    if (!tu_check(rc == 0, "drtune init-weights of the SD 1.5-shaped reduced-width pipeline (exit %d)", rc))
        return tu_report();
    UNetConfig cfg;
    unet_load_config(&cfg, dir);

    // sample [1, 4, 16, 16], timestep [1], context [1, 77, D]: the inputs of one denoising step
    int64_t xs[4] = {1, cfg.in_channels, LATENT, LATENT}, ts[1] = {1}, cs[3] = {1, 77, cfg.cross_dim};
    Tensor in[6] = {cu_alloc(DEVICE_CPU, DTYPE_F32, 4, xs), cu_alloc(DEVICE_CPU, DTYPE_F32, 1, ts),
                    cu_alloc(DEVICE_CPU, DTYPE_F32, 3, cs), {0}, {0}, {0}};
    cu_fill(&in[0], 1, 1.0f, 0);
    cu_fill(&in[2], 2, 1.0f, 0);
    ((float *)in[1].data)[0] = 601.0f;
    CuUNetRun c, g;
    cu_unet_setup(&c, DEVICE_CPU, DTYPE_F32, dir, &cfg, in);
    cu_unet_setup(&g, DEVICE_CUDA, DTYPE_F32, dir, &cfg, in);
    double t0 = dt_now();
    cu_unet_forward(&c, 0), set_dout(&c, &in[0]), cu_unet_backward(&c);
    double t1 = dt_now();
    cu_unet_forward(&g, 0), set_dout(&g, &in[0]), cu_unet_backward(&g);
    printf("forward + backward: CPU %.1f s, GPU %.1f s\n", t1 - t0, dt_now() - t1);
    // fp32 on both sides; the GPU's own kernels (norms, attention, reductions) sum in other orders than the CPU ops
    cu_compare("unet out", &g.out, &c.out, 1e-5);
    cu_compare("unet d sample", &g.dx, &c.dx, 3e-5);
    cu_compare("unet d context", &g.dctx, &c.dctx, 3e-5);
    cu_unet_check_grads(&g.ga, &c.ga, 1e-5, 1e-4);
    cu_unet_free(&c), cu_unet_free(&g);
    for (int i = 0; i < 3; i++) cu_free(&in[i]);
    check_iteration(pipe);
    return tu_report();
}
