// clip_model.c: loading a CLIP model for the rewards from a transformers CLIPModel folder or an open_clip folder
// (clip_model.h): the two configs, and the open_clip tensor names mapped onto the transformers layout.
#include "clip_model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../io/json.h"
#include "../io/safetensors.h"
#include "weights.h"

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

// A view of the object doc[key] with the getters of json.h (user error when it is not an object).
static JsonDoc json_sub(const JsonDoc *doc, const char *key) {
    cJSON *o = cJSON_GetObjectItemCaseSensitive(doc->root, key);
    USER_CHECK(cJSON_IsObject(o), "'%s': '%s' is missing or not an object", doc->path, key);
    return (JsonDoc){.root = o, .path = doc->path};
}

static Activation hf_act(const JsonDoc *d) {
    const char *s = json_get_string(d, "hidden_act", "quick_gelu");
    if (!strcmp(s, "quick_gelu")) return ACT_QUICK_GELU;
    if (!strcmp(s, "gelu")) return ACT_GELU;
    dt_user_error("'%s': hidden_act '%s' is not supported by the reward towers (gelu, quick_gelu)", d->path, s);
}

static void check_sizes(const char *path, int D, int H, int L, int FF, int extra) {
    USER_CHECK(D > 0 && H > 0 && L > 0 && FF > 0 && extra > 0 && D % H == 0 && D <= 65536 && L <= 1024 &&
                   FF <= 1 << 20 && extra <= 1 << 24,
               "'%s': implausible tower sizes (width %d, heads %d, layers %d, ff %d)", path, D, H, L, FF);
}

// ---------------------------------------------------------------------------------------------------------------
// transformers CLIPModel (defaults: transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig)

static void hf_configs(const char *path, ClipVisionConfig *v, ClipTextConfig *t) {
    JsonDoc doc;
    json_load(&doc, path);
    int E = json_get_int(&doc, "projection_dim", 512);
    JsonDoc vd = json_sub(&doc, "vision_config"), td = json_sub(&doc, "text_config");
    *v = (ClipVisionConfig){.width = json_get_int(&vd, "hidden_size", 768),
                            .layers = json_get_int(&vd, "num_hidden_layers", 12),
                            .heads = json_get_int(&vd, "num_attention_heads", 12),
                            .ff = json_get_int(&vd, "intermediate_size", 3072),
                            .patch = json_get_int(&vd, "patch_size", 32),
                            .image_size = json_get_int(&vd, "image_size", 224),
                            .proj_dim = E,
                            .act = hf_act(&vd),
                            .eps = (float)json_get_number(&vd, "layer_norm_eps", 1e-5)};
    USER_CHECK(json_get_int(&vd, "num_channels", 3) == 3, "'%s': num_channels must be 3", path);
    *t = (ClipTextConfig){.hidden = json_get_int(&td, "hidden_size", 512),
                          .ff = json_get_int(&td, "intermediate_size", 2048),
                          .heads = json_get_int(&td, "num_attention_heads", 8),
                          .layers = json_get_int(&td, "num_hidden_layers", 12),
                          .max_pos = json_get_int(&td, "max_position_embeddings", 77),
                          .vocab = json_get_int(&td, "vocab_size", 49408),
                          .proj_dim = E,
                          .eos_token_id = json_get_int(&td, "eos_token_id", 49407),
                          .act = hf_act(&td),
                          .eps = (float)json_get_number(&td, "layer_norm_eps", 1e-5),
                          .with_projection = 1};
    json_free(&doc);
}

// ---------------------------------------------------------------------------------------------------------------
// open_clip (defaults: open_clip's CLIPVisionCfg / CLIPTextCfg)

static void oc_reject(const JsonDoc *d, const char *key, const char *why) {
    USER_CHECK(!json_has(d, key), "'%s': open_clip option '%s' is not supported by the reward towers (%s)", d->path,
               key, why);
}

