// cudaemu.h: the subset of CUDA that drtune's kernels use, for a host C++ compiler. The project's own .cu files are
// compiled against this header (instead of the CUDA toolkit's) into the emulated backend, so every kernel and every
// library wrapper runs in CI on machines without a GPU and is compared there with its CPU op (ctest -L cudaemu).
//
// What is emulated:
//   - kernels: grid/block indices, __shared__ memory (static and dynamic), __syncthreads, warp shuffles and votes,
//     atomics; a launch goes through CUDA_LAUNCH (cuda_common.cuh), which is <<<...>>> on a real GPU;
//   - execution: the blocks of a launch are spread over OpenMP threads; the threads of a block run as fibers on one
//     OS thread, switching at barriers and warp collectives. A kernel that never synchronises runs its threads as a
//     plain loop (decided on the launch's first block; a later barrier in such a kernel is reported as an error).
//     CUDAEMU_SHUFFLE=<seed> runs threads and blocks in a random order to shake out races;
//   - the runtime: device memory is host memory from a registry (copies check that their "device" side really is
//     device memory), streams and events run in order at the call, errors are sticky as in CUDA;
//   - graphs: a capturing stream records its work (kernel launches with their arguments copied by value, clears,
//     device-to-device and pinned-host copies, the library calls with their descriptors and scalars copied) instead
//     of running it; launching the instantiated graph replays the list in order. What real CUDA refuses during a
//     capture is refused here with the same errors and invalidates the capture: synchronising the capturing stream,
//     pageable host copies on it, and (global and thread-local modes) cudaMalloc, cudaFree, cudaMemcpy, cudaMemset,
//     cudaDeviceSynchronize and the creation of library handles;
//   - libraries: the cuBLASLt, cuDNN and NCCL calls drtune makes, as CPU implementations of their documented semantics
//     (cudaemu_blas.h, cudaemu_dnn.h, cudaemu_nccl.h).
// What cannot be seen here: tensor-core rounding, FMA contraction by nvcc (the emulation is compiled without
// contraction), real concurrency between streams, and speed.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <tuple>
#include <type_traits>

// ---------------------------------------------------------------------------------------------------------------
// qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// static __shared__ arrays: one copy per OS thread, and a block runs on one OS thread, so all its threads share it
#define __shared__ static thread_local

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
static constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------------------------
// runtime API subset
typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorCapturedEvent = 907,
} cudaError_t;
typedef enum {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;
typedef struct CudaemuStream *cudaStream_t;
typedef struct CudaemuEvent *cudaEvent_t;
typedef struct CudaemuGraph *cudaGraph_t;
typedef struct CudaemuGraphExec *cudaGraphExec_t;
typedef struct CudaemuGraphNode *cudaGraphNode_t;
typedef enum {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
} cudaStreamCaptureMode;
typedef enum {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2
} cudaStreamCaptureStatus;
#define cudaStreamNonBlocking 0x1
#define cudaEventDefault 0x0
#define cudaEventDisableTiming 0x2
#define cudaHostAllocDefault 0x0

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    int multiProcessorCount;
    int major, minor;
    int maxThreadsPerBlock;
    int warpSize;
    int pciBusID;
};
typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaDeviceSynchronize(void);
// stream capture and graphs (CUDA 12 signatures)
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status);
cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t *nodes, size_t *count);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
template <class F> cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }

// ---------------------------------------------------------------------------------------------------------------
// emulator controls and introspection (tests)
extern "C" {
// 1 when the emulated device is visible: always in the test binaries, and for drtune when DRTUNE_CUDAEMU=1.
int cudaemu_enabled(void);
void cudaemu_enable(int on);
// counters since start: device allocations, bytes held, kernel launches, blocking host synchronisations
long long cudaemu_alloc_count(void);
size_t cudaemu_bytes_in_use(void);
long long cudaemu_launch_count(void);
long long cudaemu_sync_count(void);
// 1 if [p, p + bytes) lies inside one device allocation
int cudaemu_is_device(const void *p, size_t bytes);
// graphs launched since start (each replay of a recorded list counts once)
long long cudaemu_graph_launch_count(void);
}

