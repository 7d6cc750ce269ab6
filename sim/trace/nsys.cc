// Nsight Systems SQLite reader. Queries are built from the columns the file actually has (PRAGMA
// table_info), so an older or newer export degrades feature by feature instead of failing a query.
#include "sim/trace/nsys.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "sim/error.h"

namespace cpscope::trace {
namespace {

constexpr int kNvtxPushPopRange = 59;
constexpr int kNvtxStartEndRange = 60;
constexpr int kNvtxDomainCreate = 75;

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// pid of an nsys globalPid / globalTid: bits 24..47 (the layout nsys documents for its exports).
std::int64_t pid_of(std::int64_t global) { return (global >> 24) & 0xFFFFFF; }

const char* copy_kind_name(std::int64_t kind) {
  // CUpti_ActivityMemcpyKind.
  switch (kind) {
    case 1: return "HtoD";
    case 2: return "DtoH";
    case 3: return "HtoA";
    case 4: return "AtoH";
    case 5: return "AtoA";
    case 6: return "AtoD";
    case 7: return "DtoA";
    case 8: return "DtoD";
    case 9: return "HtoH";
    case 10: return "PtoP";
    default: return "unknown";
  }
}

class Reader {
 public:
  Reader(sqlite3* db, std::string where, std::int64_t order, const Classifier& cls, const NsysOptions& opt)
      : db_(db), where_(std::move(where)), order_(order), cls_(cls), opt_(opt) {}

  Trace read() {
    // The first statement is where a non-database file fails ("file is not a database").
    std::set<std::string> tables;
    {
      Stmt s = prepare("SELECT name FROM sqlite_master WHERE type IN ('table','view')");
      while (step(s.get(), "sqlite_master")) tables.insert(text(s.get(), 0));
    }
    auto has = [&](const char* t) { return tables.count(t) > 0; };
    const bool kernels = has("CUPTI_ACTIVITY_KIND_KERNEL"), memcpy = has("CUPTI_ACTIVITY_KIND_MEMCPY"),
               memset = has("CUPTI_ACTIVITY_KIND_MEMSET");
    if (!kernels && !memcpy && !memset)
      throw InputError("", fmt::format("{}: no GPU activity: none of the tables CUPTI_ACTIVITY_KIND_KERNEL, "
                                       "CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET is present (capture "
                                       "with `nsys profile --trace cuda` and export with `nsys export --type sqlite`)",
                                       where_));
    if (has("StringIds")) {
      Stmt s = prepare("SELECT id, value FROM StringIds");
      while (step(s.get(), "StringIds")) strings_[sqlite3_column_int64(s.get(), 0)] = text(s.get(), 1);
    } else {
      warn("no StringIds table: kernels are named by their string id");
    }
    load_gpu_names(has("TARGET_INFO_CUDA_DEVICE"), has("TARGET_INFO_GPU"));
    if (kernels) read_kernels();
    else warn("no CUPTI_ACTIVITY_KIND_KERNEL table: no kernels");
    if (memcpy) read_copies("CUPTI_ACTIVITY_KIND_MEMCPY", true);
    if (memset) read_copies("CUPTI_ACTIVITY_KIND_MEMSET", false);
    if (has("NVTX_EVENTS")) read_nvtx(has("CUPTI_ACTIVITY_KIND_RUNTIME"));
    for (RankSource& r : trace_.ranks) {
      auto it = gpu_names_.find({r.pid, r.device});
      if (it != gpu_names_.end()) r.gpu = it->second;
    }
    trace_.timeline.num_ranks = static_cast<std::int32_t>(trace_.ranks.size());
    trace_.format = "nsys-sqlite";
    return std::move(trace_);
  }

 private:
  Stmt prepare(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) fail("query", sql);
    return Stmt(s);
  }
  bool step(sqlite3_stmt* s, const char* table) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("reading", table);
  }
  [[noreturn]] void fail(const char* what, const std::string& detail) {
    const int code = sqlite3_errcode(db_);
    if (code == SQLITE_NOTADB)
      throw InputError("", fmt::format("{}: not an SQLite database (expected `nsys export --type sqlite` output)", where_));
    throw InputError("", fmt::format("{}: SQLite error {} {}: {}", where_, what, detail, sqlite3_errmsg(db_)));
  }
  std::string text(sqlite3_stmt* s, int col) {
    const unsigned char* t = sqlite3_column_text(s, col);
    return t ? std::string(reinterpret_cast<const char*>(t), static_cast<std::size_t>(sqlite3_column_bytes(s, col)))
             : std::string();
  }
  void warn(const std::string& w) { trace_.warnings.push_back(where_ + ": " + w); }

