// device_cuda.h: the extern "C" runtime of the CUDA backend (device_cuda.cu): GPU selection, the rank's compute and
// communication streams, device memory and copies. Host code reaches it through core/device.h; .cu files use the
// streams directly. The same calls are served by the real CUDA runtime or by the emulator (src/cudaemu/).
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

int cuda_device_count(void);
// Selects GPU local_rank mod the visible count and creates the streams (once; later calls do nothing).
void cuda_init(int local_rank);
void *cuda_alloc(size_t bytes); // zero-filled on the compute stream
void cuda_free(void *p);
void cuda_zero(void *p, size_t bytes);
void cuda_copy(void *dst, int dst_on_device, const void *src, int src_on_device, size_t bytes);
void cuda_synchronize(void);   // waits for the compute stream
void cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
const char *cuda_device_name(void);
void cuda_versions(int *driver, int *runtime);
int cuda_is_emulated(void);    // 1 in the emulated backend (ctest -L cudaemu, DRTUNE_CUDAEMU=1)

// CUDA graphs on the compute stream. Between cuda_graph_begin and cuda_graph_end the work queued on the stream is
// recorded, not run: kernel arguments (pointers and scalars) and the libraries' descriptors are taken by value at
// that moment, device memory is read and written when the graph runs. cuda_graph_launch replays the recorded work
// on the compute stream, in order, allocating nothing. Inside a capture nothing may synchronise, allocate or copy
// to or from pageable host memory: such a call fails (an internal failure naming it).
typedef struct CudaGraph CudaGraph;
void cuda_graph_begin(void);
CudaGraph *cuda_graph_end(void);
void cuda_graph_launch(const CudaGraph *g);
void cuda_graph_free(CudaGraph *g); // NULL is fine
size_t cuda_graph_nodes(const CudaGraph *g);
int cuda_graph_capturing(void); // 1 while the compute stream is capturing

#ifdef __cplusplus
}
#endif
#ifdef __cplusplus
// The rank's streams (.cu files only, after cuda_common.cuh).
extern "C" cudaStream_t cuda_stream(void);
extern "C" cudaStream_t cuda_comm_stream(void);
#endif
