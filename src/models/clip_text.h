// clip_text.h: the CLIP text transformer of transformers (CLIPTextModel, CLIPTextModelWithProjection), loaded from
// a transformers folder (config.json + model.safetensors) under the HF tensor names. SD 1.5 encodes prompts with
// CLIP ViT-L/14; SDXL adds OpenCLIP bigG/14 with a text projection. The encoders are frozen: forward only.
#pragma once
#include <stdint.h>

#include "../core/arena.h"
#include "../ops/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int hidden;          // hidden_size C
    int ff;              // intermediate_size
    int heads;           // num_attention_heads
    int layers;          // num_hidden_layers N
    int max_pos;         // max_position_embeddings (77)
    int vocab;           // vocab_size
    int proj_dim;        // projection_dim (WithProjection only)
    int eos_token_id;    // 2 (legacy configs) selects the argmax pooling rule
    Activation act;      // hidden_act: quick_gelu, gelu (erf), gelu_new / gelu_pytorch_tanh
    float eps;           // layer_norm_eps
    int with_projection; // 1: CLIPTextModelWithProjection (text_projection.weight [proj_dim, C], no bias)
} ClipTextConfig;

// Reads a transformers config.json; with_projection comes from "architectures". Bad values are user errors.
void clip_text_config_load(ClipTextConfig *c, const char *path);
// "CLIPTextModel, 12 layers, hidden 768, 12 heads (64), ff 3072, quick_gelu, 77 positions, vocab 49408"
const char *clip_text_config_str(const ClipTextConfig *c, char *buf, size_t n);

typedef struct {
    Tensor ln1_w, ln1_b;     // layer_norm1 [C]
    MHAParams attn;          // self_attn.{q,k,v,out}_proj [C, C] + biases [C]
    Tensor ln2_w, ln2_b;     // layer_norm2 [C]
    Tensor fc1_w, fc1_b;     // mlp.fc1 [FF, C], [FF]
    Tensor fc2_w, fc2_b;     // mlp.fc2 [C, FF], [C]
} ClipTextLayer;

typedef struct {
    ClipTextConfig cfg;
    Tensor token_embedding;    // [V, C]
    Tensor position_embedding; // [P, C]
    ClipTextLayer *layers;     // [N]
    Tensor final_ln_w, final_ln_b; // [C]
    Tensor projection;         // [proj_dim, C]; data == NULL without projection
    Arena params;              // every tensor above, fp32, HF names
} ClipText;

// transformers 5 saves CLIPTextModel without the "text_model." prefix (CLIPTextModelWithProjection keeps it):
// the alternative spelling for weights_load.
extern const char *const clip_text_weight_renames[][2];

// Registers every parameter in m->params (not allocated): after this, m->params counts tensors and parameters.
void clip_text_plan(ClipText *m, const ClipTextConfig *c);
// Loads config.json and the weights of a transformers folder (model.safetensors); weights convert to fp32 on the
// way in. A position_ids buffer in the file is ignored.
void clip_text_load(ClipText *m, const char *dir);
void clip_text_free(ClipText *m);

// Values one encoder layer computes (what a backward of the layer would read).
typedef struct {
    Tensor h1, ln1_mean, ln1_rstd; // layer_norm1 output [B, T, C], statistics [B*T]
    MHACache mha;                  // q, k, v, attn [B, T, C], lse [B, H, T]
    Tensor attn_out;               // out_proj output [B, T, C]
    Tensor h2, ln2_mean, ln2_rstd; // layer_norm2 output and statistics
    Tensor fc1, act;               // [B, T, FF] before and after the activation
    Tensor mlp_out;                // fc2 output [B, T, C]
} ClipTextLayerActs;

// One forward's memory and results. hidden[i] follows transformers' hidden_states: index 0 is the embedding
// output, index i the output of layer i (before the final layer norm).
typedef struct {
    int B, T;
    int n_layers;               // N
    int n_run;                  // layers evaluated (fewer than N when only an early hidden state is wanted)
    int want_final;
    Arena mem;
    Tensor ids;                 // [B, T] i32
    Tensor x;                   // [B, T, C] residual stream
    ClipTextLayerActs layer;    // shared by the layers (forward only)
    Tensor *hidden;             // [N + 1], each [B, T, C]; data == NULL unless kept
    Tensor final_mean, final_rstd; // [B*T]
    Tensor last;                // last_hidden_state [B, T, C] (after final_layer_norm)
    Tensor pooled;              // [B, C]: last at the EOS position of each row
    Tensor projected;           // [B, proj_dim] (with projection)
    int32_t *eos;               // [B] pooled positions
} ClipTextRun;

// Plans and allocates a run for B sequences of T tokens (T <= max_pos). keep lists hidden-state indices to keep,
// negative ones counting from the end as in Python (-1 = N, -2 = N - 1). want_final: compute last_hidden_state,
// pooled and projected; without it the layers stop at the deepest kept index.
void clip_text_run_init(ClipTextRun *r, const ClipText *m, int B, int T, const int *keep, int n_keep,
                        int want_final);
void clip_text_run_free(ClipTextRun *r);
// ids [B, T] token ids (checked against the vocabulary: a user error otherwise).
void clip_text_forward(const ClipText *m, ClipTextRun *r, const int32_t *ids);
// The hidden state index i (negative counts from the end); internal failure if it was not kept.
const Tensor *clip_text_hidden(const ClipTextRun *r, int i);
// Pooling position of one row of T ids: with eos_token_id == 2 (legacy configs) the first maximal id, else the
// first position holding eos_token_id (0 when there is none, as torch's argmax of an all-false mask).
int clip_text_eos_index(const ClipTextConfig *c, const int32_t *ids, int T);

#ifdef __cplusplus
}
#endif
