// pretrain_io.c: what `drtune pretrain` keeps on disk and how its models come to be: deterministic initial weights,
// checkpoints (a folder of safetensors and state.json, renamed into place whole) that a resumed run continues from
// bit for bit, and the exported diffusers folder with fp16 weights.
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/rng.h"
#include "../io/json.h"
#include "../io/safetensors.h"
#include "../models/weights.h"
#include "pretrain_internal.h"

// ---------------------------------------------------------------------------------------------------------------
// models

// PyTorch's default initialisation where it matters for training from scratch: matrices and kernels U(-b, b) with
// b = 1 / sqrt(fan_in), norm weights 1, biases 0; CLIP's token / position embeddings N(0, 0.02) / N(0, 0.01).
void pretrain_init_params(Arena *a, uint64_t seed, int component) {
    for (int i = 0; i < a->n; i++) {
        const ArenaEntry *e = &a->entries[i];
        float *v = tensor_f32(&e->desc);
        int64_t n = tensor_numel(&e->desc);
        uint64_t stream = RNG_STREAM(RNG_PURPOSE_INIT, component, i);
        if (strstr(e->name, "token_embedding") || strstr(e->name, "position_embedding")) {
            float sd = strstr(e->name, "token_embedding") ? 0.02f : 0.01f;
            rng_normal_fill(v, n, seed, stream, 0);
            for (int64_t k = 0; k < n; k++) v[k] *= sd;
        } else if (e->desc.ndim >= 2) {
            float b = 1.0f / sqrtf((float)(n / e->desc.shape[0]));
            rng_uniform_fill(v, n, seed, stream, 0);
            for (int64_t k = 0; k < n; k++) v[k] = b * (2.0f * v[k] - 1.0f);
        } else {
            size_t len = strlen(e->name);
            float one = len > 7 && !strcmp(e->name + len - 7, ".weight") ? 1.0f : 0.0f;
            for (int64_t k = 0; k < n; k++) v[k] = one;
        }
    }
}

void pretrain_models_init(Pretrainer *t) {
    const PretrainConfig *c = t->c;
    char path[PRETRAIN_PATH_MAX + 64];
    UNetConfig uc;
    unet_load_config(&uc, dt_path(path, sizeof path, "%s/unet", c->model.config));
    arena_init(&t->unet_p, "unet", DEVICE_CPU);
    unet_plan_params(&t->unet_p, &t->unet, &uc);
    arena_alloc(&t->unet_p);
    arena_init(&t->unet_ga, "unet_grads", DEVICE_CPU);
    unet_plan_params(&t->unet_ga, &t->unet_g, &uc);
    arena_alloc(&t->unet_ga);
    VAEConfig vc;
    vae_load_config(&vc, dt_path(path, sizeof path, "%s/vae", c->model.config));
    vc.scaling_factor = 1.0f;
    arena_init(&t->vae_p, "vae", DEVICE_CPU);
    vae_plan_params(&t->vae_p, &t->vae, &vc, VAE_DECODER | VAE_ENCODER);
    arena_alloc(&t->vae_p);
    arena_init(&t->vae_ga, "vae_grads", DEVICE_CPU);
    vae_plan_params(&t->vae_ga, &t->vae_g, &vc, VAE_DECODER | VAE_ENCODER);
    arena_alloc(&t->vae_ga);
    ClipTextConfig tc;
    clip_text_config_load(&tc, dt_path(path, sizeof path, "%s/text_encoder/config.json", c->model.config));
    USER_CHECK(!tc.with_projection, "'%s': the small model's text encoder is a CLIPTextModel", path);
    USER_CHECK(tc.hidden == uc.cross_dim, "'%s': hidden_size %d differs from the UNet's cross_attention_dim %d", path,
               tc.hidden, uc.cross_dim);
    tc.vocab = t->vocab;
    clip_text_plan(&t->te, &tc);
    arena_alloc(&t->te.params);
    clip_text_plan(&t->te_g, &tc);
    arena_alloc(&t->te_g.params);
    DdimConfig dc = ddim_load_config(dt_path(path, sizeof path, "%s/scheduler/scheduler_config.json", c->model.config));
    ddim_init(&t->sched, &dc);
    t->scaling_factor = 1.0f;
    pretrain_init_params(&t->unet_p, (uint64_t)c->train.seed, 0);
    pretrain_init_params(&t->vae_p, (uint64_t)c->train.seed, 1);
    pretrain_init_params(&t->te.params, (uint64_t)c->train.seed, 2);
}

void pretrain_models_free(Pretrainer *t) {
    for (int i = 0; i < t->n_groups; i++) free(t->groups[i].m), free(t->groups[i].v);
    unet_free(&t->unet);
    unet_free(&t->unet_g);
    arena_free(&t->unet_p);
    arena_free(&t->unet_ga);
    arena_free(&t->vae_p);
    arena_free(&t->vae_ga);
    clip_text_free(&t->te);
    clip_text_free(&t->te_g);
    ddim_free(&t->sched);
}

