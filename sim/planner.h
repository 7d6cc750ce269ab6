// Planner: the library behind `cp-sim run|sweep|plan`: flag values (single, list or range) applied to a
// Workload, sweep expansion, plan enumeration over a cluster, simulation of each candidate, ranking,
// and the table/JSON/CSV reporters for many runs. Lives in libcpsim so tests call it without the CLI.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "sim/engine.h"
#include "sim/hardware.h"
#include "sim/report.h"
#include "sim/schedule.h"
#include "sim/workload.h"

namespace cpscope {

// ---- Workload fields as the CLI spells them ------------------------------------------------------

// One Workload field settable from a flag: `flag` is the flag without dashes ("kv-heads"), `json` the
// workload JSON key ("kv_heads"). Numeric fields take integers, enum fields a name.
struct WorkloadField {
  std::string_view flag;
  std::string_view json;
  bool numeric;
  std::string_view help;
};
// Every field, in the order the CLI lists them.
const std::vector<WorkloadField>& workload_fields();
const WorkloadField* find_workload_field(std::string_view flag);

// Parses one integer for `field`: decimal, optionally with a binary suffix k/K (x1024) or m/M
// (x1048576), e.g. "128k" = 131072. InputError(field) otherwise.
std::int64_t parse_int_value(std::string_view field, std::string_view text);
// Sets one field from one value; InputError naming the flag and the rule on a bad value.
void set_workload_field(Workload& w, std::string_view flag, std::string_view value);
// The canonical text of a field's value in w ("131072", "zigzag-ring").
std::string get_workload_field(const Workload& w, std::string_view flag);
// The names an enum field accepts, in declaration order ({"ring","zigzag-ring",...} for schedule).
std::vector<std::string> enum_field_names(std::string_view flag);

// ---- List and range syntax (sweep and plan) ------------------------------------------------------

// Numeric values: comma-separated items, each an integer or a range, inclusive of STOP when hit:
//   START:STOP        arithmetic, step 1
//   START:STOP:+STEP  arithmetic (STEP >= 1)
//   START:STOP:xFACTOR geometric (FACTOR >= 2, START >= 1)
// Duplicates are dropped, first occurrence kept. At most kMaxAxisValues values.
// Bad syntax: InputError(field, "range 'x:y' must be START:STOP[:+STEP|:xFACTOR]") and similar.
inline constexpr std::size_t kMaxAxisValues = 100000;
std::vector<std::int64_t> parse_int_values(std::string_view field, std::string_view text);
// Enum values: comma-separated names or "all" (every name, in declaration order).
std::vector<std::string> parse_enum_values(std::string_view field, std::string_view text);

// One swept flag and its values in canonical text.
struct SweepAxis {
  std::string field;                // flag name without dashes ("seq", "schedule")
  std::vector<std::string> values;  // canonical ("32768", "zigzag-ring")
};
// Parses `text` for the flag `field` (numeric or enum per workload_fields()).
SweepAxis parse_axis(std::string_view field, std::string_view text);

// ---- Running one workload -------------------------------------------------------------------------

struct SimulatedRun {
  RunResult result;
  Timeline timeline;  // empty unless asked for
  Schedule schedule;  // with the Timeline (a trace draws its send -> receive arrows from it); else empty
};
// validate → make_schedule → simulate → summarize. InputError for an invalid workload. The Timeline and
// the schedule are returned only when asked for (the summary comes from the engine's per-rank totals,
// identical to summarizing the Timeline). `sharing`: how the ranks share devices (a measured loopback or
// host-backend run, for validate); the default is one GPU per rank.
SimulatedRun simulate_workload(const Workload&, const HardwareProfile&, bool keep_timeline = false,
                               const DeviceSharing& sharing = {});

// ---- Progress callback shared by sweep and plan ---------------------------------------------------

// Called before each simulation with (index starting at 0, total, short description).
using ProgressFn = std::function<void(std::size_t, std::size_t, const std::string&)>;
// "zigzag-ring cp=16", "hybrid cp=16 U=4 balance=contiguous", "allgather cp=8 kv_groups=2 ...".
std::string describe(const Workload&);

// ---- Sweep ----------------------------------------------------------------------------------------

inline constexpr std::size_t kMaxSweepCombinations = 1000000;

struct SweepSpec {
  Workload base;
  std::vector<SweepAxis> axes;            // cartesian product, last axis varies fastest
  std::vector<std::string> hardware = {};  // names or paths; empty = {the default profile}
  // When true (the CLI sets it when neither a flag nor the config gave gpus_per_node), each
  // workload takes gpus_per_node from the hardware profile it runs on, unless an axis sets it.
  bool gpus_per_node_from_hardware = false;
};

// The cartesian product of the axes applied to `base` (values set in axis order). InputError when
// there are more than kMaxSweepCombinations.
std::vector<Workload> expand_sweep(const SweepSpec&);

struct Rejected {
  Workload workload;
  std::string hardware;
  std::string reason;  // invalid_reason() or the planner's own rule, with the numbers
};

struct SweepResult {
  std::vector<RunResult> runs;    // in expansion order (hardware outermost)
  std::vector<Rejected> invalid;  // in expansion order
  std::vector<std::string> varying;  // flags with more than one value (the table's key columns)
};

// Simulates every valid combination (hardware outermost, then expand_sweep() order). `ulysses` applies to
// hybrid and `kv_head_groups` to allgather only: other schedules run with 1, and a combination that
// becomes a repeat is simulated (and listed) once.
SweepResult run_sweep(const SweepSpec&, const ProgressFn& progress = {}, int jobs = 1);

// ---- Plan -----------------------------------------------------------------------------------------

enum class RankBy : std::uint8_t {
  StepTime,    // one CP group's step time, then exposed comm, then peak memory (the default)
  Throughput,  // cluster time per sequence = step time / dp, then exposed comm, then memory
};
RankBy parse_rank_by(std::string_view s, const std::string& field = "rank-by");
std::string_view to_string(RankBy);

inline constexpr double kDefaultReserveGiB = 40.0;

struct PlanSpec {
  // Model, sequence, dtype, mask, pass, dkv, tp, placement and gpus_per_node come from here; schedule,
  // cp, ulysses, balance, kv_head_groups and dp are enumerated.
  Workload base;
  std::int64_t gpus = 8;
  // Memory other than the attention layer's buffers (weights, optimizer state, other activations)
  // that must fit beside it: a candidate is dropped when its peak attention memory + reserve exceeds
  // the hardware's memory.
  Bytes reserve_bytes = static_cast<Bytes>(kDefaultReserveGiB * static_cast<double>(kGiB));
  std::vector<std::int64_t> cp_sizes;         // empty: every divisor of gpus / tp
  std::vector<ScheduleKind> schedules;        // empty: all five
  std::vector<std::int64_t> ulysses_sizes;    // hybrid U; empty: every 1 < U < N dividing N
  std::vector<Balance> balances;              // allgather and hybrid; empty: zigzag, contiguous
  std::vector<std::int64_t> kv_head_groups = {1, 2, 4};  // allgather pipelining variants
  RankBy rank_by = RankBy::StepTime;
};

struct PlanEntry {
  RunResult result;
  Bytes peak_memory_bytes = 0;  // attention layer, max over ranks
};

struct PlanResult {
  std::string hardware;
  Bytes hardware_memory_bytes = 0;
  std::vector<PlanEntry> ranked;  // best first
  std::vector<Rejected> dropped;  // enumeration order
  std::size_t candidates = 0;     // ranked + dropped
};

// The candidates plan considers, before any check (enumeration order: cp ascending, then schedule in
// all_schedules() order, then U ascending, balance, kv_head_groups). cp = 1 gives one candidate, the
// single-GPU baseline (ring, contiguous), whatever `schedules` says. dp = gpus / (cp·tp).
std::vector<Workload> enumerate_plan(const PlanSpec&);
// The planner's rules beyond validate(): cp·tp divides gpus; hybrid's U is a proper divisor of N
// that divides gpus_per_node (its all-to-all must stay inside one NVSwitch domain). Empty when fine.
std::string plan_reason(const PlanSpec&, const Workload&);
// Enumerate, drop what breaks a rule or does not fit in memory, simulate the rest, rank.
PlanResult run_plan(const PlanSpec&, const HardwareProfile&, const ProgressFn& progress = {},
                    int jobs = 1);

// ---- Reporters for many runs ----------------------------------------------------------------------

// Sweep: runs_table() of the runs, then the invalid combinations with their reasons.
std::string sweep_table(const SweepResult&);
// runs_json(runs, per_rank) plus "varying": [flags] and "invalid": [{"workload", "hardware", "reason"}].
nlohmann::json sweep_json(const SweepResult&, bool per_rank = false);
// runs_csv() columns plus ",status,reason"; the invalid combinations follow with empty metrics,
// status "invalid" and their reason.
std::string sweep_csv(const SweepResult&);

// Plan: the top `top` candidates, then the dropped count and reasons (all when verbose, else the first 5).
std::string plan_table(const PlanSpec&, const PlanResult&, std::size_t top = 10, bool verbose = false);
// runs_json() of the ranked runs (best first; each with "place", "dp", "time_per_sequence_ns",
// "description") with "schema": kPlanSchema, "gpus", "gpus_per_node", "reserve_bytes", "hardware",
// "hardware_memory_bytes", "rank_by", "base" (the workload), "candidates", and
// "dropped": [{"workload", "hardware", "reason", "description"}].
inline constexpr const char* kPlanSchema = "cpscope.plan/1";
nlohmann::json plan_json(const PlanSpec&, const PlanResult&, bool per_rank = false);
// runs_csv() columns plus ",time_per_sequence_ns,place,status,reason" (ranked: ok; then dropped).
std::string plan_csv(const PlanResult&);

}  // namespace cpscope
