// setup.c: the shared run setup of setup.h: rewards, the trainable set, the method's choices, latent sizes and
// LoRA files of unknown rank and targets.
#include "setup.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/device.h"
#include "../dist/dist.h"
#include "../io/safetensors.h"
#include "../ops/ops.h"
#include "../rewards/clip_reward.h"

RewardModels setup_reward_models(const Config *c) {
    return (RewardModels){.hps = c->reward.hps_path,
                          .pickscore = c->reward.pickscore_path,
                          .clipscore = c->reward.clipscore_path,
                          .aesthetic = c->reward.aesthetic_path,
                          .aesthetic_clip = c->reward.aesthetic_clip_path,
                          .kernel = c->reward.resize,
                          .antialias = c->reward.antialias,
                          .checkpoint = c->reward.checkpoint};
}

void setup_reward_path(RewardModels *m, const char *opt, const char *spec) {
    const char *eq = strchr(spec, '=');
    USER_CHECK(eq && eq[1], "%s wants NAME=PATH, got '%s'", opt, spec);
    int k = (int)(eq - spec);
    const char **slot = k == 3 && !strncmp(spec, "hps", 3)                ? &m->hps
                        : k == 9 && !strncmp(spec, "pickscore", 9)        ? &m->pickscore
                        : k == 9 && !strncmp(spec, "clipscore", 9)        ? &m->clipscore
                        : k == 9 && !strncmp(spec, "aesthetic", 9)        ? &m->aesthetic
                        : k == 14 && !strncmp(spec, "aesthetic_clip", 14) ? &m->aesthetic_clip
                                                                          : NULL;
    USER_CHECK(slot, "%s: '%.*s' is not hps, pickscore, clipscore, aesthetic or aesthetic_clip", opt, k, spec);
    *slot = eq + 1;
}

void setup_rewards(SetupRewards *r, int n, const char (*names)[32], const double *weights, const double *colour,
                   const RewardModels *models) {
    CHECK(n >= 1 && n <= CONFIG_MAX_REWARDS, "", "%d rewards", n);
    memset(r, 0, sizeof *r);
    float col[3] = {(float)colour[0], (float)colour[1], (float)colour[2]};
    for (int i = 0; i < n; i++) {
        if (clip_reward_known(names[i])) {
            static const RewardModels none = {.kernel = RESIZE_BICUBIC, .antialias = 1};
            const RewardModels *m = models ? models : &none;
            const char *path = !strcmp(names[i], "hps")         ? m->hps
                               : !strcmp(names[i], "pickscore") ? m->pickscore
                               : !strcmp(names[i], "clipscore") ? m->clipscore
                                                                : m->aesthetic_clip;
            ClipRewardOptions o = {.path = path, .head_path = m->aesthetic, .kernel = m->kernel,
                                   .antialias = m->antialias, .checkpoint = m->checkpoint};
            r->learned[i] = xcalloc(1, sizeof *r->learned[i]);
            clip_reward_load(r->learned[i], names[i], &o);
            clip_reward_bind(&r->items[i], r->learned[i], (float)weights[i]);
            continue;
        }
        int np = !strcmp(names[i], "colour") ? 3 : 0;
        reward_init(&r->items[i], names[i], (float)weights[i], col, np);
    }
    r->set = (RewardSet){.items = r->items, .n = n};
}

void setup_rewards_free(SetupRewards *r) {
    for (int i = 0; i < CONFIG_MAX_REWARDS; i++)
        if (r->learned[i]) {
            clip_reward_free(r->learned[i]);
            free(r->learned[i]);
        }
    memset(r, 0, sizeof *r);
}

