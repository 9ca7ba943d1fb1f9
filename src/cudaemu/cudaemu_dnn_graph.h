// cudaemu_dnn_graph.h: the part of cuDNN 9's backend (graph) API that drtune's fused attention uses
// (src/ops/cuda/cuda_sdpa.cu), for the emulator: CPU implementations of the documented semantics, so the wrapper runs
// unchanged in ctest -L cudaemu. Names and enum values are cuDNN's (cudnn_graph_v9.h); only what the wrapper uses
// exists. Included at the end of cudaemu_dnn.h, as cudnn.h includes cudnn_graph.h.
//
// Emulated descriptors: tensors (data type, 4 dims, strides, unique id, byte alignment, by-value flag); the fused
// scaled-dot-product attention operations SDPA_FWD (q, k, v -> o and optionally the fp32 softmax statistics, a
// by-value fp32 scale) and SDPA_BWD (q, k, v, o, stats, do, scale -> dq, dk, dv); an operation graph of one such
// operation; heuristics (mode A or fallback) listing one engine configuration when the graph is supported; execution
// plans with a workspace size; variant packs (unique ids, data pointers, workspace); execution on the handle's
// stream, recorded when that stream is being captured.
// Support, as cuDNN's fused attention on Hopper documents it, restricted to the one 16-bit type drtune stores: bf16
// q, k, v, o (and do, dq, dk, dv), head dim a multiple of 8 and at most 256, stats fp32 [B, H, Tq, 1]; anything else
// gets no engine (the heuristics list is empty), which the wrapper must handle by using its own kernels. cudaemu_dnn_sdpa_support() narrows the support
// further so tests can exercise that fallback.
// Arithmetic: scores, softmax and both products in fp32 (OpenBLAS sgemm) from the widened 16-bit inputs, one
// rounding per output element; stats = max + log(sum exp(scaled score - max)) in natural log, as cuDNN's. The real
// engine also rounds the probabilities to 16 bits before the second product, and its summation order is its own:
// both are within bf16 tolerance, and the GPU check measures them against drtune's own kernels. Every execution
// checks that each operand is device memory of its described extent and that the workspace is as large as the plan
// says, then overwrites the workspace with garbage, as a GPU engine may.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *cudnnBackendDescriptor_t;

typedef enum {
    CUDNN_BACKEND_ENGINE_DESCRIPTOR = 2,
    CUDNN_BACKEND_ENGINECFG_DESCRIPTOR = 3,
    CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR = 4,
    CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR = 5,
    CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR = 15,
    CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR = 16,
    CUDNN_BACKEND_TENSOR_DESCRIPTOR = 17,
    CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR = 41,
    CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR = 43,
} cudnnBackendDescriptorType_t;

typedef enum {
    CUDNN_TYPE_HANDLE = 0,
    CUDNN_TYPE_DATA_TYPE = 1,
    CUDNN_TYPE_BOOLEAN = 2,
    CUDNN_TYPE_INT64 = 3,
    CUDNN_TYPE_FLOAT = 4,
    CUDNN_TYPE_VOID_PTR = 6,
    CUDNN_TYPE_HEUR_MODE = 8,
    CUDNN_TYPE_BACKEND_DESCRIPTOR = 15,
} cudnnBackendAttributeType_t;

typedef enum {
    CUDNN_HEUR_MODE_INSTANT = 0,
    CUDNN_HEUR_MODE_FALLBACK = 2,
    CUDNN_HEUR_MODE_A = 3,
} cudnnBackendHeurMode_t;

typedef enum {
    CUDNN_ATTR_ENGINEHEUR_MODE = 200,
    CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH = 201,
    CUDNN_ATTR_ENGINEHEUR_RESULTS = 202,
    CUDNN_ATTR_ENGINECFG_ENGINE = 300,
    CUDNN_ATTR_EXECUTION_PLAN_HANDLE = 400,
    CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG = 401,
    CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE = 402,
    CUDNN_ATTR_OPERATIONGRAPH_HANDLE = 800,
    CUDNN_ATTR_OPERATIONGRAPH_OPS = 801,
    CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT = 900,
    CUDNN_ATTR_TENSOR_DATA_TYPE = 901,
    CUDNN_ATTR_TENSOR_DIMENSIONS = 902,
    CUDNN_ATTR_TENSOR_STRIDES = 903,
    CUDNN_ATTR_TENSOR_UNIQUE_ID = 906,
    CUDNN_ATTR_TENSOR_IS_VIRTUAL = 907,
    CUDNN_ATTR_TENSOR_IS_BY_VALUE = 908,
    CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS = 1000,
    CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS = 1001,
    CUDNN_ATTR_VARIANT_PACK_WORKSPACE = 1003,
    CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC = 2800,
    CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC = 2801,
    CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC = 2802,
    CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC = 2803,
    CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC = 2804,
    CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC = 2805,
    CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC = 2851,
    CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC = 2852,
    CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC = 2853,
    CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC = 2854,
    CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC = 2855,
    CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC = 2856,
    CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC = 2859,
    CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC = 2860,
    CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC = 2861,
    CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC = 2862,
} cudnnBackendAttributeName_t;

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *d);
cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d);
cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t d);
cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void *elements);
cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const d, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested, int64_t *count,
                                       void *elements);
cudnnStatus_t cudnnBackendExecute(cudnnHandle_t h, cudnnBackendDescriptor_t plan, cudnnBackendDescriptor_t pack);

// Test hook (not cuDNN): which fused attention directions get an engine from now on (both by default), so tests can
// drive the wrapper's fallback to its own kernels. Plans already built keep working.
void cudaemu_dnn_sdpa_support(int fwd, int bwd);
// Executions of SDPA plans so far (forward, backward), so tests can see which path ran.
void cudaemu_dnn_sdpa_counts(long long *fwd, long long *bwd);

#ifdef __cplusplus
}
// The stream a handle runs on (cudaemu_dnn.cc), for the graph API's executions.
cudaStream_t cudaemu_dnn_stream(cudnnHandle_t h);
#endif
