// Stand-in for <cuda_runtime.h> under the SIMT emulation: the runtime API plus the device built-ins.
#pragma once

#include "cuda_runtime_api.h"
#include "runtime/kernels/emu/simt.h"
