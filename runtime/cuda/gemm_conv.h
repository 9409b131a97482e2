#pragma once
// ConvolutionCalls (convolution_calls.h) as one GEMM per call between the lowering kernels of
// kernels/cuda/conv_lowering.cu (CudaBackendOptions::conv_gemm). For the forward convolution
// conv_y[N, Co, Ho, Wo] = conv(conv_x[N, C, H, W], W[Co, C, KH, KW]) of the op (conv_geometry.h),
// with K = C·KH·KW, P = Ho·Wo, Q = N·P, and the workspace holding col[K, Q] and yc[Co, Q]:
//   forward          col = im2col(conv_x);  yc = W·col             (Co × Q × K);  conv_y = yc
//                    with its two leading axes swapped (CNHW → NCHW)
//   backward_data    yc = dconv_y swapped (NCHW → CNHW);  col = Wᵀ·yc  (K × Q × Co);
//                    dconv_x = col2im(col)
//   backward_filter  col = im2col(conv_x);  yc = dconv_y swapped;  dW = yc·colᵀ  (Co × K × Q)
// Each GEMM covers every image at once: at the SVHN model's 32 → 64 layer (B = 160) the forward
// is one 64 × 10,240 × 512 product, where cuDNN's deterministic NCHW algorithms ran at 10–12
// TFLOP/s on an H200. The GEMMs go through the backend's library GEMM (cuBLAS on a GPU, TF32
// unless strict_fp32; the CPU's under the emulator), on the call's stream. Deterministic: the
// GEMMs are, and col2im gathers in a fixed order.
//
// Workspace: K·Q + Co·Q elements (col from the start, yc from the next 256-byte boundary), the
// same for all three calls. 23.6 MB at the SVHN 32 → 64 layer, B = 160 (float).
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/ops.h"
#include "runtime/cuda/conv_geometry.h"
#include "runtime/cuda/convolution_calls.h"
#include "runtime/cuda/gemm_shape.h"
#include "runtime/error.h"

namespace equivae {

class GemmConvolutions final : public ConvolutionCalls {
 public:
  // C = op(A)·op(B) + β·C on the given stream, in the tensors' precision (the backend's).
  using GemmRunner =
      std::function<void(const Gemm& g, const void* A, const void* B, void* C, cudaStream_t)>;
  GemmConvolutions(bool double_precision, GemmRunner gemm)
      : double_(double_precision), gemm_(std::move(gemm)) {}

  size_t workspace_bytes(const cpu::Conv2dShape& s, bool transposed) override {
    const Lowering l = lowering(s, transposed);
    return l.yc_offset + size_t(l.Co) * l.Q * element();
  }

  void forward(const cpu::Conv2dShape& s, bool transposed, void* conv_y, const void* conv_x,
               const void* W, void* workspace, size_t bytes, cudaStream_t stream) override {
    run(s, transposed, workspace, bytes, "conv forward (im2col + GEMM)",
        [&](auto* col, auto* yc, const Lowering& l) {
          using T = std::remove_pointer_t<decltype(col)>;
          cuda::im2col(col, static_cast<const T*>(conv_x), l.g, stream);
          gemm_({false, false, l.Co, l.Q, l.K, l.K, l.Q, l.Q, 0.0}, W, col, yc, stream);
          cuda::swap_leading(static_cast<T*>(conv_y), yc, l.Co, l.g.N, l.P, stream);
        });
  }
  void backward_data(const cpu::Conv2dShape& s, bool transposed, void* dconv_x, const void* dconv_y,
                     const void* W, void* workspace, size_t bytes, cudaStream_t stream) override {
    run(s, transposed, workspace, bytes, "conv backward data (GEMM + col2im)",
        [&](auto* col, auto* yc, const Lowering& l) {
          using T = std::remove_pointer_t<decltype(col)>;
          cuda::swap_leading(yc, static_cast<const T*>(dconv_y), l.g.N, l.Co, l.P, stream);
          gemm_({true, false, l.K, l.Q, l.Co, l.K, l.Q, l.Q, 0.0}, W, yc, col, stream);
          cuda::col2im(static_cast<T*>(dconv_x), col, l.g, stream);
        });
  }
  void backward_filter(const cpu::Conv2dShape& s, bool transposed, void* dW, const void* conv_x,
                       const void* dconv_y, void* workspace, size_t bytes,
                       cudaStream_t stream) override {
    run(s, transposed, workspace, bytes, "conv backward filter (im2col + GEMM)",
        [&](auto* col, auto* yc, const Lowering& l) {
          using T = std::remove_pointer_t<decltype(col)>;
          cuda::im2col(col, static_cast<const T*>(conv_x), l.g, stream);
          cuda::swap_leading(yc, static_cast<const T*>(dconv_y), l.g.N, l.Co, l.P, stream);
          gemm_({false, true, l.Co, l.K, l.Q, l.Q, l.Q, l.K, 0.0}, yc, col, dW, stream);
        });
  }

 private:
  struct Lowering {
    cuda::ConvLoweringShape g;
    int Co, K, P, Q;
    size_t yc_offset;  // bytes from the workspace's start to yc
  };
  size_t element() const { return double_ ? sizeof(double) : sizeof(float); }
  Lowering lowering(const cpu::Conv2dShape& s, bool transposed) const {
    const cpu::Conv2dShape c = forward_convolution(s, transposed);
    const int Ho = cpu::conv_out_h(c, false), Wo = cpu::conv_out_w(c, false);
    Lowering l{{c.N, c.C_in, c.H, c.W, c.KH, c.KW, c.stride, c.pad, Ho, Wo},
               c.C_out,
               c.C_in * c.KH * c.KW,
               Ho * Wo,
               c.N * Ho * Wo,
               0};
    l.yc_offset = (size_t(l.K) * l.Q * element() + 255) / 256 * 256;
    return l;
  }
  // The call in the tensors' precision with col and yc carved from the workspace, after the
  // workspace check.
  template <class F>
  void run(const cpu::Conv2dShape& s, bool transposed, void* workspace, size_t bytes,
           const char* call, F&& op) {
    const Lowering l = lowering(s, transposed);
    const size_t needed = workspace_bytes(s, transposed);
    check(bytes >= needed, "cuda backend",
          std::string(call) + ": workspace of " + std::to_string(bytes) + " bytes, " +
              std::to_string(needed) + " needed");
    char* base = static_cast<char*>(workspace);
    if (double_)
      op(reinterpret_cast<double*>(base), reinterpret_cast<double*>(base + l.yc_offset), l);
    else
      op(reinterpret_cast<float*>(base), reinterpret_cast<float*>(base + l.yc_offset), l);
  }

  bool double_;
  GemmRunner gemm_;
};

}  // namespace equivae
