// The stand-in NCCL of the SIMT emulation (emu/cuda/nccl.h): communicators whose ranks are threads of this process.
// Data moves as work queued on the stand-in runtime's streams (cps_emu_enqueue, recorded like the kernels NCCL
// launches); the order between ranks' streams comes from events: a rank's operation waits for the event each
// peer recorded when it issued its side (its buffer is ready), and the peer's stream waits for the event recorded
// after its buffer was read. ncclGroupEnd therefore meets the peers on the host: it waits, under one mutex and
// condition variable, until every peer of its operations has issued them. That blocks the issuing thread where a
// GPU would block the stream, so the ranks' issue orders must be consistent, which NCCL requires anyway.
#include <nccl.h>

#include "runtime/kernels/emu/simt.h"
#include "runtime/kernels/host_dtype.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace host = cpscope::rt::kernels::host;

constexpr auto kPeerWait = std::chrono::seconds(300);  // a peer that never arrives: an error, not a hang

thread_local std::string t_last_error;

ncclResult_t fail(ncclResult_t r, std::string why) {
  t_last_error = std::move(why);
  return r;
}

std::size_t type_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclFloat32: return 4;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    default: return 1;
  }
}

float load(const void* base, std::size_t i, ncclDataType_t t) {
  switch (t) {
    case ncclFloat32: return static_cast<const float*>(base)[i];
    case ncclFloat16: return host::f16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    case ncclBfloat16: return host::bf16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    default: return static_cast<const std::uint8_t*>(base)[i];
  }
}

void store(void* base, std::size_t i, ncclDataType_t t, float v) {
  switch (t) {
    case ncclFloat32: static_cast<float*>(base)[i] = v; return;
    case ncclFloat16: static_cast<std::uint16_t*>(base)[i] = host::f32_to_f16(v); return;
    case ncclBfloat16: static_cast<std::uint16_t*>(base)[i] = host::f32_to_bf16(v); return;
    default: static_cast<std::uint8_t*>(base)[i] = static_cast<std::uint8_t>(v); return;
  }
}

cudaEvent_t record(cudaStream_t s) {
  cudaEvent_t e = nullptr;
  cudaEventCreateWithFlags(&e, 0);
  cudaEventRecord(e, s);
  return e;
}

// A posted send: the sender's buffer, ready once `ready` has run; the receiver records `read` after its copy.
struct Message {
  const void* buf = nullptr;
  std::size_t bytes = 0;
  cudaEvent_t ready = nullptr;
  cudaEvent_t read = nullptr;
  bool taken = false;
};

// One collective of a communicator (its i-th, in issue order), as every rank posts it.
struct Collective {
  bool gather = false;  // else reduce-scatter
  std::size_t count = 0;
  ncclDataType_t type = ncclUint8;
  std::vector<const void*> send;
  std::vector<void*> recv;
  std::vector<cudaEvent_t> ready, read;
  int posted = 0, read_posted = 0, released = 0;
  explicit Collective(int n) : send(n), recv(n), ready(n), read(n) {}
};

struct Split {
  std::vector<int> color, key;
  std::vector<ncclComm_t*> out;
  std::vector<bool> blocking;
  int arrived = 0;
  bool done = false;
  explicit Split(int n) : color(n), key(n), out(n), blocking(n) {}
};

// A communicator created by ncclCommInitRank and every communicator split from it. When a rank aborts one of
// them, the ranks waiting in any of them fail at once (ncclRemoteError, naming the rank) instead of after
// kPeerWait: a real NCCL leaves them waiting until the transport's own timeout, which a test need not sit out.
struct Family {
  std::string aborted;  // why, once a rank aborted
};

struct Team {  // the ranks of one communicator
  std::shared_ptr<Family> family;
  int n = 0;
  int joined = 0;
  std::map<std::pair<int, int>, std::deque<std::shared_ptr<Message>>> mail;  // (sender, receiver) -> in order
  std::map<std::uint64_t, std::shared_ptr<Collective>> collectives;
  std::map<std::uint64_t, std::shared_ptr<Split>> splits;
};

