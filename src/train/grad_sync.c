// grad_sync.c: bucketed gradient reduction during the backward (grad_sync.h).
#include "grad_sync.h"

#include <string.h>

#include "../core/common.h"

void grad_sync_init(GradSync *s, const Arena *layout, const UNetConfig *cfg, int64_t n, int64_t end,
                    const DistShard *shard, float *out, double bucket_mb) {
    memset(s, 0, sizeof *s);
    s->g = layout->base, s->end = end, s->shard = shard, s->out = out;
    s->device = layout->device;
    s->n_parts = unet_backward_parts(cfg);
    s->bucket = (int64_t)(bucket_mb * (1 << 20) / sizeof(float));
    if (s->device == DEVICE_CUDA && shard) s->out = s->g + (int64_t)shard->rank * shard->shard; // NCCL's layout
    CHECK(n <= end && end <= (int64_t)(layout->size / sizeof(float)) && s->n_parts <= GRAD_SYNC_MAX_PARTS, "",
          "gradient arena of %lld floats shorter than its layout of %lld", (long long)(layout->size / sizeof(float)),
          (long long)end);
    CHECK(!shard || end == shard->padded, "", "sharded gradient of %lld floats, layout of %lld", (long long)end,
          shard ? (long long)shard->padded : 0LL);
    // ready_lo[p]: the lowest float of parts 0..p; every tensor of a part q must lie below ready_lo[q - 1], so that
    // announcing the suffix after part q - 1 never includes a gradient still being accumulated
    int64_t lo[GRAD_SYNC_MAX_PARTS];
    for (int p = 0; p < s->n_parts; p++) lo[p] = end;
    int *part = xmalloc(sizeof(int) * (size_t)(layout->n > 0 ? layout->n : 1));
    for (int i = 0; i < layout->n; i++) {
        const ArenaEntry *e = &layout->entries[i];
        int64_t a = (int64_t)(e->offset / sizeof(float));
        part[i] = a < n ? unet_param_part(cfg, e->name) : 0; // padding is final from the start
        if (a < lo[part[i]]) lo[part[i]] = a;
    }
    for (int p = 0; p < s->n_parts; p++) s->ready_lo[p] = p && s->ready_lo[p - 1] < lo[p] ? s->ready_lo[p - 1] : lo[p];
    s->ready_lo[s->n_parts - 1] = 0; // the whole buffer is final when the backward ends
    for (int i = 0; i < layout->n; i++) {
        const ArenaEntry *e = &layout->entries[i];
        int64_t b = (int64_t)(e->offset / sizeof(float)) + tensor_numel(&e->desc);
        CHECK(part[i] == 0 || (b <= s->ready_lo[part[i] - 1] && b <= n), "",
              "'%s' (UNet backward part %d) lies in the gradients announced final after part %d", e->name, part[i],
              part[i] - 1);
    }
    free(part);
}

// Starts the reduction of [lo, s->sent).
static void start(GradSync *s, int64_t lo) {
    if (lo >= s->sent) return;
    CHECK(s->n_started < GRAD_SYNC_MAX_PARTS + 1, "", "more reductions than backward parts");
    s->started[s->n_started++] = lo;
    if (s->device == DEVICE_CUDA) {
        if (dist_size() > 1) {
            DistRequest *r = &s->req[s->n_started - 1];
            if (s->shard) dist_device_reduce_scatter_start(s->g, lo, s->sent, s->shard, r);
            else dist_device_allreduce_start(s->g + lo, s->sent - lo, r);
        }
        s->sent = lo;
        return;
    }
    if (s->shard) dist_reduce_scatter_start_f32(s->g, lo, s->sent, s->shard, s->out, &s->q);
    else dist_allreduce_start_f32(s->g + lo, s->sent - lo, &s->q);
    s->sent = lo;
}

static void release(GradSync *s) {
    for (int i = 0; i < s->n_started; i++)
        if (s->req[i].done) dist_device_release(&s->req[i]);
}

void grad_sync_begin(GradSync *s) {
    CHECK(s->q.n == 0, "", "gradient reductions of the previous iteration still queued");
    release(s); // the previous iteration's, complete: the update read its result back
    s->sent = s->end, s->early = 0, s->sec_wait = 0, s->n_started = 0;
}

void grad_sync_ready(void *ctx, int part) {
    GradSync *s = ctx;
    CHECK(part >= 0 && part < s->n_parts, "", "UNet backward part %d of %d", part, s->n_parts);
    int64_t lo = s->ready_lo[part];
    if (s->bucket > 0 && part < s->n_parts - 1 && s->sent - lo >= s->bucket) { // the last part: finish starts it
        s->early += s->sent - lo;
        start(s, lo);
    }
    if (s->device == DEVICE_CPU) dist_queue_test(&s->q);
}

float *grad_sync_finish(GradSync *s) {
    double t0 = dt_now();
    start(s, 0);
    if (s->device == DEVICE_CUDA) {
        for (int i = 0; i < s->n_started; i++)
            if (s->req[i].done) dist_device_wait(&s->req[i], 0);
    } else {
        dist_queue_wait(&s->q);
    }
    s->sec_wait = dt_now() - t0;
    return s->shard ? s->out : s->g;
}

double grad_sync_overlap(const GradSync *s) { return s->end > 0 ? (double)s->early / (double)s->end : 0.0; }

void grad_sync_free(GradSync *s) {
    release(s);
    dist_queue_free(&s->q);
}
