// Shared by the CLI tests: runs a tool binary in a per-test folder and captures exit code, stdout and
// stderr, so each test can also prove that nothing (not even a temp file) is left behind on error.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace cli_test {

namespace fs = std::filesystem;

struct Result {
  int code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

inline std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

class ToolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("cli_test_") + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The binary Run() starts.
  virtual std::string Binary() const = 0;

  // Runs the tool with `args` (already shell-quoted where needed) in the test's folder.
  Result Run(const std::string& args) { return RunBinary(Binary(), args); }

  // Runs another binary the same way (a pipeline of tools).
  Result RunBinary(const std::string& binary, const std::string& args) {
    const fs::path err = dir_ / "stderr.txt";
    const std::string cmd = "cd " + Quote(dir_.string()) + " && " + Quote(binary) + " " + args + " 2>" +
                            Quote(err.string()) + " </dev/null";
    Result r;
    FILE* pipe = ::popen(cmd.c_str(), "r");
    if (!pipe) return r;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
    const int status = ::pclose(pipe);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.err = ReadFile(err);
    fs::remove(err);
    return r;
  }

  // Runs the tool and expects the input-error exit (2) with `needle` in its message.
  void ExpectInputError(const std::string& args, const std::string& needle) {
    const Result r = Run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
  }

  fs::path Path(const std::string& name) const { return dir_ / name; }
  // Files in the test folder (to prove nothing, not even a temp file, is left behind).
  std::vector<std::string> Files() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    return names;
  }

  fs::path dir_;
};

}  // namespace cli_test
