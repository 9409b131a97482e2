#pragma once
// The CUDA backend's convolutions on cuDNN (real build only; the emulated build has
// cudnn_conv_emulated.h, the same calls on the CPU's im2col + GEMM). Only the linear part, in
// the terms of a forward convolution conv_y = conv(conv_x, W) (conv_geometry.h):
//   forward          conv_y  = conv(conv_x, W)            cudnnConvolutionForward
//   backward_data    dconv_x = convᵀ(dconv_y, W)          cudnnConvolutionBackwardData
//   backward_filter  dW      = ∂⟨conv_y, dconv_y⟩/∂W      cudnnConvolutionBackwardFilter
// conv2d maps onto them directly (conv_x = x, conv_y = y); conv_transpose2d with the roles
// swapped (conv_x = its output y [N, C_out, Ho, Wo], conv_y = its input x, and W[C_in, C_out,
// KH, KW] as cuDNN's filter [K = C_in, C = C_out]): its forward is backward_data, its dx is
// forward, its dW is backward_filter. Bias and ReLU are the backend's epilogue kernels.
//
// Per shape (and direction) one plan: descriptors plus the algorithm of each of the three
// calls, chosen once — by cuDNN's heuristics (nothing runs on the device: safe inside a graph
// capture), or with `benchmark` by timing the candidates (cudnnFind*: the plan is then made
// outside any capture, as the backend's workspace query makes it before a step is captured;
// inside one the heuristics decide) — deterministic algorithms only, at most 64 MiB of
// workspace; with strict_fp32 the FMA math mode (no TF32). Without cuDNN at build time
// (EQUIVAE_HAVE_CUDNN undefined) the constructor throws Error.
#include <array>
#include <cstddef>
#include <map>
#include <memory>

#include "kernels/cpu/ops.h"
#include "runtime/cuda/convolution_calls.h"

#if !defined(EQUIVAE_CUDA_EMULATED)
#include <cuda_runtime_api.h>
#endif

namespace equivae {

class CudnnConvolutions final : public ConvolutionCalls {
 public:
  // double_precision: the tensors are double (else float). Creates the cuDNN handle on stream
  // (where cudnnFind* times its candidates). Each call runs on the stream it is given: the
  // weight gradient may go to side_stream beside the input gradient, which gets a handle of
  // its own (as each cuBLAS stream has), so no handle is bound to two streams at once; each
  // call has its own workspace.
  CudnnConvolutions(cudaStream_t stream, cudaStream_t side_stream, bool double_precision,
                    bool strict_fp32, bool benchmark = false);
  ~CudnnConvolutions() override;
  CudnnConvolutions(const CudnnConvolutions&) = delete;
  CudnnConvolutions& operator=(const CudnnConvolutions&) = delete;

  size_t workspace_bytes(const cpu::Conv2dShape& s, bool transposed) override;
  void forward(const cpu::Conv2dShape& s, bool transposed, void* conv_y, const void* conv_x,
               const void* W, void* workspace, size_t workspace_bytes,
               cudaStream_t stream) override;
  void backward_data(const cpu::Conv2dShape& s, bool transposed, void* dconv_x, const void* dconv_y,
                     const void* W, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream) override;
  void backward_filter(const cpu::Conv2dShape& s, bool transposed, void* dW, const void* conv_x,
                       const void* dconv_y, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) override;

 private:
  struct Handle;
  struct Plan;
  Plan& plan(const cpu::Conv2dShape& s, bool transposed);
  // Runs a new plan's three calls once on scratch (c: the convolution they run).
  void warm_up(const cpu::Conv2dShape& s, bool transposed, const cpu::Conv2dShape& c,
               size_t workspace);

  std::unique_ptr<Handle> handle_;
  std::map<ConvolutionKey, std::unique_ptr<Plan>> plans_;
};

}  // namespace equivae
