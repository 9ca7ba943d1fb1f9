// pretrain_clip.c: `drtune pretrain-clip` (pretrain_clip.h). A small CLIP learns the procedural scenes' captions
// contrastively: freshly rendered training scenes each iteration, the symmetric InfoNCE loss of CLIP with a learned
// temperature, AdamW with the small model's schedule (pretrain.c's optimizer step). Both towers are drtune's own
// (clip_vision.c with its parameter gradients, clip_text_backward.c), the export is a transformers CLIPModel folder
// in fp16, and the retrieval evaluation reads it back through the clipscore reward.
#include "pretrain_clip.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../core/rng.h"
#include "../data/scenes.h"
#include "../models/clip_text_train.h"
#include "../models/clip_vision.h"
#include "../models/tokenizer.h"
#include "../models/weights.h"
#include "../ops/ops.h"
#include "../rewards/clip_reward.h"
#include "pretrain_internal.h"
#include "setup.h"

void clip_pretrain_defaults(ClipPretrainConfig *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->out, sizeof c->out, "data/models/clip");
    snprintf(c->tokenizer, sizeof c->tokenizer, "data/models/tiny/tokenizer");
    c->data_seed = 0;
    c->image_size = 32, c->patch = 8, c->width = 64, c->layers = 2, c->heads = 4;
    c->text_width = 64, c->text_layers = 2, c->context = 20;
    c->proj_dim = 64;
    c->iterations = 6000, c->batch = 128, c->warmup = 100, c->seed = 0, c->log_every = 50, c->threads = 0;
    c->lr = 2e-3, c->weight_decay = 0.0;
}

// ---------------------------------------------------------------------------------------------------------------
// the model and one training step

typedef struct {
    const ClipPretrainConfig *c;
    Tokenizer tok;
    ClipVision v, vg;
    ClipText te, tg;
    Arena ls, lsg;              // logit_scale (log of the inverse temperature) and its gradient, [] each
    Tensor ls_t, lsg_t;
    ParamGroup groups[3];
    int adam_step;
    // one batch
    ClipVisionRun vr;
    ClipTextTrainActs ta;
    Arena mem;
    Tensor img, x01;            // [B, 3, S, S] rendered in [-1, 1], then [0, 1]
    Tensor fi, ni, dfi, dfeat;  // image features normalised [B, E], norms [B], their gradients [B, E]
    Tensor pooled, tfeat, ft, nt, dft, dtf, dpooled, dlast; // [B, C], [B, E], [B, E], [B], [B, E] x 2, [B, C], [B, T, C]
    int32_t *ids, *eos;         // [B, T], [B]
    Scene *scenes;              // [B]
    const char **captions;      // [B] the scenes' captions
} ClipTrainer;

static void configs(const ClipPretrainConfig *c, const Tokenizer *tok, ClipVisionConfig *vc, ClipTextConfig *tc) {
    USER_CHECK(c->image_size > 0 && c->patch > 0 && c->image_size % c->patch == 0 && c->width > 0 && c->heads > 0 &&
                   c->width % c->heads == 0 && c->text_width % c->heads == 0 && c->layers > 0 && c->text_layers > 0 &&
                   c->context >= 4 && c->context <= TOKENIZER_MAX_LENGTH && c->proj_dim > 0,
               "drtune pretrain-clip: inconsistent architecture (image %d, patch %d, width %d, text width %d, heads %d, "
               "context %d)", c->image_size, c->patch, c->width, c->text_width, c->heads, c->context);
    *vc = (ClipVisionConfig){.width = c->width, .layers = c->layers, .heads = c->heads, .ff = 4 * c->width,
                             .patch = c->patch, .image_size = c->image_size, .proj_dim = c->proj_dim,
                             .act = ACT_QUICK_GELU, .eps = 1e-5f};
    int vocab = tok->eos_id > tok->bos_id ? tok->eos_id : tok->bos_id;
    vocab = (tok->pad_id > vocab ? tok->pad_id : vocab) + 1; // the special tokens are the largest ids
    *tc = (ClipTextConfig){.hidden = c->text_width, .ff = 4 * c->text_width, .heads = c->heads,
                           .layers = c->text_layers, .max_pos = c->context, .vocab = vocab, .proj_dim = c->proj_dim,
                           .eos_token_id = tok->eos_id, .act = ACT_QUICK_GELU, .eps = 1e-5f, .with_projection = 1};
}

