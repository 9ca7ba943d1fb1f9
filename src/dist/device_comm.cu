// device_comm.cu: the NCCL collectives of dist.h for buffers in GPU memory, one communicator per job bootstrapped over
// MPI. NCCL runs on the rank's communication stream so a reduction can proceed while the compute stream works on.
// A backend without NCCL keeps the same calls, and the collectives report that they are missing.
#include "../ops/cuda/cuda_common.cuh"
#include "../core/device_cuda.h"
#include "dist.h"

#define CUDA_OK(call) CUDA_CHECK(call)

#if defined(DRTUNE_CUDAEMU) && defined(DRTUNE_DIST)
#include "../cudaemu/cudaemu_nccl.h" // the emulated GPU's NCCL, over MPI
#define HAVE_NCCL 1
#elif defined(DRTUNE_NCCL)
#include <nccl.h>
#define HAVE_NCCL 1
#endif

#ifdef HAVE_NCCL
extern "C" const char *dist_device_library(void) {
#ifdef DRTUNE_CUDAEMU
    return "emulated over MPI";
#else
    static char v[32];
    int code = 0;
    if (ncclGetVersion(&code) != ncclSuccess) return "unknown version";
    snprintf(v, sizeof v, "%d.%d.%d", code / 10000, code / 100 % 100, code % 100);
    return v;
#endif
}

#define NCCL_OK(call)                                                                                    \
    do {                                                                                                 \
        ncclResult_t r_ = (call);                                                                        \
        if (r_ != ncclSuccess)                                                                           \
            FATAL("set NCCL_DEBUG=WARN for NCCL's own report", "%s: %s", #call, ncclGetErrorString(r_)); \
    } while (0)

static struct {
    int state; // 0: not tried, 1: ready, -1: unavailable on some rank
    ncclComm_t comm;
    cudaStream_t stream;
} nc;

int dist_device_ready(void) {
    if (nc.state) return nc.state > 0;
    int n = cuda_device_count();
    if (dist_allreduce_max_int(n == 0)) { // every rank needs a GPU, or none uses NCCL
        nc.state = -1;
        return 0;
    }
    cuda_init(dist_local_rank());
    ncclUniqueId id;
    if (dist_rank() == 0) NCCL_OK(ncclGetUniqueId(&id));
    dist_bcast(&id, (int)sizeof id, 0);
    NCCL_OK(ncclCommInitRank(&nc.comm, dist_size(), id, dist_rank()));
    nc.stream = cuda_comm_stream();
    nc.state = 1;
    return 1;
}

extern "C" void dist_device_finalize(void) {
    if (nc.state <= 0) return;
    CUDA_OK(cudaStreamSynchronize(nc.stream));
    NCCL_OK(ncclCommDestroy(nc.comm));
    nc.state = 0;
}

static void need_comm(void) {
    CHECK(dist_device_ready(), "device collectives need a GPU on every rank", "no NCCL communicator");
}

// The communication stream waits for everything queued so far on the compute stream.
static void after_compute(void) {
    static cudaEvent_t ev;
    if (!ev) CUDA_OK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    CUDA_OK(cudaEventRecord(ev, cuda_stream()));
    CUDA_OK(cudaStreamWaitEvent(nc.stream, ev, 0));
}

// The communication stream waits for the compute stream, then the request's start event: what follows on the
// communication stream is the request's own collectives, timed from start to done.
static void after_compute_timed(DistRequest *req) {
    after_compute();
    cudaEvent_t start;
    CUDA_OK(cudaEventCreateWithFlags(&start, cudaEventDefault));
    CUDA_OK(cudaEventRecord(start, nc.stream));
    req->start = start;
}

static void record_done(DistRequest *req) {
    cudaEvent_t done;
    CUDA_OK(cudaEventCreateWithFlags(&done, cudaEventDefault));
    CUDA_OK(cudaEventRecord(done, nc.stream));
    req->done = done;
}

void dist_device_allreduce_start(float *dev, int64_t n, DistRequest *req) {
    need_comm();
    after_compute_timed(req);
    NCCL_OK(ncclAllReduce(dev, dev, (size_t)n, ncclFloat32, ncclSum, nc.comm, nc.stream));
    record_done(req);
}

void dist_device_wait(DistRequest *req, int host) {
    CUDA_OK(cudaStreamWaitEvent(cuda_stream(), (cudaEvent_t)req->done, 0));
    if (host) CUDA_OK(cudaEventSynchronize((cudaEvent_t)req->done));
}

void dist_device_release(DistRequest *req) {
    if (req->start) CUDA_OK(cudaEventDestroy((cudaEvent_t)req->start));
    if (req->done) CUDA_OK(cudaEventDestroy((cudaEvent_t)req->done));
    req->start = req->done = NULL;
}

void dist_device_allreduce_sum_f32(float *dev, int64_t n) {
    DistRequest r;
    dist_device_allreduce_start(dev, n, &r);
    dist_device_wait(&r, 1);
    dist_device_release(&r);
}

// The pieces of [lo, hi) by owner rank (shard boundaries), each summed in place onto its owner with ncclReduce:
// NCCL's reduce-scatter needs equal counts from a rank-ordered buffer, and a bucket of the flat layout is neither.
// A ring reduce moves the same bytes per rank as the reduce-scatter it replaces; grouped, the pieces go together.
// The whole padded buffer is one ncclReduceScatter in NCCL's in-place layout.
void dist_device_reduce_scatter_start(float *dev, int64_t lo, int64_t hi, const DistShard *s, DistRequest *req) {
    CHECK(0 <= lo && lo <= hi && hi <= s->padded && s->size == dist_size() && s->rank == dist_rank(), "",
          "device reduce-scatter of [%lld, %lld) in a layout of %lld floats over %d ranks", (long long)lo,
          (long long)hi, (long long)s->padded, s->size);
    need_comm();
    after_compute_timed(req);
    if (lo == 0 && hi == s->padded) {
        NCCL_OK(ncclReduceScatter(dev, dev + (int64_t)s->rank * s->shard, (size_t)s->shard, ncclFloat32, ncclSum,
                                  nc.comm, nc.stream));
        record_done(req);
        return;
    }
    NCCL_OK(ncclGroupStart());
    for (int64_t a = lo; a < hi;) {
        int root = (int)(a / s->shard);
        int64_t b = (int64_t)(root + 1) * s->shard < hi ? (int64_t)(root + 1) * s->shard : hi;
        NCCL_OK(ncclReduce(dev + a, dev + a, (size_t)(b - a), ncclFloat32, ncclSum, root, nc.comm, nc.stream));
        a = b;
    }
    NCCL_OK(ncclGroupEnd());
    record_done(req);
}

// Every rank's logical shard [lo, lo + count) broadcast from its owner, grouped: an all-gather in place on a buffer
// of s->n floats (no padding needed; the ranks' counts may differ at the end of the buffer).
void dist_device_allgather_start(float *dev, const DistShard *s, DistRequest *req) {
    CHECK(s->size == dist_size() && s->rank == dist_rank(), "", "device all-gather over %d ranks in a job of %d",
          s->size, dist_size());
    need_comm();
    after_compute_timed(req);
    NCCL_OK(ncclGroupStart());
    for (int r = 0; r < s->size; r++) {
        DistShard o = *s;
        o.rank = r;
        int64_t lo = dist_shard_lo(&o), count = dist_shard_count(&o);
        if (count > 0)
            NCCL_OK(ncclBroadcast(dev + lo, dev + lo, (size_t)count, ncclFloat32, r, nc.comm, nc.stream));
    }
    NCCL_OK(ncclGroupEnd());
    record_done(req);
}

float *dist_device_reduce_scatter_sum_f32(float *dev, const DistShard *s) {
    DistRequest r;
    dist_device_reduce_scatter_start(dev, 0, s->padded, s, &r);
    dist_device_wait(&r, 0);
    dist_device_release(&r);
    return dev + (int64_t)s->rank * s->shard;
}

void dist_device_allgather_f32(float *dev, const DistShard *s) {
    DistRequest r;
    dist_device_allgather_start(dev, s, &r);
    dist_device_wait(&r, 0);
    dist_device_release(&r);
}

double dist_device_seconds(const DistRequest *req) {
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, (cudaEvent_t)req->start, (cudaEvent_t)req->done));
    return 1e-3 * ms;
}

