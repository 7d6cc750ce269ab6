// Errors raised by libcpsim: invalid input names the field, the value and the rule it breaks.
#pragma once

#include <stdexcept>
#include <string>

namespace cpscope {

// A user-facing input error (config, flag, profile file). Tools map it to exit code 2.
// `field` is the dotted name the user wrote (e.g. "heads", "links.nvlink.bandwidth_GBps").
class InputError : public std::runtime_error {
 public:
  InputError(std::string field, const std::string& message)
      : std::runtime_error(field.empty() ? message : field + ": " + message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// A broken internal invariant (a bug in cpscope, never the user's input). Checks stay on in release.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

#define CPSCOPE_CHECK(cond, msg)                                                                  \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      throw ::cpscope::InternalError(std::string(__FILE__) + ":" + std::to_string(__LINE__) +     \
                                     ": check failed: " #cond ": " + std::string(msg));           \
  } while (0)

}  // namespace cpscope
