// The CUDA backend: Backend<T> on device memory, the hand-written kernels of kernels/cuda,
// GEMMs in cuBLAS and cuBLASLt (fused epilogues), convolutions in cuDNN or lowered to GEMMs
// (gemm_conv.h, CudaBackendOptions::conv_gemm), issued on a main
// stream and a side stream; plus DeviceStepOps<T> (runtime/cuda/device_step.h) so a plan can
// capture its training step once and replay it as a CUDA graph.
//
// One source, two builds:
//  - nvcc against the CUDA runtime and cuBLAS (library equivae_cuda_backend, only where the
//    toolkit is found): make_cuda_backend<T>, cuda_available;
//  - g++ against the emulator (library equivae_cuda_backend_emu, EQUIVAE_CUDA_EMULATED):
//    make_emulated_cuda_backend<T>. cudaMalloc & co. are kernels/emu/emu_runtime.h's (host
//    memory), cuBLAS GEMMs run in OpenBLAS exactly as the CPU backend calls it, cuBLASLt and
//    cuDNN are lt_gemm_emulated.h's and cudnn_conv_emulated.h's host versions, and a capture
//    records each op as a closure that replay() runs again — so a value the step reads from
//    a kernel argument instead of device memory is frozen at capture time here too, and the
//    tests see the same bug a real graph would have.
//
// GEMMs: the engine's matrices are row-major, cuBLAS is column-major. A row-major M×N matrix
// is its column-major N×M transpose, so C = op(A)·op(B) in row-major is Cᵀ = op(B)ᵀ·op(A)ᵀ
// in column-major: call gemm with the operands and M/N swapped and the same transposes.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"
#include "runtime/backend.h"
#include "runtime/conv_check.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/device_buffer.h"
#include "runtime/cuda/device_step.h"
#include "runtime/cuda/gemm_conv.h"
#include "runtime/cuda/gemm_epilogue.h"
#include "runtime/cuda/gemm_shape.h"
#include "runtime/cuda/small_gemm_route.h"
#include "runtime/cuda/step_kernels.h"
#include "runtime/cuda/timed_convolutions.h"
#include "runtime/error.h"

#if defined(EQUIVAE_CUDA_EMULATED)
#include "runtime/cuda/cudnn_conv_emulated.h"
#include "runtime/cuda/lt_gemm_emulated.h"
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include "runtime/cuda/convolution_timing.h"
#include "runtime/cuda/cudnn_conv.h"
#include "runtime/cuda/lt_gemm.h"
#endif

namespace equivae {
namespace {

#if !defined(EQUIVAE_CUDA_EMULATED)
void cublas_check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error("cuda backend", std::string(what) + ": " + cublasGetStatusString(status));
}
#define EQUIVAE_CUBLAS_CHECK(expr) cublas_check((expr), #expr)
#endif

template <class T>
class CudaBackend final : public Backend<T>, public DeviceStepOps<T> {
 public:
  explicit CudaBackend(const CudaBackendOptions& options) : options_(options) {
    check(options.steps_per_graph >= 1 &&
              options.steps_per_graph <= CudaBackendOptions::kMaxStepsPerGraph,
          "cuda backend",
          "steps per graph must be 1 to " + std::to_string(CudaBackendOptions::kMaxStepsPerGraph) +
              ", got " + std::to_string(options.steps_per_graph));
#if !defined(EQUIVAE_CUDA_EMULATED)
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    // Without a GPU (or its driver) the runtime reports cudaErrorNoDevice or, with no driver
    // at all, cudaErrorInsufficientDriver, whose own text reads like a version problem.
    check(status == cudaSuccess && count > 0, "cuda backend",
          std::string("no CUDA device: ") + (status == cudaSuccess ? "none present"
                                             : status == cudaErrorInsufficientDriver
                                                 ? "no GPU driver found, or it is older "
                                                   "than this build's CUDA runtime"
                                                 : cudaGetErrorString(status)));
    check(options.device >= 0 && options.device < count, "cuda backend",
          "device " + std::to_string(options.device) + " does not exist (" + std::to_string(count) +
              " present)");
    EQUIVAE_CUDA_CHECK(cudaSetDevice(options.device));
    cudaDeviceProp prop{};
    EQUIVAE_CUDA_CHECK(cudaGetDeviceProperties(&prop, options.device));
    device_name_ = prop.name;
    int runtime_version = 0, driver_version = 0;
    EQUIVAE_CUDA_CHECK(cudaRuntimeGetVersion(&runtime_version));
    EQUIVAE_CUDA_CHECK(cudaDriverGetVersion(&driver_version));
    auto version = [](int v) {
      return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
    };
    device_details_ = "sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
                      std::to_string(prop.multiProcessorCount) + " SMs; CUDA runtime " +
                      version(runtime_version) + ", driver " + version(driver_version);
    programmatic_launch_ = options.programmatic_launch && prop.major >= 9;  // Hopper's feature
    // Lower numbers are higher priorities; 0 is the default and the least.
    int least_priority = 0, greatest_priority = 0;
    if (options.prioritise_critical_path)
      EQUIVAE_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least_priority, &greatest_priority));
    EQUIVAE_CUDA_CHECK(
        cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest_priority));
    EQUIVAE_CUBLAS_CHECK(cublasCreate(&cublas_));
    EQUIVAE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    // A fixed workspace: cuBLAS then allocates nothing inside a graph capture (32 MiB is
    // NVIDIA's recommendation for Hopper).
    workspace_ = DeviceBuffer(kWorkspaceBytes);
    EQUIVAE_CUBLAS_CHECK(cublasSetWorkspace(cublas_, workspace_.get(), kWorkspaceBytes));
    EQUIVAE_CUBLAS_CHECK(cublasSetMathMode(cublas_, math_mode()));
    // The side stream: weight-gradient GEMMs leave the critical path (see dense_backward).
    // Its own handle and workspace, since two GEMMs may now run at once.
    EQUIVAE_CUDA_CHECK(
        cudaStreamCreateWithPriority(&side_stream_, cudaStreamNonBlocking, least_priority));
    EQUIVAE_CUDA_CHECK(cudaEventCreateWithFlags(&fork_event_, cudaEventDisableTiming));
    EQUIVAE_CUDA_CHECK(cudaEventCreateWithFlags(&join_event_, cudaEventDisableTiming));
    EQUIVAE_CUBLAS_CHECK(cublasCreate(&side_cublas_));
    EQUIVAE_CUBLAS_CHECK(cublasSetStream(side_cublas_, side_stream_));
    side_workspace_ = DeviceBuffer(kWorkspaceBytes);
    EQUIVAE_CUBLAS_CHECK(cublasSetWorkspace(side_cublas_, side_workspace_.get(), kWorkspaceBytes));
    EQUIVAE_CUBLAS_CHECK(cublasSetMathMode(side_cublas_, math_mode()));
#endif
    if constexpr (std::is_same_v<T, float>) {
      lt_ = std::make_unique<LtGemm>(options.strict_fp32, options.split_k, workspace_.get(),
                                     kWorkspaceBytes, options.autotune, options.split_k_in_place,
                                     options.small_gemm || chains_on());
      side_lt_ = std::make_unique<LtGemm>(options.strict_fp32, options.split_k,
                                          side_workspace_.get(), kWorkspaceBytes, options.autotune,
                                          options.split_k_in_place, options.small_gemm);
    }
    bias_scratch_ = DeviceBuffer(kBiasScratchElems * sizeof(T));
    if (chains_on()) {  // the chains' grid barrier: two counters at zero
      chain_barrier_ = DeviceBuffer(2 * sizeof(unsigned));
      EQUIVAE_CUDA_CHECK(cudaMemset(chain_barrier_.get(), 0, 2 * sizeof(unsigned)));
      chain_blocks_ = cuda::small_gemm_chain_blocks();
      check(chain_blocks_ > 0, "cuda backend", "the persistent GEMM chain fits no SM");
#if !defined(EQUIVAE_CUDA_EMULATED)
      int cooperative = 0;
      EQUIVAE_CUDA_CHECK(
          cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, options.device));
      check(cooperative != 0, "cuda backend",
            "--persistent-chains needs cooperative launches, which this device does not offer");
