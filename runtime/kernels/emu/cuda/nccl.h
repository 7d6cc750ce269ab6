// Stand-in for <nccl.h> under the SIMT emulation (emu/nccl_emu.cc): communicators whose ranks are threads of this
// process. The replay transport and the cuda bench use one-rank communicators (a GPU sending to itself); the
// nccl transport's test runs N ranks as N threads. The subset of NCCL's API cpscope calls, with its semantics:
//  - ncclCommInitRankConfig / ncclCommSplit: collective over the ranks; on a non-blocking communicator they
//    return ncclInProgress and ncclCommGetAsyncError says when every rank has arrived. A split writes the new
//    handle only then (as NCCL does: its init job fills it later), and null for NCCL_SPLIT_NOCOLOR.
//  - Groups: ncclSend/ncclRecv pair per (sender, receiver) in issue order; ncclAllGather and ncclReduceScatter
//    (sum) match in issue order per communicator. ncclGroupEnd meets the peers on the host (it returns once
//    every peer of its operations has issued its side) and queues the copies and sums on the streams, after
//    the events that make each rank's buffers ready, and makes every stream wait until its buffers are read.
//    On a non-blocking communicator it returns ncclInProgress (its state is already ncclSuccess).
// What would hang or be undefined with a real NCCL is an error with ncclGetLastError saying why: a send or
// receive outside a group, unpaired sends and receives to self, unequal sizes, a peer outside the
// communicator, mismatched collectives, and a peer that does not arrive within 300 s.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

typedef enum {  // NOLINT(modernize-use-using): as in the real header
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7
} ncclResult_t;

typedef enum {  // NOLINT(modernize-use-using)
  ncclInt8 = 0,
  ncclUint8 = 1,
  ncclFloat16 = 6,
  ncclFloat32 = 7,
  ncclBfloat16 = 9
} ncclDataType_t;

typedef enum { ncclSum = 0 } ncclRedOp_t;  // NOLINT(modernize-use-using)

typedef struct {  // NOLINT(modernize-use-using)
  char internal[128];
} ncclUniqueId;
typedef struct ncclComm* ncclComm_t;  // NOLINT(modernize-use-using)

typedef struct {  // NOLINT(modernize-use-using): the one field cpscope sets
  int blocking;
} ncclConfig_t;
#define NCCL_CONFIG_INITIALIZER {1}
#define NCCL_SPLIT_NOCOLOR (-1)

ncclResult_t ncclGetVersion(int* version);  // 0: reported as "0.0.0", no real NCCL
const char* ncclGetErrorString(ncclResult_t r);
const char* ncclGetLastError(ncclComm_t comm);
ncclResult_t ncclGetUniqueId(ncclUniqueId* id);
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t* config);
ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state);
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count);
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank);
ncclResult_t ncclCommFinalize(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclGroupStart();
ncclResult_t ncclGroupEnd();
ncclResult_t ncclSend(const void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream);
ncclResult_t ncclRecv(void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream);
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, std::size_t sendcount, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, std::size_t recvcount, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);

// Not NCCL's: for tests, how many rank handles ncclCommInitRank(Config) has created in this process (splits
// not counted).
long long cps_emu_nccl_inits();
