// config.c: the configuration schema, one entry per key, and everything derived from it: INI and command-line
// parsing with validation, the defaults, the resolved INI text, `drtune train --help` and docs/CONFIG.md.
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "../core/common.h"
#include "../io/utf8.h"
#include "../rewards/reward.h"

// ---------------------------------------------------------------------------------------------------------------
// the schema

typedef enum { T_INT, T_FLOAT, T_BOOL, T_STRING, T_ENUM, T_INT_LIST, T_FLOAT_LIST, T_STRING_LIST } KeyType;
enum { NONEMPTY = 1, MIN_OPEN = 2, MAX_OPEN = 4, IS_PATH = 8 };
#define NO_MAX ((double)INT_MAX) // an integer key without an upper bound

typedef struct {
    const char *section, *key;
    KeyType type;
    size_t offset;              // of the field in Config
    size_t size;                // T_STRING: buffer bytes; T_STRING_LIST: bytes per element
    size_t count_offset;        // lists: the int holding the element count
    int min_count, max_count;   // lists
    double min, max;            // numbers and the elements of number lists
    int flags;
    const char *const *choices; // T_ENUM: accepted words in enum order, NULL-terminated
    const char *def;            // the default, as written in an INI file
    const char *help;
} ConfigKey;

// Field offsets with a compile-time check of the field's type (a mismatch has no _Generic association).
#define MEMBER(f) (((Config *)0)->f)
#define FIELD(f, T) (offsetof(Config, f) + 0 * sizeof(_Generic(MEMBER(f), T: 1)))
#define FIELD_ENUM(f) (offsetof(Config, f) + 0 * sizeof(char[sizeof(MEMBER(f)) == sizeof(int) ? 1 : -1]))
#define CAPACITY(f) ((int)(sizeof(MEMBER(f)) / sizeof(MEMBER(f)[0])))

#define K_INT(s, k, f, d, lo, hi, h) \
    {.section = s, .key = k, .type = T_INT, .offset = FIELD(f, int), .min = lo, .max = hi, .def = d, .help = h}
#define K_FLOAT(s, k, f, d, lo, hi, fl, h)                                                                       \
    {.section = s, .key = k, .type = T_FLOAT, .offset = FIELD(f, double), .min = lo, .max = hi, .flags = fl,    \
     .def = d, .help = h}
#define K_BOOL(s, k, f, d, h) {.section = s, .key = k, .type = T_BOOL, .offset = FIELD(f, int), .def = d, .help = h}
#define K_STRING(s, k, f, d, fl, h)                                                                              \
    {.section = s, .key = k, .type = T_STRING, .offset = FIELD(f, char *), .size = sizeof(MEMBER(f)),           \
     .flags = fl, .def = d, .help = h}
#define K_ENUM(s, k, f, words, d, h) \
    {.section = s, .key = k, .type = T_ENUM, .offset = FIELD_ENUM(f), .choices = words, .def = d, .help = h}
#define K_LIST(s, k, T, ET, f, n, cmin, d, lo, hi, h)                                                            \
    {.section = s, .key = k, .type = T, .offset = FIELD(f, ET *), .count_offset = FIELD(n, int),                \
     .min_count = cmin, .max_count = CAPACITY(f), .min = lo, .max = hi, .def = d, .help = h}
#define K_NAMES(s, k, f, n, cmin, d, h)                                                                          \
    {.section = s, .key = k, .type = T_STRING_LIST, .offset = FIELD(f[0], char *), .size = sizeof(MEMBER(f)[0]), \
     .count_offset = FIELD(n, int), .min_count = cmin, .max_count = CAPACITY(f), .def = d, .help = h}

static const char *const TRAINABLES[] = {"lora", "full", NULL};
static const char *const SCHEDULES[] = {"constant", "cosine", NULL};
static const char *const PROGRESS_MODES[] = {"auto", "on", "off", NULL};
static const char *const EXPORTS[] = {"lora", "merged", "both", "none", NULL};
static const char *const TRAIN_DEVICES[] = {"auto", "cpu", "cuda", NULL};
static const char *const PRECISIONS[] = {"fp32", "bf16", NULL};
static const char *const RECOMPUTES[] = {"off", "auto", "all", NULL}; // UNetRecomputeMode order
static const char *const RESIZE_KERNELS[] = {"bilinear", "bicubic", NULL}; // ResizeKernel order

static const struct {
    const char *name, *about;
} SECTIONS[] = {
    {"model", "The model being fine-tuned."},
    {"sampler", "DDIM sampling: the rollout whose image the reward scores."},
    {"method", "The gradient method and its knobs (docs/METHOD.md)."},
    {"reward", "The reward being maximised: a weighted sum of built-in rewards (src/rewards/reward.h) and learned "
               "rewards (src/rewards/clip_reward.h)."},
    {"train", "What is trained, and the optimizer (AdamW)."},
    {"data", "Training prompts."},
    {"log", "Console progress, metrics and sample images."},
    {"output", "The run folder: resolved configuration, metrics, samples, checkpoints and exported weights."},
    {"retrain", "Periodic retraining (launch/retrain.sh, docs/FDXL.md): the evaluation gate and the promoted rounds; "
                "drtune train does not read it."},
};
#define N_SECTIONS ((int)(sizeof SECTIONS / sizeof SECTIONS[0]))

