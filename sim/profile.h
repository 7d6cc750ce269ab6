// cpscope.profile files: one run, simulated or measured, with its summary and (optionally) its
// Timeline, in one JSON schema, so cp-sim, cp-profile, cp-trace and the notebooks read each other's.
//   { summary_json(run) fields..., "timeline": {
//       "streams": [...], "names": [...],
//       "columns": ["rank","stream","kind","name","op_id","step","pass","start_ns","end_ns","bytes","flops"],
//       "intervals": [[0, 0, "compute", 3, 17, 2, 0, 1000, 5000, 0, 123456], ...] } }
// kind is "compute" | "comm" | "memory"; name indexes "names"; pass 0 fwd, 1 bwd, -1 unknown.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "sim/report.h"
#include "sim/timeline.h"

namespace cpscope {

struct Profile {
  RunResult run;
  Timeline timeline;       // empty (no intervals) when the file has none
  bool has_timeline = false;
};

nlohmann::json timeline_json(const Timeline&);
// summary_json(run) plus "timeline" when `timeline` is given.
nlohmann::json profile_json(const RunResult& run, const Timeline* timeline);

// Parses a profile. Throws InputError naming `where` (the file) and the field: wrong schema, missing
// or mistyped fields, intervals out of range (rank, stream, name), negative or inverted times.
Profile profile_from_json(const nlohmann::json& j, const std::string& where);
Profile read_profile(const std::string& path);

}  // namespace cpscope
