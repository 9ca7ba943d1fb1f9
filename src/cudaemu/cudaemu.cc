// cudaemu.cc: the emulated CUDA runtime and kernel launcher behind cudaemu.h (see there for what is emulated).
// Blocks of a launch run on OpenMP threads; the threads of a block run as fibers that switch only at barriers and
// warp collectives, or as a plain loop for kernels that never synchronise. A fiber is made once (ucontext) and
// then reused for every block its OS thread runs; switches between a fiber and its thread's scheduler are
// _setjmp/_longjmp pairs, which, unlike swapcontext, make no system call to save the signal mask.
#undef _FORTIFY_SOURCE // its longjmp check rejects the jumps between stacks that the fibers are made of
#include "cudaemu.h"

#include <omp.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>
#include <vector>

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

[[noreturn]] static void emu_fail(const char *kernel, const char *msg) {
    fprintf(stderr, "cudaemu: %s%s%s\n", kernel ? kernel : "", kernel ? ": " : "", msg);
    fflush(stderr);
    abort();
}
void cudaemu_fail(const char *what, const char *msg) { emu_fail(what, msg); }

// ---------------------------------------------------------------------------------------------------------------
// state and counters

static int g_enabled = -1;
static std::atomic<long long> g_allocs{0}, g_launches{0}, g_syncs{0}, g_graph_launches{0};
static std::mutex g_mem_mu;
static std::map<uintptr_t, size_t> g_mem; // device allocations: base -> size
static size_t g_mem_bytes;
static std::map<uintptr_t, size_t> g_pinned; // cudaMallocHost blocks: base -> size (their copies may be captured)
static thread_local cudaError_t t_last_error = cudaSuccess;
static thread_local int t_device = 0;

extern "C" int cudaemu_enabled(void) {
    if (g_enabled < 0) {
        const char *e = getenv("DRTUNE_CUDAEMU");
        g_enabled = e && e[0] == '1';
    }
    return g_enabled;
}
extern "C" void cudaemu_enable(int on) { g_enabled = on != 0; }
extern "C" long long cudaemu_alloc_count(void) { return g_allocs.load(); }
extern "C" size_t cudaemu_bytes_in_use(void) {
    std::lock_guard<std::mutex> l(g_mem_mu);
    return g_mem_bytes;
}
extern "C" long long cudaemu_launch_count(void) { return g_launches.load(); }
extern "C" long long cudaemu_sync_count(void) { return g_syncs.load(); }
extern "C" long long cudaemu_graph_launch_count(void) { return g_graph_launches.load(); }