static void trainer_init(ClipTrainer *t, const ClipPretrainConfig *c) {
    memset(t, 0, sizeof *t);
    t->c = c;
    tokenizer_load(&t->tok, c->tokenizer);
    ClipVisionConfig vc;
    ClipTextConfig tc;
    configs(c, &t->tok, &vc, &tc);
    clip_vision_plan(&t->v, &vc);
    arena_alloc(&t->v.params);
    clip_vision_plan(&t->vg, &vc);
    arena_alloc(&t->vg.params);
    clip_text_plan(&t->te, &tc);
    arena_alloc(&t->te.params);
    clip_text_plan(&t->tg, &tc);
    arena_alloc(&t->tg.params);
    arena_init(&t->ls, "clip_logit_scale", DEVICE_CPU);
    arena_add(&t->ls, &t->ls_t, "logit_scale", DTYPE_F32, 0, NULL);
    arena_alloc(&t->ls);
    arena_init(&t->lsg, "clip_logit_scale_grad", DEVICE_CPU);
    arena_add(&t->lsg, &t->lsg_t, "logit_scale", DTYPE_F32, 0, NULL);
    arena_alloc(&t->lsg);
    pretrain_init_params(&t->v.params, (uint64_t)c->seed, 16);
    pretrain_init_params(&t->te.params, (uint64_t)c->seed, 17);
    tensor_f32(&t->ls_t)[0] = logf(1.0f / 0.07f); // CLIP's initial temperature
    param_group_init(&t->groups[0], &t->v.params, &t->vg.params);
    param_group_init(&t->groups[1], &t->te.params, &t->tg.params);
    param_group_init(&t->groups[2], &t->ls, &t->lsg);

    int B = c->batch, T = c->context;
    int64_t S = c->image_size, E = c->proj_dim, C = c->text_width;
    clip_vision_run_init(&t->vr, &t->v, B, 0);
    clip_text_train_init(&t->ta, &t->te, B, T);
    Arena *a = &t->mem;
    arena_init(a, "clip_train", DEVICE_CPU);
    PLAN(a, &t->img, "", "image", B, 3, S, S);
    PLAN(a, &t->x01, "", "x01", B, 3, S, S);
    PLAN(a, &t->fi, "", "image_features", B, E);
    PLAN(a, &t->ni, "", "image_norms", B);
    PLAN(a, &t->dfi, "", "grad.image_features_n", B, E);
    PLAN(a, &t->dfeat, "", "grad.image_features", B, E);
    PLAN(a, &t->pooled, "", "text_pooled", B, C);
    PLAN(a, &t->tfeat, "", "text_projected", B, E);
    PLAN(a, &t->ft, "", "text_features", B, E);
    PLAN(a, &t->nt, "", "text_norms", B);
    PLAN(a, &t->dft, "", "grad.text_features_n", B, E);
    PLAN(a, &t->dtf, "", "grad.text_features", B, E);
    PLAN(a, &t->dpooled, "", "grad.text_pooled", B, C);
    PLAN(a, &t->dlast, "", "grad.last_hidden_state", B, T, C);
    arena_alloc(a);
    t->ids = xmalloc(sizeof(int32_t) * (size_t)B * (size_t)T);
    t->eos = xmalloc(sizeof(int32_t) * (size_t)B);
    t->scenes = xmalloc(sizeof(Scene) * (size_t)B);
    t->captions = xmalloc(sizeof(char *) * (size_t)B);
}

static void trainer_free(ClipTrainer *t) {
    for (int i = 0; i < 3; i++) free(t->groups[i].m), free(t->groups[i].v);
    clip_vision_run_free(&t->vr);
    clip_text_train_free(&t->ta);
    arena_free(&t->mem);
    clip_vision_free(&t->v);
    clip_vision_free(&t->vg);
    clip_text_free(&t->te);
    clip_text_free(&t->tg);
    arena_free(&t->ls);
    arena_free(&t->lsg);
    tokenizer_free(&t->tok);
    free(t->ids), free(t->eos), free(t->scenes), free(t->captions);
}

