// Reporters over one result type (measurement separate from reporting): console table, summary JSON,
// CSV, Chrome trace-event JSON (Perfetto UI). Files are written to a temp name and renamed.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "sim/analysis.h"
#include "sim/engine.h"
#include "sim/workload.h"

namespace cpscope {

inline constexpr const char* kProfileSchema = "cpscope.profile/1";

// One simulated (later: measured) run of one workload.
struct RunResult {
  Workload workload;
  std::string hardware;   // profile name
  std::string source = "simulated";  // "simulated" | "measured"
  Summary summary;
  SimStats stats;
  DeviceSharing sharing;  // how the run's ranks shared devices (measured: loopback and host backend)
};

// {"schema": kProfileSchema, "source", "workload": {...}, "hardware", "step_time_ns", "total_flops",
//  "achieved_tflops_per_gpu", "max_exposed_comm_ns", "max_peak_memory_bytes",
//  "device_sharing": {"ranks_per_device", "compute_slots", "local_transfers" (when true)} (only when the run
//  was not one GPU per rank over real links), "achieved_tflops_per_device" (only when ranks shared devices:
//  achieved_tflops_per_gpu is then per rank),
//  "ranks": [{"rank","compute_ns","comm_ns","exposed_comm_ns","idle_ns","peak_memory_bytes",
//             "bytes_sent","flops","span_ns"}...]}
nlohmann::json summary_json(const RunResult&);
// The "device_sharing" object of a profile (summary_json writes it when sharing.recorded()).
nlohmann::json sharing_json(const DeviceSharing&);
// A readable multi-line table: the config line, step time, TFLOP/s per GPU, then one row per rank
// (ranks beyond `max_rows` are summarised by min/median/max).
std::string summary_table(const RunResult&, int max_rows = 16);
// Chrome trace-event JSON: one process per rank ("rank 3"), one thread per stream, ops as complete
// ("X") events in microseconds with args {op_id, step, pass, bytes, flops}; streamed, not built in memory.
void write_chrome_trace(std::ostream&, const Timeline&);
// As above, plus a flow arrow from each point-to-point send to its receive (matched by the schedule
// the timeline ran: op ids per rank), so Perfetto shows which transfer fed which step.
void write_chrome_trace(std::ostream&, const Timeline&, const Schedule* schedule);

// Writes `content` (or what `writer` produces) to `path` via a temp file in the same folder and an
// atomic rename; on any failure the temp file is removed and InputError("path") is thrown.
void write_file_atomic(const std::string& path, const std::string& content);
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer);

// --- Added by the report area (additions only; the declarations above are unchanged). ---

// As above, but the InputError names `field` (e.g. the flag "json" or "trace") instead of "path".
// The message carries the path and the OS reason: "json: cannot write 'out/s.json': No such file or
// directory". An exception thrown by `writer` itself propagates unchanged (after the temp is removed).
void write_file_atomic(const std::string& path, const std::string& content, const std::string& field);
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer,
                       const std::string& field);

// Many runs (sweep, plan). One row per run, columns in this order:
//  schedule,cp,ulysses,batch,seq,heads,kv_heads,head_dim,dtype,mask,pass,balance,dkv,kv_head_groups,
//  gpus_per_node,tp,dp,placement,hardware,source,step_time_ns,total_flops,max_exposed_comm_ns,
//  max_peak_memory_bytes,achieved_tflops_per_gpu
// Enum columns use the to_string names; integers are exact; fields with , " or newlines are quoted.
std::string runs_csv(const std::vector<RunResult>&);
// {"schema": kRunsSchema, "runs": [summary_json(run) for each run]}; with per_rank == false the
// "ranks" array of every run is left out (a sweep of 1024-rank runs stays small).
inline constexpr const char* kRunsSchema = "cpscope.runs/1";
nlohmann::json runs_json(const std::vector<RunResult>&, bool per_rank = false);
// A readable aligned table of many runs: one row per run with its config, step time, TFLOP/s per GPU,
// max exposed comm (and % of step) and max peak memory.
std::string runs_table(const std::vector<RunResult>&);

// Human-readable quantities as the tables show them: "850 ns", "12.35 µs", "1.235 ms", "2.000 s";
// "512 B", "1.5 KiB", "12.0 MiB", "1.25 GiB".
std::string format_nanos(Nanos);
std::string format_bytes(Bytes);

}  // namespace cpscope
