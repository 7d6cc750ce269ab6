// The stand-in NCCL of the SIMT emulation (emu/cuda/nccl.h): one-rank communicators whose sends to themselves
// are queued as copies on the stand-in runtime's streams.
#include <nccl.h>

#include "runtime/kernels/emu/simt.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace {

thread_local std::string g_last_error;

struct P2p {
  const void* send = nullptr;
  void* recv = nullptr;
  std::size_t bytes = 0;
  cudaStream_t stream = nullptr;
};

struct Pending {
  ncclComm_t comm;
  bool is_send;
  const void* buf;
  std::size_t bytes;
  cudaStream_t stream;
};

thread_local int g_group_depth = 0;
thread_local std::vector<Pending> g_pending;

ncclResult_t fail(ncclResult_t r, std::string why) {
  g_last_error = std::move(why);
  return r;
}

std::size_t type_bytes(ncclDataType_t t) { return t == ncclFloat32 ? 4 : 1; }

ncclResult_t enqueue(ncclComm_t comm, bool is_send, const void* buf, std::size_t count, ncclDataType_t type, int peer,
                     cudaStream_t stream) {
  const char* what = is_send ? "ncclSend" : "ncclRecv";
  if (comm == nullptr) return fail(ncclInvalidArgument, std::string(what) + ": null communicator");
  if (peer != 0)
    return fail(ncclInvalidArgument, std::string(what) + ": peer " + std::to_string(peer) +
                                         " of a one-rank communicator (the emulation has no other ranks)");
  if (g_group_depth == 0)
    return fail(ncclInvalidUsage, std::string(what) +
                                      " to self outside ncclGroupStart/ncclGroupEnd: it would wait for its pair forever");
  const std::size_t bytes = count * type_bytes(type);
  if (bytes > 0 && !cpscope::simt::is_global_range(buf, bytes))
    return fail(ncclInvalidArgument, std::string(what) + ": " + std::to_string(bytes) +
                                         " bytes that are not inside one cudaMalloc allocation");
  g_pending.push_back({comm, is_send, buf, bytes, stream});
  return ncclSuccess;
}

}  // namespace

struct ncclComm {
  int rank = 0;
};

ncclResult_t ncclGetVersion(int* version) {
  *version = 0;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    default: return "error";
  }
}

const char* ncclGetLastError(ncclComm_t) { return g_last_error.c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof *id);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId, int rank) {
  if (nranks != 1 || rank != 0)
    return fail(ncclInvalidUsage, "ncclCommInitRank: " + std::to_string(nranks) +
                                      " ranks; the emulation has one-rank communicators only (the replay transport)");
  *comm = new ncclComm{};
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--g_group_depth > 0) return ncclSuccess;
  std::vector<Pending> ops;
  ops.swap(g_pending);
  // Per communicator, the i-th send pairs with the i-th receive (NCCL matches point-to-point ops in order).
  std::vector<ncclComm_t> comms;
  for (const Pending& p : ops)
    if (std::find(comms.begin(), comms.end(), p.comm) == comms.end()) comms.push_back(p.comm);
  std::vector<P2p> copies;
  for (ncclComm_t c : comms) {
    std::vector<const Pending*> sends, recvs;
    for (const Pending& p : ops)
      if (p.comm == c) (p.is_send ? sends : recvs).push_back(&p);
    if (sends.size() != recvs.size())
      return fail(ncclInvalidUsage, std::to_string(sends.size()) + " send(s) and " + std::to_string(recvs.size()) +
                                        " receive(s) to self in one group: the unpaired ones would never complete");
    for (std::size_t i = 0; i < sends.size(); ++i) {
      if (sends[i]->bytes != recvs[i]->bytes)
        return fail(ncclInvalidUsage, "send " + std::to_string(i) + " of " + std::to_string(sends[i]->bytes) +
                                          " bytes paired with a receive of " + std::to_string(recvs[i]->bytes));
      if (sends[i]->stream != recvs[i]->stream)
        return fail(ncclInvalidUsage, "send " + std::to_string(i) +
                                          " and its receive on two streams (the emulation queues a pair on one)");
      copies.push_back({sends[i]->buf, const_cast<void*>(recvs[i]->buf), sends[i]->bytes, sends[i]->stream});
    }
  }
  for (const P2p& p : copies)
    if (p.bytes > 0)
      cps_emu_enqueue(p.stream, [p] { std::memmove(p.recv, p.send, p.bytes); }, CpsEmuWork::Kernel);
  return ncclSuccess;
}

ncclResult_t ncclSend(const void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return enqueue(comm, true, buf, count, type, peer, stream);
}

ncclResult_t ncclRecv(void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return enqueue(comm, false, buf, count, type, peer, stream);
}
