// device.c: the CPU side of device.h, and dispatch to the CUDA runtime (core/device_cuda.cu). The host code is the
// same in every build: the backend linked in is the real CUDA runtime (where nvcc was found at build time) or the
// emulator, whose device is visible only in the emulated tests or with DRTUNE_CUDAEMU=1.
#include "device.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"
#include "device_cuda.h"

static int g_cuda_count = -1; // visible GPUs, asked once
static int g_frozen;          // set after planning: no more device allocations
static long long g_allocs;    // device allocations so far

int device_cuda_available(void) {
    if (g_cuda_count < 0) g_cuda_count = cuda_device_count();
    return g_cuda_count > 0;
}

int device_cuda_emulated(void) { return cuda_is_emulated(); }

static void need_cuda(void) {
    if (device_cuda_available()) return;
    if (cuda_is_emulated())
        dt_user_error("a CUDA device was requested but no GPU is visible (this drtune was built without the CUDA "
                      "toolkit; DRTUNE_CUDAEMU=1 selects the slow CPU emulation of the GPU path)");
    dt_user_error("a CUDA device was requested but no GPU is visible: run on a machine with an NVIDIA GPU, or set "
                  "train.device = cpu");
}

void device_select(Device d, int local_rank) {
    if (d != DEVICE_CUDA) return;
    need_cuda();
    cuda_init(local_rank);
}

void device_freeze_allocations(int on) { g_frozen = on; }

long long device_alloc_count(void) { return g_allocs; }

// The live device_alloc buffers and their sizes, by device, for the byte counts (a few hundred at most: arenas,
// workspaces and benchmark tensors), under critical(device_bytes).
typedef struct {
    void *p;
    size_t bytes;
} LiveAlloc;
static LiveAlloc *g_live[2];
static int g_nlive[2], g_caplive[2];
static size_t g_inuse[2], g_peak[2];

static void bytes_add(Device d, void *p, size_t bytes) {
    int k = d == DEVICE_CUDA;
#pragma omp critical(device_bytes)
    {
        if (g_nlive[k] == g_caplive[k]) {
            g_caplive[k] = g_caplive[k] ? 2 * g_caplive[k] : 64;
            g_live[k] = xrealloc(g_live[k], sizeof *g_live[k] * (size_t)g_caplive[k]);
        }
        g_live[k][g_nlive[k]++] = (LiveAlloc){p, bytes};
        g_inuse[k] += bytes;
        if (g_inuse[k] > g_peak[k]) g_peak[k] = g_inuse[k];
    }
}

static void bytes_remove(Device d, void *p) {
    int k = d == DEVICE_CUDA;
#pragma omp critical(device_bytes)
    for (int i = g_nlive[k] - 1; i >= 0; i--)
        if (g_live[k][i].p == p) {
            g_inuse[k] -= g_live[k][i].bytes;
            g_live[k][i] = g_live[k][--g_nlive[k]];
            break;
        }
}

size_t device_bytes_in_use(Device d) { return g_inuse[d == DEVICE_CUDA]; }
size_t device_bytes_peak(Device d) { return g_peak[d == DEVICE_CUDA]; }
void device_bytes_peak_reset(Device d) { g_peak[d == DEVICE_CUDA] = g_inuse[d == DEVICE_CUDA]; }

// Host buffers from DEVICE_BIG_BYTES on (the arenas, the ops' workspace) are mapped straight from the kernel: its
// pages come zero-filled, so nothing clears them a second time. Each is then touched once, by all threads in
// parallel, so that the page faults (where the kernel clears the pages) happen here, spread over the cores, and not
// one at a time inside the first forward and backward. (Asking for 2 MiB pages, MADV_HUGEPAGE, was measured slower
// on a shared host: the kernel's compaction to find them cost more system time than the faults it saved.)
#define DEVICE_BIG_BYTES ((size_t)4 << 20)
#define DEVICE_CHUNK_BYTES ((size_t)1 << 20) // the unit of the parallel touch and clear

typedef struct {
    void *p;
    size_t len; // bytes mapped
} BigAlloc;
static BigAlloc *g_big; // the live mappings (a few dozen at most: arenas and workspaces), under critical(device_big)
static int g_nbig, g_capbig;

// Writes one zero byte per 4 KiB page of [p, p + bytes), all threads: the memory is already zero, so the write only
// faults the page in.
static void touch_pages(char *p, size_t bytes) {
    int64_t chunks = (int64_t)((bytes + DEVICE_CHUNK_BYTES - 1) / DEVICE_CHUNK_BYTES);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        size_t lo = (size_t)k * DEVICE_CHUNK_BYTES;
        size_t hi = bytes - lo < DEVICE_CHUNK_BYTES ? bytes : lo + DEVICE_CHUNK_BYTES;
        for (size_t i = lo; i < hi; i += 4096) ((volatile char *)p)[i] = 0;
    }
}