double clip_contrastive_loss(const float *fi, const float *ft, int B, int E, float logit_scale,
                             const char *const *captions, float *dfi, float *dft, float *dlogit_scale, double *acc) {
    double s = exp((double)logit_scale), *lg = xmalloc(sizeof(double) * (size_t)B * (size_t)B);
    double *dl = xcalloc((size_t)B * (size_t)B, sizeof(double));
    for (int i = 0; i < B; i++)
        for (int j = 0; j < B; j++) {
            double d = 0.0;
            for (int e = 0; e < E; e++) d += (double)fi[(size_t)i * E + e] * ft[(size_t)j * E + e];
            lg[(size_t)i * B + j] = s * d;
        }
    double loss = 0.0;
    int right = 0;
    for (int dir = 0; dir < 2; dir++)
        for (int i = 0; i < B; i++) {
            // row i (dir 0: image i against every caption) or column i (dir 1: caption i against every image)
#define AT(i, j) (dir == 0 ? (size_t)(i) * B + (j) : (size_t)(j) * B + (i))
#define NEG(i, j) ((j) == (i) || !captions || strcmp(captions[i], captions[j]))
            double mx = -INFINITY;
            int best = i;
            for (int j = 0; j < B; j++)
                if (NEG(i, j) && lg[AT(i, j)] > mx) mx = lg[AT(i, j)], best = j;
            double z = 0.0;
            for (int j = 0; j < B; j++)
                if (NEG(i, j)) z += exp(lg[AT(i, j)] - mx);
            loss += -(lg[AT(i, i)] - mx) + log(z);
            for (int j = 0; j < B; j++)
                if (NEG(i, j)) dl[AT(i, j)] += (exp(lg[AT(i, j)] - mx) / z - (j == i)) / (2.0 * B);
            if (dir == 0) right += best == i;
#undef AT
#undef NEG
        }
    // d logits -> features and logit_scale (d logits / d logit_scale = logits)
    memset(dfi, 0, sizeof(float) * (size_t)B * (size_t)E);
    memset(dft, 0, sizeof(float) * (size_t)B * (size_t)E);
    double dls = 0.0;
    for (int i = 0; i < B; i++)
        for (int j = 0; j < B; j++) {
            double g = dl[(size_t)i * B + j];
            if (g == 0.0) continue;
            dls += g * lg[(size_t)i * B + j];
            float gs = (float)(g * s);
            for (int e = 0; e < E; e++)
                dfi[(size_t)i * E + e] += gs * ft[(size_t)j * E + e], dft[(size_t)j * E + e] += gs * fi[(size_t)i * E + e];
        }
    *dlogit_scale = (float)dls;
    if (acc) *acc = (double)right / B;
    free(lg);
    free(dl);
    return loss / (2.0 * B);
}

// Draws of iteration `it` (purpose DATA, the iteration as the sample; tags apart from pretrain.c's stages 1 and 2).
enum { DRAW_NOISE = 48, DRAW_AUG = 49 };

