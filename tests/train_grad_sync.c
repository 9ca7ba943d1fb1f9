// train_grad_sync.c: the contract the overlapped gradient reduction rests on (src/train/grad_sync.h). During a real
// UNet backward (the SD1.5-like and SDXL-like fixture UNets; full gradients and LoRA gradients), the parts are
// announced once each, in order, and nothing in the suffix announced final after part p changes afterwards: each
// announced suffix is copied when announced and compared bit for bit with the finished gradients. The layout checks
// of grad_sync_init also pass on the real SD 1.5 and SDXL configurations (planned without memory), and part names
// map as documented. With one rank, grad_sync_finish returns the gradients unchanged (the shard copy included).
#include <math.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/core/rng.h"
#include "../src/models/pipeline.h"
#include "../src/train/grad_sync.h"
#include "../src/train/lora.h"
#include "testutil.h"

typedef struct {
    GradSync *sync;
    int next;                              // the part expected next
    float *snap[GRAD_SYNC_MAX_PARTS];      // copies of [ready_lo[p], end) as announced
} Watch;

static void watch_ready(void *ctx, int part) {
    Watch *w = ctx;
    TU_EXPECT(part == w->next, "part %d announced, %d expected", part, w->next);
    w->next = part + 1;
    if (part < 0 || part >= w->sync->n_parts) return;
    int64_t lo = w->sync->ready_lo[part], n = w->sync->end - lo;
    w->snap[part] = xmalloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(w->snap[part], w->sync->g + lo, sizeof(float) * (size_t)n);
    grad_sync_ready(w->sync, part); // and the real callback: with one rank it starts nothing
}

static void fill(const Tensor *t, uint64_t stream) { rng_normal_fill(t->data, tensor_numel(t), 77, stream, 0); }

static Tensor make(int ndim, const int64_t *shape) {
    Tensor t = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, ndim, shape);
    t.data = xcalloc((size_t)tensor_numel(&t), sizeof(float));
    return t;
}

// One forward and the backward with the watch on the gradient arena `layout` (full: the UNet gradients; LoRA: the
// adapters' gradients).
static void check_backward(const char *dir, int lora) {
    UNet net, grads;
    Arena params, gradmem, am;
    pipeline_load_unet(&net, &params, dir);
    const UNetConfig *c = &net.cfg;
    arena_init(&gradmem, "grads", DEVICE_CPU);
    unet_plan_params(&gradmem, &grads, c);
    Lora l;
    const Arena *layout = &gradmem;
    if (lora) {
        const char *targets[4] = {"to_q", "to_k", "to_v", "to_out.0"};
        lora_attach(&l, &net, &params, &grads, 2, 2.0f, targets, 4, 5, "test");
        for (int i = 0; i < l.params.n; i++) fill(&l.params.entries[i].desc, 100 + (uint64_t)i); // B != 0
        layout = &l.grads;
    } else {
        arena_alloc(&gradmem);
    }
    int64_t B = 2, H = 8, W = 8, T = 5;
    UNetActs acts;
    arena_init(&am, "acts", DEVICE_CPU);
    unet_plan_acts(&am, &acts, &net, B, H, W, T);
    arena_alloc(&am);
    Tensor x = make(4, (int64_t[]){B, c->in_channels, H, W}), ts = make(1, (int64_t[]){B});
    Tensor ctx = make(3, (int64_t[]){B, T, c->cross_dim}), eps = make(4, (int64_t[]){B, c->out_channels, H, W});
    Tensor deps = make(4, (int64_t[]){B, c->out_channels, H, W});
    Tensor te = make(2, (int64_t[]){B, c->text_time ? c->text_embed_dim : 1}), tid = make(2, (int64_t[]){B, 6});
    fill(&x, 1), fill(&ctx, 2), fill(&deps, 3), fill(&te, 4);
    ((float *)ts.data)[0] = 901, ((float *)ts.data)[1] = 41;
    for (int i = 0; i < 12; i++) ((float *)tid.data)[i] = (float)(64 * (i % 6 + 1));
    unet_forward(&net, &acts, &eps, &x, &ts, &ctx, c->text_time ? &te : NULL, c->text_time ? &tid : NULL);

    float *g = layout->base;
    int64_t n = (int64_t)(layout->size / sizeof(float));
    GradSync s;
    grad_sync_init(&s, layout, c, n, n, NULL, NULL, 0.0);
    Watch w = {.sync = &s};
    acts.ready = watch_ready, acts.ready_ctx = &w;
    grad_sync_begin(&s);
    unet_backward(&net, &grads, &acts, &deps, NULL, NULL);
    TU_EXPECT(w.next == s.n_parts, "%d parts announced of %d", w.next, s.n_parts);
    int changed = 0, nonzero = 0;
    for (int p = 0; p < s.n_parts && p < w.next; p++) {
        int64_t lo = s.ready_lo[p];
        changed += memcmp(w.snap[p], g + lo, sizeof(float) * (size_t)(n - lo)) != 0;
        free(w.snap[p]);
    }
    int64_t numel = 0; // the tensors' elements (the arena aligns each tensor: gaps between them)
    for (int i = 0; i < layout->n; i++) {
        const Tensor *t = &layout->entries[i].desc;
        numel += tensor_numel(t);
        for (int64_t k = 0; k < tensor_numel(t); k++) nonzero += ((const float *)t->data)[k] != 0.0f;
    }
    tu_check(changed == 0 && nonzero > numel * 3 / 4,
             "%s %s: %d parts announced in order; no gradient changes after its part is announced (%d changed; "
             "%d of %lld gradients nonzero)",
             dir, lora ? "LoRA" : "full", w.next, changed, nonzero, (long long)numel);
    float *copy = xmalloc(sizeof(float) * (size_t)n);
    memcpy(copy, g, sizeof(float) * (size_t)n);
    TU_EXPECT(grad_sync_finish(&s) == g && !memcmp(copy, g, sizeof(float) * (size_t)n),
              "one rank: the all-reduce leaves the gradients as they are");
    // one rank, sharded: the shard copy holds the whole (padded) buffer
    DistShard sh;
    dist_shard_init(&sh, n, 1, 0);
    float *padded = xcalloc((size_t)sh.padded, sizeof(float)), *out = xcalloc((size_t)sh.shard, sizeof(float));
    memcpy(padded, g, sizeof(float) * (size_t)n);
    GradSync s2;
    Arena shifted = *layout;
    shifted.base = padded, shifted.size = sizeof(float) * (size_t)sh.padded;
    grad_sync_init(&s2, &shifted, c, n, sh.padded, &sh, out, 1e-4);
    grad_sync_begin(&s2);
    for (int p = 0; p < s2.n_parts; p++) grad_sync_ready(&s2, p);
    TU_EXPECT(grad_sync_finish(&s2) == out && !memcmp(out, g, sizeof(float) * (size_t)n),
              "one rank, sharded: the shard holds the gradients");
    grad_sync_free(&s2);
    grad_sync_free(&s);
    free(copy), free(padded), free(out);
    free(x.data), free(ts.data), free(ctx.data), free(eps.data), free(deps.data), free(te.data), free(tid.data);
    unet_acts_free(&acts);
    arena_free(&am);
    if (lora) lora_free(&l);
    arena_free(&gradmem); // LoRA: planned only (the slots of the base gradients)
    unet_free(&grads);
    unet_free(&net);
    arena_free(&params);
}