extern "C" int cudaemu_is_device(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    std::lock_guard<std::mutex> l(g_mem_mu);
    auto it = g_mem.upper_bound(a);
    if (it == g_mem.begin()) return 0;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

static cudaError_t set_error(cudaError_t e) {
    if (e != cudaSuccess) t_last_error = e;
    return e;
}

// ---------------------------------------------------------------------------------------------------------------
// stream capture state (the API is further down, with the streams)

struct CudaemuGraph {
    std::vector<std::function<void()>> ops; // the recorded work, in stream order
};
struct CudaemuGraphExec {
    std::vector<std::function<void()>> ops;
};
struct CudaemuStream {
    unsigned flags;
    cudaStreamCaptureStatus capture;
    cudaStreamCaptureMode mode;
    CudaemuGraph *graph; // while capturing
};
static std::mutex g_cap_mu;
static std::set<CudaemuStream *> g_capturing; // streams with a capture under way (active or invalidated)
static thread_local int t_replaying;          // a graph is running: its calls execute

cudaStreamCaptureStatus cudaemu_capture_status(cudaStream_t s) {
    if (!s || t_replaying) return cudaStreamCaptureStatusNone;
    std::lock_guard<std::mutex> l(g_cap_mu);
    return s->capture;
}
void cudaemu_capture_add(cudaStream_t s, std::function<void()> op) {
    std::lock_guard<std::mutex> l(g_cap_mu);
    if (s->capture == cudaStreamCaptureStatusActive) s->graph->ops.push_back(std::move(op));
}
// Marks s's capture invalidated (its EndCapture then fails) and returns the error the refused call reports.
static cudaError_t capture_violation(cudaStream_t s) {
    std::lock_guard<std::mutex> l(g_cap_mu);
    if (s->capture == cudaStreamCaptureStatusActive) s->capture = cudaStreamCaptureStatusInvalidated;
    return cudaErrorStreamCaptureUnsupported;
}
int cudaemu_capture_forbids_unsafe(void) {
    if (t_replaying) return 0;
    std::lock_guard<std::mutex> l(g_cap_mu);
    int forbid = 0;
    for (CudaemuStream *s : g_capturing)
        if (s->mode != cudaStreamCaptureModeRelaxed) {
            forbid = 1;
            if (s->capture == cudaStreamCaptureStatusActive) s->capture = cudaStreamCaptureStatusInvalidated;
        }
    return forbid;
}

// ---------------------------------------------------------------------------------------------------------------
// device, memory, copies

cudaError_t cudaGetDeviceCount(int *n) {
    *n = cudaemu_enabled() ? 1 : 0;
    return *n ? cudaSuccess : set_error(cudaErrorNoDevice);
}
cudaError_t cudaSetDevice(int d) {
    if (!cudaemu_enabled() || d != 0) return set_error(cudaErrorInvalidValue);
    t_device = d;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = t_device;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (!cudaemu_enabled() || d != 0) return set_error(cudaErrorInvalidValue);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cudaemu (CPU emulation, %d threads)", omp_get_max_threads());
    size_t fr, tot;
    cudaMemGetInfo(&fr, &tot);
    p->totalGlobalMem = tot;
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = 227 * 1024;
    p->multiProcessorCount = omp_get_max_threads();
    p->major = 9, p->minor = 0;
    p->maxThreadsPerBlock = 1024;
    p->warpSize = 32;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) {
    *v = 0;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = 0;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    *total_bytes = (size_t)pages * (size_t)ps;
    *free_bytes = (size_t)avail * (size_t)ps;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    *p = NULL;
    if (!cudaemu_enabled()) return set_error(cudaErrorNoDevice);
    if (cudaemu_capture_forbids_unsafe()) return set_error(cudaErrorStreamCaptureUnsupported);
    size_t rounded = ((bytes ? bytes : 1) + 255) & ~(size_t)255;
    void *m = aligned_alloc(256, rounded);
    if (!m) return set_error(cudaErrorMemoryAllocation);
    memset(m, 0xff, rounded); // device memory starts undefined: all-ones bytes read as NaN floats
    std::lock_guard<std::mutex> l(g_mem_mu);
    g_mem[(uintptr_t)m] = bytes;
    g_mem_bytes += bytes;
    g_allocs++;
    *p = m;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    if (cudaemu_capture_forbids_unsafe()) return set_error(cudaErrorStreamCaptureUnsupported);
    std::lock_guard<std::mutex> l(g_mem_mu);
    auto it = g_mem.find((uintptr_t)p);
    if (it == g_mem.end()) return set_error(cudaErrorInvalidDevicePointer);
    g_mem_bytes -= it->second;
    g_mem.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t bytes) {
    if (cudaemu_capture_forbids_unsafe()) return set_error(cudaErrorStreamCaptureUnsupported);
    *p = aligned_alloc(256, ((bytes ? bytes : 1) + 255) & ~(size_t)255);
    if (!*p) return set_error(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> l(g_mem_mu);
    g_pinned[(uintptr_t)*p] = bytes;
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) {
    if (cudaemu_capture_forbids_unsafe()) return set_error(cudaErrorStreamCaptureUnsupported);
    std::lock_guard<std::mutex> l(g_mem_mu);
    g_pinned.erase((uintptr_t)p);
    free(p);
    return cudaSuccess;
}
// 1 if [p, p + bytes) lies inside one cudaMallocHost block
static int is_pinned(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    std::lock_guard<std::mutex> l(g_mem_mu);
    auto it = g_pinned.upper_bound(a);
    if (it == g_pinned.begin()) return 0;
    --it;
    return a + bytes <= it->first + it->second;
}

// A copy's device side must lie in one device allocation and its host side outside all of them: the emulation
// catches host/device pointer mix-ups that a real GPU reports as an illegal address.
static cudaError_t check_side(const void *p, size_t bytes, int device) {
    if (!bytes) return cudaSuccess;
    int dev = cudaemu_is_device(p, bytes);
    if (device && !dev) return cudaErrorInvalidDevicePointer;
    if (!device && dev) return cudaErrorInvalidMemcpyDirection;
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    if (kind != cudaMemcpyDefault) {
        cudaError_t e = check_side(dst, bytes, kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice);
        if (e == cudaSuccess)
            e = check_side(src, bytes, kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice);
        if (e != cudaSuccess) return set_error(e);
    }
    cudaStreamCaptureStatus cap = cudaemu_capture_status(s);
    if (cap == cudaStreamCaptureStatusInvalidated) return set_error(cudaErrorStreamCaptureInvalidated);
    if (cap == cudaStreamCaptureStatusActive) {
        // a host side must be pinned: a capture refuses pageable memory (it is read or written at each replay)
        if (bytes && ((!cudaemu_is_device(dst, bytes) && !is_pinned(dst, bytes)) ||
                      (!cudaemu_is_device(src, bytes) && !is_pinned(src, bytes))))
            return set_error(capture_violation(s));
        cudaemu_capture_add(s, [=] {
            if (bytes) memmove(dst, src, bytes);
        });
        return cudaSuccess;
    }
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (cudaemu_capture_forbids_unsafe()) return set_error(cudaErrorStreamCaptureUnsupported);
    g_syncs++;
    return cudaMemcpyAsync(dst, src, bytes, kind, NULL);
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
    if (check_side(p, bytes, 1) != cudaSuccess) return set_error(cudaErrorInvalidDevicePointer);
    cudaStreamCaptureStatus cap = cudaemu_capture_status(s);
    if (cap == cudaStreamCaptureStatusInvalidated) return set_error(cudaErrorStreamCaptureInvalidated);
    if (cap == cudaStreamCaptureStatusActive) {
        cudaemu_capture_add(s, [=] {
            if (bytes) memset(p, value, bytes);
        });
        return cudaSuccess;
    }
    if (bytes) memset(p, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    if (cudaemu_capture_forbids_unsafe()) return set_error(cudaErrorStreamCaptureUnsupported);
    g_syncs++;
    return cudaMemsetAsync(p, value, bytes, NULL);
}

// ---------------------------------------------------------------------------------------------------------------
// streams and events: work runs in order at the call, so they only keep time

struct CudaemuEvent {
    double t;
    int recorded;
    int captured; // last recorded on a capturing stream: it stands for work that has not run
};
static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    *s = new CudaemuStream{flags, cudaStreamCaptureStatusNone, cudaStreamCaptureModeGlobal, nullptr};
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (cudaemu_capture_status(s) != cudaStreamCaptureStatusNone) return set_error(cudaErrorIllegalState);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (cudaemu_capture_status(s) != cudaStreamCaptureStatusNone) return set_error(capture_violation(s));
    g_syncs++;
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
    if (!e) return set_error(cudaErrorInvalidResourceHandle);
    // joining a capture from another stream (fork/join through events) is not emulated: refused, loudly
    if (e->captured && cudaemu_capture_status(s) == cudaStreamCaptureStatusNone)
        return set_error(cudaErrorStreamCaptureUnsupported);
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) {
    *e = new CudaemuEvent{0.0, 0, 0};
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return set_error(cudaErrorInvalidResourceHandle);
    cudaStreamCaptureStatus cap = cudaemu_capture_status(s);
    if (cap == cudaStreamCaptureStatusInvalidated) return set_error(cudaErrorStreamCaptureInvalidated);
    e->captured = cap == cudaStreamCaptureStatusActive; // a dependency inside the capture, not a time
    if (!e->captured) e->t = now_ms(), e->recorded = 1;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return set_error(cudaErrorInvalidResourceHandle);
    if (e->captured) return set_error(cudaErrorCapturedEvent);
    g_syncs++;
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    if (!e) return set_error(cudaErrorInvalidResourceHandle);
    return e->captured ? set_error(cudaErrorCapturedEvent) : cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!a || !b || !a->recorded || !b->recorded) return set_error(cudaErrorInvalidResourceHandle);
    if (a->captured || b->captured) return set_error(cudaErrorCapturedEvent);
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    if (cudaemu_capture_forbids_unsafe()) return set_error(cudaErrorStreamCaptureUnsupported);
    g_syncs++;
    return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------------------------
// capture and graphs: a graph is the recorded list; instantiating copies it, launching replays it in order

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    if (!s) return set_error(cudaErrorStreamCaptureUnsupported); // the legacy stream cannot be captured
    std::lock_guard<std::mutex> l(g_cap_mu);
    if (s->capture != cudaStreamCaptureStatusNone) return set_error(cudaErrorIllegalState);
    s->capture = cudaStreamCaptureStatusActive, s->mode = mode, s->graph = new CudaemuGraph();
    g_capturing.insert(s);
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    if (!s || !graph) return set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> l(g_cap_mu);
    if (s->capture == cudaStreamCaptureStatusNone) return set_error(cudaErrorIllegalState);
    int ok = s->capture == cudaStreamCaptureStatusActive;
    *graph = ok ? s->graph : nullptr;
    if (!ok) delete s->graph;
    s->graph = nullptr, s->capture = cudaStreamCaptureStatusNone;
    g_capturing.erase(s);
    return ok ? cudaSuccess : set_error(cudaErrorStreamCaptureInvalidated);
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status) {
    if (!status) return set_error(cudaErrorInvalidValue);
    *status = s ? cudaemu_capture_status(s) : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t *nodes, size_t *count) {
    if (!g || !count || nodes) return set_error(cudaErrorInvalidValue); // the count only
    *count = g->ops.size();
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long) {
    if (!exec || !g) return set_error(cudaErrorInvalidValue);
    *exec = new CudaemuGraphExec{g->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!exec) return set_error(cudaErrorInvalidResourceHandle);
    cudaStreamCaptureStatus cap = cudaemu_capture_status(s);
    if (cap == cudaStreamCaptureStatusInvalidated) return set_error(cudaErrorStreamCaptureInvalidated);
    auto run = [exec] {
        g_graph_launches++;
        t_replaying++;
        for (const auto &op : exec->ops) op();
        t_replaying--;
    };
    if (cap == cudaStreamCaptureStatusActive) cudaemu_capture_add(s, run); // a graph inside a graph
    else run();
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    cudaError_t e = t_last_error;
    t_last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_error; }
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    }
    return "unknown error";
}