// ---------------------------------------------------------------------------------------------------------------
// stream capture, for the library stand-ins (cudaemu_blas.cc, cudaemu_dnn.cc): a call on a capturing stream checks
// its arguments as it would to run, then hands the emulator a closure holding copies of everything it reads on the
// host (descriptors, scalars) and returns; the closure runs when the graph is launched. Device memory is read then.
// cudaemu_capture_status: cudaStreamCaptureStatusNone while the graph replays (its calls run).
cudaStreamCaptureStatus cudaemu_capture_status(cudaStream_t s);
void cudaemu_capture_add(cudaStream_t s, std::function<void()> op);
// 1 when an API call that may allocate or synchronise (cudaMalloc, cudaFree, synchronous copies, creating a library
// handle) is illegal now: some stream is capturing in global or thread-local mode. The call then invalidates that
// capture, as real CUDA does, and the caller returns its error.
int cudaemu_capture_forbids_unsafe(void);
[[noreturn]] void cudaemu_fail(const char *what, const char *msg);

// ---------------------------------------------------------------------------------------------------------------
// kernel launch: the body is called once per thread with the built-in indices set
struct CudaemuSite {
    const char *kernel;
    std::atomic<int> mode; // 0 not yet known, 1 plain loop, 2 fibers
};
void cudaemu_launch(CudaemuSite *site, dim3 grid, dim3 block, size_t dyn_smem, cudaStream_t s,
                    const std::function<void()> &body);
// The arguments are evaluated once, at the launch, and kept by value (as <<<...>>> does): an argument expression such
// as s->OC must not be read again when a captured launch is replayed, after s is gone.
#define CUDAEMU_LAUNCH(kernel, grid, block, smem, stream, ...)                                                       \
    do {                                                                                                             \
        static CudaemuSite _site{#kernel, {0}};                                                                      \
        auto _args = std::make_tuple(__VA_ARGS__);                                                                   \
        cudaemu_launch(&_site, dim3(grid), dim3(block), (smem), (stream),                                            \
                       [=]() { std::apply([=](auto... a_) { kernel(a_...); }, _args); });                          \
    } while (0)

// dynamic shared memory of the running block (at least the launch's dyn_smem bytes, 16-byte aligned)
void *cudaemu_dyn_smem(void);

// ---------------------------------------------------------------------------------------------------------------
// synchronisation inside a kernel
void cudaemu_syncthreads(void);
// every live lane of the calling warp writes 8 bytes and reads all 32 back (lanes that exited read as zero)
void cudaemu_warp_exchange(const void *mine, size_t bytes, unsigned char (*all)[8]);
static inline void __syncthreads(void) { cudaemu_syncthreads(); }
static inline int __syncthreads_or(int p);
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    unsigned char all[32][8];
    int z = 0;
    cudaemu_warp_exchange(&z, sizeof z, all);
}
static inline void __threadfence(void) { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline void __threadfence_block(void) { std::atomic_thread_fence(std::memory_order_seq_cst); }

static inline unsigned cudaemu_lane(void) {
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return t & 31u;
}
template <class T> static inline T cudaemu_shfl_from(T v, int (*src_of)(int lane, int arg, int width), int arg,
                                                     int width) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    unsigned char all[32][8];
    cudaemu_warp_exchange(&v, sizeof v, all);
    int lane = (int)cudaemu_lane();
    int src = src_of(lane, arg, width);
    T r;
    memcpy(&r, all[src], sizeof r);
    return r;
}
static inline int cudaemu_src_idx(int lane, int src, int width) { return (lane & ~(width - 1)) + (src & (width - 1)); }
static inline int cudaemu_src_xor(int lane, int m, int width) {
    int s = lane ^ m;
    return ((s & ~(width - 1)) == (lane & ~(width - 1))) ? s : lane;
}
static inline int cudaemu_src_down(int lane, int d, int width) {
    int s = (lane & (width - 1)) + d;
    return s < width ? lane + d : lane;
}
static inline int cudaemu_src_up(int lane, int d, int width) { return (lane & (width - 1)) >= d ? lane - d : lane; }
template <class T> static inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    return cudaemu_shfl_from(v, cudaemu_src_idx, src, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int m, int width = 32) {
    return cudaemu_shfl_from(v, cudaemu_src_xor, m, width);
}
template <class T> static inline T __shfl_down_sync(unsigned, T v, unsigned d, int width = 32) {
    return cudaemu_shfl_from(v, cudaemu_src_down, (int)d, width);
}
template <class T> static inline T __shfl_up_sync(unsigned, T v, unsigned d, int width = 32) {
    return cudaemu_shfl_from(v, cudaemu_src_up, (int)d, width);
}
// votes over the live lanes of the warp
unsigned cudaemu_ballot(int pred);
static inline unsigned __ballot_sync(unsigned mask, int pred) { return cudaemu_ballot(pred) & mask; }
static inline int __any_sync(unsigned mask, int pred) { return (cudaemu_ballot(pred) & mask) != 0; }
static inline int __all_sync(unsigned mask, int pred) {
    unsigned live = cudaemu_ballot(1) & mask;
    return (cudaemu_ballot(pred) & mask) == live;
}
static inline unsigned __activemask(void) { return cudaemu_ballot(1); }
int cudaemu_syncthreads_or(int p);
static inline int __syncthreads_or(int p) { return cudaemu_syncthreads_or(p); }

