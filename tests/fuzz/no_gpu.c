// no_gpu.c: the CUDA runtime of core/device_cuda.h for the standalone fuzz binaries, which link the parser and the
// core without a backend: no device is visible, so every CUDA path reports that (and none is reached by a parser).
#include <stdlib.h>

#include "../../src/core/device_cuda.h"

int cuda_device_count(void) { return 0; }
int cuda_is_emulated(void) { return 0; }
static void no_device(void) { abort(); }
void cuda_init(int local_rank) { (void)local_rank, no_device(); }
void *cuda_alloc(size_t bytes) { (void)bytes, no_device(); return NULL; }
void cuda_free(void *p) { (void)p, no_device(); }
void cuda_zero(void *p, size_t bytes) { (void)p, (void)bytes, no_device(); }
void cuda_copy(void *dst, int dd, const void *src, int sd, size_t bytes) {
    (void)dst, (void)dd, (void)src, (void)sd, (void)bytes, no_device();
}
void cuda_synchronize(void) { no_device(); }
void cuda_mem_info(size_t *free_bytes, size_t *total_bytes) { *free_bytes = *total_bytes = 0; }
const char *cuda_device_name(void) { return "none"; }
void cuda_versions(int *driver, int *runtime) { *driver = *runtime = 0; }
