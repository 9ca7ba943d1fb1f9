// device.c: the CPU side of device.h, and dispatch to the CUDA runtime launchers when built with CUDA.
#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#ifdef DRTUNE_CUDA
#include "../ops/cuda/cuda_api.h"
#endif

int device_cuda_available(void) {
#ifdef DRTUNE_CUDA
    return cuda_device_count() > 0;
#else
    return 0;
#endif
}

static void need_cuda(void) {
#ifdef DRTUNE_CUDA
    CHECK(cuda_device_count() > 0, "run on a machine with an NVIDIA GPU, or use the CPU device",
          "a CUDA tensor was requested but no GPU is visible");
#else
    dt_user_error("a CUDA tensor was requested but this drtune was built without CUDA (nvcc not found at build time)");
#endif
}

void *device_alloc(Device d, size_t bytes) {
    if (d == DEVICE_CPU) {
        size_t rounded = (bytes + 255) & ~(size_t)255;
        void *p = NULL;
        if (posix_memalign(&p, 256, rounded ? rounded : 256) != 0) {
            char b[32];
            FATAL("reduce the batch or the model size", "out of host memory allocating %s",
                  dt_format_bytes(b, sizeof b, (double)bytes));
        }
        memset(p, 0, rounded);
        return p;
    }
    need_cuda();
#ifdef DRTUNE_CUDA
    return cuda_alloc(bytes);
#else
    return NULL;
#endif
}

void device_free(Device d, void *p) {
    if (!p) return;
    if (d == DEVICE_CPU) {
        free(p);
        return;
    }
#ifdef DRTUNE_CUDA
    cuda_free(p);
#endif
}

void device_zero(Device d, void *p, size_t bytes) {
    if (d == DEVICE_CPU) {
        memset(p, 0, bytes);
        return;
    }
    need_cuda();
#ifdef DRTUNE_CUDA
    cuda_zero(p, bytes);
#endif
}

void device_copy(void *dst, Device dd, const void *src, Device sd, size_t bytes) {
    if (dd == DEVICE_CPU && sd == DEVICE_CPU) {
        memmove(dst, src, bytes);
        return;
    }
    need_cuda();
#ifdef DRTUNE_CUDA
    cuda_copy(dst, dd == DEVICE_CUDA, src, sd == DEVICE_CUDA, bytes);
#endif
}

void device_synchronize(Device d) {
#ifdef DRTUNE_CUDA
    if (d == DEVICE_CUDA) cuda_synchronize();
#else
    (void)d;
#endif
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
    if (d != DEVICE_CPU) return 0;
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
