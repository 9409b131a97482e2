#pragma once
// LtGemm for the emulated build (the emulator's device memory is host memory): lt_gemm.h's
// calls, computed on the host — the product in dense_gemm, called as the CPU backend calls it,
// then gemm_epilogue.h's epilogue. So the emulated CUDA backend takes the cuBLASLt routes a
// GPU takes (which epilogue, on which pointers, reading which mask) and the tests hold them
// against the CPU backend; how cuBLASLt itself is driven (lt_gemm.h) is checked on a GPU.
// Nothing to time: tune() only hands the small GEMM its plans, when it is a candidate.
#include <cstddef>
#include <unordered_set>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/emu/emu_runtime.h"
#include "runtime/cuda/gemm_choice.h"
#include "runtime/cuda/gemm_epilogue.h"
#include "runtime/cuda/gemm_shape.h"
#include "runtime/cuda/small_gemm_route.h"

namespace equivae {

// g on host memory, as kernels/cpu/dense.cpp calls dense_gemm (so the emulated backend's results
// match the CPU backend's bit for bit); the emulated backend's cuBLAS GEMMs run this too.
template <class T>
void host_gemm(const Gemm& g, const T* A, const T* B, T* C) {
  cpu::dense_gemm(g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans, g.M,
                  g.N, g.K, A, g.lda, B, g.ldb, T(g.beta), C, g.ldc);
}

class LtGemm {
 public:
  // small_gemm: as lt_gemm.h's (the scratch here is host memory, as the emulator's device's).
  LtGemm(bool strict_fp32, bool /*split_k*/, void* /*workspace*/, size_t /*workspace_bytes*/,
         bool autotune = false, bool /*split_k_in_place*/ = false, bool small_gemm = false)
      : small_candidate_(small_gemm && autotune && !strict_fp32),
        partials_(small_gemm && !strict_fp32 ? kSmallGemmPartials : 0),
        arrivals_(small_gemm && !strict_fp32 ? kSmallGemmArrivals : 0, 0u),
        split_partials_(small_gemm && !strict_fp32 ? kSmallGemmSplitPartials : 0),
        split_arrivals_(small_gemm && !strict_fp32 ? kSmallGemmSplitArrivals : 0, 0u) {}
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // C = op(A)·op(B) + beta·C, then the epilogue. Always has an algorithm. After tune(), with
  // the small GEMM as a candidate, every GEMM it fits runs in it (the emulated small GEMM).
  // only and ran: as lt_gemm.h's.
  bool run(const Gemm& g, const float* A, const float* B, float* C, const LtEpilogue& e,
           cudaStream_t stream, GemmKernel only = GemmKernel::any, GemmKernel* ran = nullptr) {
    if (g.M <= 0 || g.N <= 0 || g.K <= 0) return false;
    const bool small = tuned_ && small_candidate_ && small_gemm_fits(g, e.kind);
    const GemmKernel kernel = small ? GemmKernel::small : GemmKernel::cublaslt;
    if (only != GemmKernel::any && only != kernel) return false;
    if (ran) *ran = kernel;
    if (small) {
      run_small(g, A, B, C, e, stream);
      small_outputs_.insert(C);
      return true;
    }
    host_gemm(g, A, B, C);
    apply_epilogue(e, C, g.M, g.N, g.ldc);
    return true;
  }
  // Nothing to time here: the small GEMM, when a candidate, takes every plan it fits from now
  // on (as if it had won on a GPU), so the tests run that route.
  GemmTuning tune() {
    tuned_ = true;
    return {};
  }
  void run_small(const Gemm& g, const float* A, const float* B, float* C, const LtEpilogue& e,
                 cudaStream_t stream) {
    run_small_gemm(g, A, B, C, small_gemm_tail(e, partials_.data(), arrivals_.data()),
                   small_gemm_split(split_partials_.data(), split_arrivals_.data()), stream);
  }
  // The small GEMM's tail for e and its split K, on this stream's scratch (a persistent chain's
  // steps: CudaBackendOptions::persistent_chains).
  cuda::SmallGemmTail small_tail(const LtEpilogue& e) {
    return small_gemm_tail(e, partials_.data(), arrivals_.data());
  }
  cuda::SmallGemmSplit small_split() {
    return small_gemm_split(split_partials_.data(), split_arrivals_.data());
  }
  // Plans (here: distinct outputs) that the small GEMM took.
  int small_plans() const { return int(small_outputs_.size()); }

 private:
  bool small_candidate_, tuned_ = false;
  std::vector<float> partials_;  // the small GEMM's ReLU-backward scratch
  std::vector<unsigned> arrivals_;
  std::vector<float> split_partials_;  // its split K's
  std::vector<unsigned> split_arrivals_;
  std::unordered_set<const void*> small_outputs_;
};

}  // namespace equivae
