// clip_reward.c: the CLIP-based rewards of clip_reward.h: loading, the text feature cache, the memory plan of one
// batch geometry, and the score with its image gradient through the head, the image tower and the preprocessing.
// Everything between the images and the scores runs through the op API (src/ops/ops.h), on the device of the
// images: on the GPU the weights move there and the batch is planned (with one dry run that sizes the ops' scratch)
// when the reward set's workspace is asked for, i.e. while the caller plans its memory.
#include "clip_reward.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../core/device.h"
#include "../io/safetensors.h"
#include "../models/weights.h"

const float CLIP_PIXEL_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float CLIP_PIXEL_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

static const struct {
    const char *name;
    ClipRewardKind kind;
    ClipFit fit;
} KINDS[] = {{"hps", CLIP_REWARD_HPS, CLIP_FIT_PAD},
             {"pickscore", CLIP_REWARD_PICKSCORE, CLIP_FIT_CROP_FLOOR},
             {"clipscore", CLIP_REWARD_CLIPSCORE, CLIP_FIT_CROP_FLOOR},
             {"aesthetic", CLIP_REWARD_AESTHETIC, CLIP_FIT_CROP_ROUND}};
#define N_KINDS (int)(sizeof KINDS / sizeof KINDS[0])

int clip_reward_known(const char *name) {
    for (int i = 0; i < N_KINDS; i++)
        if (!strcmp(name, KINDS[i].name)) return 1;
    return 0;
}

// The aesthetic MLP: layers.K.{weight,bias} for increasing K (the .pth's Sequential indices; Dropout layers have
// no tensors), chained from the image feature width to one output.
static void load_head(ClipReward *c, const char *path) {
    SafeTensors st;
    safetensors_open(&st, path);
    int ks[8], n = 0;
    char name[64];
    for (int k = 0; k < 64; k++) {
        snprintf(name, sizeof name, "layers.%d.weight", k);
        if (!safetensors_find(&st, name)) continue;
        USER_CHECK(n < 8, "'%s': more than 8 linear layers", path);
        ks[n++] = k;
    }
    USER_CHECK(n > 0, "'%s': no layers.K.weight tensors (is this the aesthetic predictor's MLP?)", path);
    arena_init(&c->head, "reward_head", DEVICE_CPU);
    int64_t in = c->model.vision.cfg.proj_dim;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "layers.%d.weight", ks[i]);
        const StTensor *w = safetensors_find(&st, name);
        USER_CHECK(w->ndim == 2 && w->shape[1] == in && w->shape[0] > 0 && w->shape[0] <= 65536,
                   "'%s': %s does not take %lld inputs", path, name, (long long)in);
        arena_add(&c->head, &c->head_w[i], name, DTYPE_F32, 2, w->shape);
        snprintf(name, sizeof name, "layers.%d.bias", ks[i]);
        arena_add(&c->head, &c->head_b[i], name, DTYPE_F32, 1, w->shape);
        in = w->shape[0];
    }
    USER_CHECK(in == 1, "'%s': the last layer has %lld outputs, not 1", path, (long long)in);
    safetensors_close(&st);
    arena_alloc(&c->head);
    weights_load(&c->head, path, NULL);
    c->n_head = n;
}

void clip_reward_load(ClipReward *c, const char *name, const ClipRewardOptions *o) {
    memset(c, 0, sizeof *c);
    int k = 0;
    while (k < N_KINDS && strcmp(name, KINDS[k].name)) k++;
    CHECK(k < N_KINDS, "", "clip_reward_load: '%s' is not a CLIP reward", name);
    c->kind = KINDS[k].kind, c->fit = KINDS[k].fit;
    const char *key = c->kind == CLIP_REWARD_AESTHETIC ? "aesthetic_clip" : name;
    USER_CHECK(o->path && *o->path, "reward '%s' needs its model: reward.%s_path (drtune eval: --reward-path %s=DIR; "
               "docs/REWARDS.md)", name, key, key);
    c->kernel = o->kernel < 0 ? RESIZE_BICUBIC : (ResizeKernel)o->kernel;
    c->antialias = o->antialias < 0 ? 1 : o->antialias;
    c->checkpoint = o->checkpoint;
    int want_text = c->kind != CLIP_REWARD_AESTHETIC;
    clip_model_load(&c->model, o->path, want_text);
    char v[4096], mrg[4096];
    struct stat sb;
    snprintf(v, sizeof v, "%s/vocab.json", o->path);
    snprintf(mrg, sizeof mrg, "%s/merges.txt", o->path);
    if (want_text && stat(v, &sb) == 0 && stat(mrg, &sb) == 0) c->tok_dir = xstrdup(o->path);
    c->scale = c->kind == CLIP_REWARD_PICKSCORE ? expf(c->model.logit_scale)
               : c->kind == CLIP_REWARD_CLIPSCORE ? 100.0f
                                                  : 1.0f;
    if (c->kind == CLIP_REWARD_AESTHETIC) {
        USER_CHECK(o->head_path && *o->head_path, "reward 'aesthetic' needs its MLP: reward.aesthetic_path (drtune "
                   "eval: --reward-path aesthetic=FILE; docs/REWARDS.md)");
        load_head(c, o->head_path);
    }
}

