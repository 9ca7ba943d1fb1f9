// cmd_info.c: `drtune info`, what a diffusers folder holds (architecture, tensor and parameter counts per component,
// computed from the configs alone; with --load the real load and its peak memory), and `drtune init-weights`, which
// writes a diffusers folder with random weights for a folder's configs (memory measurements and tests offline).
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/common.h"
#include "core/device.h"
#include "core/device_cuda.h"
#include "core/rng.h"
#include "dist/dist.h"
#include "io/json.h"
#include "models/pipeline.h"
#include "models/weights.h"

typedef enum { KIND_UNET, KIND_VAE, KIND_TEXT, KIND_TOKENIZER, KIND_SCHEDULER } ComponentKind;

typedef struct {
    const char *name;    // folder inside the pipeline folder
    const char *config;  // the file whose presence marks the component present
    const char *weights; // the weights file init-weights writes
    ComponentKind kind;
} Component;

static const Component COMPONENTS[] = {
    {"unet", "config.json", "diffusion_pytorch_model.safetensors", KIND_UNET},
    {"vae", "config.json", "diffusion_pytorch_model.safetensors", KIND_VAE},
    {"text_encoder", "config.json", "model.safetensors", KIND_TEXT},
    {"text_encoder_2", "config.json", "model.safetensors", KIND_TEXT},
    {"tokenizer", "tokenizer_config.json", NULL, KIND_TOKENIZER},
    {"tokenizer_2", "tokenizer_config.json", NULL, KIND_TOKENIZER},
    {"scheduler", "scheduler_config.json", NULL, KIND_SCHEDULER},
};
#define N_COMPONENTS ((int)(sizeof COMPONENTS / sizeof COMPONENTS[0]))

static int has_weights(ComponentKind k) { return k == KIND_UNET || k == KIND_VAE || k == KIND_TEXT; }

static const char *option_value(int argc, char **argv, int *i, const char *cmd) {
    USER_CHECK(*i + 1 < argc, "drtune %s: option %s needs a value (see drtune %s --help)", cmd, argv[*i], cmd);
    return argv[++*i];
}

// 1234567 -> "1,234,567" (non-negative counts)
static const char *fmt_count(char *buf, size_t n, int64_t v) {
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%lld", (long long)v);
    size_t k = 0;
    for (int i = 0; i < len && k + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = digits[i];
    }
    buf[k] = '\0';
    return buf;
}

