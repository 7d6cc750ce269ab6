// Stand-in for <nccl.h> under the SIMT emulation: one-rank communicators, which is what the replay transport
// and the cuda bench use (a GPU sending to itself). Inside ncclGroupStart/ncclGroupEnd the i-th ncclSend to a
// communicator's rank 0 pairs with its i-th ncclRecv, and ncclGroupEnd queues each pair on the stream as one
// copy, recorded like the kernel NCCL launches for it. What would hang or be undefined with a real NCCL is an
// error with ncclGetLastError saying why: a send or receive outside a group, unpaired or unequal sends and
// receives, a pair split over two streams, a communicator of more than one rank (emu/nccl_emu.cc).
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

typedef enum { ncclInt8 = 0, ncclUint8 = 1, ncclFloat32 = 7 } ncclDataType_t;  // NOLINT(modernize-use-using)

typedef struct {  // NOLINT(modernize-use-using)
  char internal[128];
} ncclUniqueId;
typedef struct ncclComm* ncclComm_t;  // NOLINT(modernize-use-using)

ncclResult_t ncclGetVersion(int* version);  // 0: reported as "0.0.0", no real NCCL
const char* ncclGetErrorString(ncclResult_t r);
const char* ncclGetLastError(ncclComm_t comm);
ncclResult_t ncclGetUniqueId(ncclUniqueId* id);
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclGroupStart();
ncclResult_t ncclGroupEnd();
ncclResult_t ncclSend(const void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream);
ncclResult_t ncclRecv(void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream);