void clip_reward_free(ClipReward *c) {
    clip_model_free(&c->model);
    if (c->n_head) arena_free(&c->head);
    if (c->has_tok) tokenizer_free(&c->tok);
    free(c->tok_dir);
    for (int i = 0; i < c->n_cache; i++) free(c->cache_prompt[i]);
    free(c->cache_prompt);
    free(c->cache_feat);
    if (c->B) {
        clip_vision_run_free(&c->run);
        arena_free(&c->mem);
    }
    memset(c, 0, sizeof *c);
}

void clip_reward_bind(Reward *r, ClipReward *c, float weight) {
    memset(r, 0, sizeof *r);
    for (int i = 0; i < N_KINDS; i++)
        if (KINDS[i].kind == c->kind) snprintf(r->name, sizeof r->name, "%s", KINDS[i].name);
    r->weight = weight;
    r->ctx = c;
    r->score = clip_reward_score;
}

// ---------------------------------------------------------------------------------------------------------------
// text features

static void cache_put(ClipReward *c, const char *prompt, const float *feat) {
    int E = c->model.vision.cfg.proj_dim;
    if (c->n_cache == c->cap_cache) {
        c->cap_cache = c->cap_cache ? 2 * c->cap_cache : 16;
        c->cache_prompt = xrealloc(c->cache_prompt, sizeof(char *) * (size_t)c->cap_cache);
        c->cache_feat = xrealloc(c->cache_feat, sizeof(float) * (size_t)c->cap_cache * (size_t)E);
    }
    double s = 0.0;
    for (int e = 0; e < E; e++) s += (double)feat[e] * feat[e];
    float len = (float)sqrt(s);
    len = len > 1e-12f ? len : 1e-12f; // F.normalize
    float *dst = c->cache_feat + (size_t)c->n_cache * (size_t)E;
    for (int e = 0; e < E; e++) dst[e] = feat[e] / len;
    c->cache_prompt[c->n_cache++] = xstrdup(prompt);
}

void clip_reward_cache_ids(ClipReward *c, const char *prompt, const int32_t *ids, int T) {
    CHECK(c->model.has_text, "", "reward '%d' has no text tower", (int)c->kind);
    ClipTextRun run;
    clip_text_run_init(&run, &c->model.text, 1, T, NULL, 0, 1);
    clip_text_forward(&c->model.text, &run, ids);
    cache_put(c, prompt, tensor_f32(&run.projected));
    clip_text_run_free(&run);
}

const float *clip_reward_text_feature(ClipReward *c, const char *prompt) {
    int E = c->model.vision.cfg.proj_dim;
    for (int i = 0; i < c->n_cache; i++)
        if (!strcmp(c->cache_prompt[i], prompt)) return c->cache_feat + (size_t)i * (size_t)E;
    if (!c->has_tok) { // the released models use OpenAI's CLIP BPE vocabulary, kept in $DRTUNE_DATA/tokenizer/clip
        const char *data = getenv("DRTUNE_DATA");
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tokenizer/clip", data && *data ? data : "data");
        tokenizer_load(&c->tok, c->tok_dir ? c->tok_dir : dir);
        c->has_tok = 1;
    }
    int T = c->model.text.cfg.max_pos < TOKENIZER_MAX_LENGTH ? c->model.text.cfg.max_pos : TOKENIZER_MAX_LENGTH;
    int32_t ids[TOKENIZER_MAX_LENGTH];
    tokenizer_encode(&c->tok, prompt, ids, T);
    clip_reward_cache_ids(c, prompt, ids, T);
    return c->cache_feat + (size_t)(c->n_cache - 1) * (size_t)E;
}

