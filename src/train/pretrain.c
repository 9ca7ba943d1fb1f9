// pretrain.c: the two stages of `drtune pretrain` (pretrain.h): stage 1 the autoencoder (reconstruction + KL), stage 2
// the UNet and the text encoder (epsilon loss, caption dropout for guidance) on cached latents. Every draw is keyed by
// (seed, iteration), so a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../core/rng.h"
#include "../data/scenes.h"
#include "../models/vae_encoder_backward.h"
#include "../ops/ops.h"
#include "setup.h"
#include "optim.h"
#include "pretrain_internal.h"

// Draws of iteration `it`: purpose DATA with the iteration as the sample and a small tag as the step (scenes.h keeps
// bit 27 of the step for itself).
enum { DRAW_VAE_EPS = 1, DRAW_INDEX = 2, DRAW_DROP = 3, DRAW_LATENT = 4, DRAW_T = 5, DRAW_NOISE = 6 };
#define STAGE_STREAM(stage, it, what) RNG_STREAM(RNG_PURPOSE_DATA, (it), (stage) * 16 + (what))
#define T_CTX TOKENIZER_MAX_LENGTH

static AdamWConfig adam_config(const PretrainConfig *c, int stage) {
    AdamWConfig a = {0};
    a.lr = (float)(stage == 1 ? c->vae.lr : c->unet.lr);
    a.beta1 = 0.9f, a.beta2 = 0.999f, a.eps = 1e-8f;
    a.weight_decay = (float)c->train.weight_decay;
    a.warmup = c->train.warmup;
    a.cosine = 1, a.min_lr_ratio = 0.1f;
    a.total = stage == 1 ? c->vae.iterations : c->unet.iterations;
    a.grad_clip = (float)c->train.grad_clip;
    return a;
}

double param_groups_step(ParamGroup *groups, int n, const AdamWConfig *a, int iteration, int *adam_step) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += grad_sumsq(groups[i].g->base, groups[i].n);
    double norm = sqrt(ss);
    if (isfinite(norm)) {
        float coef = grad_clip_coef(a, norm), lr = adamw_lr(a, iteration);
        ++*adam_step;
        for (int i = 0; i < n; i++) {
            ParamGroup *g = &groups[i];
            adamw_update(a, lr, *adam_step, coef, g->p->base, g->g->base, g->m, g->v, g->n);
        }
    }
    for (int i = 0; i < n; i++) arena_zero(groups[i].g);
    return norm;
}

static double optimizer_step(Pretrainer *t, const AdamWConfig *a) {
    return param_groups_step(t->groups, t->n_groups, a, t->iteration, &t->adam_step);
}

static int due(int every, int it) { return every > 0 && it % every == 0; }

typedef struct {
    double sum, t0;
    int n;
} Window;

// One line every output.log_every iterations: the window's mean loss, the last gradient norm and learning rate.
static void progress(Pretrainer *t, Window *w, const AdamWConfig *a, int total, double loss, double gnorm,
                     const char *what) {
    w->sum += loss, w->n++;
    if (!due(t->c->output.log_every, t->iteration) && t->iteration != total) return;
    double per = (dt_now() - w->t0) / w->n;
    printf("stage %d it %6d/%d  %s %.5f  grad %.3f  lr %.2e  %.3f s/it  eta %.1f min\n", t->stage, t->iteration,
           total, what, w->sum / w->n, gnorm, (double)adamw_lr(a, t->iteration - 1), per,
           per * (total - t->iteration) / 60.0);
    fflush(stdout);
    w->sum = 0, w->n = 0, w->t0 = dt_now();
}

// ---------------------------------------------------------------------------------------------------------------
// stage 1: the autoencoder

typedef struct {
    Arena mem, enc_mem, dec_mem;
    VAEEncodeActs enc;
    VAEDecodeActs dec;
    VAEEncodeGrad eg;
    Tensor img, mean, logvar, z, eps, recon, drecon, dz, dmean, dlogvar;
} VaeStep;

