// cmd_probe.c: `drtune probe` runs one model component on tensors from a safetensors file and writes its outputs (and
// input and parameter gradients) under the fixtures' names, so any reference can be compared with drtune on any input.
// A probe is one short process: what it allocates lives until exit.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/common.h"
#include "io/safetensors.h"
#include "models/pipeline.h"

static void probe_usage(FILE *f) {
    fprintf(f,
            "usage: drtune probe --model DIR --component C --inputs FILE --out FILE [--grad FILE]\n"
            "\n"
            "Runs one component on the tensors of --inputs and writes its outputs to --out (safetensors, fp32).\n"
            "With --grad, a safetensors file holding the upstream gradient `dout` (the shape of the output), it\n"
            "also writes the input gradient and every parameter gradient as grad.<parameter name>, i.e. the\n"
            "gradients of sum(output * dout). Tensor names are those of tests/fixtures/*_ref.safetensors, so a\n"
            "fixture file can serve as --inputs and --grad. --model is a pipeline folder or the component's own\n"
            "folder. Inputs may be stored as F32, F16 or BF16 (ids as I32 or I64).\n"
            "\n"
            "components:\n"
            "  unet            in:   sample [B, C, H, W], timestep [B] or [1], encoder_hidden_states [B, T, D];\n"
            "                        text_embeds [B, P] and time_ids [B, 6] for text_time (SDXL) UNets\n"
            "                  out:  out [B, C, H, W]\n"
            "                  grad: grad_sample, grad.<param> for every parameter\n"
            "  vae-decoder     in:   latents [B, 4, h, w] (divided by scaling_factor inside, as the pipelines do)\n"
            "                  out:  image [B, 3, 8h, 8w]\n"
            "                  grad: grad_latents, grad.<param> for decoder.* and post_quant_conv.*\n"
            "  vae-encoder     in:   image_in [B, 3, H, W]\n"
            "                  out:  enc_moments (quant_conv output), enc_mean, enc_logvar (clamped to [-30, 20])\n"
            "  text-encoder    in:   input_ids [B, T]\n"
            "  text-encoder-2  out:  hidden_states.0 .. hidden_states.N (0: embeddings, i: after layer i),\n"
            "                        last_hidden_state, pooled (projected for CLIPTextModelWithProjection, which also\n"
            "                        writes pooled_unprojected)\n"
            "  tokenizer       in:   a text file, one prompt per line (UTF-8)\n"
            "  tokenizer-2     out:  input_ids [N, 77] (i32)\n"
            "Gradients exist for unet and vae-decoder; the text encoders and the VAE encoder are forward only.\n");
}

typedef enum { PROBE_UNET, PROBE_VAE_DEC, PROBE_VAE_ENC, PROBE_TEXT, PROBE_TOKENIZER } ProbeKind;

typedef struct {
    const char *name;   // --component value
    const char *folder; // folder inside a pipeline folder
    const char *marker; // file that identifies the component's own folder
    ProbeKind kind;
} ProbeComponent;

static const ProbeComponent PROBES[] = {
    {"unet", "unet", "config.json", PROBE_UNET},
    {"vae-decoder", "vae", "config.json", PROBE_VAE_DEC},
    {"vae-encoder", "vae", "config.json", PROBE_VAE_ENC},
    {"text-encoder", "text_encoder", "config.json", PROBE_TEXT},
    {"text-encoder-2", "text_encoder_2", "config.json", PROBE_TEXT},
    {"tokenizer", "tokenizer", "tokenizer_config.json", PROBE_TOKENIZER},
    {"tokenizer-2", "tokenizer_2", "tokenizer_config.json", PROBE_TOKENIZER},
};
#define N_PROBES ((int)(sizeof PROBES / sizeof PROBES[0]))

// ---------------------------------------------------------------------------------------------------------------
// inputs and outputs

typedef struct {
    int n, cap;
    char **names;
    Tensor *tensors;
} OutList;

static void out_add(OutList *o, const char *name, const Tensor *t) {
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 64;
        o->names = xrealloc(o->names, sizeof(char *) * (size_t)o->cap);
        o->tensors = xrealloc(o->tensors, sizeof(Tensor) * (size_t)o->cap);
    }
    o->names[o->n] = xstrdup(name);
    o->tensors[o->n++] = *t;
}

// Every entry of a gradient arena as grad.<name>.
static void out_add_grads(OutList *o, const Arena *g) {
    char name[1100];
    for (int i = 0; i < g->n; i++) {
        snprintf(name, sizeof name, "grad.%s", g->entries[i].name);
        out_add(o, name, &g->entries[i].desc);
    }
}

