// cudaemu_nccl.h: the NCCL calls drtune makes (src/dist/device_comm.cu), for the emulator: the same collectives
// carried out with MPI on the emulated device memory, so the device reduction path (one communicator per job, all-
// reduce for LoRA; reduce-scatter, or reductions onto each shard's owner, and broadcasts from each owner as an
// all-gather, for full fine-tuning) runs under mpirun in CI.
#pragma once
#include "cudaemu.h"

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
} ncclResult_t;
typedef enum { ncclFloat32 = 7, ncclBfloat16 = 9 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;
typedef struct {
    char internal[128];
} ncclUniqueId;
typedef struct CudaemuNcclComm *ncclComm_t;

const char *ncclGetErrorString(ncclResult_t r);
ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclGroupStart(void);
ncclResult_t ncclGroupEnd(void);
// recv = sum over ranks of send (in place allowed)
ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t dt, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t s);
// recv [recvcount] = rank's block of the sum of send [nranks * recvcount] (in place: recv = send + rank * recvcount)
ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t dt, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t s);
// root's recv = sum over ranks of send (recv used on root only; in place allowed)
ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t dt, ncclRedOp_t op, int root,
                        ncclComm_t comm, cudaStream_t s);
// recv = root's send, on every rank (send used on root only; in place allowed)
ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t dt, int root, ncclComm_t comm,
                           cudaStream_t s);
// recv [nranks * sendcount] = every rank's send [sendcount] in rank order (in place: send = recv + rank * sendcount)
ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t dt, ncclComm_t comm,
                           cudaStream_t s);
