// engine_setup.h: the small engine of the engine tests (engine_methods, engine_recompute): the SD 1.5-like fixture
// UNet with a full gradient struct, the fixture VAE decoder, DDIM with 6 steps, and the rewards of
// tools/reference/make_engine_fixture.py (1.0 symmetry + 0.5 colour towards (0.9, 0.1, 0.1)). The conditioning
// (ctx, cond) and the engine are the caller's.
#pragma once
#include <string.h>

#include "../src/models/pipeline.h"
#include "../src/train/engine.h"

typedef struct {
    UNet unet, grads;
    Arena params, gradmem, vae_params;
    VAE vae;
    Ddim sched;
    RewardSet rewards;
    Reward items[2];
    Tensor ctx;
    UNetCond cond;
    Engine e;
} EngineSetup;

static inline void engine_setup_models(EngineSetup *s) {
    memset(s, 0, sizeof *s);
    pipeline_load_unet(&s->unet, &s->params, "tests/fixtures/models/unet_sd15");
    arena_init(&s->gradmem, "grads", DEVICE_CPU);
    unet_plan_params(&s->gradmem, &s->grads, &s->unet.cfg);
    arena_alloc(&s->gradmem);
    pipeline_load_vae(&s->vae, &s->vae_params, "tests/fixtures/models/vae", VAE_DECODER);
    DdimConfig dc = ddim_default_config();
    ddim_init(&s->sched, &dc);
    ddim_set_timesteps(&s->sched, 6);
    reward_init(&s->items[0], "symmetry", 1.0f, NULL, 0);
    const float target[3] = {0.9f, 0.1f, 0.1f};
    reward_init(&s->items[1], "colour", 0.5f, target, 3);
    s->rewards = (RewardSet){.items = s->items, .n = 2};
}

// Frees what engine_setup_models made (not the caller's conditioning or engine).
static inline void engine_setup_free(EngineSetup *s) {
    unet_free(&s->unet), unet_free(&s->grads);
    arena_free(&s->params), arena_free(&s->gradmem), arena_free(&s->vae_params);
    ddim_free(&s->sched);
}
