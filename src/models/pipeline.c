// pipeline.c: diffusers folder description (model_index.json), loading of the tokenizers and text encoders, and
// encode_prompt of the SD 1.x and SDXL pipelines (see pipeline.h).
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../io/json.h"
#include "weights.h"

void model_index_load(ModelIndex *mi, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    struct stat sb;
    USER_CHECK(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode), "'%s' is not a folder", dir);
    USER_CHECK(stat(path, &sb) == 0, "'%s' has no model_index.json: not a diffusers pipeline folder", dir);
    JsonDoc doc;
    json_load(&doc, path);
    memset(mi, 0, sizeof *mi);
    snprintf(mi->class_name, sizeof mi->class_name, "%s", json_get_string(&doc, "_class_name", "unknown"));
    int xl = json_has(&doc, "text_encoder_2") || !strncmp(mi->class_name, "StableDiffusionXL", 17);
    mi->kind = xl ? PIPELINE_SDXL : PIPELINE_SD;
    // diffusers' StableDiffusionXLPipeline defaults force_zeros_for_empty_prompt to True
    mi->force_zeros_for_empty_prompt = xl && json_get_bool(&doc, "force_zeros_for_empty_prompt", 1);
    json_free(&doc);
}

int pipeline_has_file(const char *dir, const char *component, const char *file) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", dir, component, file);
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

const char *pipeline_tokenizer_load(Tokenizer *t, const char *dir) {
    static char vocab_dir[4096];
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    if (stat(path, &sb) == 0) {
        snprintf(vocab_dir, sizeof vocab_dir, "%s", dir);
    } else {
        const char *data = getenv("DRTUNE_DATA");
        snprintf(vocab_dir, sizeof vocab_dir, "%s/tokenizer/clip", data && *data ? data : "data");
    }
    tokenizer_load_split(t, vocab_dir, dir);
    return vocab_dir;
}

void pipeline_load_unet(UNet *net, Arena *params, const char *dir) {
    UNetConfig cfg;
    unet_load_config(&cfg, dir);
    arena_init(params, "unet", DEVICE_CPU);
    arena_set_reduce(params, "the model's size (block_out_channels and layers_per_block in unet/config.json)");
    unet_plan_params(params, net, &cfg);
    arena_alloc(params);
    char *file = weights_folder_file(dir);
    weights_load(params, file, NULL);
    free(file);
}

void pipeline_load_vae(VAE *vae, Arena *params, const char *dir, int parts) {
    VAEConfig cfg;
    vae_load_config(&cfg, dir);
    arena_init(params, "vae", DEVICE_CPU);
    arena_set_reduce(params, "the model's size (block_out_channels and layers_per_block in vae/config.json)");
    vae_plan_params(params, vae, &cfg, parts);
    arena_alloc(params);
    char *file = weights_folder_file(dir);
    static const char *const encoder[] = {"encoder.", "quant_conv.", NULL}, *const decoder[] = {"decoder.",
                                                                                                 "post_quant_conv.", NULL};
    weights_load_part(params, file, vae_weight_renames,
                      parts == VAE_DECODER ? encoder : parts == VAE_ENCODER ? decoder : NULL);
    free(file);
}

void pipeline_load_text(Pipeline *p, const char *dir) {
    char path[4096];
    memset(p, 0, sizeof *p);
    model_index_load(&p->index, dir);
    snprintf(path, sizeof path, "%s/tokenizer", dir);
    pipeline_tokenizer_load(&p->tok, path);
    snprintf(path, sizeof path, "%s/text_encoder", dir);
    clip_text_load(&p->te, path);
    if (p->index.kind == PIPELINE_SDXL) {
        snprintf(path, sizeof path, "%s/tokenizer_2", dir);
        pipeline_tokenizer_load(&p->tok2, path);
        snprintf(path, sizeof path, "%s/text_encoder_2", dir);
        clip_text_load(&p->te2, path);
        USER_CHECK(p->te2.cfg.with_projection,
                   "'%s/config.json': SDXL's text_encoder_2 must be a CLIPTextModelWithProjection", path);
    }
}

