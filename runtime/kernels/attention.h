// Host API of the attention kernels (flash forward/backward on one block of a ring step, and layout helpers).
#pragma once

#include "runtime/kernels/attention_types.h"

#include <cuda_runtime_api.h>

#include <cstdint>

// All launchers are asynchronous on `stream`, validate their arguments (std::invalid_argument) and throw
// CudaError (check.h) when a launch fails. Device pointers must be 16-byte aligned. Layouts: attention_types.h.
namespace cpscope::rt::kernels {

// Rows with no visible key in the block contribute nothing (merge) or get o = 0, lse = -inf (no merge).
void attn_fwd(const AttnFwdArgs& args, cudaStream_t stream);

// delta[b][h][t] = sum_d dO[b][t][h][d] * O[b][t][h][d] for all rows/heads (each of O, dO in any DType).
void attn_bwd_preprocess(DType o_dtype, DType do_dtype, const void* o, const void* dout, float* delta, int batch,
                         std::int64_t tokens, int heads, int head_dim, cudaStream_t stream);

// Accumulates with fp32 atomics, so the summation order (and the last bits) may vary from run to run.
void attn_bwd(const AttnBwdArgs& args, cudaStream_t stream);

void copy_block(const CopyBlockArgs& args, cudaStream_t stream);

// Fills n floats with value (LSE with -inf and O with zeros before a forward's first merge).
void fill_f32(float* p, std::int64_t n, float value, cudaStream_t stream);

// Keeps `stream` busy for about `ns` nanoseconds (one thread polling the GPU's global timer, sleeping between
// reads): work queued behind it waits that long, so the host can queue an iteration ahead of the GPU. On the
// CPU emulation, where streams run only when waited on, it queues nothing.
void spin(std::int64_t ns, cudaStream_t stream);

}  // namespace cpscope::rt::kernels
