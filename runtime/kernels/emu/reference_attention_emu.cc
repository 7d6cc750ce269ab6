// runtime/kernels/reference_attention.cu built for the CPU SIMT emulation (emu/simt.h): the same source, compiled as C++.
#include "runtime/kernels/reference_attention.cu"  // NOLINT(bugprone-suspicious-include)
