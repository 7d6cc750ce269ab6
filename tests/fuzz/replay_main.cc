// Runs a libFuzzer target's LLVMFuzzerTestOneInput on files, without libFuzzer: the regression side of
// tests/fuzz/run.sh. ctest builds each target with the project's compiler and replays the inputs kept under
// tests/fuzz/crashers/<target>/ and the seeds, so a fixed crasher stays fixed and the targets keep compiling
// where clang is not installed. A reader that throws anything but InputError ends here in std::terminate,
// which fails the test (sanitizers are run.sh's business).
//   fuzz_replay_<target> FILE|DIR...
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path p = argv[i];
    if (fs::is_directory(p)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else {
      std::cerr << "fuzz replay: " << p << " is neither a file nor a folder\n";
      return 2;
    }
  }
  if (files.empty()) {
    std::cerr << "fuzz replay: no inputs\n";
    return 2;
  }
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::cout << "replay " << f.string() << " (" << bytes.size() << " bytes)" << std::endl;
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::cout << files.size() << " inputs replayed, none crashed\n";
  return 0;
}