// ---------------------------------------------------------------------------------------------------------------
// the kernel launcher

enum { F_RUN, F_BAR, F_WARP, F_DONE };
struct Fiber {
    ucontext_t ctx; // the entry context, used once to start the fiber
    jmp_buf jb;     // where the fiber resumes
    char *stack;
    int state, started;
    uint3 tid;
};
#define FIBER_STACK (256 * 1024)
struct Block {
    std::vector<Fiber *> f; // never moved: a ucontext_t points into itself
    jmp_buf main;           // where the scheduler (run_fibers) resumes
    int n = 0, cur = -1;
    int fibers = 0;       // this block runs as fibers
    int synced = 0;       // a barrier or warp collective happened
    const std::function<void()> *body = nullptr;
    const char *kernel = nullptr;
    unsigned char xbuf[32][32][8]; // warp exchange slots [warp][lane], warps of up to 1024 threads
    unsigned char snap[32][32][8]; // the slots as they were when the warp was released
    unsigned live[32];             // live-lane mask of each warp at its release
    int bar_or, bar_or_acc;        // __syncthreads_or: the reduction and its accumulator
    void *dyn = nullptr;
    size_t dyn_size = 0;
    uint64_t rng = 0;
};
static thread_local Block *t_block;

static Block *block_state(void) {
    if (!t_block) t_block = new Block();
    return t_block;
}

