// cudaemu_emulator_kernels.cu: kernels that exercise each part of the CUDA subset the emulator provides (barriers
// with static and dynamic shared memory, warp shuffles and votes, atomics, 3-D indices), for cudaemu_emulator.c. The
// same source runs on a real GPU as cuda_emulator, so the emulator is checked against the hardware where one exists.
#include "../src/ops/cuda/cuda_common.cuh"
#include "../src/core/device_cuda.h"

// block sum through static shared memory and a tree of barriers: out[b] = sum of in[b * 256 .. b * 256 + 255]
__global__ static void block_sum_kernel(float *out, const float *in, int n) {
    __shared__ float s[256];
    int i = blockIdx.x * 256 + threadIdx.x;
    s[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

// the same with warp shuffles: lanes reduce by xor, warp leaders meet in dynamic shared memory
__global__ static void warp_sum_kernel(float *out, const float *in, int n) {
    CUDA_DYN_SHARED(float, part);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? in[i] : 0.0f;
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        float w = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
        for (int d = 16; d > 0; d >>= 1) w += __shfl_down_sync(0xffffffffu, w, d);
        if (threadIdx.x == 0) out[blockIdx.x] = w;
    }
}

// votes and broadcasts: per warp, the number of positive inputs (ballot), whether any/all are positive, lane 0's value
__global__ static void vote_kernel(int *count, int *any, int *all, float *bcast, const float *in) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, w = i >> 5;
    float v = in[i];
    unsigned b = __ballot_sync(0xffffffffu, v > 0.0f);
    int a = __any_sync(0xffffffffu, v > 0.0f), l = __all_sync(0xffffffffu, v > 0.0f);
    float first = __shfl_sync(0xffffffffu, v, 0);
    if ((threadIdx.x & 31) == 0) count[w] = __popc(b), any[w] = a, all[w] = l, bcast[w] = first;
}

// atomics from every thread of every block: a histogram of floor(|x|) into 8 bins, and a float total
__global__ static void atomic_kernel(int *hist, float *total, const float *in, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int bin = (int)fminf(fabsf(in[i]), 7.0f);
    atomicAdd(&hist[bin], 1);
    atomicAdd(total, 1.0f);
}

// 3-D grid and block indices: every thread writes its own linear id
__global__ static void index_kernel(int *out, int nx, int ny, int nz) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y,
        z = blockIdx.z * blockDim.z + threadIdx.z;
    if (x < nx && y < ny && z < nz) out[(z * ny + y) * nx + x] = (z * ny + y) * nx + x;
}

// __syncthreads_or: does any thread of the block see a negative value?
__global__ static void sync_or_kernel(int *out, const float *in) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int r = __syncthreads_or(in[i] < 0.0f);
    if (threadIdx.x == 0) out[blockIdx.x] = r;
}

extern "C" void emu_block_sum(float *out, const float *in, int n) {
    CUDA_LAUNCH(block_sum_kernel, cuda_blocks(n, 256), 256, 0, cuda_stream(), out, in, n);
}
extern "C" void emu_warp_sum(float *out, const float *in, int n, int threads) {
    CUDA_LAUNCH(warp_sum_kernel, cuda_blocks(n, threads), threads, sizeof(float) * (threads / 32), cuda_stream(), out,
                in, n);
}
extern "C" void emu_vote(int *count, int *any, int *all, float *bcast, const float *in, int warps) {
    CUDA_LAUNCH(vote_kernel, warps / 2, 64, 0, cuda_stream(), count, any, all, bcast, in);
}
extern "C" void emu_atomic(int *hist, float *total, const float *in, int n) {
    CUDA_LAUNCH(atomic_kernel, cuda_blocks(n, 128), 128, 0, cuda_stream(), hist, total, in, n);
}
extern "C" void emu_index(int *out, int nx, int ny, int nz) {
    dim3 block(8, 4, 2), grid(cuda_blocks(nx, 8), cuda_blocks(ny, 4), cuda_blocks(nz, 2));
    CUDA_LAUNCH(index_kernel, grid, block, 0, cuda_stream(), out, nx, ny, nz);
}
extern "C" void emu_sync_or(int *out, const float *in, int blocks) {
    CUDA_LAUNCH(sync_or_kernel, blocks, 96, 0, cuda_stream(), out, in);
}

// threads of one warp waiting at different synchronisation points: a hang on a GPU, a reported deadlock in emulation
__global__ static void deadlock_kernel(float *out) {
    if (threadIdx.x < 16) __syncthreads();
    else __syncwarp();
    out[threadIdx.x] = 1.0f;
}
extern "C" void emu_deadlock(float *out) { CUDA_LAUNCH(deadlock_kernel, 1, 32, 0, cuda_stream(), out); }