static void vae_step_init(VaeStep *s, const Pretrainer *t, int B) {
    const VAEConfig *vc = &t->vae.cfg;
    int64_t H = t->c->data.image_size, f = (int64_t)1 << (vc->levels - 1), h = H / f, L = vc->latent_channels;
    memset(s, 0, sizeof *s);
    arena_init(&s->enc_mem, "vae_encode_acts", DEVICE_CPU);
    vae_plan_encode_acts(&s->enc_mem, &s->enc, &t->vae, B, H, H);
    arena_alloc(&s->enc_mem);
    arena_init(&s->dec_mem, "vae_decode_acts", DEVICE_CPU);
    vae_plan_decode_acts(&s->dec_mem, &s->dec, &t->vae, B, h, h);
    arena_alloc(&s->dec_mem);
    Arena *a = &s->mem;
    arena_init(a, "vae_train", DEVICE_CPU);
    PLAN(a, &s->img, "", "image", B, vc->in_channels, H, H);
    PLAN(a, &s->recon, "", "recon", B, vc->out_channels, H, H);
    PLAN(a, &s->drecon, "", "grad.recon", B, vc->out_channels, H, H);
    Tensor *lat[] = {&s->mean, &s->logvar, &s->z, &s->eps, &s->dz, &s->dmean, &s->dlogvar};
    const char *names[] = {"mean", "logvar", "z", "eps", "grad.z", "grad.mean", "grad.logvar"};
    for (int i = 0; i < 7; i++) PLAN(a, lat[i], "", names[i], B, L, h, h);
    arena_alloc(a);
    vae_encode_grad_init(&s->eg, &s->enc);
}

static void vae_step_free(VaeStep *s) {
    vae_encode_grad_free(&s->eg);
    arena_free(&s->mem);
    arena_free(&s->enc_mem);
    arena_free(&s->dec_mem);
}

// Renders scenes first..first+B-1 of the training split into img.
static void render_scenes(const PretrainConfig *c, float *img, int64_t first, int B) {
    int H = c->data.image_size;
#pragma omp parallel for schedule(dynamic)
    for (int b = 0; b < B; b++) {
        Scene sc;
        scene_sample(&sc, (uint64_t)c->data.seed, (uint64_t)(first + b), 0);
        scene_render(&sc, img + (int64_t)b * 3 * H * H, H, H);
    }
}

// One stage-1 iteration; returns the loss (reconstruction + weighted KL).
static double vae_iteration(Pretrainer *t, VaeStep *s, int B) {
    const PretrainConfig *c = t->c;
    int64_t n_img = tensor_numel(&s->img), n_lat = tensor_numel(&s->z);
    render_scenes(c, tensor_f32(&s->img), (int64_t)t->iteration * B, B);
    vae_encode(&t->vae, &s->enc, &s->mean, &s->logvar, &s->img);
    float *mu = tensor_f32(&s->mean), *lv = tensor_f32(&s->logvar), *z = tensor_f32(&s->z), *e = tensor_f32(&s->eps);
    rng_normal_fill(e, n_lat, (uint64_t)c->train.seed, STAGE_STREAM(1, t->iteration, DRAW_VAE_EPS), 0);
    for (int64_t i = 0; i < n_lat; i++) z[i] = mu[i] + expf(0.5f * lv[i]) * e[i];
    vae_decode(&t->vae, &s->dec, &s->recon, &s->z);
    const float *x = tensor_f32(&s->img), *r = tensor_f32(&s->recon);
    float *dr = tensor_f32(&s->drecon);
    double rec = 0.0, kl = 0.0;
    for (int64_t i = 0; i < n_img; i++) {
        float d = r[i] - x[i];
        if (c->vae.loss == RECON_L1) {
            rec += fabsf(d);
            dr[i] = (d > 0.0f ? 1.0f : d < 0.0f ? -1.0f : 0.0f) / (float)n_img;
        } else {
            rec += (double)d * d;
            dr[i] = 2.0f * d / (float)n_img;
        }
    }
    vae_decode_backward(&t->vae, &t->vae_g, &s->dec, &s->drecon, &s->dz);
    float kw = (float)(c->vae.kl_weight / B);
    const float *dz = tensor_f32(&s->dz);
    float *dm = tensor_f32(&s->dmean), *dl = tensor_f32(&s->dlogvar);
    for (int64_t i = 0; i < n_lat; i++) {
        float var = expf(lv[i]), sd = expf(0.5f * lv[i]);
        kl += 0.5 * ((double)mu[i] * mu[i] + var - 1.0 - lv[i]);
        dm[i] = dz[i] + kw * mu[i];
        dl[i] = dz[i] * e[i] * 0.5f * sd + kw * 0.5f * (var - 1.0f);
    }
    vae_encode_backward(&t->vae, &t->vae_g, &s->enc, &s->eg, &s->img, &s->dmean, &s->dlogvar);
    return rec / (double)n_img + c->vae.kl_weight * kl / B;
}

// ---------------------------------------------------------------------------------------------------------------
// stage 2: UNet and text encoder

typedef struct {
    int n;               // cached scenes
    float *mean, *logvar; // [n, L, h, w]
    int32_t *ids;        // [n, T_CTX] caption tokens
    int32_t empty[T_CTX]; // tokens of ""
} LatentCache;

