#pragma once
// ConvolutionCalls that runs each call of each shape on whichever of two implementations was
// measured faster (CudaBackendOptions::autotune without conv_gemm): cuDNN's plan (its own
// algorithms timed by cudnnFind*) or the lowering to GEMMs (gemm_conv.h). The first time a
// shape's workspace is asked — the plans ask before any capture — `measure` times each of its
// three calls on both, and a call goes to the lowering only where it is more than 3% faster
// (pick_fastest, gemm_choice.h: cuDNN is the first candidate, as a GEMM's heuristic choice is),
// so timing noise does not swap equal routes. The workspace holds what the chosen routes need.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <utility>

#include "kernels/cpu/ops.h"
#include "runtime/cuda/convolution_calls.h"
#include "runtime/cuda/gemm_choice.h"

namespace equivae {

class TimedConvolutions final : public ConvolutionCalls {
 public:
  enum Call { kForward = 0, kBackwardData = 1, kBackwardFilter = 2 };
  // seconds[call][0]: cuDNN's, [call][1]: the lowering's (infinite where it could not run).
  using Seconds = std::array<std::array<double, 2>, 3>;
  using Measure = std::function<Seconds(const cpu::Conv2dShape& s, bool transposed,
                                        ConvolutionCalls& cudnn, ConvolutionCalls& lowered)>;
  static constexpr double kMargin = 0.03;

  TimedConvolutions(std::unique_ptr<ConvolutionCalls> cudnn,
                    std::unique_ptr<ConvolutionCalls> lowered, Measure measure)
      : cudnn_(std::move(cudnn)), lowered_(std::move(lowered)), measure_(std::move(measure)) {}

  size_t workspace_bytes(const cpu::Conv2dShape& s, bool transposed) override {
    const std::array<bool, 3>& lowered = choice(s, transposed);
    const bool any_lowered = lowered[0] || lowered[1] || lowered[2],
               any_cudnn = !(lowered[0] && lowered[1] && lowered[2]);
    return std::max(any_cudnn ? cudnn_->workspace_bytes(s, transposed) : 0,
                    any_lowered ? lowered_->workspace_bytes(s, transposed) : 0);
  }
  void forward(const cpu::Conv2dShape& s, bool transposed, void* conv_y, const void* conv_x,
               const void* W, void* workspace, size_t bytes, cudaStream_t stream) override {
    on(s, transposed, kForward).forward(s, transposed, conv_y, conv_x, W, workspace, bytes, stream);
  }
  void backward_data(const cpu::Conv2dShape& s, bool transposed, void* dconv_x, const void* dconv_y,
                     const void* W, void* workspace, size_t bytes, cudaStream_t stream) override {
    on(s, transposed, kBackwardData)
        .backward_data(s, transposed, dconv_x, dconv_y, W, workspace, bytes, stream);
  }
  void backward_filter(const cpu::Conv2dShape& s, bool transposed, void* dW, const void* conv_x,
                       const void* dconv_y, void* workspace, size_t bytes,
                       cudaStream_t stream) override {
    on(s, transposed, kBackwardFilter)
        .backward_filter(s, transposed, dW, conv_x, dconv_y, workspace, bytes, stream);
  }
  // The op's forward is forward (conv2d) or backward_data (a transpose): lowered, with its
  // epilogue in the same pass; on cuDNN the backend adds the epilogue.
  bool forward_with_epilogue(const cpu::Conv2dShape& s, bool transposed, void* y, const void* x,
                             const void* W, const void* b, bool relu, void* workspace, size_t bytes,
                             cudaStream_t stream) override {
    return &on(s, transposed, transposed ? kBackwardData : kForward) == lowered_.get() &&
           lowered_->forward_with_epilogue(s, transposed, y, x, W, b, relu, workspace, bytes,
                                           stream);
  }

  // The calls timed on both so far (a shape decided without timing — inside a capture — counts
  // none), and how many of them went to the lowering (for the log).
  int calls_chosen() const { return timed_calls_; }
  int calls_lowered() const {
    int n = 0;
    for (const auto& [key, lowered] : choices_)
      n += int(std::count(lowered.begin(), lowered.end(), true));
    return n;
  }
  // Whether call runs lowered for the shape (measured on first use).
  bool lowered(const cpu::Conv2dShape& s, bool transposed, Call call) {
    return choice(s, transposed)[call];
  }

 private:
  const std::array<bool, 3>& choice(const cpu::Conv2dShape& s, bool transposed) {
    const ConvolutionKey key = convolution_key(s, transposed);
    auto it = choices_.find(key);
    if (it != choices_.end()) return it->second;
    const Seconds seconds = measure_(s, transposed, *cudnn_, *lowered_);
    std::array<bool, 3> lowered{};
    for (int call = 0; call < 3; ++call) {
      lowered[call] = pick_fastest({seconds[call][0], seconds[call][1]}, kMargin) == 1;
      timed_calls_ += std::isfinite(seconds[call][0]) && std::isfinite(seconds[call][1]);
    }
    return choices_.emplace(key, lowered).first->second;
  }
  ConvolutionCalls& on(const cpu::Conv2dShape& s, bool transposed, Call call) {
    return choice(s, transposed)[call] ? *lowered_ : *cudnn_;
  }

  std::unique_ptr<ConvolutionCalls> cudnn_, lowered_;
  Measure measure_;
  std::map<ConvolutionKey, std::array<bool, 3>> choices_;
  int timed_calls_ = 0;
};

}  // namespace equivae
