// Stand-in for <cuda_bf16.h> under the SIMT emulation: the 16-bit types and conversions are in simt.h.
#pragma once

#include "runtime/kernels/emu/simt.h"