static const ConfigKey KEYS[] = {
    K_STRING("model", "path", model.path, "data/models/tiny", NONEMPTY | IS_PATH,
             "diffusers model folder (model_index.json, scheduler/, text_encoder/, tokenizer/, unet/, vae/)"),

    K_INT("sampler", "steps", sampler.steps, "20", 1, 1000, "DDIM sampling steps N"),
    K_FLOAT("sampler", "guidance", sampler.guidance, "5.0", 0, 100, 0,
            "classifier-free guidance scale w: eps = eps_u + w (eps_c - eps_u)"),
    K_FLOAT("sampler", "eta", sampler.eta, "0.0", 0, 1, 0, "DDIM eta: 0 = deterministic sampling, 1 = DDPM-like noise"),
    K_INT("sampler", "height", sampler.height, "64", 8, 4096, "image height in pixels (a multiple of 8)"),
    K_INT("sampler", "width", sampler.width, "64", 8, 4096, "image width in pixels (a multiple of 8)"),
    K_STRING("sampler", "negative_prompt", sampler.negative_prompt, "\"\"", 0,
             "prompt of the unconditional CFG branch (empty: the empty prompt)"),

    K_ENUM("method", "name", method.name, METHOD_NAMES, "drtune",
           "gradient method: drtune, refl, draft (DRaFT-K), draft-lv (DRaFT-LV) or alignprop"),
    K_INT("method", "k", method.k, "3", 1, 1000, "trained steps: DRTune's K, DRaFT-K's K, AlignProp's largest k"),
    K_INT("method", "m", method.m, "5", 0, 1000,
          "early-stop bound (drtune, refl): t_min is drawn from 1..m; 0 = no early stop (drtune)"),
    K_INT("method", "phase", method.phase, "-1", -1, 1000,
          "DRTune phase p of the trained steps p + i s; -1 = drawn every iteration"),
    K_INT("method", "t_min", method.t_min, "-1", -1, 1000,
          "early-stop step (drtune, refl); -1 = drawn from 1..m every iteration"),
    K_INT("method", "k_fixed", method.k_fixed, "-1", -1, 1000,
          "AlignProp's number of trained steps; -1 = drawn from 1..k every iteration"),
    K_BOOL("method", "draw_in_executed", method.draw_in_executed, "false",
           "DRTune: space the trained steps inside the executed range [t_min, N] instead of [1, N]"),
    K_INT("method", "lv_copies", method.lv_copies, "2", 1, 64, "DRaFT-LV: re-noised copies of x_0 per sample"),
    K_BOOL("method", "cfg", method.cfg, "true",
           "train through both CFG branches (false: the conditional branch only, w = 1)"),

    K_NAMES("reward", "names", reward.names, reward.n_names, 1, "symmetry",
            "rewards to combine, by name (symmetry, brightness, saturation, sharpness, colour, compress, adherence, "
            "hps, pickscore, clipscore, aesthetic; docs/REWARDS.md)"),
    K_LIST("reward", "weights", T_FLOAT_LIST, double, reward.weights, reward.n_weights, 1, "1.0", -1e6, 1e6,
           "weight of each reward, in the order of reward.names (negative: minimise)"),
    K_LIST("reward", "scales", T_FLOAT_LIST, double, reward.scales, reward.n_scales, 0, "", 1e-9, 1e9,
           "normalisation: each reward's score is divided by its scale before weighting (one per reward.names, "
           "empty = all 1; typical raw magnitudes in docs/REWARDS.md)"),
    K_LIST("reward", "colour", T_FLOAT_LIST, double, reward.colour, reward.n_colour, 3, "0.9, 0.1, 0.1", 0, 1,
           "target RGB of the colour reward"),
    K_STRING("reward", "hps_path", reward.hps_path, "\"\"", IS_PATH,
             "hps: open_clip folder of HPS v2 / v2.1 (open_clip_config.json + open_clip_model.safetensors)"),
    K_STRING("reward", "pickscore_path", reward.pickscore_path, "\"\"", IS_PATH,
             "pickscore: transformers CLIPModel folder of PickScore v1"),
    K_STRING("reward", "clipscore_path", reward.clipscore_path, "\"\"", IS_PATH,
             "clipscore: CLIP model folder (OpenAI ViT-L/14 for the usual CLIP score)"),
    K_STRING("reward", "aesthetic_path", reward.aesthetic_path, "\"\"", IS_PATH,
             "aesthetic: the LAION aesthetic MLP as safetensors (drtune convert of the .pth)"),
    K_STRING("reward", "aesthetic_clip_path", reward.aesthetic_clip_path, "\"\"", IS_PATH,
             "aesthetic: CLIP model folder of its image tower (OpenAI ViT-L/14)"),
    K_ENUM("reward", "resize", reward.resize, RESIZE_KERNELS, "bicubic",
           "learned rewards: the resize to the tower's input size (bicubic or bilinear)"),
    K_BOOL("reward", "antialias", reward.antialias, "true",
           "learned rewards: antialiased resize (as PIL and torchvision >= 0.17 resize)"),
    K_BOOL("reward", "checkpoint", reward.checkpoint, "false",
           "learned rewards: keep only each ViT layer's input and recompute the layer in the backward"),

    K_ENUM("train", "trainable", train.trainable, TRAINABLES, "lora",
           "what is trained: lora (low-rank adapters) or full (every UNet weight)"),
    K_INT("train", "lora_rank", train.lora_rank, "4", 1, 1024, "LoRA rank r"),
    K_FLOAT("train", "lora_alpha", train.lora_alpha, "4.0", 0, 1e6, MIN_OPEN,
            "LoRA scale: the adapter adds (alpha / r) B A x"),
    K_NAMES("train", "lora_targets", train.lora_targets, train.n_lora_targets, 1, "to_q, to_k, to_v, to_out.0",
            "UNet Linear layers that get adapters, by the end of their diffusers names"),
    K_INT("train", "iterations", train.iterations, "100", 1, NO_MAX, "optimizer steps of the run"),
    K_INT("train", "batch", train.batch, "4", 1, 1 << 20, "global batch: images per iteration over all ranks"),
    K_INT("train", "seed", train.seed, "0", 0, NO_MAX, "seed of every random draw (latents, DDIM noise, method)"),
    K_FLOAT("train", "lr", train.lr, "1e-4", 0, 1, MIN_OPEN, "AdamW learning rate (after warm-up)"),
    K_FLOAT("train", "weight_decay", train.weight_decay, "0.0", 0, 1, 0, "AdamW decoupled weight decay"),
    K_FLOAT("train", "beta1", train.beta1, "0.9", 0, 1, MAX_OPEN, "AdamW first-moment decay"),
    K_FLOAT("train", "beta2", train.beta2, "0.999", 0, 1, MAX_OPEN, "AdamW second-moment decay"),
    K_FLOAT("train", "adam_eps", train.adam_eps, "1e-8", 0, 1, MIN_OPEN, "AdamW epsilon"),
    K_INT("train", "warmup", train.warmup, "0", 0, NO_MAX, "iterations of linear learning-rate warm-up from 0"),
    K_ENUM("train", "schedule", train.schedule, SCHEDULES, "constant",
           "learning rate after warm-up: constant, or cosine decay to min_lr_ratio * lr at the last iteration"),
    K_FLOAT("train", "min_lr_ratio", train.min_lr_ratio, "0.0", 0, 1, 0,
            "floor of the cosine schedule, as a fraction of lr"),
    K_FLOAT("train", "grad_clip", train.grad_clip, "1.0", 0, 1e6, 0, "global L2 gradient-norm limit; 0 = off"),
    K_INT("train", "threads", train.threads, "0", 0, 4096, "CPU threads per process; 0 = all cores"),
    K_ENUM("train", "device", train.device, TRAIN_DEVICES, "auto",
           "where an iteration runs: cuda (one GPU per rank, by local rank), cpu, or auto (the GPU when one is "
           "visible; drtune info --device says which)"),
    K_BOOL("train", "deterministic", train.deterministic, "true",
           "GPU: only deterministic convolution algorithms and attention backward (drtune's own kernels instead of "
           "cuDNN's fused attention backward), so a run repeats bit for bit on the same GPU"),
    K_BOOL("train", "cudnn_attention", train.cudnn_attention, "true",
           "GPU, bf16: attention through cuDNN's fused attention (FlashAttention-2 on tensor cores; cuDNN 9.13 or "
           "newer): the forward, and the backward unless train.deterministic. Shapes cuDNN cannot plan (fp32, causal, "
           "head dims not a multiple of 8 or over 256) run drtune's own kernels. Elsewhere: DRTUNE_CUDNN_ATTENTION=0"),
    K_BOOL("train", "channels_last", train.channels_last, "false",
           "GPU: the UNet's and the VAE decoder's activations and compute filters channels last (NHWC), the layout "
           "cuDNN's tensor-core convolutions prefer; the transformer blocks' token transposes become copies. fp32 "
           "precision then keeps an fp32 compute copy. drtune bench gpu times the UNet both ways on the GPU at hand "
           "(its 'channels last' rows; the GPU check's summary gives the ratio)"),
    K_BOOL("train", "cuda_graphs", train.cuda_graphs, "true",
           "GPU: each guided UNet evaluation (both guidance branches) is captured once as a CUDA graph and replayed "
           "at every sampling step and phase-2 recompute (bit-identical results, fewer launches); false launches "
           "every kernel. drtune sample and eval: DRTUNE_CUDA_GRAPHS=0 turns them off"),
    K_ENUM("train", "precision", train.precision, PRECISIONS, "fp32",
           "GPU: bf16 stores activations and a compute copy of the weights in bf16 (fp32 accumulation, statistics, "
           "gradients, master weights and Adam moments); fp32 computes as the CPU does (docs/ARCHITECTURE.md)"),
    K_ENUM("train", "recompute", train.recompute, RECOMPUTES, "off",
           "activation recompute of the UNet and the VAE decoder: off keeps every block's activations for the "
           "backward; all keeps only each block's output (UNet: a resnet with its transformer, or the mid block; "
           "decoder: a resnet, or the mid block) and re-runs its forward just before its backward (the same "
           "gradients bit for bit, about one more UNet and decoder forward of time); auto recomputes the largest "
           "UNet blocks until the UNet's activations fit train.activation_budget_gb, then the largest decoder blocks "
           "until both fit (docs/PERFORMANCE.md)"),
    K_FLOAT("train", "activation_budget_gb", train.activation_budget_gb, "0", 0, 1e6, 0,
            "train.recompute = auto: GiB the UNet and VAE decoder activations of one rank should fit in; 0 = three "
            "quarters of the memory the device has available when they are planned"),
    K_FLOAT("train", "reduce_bucket_mb", train.reduce_bucket_mb, "1.0", 0, 1024, 0,
            "with several ranks, the gradient reduction starts during the last UNet backward whenever this many "
            "MiB of gradients are final (docs/DISTRIBUTED.md); 0 = one reduction after the backward"),

    K_STRING("data", "prompts", data.prompts, "data/prompts/default.txt", NONEMPTY | IS_PATH,
             "prompt file: UTF-8, one prompt per line of at most 4096 bytes (as for drtune sample --prompt), "
             "blank lines and # comments skipped"),

    K_INT("log", "every", log.every, "1", 1, NO_MAX,
          "a console line every N iterations when stderr is not a terminal"),
    K_INT("log", "sample_every", log.sample_every, "0", 0, NO_MAX,
          "sample images every N iterations; 0 = only before and after training"),
    K_LIST("log", "sample_seeds", T_INT_LIST, int, log.sample_seeds, log.n_sample_seeds, 0, "0, 1, 2, 3", 0,
           NO_MAX, "seeds of the sample images, one image each; empty = no samples"),
    K_ENUM("log", "progress", log.progress, PROGRESS_MODES, "auto",
           "progress bar on stderr: auto (a bar on a terminal, plain lines otherwise), on or off"),

    K_STRING("output", "dir", output.dir, "runs/default", NONEMPTY | IS_PATH, "run folder"),
    K_INT("output", "checkpoint_every", output.checkpoint_every, "50", 0, NO_MAX,
          "checkpoint every N iterations; 0 = only at the end"),
    K_INT("output", "keep", output.keep, "3", 0, NO_MAX, "checkpoints kept, newest first; 0 = all"),
    K_ENUM("output", "export", output.export_mode, EXPORTS, "both",
           "final weights: lora (the adapters), merged (the UNet with the update merged in), both, or none"),

    K_STRING("retrain", "prompts", retrain.prompts, "data/prompts/heldout.txt", NONEMPTY | IS_PATH,
             "held-out prompt file of the evaluation gate (not the training prompts)"),
    K_LIST("retrain", "seeds", T_INT_LIST, int, retrain.seeds, retrain.n_seeds, 1, "0, 1, 2, 3, 4, 5, 6, 7", 0,
           NO_MAX, "seeds of the gate's images, one image each (as drtune eval --seeds)"),
    K_STRING("retrain", "target", retrain.target, "\"\"", 0,
             "reward whose mean must improve for a round to be promoted; empty = the first of reward.names"),
    K_FLOAT("retrain", "min_gain", retrain.min_gain, "0.0", 0, 1e6, 0,
            "the target's mean must exceed the current model's by more than this"),
    K_NAMES("retrain", "guards", retrain.guards, retrain.n_guards, 0, "",
            "rewards that must not regress: each mean may fall by at most retrain.margin"),
    K_FLOAT("retrain", "margin", retrain.margin, "0.0", 0, 1e6, 0, "how far a guard reward's mean may fall"),
    K_INT("retrain", "keep", retrain.keep, "3", 1, NO_MAX, "promoted rounds kept, newest first"),
};
#define N_KEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

