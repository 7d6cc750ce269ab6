// Launcher of the flash-attention forward; the device code is attention_fwd_kernel.cuh.
#include "runtime/kernels/attention.h"
#include "runtime/kernels/attention_args.h"
#include "runtime/kernels/attention_fwd_kernel.cuh"
#include "runtime/kernels/check.h"
#include "runtime/kernels/launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cpscope::rt::kernels {
namespace {

template <typename T, int D>
void launch_fwd(const impl::FwdParams& p, int head_count, int batch, cudaStream_t stream) {
  using C = impl::FwdCfg<D>;
  const std::int64_t q_tiles = tile::ceil_div(p.q_len, C::kBr);
  CPS_REQUIRE(q_tiles <= 0x7fffffff, "too many query tiles for one launch");
  auto* kernel = &impl::attn_fwd_kernel<T, D>;
  // Set per launch: the attribute is per device, and the call is cheap next to the kernel.
  CPS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(q_tiles), static_cast<unsigned>(head_count), static_cast<unsigned>(batch));
  CPS_LAUNCH(kernel, grid, C::kThreads, C::kSmemBytes, stream, p);
  CPS_CUDA_CHECK_LAUNCH();
}

}  // namespace

void attn_fwd(const AttnFwdArgs& a, cudaStream_t stream) {
  if (!validate_fwd(a)) return;
  const impl::FwdParams p = impl::fwd_params(a);
  const bool bf16 = a.dtype == DType::BF16;
  if (a.head_dim == 64) {
    bf16 ? launch_fwd<__nv_bfloat16, 64>(p, a.blk.head_count, a.batch, stream)
         : launch_fwd<__half, 64>(p, a.blk.head_count, a.batch, stream);
  } else {
    bf16 ? launch_fwd<__nv_bfloat16, 128>(p, a.blk.head_count, a.batch, stream)
         : launch_fwd<__half, 128>(p, a.blk.head_count, a.batch, stream);
  }
}

}  // namespace cpscope::rt::kernels