void *cudaemu_dyn_smem(void) { return block_state()->dyn; }

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}
static void shuffle_order(std::vector<int> &o, uint64_t *s) {
    for (size_t i = o.size(); i > 1; i--) std::swap(o[i - 1], o[rng_next(s) % i]);
}

// A fiber runs the kernel body for one thread of a block, parks, and runs it again when the scheduler resumes it for
// the next block; it never returns.
static void fiber_entry(void) {
    for (;;) {
        Block *b = t_block;
        (*b->body)();
        Fiber *f = b->f[b->cur];
        f->state = F_DONE;
        if (!_setjmp(f->jb)) _longjmp(b->main, 1);
    }
}

static void tid_of(int i, uint3 *t) {
    t->x = (unsigned)i % blockDim.x;
    t->y = ((unsigned)i / blockDim.x) % blockDim.y;
    t->z = (unsigned)i / (blockDim.x * blockDim.y);
}

static void suspend(int state) {
    Block *b = t_block;
    b->synced = 1;
    if (!b->fibers) {
        if (b->n == 1 && state == F_BAR) return; // a one-thread block passes its barriers
        emu_fail(b->kernel, "a barrier or warp collective in a kernel whose first block never synchronised "
                            "(data-dependent synchronisation is not supported by the emulator)");
    }
    Fiber *f = b->f[b->cur];
    f->state = state;
    if (!_setjmp(f->jb)) _longjmp(b->main, 1);
    threadIdx = f->tid; // resumed
}

