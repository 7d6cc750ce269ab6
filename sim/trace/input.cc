// Format detection and the merge of many inputs.
#include "sim/trace/input.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "sim/error.h"
#include "sim/profile.h"
#include "sim/trace/kineto.h"
#include "sim/trace/source.h"

namespace cpscope::trace {

Format detect_format(const std::string& path) {
  if (is_sqlite_file(path)) return Format::Nsys;
  // Names that promise a format this file does not have: say what to do instead of reporting it as
  // malformed JSON.
  if (path.ends_with(".nsys-rep") || path.ends_with(".qdrep"))
    throw InputError("", fmt::format("{}: an Nsight Systems report is read from its SQLite export: run nsys export "
                                     "--type sqlite {} and pass the .sqlite file",
                                     path, path));
  if (path.ends_with(".sqlite"))
    throw InputError("", fmt::format("{}: not an SQLite database (its first bytes are not the 'SQLite format 3' "
                                     "header): truncated, or not an nsys export",
                                     path));
  auto src = open_file_source(path);
  std::string head(64 * 1024, '\0');
  std::size_t got = 0;
  while (got < head.size()) {
    const std::size_t n = src->read(head.data() + got, head.size() - got);
    if (n == 0) break;
    got += n;
  }
  head.resize(got);
  return head.find("\"cpscope.profile/") != std::string::npos ? Format::Profile : Format::Kineto;
}

Trace read_profile_trace(const std::string& path, std::int64_t file_order) {
  Profile p = read_profile(path);
  if (!p.has_timeline)
    throw InputError("", fmt::format("{}: the profile has no timeline (write it with cp-sim run --profile or "
                                     "cp-profile --json)",
                                     path));
  Trace t;
  t.timeline = std::move(p.timeline);
  std::int32_t ranks = t.timeline.num_ranks;
  for (const Interval& iv : t.timeline.intervals) ranks = std::max(ranks, iv.rank + 1);
  t.timeline.num_ranks = ranks;
  for (std::int32_t r = 0; r < ranks; ++r) t.ranks.push_back({path, file_order, -1, r, p.run.source});
  const std::uint32_t empty = t.timeline.intern("");
  t.ranges.reserve(t.timeline.intervals.size());
  for (const Interval& iv : t.timeline.intervals) t.ranges.push_back({iv.rank, iv.name, empty, iv.start, iv.end});
  t.format = "cpscope-profile";
  return t;
}

Trace read_inputs(const std::vector<std::string>& inputs, const Classifier& cls, const NsysOptions& nsys) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(in, ec)) {
        const std::string name = e.path().filename().string();
        auto ends = [&](const char* s) { return name.size() >= std::strlen(s) && name.ends_with(s); };
        if (e.is_regular_file() && (ends(".json") || ends(".json.gz") || ends(".sqlite")))
          found.push_back(e.path().string());
      }
      if (ec) throw InputError("input", fmt::format("cannot list '{}': {}", in, ec.message()));
      if (found.empty()) throw InputError("input", fmt::format("'{}' holds no *.json, *.json.gz or *.sqlite file", in));
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(in, ec)) {
      files.push_back(in);
    } else {
      throw InputError("input", fmt::format("'{}' does not exist or is not a file or folder", in));
    }
  }
  if (files.empty()) throw InputError("input", "no input given");
  std::vector<Trace> parts;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto order = static_cast<std::int64_t>(i);
    switch (detect_format(files[i])) {
      case Format::Nsys: parts.push_back(read_nsys_file(files[i], order, cls, nsys)); break;
      case Format::Kineto: parts.push_back(read_kineto_file(files[i], order, cls)); break;
      case Format::Profile: parts.push_back(read_profile_trace(files[i], order)); break;
    }
  }
  return merge_traces(std::move(parts));
}

}  // namespace cpscope::trace
