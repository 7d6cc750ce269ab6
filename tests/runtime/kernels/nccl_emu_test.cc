// The SIMT emulation's stand-in NCCL (runtime/kernels/emu/nccl_emu.cc): a one-rank communicator's grouped send
// to itself is a copy on the stream, and what would hang or be undefined with a real NCCL is an error whose
// reason ncclGetLastError gives and CPS_NCCL_CALL reports. Ranks as threads: point-to-point rings, all-gather,
// reduce-scatter and non-blocking init and split behave as the nccl transport expects of NCCL.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <barrier>
#include <bit>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/cuda/check.h"

namespace {

class NcclEmu : public ::testing::Test {
 protected:
  void SetUp() override {
    ncclUniqueId id;
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    ASSERT_EQ(ncclCommInitRank(&comm_, 1, id, 0), ncclSuccess);
    ASSERT_EQ(cudaStreamCreate(&s_), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&a_, kBytes), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&b_, kBytes), cudaSuccess);
  }
  void TearDown() override {
    cudaFree(a_);
    cudaFree(b_);
    cudaStreamDestroy(s_);
    ncclCommDestroy(comm_);
  }
  // Expects `r` to be `code` with a reason containing `needle`.
  static void ExpectError(ncclResult_t r, ncclResult_t code, const std::string& needle) {
    EXPECT_EQ(r, code);
    const std::string why = ncclGetLastError(nullptr);
    EXPECT_NE(why.find(needle), std::string::npos) << why;
  }

  static constexpr std::size_t kBytes = 4096;
  ncclComm_t comm_ = nullptr;
  cudaStream_t s_ = nullptr;
  void* a_ = nullptr;
  void* b_ = nullptr;
};

TEST_F(NcclEmu, GroupedSendToSelfCopiesOnTheStream) {
  std::vector<unsigned char> host(kBytes);
  for (std::size_t i = 0; i < kBytes; ++i) host[i] = static_cast<unsigned char>(i * 7 + 1);
  ASSERT_EQ(cudaMemcpy(a_, host.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ASSERT_EQ(ncclSend(a_, kBytes / 4, ncclFloat32, 0, comm_, s_), ncclSuccess);
  ASSERT_EQ(ncclRecv(b_, kBytes, ncclUint8, 0, comm_, s_), ncclSuccess);
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s_), cudaSuccess);
  std::vector<unsigned char> back(kBytes);
  ASSERT_EQ(cudaMemcpy(back.data(), b_, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);
}

TEST_F(NcclEmu, WhatWouldHangOrBeUndefinedIsAnError) {
  ExpectError(ncclSend(a_, 16, ncclUint8, 0, comm_, s_), ncclInvalidUsage, "outside ncclGroupStart");
  ExpectError(ncclSend(a_, 16, ncclUint8, 1, comm_, s_), ncclInvalidArgument, "peer 1");

  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ASSERT_EQ(ncclSend(a_, 16, ncclUint8, 0, comm_, s_), ncclSuccess);
  ExpectError(ncclGroupEnd(), ncclInvalidUsage, "1 send(s) and 0 receive(s)");

  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ASSERT_EQ(ncclSend(a_, 16, ncclUint8, 0, comm_, s_), ncclSuccess);
  ASSERT_EQ(ncclRecv(b_, 32, ncclUint8, 0, comm_, s_), ncclSuccess);
  ExpectError(ncclGroupEnd(), ncclInvalidUsage, "a send of 16 bytes from rank 0 paired with a receive of 32");

  // Buffers must be device memory, inside one allocation.
  std::vector<char> host(64);
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ExpectError(ncclSend(host.data(), 64, ncclUint8, 0, comm_, s_), ncclInvalidArgument, "not inside one cudaMalloc");
  ExpectError(ncclRecv(static_cast<char*>(b_) + kBytes - 8, 16, ncclUint8, 0, comm_, s_), ncclInvalidArgument,
              "not inside one cudaMalloc");
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);  // nothing was queued

  ExpectError(ncclGroupEnd(), ncclInvalidUsage, "without ncclGroupStart");
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t two = nullptr;
  ExpectError(ncclCommInitRank(&two, 2, id, 2), ncclInvalidArgument, "rank 2 of 2");
}

TEST_F(NcclEmu, CallCheckReportsTheReason) {
  try {
    CPS_NCCL_CALL(3, ncclSend(a_, 16, ncclUint8, 0, comm_, s_));
    FAIL() << "no error";
  } catch (const cpscope::rt::DeviceError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("invalid usage (ncclSend outside ncclGroupStart"), std::string::npos) << msg;
  }
}

// --- ranks as threads ---

// Runs body(rank) on n threads.
void on_ranks(int n, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(body, r);
  for (std::thread& t : threads) t.join();
}

// Polls a non-blocking communicator until it leaves ncclInProgress.
ncclResult_t settle(ncclComm_t c) {
  ncclResult_t state = ncclInProgress;
  while (state == ncclInProgress)
    if (ncclCommGetAsyncError(c, &state) != ncclSuccess) return ncclInternalError;
  return state;
}

