// libFuzzer target: the Kineto JSON reader on arbitrary bytes must return a Trace or throw InputError;
// anything else (a crash, a sanitizer report, another exception) is a bug. Built by tests/fuzz/run.sh.
#include <cstddef>
#include <cstdint>

#include "sim/error.h"
#include "sim/trace/kineto.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const cpscope::trace::Classifier cls;
  auto src = cpscope::trace::memory_source(reinterpret_cast<const char*>(data), size);
  try {
    cpscope::trace::read_kineto(*src, "fuzz.json", 0, cls);
  } catch (const cpscope::InputError&) {
  }
  return 0;
}