  std::set<std::string> columns(const std::string& table) {
    std::set<std::string> cols;
    Stmt s = prepare("PRAGMA table_info(\"" + table + "\")");
    while (step(s.get(), table.c_str())) cols.insert(text(s.get(), 1));
    return cols;
  }
  // "col" when the table has it, else the fallback expression (a warning says what is off).
  std::string column_or(const std::set<std::string>& cols, const std::string& table, const std::string& col,
                        const std::string& fallback, const std::string& effect) {
    if (cols.count(col)) return "\"" + col + "\"";
    if (!effect.empty()) warn(fmt::format("{} has no column {}: {}", table, col, effect));
    return fallback;
  }
  void require(const std::set<std::string>& cols, const std::string& table, const char* col) {
    if (!cols.count(col))
      throw InputError("", fmt::format("{}: table {} has no column '{}' (not an nsys SQLite export?)", where_, table, col));
  }

  void load_gpu_names(bool cuda_device, bool gpu) {
    if (!cuda_device || !gpu) {
      warn("no TARGET_INFO_CUDA_DEVICE / TARGET_INFO_GPU tables: GPU names unknown");
      return;
    }
    const auto dc = columns("TARGET_INFO_CUDA_DEVICE"), gc = columns("TARGET_INFO_GPU");
    if (!dc.count("cudaId") || !dc.count("pid") || !dc.count("gpuId") || !gc.count("id") || !gc.count("name")) {
      warn("TARGET_INFO_CUDA_DEVICE / TARGET_INFO_GPU lack cudaId, pid, gpuId, id or name: GPU names unknown");
      return;
    }
    Stmt s = prepare("SELECT d.pid, d.cudaId, g.name FROM TARGET_INFO_CUDA_DEVICE AS d JOIN TARGET_INFO_GPU AS g "
                     "ON d.gpuId = g.id");
    while (step(s.get(), "TARGET_INFO_GPU"))
      gpu_names_[{sqlite3_column_int64(s.get(), 0), sqlite3_column_int64(s.get(), 1)}] = text(s.get(), 2);
  }

  std::int32_t local_rank(std::int64_t pid, std::int64_t device) {
    auto [it, inserted] = rank_of_.try_emplace({pid, device}, 0);
    if (inserted) {
      it->second = static_cast<std::int32_t>(trace_.ranks.size());
      trace_.ranks.push_back({where_, order_, pid, device, ""});
    }
    return it->second;
  }
  std::int32_t stream_of(std::int64_t stream) {
    auto it = streams_.find(stream);
    if (it != streams_.end()) return it->second;
    const std::int32_t id = stream_index(trace_.timeline, fmt::format("stream {}", stream));
    streams_.emplace(stream, id);
    return id;
  }
  std::string string_id(std::int64_t id) {
    auto it = strings_.find(id);
    return it != strings_.end() ? it->second : fmt::format("string#{}", id);
  }

  // start, end (checked), then the caller's columns from index 2.
  bool row_times(sqlite3_stmt* s, const char* table, Nanos& start, Nanos& end) {
    if (sqlite3_column_type(s, 0) == SQLITE_NULL || sqlite3_column_type(s, 1) == SQLITE_NULL)
      throw InputError("", fmt::format("{}: {} row {}: 'start' or 'end' is NULL", where_, table,
                                       sqlite3_column_int64(s, 2)));
    start = sqlite3_column_int64(s, 0);
    end = sqlite3_column_int64(s, 1);
    if (start == 0 && end == 0) {  // CUPTI: timestamps could not be collected
      ++untimed_;
      return false;
    }
    if (end < start)
      throw InputError("", fmt::format("{}: {} row {}: end {} is before start {} (a negative duration)", where_, table,
                                       sqlite3_column_int64(s, 2), end, start));
    return true;
  }