std::mutex g_mu;  // every team, communicator and id below
std::condition_variable g_cv;
std::map<std::string, std::shared_ptr<Team>> g_forming;  // unique id -> team whose ranks are still joining
long long g_inits = 0;  // rank handles ncclCommInitRank(Config) created (cps_emu_nccl_inits)
std::uint64_t g_next_id = 1;

// Waits (g_mu held through `lock`) until `ready()`; false after kPeerWait or once a rank of the team's family
// aborted (Family::aborted says so).
template <class F>
bool await(std::unique_lock<std::mutex>& lock, const Team& team, F ready) {
  return g_cv.wait_for(lock, kPeerWait, [&] { return ready() || !team.family->aborted.empty(); }) &&
         team.family->aborted.empty();
}

// Why a wait for `what` failed: a peer's abort, or the time.
std::string why_not(const Team& team, const std::string& what) {
  if (!team.family->aborted.empty()) return what + ": " + team.family->aborted;
  return what + " within " + std::to_string(kPeerWait.count()) + " s (the emulation's peer wait)";
}

}  // namespace

struct ncclComm {
  int rank = 0;
  std::shared_ptr<Team> team;
  bool blocking = true;
  std::uint64_t splits = 0, collectives = 0;  // issued so far (the sequence numbers of the next)
  std::shared_ptr<Split> pending_split;       // non-blocking: the split this rank waits for
  ncclResult_t state = ncclSuccess;
};

