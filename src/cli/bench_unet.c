// bench_unet.c: the random-weight UNet of the device benchmarks (bench unet, bench gpu) and the FLOP count of its
// forward from the configuration, walking the blocks in the order of unet_plan_params (models/unet.c).
#include "bench_unet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/rng.h"
#include "models/blocks.h"
#include "models/vae.h"
#include "ops/ops.h"

// ---------------------------------------------------------------------------------------------------------------
// FLOPs

// conv k x k, stride 1 (or the downsampler's 2: pass the output size): 2 B OC OH OW IC k^2
static double conv_flops(int64_t B, int64_t cin, int64_t cout, int64_t k, int64_t HWout) {
    return 2.0 * B * HWout * cout * cin * k * k;
}

// ResnetBlock2D at HW pixels: conv1 3x3, time_emb_proj, conv2 3x3, 1x1 shortcut when cin != cout
static void resnet_flops(UNetFlops *f, const UNetConfig *c, int64_t B, int64_t HW, int64_t cin, int64_t cout) {
    f->conv += conv_flops(B, cin, cout, 3, HW) + conv_flops(B, cout, cout, 3, HW);
    if (cin != cout) f->conv += conv_flops(B, cin, cout, 1, HW);
    f->linear += 2.0 * B * c->temb_dim * cout;
}

// Transformer2DModel of `depth` BasicTransformerBlocks on C channels at T = HW tokens, context Tc x cross_dim:
// proj_in and proj_out (linear or 1x1 conv), per block self-attention (q, k, v, out C x C), cross-attention (q, out
// C x C; k, v cross_dim -> C over the context), GEGLU feed-forward (C -> 8C, 4C -> C)
static void transformer_flops(UNetFlops *f, const UNetConfig *c, int64_t B, int64_t T, int64_t C, int depth,
                              int64_t Tc) {
    double proj = 2.0 * 2.0 * B * T * C * C;
    if (c->linear_proj) f->linear += proj;
    else f->conv += proj;
    for (int i = 0; i < depth; i++) {
        f->linear += 4 * 2.0 * B * T * C * C;                                  // attn1 q, k, v, out
        f->linear += 2 * 2.0 * B * T * C * C + 2 * 2.0 * B * Tc * c->cross_dim * C; // attn2 q, out; k, v
        f->no_input_grad += 2 * 2.0 * B * Tc * c->cross_dim * C;
        f->linear += 2.0 * B * T * C * 8 * C + 2.0 * B * T * 4 * C * C;        // ff
        f->attention += 4.0 * B * T * T * C + 4.0 * B * T * Tc * C;
    }
}

UNetFlops unet_flops(const UNetConfig *c, int64_t B, int64_t H, int64_t W, int64_t T) {
    UNetFlops f = {0, 0, 0, 0};
    int L = c->levels;
    int64_t HW = H * W, temb = c->temb_dim;
    f.conv += conv_flops(B, c->in_channels, c->block_out[0], 3, HW);
    f.linear += 2.0 * B * (c->block_out[0] * temb + temb * temb);
    f.no_input_grad += 2.0 * B * c->block_out[0] * temb;
    if (c->text_time) {
        f.linear += 2.0 * B * (c->add_in_dim * temb + temb * temb);
        f.no_input_grad += 2.0 * B * c->add_in_dim * temb;
    }
    // down path: level i at HW / 4^i; resnet 0 takes the previous level's channels
    int64_t hw = HW;
    for (int i = 0; i < L; i++) {
        int64_t out = c->block_out[i], cin = c->block_out[i > 0 ? i - 1 : 0];
        for (int j = 0; j < c->layers[i]; j++) {
            resnet_flops(&f, c, B, hw, j ? out : cin, out);
            if (c->down_attn[i]) transformer_flops(&f, c, B, hw, out, c->depth[i], T);
        }
        if (i < L - 1) {
            hw /= 4;
            f.conv += conv_flops(B, out, out, 3, hw); // stride 2, at the output size
        }
    }
    int64_t top = c->block_out[L - 1];
    resnet_flops(&f, c, B, hw, top, top);
    transformer_flops(&f, c, B, hw, top, c->depth[L - 1], T);
    resnet_flops(&f, c, B, hw, top, top);
    // up path: level i works at k = L-1-i with layers[k] + 1 resnets on [hidden | skip]
    int64_t prev = top;
    for (int i = 0; i < L; i++) {
        int k = L - 1 - i, n = c->layers[k] + 1;
        int64_t out = c->block_out[k], in = c->block_out[k > 0 ? k - 1 : 0];
        for (int j = 0; j < n; j++) {
            resnet_flops(&f, c, B, hw, (j ? out : prev) + (j == n - 1 ? in : out), out);
            if (c->up_attn[i]) transformer_flops(&f, c, B, hw, out, c->depth[k], T);
        }
        if (i < L - 1) {
            hw *= 4;
            f.conv += conv_flops(B, out, out, 3, hw); // nearest 2x, then the conv at the new size
        }
        prev = out;
    }
    f.conv += conv_flops(B, c->block_out[0], c->out_channels, 3, HW);
    return f;
}

