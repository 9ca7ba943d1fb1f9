// cudaemu_unet.h: one UNet forward and backward on a device, for the tests that compare the whole network on the GPU
// with the CPU (cudaemu_unet on the fixture models, cudaemu_sd15_iter on the SD 1.5-shaped reduced-width UNet):
// parameters read on the host and moved to the device in one copy, gradients and activations planned there, fp32
// or bf16 storage (a bf16 copy of the weights computes, as under train.precision = bf16); and the comparison of the
// two gradient arenas.
#pragma once
#include "../src/models/unet.h"
#include "../src/models/weights.h"
#include "cudaemu_util.h"
#include "parity.h"

typedef struct {
    Arena pa, ga, aa, ca;
    UNet *net, *grads, *cnet; // cnet: the bf16 compute copy (bf16 runs), else NULL
    UNetActs *acts;
    Tensor x, t, ctx, te, tid, dout, out, dx, dctx;
} CuUNetRun;

// A CPU f32 copy of h on d (CPU), or its upload (GPU).
static inline Tensor cu_unet_input(const Tensor *h, Device d) {
    if (d == DEVICE_CPU) {
        Tensor c = cu_alloc(DEVICE_CPU, DTYPE_F32, h->ndim, h->shape);
        memcpy(c.data, h->data, tensor_bytes(h));
        return c;
    }
    return cu_upload(h, DTYPE_F32);
}

// A UNet fixture of tests/fixtures (unet_sd15, unet_sdxl): its folder, config and the reference file's inputs in[]
// as cu_unet_setup takes them (text_embeds and time_ids only for SDXL). Free with cu_unet_fixture_free.
typedef struct {
    char dir[256];
    UNetConfig cfg;
    Tensor in[6];
} CuUNetFixture;

// Skips the test (exit 77) when the UNet fixtures have not been generated.
static inline void cu_unet_require_fixtures(void) {
    if (!parity_have("tests/fixtures/unet_sd15_ref.safetensors")) {
        printf("skipped: tests/fixtures missing\n");
        exit(77);
    }
}

// Loads fixture `name` (tests/fixtures/<name>_ref.safetensors and models/<name>) and prints its header line.
static inline void cu_unet_fixture_load(CuUNetFixture *f, const char *name) {
    printf("== %s\n", name);
    char ref_path[256];
    snprintf(f->dir, sizeof f->dir, "tests/fixtures/models/%s", name);
    snprintf(ref_path, sizeof ref_path, "tests/fixtures/%s_ref.safetensors", name);
    SafeTensors ref;
    safetensors_open(&ref, ref_path);
    unet_load_config(&f->cfg, f->dir);
    const char *names[6] = {"sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids", "dout"};
    for (int i = 0; i < 6; i++)
        f->in[i] = (i == 3 || i == 4) && !f->cfg.text_time ? (Tensor){0} : parity_load(&ref, names[i]);
    safetensors_close(&ref);
}

static inline void cu_unet_fixture_free(CuUNetFixture *f) {
    for (int i = 0; i < 6; i++) free(f->in[i].data);
}

// The UNet of pipeline folder dir (config cfg) on d with inputs in[] = sample [B, C, H, W], timestep [B], context
// [B, T, D], text_embeds, time_ids (SDXL only, else empty) and dout [B, C, H, W] (empty: set r->dout before the
// backward) given as CPU f32 tensors; dt: the storage of weights and activations (gradients stay fp32).
// rc: the activations' recompute (NULL: off); cl: a channels-last compute copy (train.channels_last; GPU).
static inline void cu_unet_setup_cl(CuUNetRun *r, Device d, DType dt, const char *dir, const UNetConfig *cfg,
                                    const Tensor *in, const UNetRecompute *rc, int cl) {
    memset(r, 0, sizeof *r);
    arena_init(&r->pa, "params", DEVICE_CPU);
    arena_init(&r->ga, "grads", d);
    arena_init(&r->aa, "acts", d);
    r->net = xcalloc(1, sizeof *r->net), r->grads = xcalloc(1, sizeof *r->grads);
    r->acts = xcalloc(1, sizeof *r->acts);
    unet_plan_params(&r->pa, r->net, cfg);
    unet_plan_params(&r->ga, r->grads, cfg);
    arena_alloc(&r->pa), arena_alloc(&r->ga);
    char *w = weights_folder_file(dir);
    weights_load(&r->pa, w, NULL);
    free(w);
    arena_to_device(&r->pa, d);
    if (dt != DTYPE_F32 || cl) { // the compute copy, as model_set_precision makes it
        r->cnet = (UNet *)xcalloc(1, sizeof *r->cnet);
        arena_init(&r->ca, "compute", d);
        arena_set_float_dtype(&r->ca, dt);
        arena_set_channels_last(&r->ca, cl);
        unet_plan_params(&r->ca, r->cnet, cfg);
        arena_alloc(&r->ca);
        arena_cast(&r->ca, &r->pa);
    }
    unet_plan_acts_recompute(&r->aa, r->acts, r->cnet ? r->cnet : r->net, in[0].shape[0], in[0].shape[2],
                             in[0].shape[3], in[2].shape[1], rc);
    arena_alloc(&r->aa);
    Tensor *dst[] = {&r->x, &r->t, &r->ctx, &r->te, &r->tid, &r->dout};
    for (int i = 0; i < 6; i++)
        if (in[i].data) *dst[i] = cu_unet_input(&in[i], d);
    r->out = cu_alloc(d, DTYPE_F32, 4, in[0].shape);
    r->dx = cu_alloc(d, DTYPE_F32, 4, in[0].shape);
    r->dctx = cu_alloc(d, DTYPE_F32, 3, in[2].shape);
}

