// zlib-backed file source: gzread inflates in the background of a 1 MiB buffer, so a multi-GB .json.gz
// never exists decompressed, in memory or on disk.
#include "sim/trace/source.h"

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "sim/error.h"

namespace cpscope::trace {
namespace {

class GzFileSource final : public ByteSource {
 public:
  explicit GzFileSource(const std::string& path) : path_(path) {
    std::error_code ec;
    file_size_ = std::filesystem::file_size(path, ec);
    if (ec) throw InputError("", fmt::format("{}: cannot open: {}", path, ec.message()));
    gz_ = gzopen(path.c_str(), "rb");
    if (gz_ == nullptr) throw InputError("", fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    gzbuffer(gz_, 1 << 20);
    compressed_ = is_gzip_file(path);
  }
  ~GzFileSource() override {
    if (gz_ != nullptr) gzclose(gz_);
  }
  std::size_t read(char* buf, std::size_t n) override {
    const int got = gzread(gz_, buf, static_cast<unsigned>(std::min<std::size_t>(n, 1u << 30)));
    int errnum = Z_OK;
    const char* msg = gzerror(gz_, &errnum);
    // A truncated member reads as a short read with Z_BUF_ERROR set, not as -1: check both.
    if (got < 0 || (got == 0 && errnum != Z_OK)) {
      throw InputError("", fmt::format("{}: broken gzip data after {} decompressed bytes: {}", path_, produced_,
                                       errnum == Z_ERRNO ? std::strerror(errno) : msg));
    }
    produced_ += static_cast<std::uint64_t>(got);
    return static_cast<std::size_t>(got);
  }
  // gzip traces of GPU kernels compress about 10x; a plain file is exactly its size.
  std::uint64_t size_hint() const override { return compressed_ ? file_size_ * 10 : file_size_; }
  bool compressed() const override { return compressed_; }

 private:
  std::string path_;
  gzFile gz_ = nullptr;
  std::uint64_t file_size_ = 0, produced_ = 0;
  bool compressed_ = false;
};

class MemorySource final : public ByteSource {
 public:
  MemorySource(const char* data, std::size_t size) : data_(data), size_(size) {}
  std::size_t read(char* buf, std::size_t n) override {
    const std::size_t k = std::min(n, size_ - pos_);
    std::memcpy(buf, data_ + pos_, k);
    pos_ += k;
    return k;
  }
  std::uint64_t size_hint() const override { return size_; }

 private:
  const char* data_;
  std::size_t size_, pos_ = 0;
};

}  // namespace

std::unique_ptr<ByteSource> open_file_source(const std::string& path) { return std::make_unique<GzFileSource>(path); }
std::unique_ptr<ByteSource> memory_source(const char* data, std::size_t size) {
  return std::make_unique<MemorySource>(data, size);
}

bool is_gzip_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char magic[2] = {0, 0};
  in.read(reinterpret_cast<char*>(magic), 2);
  return in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

}  // namespace cpscope::trace
