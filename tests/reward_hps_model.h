// reward_hps_model.h: a tiny random-weight HPS-architecture model (open_clip layout, exact GELU, the real
// 49408-token vocabulary so that prompts tokenise with the shipped CLIP tokenizer), written to a folder: what the
// tests that run `drtune` with reward.names = hps use (reward_train, cudaemu_reward_train).
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/io/safetensors.h"
#include "../src/ops/ops.h"
#include "gradcheck.h"
#include "testutil.h"

// open_clip CLIP state dict of a tiny configuration (width 16, 2 layers, 28 x 28 images of 14 x 14 patches, real
// vocabulary), random values.
static inline void write_hps_model(const char *dir) {
    enum { D = 16, HW = 8, L = 2, FF = 64, P = 14, S = 28, E = 8, V = 49408, CTX = 77 };
    char path[4300], name[128];
    snprintf(path, sizeof path, "mkdir -p %s", dir);
    CHECK(system(path) == 0, "", "mkdir %s", dir);
    snprintf(path, sizeof path, "%s/open_clip_config.json", dir);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"model_cfg\": {\"embed_dim\": %d, \"quick_gelu\": false,\n"
             "  \"vision_cfg\": {\"image_size\": %d, \"layers\": %d, \"width\": %d, \"head_width\": %d, "
             "\"patch_size\": %d},\n"
             "  \"text_cfg\": {\"context_length\": %d, \"vocab_size\": %d, \"width\": %d, \"heads\": %d, "
             "\"layers\": %d}}}\n",
             E, S, L, D, HW, P, CTX, V, D, D / HW, L);
    tu_write_text(path, cfg);
    enum { MAXT = 128 };
    const char *names[MAXT];
    Tensor ts[MAXT];
    int n = 0;
    int G = S / P;
#define T(nm, ...) (names[n] = xstrdup(nm), ts[n] = GC_TENSOR(__VA_ARGS__), n++)
    T("visual.conv1.weight", D, 3, P, P);
    T("visual.class_embedding", D);
    T("visual.positional_embedding", G * G + 1, D);
    T("visual.ln_pre.weight", D), T("visual.ln_pre.bias", D);
    T("visual.ln_post.weight", D), T("visual.ln_post.bias", D);
    T("visual.proj", D, E);
    T("token_embedding.weight", V, D);
    T("positional_embedding", CTX, D);
    T("ln_final.weight", D), T("ln_final.bias", D);
    T("text_projection", D, E);
    T("logit_scale", 1);
    for (int tower = 0; tower < 2; tower++)
        for (int i = 0; i < L; i++) {
            const char *pre = tower ? "transformer.resblocks" : "visual.transformer.resblocks";
            const char *suffix[] = {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias",
                                    "attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight", "ln_2.bias",
                                    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
            const int64_t shp[][2] = {{D, 0}, {D, 0}, {3 * D, D}, {3 * D, 0}, {D, D}, {D, 0},
                                      {D, 0}, {D, 0}, {FF, D},    {FF, 0},    {D, FF}, {D, 0}};
            for (int k = 0; k < 12; k++) {
                snprintf(name, sizeof name, "%s.%d.%s", pre, i, suffix[k]);
                if (shp[k][1]) T(name, shp[k][0], shp[k][1]);
                else T(name, shp[k][0]);
            }
        }
#undef T
    for (int i = 0; i < n; i++) {
        int64_t fan = ts[i].ndim >= 2 ? tensor_numel(&ts[i]) / ts[i].shape[0] : 1;
        int is_ln = strstr(names[i], "ln_") && strstr(names[i], ".weight");
        gc_fill_normal(&ts[i], ts[i].ndim >= 2 ? 1.0f / sqrtf((float)fan) : 0.1f, 500 + (uint64_t)i);
        if (is_ln) tensor_fill(&ts[i], 1.0f);
    }
    ts[13] = tensor_make(ts[13].data, DTYPE_F32, DEVICE_CPU, 0, NULL); // logit_scale is a 0-d tensor
    ((float *)ts[13].data)[0] = 2.0f;
    snprintf(path, sizeof path, "%s/open_clip_model.safetensors", dir);
    safetensors_write(path, n, names, ts, NULL);
}

