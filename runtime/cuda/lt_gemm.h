#pragma once
// Row-major float GEMMs in cuBLASLt, with an optional epilogue fused into the GEMM kernel:
// the dense layer's forward y = act(x·W + b) in one kernel (CUBLASLT_EPILOGUE_BIAS /
// RELU_BIAS) where the plain path needs a GEMM, often a split-K reduction, and
// kernel_bias_act; the backward GEMMs when the backend routes them here; and the epilogues
// the benchmarks probe (RELU_AUX_BIAS, DRELU_BGRAD). Float only; real GPU builds only (the
// emulator has no cuBLASLt: there the plain path runs, and the GPU tests hold both against
// the CPU backend).
//
// The row-major C[M,N] = op(A)·op(B) (gemm_shape.h) is, read column-major, Cᵀ(N×M) =
// op(B)ᵀ·op(A)ᵀ on the same buffers: cuBLASLt's "A" is our B and its "B" is our A, with the
// same transposes. A bias then runs along Cᵀ's rows, i.e. along our N (a layer's outputs),
// and a bias gradient sums over our M (the batch rows).
//
// Plans (descriptors + the heuristic's algorithm) are cached per shape, epilogue and pointer
// alignment; the heuristic query is host-side only, so run() is safe inside a stream capture.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "runtime/cuda/gemm_shape.h"
#include "runtime/error.h"

namespace equivae {

// What follows the product. bias: the bias (BIAS*) or the bias gradient written (*BGRAD*);
// aux: the ReLU bit mask, written by RELU_AUX* and read by DRELU*, aux_ld its leading
// dimension in bits (a multiple of 128, ≥ N).
struct LtEpilogue {
  cublasLtEpilogue_t kind = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  void* aux = nullptr;
  int64_t aux_ld = 0;
};

class LtGemm {
 public:
  // split_k: whether cuBLASLt may split K across blocks (a second, reduction kernel, or an
  // in-place reduction); workspace: device memory the matmuls may use (the caller's).
  LtGemm(bool strict_fp32, bool split_k, void* workspace, size_t workspace_bytes)
      : strict_fp32_(strict_fp32),
        split_k_(split_k),
        workspace_(workspace),
        workspace_bytes_(workspace_bytes) {
    ok_ = cublasLtCreate(&handle_) == CUBLAS_STATUS_SUCCESS;
  }
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  ~LtGemm() {
    for (auto& [key, plan] : plans_) destroy(plan);
    if (handle_) cublasLtDestroy(handle_);
  }

  // C = op(A)·op(B) + beta·C, then the epilogue, on stream. Returns false (having enqueued
  // nothing) where cuBLASLt offers no algorithm; the caller then takes another path.
  bool run(const Gemm& g, const float* A, const float* B, float* C, const LtEpilogue& e,
           cudaStream_t stream) {
    if (!ok_ || g.M <= 0 || g.N <= 0 || g.K <= 0) return false;
    Plan& plan = plan_for(g, e, alignment(A), alignment(B), alignment(C));
    if (!plan.usable || !set_pointers(plan, e)) return false;
    const float one = 1.f, beta = float(g.beta);
    const cublasStatus_t status =
        cublasLtMatmul(handle_, plan.desc, &one, B, plan.a, A, plan.b, &beta, C, plan.c, C, plan.c,
                       &plan.algo, workspace_, workspace_bytes_, stream);
    if (status != CUBLAS_STATUS_SUCCESS)
      throw Error("cuda backend", std::string("cublasLtMatmul: ") + cublasGetStatusString(status));
    return true;
  }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool usable = false;
  };
  using Key = std::tuple<bool, bool, int, int, int, int, int, int, bool, int, int64_t, int, int,
                         int, int, int>;

  // The largest power of two (≤ 256) dividing the address: what the heuristic may assume.
  static int alignment(const void* p) {
    const auto address = reinterpret_cast<uintptr_t>(p);
    int a = 256;
    while (a > 4 && address % uintptr_t(a) != 0) a /= 2;
    return a;
  }