namespace {

struct Pending {
  enum Kind { Send, Recv, Gather, Reduce } kind;
  ncclComm_t comm;
  const void* src;
  void* dst;
  std::size_t count;
  ncclDataType_t type;
  int peer;
  cudaStream_t stream;
};

thread_local int t_group_depth = 0;
thread_local std::vector<Pending> t_pending;

ncclResult_t check_buffer(const char* what, const void* p, std::size_t bytes) {
  if (bytes > 0 && !cpscope::simt::is_global_range(p, bytes))
    return fail(ncclInvalidArgument, std::string(what) + ": " + std::to_string(bytes) +
                                         " bytes that are not inside one cudaMalloc allocation");
  return ncclSuccess;
}

ncclResult_t queue(Pending p, const char* what) {
  if (p.comm == nullptr) return fail(ncclInvalidArgument, std::string(what) + ": null communicator");
  const std::size_t bytes = p.count * type_bytes(p.type);
  const int n = p.comm->team->n;
  if (p.kind == Pending::Send || p.kind == Pending::Recv) {
    if (p.peer < 0 || p.peer >= n)
      return fail(ncclInvalidArgument, std::string(what) + ": peer " + std::to_string(p.peer) +
                                           " outside the communicator of " + std::to_string(n) + " rank(s)");
    if (t_group_depth == 0)
      return fail(ncclInvalidUsage,
                  std::string(what) + " outside ncclGroupStart/ncclGroupEnd: it would wait for its pair forever");
    if (ncclResult_t r = check_buffer(what, p.kind == Pending::Send ? p.src : p.dst, bytes); r != ncclSuccess) return r;
  } else {
    const std::size_t whole = bytes * static_cast<std::size_t>(n);
    const bool gather = p.kind == Pending::Gather;
    if (ncclResult_t r = check_buffer(what, p.src, gather ? bytes : whole); r != ncclSuccess) return r;
    if (ncclResult_t r = check_buffer(what, p.dst, gather ? whole : bytes); r != ncclSuccess) return r;
    // NCCL's in-place rule: the buffers may overlap only as the rank's own segment of the whole buffer
    // (all-gather: sendbuff == recvbuff + rank*count; reduce-scatter: recvbuff == sendbuff + rank*count). Any
    // other overlap is undefined on a GPU, where peers read a segment while this rank writes it.
    const char* part = static_cast<const char*>(gather ? p.src : p.dst);
    const char* all = static_cast<const char*>(gather ? p.dst : p.src);
    if (bytes > 0 && part < all + whole && all < part + bytes &&
        part != all + static_cast<std::size_t>(p.comm->rank) * bytes)
      return fail(ncclInvalidArgument,
                  std::string(what) + ": rank " + std::to_string(p.comm->rank) + "'s " +
                      (gather ? "send" : "receive") + " buffer overlaps the " + (gather ? "receive" : "send") +
                      " buffer at byte " + std::to_string(part - all) + ", not at its own segment (byte " +
                      std::to_string(static_cast<std::size_t>(p.comm->rank) * bytes) + "), the only in-place form");
  }
  t_pending.push_back(p);
  if (t_group_depth == 0) {  // a collective outside a group is a group of its own
    ++t_group_depth;
    return ncclGroupEnd();
  }
  return ncclSuccess;
}

std::string who(const Pending& p) { return "rank " + std::to_string(p.comm->rank); }

// Point-to-point: post every send, take every receive (its peer must have posted), then wait until every
// send was taken and let its stream wait for the receiver's copy.
ncclResult_t run_p2p(const std::vector<Pending>& ops) {
  // Sends to self must find their receive in the same group, or they would wait forever.
  std::map<ncclComm_t, std::pair<int, int>> self;
  for (const Pending& p : ops)
    if ((p.kind == Pending::Send || p.kind == Pending::Recv) && p.peer == p.comm->rank)
      (p.kind == Pending::Send ? self[p.comm].first : self[p.comm].second) += 1;
  for (const auto& [c, sr] : self)
    if (sr.first != sr.second)
      return fail(ncclInvalidUsage, std::to_string(sr.first) + " send(s) and " + std::to_string(sr.second) +
                                        " receive(s) to self in one group: the unpaired ones would never complete");

  std::unique_lock<std::mutex> lock(g_mu);
  std::vector<std::pair<const Pending*, std::shared_ptr<Message>>> sent;
  // On an error, this group's sends that nobody took leave the boxes: a later group must not pair with them.
  auto failed = [&](ncclResult_t r, std::string why) {
    for (auto& [p, m] : sent) {
      if (m->taken) continue;
      auto& box = p->comm->team->mail[{p->comm->rank, p->peer}];
      box.erase(std::remove(box.begin(), box.end(), m), box.end());
      cudaEventDestroy(m->ready);
    }
    return fail(r, std::move(why));
  };
  for (const Pending& p : ops) {
    if (p.kind != Pending::Send) continue;
    auto m = std::make_shared<Message>();
    m->buf = p.src;
    m->bytes = p.count * type_bytes(p.type);
    m->ready = record(p.stream);
    p.comm->team->mail[{p.comm->rank, p.peer}].push_back(m);
    sent.emplace_back(&p, m);
  }
  g_cv.notify_all();
  for (const Pending& p : ops) {
    if (p.kind != Pending::Recv) continue;
    // A receive pairs with the oldest send from its peer not yet taken (taken ones leave the front of the box;
    // this group's sends to self are in it already).
    auto& box = p.comm->team->mail[{p.peer, p.comm->rank}];
    auto untaken = [&] {
      for (const auto& m : box)
        if (!m->taken) return m;
      return std::shared_ptr<Message>();
    };
    if (!await(lock, *p.comm->team, [&] { return untaken() != nullptr; }))
      return failed(ncclRemoteError,
                    why_not(*p.comm->team, who(p) + ": no message from rank " + std::to_string(p.peer)));
    const std::shared_ptr<Message> m = untaken();
    const std::size_t bytes = p.count * type_bytes(p.type);
    if (m->bytes != bytes)
      return failed(ncclInvalidUsage, who(p) + ": a send of " + std::to_string(m->bytes) + " bytes from rank " +
                                        std::to_string(p.peer) + " paired with a receive of " + std::to_string(bytes));
    cudaStreamWaitEvent(p.stream, m->ready, 0);
    if (bytes > 0)
      cps_emu_enqueue(p.stream, [dst = p.dst, src = m->buf, bytes] { std::memmove(dst, src, bytes); },
                      CpsEmuWork::Kernel);
    m->read = record(p.stream);
    m->taken = true;
    while (!box.empty() && box.front()->taken) box.pop_front();
  }
  g_cv.notify_all();
  for (auto& [p, m] : sent) {
    if (!await(lock, *p->comm->team, [&] { return m->taken; }))
      return failed(ncclRemoteError,
                    why_not(*p->comm->team, who(*p) + ": rank " + std::to_string(p->peer) + " received nothing"));
    cudaStreamWaitEvent(p->stream, m->read, 0);
    cudaEventDestroy(m->ready);  // queued waits keep what they need
    cudaEventDestroy(m->read);
  }
  return ncclSuccess;
}

// Collectives, in issue order: post, wait for every rank, queue the copies or the sum after every rank's ready
// event, post the read event, wait for every rank's, and wait on them.
ncclResult_t run_collective(const Pending& p) {
  std::unique_lock<std::mutex> lock(g_mu);
  Team& team = *p.comm->team;
  const int me = p.comm->rank, n = team.n;
  const std::uint64_t seq = p.comm->collectives++;
  auto& slot = team.collectives[seq];
  if (!slot) {
    slot = std::make_shared<Collective>(n);
    slot->gather = p.kind == Pending::Gather;
    slot->count = p.count;
    slot->type = p.type;
  }
  const std::shared_ptr<Collective> c = slot;
  const char* name = p.kind == Pending::Gather ? "ncclAllGather" : "ncclReduceScatter";
  if (c->gather != (p.kind == Pending::Gather) || c->count != p.count || c->type != p.type)
    return fail(ncclInvalidUsage, who(p) + ": " + name + " of " + std::to_string(p.count) +
                                      " elements meets another rank's different collective (number " +
                                      std::to_string(seq) + " on this communicator)");
  c->send[me] = p.src;
  c->recv[me] = p.dst;
  c->ready[me] = record(p.stream);
  ++c->posted;
  g_cv.notify_all();
  if (!await(lock, team, [&] { return c->posted == n; }))
    return fail(ncclRemoteError, why_not(team, who(p) + ": " + name + ": " + std::to_string(n - c->posted) +
                                                   " rank(s) did not arrive"));
  for (int m = 0; m < n; ++m)
    if (m != me) cudaStreamWaitEvent(p.stream, c->ready[m], 0);
  const std::size_t bytes = p.count * type_bytes(p.type);
  if (c->gather) {
    std::vector<const void*> from = c->send;
    cps_emu_enqueue(
        p.stream,
        [from, dst = p.dst, bytes] {
          for (std::size_t m = 0; m < from.size(); ++m) {
            char* to = static_cast<char*>(dst) + m * bytes;
            if (to != from[m]) std::memmove(to, from[m], bytes);  // in place: the rank's own part is there
          }
        },
        CpsEmuWork::Kernel);
  } else {
    std::vector<const void*> from = c->send;
    cps_emu_enqueue(
        p.stream,
        [from, dst = p.dst, count = p.count, type = p.type, me] {
          std::vector<float> sum(count, 0.f);  // then stored: the receive may lie in this rank's own send buffer
          for (const void* src : from)
            for (std::size_t i = 0; i < count; ++i)
              sum[i] += load(src, static_cast<std::size_t>(me) * count + i, type);
          for (std::size_t i = 0; i < count; ++i) store(dst, i, type, sum[i]);
        },
        CpsEmuWork::Kernel);
  }
  c->read[me] = record(p.stream);
  ++c->read_posted;
  g_cv.notify_all();
  if (!await(lock, team, [&] { return c->read_posted == n; }))
    return fail(ncclRemoteError, why_not(team, who(p) + ": " + name + ": a rank stopped between its two halves"));
  for (int m = 0; m < n; ++m)
    if (m != me) cudaStreamWaitEvent(p.stream, c->read[m], 0);
  if (++c->released == n) {
    for (int m = 0; m < n; ++m) {
      cudaEventDestroy(c->ready[m]);
      cudaEventDestroy(c->read[m]);
    }
    team.collectives.erase(seq);
  }
  return ncclSuccess;
}

ncclComm_t new_comm(const std::shared_ptr<Team>& team, int rank, bool blocking) {
  auto* c = new ncclComm{};
  c->rank = rank;
  c->team = team;
  c->blocking = blocking;
  return c;
}

}  // namespace