  // Shared columns of every activity table: start, end, rowid, deviceId, streamId, globalPid, correlationId.
  std::string activity_columns(const std::set<std::string>& cols, const std::string& table) {
    require(cols, table, "start");
    require(cols, table, "end");
    return fmt::format("\"start\", \"end\", rowid, {}, {}, {}, {}",
                       column_or(cols, table, "deviceId", "0", "every row on device 0"),
                       column_or(cols, table, "streamId", "0", "every row on stream 0"),
                       column_or(cols, table, "globalPid", "0", "every row in one process"),
                       column_or(cols, table, "correlationId", "-1", "NVTX ranges cannot be projected onto the GPU"));
  }

  void add(sqlite3_stmt* s, Nanos start, Nanos end, std::uint32_t name, IntervalKind kind, Bytes bytes) {
    const std::int64_t pid = pid_of(sqlite3_column_int64(s, 5));
    Interval iv;
    iv.rank = local_rank(pid, sqlite3_column_int64(s, 3));
    iv.stream = stream_of(sqlite3_column_int64(s, 4));
    iv.name = name;
    iv.kind = kind;
    iv.start = start;
    iv.end = end;
    iv.bytes = bytes;
    const std::int64_t corr = sqlite3_column_int64(s, 6);
    if (corr >= 0) by_correlation_[{pid, corr}].push_back(trace_.timeline.intervals.size());
    trace_.timeline.intervals.push_back(iv);
  }

  void read_kernels() {
    const std::string table = "CUPTI_ACTIVITY_KIND_KERNEL";
    const auto cols = columns(table);
    const bool has_short = cols.count("shortName") > 0, has_demangled = cols.count("demangledName") > 0;
    if (!has_short && !has_demangled)
      throw InputError("", fmt::format("{}: {} has neither shortName nor demangledName", where_, table));
    const bool use_demangled = has_demangled && (opt_.demangled_names || !has_short);
    const char* primary = use_demangled ? "demangledName" : "shortName";
    const char* other = use_demangled ? (has_short ? "shortName" : nullptr) : (has_demangled ? "demangledName" : nullptr);
    Stmt s = prepare(fmt::format("SELECT {}, \"{}\", {} FROM {}", activity_columns(cols, table), primary,
                                 other ? fmt::format("\"{}\"", other) : "-1", table));
    // Classify each (name id, other name id) once: the primary name, and the other one when the primary
    // says only "other compute" (a short name like "kernel" hides what the demangled one tells).
    std::map<std::pair<std::int64_t, std::int64_t>, std::pair<std::uint32_t, IntervalKind>> cache;
    while (step(s.get(), table.c_str())) {
      Nanos start, end;
      if (!row_times(s.get(), table.c_str(), start, end)) continue;
      const std::int64_t id = sqlite3_column_int64(s.get(), 7), alt = sqlite3_column_int64(s.get(), 8);
      auto [it, inserted] = cache.try_emplace({id, alt});
      if (inserted) {
        const std::string name = string_id(id);
        KernelClass c = cls_.classify(name);
        if (c == KernelClass::OtherCompute && alt >= 0) c = cls_.classify(string_id(alt));
        it->second = {trace_.timeline.intern(name), interval_kind(c)};
      }
      add(s.get(), start, end, it->second.first, it->second.second, 0);
    }
  }

  void read_copies(const std::string& table, bool is_memcpy) {
    const auto cols = columns(table);
    const std::string bytes = column_or(cols, table, "bytes", "0", "sizes unknown");
    const std::string kind = is_memcpy ? column_or(cols, table, "copyKind", "0", "") : "0";
    Stmt s = prepare(fmt::format("SELECT {}, {}, {} FROM {}", activity_columns(cols, table), bytes, kind, table));
    std::map<std::int64_t, std::uint32_t> names;
    while (step(s.get(), table.c_str())) {
      Nanos start, end;
      if (!row_times(s.get(), table.c_str(), start, end)) continue;
      const std::int64_t k = sqlite3_column_int64(s.get(), 8);
      auto [it, inserted] = names.try_emplace(k, 0);
      if (inserted)
        it->second = trace_.timeline.intern(is_memcpy ? fmt::format("Memcpy {}", copy_kind_name(k)) : "Memset");
      add(s.get(), start, end, it->second, IntervalKind::Memory, sqlite3_column_int64(s.get(), 7));
    }
  }

