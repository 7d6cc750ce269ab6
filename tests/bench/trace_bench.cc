// Kineto reader throughput and peak memory on synthetic traces shaped like PyTorch's (kernel events
// with the args Kineto writes: grid, block, registers, shared memory, correlation...).
//   trace_bench                       Google Benchmark: MB/s of the streaming reader on a 64 MiB trace
//   trace_bench --generate FILE MIB   write a synthetic trace of about MIB MiB (.gz name: gzip it)
//   trace_bench --read FILE           read it once; print MB/s, intervals and peak RSS / file size
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <zlib.h>

#include "sim/trace/kineto.h"

namespace {

using namespace cpscope::trace;

const char* const kKernels[] = {
    "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, false, false, cutlass::bfloat16_t>, "
    "true, false, false, false, true, false, false>(Flash_fwd_params)",
    "ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)",
    "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>, "
    "at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<c10::BFloat16>, at::detail::Array<char*, 3>)",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off_kernel"};

// One event in Kineto's layout; ~560 bytes, like real kernel events.
std::string event(std::size_t i, double ts) {
  const char* name = kKernels[i % 4];
  return fmt::format(
      R"({{"ph": "X", "cat": "kernel", "name": "{}", "pid": 0, "tid": {}, "ts": {:.3f}, "dur": {:.3f}, "args": {{)"
      R"("External id": {}, "queued": 0, "device": 0, "context": 1, "stream": {}, "correlation": {}, "registers per thread": 168, )"
      R"("shared memory": 147456, "blocks per SM": 1.0, "warps per SM": 8.0, "grid": [132, 1, 1], "block": [384, 1, 1], )"
      R"("est. achieved occupancy %": 0}}}})",
      name, i % 4 == 1 ? 20 : 7, ts, 3.25 + static_cast<double>(i % 17), i, i % 4 == 1 ? 20 : 7, i + 1000);
}

void generate(const std::string& path, std::size_t mib) {
  const bool gz = path.ends_with(".gz");
  gzFile g = gz ? gzopen(path.c_str(), "wb1") : nullptr;
  std::FILE* f = gz ? nullptr : std::fopen(path.c_str(), "wb");
  auto put = [&](const std::string& s) {
    if (gz) gzwrite(g, s.data(), static_cast<unsigned>(s.size()));
    else std::fwrite(s.data(), 1, s.size(), f);
  };
  put(R"({"schemaVersion": 1, "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": 8}, "traceEvents": [)");
  std::size_t written = 0, i = 0;
  double ts = 1693516539123456.0;
  std::string chunk;
  while (written < mib * (1u << 20)) {
    chunk.clear();
    for (int k = 0; k < 1000; ++k, ++i) {
      chunk += (i ? ",\n" : "\n") + event(i, ts);
      ts += 2.5;
    }
    written += chunk.size();
    put(chunk);
  }
  put("\n]}\n");
  if (gz) gzclose(g);
  else std::fclose(f);
}

long peak_rss_kib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

int read_once(const std::string& path) {
  const Classifier cls;
  const auto t0 = std::chrono::steady_clock::now();
  auto src = open_file_source(path);
  const Trace t = read_kineto(*src, path, 0, cls);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double file_mb = static_cast<double>(std::filesystem::file_size(path)) / 1e6;
  // Count the decompressed bytes for .gz: throughput is of JSON parsed.
  double json_mb = file_mb;
  if (src->compressed()) {
    gzFile g = gzopen(path.c_str(), "rb");
    std::vector<char> buf(1 << 20);
    std::size_t total = 0;
    for (int n; (n = gzread(g, buf.data(), static_cast<unsigned>(buf.size()))) > 0;) total += static_cast<std::size_t>(n);
    gzclose(g);
    json_mb = static_cast<double>(total) / 1e6;
  }
  const double rss_mb = static_cast<double>(peak_rss_kib()) * 1024 / 1e6;
  std::printf("file %.1f MB (%.1f MB JSON): %zu intervals in %.2f s = %.1f MB/s of JSON; peak RSS %.1f MB = %.1f%% of the "
              "file\n",
              file_mb, json_mb, t.timeline.intervals.size(), s, json_mb / s, rss_mb, 100.0 * rss_mb / file_mb);
  return 0;
}

void BM_KinetoRead(benchmark::State& state) {
  const std::string path = (std::filesystem::temp_directory_path() / "cpscope_trace_bench.json").string();
  generate(path, 64);
  const auto bytes = std::filesystem::file_size(path);
  const Classifier cls;
  for (auto _ : state) {
    auto src = open_file_source(path);
    benchmark::DoNotOptimize(read_kineto(*src, path, 0, cls));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  std::filesystem::remove(path);
}
BENCHMARK(BM_KinetoRead)->Unit(benchmark::kMillisecond)->Iterations(2);

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--generate") == 0) {
    generate(argv[2], static_cast<std::size_t>(std::stoul(argv[3])));
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "--read") == 0) return read_once(argv[2]);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