ncclResult_t ncclGetVersion(int* version) {
  *version = 0;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclSystemError: return "unhandled system error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "error";
  }
}

const char* ncclGetLastError(ncclComm_t) { return t_last_error.c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof *id);
  const std::lock_guard<std::mutex> lock(g_mu);
  const std::uint64_t v = g_next_id++;
  std::memcpy(id->internal, &v, sizeof v);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t* config) {
  if (comm == nullptr || nranks < 1 || rank < 0 || rank >= nranks)
    return fail(ncclInvalidArgument, "ncclCommInitRank: rank " + std::to_string(rank) + " of " + std::to_string(nranks));
  const bool blocking = config == nullptr || config->blocking != 0;
  std::unique_lock<std::mutex> lock(g_mu);
  const std::string key(id.internal, sizeof id.internal);
  std::shared_ptr<Team>& forming = g_forming[key];
  if (!forming) {
    forming = std::make_shared<Team>();
    forming->family = std::make_shared<Family>();
    forming->n = nranks;
  }
  const std::shared_ptr<Team> team = forming;
  if (team->n != nranks)
    return fail(ncclInvalidUsage, "ncclCommInitRank: " + std::to_string(nranks) + " ranks, but another rank of this "
                                      "id said " + std::to_string(team->n));
  *comm = new_comm(team, rank, blocking);
  ++g_inits;
  if (++team->joined == team->n) g_forming.erase(key);
  g_cv.notify_all();
  if (!blocking) return team->joined == team->n ? ncclSuccess : ncclInProgress;
  if (!await(lock, *team, [&] { return team->joined == team->n; }))
    return fail(ncclRemoteError, why_not(*team, "ncclCommInitRank: " + std::to_string(team->n - team->joined) +
                                                    " rank(s) did not join"));
  return ncclSuccess;
}