  void read_nvtx(bool has_runtime) {
    const std::string table = "NVTX_EVENTS";
    const auto cols = columns(table);
    if (!cols.count("start") || !cols.count("end") || !cols.count("eventType")) {
      warn("NVTX_EVENTS lacks start, end or eventType: no NVTX ranges");
      return;
    }
    const std::string text_col = column_or(cols, table, "text", "NULL", "");
    const std::string text_id = column_or(cols, table, "textId", "NULL", "");
    const std::string domain = column_or(cols, table, "domainId", "0", "");
    const std::string tid = column_or(cols, table, "globalTid", "0", "ranges cannot be tied to a process");
    if (text_col == "NULL" && text_id == "NULL") warn("NVTX_EVENTS has neither text nor textId: ranges are unnamed");

    std::map<std::int64_t, std::uint32_t> domains;
    {
      Stmt s = prepare(fmt::format("SELECT {}, {} FROM NVTX_EVENTS WHERE eventType = {}", domain, text_col,
                                   kNvtxDomainCreate));
      while (step(s.get(), "NVTX_EVENTS")) domains[sqlite3_column_int64(s.get(), 0)] = trace_.timeline.intern(text(s.get(), 1));
    }
    struct CpuRange {
      Nanos start, end;
      std::int64_t tid;
      std::uint32_t name, domain;
    };
    std::vector<CpuRange> cpu;
    {
      Stmt s = prepare(fmt::format("SELECT \"start\", \"end\", {}, {}, {}, {} FROM NVTX_EVENTS WHERE eventType IN ({}, {}) "
                                   "AND \"end\" IS NOT NULL AND \"start\" IS NOT NULL",
                                   text_col, text_id, domain, tid, kNvtxPushPopRange, kNvtxStartEndRange));
      std::uint32_t empty = trace_.timeline.intern("");
      while (step(s.get(), "NVTX_EVENTS")) {
        const Nanos start = sqlite3_column_int64(s.get(), 0), end = sqlite3_column_int64(s.get(), 1);
        if (end < start) {
          ++inverted_nvtx_;
          continue;
        }
        std::string name = sqlite3_column_type(s.get(), 2) != SQLITE_NULL ? text(s.get(), 2)
                           : sqlite3_column_type(s.get(), 3) != SQLITE_NULL ? string_id(sqlite3_column_int64(s.get(), 3))
                                                                            : std::string();
        auto d = domains.find(sqlite3_column_int64(s.get(), 4));
        cpu.push_back({start, end, sqlite3_column_int64(s.get(), 5), trace_.timeline.intern(name),
                       d != domains.end() ? d->second : empty});
      }
    }
    if (inverted_nvtx_ > 0) warn(fmt::format("{} NVTX ranges end before they start: skipped", inverted_nvtx_));
    if (cpu.empty()) return;
    const auto rcols = has_runtime ? columns("CUPTI_ACTIVITY_KIND_RUNTIME") : std::set<std::string>{};
    if (!has_runtime || !rcols.count("start") || !rcols.count("globalTid") || !rcols.count("correlationId") ||
        by_correlation_.empty()) {
      warn("no CUPTI_ACTIVITY_KIND_RUNTIME launches to correlate: NVTX ranges keep their CPU times");
      for (const CpuRange& r : cpu)
        for (std::size_t k = 0; k < trace_.ranks.size(); ++k)
          if (trace_.ranks[k].pid == pid_of(r.tid))
            trace_.ranges.push_back({static_cast<std::int32_t>(k), r.name, r.domain, r.start, r.end});
      return;
    }
    // Launches per thread, by time; a range's launches are a contiguous slice.
    std::unordered_map<std::int64_t, std::vector<std::pair<Nanos, std::int64_t>>> launches;
    {
      Stmt s = prepare("SELECT \"start\", globalTid, correlationId FROM CUPTI_ACTIVITY_KIND_RUNTIME");
      while (step(s.get(), "CUPTI_ACTIVITY_KIND_RUNTIME"))
        launches[sqlite3_column_int64(s.get(), 1)].push_back({sqlite3_column_int64(s.get(), 0), sqlite3_column_int64(s.get(), 2)});
    }
    for (auto& [t, v] : launches) std::sort(v.begin(), v.end());
    std::size_t unprojected = 0;
    for (const CpuRange& r : cpu) {
      auto lt = launches.find(r.tid);
      std::map<std::int32_t, std::pair<Nanos, Nanos>> env;  // rank -> GPU envelope
      if (lt != launches.end()) {
        const auto& v = lt->second;
        auto it = std::lower_bound(v.begin(), v.end(), std::pair<Nanos, std::int64_t>{r.start, INT64_MIN});
        for (; it != v.end() && it->first <= r.end; ++it) {
          auto k = by_correlation_.find({pid_of(r.tid), it->second});
          if (k == by_correlation_.end()) continue;
          for (std::size_t idx : k->second) {
            const Interval& iv = trace_.timeline.intervals[idx];
            auto [e, inserted] = env.try_emplace(iv.rank, iv.start, iv.end);
            if (!inserted) e->second = {std::min(e->second.first, iv.start), std::max(e->second.second, iv.end)};
          }
        }
      }
      if (env.empty()) ++unprojected;
      for (const auto& [rank, se] : env) trace_.ranges.push_back({rank, r.name, r.domain, se.first, se.second});
    }
    if (unprojected > 0)
      warn(fmt::format("{} of {} NVTX ranges launched no GPU work: left out of GPU-side ranges", unprojected, cpu.size()));
  }

