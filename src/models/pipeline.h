// pipeline.h: a diffusers pipeline folder (model_index.json and its component folders) and prompt encoding exactly
// as diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline encode_prompt computes it, including the
// classifier-free-guidance batch (unconditional rows first) and SDXL's pooled embedding and add_time_ids.
#pragma once
#include <stdint.h>

#include "../core/arena.h"
#include "clip_text.h"
#include "tokenizer.h"
#include "unet.h"
#include "vae.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PIPELINE_SD = 0, PIPELINE_SDXL = 1 } PipelineKind; // SD 1.x/2.x-like, SDXL-like

// What model_index.json says about a folder.
typedef struct {
    PipelineKind kind;           // SDXL when text_encoder_2 is listed or _class_name is StableDiffusionXL*
    char class_name[96];         // _class_name
    int force_zeros_for_empty_prompt; // SDXL negative embeddings are zeros when no negative prompt is given
} ModelIndex;

// Reads dir/model_index.json (user error when missing or malformed).
void model_index_load(ModelIndex *mi, const char *dir);
// 1 when dir/<component>/<file> is a regular file.
int pipeline_has_file(const char *dir, const char *component, const char *file);
// Loads a tokenizer folder; a folder with only the two config files (as configs/models/ keeps them) takes
// vocab.json and merges.txt from $DRTUNE_DATA/tokenizer/clip (default data/tokenizer/clip). Returns the folder the
// vocabulary came from (static storage).
const char *pipeline_tokenizer_load(Tokenizer *t, const char *dir);

// Component loaders for a component folder (config.json + weights file): configuration, parameter plan, one
// allocation of params (initialised here), and the weights converted to fp32. parts: VAE_DECODER | VAE_ENCODER.
void pipeline_load_unet(UNet *net, Arena *params, const char *dir);
void pipeline_load_vae(VAE *vae, Arena *params, const char *dir, int parts);

// The text half of a pipeline: tokenizers and frozen text encoders (te2 / tok2 for SDXL only).
typedef struct {
    ModelIndex index;
    Tokenizer tok, tok2;
    ClipText te, te2;
} Pipeline;

// Loads model_index.json, tokenizer(s) and text encoder(s) of a diffusers folder.
void pipeline_load_text(Pipeline *p, const char *dir);
void pipeline_free(Pipeline *p);

// SDXL micro-conditioning: add_time_ids = (original h, w, crop top, left, target h, w) in pixels.
typedef struct {
    int orig_h, orig_w, crop_top, crop_left, target_h, target_w;
} SdxlSize;

// Token ids of a batch of B prompts, T = 77 each.
typedef struct {
    int B, T;
    int32_t *ids, *ids2;         // [B, T] from tokenizer / tokenizer_2 (ids2 SDXL only)
    int32_t *neg_ids, *neg_ids2; // [B, T] negative prompts ("" for SD 1.x); NULL for SDXL's zero negatives
} PromptTokens;

// Tokenises B prompts (and negatives, NULL for none). With cfg the negative ids are filled as the pipelines do:
// SD 1.x always encodes the negative ("" when none); SDXL leaves them NULL (zeros) when there is no negative prompt
// and force_zeros_for_empty_prompt is set, and encodes "" otherwise.
void pipeline_tokenize(const Pipeline *p, PromptTokens *out, const char *const *prompts,
                       const char *const *negatives, int B, int cfg);
void prompt_tokens_free(PromptTokens *t);

typedef struct {
    int rows;            // B, or 2B with classifier-free guidance (rows 0..B-1 unconditional)
    Arena mem;
    Tensor hidden;       // encoder_hidden_states [rows, T, D]: D = 768 (SD 1.5) or 768 + 1280 (SDXL)
    Tensor text_embeds;  // SDXL pooled, projected text embedding [rows, proj]; data NULL for SD
    Tensor time_ids;     // SDXL add_time_ids [rows, 6]; data NULL for SD
} PromptEmbeds;

// Encodes tokenised prompts. SD: last_hidden_state (after the final layer norm) of the text encoder. SDXL:
// concat(text_encoder hidden_states[-2], text_encoder_2 hidden_states[-2]) (no final layer norm), pooled =
// text_encoder_2's projected EOS embedding, time_ids from size (NULL only for SD). Without neg_ids under cfg the
// unconditional rows are zeros (SDXL force_zeros_for_empty_prompt).
void pipeline_encode_tokens(const Pipeline *p, const PromptTokens *tok, int cfg, const SdxlSize *size,
                            PromptEmbeds *out);
// pipeline_tokenize + pipeline_encode_tokens.
void pipeline_encode_prompt(const Pipeline *p, PromptEmbeds *out, const char *const *prompts,
                            const char *const *negatives, int B, int cfg, const SdxlSize *size);
void prompt_embeds_free(PromptEmbeds *e);

#ifdef __cplusplus
}
#endif