void cudaemu_syncthreads(void) { suspend(F_BAR); }

int cudaemu_syncthreads_or(int p) {
    Block *b = block_state();
    if (!b->fibers && b->n == 1) return p != 0;
    b->bar_or_acc |= p != 0;
    suspend(F_BAR);
    return b->bar_or;
}

static int thread_linear(void) { return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }

void cudaemu_warp_exchange(const void *mine, size_t bytes, unsigned char (*all)[8]) {
    Block *b = block_state();
    int t = thread_linear(), w = t >> 5, lane = t & 31;
    if (!b->fibers && b->n == 1) { // one thread: only lane 0 is live
        memset(all, 0, 32 * 8);
        memcpy(all[0], mine, bytes);
        b->live[0] = 1;
        return;
    }
    memset(b->xbuf[w][lane], 0, 8);
    memcpy(b->xbuf[w][lane], mine, bytes);
    suspend(F_WARP);
    memcpy(all, b->snap[w], 32 * 8);
}

unsigned cudaemu_ballot(int pred) {
    unsigned char all[32][8];
    int p = pred != 0;
    cudaemu_warp_exchange(&p, sizeof p, all);
    Block *b = t_block;
    int w = thread_linear() >> 5;
    unsigned m = 0;
    for (int l = 0; l < 32; l++)
        if ((b->live[w] >> l) & 1u) {
            int v;
            memcpy(&v, all[l], sizeof v);
            if (v) m |= 1u << l;
        }
    return m;
}

static uint64_t g_shuffle_seed;

__attribute__((noinline)) static Fiber *new_fiber(const char *kernel) {
    Fiber *f = new Fiber();
    void *st = mmap(NULL, FIBER_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st == MAP_FAILED) emu_fail(kernel, "cannot map a fiber stack");
    f->stack = (char *)st;
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = FIBER_STACK;
    f->ctx.uc_link = nullptr; // fiber_entry never returns
    makecontext(&f->ctx, fiber_entry, 0);
    return f;
}

