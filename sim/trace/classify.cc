// Kernel classification by regex. std::regex is slow, so readers classify each distinct name once.
#include "sim/trace/classify.h"

#include "sim/error.h"

namespace cpscope::trace {

std::string_view to_string(KernelClass c) {
  switch (c) {
    case KernelClass::Comm: return "comm";
    case KernelClass::Attention: return "attention";
    case KernelClass::OtherCompute: return "other_compute";
    case KernelClass::Memory: return "memory";
  }
  throw InternalError("unknown KernelClass");
}

IntervalKind interval_kind(KernelClass c) {
  switch (c) {
    case KernelClass::Comm: return IntervalKind::Comm;
    case KernelClass::Memory: return IntervalKind::Memory;
    case KernelClass::Attention:
    case KernelClass::OtherCompute: return IntervalKind::Compute;
  }
  throw InternalError("unknown KernelClass");
}

std::regex Classifier::compile(const std::string& pattern, const std::string& field) {
  try {
    return std::regex(pattern, std::regex::ECMAScript | std::regex::icase | std::regex::optimize);
  } catch (const std::regex_error& e) {
    throw InputError(field, "'" + pattern + "' is not a valid regular expression (ECMAScript): " + e.what());
  }
}

Classifier::Classifier(const ClassifierPatterns& patterns)
    : patterns_(patterns),
      comm_(compile(patterns.comm, "comm")),
      attention_(compile(patterns.attention, "attention")),
      memory_(compile(patterns.memory, "memory")) {}

KernelClass Classifier::classify(std::string_view name) const {
  // An empty pattern matches everything under std::regex_search; treat it as "match nothing" so
  // --comm '' switches a class off instead of swallowing every kernel.
  auto match = [&](const std::regex& re, const std::string& pattern) {
    return !pattern.empty() && std::regex_search(name.begin(), name.end(), re);
  };
  if (match(comm_, patterns_.comm)) return KernelClass::Comm;
  if (match(memory_, patterns_.memory)) return KernelClass::Memory;
  if (match(attention_, patterns_.attention)) return KernelClass::Attention;
  return KernelClass::OtherCompute;
}

}  // namespace cpscope::trace