static const char *fmt_ints(char *buf, size_t n, const int *v, int count) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < count && k < n; i++) k += (size_t)snprintf(buf + k, n - k, i ? ", %d" : "%d", v[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

// First line of a component under its name, continuation lines indented under it.
static void print_head(FILE *f, const char *name, const char *text) { fprintf(f, "  %-15s %s\n", name, text); }
static void print_cont(FILE *f, const char *text) { fprintf(f, "  %-15s %s\n", "", text); }

// ---------------------------------------------------------------------------------------------------------------
// weight components: the structs a parameter arena's slots point into

typedef struct {
    ComponentKind kind;
    Arena arena; // UNet and VAE parameters (the text encoder's live in clip.params)
    UNet unet;
    VAE vae;
    ClipText clip;
} Model;

static Arena *model_arena(Model *m) { return m->kind == KIND_TEXT ? &m->clip.params : &m->arena; }

static void model_free(Model *m) {
    if (m->kind == KIND_TEXT) {
        clip_text_free(&m->clip);
        return;
    }
    if (m->kind == KIND_UNET) unet_free(&m->unet);
    arena_free(&m->arena);
}

static void describe_unet(FILE *f, const UNetConfig *c) {
    char a[128], b[128], line[640];
    snprintf(line, sizeof line, "UNet2DConditionModel: %d -> %d channels, block_out %s, layers per block %s",
             c->in_channels, c->out_channels, fmt_ints(a, sizeof a, c->block_out, c->levels),
             fmt_ints(b, sizeof b, c->layers, c->levels));
    print_head(f, "unet", line);
    size_t k = (size_t)snprintf(line, sizeof line, "down");
    for (int i = 0; i < c->levels; i++)
        k += (size_t)snprintf(line + k, sizeof line - k, "%s %s", i ? "," : "",
                              c->down_attn[i] ? "CrossAttnDownBlock2D" : "DownBlock2D");
    k += (size_t)snprintf(line + k, sizeof line - k, "; mid UNetMidBlock2DCrossAttn; up");
    for (int i = 0; i < c->levels; i++)
        k += (size_t)snprintf(line + k, sizeof line - k, "%s %s", i ? "," : "",
                              c->up_attn[i] ? "CrossAttnUpBlock2D" : "UpBlock2D");
    print_cont(f, line);
    snprintf(line, sizeof line, "attention heads %s, transformer depth %s, cross-attention %d, %s projections",
             fmt_ints(a, sizeof a, c->heads, c->levels), fmt_ints(b, sizeof b, c->depth, c->levels), c->cross_dim,
             c->linear_proj ? "linear" : "1x1 conv");
    print_cont(f, line);
    if (c->text_time)
        snprintf(line, sizeof line, "GroupNorm %d groups, time embedding %d, text_time conditioning (text_embeds %d "
                 "+ 6 time ids x %d)", c->groups, c->temb_dim, c->text_embed_dim, c->add_time_dim);
    else
        snprintf(line, sizeof line, "GroupNorm %d groups, time embedding %d", c->groups, c->temb_dim);
    print_cont(f, line);
}

static int64_t vae_part_params(const VAEConfig *c, int parts) {
    Arena a;
    VAE *vae = xcalloc(1, sizeof *vae);
    arena_init(&a, "vae", DEVICE_CPU);
    vae_plan_params(&a, vae, c, parts);
    int64_t n = arena_numel(&a);
    arena_free(&a);
    free(vae);
    return n;
}

static void describe_vae(FILE *f, const VAEConfig *c) {
    char a[128], d[32], e[32], line[640];
    snprintf(line, sizeof line, "AutoencoderKL: %d -> %d latent -> %d channels, block_out %s, %d layers per block",
             c->in_channels, c->latent_channels, c->out_channels, fmt_ints(a, sizeof a, c->block_out, c->levels),
             c->layers);
    print_head(f, "vae", line);
    snprintf(line, sizeof line, "GroupNorm %d groups, downscale %d, scaling_factor %g, mid-block attention %s",
             c->groups, 1 << (c->levels - 1), (double)c->scaling_factor, c->mid_attention ? "yes" : "no");
    print_cont(f, line);
    snprintf(line, sizeof line, "decoder + post_quant_conv %s parameters, encoder + quant_conv %s",
             fmt_count(d, sizeof d, vae_part_params(c, VAE_DECODER)),
             fmt_count(e, sizeof e, vae_part_params(c, VAE_ENCODER)));
    print_cont(f, line);
}

// Plans the parameters of a weight component from its config (no allocation); prints its architecture to describe
// unless that is NULL.
static void model_plan(Model *m, const Component *comp, const char *cdir, FILE *describe) {
    memset(m, 0, sizeof *m);
    m->kind = comp->kind;
    if (comp->kind == KIND_TEXT) {
        char path[4300], line[512];
        ClipTextConfig c;
        snprintf(path, sizeof path, "%s/config.json", cdir);
        clip_text_config_load(&c, path);
        clip_text_plan(&m->clip, &c);
        if (describe) print_head(describe, comp->name, clip_text_config_str(&c, line, sizeof line));
        return;
    }
    arena_init(&m->arena, comp->name, DEVICE_CPU);
    if (comp->kind == KIND_UNET) {
        UNetConfig c;
        unet_load_config(&c, cdir);
        unet_plan_params(&m->arena, &m->unet, &c);
        if (describe) describe_unet(describe, &c);
    } else {
        VAEConfig c;
        vae_load_config(&c, cdir);
        vae_plan_params(&m->arena, &m->vae, &c, VAE_DECODER | VAE_ENCODER);
        if (describe) describe_vae(describe, &c);
    }
}

// The weights as their owner loads them for a run: text encoders whole, the VAE with both halves.
static void model_load(Model *m, const Component *comp, const char *cdir) {
    memset(m, 0, sizeof *m);
    m->kind = comp->kind;
    if (comp->kind == KIND_TEXT)
        clip_text_load(&m->clip, cdir);
    else if (comp->kind == KIND_UNET)
        pipeline_load_unet(&m->unet, &m->arena, cdir);
    else
        pipeline_load_vae(&m->vae, &m->arena, cdir, VAE_DECODER | VAE_ENCODER);
}

// ---------------------------------------------------------------------------------------------------------------
// tokenizer and scheduler summaries

static void describe_tokenizer(FILE *f, const char *name, const char *cdir) {
    Tokenizer t;
    char m[32], line[4400];
    const char *vocab = pipeline_tokenizer_load(&t, cdir);
    snprintf(line, sizeof line, "CLIPTokenizer (byte-level BPE): %s merges, bos %d, eos %d, pad %d, %d tokens per "
             "prompt", fmt_count(m, sizeof m, t.n_merges), t.bos_id, t.eos_id, t.pad_id, t.model_max_length);
    print_head(f, name, line);
    snprintf(line, sizeof line, "vocabulary and merges from %s%s", vocab,
             strcmp(vocab, cdir) ? " (the folder has none)" : "");
    print_cont(f, line);
    tokenizer_free(&t);
}

static void describe_scheduler(FILE *f, const char *cdir) {
    char path[4300], line[640];
    snprintf(path, sizeof path, "%s/scheduler_config.json", cdir);
    JsonDoc d;
    json_load(&d, path);
    snprintf(line, sizeof line, "%s: %d training steps, %s betas %g .. %g, %s prediction",
             json_get_string(&d, "_class_name", "unknown"), json_get_int(&d, "num_train_timesteps", 1000),
             json_get_string(&d, "beta_schedule", "linear"), json_get_number(&d, "beta_start", 1e-4),
             json_get_number(&d, "beta_end", 0.02), json_get_string(&d, "prediction_type", "epsilon"));
    print_head(f, "scheduler", line);
    snprintf(line, sizeof line, "timestep_spacing %s%s, steps_offset %d, set_alpha_to_one %s",
             json_get_string(&d, "timestep_spacing", "leading"), json_has(&d, "timestep_spacing") ? "" : " (default)",
             json_get_int(&d, "steps_offset", 0), json_get_bool(&d, "set_alpha_to_one", 1) ? "true" : "false");
    print_cont(f, line);
    json_free(&d);
}

// ---------------------------------------------------------------------------------------------------------------
// drtune info

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: drtune info --model DIR [--load]\n"
            "       drtune info --device\n"
            "\n"
            "Describes a diffusers pipeline folder (model_index.json and its component folders): per component the\n"
            "architecture and the tensor and parameter counts, computed from the configs alone (weights need not be\n"
            "present).\n"
            "\n"
            "  --model DIR   the pipeline folder (e.g. configs/models/sd15)\n"
            "  --load        also load every component's weights as a run does (fp32) and report the time, the\n"
            "                weight size and the process's peak resident memory next to it\n"
            "  --device      the GPU this process would train on (local rank 0), its memory, the driver and the\n"
            "                library versions; says so when there is none\n");
}

