// A streaming JSON parser for large trace files: reads a ByteSource in 1 MiB chunks and calls a SAX
// handler (the subset of nlohmann's SAX interface the Kineto reader uses), without building a tree.
//
// Why not nlohmann::json::sax_parse: its lexer appends every character of every string to a token
// buffer one by one and validates UTF-8 per character, which capped the Kineto reader near 90 MB/s.
// Here a string without escapes is found with one tight scan of the chunk and appended at once, and
// UTF-8 is validated only where a byte >= 0x80 occurs. The grammar is strict RFC 8259 like nlohmann's:
// no NaN/Infinity, no trailing commas, no leading zeros, nothing after the document, and a number
// whose value overflows a double is an error.
//
// Handler calls (names as nlohmann's): null(), boolean(bool), number_integer(int64),
// number_unsigned(uint64), number_float(double, const std::string& text), string(std::string&),
// key(std::string&), start_object(size_t), end_object(), start_array(size_t), end_array(), and
// [[noreturn]] syntax_error(uint64 byte, const std::string& what) for malformed input.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "sim/trace/source.h"

namespace cpscope::trace {

class JsonReader {
 public:
  explicit JsonReader(ByteSource& src) : src_(src), buf_(1 << 20), p_(buf_.data()), end_(buf_.data()) {}

  // Byte offset of the next unread byte (of the decompressed data for gzip input).
  std::uint64_t position() const { return before_ + static_cast<std::uint64_t>(p_ - begin()); }

  template <class H>
  void parse(H& h);

 private:
  const char* begin() const { return buf_.data(); }
  // The next byte without consuming it, or -1 at the end of the input.
  int peek() {
    if (p_ == end_ && !refill()) return -1;
    return static_cast<unsigned char>(*p_);
  }
  int next() {
    const int c = peek();
    if (c >= 0) ++p_;
    return c;
  }
  bool refill() {
    before_ += static_cast<std::uint64_t>(end_ - begin());
    const std::size_t n = src_.read(buf_.data(), buf_.size());
    p_ = buf_.data();
    end_ = buf_.data() + n;
    return n > 0;
  }
  int skip_ws() {
    for (;;) {
      const int c = peek();
      if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return c;
      ++p_;
    }
  }

  template <class H>
  [[noreturn]] void fail(H& h, const std::string& what) {
    h.syntax_error(position(), what);
    std::abort();  // syntax_error throws
  }
  template <class H>
  void expect_literal(H& h, const char* word) {  // its first letter is consumed already
    for (const char* r = word + 1; *r; ++r)
      if (next() != *r) fail(h, std::string("invalid literal; expected '") + word + "'");
  }
  template <class H>
  void read_string(H& h, std::string& out);
  template <class H>
  void read_number(H& h);
  template <class H>
  void append_utf8_checked(H& h, const char* from, const char* to, std::string& out);

  ByteSource& src_;
  std::vector<char> buf_;
  const char* p_;    // next unread byte of buf_
  const char* end_;  // end of the bytes in buf_
  std::uint64_t before_ = 0;
  int utf8_pending_ = 0;  // continuation bytes a multi-byte UTF-8 sequence still needs
  std::string str_, num_;
};

template <class H>
void JsonReader::append_utf8_checked(H& h, const char* from, const char* to, std::string& out) {
  // Validates the multi-byte sequences of [from, to). A sequence may be cut by the end of a chunk:
  // utf8_pending_ carries how many continuation bytes are still due into the next segment.
  for (const char* q = from; q < to; ++q) {
    const auto c = static_cast<unsigned char>(*q);
    if (utf8_pending_ > 0) {
      if ((c & 0xC0) != 0x80) fail(h, "invalid UTF-8 sequence in a string");
      --utf8_pending_;
      continue;
    }
    if (c < 0x80) continue;
    const int len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    if (len == 0) fail(h, "invalid UTF-8 byte in a string");
    utf8_pending_ = len - 1;
  }
  out.append(from, to);
}

template <class H>
void JsonReader::read_string(H& h, std::string& out) {
  // The opening quote is consumed.
  out.clear();
  for (;;) {
    if (p_ == end_ && !refill()) fail(h, "unterminated string");
    const char* s = p_;
    bool high = false;
    while (p_ < end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"' || c == '\\' || c < 0x20) break;
      high |= c >= 0x80;
      ++p_;
    }
    if (high || utf8_pending_ > 0) {
      append_utf8_checked(h, s, p_, out);
    } else {
      out.append(s, p_);
    }
    if (p_ == end_) continue;  // the string goes on in the next chunk
    if (utf8_pending_ > 0) fail(h, "truncated UTF-8 sequence in a string");
    const auto c = static_cast<unsigned char>(*p_++);
    if (c == '"') return;
    if (c < 0x20) fail(h, "control character in a string (escape it)");
    // An escape.
    const int e = next();
    switch (e) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        auto hex4 = [&]() {
          std::uint32_t v = 0;
          for (int k = 0; k < 4; ++k) {
            const int d = next();
            v <<= 4;
            if (d >= '0' && d <= '9') v |= static_cast<std::uint32_t>(d - '0');
            else if (d >= 'a' && d <= 'f') v |= static_cast<std::uint32_t>(d - 'a' + 10);
            else if (d >= 'A' && d <= 'F') v |= static_cast<std::uint32_t>(d - 'A' + 10);
            else fail(h, "\\u must be followed by four hex digits");
          }
          return v;
        };
        std::uint32_t cp = hex4();
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (next() != '\\' || next() != 'u') fail(h, "a high surrogate must be followed by \\u and a low one");
          const std::uint32_t lo = hex4();
          if (lo < 0xDC00 || lo > 0xDFFF) fail(h, "invalid low surrogate");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          fail(h, "a low surrogate without a high one");
        }
        if (cp < 0x80) {
          out += static_cast<char>(cp);
        } else if (cp < 0x800) {
          out += static_cast<char>(0xC0 | (cp >> 6));
          out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
          out += static_cast<char>(0xE0 | (cp >> 12));
          out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
          out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
          out += static_cast<char>(0xF0 | (cp >> 18));
          out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
          out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
          out += static_cast<char>(0x80 | (cp & 0x3F));
        }
        break;
      }
      default:
        fail(h, "invalid escape in a string");
    }
  }
}