#endif
    }
    // The per-channel sums' scratch of each stream (channel_sum_scratch): partial sums,
    // counters at zero.
    for (int lane = 0; lane < 2; ++lane) {
      channel_partials_[lane] = DeviceBuffer(kChannelPartials * sizeof(T));
      channel_arrivals_[lane] = DeviceBuffer(kSlicedChannels * sizeof(unsigned));
      EQUIVAE_CUDA_CHECK(
          cudaMemset(channel_arrivals_[lane].get(), 0, kSlicedChannels * sizeof(unsigned)));
    }
    // cudaMemset runs on the legacy stream, which the non-blocking streams do not wait for:
    // the counters are zero before any kernel reads them.
    EQUIVAE_CUDA_CHECK(cudaDeviceSynchronize());
  }
  ~CudaBackend() override {
#if !defined(EQUIVAE_CUDA_EMULATED)
    if (capturing_) {
      cudaGraph_t graph = nullptr;
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
    }
    if (stream_) cudaStreamSynchronize(stream_);
    if (side_stream_) cudaStreamSynchronize(side_stream_);
    for (cudaGraphExec_t exec : exec_)
      if (exec) cudaGraphExecDestroy(exec);
    lt_.reset();
    side_lt_.reset();
    if (cublas_) cublasDestroy(cublas_);
    convolutions_.reset();
    if (side_cublas_) cublasDestroy(side_cublas_);
    if (fork_event_) cudaEventDestroy(fork_event_);
    if (join_event_) cudaEventDestroy(join_event_);
    if (side_stream_) cudaStreamDestroy(side_stream_);
    blocks_.clear();  // frees whatever the plans did not release
    if (stream_) cudaStreamDestroy(stream_);
#endif
  }

  std::string name() const override {
#if defined(EQUIVAE_CUDA_EMULATED)
    return "cuda (emulated)";
#else
    return "cuda (" + device_name_ + (options_.strict_fp32 ? ", fp32" : ", tf32") + ")";
#endif
  }
  std::string describe() const override {
    std::string switches;  // the step's switches a user turns on (train_mnist's flags)
    if (options_.small_gemm) switches += " --small-gemm";
    if (options_.persistent_chains) switches += " --persistent-chains";
    if (options_.fused_relu_backward) switches += " --fused-relu-backward";
    if (options_.autotune) switches += " --autotune";
    if (options_.steps_per_graph > 1)
      switches += " --steps-per-graph " + std::to_string(options_.steps_per_graph);
    const std::string precision = std::is_same_v<T, double> ? "double"
                                  : options_.strict_fp32    ? "float, FP32 GEMMs"
                                                            : "float, TF32 GEMMs";
#if defined(EQUIVAE_CUDA_EMULATED)
    const std::string device = "cuda, emulated on the CPU";
#else
    const std::string device = "cuda, " + device_name_ + " (" + device_details_ + ")";
#endif
    return device + "; " + precision + (switches.empty() ? "" : ";" + switches);
  }

  // ---- memory: one cudaMalloc per block, owned here until release (or the backend's end).
  void* allocate(size_t bytes) override {
    not_capturing("allocate");
    DeviceBuffer buffer(bytes);
    void* p = buffer.get();
    EQUIVAE_CUDA_CHECK(cudaMemsetAsync(p, 0, std::max<size_t>(bytes, 256), stream_));
    blocks_.emplace(p, std::move(buffer));
    return p;
  }
  void release(void* block) override {
    if (!block) return;
    synchronize();
    check(blocks_.erase(block) == 1, "cuda backend", "release of a block it did not allocate");
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    not_capturing("upload");
    join_side_stream();
    // Pageable source: the call returns once the bytes are staged, so src may be reused.
    EQUIVAE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    not_capturing("download");
    join_side_stream();
    EQUIVAE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    EQUIVAE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  // Page-locked (cudaMallocHost), so that a download into it is one DMA at the link's speed
  // rather than a copy through the driver's pageable staging (the per-epoch state: 3 × 8 MB).
  void* allocate_host(size_t bytes) override {
    not_capturing("allocate_host");
    void* p = nullptr;
    EQUIVAE_CUDA_CHECK(cudaMallocHost(&p, std::max<size_t>(bytes, 1)));
    return p;
  }
  void release_host(void* block) noexcept override {
    if (block) cudaFreeHost(block);  // called from destructors: an error is not thrown there
  }
  void fill(T* dst, T value, size_t count) override {
    issue("fill", [=, self = this] { cuda::fill(dst, value, count, self->stream_); });
  }

  // ---- ops
  size_t relu_mask_bytes(int rows, int out) const override {
    const bool kept = std::is_same_v<T, float> && options_.fused_relu_backward;
    return kept ? lt_relu_mask_bytes(rows, out) : 0;
  }
  void dense_forward(T* y, const T* x, const T* W, const T* b, int B, int in, int out, bool relu,
                     void* relu_mask, bool accumulate) override {
    if (accumulate) join_side_stream();  // dense_forward_partial's product, on the side stream
    issue("dense_forward", [=, self = this] {
      const Gemm g{false, false, B, out, in, in, out, out, accumulate ? 1.0 : 0.0};
      if constexpr (std::is_same_v<T, float>) {
        const bool keep_mask = relu && relu_mask;
        LtEpilogue e{relu ? GemmEpilogue::relu_bias : GemmEpilogue::bias, b};
        if (keep_mask) e = {GemmEpilogue::relu_aux_bias, b, relu_mask, lt_relu_mask_ld(out)};
        // In a chain, with the layers after it. Its mask is the small GEMM's, which only the
        // small GEMM reads back: without small_gemm the layer keeps none (its backward reads y).
        const bool chain_mask = keep_mask && self->options_.small_gemm;
        if (self->chain_layer(
                g, x, W, y,
                keep_mask && !chain_mask ? LtEpilogue{GemmEpilogue::relu_bias, b} : e)) {
          if (keep_mask) self->note_relu_mask(relu_mask, chain_mask, GemmKernel::small);
          return;
        }
        self->flush_chain();
        // GEMM, bias and ReLU in one kernel: the small GEMM's, or cuBLASLt's epilogue.
        GemmKernel wrote = GemmKernel::small;
        const bool fused = self->small_gemm(g, x, W, y, e) ||
                           (self->options_.cublaslt_epilogues &&
                            self->lt_->run(g, x, W, y, e, self->stream_, GemmKernel::any, &wrote));
        if (keep_mask) self->note_relu_mask(relu_mask, fused, wrote);
        if (fused) return;
      }
      self->flush_chain();
      self->gemm(g, x, W, y);
      cuda::dense_bias_act(y, b, B, out, relu, self->stream_);
    });
  }
  void dense_forward_partial(T* y, const T* x, const T* W, int B, int in, int out,
                             const RowExpansion<T>* expand) override {
    // A product issued in order reads what a beside stretch (begin_beside) may have made.
    if (!options_.partial_beside) join_side_stream();
    const RowExpansion<T> e = expand ? *expand : RowExpansion<T>{};
    issue("dense_forward_partial", [=, self = this] {
      const Gemm g{false, false, B, out, in, in, out, out, 0.0};
      // The product, and its rows copied out, one after the other on one stream.
      const auto product = [=](bool side) {
        self->gemm(g, x, W, e.product ? e.product : y, side);
        if (e.product)
          cuda::pool_forward(y, e.product, e.offsets, e.members, e.rows, out,
                             self->lane_stream(side));
      };
      if (self->options_.partial_beside)  // until the accumulating dense_forward joins it
        self->on_side_stream([=] { product(/*side=*/true); });
      else
        product(/*side=*/false);
    });
  }
  void dense_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y, int B, int in,
                      int out, bool relu, bool accumulate_dx,
                      const InputRelu<T>& input_relu) override {
    check_input_relu(input_relu.db != nullptr, dx, accumulate_dx);
    issue("dense_backward", [=, self = this] {
      // dy → dz (the ReLU's mask, in place) and db, unless the layer above did both.
      self->relu_bias_backward(dy, db, y, B, out, relu);
      // dW[in,out] = xᵀ · dz on the side stream: nothing reads it before Adam, which joins the
      // side stream first (as do downloads, uploads, synchronize and the capture's end).
      // Every plan tensor has its own memory, so dz and x stay as they are meanwhile.
      self->on_side_stream([=] {
        self->gemm({true, false, in, out, B, in, out, out, 0.0}, x, dy, dW, /*side=*/true);
      });
      // dx[B, in] = dz · Wᵀ
      if (!dx) return;
      const Gemm g{false, true, B, in, out, out, out, in, accumulate_dx ? 1.0 : 0.0};
      if (!input_relu.db) {
        self->gemm(g, dy, W, dx);
        return;
      }
      // The layer below's backward begins here: in the GEMM's epilogue (DRELU_BGRAD, reading
      // the mask its forward kept, on the kind of kernel that wrote it; with drelu_alone the
      // mask alone, DRELU, and the bias gradient after it), else after the GEMM, from x = its
      // ReLU's output.
      if constexpr (std::is_same_v<T, float>) {
        const bool alone = self->options_.drelu_alone;
        const LtEpilogue e{alone ? GemmEpilogue::drelu : GemmEpilogue::drelu_bgrad,
                           alone ? nullptr : input_relu.db, const_cast<void*>(input_relu.mask),
                           lt_relu_mask_ld(in)};
        const auto writer = self->relu_mask_writers_.find(input_relu.mask);
        if (writer != self->relu_mask_writers_.end() &&
            ((writer->second == GemmKernel::small && self->small_gemm(g, dy, W, dx, e)) ||
             self->lt_->run(g, dy, W, dx, e, self->stream_, writer->second))) {
          self->read_relu_masks_.insert(input_relu.mask);
          if (alone) self->relu_bias_backward(dx, input_relu.db, x, B, in, /*relu=*/false);
          return;
        }
        self->read_relu_masks_.erase(input_relu.mask);
      }
      self->gemm(g, dy, W, dx);
      self->relu_bias_backward(dx, input_relu.db, x, B, in, true);
    });
  }
  void pool_forward(T* r, const T* e, const int32_t* offsets, const int32_t* members, int R,
                    int d) override {
    const bool side = beside_;
    issue("pool_forward", [=, self = this] {
      cuda::pool_forward(r, e, offsets, members, R, d, self->lane_stream(side));
    });
  }
  void pool_backward(T* de, const T* dr, const int32_t* offsets, const int32_t* /*members*/,
                     const int32_t* inv_offsets, const int32_t* inv_rows, int /*R*/, int N,
                     int d) override {
    const bool side = beside_;
    issue("pool_backward", [=, self = this] {
      cuda::pool_backward(de, dr, offsets, inv_offsets, inv_rows, N, d, self->lane_stream(side));
    });
  }
  void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                         uint64_t step, uint32_t row0) override {
    issue("sample_kl_forward", [=, self = this] {
      cuda::sample_kl_forward(v, eps, kl, mulv, B, d, seed, step, row0, self->stream_);
    });
  }
  void sample_kl_backward(T* dmulv, const T* dv, const T* dkl, const T* mulv, const T* eps, int B,
                          int d) override {
    issue("sample_kl_backward", [=, self = this] {
      cuda::sample_kl_backward(dmulv, dv, dkl, mulv, eps, B, d, self->stream_);
    });
  }
  void bernoulli_ll_forward(T* ll, const T* logits, const T* x, int B, int D) override {
    issue("bernoulli_ll_forward",
          [=, self = this] { cuda::bernoulli_ll_forward(ll, logits, x, B, D, self->stream_); });
  }
  void bernoulli_ll_backward(T* dlogits, const T* dll, const T* logits, const T* x, int B,
                             int D) override {
    issue("bernoulli_ll_backward", [=, self = this] {
      cuda::bernoulli_ll_backward(dlogits, dll, logits, x, B, D, self->stream_);
    });
  }
  void bernoulli_ll_forward_backward(T* ll, T* dlogits, const T* dll, const T* logits, const T* x,
                                     int B, int D) override {
    issue("bernoulli_ll_forward_backward", [=, self = this] {
      cuda::bernoulli_ll_forward_backward(ll, dlogits, dll, logits, x, B, D, self->stream_);
    });
  }
  void softmax_xent_forward(T* loss, T* probs, const T* logits, const int32_t* labels, int B,
                            int C) override {
    issue("softmax_xent_forward", [=, self = this] {
      cuda::softmax_xent_forward(loss, probs, logits, labels, B, C, self->stream_);
    });
  }
  void softmax_xent_backward(T* dlogits, const T* dloss, const T* probs, const int32_t* labels,
                             int B, int C) override {
    issue("softmax_xent_backward", [=, self = this] {
      cuda::softmax_xent_backward(dlogits, dloss, probs, labels, B, C, self->stream_);
    });
  }
  void expectation_forward(T* L, T* q, const T* logits, const T* ll, const T* kl,
                           const T* log_prior, int U, int C) override {
    issue("expectation_forward", [=, self = this] {
      cuda::expectation_forward(L, q, logits, ll, kl, log_prior, U, C, self->stream_);
    });
  }
  void expectation_backward(T* dlogits, T* dll, T* dkl, const T* dL, const T* q, const T* ll,
                            const T* kl, const T* log_prior, int U, int C) override {
    issue("expectation_backward", [=, self = this] {
      cuda::expectation_backward(dlogits, dll, dkl, dL, q, ll, kl, log_prior, U, C, self->stream_);
    });
  }
  void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const AdamConfig& config,
                 int64_t t, int64_t* non_finite_t) override {
    join_side_stream();
    issue("adam_step", [=, self = this] {
      cuda::adam_step(params, m, v, grads, n, config, t, non_finite_t, self->stream_);
    });
  }
  void dropout_forward(T* y, T* mask, const T* x, size_t n, T rate, uint64_t seed, uint64_t step,
                       uint32_t stream_id) override {
    issue("dropout_forward", [=, self = this] {
      cuda::dropout_forward(y, mask, x, n, rate, seed, step, stream_id, self->stream_);
    });
  }
  void dropout_backward(T* dx, const T* dy, const T* mask, size_t n) override {
    issue("dropout_backward",
          [=, self = this] { cuda::dropout_backward(dx, dy, mask, n, self->stream_); });
  }

  // ---- convolutions: cuDNN on the GPU (runtime/cuda/cudnn_conv.h; under the emulator the
  // CPU's im2col + GEMM, as GEMMs run in OpenBLAS there), or with conv_gemm the engine's
  // im2col / col2im kernels around the library GEMM (runtime/cuda/gemm_conv.h) on both. Bias,
  // ReLU and the bias gradient are the epilogue kernels of kernels/cuda/conv_epilogue.cu
  // either way.
  size_t conv2d_workspace_bytes(const Conv2dShape& s) override {
    return conv_workspace(s, false);
  }
  size_t conv_transpose2d_workspace_bytes(const Conv2dShape& s) override {
    return conv_workspace(s, true);
  }
  void conv2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s, bool relu,
                      void* workspace, size_t workspace_bytes) override {
    conv_forward(false, y, x, W, b, s, relu, workspace, workspace_bytes, "conv2d_forward");
  }
  void conv2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                       const Conv2dShape& s, bool relu, void* workspace,
                       size_t workspace_bytes) override {
    conv_backward(false, dx, dW, db, dy, x, W, y, s, relu, workspace, workspace_bytes,
                  "conv2d_backward");
  }
  void conv_transpose2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s,
                                bool relu, void* workspace, size_t workspace_bytes) override {
    conv_forward(true, y, x, W, b, s, relu, workspace, workspace_bytes, "conv_transpose2d_forward");
  }
  void conv_transpose2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                                 const Conv2dShape& s, bool relu, void* workspace,
                                 size_t workspace_bytes) override {
    conv_backward(true, dx, dW, db, dy, x, W, y, s, relu, workspace, workspace_bytes,
                  "conv_transpose2d_backward");
  }
  void gaussian_ll_forward(T* ll, const T* mu, const T* x, const T* logvar, int B, int C,
                           int P) override {
    issue("gaussian_ll_forward", [=, self = this] {
      cuda::gaussian_ll_forward(ll, mu, x, logvar, B, C, P, self->stream_);
    });
  }
  void gaussian_ll_backward(T* dmu, T* dlogvar, const T* dll, const T* mu, const T* x,
                            const T* logvar, int B, int C, int P) override {
    // dμ on the main stream: the decoder's backward starts from it. dlogvar, which only Adam
    // reads, with side_bias_gradient on the side stream beside that backward, as the dense
    // layers' bias gradients go (μ, x and dll stay as they are meanwhile: every plan tensor
    // has its own memory); its per-channel sums then use the side stream's scratch.
    const bool beside = dlogvar && options_.side_bias_gradient;
    if (dlogvar) uses_scratch(channel_sum_scratch(beside), beside);
    issue("gaussian_ll_backward", [=, self = this] {
      cuda::gaussian_ll_backward(dmu, beside ? nullptr : dlogvar, dll, mu, x, logvar, B, C, P,
                                 self->channel_sum_scratch(false), self->stream_);
      if (beside)
        self->on_side_stream([=] {
          cuda::gaussian_ll_backward<T>(nullptr, dlogvar, dll, mu, x, logvar, B, C, P,
                                        self->channel_sum_scratch(true), self->side_stream());
        });
    });
  }

  // ---- DeviceStepOps
  void load_step(const SlotLayout& layout, const int32_t* slots, const DeviceCounters* counters,
                 const SlotGather<T>* gathers, int count) override {
    check(count >= 0 && count <= kMaxSlotGathers, "cuda backend",
          "load_step: " + std::to_string(count) + " gathers (at most " +
              std::to_string(kMaxSlotGathers) + ")");
    cuda::GatherList list;
    if constexpr (std::is_same_v<T, float>) {
      for (int g = 0; g < count; ++g) {
        const SlotGather<T>& a = gathers[g];
        check(a.segment >= 0 && a.segment < kSlotSegments && a.rows <= layout.count[a.segment],
              "cuda backend", "load_step: a gather reads past its slot segment");
        int32_t offset = 0;
        for (int s = 0; s < a.segment; ++s) offset += layout.count[s];
        list.out[g] = a.out;
        list.data[g] = a.data;
        list.offset[g] = offset;
        list.rows[g] = a.rows;
        list.D[g] = a.D;
      }
      list.count = count;
    } else {
      check(count == 0, "cuda backend", "load_step: device-resident data sets are float only");
    }
    issue("load_step",
          [=, self = this] { cuda::load_step(layout, slots, counters, list, self->stream_); });
  }
  void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                         const DeviceCounters* counters, uint32_t row0) override {
    issue("sample_kl_forward", [=, self = this] {
      cuda::sample_kl_forward(v, eps, kl, mulv, B, d, seed, &counters->step, row0, self->stream_);
    });
  }
  void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const AdamConfig& config,
                 DeviceCounters* counters, bool beside) override {
    if (!beside) join_side_stream();
    int64_t* non_finite_t = &counters->non_finite_t;
    issue("adam_step", [=, self = this] {
      if (!beside) {
        cuda::adam_step(params, m, v, grads, n, config, &counters->t, non_finite_t, self->stream_);
        return;
      }
      self->on_side_stream([=] {
        cuda::adam_step(params, m, v, grads, n, config, &counters->t, non_finite_t,
                        self->side_stream());
      });
    });
  }
  bool early_adam() const override {
    return options_.early_adam;
  }
  void finish_step(double* table, const MeanSet<T>& set, DeviceCounters* counters) override {
    issue("finish_step",
          [=, self = this] { cuda::finish_step(table, set, counters, self->stream_); });
  }

  void begin_capture(int graph) override {
    check(!capturing_, "cuda backend", "begin_capture inside a capture");
    check_graph_slot(graph);
    drop_graph(graph);
    // Side-stream work issued before the capture is joined outside it: a join inside would
    // wait on an event recorded outside the capture, which a capture refuses.
    join_side_stream();
#if defined(EQUIVAE_CUDA_EMULATED)
    recorded_.clear();
#else
    EQUIVAE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
#endif
    capturing_ = true;
    capture_slot_ = graph;
  }
  void end_capture() override {
    check(capturing_, "cuda backend", "end_capture without begin_capture");
    join_side_stream();  // a capture must end with every forked stream joined back
    capturing_ = false;
    const int slot = capture_slot_;
#if defined(EQUIVAE_CUDA_EMULATED)
    graphs_[slot] = std::move(recorded_);
    recorded_.clear();
#else
    cudaGraph_t graph = nullptr;
    EQUIVAE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    // Kernel nodes keep the priority of the stream they were captured on; the flag makes a
    // replay use them rather than the launch stream's.
    const cudaError_t status = cudaGraphInstantiate(
        &exec_[slot], graph,
        options_.prioritise_critical_path ? cudaGraphInstantiateFlagUseNodePriority : 0);
    cudaGraphDestroy(graph);
    if (status != cudaSuccess) exec_[slot] = nullptr;  // its value is unspecified then
    cuda_check(status, "cudaGraphInstantiate");
#endif
    graph_ids_[slot] = ++captures_;
  }
  void abort_capture() override {
    if (!capturing_) return;
    capturing_ = false;
    chain_.clear();  // layers of the aborted capture
#if defined(EQUIVAE_CUDA_EMULATED)
    recorded_.clear();
#else
    // A fork left unjoined makes the capture end in an error (cudaErrorStreamCaptureUnjoined):
    // join it first (errors ignored: the capture may already be invalidated).
    if (side_pending_) {
      cudaEventRecord(join_event_, side_stream_);
      cudaStreamWaitEvent(stream_, join_event_, 0);
    }
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();     // clear the capture's sticky-free error, if any
    side_pending_ = false;  // the capture, with its fork, is gone
#endif
  }
  bool has_graph(int graph) const override {
    check_graph_slot(graph);
    return graph_ids_[graph] != 0;
  }
  uint64_t graph_id(int graph) const override {
    check_graph_slot(graph);
    return graph_ids_[graph];
  }
  void reset_graph() override {
    for (int slot = 0; slot < kGraphSlots; ++slot) drop_graph(slot);
  }
  void replay(int graph) override {
    check_graph_slot(graph);
    check(graph_ids_[graph] != 0 && !capturing_, "cuda backend", "replay without a captured graph");
    ++replays_[graph];
    flush_chain();  // eager layers issued before the replay run before it
#if defined(EQUIVAE_CUDA_EMULATED)
    for (const auto& op : graphs_[graph]) op();
#else
    EQUIVAE_CUDA_CHECK(cudaGraphLaunch(exec_[graph], stream_));
#endif
  }
  size_t replays(int graph) const override {
    check_graph_slot(graph);
    return replays_[graph];
  }
  int steps_per_graph() const override {
    return options_.steps_per_graph;
  }
  GemmTuning tune_gemms() override {
    not_capturing("tune_gemms");
    GemmTuning report;
    if (!options_.autotune) return report;
#if defined(EQUIVAE_CUDA_EMULATED)
    // GEMMs run in OpenBLAS here, with nothing to choose; the first call reports a change so
    // that the tests run the plan's capture-again path as a GPU's first tuning does. With the
    // small GEMM as a candidate, the emulated LtGemm hands it every plan it fits (as if it had
    // won), so its route after tuning runs here too.
    report.changed = emulated_tuned_ ? 0 : 1;
    emulated_tuned_ = true;
    if constexpr (std::is_same_v<T, float>) {
      lt_->tune();
      side_lt_->tune();
    }
#else
    synchronize();  // the timing owns the device (and the GEMM workspaces)
    if constexpr (std::is_same_v<T, float>) {
      report += lt_->tune();
      report += side_lt_->tune();
    }
#endif
    return report;
  }
  typename DeviceStepOps<T>::FusedRelu fused_relu() const override {
    return {int(relu_mask_writers_.size()), int(read_relu_masks_.size())};
  }
  typename DeviceStepOps<T>::ConvolutionRoutes convolution_routes() const override {
    using ConvolutionRoutes = typename DeviceStepOps<T>::ConvolutionRoutes;
    const auto* timed = dynamic_cast<const TimedConvolutions*>(convolutions_.get());
    return timed ? ConvolutionRoutes{timed->calls_chosen(), timed->calls_lowered()}
                 : ConvolutionRoutes{};
  }
  size_t persistent_chains_run() const override {
    return chains_run_;
  }
  int small_gemm_outputs() const override {
    if constexpr (std::is_same_v<T, float>)
      if (small_gemm_tuned()) return lt_->small_plans() + side_lt_->small_plans();
    return int(small_gemm_outputs_.size());
  }
  // Autotuned small GEMM: every GEMM it could take goes through LtGemm, which times it against
  // cuBLASLt's candidates per plan.
  bool small_gemm_tuned() const {
    return options_.small_gemm && options_.autotune && !options_.strict_fp32;
  }
  bool begin_beside() override {
    if (!options_.trunk_beside) return false;
    check(!beside_, "cuda backend", "begin_beside inside another beside stretch");
#if !defined(EQUIVAE_CUDA_EMULATED)
    fork_side_stream();  // the side stream waits for everything issued so far
#endif
    beside_ = true;
    return true;
  }
  void end_beside() override {
    beside_ = false;
  }
  void synchronize() override {
    not_capturing("synchronize");
    join_side_stream();
    EQUIVAE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void push_range([[maybe_unused]] const char* name) override {
#if !defined(EQUIVAE_CUDA_EMULATED)
    nvtxRangePushA(name);
#endif
  }
  void pop_range() override {
#if !defined(EQUIVAE_CUDA_EMULATED)
    nvtxRangePop();
#endif
  }

 private:
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;
  // Per-chunk partial bias gradients (kernels/cuda/dense.cu): 64 chunks of up to 4,096 columns.
  static constexpr size_t kBiasScratchElems = size_t(64) * 4096;
  // Channels whose per-channel sums may be split over image slices (more: a block each), and
  // their partial sums: up to kMaxChannelSumSlices each.
  static constexpr size_t kSlicedChannels = 4096;
  static constexpr size_t kChannelPartials = size_t(cuda::kMaxChannelSumSlices) * kSlicedChannels;

#if defined(EQUIVAE_CUDA_EMULATED)
  // The emulator has one stream. Side-stream work runs at the join that waits for it — the
  // latest moment a GPU may run it — so a main-stream op that reads its results without a
  // join sees stale values, and one that overwrites its inputs before the join corrupts
  // them: the tests see a missing join. (At run time: a captured graph records the join.)
  template <class F>
  void on_side_stream(F&& work) {
    side_queue_.emplace_back(std::forward<F>(work));
  }
  void join_side_stream() {
    side_scratch_.clear();  // the streams meet here
    issue("join", [self = this] {
      std::vector<std::function<void()>> work;
      work.swap(self->side_queue_);
      for (const auto& w : work) w();
    });
  }
  // A handle of its own (never dereferenced: the emulator ignores streams), so a test watching
  // the launches (emu::set_launch_observer) sees which kernels a GPU would run beside.
  cudaStream_t side_stream() const {
    static char token;
    return reinterpret_cast<cudaStream_t>(&token);
  }
#else
  // Forks the side stream and issues `work` there (its kernels on side_stream(), its GEMMs
  // with side = true).
  template <class F>
  void on_side_stream(F&& work) {
    fork_side_stream();
    work();
  }
  cudaStream_t side_stream() const {
    return side_stream_;
  }
  cublasMath_t math_mode() const {
    return options_.strict_fp32 || !std::is_same_v<T, float> ? CUBLAS_PEDANTIC_MATH
                                                             : CUBLAS_TF32_TENSOR_OP_MATH;
  }
  // The side stream waits for everything issued so far on the main stream.
  void fork_side_stream() {
    flush_chain();  // the side stream waits for the pending layers too
    EQUIVAE_CUDA_CHECK(cudaEventRecord(fork_event_, stream_));
    EQUIVAE_CUDA_CHECK(cudaStreamWaitEvent(side_stream_, fork_event_, 0));
    side_pending_ = true;
  }
  // The main stream waits for everything issued so far on the side stream.
  void join_side_stream() {
    flush_chain();  // what follows a join (a download, the capture's end) sees every layer
    if (!side_pending_) return;
    EQUIVAE_CUDA_CHECK(cudaEventRecord(join_event_, side_stream_));
    EQUIVAE_CUDA_CHECK(cudaStreamWaitEvent(stream_, join_event_, 0));
    side_pending_ = false;
  }
#endif

  // Scratch of the per-channel sums (the convolutions' bias gradients, the Gaussian
  // likelihood's log-variance gradient) of the main or the side stream: one call at a time on
  // each, each call leaving its counters at zero.
  cuda::ChannelSumScratch<T> channel_sum_scratch(bool side) const {
    return {static_cast<T*>(channel_partials_[side].get()), kChannelPartials,
            static_cast<unsigned*>(channel_arrivals_[side].get()), kSlicedChannels};
  }
  // Scratch memory an op issued now is given, on the side stream or the main one. The two
  // streams run side by side from a fork to the next join, so scratch that a side-stream op
  // took and a main-stream op issued after it takes before that join is a race on a GPU.
  // The emulator runs them one after the other and could not see it: it checks the ranges
  // (and throws Error on an overlap); a GPU build checks nothing.
  void uses_scratch([[maybe_unused]] const void* p, [[maybe_unused]] size_t bytes,
                    [[maybe_unused]] bool side) {
#if defined(EQUIVAE_CUDA_EMULATED)
    if (!p || bytes == 0) return;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p), hi = lo + bytes;
    if (side) {
      side_scratch_.emplace_back(lo, hi);
      return;
    }
    for (const auto& [a, b] : side_scratch_)
      check(hi <= a || b <= lo, "cuda backend",
            "scratch memory given to the main stream while a side-stream op still uses it "
            "(a race on a GPU: the streams meet only at the next join)");
#endif
  }
  void uses_scratch(const cuda::ChannelSumScratch<T>& scratch, bool side) {
    uses_scratch(scratch.partials, scratch.partial_elems * sizeof(T), side);
    uses_scratch(scratch.arrivals, scratch.arrival_elems * sizeof(unsigned), side);
  }
  // The stream of an op issued beside the main stream (begin_beside) or not.
  cudaStream_t lane_stream(bool side) const {
    return side ? side_stream() : stream_;
  }
  // The start of a dense ReLU layer's backward: dy[B,out] masked in place by (y > 0) when
  // relu, and db = Σ_rows dz when db is not null — on the main stream in one kernel, or with
  // side_bias_gradient the mask there and db on the side stream (one stream at a time uses
  // the bias scratch: all bias gradients run on the same one).
  void relu_bias_backward(T* dy, T* db, const T* y, int B, int out, bool relu) {
    T* scratch = static_cast<T*>(bias_scratch_.get());
    if (db) uses_scratch(scratch, kBiasScratchElems * sizeof(T), options_.side_bias_gradient);
    if (!options_.side_bias_gradient) {
      if (db)
        cuda::dense_backward_bias(dy, db, y, B, out, relu, scratch, kBiasScratchElems, stream_);
      else if (relu)
        cuda::relu_mask(dy, y, size_t(B) * size_t(out), stream_);
      return;
    }
    if (relu) cuda::relu_mask(dy, y, size_t(B) * size_t(out), stream_);
    if (db)
      on_side_stream([=, self = this] {
        cuda::dense_backward_bias(dy, db, y, B, out, /*relu=*/false, scratch, kBiasScratchElems,
                                  self->side_stream());
      });
  }
  // Which masks a forward's epilogue wrote, and which kind of kernel wrote each (a forward
  // that fell back to the plain path wrote none, and its layer's backward then reads y
  // instead). Host-side, decided at capture like the routes themselves.
  void note_relu_mask(const void* mask, bool written, GemmKernel writer) {
    if (written) {
      relu_mask_writers_[mask] = writer;
    } else {
      relu_mask_writers_.erase(mask);
      read_relu_masks_.erase(mask);
    }
  }

  using DeviceStepOps<T>::kGraphSlots;
  static void check_graph_slot(int graph) {
    check(graph >= 0 && graph < kGraphSlots, "cuda backend",
          "graph slot " + std::to_string(graph) + " does not exist (0 to " +
              std::to_string(kGraphSlots - 1) + ")");
  }
  void drop_graph(int slot) {
#if defined(EQUIVAE_CUDA_EMULATED)
    graphs_[slot].clear();
#else
    if (exec_[slot]) {
      synchronize();
      cudaGraphExecDestroy(exec_[slot]);
      exec_[slot] = nullptr;
    }
#endif
    graph_ids_[slot] = 0;
  }

  void not_capturing(const char* what) const {
    check(!capturing_, "cuda backend",
          std::string(what) + " inside a graph capture (only ops may be captured)");
  }

  // Runs an op now, or records it while capturing under the emulator (a real capture
  // records the stream's work itself). An NVTX range names every op. In a beside stretch
  // (begin_beside) only convolutions and pooling, which then run on the side stream (under
  // the emulator: queued as side-stream work, run at the join that waits for it).
  // With persistent_chains, a pending chain of dense forwards runs before any other op (a
  // dense forward adds itself to it, or runs it first: dense_forward).
  template <class F>
  void issue(const char* name, F&& op) {
    const bool flush = chains_on() && std::strcmp(name, "dense_forward") != 0;
    if (beside_) {
      const std::string op_name = name;
      check(op_name.rfind("conv", 0) == 0 || op_name.rfind("pool_", 0) == 0, "cuda backend",
            op_name +
                " cannot run beside the main stream (begin_beside: convolutions and "
                "pooling only)");
    }
#if defined(EQUIVAE_CUDA_EMULATED)
    if (beside_) {
      std::function<void()> beside = [self = this, work = std::function<void()>(op)] {
        self->on_side_stream(work);
      };
      if (capturing_)
        recorded_.push_back(std::move(beside));
      else
        beside();
      return;
    }
    if (capturing_) {
      recorded_.emplace_back([self = this, flush, work = std::function<void()>(op)] {
        if (flush) self->flush_chain();
        work();
      });
      return;
    }
    if (flush) flush_chain();
    op();
#else
    nvtxRangePushA(name);
    {
      cuda::ProgrammaticLaunch programmatic(programmatic_launch_,  // the op's own kernels
                                            options_.programmatic_max_blocks);
      if (flush) flush_chain();
      op();
    }
    nvtxRangePop();
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess)
      throw Error("cuda backend", std::string(name) + ": " + cudaGetErrorString(status));
