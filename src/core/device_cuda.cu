// device_cuda.cu: the CUDA half of core/device.h: the rank's GPU, its streams and the device memory calls. One
// compute stream (non-blocking: nothing runs on the legacy default stream, so work can be captured in a graph) and one
// communication stream for NCCL. Copies and clears are queued on the compute stream; only a copy to the host waits,
// for the data it returns.
#include "../ops/cuda/cuda_common.cuh"
#include "device_cuda.h"

static struct {
    int ready, device;
    cudaStream_t compute, comm;
    cudaDeviceProp prop;
} g;

extern "C" int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" error
        return 0;
    }
    return n;
}

extern "C" void cuda_init(int local_rank) {
    if (g.ready) return;
    int n = cuda_device_count();
    CHECK(n > 0, "run on a machine with an NVIDIA GPU, or set train.device = cpu", "no GPU is visible");
    g.device = local_rank % n;
    CUDA_CHECK(cudaSetDevice(g.device));
    CUDA_CHECK(cudaGetDeviceProperties(&g.prop, g.device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&g.compute, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&g.comm, cudaStreamNonBlocking));
    g.ready = 1;
}

static void need_init(void) {
    if (!g.ready) cuda_init(0);
}

extern "C" cudaStream_t cuda_stream(void) {
    need_init();
    return g.compute;
}
extern "C" cudaStream_t cuda_comm_stream(void) {
    need_init();
    return g.comm;
}

extern "C" void *cuda_alloc(size_t bytes) {
    need_init();
    void *p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        char a[32], b[32];
        dt_user_error("out of GPU memory allocating %s (%s free on %s): reduce train.batch or the image size",
                      dt_format_bytes(a, sizeof a, (double)bytes), dt_format_bytes(b, sizeof b, (double)fr),
                      g.prop.name);
    }
    CUDA_CHECK(e);
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 256, g.compute));
    return p;
}

extern "C" void cuda_free(void *p) {
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(g.compute)); // nothing queued may still use it
    CUDA_CHECK(cudaFree(p));
}

extern "C" void cuda_zero(void *p, size_t bytes) {
    need_init();
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, g.compute));
}

extern "C" void cuda_copy(void *dst, int dst_on_device, const void *src, int src_on_device, size_t bytes) {
    need_init();
    if (!bytes) return;
    cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                        : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, g.compute));
    // the host may reuse or read its buffer as soon as this returns
    if (!dst_on_device || !src_on_device) CUDA_CHECK(cudaStreamSynchronize(g.compute));
}

extern "C" void cuda_synchronize(void) {
    need_init();
    CUDA_CHECK(cudaStreamSynchronize(g.compute));
}

extern "C" void cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    need_init();
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

extern "C" const char *cuda_device_name(void) {
    need_init();
    return g.prop.name;
}

extern "C" void cuda_versions(int *driver, int *runtime) {
    CUDA_CHECK(cudaDriverGetVersion(driver));
    CUDA_CHECK(cudaRuntimeGetVersion(runtime));
}

extern "C" int cuda_is_emulated(void) {
#ifdef DRTUNE_CUDAEMU
    return 1;
#else
    return 0;
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// graphs: global capture mode, so any call of this thread that could break the capture (cudaMalloc, cudaFree, a
// synchronous copy) fails at once instead of corrupting it

struct CudaGraph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    size_t nodes;
};

extern "C" void cuda_graph_begin(void) {
    need_init();
    CUDA_CHECK(cudaStreamBeginCapture(g.compute, cudaStreamCaptureModeGlobal));
}

extern "C" CudaGraph *cuda_graph_end(void) {
    CudaGraph *cg = (CudaGraph *)xcalloc(1, sizeof *cg);
    cudaError_t e = cudaStreamEndCapture(g.compute, &cg->graph);
    CHECK(e == cudaSuccess, "a call inside the captured region synchronised or allocated (set cuda_graphs = off to run "
          "without graphs)", "cudaStreamEndCapture: %s", cudaGetErrorString(e));
    CUDA_CHECK(cudaGraphGetNodes(cg->graph, NULL, &cg->nodes));
    CUDA_CHECK(cudaGraphInstantiate(&cg->exec, cg->graph, 0));
    return cg;
}

extern "C" void cuda_graph_launch(const CudaGraph *cg) { CUDA_CHECK(cudaGraphLaunch(cg->exec, g.compute)); }

extern "C" void cuda_graph_free(CudaGraph *cg) {
    if (!cg) return;
    CUDA_CHECK(cudaGraphExecDestroy(cg->exec));
    CUDA_CHECK(cudaGraphDestroy(cg->graph));
    free(cg);
}

extern "C" size_t cuda_graph_nodes(const CudaGraph *cg) { return cg->nodes; }

extern "C" int cuda_graph_capturing(void) {
    if (!g.ready) return 0;
    cudaStreamCaptureStatus st;
    CUDA_CHECK(cudaStreamIsCapturing(g.compute, &st));
    return st != cudaStreamCaptureStatusNone;
}
