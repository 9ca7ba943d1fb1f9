// model.c: loading a diffusers pipeline for training and sampling, prompt conditioning, and per-sample noise.
#include "model.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../core/rng.h"
#include "../ops/ops.h"

void model_load(Model *m, const char *dir, int steps) {
    memset(m, 0, sizeof *m);
    struct stat st;
    USER_CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode), "model folder '%s' does not exist", dir);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    char path[2048];
    pipeline_load_text(&m->text, dir);
    snprintf(path, sizeof path, "%s/unet", dir);
    pipeline_load_unet(&m->unet, &m->unet_params, path);
    snprintf(path, sizeof path, "%s/vae", dir);
    pipeline_load_vae(&m->vae, &m->vae_params, path, VAE_DECODER);
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    DdimConfig dc = ddim_load_config(path);
    ddim_init(&m->sched, &dc);
    ddim_set_timesteps(&m->sched, steps);
}

void model_to_device(Model *m, Device d) {
    arena_to_device(&m->unet_params, d);
    arena_to_device(&m->vae_params, d);
}

void model_set_precision(Model *m, Lora *l, int unet_trained, DType dt, int channels_last) {
    CHECK(!m->has_compute, "", "compute copies made twice");
    if (dt == DTYPE_F32 && !channels_last) return; // the fp32 masters compute
    Device d = m->unet_params.device;
    CHECK(d != DEVICE_CPU && m->vae_params.device == d, "move the model to the GPU first",
          "%s compute copies of weights on the %s", dtype_name(dt), device_name(d));
    arena_init(&m->unet_c_params, "unet-compute", d);
    arena_set_float_dtype(&m->unet_c_params, dt);
    arena_set_channels_last(&m->unet_c_params, channels_last);
    unet_plan_params(&m->unet_c_params, &m->unet_c, &m->unet.cfg);
    arena_alloc(&m->unet_c_params);
    arena_cast(&m->unet_c_params, &m->unet_params);
    arena_init(&m->vae_c_params, "vae-compute", d);
    arena_set_float_dtype(&m->vae_c_params, dt);
    arena_set_channels_last(&m->vae_c_params, channels_last);
    vae_plan_params(&m->vae_c_params, &m->vae_c, &m->vae.cfg, m->vae.parts);
    arena_alloc(&m->vae_c_params);
    arena_cast(&m->vae_c_params, &m->vae_params);
    arena_to_device(&m->vae_params, DEVICE_CPU); // frozen: only the copy computes
    if (l) lora_bind_compute(l, &m->unet, &m->unet_c, dt, d);
    if (!unet_trained) arena_to_device(&m->unet_params, DEVICE_CPU); // frozen: read again only by a final merge
    m->unet_trained = unet_trained;
    m->has_compute = 1;
    model_sync_compute(m, l);
}

void model_sync_compute(Model *m, Lora *l) {
    if (!m->has_compute) return;
    if (l && l->n > 0) arena_cast(&l->compute, &l->params);
    if (m->unet_trained) arena_cast(&m->unet_c_params, &m->unet_params);
}

UNet *model_compute_unet(Model *m) { return m->has_compute ? &m->unet_c : &m->unet; }
const VAE *model_compute_vae(const Model *m) { return m->has_compute ? &m->vae_c : &m->vae; }

void model_free(Model *m) {
    pipeline_free(&m->text);
    unet_free(&m->unet);
    arena_free(&m->unet_params);
    arena_free(&m->vae_params);
    if (m->has_compute) {
        unet_free(&m->unet_c);
        arena_free(&m->unet_c_params);
        arena_free(&m->vae_c_params);
    }
    ddim_free(&m->sched);
}

void model_condition(const Model *m, const char *const *prompts, const char *negative, int B, int cfg, int H, int W,
                     PromptEmbeds *emb, UNetCond *cond) {
    const char **neg = NULL;
    if (cfg && negative && negative[0]) {
        neg = xmalloc(sizeof(char *) * (size_t)B);
        for (int b = 0; b < B; b++) neg[b] = negative;
    }
    SdxlSize size = {H, W, 0, 0, H, W};
    pipeline_encode_prompt(&m->text, emb, prompts, neg, B, cfg, &size);
    free(neg);
    cond->context = &emb->hidden;
    cond->text_embeds = emb->text_embeds.data ? &emb->text_embeds : NULL;
    cond->time_ids = emb->time_ids.data ? &emb->time_ids : NULL;
}

void model_sample_seeded(const Model *m, Engine *e, const char *prompt, const char *negative, int H, int W,
                         uint64_t seed) {
    int N = e->sched->num_inference_steps;
    int64_t lat = (int64_t)e->C * e->h * e->w, id = 0;
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)lat), 1, e->C, e->h, e->w);
    Tensor x0 = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)lat), 1, e->C, e->h, e->w);
    Tensor z = tensor_make(xmalloc(sizeof(float) * (size_t)(lat * N)), DTYPE_F32, DEVICE_CPU, 5,
                           (int64_t[]){N, 1, e->C, e->h, e->w});
    PromptEmbeds emb;
    UNetCond cond;
    model_condition(m, &prompt, negative, 1, e->guidance > 1.0f, H, W, &emb, &cond);
    noise_latents(&xT, seed, &id);
    if (e->eta > 0) noise_steps(&z, seed, &id);
    engine_sample(e, &cond, &xT, e->eta > 0 ? &z : NULL, &x0);
    engine_score(e, &x0, &prompt);
    prompt_embeds_free(&emb);
    free(xT.data);
    free(x0.data);
    free(z.data);
}

void noise_latents(Tensor *xT, uint64_t seed, const int64_t *ids) {
    int64_t B = xT->shape[0], n = tensor_numel(xT) / B;
    for (int64_t b = 0; b < B; b++)
        rng_normal_fill((float *)xT->data + b * n, n, seed, RNG_STREAM(RNG_PURPOSE_LATENT, ids[b], 0), 0);
}

void noise_steps(Tensor *z, uint64_t seed, const int64_t *ids) {
    int64_t N = z->shape[0], B = z->shape[1], n = tensor_numel(z) / (N * B);
    for (int64_t i = 0; i < N; i++)
        for (int64_t b = 0; b < B; b++)
            rng_normal_fill((float *)z->data + (i * B + b) * n, n, seed,
                            RNG_STREAM(RNG_PURPOSE_STEP_NOISE, ids[b], N - i), 0);
}

void noise_copies(Tensor *nz, uint64_t seed, const int64_t *ids, int64_t it) {
    int64_t J = nz->shape[0], B = nz->shape[1], n = tensor_numel(nz) / (J * B);
    for (int64_t j = 0; j < J; j++)
        for (int64_t b = 0; b < B; b++) // step ids above any sampling step keep these streams apart from z
            rng_normal_fill((float *)nz->data + (j * B + b) * n, n, seed,
                            RNG_STREAM(RNG_PURPOSE_STEP_NOISE, ids[b], 100000 + it * 64 + j), 0);
}
