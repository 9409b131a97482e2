#pragma once
// ConvolutionCalls (convolution_calls.h) as GEMMs between the lowering kernels of
// kernels/cuda/conv_lowering.cu (CudaBackendOptions::conv_gemm). For the forward convolution
// conv_y[N, Co, Ho, Wo] = conv(conv_x[N, C, H, W], W[Co, C, KH, KW]) of the op (conv_geometry.h),
// with K = C·KH·KW and P = Ho·Wo, over a chunk of n images (Q = n·P pixels; the workspace holds
// col[K, Q] and yc[Co, Q]):
//   forward          col = im2col(conv_x);  yc = W·col             (Co × Q × K);  conv_y = yc
//                    with its two leading axes swapped (CNHW → NCHW)
//   backward_data    yc = dconv_y swapped (NCHW → CNHW);  col = Wᵀ·yc  (K × Q × Co);
//                    dconv_x = col2im(col)
//   backward_filter  col = im2col(conv_x);  yc = dconv_y swapped;  dW (+)= yc·colᵀ  (Co × K × Q),
//                    the chunks after the first adding onto dW (β = 1)
// A chunk is as many images as a workspace of at most workspace_cap bytes holds (64 MiB by
// default, cuDNN's cap in cudnn_conv.cpp; at least one image), so a GEMM covers many images at
// once: at the SVHN model's 32 → 64 layer (B = 160) the forward is one 64 × 10,240 × 512
// product in 23.6 MB, where cuDNN's deterministic NCHW algorithms ran at 10–12 TFLOP/s on an
// H200; a larger batch runs in several chunks rather than a workspace that grows with it. The
// GEMMs go through the backend's library GEMM (cuBLAS on a GPU, TF32 unless strict_fp32; the
// CPU's under the emulator), on the call's stream. Deterministic: the GEMMs are, the chunks
// run in order, and col2im gathers in a fixed order. The op's forward takes its bias and ReLU
// in its last pass (forward_with_epilogue), so no epilogue kernel reads the output again.
#include <algorithm>
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
  static constexpr size_t kDefaultWorkspaceCap = size_t(64) << 20;
  // C = op(A)·op(B) + β·C on the given stream, in the tensors' precision (the backend's).
  using GemmRunner =
      std::function<void(const Gemm& g, const void* A, const void* B, void* C, cudaStream_t)>;
  GemmConvolutions(bool double_precision, GemmRunner gemm,
                   size_t workspace_cap = kDefaultWorkspaceCap)
      : double_(double_precision), gemm_(std::move(gemm)), cap_(workspace_cap) {}

  // col and yc for one chunk: (K + Co)·n·P elements (yc from a 256-byte boundary).
  size_t workspace_bytes(const cpu::Conv2dShape& s, bool transposed) override {
    const Lowering l = lowering(s, transposed);
    return l.yc_offset + size_t(l.Co) * l.chunk * l.P * element();
  }
  // Images per chunk of the shape (the tests' view of the split).
  int chunk_images(const cpu::Conv2dShape& s, bool transposed) const {
    return lowering(s, transposed).chunk;
  }

  void forward(const cpu::Conv2dShape& s, bool transposed, void* conv_y, const void* conv_x,
               const void* W, void* workspace, size_t bytes, cudaStream_t stream) override {
    lowered_forward(s, transposed, conv_y, conv_x, W, nullptr, false, workspace, bytes, stream);
  }
  void backward_data(const cpu::Conv2dShape& s, bool transposed, void* dconv_x, const void* dconv_y,
                     const void* W, void* workspace, size_t bytes, cudaStream_t stream) override {
    lowered_backward_data(s, transposed, dconv_x, dconv_y, W, nullptr, false, workspace, bytes,
                          stream);
  }
  // The bias and ReLU in the call's last pass: the swap to NCHW (conv2d), col2im (a transpose).
  bool forward_with_epilogue(const cpu::Conv2dShape& s, bool transposed, void* y, const void* x,
                             const void* W, const void* b, bool relu, void* workspace, size_t bytes,
                             cudaStream_t stream) override {
    if (transposed)
      lowered_backward_data(s, true, y, x, W, b, relu, workspace, bytes, stream);
    else
      lowered_forward(s, false, y, x, W, b, relu, workspace, bytes, stream);
    return true;
  }
  void backward_filter(const cpu::Conv2dShape& s, bool transposed, void* dW, const void* conv_x,
                       const void* dconv_y, void* workspace, size_t bytes,
                       cudaStream_t stream) override {
    run(s, transposed, workspace, bytes, "conv backward filter (im2col + GEMM)",
        [&](auto* col, auto* yc, const Lowering& l, const cuda::ConvLoweringShape& g, int n0) {
          using T = std::remove_pointer_t<decltype(col)>;
          const int Q = g.N * l.P;
          cuda::im2col(col, static_cast<const T*>(conv_x) + n0 * l.in_image, g, stream);
          cuda::swap_leading(yc, static_cast<const T*>(dconv_y) + n0 * l.out_image, g.N, l.Co, l.P,
                             stream);
          gemm_({false, true, l.Co, l.K, Q, Q, Q, l.K, n0 > 0 ? 1.0 : 0.0}, yc, col, dW, stream);
        });
  }

 private:
  // forward and backward_data, each with an optional epilogue (bias b, null: none; relu).
  void lowered_forward(const cpu::Conv2dShape& s, bool transposed, void* conv_y, const void* conv_x,
                       const void* W, const void* b, bool relu, void* workspace, size_t bytes,
                       cudaStream_t stream) {
    run(s, transposed, workspace, bytes, "conv forward (im2col + GEMM)",
        [&](auto* col, auto* yc, const Lowering& l, const cuda::ConvLoweringShape& g, int n0) {
          using T = std::remove_pointer_t<decltype(col)>;
          const int Q = g.N * l.P;
          cuda::im2col(col, static_cast<const T*>(conv_x) + n0 * l.in_image, g, stream);
          gemm_({false, false, l.Co, Q, l.K, l.K, Q, Q, 0.0}, W, col, yc, stream);
          cuda::swap_leading(static_cast<T*>(conv_y) + n0 * l.out_image, yc, l.Co, g.N, l.P, stream,
                             static_cast<const T*>(b), relu);
        });
  }
  void lowered_backward_data(const cpu::Conv2dShape& s, bool transposed, void* dconv_x,
                             const void* dconv_y, const void* W, const void* b, bool relu,
                             void* workspace, size_t bytes, cudaStream_t stream) {
    run(s, transposed, workspace, bytes, "conv backward data (GEMM + col2im)",
        [&](auto* col, auto* yc, const Lowering& l, const cuda::ConvLoweringShape& g, int n0) {
          using T = std::remove_pointer_t<decltype(col)>;
          const int Q = g.N * l.P;
          cuda::swap_leading(yc, static_cast<const T*>(dconv_y) + n0 * l.out_image, g.N, l.Co, l.P,
                             stream);
          gemm_({true, false, l.K, Q, l.Co, l.K, Q, Q, 0.0}, W, yc, col, stream);
          cuda::col2im(static_cast<T*>(dconv_x) + n0 * l.in_image, col, g, stream,
                       static_cast<const T*>(b), relu);
        });
  }

  struct Lowering {
    cuda::ConvLoweringShape g;  // the whole batch
    int Co, K, P;
    int chunk;                   // images per chunk
    size_t in_image, out_image;  // elements of one image of conv_x, of conv_y
    size_t yc_offset;            // bytes from the workspace's start to yc
  };
  size_t element() const { return double_ ? sizeof(double) : sizeof(float); }
  Lowering lowering(const cpu::Conv2dShape& s, bool transposed) const {
    const cpu::Conv2dShape c = forward_convolution(s, transposed);
    const int Ho = cpu::conv_out_h(c, false), Wo = cpu::conv_out_w(c, false);
    Lowering l{{c.N, c.C_in, c.H, c.W, c.KH, c.KW, c.stride, c.pad, Ho, Wo},
               c.C_out,
               c.C_in * c.KH * c.KW,
               Ho * Wo,
               1,
               size_t(c.C_in) * c.H * c.W,
               size_t(c.C_out) * Ho * Wo,
               0};
    // Per image: its K·P patch elements and Co·P outputs, plus the alignment's slack.
    const size_t per_image = (size_t(l.K) + l.Co) * l.P * element();
    l.chunk = int(std::clamp<size_t>(cap_ > 256 ? (cap_ - 256) / per_image : 0, 1, size_t(c.N)));
    l.yc_offset = (size_t(l.K) * l.chunk * l.P * element() + 255) / 256 * 256;
    return l;
  }
  // The call chunk by chunk in the tensors' precision, with col and yc carved from the
  // workspace, after the workspace check: op(col, yc, lowering, chunk's shape, first image).
  template <class F>
  void run(const cpu::Conv2dShape& s, bool transposed, void* workspace, size_t bytes,
           const char* call, F&& op) {
    const Lowering l = lowering(s, transposed);
    const size_t needed = workspace_bytes(s, transposed);
    check(bytes >= needed, "cuda backend",
          std::string(call) + ": workspace of " + std::to_string(bytes) + " bytes, " +
              std::to_string(needed) + " needed");
    char* base = static_cast<char*>(workspace);
    for (int n0 = 0; n0 < l.g.N; n0 += l.chunk) {
      cuda::ConvLoweringShape g = l.g;
      g.N = std::min(l.chunk, l.g.N - n0);
      if (double_)
        op(reinterpret_cast<double*>(base), reinterpret_cast<double*>(base + l.yc_offset), l, g,
           n0);
      else
        op(reinterpret_cast<float*>(base), reinterpret_cast<float*>(base + l.yc_offset), l, g, n0);
    }
  }

  bool double_;
  GemmRunner gemm_;
  size_t cap_;
};

}  // namespace equivae