// ---------------------------------------------------------------------------------------------------------------
// memory plan of one batch geometry

// Activations go where the tower's weights are; on the GPU also an fp32 copy of the images and their gradient.
static void plan(ClipReward *c, int B, int H, int W) {
    Device d = c->model.vision.params.device;
    if (c->B == B && c->H == H && c->W == W && c->mem.device == d) return;
    if (c->B) {
        clip_vision_run_free(&c->run);
        arena_free(&c->mem);
    }
    const ClipVisionConfig *vc = &c->model.vision.cfg;
    int S = vc->image_size, E = vc->proj_dim;
    if (c->fit == CLIP_FIT_PAD) { // open_clip ResizeMaxSize: longest side to S (Python round), zero padding
        double scale = (double)S / (H > W ? H : W);
        c->RH = (int)nearbyint(H * scale), c->RW = (int)nearbyint(W * scale);
        c->top = (S - c->RH) / 2, c->left = (S - c->RW) / 2;
    } else { // shortest side to S (torchvision / CLIPImageProcessor: the long side floored), centre crop
        int sh = H <= W, lo = sh ? H : W, hi = sh ? W : H, L = (int)((double)S * hi / lo);
        c->RH = sh ? S : L, c->RW = sh ? L : S;
        c->top = c->fit == CLIP_FIT_CROP_ROUND ? (int)nearbyint((c->RH - S) / 2.0) : (c->RH - S) / 2;
        c->left = c->fit == CLIP_FIT_CROP_ROUND ? (int)nearbyint((c->RW - S) / 2.0) : (c->RW - S) / 2;
    }
    USER_CHECK(c->RH >= 1 && c->RW >= 1, "reward: images of %d x %d are too narrow to resize to %d", H, W, S);
    c->B = B, c->H = H, c->W = W;
    clip_vision_run_init(&c->run, &c->model.vision, B, c->checkpoint);
    Arena *a = &c->mem;
    arena_init(a, "reward_pre", d);
#define ADD(slot, name, ...)                                                                                    \
    arena_add(a, slot, name, DTYPE_F32, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),               \
              (int64_t[]){__VA_ARGS__})
    ADD(&c->x01, "x01", B, 3, H, W);
    ADD(&c->resized, "resized", B, 3, c->RH, c->RW);
    ADD(&c->fitted, "fitted", B, 3, S, S);
    ADD(&c->fn, "features_n", B, E);
    ADD(&c->norm, "features_norm", B);
    ADD(&c->text, "text", B, E);
    ADD(&c->cosv, "score", B);
    ADD(&c->dscore, "d.score", B);
    ADD(&c->dfn, "d.features_n", B, E);
    ADD(&c->dfeat, "d.features", B, E);
    ADD(&c->dpix, "d.pixels", B, 3, S, S);
    ADD(&c->dfitted, "d.fitted", B, 3, S, S);
    ADD(&c->dresized, "d.resized", B, 3, c->RH, c->RW);
    ADD(&c->dx01, "d.x01", B, 3, H, W);
    if (d != DEVICE_CPU) {
        ADD(&c->img32, "images_f32", B, 3, H, W);
        ADD(&c->dimg, "d.images", B, 3, H, W);
    }
    char n[32];
    for (int k = 0; k < c->n_head; k++) {
        snprintf(n, sizeof n, "head%d", k);
        ADD(&c->hs[k + 1], n, B, c->head_w[k].shape[0]);
        snprintf(n, sizeof n, "d.head%d", k);
        if (k + 1 < c->n_head) ADD(&c->dhs[k + 1], n, B, c->head_w[k].shape[0]); // the last is dscore
    }
#undef ADD
    arena_alloc(a);
    c->hs[0] = c->fn, c->dhs[0] = c->dfn;
}

size_t clip_reward_activation_bytes(const ClipReward *c) {
    return c->B ? clip_vision_run_bytes(&c->run) + c->mem.size : 0;
}

// ---------------------------------------------------------------------------------------------------------------
// score and gradient

