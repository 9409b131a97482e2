#pragma once
// Row-major float GEMMs in cuBLASLt, with an optional epilogue fused into the GEMM kernel
// (gemm_epilogue.h says what each does): the dense layer's forward y = act(x·W + b) in one
// kernel where the plain path needs a GEMM, often a split-K reduction, and kernel_bias_act;
// with fused ReLU backward, the forward's ReLU mask (RELU_AUX_BIAS) and the layer below's
// mask and bias gradient in the input-gradient GEMM (DRELU_BGRAD); the backward GEMMs when the
// backend routes them here. Float only; real GPU builds only (the emulated build runs
// lt_gemm_emulated.h's LtGemm instead: the same calls, computed on the host).
//
// The row-major C[M,N] = op(A)·op(B) (gemm_shape.h) is, read column-major, Cᵀ(N×M) =
// op(B)ᵀ·op(A)ᵀ on the same buffers: cuBLASLt's "A" is our B and its "B" is our A, with the
// same transposes. A bias then runs along Cᵀ's rows, i.e. along our N (a layer's outputs),
// and a bias gradient sums over our M (the batch rows).
//
// Plans (descriptors + the heuristic's algorithm) are cached per shape, epilogue and pointer
// alignment; the heuristic query is host-side only, so run() is safe inside a stream capture.
// With autotuning, each plan keeps the heuristic's first kCandidates algorithms, and tune()
// (outside any capture) times them on scratch buffers and keeps the fastest: cuBLASLt's
// heuristic ranks kernels for typical shapes, and a training step at B = 160 is not one.
// With the small GEMM as a candidate (CudaBackendOptions::small_gemm with autotune), tune()
// also times the engine's tensor-core GEMM on each plan it fits (small_gemm_route.h) and hands
// it the plans where it is faster by the same margin; run() then launches it for them.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/cuda/gemm_choice.h"
#include "runtime/cuda/gemm_epilogue.h"
#include "runtime/cuda/gemm_shape.h"
#include "runtime/cuda/small_gemm_route.h"
#include "runtime/error.h"

namespace equivae {

// Device scratch of `floats` partial sums and `counters` arrival counters, the counters at zero
// (the small GEMM leaves them zero); freed with it. The small GEMM's ReLU-backward tail and its
// split K each take one per stream whose small GEMMs run one after another.
class SmallGemmScratch {
 public:
  SmallGemmScratch(size_t floats, size_t counters) {
    ok_ = cudaMalloc(&partials_, floats * sizeof(float)) == cudaSuccess &&
          cudaMalloc(&arrivals_, counters * sizeof(unsigned)) == cudaSuccess &&
          cudaMemset(arrivals_, 0, counters * sizeof(unsigned)) == cudaSuccess &&
          // the legacy stream's memset done before the non-blocking streams read them
          cudaDeviceSynchronize() == cudaSuccess;
  }
  SmallGemmScratch(const SmallGemmScratch&) = delete;
  SmallGemmScratch& operator=(const SmallGemmScratch&) = delete;
  ~SmallGemmScratch() {
    for (void* p : {partials_, arrivals_})
      if (p) cudaFree(p);
  }
  bool ok() const { return ok_; }
  float* partials() const { return static_cast<float*>(partials_); }
  unsigned* arrivals() const { return static_cast<unsigned*>(arrivals_); }

 private:
  void *partials_ = nullptr, *arrivals_ = nullptr;
  bool ok_ = false;
};

// The split-K scratch (small_gemm_route.h's sizes).
class SmallGemmSplitScratch : public SmallGemmScratch {
 public:
  SmallGemmSplitScratch() : SmallGemmScratch(kSmallGemmSplitPartials, kSmallGemmSplitArrivals) {}
  // Split K as the kernel chooses it, on this scratch.
  cuda::SmallGemmSplit split() const { return small_gemm_split(partials(), arrivals()); }
};

class LtGemm {
 public:
  // split_k: whether cuBLASLt may split K across blocks (a second, reduction kernel, or an
  // in-place reduction); split_k_in_place: only in place (the partial products added up in the
  // output, in an order counters in the workspace fix: no reduction kernel); workspace: device
  // memory the matmuls may use (the caller's); autotune: plans keep candidates for tune();
  // small_gemm: the engine's small GEMM may run on this stream (CudaBackendOptions::small_gemm,
  // TF32 only): this LtGemm holds its ReLU-backward and split-K scratch (run_small) and, with
  // autotune, times it as one more candidate of every plan it fits.
  LtGemm(bool strict_fp32, bool split_k, void* workspace, size_t workspace_bytes,
         bool autotune = false, bool split_k_in_place = false, bool small_gemm = false)
      : strict_fp32_(strict_fp32),
        split_k_(split_k),
        in_place_(split_k_in_place),
        autotune_(autotune),
        small_candidate_(small_gemm && autotune && !strict_fp32),
        workspace_(workspace),
        workspace_bytes_(workspace_bytes) {
    ok_ = cublasLtCreate(&handle_) == CUBLAS_STATUS_SUCCESS;
    if (small_gemm && !strict_fp32) {  // the small GEMM's scratch, counters at zero
      tail_ = std::make_unique<SmallGemmScratch>(kSmallGemmPartials, kSmallGemmArrivals);
      split_ = std::make_unique<SmallGemmSplitScratch>();
      check(tail_->ok() && split_->ok(), "cuda backend",
            "cannot allocate the small GEMM's scratch on the device");
    }
  }
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  ~LtGemm() {
    for (auto& [key, plan] : plans_) destroy(plan);
    if (handle_) cublasLtDestroy(handle_);
  }