// Augments the B rendered images [B, 3, S, S] in place, so that the towers see what generated images look like and
// the image gradient the reward hands to training is smooth: image b is blurred with the [1 2 1] / 4 kernel in both
// directions (edge pixels repeated) when u[2b] < 1/2, then gets Gaussian noise of standard deviation 0.3 u[2b + 1]
// (u uniform in [0, 1) from the iteration's stream).
static void augment(float *img, int B, int S, uint64_t seed, int it) {
    int64_t n = (int64_t)B * 3 * S * S, per = (int64_t)3 * S * S;
    float *u = xmalloc(sizeof(float) * (size_t)(2 * B)), *noise = xmalloc(sizeof(float) * (size_t)n);
    float *tmp = xmalloc(sizeof(float) * (size_t)S * (size_t)S);
    rng_uniform_fill(u, 2 * B, seed, RNG_STREAM(RNG_PURPOSE_DATA, it, DRAW_AUG), 0);
    rng_normal_fill(noise, n, seed, RNG_STREAM(RNG_PURPOSE_DATA, it, DRAW_NOISE), 0);
    for (int b = 0; b < B; b++) {
        float *x = img + b * per;
        if (u[2 * b] < 0.5f)
            for (int c = 0; c < 3; c++) {
                float *p = x + (int64_t)c * S * S;
                for (int pass = 0; pass < 2; pass++) { // rows, then columns (p -> tmp -> p, transposing each time)
                    for (int y = 0; y < S; y++)
                        for (int k = 0; k < S; k++) {
                            float l = p[y * S + (k > 0 ? k - 1 : 0)], r = p[y * S + (k + 1 < S ? k + 1 : S - 1)];
                            tmp[k * S + y] = 0.25f * l + 0.5f * p[y * S + k] + 0.25f * r;
                        }
                    memcpy(p, tmp, sizeof(float) * (size_t)S * (size_t)S);
                }
            }
        float sd = 0.3f * u[2 * b + 1];
        for (int64_t i = 0; i < per; i++) x[i] += sd * noise[b * per + i];
    }
    free(u), free(noise), free(tmp);
}

// One training iteration on scenes it * B .. it * B + B - 1 of the training split. Returns the loss.
static double train_step(ClipTrainer *t, int it, double *acc) {
    const ClipPretrainConfig *c = t->c;
    int B = c->batch, T = c->context, S = c->image_size, E = c->proj_dim;
    float *img = tensor_f32(&t->img);
#pragma omp parallel for schedule(dynamic)
    for (int b = 0; b < B; b++) {
        scene_sample(&t->scenes[b], (uint64_t)c->data_seed, (uint64_t)it * (uint64_t)B + (uint64_t)b, 0);
        scene_render(&t->scenes[b], img + (int64_t)b * 3 * S * S, S, S);
    }
    augment(img, B, S, (uint64_t)c->seed, it);
    for (int b = 0; b < B; b++) {
        tokenizer_encode(&t->tok, t->scenes[b].caption, t->ids + (int64_t)b * T, T);
        t->eos[b] = clip_text_eos_index(&t->te.cfg, t->ids + (int64_t)b * T, T);
    }
    // forward: the reward's preprocessing (the scenes are rendered at the tower's size), both towers, normalised
    clamp_affine_forward(&t->x01, &t->img, 0.5f, 0.5f, 0.0f, 1.0f);
    normalize_forward(&t->vr.pixels, &t->x01, CLIP_PIXEL_MEAN, CLIP_PIXEL_STD);
    clip_vision_forward(&t->v, &t->vr);
    l2normalize_forward(&t->fi, &t->ni, &t->vr.features);
    clip_text_train_forward(&t->te, &t->ta, t->ids);
    token_select_forward(&t->pooled, &t->ta.last, t->eos);
    linear_forward(&t->tfeat, &t->pooled, &t->te.projection, NULL);
    l2normalize_forward(&t->ft, &t->nt, &t->tfeat);
    for (int b = 0; b < B; b++) t->captions[b] = t->scenes[b].caption;
    double loss = clip_contrastive_loss(tensor_f32(&t->fi), tensor_f32(&t->ft), B, E, tensor_f32(&t->ls_t)[0],
                                        t->captions, tensor_f32(&t->dfi), tensor_f32(&t->dft),
                                        tensor_f32(&t->lsg_t), acc);
    // backward through the normalisations and both towers (parameter gradients accumulate)
    l2normalize_backward(&t->dfeat, &t->dfi, &t->fi, &t->ni);
    clip_vision_backward(&t->v, &t->vr, &t->dfeat, NULL, &t->vg);
    l2normalize_backward(&t->dtf, &t->dft, &t->ft, &t->nt);
    linear_backward(&t->dpooled, &t->tg.projection, NULL, &t->dtf, &t->pooled, &t->te.projection);
    token_select_backward(&t->dlast, &t->dpooled, t->eos);
    clip_text_backward(&t->te, &t->tg, &t->ta, &t->dlast);
    return loss;
}

// ---------------------------------------------------------------------------------------------------------------
// export

