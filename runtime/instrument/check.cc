#include "runtime/instrument/check.h"

#include <cupti.h>

namespace cpscope::rt::instrument {

std::string cupti_result_string(int result) {
  const char* s = nullptr;
  if (cuptiGetResultString(static_cast<CUptiResult>(result), &s) == CUPTI_SUCCESS && s != nullptr) return s;
  return "CUPTI result " + std::to_string(result);
}

}  // namespace cpscope::rt::instrument
