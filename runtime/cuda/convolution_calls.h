#pragma once
// The three calls a convolution's linear part is made of, in the terms of one forward
// convolution conv_y = conv(conv_x, W) (conv_geometry.h): the CUDA backend's conv ops are
// built on them, and two implementations offer them —
//   CudnnConvolutions (cudnn_conv.h; cudnn_conv_emulated.h under the emulator): cuDNN;
//   GemmConvolutions (gemm_conv.h): im2col / col2im kernels around one GEMM per call
//                    (CudaBackendOptions::conv_gemm).
// Each call runs on the stream it is given, in its workspace (at least workspace_bytes of the
// shape, else Error naming the call), and overwrites its output.
#include <array>
#include <cstddef>

#include "kernels/cpu/ops.h"

#if defined(EQUIVAE_CUDA_EMULATED)
#include "kernels/emu/emu_runtime.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace equivae {

// A shape and direction as a map key, for what an implementation makes or chooses per shape.
using ConvolutionKey = std::array<int, 11>;
inline ConvolutionKey convolution_key(const cpu::Conv2dShape& s, bool transposed) {
  return {s.N,
          s.C_in,
          s.H,
          s.W,
          s.C_out,
          s.KH,
          s.KW,
          s.stride,
          s.pad,
          s.output_padding,
          transposed ? 1 : 0};
}

class ConvolutionCalls {
 public:
  virtual ~ConvolutionCalls() = default;
  // Workspace for all three calls of the shape (the largest of the three).
  virtual size_t workspace_bytes(const cpu::Conv2dShape& s, bool transposed) = 0;
  virtual void forward(const cpu::Conv2dShape& s, bool transposed, void* conv_y, const void* conv_x,
                       const void* W, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) = 0;
  virtual void backward_data(const cpu::Conv2dShape& s, bool transposed, void* dconv_x,
                             const void* dconv_y, const void* W, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream) = 0;
  virtual void backward_filter(const cpu::Conv2dShape& s, bool transposed, void* dW,
                               const void* conv_x, const void* dconv_y, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream) = 0;
  // The op's whole forward, y = act(conv(x, W) + b) (conv2d: forward; a transpose: its
  // backward_data; b may be null), where the implementation applies the bias and ReLU in the
  // same pass as the convolution; false, with nothing issued, where it does not (cuDNN): the
  // backend then runs the linear call and its own epilogue kernel.
  virtual bool forward_with_epilogue(const cpu::Conv2dShape& s, bool transposed, void* y,
                                     const void* x, const void* W, const void* b, bool relu,
                                     void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    (void)s, (void)transposed, (void)y, (void)x, (void)W, (void)b, (void)relu, (void)workspace,
        (void)workspace_bytes, (void)stream;
    return false;
  }
};

}  // namespace equivae
