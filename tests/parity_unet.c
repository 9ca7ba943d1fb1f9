// parity_unet.c: the UNet against diffusers on the SD 1.5-like and SDXL-like fixtures (output, input gradient, every
// parameter gradient: max|diff| <= 1e-4 max|ref| per tensor), the real configs' tensor and parameter counts, and the
// gradient contract (a second backward doubles parameter gradients and rewrites dx).
#include "../src/models/unet.h"
#include "../src/models/weights.h"
#include "parity.h"

static int check_real_config(const char *dir, int tensors, int64_t params) {
    if (!parity_have(dir)) return 0;
    UNetConfig cfg;
    unet_load_config(&cfg, dir);
    Arena a;
    arena_init(&a, "count", DEVICE_CPU);
    UNet *net = xcalloc(1, sizeof *net);
    unet_plan_params(&a, net, &cfg);
    int ok = a.n == tensors && arena_numel(&a) == params && unet_param_count(&cfg) == params;
    printf("%s %s: %d tensors, %lld parameters (want %d, %lld)\n", ok ? "ok  " : "FAIL", dir, a.n,
           (long long)arena_numel(&a), tensors, (long long)params);
    unet_free(net);
    free(net);
    arena_free(&a);
    return !ok;
}

// Compares grads of a second backward with twice the first (parameters) and the first (dx).
static int check_accumulation(const Arena *grads, const float *first, const Tensor *dx, const float *dx_first) {
    const float *g = grads->base;
    int64_t n = (int64_t)(grads->size / sizeof(float));
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)g[i] - 2.0 * first[i]);
        worst = e > 1e-6 * fabs(2.0 * first[i]) + 1e-30 && e > worst ? e : worst;
    }
    const float *d = tensor_f32(dx);
    for (int64_t i = 0; i < tensor_numel(dx); i++) {
        double e = fabs((double)d[i] - dx_first[i]);
        worst = e > 1e-6 * fabs((double)dx_first[i]) + 1e-30 && e > worst ? e : worst;
    }
    printf("%s second backward: parameter gradients doubled, dx rewritten (worst deviation %.3e)\n",
           worst == 0.0 ? "ok  " : "FAIL", worst);
    return worst != 0.0;
}

static int check_model(const char *name) {
    char dir[256], ref_path[256];
    snprintf(dir, sizeof dir, "tests/fixtures/models/%s", name);
    snprintf(ref_path, sizeof ref_path, "tests/fixtures/%s_ref.safetensors", name);
    SafeTensors ref;
    safetensors_open(&ref, ref_path);
    UNetConfig cfg;
    unet_load_config(&cfg, dir);
    Tensor x = parity_load(&ref, "sample"), t = parity_load(&ref, "timestep");
    Tensor ctx = parity_load(&ref, "encoder_hidden_states"), dout = parity_load(&ref, "dout");
    Tensor te = {0}, tid = {0};
    if (cfg.text_time) te = parity_load(&ref, "text_embeds"), tid = parity_load(&ref, "time_ids");

    Arena pa, ga, aa;
    arena_init(&pa, "params", DEVICE_CPU);
    arena_init(&ga, "grads", DEVICE_CPU);
    arena_init(&aa, "acts", DEVICE_CPU);
    UNet *net = xcalloc(1, sizeof *net), *grads = xcalloc(1, sizeof *grads);
    UNetActs *acts = xcalloc(1, sizeof *acts);
    unet_plan_params(&pa, net, &cfg);
    unet_plan_params(&ga, grads, &cfg);
    unet_plan_acts(&aa, acts, net, x.shape[0], x.shape[2], x.shape[3], ctx.shape[1]);
    arena_alloc(&pa);
    arena_alloc(&ga);
    arena_alloc(&aa);
    char *wpath = weights_folder_file(dir);
    weights_load(&pa, wpath, NULL);
    free(wpath);
    printf("== %s\n", name);
    arena_print(&pa);
    arena_print(&aa);

    Tensor out = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, 4, dout.shape), dx = tensor_make(NULL, DTYPE_F32, DEVICE_CPU,
                                                                                           4, x.shape);
    Tensor dctx = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, 3, ctx.shape);
    out.data = xcalloc((size_t)tensor_numel(&out), sizeof(float));
    dx.data = xcalloc((size_t)tensor_numel(&dx), sizeof(float));
    dctx.data = xcalloc((size_t)tensor_numel(&dctx), sizeof(float));
    unet_forward(net, acts, &out, &x, &t, &ctx, cfg.text_time ? &te : NULL, cfg.text_time ? &tid : NULL);
    unet_backward(net, grads, acts, &dout, &dx, &dctx);

    Parity p = {0};
    parity_check(&p, "out", &out, &ref, "out");
    parity_check(&p, "grad_sample", &dx, &ref, "grad_sample");
    parity_check(&p, "grad_encoder_hidden_states", &dctx, &ref, "grad_encoder_hidden_states");
    int n_ref = 0;
    for (int i = 0; i < ref.n; i++) n_ref += !strncmp(ref.tensors[i].name, "grad.", 5);
    for (int i = 0; i < ga.n; i++) {
        char rn[300];
        snprintf(rn, sizeof rn, "grad.%s", ga.entries[i].name);
        parity_check(&p, rn, &ga.entries[i].desc, &ref, rn);
    }
    int f = 0;
    if (n_ref != ga.n) {
        printf("FAIL %s: the reference has %d parameter gradients, the model %d parameters\n", name, n_ref, ga.n);
        f++;
    }
    f += parity_report(&p, name);

    float *first = xmalloc(ga.size), *dx_first = xmalloc(tensor_bytes(&dx));
    memcpy(first, ga.base, ga.size);
    memcpy(dx_first, dx.data, tensor_bytes(&dx));
    unet_backward(net, grads, acts, &dout, &dx, &dctx);
    f += check_accumulation(&ga, first, &dx, dx_first);

    free(first), free(dx_first), free(out.data), free(dx.data), free(dctx.data);
    free(x.data), free(t.data), free(ctx.data), free(dout.data), free(te.data), free(tid.data);
    unet_acts_free(acts);
    unet_free(net);
    unet_free(grads);
    free(acts), free(net), free(grads);
    arena_free(&pa), arena_free(&ga), arena_free(&aa);
    safetensors_close(&ref);
    return f;
}

int main(void) {
    if (!parity_have("tests/fixtures/unet_sd15_ref.safetensors")) {
        printf("skipped: tests/fixtures missing (run tools/reference/make_model_fixtures.py)\n");
        return 77;
    }
    int f = 0;
    f += check_real_config("configs/models/sd15/unet", 686, 859520964);
    f += check_real_config("configs/models/sdxl/unet", 1680, 2567463684);
    f += check_model("unet_sd15");
    f += check_model("unet_sdxl");
    printf("%s\n", f ? "FAILED" : "all passed");
    return f ? 1 : 0;
}
