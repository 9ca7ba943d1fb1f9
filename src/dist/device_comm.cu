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

// The compute stream waits for everything queued so far on the communication stream (the host does not wait).
static void after_comm(void) {
    static cudaEvent_t ev;
    if (!ev) CUDA_OK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    CUDA_OK(cudaEventRecord(ev, nc.stream));
    CUDA_OK(cudaStreamWaitEvent(cuda_stream(), ev, 0));
}

void dist_device_allreduce_start(float *dev, int64_t n, DistRequest *req) {
    need_comm();
    after_compute();
    NCCL_OK(ncclAllReduce(dev, dev, (size_t)n, ncclFloat32, ncclSum, nc.comm, nc.stream));
    cudaEvent_t done;
    CUDA_OK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    CUDA_OK(cudaEventRecord(done, nc.stream));
    req->done = done;
}

void dist_device_wait(DistRequest *req, int host) {
    cudaEvent_t done = (cudaEvent_t)req->done;
    CUDA_OK(cudaStreamWaitEvent(cuda_stream(), done, 0));
    if (host) CUDA_OK(cudaEventSynchronize(done));
    CUDA_OK(cudaEventDestroy(done));
    req->done = NULL;
}

void dist_device_allreduce_sum_f32(float *dev, int64_t n) {
    DistRequest r;
    dist_device_allreduce_start(dev, n, &r);
    dist_device_wait(&r, 1);
}

float *dist_device_reduce_scatter_sum_f32(float *dev, const DistShard *s) {
    need_comm();
    after_compute();
    float *mine = dev + (int64_t)s->rank * s->shard;
    NCCL_OK(ncclReduceScatter(dev, mine, (size_t)s->shard, ncclFloat32, ncclSum, nc.comm, nc.stream));
    after_comm();
    return mine;
}

void dist_device_allgather_f32(float *dev, const DistShard *s) {
    need_comm();
    after_compute();
    float *mine = dev + (int64_t)s->rank * s->shard;
    NCCL_OK(ncclAllGather(mine, dev, (size_t)s->shard, ncclFloat32, nc.comm, nc.stream));
    after_comm();
}

#else // no NCCL in this build
extern "C" const char *dist_device_library(void) { return "none in this build"; }

static DT_NORETURN void no_nccl(void) {
    FATAL("rebuild with the CUDA toolkit and NCCL", "this build has no NCCL");
}
int dist_device_ready(void) { return 0; }
extern "C" void dist_device_finalize(void) {}
// The compute stream waits for everything queued so far on the communication stream (the host does not wait).
static void after_comm(void) {
    static cudaEvent_t ev;
    if (!ev) CUDA_OK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    CUDA_OK(cudaEventRecord(ev, nc.stream));
    CUDA_OK(cudaStreamWaitEvent(cuda_stream(), ev, 0));
}

void dist_device_allreduce_start(float *dev, int64_t n, DistRequest *req) { (void)dev, (void)n, (void)req, no_nccl(); }
void dist_device_wait(DistRequest *req, int host) { (void)req, (void)host, no_nccl(); }
void dist_device_allreduce_sum_f32(float *dev, int64_t n) { (void)dev, (void)n, no_nccl(); }
float *dist_device_reduce_scatter_sum_f32(float *dev, const DistShard *s) { (void)dev, (void)s, no_nccl(); }
void dist_device_allgather_f32(float *dev, const DistShard *s) { (void)dev, (void)s, no_nccl(); }

#endif
