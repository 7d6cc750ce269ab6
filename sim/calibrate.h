// Calibration and validation of a hardware profile against measured (or synthetic) profiles.
//
// calibrate() fits, by least squares (Eigen), the parameters the cost model uses from the op
// intervals of measured timelines, re-deriving each op's shape from the profile's workload:
//  - compute ops (attention, DkvAdd, Layout), one joint linear model over all of them:
//      duration = launch_latency + flops / rate(pass, mask, head_dim, q_len, kv_len)   (attention)
//               | launch_latency + bytes / memory_bandwidth                          (DkvAdd, Layout)
//               + beta · (time the op overlapped communication on its rank)
//    which is the engine's model exactly (a compute op progresses at 1/interference while the rank
//    communicates, so beta = 1 - 1/interference). One rate per measured block shape; rows are weighted
//    by 1/duration so the fit minimises relative error. The fitted table spans the measured lengths and
//    the base table's beyond them; a shape nobody measured takes the base rate scaled as at the nearest
//    measured shape (so it follows the base's trend rather than being clamped at the measured edge).
//  - point-to-point transfers, per link class (NVLink within a node, network across nodes):
//      duration from the last of {this op, the peer it sends to, the peer it receives from} starting
//      to this op's end = latency + bytes / bandwidth, from transfers that no other communication of
//      the same ranks overlapped (so no other flow shared the link).
// A parameter the profiles cannot identify (no comm overlap, one message size, every block shape at
// one size so latency and rate cannot be told apart) keeps the base profile's value, and the report
// says so. Collective formulas use the fitted link parameters; they are not fitted separately.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/hardware.h"
#include "sim/profile.h"

namespace cpscope {

struct NamedProfile {
  std::string name;  // file name, for reports and errors
  Profile profile;
  std::string device;  // the measured card's name (the file's device.name); empty when it names none
};

// A cpscope.bench/1 file (cp-profile bench): isolated attention timings over block shapes, transfer
// times over message sizes, and attention beside a concurrent transfer. Its rows join the samples
// the profiles give (attention: no comm overlap; interference: overlapped for its whole duration).
struct NamedBench {
  std::string name;
  nlohmann::json bench;
};

// Reads each path as a profile or, when its schema is cpscope.bench/1, as a bench file.
void read_calibration_inputs(const std::vector<std::string>& paths, std::vector<NamedProfile>& profiles,
                             std::vector<NamedBench>& benches);
// The same for one parsed document named `name`: a bench file by its schema, else a profile
// (profile_from_json, which throws InputError when it is not one).
void classify_calibration_input(const std::string& name, nlohmann::json j, std::vector<NamedProfile>& profiles,
                                std::vector<NamedBench>& benches);

struct Calibration {
  HardwareProfile hardware;  // the base with the fitted values
  nlohmann::json report;     // inputs, fitted values, residuals per category, what was kept and why
};

// `--base auto` / `--hardware auto`: the built-in profile of the card the inputs were measured on (each profile's
// and bench file's device.name, through builtin_hardware_for_device). Inputs that name no card (host backend,
// simulated) give the default (h100-sxm), as does a card with no built-in profile, and `why` says so. Throws
// InputError (field "base") naming the files when they come from cards of different profiles, or when some name
// a card and others none: one fit describes one card.
struct AutoBase {
  std::string name;
  std::string why;
};
AutoBase auto_base(const std::vector<NamedProfile>& profiles, const std::vector<NamedBench>& benches);

// Throws InputError naming the profile when one has no timeline or its intervals do not match the
// schedule of its workload (op ids, streams, ranks).
Calibration calibrate(const std::vector<NamedProfile>& profiles, const HardwareProfile& base,
                      const std::string& name = "", const std::vector<NamedBench>& benches = {});

// The calibrated profile as a hardware profile file: to_json(hardware) plus the report under
// "calibration" (hardware_from_json accepts and ignores it, like "sources").
nlohmann::json calibration_json(const Calibration&);

struct Comparison {
  std::string name;
  Workload workload;
  Nanos measured_ns = 0, predicted_ns = 0;  // step time
  double error = 0;                         // (predicted - measured) / measured
  // Per pass ("fwd", "bwd": span of the pass over ranks) and per op kind (mean op duration).
  struct Part {
    std::string what;
    double measured_ns = 0, predicted_ns = 0, error = 0;
  };
  std::vector<Part> passes, kinds;
};

struct Validation {
  std::string hardware;       // the profile predicted with (with leave_one_out: each fit's base)
  bool leave_one_out = false;
  std::vector<Comparison> rows;
  double mean_abs_error = 0;  // over rows' step-time errors
  double max_abs_error = 0;
  std::string worst;          // name of the row with the largest error
  std::vector<std::string> bench_files;  // joined every leave-one-out fit
};

// Simulates each profile's workload on `hardware` and compares with what the profile measured.
// With leave_one_out, row i is predicted by calibrate(all profiles but i, hardware, "", benches): bench
// files are never predicted, they join every fit (as they join cp-sim calibrate's). Bench files without
// leave_one_out are refused: nothing would use them.
Validation validate(const std::vector<NamedProfile>& profiles, const HardwareProfile& hardware,
                    bool leave_one_out = false, const std::vector<NamedBench>& benches = {});

nlohmann::json validation_json(const Validation&);
std::string validation_table(const Validation&);

}  // namespace cpscope