static void out_write(const OutList *o, const char *path, const char *component) {
    char meta[160];
    snprintf(meta, sizeof meta, "{\"generator\": \"drtune probe\", \"component\": \"%s\"}", component);
    safetensors_write(path, o->n, (const char *const *)o->names, o->tensors, meta);
    for (int i = 0; i < o->n; i++) free(o->names[i]);
    free(o->names);
    free(o->tensors);
}

// A new CPU tensor (owned by the caller, freed with free(t.data)).
static Tensor new_tensor(DType dtype, int ndim, const int64_t *shape) {
    Tensor t = tensor_make(NULL, dtype, DEVICE_CPU, ndim, shape);
    t.data = xaligned_alloc(tensor_bytes(&t) ? tensor_bytes(&t) : 1);
    memset(t.data, 0, tensor_bytes(&t));
    return t;
}
#define NEW_F32(...) \
    new_tensor(DTYPE_F32, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

// Input tensor `name` of the file as fp32 (ids: i32) with ndim dims; a user error when absent or of another rank.
static Tensor read_input(const SafeTensors *st, const char *name, int ndim, int ids) {
    const StTensor *t = safetensors_find(st, name);
    USER_CHECK(t, "'%s': no tensor '%s' (see drtune probe --help for the names)", st->path, name);
    USER_CHECK(t->ndim == ndim, "'%s': tensor '%s' has %d dimensions, probe expects %d", st->path, name, t->ndim,
               ndim);
    Tensor out = new_tensor(ids ? DTYPE_I32 : DTYPE_F32, t->ndim, t->shape);
    safetensors_read_into(st, name, &out);
    return out;
}

static void expect_dim(const SafeTensors *st, const char *name, const Tensor *t, int dim, int64_t want) {
    USER_CHECK(t->shape[dim] == want, "'%s': tensor '%s' has %lld in dimension %d, the model needs %lld", st->path,
               name, (long long)t->shape[dim], dim, (long long)want);
}

// The upstream gradient `dout`, which must have the output's shape.
static Tensor read_dout(const char *path, const Tensor *out) {
    SafeTensors st;
    safetensors_open(&st, path);
    Tensor d = read_input(&st, "dout", out->ndim, 0);
    for (int i = 0; i < out->ndim; i++) expect_dim(&st, "dout", &d, i, out->shape[i]);
    safetensors_close(&st);
    return d;
}

// ---------------------------------------------------------------------------------------------------------------
// components

static void probe_unet(const char *dir, const SafeTensors *in, const char *grad_path, OutList *o) {
    UNet net;
    Arena params;
    pipeline_load_unet(&net, &params, dir);
    const UNetConfig *c = &net.cfg;
    Tensor x = read_input(in, "sample", 4, 0), ctx = read_input(in, "encoder_hidden_states", 3, 0);
    int64_t B = x.shape[0], H = x.shape[2], W = x.shape[3], T = ctx.shape[1], f = 1 << (c->levels - 1);
    expect_dim(in, "sample", &x, 1, c->in_channels);
    USER_CHECK(H % f == 0 && W % f == 0, "'%s': sample is %lld x %lld; this UNet needs multiples of %lld", in->path,
               (long long)H, (long long)W, (long long)f);
    expect_dim(in, "encoder_hidden_states", &ctx, 0, B);
    expect_dim(in, "encoder_hidden_states", &ctx, 2, c->cross_dim);
    Tensor t_in = read_input(in, "timestep", 1, 0), t = NEW_F32(B);
    USER_CHECK(t_in.shape[0] == B || t_in.shape[0] == 1, "'%s': timestep has %lld values for %lld samples", in->path,
               (long long)t_in.shape[0], (long long)B);
    for (int64_t b = 0; b < B; b++) tensor_f32(&t)[b] = tensor_f32(&t_in)[t_in.shape[0] == 1 ? 0 : b];
    Tensor te = {0}, ti = {0};
    if (c->text_time) {
        te = read_input(in, "text_embeds", 2, 0);
        ti = read_input(in, "time_ids", 2, 0);
        expect_dim(in, "text_embeds", &te, 0, B);
        expect_dim(in, "text_embeds", &te, 1, c->text_embed_dim);
        expect_dim(in, "time_ids", &ti, 0, B);
        expect_dim(in, "time_ids", &ti, 1, 6);
    }
    Arena acts;
    UNetActs ua;
    arena_init(&acts, "unet_acts", DEVICE_CPU);
    unet_plan_acts(&acts, &ua, &net, B, H, W, T);
    arena_alloc(&acts);
    Tensor out = NEW_F32(B, c->out_channels, H, W);
    unet_forward(&net, &ua, &out, &x, &t, &ctx, c->text_time ? &te : NULL, c->text_time ? &ti : NULL);
    out_add(o, "out", &out);
    if (grad_path) {
        Tensor dout = read_dout(grad_path, &out), dx = NEW_F32(B, c->in_channels, H, W);
        Arena garena;
        UNet *g = xcalloc(1, sizeof *g);
        arena_init(&garena, "unet_grads", DEVICE_CPU);
        unet_plan_params(&garena, g, c);
        arena_alloc(&garena);
        unet_backward(&net, g, &ua, &dout, &dx, NULL);
        out_add(o, "grad_sample", &dx);
        out_add_grads(o, &garena);
    }
}

static void probe_vae_decoder(const char *dir, const SafeTensors *in, const char *grad_path, OutList *o) {
    VAE *vae = xcalloc(1, sizeof *vae);
    Arena params;
    pipeline_load_vae(vae, &params, dir, VAE_DECODER);
    const VAEConfig *c = &vae->cfg;
    Tensor z = read_input(in, "latents", 4, 0);
    expect_dim(in, "latents", &z, 1, c->latent_channels);
    int64_t B = z.shape[0], h = z.shape[2], w = z.shape[3], f = 1 << (c->levels - 1);
    Arena acts;
    VAEDecodeActs da;
    arena_init(&acts, "vae_acts", DEVICE_CPU);
    vae_plan_decode_acts(&acts, &da, vae, B, h, w);
    arena_alloc(&acts);
    Tensor image = NEW_F32(B, c->out_channels, h * f, w * f);
    vae_decode(vae, &da, &image, &z);
    out_add(o, "image", &image);
    if (grad_path) {
        Tensor dout = read_dout(grad_path, &image), dz = NEW_F32(B, c->latent_channels, h, w);
        Arena garena;
        VAE *g = xcalloc(1, sizeof *g);
        arena_init(&garena, "vae_grads", DEVICE_CPU);
        vae_plan_params(&garena, g, c, VAE_DECODER);
        arena_alloc(&garena);
        vae_decode_backward(vae, g, &da, &dout, &dz);
        out_add(o, "grad_latents", &dz);
        out_add_grads(o, &garena);
    }
}

static void probe_vae_encoder(const char *dir, const SafeTensors *in, OutList *o) {
    VAE *vae = xcalloc(1, sizeof *vae);
    Arena params;
    pipeline_load_vae(vae, &params, dir, VAE_ENCODER);
    const VAEConfig *c = &vae->cfg;
    Tensor image = read_input(in, "image_in", 4, 0);
    int64_t B = image.shape[0], H = image.shape[2], W = image.shape[3], f = 1 << (c->levels - 1);
    expect_dim(in, "image_in", &image, 1, c->in_channels);
    USER_CHECK(H % f == 0 && W % f == 0, "'%s': image_in is %lld x %lld; this VAE needs multiples of %lld", in->path,
               (long long)H, (long long)W, (long long)f);
    Arena acts;
    VAEEncodeActs ea;
    arena_init(&acts, "vae_acts", DEVICE_CPU);
    vae_plan_encode_acts(&acts, &ea, vae, B, H, W);
    arena_alloc(&acts);
    Tensor mean = NEW_F32(B, c->latent_channels, H / f, W / f), logvar = NEW_F32(B, c->latent_channels, H / f, W / f);
    vae_encode(vae, &ea, &mean, &logvar, &image);
    out_add(o, "enc_moments", &ea.moments);
    out_add(o, "enc_mean", &mean);
    out_add(o, "enc_logvar", &logvar);
}

static void probe_text(const char *dir, const SafeTensors *in, OutList *o) {
    ClipText m;
    clip_text_load(&m, dir);
    Tensor ids = read_input(in, "input_ids", 2, 1);
    int B = (int)ids.shape[0], T = (int)ids.shape[1], N = m.cfg.layers;
    USER_CHECK(B > 0 && T > 0 && T <= m.cfg.max_pos, "'%s': input_ids has %d tokens per row; the encoder takes 1 to %d",
               in->path, T, m.cfg.max_pos);
    int *keep = xmalloc(sizeof(int) * (size_t)(N + 1));
    for (int i = 0; i <= N; i++) keep[i] = i;
    ClipTextRun *r = xcalloc(1, sizeof *r);
    clip_text_run_init(r, &m, B, T, keep, N + 1, 1);
    clip_text_forward(&m, r, ids.data);
    char name[64];
    for (int i = 0; i <= N; i++) {
        snprintf(name, sizeof name, "hidden_states.%d", i);
        out_add(o, name, clip_text_hidden(r, i));
    }
    out_add(o, "last_hidden_state", &r->last);
    out_add(o, "pooled", m.cfg.with_projection ? &r->projected : &r->pooled);
    if (m.cfg.with_projection) out_add(o, "pooled_unprojected", &r->pooled);
    free(keep);
}

// One prompt per line ('\n' or "\r\n"); a final newline does not start another prompt.
static void probe_tokenizer(const char *dir, const char *text_path, OutList *o) {
    Tokenizer tok;
    pipeline_tokenizer_load(&tok, dir);
    size_t len;
    char *text = dt_read_file(text_path, &len);
    USER_CHECK(strlen(text) == len, "'%s': contains a NUL byte, not a text file", text_path);
    int n = 0;
    for (size_t i = 0; i < len; i++) n += text[i] == '\n';
    n += len > 0 && text[len - 1] != '\n';
    USER_CHECK(n > 0, "'%s': no prompts (one per line)", text_path);
    int L = tok.model_max_length;
    Tensor ids = new_tensor(DTYPE_I32, 2, (int64_t[]){n, L});
    char *line = text;
    for (int i = 0; i < n; i++) {
        char *end = strchr(line, '\n');
        if (end) *end = '\0';
        size_t k = strlen(line);
        if (k && line[k - 1] == '\r') line[k - 1] = '\0';
        tokenizer_encode(&tok, line, (int32_t *)ids.data + (size_t)i * (size_t)L, L);
        line = end ? end + 1 : line + k;
    }
    out_add(o, "input_ids", &ids);
    free(text);
    tokenizer_free(&tok);
}

// ---------------------------------------------------------------------------------------------------------------

// dir itself when it holds the component's marker file, else dir/<folder>.
static char *component_dir(const char *dir, const ProbeComponent *p) {
    size_t n = strlen(dir) + 64;
    char *path = xmalloc(n);
    struct stat sb;
    snprintf(path, n, "%s/%s", dir, p->marker);
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        snprintf(path, n, "%s", dir);
        return path;
    }
    snprintf(path, n, "%s/%s/%s", dir, p->folder, p->marker);
    USER_CHECK(stat(path, &sb) == 0 && S_ISREG(sb.st_mode), "'%s' has neither %s nor %s/%s", dir, p->marker,
               p->folder, p->marker);
    snprintf(path, n, "%s/%s", dir, p->folder);
    return path;
}