static void *field(Config *c, const ConfigKey *k) { return (char *)c + k->offset; }
static const void *cfield(const Config *c, const ConfigKey *k) { return (const char *)c + k->offset; }
static int *count_field(Config *c, const ConfigKey *k) { return (int *)(void *)((char *)c + k->count_offset); }
static int count_of(const Config *c, const ConfigKey *k) {
    return *(const int *)(const void *)((const char *)c + k->count_offset);
}

static const ConfigKey *key_find(const char *section, const char *key) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].section, section) && !strcmp(KEYS[i].key, key)) return &KEYS[i];
    return NULL;
}

static int section_known(const char *name) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(SECTIONS[i].name, name)) return 1;
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// text helpers

// Trims surrounding whitespace in place.
static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

// Case-insensitive optimal-string-alignment distance (a transposition counts 1); large for long words.
static int edit_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > 64 || nb > 64) return 1000;
    int d[65][65];
    for (size_t i = 0; i <= na; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= nb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= na; i++)
        for (size_t j = 1; j <= nb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int best = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) && tolower((unsigned char)a[i - 2]) == cb &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[na][nb];
}

// A near miss counts when it is at most 2 edits away and the word is longer than the distance.
static int near_miss(const char *word, int distance) { return distance <= 2 && distance < (int)strlen(word); }

static const char *section_suggest(const char *name) {
    const char *best = NULL;
    int bestd = INT_MAX;
    for (int i = 0; i < N_SECTIONS; i++) {
        int d = edit_distance(name, SECTIONS[i].name);
        if (d < bestd) bestd = d, best = SECTIONS[i].name;
    }
    return near_miss(name, bestd) ? best : NULL;
}