#endif
  }

  // ---- convolution helpers: the linear part of each op, in ConvolutionCalls
  // (convolution_calls.h): cuDNN (emulated: the CPU's convolution behind the same calls,
  // cudnn_conv_emulated.h), or lowered to GEMMs with conv_gemm.
  static int conv_output_plane(const Conv2dShape& s, bool transposed) {
    return cpu::conv_out_h(s, transposed) * cpu::conv_out_w(s, transposed);
  }
  // The bytes a convolution's calls need: its ConvolutionCalls'; with side_conv_filter or
  // trunk_beside twice that from a 256-byte boundary, for a part per stream (conv_lane).
  size_t conv_workspace(const Conv2dShape& s, bool transposed) {
    check_conv_shape(s, transposed, transposed ? "conv_transpose2d" : "conv2d");
    check_conv_nchw(s, transposed ? "conv_transpose2d" : "conv2d");
    const size_t main = convolutions().workspace_bytes(s, transposed);
    return split_conv_workspace() ? 2 * ((main + 255) / 256 * 256) : main;
  }
  bool split_conv_workspace() const {
    return options_.side_conv_filter || options_.trunk_beside;
  }
  // Where a convolution's calls run: a stream, its part of the workspace and its per-channel
  // sums' scratch. Each stream has its own of both, so convolutions on the two streams never
  // share scratch (each stream runs its own calls one after another).
  struct ConvLane {
    cudaStream_t stream;
    void* workspace;
    size_t bytes;
    cuda::ChannelSumScratch<T> scratch;
  };
  // The workspace splits at its middle (rounded down to 256 bytes), whatever the shape: the
  // convolutions of a plan share one workspace, and a split point that moved with the shape
  // would hand one shape's side part to another's main part. Each part holds what the shape
  // needs: the op checked the whole workspace against twice that.
  ConvLane conv_lane(void* workspace, size_t bytes, bool side) {
    if (!split_conv_workspace()) return {stream_, workspace, bytes, channel_sum_scratch(false)};
    const size_t half = bytes / 2 / 256 * 256;
    if (!side) return {stream_, workspace, half, channel_sum_scratch(false)};
    return {side_stream(), static_cast<char*>(workspace) + half, bytes - half,
            channel_sum_scratch(true)};
  }
  // One convolution's forward: y = act(conv(x, W) + b), or the transpose's, on the main
  // stream or, in a beside stretch, the side stream.
  void conv_forward(bool transposed, T* y, const T* x, const T* W, const T* b, const Conv2dShape& s,
                    bool relu, void* workspace, size_t workspace_bytes, const char* name) {
    check_conv_workspace(workspace, workspace_bytes, conv_workspace(s, transposed), name);
    const bool side = beside_;
    const ConvLane lane = conv_lane(workspace, workspace_bytes, side);
    uses_scratch(lane.workspace, lane.bytes, side);
    issue(name, [=, self = this] {
      // The transpose's forward is the convolution's backward-data (cudnn_conv.h).
      ConvolutionCalls& c = self->convolutions();
      if (c.forward_with_epilogue(s, transposed, y, x, W, b, relu, lane.workspace, lane.bytes,
                                  lane.stream))
        return;
      if (transposed)
        c.backward_data(s, true, y, x, W, lane.workspace, lane.bytes, lane.stream);
      else
        c.forward(s, false, y, x, W, lane.workspace, lane.bytes, lane.stream);
      cuda::conv_bias_act(y, b, s.N, s.C_out, conv_output_plane(s, transposed), relu, lane.stream);
    });
  }
  // One convolution's backward: dy masked by the ReLU and db (db on the side stream with
  // side_bias_gradient), then dx and dW (either null) from dz[N, C_out, Ho, Wo]. dW goes to the
  // side stream with side_conv_filter: nothing reads it before Adam, which joins the side
  // stream first, and dz and x stay as they are meanwhile (every plan tensor has its own
  // memory).
  void conv_backward(bool transposed, T* dx, T* dW, T* db, T* dy, const T* x, const T* W,
                     const T* y, const Conv2dShape& s, bool relu, void* workspace,
                     size_t workspace_bytes, const char* name) {
    check_conv_workspace(workspace, workspace_bytes, conv_workspace(s, transposed), name);
    const bool side = beside_;
    const bool dW_beside = dW && options_.side_conv_filter && !side;
    // With side_bias_gradient the ReLU's mask stays on the main stream (an elementwise pass) and
    // the per-channel sums of db go beside, as the dense layers' bias gradients do.
    const bool db_beside = db && options_.side_bias_gradient && !side;
    const ConvLane lane = conv_lane(workspace, workspace_bytes, side);
    const ConvLane beside = conv_lane(workspace, workspace_bytes, true);
    // In the order the streams meet them: the bias gradient, the weight gradient (maybe on the
    // side stream), the input gradient.
    // db beside runs on the side stream with its per-channel-sum scratch whether or not the
    // workspace is split (beside, the lane of a split workspace, is the main stream's when not).
    const cuda::ChannelSumScratch<T> db_scratch =
        db_beside ? channel_sum_scratch(true) : lane.scratch;
    if (db) uses_scratch(db_scratch, side || db_beside);
    if (dW_beside) uses_scratch(beside.workspace, beside.bytes, true);
    if (dW || dx) uses_scratch(lane.workspace, lane.bytes, side);
    issue(name, [=, self = this] {
      const int plane = conv_output_plane(s, transposed);
      if (db_beside) {
        if (relu) cuda::relu_mask(dy, y, size_t(s.N) * s.C_out * plane, lane.stream);
        self->on_side_stream([=] {
          cuda::conv_backward_bias(dy, db, y, s.N, s.C_out, plane, /*relu=*/false, db_scratch,
                                   self->side_stream());
        });
      } else {
        cuda::conv_backward_bias(dy, db, y, s.N, s.C_out, plane, relu, lane.scratch, lane.stream);
      }
      ConvolutionCalls& c = self->convolutions();
      // The weight gradient's conv_x and dconv_y: a transpose's conv_x is dz (its output side).
      const T* conv_x = transposed ? dy : x;
      const T* dconv_y = transposed ? x : dy;
      if (dW_beside) {
        self->on_side_stream([=] {
          self->convolutions().backward_filter(s, transposed, dW, conv_x, dconv_y, beside.workspace,
                                               beside.bytes, beside.stream);
        });
      } else if (dW) {
        c.backward_filter(s, transposed, dW, conv_x, dconv_y, lane.workspace, lane.bytes,
                          lane.stream);
      }
      if (!dx) return;
      if (transposed)  // its input gradient is the convolution's forward
        c.forward(s, true, dx, dy, W, lane.workspace, lane.bytes, lane.stream);
      else
        c.backward_data(s, false, dx, dy, W, lane.workspace, lane.bytes, lane.stream);
    });
  }
  // Created on first use: the plan asks the workspace sizes at build time, before any capture.
  // conv_gemm: the lowering alone; autotune: cuDNN or the lowering per call, as timed
  // (timed_convolutions.h); else cuDNN.
  ConvolutionCalls& convolutions() {
    if (convolutions_) return *convolutions_;
    auto lowered = [this] {
      return std::make_unique<GemmConvolutions>(
          std::is_same_v<T, double>,
          [this](const Gemm& g, const void* A, const void* B, void* C, cudaStream_t stream) {
            library_gemm(g, static_cast<const T*>(A), static_cast<const T*>(B), static_cast<T*>(C),
                         stream != stream_);
          });
    };
    if (options_.conv_gemm) {
      convolutions_ = lowered();
      return *convolutions_;
    }
    not_capturing("the first convolution (ask its workspace size before capturing)");
    auto cudnn = std::make_unique<CudnnConvolutions>(
        stream_, side_stream(), std::is_same_v<T, double>, options_.strict_fp32, options_.autotune);
    if (options_.autotune)
      convolutions_ = std::make_unique<TimedConvolutions>(
          std::move(cudnn), lowered(),
          [this](const Conv2dShape& s, bool transposed, ConvolutionCalls& a, ConvolutionCalls& b) {
            return time_convolution(s, transposed, a, b);
          });
    else
      convolutions_ = std::move(cudnn);
    return *convolutions_;
  }
  // Seconds per call of a shape's three calls on each implementation (TimedConvolutions): on a
  // GPU measured (convolution_timing.h), except inside a capture, where nothing can be timed and
  // cuDNN keeps every call. Under the emulator, where time means nothing, a fixed split that
  // runs both: the forward and the weight gradient lowered, the input gradient on cuDNN's
  // stand-in.
  TimedConvolutions::Seconds time_convolution([[maybe_unused]] const Conv2dShape& s,
                                              [[maybe_unused]] bool transposed,
                                              [[maybe_unused]] ConvolutionCalls& cudnn,
                                              [[maybe_unused]] ConvolutionCalls& lowered) {
    using Call = TimedConvolutions;
    TimedConvolutions::Seconds seconds;
#if defined(EQUIVAE_CUDA_EMULATED)
    seconds[Call::kForward] = {2, 1};
    seconds[Call::kBackwardData] = {1, 2};
    seconds[Call::kBackwardFilter] = {2, 1};
#else
    if (!capturing_) return time_convolution_calls<T>(s, transposed, cudnn, lowered, stream_);
    for (auto& call : seconds) call = {1, std::numeric_limits<double>::infinity()};
#endif
    return seconds;
  }

  // persistent_chains (CudaBackendOptions): on where the small GEMM can run (float, TF32, not
  // autotuned).
  bool chains_on() const {
    return std::is_same_v<T, float> && options_.persistent_chains && !options_.strict_fp32 &&
           !options_.autotune;
  }
  // Adds a dense forward (C = A·W, then e) to the pending chain when the small GEMM takes it;
  // false: not taken (the caller runs the pending chain, then the layer as before). A full
  // chain runs at once.
  bool chain_layer([[maybe_unused]] const Gemm& g, [[maybe_unused]] const T* A,
                   [[maybe_unused]] const T* B, [[maybe_unused]] T* C,
                   [[maybe_unused]] const LtEpilogue& e) {
    if constexpr (std::is_same_v<T, float>) {
      if (!chains_on() || g.trans_b || !small_gemm_fits(g, e.kind)) return false;
      cuda::SmallGemmStep step;
      step.A = A, step.B = B, step.C = C;
      step.M = g.M, step.N = g.N, step.K = g.K, step.lda = g.lda, step.ldb = g.ldb,
      step.ldc = g.ldc;
      step.beta = float(g.beta);
      step.tail = lt_->small_tail(e);
      step.splits = cuda::small_gemm_splits(g.M, g.N, g.K, lt_->small_split());
      chain_.push_back(step);
      small_gemm_outputs_.insert(C);
      if (int(chain_.size()) == cuda::kMaxChainSteps) flush_chain();
      return true;
    }
    return false;
  }
  // Runs the pending chain (one cooperative launch on the main stream), if any; a launch that
  // fails throws here, naming the chain, whoever asked (a join, a download, another op).
  void flush_chain() {
    if constexpr (std::is_same_v<T, float>) {
      if (chain_.empty()) return;
      const size_t count = chain_.size();
      cuda::SmallGemmSteps steps;
      std::copy(chain_.begin(), chain_.end(), steps.step);
      chain_.clear();  // taken, whatever the launch does
      auto* barrier = static_cast<unsigned*>(chain_barrier_.get());
      cuda::small_gemm_chain(steps, int(count), /*trans_b=*/false, lt_->small_split(),
                             {barrier, barrier + 1}, chain_blocks_, stream_);
#if !defined(EQUIVAE_CUDA_EMULATED)
      const cudaError_t status = cudaGetLastError();
      if (status != cudaSuccess)
        throw Error("cuda backend", "persistent chain of " + std::to_string(count) +
                                        " dense layers: " + cudaGetErrorString(status));
#endif
      ++chains_run_;
    }
  }

  // C = op(A)·op(B) + β·C, then the epilogue, in the engine's tensor-core GEMM where the
  // options and the shape send it there (CudaBackendOptions::small_gemm; autotuned, LtGemm
  // chooses per plan instead), on the main stream or with side on the side stream, with that
  // stream's LtGemm's scratch; false: nothing enqueued.
  bool small_gemm([[maybe_unused]] const Gemm& g, [[maybe_unused]] const T* A,
                  [[maybe_unused]] const T* B, [[maybe_unused]] T* C,
                  [[maybe_unused]] const LtEpilogue& e, [[maybe_unused]] bool side = false) {
    if constexpr (std::is_same_v<T, float>) {
      if (!options_.small_gemm || options_.strict_fp32 || options_.autotune ||
          !small_gemm_fits(g, e.kind))
        return false;
      (side ? side_lt_ : lt_)->run_small(g, A, B, C, e, lane_stream(side));
      small_gemm_outputs_.insert(C);
      return true;
    }
    return false;
  }

  // C = op(A)·op(B) + β·C on the main stream, or with side on the side stream.
  void gemm(const Gemm& g, const T* A, const T* B, T* C, [[maybe_unused]] bool side = false) {
    if (g.M <= 0 || g.N <= 0) return;
    if (small_gemm(g, A, B, C, LtEpilogue{}, side)) return;
    if constexpr (std::is_same_v<T, float>)
      if ((options_.lt_backward ||
           (small_gemm_tuned() && small_gemm_fits(g, GemmEpilogue::none))) &&
          (side ? side_lt_ : lt_)->run(g, A, B, C, LtEpilogue{}, lane_stream(side)))
        return;
    library_gemm(g, A, B, C, side);
  }
  // The same in cuBLAS alone (the emulator: the CPU's GEMM), whatever the GEMM options say.
  void library_gemm(const Gemm& g, const T* A, const T* B, T* C, [[maybe_unused]] bool side) {
    if (g.M <= 0 || g.N <= 0) return;
#if defined(EQUIVAE_CUDA_EMULATED)
    host_gemm(g, A, B, C);  // the emulator's device memory is host memory
#else
    // Row-major C = op(A)·op(B) ⇔ column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap operands and M/N.
    const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const T one = T(1), beta = T(g.beta);
    cublasHandle_t handle = side ? side_cublas_ : cublas_;
    if constexpr (std::is_same_v<T, float>)
      EQUIVAE_CUBLAS_CHECK(
          cublasSgemm(handle, tb, ta, g.N, g.M, g.K, &one, B, g.ldb, A, g.lda, &beta, C, g.ldc));
    else
      EQUIVAE_CUBLAS_CHECK(
          cublasDgemm(handle, tb, ta, g.N, g.M, g.K, &one, B, g.ldb, A, g.lda, &beta, C, g.ldc));
#endif
  }

  CudaBackendOptions options_;
  cudaStream_t stream_ = nullptr;
  std::unordered_map<void*, DeviceBuffer> blocks_;
  bool capturing_ = false;
  int capture_slot_ = 0;                                    // the graph slot begin_capture named
  uint64_t graph_ids_[DeviceStepOps<T>::kGraphSlots] = {};  // graph_id's, per slot (0: none)
  uint64_t captures_ = 0;                                   // captures ended so far
  size_t replays_[DeviceStepOps<T>::kGraphSlots] = {};