static int component_has_weights_file(const char *dir, const char *name) {
    return pipeline_has_file(dir, name, "diffusion_pytorch_model.safetensors") ||
           pipeline_has_file(dir, name, "model.safetensors");
}

// Loads every weight component that has a weights file, keeping all of them, as a run holds them.
static void info_load(const char *dir) {
    char a[32], b[32], c[32], line[640], cdir[4200];
    Model *models = xcalloc(N_COMPONENTS, sizeof *models);
    int n = 0;
    size_t before = dt_peak_rss(), bytes = 0;
    printf("\nloading (peak RSS before: %s)\n", dt_format_bytes(a, sizeof a, (double)before));
    for (int i = 0; i < N_COMPONENTS; i++) {
        const Component *comp = &COMPONENTS[i];
        if (!has_weights(comp->kind) || !pipeline_has_file(dir, comp->name, comp->config)) continue;
        if (!component_has_weights_file(dir, comp->name)) {
            print_head(stdout, comp->name, "no weights file: not loaded");
            continue;
        }
        snprintf(cdir, sizeof cdir, "%s/%s", dir, comp->name);
        double t0 = dt_now();
        model_load(&models[n], comp, cdir);
        Arena *ar = model_arena(&models[n++]);
        bytes += ar->size;
        snprintf(line, sizeof line, "%s of fp32 weights in %.2f s; peak RSS %s with %s of weights loaded",
                 dt_format_bytes(a, sizeof a, (double)ar->size), dt_now() - t0,
                 dt_format_bytes(b, sizeof b, (double)dt_peak_rss()), dt_format_bytes(c, sizeof c, (double)bytes));
        print_head(stdout, comp->name, line);
    }
    USER_CHECK(n > 0, "'%s': no component has a weights file, nothing to load (drtune init-weights writes some)",
               dir);
    size_t peak = dt_peak_rss();
    printf("  %-15s weights %s, peak RSS %s = %.3f x the weights (%s before loading)\n", "total",
           dt_format_bytes(a, sizeof a, (double)bytes), dt_format_bytes(b, sizeof b, (double)peak),
           (double)peak / (double)bytes, dt_format_bytes(c, sizeof c, (double)before));
    for (int i = 0; i < n; i++) model_free(&models[i]);
    free(models);
}

