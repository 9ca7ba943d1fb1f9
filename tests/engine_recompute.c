// engine_recompute.c: UNet activation recompute (train.recompute) on the CPU. Re-running a block's forward in the
// backward must change nothing: on the fixture UNets (SD 1.5-like, SDXL-like) the output, the input and context
// gradients and every parameter gradient are bit-identical with recompute off, all and auto (the CPU ops are
// deterministic for a fixed thread count); the activation plan shrinks by exactly what the flagged blocks keep less
// the shared region they take turns in; auto stays within its budget; and one DRTune and one DRaFT iteration of the
// engine give the same loss and gradients bit for bit. The VAE decoder's recompute (the same setting) likewise: its
// latents' gradient bit-identical with recompute off, all and auto, and the plan within auto's budget.
#include <math.h>
#include <string.h>

#include "../src/models/pipeline.h"
#include "../src/train/engine.h"
#include "cudaemu_unet.h"
#include "engine_setup.h"
#include "fixture.h"
#include "parity.h"

// One forward + backward on the CPU with recompute rc; the caller frees r.
static void run(CuUNetRun *r, const char *dir, const UNetConfig *cfg, const Tensor *in, UNetRecompute rc) {
    cu_unet_setup_rc(r, DEVICE_CPU, DTYPE_F32, dir, cfg, in, &rc);
    cu_unet_forward(r, cfg->text_time), cu_unet_backward(r);
}

static void check_model(const char *name) {
    CuUNetFixture f;
    cu_unet_fixture_load(&f, name);
    const char *dir = f.dir;
    const UNetConfig cfg = f.cfg;
    const Tensor *in = f.in;
    CuUNetRun off, all, au;
    run(&off, dir, &cfg, in, (UNetRecompute){UNET_RECOMPUTE_OFF, 0});
    run(&all, dir, &cfg, in, (UNetRecompute){UNET_RECOMPUTE_ALL, 0});
    cu_unet_check_identical(&all, &off, "recompute all vs off");
    // the plan: every unit's tensors leave the arena, one region as large as the largest comes in (fp32: every
    // entry a multiple of 256 bytes, so the sizes add up exactly)
    size_t sum = 0, big = 0;
    for (int u = 0; u < UNET_MAX_UNITS; u++)
        if (all.acts->unit_plan[u]) {
            size_t n = all.acts->unit_plan[u]->size;
            sum += n, big = n > big ? n : big;
        }
    tu_check(all.acts->n_recompute == unet_units(&cfg) && off.acts->n_recompute == 0,
             "all flags every block (%d of %d), off none (%d)", all.acts->n_recompute, unet_units(&cfg),
             off.acts->n_recompute);
    tu_check(all.aa.size == off.aa.size - sum + big && all.acts->bytes_off == off.aa.size,
             "plan: %zu bytes with recompute all = %zu without - %zu in the blocks + %zu region (%.1f%% less)",
             all.aa.size, off.aa.size, sum, big, 100.0 * (1.0 - (double)all.aa.size / (double)off.aa.size));
    // auto, halfway between: some blocks flagged, within budget, the same gradients
    double budget = 0.5 * ((double)off.aa.size + (double)all.aa.size);
    run(&au, dir, &cfg, in, (UNetRecompute){UNET_RECOMPUTE_AUTO, budget});
    tu_check(au.acts->n_recompute > 1 && au.acts->n_recompute < unet_units(&cfg) && (double)au.aa.size <= budget,
             "auto: %d of %d blocks, %zu bytes within the budget of %.0f", au.acts->n_recompute, unet_units(&cfg),
             au.aa.size, budget);
    cu_unet_check_identical(&au, &off, "recompute auto vs off");
    // a second iteration on the same plan (the region re-used) stays identical
    cu_unet_forward(&all, cfg.text_time), cu_unet_backward(&all);
    cu_unet_forward(&off, cfg.text_time), cu_unet_backward(&off);
    cu_unet_check_identical(&all, &off, "second iteration, recompute all vs off");
    cu_unet_free(&au);
    // auto with room for everything flags nothing
    run(&au, dir, &cfg, in, (UNetRecompute){UNET_RECOMPUTE_AUTO, (double)off.aa.size});
    tu_check(au.acts->n_recompute == 0 && au.aa.size == off.aa.size, "auto within budget already: nothing flagged");
    cu_unet_free(&au), cu_unet_free(&all), cu_unet_free(&off);
    cu_unet_fixture_free(&f);
}

