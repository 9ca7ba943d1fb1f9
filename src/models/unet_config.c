// unet_config.c: reads a diffusers UNet2DConditionModel config.json into a UNetConfig. Every option drtune does not
// implement is rejected by name unless it has its default value, so a config never silently means something else.
#include <math.h>
#include <string.h>

#include "../io/json.h"
#include "unet.h"

// "'file': unsupported key = value (drtune supports accepted)" unless key is absent, null or equal to the JSON
// value accepted.
static void expect_value(const JsonDoc *d, const char *key, const char *accepted) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d->root, key);
    if (!v || cJSON_IsNull(v)) return;
    cJSON *want = cJSON_Parse(accepted);
    CHECK(want != NULL, "", "bad accepted value %s", accepted);
    int same = cJSON_Compare(v, want, 1);
    if (cJSON_IsNumber(v) && cJSON_IsNumber(want)) same = v->valuedouble == want->valuedouble;
    cJSON_Delete(want);
    if (same) return;
    char *text = cJSON_PrintUnformatted(v);
    dt_user_error("'%s': unsupported %s = %s (drtune supports %s)", d->path, key, text ? text : "?", accepted);
}

// A boolean option given as one value or one per block: every value must be false.
static void expect_all_false(const JsonDoc *d, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d->root, key), *e;
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) return;
    int ok = cJSON_IsArray(v);
    cJSON_ArrayForEach(e, v) ok = ok && cJSON_IsFalse(e);
    USER_CHECK(ok, "'%s': unsupported %s (drtune supports false)", d->path, key);
}

static void check_unsupported(const JsonDoc *d) {
    static const char *const must_be_null[] = {
        "class_embed_type", "num_class_embeds", "time_cond_proj_dim", "encoder_hid_dim", "encoder_hid_dim_type",
        "timestep_post_act", "time_embedding_act_fn", "cross_attention_norm", "reverse_transformer_layers_per_block",
        "mid_block_only_cross_attention"};
    for (size_t i = 0; i < sizeof must_be_null / sizeof must_be_null[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(d->root, must_be_null[i]);
        int ok = !v || cJSON_IsNull(v) ||
                 (cJSON_IsFalse(v) && !strcmp(must_be_null[i], "mid_block_only_cross_attention"));
        if (!ok) {
            char *text = cJSON_PrintUnformatted(v);
            dt_user_error("'%s': unsupported %s = %s (drtune supports null)", d->path, must_be_null[i],
                          text ? text : "?");
        }
    }
    expect_value(d, "_class_name", "\"UNet2DConditionModel\"");
    expect_value(d, "resnet_time_scale_shift", "\"default\"");
    expect_value(d, "act_fn", "\"silu\"");
    expect_value(d, "time_embedding_type", "\"positional\"");
    expect_value(d, "attention_type", "\"default\"");
    expect_value(d, "conv_in_kernel", "3");
    expect_value(d, "conv_out_kernel", "3");
    expect_value(d, "resnet_out_scale_factor", "1");
    expect_value(d, "mid_block_scale_factor", "1");
    expect_value(d, "dropout", "0");
    expect_value(d, "center_input_sample", "false");
    expect_value(d, "dual_cross_attention", "false");
    expect_value(d, "resnet_skip_time_act", "false");
    expect_value(d, "class_embeddings_concat", "false");
    expect_all_false(d, "only_cross_attention");
    const cJSON *mid = cJSON_GetObjectItemCaseSensitive(d->root, "mid_block_type");
    USER_CHECK(!mid || (cJSON_IsString(mid) && !strcmp(mid->valuestring, "UNetMidBlock2DCrossAttn")),
               "'%s': unsupported mid_block_type (drtune supports \"UNetMidBlock2DCrossAttn\")", d->path);
}

// Block type lists: which levels carry cross-attention.
static void read_block_types(const JsonDoc *d, UNetConfig *c) {
    const char *down[UNET_MAX_LEVELS + 1], *up[UNET_MAX_LEVELS + 1];
    int nd = json_get_string_list(d, "down_block_types", down, UNET_MAX_LEVELS);
    int nu = json_get_string_list(d, "up_block_types", up, UNET_MAX_LEVELS);
    USER_CHECK(nd == c->levels && nu == c->levels,
               "'%s': block_out_channels has %d entries but down_block_types %d and up_block_types %d", d->path,
               c->levels, nd, nu);
    for (int i = 0; i < c->levels; i++) {
        USER_CHECK(!strcmp(down[i], "CrossAttnDownBlock2D") || !strcmp(down[i], "DownBlock2D"),
                   "'%s': unsupported down_block_types entry \"%s\" (drtune supports CrossAttnDownBlock2D, "
                   "DownBlock2D)", d->path, down[i]);
        USER_CHECK(!strcmp(up[i], "CrossAttnUpBlock2D") || !strcmp(up[i], "UpBlock2D"),
                   "'%s': unsupported up_block_types entry \"%s\" (drtune supports CrossAttnUpBlock2D, UpBlock2D)",
                   d->path, up[i]);
        c->down_attn[i] = !strcmp(down[i], "CrossAttnDownBlock2D");
        c->up_attn[i] = !strcmp(up[i], "CrossAttnUpBlock2D");
    }
}

// A per-level integer (one value for all levels or a list of `levels` values).
static void read_per_level(const JsonDoc *d, const char *key, int *out, int levels, int def) {
    int n = json_get_int_list(d, key, out, UNET_MAX_LEVELS, levels, def);
    USER_CHECK(n == levels, "'%s': %s has %d entries, block_out_channels %d", d->path, key, n, levels);
}

// Checks the channel arithmetic diffusers builds from the config: group and head divisibility, and that the skip
// connections popped by each up resnet have the channels its diffusers input size assumes.
static void check_shapes(const JsonDoc *d, const UNetConfig *c) {
    int L = c->levels;
    for (int i = 0; i < L; i++) {
        json_check_multiple(d, "block_out_channels", c->block_out[i], "norm_num_groups", c->groups);
        USER_CHECK(c->layers[i] >= 1 && c->layers[i] < UNET_MAX_LAYERS, "'%s': layers_per_block %d (1..%d supported)",
                   d->path, c->layers[i], UNET_MAX_LAYERS - 1);
        int attn = c->down_attn[i] || c->up_attn[L - 1 - i] || i == L - 1;
        USER_CHECK(!attn || (c->heads[i] > 0 && c->block_out[i] % c->heads[i] == 0 && c->depth[i] >= 1),
                   "'%s': level %d: %d channels, %d attention heads, %d transformer layers (heads must divide the "
                   "channels)", d->path, i, c->block_out[i], c->heads[i], c->depth[i]);
    }
    int skips[UNET_MAX_SKIPS], n = 0;
    skips[n++] = c->block_out[0];
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < c->layers[i]; j++) skips[n++] = c->block_out[i];
        if (i < L - 1) skips[n++] = c->block_out[i];
    }
    for (int i = 0; i < L; i++) {
        int out = c->block_out[L - 1 - i], in = c->block_out[L - 2 - i < 0 ? 0 : L - 2 - i];
        int layers = c->layers[L - 1 - i] + 1;
        for (int j = 0; j < layers; j++) {
            int want = j == layers - 1 ? in : out;
            USER_CHECK(n > 0 && skips[n - 1] == want, "'%s': layers_per_block does not give up level %d the skip "
                       "connections its resnets expect", d->path, i);
            n--;
        }
    }
}