void setup_trainable(TrainSet *t, Model *m, const Config *c, int ranks) {
    memset(t, 0, sizeof *t);
    t->kind = c->train.trainable;
    Arena plan;
    arena_init(&plan, "grads", DEVICE_CPU);
    unet_plan_params(&plan, &t->slots, &m->unet.cfg); // slots without data: no base gradients unless allocated
    if (t->kind == TRAINABLE_FULL) {
        if (ranks > 0) {
            DistShard s;
            dist_shard_init(&s, (int64_t)(m->unet_params.size / sizeof(float)), ranks, 0);
            int64_t planned = (int64_t)(plan.size / sizeof(float));
            if (s.padded > planned)
                arena_add(&plan, NULL, "shard-padding", DTYPE_F32, 1, (int64_t[]){s.padded - planned});
        }
        t->grad_mem = plan;
        arena_alloc(&t->grad_mem);
        t->params = &m->unet_params;
        t->grads = &t->grad_mem;
    } else {
        arena_free(&plan); // the slots keep their shapes and NULL data
        const char *targets[CONFIG_MAX_TARGETS];
        for (int i = 0; i < c->train.n_lora_targets; i++) targets[i] = c->train.lora_targets[i];
        lora_attach(&t->lora, &m->unet, &m->unet_params, &t->slots, c->train.lora_rank, (float)c->train.lora_alpha,
                    targets, c->train.n_lora_targets, (uint64_t)c->train.seed, "train.lora_targets");
        t->params = &t->lora.params;
        t->grads = &t->lora.grads;
    }
    t->p = t->params->base;
    t->g = t->grads->base;
    t->n = (int64_t)(t->params->size / sizeof(float));
}

void setup_trainable_free(TrainSet *t) {
    if (t->kind == TRAINABLE_FULL) arena_free(&t->grad_mem);
    else lora_free(&t->lora);
    unet_free(&t->slots); // the planned blocks of the gradient slots
    memset(t, 0, sizeof *t);
}

int setup_threads(int requested) {
    if (requested > 0) {
        ops_set_threads(requested);
    } else if (dist_local_size() > 1 && !getenv("OMP_NUM_THREADS")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        ops_set_threads(cores / dist_local_size() > 1 ? (int)(cores / dist_local_size()) : 1);
    }
    return ops_get_threads();
}

Device setup_device(TrainDevice choice, const RewardSet *rewards, const char *key) {
    CHECK(!rewards || rewardset_on_gpu(rewards), "", "a reward without a GPU path"); // every reward has one
    Device d = DEVICE_CPU;
    if (choice == TRAIN_DEVICE_CUDA) {
        USER_CHECK(device_cuda_available(), "%s = cuda, but no GPU is visible (drtune info --device)", key);
        d = DEVICE_CUDA;
    } else if (choice == TRAIN_DEVICE_AUTO && device_cuda_available()) {
        d = DEVICE_CUDA;
    }
    device_select(d, dist_local_rank());
    return d;
}

DType setup_precision(TrainPrecision p, Device d, const char *key, const char *device_key) {
    if (p == PRECISION_FP32) return DTYPE_F32;
    USER_CHECK(d != DEVICE_CPU, "%s = bf16 runs on the GPU, but this run is on the CPU (%s); the CPU path computes in "
               "fp32", key, device_key);
    return DTYPE_BF16;
}

int setup_channels_last(int on, Device d, const char *key, const char *device_key) {
    USER_CHECK(!on || d != DEVICE_CPU, "%s = true is for the GPU, but this run is on the CPU (%s)", key, device_key);
    return on != 0;
}

TrainPrecision setup_precision_parse(const char *name, const char *option) {
    if (!strcmp(name, "bf16")) return PRECISION_BF16;
    USER_CHECK(!strcmp(name, "fp32"), "%s: '%s' is not fp32 or bf16", option, name);
    return PRECISION_FP32;
}

TrainDevice setup_device_parse(const char *name, const char *option) {
    if (!strcmp(name, "cpu")) return TRAIN_DEVICE_CPU;
    if (!strcmp(name, "cuda")) return TRAIN_DEVICE_CUDA;
    USER_CHECK(!strcmp(name, "auto"), "%s: '%s' is not auto, cpu or cuda", option, name);
    return TRAIN_DEVICE_AUTO;
}