// Runs fiber f until it suspends or finishes (starting it on its first run).
__attribute__((noinline)) static void resume(Block *b, Fiber *f) {
    if (!_setjmp(b->main)) {
        if (f->started) _longjmp(f->jb, 1);
        f->started = 1;
        setcontext(&f->ctx);
    }
}

// Runs one block as fibers; returns when all its threads have finished.
static void run_fibers(Block *b, const char *kernel) {
    int n = b->n;
    if ((int)b->f.size() < n) {
        while ((int)b->f.size() < n) b->f.push_back(new_fiber(kernel));
    }
    for (int i = 0; i < n; i++) {
        b->f[i]->state = F_RUN;
        tid_of(i, &b->f[i]->tid);
    }
    std::vector<int> order(n);
    for (int i = 0; i < n; i++) order[i] = i;
    int nwarps = (n + 31) / 32;
    for (;;) {
        if (g_shuffle_seed) shuffle_order(order, &b->rng);
        for (int k = 0; k < n; k++) {
            int i = order[k];
            if (b->f[i]->state != F_RUN) continue;
            b->cur = i;
            threadIdx = b->f[i]->tid;
            resume(b, b->f[i]);
        }
        int done = 0, at_bar = 0;
        for (int i = 0; i < n; i++) done += b->f[i]->state == F_DONE, at_bar += b->f[i]->state == F_BAR;
        if (done == n) return;
        int released = 0;
        for (int w = 0; w < nwarps; w++) {
            int lo = w * 32, hi = std::min(n, lo + 32), waiting = 0, live = 0;
            unsigned mask = 0;
            for (int i = lo; i < hi; i++) {
                if (b->f[i]->state != F_DONE) live++, mask |= 1u << (i - lo);
                waiting += b->f[i]->state == F_WARP;
            }
            if (live && waiting == live) {
                for (int i = lo; i < hi; i++)
                    if (b->f[i]->state == F_DONE) memset(b->xbuf[w][i - lo], 0, 8);
                memcpy(b->snap[w], b->xbuf[w], sizeof b->snap[w]);
                b->live[w] = mask;
                for (int i = lo; i < hi; i++)
                    if (b->f[i]->state == F_WARP) b->f[i]->state = F_RUN;
                released = 1;
            }
        }
        if (released) continue;
        if (at_bar == n - done) {
            b->bar_or = b->bar_or_acc, b->bar_or_acc = 0;
            for (int i = 0; i < n; i++)
                if (b->f[i]->state == F_BAR) b->f[i]->state = F_RUN;
            continue;
        }
        emu_fail(kernel, "deadlock: the threads of a block wait at different barriers (__syncthreads or a warp "
                         "collective in divergent code)");
    }
}

static void run_plain(Block *b, uint64_t *rng) {
    int n = b->n;
    if (!g_shuffle_seed) {
        for (int i = 0; i < n; i++) {
            b->cur = i;
            tid_of(i, &threadIdx);
            (*b->body)();
        }
        return;
    }
    std::vector<int> order(n);
    for (int i = 0; i < n; i++) order[i] = i;
    shuffle_order(order, rng);
    for (int k = 0; k < n; k++) {
        b->cur = order[k];
        tid_of(order[k], &threadIdx);
        (*b->body)();
    }
}

