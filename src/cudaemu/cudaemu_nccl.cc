// cudaemu_nccl.cc: the NCCL subset of cudaemu_nccl.h over MPI (builds with DRTUNE_DIST). The communicator is a
// duplicate of MPI_COMM_WORLD checked against the rank and size NCCL was given; buffers must be emulated device
// memory; in-place forms are honoured through a copy of the input. Streams run in order, so every call completes
// before it returns, as a stream-ordered NCCL call has once its stream is synchronised.
#include "cudaemu_nccl.h"

#include <stdlib.h>
#include <string.h>

#ifdef DRTUNE_DIST
#define OMPI_SKIP_MPICXX 1 // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

struct CudaemuNcclComm {
    MPI_Comm comm;
    int rank, size;
};

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclSystemError: return "system error (MPI)";
    default: return "internal error";
    }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    memcpy(id->internal, "cudaemu-nccl", 12);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    int inited = 0, r = -1, n = 0;
    MPI_Initialized(&inited);
    if (!inited || memcmp(id.internal, "cudaemu-nccl", 12)) return ncclInvalidUsage;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (r != rank || n != nranks) return ncclInvalidArgument;
    CudaemuNcclComm *c = new CudaemuNcclComm{MPI_COMM_NULL, rank, nranks};
    if (MPI_Comm_dup(MPI_COMM_WORLD, &c->comm) != MPI_SUCCESS) {
        delete c;
        return ncclSystemError;
    }
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    MPI_Comm_free(&comm->comm);
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclGroupStart(void) { return ncclSuccess; }
ncclResult_t ncclGroupEnd(void) { return ncclSuccess; }

static int check_args(ncclComm_t comm, ncclDataType_t dt, const void *a, size_t abytes, const void *b, size_t bbytes) {
    return comm && dt == ncclFloat32 && cudaemu_is_device(a, abytes ? abytes : 1) &&
           cudaemu_is_device(b, bbytes ? bbytes : 1);
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t dt, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t) {
    size_t bytes = count * sizeof(float);
    if (op != ncclSum || !check_args(comm, dt, send, bytes, recv, bytes)) return ncclInvalidArgument;
    int rc = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, MPI_FLOAT, MPI_SUM, comm->comm);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t dt, ncclRedOp_t op, int root,
                        ncclComm_t comm, cudaStream_t) {
    size_t bytes = count * sizeof(float);
    if (op != ncclSum || !comm || root < 0 || root >= comm->size) return ncclInvalidArgument;
    int mine = comm->rank == root;
    if (!check_args(comm, dt, send, bytes, mine ? recv : send, bytes)) return ncclInvalidArgument;
    int rc = MPI_Reduce(mine && send == recv ? MPI_IN_PLACE : send, mine ? recv : NULL, (int)count, MPI_FLOAT, MPI_SUM,
                        root, comm->comm);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t dt, int root, ncclComm_t comm,
                           cudaStream_t) {
    size_t bytes = count * sizeof(float);
    if (!comm || root < 0 || root >= comm->size) return ncclInvalidArgument;
    int mine = comm->rank == root;
    if (!check_args(comm, dt, mine ? send : recv, bytes, recv, bytes)) return ncclInvalidArgument;
    if (mine && send != recv) memcpy(recv, send, bytes);
    int rc = MPI_Bcast(recv, (int)count, MPI_FLOAT, root, comm->comm);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t dt, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t) {
    size_t part = recvcount * sizeof(float), all = part * (size_t)(comm ? comm->size : 0);
    if (op != ncclSum || !check_args(comm, dt, send, all, recv, part)) return ncclInvalidArgument;
    void *in = malloc(all ? all : 1);
    memcpy(in, send, all);
    int rc = MPI_Reduce_scatter_block(in, recv, (int)recvcount, MPI_FLOAT, MPI_SUM, comm->comm);
    free(in);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t dt, ncclComm_t comm,
                           cudaStream_t) {
    size_t part = sendcount * sizeof(float), all = part * (size_t)(comm ? comm->size : 0);
    if (!check_args(comm, dt, send, part, recv, all)) return ncclInvalidArgument;
    void *in = malloc(part ? part : 1);
    memcpy(in, send, part);
    int rc = MPI_Allgather(in, (int)sendcount, MPI_FLOAT, recv, (int)sendcount, MPI_FLOAT, comm->comm);
    free(in);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}
#endif
