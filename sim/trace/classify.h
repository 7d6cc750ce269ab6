// Classification of kernel names into communication, attention compute, other compute and memory:
// the split every trace analysis rests on. The patterns are regexes, overridable from the command line.
#pragma once

#include <cstdint>
#include <regex>
#include <string>
#include <string_view>

#include "sim/timeline.h"

namespace cpscope::trace {

enum class KernelClass : std::uint8_t { Comm, Attention, OtherCompute, Memory };
std::string_view to_string(KernelClass);
IntervalKind interval_kind(KernelClass);

struct ClassifierPatterns {
  // NCCL's device kernels (ncclDevKernel_*, ncclKernel_*), RCCL/MSCCL, NVSHMEM, custom all-reduce.
  std::string comm = "nccl|rccl|msccl|nvshmem|cross_device_reduce|all_?reduce_kernel";
  // flash-attention (flash_fwd_*, flash::), fmha, cuDNN SDPA (cudnn_generated_fort_native_sdpa),
  // xformers, PyTorch's efficient attention, cpscope's own kernels (attn_fwd_kernel, ...) and the attention ops
  // of a cpscope profile ("fwd/step3/attend", "bwd/step2/attend_bwd").
  std::string attention =
      "flash|fmha|sdpa|xformers|efficient_attention|attn_fwd|attn_bwd|bwd_preprocess|/attend(_bwd)?$";
  // Copies and fills by name (Kineto "Memcpy DtoD ..."); memcpy/memset activity records are Memory
  // whatever their name. Matching ignores case; comm is tried first, then memory, then attention.
  std::string memory = "^mem(cpy|set)";
};

class Classifier {
 public:
  explicit Classifier(const ClassifierPatterns& patterns = {});
  // `field` names the flag in errors ("comm", "attention", "memory").
  static std::regex compile(const std::string& pattern, const std::string& field);
  KernelClass classify(std::string_view name) const;
  const ClassifierPatterns& patterns() const { return patterns_; }

 private:
  ClassifierPatterns patterns_;
  std::regex comm_, attention_, memory_;
};

}  // namespace cpscope::trace