// ---------------------------------------------------------------------------------------------------------------
// engine: one iteration with and without recompute


static void engine_setup(EngineSetup *s) {
    engine_setup_models(s);
    int64_t n = 2 * 5 * s->unet.cfg.cross_dim; // [uncond | cond] rows, context length 5
    s->ctx = tensor_make(xmalloc(sizeof(float) * (size_t)n), DTYPE_F32, DEVICE_CPU, 3,
                         (int64_t[]){2, 5, s->unet.cfg.cross_dim});
    rng_normal_fill(s->ctx.data, n, 3, RNG_STREAM(RNG_PURPOSE_LATENT, 0, 1), 0);
}

// One iteration of method m with recompute mode; loss and a copy of the gradients out.
static double engine_run(EngineSetup *s, Method m, UNetRecomputeMode mode, float *grads, int *flagged) {
    engine_set_recompute(&(UNetRecompute){mode, 0});
    Engine e;
    engine_init(&e, &s->unet, &s->grads, &s->vae, &s->sched, &s->rewards, 5.0f, 0.0f, 1, 8, 8, 5);
    engine_set_recompute(&(UNetRecompute){UNET_RECOMPUTE_OFF, 0});
    *flagged = e.acts.n_recompute + e.vacts.n_recompute; // the UNet's blocks and the decoder's units
    MethodConfig mc = {.method = m, .K = 2, .m = 2, .phase = 1, .t_min = m == METHOD_DRAFT ? -1 : 2, .k = -1};
    IterPlan plan;
    iter_plan_draw(&plan, &mc, 6, 0, 0);
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * 256), 1, 4, 8, 8);
    rng_normal_fill(xT.data, 256, 5, RNG_STREAM(RNG_PURPOSE_LATENT, 0, 0), 0);
    UNetCond cond = {&s->ctx, NULL, NULL};
    const char *prompts[1] = {""};
    arena_zero(&s->gradmem);
    IterResult res;
    engine_iteration(&e, &plan, &cond, prompts, &xT, NULL, NULL, &res);
    memcpy(grads, s->gradmem.base, s->gradmem.size);
    free(xT.data);
    engine_free(&e);
    return res.loss;
}

// The VAE decoder (the fixture's): one decode + backward with recompute off, all, and auto under a budget between the
// two plans; dlatents bit-identical, the plan smaller by what the flagged units keep less the region.
static void vae_run(const VAE *v, UNetRecompute rc, const Tensor *z, const Tensor *dimg, float *dz, size_t *bytes,
                    int *flagged) {
    Arena a;
    arena_init(&a, "vae-acts", DEVICE_CPU);
    VAEDecodeActs x;
    vae_plan_decode_acts_recompute(&a, &x, v, z->shape[0], z->shape[2], z->shape[3], &rc);
    arena_alloc(&a);
    *bytes = a.size, *flagged = x.n_recompute;
    Tensor img = tensor_make(xmalloc(tensor_bytes(dimg)), DTYPE_F32, DEVICE_CPU, 4, dimg->shape);
    Tensor g = tensor_make(dz, DTYPE_F32, DEVICE_CPU, 4, z->shape);
    vae_decode(v, &x, &img, z);
    vae_decode_backward(v, NULL, &x, dimg, &g);
    free(img.data);
    vae_decode_acts_free(&x);
    arena_free(&a);
}

