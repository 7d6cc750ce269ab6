#include "tools/cli_common.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <new>
#include <stdexcept>
#include <ostream>

#include <fmt/format.h>

#include "sim/error.h"
#include "sim/planner.h"

namespace cpscope::cli {

// Workload flags of one subcommand, kept as text: planner.cc parses them (single values for `run`,
// lists and ranges for `sweep`), so every value error names its flag and rule in one place.


void add_workload_flags(CLI::App* app, WorkloadFlags& flags, FlagMode mode, const std::vector<std::string_view>& only,
                        const std::vector<std::string_view>& lists) {
  const Workload defaults;
  for (const WorkloadField& f : workload_fields()) {
    if (!only.empty() && std::find(only.begin(), only.end(), f.flag) == only.end()) continue;
    const bool list = mode == FlagMode::List || std::find(lists.begin(), lists.end(), f.flag) != lists.end();
    std::string help(f.help);
    if (f.flag == "gpus-per-node")
      help = "GPUs per node (default: the hardware profile's, 8 for h100-sxm)";
    else
      help += fmt::format(" (default {})", get_workload_field(defaults, f.flag));
    std::string type = f.numeric ? "INT" : "NAME";
    if (list) type = f.numeric ? "LIST|RANGE" : "NAMES|all";
    const std::string flag(f.flag);
    CLI::Option* opt = app->add_option("--" + flag, flags.values[flag], help)->type_name(type);
    flags.options.emplace_back(flag, opt);
  }
}

nlohmann::json read_json_file(const std::string& path, const std::string& field) {
  std::ifstream in(path);
  if (!in) throw InputError(field, fmt::format("cannot open '{}'", path));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(field, fmt::format("'{}' is not valid JSON: {}", path, e.what()));
  }
}

// The base workload: defaults, then --config, then single-valued flags. Returns whether
// gpus_per_node was set explicitly (otherwise it follows the hardware profile).
bool load_base(const std::string& config, Workload& w) {
  if (config.empty()) return false;
  const nlohmann::json j = read_json_file(config, "config");
  try {
    w = workload_from_json(j, Workload{});
  } catch (const InputError& e) {  // say which file the field is in
    std::string message = e.what();
    if (!e.field().empty() && message.rfind(e.field() + ": ", 0) == 0) message.erase(0, e.field().size() + 2);
    throw InputError(e.field(), fmt::format("{} (in --config '{}')", message, config));
  }
  return j.is_object() && j.contains("gpus_per_node");
}

HardwareProfile hardware_of(const std::string& name) {
  return name.empty() ? default_hardware() : load_hardware(name);
}

// Fails early (before minutes of simulation) when an output folder does not exist.
void check_output_path(const std::string& path, const std::string& field) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !fs::is_directory(parent, ec))
    throw InputError(field, fmt::format("cannot write '{}': folder '{}' does not exist", path, parent.string()));
  if (fs::is_directory(path, ec)) throw InputError(field, fmt::format("cannot write '{}': it is a folder", path));
}


// Writes every requested file atomically; if one fails, the ones already written are removed so an
// error never leaves a partial set behind.
void write_outputs(const std::vector<Output>& outputs) {
  std::vector<std::string> written;
  for (std::size_t i = 0; i < outputs.size(); ++i)
    for (std::size_t k = 0; k < i; ++k)
      if (!outputs[i].path.empty() && outputs[i].path == outputs[k].path)
        throw InputError(outputs[i].field, fmt::format("'{}' is also the --{} file", outputs[i].path, outputs[k].field));
  try {
    for (const Output& o : outputs) {
      if (o.path.empty()) continue;
      write_file_atomic(o.path, o.writer, o.field);
      written.push_back(o.path);
    }
  } catch (...) {
    for (const auto& p : written) std::remove(p.c_str());
    throw;
  }
}

std::function<void(std::ostream&)> text_writer(std::string text) {
  return [text = std::move(text)](std::ostream& os) { os << text; };
}
bool apply_workload_flags(const WorkloadFlags& flags, Workload& w) {
  bool gpn = false;
  for (const WorkloadField& f : workload_fields()) {
    const std::string flag(f.flag);
    if (!flags.given(flag)) continue;
    set_workload_field(w, flag, flags.values.at(flag));
    if (flag == "gpus-per-node") gpn = true;
  }
  return gpn;
}

int parse_args(CLI::App& app, int argc, char** argv, const std::string& tool) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::string where = tool;
    for (const CLI::App* sub : app.get_subcommands()) where += " " + sub->get_name();
    std::cerr << tool << ": error: " << e.what() << "\nRun '" << where << " --help' for the flags and examples.\n";
    return 2;
  }
  return -1;
}

int run_tool(const std::string& tool, const std::function<int()>& body) {
  try {
    return body();
  } catch (const InputError& e) {
    std::cerr << tool << ": error: " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << tool << ": error: out of memory (the input or the requested size is too large for this machine)\n";
    return 2;
  } catch (const std::logic_error& e) {  // InternalError: a broken invariant, a bug in cpscope
    std::cerr << tool << ": internal error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // a run that failed: a device, transport or I/O error
    std::cerr << tool << ": error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace cpscope::cli