static void export_folder(const ClipTrainer *t) {
    const ClipPretrainConfig *c = t->c;
    const ClipVisionConfig *v = &t->v.cfg;
    const ClipTextConfig *x = &t->te.cfg;
    char path[PRETRAIN_PATH_MAX + 64], json[2048];
    dt_mkdirs(c->out);
    int n = snprintf(json, sizeof json,
                     "{\n  \"architectures\": [\"CLIPModel\"],\n  \"model_type\": \"clip\",\n"
                     "  \"projection_dim\": %d,\n  \"logit_scale_init_value\": 2.6592,\n"
                     "  \"text_config\": {\"hidden_size\": %d, \"intermediate_size\": %d, \"num_attention_heads\": %d, "
                     "\"num_hidden_layers\": %d, \"max_position_embeddings\": %d, \"vocab_size\": %d, "
                     "\"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05, \"bos_token_id\": %d, "
                     "\"eos_token_id\": %d, \"pad_token_id\": %d, \"projection_dim\": %d},\n"
                     "  \"vision_config\": {\"hidden_size\": %d, \"intermediate_size\": %d, "
                     "\"num_attention_heads\": %d, \"num_hidden_layers\": %d, \"patch_size\": %d, \"image_size\": %d, "
                     "\"num_channels\": 3, \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05, "
                     "\"projection_dim\": %d}\n}\n",
                     c->proj_dim, x->hidden, x->ff, x->heads, x->layers, x->max_pos, x->vocab, t->tok.bos_id,
                     t->tok.eos_id, t->tok.pad_id, c->proj_dim, v->width, v->ff, v->heads, v->layers, v->patch,
                     v->image_size, c->proj_dim);
    CHECK(n > 0 && n < (int)sizeof json, "", "config.json of %d bytes", n);
    dt_write_file_atomic(dt_path(path, sizeof path, "%s/config.json", c->out), json, (size_t)n);
    static const char *const tok_files[] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                            "special_tokens_map.json"};
    char src[PRETRAIN_PATH_MAX + 64];
    for (int i = 0; i < 4; i++)
        dt_copy_file(dt_path(src, sizeof src, "%s/%s", c->tokenizer, tok_files[i]),
                     dt_path(path, sizeof path, "%s/%s", c->out, tok_files[i]));
    const Arena *parts[] = {&t->v.params, &t->te.params, &t->ls};
    weights_save_f16(parts, 3, dt_path(path, sizeof path, "%s/model.safetensors", c->out));
}

