// cudaemu_unet_recompute.c: UNet activation recompute (train.recompute) on the GPU: the flagged blocks' activations
// share one device region, the backward re-runs each block's forward (the same op calls as on the CPU) just before
// its backward, and the output, input and context gradients and every parameter gradient are bit-identical to a run
// without recompute, in fp32 and in bf16 storage, and channels last (the GPU's forward kernels are deterministic:
// re-running one gives the same bits); the device plan shrinks as on the CPU, and an iteration allocates nothing.
// Emulated GPU in CI (label cudaemu); cuda_unet_recompute on a real one.
#include "cudaemu_unet.h"
#include "parity.h"

static void check_model(const char *name, DType dt, int cl) {
    char what[96];
    CuUNetFixture f;
    cu_unet_fixture_load(&f, name);
    const char *dir = f.dir;
    const UNetConfig cfg = f.cfg;
    const Tensor *in = f.in;
    printf("-- %s%s\n", dtype_name(dt), cl ? ", channels last" : "");
    CuUNetRun off, all;
    cu_unet_setup_cl(&off, DEVICE_CUDA, dt, dir, &cfg, in, &(UNetRecompute){UNET_RECOMPUTE_OFF, 0}, cl);
    cu_unet_setup_cl(&all, DEVICE_CUDA, dt, dir, &cfg, in, &(UNetRecompute){UNET_RECOMPUTE_ALL, 0}, cl);
    if (cl) tu_check(all.acts->x.channels_last, "channels last: activations planned channels last");
    tu_check(all.acts->n_recompute == unet_units(&cfg) && all.acts->region.device == DEVICE_CUDA &&
                 all.aa.size < off.aa.size,
             "device plan: %zu bytes with recompute all, %zu without (%d blocks share a %zu-byte region)",
             all.aa.size, off.aa.size, all.acts->n_recompute, tensor_bytes(&all.acts->region));
    cu_unet_forward(&off, cfg.text_time), cu_unet_backward(&off);
    cu_unet_forward(&all, cfg.text_time), cu_unet_backward(&all);
    snprintf(what, sizeof what, "%s %s%s recompute all vs off", name, dtype_name(dt), cl ? " channels last" : "");
    cu_unet_check_identical(&all, &off, what);
    arena_zero(&all.ga); // parameter gradients accumulate: the second iteration starts from zero again
    long long before = device_alloc_count();
    cu_unet_forward(&all, cfg.text_time), cu_unet_backward(&all);
    tu_check(device_alloc_count() == before, "recompute: a second iteration allocates no device memory");
    snprintf(what, sizeof what, "%s %s second iteration", name, dtype_name(dt));
    cu_unet_check_identical(&all, &off, what);
    cu_unet_free(&all), cu_unet_free(&off);
    cu_unet_fixture_free(&f);
}

int main(void) {
    cu_require_gpu();
    cu_unet_require_fixtures();
    check_model("unet_sd15", DTYPE_F32, 0);
    check_model("unet_sd15", DTYPE_BF16, 0);
    check_model("unet_sdxl", DTYPE_F32, 0);
    check_model("unet_sdxl", DTYPE_BF16, 0);
    check_model("unet_sdxl", DTYPE_BF16, 1); // the recompute units' arenas planned channels last too
    return tu_report();
}