  // C = op(A)·op(B) + beta·C, then the epilogue, on stream. Returns false (having enqueued
  // nothing) where cuBLASLt offers no algorithm, or where the plan's kernel is not of the kind
  // `only` asks for; the caller then takes another path. *ran: the kind that ran.
  bool run(const Gemm& g, const float* A, const float* B, float* C, const LtEpilogue& given,
           cudaStream_t stream, GemmKernel only = GemmKernel::any, GemmKernel* ran = nullptr) {
    if (!ok_ || g.M <= 0 || g.N <= 0 || g.K <= 0) return false;
    const LtEpilogue e = with_used_pointers(given);
    Plan& plan = plan_for(g, e, alignment(A), alignment(B), alignment(C));
    const GemmKernel kernel = plan.small ? GemmKernel::small : GemmKernel::cublaslt;
    if (!plan.usable || (only != GemmKernel::any && only != kernel) || !set_pointers(plan, e))
      return false;
    if (ran) *ran = kernel;
    if (plan.small) {
      run_small(g, A, B, C, e, stream);
      return true;
    }
    const cublasStatus_t status = matmul(plan, plan.algo, A, B, C, float(g.beta), stream);
    if (status != CUBLAS_STATUS_SUCCESS)
      throw Error("cuda backend", std::string("cublasLtMatmul: ") + cublasGetStatusString(status));
    return true;
  }

  // Times the candidates of every plan made since the last tune() and keeps each plan's
  // fastest (gemm_choice.h). Needs the device idle and no capture in progress: it captures
  // and replays small graphs of its own on a private stream, on scratch buffers (256-byte
  // aligned, so every alignment the plans assumed holds). A plan whose algorithm changed is
  // used from the next run() on; a graph captured before still holds the old one.
  GemmTuning tune() {
    GemmTuning report;
    std::vector<Plan*> todo;
    size_t floats[3] = {0, 0, 0}, bias_floats = 0, aux_bytes = 0;
    for (auto& [key, plan] : plans_) {
      if (!plan.usable || plan.tuned) continue;
      todo.push_back(&plan);
      for (int i = 0; i < 3; ++i) floats[i] = std::max(floats[i], plan.floats[i]);
      bias_floats = std::max(bias_floats, plan.bias_floats);
      aux_bytes = std::max(aux_bytes, plan.aux_bytes);
    }
    if (todo.empty()) return report;
    const size_t sizes[5] = {floats[0] * 4, floats[1] * 4, floats[2] * 4, bias_floats * 4,
                             aux_bytes};
    size_t offsets[5], total = 0;
    for (int i = 0; i < 5; ++i) offsets[i] = total, total += (sizes[i] + 255) / 256 * 256 + 256;
    TuningDevice dev;
    if (!dev.start(total)) return report;
    // 0x3c in every byte: each float 0.0115, no NaN or denormal to slow a kernel down.
    if (cudaMemsetAsync(dev.scratch, 0x3c, total, dev.stream) != cudaSuccess) return report;
    char* base = static_cast<char*>(dev.scratch);
    const float* A = reinterpret_cast<const float*>(base + offsets[0]);
    const float* B = reinterpret_cast<const float*>(base + offsets[1]);
    float* C = reinterpret_cast<float*>(base + offsets[2]);
    for (Plan* plan : todo) {
      plan->tuned = true;
      const LtEpilogue e{plan->epilogue, plan->bias_floats ? base + offsets[3] : nullptr,
                         plan->aux_bytes ? base + offsets[4] : nullptr, plan->aux_ld};
      std::vector<double> seconds(plan->candidates.size(), std::numeric_limits<double>::infinity());
      if (set_pointers(*plan, e))  // scratch pointers; run() sets the real ones on every call
        for (size_t i = 0; i < seconds.size(); ++i)
          seconds[i] = time_candidate(*plan, plan->candidates[i], A, B, C, dev);
      const size_t small = seconds.size();  // the small GEMM, last: the margin rule applies
      if (plan->small_fits)
        seconds.push_back(time_launches(dev, [&] {
          run_small(plan->gemm, A, B, C, e, dev.stream);
          return true;
        }));
      const int pick = pick_fastest(seconds, kMargin);
      if (pick < 0) continue;
      ++report.timed;
      report.heuristic_seconds += std::isfinite(seconds[0]) ? seconds[0] : seconds[size_t(pick)];
      report.chosen_seconds += seconds[size_t(pick)];
      if (size_t(pick) == small && plan->small_fits)
        plan->small = true, ++report.changed, ++report.small;
      else if (pick > 0)
        plan->algo = plan->candidates[size_t(pick)], ++report.changed;
    }
    cudaGetLastError();  // a candidate that failed to run leaves nothing behind
    return report;
  }

