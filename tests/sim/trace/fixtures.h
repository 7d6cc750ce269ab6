// Small real-format trace fixtures written by the tests themselves (no binary blobs in the tree):
// an nsys SQLite export with the documented table and column names, and Kineto JSON.
// Both describe the same two ranks, with numbers small enough to check by hand:
//   rank 0: flash_fwd_kernel [0,10) us stream 7, ncclDevKernel_SendRecv [5,15) us stream 20,
//           elementwise [20,25) us stream 7, memcpy DtoD [26.5,28) us (1024 B);
//           ranges fwd/step0/attend [0,15) us, fwd/step1/attend [20,28) us.
//   rank 1: ncclDevKernel_SendRecv [0,4) us, attn_fwd_kernel [4,10) us.
// Expected rank 0: compute 15 us, attention 10, comm 10, exposed 5 (comm [10,15) has no compute),
// overlap 0.5, memory 1.5, busy 21.5, span 28, idle 6.5. Rank 1: comm 4 all exposed, overlap 0.
#pragma once

#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace trace_fixtures {

inline void exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    throw std::runtime_error("fixture SQL failed: " + msg + " in: " + sql);
  }
}

struct NsysParts {
  bool kernels = true, memcpy = true, nvtx = true, runtime = true, strings = true, target_info = true;
};

// Times are ns with a 1'000'000 ns offset (nsys stamps are session-relative, never 0).
inline void write_nsys(const std::filesystem::path& path, const NsysParts& parts = {}) {
  std::filesystem::remove(path);
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  const long long off = 1000000, p0 = 100LL << 24, p1 = 200LL << 24, t0 = p0 | 101;
  auto gp = [](long long g) { return std::to_string(g); };
  if (parts.strings) {
    exec(db, "CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL)");
    exec(db, "INSERT INTO StringIds VALUES (1,'flash_fwd_kernel'),(2,'void flash::flash_fwd_kernel<T>(Params)'),"
             "(3,'ncclDevKernel_SendRecv'),(4,'ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)'),"
             "(5,'elementwise'),(6,'void at::native::elementwise_kernel<128>()'),(7,'attn_fwd_kernel'),"
             "(8,'void cpscope::rt::kernels::attn_fwd_kernel<bf16, 128>(FwdParams)'),(9,'fwd/step1/attend')");
  }
  if (parts.kernels) {
    exec(db, "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId "
             "INTEGER NOT NULL, contextId INTEGER NOT NULL, streamId INTEGER NOT NULL, correlationId INTEGER, "
             "globalPid INTEGER, demangledName INTEGER NOT NULL, shortName INTEGER NOT NULL, gridX INTEGER)");
    auto k = [&](long long s, long long e, int dev, int stream, int corr, long long pid, int dem, int sh) {
      exec(db, "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (" + std::to_string(off + s) + "," +
                   std::to_string(off + e) + "," + std::to_string(dev) + ",1," + std::to_string(stream) + "," +
                   std::to_string(corr) + "," + gp(pid) + "," + std::to_string(dem) + "," + std::to_string(sh) + ",1)");
    };
    k(0, 10000, 0, 7, 11, p0, 2, 1);
    k(5000, 15000, 0, 20, 12, p0, 4, 3);
    k(20000, 25000, 0, 7, 13, p0, 6, 5);
    k(0, 4000, 1, 20, 21, p1, 4, 3);
    k(4000, 10000, 1, 7, 22, p1, 8, 7);
  }
  if (parts.memcpy) {
    exec(db, "CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId "
             "INTEGER NOT NULL, contextId INTEGER NOT NULL, streamId INTEGER NOT NULL, correlationId INTEGER, "
             "globalPid INTEGER, bytes INTEGER NOT NULL, copyKind INTEGER NOT NULL, srcKind INTEGER, dstKind INTEGER)");
    exec(db, "INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY VALUES (" + std::to_string(off + 26500) + "," +
                 std::to_string(off + 28000) + ",0,1,7,14," + gp(p0) + ",1024,8,2,2)");
  }
  if (parts.runtime) {
    exec(db, "CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INTEGER NOT NULL, end INTEGER NOT NULL, eventClass "
             "INTEGER, globalTid INTEGER, correlationId INTEGER, nameId INTEGER)");
    // Launches on the CPU a little before the GPU runs them.
    exec(db, "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (100,200,1," + gp(t0) + ",11,0),(300,400,1," + gp(t0) +
                 ",12,0),(15000,15100,1," + gp(t0) + ",13,0),(15200,15300,1," + gp(t0) + ",14,0)");
  }
  if (parts.nvtx) {
    exec(db, "CREATE TABLE NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL, rangeId "
             "INTEGER, category INTEGER, color INTEGER, text TEXT, globalTid INTEGER, endGlobalTid INTEGER, textId "
             "INTEGER, domainId INTEGER, uint64Value INTEGER)");
    exec(db, "INSERT INTO NVTX_EVENTS VALUES (50,NULL,75,NULL,NULL,NULL,'cpscope'," + gp(t0) + ",NULL,NULL,5,NULL)");
    // CPU ranges: step 0 holds launches 11 and 12, step 1 (named through textId) launches 13 and 14.
    exec(db, "INSERT INTO NVTX_EVENTS VALUES (90,1000,59,NULL,NULL,NULL,'fwd/step0/attend'," + gp(t0) +
                 ",NULL,NULL,5,NULL),(14900,16000,59,NULL,NULL,NULL,NULL," + gp(t0) + ",NULL,9,5,NULL),"
                 "(17000,18000,59,NULL,NULL,NULL,'no gpu work'," + gp(t0) + ",NULL,NULL,0,NULL)");
  }
  if (parts.target_info) {
    exec(db, "CREATE TABLE TARGET_INFO_GPU (vmId INTEGER, id INTEGER, name TEXT, busLocation TEXT, cuDevice INTEGER)");
    exec(db, "INSERT INTO TARGET_INFO_GPU VALUES (0,0,'NVIDIA H100 80GB HBM3','0000:18:00.0',0),(0,1,'NVIDIA H100 80GB "
             "HBM3','0000:2a:00.0',1)");
    exec(db, "CREATE TABLE TARGET_INFO_CUDA_DEVICE (gpuId INTEGER, cudaId INTEGER, pid INTEGER, uuid TEXT, "
             "numMultiprocessors INTEGER)");
    exec(db, "INSERT INTO TARGET_INFO_CUDA_DEVICE VALUES (0,0,100,'GPU-a',132),(1,1,200,'GPU-b',132)");
  }
  sqlite3_close(db);
}