static void check_vae(void) {
    EngineSetup s;
    engine_setup_models(&s);
    const VAE *v = &s.vae;
    int f = 1 << (v->cfg.levels - 1), units = 1 + v->cfg.levels * (v->cfg.layers + 1);
    Tensor z = tensor_f32_4d(xmalloc(sizeof(float) * 4 * 64), 1, 4, 8, 8);
    int64_t ni = 3 * 64 * f * f;
    Tensor dimg = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)ni), 1, 3, 8 * f, 8 * f);
    rng_normal_fill(z.data, 256, 11, RNG_STREAM(RNG_PURPOSE_LATENT, 0, 0), 0);
    rng_normal_fill(dimg.data, ni, 12, RNG_STREAM(RNG_PURPOSE_LATENT, 0, 0), 0);
    float *d0 = xmalloc(sizeof(float) * 256), *d1 = xmalloc(sizeof(float) * 256), *d2 = xmalloc(sizeof(float) * 256);
    size_t b0, b1, b2;
    int n0, n1, n2;
    vae_run(v, (UNetRecompute){UNET_RECOMPUTE_OFF, 0}, &z, &dimg, d0, &b0, &n0);
    vae_run(v, (UNetRecompute){UNET_RECOMPUTE_ALL, 0}, &z, &dimg, d1, &b1, &n1);
    double budget = 0.5 * (double)(b0 + b1);
    vae_run(v, (UNetRecompute){UNET_RECOMPUTE_AUTO, budget}, &z, &dimg, d2, &b2, &n2);
    double norm = 0;
    for (int i = 0; i < 256; i++) norm += (double)d0[i] * d0[i];
    tu_check(n0 == 0 && n1 == units && b1 < b0 && norm > 0,
             "VAE decoder recompute all: %d of %d units, plan %zu -> %zu bytes, |dlatents| %.3e", n1, units, b0, b1,
             sqrt(norm));
    tu_check(!memcmp(d0, d1, sizeof(float) * 256), "VAE decoder: dlatents bit-identical with recompute all");
    tu_check(n2 > 0 && n2 < units && (double)b2 <= budget, "VAE decoder auto (budget %.0f): %d units, plan %zu bytes",
             budget, n2, b2);
    tu_check(!memcmp(d0, d2, sizeof(float) * 256), "VAE decoder: dlatents bit-identical with recompute auto");
    free(d0), free(d1), free(d2), free(z.data), free(dimg.data);
    engine_setup_free(&s);
}

static void check_engine(void) {
    EngineSetup s;
    engine_setup(&s);
    float *a = xmalloc(s.gradmem.size), *b = xmalloc(s.gradmem.size);
    const Method methods[2] = {METHOD_DRTUNE, METHOD_DRAFT};
    const char *names[2] = {"DRTune", "DRaFT"};
    for (int k = 0; k < 2; k++) {
        int fa, fb;
        double la = engine_run(&s, methods[k], UNET_RECOMPUTE_OFF, a, &fa);
        double lb = engine_run(&s, methods[k], UNET_RECOMPUTE_ALL, b, &fb);
        double norm = 0;
        for (size_t i = 0; i < s.gradmem.size / sizeof(float); i++) norm += (double)a[i] * a[i];
        tu_check(fa == 0 && fb == unet_units(&s.unet.cfg) + 1 + s.vae.cfg.levels * (s.vae.cfg.layers + 1) && norm > 0,
                 "engine %s: recompute flags %d blocks (off: %d), gradient norm %.3e", names[k], fb, fa, norm);
        tu_check(la == lb && !memcmp(a, b, s.gradmem.size),
                 "engine %s iteration: loss %.9g vs %.9g, parameter gradients bit-identical with recompute all",
                 names[k], la, lb);
    }
    free(a), free(b);
    free(s.ctx.data);
    engine_setup_free(&s);
}

int main(void) {
    cu_unet_require_fixtures();
    check_model("unet_sd15");
    check_model("unet_sdxl");
    check_vae();
    check_engine();
    return tu_report();
}