// The key a misspelt section.key most likely meant: a near key of the same section, or the same (or a near) key
// name in another section. NULL when nothing is close.
static const ConfigKey *key_suggest(const char *section, const char *key) {
    const ConfigKey *best = NULL;
    int bestd = INT_MAX;
    for (int i = 0; i < N_KEYS; i++) {
        int d = edit_distance(key, KEYS[i].key) + (strcmp(section, KEYS[i].section) != 0);
        if (d < bestd) bestd = d, best = &KEYS[i];
    }
    return near_miss(key, bestd) ? best : NULL;
}

static void section_list(char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < N_SECTIONS && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", SECTIONS[i].name);
}

// A value as shown in an error line: at most 60 bytes, control characters replaced.
static const char *shown(char *buf, size_t n, const char *s) {
    size_t len = strlen(s), keep = len < 60 ? len : 60;
    while (keep < len && keep && ((unsigned char)s[keep] & 0xC0) == 0x80) keep--; // whole UTF-8 characters
    if (keep + 4 > n) keep = n - 4;
    for (size_t i = 0; i < keep; i++) buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    strcpy(buf + keep, keep < len ? "..." : "");
    return buf;
}

// The shortest text that reads back as v; floats keep a '.' or an exponent so they read as numbers, not integers.
static void format_number(char *buf, size_t n, double v, int as_float) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (strchr(buf, 'e') && v == floor(v) && fabs(v) < 1e15) snprintf(buf, n, "%.0f", v); // 1000, not 1e3
    char *e = strchr(buf, 'e');
    if (e) { // 1e-08 -> 1e-8, 1e+20 -> 1e20
        char *digits = e + 2, *w = e + 1;
        while (*digits == '0' && digits[1]) digits++;
        if (e[1] == '-') *w++ = '-';
        memmove(w, digits, strlen(digits) + 1);
    } else if (as_float && !strchr(buf, '.') && isfinite(v)) {
        strncat(buf, ".0", n - strlen(buf) - 1);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// values

static int is_int_type(KeyType t) { return t == T_INT || t == T_INT_LIST; }

// "in [1, 1000]", "in (0, 1]", ">= 0".
static void range_text(const ConfigKey *k, char *buf, size_t n) {
    char lo[32], hi[32];
    format_number(lo, sizeof lo, k->min, 0);
    format_number(hi, sizeof hi, k->max, 0);
    if (is_int_type(k->type) && k->max >= NO_MAX)
        snprintf(buf, n, ">= %s", lo);
    else
        snprintf(buf, n, "in %c%s, %s%c", (k->flags & MIN_OPEN) ? '(' : '[', lo, hi, (k->flags & MAX_OPEN) ? ')' : ']');
}

// What a key accepts, as a phrase completing "expected ...".
static void key_expect(const ConfigKey *k, char *buf, size_t n) {
    char range[96], count[64];
    range_text(k, range, sizeof range);
    if (k->min_count == k->max_count)
        snprintf(count, sizeof count, "exactly %d comma-separated", k->max_count);
    else if (k->min_count == 0)
        snprintf(count, sizeof count, "a comma-separated list of up to %d", k->max_count);
    else
        snprintf(count, sizeof count, "a comma-separated list of %d to %d", k->min_count, k->max_count);
    switch (k->type) {
    case T_INT: snprintf(buf, n, "an integer %s", range); break;
    case T_FLOAT: snprintf(buf, n, "a number %s", range); break;
    case T_BOOL: snprintf(buf, n, "true or false (or yes/no, on/off, 1/0)"); break;
    case T_STRING:
        snprintf(buf, n, "%stext of at most %zu bytes", (k->flags & NONEMPTY) ? "non-empty " : "", k->size - 1);
        break;
    case T_ENUM: {
        size_t used = (size_t)snprintf(buf, n, "one of ");
        for (int i = 0; k->choices[i] && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", k->choices[i]);
        break;
    }
    case T_INT_LIST: snprintf(buf, n, "%s integers %s", count, range); break;
    case T_FLOAT_LIST: snprintf(buf, n, "%s numbers %s", count, range); break;
    case T_STRING_LIST: snprintf(buf, n, "%s distinct names of at most %zu bytes", count, k->size - 1); break;
    }
}

static int in_range(const ConfigKey *k, double v) {
    if (v < k->min || ((k->flags & MIN_OPEN) && v == k->min)) return 0;
    if (v > k->max || ((k->flags & MAX_OPEN) && v == k->max)) return 0;
    return 1;
}

static int parse_int(const ConfigKey *k, const char *s, int *out) {
    long v;
    if (!dt_parse_int(s, INT_MIN, INT_MAX, &v) || !in_range(k, (double)v)) return 0;
    *out = (int)v;
    return 1;
}

static int parse_double(const ConfigKey *k, const char *s, double *out, char *why, size_t whyn) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end) return 0;
    if (!isfinite(v)) {
        snprintf(why, whyn, "not a finite number");
        return 0;
    }
    if (!in_range(k, v)) return 0;
    *out = v;
    return 1;
}

// Clean text: valid UTF-8 without control characters.
static int text_ok(const char *s, char *why, size_t whyn) {
    size_t n = strlen(s);
    if (utf8_valid_prefix(s, n) != n) {
        snprintf(why, whyn, "not valid UTF-8");
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            snprintf(why, whyn, "contains a control character");
            return 0;
        }
    return 1;
}

static int parse_list(const ConfigKey *k, char *text, Config *c, char *why, size_t whyn) {
    char *base = field(c, k);
    size_t stride = k->type == T_INT_LIST ? sizeof(int) : k->type == T_FLOAT_LIST ? sizeof(double) : k->size;
    memset(base, 0, stride * (size_t)k->max_count);
    int n = 0;
    char *p = *text ? text : NULL; // an empty text is the empty list
    while (p) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        char *item = trim(p);
        if (n == k->max_count) {
            snprintf(why, whyn, "more than %d items", k->max_count);
            return 0;
        }
        if (!*item) {
            snprintf(why, whyn, "item %d is empty", n + 1);
            return 0;
        }
        char *slot = base + stride * (size_t)n;
        if (k->type == T_INT_LIST) {
            if (!parse_int(k, item, (int *)(void *)slot)) {
                snprintf(why, whyn, "item %d is '%.40s'", n + 1, item);
                return 0;
            }
        } else if (k->type == T_FLOAT_LIST) {
            char inner[64] = "";
            if (!parse_double(k, item, (double *)(void *)slot, inner, sizeof inner)) {
                snprintf(why, whyn, "item %d is '%.40s'%s%s", n + 1, item, inner[0] ? ": " : "", inner);
                return 0;
            }
        } else {
            if (strlen(item) >= k->size) {
                snprintf(why, whyn, "item %d is longer than %zu bytes", n + 1, k->size - 1);
                return 0;
            }
            if (!text_ok(item, why, whyn)) return 0;
            for (int j = 0; j < n; j++)
                if (!strcmp(base + stride * (size_t)j, item)) {
                    snprintf(why, whyn, "'%.40s' appears twice", item);
                    return 0;
                }
            strcpy(slot, item);
        }
        n++;
        p = comma ? comma + 1 : NULL;
    }
    if (n < k->min_count) {
        snprintf(why, whyn, "%d given", n);
        return 0;
    }
    *count_field(c, k) = n;
    return 1;
}