inline const char* kKinetoRank0 = R"J({"schemaVersion": 1, "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": 2},
"deviceProperties": [{"id": 0, "name": "NVIDIA H100"}],
"traceEvents": [
{"ph": "X", "cat": "kernel", "name": "flash_fwd_kernel", "pid": 0, "tid": 7, "ts": 1000.000, "dur": 10.000, "args": {"device": 0, "stream": 7, "correlation": 11, "grid": [1, 2, 3], "unknown_field": {"x": [1]}}},
{"ph": "X", "cat": "kernel", "name": "ncclDevKernel_SendRecv(ncclDevComm*)", "pid": 0, "tid": 20, "ts": 1005, "dur": 10, "args": {"device": 0, "stream": 20, "correlation": 12}},
{"ph": "X", "cat": "kernel", "name": "elementwise", "pid": 0, "tid": 7, "ts": 1020, "dur": 5, "args": {"device": 0, "stream": 7}},
{"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoD (Device -> Device)", "pid": 0, "tid": 7, "ts": 1026.5, "dur": 1.5, "args": {"device": 0, "stream": 7, "bytes": 1024}},
{"ph": "X", "cat": "gpu_user_annotation", "name": "fwd/step0/attend", "pid": 0, "tid": 7, "ts": 1000, "dur": 15, "args": {"device": 0}},
{"ph": "X", "cat": "gpu_user_annotation", "name": "fwd/step1/attend", "pid": 0, "tid": 7, "ts": 1020, "dur": 8, "args": {"device": 0}},
{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 0, "dur": 100},
{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPU 0"}}
]})J";

inline const char* kKinetoRank1 = R"J({"distributedInfo": {"rank": 1}, "traceEvents": [
{"ph": "X", "cat": "kernel", "name": "ncclDevKernel_SendRecv", "ts": 1000, "dur": 4, "args": {"device": 1, "stream": 20}},
{"ph": "X", "cat": "kernel", "name": "attn_fwd_kernel", "ts": 1004, "dur": 6, "args": {"device": 1, "stream": 7}}]})J";

inline void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}

}  // namespace trace_fixtures
