// cudaemu_unet.c: the whole UNet forward and backward on the GPU against the same computation on the CPU, on the
// SD 1.5-like and SDXL-like fixture models (tests/fixtures/models/unet_*): output, input and context gradients and
// every parameter gradient, fp32 storage. Weights are read on the host and moved to the GPU in one copy; gradients
// and activations are planned on the GPU. A second iteration must not allocate device memory (the plan is the
// footprint). Emulated GPU in CI (label cudaemu); cuda_unet on a real one.
#include "cudaemu_unet.h"
#include "parity.h"

static void check_model(const char *name) {
    char dir[256], ref_path[256];
    snprintf(dir, sizeof dir, "tests/fixtures/models/%s", name);
    snprintf(ref_path, sizeof ref_path, "tests/fixtures/%s_ref.safetensors", name);
    SafeTensors ref;
    safetensors_open(&ref, ref_path);
    UNetConfig cfg;
    unet_load_config(&cfg, dir);
    Tensor in[6] = {parity_load(&ref, "sample"), parity_load(&ref, "timestep"),
                    parity_load(&ref, "encoder_hidden_states"), {0}, {0}, parity_load(&ref, "dout")};
    if (cfg.text_time) in[3] = parity_load(&ref, "text_embeds"), in[4] = parity_load(&ref, "time_ids");
    printf("== %s\n", name);
    CuUNetRun c, g;
    cu_unet_setup(&c, DEVICE_CPU, dir, &cfg, in);
    cu_unet_setup(&g, DEVICE_CUDA, dir, &cfg, in);
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
    cu_unet_free(&c), cu_unet_free(&g);
    for (int i = 0; i < 6; i++) free(in[i].data);
    safetensors_close(&ref);
}

int main(void) {
    cu_require_gpu();
    if (!parity_have("tests/fixtures/unet_sd15_ref.safetensors")) {
        printf("skipped: tests/fixtures missing\n");
        return 77;
    }
    check_model("unet_sd15");
    check_model("unet_sdxl");
    return tu_report();
}