  // g in the small GEMM with epilogue e as its tail, split K as it chooses, on this LtGemm's
  // scratch (its stream's GEMMs run one after another, and tune() owns the device). Needs the
  // constructor's small_gemm.
  void run_small(const Gemm& g, const float* A, const float* B, float* C, const LtEpilogue& e,
                 cudaStream_t stream) const {
    run_small_gemm(g, A, B, C, small_gemm_tail(e, tail_->partials(), tail_->arrivals()),
                   split_->split(), stream);
  }
  // The small GEMM's tail for e and its split K, on this stream's scratch (a persistent chain's
  // steps: CudaBackendOptions::persistent_chains).
  cuda::SmallGemmTail small_tail(const LtEpilogue& e) const {
    return small_gemm_tail(e, tail_->partials(), tail_->arrivals());
  }
  cuda::SmallGemmSplit small_split() const { return split_->split(); }

  // Plans tune() handed to the small GEMM.
  int small_plans() const {
    int n = 0;
    for (const auto& [key, plan] : plans_) n += plan.small;
    return n;
  }

 private:
  static constexpr int kCandidates = 8;     // the heuristic's first 8 algorithms
  static constexpr double kMargin = 0.03;   // a candidate must be 3% faster to replace the first
  static constexpr int kTimedLaunches = 8;  // GEMMs per timed graph
  static constexpr int kTimedRounds = 3;    // replays timed; the fastest counts

  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool usable = false;
    // For tune(): the heuristic's candidates (algo is one of them), the operands' extents in
    // floats (our A, our B, C), the epilogue's bias length and aux bytes, and a β of the
    // plan's kind (zero or not, as the key has it).
    std::vector<cublasLtMatmulAlgo_t> candidates;
    size_t floats[3] = {0, 0, 0};
    size_t bias_floats = 0, aux_bytes = 0;
    GemmEpilogue epilogue = GemmEpilogue::none;
    int64_t aux_ld = 0;
    float beta = 0;
    bool tuned = false;
    // The small GEMM: whether it can compute this plan (and is a candidate), and whether
    // tune() chose it; the shape it then runs.
    bool small_fits = false, small = false;
    Gemm gemm{};
  };

  // A private stream, two timing events and the scratch block, released on every path out.
  struct TuningDevice {
    cudaStream_t stream = nullptr;
    cudaEvent_t start_event = nullptr, stop_event = nullptr;
    void* scratch = nullptr;
    bool start(size_t bytes) {
      return cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess &&
             cudaEventCreate(&start_event) == cudaSuccess &&
             cudaEventCreate(&stop_event) == cudaSuccess &&
             cudaMalloc(&scratch, bytes) == cudaSuccess;
    }
    ~TuningDevice() {
      if (stream) cudaStreamSynchronize(stream);
      if (scratch) cudaFree(scratch);
      if (start_event) cudaEventDestroy(start_event);
      if (stop_event) cudaEventDestroy(stop_event);
      if (stream) cudaStreamDestroy(stream);
    }
  };

  cublasStatus_t matmul(Plan& plan, const cublasLtMatmulAlgo_t& algo, const float* A,
                        const float* B, float* C, float beta, cudaStream_t stream) {
    const float one = 1.f;
    return cublasLtMatmul(handle_, plan.desc, &one, B, plan.a, A, plan.b, &beta, C, plan.c, C,
                          plan.c, &algo, workspace_, workspace_bytes_, stream);
  }