#else // no NCCL in this build
extern "C" const char *dist_device_library(void) { return "none in this build"; }

static DT_NORETURN void no_nccl(void) {
    FATAL("rebuild with the CUDA toolkit and NCCL", "this build has no NCCL");
}
int dist_device_ready(void) { return 0; }
extern "C" void dist_device_finalize(void) {}
void dist_device_allreduce_start(float *dev, int64_t n, DistRequest *req) { (void)dev, (void)n, (void)req, no_nccl(); }
void dist_device_wait(DistRequest *req, int host) { (void)req, (void)host, no_nccl(); }
void dist_device_allreduce_sum_f32(float *dev, int64_t n) { (void)dev, (void)n, no_nccl(); }
float *dist_device_reduce_scatter_sum_f32(float *dev, const DistShard *s) { (void)dev, (void)s, no_nccl(); }
void dist_device_allgather_f32(float *dev, const DistShard *s) { (void)dev, (void)s, no_nccl(); }
void dist_device_reduce_scatter_start(float *dev, int64_t lo, int64_t hi, const DistShard *s, DistRequest *req) {
    (void)dev, (void)lo, (void)hi, (void)s, (void)req, no_nccl();
}
void dist_device_allgather_start(float *dev, const DistShard *s, DistRequest *req) {
    (void)dev, (void)s, (void)req, no_nccl();
}
void dist_device_release(DistRequest *req) { (void)req; }
double dist_device_seconds(const DistRequest *req) { (void)req, no_nccl(); }

#endif