// drtune info --device
static void info_device(void) {
    char a[32], b[32];
    if (!device_cuda_available()) {
        printf("no GPU visible: drtune trains on the CPU (train.device = auto picks the CPU)%s\n",
               device_cuda_emulated() ? "; this binary's GPU backend is the CPU emulation (DRTUNE_CUDAEMU=1 enables it)"
                                      : "");
        return;
    }
    device_select(DEVICE_CUDA, 0);
    int driver = 0, runtime = 0;
    cuda_versions(&driver, &runtime);
    size_t fr = 0, tot = 0;
    cuda_mem_info(&fr, &tot);
    printf("GPU:            %s%s\n", cuda_device_name(), device_cuda_emulated() ? " (the CPU emulation of the GPU path)" : "");
    printf("visible GPUs:   %d (each rank takes local rank mod this count)\n", cuda_device_count());
    printf("memory:         %s free of %s\n", dt_format_bytes(a, sizeof a, (double)fr),
           dt_format_bytes(b, sizeof b, (double)tot));
    if (device_cuda_emulated())
        printf("CUDA:           emulated (no driver, no runtime)\n");
    else
        printf("CUDA:           driver %d.%d, runtime %d.%d\n", driver / 1000, driver % 1000 / 10, runtime / 1000,
               runtime % 1000 / 10);
    printf("NCCL:           %s\n", dist_device_library());
}

int cmd_info(int argc, char **argv) {
    const char *dir = NULL;
    int load = 0, device = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            info_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model")) {
            dir = option_value(argc, argv, &i, "info");
        } else if (!strcmp(argv[i], "--load")) {
            load = 1;
        } else if (!strcmp(argv[i], "--device")) {
            device = 1;
        } else {
            dt_user_error("drtune info: unknown argument '%s' (see drtune info --help)", argv[i]);
        }
    }
    if (device && !dir) {
        info_device();
        return 0;
    }
    USER_CHECK(dir, "drtune info: --model DIR is required (see drtune info --help)");
    ModelIndex mi;
    model_index_load(&mi, dir);
    // The report goes to memory first: bad input anywhere ends with the error line alone, not half a report.
    char *report = NULL;
    size_t report_len = 0;
    FILE *f = open_memstream(&report, &report_len);
    CHECK(f, "", "open_memstream failed");
    fprintf(f, "%s: %s (%s)\n", dir, mi.class_name,
            mi.kind == PIPELINE_SDXL ? "SDXL-like: two text encoders, text_time conditioning"
                                     : "SD-1.x-like: one text encoder");
    char a[32], b[32], c[32], line[640], cdir[4200];
    int64_t tensors = 0, params = 0;
    for (int i = 0; i < N_COMPONENTS; i++) {
        const Component *comp = &COMPONENTS[i];
        if (!pipeline_has_file(dir, comp->name, comp->config)) continue;
        snprintf(cdir, sizeof cdir, "%s/%s", dir, comp->name);
        if (comp->kind == KIND_TOKENIZER) {
            describe_tokenizer(f, comp->name, cdir);
        } else if (comp->kind == KIND_SCHEDULER) {
            describe_scheduler(f, cdir);
        } else {
            Model m;
            model_plan(&m, comp, cdir, f);
            const Arena *ar = model_arena(&m);
            snprintf(line, sizeof line, "%s tensors, %s parameters (%s as fp32)", fmt_count(a, sizeof a, ar->n),
                     fmt_count(b, sizeof b, arena_numel(ar)), dt_format_bytes(c, sizeof c, (double)ar->size));
            print_cont(f, line);
            tensors += ar->n;
            params += arena_numel(ar);
            model_free(&m);
        }
    }
    fprintf(f, "  %-15s %s tensors, %s parameters\n", "total", fmt_count(a, sizeof a, tensors),
            fmt_count(b, sizeof b, params));
    fclose(f);
    fputs(report, stdout);
    free(report);
    if (load) info_load(dir);
    if (device) info_device();
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// drtune init-weights

