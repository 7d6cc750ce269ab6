// CPS_LAUNCH(kernel, grid, block, smem_bytes, stream, args...): a kernel launch that also compiles for the CPU
// SIMT emulation (emu/simt.h), where the grid runs when its stream gets to it. `kernel` must be one token (take the
// address of a template instance first: auto* k = &my_kernel<T, D>).
#pragma once

#if defined(CPS_SIMT_EMU)
#include <cuda_runtime_api.h>  // the emulation's stand-in (runtime/kernels/emu/cuda/): streams queue work

#include "runtime/kernels/emu/simt.h"
// A launch asking for more dynamic shared memory than its kernel opted into is refused, as on the GPU.
#define CPS_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                                \
  static_cast<void>(cps_emu_launch_refused(reinterpret_cast<const void*>(kernel), (smem_bytes)) ||          \
                    (cps_emu_enqueue((stream), [=] {                                                          \
                       ::cpscope::simt::launch((grid), (block), (smem_bytes), [=] { (*(kernel))(__VA_ARGS__); }); \
                     }),                                                                                      \
                     false))
#else
#define CPS_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
#endif