static void run_block(const std::function<void()> &body, CudaemuSite *site, dim3 grid, dim3 block, size_t dyn,
                      long long lin, int fibers) {
    Block *b = block_state();
    gridDim = grid, blockDim = block;
    blockIdx.x = (unsigned)(lin % grid.x);
    blockIdx.y = (unsigned)((lin / grid.x) % grid.y);
    blockIdx.z = (unsigned)(lin / ((long long)grid.x * grid.y));
    b->n = (int)(block.x * block.y * block.z);
    b->body = &body, b->kernel = site->kernel;
    b->fibers = fibers, b->synced = 0, b->bar_or = b->bar_or_acc = 0;
    if (dyn > b->dyn_size) {
        free(b->dyn);
        b->dyn = aligned_alloc(16, (dyn + 15) & ~(size_t)15);
        b->dyn_size = dyn;
    }
    if (dyn) memset(b->dyn, 0xff, dyn); // shared memory starts undefined too
    if (fibers) run_fibers(b, site->kernel);
    else run_plain(b, &b->rng);
}

static void launch_run(CudaemuSite *site, dim3 grid, dim3 block, size_t dyn_smem, const std::function<void()> &body);

void cudaemu_launch(CudaemuSite *site, dim3 grid, dim3 block, size_t dyn_smem, cudaStream_t s,
                    const std::function<void()> &body) {
    if (!cudaemu_enabled()) {
        set_error(cudaErrorNoDevice);
        return;
    }
    long long nthreads = (long long)block.x * block.y * block.z;
    if (nthreads < 1 || nthreads > 1024 || block.z > 64 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
        grid.y > 65535 || grid.z > 65535 || dyn_smem > 227 * 1024) {
        set_error(cudaErrorInvalidConfiguration);
        return;
    }
    cudaStreamCaptureStatus cap = cudaemu_capture_status(s);
    if (cap == cudaStreamCaptureStatusInvalidated) {
        set_error(cudaErrorStreamCaptureInvalidated);
        return;
    }
    if (cap == cudaStreamCaptureStatusActive) { // the body holds the kernel's arguments by value: copied here
        std::function<void()> saved = body;
        cudaemu_capture_add(s, [=] { launch_run(site, grid, block, dyn_smem, saved); });
        return;
    }
    launch_run(site, grid, block, dyn_smem, body);
}

static void launch_run(CudaemuSite *site, dim3 grid, dim3 block, size_t dyn_smem, const std::function<void()> &body) {
    long long nblocks = (long long)grid.x * grid.y * grid.z;
    static std::once_flag once;
    std::call_once(once, [] {
        const char *s = getenv("CUDAEMU_SHUFFLE");
        g_shuffle_seed = s ? strtoull(s, NULL, 10) : 0;
    });
    g_launches++;
    long long first = 0;
    if (g_shuffle_seed) first = (long long)((g_shuffle_seed * 0x9e3779b97f4a7c15ull + (uint64_t)g_launches) % (uint64_t)nblocks);
    int mode = site->mode.load();
    if (mode == 0) { // probe with one block as fibers: does the kernel synchronise?
        Block *b = block_state();
        b->rng = g_shuffle_seed ^ (uint64_t)g_launches.load() ^ 0x5851f42d4c957f2dull;
        run_block(body, site, grid, block, dyn_smem, first, 1);
        mode = b->synced ? 2 : 1;
        site->mode.store(mode);
    } else {
        first = -1;
    }
    std::vector<long long> order;
    if (g_shuffle_seed) {
        order.resize(nblocks);
        for (long long i = 0; i < nblocks; i++) order[i] = i;
        uint64_t s = g_shuffle_seed + (uint64_t)g_launches.load() * 0x2545f4914f6cdd1dull;
        for (long long i = nblocks; i > 1; i--) std::swap(order[i - 1], order[rng_next(&s) % (uint64_t)i]);
    }
    int fibers = mode == 2;
#pragma omp parallel for schedule(dynamic, 1) if (nblocks > 1)
    for (long long k = 0; k < nblocks; k++) {
        long long lin = g_shuffle_seed ? order[k] : k;
        if (lin == first) continue;
        Block *b = block_state();
        if (g_shuffle_seed) b->rng = g_shuffle_seed ^ ((uint64_t)lin * 0x9e3779b97f4a7c15ull) ^ 1;
        run_block(body, site, grid, block, dyn_smem, lin, fibers);
    }
}
