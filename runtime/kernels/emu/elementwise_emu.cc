// runtime/kernels/elementwise.cu built for the CPU SIMT emulation (emu/simt.h): the same source, compiled as C++.
#include "runtime/kernels/elementwise.cu"  // NOLINT(bugprone-suspicious-include)