static void oc_configs(const char *path, ClipVisionConfig *v, ClipTextConfig *t) {
    JsonDoc doc;
    json_load(&doc, path);
    JsonDoc cfg = json_has(&doc, "model_cfg") ? json_sub(&doc, "model_cfg") : doc;
    JsonDoc vd = json_sub(&cfg, "vision_cfg"), td = json_sub(&cfg, "text_cfg");
    Activation act = json_get_bool(&cfg, "quick_gelu", 0) ? ACT_QUICK_GELU : ACT_GELU;
    int E = json_get_int(&cfg, "embed_dim", 512);
    static const char *const v_unsupported[] = {"timm_model_name", "attentional_pool", "ls_init_value",
                                                "final_ln_after_pool", "no_ln_pre", "input_patchnorm",
                                                "global_average_pool", NULL};
    static const char *const t_unsupported[] = {"hf_model_name", "ls_init_value", "embed_cls", "proj_bias",
                                                "no_causal_mask", "final_ln_after_pool", NULL};
    for (int i = 0; v_unsupported[i]; i++)
        if (json_has(&vd, v_unsupported[i]) && cJSON_IsTrue(cJSON_GetObjectItem(vd.root, v_unsupported[i])))
            oc_reject(&vd, v_unsupported[i], "vision tower");
    for (int i = 0; t_unsupported[i]; i++)
        if (json_has(&td, t_unsupported[i]) && cJSON_IsTrue(cJSON_GetObjectItem(td.root, t_unsupported[i])))
            oc_reject(&td, t_unsupported[i], "text tower");
    USER_CHECK(!strcmp(json_get_string(&vd, "pool_type", "tok"), "tok") &&
                   !strcmp(json_get_string(&td, "pool_type", "argmax"), "argmax"),
               "'%s': only token-0 (vision) and argmax (text) pooling are supported", path);
    USER_CHECK(cJSON_IsNumber(cJSON_GetObjectItem(vd.root, "image_size")) || !json_has(&vd, "image_size"),
               "'%s': vision_cfg.image_size must be one integer (square images)", path);
    int width = json_get_int(&vd, "width", 768), head_width = json_get_int(&vd, "head_width", 64);
    USER_CHECK(head_width > 0 && width % head_width == 0, "'%s': width %d is not a multiple of head_width %d", path,
               width, head_width);
    double vr = json_get_number(&vd, "mlp_ratio", 4.0), tr = json_get_number(&td, "mlp_ratio", 4.0);
    *v = (ClipVisionConfig){.width = width,
                            .layers = json_get_int(&vd, "layers", 12),
                            .heads = width / head_width,
                            .ff = (int)(width * vr),
                            .patch = json_get_int(&vd, "patch_size", 16),
                            .image_size = json_get_int(&vd, "image_size", 224),
                            .proj_dim = E,
                            .act = act,
                            .eps = 1e-5f};
    int tw = json_get_int(&td, "width", 512);
    *t = (ClipTextConfig){.hidden = tw,
                          .ff = (int)(tw * tr),
                          .heads = json_get_int(&td, "heads", 8),
                          .layers = json_get_int(&td, "layers", 12),
                          .max_pos = json_get_int(&td, "context_length", 77),
                          .vocab = json_get_int(&td, "vocab_size", 49408),
                          .proj_dim = E,
                          .eos_token_id = 2, // selects clip_text_eos_index's argmax rule, as open_clip pools
                          .act = act,
                          .eps = 1e-5f,
                          .with_projection = 1};
    json_free(&doc);
}