// Parses trimmed text into the field of k. Returns 0 when the value is not acceptable, with an optional detail.
static int value_parse(const ConfigKey *k, char *text, Config *c, char *why, size_t whyn) {
    void *f = field(c, k);
    switch (k->type) {
    case T_INT: return parse_int(k, text, f);
    case T_FLOAT: return parse_double(k, text, f, why, whyn);
    case T_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            int v = !strcasecmp(text, yes[i]) ? 1 : !strcasecmp(text, no[i]) ? 0 : -1;
            if (v >= 0) {
                *(int *)f = v;
                return 1;
            }
        }
        return 0;
    }
    case T_STRING: {
        size_t n = strlen(text);
        if (n >= 2 && text[0] == '"' && text[n - 1] == '"') { // quotes keep whitespace and allow ""
            text[n - 1] = 0;
            text++;
            n -= 2;
        }
        if (n >= k->size || ((k->flags & NONEMPTY) && n == 0)) return 0;
        if (!text_ok(text, why, whyn)) return 0;
        memset(f, 0, k->size);
        memcpy(f, text, n);
        return 1;
    }
    case T_ENUM: {
        int best = -1, bestd = INT_MAX;
        for (int i = 0; k->choices[i]; i++) {
            if (!strcmp(text, k->choices[i])) {
                memcpy(f, &i, sizeof i);
                return 1;
            }
            int d = edit_distance(text, k->choices[i]);
            if (d < bestd) bestd = d, best = i;
        }
        if (best >= 0 && near_miss(text, bestd)) snprintf(why, whyn, "did you mean '%s'?", k->choices[best]);
        return 0;
    }
    case T_INT_LIST:
    case T_FLOAT_LIST:
    case T_STRING_LIST: return parse_list(k, text, c, why, whyn);
    }
    return 0;
}