void param_group_init(ParamGroup *g, Arena *p, Arena *grads) {
    g->p = p, g->g = grads;
    g->n = (int64_t)(p->size / sizeof(float));
    g->m = xcalloc((size_t)g->n, sizeof(float));
    g->v = xcalloc((size_t)g->n, sizeof(float));
}

void pretrain_groups_set(Pretrainer *t, int stage) {
    for (int i = 0; i < t->n_groups; i++) free(t->groups[i].m), free(t->groups[i].v);
    memset(t->groups, 0, sizeof t->groups);
    if (stage == 1) {
        param_group_init(&t->groups[0], &t->vae_p, &t->vae_ga);
        t->n_groups = 1;
    } else {
        param_group_init(&t->groups[0], &t->unet_p, &t->unet_ga);
        param_group_init(&t->groups[1], &t->te.params, &t->te_g.params);
        t->n_groups = 2;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// checkpoints

static const char *const PARAM_FILES[3] = {"unet.safetensors", "vae.safetensors", "text_encoder.safetensors"};
static Arena *param_arena(Pretrainer *t, int i) { return i == 0 ? &t->unet_p : i == 1 ? &t->vae_p : &t->te.params; }

static void remove_folder(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char path[PRETRAIN_PATH_MAX + 320];
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

// Checkpoint folder names of dir, sorted oldest first (the names sort by stage, then iteration).
static int list_checkpoints(const char *dir, char ***names) {
    *names = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        int stage, it;
        char tail;
        if (sscanf(e->d_name, "ckpt-s%d-%d%c", &stage, &it, &tail) != 2) continue;
        *names = xrealloc(*names, sizeof(char *) * (size_t)(n + 1));
        (*names)[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    for (int i = 1; i < n; i++) // insertion sort: a handful of entries
        for (int j = i; j > 0 && strcmp((*names)[j - 1], (*names)[j]) > 0; j--) {
            char *s = (*names)[j];
            (*names)[j] = (*names)[j - 1], (*names)[j - 1] = s;
        }
    return n;
}

void pretrain_checkpoint_save(Pretrainer *t) {
    const PretrainConfig *c = t->c;
    char dir[PRETRAIN_PATH_MAX + 64], tmp[PRETRAIN_PATH_MAX + 80], path[PRETRAIN_PATH_MAX + 128];
    dt_path(dir, sizeof dir, "%s/ckpt-s%d-%08d", c->output.dir, t->stage, t->iteration);
    dt_path(tmp, sizeof tmp, "%s.tmp", dir);
    remove_folder(tmp);
    dt_mkdirs(tmp);
    for (int i = 0; i < 3; i++) weights_save(param_arena(t, i), dt_path(path, sizeof path, "%s/%s", tmp, PARAM_FILES[i]));
    const char *names[4] = {"m.0", "v.0", "m.1", "v.1"};
    Tensor mom[4];
    for (int i = 0; i < t->n_groups; i++) {
        mom[2 * i] = tensor_f32_1d(t->groups[i].m, t->groups[i].n);
        mom[2 * i + 1] = tensor_f32_1d(t->groups[i].v, t->groups[i].n);
    }
    safetensors_write(dt_path(path, sizeof path, "%s/optimizer.safetensors", tmp), 2 * t->n_groups, names, mom, NULL);
    char state[512];
    int len = snprintf(state, sizeof state,
                       "{\n  \"stage\": %d,\n  \"iteration\": %d,\n  \"adam_step\": %d,\n  \"vocab_size\": %d,\n"
                       "  \"scaling_factor\": %.9g,\n  \"loss\": %.17g\n}\n",
                       t->stage, t->iteration, t->adam_step, t->vocab, (double)t->scaling_factor, t->last_loss);
    dt_write_file_atomic(dt_path(path, sizeof path, "%s/state.json", tmp), state, (size_t)len);
    remove_folder(dir);
    USER_CHECK(rename(tmp, dir) == 0, "cannot rename '%s' to '%s' (%s)", tmp, dir, strerror(errno));
    char **names_on_disk;
    int n = list_checkpoints(c->output.dir, &names_on_disk);
    for (int i = 0; i < n; i++) {
        if (c->output.keep > 0 && i < n - c->output.keep)
            remove_folder(dt_path(path, sizeof path, "%s/%s", c->output.dir, names_on_disk[i]));
        free(names_on_disk[i]);
    }
    free(names_on_disk);
}

int pretrain_checkpoint_load(Pretrainer *t) {
    const PretrainConfig *c = t->c;
    char **names;
    int n = list_checkpoints(c->output.dir, &names);
    if (!n) return 0;
    char dir[PRETRAIN_PATH_MAX + 320], path[PRETRAIN_PATH_MAX + 400];
    dt_path(dir, sizeof dir, "%s/%s", c->output.dir, names[n - 1]);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    JsonDoc d;
    json_load(&d, dt_path(path, sizeof path, "%s/state.json", dir));
    int stage = json_get_int(&d, "stage", 0), vocab = json_get_int(&d, "vocab_size", 0);
    t->iteration = json_get_int(&d, "iteration", -1);
    t->adam_step = json_get_int(&d, "adam_step", -1);
    t->scaling_factor = (float)json_get_number(&d, "scaling_factor", 0.0);
    t->last_loss = json_get_number(&d, "loss", 0.0);
    json_free(&d);
    USER_CHECK(stage == 1 || stage == 2, "'%s/state.json': stage %d (1 or 2)", dir, stage);
    USER_CHECK(vocab == t->vocab, "'%s': vocabulary of %d tokens, this configuration's tokenizer has %d", dir, vocab,
               t->vocab);
    USER_CHECK(t->iteration >= 0 && t->adam_step >= 0 && t->scaling_factor > 0, "'%s/state.json': bad state", dir);
    for (int i = 0; i < 3; i++)
        weights_load(param_arena(t, i), dt_path(path, sizeof path, "%s/%s", dir, PARAM_FILES[i]), NULL);
    t->stage = stage;
    pretrain_groups_set(t, stage);
    SafeTensors st;
    safetensors_open(&st, dt_path(path, sizeof path, "%s/optimizer.safetensors", dir));
    for (int i = 0; i < t->n_groups; i++) {
        char name[8];
        Tensor m = tensor_f32_1d(t->groups[i].m, t->groups[i].n), v = tensor_f32_1d(t->groups[i].v, t->groups[i].n);
        snprintf(name, sizeof name, "m.%d", i);
        safetensors_read_into(&st, name, &m);
        snprintf(name, sizeof name, "v.%d", i);
        safetensors_read_into(&st, name, &v);
    }
    safetensors_close(&st);
    t->vae.cfg.scaling_factor = t->scaling_factor;
    printf("drtune pretrain: resuming from %s (stage %d, iteration %d)\n", dir, stage, t->iteration);
    return 1;
}

// ---------------------------------------------------------------------------------------------------------------
// export

static void save_f16(const Arena *a, const char *path) { weights_save_f16(&a, 1, path); }

// src JSON with the number after "key": replaced by value (in place, so the rest of the file keeps its spelling:
// transformers rejects 1 where its config says float), written to dst.
static void patch_json(const char *src, const char *dst, const char *key, double value) {
    size_t len;
    char *text = dt_read_file(src, &len), pattern[64], num[32];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    char *k = strstr(text, pattern);
    USER_CHECK(k, "'%s' has no key \"%s\"", src, key);
    char *v = k + strlen(pattern);
    while (*v == ' ' || *v == ':' || *v == '\t') v++;
    char *e = v;
    while (*e && strchr("+-.0123456789eE", *e)) e++;
    USER_CHECK(e > v, "'%s': \"%s\" is not a number", src, key);
    snprintf(num, sizeof num, "%.9g", value);
    size_t head = (size_t)(v - text), n = strlen(num), tail = len - (size_t)(e - text);
    char *out = xmalloc(head + n + tail + 1);
    memcpy(out, text, head);
    memcpy(out + head, num, n);
    memcpy(out + head + n, e, tail + 1);
    dt_write_file_atomic(dst, out, head + n + tail);
    free(out);
    free(text);
}

void pretrain_export(const Pretrainer *t, const char *dir) {
    const char *cfg = t->c->model.config;
    char src[PRETRAIN_PATH_MAX + 128], dst[PRETRAIN_PATH_MAX + 128];
    static const char *const sub[] = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"};
    for (int i = 0; i < 5; i++) dt_mkdirs(dt_path(dst, sizeof dst, "%s/%s", dir, sub[i]));
    dt_copy_file(dt_path(src, sizeof src, "%s/model_index.json", cfg), dt_path(dst, sizeof dst, "%s/model_index.json", dir));
    dt_copy_file(dt_path(src, sizeof src, "%s/scheduler/scheduler_config.json", cfg),
              dt_path(dst, sizeof dst, "%s/scheduler/scheduler_config.json", dir));
    dt_copy_file(dt_path(src, sizeof src, "%s/unet/config.json", cfg), dt_path(dst, sizeof dst, "%s/unet/config.json", dir));
    patch_json(dt_path(src, sizeof src, "%s/vae/config.json", cfg), dt_path(dst, sizeof dst, "%s/vae/config.json", dir),
               "scaling_factor", (double)t->scaling_factor);
    patch_json(dt_path(src, sizeof src, "%s/text_encoder/config.json", cfg),
               dt_path(dst, sizeof dst, "%s/text_encoder/config.json", dir), "vocab_size", t->vocab);
    static const char *const tok_files[] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                            "special_tokens_map.json"};
    for (int i = 0; i < 4; i++)
        dt_copy_file(dt_path(src, sizeof src, "%s/%s", t->tok_dir, tok_files[i]),
                  dt_path(dst, sizeof dst, "%s/tokenizer/%s", dir, tok_files[i]));
    save_f16(&t->unet_p, dt_path(dst, sizeof dst, "%s/unet/diffusion_pytorch_model.safetensors", dir));
    save_f16(&t->vae_p, dt_path(dst, sizeof dst, "%s/vae/diffusion_pytorch_model.safetensors", dir));
    save_f16(&t->te.params, dt_path(dst, sizeof dst, "%s/text_encoder/model.safetensors", dir));
}