ncclComm_t join(int n, int rank, const ncclUniqueId& id) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t c = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&c, n, id, rank, &config);
  EXPECT_TRUE(r == ncclSuccess || r == ncclInProgress) << ncclGetLastError(nullptr);
  EXPECT_EQ(settle(c), ncclSuccess);
  return c;
}

std::vector<float> download(const void* p, std::size_t n) {
  std::vector<float> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

void* upload(const std::vector<float>& v) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, v.size() * 4), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}

TEST(NcclEmuRanks, RingOfSendsAndReceivesOnTwoStreamsPerRank) {
  constexpr int n = 4;
  constexpr std::size_t count = 64;
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  std::vector<std::vector<float>> got(n);
  on_ranks(n, [&](int r) {
    ncclComm_t c = join(n, r, id);
    cudaStream_t send_s = nullptr, recv_s = nullptr;
    cudaStreamCreate(&send_s);
    cudaStreamCreate(&recv_s);
    void* in = upload(std::vector<float>(count, static_cast<float>(100 + r)));
    void* out = upload(std::vector<float>(count, -1.f));
    for (int round = 0; round < 3; ++round) {  // pairs match in issue order, round after round
      ncclGroupStart();
      ncclSend(in, count, ncclFloat32, (r + 1) % n, c, send_s);
      ncclRecv(out, count, ncclFloat32, (r + n - 1) % n, c, recv_s);
      const ncclResult_t e = ncclGroupEnd();
      EXPECT_EQ(e, ncclInProgress) << ncclGetLastError(nullptr);  // non-blocking
      EXPECT_EQ(settle(c), ncclSuccess);
    }
    cudaStreamSynchronize(recv_s);
    cudaStreamSynchronize(send_s);
    got[r] = download(out, count);
    cudaFree(in);
    cudaFree(out);
    cudaStreamDestroy(send_s);
    cudaStreamDestroy(recv_s);
    ncclCommDestroy(c);
  });
  for (int r = 0; r < n; ++r) EXPECT_EQ(got[r], std::vector<float>(count, static_cast<float>(100 + (r + n - 1) % n)));
}

TEST(NcclEmuRanks, AllGatherAndInPlaceReduceScatterInBf16) {
  constexpr int n = 4;
  constexpr std::size_t count = 8;  // per rank
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  std::vector<std::vector<float>> gathered(n);
  std::vector<std::vector<std::uint16_t>> reduced(n);
  on_ranks(n, [&](int r) {
    ncclComm_t c = join(n, r, id);
    cudaStream_t s = nullptr;
    cudaStreamCreate(&s);
    std::vector<float> mine(count);
    for (std::size_t i = 0; i < count; ++i) mine[i] = static_cast<float>(r * 10 + static_cast<int>(i));
    void* src = upload(mine);
    void* all = upload(std::vector<float>(n * count, 0.f));
    EXPECT_EQ(ncclAllGather(src, all, count, ncclFloat32, c, s), ncclInProgress);
    // Reduce-scatter in place, bf16: rank r's slice of its buffer receives the sum; values stay exact in bf16.
    std::vector<std::uint16_t> bf(n * count);
    for (std::size_t i = 0; i < bf.size(); ++i)
      bf[i] = static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(static_cast<float>(r + 1 + i % 3)) >> 16);
    void* rs = nullptr;
    cudaMalloc(&rs, bf.size() * 2);
    cudaMemcpy(rs, bf.data(), bf.size() * 2, cudaMemcpyHostToDevice);
    EXPECT_EQ(ncclReduceScatter(rs, static_cast<std::uint16_t*>(rs) + r * count, count, ncclBfloat16, ncclSum, c, s),
              ncclInProgress);
    cudaStreamSynchronize(s);
    gathered[r] = download(all, n * count);
    reduced[r].resize(count);
    cudaMemcpy(reduced[r].data(), static_cast<std::uint16_t*>(rs) + r * count, count * 2, cudaMemcpyDeviceToHost);
    cudaFree(src);
    cudaFree(all);
    cudaFree(rs);
    cudaStreamDestroy(s);
    ncclCommDestroy(c);
  });
  for (int r = 0; r < n; ++r) {
    for (int m = 0; m < n; ++m)
      for (std::size_t i = 0; i < count; ++i) EXPECT_EQ(gathered[r][m * count + i], static_cast<float>(m * 10 + static_cast<int>(i)));
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t g = r * count + i;  // the element's index in every rank's buffer
      const float want = static_cast<float>(1 + 2 + 3 + 4 + n * static_cast<int>(g % 3));
      EXPECT_EQ(std::bit_cast<float>(static_cast<std::uint32_t>(reduced[r][i]) << 16), want) << "rank " << r << " " << i;
    }
  }
}