// Encodes data.latent_cache training scenes with the frozen encoder and sets the scaling factor to 1 / std of
// latents drawn from them (as SD's was computed).
static void cache_build(Pretrainer *t, LatentCache *lc) {
    const PretrainConfig *c = t->c;
    const VAEConfig *vc = &t->vae.cfg;
    int H = c->data.image_size, f = 1 << (vc->levels - 1), h = H / f, B = 64;
    int64_t per = (int64_t)vc->latent_channels * h * h;
    lc->n = c->data.latent_cache;
    lc->mean = xmalloc(sizeof(float) * (size_t)(per * lc->n));
    lc->logvar = xmalloc(sizeof(float) * (size_t)(per * lc->n));
    lc->ids = xmalloc(sizeof(int32_t) * (size_t)lc->n * T_CTX);
    tokenizer_encode(&t->tok, "", lc->empty, T_CTX);
    Arena a;
    VAEEncodeActs acts;
    Tensor img;
    arena_init(&a, "cache_acts", DEVICE_CPU);
    vae_plan_encode_acts(&a, &acts, &t->vae, B, H, H);
    PLAN(&a, &img, "", "image", B, 3, H, H);
    arena_alloc(&a);
    double t0 = dt_now();
    for (int first = 0; first < lc->n; first += B) {
        int nb = lc->n - first < B ? lc->n - first : B;
        render_scenes(c, tensor_f32(&img), first, nb);
        Tensor mean = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(per * B)), B, vc->latent_channels, h, h);
        Tensor logvar = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(per * B)), B, vc->latent_channels, h, h);
        vae_encode(&t->vae, &acts, &mean, &logvar, &img);
        memcpy(lc->mean + first * per, mean.data, sizeof(float) * (size_t)(per * nb));
        memcpy(lc->logvar + first * per, logvar.data, sizeof(float) * (size_t)(per * nb));
        free(mean.data);
        free(logvar.data);
        for (int b = 0; b < nb; b++) {
            Scene sc;
            scene_sample(&sc, (uint64_t)c->data.seed, (uint64_t)(first + b), 0);
            tokenizer_encode(&t->tok, sc.caption, lc->ids + (int64_t)(first + b) * T_CTX, T_CTX);
        }
    }
    arena_free(&a);
    // std of sampled latents, in double, over the whole cache
    float *z = xmalloc(sizeof(float) * (size_t)per);
    double s1 = 0.0, s2 = 0.0;
    for (int i = 0; i < lc->n; i++) {
        rng_normal_fill(z, per, (uint64_t)c->train.seed, STAGE_STREAM(2, 0, DRAW_LATENT), (uint64_t)i * per);
        for (int64_t k = 0; k < per; k++) {
            double v = lc->mean[i * per + k] + exp(0.5 * lc->logvar[i * per + k]) * z[k];
            s1 += v, s2 += v * v;
        }
    }
    free(z);
    double N = (double)lc->n * per, sd = sqrt(s2 / N - (s1 / N) * (s1 / N));
    char buf[32];
    snprintf(buf, sizeof buf, "%.5g", 1.0 / sd);
    t->scaling_factor = (float)strtod(buf, NULL);
    t->vae.cfg.scaling_factor = t->scaling_factor;
    printf("stage 2: %d scenes encoded in %.1f s; latent std %.4f -> scaling_factor %s\n", lc->n, dt_now() - t0, sd,
           buf);
    fflush(stdout);
}

static void cache_free(LatentCache *lc) {
    free(lc->mean);
    free(lc->logvar);
    free(lc->ids);
}

typedef struct {
    Arena mem, unet_mem;
    UNetActs uacts;
    ClipTextTrainActs tacts;
    Tensor x0, noise, xt, eps, deps, tsteps, dctx;
    int32_t *ids;
} UnetStep;

static void unet_step_init(UnetStep *s, const Pretrainer *t, int B, int h) {
    const UNetConfig *uc = &t->unet.cfg;
    memset(s, 0, sizeof *s);
    arena_init(&s->unet_mem, "unet_acts", DEVICE_CPU);
    unet_plan_acts(&s->unet_mem, &s->uacts, &t->unet, B, h, h, T_CTX);
    arena_alloc(&s->unet_mem);
    clip_text_train_init(&s->tacts, &t->te, B, T_CTX);
    Arena *a = &s->mem;
    arena_init(a, "unet_train", DEVICE_CPU);
    Tensor *lat[] = {&s->x0, &s->noise, &s->xt, &s->eps, &s->deps};
    const char *names[] = {"x0", "noise", "xt", "eps", "grad.eps"};
    for (int i = 0; i < 5; i++) PLAN(a, lat[i], "", names[i], B, uc->in_channels, h, h);
    PLAN(a, &s->tsteps, "", "timesteps", B);
    PLAN(a, &s->dctx, "", "grad.context", B, T_CTX, uc->cross_dim);
    arena_alloc(a);
    s->ids = xmalloc(sizeof(int32_t) * (size_t)B * T_CTX);
}