static void *big_alloc(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); // page-aligned
    if (p == MAP_FAILED) return NULL;
#pragma omp critical(device_big)
    {
        if (g_nbig == g_capbig) {
            g_capbig = g_capbig ? 2 * g_capbig : 16;
            g_big = xrealloc(g_big, sizeof *g_big * (size_t)g_capbig);
        }
        g_big[g_nbig++] = (BigAlloc){p, bytes};
    }
    touch_pages(p, bytes);
    return p;
}

// 1 when p came from big_alloc (and is unmapped now), 0 otherwise
static int big_free(void *p) {
    size_t len = 0;
#pragma omp critical(device_big)
    for (int i = 0; i < g_nbig; i++)
        if (g_big[i].p == p) {
            len = g_big[i].len;
            g_big[i] = g_big[--g_nbig];
            break;
        }
    if (len) munmap(p, len);
    return len != 0;
}

void *device_alloc(Device d, size_t bytes) {
    if (d == DEVICE_CPU) {
        size_t rounded = (bytes + 255) & ~(size_t)255;
        void *p = NULL;
        if (rounded >= DEVICE_BIG_BYTES) p = big_alloc(rounded);
        else if (posix_memalign(&p, 256, rounded ? rounded : 256) == 0) memset(p, 0, rounded ? rounded : 256);
        else p = NULL;
        if (!p) {
            char b[32];
            FATAL("reduce the batch or the model size", "out of host memory allocating %s",
                  dt_format_bytes(b, sizeof b, (double)bytes));
        }
        bytes_add(d, p, rounded);
        return p;
    }
    need_cuda();
    CHECK(!g_frozen, "every device buffer belongs in the memory plan",
          "device allocation of %zu bytes after planning", bytes);
    g_allocs++;
    void *p = cuda_alloc(bytes);
    bytes_add(d, p, bytes ? bytes : 256);
    return p;
}

void device_free(Device d, void *p) {
    if (!p) return;
    bytes_remove(d, p);
    if (d == DEVICE_CPU) {
        if (!big_free(p)) free(p);
        return;
    }
    cuda_free(p);
}

void device_zero(Device d, void *p, size_t bytes) {
    if (d == DEVICE_CPU) { // large buffers by all threads, in chunks
        int64_t chunks = (int64_t)((bytes + DEVICE_CHUNK_BYTES - 1) / DEVICE_CHUNK_BYTES);
#pragma omp parallel for schedule(static) if (bytes >= DEVICE_BIG_BYTES)
        for (int64_t k = 0; k < chunks; k++) {
            size_t lo = (size_t)k * DEVICE_CHUNK_BYTES;
            memset((char *)p + lo, 0, bytes - lo < DEVICE_CHUNK_BYTES ? bytes - lo : DEVICE_CHUNK_BYTES);
        }
        return;
    }
    cuda_zero(p, bytes);
}

void device_copy(void *dst, Device dd, const void *src, Device sd, size_t bytes) {
    if (dd == DEVICE_CPU && sd == DEVICE_CPU) {
        memmove(dst, src, bytes);
        return;
    }
    need_cuda();
    cuda_copy(dst, dd == DEVICE_CUDA, src, sd == DEVICE_CUDA, bytes);
}

void device_synchronize(Device d) {
    if (d == DEVICE_CUDA && device_cuda_available()) cuda_synchronize();
}

// The first number in a small text file (cgroup and /proc files); 0 when absent or not a number ("max").
static unsigned long long file_number(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    unsigned long long v = 0;
    size_t klen = key ? strlen(key) : 0;
    while (fgets(line, sizeof line, f))
        if (!key || !strncmp(line, key, klen)) {
            if (sscanf(line + klen, "%llu", &v) != 1) v = 0;
            break;
        }
    fclose(f);
    return v;
}

size_t device_available_bytes(Device d) {
    if (d == DEVICE_CUDA) { // the GPU's free memory (the host's, on the emulated GPU)
        size_t fr = 0, tot = 0;
        if (!device_cuda_available()) return 0;
        cuda_mem_info(&fr, &tot);
        return fr;
    }
    unsigned long long avail = file_number("/proc/meminfo", "MemAvailable:") * 1024ull; // reported in kB
    unsigned long long limit = file_number("/sys/fs/cgroup/memory.max", NULL);         // cgroup v2: a container
    unsigned long long used = file_number("/sys/fs/cgroup/memory.current", NULL);
    if (limit && used <= limit && (!avail || limit - used < avail)) avail = limit - used;
    return (size_t)avail;
}

void tensor_copy(Tensor *dst, const Tensor *src) {
    CHECK(tensor_numel(dst) == tensor_numel(src) && dst->dtype == src->dtype, "",
          "tensor_copy needs the same element count and dtype");
    device_copy(dst->data, dst->device, src->data, src->device, tensor_bytes(src));
}
