// runtime/kernels/attention_fwd.cu built for the CPU SIMT emulation (emu/simt.h): the same source, compiled as C++.
#include "runtime/kernels/attention_fwd.cu"  // NOLINT(bugprone-suspicious-include)