void setup_model_to_device(Model *m, Lora *l, Device d) {
    if (d == DEVICE_CPU) return;
    model_to_device(m, d);
    if (l) {
        arena_to_device(&l->params, d);
        arena_to_device(&l->grads, d);
    }
}

MethodConfig setup_method(const Config *c) {
    return (MethodConfig){.method = c->method.name, .K = c->method.k, .m = c->method.m,
                          .lv_copies = c->method.lv_copies, .phase = c->method.phase, .t_min = c->method.t_min,
                          .k = c->method.k_fixed, .draw_in_executed = c->method.draw_in_executed};
}

void setup_latent_size(const Model *m, int H, int W, const char *what, int *h, int *w) {
    int f = 1 << (m->vae.cfg.levels - 1);
    USER_CHECK(H > 0 && W > 0 && H % f == 0 && W % f == 0, "%s must be multiples of %d for this VAE (got %d x %d)",
               what, f, H, W);
    *h = H / f;
    *w = W / f;
}

// "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0.lora_B.weight" -> "attn2.to_out.0": the part
// of the module path below its transformer block, which names the same projection in every block.
static int module_target(const char *name, char *out, size_t n) {
    const char *s = strstr(name, ".transformer_blocks.");
    const char *end = strstr(name, ".lora_");
    if (!s || !end || end < s) return 0;
    s += strlen(".transformer_blocks.");
    while (*s >= '0' && *s <= '9') s++;
    if (*s != '.' || end <= s + 1) return 0;
    snprintf(out, n, "%.*s", (int)(end - s - 1), s + 1);
    return 1;
}

void setup_lora_from_file(Lora *l, UNet *no_grads, Model *m, const char *path) {
    Arena plan;
    arena_init(&plan, "plan", DEVICE_CPU);
    unet_plan_params(&plan, no_grads, &m->unet.cfg);
    arena_free(&plan);
    SafeTensors st;
    safetensors_open(&st, path);
    enum { MAX_TARGETS = 64 };
    char targets[MAX_TARGETS][64];
    const char *tp[MAX_TARGETS];
    int rank = 0, nt = 0;
    for (int i = 0; i < st.n; i++) {
        const StTensor *t = &st.tensors[i];
        if (!strstr(t->name, ".lora_A.") && !strstr(t->name, ".lora_B.")) continue;
        char target[64];
        USER_CHECK(module_target(t->name, target, sizeof target),
                   "'%s': tensor '%s' is not an adapter of a UNet attention projection", path, t->name);
        if (strstr(t->name, ".lora_A.")) {
            USER_CHECK(t->ndim == 2 && t->shape[0] >= 1, "'%s': tensor '%s' is not a [rank, in] matrix", path,
                       t->name);
            USER_CHECK(!rank || rank == (int)t->shape[0], "'%s': adapters of different ranks (%d and %lld)", path,
                       rank, (long long)t->shape[0]);
            rank = (int)t->shape[0];
        }
        int known = 0;
        for (int k = 0; k < nt && !known; k++) known = !strcmp(targets[k], target);
        if (known) continue;
        USER_CHECK(nt < MAX_TARGETS, "'%s': adapters on more than %d kinds of projection", path, MAX_TARGETS);
        snprintf(targets[nt], sizeof targets[nt], "%s", target);
        tp[nt] = targets[nt];
        nt++;
    }
    safetensors_close(&st);
    USER_CHECK(rank > 0, "'%s': no LoRA adapters in the file (no '*.lora_A.weight' tensor)", path);
    char source[2100];
    snprintf(source, sizeof source, "'%s', an adapter's module", path);
    lora_attach(l, &m->unet, &m->unet_params, no_grads, rank, (float)rank, tp, nt, 0, source);
    lora_load(l, path);
}
