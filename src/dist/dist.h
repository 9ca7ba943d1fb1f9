// dist.h: the processes of a training job (MPI ranks) and the collectives training needs. One rank per process,
// one GPU per rank when CUDA is built; a process started without mpirun is a job of one rank. docs/DISTRIBUTED.md
// describes the sharding and the reductions built on these calls.
#pragma once
#include <stdint.h>

#include "../core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// Starts MPI (when built with DRTUNE_DIST), finds the local rank, and sets how errors end a job of several ranks:
// a user error that every rank reports alike within a few seconds (a bad setting or input file) ends every rank
// cleanly with exit code 2 and one line printed by rank 0; an internal failure, or an error only some ranks hit,
// prints the line prefixed "[rank r] " and aborts the whole job (MPI_Abort) so no rank waits forever. Safe to
// call twice; later calls do nothing.
void dist_init(int *argc, char ***argv);
// Ends MPI (and the NCCL communicator). Called once at the end of a successful run.
void dist_finalize(void);
// While set (1), an error on any rank aborts the job at once instead of waiting for the other ranks to report it
// too: for stretches where the ranks may be inside different collective calls that cannot be ended cleanly
// (parallel file I/O). dist_init describes the usual ending.
void dist_set_abort_on_error(int on);

int dist_rank(void);
int dist_size(void);
int dist_local_rank(void);   // rank among the processes of this host
int dist_local_size(void);   // processes of this job on this host

// Collectives over all ranks (every rank must call them in the same order). Reductions are deterministic: the
// same inputs on the same number of ranks give the same bits, on every rank.
void dist_barrier(void);
void dist_bcast(void *buf, int bytes, int root);
void dist_allreduce_sum_f32(float *buf, int64_t n);           // in place (dist_allreduce_start_f32 + wait)
void dist_allreduce_sum_f64(double *buf, int n);              // in place
void dist_allreduce_max_f64(double *buf, int n);              // in place
int dist_allreduce_max_int(int x);
// Every rank receives every rank's n values, in rank order, into all[size * n].
void dist_allgather_f64(const double *mine, int n, double *all);

// The flat padded layout of a sharded buffer of n floats: shard = ceil(n / size) rounded up to 64 floats, so the
// padded buffer is size * shard floats and rank r owns [r * shard, (r + 1) * shard). Elements at or past n are
// padding (zero in gradients, never stored).
typedef struct {
    int64_t n, shard, padded;
    int rank, size;
} DistShard;

void dist_shard_init(DistShard *s, int64_t n, int size, int rank);
// This rank's logical range [lo, lo + count): count is shard, or less for the ranks holding the end of the buffer.
int64_t dist_shard_lo(const DistShard *s);
int64_t dist_shard_count(const DistShard *s);

// Nonblocking sums, for overlapping the gradient reduction with the backward pass: each call queues its requests
// in q and returns at once; the buffers stay in use until dist_queue_wait. MPI moves queued requests on only inside
// MPI calls, so a caller doing other work calls dist_queue_test between pieces of it. Like the blocking calls,
// the same calls on the same number of ranks give the same bits.
typedef struct {
    void *reqs;   // MPI_Request[cap]
    int **counts; // [cap] receive counts a reduce-scatter reads until it completes (or NULL)
    int n, cap;
} DistQueue;
// buf[0, n) summed over ranks, in place, on every rank.
void dist_allreduce_start_f32(float *buf, int64_t n, DistQueue *q);
// Elements [lo, hi) of the padded layout s (buf holds s->padded floats, only read) summed over ranks: the sums of
// the elements inside this rank's shard land in shard[i - rank * s->shard] (shard holds s->shard floats).
void dist_reduce_scatter_start_f32(const float *buf, int64_t lo, int64_t hi, const DistShard *s, float *shard,
                                   DistQueue *q);
void dist_queue_test(DistQueue *q); // lets MPI progress the queued requests; returns at once
void dist_queue_wait(DistQueue *q); // completes every queued request and empties the queue
void dist_queue_free(DistQueue *q);
// Every rank's shard [r * shard, ...) of buf (n floats, no padding needed) is sent to all: buf ends identical on
// every rank. Each rank's shard must be at its place in buf before the call.
void dist_allgather_f32(float *buf, const DistShard *s);

// Device collectives: NCCL on buffers in GPU memory (CUDA builds with NCCL; internal failure otherwise). The
// communicator is created on first use (unique id from rank 0 over MPI, GPU = local rank mod device count).
// dist_device_ready() says whether this build and machine can use them.
int dist_device_ready(void);
// The NCCL library behind the device collectives: "2.28.9", "emulated over MPI", or "none in this build".
const char *dist_device_library(void);
void dist_device_allreduce_sum_f32(float *dev, int64_t n);
// Reduce-scatter in NCCL's in-place layout: this rank's shard of the sum lands at its own place in dev
// (dev + rank * shard); returns that pointer. Both are stream-ordered: the compute stream waits for them, the host
// does not.
float *dist_device_reduce_scatter_sum_f32(float *dev, const DistShard *s);
// dev holds s->n floats (padding allowed, not needed): every rank's shard, at its place, ends on every rank
void dist_device_allgather_f32(float *dev, const DistShard *s);
// Overlap with computation: each *_start queues its collective on a communication stream after the work queued so
// far on the compute stream, and returns at once; dist_device_wait makes the compute stream wait for it (the host
// returns at once; host = 1 also waits on the host), and dist_device_release frees the request once waited for.
// A backward that finishes gradients bucket by bucket starts each bucket's reduction while it computes the next;
// the all-gather of the updated shards runs while the next iteration prepares, until its first use of the weights.
typedef struct {
    void *start, *done; // cudaEvent_t on the communication stream around the request's collectives
} DistRequest;
void dist_device_allreduce_start(float *dev, int64_t n, DistRequest *req);
// Elements [lo, hi) of the padded layout s summed over ranks, in place in NCCL's layout: the sums of the elements
// inside this rank's shard land at their own places in dev (the rest of [lo, hi) is left as it was, or summed).
void dist_device_reduce_scatter_start(float *dev, int64_t lo, int64_t hi, const DistShard *s, DistRequest *req);
void dist_device_allgather_start(float *dev, const DistShard *s, DistRequest *req);
void dist_device_wait(DistRequest *req, int host);
// Seconds the request's collectives took on the communication stream; the request must have completed (waited for
// on the host, or after a synchronisation of the compute stream that waited for it).
double dist_device_seconds(const DistRequest *req);
void dist_device_release(DistRequest *req);

#ifdef __cplusplus
}
#endif