// The open_clip name of a tensor of the internal (transformers) layout, with which third of a packed in_proj it
// is (part 0..2, -1: whole) and whether it is stored transposed (x @ proj). Returns 0 for an unknown name.
static int oc_name(const char *hf, char *out, size_t n, int *part, int *transpose) {
    static const char *const whole[][2] = {
        {"vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"},
        {"vision_model.embeddings.class_embedding", "visual.class_embedding"},
        {"vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"},
        {"vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"},
        {"vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"},
        {"vision_model.post_layernorm.weight", "visual.ln_post.weight"},
        {"vision_model.post_layernorm.bias", "visual.ln_post.bias"},
        {"visual_projection.weight", "visual.proj"},
        {"text_model.embeddings.token_embedding.weight", "token_embedding.weight"},
        {"text_model.embeddings.position_embedding.weight", "positional_embedding"},
        {"text_model.final_layer_norm.weight", "ln_final.weight"},
        {"text_model.final_layer_norm.bias", "ln_final.bias"},
        {"text_projection.weight", "text_projection"},
        {NULL, NULL}};
    static const char *const layer[][2] = {
        {"self_attn.q_proj.weight", "attn.in_proj_weight"}, {"self_attn.k_proj.weight", "attn.in_proj_weight"},
        {"self_attn.v_proj.weight", "attn.in_proj_weight"}, {"self_attn.q_proj.bias", "attn.in_proj_bias"},
        {"self_attn.k_proj.bias", "attn.in_proj_bias"},     {"self_attn.v_proj.bias", "attn.in_proj_bias"},
        {"self_attn.out_proj.weight", "attn.out_proj.weight"}, {"self_attn.out_proj.bias", "attn.out_proj.bias"},
        {"layer_norm1.weight", "ln_1.weight"}, {"layer_norm1.bias", "ln_1.bias"},
        {"layer_norm2.weight", "ln_2.weight"}, {"layer_norm2.bias", "ln_2.bias"},
        {"mlp.fc1.weight", "mlp.c_fc.weight"}, {"mlp.fc1.bias", "mlp.c_fc.bias"},
        {"mlp.fc2.weight", "mlp.c_proj.weight"}, {"mlp.fc2.bias", "mlp.c_proj.bias"},
        {NULL, NULL}};
    *part = -1, *transpose = 0;
    for (int i = 0; whole[i][0]; i++)
        if (!strcmp(hf, whole[i][0])) {
            snprintf(out, n, "%s", whole[i][1]);
            *transpose = !strcmp(whole[i][1], "visual.proj") || !strcmp(whole[i][1], "text_projection");
            return 1;
        }
    const char *prefix = NULL, *oc_prefix = NULL;
    if (!strncmp(hf, "vision_model.encoder.layers.", 28))
        prefix = "vision_model.encoder.layers.", oc_prefix = "visual.transformer.resblocks.";
    if (!strncmp(hf, "text_model.encoder.layers.", 26))
        prefix = "text_model.encoder.layers.", oc_prefix = "transformer.resblocks.";
    if (!prefix) return 0;
    int idx = 0, len = 0;
    if (sscanf(hf + strlen(prefix), "%d.%n", &idx, &len) != 1 || len == 0) return 0;
    const char *rest = hf + strlen(prefix) + len;
    for (int i = 0; layer[i][0]; i++)
        if (!strcmp(rest, layer[i][0])) {
            snprintf(out, n, "%s%d.%s", oc_prefix, idx, layer[i][1]);
            if (i < 6) *part = i % 3;
            return 1;
        }
    return 0;
}

// Fills every entry of params from an open_clip state dict in path.
static void oc_load(Arena *params, const char *path) {
    SafeTensors st;
    safetensors_open(&st, path);
    char name[256], a[160], b[160];
    for (int i = 0; i < params->n; i++) {
        ArenaEntry *e = &params->entries[i];
        int part, transpose;
        CHECK(oc_name(e->name, name, sizeof name, &part, &transpose), "", "no open_clip name for '%s'", e->name);
        const StTensor *t = safetensors_find(&st, name);
        if (!t)
            dt_user_error("'%s': tensor '%s' is missing (is this an open_clip CLIP state dict of the configured "
                          "architecture?)", path, name);
        // the file tensor's expected shape: packed [3 rows, ...], transposed [in, out], else the entry's own
        int64_t want[TENSOR_MAX_DIMS];
        int nd = e->desc.ndim;
        memcpy(want, e->desc.shape, sizeof want);
        if (part >= 0) want[0] *= 3;
        if (transpose) want[0] = e->desc.shape[1], want[1] = e->desc.shape[0];
        int same = t->ndim == nd;
        for (int d = 0; same && d < nd; d++) same = t->shape[d] == want[d];
        if (!same)
            dt_user_error("'%s': tensor '%s' has shape %s in the file but the configured model expects %s", path,
                          name, tensor_dims_str(t->ndim, t->shape, a, sizeof a),
                          tensor_dims_str(nd, want, b, sizeof b));
        Tensor tmp = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, nd, want);
        tmp.data = xmalloc(tensor_bytes(&tmp));
        safetensors_read_tensor(&st, t, &tmp);
        float *src = tmp.data, *dst = tensor_f32(&e->desc);
        int64_t numel = tensor_numel(&e->desc);
        if (transpose) {
            int64_t R = want[0], C = want[1]; // src [R, C] -> dst [C, R]
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) dst[c * R + r] = src[r * C + c];
        } else {
            memcpy(dst, src + (part >= 0 ? part * numel : 0), sizeof(float) * (size_t)numel);
        }
        free(tmp.data);
    }
    safetensors_close(&st);
}

