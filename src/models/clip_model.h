// clip_model.h: a whole CLIP model (image tower, optional text tower, logit scale) as the CLIP-based rewards load
// it, from either of the two layouts the reward models are published in:
//   transformers CLIPModel folder: config.json (text_config, vision_config, projection_dim) + model.safetensors
//                                  (PickScore, OpenAI CLIP ViT-L/14 as openai/clip-vit-large-patch14);
//   open_clip folder:              open_clip_config.json ({"model_cfg": {embed_dim, quick_gelu, vision_cfg,
//                                  text_cfg}} or the model config itself) + open_clip_model.safetensors
//                                  (HPS v2 / v2.1 after `drtune convert`).
// Both load into one internal layout (the transformers names; open_clip's packed in_proj is split into q, k, v and
// its x @ proj projections are transposed), so one tower implementation serves both.
#pragma once
#include "clip_text.h"
#include "clip_vision.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    ClipVision vision;
    ClipText text;          // loaded when asked for (has_text)
    int has_text;
    float logit_scale;      // as stored (log space); exp() is the CLIP temperature
    int open_clip;          // 1: loaded from the open_clip layout
} ClipModel;

// Loads dir (either layout; a user error naming both file names when neither is there). want_text: load the text
// tower too. Unsupported architecture options (attentional pooling, LayerScale, ...) are user errors.
void clip_model_load(ClipModel *m, const char *dir, int want_text);
void clip_model_free(ClipModel *m);

#ifdef __cplusplus
}
#endif
