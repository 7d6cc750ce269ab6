// The streaming JSON parser of the trace readers: exact SAX events, strict grammar, UTF-8 checks,
// and strings and numbers that cross the 1 MiB chunk boundary.
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "sim/trace/json_scan.h"
#include "sim/trace/source.h"

namespace cpscope::trace {
namespace {

// Records every event as text: "{", "}", "[", "]", "k:name", "s:value", "i:12", "u:...", "f:text", "n", "b1".
struct Recorder {
  std::vector<std::string> ev;
  void null() { ev.push_back("n"); }
  void boolean(bool b) { ev.push_back(b ? "b1" : "b0"); }
  void number_integer(std::int64_t v) { ev.push_back("i:" + std::to_string(v)); }
  void number_unsigned(std::uint64_t v) { ev.push_back("u:" + std::to_string(v)); }
  void number_float(double, const std::string& text) { ev.push_back("f:" + text); }
  void string(std::string& s) { ev.push_back("s:" + s); }
  void key(std::string& k) { ev.push_back("k:" + k); }
  void start_object(std::size_t) { ev.push_back("{"); }
  void end_object() { ev.push_back("}"); }
  void start_array(std::size_t) { ev.push_back("["); }
  void end_array() { ev.push_back("]"); }
  [[noreturn]] void syntax_error(std::uint64_t pos, const std::string& what) {
    throw std::runtime_error("byte " + std::to_string(pos) + ": " + what);
  }
};

std::vector<std::string> parse(const std::string& text) {
  auto src = memory_source(text.data(), text.size());
  JsonReader r(*src);
  Recorder rec;
  r.parse(rec);
  return rec.ev;
}

std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(JsonScan, EventsOfADocument) {
  const auto ev = parse(R"( {"a": [1, -2, 3.5, 1e3, true, false, null, "x"], "b": {}, "c": []} )");
  const std::vector<std::string> want = {"{", "k:a", "[", "i:1", "i:-2", "f:3.5", "f:1e3", "b1", "b0", "n", "s:x",
                                         "]", "k:b", "{", "}", "k:c", "[", "]", "}"};
  EXPECT_EQ(ev, want);
}

TEST(JsonScan, IntegersBeyondInt64) {
  EXPECT_EQ(parse("18446744073709551615"), std::vector<std::string>{"u:18446744073709551615"});
  EXPECT_EQ(parse("-9223372036854775808"), std::vector<std::string>{"i:-9223372036854775808"});
  EXPECT_EQ(parse("18446744073709551616"), std::vector<std::string>{"f:18446744073709551616"});
}

TEST(JsonScan, EscapesAndUnicode) {
  EXPECT_EQ(parse(R"("a\"b\\c\/d\n\t\u0041\u00e9\ud83d\ude00")"),
            std::vector<std::string>{"s:a\"b\\c/d\n\tA\xC3\xA9\xF0\x9F\x98\x80"});
  EXPECT_EQ(parse("\"caf\xC3\xA9\""), std::vector<std::string>{"s:caf\xC3\xA9"});
}

TEST(JsonScan, RejectsWhatTheGrammarForbids) {
  for (const char* bad : {"", "[1,]", "{\"a\":1,}", "01", "1.", "-", "1e", "NaN", "[1 2]", "{\"a\" 1}", "{1: 2}",
                          "[1]]", "[1] x", "\"abc", "\"a\\x\"", "\"\\ud800\"", "\"\\udc00x\"", "\"a\tb\"", "tru",
                          "1e400", "\"\xFF\"", "\"\xC3\"", "[", "{\"a\":"}) {
    EXPECT_NE(error_of(bad), "") << "accepted: " << bad;
  }
  EXPECT_NE(error_of("[1,]").find("byte 3"), std::string::npos) << error_of("[1,]");
  // A broken literal names the whole word (the fuzzer found the message reading before the literal).
  EXPECT_NE(error_of("[nul]").find("expected 'null'"), std::string::npos) << error_of("[nul]");
}

TEST(JsonScan, StringsAndNumbersAcrossTheChunkBoundary) {
  // A multi-byte character and a long number straddling the 1 MiB buffer boundary at every offset.
  const std::size_t chunk = 1 << 20;
  for (std::size_t shift = 0; shift < 6; ++shift) {
    std::string doc = "[\"";
    doc.append(chunk - 3 - shift, 'a');
    doc += "\xE2\x82\xAC";  // U+20AC, three bytes
    doc += "\", 123456789012, 0.000123]";
    const auto ev = parse(doc);
    ASSERT_EQ(ev.size(), 5u) << shift;
    EXPECT_EQ(ev[1].substr(ev[1].size() - 3), "\xE2\x82\xAC") << shift;
    EXPECT_EQ(ev[2], "i:123456789012");
    EXPECT_EQ(ev[3], "f:0.000123");
  }
}

TEST(JsonScan, DeepNestingDoesNotRecurse) {
  const std::string doc = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_EQ(parse(doc).size(), 400000u);
}

}  // namespace
}  // namespace cpscope::trace
