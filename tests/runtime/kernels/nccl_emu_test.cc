// The SIMT emulation's stand-in NCCL (runtime/kernels/emu/nccl_emu.cc): a one-rank communicator's grouped send
// to itself is a copy on the stream, and what would hang or be undefined with a real NCCL is an error whose
// reason ncclGetLastError gives and CPS_NCCL_CALL reports.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <string>
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
  ExpectError(ncclGroupEnd(), ncclInvalidUsage, "of 16 bytes paired with a receive of 32");

  cudaStream_t other = nullptr;
  ASSERT_EQ(cudaStreamCreate(&other), cudaSuccess);
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ASSERT_EQ(ncclSend(a_, 16, ncclUint8, 0, comm_, s_), ncclSuccess);
  ASSERT_EQ(ncclRecv(b_, 16, ncclUint8, 0, comm_, other), ncclSuccess);
  ExpectError(ncclGroupEnd(), ncclInvalidUsage, "two streams");
  cudaStreamDestroy(other);

  // Buffers must be device memory, inside one allocation.
  std::vector<char> host(64);
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ExpectError(ncclSend(host.data(), 64, ncclUint8, 0, comm_, s_), ncclInvalidArgument, "not inside one cudaMalloc");
  ExpectError(ncclRecv(static_cast<char*>(b_) + kBytes - 8, 16, ncclUint8, 0, comm_, s_), ncclInvalidArgument,
              "not inside one cudaMalloc");
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);  // nothing was queued

  ExpectError(ncclGroupEnd(), ncclInvalidUsage, "without ncclGroupStart");
  ncclUniqueId id;
  ncclComm_t two = nullptr;
  ExpectError(ncclCommInitRank(&two, 2, id, 0), ncclInvalidUsage, "one-rank communicators only");
}

TEST_F(NcclEmu, CallCheckReportsTheReason) {
  try {
    CPS_NCCL_CALL(3, ncclSend(a_, 16, ncclUint8, 0, comm_, s_));
    FAIL() << "no error";
  } catch (const cpscope::rt::DeviceError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("invalid usage (ncclSend to self outside ncclGroupStart"), std::string::npos) << msg;
  }
}

}  // namespace