// Applies one value; `where` is "file:line" or "command line" for the error line.
static void value_apply(const ConfigKey *k, const char *raw, Config *c, const char *where) {
    char *copy = xstrdup(raw), why[160] = "";
    if (!value_parse(k, trim(copy), c, why, sizeof why)) {
        char expect[256], show[80];
        key_expect(k, expect, sizeof expect);
        dt_user_error("%s: %s.%s = '%s': expected %s%s%s%s", where, k->section, k->key, shown(show, sizeof show, raw),
                      expect, why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
    free(copy);
}

// The value as INI text: reads back to the same field.
static void value_write(FILE *f, const ConfigKey *k, const Config *c) {
    const void *p = cfield(c, k);
    char num[40];
    switch (k->type) {
    case T_INT: fprintf(f, "%d", *(const int *)p); break;
    case T_FLOAT:
        format_number(num, sizeof num, *(const double *)p, 1);
        fputs(num, f);
        break;
    case T_BOOL: fputs(*(const int *)p ? "true" : "false", f); break;
    case T_STRING: {
        const char *s = p;
        size_t n = strlen(s);
        int quote = n == 0 || isspace((unsigned char)s[0]) || isspace((unsigned char)s[n - 1]) ||
                    (n >= 2 && s[0] == '"' && s[n - 1] == '"');
        fprintf(f, quote ? "\"%s\"" : "%s", s);
        break;
    }
    case T_ENUM: {
        int v;
        memcpy(&v, p, sizeof v);
        int n = 0;
        while (k->choices[n]) n++;
        CHECK(v >= 0 && v < n, "an enum field holds a value outside its schema", "%s.%s = %d", k->section, k->key, v);
        fputs(k->choices[v], f);
        break;
    }
    case T_INT_LIST:
    case T_FLOAT_LIST:
    case T_STRING_LIST:
        for (int i = 0; i < count_of(c, k); i++) {
            if (i) fputs(", ", f);
            if (k->type == T_INT_LIST) {
                fprintf(f, "%d", ((const int *)p)[i]);
            } else if (k->type == T_FLOAT_LIST) {
                format_number(num, sizeof num, ((const double *)p)[i], 1);
                fputs(num, f);
            } else {
                fputs((const char *)p + k->size * (size_t)i, f);
            }
        }
        break;
    }
}

static char *value_text(const ConfigKey *k, const Config *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f, "", "open_memstream failed");
    value_write(f, k, c);
    fclose(f);
    return text;
}

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < N_KEYS; i++) {
        const ConfigKey *k = &KEYS[i];
        CHECK(section_known(k->section), "add the section to SECTIONS", "key %s.%s has no section", k->section, k->key);
        char *copy = xstrdup(k->def), why[160] = "";
        CHECK(value_parse(k, copy, c, why, sizeof why), "fix the schema", "default of %s.%s is invalid: '%s' %s",
              k->section, k->key, k->def, why);
        free(copy);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// INI files (inih)

#define CONFIG_LINE_MAX 4096

typedef struct {
    Config *cfg;
    const char *name;      // file name in messages
    const char *pos, *end; // input not yet handed to inih
    int line;              // number of the line inih holds
    int seen[N_KEYS];      // line of each key's assignment; 0 = not set
} IniParse;

static int line_of(const char *text, size_t offset) {
    int line = 1;
    for (size_t i = 0; i < offset; i++) line += text[i] == '\n';
    return line;
}

// Rejects an unknown [section] header as soon as it is read (inih reports keys only, so an empty unknown section
// would otherwise pass silently).
static void section_check(const IniParse *p, const char *line) {
    if (p->line == 1 && !strncmp(line, "\xEF\xBB\xBF", 3)) line += 3;
    while (isspace((unsigned char)*line)) line++;
    const char *close = strchr(line, ']');
    if (*line != '[' || !close) return; // not a header, or a malformed one that inih reports
    char name[64], trimmed[64], show[80], known[128];
    snprintf(name, sizeof name, "%.*s", (int)(close - line - 1), line + 1);
    if (section_known(name)) return;
    strcpy(trimmed, name);
    const char *near = section_suggest(trim(trimmed));
    section_list(known, sizeof known);
    if (near)
        dt_user_error("%s:%d: unknown section [%s] (did you mean [%s]?)", p->name, p->line,
                      shown(show, sizeof show, name), near);
    dt_user_error("%s:%d: unknown section [%s] (sections: %s)", p->name, p->line, shown(show, sizeof show, name),
                  known);
}

static char *ini_read_line(char *buf, int size, void *user) {
    IniParse *p = user;
    if (p->pos >= p->end) return NULL;
    const char *nl = memchr(p->pos, '\n', (size_t)(p->end - p->pos));
    size_t n = nl ? (size_t)(nl - p->pos) + 1 : (size_t)(p->end - p->pos);
    p->line++;
    size_t text_len = nl ? n - 1 : n;
    if (text_len && p->pos[text_len - 1] == '\r') text_len--;
    if (text_len > CONFIG_LINE_MAX)
        dt_user_error("%s:%d: line longer than %d bytes", p->name, p->line, CONFIG_LINE_MAX);
    CHECK(n < (size_t)size, "ini_max_line too small", "line of %zu bytes, buffer %d", n, size);
    memcpy(buf, p->pos, n);
    buf[n] = 0;
    p->pos += n;
    section_check(p, buf);
    return buf;
}

static int ini_handle(void *user, const char *section, const char *name, const char *value) {
    IniParse *p = user;
    const ConfigKey *k = key_find(section, name);
    char show[80], where[1100];
    if (!k) {
        const ConfigKey *near = key_suggest(section, name);
        char hint[160] = "";
        if (near && !strcmp(near->section, section))
            snprintf(hint, sizeof hint, " (did you mean '%s'?)", near->key);
        else if (near)
            snprintf(hint, sizeof hint, " (did you mean '%s' in [%s]?)", near->key, near->section);
        if (!section[0])
            dt_user_error("%s:%d: key '%s' before any [section] header%s", p->name, p->line,
                          shown(show, sizeof show, name), hint);
        dt_user_error("%s:%d: unknown key '%s' in [%s]%s", p->name, p->line, shown(show, sizeof show, name), section,
                      hint);
    }
    int i = (int)(k - KEYS);
    if (p->seen[i])
        dt_user_error("%s:%d: duplicate key %s.%s (first set at line %d)", p->name, p->line, k->section, k->key,
                      p->seen[i]);
    p->seen[i] = p->line;
    snprintf(where, sizeof where, "%s:%d", p->name, p->line);
    value_apply(k, value, p->cfg, where);
    return 1;
}

static void ini_parse_text(Config *c, const char *text, size_t len, const char *name) {
    const char *nul = memchr(text, 0, len);
    if (nul) dt_user_error("%s:%d: NUL byte (not a text file?)", name, line_of(text, (size_t)(nul - text)));
    size_t valid = utf8_valid_prefix(text, len);
    if (valid < len) dt_user_error("%s:%d: invalid UTF-8", name, line_of(text, valid));

    IniParse p = {.cfg = c, .name = name, .pos = text, .end = text + len};
    // libinih's run-time settings: no continuation lines, no comments after values (a value may hold ';' or '#'),
    // long lines, stop at the first malformed line.
    bool multiline = ini_allow_multiline, inline_comments = ini_allow_inline_comments;
    bool stop = ini_stop_on_first_error;
    int max_line = ini_max_line;
    ini_allow_multiline = false;
    ini_allow_inline_comments = false;
    ini_stop_on_first_error = true;
    ini_max_line = CONFIG_LINE_MAX + 3;
    int r = ini_parse_stream(ini_read_line, &p, ini_handle, &p);
    ini_allow_multiline = multiline;
    ini_allow_inline_comments = inline_comments;
    ini_stop_on_first_error = stop;
    ini_max_line = max_line;
    if (r > 0) {
        const char *s = text;
        for (int l = 1; l < r; l++) s = strchr(s, '\n') + 1;
        size_t n = strcspn(s, "\r\n");
        char line[128], show[80];
        snprintf(line, sizeof line, "%.*s", (int)(n < 100 ? n : 100), s);
        dt_user_error("%s:%d: cannot parse '%s' (expected '[section]' or 'key = value')", name, r,
                      shown(show, sizeof show, trim(line)));
    }
    CHECK(r == 0, "", "ini_parse_stream failed (%d)", r);
}

void config_parse_file(Config *c, const char *path) {
    size_t len;
    char *text = dt_read_file(path, &len);
    ini_parse_text(c, text, len, path);
    free(text);
}

void config_parse_string(Config *c, const char *text, const char *name) { ini_parse_text(c, text, strlen(text), name); }

// ---------------------------------------------------------------------------------------------------------------
// command-line overrides

void config_apply_overrides(Config *c, int n, char *const *args) {
    int seen[N_KEYS] = {0};
    for (int a = 0; a < n; a++) {
        const char *arg = args[a], *eq = strchr(arg, '=');
        char show[80];
        if (strncmp(arg, "--", 2) != 0 || !eq)
            dt_user_error("unexpected argument '%s' (an override is --section.key=value)",
                          shown(show, sizeof show, arg));
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - arg - 2 < 120 ? eq - arg - 2 : 120), arg + 2);
        char *dot = strchr(name, '.');
        if (!dot) dt_user_error("option --%s: expected --section.key=value", shown(show, sizeof show, name));
        *dot = 0;
        const char *section = name, *key = dot + 1;
        const ConfigKey *k = key_find(section, key);
        if (!k) {
            const ConfigKey *near = key_suggest(section, key);
            char known[128];
            section_list(known, sizeof known);
            if (near)
                dt_user_error("unknown option --%s.%s (did you mean --%s.%s?)", section, key, near->section, near->key);
            if (!section_known(section))
                dt_user_error("unknown option --%s.%s (no section [%s]; sections: %s)", section, key, section, known);
            dt_user_error("unknown option --%s.%s (no key '%s' in [%s])", section, key, key, section);
        }
        int i = (int)(k - KEYS);
        if (seen[i]) dt_user_error("option --%s.%s given twice", k->section, k->key);
        seen[i] = 1;
        value_apply(k, eq + 1, c, "command line");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// cross-field rules

static int uses_k(const Config *c) {
    return c->method.name == METHOD_DRTUNE || c->method.name == METHOD_DRAFT || c->method.name == METHOD_ALIGNPROP;
}
static int uses_early_stop(const Config *c) { return c->method.name == METHOD_DRTUNE || c->method.name == METHOD_REFL; }

static void rule_steps(const Config *c) {
    if (uses_k(c) && c->method.k > c->sampler.steps)
        dt_user_error("method.k = %d exceeds sampler.steps = %d (%s trains k of the sampling steps)", c->method.k,
                      c->sampler.steps, method_name(c->method.name));
    if (uses_early_stop(c) && c->method.m > c->sampler.steps)
        dt_user_error("method.m = %d exceeds sampler.steps = %d (the early stop is one of the sampling steps)",
                      c->method.m, c->sampler.steps);
    if (c->method.name == METHOD_REFL && c->method.m == 0)
        dt_user_error("method.m = 0 (no early stop) does not apply to refl, which reads the reward at a step drawn "
                      "from 1..m; set method.m >= 1");
}

static void rule_t_min(const Config *c) {
    int t = c->method.t_min;
    if (t == -1) return;
    if (!uses_early_stop(c))
        dt_user_error("method.t_min = %d is only used by drtune and refl, not %s (set it to -1)",
                      t, method_name(c->method.name));
    if (c->method.m == 0) dt_user_error("method.t_min = %d needs an early stop, but method.m = 0", t);
    if (t < 1 || t > c->method.m)
        dt_user_error("method.t_min = %d is outside 1..%d (method.m), or -1 for a random draw", t, c->method.m);
}

// The largest t_min the run can draw (1 without early stop: the chain runs to the end).
static int t_min_largest(const Config *c) {
    if (c->method.t_min != -1) return c->method.t_min;
    return c->method.m > 0 ? c->method.m : 1;
}

static void rule_drtune(const Config *c) {
    const int N = c->sampler.steps, K = c->method.k;
    if (c->method.draw_in_executed) {
        if (c->method.name != METHOD_DRTUNE)
            dt_user_error("method.draw_in_executed is only used by drtune, not %s (set it to false)",
                          method_name(c->method.name));
        int tmax = t_min_largest(c);
        if (K > N - tmax + 1)
            dt_user_error("method.draw_in_executed: method.k = %d does not fit in the executed steps %d..%d "
                          "(sampler.steps = %d, largest t_min = %d)",
                          K, tmax, N, N, tmax);
    }
    int p = c->method.phase;
    if (p == -1) return;
    if (c->method.name != METHOD_DRTUNE)
        dt_user_error("method.phase = %d is only used by drtune, not %s (set it to -1)",
                      p, method_name(c->method.name));
    // the phase must suit every range the steps are spaced in: [1, N], or [t_min, N] for each t_min drawn
    int lo = 1, hi = 1;
    if (c->method.draw_in_executed) lo = c->method.t_min != -1 ? c->method.t_min : 1, hi = t_min_largest(c);
    int bound = INT_MAX;
    for (int t = lo; t <= hi; t++) {
        int n = N - t + 1, b = n / K + n % K;
        if (b < bound) bound = b;
    }
    if (p < 1 || p > bound)
        dt_user_error("method.phase = %d is outside 1..%d (s + n mod K with s = floor(n / K), n = %d steps spaced, "
                      "K = method.k = %d), or -1 for a random draw",
                      p, bound, N - hi + 1, K);
}

static void rule_k_fixed(const Config *c) {
    int k = c->method.k_fixed;
    if (k == -1) return;
    if (c->method.name != METHOD_ALIGNPROP)
        dt_user_error("method.k_fixed = %d is only used by alignprop, not %s (set it to -1)",
                      k, method_name(c->method.name));
    if (k < 1 || k > c->method.k)
        dt_user_error("method.k_fixed = %d is outside 1..%d (method.k), or -1 for a random draw", k, c->method.k);
}

static void rule_image(const Config *c) {
    if (c->sampler.height % 8 || c->sampler.width % 8)
        dt_user_error("sampler.height = %d and sampler.width = %d must be multiples of 8 (the VAE downsamples by 8)",
                      c->sampler.height, c->sampler.width);
}

// User error unless name is a built-in reward; `key` names the configuration key in the message.
static void check_reward_name(const char *key, const char *name, const char *known) {
    const char *best = NULL;
    int bestd = INT_MAX, found = 0;
    char *scan = xstrdup(known), *save = NULL;
    for (char *w = strtok_r(scan, ", ", &save); w; w = strtok_r(NULL, ", ", &save)) {
        int d = edit_distance(name, w);
        found |= !strcmp(name, w);
        if (d < bestd) bestd = d, best = w;
    }
    if (!found) {
        char hint[96] = "";
        if (best && near_miss(name, bestd)) snprintf(hint, sizeof hint, "did you mean '%s'? ", best);
        dt_user_error("%s: unknown reward '%s' (%sknown: %s)", key, name, hint, known);
    }
    free(scan);
}

static void rule_rewards(const Config *c) {
    if (c->reward.n_weights != c->reward.n_names)
        dt_user_error("reward.weights has %d value(s) but reward.names has %d name(s); give one weight per reward",
                      c->reward.n_weights, c->reward.n_names);
    if (c->reward.n_scales && c->reward.n_scales != c->reward.n_names)
        dt_user_error("reward.scales has %d value(s) but reward.names has %d name(s); give one scale per reward or "
                      "none", c->reward.n_scales, c->reward.n_names);
    const char *known = reward_known_names();
    for (int i = 0; i < c->reward.n_names; i++) {
        const char *name = c->reward.names[i];
        check_reward_name("reward.names", name, known);
        static const struct {
            const char *name, *key;
            size_t off;
        } learned[] = {{"hps", "hps_path", offsetof(Config, reward.hps_path)},
                       {"pickscore", "pickscore_path", offsetof(Config, reward.pickscore_path)},
                       {"clipscore", "clipscore_path", offsetof(Config, reward.clipscore_path)},
                       {"aesthetic", "aesthetic_path", offsetof(Config, reward.aesthetic_path)},
                       {"aesthetic", "aesthetic_clip_path", offsetof(Config, reward.aesthetic_clip_path)}};
        for (size_t k = 0; k < sizeof learned / sizeof learned[0]; k++)
            if (!strcmp(name, learned[k].name) && !((const char *)c + learned[k].off)[0])
                dt_user_error("reward '%s' needs reward.%s (its model; docs/REWARDS.md)", name, learned[k].key);
    }
    if (c->retrain.target[0]) check_reward_name("retrain.target", c->retrain.target, known);
    for (int i = 0; i < c->retrain.n_guards; i++) check_reward_name("retrain.guards", c->retrain.guards[i], known);
}

void config_reward_weights(const Config *c, double *w) {
    for (int i = 0; i < c->reward.n_names; i++)
        w[i] = c->reward.weights[i] / (c->reward.n_scales ? c->reward.scales[i] : 1.0);
}

static void rule_train(const Config *c) {
    if (c->train.warmup > c->train.iterations)
        dt_user_error("train.warmup = %d exceeds train.iterations = %d", c->train.warmup, c->train.iterations);
    if (c->output.export_mode == EXPORT_LORA && c->train.trainable == TRAINABLE_FULL)
        dt_user_error("output.export = lora needs train.trainable = lora (full fine-tuning has no adapters; use "
                      "merged)");
}

static const struct {
    void (*check)(const Config *c);
    const char *doc;
} RULES[] = {
    {rule_steps, "`method.k` <= `sampler.steps` (drtune, draft, alignprop); `method.m` <= `sampler.steps` (drtune, "
                 "refl); refl needs `method.m` >= 1."},
    {rule_t_min, "`method.t_min` is -1 or in 1..`method.m` (drtune and refl only)."},
    {rule_drtune, "`method.draw_in_executed` is drtune only, and `method.k` steps must fit in [t_min, N] for the "
                  "largest t_min; `method.phase` is -1 (drtune only) or in 1..s + n mod K, s = floor(n / K), for "
                  "the n steps the trained steps are spaced in."},
    {rule_k_fixed, "`method.k_fixed` is -1 or in 1..`method.k` (alignprop only)."},
    {rule_image, "`sampler.height` and `sampler.width` are multiples of 8."},
    {rule_rewards, "`reward.weights` has one weight per name of `reward.names` (`reward.scales` one scale per name, or none), "
                   "every name there, in "
                   "`retrain.target` and in `retrain.guards` is a known reward, and every learned reward has its model "
                   "path."},
    {rule_train, "`train.warmup` <= `train.iterations`; `output.export = lora` needs `train.trainable = lora`."},
};

void config_validate(const Config *c) {
    for (size_t i = 0; i < sizeof RULES / sizeof RULES[0]; i++) RULES[i].check(c);
}

void config_load(Config *c, const char *path, int n_overrides, char *const *overrides) {
    config_defaults(c);
    if (path) config_parse_file(c, path);
    config_apply_overrides(c, n_overrides, overrides);
    config_validate(c);
}

size_t config_to_ini(const Config *c, char **text) {
    size_t len = 0;
    FILE *f = open_memstream(text, &len);
    CHECK(f, "", "open_memstream failed");
    fprintf(f, "# drtune configuration, resolved (defaults, then the file, then command-line overrides)\n");
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "\n[%s]\n", SECTIONS[s].name);
        for (int i = 0; i < N_KEYS; i++) {
            if (strcmp(KEYS[i].section, SECTIONS[s].name) != 0) continue;
            fprintf(f, "%s = ", KEYS[i].key);
            value_write(f, &KEYS[i], c);
            fputc('\n', f);
        }
    }
    fclose(f);
    return len;
}