// The real configurations: the layout checks pass and the suffixes shrink to 0, starting at conv_norm_out.
static void check_layout(const char *config) {
    UNetConfig cfg;
    unet_load_config(&cfg, config);
    Arena a;
    UNet net;
    arena_init(&a, "plan", DEVICE_CPU);
    unet_plan_params(&a, &net, &cfg);
    int64_t n = (int64_t)(a.size / sizeof(float));
    GradSync s;
    grad_sync_init(&s, &a, &cfg, n, n, NULL, NULL, 1.0);
    int monotone = s.ready_lo[s.n_parts - 1] == 0;
    for (int p = 1; p < s.n_parts; p++) monotone &= s.ready_lo[p] < s.ready_lo[p - 1];
    const ArenaEntry *first = arena_find(&a, "conv_norm_out.weight");
    tu_check(monotone && first && s.ready_lo[0] == (int64_t)(first->offset / sizeof(float)),
             "%s: %d parts, final suffixes strictly growing from conv_norm_out.weight to the whole buffer", config,
             s.n_parts);
    int L = cfg.levels;
    TU_EXPECT(unet_param_part(&cfg, "conv_out.bias") == 0 &&
                  unet_param_part(&cfg, "up_blocks.0.resnets.0.conv1.weight") == L &&
                  unet_param_part(&cfg, "up_blocks.1.attentions.0.proj_in.lora_A.weight") == L - 1 &&
                  unet_param_part(&cfg, "mid_block.attentions.0.norm.weight") == L + 1 &&
                  unet_param_part(&cfg, "down_blocks.0.resnets.0.conv1.weight") == 2 * L + 1 &&
                  unet_param_part(&cfg, "time_embedding.linear_1.weight") == 2 * L + 2 &&
                  unet_param_part(&cfg, "conv_in.weight") == 2 * L + 2,
              "part names of %s", config);
    grad_sync_free(&s);
    unet_free(&net);
    arena_free(&a);
}

int main(void) {
    check_layout("configs/models/sd15/unet");
    check_layout("configs/models/sdxl/unet");
    check_backward("tests/fixtures/models/unet_sd15", 0);
    check_backward("tests/fixtures/models/unet_sd15", 1);
    check_backward("tests/fixtures/models/unet_sdxl", 0);
    check_backward("tests/fixtures/models/unet_sdxl", 1);
    return tu_report();
}
