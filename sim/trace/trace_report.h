// Reporters for cp-trace's analyses (measurement separate from reporting): JSON, CSV and a readable
// table over SummaryReport, StepsReport and CompareReport.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "sim/trace/compare.h"
#include "sim/trace/trace.h"
#include "sim/trace/trace_analysis.h"

namespace cpscope::trace {

inline constexpr const char* kTraceSummarySchema = "cpscope.trace-summary/1";
inline constexpr const char* kTraceStepsSchema = "cpscope.trace-steps/1";
inline constexpr const char* kTraceCompareSchema = "cpscope.trace-compare/1";

// {"schema", "format", "origin_ns", "wall_ns", "warnings": [...],
//  "ranks": [{"rank","file","pid","device","gpu","span_ns","busy_ns","idle_ns","compute_ns","attention_ns",
//             "comm_ns","memory_ns","exposed_comm_ns","overlap" (null without comm),"kernels"}],
//  "top_kernels": [{"name","class","count","total_ns","max_ns"}]}
nlohmann::json summary_json(const Trace&, const TraceSummary&);
// rank,span_ns,busy_ns,idle_ns,compute_ns,attention_ns,comm_ns,memory_ns,exposed_comm_ns,overlap,kernels
std::string summary_csv(const TraceSummary&);
std::string summary_table(const Trace&, const TraceSummary&);

// {"schema", "pattern", "steps": [{"label","rank","ranges","start_ns", metrics as above}]}
nlohmann::json steps_json(const StepsReport&);
// label,rank,ranges,start_ns,span_ns,busy_ns,idle_ns,compute_ns,attention_ns,comm_ns,memory_ns,exposed_comm_ns,overlap
std::string steps_csv(const StepsReport&);
std::string steps_table(const StepsReport&);

// {"schema", "basis", "wall_a_ns", "wall_b_ns", "ops": [{"name","count_a","count_b","total_a_ns",
//  "total_b_ns","mean_a_ns","mean_b_ns","diff_mean_ns","ratio"}], "steps": [{"step","span_a_ns","span_b_ns",
//  "diff_ns","ratio"}]}; ratio = B / A, null when A is 0 or a side lacks the row.
nlohmann::json compare_json(const CompareReport&);
// section,name,count_a,count_b,a_ns,b_ns,diff_ns,ratio  (section "op": mean durations; "step": spans;
// "wall": the whole timeline)
std::string compare_csv(const CompareReport&);
std::string compare_table(const CompareReport&, std::size_t max_rows = 40);

}  // namespace cpscope::trace