  bool set_pointers(Plan& plan, const LtEpilogue& e) {
    if (e.bias && cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                 &e.bias, sizeof(e.bias)) != CUBLAS_STATUS_SUCCESS)
      return false;
    if (e.aux &&
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &e.aux,
                                       sizeof(e.aux)) != CUBLAS_STATUS_SUCCESS)
      return false;
    return true;
  }

  Plan& plan_for(const Gemm& g, const LtEpilogue& e, int align_a, int align_b, int align_c) {
    const Key key{g.trans_a,
                  g.trans_b,
                  g.M,
                  g.N,
                  g.K,
                  g.lda,
                  g.ldb,
                  g.ldc,
                  g.beta != 0,
                  int(e.kind),
                  e.aux_ld,
                  align_a,
                  align_b,
                  align_c,
                  e.bias ? alignment(e.bias) : 0,
                  e.aux ? alignment(e.aux) : 0};
    auto found = plans_.find(key);
    if (found != plans_.end()) return found->second;
    Plan& plan = plans_[key];
    const cublasComputeType_t compute =
        strict_fp32_ ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    const ColumnMajorGemm cm = column_major(g);  // cuBLASLt's A is our B, its B our A
    const cublasOperation_t lt_a = cm.a.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t lt_b = cm.b.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    const uint32_t reduction =
        split_k_ ? CUBLASLT_REDUCTION_SCHEME_MASK : CUBLASLT_REDUCTION_SCHEME_NONE;
    const uint32_t align[3] = {uint32_t(align_a), uint32_t(align_b), uint32_t(align_c)};
    cublasLtMatmulPreference_t preference = nullptr;
    bool ok = cublasLtMatmulDescCreate(&plan.desc, compute, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
              set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, lt_a) &&
              set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, lt_b) &&
              set(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, e.kind) &&
              (e.aux_ld == 0 || set(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, e.aux_ld)) &&
              set_pointers(plan, e) &&
              cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_32F, uint64_t(cm.a.rows),
                                         uint64_t(cm.a.cols), cm.a.ld) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_32F, uint64_t(cm.b.rows),
                                         uint64_t(cm.b.cols), cm.b.ld) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, uint64_t(cm.rows), uint64_t(cm.cols),
                                         cm.ld) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceCreate(&preference) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceSetAttribute(
                  preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                  sizeof(workspace_bytes_)) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceSetAttribute(
                  preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction,
                  sizeof(reduction)) == CUBLAS_STATUS_SUCCESS;
    const cublasLtMatmulPreferenceAttributes_t align_attrs[3] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,  // our A is cuBLASLt's B
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES};
    for (int i = 0; ok && i < 3; ++i)
      ok = cublasLtMatmulPreferenceSetAttribute(preference, align_attrs[i], &align[i],
                                                sizeof(align[i])) == CUBLAS_STATUS_SUCCESS;
    if (ok)
      ok = cublasLtMatmulPreferenceSetAttribute(
               preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align[2],
               sizeof(align[2])) == CUBLAS_STATUS_SUCCESS;
    if (ok) {
      cublasLtMatmulHeuristicResult_t result{};
      int found_count = 0;
      ok = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                          preference, 1, &result,
                                          &found_count) == CUBLAS_STATUS_SUCCESS &&
           found_count > 0;
      if (ok) plan.algo = result.algo;
    }
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    plan.usable = ok;
    return plan;
  }

  template <class V>
  static bool set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                  const V& value) {
    return cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)) ==
           CUBLAS_STATUS_SUCCESS;
  }

  static void destroy(Plan& plan) {
    if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c) cublasLtMatrixLayoutDestroy(plan.c);
    if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
  }

  bool strict_fp32_, split_k_;
  void* workspace_;
  size_t workspace_bytes_;
  bool ok_ = false;
  cublasLtHandle_t handle_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace equivae
