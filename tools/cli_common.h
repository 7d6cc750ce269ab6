// Shared by the cpscope tools (cp-sim, cp-profile): workload flags, config files, and output files
// written atomically as a set.
#pragma once

#include <functional>
#include <iosfwd>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "sim/hardware.h"
#include "sim/workload.h"

namespace cpscope::cli {

// Workload flags of one subcommand, kept as text: planner.cc parses them (single values for `run`,
// lists and ranges for `sweep`), so every value error names its flag and rule in one place.
struct WorkloadFlags {
  std::map<std::string, std::string> values;
  std::vector<std::pair<std::string, CLI::Option*>> options;

  bool given(const std::string& flag) const {
    for (const auto& [name, opt] : options)
      if (name == flag) return opt->count() > 0;
    return false;
  }
};

enum class FlagMode { Single, List };

// Adds --<flag> for every workload field (or only those in `only`); `lists` take lists in Single mode.
void add_workload_flags(CLI::App* app, WorkloadFlags& flags, FlagMode mode, const std::vector<std::string_view>& only = {},
                        const std::vector<std::string_view>& lists = {});
// Applies the single-valued workload flags that were given to `w`; returns whether gpus-per-node was one.
bool apply_workload_flags(const WorkloadFlags& flags, Workload& w);

nlohmann::json read_json_file(const std::string& path, const std::string& field);
// The base workload: defaults, then --config. Returns whether the file set gpus_per_node.
bool load_base(const std::string& config, Workload& w);
HardwareProfile hardware_of(const std::string& name);
// Fails early (before minutes of work) when an output folder does not exist.
void check_output_path(const std::string& path, const std::string& field);

struct Output {
  std::string path;
  std::string field;
  std::function<void(std::ostream&)> writer;
};
// Writes every requested file atomically; if one fails, the ones already written are removed so an
// error never leaves a partial set behind.
void write_outputs(const std::vector<Output>& outputs);
std::function<void(std::ostream&)> text_writer(std::string text);

// Parses the command line. Returns -1 when the tool should go on, otherwise the exit code: 0 after
// --help/--version, 2 after a usage error (printed with the subcommand's --help hint).
int parse_args(CLI::App& app, int argc, char** argv, const std::string& tool);
// A tool's main around `body`: InputError prints "<tool>: error: ..." and exits 2 (bad input, also an
// input too large for memory); a runtime failure (device, transport, I/O) "<tool>: error: ..." and an
// InternalError "<tool>: internal error: ..." both exit 1.
int run_tool(const std::string& tool, const std::function<int()>& body);

}  // namespace cpscope::cli