// ---------------------------------------------------------------------------------------------------------------

static float read_logit_scale(const char *path, const char *name) {
    SafeTensors st;
    safetensors_open(&st, path);
    const StTensor *t = safetensors_find(&st, name);
    float v = logf(100.0f); // CLIP's usual clamp, when the file has none (a vision-only model)
    if (t) {
        USER_CHECK(t->ndim <= 1 && (t->ndim == 0 || t->shape[0] == 1), "'%s': '%s' is not a scalar", path, name);
        Tensor one = tensor_make(&v, DTYPE_F32, DEVICE_CPU, t->ndim, t->shape);
        safetensors_read_tensor(&st, t, &one);
    }
    safetensors_close(&st);
    USER_CHECK(isfinite(v) && v < 20.0f, "'%s': logit_scale %g is not a plausible log temperature", path, (double)v);
    return v;
}

void clip_model_load(ClipModel *m, const char *dir, int want_text) {
    memset(m, 0, sizeof *m);
    size_t n = strlen(dir) + 64;
    char *cfg = xmalloc(n), *file = xmalloc(n);
    ClipVisionConfig vc;
    ClipTextConfig tc;
    snprintf(cfg, n, "%s/open_clip_config.json", dir);
    m->open_clip = file_exists(cfg);
    if (m->open_clip) {
        oc_configs(cfg, &vc, &tc);
        snprintf(file, n, "%s/open_clip_model.safetensors", dir);
        USER_CHECK(file_exists(file), "'%s': no open_clip_model.safetensors beside open_clip_config.json "
                                      "(convert a torch checkpoint with `drtune convert`)", dir);
    } else {
        snprintf(cfg, n, "%s/config.json", dir);
        USER_CHECK(file_exists(cfg), "'%s': not a CLIP model folder (no open_clip_config.json or config.json)", dir);
        hf_configs(cfg, &vc, &tc);
        free(file);
        file = weights_folder_file(dir);
    }
    check_sizes(cfg, vc.width, vc.heads, vc.layers, vc.ff, vc.proj_dim);
    USER_CHECK(vc.patch > 0 && vc.image_size >= vc.patch && vc.image_size % vc.patch == 0 && vc.image_size <= 4096,
               "'%s': image_size %d is not a multiple of patch_size %d", cfg, vc.image_size, vc.patch);
    clip_vision_plan(&m->vision, &vc);
    arena_alloc(&m->vision.params);
    static const char *const skip_text[] = {"text_model.", "text_projection", "logit_scale", NULL};
    static const char *const skip_vision[] = {"vision_model.", "visual_projection", "logit_scale", NULL};
    if (m->open_clip) oc_load(&m->vision.params, file);
    else weights_load_part(&m->vision.params, file, NULL, skip_text);
    if (want_text) {
        check_sizes(cfg, tc.hidden, tc.heads, tc.layers, tc.ff, tc.vocab);
        clip_text_plan(&m->text, &tc);
        arena_alloc(&m->text.params);
        if (m->open_clip) oc_load(&m->text.params, file);
        else weights_load_part(&m->text.params, file, NULL, skip_vision);
        m->has_text = 1;
    }
    m->logit_scale = read_logit_scale(file, "logit_scale");
    free(cfg);
    free(file);
}

void clip_model_free(ClipModel *m) {
    clip_vision_free(&m->vision);
    if (m->has_text) clip_text_free(&m->text);
    memset(m, 0, sizeof *m);
}
