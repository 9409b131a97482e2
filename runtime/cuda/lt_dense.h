#pragma once
// The dense layer's forward as one cuBLASLt matmul whose epilogue adds the bias and applies
// the ReLU (CUBLASLT_EPILOGUE_BIAS / RELU_BIAS): y = act(x·W + b) in one kernel where the
// plain path needs a GEMM, often a split-K reduction, and kernel_bias_act. Float only (the
// double backend keeps the plain path); real GPU builds only (the emulator has no cuBLASLt:
// there the plain path runs, and the GPU tests hold the two against the CPU backend).
//
// Row-major y[B,out] = x[B,in]·W[in,out] is, read column-major, yᵀ(out×B) = Wᵀ(out×in)·xᵀ(in×B)
// on the same buffers with no transposes; the bias then runs along yᵀ's rows (out of them),
// which is how the epilogue broadcasts it.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <string>
#include <tuple>

#include "runtime/error.h"

namespace equivae {

class LtDenseForward {
 public:
  // workspace: device memory the matmuls may use (the caller's, kept alive by it).
  LtDenseForward(bool strict_fp32, void* workspace, size_t workspace_bytes)
      : strict_fp32_(strict_fp32), workspace_(workspace), workspace_bytes_(workspace_bytes) {
    ok_ = cublasLtCreate(&handle_) == CUBLAS_STATUS_SUCCESS;
  }
  LtDenseForward(const LtDenseForward&) = delete;
  LtDenseForward& operator=(const LtDenseForward&) = delete;
  ~LtDenseForward() {
    for (auto& [key, plan] : plans_) destroy(plan);
    if (handle_) cublasLtDestroy(handle_);
  }

  // y[B,out] = act(x[B,in]·W[in,out] + b[out]) on stream. Returns false (having enqueued
  // nothing) where cuBLASLt offers no algorithm for the shape; the caller then takes the
  // plain path. Safe inside a stream capture: the heuristic query is host-side only.
  bool run(float* y, const float* x, const float* W, const float* b, int B, int in, int out,
           bool relu, cudaStream_t stream) {
    if (!ok_ || B <= 0 || in <= 0 || out <= 0) return false;
    Plan& plan = plan_for(B, in, out, relu);
    if (!plan.usable) return false;
    const void* bias = b;
    if (cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                       sizeof(bias)) != CUBLAS_STATUS_SUCCESS)
      return false;
    const float one = 1.f, zero = 0.f;
    const cublasStatus_t status =
        cublasLtMatmul(handle_, plan.desc, &one, W, plan.a, x, plan.b, &zero, y, plan.c, y, plan.c,
                       &plan.algo, workspace_, workspace_bytes_, stream);
    if (status != CUBLAS_STATUS_SUCCESS)
      throw Error("cuda backend",
                  std::string("cublasLtMatmul (dense forward): ") + cublasGetStatusString(status));
    return true;
  }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool usable = false;
  };

  Plan& plan_for(int B, int in, int out, bool relu) {
    const auto key = std::make_tuple(B, in, out, relu);
    auto found = plans_.find(key);
    if (found != plans_.end()) return found->second;
    Plan& plan = plans_[key];
    const cublasComputeType_t compute =
        strict_fp32_ ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    const cublasLtEpilogue_t epilogue = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    cublasLtMatmulPreference_t preference = nullptr;
    bool ok =
        cublasLtMatmulDescCreate(&plan.desc, compute, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                       sizeof(epilogue)) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_32F, out, in, out) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_32F, in, B, in) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, out, B, out) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceCreate(&preference) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace_bytes_,
                                             sizeof(workspace_bytes_)) == CUBLAS_STATUS_SUCCESS;
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

  static void destroy(Plan& plan) {
    if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c) cublasLtMatrixLayoutDestroy(plan.c);
    if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
  }

  bool strict_fp32_;
  void* workspace_;
  size_t workspace_bytes_;
  bool ok_ = false;
  cublasLtHandle_t handle_ = nullptr;
  std::map<std::tuple<int, int, int, bool>, Plan> plans_;
};

}  // namespace equivae