template <class H>
void JsonReader::read_number(H& h) {
  // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
  num_.clear();
  auto digits = [&]() {
    int n = 0;
    for (int c = peek(); c >= '0' && c <= '9'; c = peek(), ++n) {
      num_ += static_cast<char>(c);
      ++p_;
    }
    return n;
  };
  if (peek() == '-') {
    num_ += '-';
    ++p_;
  }
  const int first = peek();
  if (first == '0') {
    num_ += '0';
    ++p_;
    const int c = peek();
    if (c >= '0' && c <= '9') fail(h, "leading zero in a number");
  } else if (digits() == 0) {
    fail(h, "invalid number");
  }
  bool is_float = false;
  if (peek() == '.') {
    num_ += '.';
    ++p_;
    if (digits() == 0) fail(h, "a decimal point must be followed by digits");
    is_float = true;
  }
  if (const int c = peek(); c == 'e' || c == 'E') {
    num_ += 'e';
    ++p_;
    if (const int s = peek(); s == '+' || s == '-') {
      num_ += static_cast<char>(s);
      ++p_;
    }
    if (digits() == 0) fail(h, "an exponent must have digits");
    is_float = true;
  }
  if (!is_float) {
    errno = 0;
    char* e = nullptr;
    if (num_[0] == '-') {
      const long long v = std::strtoll(num_.c_str(), &e, 10);
      if (errno == 0) {
        h.number_integer(v);
        return;
      }
    } else {
      const unsigned long long v = std::strtoull(num_.c_str(), &e, 10);
      if (errno == 0) {
        if (v <= static_cast<unsigned long long>(std::numeric_limits<std::int64_t>::max()))
          h.number_integer(static_cast<std::int64_t>(v));
        else
          h.number_unsigned(v);
        return;
      }
    }
  }
  errno = 0;
  const double d = std::strtod(num_.c_str(), nullptr);
  if (errno == ERANGE && (d == std::numeric_limits<double>::infinity() || d == -std::numeric_limits<double>::infinity()))
    fail(h, "number overflows a double: " + num_);
  h.number_float(d, num_);
}

template <class H>
void JsonReader::parse(H& h) {
  enum class In : std::uint8_t { Object, Array };
  std::vector<In> stack;
  bool first_in_container = false;  // right after '[' or '{'
  int c = skip_ws();
  if (c < 0) fail(h, "empty input; expected a JSON value");
  for (;;) {
    // A value (or, inside an object, a "key": value).
    c = skip_ws();
    if (!stack.empty() && stack.back() == In::Object) {
      if (first_in_container && c == '}') {
        ++p_;
        stack.pop_back();
        h.end_object();
        goto after_value;
      }
      if (c != '"') fail(h, "expected a string key");
      ++p_;
      read_string(h, str_);
      h.key(str_);
      if (skip_ws() != ':') fail(h, "expected ':' after a key");
      ++p_;
      c = skip_ws();
    } else if (!stack.empty() && first_in_container && c == ']') {
      ++p_;
      stack.pop_back();
      h.end_array();
      goto after_value;
    }
    first_in_container = false;
    switch (c) {
      case '{':
        ++p_;
        stack.push_back(In::Object);
        h.start_object(static_cast<std::size_t>(-1));
        first_in_container = true;
        continue;
      case '[':
        ++p_;
        stack.push_back(In::Array);
        h.start_array(static_cast<std::size_t>(-1));
        first_in_container = true;
        continue;
      case '"':
        ++p_;
        read_string(h, str_);
        h.string(str_);
        break;
      case 't':
        ++p_;
        expect_literal(h, "true");
        h.boolean(true);
        break;
      case 'f':
        ++p_;
        expect_literal(h, "false");
        h.boolean(false);
        break;
      case 'n':
        ++p_;
        expect_literal(h, "null");
        h.null();
        break;
      default:
        if (c == '-' || (c >= '0' && c <= '9')) {
          read_number(h);
          break;
        }
        fail(h, c < 0 ? "unexpected end of input; expected a value" : "unexpected character; expected a value");
    }
  after_value:
    // After a value: ',' then the next one, or the container's end (possibly several), or the end.
    for (;;) {
      c = skip_ws();
      if (stack.empty()) {
        if (c >= 0) fail(h, "unexpected bytes after the end of the document");
        return;
      }
      const In in = stack.back();
      if (c == ',') {
        ++p_;
        break;
      }
      if (in == In::Object && c == '}') {
        ++p_;
        stack.pop_back();
        h.end_object();
        continue;
      }
      if (in == In::Array && c == ']') {
        ++p_;
        stack.pop_back();
        h.end_array();
        continue;
      }
      fail(h, c < 0 ? "unexpected end of input (truncated document)"
                    : in == In::Object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }
}

}  // namespace cpscope::trace