  sqlite3* db_;
  std::string where_;
  std::int64_t order_;
  const Classifier& cls_;
  NsysOptions opt_;
  Trace trace_;
  std::unordered_map<std::int64_t, std::string> strings_;
  std::map<std::pair<std::int64_t, std::int64_t>, std::string> gpu_names_;
  std::map<std::pair<std::int64_t, std::int64_t>, std::int32_t> rank_of_;
  std::unordered_map<std::int64_t, std::int32_t> streams_;
  std::map<std::pair<std::int64_t, std::int64_t>, std::vector<std::size_t>> by_correlation_;
  std::size_t untimed_ = 0, inverted_nvtx_ = 0;

 public:
  std::size_t untimed() const { return untimed_; }
};

Trace read_db(sqlite3* db, const std::string& where, std::int64_t order, const Classifier& cls, const NsysOptions& opt) {
  Reader reader(db, where, order, cls, opt);
  Trace t = reader.read();
  if (reader.untimed() > 0)
    t.warnings.push_back(fmt::format("{}: {} GPU activity rows without timestamps (start = end = 0): skipped", where,
                                     reader.untimed()));
  return t;
}

}  // namespace

bool is_sqlite_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[16] = {};
  in.read(magic, 16);
  return in.gcount() == 16 && std::memcmp(magic, "SQLite format 3", 16) == 0;
}

Trace read_nsys_file(const std::string& path, std::int64_t file_order, const Classifier& cls, const NsysOptions& opt) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  std::unique_ptr<sqlite3, DbCloser> db(raw);
  if (rc != SQLITE_OK)
    throw InputError("", fmt::format("{}: cannot open as SQLite: {}", path, raw ? sqlite3_errmsg(raw) : "out of memory"));
  return read_db(db.get(), path, file_order, cls, opt);
}

Trace read_nsys_memory(const unsigned char* data, std::size_t size, const std::string& where, const Classifier& cls,
                       const NsysOptions& opt) {
  sqlite3* raw = nullptr;
  if (sqlite3_open_v2(":memory:", &raw, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(raw);
    throw InternalError("cannot open an in-memory SQLite database");
  }
  std::unique_ptr<sqlite3, DbCloser> db(raw);
  // SQLite copies nothing: the buffer must outlive the connection, which it does (db dies first).
  if (sqlite3_deserialize(raw, "main", const_cast<unsigned char*>(data), static_cast<sqlite3_int64>(size),
                          static_cast<sqlite3_int64>(size), SQLITE_DESERIALIZE_READONLY) != SQLITE_OK)
    throw InputError("", fmt::format("{}: not an SQLite database", where));
  return read_db(db.get(), where, 0, cls, opt);
}

}  // namespace cpscope::trace
