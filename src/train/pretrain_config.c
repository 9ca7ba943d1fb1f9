// pretrain_config.c: the configuration of `drtune pretrain`, one schema table from which the INI parsing, the
// command-line overrides, the defaults, the resolved INI text and `drtune pretrain --help` are all derived.
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "../core/common.h"
#include "pretrain.h"

typedef enum { P_INT, P_FLOAT, P_STRING, P_LOSS } PKeyType;

typedef struct {
    const char *section, *key;
    PKeyType type;
    size_t offset, size; // size: string buffers
    double min, max;
    const char *def, *help;
} PKey;

#define OFF(f) offsetof(PretrainConfig, f)
#define K_INT(s, k, f, d, lo, hi, h) {s, k, P_INT, OFF(f), 0, lo, hi, d, h}
#define K_FLT(s, k, f, d, lo, hi, h) {s, k, P_FLOAT, OFF(f), 0, lo, hi, d, h}
#define K_STR(s, k, f, d, h) {s, k, P_STRING, OFF(f), sizeof(((PretrainConfig *)0)->f), 0, 0, d, h}

static const PKey KEYS[] = {
    K_STR("model", "config", model.config, "configs/models/tiny",
          "architecture folder: unet/, vae/, text_encoder/ configs and scheduler/ (vocab_size and scaling_factor "
          "are filled in)"),
    K_STR("model", "out", model.out, "data/models/tiny", "the exported diffusers folder"),
    K_INT("data", "seed", data.seed, "0", 0, INT_MAX, "scene seed (src/data/scenes.h)"),
    K_INT("data", "image_size", data.image_size, "32", 8, 1024, "image height and width in pixels"),
    K_INT("data", "vocab_captions", data.vocab_captions, "20000", 1, 10000000,
          "training captions whose words the tokenizer's merges are learnt from"),
    K_INT("data", "latent_cache", data.latent_cache, "20000", 1, 10000000,
          "training scenes encoded once by the frozen VAE for stage 2 (latent mean and log-variance)"),
    K_INT("vae", "iterations", vae.iterations, "3000", 0, INT_MAX, "stage 1: autoencoder iterations"),
    K_INT("vae", "batch", vae.batch, "16", 1, 65536, "stage 1: images per iteration"),
    K_FLT("vae", "lr", vae.lr, "2e-3", 1e-12, 1, "stage 1: AdamW learning rate"),
    K_FLT("vae", "kl_weight", vae.kl_weight, "1e-6", 0, 1e6,
          "stage 1: weight of the KL term (summed over latent elements, averaged over images)"),
    {"vae", "loss", P_LOSS, OFF(vae.loss), 0, 0, 0, "l2", "stage 1: reconstruction loss, l1 or l2 (mean per pixel)"},
    K_INT("unet", "iterations", unet.iterations, "3500", 0, INT_MAX, "stage 2: UNet + text encoder iterations"),
    K_INT("unet", "batch", unet.batch, "64", 1, 65536, "stage 2: latents per iteration"),
    K_FLT("unet", "lr", unet.lr, "1e-3", 1e-12, 1, "stage 2: AdamW learning rate"),
    K_FLT("unet", "cfg_dropout", unet.cfg_dropout, "0.1", 0, 1,
          "stage 2: fraction of captions replaced by \"\" (the unconditional branch of guidance)"),
    K_INT("train", "seed", train.seed, "0", 0, INT_MAX, "seed of initialisation, batches, noise and timesteps"),
    K_INT("train", "warmup", train.warmup, "200", 0, INT_MAX, "iterations of linear warm-up at each stage's start"),
    K_INT("train", "threads", train.threads, "0", 0, 4096, "CPU threads; 0 = all cores"),
    K_FLT("train", "weight_decay", train.weight_decay, "0.0", 0, 1, "AdamW decoupled weight decay"),
    K_FLT("train", "grad_clip", train.grad_clip, "1.0", 0, 1e6, "global L2 gradient-norm limit; 0 = off"),
    K_STR("output", "dir", output.dir, "runs/pretrain", "checkpoints, log.txt, samples and eval grid"),
    K_INT("output", "checkpoint_every", output.checkpoint_every, "500", 0, INT_MAX,
          "checkpoint every N iterations of either stage; 0 = only at the end of each stage"),
    K_INT("output", "keep", output.keep, "2", 0, INT_MAX, "checkpoints kept, newest first; 0 = all"),
    K_INT("output", "log_every", output.log_every, "50", 1, INT_MAX, "a progress line every N iterations"),
    K_INT("eval", "prompts", eval.prompts, "200", 1, 1000000, "held-out captions sampled by --eval"),
    K_INT("eval", "steps", eval.steps, "20", 1, 1000, "DDIM steps"),
    K_FLT("eval", "guidance", eval.guidance, "4.0", 0, 100, "classifier-free guidance scale"),
    K_INT("eval", "batch", eval.batch, "25", 1, 4096, "images per sampling call"),
    K_INT("eval", "seed", eval.seed, "0", 0, INT_MAX, "latent noise seed (sample i: stream (seed, i))"),
};
#define N_KEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

static const PKey *key_find(const char *section, const char *key) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].section, section) && !strcmp(KEYS[i].key, key)) return &KEYS[i];
    return NULL;
}

