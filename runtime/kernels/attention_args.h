// Host-side validation of the attention launch arguments (shared by the forward and backward launchers).
#pragma once

#include "runtime/kernels/attention.h"

#include <cstddef>

namespace cpscope::rt::kernels {

std::size_t dtype_bytes(DType dt);

// Throw std::invalid_argument (with file:line) when the arguments are inconsistent or unsupported; return
// false when the call covers no work at all (the launcher then returns without launching).
bool validate_fwd(const AttnFwdArgs& a);
bool validate_bwd(const AttnBwdArgs& a);

}  // namespace cpscope::rt::kernels
