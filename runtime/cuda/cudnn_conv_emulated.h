#pragma once
// CudnnConvolutions for the emulated build (the emulator's device memory is host memory):
// cudnn_conv.h's three calls on the forward convolution conv_y = conv(conv_x, W) of
// conv_geometry.h, computed by the CPU's convolution (im2col + OpenBLAS) — forward by its
// forward, backward_data by its input gradient, backward_filter by its weight gradient. So the
// emulated CUDA backend makes the cuDNN calls a GPU makes (which call serves which op, with
// which operands) and the tests hold them against the CPU backend; cuDNN's own descriptors
// and algorithms (cudnn_conv.cpp) are checked on a GPU. Nothing to choose or time.
#include <cstddef>

#include "kernels/cpu/ops.h"
#include "kernels/emu/emu_runtime.h"
#include "runtime/cuda/conv_geometry.h"
#include "runtime/cuda/convolution_calls.h"
#include "runtime/error.h"

namespace equivae {

class CudnnConvolutions final : public ConvolutionCalls {
 public:
  CudnnConvolutions(cudaStream_t /*stream*/, cudaStream_t /*side_stream*/, bool double_precision,
                    bool /*strict_fp32*/, bool /*benchmark*/ = false)
      : double_(double_precision) {}
  CudnnConvolutions(const CudnnConvolutions&) = delete;
  CudnnConvolutions& operator=(const CudnnConvolutions&) = delete;

  size_t workspace_bytes(const cpu::Conv2dShape& s, bool transposed) override {
    return cpu::conv2d_workspace_size(forward_convolution(s, transposed)) *
           (double_ ? sizeof(double) : sizeof(float));
  }
  void forward(const cpu::Conv2dShape& s, bool transposed, void* conv_y, const void* conv_x,
               const void* W, void* workspace, size_t bytes, cudaStream_t /*stream*/) override {
    run(s, transposed, workspace, bytes, "cudnnConvolutionForward", [&](auto* ws, auto t) {
      using T = decltype(t);
      cpu::conv2d_forward<T>(static_cast<T*>(conv_y), static_cast<const T*>(conv_x),
                             static_cast<const T*>(W), nullptr, forward_convolution(s, transposed),
                             false, ws);
    });
  }
  void backward_data(const cpu::Conv2dShape& s, bool transposed, void* dconv_x, const void* dconv_y,
                     const void* W, void* workspace, size_t bytes,
                     cudaStream_t /*stream*/) override {
    run(s, transposed, workspace, bytes, "cudnnConvolutionBackwardData", [&](auto* ws, auto t) {
      using T = decltype(t);  // dconv_y is read only: no ReLU to mask it with
      cpu::conv2d_backward<T>(static_cast<T*>(dconv_x), nullptr, nullptr,
                              static_cast<T*>(const_cast<void*>(dconv_y)), nullptr,
                              static_cast<const T*>(W), nullptr, forward_convolution(s, transposed),
                              false, ws);
    });
  }
  void backward_filter(const cpu::Conv2dShape& s, bool transposed, void* dW, const void* conv_x,
                       const void* dconv_y, void* workspace, size_t bytes,
                       cudaStream_t /*stream*/) override {
    run(s, transposed, workspace, bytes, "cudnnConvolutionBackwardFilter", [&](auto* ws, auto t) {
      using T = decltype(t);
      cpu::conv2d_backward<T>(nullptr, static_cast<T*>(dW), nullptr,
                              static_cast<T*>(const_cast<void*>(dconv_y)),
                              static_cast<const T*>(conv_x), nullptr, nullptr,
                              forward_convolution(s, transposed), false, ws);
    });
  }

 private:
  // The call in the tensors' precision, after cudnn_conv.cpp's workspace check.
  template <class F>
  void run(const cpu::Conv2dShape& s, bool transposed, void* workspace, size_t bytes,
           const char* call, F&& op) {
    const size_t needed = workspace_bytes(s, transposed);
    check(bytes >= needed, "cuda backend",
          std::string(call) + ": workspace of " + std::to_string(bytes) + " bytes, " +
              std::to_string(needed) + " needed");
    if (double_)
      op(static_cast<double*>(workspace), double{});
    else
      op(static_cast<float*>(workspace), float{});
  }

  bool double_;
};

}  // namespace equivae