long long cps_emu_nccl_inits() {
  const std::lock_guard<std::mutex> lock(g_mu);
  return g_inits;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config) {
  if (comm == nullptr || newcomm == nullptr) return fail(ncclInvalidArgument, "ncclCommSplit: null communicator");
  std::unique_lock<std::mutex> lock(g_mu);
  Team& team = *comm->team;
  // A rank of the family aborted (its split or another wait failed): the ranks that arrived earlier may have
  // freed the handles they passed, so write none.
  if (!team.family->aborted.empty()) return fail(ncclRemoteError, why_not(team, "ncclCommSplit"));
  const std::uint64_t seq = comm->splits++;
  auto& slot = team.splits[seq];
  if (!slot) slot = std::make_shared<Split>(team.n);
  const std::shared_ptr<Split> s = slot;
  s->color[comm->rank] = color;
  s->key[comm->rank] = key;
  s->out[comm->rank] = newcomm;
  s->blocking[comm->rank] = config != nullptr ? config->blocking != 0 : comm->blocking;
  if (++s->arrived == team.n) {
    // Every rank is here: one team per color, ranked by key (then by the parent's rank); handles written now.
    std::map<int, std::vector<int>> by_color;
    for (int r = 0; r < team.n; ++r)
      if (s->color[r] == NCCL_SPLIT_NOCOLOR)
        *s->out[r] = nullptr;
      else
        by_color[s->color[r]].push_back(r);
    for (auto& [c, members] : by_color) {
      std::stable_sort(members.begin(), members.end(), [&](int a, int b) { return s->key[a] < s->key[b]; });
      auto t = std::make_shared<Team>();
      t->family = team.family;
      t->n = static_cast<int>(members.size());
      t->joined = t->n;
      for (int i = 0; i < t->n; ++i) *s->out[members[i]] = new_comm(t, i, s->blocking[members[i]]);
    }
    s->done = true;
    team.splits.erase(seq);
    g_cv.notify_all();
  }
  if (!comm->blocking) {
    if (s->done) return ncclSuccess;
    comm->pending_split = s;
    return ncclInProgress;
  }
  if (!await(lock, team, [&] { return s->done; }))
    return fail(ncclRemoteError, why_not(team, "ncclCommSplit: not every rank arrived"));
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
  if (comm == nullptr || state == nullptr) return fail(ncclInvalidArgument, "ncclCommGetAsyncError: null argument");
  const std::lock_guard<std::mutex> lock(g_mu);
  if (comm->state != ncclSuccess) {
    *state = comm->state;
  } else if (!comm->team->family->aborted.empty()) {
    t_last_error = comm->team->family->aborted;
    *state = ncclRemoteError;
  } else if (comm->team->joined < comm->team->n || (comm->pending_split && !comm->pending_split->done)) {
    *state = ncclInProgress;
  } else {
    comm->pending_split.reset();
    *state = ncclSuccess;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (comm == nullptr || count == nullptr) return fail(ncclInvalidArgument, "ncclCommCount: null argument");
  const std::lock_guard<std::mutex> lock(g_mu);
  *count = comm->team->n;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (comm == nullptr || rank == nullptr) return fail(ncclInvalidArgument, "ncclCommUserRank: null argument");
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  if (comm == nullptr) return fail(ncclInvalidArgument, "ncclCommFinalize: null communicator");
  return comm->blocking ? ncclSuccess : ncclInProgress;  // nothing outstanding: the state stays ncclSuccess
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  const std::lock_guard<std::mutex> lock(g_mu);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  {
    const std::lock_guard<std::mutex> lock(g_mu);
    Family& f = *comm->team->family;
    if (f.aborted.empty()) f.aborted = "rank " + std::to_string(comm->rank) + " aborted its communicator";
    g_cv.notify_all();
  }
  return ncclCommDestroy(comm);
}

ncclResult_t ncclGroupStart() {
  ++t_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_group_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--t_group_depth > 0) return ncclSuccess;
  std::vector<Pending> ops;
  ops.swap(t_pending);
  bool blocking = true;
  for (const Pending& p : ops) blocking = blocking && p.comm->blocking;
  if (ncclResult_t r = run_p2p(ops); r != ncclSuccess) return r;
  for (const Pending& p : ops)
    if (p.kind == Pending::Gather || p.kind == Pending::Reduce)
      if (ncclResult_t r = run_collective(p); r != ncclSuccess) return r;
  return blocking ? ncclSuccess : ncclInProgress;
}

ncclResult_t ncclSend(const void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return queue({Pending::Send, comm, buf, nullptr, count, type, peer, stream}, "ncclSend");
}

ncclResult_t ncclRecv(void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return queue({Pending::Recv, comm, nullptr, buf, count, type, peer, stream}, "ncclRecv");
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, std::size_t sendcount, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  return queue({Pending::Gather, comm, sendbuff, recvbuff, sendcount, type, -1, stream}, "ncclAllGather");
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, std::size_t recvcount, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (op != ncclSum) return fail(ncclInvalidArgument, "ncclReduceScatter: the emulation sums only");
  return queue({Pending::Reduce, comm, sendbuff, recvbuff, recvcount, type, -1, stream}, "ncclReduceScatter");
}