// The preprocessing, the tower and the head: returns the scores [B] (on c's device). dry: text features left as
// they are (the GPU planning run).
// The normalised image features c->fn [B, E] of the planned batch: preprocessing, the tower, L2 normalisation.
static void image_features(ClipReward *c, const Tensor *images) {
    int S = c->model.vision.cfg.image_size, pad = c->fit == CLIP_FIT_PAD;
    // preprocessing: [-1, 1] -> [0, 1], resize, pad or crop, mean/std
    clamp_affine_forward(&c->x01, images, 0.5f, 0.5f, 0.0f, 1.0f);
    resize_forward(&c->resized, &c->x01, c->kernel, c->antialias);
    if (pad) pad2d_forward(&c->fitted, &c->resized, c->top, S - c->RH - c->top, c->left, S - c->RW - c->left);
    else crop2d_forward(&c->fitted, &c->resized, c->top, c->left);
    normalize_forward(&c->run.pixels, &c->fitted, CLIP_PIXEL_MEAN, CLIP_PIXEL_STD);
    clip_vision_forward(&c->model.vision, &c->run);
    l2normalize_forward(&c->fn, &c->norm, &c->run.features);
}

static Tensor clip_forward(ClipReward *c, const char *name, const Tensor *images, const char *const *prompts,
                           int dry) {
    int B = c->B, E = c->model.vision.cfg.proj_dim;
    image_features(c, images);
    if (c->kind == CLIP_REWARD_AESTHETIC) {
        for (int k = 0; k < c->n_head; k++) linear_forward(&c->hs[k + 1], &c->hs[k], &c->head_w[k], &c->head_b[k]);
        return tensor_reshape(&c->hs[c->n_head], 1, (int64_t[]){B});
    }
    for (int b = 0; b < B && !dry; b++) {
        CHECK(prompts && prompts[b], "", "reward '%s' needs a prompt for every image", name);
        Tensor row = tensor_make((float *)clip_reward_text_feature(c, prompts[b]), DTYPE_F32, DEVICE_CPU, 1,
                                 (int64_t[]){E});
        Tensor dst = tensor_make((float *)c->text.data + (size_t)b * (size_t)E, DTYPE_F32, c->text.device, 1,
                                 (int64_t[]){E});
        tensor_copy(&dst, &row);
    }
    rowdot_forward(&c->cosv, &c->fn, &c->text);
    tensor_scale(&c->cosv, c->scale);
    return c->cosv;
}

// dx [B, 3, H, W] (written) = d(sum_b c->dscore[b] score[b]) / d images, from the last forward
static void clip_backward(ClipReward *c, const Tensor *images, Tensor *dx) {
    int B = c->B, S = c->model.vision.cfg.image_size, pad = c->fit == CLIP_FIT_PAD;
    if (c->kind == CLIP_REWARD_AESTHETIC) {
        Tensor top = tensor_reshape(&c->dscore, 2, (int64_t[]){B, 1});
        for (int k = c->n_head - 1; k >= 0; k--)
            linear_backward(&c->dhs[k], NULL, NULL, k == c->n_head - 1 ? &top : &c->dhs[k + 1], &c->hs[k],
                            &c->head_w[k]);
    } else {
        tensor_scale(&c->dscore, c->scale);
        rowdot_backward(&c->dfn, NULL, &c->dscore, &c->fn, &c->text);
    }
    l2normalize_backward(&c->dfeat, &c->dfn, &c->fn, &c->norm);
    clip_vision_backward(&c->model.vision, &c->run, &c->dfeat, &c->dpix, NULL);
    normalize_backward(&c->dfitted, &c->dpix, CLIP_PIXEL_STD);
    if (pad) pad2d_backward(&c->dresized, &c->dfitted, c->top, S - c->RH - c->top, c->left, S - c->RW - c->left);
    else crop2d_backward(&c->dresized, &c->dfitted, c->top, c->left);
    resize_backward(&c->dx01, &c->dresized, c->kernel, c->antialias);
    clamp_affine_backward(dx, &c->dx01, images, 0.5f, 0.5f, 0.0f, 1.0f);
}

static void images_check(const char *name, const Tensor *images) {
    char a[96];
    CHECK(images->ndim == 4 && images->shape[1] == 3, "", "reward '%s': want [B, 3, H, W] images, got %s", name,
          tensor_shape_str(images, a, sizeof a));
}