static void unet_step_free(UnetStep *s) {
    unet_acts_free(&s->uacts);
    arena_free(&s->unet_mem);
    arena_free(&s->mem);
    clip_text_train_free(&s->tacts);
    free(s->ids);
}

// One stage-2 iteration; returns the epsilon loss (mean squared error).
static double unet_iteration(Pretrainer *t, UnetStep *s, const LatentCache *lc, int B) {
    const PretrainConfig *c = t->c;
    uint64_t seed = (uint64_t)c->train.seed;
    int it = t->iteration;
    int64_t per = tensor_numel(&s->x0) / B;
    float *x0 = tensor_f32(&s->x0), *ts = tensor_f32(&s->tsteps);
    rng_normal_fill(x0, per * B, seed, STAGE_STREAM(2, it, DRAW_LATENT), 0);
    rng_normal_fill(tensor_f32(&s->noise), per * B, seed, STAGE_STREAM(2, it, DRAW_NOISE), 0);
    for (int b = 0; b < B; b++) {
        int64_t k = rng_randint(seed, STAGE_STREAM(2, it, DRAW_INDEX), (uint64_t)b, 0, lc->n - 1);
        int drop = rng_uniform_at(seed, STAGE_STREAM(2, it, DRAW_DROP), (uint64_t)b) < (float)c->unet.cfg_dropout;
        memcpy(s->ids + (int64_t)b * T_CTX, drop ? lc->empty : lc->ids + k * T_CTX, sizeof(int32_t) * T_CTX);
        for (int64_t i = 0; i < per; i++) {
            float *v = &x0[b * per + i];
            *v = (lc->mean[k * per + i] + expf(0.5f * lc->logvar[k * per + i]) * *v) * t->scaling_factor;
        }
        int tt = (int)rng_randint(seed, STAGE_STREAM(2, it, DRAW_T), (uint64_t)b, 0,
                                  t->sched.cfg.num_train_timesteps - 1);
        ts[b] = (float)tt;
        Tensor xb = tensor_f32_1d(x0 + b * per, per), nb = tensor_f32_1d(tensor_f32(&s->noise) + b * per, per);
        Tensor ob = tensor_f32_1d(tensor_f32(&s->xt) + b * per, per);
        ddim_add_noise(&t->sched, tt, &ob, &xb, &nb);
    }
    clip_text_train_forward(&t->te, &s->tacts, s->ids);
    unet_forward(&t->unet, &s->uacts, &s->eps, &s->xt, &s->tsteps, &s->tacts.last, NULL, NULL);
    int64_t n = per * B;
    const float *e = tensor_f32(&s->eps), *z = tensor_f32(&s->noise);
    float *de = tensor_f32(&s->deps);
    double loss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float d = e[i] - z[i];
        loss += (double)d * d;
        de[i] = 2.0f * d / (float)n;
    }
    unet_backward(&t->unet, &t->unet_g, &s->uacts, &s->deps, NULL, &s->dctx);
    clip_text_backward(&t->te, &t->te_g, &s->tacts, &s->dctx);
    return loss / (double)n;
}

// ---------------------------------------------------------------------------------------------------------------
// the run

// Checkpoints when due (or at the stage's end); returns 1 when this invocation should stop (stop_after reached).
static int after_iteration(Pretrainer *t, int total, int *budget) {
    const PretrainConfig *c = t->c;
    int stop = *budget > 0 && --*budget == 0;
    if (due(c->output.checkpoint_every, t->iteration) || t->iteration == total || stop) {
        pretrain_checkpoint_save(t);
        if (t->stage == 2) {
            char dir[PRETRAIN_PATH_MAX + 16];
            pretrain_export(t, dt_path(dir, sizeof dir, "%s/model", c->output.dir));
        }
    }
    return stop;
}