// ---------------------------------------------------------------------------------------------------------------
// help and docs

static void key_metavar(const ConfigKey *k, char *buf, size_t n) {
    switch (k->type) {
    case T_INT: snprintf(buf, n, "INT"); break;
    case T_FLOAT: snprintf(buf, n, "NUM"); break;
    case T_BOOL: snprintf(buf, n, "BOOL"); break;
    case T_STRING: snprintf(buf, n, (k->flags & IS_PATH) ? "PATH" : "TEXT"); break;
    case T_ENUM: {
        size_t used = 0;
        buf[0] = 0;
        for (int i = 0; k->choices[i] && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? "|" : "", k->choices[i]);
        break;
    }
    case T_INT_LIST: snprintf(buf, n, "INT,..."); break;
    case T_FLOAT_LIST: snprintf(buf, n, "NUM,..."); break;
    case T_STRING_LIST: snprintf(buf, n, "NAME,..."); break;
    }
}

static const char *key_type_name(const ConfigKey *k) {
    static const char *const names[] = {"integer", "number", "boolean", "text", "choice",
                                        "integer list", "number list", "name list"};
    return (k->type == T_STRING && (k->flags & IS_PATH)) ? "path" : names[k->type];
}

void config_print_help(FILE *f) {
    Config def;
    config_defaults(&def);
    fputs("configuration: defaults, then the INI file (--config FILE: [section] headers, key = value lines, # or ;\n"
          "comment lines), then overrides --section.key=value in order. Lists are comma-separated; wrap text in\n"
          "double quotes to keep surrounding spaces. docs/CONFIG.md has the same reference.\n",
          f);
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "\n[%s] %s\n", SECTIONS[s].name, SECTIONS[s].about);
        for (int i = 0; i < N_KEYS; i++) {
            const ConfigKey *k = &KEYS[i];
            if (strcmp(k->section, SECTIONS[s].name) != 0) continue;
            char opt[160], meta[64], expect[256];
            key_metavar(k, meta, sizeof meta);
            snprintf(opt, sizeof opt, "--%s.%s=%s", k->section, k->key, meta);
            key_expect(k, expect, sizeof expect);
            char *d = value_text(k, &def);
            if (strlen(opt) > 36) fprintf(f, "  %s\n", opt); // the help goes below a long option
            fprintf(f, "  %-36s %s\n  %-36s default %s; %s\n", strlen(opt) > 36 ? "" : opt, k->help, "", d, expect);
            free(d);
        }
    }
    fprintf(f, "\nrules across keys:\n");
    for (size_t i = 0; i < sizeof RULES / sizeof RULES[0]; i++) {
        fputs("  - ", f);
        for (const char *p = RULES[i].doc; *p; p++)
            if (*p != '`') fputc(*p, f);
        fputc('\n', f);
    }
}