// whether c is planned on the device of images for their geometry
static int planned_for(const ClipReward *c, const Tensor *images) {
    return c->B == images->shape[0] && c->H == images->shape[2] && c->W == images->shape[3] &&
           c->mem.device == images->device;
}

void clip_reward_plan_device(ClipReward *c, const Tensor *images) {
    images_check("clip", images);
    Device d = images->device;
    CHECK(d != DEVICE_CPU, "", "clip_reward_plan_device: the images are on the CPU");
    arena_to_device(&c->model.vision.params, d); // nothing when they are there already
    if (c->n_head) arena_to_device(&c->head, d);
    if (planned_for(c, images)) return;
    plan(c, (int)images->shape[0], (int)images->shape[2], (int)images->shape[3]);
    // one forward and backward on zeros, so that the ops' scratch (cuDNN, cuBLASLt, attention, norms, resize)
    // reaches its need now; the reward set's own arrays go above it (rewardset_workspace_bytes)
    tensor_fill(&c->img32, 0.0f);
    tensor_fill(&c->text, 0.0f);
    tensor_fill(&c->dscore, 0.0f);
    clip_forward(c, "clip", &c->img32, NULL, 1);
    clip_backward(c, &c->img32, &c->dimg);
    c->ws_lead = ops_workspace_size(d, 0);
}

size_t clip_reward_device_bytes(const ClipReward *c, const Tensor *images) {
    CHECK(planned_for(c, images), "plan the reward set first (rewardset_plan)",
          "CLIP reward not planned for %lld images of %lld x %lld on the %s", (long long)images->shape[0],
          (long long)images->shape[2], (long long)images->shape[3], device_name(images->device));
    return c->ws_lead;
}

void clip_reward_score_cuda_add(const Reward *r, float weight, const Tensor *images, const char *const *prompts,
                                float *scores, Tensor *dimages, const float *dscore) {
    ClipReward *c = r->ctx;
    clip_reward_plan_device(c, images);
    const Tensor *x = images;
    if (images->dtype != DTYPE_F32) { // the reward computes in fp32
        tensor_cast(&c->img32, images);
        x = &c->img32;
    }
    Tensor out = clip_forward(c, r->name, x, prompts, 0), s = tensor_make(scores, DTYPE_F32, images->device, 1,
                                                                           (int64_t[]){c->B});
    tensor_copy(&s, &out);
    if (!dimages) return;
    CHECK(dimages->device == images->device && tensor_numel(dimages) == tensor_numel(images), "",
          "reward '%s': the image gradient does not match the images", r->name);
    if (dscore) { // weight dscore[b], as the CPU reward set forms it
        Tensor ds = tensor_make((float *)dscore, DTYPE_F32, images->device, 1, (int64_t[]){c->B});
        tensor_copy(&c->dscore, &ds);
        tensor_scale(&c->dscore, weight);
    } else {
        tensor_fill(&c->dscore, 0.0f);
    }
    clip_backward(c, x, &c->dimg);
    tensor_axpy(dimages, 1.0f, &c->dimg);
}

void clip_reward_image_features(ClipReward *c, const Tensor *images) {
    images_check("clip", images);
    CHECK(images->device == DEVICE_CPU, "", "clip_reward_image_features: the images are on the %s",
          device_name(images->device));
    plan(c, (int)images->shape[0], (int)images->shape[2], (int)images->shape[3]);
    image_features(c, images);
}

void clip_reward_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                       Tensor *dimages, const float *dscore) {
    ClipReward *c = r->ctx;
    images_check(r->name, images);
    if (images->device != DEVICE_CPU) { // device arrays; dimages written
        if (dimages) tensor_fill(dimages, 0.0f);
        clip_reward_score_cuda_add(r, 1.0f, images, prompts, scores, dimages, dscore);
        return;
    }
    int B = (int)images->shape[0], H = (int)images->shape[2], W = (int)images->shape[3];
    plan(c, B, H, W);
    Tensor out = clip_forward(c, r->name, images, prompts, 0);
    Tensor host = tensor_f32_1d(scores, B);
    tensor_copy(&host, &out);
    if (!dimages) return;
    // backward: d(sum_b dscore[b] score[b]) / d images
    Tensor ds = tensor_f32_1d((float *)dscore, B);
    tensor_copy(&c->dscore, &ds);
    clip_backward(c, images, dimages);
}
