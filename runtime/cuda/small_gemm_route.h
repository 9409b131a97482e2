#pragma once
// Where the engine's tensor-core GEMM (kernels/cuda/small_gemm.cu) can take a GEMM, and how a
// cuBLASLt epilogue (gemm_epilogue.h) reads as its tail: shared by the CUDA backend (which
// routes GEMMs to it, CudaBackendOptions::small_gemm) and LtGemm (which, autotuning, times it
// against cuBLASLt's candidates per plan and keeps the faster).
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/ops.h"
#include "runtime/backend.h"
#include "runtime/cuda/gemm_epilogue.h"
#include "runtime/cuda/gemm_shape.h"

namespace equivae {

// Which kind of kernel computes a GEMM. A ReLU bit mask is read only by the kind that wrote
// it: the small GEMM writes and reads bit n + m·ld, the layout taken for cuBLASLt's RELU_AUX
// (whose bit order cuBLASLt does not document), so a mask never crosses from one to the other.
enum class GemmKernel { any, cublaslt, small };

// The ReLU-backward tail's scratch, per owner (one stream's GEMMs, one after another): 64 row
// tiles (2,048 rows) of 4,096 columns, and one arrival counter per 32 columns.
constexpr size_t kSmallGemmPartials = size_t(64) * 4096, kSmallGemmArrivals = 4096 / 32;
// Split K's scratch, per owner as well: 2 M floats (8 MiB) of partial tiles — a 160 × 784
// output split 4 ways takes 0.5 M; larger outputs split less (small_gemm_splits) — and a
// counter per tile of the largest output the small GEMM takes (2,048 × 4,096).
constexpr size_t kSmallGemmSplitPartials = size_t(2) << 20,
                 kSmallGemmSplitArrivals = size_t(CudaBackendOptions::kSmallGemmRows / 32) * 128;

// Whether the small GEMM computes g: A not transposed, at most kSmallGemmRows rows, and (for
// the ReLU-backward tail) a bias-gradient scratch large enough.
inline bool small_gemm_fits(const Gemm& g, GemmEpilogue kind) {
  if (g.trans_a || g.M <= 0 || g.N <= 0 || g.K <= 0 || g.M > CudaBackendOptions::kSmallGemmRows)
    return false;
  return kind != GemmEpilogue::drelu_bgrad ||
         (cuda::small_gemm_partials(g.M, g.N) <= kSmallGemmPartials &&
          cuda::small_gemm_arrivals(g.N) <= kSmallGemmArrivals);
}

// The cuBLASLt epilogue e as the small GEMM's tail (the ReLU backward's bias gradient is e's
// bias pointer, as in cuBLASLt's DRELU_BGRAD; partials and arrivals: its scratch).
inline cuda::SmallGemmTail small_gemm_tail(const LtEpilogue& e, float* partials,
                                           unsigned* arrivals) {
  const auto* bias = static_cast<const float*>(e.bias);
  auto* mask = static_cast<uint8_t*>(e.aux);
  switch (e.kind) {
    case GemmEpilogue::bias:
      return {cuda::GemmTail::bias, bias};
    case GemmEpilogue::relu_bias:
      return {cuda::GemmTail::relu_bias, bias};
    case GemmEpilogue::relu_aux_bias:
      return {cuda::GemmTail::relu_mask_bias, bias, mask, e.aux_ld};
    case GemmEpilogue::drelu_bgrad:
      return {cuda::GemmTail::drelu_bgrad, nullptr,  mask,    e.aux_ld,
              const_cast<float*>(bias),    partials, arrivals};
    case GemmEpilogue::drelu:
      return {cuda::GemmTail::drelu, nullptr, mask, e.aux_ld};
    case GemmEpilogue::none:
      break;
  }
  return {};
}

// Split K as the kernel chooses it, on an owner's scratch.
inline cuda::SmallGemmSplit small_gemm_split(float* partials, unsigned* arrivals) {
  return {0, partials, arrivals, kSmallGemmSplitPartials, kSmallGemmSplitArrivals};
}

inline void run_small_gemm(const Gemm& g, const float* A, const float* B, float* C,
                           const cuda::SmallGemmTail& tail, const cuda::SmallGemmSplit& split,
                           cudaStream_t stream) {
  cuda::small_gemm_tf32(A, B, C, g.M, g.N, g.K, g.lda, g.ldb, g.ldc, g.trans_b, float(g.beta), tail,
                        stream, split);
}

}  // namespace equivae
