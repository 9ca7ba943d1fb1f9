// device.h: memory on a device (CPU or CUDA) behind one interface, so arenas and ops never call cudaMalloc or
// malloc themselves. The CUDA half lives in core/device_cuda.cu (the real runtime, or the emulator in builds and
// tests without a GPU); asking for a CUDA device where none is visible is a clear error.
#pragma once
#include <stddef.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// 1 when a GPU is visible (the emulated one counts where it is enabled); asked once.
int device_cuda_available(void);
// 1 when the CUDA backend of this binary is the CPU emulator.
int device_cuda_emulated(void);
// Binds this rank to its GPU (local rank mod the visible GPUs) and creates its streams; nothing for the CPU.
void device_select(Device d, int local_rank);
// After planning: any further device allocation is an internal failure (the memory plan is the whole footprint).
void device_freeze_allocations(int on);
// Device (GPU) allocations made so far: an iteration that allocates breaks the memory plan (tests check it).
long long device_alloc_count(void);
void *device_alloc(Device d, size_t bytes);     // zero-filled, 256-byte aligned
// Bytes of d's memory in device_alloc buffers now (the memory plan: arenas, op workspaces; not the CUDA context's
// or libraries' own memory, nor host memory from malloc), and the most at any moment since the last
// device_bytes_peak_reset (which starts the peak at the current figure). Counted the same on the emulated GPU.
size_t device_bytes_in_use(Device d);
size_t device_bytes_peak(Device d);
void device_bytes_peak_reset(Device d);
void device_free(Device d, void *p);
void device_zero(Device d, void *p, size_t bytes);
void device_copy(void *dst, Device dd, const void *src, Device sd, size_t bytes);
void device_synchronize(Device d);
// Bytes that can still be allocated on d now, or 0 when unknown. CPU: the kernel's MemAvailable, lowered by this
// process's cgroup memory limit when one is set. CUDA: the GPU's free memory.
size_t device_available_bytes(Device d);
// Copies a tensor between devices (same dtype and element count).
void tensor_copy(Tensor *dst, const Tensor *src);

#ifdef __cplusplus
}
#endif
