// Opening what the user points cp-trace at: files of any supported format, or directories of Kineto
// traces, merged into one Trace (ranks numbered by the rule in trace.h).
#pragma once

#include <string>
#include <vector>

#include "sim/trace/classify.h"
#include "sim/trace/nsys.h"
#include "sim/trace/trace.h"

namespace cpscope::trace {

enum class Format { Nsys, Kineto, Profile };

// By content, not name: SQLite magic -> nsys; JSON (plain or gzip) whose first 64 KiB carry
// "cpscope.profile/" -> cpscope profile; any other JSON -> Kineto.
Format detect_format(const std::string& path);

// A cpscope profile (cp-sim run --profile, cp-profile --json) as a Trace: its Timeline unchanged, one
// Range per op interval (so `steps` groups ops by their names, "fwd/step3/attend").
Trace read_profile_trace(const std::string& path, std::int64_t file_order);

// Each input is a file or a directory; a directory contributes its *.json, *.json.gz and *.sqlite
// files in name order. Throws InputError("input", ...) for missing paths and empty directories.
Trace read_inputs(const std::vector<std::string>& inputs, const Classifier&, const NsysOptions& = {});

}  // namespace cpscope::trace