int clip_pretrain_run(const ClipPretrainConfig *c) {
    USER_CHECK(c->iterations > 0 && c->batch >= 2 && c->lr > 0, "drtune pretrain-clip: need iterations > 0, batch >= 2 "
               "and lr > 0");
    setup_threads(c->threads);
    ClipTrainer *t = xcalloc(1, sizeof *t);
    trainer_init(t, c);
    char a[256];
    printf("drtune pretrain-clip: %s; text %d layers, width %d, context %d, vocabulary %d; %lld + %lld parameters\n",
           clip_vision_config_str(&t->v.cfg, a, sizeof a), t->te.cfg.layers, t->te.cfg.hidden, t->te.cfg.max_pos,
           t->te.cfg.vocab, (long long)arena_numel(&t->v.params), (long long)arena_numel(&t->te.params));
    AdamWConfig ac = {.lr = (float)c->lr, .beta1 = 0.9f, .beta2 = 0.98f, .eps = 1e-6f,
                      .weight_decay = (float)c->weight_decay, .warmup = c->warmup, .cosine = 1,
                      .min_lr_ratio = 0.1f, .total = c->iterations, .grad_clip = 1.0f};
    double t0 = dt_now(), wl = 0, wa = 0;
    int wn = 0;
    for (int it = 0; it < c->iterations; it++) {
        double acc, loss = train_step(t, it, &acc);
        double gnorm = param_groups_step(t->groups, 3, &ac, it, &t->adam_step);
        float *ls = tensor_f32(&t->ls_t);
        ls[0] = ls[0] < 0.0f ? 0.0f : ls[0] > logf(100.0f) ? logf(100.0f) : ls[0]; // CLIP's clamp
        wl += loss, wa += acc, wn++;
        if ((c->log_every > 0 && (it + 1) % c->log_every == 0) || it + 1 == c->iterations) {
            double per = (dt_now() - t0) / (it + 1);
            printf("it %5d/%d  loss %.4f  batch top-1 %.3f  grad %.3f  scale %.1f  lr %.2e  %.3f s/it  eta %.1f min\n",
                   it + 1, c->iterations, wl / wn, wa / wn, gnorm, (double)expf(ls[0]), (double)adamw_lr(&ac, it),
                   per, per * (c->iterations - it - 1) / 60.0);
            fflush(stdout);
            wl = wa = 0, wn = 0;
        }
    }
    export_folder(t);
    printf("drtune pretrain-clip: exported %s (%.1f min)\n", c->out, (dt_now() - t0) / 60.0);
    trainer_free(t);
    free(t);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// retrieval on held-out scenes

void clip_retrieval_eval(const char *model_dir, int seed, int first, int n, ClipRetrieval *out) {
    USER_CHECK(n >= 5, "clip retrieval: need at least 5 scenes, got %d", n);
    ClipReward cr;
    ClipRewardOptions o = {.path = model_dir, .kernel = -1, .antialias = -1};
    clip_reward_load(&cr, "clipscore", &o);
    int S = cr.model.vision.cfg.image_size, E = cr.model.vision.cfg.proj_dim, chunk = 64;
    Scene *sc = xmalloc(sizeof(Scene) * (size_t)n);
    float *fi = xmalloc(sizeof(float) * (size_t)n * (size_t)E), *ft = xmalloc(sizeof(float) * (size_t)n * (size_t)E);
    float *img = xmalloc(sizeof(float) * (size_t)chunk * 3 * (size_t)S * (size_t)S);
    for (int i = 0; i < n; i++) scene_sample(&sc[i], (uint64_t)seed, (uint64_t)(first + i), 1);
    for (int f = 0; f < n; f += chunk) {
        int nb = n - f < chunk ? n - f : chunk;
        for (int b = 0; b < nb; b++) scene_render(&sc[f + b], img + (int64_t)b * 3 * S * S, S, S);
        Tensor x = tensor_f32_4d(img, nb, 3, S, S);
        clip_reward_image_features(&cr, &x);
        memcpy(fi + (size_t)f * (size_t)E, cr.fn.data, sizeof(float) * (size_t)nb * (size_t)E);
    }
    for (int i = 0; i < n; i++)
        memcpy(ft + (size_t)i * (size_t)E, clip_reward_text_feature(&cr, sc[i].caption), sizeof(float) * (size_t)E);
    // rank of the first correct candidate: candidates scoring above the best correct one, in both directions
    int hit[2][2] = {{0, 0}, {0, 0}};
    double chance = 0.0;
    float *sims = xmalloc(sizeof(float) * (size_t)n);
    for (int dir = 0; dir < 2; dir++)
        for (int q = 0; q < n; q++) {
            const float *a = dir == 0 ? fi + (size_t)q * E : ft + (size_t)q * E, *cand = dir == 0 ? ft : fi;
            float best_ok = -INFINITY;
            int n_ok = 0;
            for (int j = 0; j < n; j++) {
                float d = 0.0f;
                for (int e = 0; e < E; e++) d += a[e] * cand[(size_t)j * E + e];
                sims[j] = d;
                if (!strcmp(sc[j].caption, sc[q].caption)) {
                    n_ok++;
                    if (d > best_ok) best_ok = d;
                }
            }
            int above = 0;
            for (int j = 0; j < n; j++)
                if (strcmp(sc[j].caption, sc[q].caption) && sims[j] >= best_ok) above++;
            hit[dir][0] += above < 1, hit[dir][1] += above < 5;
            if (dir == 0) chance += (double)n_ok / n;
        }
    free(sims);
    out->n = n;
    out->i2t_top1 = (double)hit[0][0] / n, out->i2t_top5 = (double)hit[0][1] / n;
    out->t2i_top1 = (double)hit[1][0] / n, out->t2i_top5 = (double)hit[1][1] / n;
    out->chance_top1 = chance / n;
    free(sc), free(fi), free(ft), free(img);
    clip_reward_free(&cr);
}