void pipeline_free(Pipeline *p) {
    tokenizer_free(&p->tok);
    clip_text_free(&p->te);
    if (p->index.kind == PIPELINE_SDXL) {
        tokenizer_free(&p->tok2);
        clip_text_free(&p->te2);
    }
    memset(p, 0, sizeof *p);
}

// ---------------------------------------------------------------------------------------------------------------
// tokenisation

static int32_t *tokenize_batch(const Tokenizer *t, const char *const *texts, int B, int T) {
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)B * (size_t)T);
    for (int b = 0; b < B; b++) tokenizer_encode(t, texts ? texts[b] : "", ids + (size_t)b * (size_t)T, T);
    return ids;
}

void pipeline_tokenize(const Pipeline *p, PromptTokens *out, const char *const *prompts,
                       const char *const *negatives, int B, int cfg) {
    int xl = p->index.kind == PIPELINE_SDXL;
    memset(out, 0, sizeof *out);
    out->B = B;
    out->T = p->tok.model_max_length;
    USER_CHECK(!xl || p->tok2.model_max_length == out->T, "the two SDXL tokenizers have different lengths (%d, %d)",
               out->T, p->tok2.model_max_length);
    out->ids = tokenize_batch(&p->tok, prompts, B, out->T);
    if (xl) out->ids2 = tokenize_batch(&p->tok2, prompts, B, out->T);
    if (!cfg || (xl && !negatives && p->index.force_zeros_for_empty_prompt)) return;
    out->neg_ids = tokenize_batch(&p->tok, negatives, B, out->T);
    if (xl) out->neg_ids2 = tokenize_batch(&p->tok2, negatives, B, out->T);
}