  // Seconds per GEMM of one candidate, as a graph replay runs it (kTimedLaunches launches in
  // one graph, the fastest of kTimedRounds replays after a warm-up); infinite if it fails.
  double time_candidate(Plan& plan, const cublasLtMatmulAlgo_t& algo, const float* A,
                        const float* B, float* C, const TuningDevice& dev) {
    return time_launches(dev, [&] {
      return matmul(plan, algo, A, B, C, plan.beta, dev.stream) == CUBLAS_STATUS_SUCCESS;
    });
  }
  // The same for any GEMM launch on dev.stream: issue() enqueues one, false if it failed.
  template <class Issue>
  double time_launches(const TuningDevice& dev, Issue issue) {
    double best = std::numeric_limits<double>::infinity();
    if (cudaStreamBeginCapture(dev.stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
      return best;
    bool ok = true;
    for (int i = 0; ok && i < kTimedLaunches; ++i) ok = issue();
    cudaGraph_t graph = nullptr;
    ok = cudaStreamEndCapture(dev.stream, &graph) == cudaSuccess && ok && graph;
    cudaGraphExec_t exec = nullptr;
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    ok = ok && cudaGraphLaunch(exec, dev.stream) == cudaSuccess;  // warm-up
    for (int round = 0; ok && round < kTimedRounds; ++round) {
      float ms = 0;
      ok = cudaEventRecord(dev.start_event, dev.stream) == cudaSuccess &&
           cudaGraphLaunch(exec, dev.stream) == cudaSuccess &&
           cudaEventRecord(dev.stop_event, dev.stream) == cudaSuccess &&
           cudaEventSynchronize(dev.stop_event) == cudaSuccess &&
           cudaEventElapsedTime(&ms, dev.start_event, dev.stop_event) == cudaSuccess;
      if (ok) best = std::min(best, double(ms) * 1e-3 / kTimedLaunches);
    }
    if (!ok) best = std::numeric_limits<double>::infinity();
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    return best;
  }
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
    const uint32_t reduction = !split_k_   ? CUBLASLT_REDUCTION_SCHEME_NONE
                               : in_place_ ? CUBLASLT_REDUCTION_SCHEME_INPLACE
                                           : CUBLASLT_REDUCTION_SCHEME_MASK;
    const uint32_t align[3] = {uint32_t(align_a), uint32_t(align_b), uint32_t(align_c)};
    cublasLtMatmulPreference_t preference = nullptr;
    bool ok = cublasLtMatmulDescCreate(&plan.desc, compute, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
              set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, lt_a) &&
              set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, lt_b) &&
              set(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, lt_epilogue(e.kind)) &&
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
      cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
      int found_count = 0;
      ok = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                          preference, autotune_ ? kCandidates : 1, results,
                                          &found_count) == CUBLAS_STATUS_SUCCESS &&
           found_count > 0;
      for (int i = 0; ok && i < found_count; ++i)
        if (results[i].state == CUBLAS_STATUS_SUCCESS) plan.candidates.push_back(results[i].algo);
      ok = ok && !plan.candidates.empty();
      if (ok) plan.algo = plan.candidates[0];
    }
    // What tune() needs to run this plan on scratch buffers.
    plan.floats[0] = size_t(cm.b.ld) * size_t(cm.b.cols);  // our A is cuBLASLt's B
    plan.floats[1] = size_t(cm.a.ld) * size_t(cm.a.cols);
    plan.floats[2] = size_t(cm.ld) * size_t(cm.cols);
    plan.bias_floats = e.bias ? size_t(std::max(g.M, g.N)) : 0;
    plan.aux_bytes = e.aux ? size_t(e.aux_ld) / 8 * size_t(std::max(g.M, g.N)) : 0;
    plan.epilogue = e.kind;
    plan.aux_ld = e.aux_ld;
    plan.beta = float(g.beta);
    plan.gemm = g;
    plan.small_fits = small_candidate_ && small_gemm_fits(g, e.kind);
    plan.tuned = plan.candidates.size() < 2 && !plan.small_fits;  // nothing to choose from
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    plan.usable = ok;
    return plan;
  }

  static cublasLtEpilogue_t lt_epilogue(GemmEpilogue kind) {
    switch (kind) {
      case GemmEpilogue::bias:
        return CUBLASLT_EPILOGUE_BIAS;
      case GemmEpilogue::relu_bias:
        return CUBLASLT_EPILOGUE_RELU_BIAS;
      case GemmEpilogue::relu_aux_bias:
        return CUBLASLT_EPILOGUE_RELU_AUX_BIAS;
      case GemmEpilogue::drelu_bgrad:
        return CUBLASLT_EPILOGUE_DRELU_BGRAD;
      case GemmEpilogue::drelu:
        return CUBLASLT_EPILOGUE_DRELU;
      case GemmEpilogue::none:
        break;
    }
    return CUBLASLT_EPILOGUE_DEFAULT;
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

  bool strict_fp32_, split_k_, in_place_, autotune_, small_candidate_;
  std::unique_ptr<SmallGemmScratch> tail_;        // the small GEMM's ReLU-backward tail's
  std::unique_ptr<SmallGemmSplitScratch> split_;  // its split K's
  void* workspace_;
  size_t workspace_bytes_;
  bool ok_ = false;
  cublasLtHandle_t handle_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace equivae
