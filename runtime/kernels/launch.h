// CPS_LAUNCH(kernel, grid, block, smem_bytes, stream, args...): a kernel launch that also compiles for the CPU
// SIMT emulation (emu/simt.h), where it runs the grid at once. `kernel` must be a single token (take the
// address of a template instance first: auto* k = &my_kernel<T, D>).
#pragma once

#if defined(CPS_SIMT_EMU)
#include "runtime/kernels/emu/simt.h"
#define CPS_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                              \
  do {                                                                                        \
    (void)(stream);                                                                           \
    ::cpscope::simt::launch((grid), (block), (smem_bytes), [=] { (*(kernel))(__VA_ARGS__); }); \
  } while (0)
#else
#define CPS_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
#endif
