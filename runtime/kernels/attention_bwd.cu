// Launcher of the flash-attention backward; the device code is attention_bwd_kernel.cuh.
#include "runtime/kernels/attention.h"
#include "runtime/kernels/attention_args.h"
#include "runtime/kernels/attention_bwd_kernel.cuh"
#include "runtime/kernels/check.h"
#include "runtime/kernels/launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cpscope::rt::kernels {
namespace {

template <typename T, int D>
void launch_bwd(const impl::BwdParams& p, int head_count, int batch, cudaStream_t stream) {
  using C = impl::BwdCfg<D>;
  const std::int64_t kv_tiles = tile::ceil_div(p.kv_len, C::kBc);
  CPS_REQUIRE(kv_tiles <= 0x7fffffff, "too many key tiles for one launch");
  auto* kernel = &impl::attn_bwd_kernel<T, D>;
  CPS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(kv_tiles), static_cast<unsigned>(head_count), static_cast<unsigned>(batch));
  CPS_LAUNCH(kernel, grid, C::kThreads, C::kSmemBytes, stream, p);
  CPS_CUDA_CHECK_LAUNCH();
}

}  // namespace

void attn_bwd(const AttnBwdArgs& a, cudaStream_t stream) {
  if (!validate_bwd(a)) return;
  const impl::BwdParams p = impl::bwd_params(a);
  const bool bf16 = a.dtype == DType::BF16;
  if (a.head_dim == 64) {
    bf16 ? launch_bwd<__nv_bfloat16, 64>(p, a.blk.head_count, a.batch, stream)
         : launch_bwd<__half, 64>(p, a.blk.head_count, a.batch, stream);
  } else {
    bf16 ? launch_bwd<__nv_bfloat16, 128>(p, a.blk.head_count, a.batch, stream)
         : launch_bwd<__half, 128>(p, a.blk.head_count, a.batch, stream);
  }
}

}  // namespace cpscope::rt::kernels