static const char *option_value(int argc, char **argv, int *i) {
    USER_CHECK(*i + 1 < argc, "drtune probe: option %s needs a value (see drtune probe --help)", argv[*i]);
    return argv[++*i];
}

int cmd_probe(int argc, char **argv) {
    const char *dir = NULL, *name = NULL, *inputs = NULL, *out_path = NULL, *grad = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            probe_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model")) {
            dir = option_value(argc, argv, &i);
        } else if (!strcmp(argv[i], "--component")) {
            name = option_value(argc, argv, &i);
        } else if (!strcmp(argv[i], "--inputs")) {
            inputs = option_value(argc, argv, &i);
        } else if (!strcmp(argv[i], "--out")) {
            out_path = option_value(argc, argv, &i);
        } else if (!strcmp(argv[i], "--grad")) {
            grad = option_value(argc, argv, &i);
        } else {
            dt_user_error("drtune probe: unknown argument '%s' (see drtune probe --help)", argv[i]);
        }
    }
    USER_CHECK(dir && name && inputs && out_path,
               "drtune probe: --model, --component, --inputs and --out are required (see drtune probe --help)");
    const ProbeComponent *p = NULL;
    for (int i = 0; i < N_PROBES; i++)
        if (!strcmp(PROBES[i].name, name)) p = &PROBES[i];
    USER_CHECK(p, "drtune probe: unknown component '%s' (unet, vae-decoder, vae-encoder, text-encoder, "
               "text-encoder-2, tokenizer, tokenizer-2)", name);
    USER_CHECK(!grad || p->kind == PROBE_UNET || p->kind == PROBE_VAE_DEC,
               "drtune probe: --grad is for unet and vae-decoder; %s is forward only", name);
    char *cdir = component_dir(dir, p);
    OutList o = {0};
    if (p->kind == PROBE_TOKENIZER) {
        probe_tokenizer(cdir, inputs, &o);
    } else {
        SafeTensors in;
        safetensors_open(&in, inputs);
        if (p->kind == PROBE_UNET)
            probe_unet(cdir, &in, grad, &o);
        else if (p->kind == PROBE_VAE_DEC)
            probe_vae_decoder(cdir, &in, grad, &o);
        else if (p->kind == PROBE_VAE_ENC)
            probe_vae_encoder(cdir, &in, &o);
        else
            probe_text(cdir, &in, &o);
        safetensors_close(&in);
    }
    int n = o.n;
    out_write(&o, out_path, name);
    printf("%s: %d tensor%s from %s\n", out_path, n, n == 1 ? "" : "s", name);
    free(cdir);
    return 0;
}
