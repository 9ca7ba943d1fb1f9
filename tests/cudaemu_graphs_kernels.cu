// cudaemu_graphs_kernels.cu: small kernels and raw runtime calls for cudaemu_graphs.c, which checks what a captured
// CUDA graph records and replays, and which calls a capture refuses. The same source runs on a real GPU as
// cuda_graphs, so the emulator's capture rules are checked against the hardware's where one exists.
#include "../src/ops/cuda/cuda_common.cuh"
#include "../src/core/device_cuda.h"

// y[i] = a x[i] + y[i]
__global__ static void axpy_kernel(float *y, const float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

// c[0] += 1: counts the kernel's runs
__global__ static void count_kernel(int *c) {
    if (threadIdx.x == 0) c[0] += 1;
}

extern "C" void gr_axpy(float *y, const float *x, float a, int n) {
    CUDA_LAUNCH(axpy_kernel, (n + 127) / 128, 128, 0, cuda_stream(), y, x, a, n);
}
extern "C" void gr_count(int *c) { CUDA_LAUNCH(count_kernel, 1, 32, 0, cuda_stream(), c); }

// Starts a capture of the compute stream (global mode, or relaxed), makes call `which` inside it and ends the
// capture. Returns the call's error code; *end gets cudaStreamEndCapture's and *after whether the stream still
// captures afterwards. The errors are cleared, so later launches see none.
//   0 cudaStreamSynchronize on the capturing stream   1 cudaMalloc           2 cudaMemcpy (synchronous)
//   3 cudaMemcpyAsync from pageable host memory       4 cudaDeviceSynchronize 5 cudaFree (of a buffer of its own)
//   6 cudaMalloc in relaxed mode (legal)              7 cudaMemsetAsync (legal, recorded)
extern "C" int gr_capture_call(int which, void *dev, size_t bytes, int *end, int *after) {
    cudaStream_t s = cuda_stream();
    static float host[64];
    int relaxed = which == 6;
    void *own = nullptr; // case 5 frees a buffer of its own, made before the capture
    if (which == 5) CUDA_CHECK(cudaMalloc(&own, 256));
    CUDA_CHECK(cudaStreamBeginCapture(s, relaxed ? cudaStreamCaptureModeRelaxed : cudaStreamCaptureModeGlobal));
    cudaError_t e = cudaSuccess;
    void *p = nullptr;
    switch (which) {
    case 0: e = cudaStreamSynchronize(s); break;
    case 1:
    case 6: e = cudaMalloc(&p, 256); break;
    case 2: e = cudaMemcpy(dev, host, bytes < sizeof host ? bytes : sizeof host, cudaMemcpyHostToDevice); break;
    case 3: e = cudaMemcpyAsync(dev, host, bytes < sizeof host ? bytes : sizeof host, cudaMemcpyHostToDevice, s); break;
    case 4: e = cudaDeviceSynchronize(); break;
    case 5: e = cudaFree(own); break;
    case 7: e = cudaMemsetAsync(dev, 0, bytes, s); break;
    }
    cudaGraph_t g = nullptr;
    *end = (int)cudaStreamEndCapture(s, &g);
    if (g) cudaGraphDestroy(g);
    cudaStreamCaptureStatus st;
    CUDA_CHECK(cudaStreamIsCapturing(s, &st));
    *after = st != cudaStreamCaptureStatusNone;
    cudaGetLastError();
    if (p) CUDA_CHECK(cudaFree(p));
    if (own && e != cudaSuccess) CUDA_CHECK(cudaFree(own));
    return (int)e;
}