static int run_stage1(Pretrainer *t, int *budget) {
    const PretrainConfig *c = t->c;
    int total = c->vae.iterations, B = c->vae.batch;
    if (t->iteration >= total) return 0;
    AdamWConfig a = adam_config(c, 1);
    VaeStep s;
    vae_step_init(&s, t, B);
    Window w = {0, dt_now(), 0};
    printf("stage 1: autoencoder, %d iterations of %d images from %d\n", total, B, t->iteration);
    int stop = 0;
    while (t->iteration < total && !stop) {
        double loss = vae_iteration(t, &s, B);
        double gn = optimizer_step(t, &a);
        t->iteration++;
        t->last_loss = loss;
        progress(t, &w, &a, total, loss, gn, "loss");
        stop = after_iteration(t, total, budget);
    }
    vae_step_free(&s);
    return stop;
}

static int run_stage2(Pretrainer *t, int *budget) {
    const PretrainConfig *c = t->c;
    int total = c->unet.iterations, B = c->unet.batch;
    const VAEConfig *vc = &t->vae.cfg;
    int h = c->data.image_size >> (vc->levels - 1);
    LatentCache lc;
    float resumed_sf = t->scaling_factor;
    cache_build(t, &lc);
    if (t->iteration > 0)
        CHECK(resumed_sf == t->scaling_factor, "the checkpoint's VAE differs from the one it was written with",
              "scaling factor %g recomputed as %g", (double)resumed_sf, (double)t->scaling_factor);
    AdamWConfig a = adam_config(c, 2);
    UnetStep s;
    unet_step_init(&s, t, B, h);
    Window w = {0, dt_now(), 0};
    printf("stage 2: UNet + text encoder, %d iterations of %d latents from %d\n", total, B, t->iteration);
    int stop = 0;
    while (t->iteration < total && !stop) {
        double loss = unet_iteration(t, &s, &lc, B);
        double gn = optimizer_step(t, &a);
        t->iteration++;
        t->last_loss = loss;
        progress(t, &w, &a, total, loss, gn, "eps mse");
        stop = after_iteration(t, total, budget);
    }
    unet_step_free(&s);
    cache_free(&lc);
    return stop;
}

// The tokenizer folder in output.dir, from the words of the first data.vocab_captions training captions.
static void build_tokenizer(Pretrainer *t) {
    const PretrainConfig *c = t->c;
    int n = c->data.vocab_captions;
    Scene *sc = xmalloc(sizeof(Scene) * (size_t)n);
    const char **caps = xmalloc(sizeof(char *) * (size_t)n);
    for (int i = 0; i < n; i++) {
        scene_sample(&sc[i], (uint64_t)c->data.seed, (uint64_t)i, 0);
        caps[i] = sc[i].caption;
    }
    dt_path(t->tok_dir, sizeof t->tok_dir, "%s/tokenizer", c->output.dir);
    t->vocab = pretrain_write_tokenizer(t->tok_dir, caps, n);
    tokenizer_load(&t->tok, t->tok_dir);
    free(sc);
    free(caps);
}

int pretrain_run(const PretrainConfig *c, int resume, int stop_after) {
    setup_threads(c->train.threads);
    Pretrainer *t = xcalloc(1, sizeof *t);
    t->c = c;
    dt_mkdirs(c->output.dir);
    char path[PRETRAIN_PATH_MAX + 32];
    char *ini = pretrain_config_to_ini(c);
    dt_write_file_atomic(dt_path(path, sizeof path, "%s/config.ini", c->output.dir), ini, strlen(ini));
    free(ini);
    build_tokenizer(t);
    pretrain_models_init(t);
    if (!(resume && pretrain_checkpoint_load(t))) {
        t->stage = 1, t->iteration = 0, t->adam_step = 0;
        pretrain_groups_set(t, 1);
    }
    printf("drtune pretrain: unet %lld, vae %lld, text encoder %lld parameters; vocabulary %d tokens\n",
           (long long)arena_numel(&t->unet_p), (long long)arena_numel(&t->vae_p), (long long)arena_numel(&t->te.params),
           t->vocab);
    fflush(stdout);
    int budget = stop_after, stop = 0;
    double t0 = dt_now();
    if (t->stage == 1) {
        stop = run_stage1(t, &budget);
        if (!stop) {
            t->stage = 2, t->iteration = 0, t->adam_step = 0;
            pretrain_groups_set(t, 2);
        }
    }
    if (!stop) stop = run_stage2(t, &budget);
    if (!stop) {
        pretrain_export(t, c->model.out);
        printf("drtune pretrain: exported %s (%.1f min this run)\n", c->model.out, (dt_now() - t0) / 60.0);
    } else {
        printf("drtune pretrain: stopped after %d iterations at stage %d iteration %d (continue with --resume)\n",
               stop_after, t->stage, t->iteration);
    }
    tokenizer_free(&t->tok);
    pretrain_models_free(t);
    free(t);
    return 0;
}