// Sets one key from text; returns NULL or a message (static storage) saying what was expected.
static const char *key_set(PretrainConfig *c, const PKey *k, const char *v) {
    static char msg[256];
    void *f = (char *)c + k->offset;
    char *end;
    errno = 0;
    switch (k->type) {
    case P_INT: {
        long x;
        if (!dt_parse_int(v, (long)k->min, (long)k->max, &x)) {
            snprintf(msg, sizeof msg, "expected an integer in [%.0f, %.0f]", k->min, k->max);
            return msg;
        }
        *(int *)f = (int)x;
        return NULL;
    }
    case P_FLOAT: {
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x) || x < k->min || x > k->max) {
            snprintf(msg, sizeof msg, "expected a number in [%g, %g]", k->min, k->max);
            return msg;
        }
        *(double *)f = x;
        return NULL;
    }
    case P_STRING:
        if (!*v || strlen(v) >= k->size) {
            snprintf(msg, sizeof msg, "expected non-empty text of at most %zu bytes", k->size - 1);
            return msg;
        }
        snprintf((char *)f, k->size, "%s", v);
        return NULL;
    case P_LOSS:
        if (strcmp(v, "l1") && strcmp(v, "l2")) return "expected l1 or l2";
        *(ReconLoss *)f = strcmp(v, "l1") ? RECON_L2 : RECON_L1;
        return NULL;
    }
    return "unknown key type";
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

typedef struct {
    PretrainConfig *c;
    const char *path;
    FILE *f;
    int line; // of the line inih read last
    unsigned char seen[N_KEYS];
} IniCtx;

// inih's line reader, counting lines for the messages.
static char *ini_read_line(char *str, int num, void *stream) {
    IniCtx *x = stream;
    char *r = fgets(str, num, x->f);
    if (r) x->line++;
    return r;
}

static int ini_handle(void *user, const char *section, const char *name, const char *value) {
    IniCtx *x = user;
    int line = x->line;
    const PKey *k = key_find(section, name);
    USER_CHECK(k, "%s:%d: unknown key '%s.%s' (see drtune pretrain --help)", x->path, line, section, name);
    USER_CHECK(!x->seen[k - KEYS], "%s:%d: '%s.%s' is set twice", x->path, line, section, name);
    x->seen[k - KEYS] = 1;
    char buf[PRETRAIN_PATH_MAX + 64];
    snprintf(buf, sizeof buf, "%s", value);
    char *v = trim(buf);
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') v[n - 1] = 0, v++;
    const char *err = key_set(x->c, k, v);
    USER_CHECK(!err, "%s:%d: %s.%s = '%s': %s", x->path, line, section, name, v, err);
    return 1;
}

void pretrain_config_load(PretrainConfig *c, const char *path, int n_overrides, char *const *overrides) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < N_KEYS; i++) {
        const char *err = key_set(c, &KEYS[i], KEYS[i].def);
        CHECK(!err, "", "default of %s.%s: %s", KEYS[i].section, KEYS[i].key, err);
    }
    if (path) {
        IniCtx x = {c, path, dt_fopen(path, "r"), 0, {0}};
        int rc = ini_parse_stream(ini_read_line, &x, ini_handle, &x);
        fclose(x.f);
        USER_CHECK(rc == 0, "%s:%d: malformed line (expected [section] or key = value)", path, rc);
    }
    unsigned char seen[N_KEYS] = {0};
    for (int i = 0; i < n_overrides; i++) {
        const char *a = overrides[i];
        const char *dot = strchr(a, '.'), *eq = strchr(a, '=');
        USER_CHECK(!strncmp(a, "--", 2) && dot && eq && dot < eq,
                   "override '%s' is not --section.key=value", a);
        char section[64], key[64];
        USER_CHECK(dot - a - 2 < (long)sizeof section && eq - dot - 1 < (long)sizeof key,
                   "override '%s': the name is too long", a);
        snprintf(section, sizeof section, "%.*s", (int)(dot - a - 2), a + 2);
        snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
        const PKey *k = key_find(section, key);
        USER_CHECK(k, "unknown key '%s.%s' in override '%s' (see drtune pretrain --help)", section, key, a);
        USER_CHECK(!seen[k - KEYS], "'%s.%s' is overridden twice", section, key);
        seen[k - KEYS] = 1;
        const char *err = key_set(c, k, eq + 1);
        USER_CHECK(!err, "override %s.%s = '%s': %s", section, key, eq + 1, err);
    }
    USER_CHECK(c->data.image_size % 8 == 0, "data.image_size = %d: expected a multiple of 8", c->data.image_size);
}

static void value_text(const PretrainConfig *c, const PKey *k, char *buf, size_t n) {
    const void *f = (const char *)c + k->offset;
    switch (k->type) {
    case P_INT: snprintf(buf, n, "%d", *(const int *)f); break;
    case P_FLOAT: snprintf(buf, n, "%.17g", *(const double *)f); break;
    case P_STRING: snprintf(buf, n, "%s", (const char *)f); break;
    case P_LOSS: snprintf(buf, n, "%s", *(const ReconLoss *)f == RECON_L1 ? "l1" : "l2"); break;
    }
}

char *pretrain_config_to_ini(const PretrainConfig *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f, "", "open_memstream failed");
    char v[PRETRAIN_PATH_MAX + 32];
    for (int i = 0; i < N_KEYS; i++) {
        if (!i || strcmp(KEYS[i].section, KEYS[i - 1].section)) fprintf(f, "%s[%s]\n", i ? "\n" : "", KEYS[i].section);
        value_text(c, &KEYS[i], v, sizeof v);
        fprintf(f, "%s = %s\n", KEYS[i].key, v);
    }
    fclose(f);
    return text;
}

void pretrain_config_print_help(FILE *f) {
    for (int i = 0; i < N_KEYS; i++) {
        if (!i || strcmp(KEYS[i].section, KEYS[i - 1].section)) fprintf(f, "%s[%s]\n", i ? "\n" : "", KEYS[i].section);
        fprintf(f, "  %-18s %s (default %s)\n", KEYS[i].key, KEYS[i].help, KEYS[i].def);
    }
}
