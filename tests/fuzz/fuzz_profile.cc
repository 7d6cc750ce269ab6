// libFuzzer target: what cp-sim calibrate and validate read from files written on other machines. The bytes are
// parsed as JSON (invalid JSON is the parser's business and is skipped); the document is then read the way
// read_calibration_inputs reads it, as a cpscope.bench/1 file or a cpscope.profile, and fitted; and read as a
// hardware profile (--hardware FILE). Each must succeed or throw InputError; anything else (a crash, a sanitizer
// report, nlohmann's type_error, another exception) is a bug. Built by tests/fuzz/run.sh.
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "sim/calibrate.h"
#include "sim/error.h"
#include "sim/hardware.h"
#include "sim/profile.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  using cpscope::InputError;
  const cpscope::HardwareProfile& base = cpscope::default_hardware();
  try {
    std::vector<cpscope::NamedProfile> profiles;
    std::vector<cpscope::NamedBench> benches;
    cpscope::classify_calibration_input("fuzz.json", j, profiles, benches);
    const cpscope::Calibration cal = cpscope::calibrate(profiles, base, "fuzzed", benches);
    (void)cpscope::calibration_json(cal).dump();
    if (!profiles.empty()) (void)cpscope::validation_json(cpscope::validate(profiles, cal.hardware));
  } catch (const InputError&) {
  }
  try {
    (void)cpscope::to_json(cpscope::hardware_from_json(j)).dump();
  } catch (const InputError&) {
  }
  return 0;
}