double unet_flops_forward(const UNetFlops *f) { return f->conv + f->linear + f->attention; }
double unet_flops_forward_backward(const UNetFlops *f) {
    return 3.0 * (f->conv + f->linear) - f->no_input_grad + 3.5 * f->attention;
}

// ---------------------------------------------------------------------------------------------------------------
// the random-weight UNet

Tensor bench_device_tensor(Device d, DType dt, int ndim, const int64_t *shape, float scale, float value,
                           uint64_t stream) {
    Tensor h = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, ndim, shape);
    int64_t n = tensor_numel(&h);
    h.data = xmalloc(tensor_bytes(&h));
    float *p = h.data;
    if (scale != 0.0f) {
        rng_normal_fill(p, n, 0, RNG_STREAM(RNG_PURPOSE_TEST, stream, 0), 0);
        for (int64_t i = 0; i < n; i++) p[i] *= scale;
    } else {
        for (int64_t i = 0; i < n; i++) p[i] = value;
    }
    Tensor f = h;
    f.device = d;
    f.data = device_alloc(d, tensor_bytes(&h));
    device_copy(f.data, d, h.data, DEVICE_CPU, tensor_bytes(&h));
    free(h.data);
    if (dt == DTYPE_F32) return f;
    Tensor t = tensor_make(NULL, dt, d, ndim, shape);
    t.data = device_alloc(d, tensor_bytes(&t));
    tensor_cast(&t, &f);
    device_synchronize(d);
    device_free(d, f.data);
    return t;
}

void unet_bench_init(UNetBench *b, const UNetConfig *cfg, Device d, DType dt, int B, int N) {
    unet_bench_init_recompute(b, cfg, d, dt, B, N, NULL, 0);
}

void unet_bench_init_recompute(UNetBench *b, const UNetConfig *cfg, Device d, DType dt, int B, int N,
                               const UNetRecompute *rc, int cl) {
    memset(b, 0, sizeof *b);
    b->cfg = *cfg, b->d = d, b->dt = dt, b->B = B, b->N = N;
    const UNetConfig *uc = &b->cfg;
    b->net = xcalloc(1, sizeof *b->net), b->cnet = xcalloc(1, sizeof *b->cnet);
    b->grads = xcalloc(1, sizeof *b->grads), b->acts = xcalloc(1, sizeof *b->acts);
    // weights: standard normal times 0.02 on the host, moved to the device in one copy; the bf16 copy by one cast
    arena_init(&b->pa, "unet", DEVICE_CPU);
    unet_plan_params(&b->pa, b->net, uc);
    arena_alloc(&b->pa);
    int64_t n = (int64_t)(b->pa.size / sizeof(float));
    rng_normal_fill(b->pa.base, n, 0, RNG_STREAM(RNG_PURPOSE_INIT, 0, 0), 0);
    for (int64_t i = 0; i < n; i++) ((float *)b->pa.base)[i] *= 0.02f;
    arena_to_device(&b->pa, d);
    arena_init(&b->ca, "unet-compute", d);
    int copy = dt != DTYPE_F32 || cl;
    if (copy) {
        arena_set_float_dtype(&b->ca, dt);
        arena_set_channels_last(&b->ca, cl);
        unet_plan_params(&b->ca, b->cnet, uc);
        arena_alloc(&b->ca);
        arena_cast(&b->ca, &b->pa);
    }
    b->run = copy ? b->cnet : b->net;
    arena_init(&b->ga, "unet-grads", d);
    unet_plan_params(&b->ga, b->grads, uc);
    arena_alloc(&b->ga);
    arena_init(&b->aa, "unet-acts", d);
    unet_plan_acts_recompute(&b->aa, b->acts, b->run, B, N, N, 77, rc);
    arena_alloc(&b->aa);

    // the inputs stay fp32: the UNet casts them to the compute dtype itself
    int64_t lat[4] = {B, uc->in_channels, N, N}, out[4] = {B, uc->out_channels, N, N};
    b->x = bench_device_tensor(d, DTYPE_F32, 4, lat, 1.0f, 0, 1);
    b->t = bench_device_tensor(d, DTYPE_F32, 1, (int64_t[]){B}, 0.0f, 500.0f, 2);
    b->ctx = bench_device_tensor(d, DTYPE_F32, 3, (int64_t[]){B, 77, uc->cross_dim}, 1.0f, 0, 3);
    if (uc->text_time) {
        b->te = bench_device_tensor(d, DTYPE_F32, 2, (int64_t[]){B, uc->text_embed_dim}, 1.0f, 0, 4);
        b->tid = bench_device_tensor(d, DTYPE_F32, 2, (int64_t[]){B, 6}, 0.0f, 64.0f, 5);
    }
    b->eps = bench_device_tensor(d, DTYPE_F32, 4, out, 0.0f, 0.0f, 6);
    b->deps = bench_device_tensor(d, DTYPE_F32, 4, out, 1.0f, 0, 7);
    b->dx = bench_device_tensor(d, DTYPE_F32, 4, lat, 0.0f, 0.0f, 8);
}