void prompt_tokens_free(PromptTokens *t) {
    free(t->ids);
    free(t->ids2);
    free(t->neg_ids);
    free(t->neg_ids2);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------------------------------------------------------
// encoding

// ids of the rows an encoder sees: [neg; pos] when negatives are encoded, else pos. Free the result.
static int32_t *stack_rows(const int32_t *neg, const int32_t *pos, int B, int T, int *rows) {
    size_t row = (size_t)T * sizeof(int32_t);
    *rows = neg ? 2 * B : B;
    int32_t *ids = xmalloc(row * (size_t)*rows);
    if (neg) memcpy(ids, neg, row * (size_t)B);
    memcpy(ids + (neg ? (size_t)B * (size_t)T : 0), pos, row * (size_t)B);
    return ids;
}

// Copies rows [n, T, w] of src into columns [col, col + w) of dst [*, T, D] starting at dst row r0.
static void put_columns(Tensor *dst, int r0, const Tensor *src, int64_t col) {
    int64_t n = src->shape[0], T = src->shape[1], w = src->shape[2], D = dst->shape[2];
    const float *s = tensor_f32(src);
    float *d = tensor_f32(dst) + (int64_t)r0 * T * D;
    for (int64_t i = 0; i < n * T; i++) memcpy(d + i * D + col, s + i * w, sizeof(float) * (size_t)w);
}

static void check_encoder(const ClipText *te, int T, const char *which) {
    USER_CHECK(T <= te->cfg.max_pos, "%s: %d tokens per prompt, but the encoder has %d positions", which, T,
               te->cfg.max_pos);
}

static void encode_sd(const Pipeline *p, const PromptTokens *tok, int cfg, PromptEmbeds *out) {
    int rows, B = tok->B, T = tok->T;
    CHECK(!cfg || tok->neg_ids, "tokenise with pipeline_tokenize", "SD classifier-free guidance needs negative ids");
    int32_t *ids = stack_rows(cfg ? tok->neg_ids : NULL, tok->ids, B, T, &rows);
    ClipTextRun r;
    clip_text_run_init(&r, &p->te, rows, T, NULL, 0, 1);
    clip_text_forward(&p->te, &r, ids);
    put_columns(&out->hidden, 0, &r.last, 0);
    clip_text_run_free(&r);
    free(ids);
}

static void encode_sdxl(const Pipeline *p, const PromptTokens *tok, int cfg, const SdxlSize *size,
                        PromptEmbeds *out) {
    int rows, B = tok->B, T = tok->T, zero_neg = cfg && !tok->neg_ids;
    CHECK(!cfg || zero_neg == !tok->neg_ids2, "", "SDXL negative ids for one tokenizer only");
    int r0 = zero_neg ? B : 0; // first row the encoders fill; rows before it stay zero
    const int keep = -2;
    int32_t *ids = stack_rows(cfg ? tok->neg_ids : NULL, tok->ids, B, T, &rows);
    ClipTextRun r;
    clip_text_run_init(&r, &p->te, rows, T, &keep, 1, 0);
    clip_text_forward(&p->te, &r, ids);
    put_columns(&out->hidden, r0, clip_text_hidden(&r, keep), 0);
    clip_text_run_free(&r);
    free(ids);
    ids = stack_rows(cfg ? tok->neg_ids2 : NULL, tok->ids2, B, T, &rows);
    clip_text_run_init(&r, &p->te2, rows, T, &keep, 1, 1);
    clip_text_forward(&p->te2, &r, ids);
    put_columns(&out->hidden, r0, clip_text_hidden(&r, keep), p->te.cfg.hidden);
    size_t proj = (size_t)p->te2.cfg.proj_dim;
    memcpy(tensor_f32(&out->text_embeds) + (size_t)r0 * proj, r.projected.data, sizeof(float) * proj * (size_t)rows);
    clip_text_run_free(&r);
    free(ids);
    float *t = tensor_f32(&out->time_ids);
    const int v[6] = {size->orig_h, size->orig_w, size->crop_top, size->crop_left, size->target_h, size->target_w};
    for (int i = 0; i < out->rows; i++)
        for (int k = 0; k < 6; k++) t[i * 6 + k] = (float)v[k];
}

void pipeline_encode_tokens(const Pipeline *p, const PromptTokens *tok, int cfg, const SdxlSize *size,
                            PromptEmbeds *out) {
    int xl = p->index.kind == PIPELINE_SDXL;
    CHECK(tok->B > 0 && tok->ids && (!xl || (tok->ids2 && size)), "", "pipeline_encode_tokens: incomplete input");
    check_encoder(&p->te, tok->T, "text_encoder");
    if (xl) check_encoder(&p->te2, tok->T, "text_encoder_2");
    memset(out, 0, sizeof *out);
    out->rows = cfg ? 2 * tok->B : tok->B;
    int64_t D = p->te.cfg.hidden + (xl ? p->te2.cfg.hidden : 0);
    arena_init(&out->mem, "prompt_embeds", DEVICE_CPU);
    arena_add(&out->mem, &out->hidden, "encoder_hidden_states", DTYPE_F32, 3, (int64_t[]){out->rows, tok->T, D});
    if (xl) {
        arena_add(&out->mem, &out->text_embeds, "text_embeds", DTYPE_F32, 2,
                  (int64_t[]){out->rows, p->te2.cfg.proj_dim});
        arena_add(&out->mem, &out->time_ids, "time_ids", DTYPE_F32, 2, (int64_t[]){out->rows, 6});
    }
    arena_alloc(&out->mem); // zero-filled: the zero negatives need no further work
    if (xl)
        encode_sdxl(p, tok, cfg, size, out);
    else
        encode_sd(p, tok, cfg, out);
}

void pipeline_encode_prompt(const Pipeline *p, PromptEmbeds *out, const char *const *prompts,
                            const char *const *negatives, int B, int cfg, const SdxlSize *size) {
    PromptTokens tok;
    pipeline_tokenize(p, &tok, prompts, negatives, B, cfg);
    pipeline_encode_tokens(p, &tok, cfg, size, out);
    prompt_tokens_free(&tok);
}

void prompt_embeds_free(PromptEmbeds *e) {
    arena_free(&e->mem);
    memset(e, 0, sizeof *e);
}
