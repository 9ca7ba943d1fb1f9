// parity_vae.c: the VAE against diffusers under both attention naming schemes (decoded image, latent gradient, every
// decoder parameter gradient, encoder moments / mean / logvar: max|diff| <= 1e-4 max|ref| per tensor), the real
// configs' tensor and parameter counts, and a weights_save / weights_load round trip.
#include <unistd.h>

#include "../src/models/vae.h"
#include "../src/models/weights.h"
#include "parity.h"

static int check_real_config(const char *dir) {
    if (!parity_have(dir)) return 0;
    static const struct {
        int parts, tensors;
        int64_t params;
    } want[] = {{VAE_DECODER | VAE_ENCODER, 248, 83653863}, {VAE_DECODER, 140, 49490199}, {VAE_ENCODER, 108, 34163664}};
    VAEConfig cfg;
    vae_load_config(&cfg, dir);
    int f = 0;
    for (int i = 0; i < 3; i++) {
        Arena a;
        arena_init(&a, "count", DEVICE_CPU);
        VAE *v = xcalloc(1, sizeof *v);
        vae_plan_params(&a, v, &cfg, want[i].parts);
        int ok = a.n == want[i].tensors && arena_numel(&a) == want[i].params;
        printf("%s %s (parts %d): %d tensors, %lld parameters (want %d, %lld)\n", ok ? "ok  " : "FAIL", dir,
               want[i].parts, a.n, (long long)arena_numel(&a), want[i].tensors, (long long)want[i].params);
        f += !ok;
        free(v);
        arena_free(&a);
    }
    return f;
}

// Saves params, loads the file into a second arena of the same plan and requires identical bytes.
static int check_save_roundtrip(const Arena *pa, const VAEConfig *cfg) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/drtune_parity_vae_%d.safetensors", (int)getpid());
    weights_save(pa, path);
    Arena b;
    arena_init(&b, "reloaded", DEVICE_CPU);
    VAE *v = xcalloc(1, sizeof *v);
    vae_plan_params(&b, v, cfg, VAE_DECODER | VAE_ENCODER);
    arena_alloc(&b);
    weights_load(&b, path, NULL);
    unlink(path);
    int ok = b.size == pa->size && !memcmp(b.base, pa->base, pa->size);
    printf("%s weights_save / weights_load round trip (%d tensors)\n", ok ? "ok  " : "FAIL", b.n);
    free(v);
    arena_free(&b);
    return !ok;
}

static int check_model(const char *name, const SafeTensors *ref) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fixtures/models/%s", name);
    VAEConfig cfg;
    vae_load_config(&cfg, dir);
    Tensor lat = parity_load(ref, "latents"), dimg = parity_load(ref, "dout"), img_in = parity_load(ref, "image_in");
    Arena pa, ga, da, ea;
    arena_init(&pa, "params", DEVICE_CPU);
    arena_init(&ga, "grads", DEVICE_CPU);
    arena_init(&da, "decode acts", DEVICE_CPU);
    arena_init(&ea, "encode acts", DEVICE_CPU);
    VAE *v = xcalloc(1, sizeof *v), *g = xcalloc(1, sizeof *g);
    VAEDecodeActs *dx = xcalloc(1, sizeof *dx);
    VAEEncodeActs *ex = xcalloc(1, sizeof *ex);
    vae_plan_params(&pa, v, &cfg, VAE_DECODER | VAE_ENCODER);
    vae_plan_params(&ga, g, &cfg, VAE_DECODER);
    vae_plan_decode_acts(&da, dx, v, lat.shape[0], lat.shape[2], lat.shape[3]);
    vae_plan_encode_acts(&ea, ex, v, img_in.shape[0], img_in.shape[2], img_in.shape[3]);
    arena_alloc(&pa), arena_alloc(&ga), arena_alloc(&da), arena_alloc(&ea);
    char *wpath = weights_folder_file(dir);
    weights_load(&pa, wpath, vae_weight_renames);
    free(wpath);
    printf("== %s\n", name);
    arena_print(&pa);
    arena_print(&da);
    arena_print(&ea);

    Tensor img = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, 4, dimg.shape), dlat = tensor_make(NULL, DTYPE_F32,
                                                                                              DEVICE_CPU, 4, lat.shape);
    Tensor mean = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, 4, ex->moments.shape);
    mean.shape[1] = cfg.latent_channels;
    Tensor logvar = mean;
    img.data = xcalloc((size_t)tensor_numel(&img), sizeof(float));
    dlat.data = xcalloc((size_t)tensor_numel(&dlat), sizeof(float));
    mean.data = xcalloc((size_t)tensor_numel(&mean), sizeof(float));
    logvar.data = xcalloc((size_t)tensor_numel(&logvar), sizeof(float));
    vae_decode(v, dx, &img, &lat);
    vae_decode_backward(v, g, dx, &dimg, &dlat);
    vae_encode(v, ex, &mean, &logvar, &img_in);

    Parity p = {0};
    parity_check(&p, "image", &img, ref, "image");
    parity_check(&p, "grad_latents", &dlat, ref, "grad_latents");
    int n_ref = 0;
    for (int i = 0; i < ref->n; i++) n_ref += !strncmp(ref->tensors[i].name, "grad.", 5);
    for (int i = 0; i < ga.n; i++) {
        char rn[300];
        snprintf(rn, sizeof rn, "grad.%s", ga.entries[i].name);
        parity_check(&p, rn, &ga.entries[i].desc, ref, rn);
    }
    parity_check(&p, "enc_moments", &ex->moments, ref, "enc_moments");
    parity_check(&p, "enc_mean", &mean, ref, "enc_mean");
    parity_check(&p, "enc_logvar", &logvar, ref, "enc_logvar");
    int f = 0;
    if (n_ref != ga.n) {
        printf("FAIL %s: the reference has %d parameter gradients, the decoder %d parameters\n", name, n_ref, ga.n);
        f++;
    }
    f += parity_report(&p, name);
    f += check_save_roundtrip(&pa, &cfg);

    free(img.data), free(dlat.data), free(mean.data), free(logvar.data);
    free(lat.data), free(dimg.data), free(img_in.data);
    free(v), free(g), free(dx), free(ex);
    arena_free(&pa), arena_free(&ga), arena_free(&da), arena_free(&ea);
    return f;
}

int main(void) {
    const char *ref_path = "tests/fixtures/vae_ref.safetensors";
    if (!parity_have(ref_path)) {
        printf("skipped: tests/fixtures missing (run tools/reference/make_model_fixtures.py)\n");
        return 77;
    }
    SafeTensors ref;
    safetensors_open(&ref, ref_path);
    int f = 0;
    f += check_real_config("configs/models/sd15/vae");
    f += check_real_config("configs/models/sdxl/vae");
    f += check_model("vae", &ref);
    f += check_model("vae_legacy", &ref);
    safetensors_close(&ref);
    printf("%s\n", f ? "FAILED" : "all passed");
    return f ? 1 : 0;
}
