// Byte sources for the streaming readers: a file read through zlib (gzip or plain, decided by zlib
// from the magic bytes) or a memory buffer (tests, fuzzing). Errors name the file and the byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace cpscope::trace {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to n bytes into buf; returns 0 at the end. Throws InputError on corrupt data.
  virtual std::size_t read(char* buf, std::size_t n) = 0;
  // A guess of the decompressed size in bytes (0 when unknown), to size buffers.
  virtual std::uint64_t size_hint() const { return 0; }
  // Whether positions count decompressed bytes (error messages say so).
  virtual bool compressed() const { return false; }
};

// Opens `path` through gzopen: gzip members are inflated incrementally, anything else passes through.
std::unique_ptr<ByteSource> open_file_source(const std::string& path);
std::unique_ptr<ByteSource> memory_source(const char* data, std::size_t size);

// True when the file starts with the gzip magic bytes 1f 8b.
bool is_gzip_file(const std::string& path);

}  // namespace cpscope::trace
