// Writes seed inputs for the fuzzers: the test fixtures (tests/sim/trace/fixtures.h) as files.
#include <filesystem>

#include "../sim/trace/fixtures.h"

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
  std::filesystem::create_directories(dir / "kineto");
  std::filesystem::create_directories(dir / "nsys");
  trace_fixtures::write_text(dir / "kineto" / "rank0.json", trace_fixtures::kKinetoRank0);
  trace_fixtures::write_text(dir / "kineto" / "rank1.json", trace_fixtures::kKinetoRank1);
  trace_fixtures::write_nsys(dir / "nsys" / "report.sqlite");
  return 0;
}
