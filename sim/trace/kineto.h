// PyTorch profiler (Kineto) trace JSON, plain or gzip, read as a stream: no document tree is built, so
// memory grows with the number of GPU events kept (64 bytes each), not with the file.
//
// Kept: complete events ("ph": "X") of cat kernel, gpu_memcpy, gpu_memset (older Kineto: Kernel,
// Memcpy, Memset) become intervals; gpu_user_annotation events become Ranges. ts/dur are microseconds,
// possibly fractional; they are converted from the number's text, so nanoseconds are exact. Every
// other event, and every unknown field, is skipped. The rank is distributedInfo.rank when present.
// When the header has baseTimeNanoseconds and the timestamps are relative to it, it is added.
#pragma once

#include <cstdint>
#include <string>

#include "sim/trace/classify.h"
#include "sim/trace/source.h"
#include "sim/trace/trace.h"

namespace cpscope::trace {

// `file_order` orders the file among others when it has no distributedInfo.rank. Throws InputError
// naming `where`, the byte position and the rule for malformed JSON, wrong types, missing ts/dur,
// negative or non-finite durations, and broken gzip data.
Trace read_kineto(ByteSource& in, const std::string& where, std::int64_t file_order, const Classifier&);
Trace read_kineto_file(const std::string& path, std::int64_t file_order, const Classifier&);

// "12.345" microseconds -> 12345 ns, exactly from the text (rounding half away from zero beyond ns).
// Returns false when the text is not a finite number in range of int64 nanoseconds.
bool micros_text_to_nanos(const std::string& text, Nanos& out);

}  // namespace cpscope::trace
