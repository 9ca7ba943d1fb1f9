// grad_sync.h: the gradient reduction of a training iteration, overlapped with its last UNet backward. The UNet
// backward finishes its parameter gradients part by part (unet.h), and the flat gradient buffer holds the parts in
// module order, so the finished gradients always form a suffix [lo, end) of the buffer that grows downwards. Each
// time at least a bucket of finished, not yet reduced gradients has gathered, its reduction starts (an MPI
// all-reduce for a replicated trainable set, a reduce-scatter into this rank's shard for a sharded one) while the
// backward goes on; the rest starts when the backward is done. On the GPU the same buckets are NCCL calls on the
// communication stream, each queued behind the compute stream's work so far (the backward's kernels that wrote it),
// and the compute stream waits for them after the backward; the host never waits. Buckets depend only on the layout, so every rank
// starts the same reductions in the same order, and the sums do not depend on the bucket size with two ranks.
#pragma once
#include <stdint.h>

#include "../core/arena.h"
#include "../dist/dist.h"
#include "../models/unet.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GRAD_SYNC_MAX_PARTS (2 * UNET_MAX_LEVELS + 3)

typedef struct {
    float *g;                  // flat gradient buffer [end]: the arena's floats (with the shard padding)
    int64_t end;
    const DistShard *shard;    // NULL: all-reduce in place
    float *out;                // sharded: this rank's shard of the sum [shard->shard]
    int n_parts;
    int64_t ready_lo[GRAD_SYNC_MAX_PARTS]; // after part p of the backward, [ready_lo[p], end) is final
    int64_t bucket;            // floats per bucket; 0: one reduction after the backward
    int64_t sent;              // [sent, end) is being reduced
    DistQueue q;
    Device device;             // where g lives: on the GPU the reductions are NCCL calls on the communication stream
    int64_t started[GRAD_SYNC_MAX_PARTS + 1]; // this iteration's reductions in order: the i-th is [started[i],
    int n_started;                            // started[i - 1]) (started[-1] = end), the same on every device
    DistRequest req[GRAD_SYNC_MAX_PARTS + 1]; // GPU: the NCCL requests of started[i]
    int64_t early;             // this iteration: floats whose reduction started during the backward
    double sec_wait;           // this iteration: seconds waiting for the reductions after the backward
} GradSync;

// layout: the gradient arena (the UNet's, or the LoRA adapters'), whose floats are the buffer: its entries below
// float n are named after UNet parameters or LoRA modules, the rest up to end (the padded length when sharded; the
// arena must reach it) is padding, zero in every gradient. bucket_mb: MiB of finished gradients that start a
// reduction.
void grad_sync_init(GradSync *s, const Arena *layout, const UNetConfig *cfg, int64_t n, int64_t end,
                    const DistShard *shard, float *out, double bucket_mb);
// Starts an iteration (before its backward).
void grad_sync_begin(GradSync *s);
// Part p of the last backward is final (the UNet backward's ready callback; ctx is the GradSync).
void grad_sync_ready(void *ctx, int part);
// Starts what is left, waits for every reduction, and returns the summed gradient: g (all-reduce) or out (this
// rank's shard). On the GPU the compute stream waits for the reductions (the host does not), a sharded gradient
// is reduced in place in NCCL's layout and the shard returned is g's own, and on one rank nothing moves.
float *grad_sync_finish(GradSync *s);
// The fraction of the gradient whose reduction started during the backward, this iteration.
double grad_sync_overlap(const GradSync *s);
void grad_sync_free(GradSync *s);

#ifdef __cplusplus
}
#endif
