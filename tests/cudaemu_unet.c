// cudaemu_unet.c: the whole UNet forward and backward on the GPU against the same computation on the CPU, on the
// SD 1.5-like and SDXL-like fixture models (tests/fixtures/models/unet_*): output, input and context gradients and
// every parameter gradient, fp32 storage; then bf16 storage (train.precision = bf16) against the same fp32 CPU run,
// within twice PyTorch's own bf16 deviation on these models. Weights are read on the host and moved to the GPU in one copy; gradients
// and activations are planned on the GPU. A second iteration must not allocate device memory (the plan is the
// footprint). Both precisions run again channels last (train.channels_last: NHWC activations and compute filters,
// the gradients into the NCHW fp32 arena) under the same bounds. Emulated GPU in CI (label cudaemu); cuda_unet on a
// real one.
#include "cudaemu_unet.h"
#include "parity.h"

// PyTorch + diffusers' own bf16 deviation from fp32 on these fixtures, the larger of autocast and a bf16 model
// (tools/reference/bf16_deviation.py): relative L2 of out, d sample, d context, all parameter gradients
static const double TORCH_BF16[2][4] = {{2.25e-2, 8.77e-2, 9.30e-2, 8.29e-2},   // unet_sd15
                                        {1.76e-2, 1.74e-1, 1.51e-1, 1.74e-1}};  // unet_sdxl

static void check_model(const char *name, int k) {
    CuUNetFixture f;
    cu_unet_fixture_load(&f, name);
    const char *dir = f.dir;
    const UNetConfig cfg = f.cfg;
    const Tensor *in = f.in;
    CuUNetRun c, g, b;
    cu_unet_setup(&c, DEVICE_CPU, DTYPE_F32, dir, &cfg, in);
    cu_unet_setup(&g, DEVICE_CUDA, DTYPE_F32, dir, &cfg, in);
    cu_unet_forward(&c, cfg.text_time), cu_unet_backward(&c);
    cu_unet_forward(&g, cfg.text_time), cu_unet_backward(&g);
    // fp32 on both sides, but the GPU sums in other orders (GEMM and convolution tiles, attention tiles, block
    // reductions); through some 100 layers that leaves relative differences of about 1e-6 in the output and up to
    // 8e-6 in the input gradients (measured in emulation), where GroupNorm's backward subtracts nearly equal sums
    cu_compare("unet out", &g.out, &c.out, 1e-5);
    cu_compare("unet d sample", &g.dx, &c.dx, 3e-5);
    cu_compare("unet d context", &g.dctx, &c.dctx, 3e-5);
    cu_unet_check_grads(&g.ga, &c.ga, 1e-5, 1e-4);
    long long before = device_alloc_count();
    cu_unet_forward(&g, cfg.text_time), cu_unet_backward(&g);
    tu_check(device_alloc_count() == before, "a second iteration allocates no device memory (%lld allocations)",
             device_alloc_count() - before);
    cu_unet_free(&g);
    // channels last (train.channels_last): an fp32 compute copy with NHWC filters, NHWC activations; the same sums
    // in other orders (NHWC GroupNorm partials, convolutions on transposed operands), so the fp32 tolerances above
    CuUNetRun l;
    cu_unet_setup_cl(&l, DEVICE_CUDA, DTYPE_F32, dir, &cfg, in, NULL, 1);
    cu_unet_forward(&l, cfg.text_time), cu_unet_backward(&l);
    tu_check(l.acts->x.channels_last && l.acts->conv_in_out.channels_last && l.cnet->conv_in.weight.channels_last,
             "channels-last run: input, activations and filters planned channels last");
    cu_compare("channels last: unet out", &l.out, &c.out, 1e-5);
    cu_compare("channels last: unet d sample", &l.dx, &c.dx, 3e-5);
    cu_compare("channels last: unet d context", &l.dctx, &c.dctx, 3e-5);
    cu_unet_check_grads(&l.ga, &c.ga, 1e-5, 1e-4);
    cu_unet_free(&l);
    // bf16 weights and activations (fp32 accumulation, statistics and parameter gradients) against the fp32 CPU.
    // A correct bf16 implementation deviates from fp32 by about what PyTorch's does; a dtype bug (a wrong cast, a
    // bf16 accumulation, a lost term) shows as an O(1) error. Tolerance: twice PyTorch's deviation.
    cu_unet_setup(&b, DEVICE_CUDA, DTYPE_BF16, dir, &cfg, in);
    cu_unet_forward(&b, cfg.text_time), cu_unet_backward(&b);
    tu_check(b.acts->x.dtype == DTYPE_BF16 && b.acts->norm_mean.dtype == DTYPE_F32,
             "bf16 run: activations planned in bf16, statistics in fp32");
    const double *tb = TORCH_BF16[k];
    double e[4] = {cu_rel_l2(&b.out, &c.out), cu_rel_l2(&b.dx, &c.dx), cu_rel_l2(&b.dctx, &c.dctx),
                   cu_unet_grads_rel_l2(&b.ga, &c.ga)};
    const char *what[4] = {"out", "d sample", "d context", "parameter gradients"};
    for (int i = 0; i < 4; i++)
        tu_check(e[i] <= 2 * tb[i], "bf16 vs fp32 %-20s relative L2 %.3e (PyTorch's bf16: %.3e; tol %.2e)", what[i],
                 e[i], tb[i], 2 * tb[i]);
    before = device_alloc_count();
    cu_unet_forward(&b, cfg.text_time), cu_unet_backward(&b);
    tu_check(device_alloc_count() == before, "bf16: a second iteration allocates no device memory");
    cu_unet_free(&b);
    // bf16 channels last: the same bound
    cu_unet_setup_cl(&b, DEVICE_CUDA, DTYPE_BF16, dir, &cfg, in, NULL, 1);
    cu_unet_forward(&b, cfg.text_time), cu_unet_backward(&b);
    double el[4] = {cu_rel_l2(&b.out, &c.out), cu_rel_l2(&b.dx, &c.dx), cu_rel_l2(&b.dctx, &c.dctx),
                    cu_unet_grads_rel_l2(&b.ga, &c.ga)};
    for (int i = 0; i < 4; i++)
        tu_check(el[i] <= 2 * tb[i], "bf16 channels last vs fp32 %-20s relative L2 %.3e (tol %.2e)", what[i], el[i],
                 2 * tb[i]);
    cu_unet_free(&b), cu_unet_free(&c);
    cu_unet_fixture_free(&f);
}

int main(void) {
    cu_require_gpu();
    cu_unet_require_fixtures();
    check_model("unet_sd15", 0);
    check_model("unet_sdxl", 1);
    return tu_report();
}
