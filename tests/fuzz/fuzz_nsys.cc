// libFuzzer target: the nsys SQLite reader on arbitrary bytes (deserialized read-only by SQLite) must
// return a Trace or throw InputError. Built by tests/fuzz/run.sh, seeded with a valid export.
#include <cstddef>
#include <cstdint>

#include "sim/error.h"
#include "sim/trace/nsys.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const cpscope::trace::Classifier cls;
  try {
    cpscope::trace::read_nsys_memory(data, size, "fuzz.sqlite", cls);
  } catch (const cpscope::InputError&) {
  }
  return 0;
}