// ---------------------------------------------------------------------------------------------------------------
// atomics (blocks run on several OS threads, so these are real atomics)
template <class T> static inline T cudaemu_atomic_rmw(T *p, T v, int op) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics on 4 or 8 bytes");
    using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
    U *q = reinterpret_cast<U *>(p);
    U old = __atomic_load_n(q, __ATOMIC_RELAXED), nw;
    for (;;) {
        T o, n;
        memcpy(&o, &old, sizeof o);
        switch (op) {
        case 0: n = o + v; break;
        case 1: n = o > v ? o : v; break;
        case 2: n = o < v ? o : v; break;
        default: n = v; break;
        }
        memcpy(&nw, &n, sizeof nw);
        if (__atomic_compare_exchange_n(q, &old, nw, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return o;
    }
}
template <class T> static inline T atomicAdd(T *p, T v) { return cudaemu_atomic_rmw(p, v, 0); }
template <class T> static inline T atomicMax(T *p, T v) { return cudaemu_atomic_rmw(p, v, 1); }
template <class T> static inline T atomicMin(T *p, T v) { return cudaemu_atomic_rmw(p, v, 2); }
template <class T> static inline T atomicExch(T *p, T v) { return cudaemu_atomic_rmw(p, v, 3); }
template <class T> static inline T atomicCAS(T *p, T cmp, T v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
    return cmp;
}

// ---------------------------------------------------------------------------------------------------------------
// device math (the C library's, compiled without FMA contraction) and bit casts
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// __expf and __logf: glibc declares and exports them (the fast forms are the exact ones here)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline long long __double_as_longlong(double d) { long long u; memcpy(&u, &d, 8); return u; }
static inline double __longlong_as_double(long long u) { double d; memcpy(&d, &u, 8); return d; }
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
template <class T> static inline T __ldg(const T *p) { return *p; }
using std::max;
using std::min;

// ---------------------------------------------------------------------------------------------------------------
// bf16 and f16 storage types (round to nearest even; NaN stays NaN)
struct __nv_bfloat16 {
    uint16_t x;
};
static inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    __nv_bfloat16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) r.x = (uint16_t)((u >> 16) | 0x40);
    else r.x = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return r;
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)h.x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
