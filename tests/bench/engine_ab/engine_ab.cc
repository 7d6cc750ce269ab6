// The driver of tools/engine-ab.sh: builds one zigzag-ring schedule (forward+backward, 1M tokens, N
// ranks), loads two engine libraries, and alternates them on it, one simulation each, A then B in
// even rounds and B then A in odd ones, after one warm-up call each. Prints each one's median and
// minimum, and the median and quartiles of the paired ratios B/A (each round's two calls are seconds
// apart, so the machine's drift cancels). Exit 2 on a usage error, 1 when the libraries disagree on
// the results (every rank's end and busy totals: they do not simulate the same thing).
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "sim/schedule.h"
#include "sim/workload.h"

namespace {
using Simulate = double (*)(const cpscope::Schedule*, long*);

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: engine_ab RANKS ROUNDS LIB_A LIB_B\n");
    return 2;
  }
  const int ranks = std::atoi(argv[1]), rounds = std::atoi(argv[2]);
  if (ranks < 2 || rounds < 1) {
    std::fprintf(stderr, "engine_ab: RANKS must be >= 2 and ROUNDS >= 1\n");
    return 2;
  }
  cpscope::Workload w;
  w.schedule = cpscope::ScheduleKind::ZigzagRing;
  w.cp = ranks;
  w.seq = 1 << 20;
  if (const std::string why = cpscope::invalid_reason(w); !why.empty()) {
    std::fprintf(stderr, "engine_ab: %s\n", why.c_str());
    return 2;
  }
  const cpscope::Schedule schedule = cpscope::make_schedule(w);
  Simulate run[2];
  for (int i = 0; i < 2; ++i) {
    void* lib = dlopen(argv[3 + i], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      std::fprintf(stderr, "engine_ab: %s\n", dlerror());
      return 2;
    }
    run[i] = reinterpret_cast<Simulate>(dlsym(lib, "cpscope_ab_simulate"));
    if (run[i] == nullptr) {
      std::fprintf(stderr, "engine_ab: %s has no cpscope_ab_simulate\n", argv[3 + i]);
      return 2;
    }
  }
  long results[2];
  for (int i = 0; i < 2; ++i) run[i](&schedule, &results[i]);  // warm-up: first-touch of the records
  if (results[0] != results[1]) {
    std::fprintf(stderr, "engine_ab: A and B give different results (fingerprints %lx, %lx): not the same simulation\n",
                 static_cast<unsigned long>(results[0]), static_cast<unsigned long>(results[1]));
    return 1;
  }
  std::vector<double> t[2], ratio;
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      const int i = (r + k) % 2;
      t[i].push_back(run[i](&schedule, &results[i]));
    }
    ratio.push_back(t[1].back() / t[0].back());
  }
  std::printf("N=%d, %d rounds: A median %.4f s (min %.4f), B median %.4f s (min %.4f); "
              "B/A paired ratio median %.3f (quartiles %.3f-%.3f)\n",
              ranks, rounds, quantile(t[0], 0.5), quantile(t[0], 0), quantile(t[1], 0.5), quantile(t[1], 0),
              quantile(ratio, 0.5), quantile(ratio, 0.25), quantile(ratio, 0.75));
  return 0;
}