// A table cell: '|' escaped.
static void md_cell(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|') fputc('\\', f);
        fputc(*s, f);
    }
}

void config_write_markdown(FILE *f) {
    Config def;
    config_defaults(&def);
    fputs("# Configuration reference\n\n"
          "<!-- Generated by config_write_markdown() in src/train/config.c; tests/train_config.c fails when this file\n"
          "     differs. Regenerate with: build/tests/train_config --write-docs -->\n\n"
          "`drtune train --config FILE [--section.key=value ...]` starts from the defaults below, applies the INI\n"
          "file, then the command-line overrides in order, then checks the rules at the end of this page. The\n"
          "resolved configuration is stored with the run and in its checkpoints as INI text that reads back to the\n"
          "same configuration. `drtune train --help` prints this reference.\n\n"
          "Syntax:\n\n"
          "- `[section]` headers and `key = value` lines (UTF-8, at most 4096 bytes a line). Lines starting with `#`\n"
          "  or `;` are comments; there are no comments after a value, so a value may contain `#` and `;`.\n"
          "- Each key at most once. An unknown section or key is an error, with a suggestion for a near miss.\n"
          "- Booleans: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`. Lists: comma-separated; spaces around items\n"
          "  are ignored. Integers are written plainly: digits with an optional `-` (not `+3`, `3.0` or `0x3`).\n"
          "- Text loses surrounding whitespace; wrap it in double quotes to keep it (`\"\"` is the empty text).\n"
          "- An override is one argument `--section.key=value` with the same rules; each key at most once.\n\n"
          "Every error ends the program with one line `drtune: error: ...` naming the file and line (or the option)\n"
          "and the key, and exit code 2.\n",
          f);
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "\n## [%s]\n\n%s\n\n", SECTIONS[s].name, SECTIONS[s].about);
        fputs("| key | type | default | accepted | meaning |\n|---|---|---|---|---|\n", f);
        for (int i = 0; i < N_KEYS; i++) {
            const ConfigKey *k = &KEYS[i];
            if (strcmp(k->section, SECTIONS[s].name) != 0) continue;
            char expect[256];
            key_expect(k, expect, sizeof expect);
            char *d = value_text(k, &def);
            fprintf(f, "| `%s` | %s | `", k->key, key_type_name(k));
            md_cell(f, d);
            fputs("` | ", f);
            md_cell(f, expect);
            fputs(" | ", f);
            md_cell(f, k->help);
            fputs(" |\n", f);
            free(d);
        }
    }
    fputs("\n## Rules across keys\n\nChecked after the file and the overrides are applied:\n\n", f);
    for (size_t i = 0; i < sizeof RULES / sizeof RULES[0]; i++) fprintf(f, "- %s\n", RULES[i].doc);
}
