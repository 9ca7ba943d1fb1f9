// device.h: memory on a device (CPU or CUDA) behind one interface, so arenas and ops never call cudaMalloc or
// malloc themselves. The CUDA half lives in src/ops/cuda/cuda_runtime.cu; without CUDA, asking for a CUDA device
// is a clear error.
#pragma once
#include <stddef.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// 1 when this binary was built with the CUDA backend and a GPU is visible.
int device_cuda_available(void);
void *device_alloc(Device d, size_t bytes);     // zero-filled, 256-byte aligned
void device_free(Device d, void *p);
void device_zero(Device d, void *p, size_t bytes);
void device_copy(void *dst, Device dd, const void *src, Device sd, size_t bytes);
void device_synchronize(Device d);
// Bytes that can still be allocated on d now, or 0 when unknown. CPU: the kernel's MemAvailable, lowered by this
// process's cgroup memory limit when one is set. CUDA: 0 for now (the device's free memory plugs in here).
size_t device_available_bytes(Device d);
// Copies a tensor between devices (same dtype and element count).
void tensor_copy(Tensor *dst, const Tensor *src);

#ifdef __cplusplus
}
#endif