#if defined(EQUIVAE_CUDA_EMULATED)
  std::vector<std::function<void()>> recorded_;
  std::vector<std::function<void()>> graphs_[DeviceStepOps<T>::kGraphSlots];
  std::vector<std::function<void()>> side_queue_;  // side-stream work waiting for its join
  std::vector<std::pair<uintptr_t, uintptr_t>> side_scratch_;  // uses_scratch, since the join
  bool emulated_tuned_ = false;
#else
  std::string device_name_;
  std::string device_details_;  // compute capability, SMs, CUDA runtime and driver versions
  cublasHandle_t cublas_ = nullptr;
  cudaGraphExec_t exec_[DeviceStepOps<T>::kGraphSlots] = {};
  cudaStream_t side_stream_ = nullptr;
  cudaEvent_t fork_event_ = nullptr, join_event_ = nullptr;
  cublasHandle_t side_cublas_ = nullptr;
  bool side_pending_ = false;
  bool programmatic_launch_ = false;  // options_.programmatic_launch, where the device has it
#endif
  DeviceBuffer workspace_, side_workspace_;  // the GEMM libraries' (none under the emulator)
  DeviceBuffer bias_scratch_;
  DeviceBuffer channel_partials_[2], channel_arrivals_[2];  // channel_sum_scratch(side)
  bool beside_ = false;                                     // between begin_beside and end_beside
  std::unique_ptr<LtGemm> lt_, side_lt_;                    // float only: cuBLASLt on each stream
  std::unique_ptr<ConvolutionCalls> convolutions_;          // created on first use
  std::unordered_map<const void*, GemmKernel> relu_mask_writers_;  // fused_relu(): kept masks
  std::unordered_set<const void*> read_relu_masks_;                // fused_relu()
  std::unordered_set<const void*> small_gemm_outputs_;             // small_gemm_outputs()
  std::vector<cuda::SmallGemmStep> chain_;  // persistent_chains: dense forwards not yet run
  DeviceBuffer chain_barrier_;              // their grid barrier's counters
  int chain_blocks_ = 0;                    // blocks of a chain's launch
  size_t chains_run_ = 0;                   // chain launches so far (persistent_chains_run())
};

}  // namespace

#if defined(EQUIVAE_CUDA_EMULATED)

template <class T>
std::unique_ptr<Backend<T>> make_emulated_cuda_backend(const CudaBackendOptions& options) {
  return std::make_unique<CudaBackend<T>>(options);
}
template std::unique_ptr<Backend<float>> make_emulated_cuda_backend<float>(
    const CudaBackendOptions&);
template std::unique_ptr<Backend<double>> make_emulated_cuda_backend<double>(
    const CudaBackendOptions&);

#else

template <class T>
std::unique_ptr<Backend<T>> make_cuda_backend(const CudaBackendOptions& options) {
  return std::make_unique<CudaBackend<T>>(options);
}
template std::unique_ptr<Backend<float>> make_cuda_backend<float>(const CudaBackendOptions&);
template std::unique_ptr<Backend<double>> make_cuda_backend<double>(const CudaBackendOptions&);

bool cuda_available() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();  // a failed query leaves no error behind for later calls
  return ok;
}

#endif

}  // namespace equivae