static void init_usage(FILE *f) {
    fprintf(f,
            "usage: drtune init-weights --model DIR --out DIR [--seed S] [--dtype f32|f16|bf16] [--component C]\n"
            "\n"
            "Writes a diffusers pipeline folder with random weights for the configs of --model: model_index.json\n"
            "and every config, tokenizer (with its vocabulary) and scheduler file are copied; each weight component (unet, vae,\n"
            "text_encoder, text_encoder_2; only C with --component) gets a safetensors file. Values are\n"
            "deterministic in the seed: matrices and kernels N(0, 1/fan_in), norm weights 1 + N(0, 0.01), biases\n"
            "N(0, 0.01).\n"
            "\n"
            "  --model DIR      source pipeline folder (configs suffice, e.g. configs/models/sd15)\n"
            "  --out DIR        destination folder (created; must differ from --model)\n"
            "  --seed S         random seed (default 0)\n"
            "  --dtype T        storage type of the written weights: f32 (default), f16 or bf16\n"
            "  --component C    write the weights of this component only\n");
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

// Copies the configuration files (*.json, *.txt) of one component folder.
static void copy_configs(const char *src_dir, const char *dst_dir) {
    DIR *d = opendir(src_dir);
    USER_CHECK(d, "cannot read folder '%s' (%s)", src_dir, strerror(errno));
    dt_mkdirs(dst_dir);
    char src[4500], dst[4500];
    for (struct dirent *e; (e = readdir(d));) {
        if (!ends_with(e->d_name, ".json") && !ends_with(e->d_name, ".txt")) continue;
        snprintf(src, sizeof src, "%s/%s", src_dir, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", dst_dir, e->d_name);
        struct stat sb;
        if (stat(src, &sb) == 0 && S_ISREG(sb.st_mode)) dt_copy_file(src, dst);
    }
    closedir(d);
}

// Values of one parameter from n standard normal draws: N(0, 1/fan_in) for tensors of rank >= 2, 1 + N(0, 0.01)
// for rank-1 weights (the norms), N(0, 0.01) for biases.
static void init_values(float *v, int64_t n, const ArenaEntry *e) {
    float scale = 0.1f, shift = 0.0f;
    if (e->desc.ndim >= 2)
        scale = 1.0f / sqrtf((float)(tensor_numel(&e->desc) / e->desc.shape[0]));
    else if (ends_with(e->name, ".weight"))
        shift = 1.0f;
    for (int64_t i = 0; i < n; i++) v[i] = shift + scale * v[i];
}

// Writes random values for every tensor planned in plan (unallocated) to path, stored as dtype. Only the output
// arena (in dtype) and one tensor's fp32 draws are in memory at a time.
static void write_random(const Arena *plan, DType dtype, uint64_t seed, int component, const char *path) {
    Arena out;
    arena_init(&out, plan->group, DEVICE_CPU);
    for (int i = 0; i < plan->n; i++)
        arena_add(&out, NULL, plan->entries[i].name, dtype, plan->entries[i].desc.ndim, plan->entries[i].desc.shape);
    arena_alloc(&out);
    float *draws = NULL;
    int64_t cap = 0;
    for (int i = 0; i < out.n; i++) {
        const ArenaEntry *e = &out.entries[i];
        int64_t n = tensor_numel(&e->desc);
        if (n > cap) {
            free(draws);
            draws = xmalloc(sizeof(float) * (size_t)n);
            cap = n;
        }
        rng_normal_fill(draws, n, seed, RNG_STREAM(RNG_PURPOSE_INIT, component, i), 0);
        init_values(draws, n, e);
        dtype_convert(e->desc.data, dtype, draws, DTYPE_F32, n);
    }
    free(draws);
    weights_save(&out, path);
    arena_free(&out);
}

static DType parse_dtype(const char *s) {
    if (!strcmp(s, "f32") || !strcmp(s, "fp32") || !strcmp(s, "float32")) return DTYPE_F32;
    if (!strcmp(s, "f16") || !strcmp(s, "fp16") || !strcmp(s, "float16")) return DTYPE_F16;
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) return DTYPE_BF16;
    dt_user_error("drtune init-weights: --dtype must be f32, f16 or bf16, not '%s'", s);
}

// "text-encoder-2" -> "text_encoder_2"
static const Component *find_weight_component(const char *name) {
    char n[64];
    snprintf(n, sizeof n, "%s", name);
    for (char *s = n; *s; s++)
        if (*s == '-') *s = '_';
    for (int i = 0; i < N_COMPONENTS; i++)
        if (has_weights(COMPONENTS[i].kind) && !strcmp(COMPONENTS[i].name, n)) return &COMPONENTS[i];
    dt_user_error("drtune init-weights: unknown component '%s' (unet, vae, text_encoder, text_encoder_2)", name);
}

int cmd_init_weights(int argc, char **argv) {
    const char *dir = NULL, *out = NULL;
    const Component *only = NULL;
    uint64_t seed = 0;
    DType dtype = DTYPE_F32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            init_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model")) {
            dir = option_value(argc, argv, &i, "init-weights");
        } else if (!strcmp(argv[i], "--out")) {
            out = option_value(argc, argv, &i, "init-weights");
        } else if (!strcmp(argv[i], "--seed")) {
            const char *s = option_value(argc, argv, &i, "init-weights");
            char *end;
            errno = 0;
            seed = strtoull(s, &end, 10);
            USER_CHECK(*s >= '0' && *s <= '9' && !*end && errno == 0,
                       "drtune init-weights: --seed must be a non-negative integer, not '%s'", s);
        } else if (!strcmp(argv[i], "--dtype")) {
            dtype = parse_dtype(option_value(argc, argv, &i, "init-weights"));
        } else if (!strcmp(argv[i], "--component")) {
            only = find_weight_component(option_value(argc, argv, &i, "init-weights"));
        } else {
            dt_user_error("drtune init-weights: unknown argument '%s' (see drtune init-weights --help)", argv[i]);
        }
    }
    USER_CHECK(dir && out, "drtune init-weights: --model DIR and --out DIR are required (see drtune init-weights "
               "--help)");
    ModelIndex mi;
    model_index_load(&mi, dir);
    char rs[PATH_MAX], rd[PATH_MAX];
    USER_CHECK(!realpath(dir, rs) || !realpath(out, rd) || strcmp(rs, rd),
               "drtune init-weights: --out must not be the --model folder ('%s')", out);
    USER_CHECK(!only || pipeline_has_file(dir, only->name, only->config), "'%s' has no %s/%s", dir, only->name,
               only->config);
    dt_mkdirs(out);
    char src[4200], dst[4200], a[32], b[32], c[32];
    snprintf(src, sizeof src, "%s/model_index.json", dir);
    snprintf(dst, sizeof dst, "%s/model_index.json", out);
    dt_copy_file(src, dst);
    for (int i = 0; i < N_COMPONENTS; i++) {
        const Component *comp = &COMPONENTS[i];
        if (!pipeline_has_file(dir, comp->name, comp->config)) continue;
        snprintf(src, sizeof src, "%s/%s", dir, comp->name);
        snprintf(dst, sizeof dst, "%s/%s", out, comp->name);
        copy_configs(src, dst);
        if (comp->kind == KIND_TOKENIZER) { // a complete folder: the vocabulary too, wherever the loader found it
            Tokenizer t;
            const char *vocab = pipeline_tokenizer_load(&t, src);
            tokenizer_free(&t);
            const char *files[2] = {"vocab.json", "merges.txt"};
            for (int k = 0; k < 2; k++) {
                char vs[4300], vd[4300];
                snprintf(vs, sizeof vs, "%s/%s", vocab, files[k]);
                snprintf(vd, sizeof vd, "%s/%s", dst, files[k]);
                dt_copy_file(vs, vd);
            }
        }
        if (!has_weights(comp->kind) || (only && only != comp)) continue;
        Model m;
        model_plan(&m, comp, src, NULL);
        const Arena *plan = model_arena(&m);
        snprintf(dst, sizeof dst, "%s/%s/%s", out, comp->name, comp->weights);
        write_random(plan, dtype, seed, i, dst);
        printf("%s: %s tensors, %s parameters, %s as %s\n", dst, fmt_count(a, sizeof a, plan->n),
               fmt_count(b, sizeof b, arena_numel(plan)),
               dt_format_bytes(c, sizeof c, (double)arena_numel(plan) * (double)dtype_size(dtype)), dtype_name(dtype));
        model_free(&m);
    }
    return 0;
}