static inline void cu_unet_setup_rc(CuUNetRun *r, Device d, DType dt, const char *dir, const UNetConfig *cfg,
                                    const Tensor *in, const UNetRecompute *rc) {
    cu_unet_setup_cl(r, d, dt, dir, cfg, in, rc, 0);
}
static inline void cu_unet_setup(CuUNetRun *r, Device d, DType dt, const char *dir, const UNetConfig *cfg,
                                 const Tensor *in) {
    cu_unet_setup_cl(r, d, dt, dir, cfg, in, NULL, 0);
}

static inline const UNet *cu_unet_net(const CuUNetRun *r) { return r->cnet ? r->cnet : r->net; }
static inline void cu_unet_forward(CuUNetRun *r, int text_time) {
    unet_forward(cu_unet_net(r), r->acts, &r->out, &r->x, &r->t, &r->ctx, text_time ? &r->te : NULL,
                 text_time ? &r->tid : NULL);
}
static inline void cu_unet_backward(CuUNetRun *r) {
    unet_backward(cu_unet_net(r), r->grads, r->acts, &r->dout, &r->dx, &r->dctx);
}

static inline void cu_unet_free(CuUNetRun *r) {
    Tensor *ts[] = {&r->x, &r->t, &r->ctx, &r->te, &r->tid, &r->dout, &r->out, &r->dx, &r->dctx};
    for (int i = 0; i < 9; i++)
        if (ts[i]->data) cu_free(ts[i]);
    unet_acts_free(r->acts);
    unet_free(r->net), unet_free(r->grads);
    if (r->cnet) unet_free(r->cnet);
    free(r->acts), free(r->net), free(r->grads), free(r->cnet);
    arena_free(&r->pa), arena_free(&r->ga), arena_free(&r->aa), arena_free(&r->ca);
}

// ||g - c|| / ||c|| over two gradient arenas (g on the GPU)
static inline double cu_unet_grads_rel_l2(const Arena *g, const Arena *c) {
    int64_t n = (int64_t)(c->size / sizeof(float));
    float *h = (float *)xmalloc(c->size);
    device_copy(h, DEVICE_CPU, g->base, DEVICE_CUDA, c->size);
    double e[2] = {0, 0};
    cu_l2_add(e, h, (const float *)c->base, n);
    free(h);
    return cu_l2_rel(e);
}

// Checks the GPU's parameter gradients g against the CPU's c: ||g - c|| / ||c|| over the whole arena within tol_l2,
// and each tensor's max |g - c| relative to its own largest value within tol_tensor.
static inline void cu_unet_check_grads(const Arena *g, const Arena *c, double tol_l2, double tol_tensor) {
    double l2[2] = {0, 0}, wr = 0;
    int worst = -1;
    for (int i = 0; i < c->n; i++) {
        const Tensor *ct = &c->entries[i].desc;
        float *h = cu_download(&g->entries[i].desc);
        const float *r = (const float *)ct->data;
        double e = 0, m = 0;
        for (int64_t k = 0; k < tensor_numel(ct); k++)
            e = fmax(e, fabs((double)h[k] - r[k])), m = fmax(m, fabs((double)r[k]));
        cu_l2_add(l2, h, r, tensor_numel(ct));
        if (m > 0 && e / m > wr) wr = e / m, worst = i; // (NaN fails the L2 check)
        free(h);
    }
    double rel = cu_l2_rel(l2);
    tu_check(rel <= tol_l2, "parameter gradients (%d tensors): relative L2 error %.3e (tol %.0e)", c->n, rel, tol_l2);
    tu_check(wr <= tol_tensor, "worst parameter gradient tensor %s: max rel err %.3e (tol %.0e)",
             worst >= 0 ? c->entries[worst].name : "-", wr, tol_tensor);
}

// Bytes of t (on either device) on the host (free them).
static inline void *cu_unet_host_bytes(const void *p, Device d, size_t n) {
    void *h = xmalloc(n ? n : 1);
    device_copy(h, DEVICE_CPU, p, d, n);
    return h;
}

// Whether two runs of one model (same device, dtype and inputs) gave the same output, input and context gradients
// and parameter gradients bit for bit; the first differing gradient tensor is named.
static inline void cu_unet_check_identical(const CuUNetRun *a, const CuUNetRun *b, const char *what) {
    const Tensor *ta[3] = {&a->out, &a->dx, &a->dctx}, *tb[3] = {&b->out, &b->dx, &b->dctx};
    const char *names[3] = {"out", "d sample", "d context"};
    for (int i = 0; i < 3; i++) {
        size_t n = tensor_bytes(ta[i]);
        void *x = cu_unet_host_bytes(ta[i]->data, ta[i]->device, n);
        void *y = cu_unet_host_bytes(tb[i]->data, tb[i]->device, n);
        tu_check(n == tensor_bytes(tb[i]) && !memcmp(x, y, n), "%s: %s bit-identical", what, names[i]);
        free(x), free(y);
    }
    const Arena *ga = &a->ga, *gb = &b->ga;
    char *x = (char *)cu_unet_host_bytes(ga->base, ga->device, ga->size);
    char *y = (char *)cu_unet_host_bytes(gb->base, gb->device, gb->size);
    int first = -1;
    for (int i = 0; i < ga->n && first < 0; i++)
        if (memcmp(x + ga->entries[i].offset, y + gb->entries[i].offset, tensor_bytes(&ga->entries[i].desc)))
            first = i;
    tu_check(ga->size == gb->size && first < 0, "%s: %d parameter gradients bit-identical%s%s", what, ga->n,
             first >= 0 ? "; first differing: " : "", first >= 0 ? ga->entries[first].name : "");
    free(x), free(y);
}