void unet_load_config(UNetConfig *cfg, const char *path) {
    JsonDoc d;
    json_load_config(&d, path);
    const char *file = d.path;
    check_unsupported(&d);
    UNetConfig *c = cfg;
    memset(c, 0, sizeof *c);
    c->levels = json_get_required_int_list(&d, "block_out_channels", c->block_out, UNET_MAX_LEVELS);
    read_block_types(&d, c);
    c->in_channels = json_get_int(&d, "in_channels", 4);
    c->out_channels = json_get_int(&d, "out_channels", 4);
    c->sample_size = json_get_int(&d, "sample_size", 64);
    USER_CHECK(c->sample_size >= 1 && c->sample_size <= 4096, "'%s': sample_size %d out of range", file,
               c->sample_size);
    read_per_level(&d, "layers_per_block", c->layers, c->levels, 2);
    // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (the latter is a head count)
    read_per_level(&d, json_has(&d, "num_attention_heads") ? "num_attention_heads" : "attention_head_dim", c->heads,
                   c->levels, 8);
    read_per_level(&d, "transformer_layers_per_block", c->depth, c->levels, 1);
    c->cross_dim = json_get_int(&d, "cross_attention_dim", 1280);
    c->linear_proj = json_get_bool(&d, "use_linear_projection", 0);
    c->groups = json_get_int(&d, "norm_num_groups", 32);
    c->norm_eps = (float)json_get_number(&d, "norm_eps", 1e-5);
    c->flip_sin_to_cos = json_get_bool(&d, "flip_sin_to_cos", 1);
    c->freq_shift = (float)json_get_number(&d, "freq_shift", 0.0);
    c->downsample_padding = json_get_int(&d, "downsample_padding", 1);
    c->temb_dim = json_get_int(&d, "time_embedding_dim", 4 * c->block_out[0]);
    USER_CHECK(c->downsample_padding == 0 || c->downsample_padding == 1,
               "'%s': unsupported downsample_padding = %d (drtune supports 0 and 1)", file, c->downsample_padding);
    USER_CHECK(c->in_channels > 0 && c->out_channels > 0 && c->cross_dim > 0 && c->groups > 0 && c->temb_dim > 0 &&
                   c->norm_eps > 0 && isfinite(c->norm_eps),
               "'%s': in_channels, out_channels, cross_attention_dim, norm_num_groups, time_embedding_dim and "
               "norm_eps must be positive", file);
    const char *add = json_get_string(&d, "addition_embed_type", NULL);
    if (add) {
        USER_CHECK(!strcmp(add, "text_time"), "'%s': unsupported addition_embed_type = \"%s\" (drtune supports "
                   "null and \"text_time\")", file, add);
        USER_CHECK(json_has(&d, "addition_time_embed_dim") && json_has(&d, "projection_class_embeddings_input_dim"),
                   "'%s': addition_embed_type \"text_time\" needs addition_time_embed_dim and "
                   "projection_class_embeddings_input_dim", file);
        c->text_time = 1;
        c->add_time_dim = json_get_int(&d, "addition_time_embed_dim", 0);
        c->add_in_dim = json_get_int(&d, "projection_class_embeddings_input_dim", 0);
        c->text_embed_dim = c->add_in_dim - 6 * c->add_time_dim;
        USER_CHECK(c->add_time_dim >= 2 && c->text_embed_dim > 0, "'%s': projection_class_embeddings_input_dim %d "
                   "leaves no room for the text embedding next to 6 x addition_time_embed_dim %d", file,
                   c->add_in_dim, c->add_time_dim);
    }
    check_shapes(&d, c);
    json_free(&d);
}