void unet_bench_call(void *arg) {
    UNetBench *b = arg;
    int tt = b->cfg.text_time;
    unet_forward(b->run, b->acts, &b->eps, &b->x, &b->t, &b->ctx, tt ? &b->te : NULL, tt ? &b->tid : NULL);
    if (b->backward) unet_backward(b->run, b->grads, b->acts, &b->deps, &b->dx, NULL);
}

void unet_bench_free(UNetBench *b) {
    Tensor *ts[] = {&b->x, &b->t, &b->ctx, &b->te, &b->tid, &b->eps, &b->deps, &b->dx};
    for (int i = 0; i < 8; i++)
        if (ts[i]->data) device_free(b->d, ts[i]->data);
    unet_acts_free(b->acts);
    unet_free(b->net), unet_free(b->grads);
    if (b->run == b->cnet) unet_free(b->cnet);
    free(b->net), free(b->cnet), free(b->grads), free(b->acts);
    arena_free(&b->pa), arena_free(&b->ca), arena_free(&b->ga), arena_free(&b->aa);
}

// ---------------------------------------------------------------------------------------------------------------
// a whole random-weight model for the iteration benchmark

// Plans params for the host, allocates it and fills it with N(0, 0.02^2) from stream (RNG_PURPOSE_INIT, part).
static void random_fill(Arena *params, uint64_t part) {
    arena_alloc(params);
    int64_t n = (int64_t)(params->size / sizeof(float));
    rng_normal_fill(params->base, n, 0, RNG_STREAM(RNG_PURPOSE_INIT, part, 0), 0);
    for (int64_t i = 0; i < n; i++) ((float *)params->base)[i] *= 0.02f;
}

void bench_model_random(Model *m, const char *dir, int steps) {
    memset(m, 0, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/unet", dir);
    UNetConfig uc;
    unet_load_config(&uc, path);
    arena_init(&m->unet_params, "unet", DEVICE_CPU);
    unet_plan_params(&m->unet_params, &m->unet, &uc);
    random_fill(&m->unet_params, 0);
    snprintf(path, sizeof path, "%s/vae", dir);
    VAEConfig vc;
    vae_load_config(&vc, path);
    arena_init(&m->vae_params, "vae", DEVICE_CPU);
    vae_plan_params(&m->vae_params, &m->vae, &vc, VAE_DECODER);
    random_fill(&m->vae_params, 1);
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    DdimConfig dc = ddim_load_config(path);
    ddim_init(&m->sched, &dc);
    ddim_set_timesteps(&m->sched, steps);
}

void bench_random_cond(UNetCond *c, Tensor t[3], const UNetConfig *cfg, int rows, int H, int W) {
    memset(t, 0, 3 * sizeof *t);
    t[0] = bench_device_tensor(DEVICE_CPU, DTYPE_F32, 3, (int64_t[]){rows, 77, cfg->cross_dim}, 1.0f, 0, 20);
    *c = (UNetCond){.context = &t[0]};
    if (!cfg->text_time) return;
    t[1] = bench_device_tensor(DEVICE_CPU, DTYPE_F32, 2, (int64_t[]){rows, cfg->text_embed_dim}, 1.0f, 0, 21);
    t[2] = bench_device_tensor(DEVICE_CPU, DTYPE_F32, 2, (int64_t[]){rows, 6}, 0.0f, 0.0f, 22);
    float *ids = t[2].data;
    for (int r = 0; r < rows; r++) {
        float v[6] = {(float)H, (float)W, 0, 0, (float)H, (float)W};
        memcpy(ids + 6 * r, v, sizeof v);
    }
    c->text_embeds = &t[1], c->time_ids = &t[2];
}

void bench_random_cond_free(Tensor t[3]) {
    for (int i = 0; i < 3; i++)
        if (t[i].data) device_free(DEVICE_CPU, t[i].data);
}