// NCCL's in-place forms are the only overlaps it allows: all-gather's send buffer at the rank's own segment of the
// receive buffer, reduce-scatter's receive buffer at the rank's own segment of the send buffer. Another segment
// (here the next rank's) is refused, so a transport that computes the wrong in-place offset fails in CI.
TEST(NcclEmuRanks, InPlaceBuffersOutsideTheRanksOwnSegmentAreRefused) {
  constexpr int n = 2;
  constexpr std::size_t count = 8;
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  std::vector<std::string> why(2 * n);
  on_ranks(n, [&](int r) {
    ncclComm_t c = join(n, r, id);
    cudaStream_t s = nullptr;
    cudaStreamCreate(&s);
    float* whole = static_cast<float*>(upload(std::vector<float>(n * count, 1.f)));
    float* other = whole + ((r + 1) % n) * count;
    EXPECT_EQ(ncclAllGather(other, whole, count, ncclFloat32, c, s), ncclInvalidArgument);
    why[2 * r] = ncclGetLastError(nullptr);
    EXPECT_EQ(ncclReduceScatter(whole, other, count, ncclFloat32, ncclSum, c, s), ncclInvalidArgument);
    why[2 * r + 1] = ncclGetLastError(nullptr);
    cudaFree(whole);
    cudaStreamDestroy(s);
    ncclCommDestroy(c);
  });
  for (int r = 0; r < n; ++r) {
    const std::string own = "not at its own segment (byte " + std::to_string(r * count * 4) + ")";
    EXPECT_NE(why[2 * r].find("ncclAllGather: rank " + std::to_string(r) + "'s send buffer overlaps"), std::string::npos)
        << why[2 * r];
    EXPECT_NE(why[2 * r].find(own), std::string::npos) << why[2 * r];
    EXPECT_NE(why[2 * r + 1].find("ncclReduceScatter: rank " + std::to_string(r) + "'s receive buffer overlaps"),
              std::string::npos)
        << why[2 * r + 1];
    EXPECT_NE(why[2 * r + 1].find(own), std::string::npos) << why[2 * r + 1];
  }
}

// ncclCommSplit on a non-blocking parent writes the new handle only when every rank has arrived (NCCL's init job
// fills it later, nccl issue #1472): a caller that reads it right after the call gets null. Ranks are ordered by
// key; NCCL_SPLIT_NOCOLOR gets no communicator.
TEST(NcclEmuRanks, SplitWritesTheHandlesOnlyOnceEveryRankArrived) {
  constexpr int n = 4;
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  std::vector<std::vector<float>> order(n);
  // char, not bool: each rank's thread writes its own element, and vector<bool> packs them into one shared word.
  std::vector<char> early_null(n, 0), has_comm(n, 0);
  std::barrier first_split(2), parents(n);
  on_ranks(n, [&](int r) {
    ncclComm_t parent = join(n, r, id);
    parents.arrive_and_wait();
    if (r == 0) {
      ncclComm_t mine = nullptr;
      EXPECT_EQ(ncclCommSplit(parent, 0, -r, &mine, nullptr), ncclInProgress);
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(parent, &state);
      early_null[0] = mine == nullptr && state == ncclInProgress;
      first_split.arrive_and_wait();
      EXPECT_EQ(settle(parent), ncclSuccess);
      has_comm[0] = mine != nullptr;
      if (mine != nullptr) {
        cudaStream_t s = nullptr;
        cudaStreamCreate(&s);
        void* src = upload({static_cast<float>(r)});
        void* all = upload({-1.f, -1.f});
        ncclAllGather(src, all, 1, ncclFloat32, mine, s);
        settle(mine);
        cudaStreamSynchronize(s);
        order[r] = download(all, 2);
        cudaFree(src);
        cudaFree(all);
        cudaStreamDestroy(s);
        ncclCommDestroy(mine);
      }
    } else {
      if (r == 1) first_split.arrive_and_wait();  // rank 1 lets the others go once rank 0 has looked
      ncclComm_t mine = nullptr;
      const int color = r == 3 ? NCCL_SPLIT_NOCOLOR : r % 2;
      const ncclResult_t e = ncclCommSplit(parent, color, -r, &mine, nullptr);
      EXPECT_TRUE(e == ncclSuccess || e == ncclInProgress);
      EXPECT_EQ(settle(parent), ncclSuccess);
      has_comm[r] = mine != nullptr;
      if (mine != nullptr) {
        const int size = r == 2 ? 2 : 1;
        cudaStream_t s = nullptr;
        cudaStreamCreate(&s);
        void* src = upload({static_cast<float>(r)});
        void* all = upload(std::vector<float>(size, -1.f));
        ncclAllGather(src, all, 1, ncclFloat32, mine, s);
        settle(mine);
        cudaStreamSynchronize(s);
        order[r] = download(all, size);
        cudaFree(src);
        cudaFree(all);
        cudaStreamDestroy(s);
        ncclCommDestroy(mine);
      }
    }
    ncclCommDestroy(parent);
  });
  EXPECT_TRUE(early_null[0]);
  EXPECT_EQ(has_comm, (std::vector<char>{1, 1, 1, 0}));
  EXPECT_EQ(order[0], (std::vector<float>{2.f, 0.f}));  // key -2 before key 0
  EXPECT_EQ(order[2], (std::vector<float>{2.f, 0.f}));
  EXPECT_EQ(order[1], (std::vector<float>{1.f}));
}

}  // namespace
