// cudaemu_sd15_iter.c: the training step's UNet work at SD 1.5's architecture (configs/models/sd15-small: SD 1.5's
// blocks, heads and attention layout at reduced width, random weights from `drtune init-weights`) on the GPU
// against the CPU: one forward of a 16x16 latent with a text context, then the backward of a reward-style gradient
// (the symmetry loss of the UNet's output, each device differentiating its own output, so the forward's rounding
// differences reach the backward as they do in an iteration). The output, input and context gradients and every
// parameter gradient are compared, fp32 storage. Emulated GPU in CI (label cudaemu); cuda_sd15_iter on a real one.
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

int main(void) {
    cu_require_gpu();
    char args[1024], dir[600];
    snprintf(args, sizeof args, "init-weights --model configs/models/sd15-small --component unet --seed 5 --out %s",
             tu_path("sd15"));
    snprintf(dir, sizeof dir, "%s/unet", tu_path("sd15"));
    TuChild ch;
    int rc = tu_run_drtune(args, &ch);
    tu_child_free(&ch);
    if (!tu_check(rc == 0, "drtune init-weights of the SD 1.5-shaped reduced-width UNet (exit %d)", rc)) return tu_report();
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
    cu_unet_setup(&c, DEVICE_CPU, dir, &cfg, in);
    cu_unet_setup(&g, DEVICE_CUDA, dir, &cfg, in);
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
    return tu_report();
}
