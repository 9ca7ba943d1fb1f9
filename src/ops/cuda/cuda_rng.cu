// cuda_rng.cu: Gaussian noise on the GPU from the counter-based generator of core/rng.h. The transform is shared
// source with the CPU and uses explicitly rounded double operations, so the samples agree bit for bit.
#include "cuda_common.cuh"
#include "../../core/device_cuda.h"
#include "../../core/rng.h"
#include "cuda_api.h"

__global__ static void normal_fill_kernel(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    uint64_t first = offset >> 2;
    uint64_t b = first + (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b > ((offset + (uint64_t)n - 1) >> 2)) return;
    float z[4];
    rng_normal4(z, seed, stream, b);
    for (int l = 0; l < 4; l++) {
        uint64_t idx = (b << 2) + (uint64_t)l;
        if (idx >= offset && idx < offset + (uint64_t)n) out[idx - offset] = z[l];
    }
}

extern "C" void rng_normal_fill_cuda(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    if (n <= 0) return;
    uint64_t blocks = ((offset + (uint64_t)n - 1) >> 2) - (offset >> 2) + 1;
    CUDA_LAUNCH(normal_fill_kernel, cuda_blocks((long long)blocks, 256), 256, 0, cuda_stream(), out, n, seed, stream,
                offset);
}
