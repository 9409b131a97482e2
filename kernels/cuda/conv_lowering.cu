// Convolutions lowered to one GEMM each (runtime/cuda/gemm_conv.h): the three data movements
// around the GEMM, for the forward convolution conv_y = conv(conv_x, W) of a valid shape
// (conv_geometry.h) with x[N, C, H, W], y[N, Co, Ho, Wo], K = C·KH·KW rows of patch and
// Q = N·Ho·Wo output pixels:
//   im2col        col[K, Q]  ← x        col[(c·KH + i)·KW + j, (n·Ho + oh)·Wo + ow]
//                                        = x[n, c, oh·s − pad + i, ow·s − pad + j] (0 outside)
//   col2im        dx ← dcol[K, Q]      dx[n, c, h, w] = Σ over the (i, j) whose window covers
//                                        (h, w) of dcol[(c, i, j), (n, oh, ow)], i then j
//                                        ascending (a gather: no atomics, the same bits on
//                                        every run)
//   swap_leading  out[B, A, P] ← in[A, B, P]   NCHW ↔ CNHW, so that the GEMM sees all N·P pixels
//                                        of a channel as one row: one GEMM of Co × Q × K
//                                        rather than N small ones per image.
// col2im and swap_leading can also add the op's bias and apply its ReLU as they write (the
// conv2d forward's last pass is the swap, a transpose's is col2im): conv_bias_act's pass over
// the output, fused.
// Why: cuDNN's deterministic FP32 algorithms for the SVHN model's NCHW layers ran at 10–12
// TFLOP/s on an H200 (BM_Op/19–20: 67 µs forward, 112 µs backward for 32 → 64 channels at
// 16 × 16, B = 160), where one GEMM of those sizes is a few µs.
//
// Launch geometry:
// - kernel_im2col: grid (blocks over Q, groups of kIm2colRows patch rows); a thread takes one
//   pixel q, decodes its window once and walks the group's rows (c, i, j) by increments; a warp
//   writes 32 consecutive q of each row (coalesced) and reads x strided by s along ow. (One
//   thread per element decoded q with three divisions per element, about as long as its
//   memory traffic.)
// - kernel_col2im: one thread per element of dx, grid-stride; each visits only the ≤ ⌈KH/s⌉·⌈KW/s⌉
//   kernel positions whose window can cover it (i ≡ h + pad mod s).
// - kernel_swap_leading: one thread per element of out, grid-stride; consecutive threads take
//   consecutive p, so both sides are read and written in runs of P.
// Every index fits 32 bits but col's (K·Q may not; its row offsets are 64-bit): conv_check.h
// keeps x, y and W under 2^31 elements, so Q = N·Ho·Wo and K = C·KH·KW are too.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kIm2colRows = 16;  // patch rows per thread: its pixel decoded once for them

// conv_bias_act's epilogue on one element of channel c (NaN propagates, as there).
template <class T>
__device__ __forceinline__ T bias_act(T v, const T* __restrict__ bias, int c, bool relu) {
  const T z = bias ? v + bias[c] : v;
  return relu ? (z < T(0) ? T(0) : z) : z;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_im2col(T* __restrict__ col, const T* __restrict__ x, ConvLoweringShape g) {
  grid_dependency_prologue();
  const int Q = g.N * g.Ho * g.Wo, K = g.C * g.KH * g.KW;
  for (int k0 = blockIdx.y * kIm2colRows; k0 < K; k0 += gridDim.y * kIm2colRows) {
    const int k_end = k0 + kIm2colRows < K ? k0 + kIm2colRows : K;
    for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < Q; q += gridDim.x * blockDim.x) {
      // The pixel's window, decoded once for the rows this thread walks.
      const int ow = q % g.Wo, oh = (q / g.Wo) % g.Ho, n = q / (g.Wo * g.Ho);
      const int h0 = oh * g.stride - g.pad, w0 = ow * g.stride - g.pad;
      int j = k0 % g.KW, i = (k0 / g.KW) % g.KH, c = k0 / (g.KW * g.KH);
      for (int k = k0; k < k_end; ++k) {
        const int h = h0 + i, w = w0 + j;
        col[size_t(k) * Q + q] = (h >= 0 && h < g.H && w >= 0 && w < g.W)
                                     ? x[((size_t(n) * g.C + c) * g.H + h) * g.W + w]
                                     : T(0);
        if (++j == g.KW) {  // the next row: (c, i, j + 1), carrying into i and c
          j = 0;
          if (++i == g.KH) i = 0, ++c;
        }
      }
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_col2im(T* __restrict__ dx, const T* __restrict__ dcol, ConvLoweringShape g, int total,
                  const T* __restrict__ bias, bool relu) {
  grid_dependency_prologue();
  const int Q = g.N * g.Ho * g.Wo;
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    const int w = e % g.W, h = (e / g.W) % g.H, c = (e / (g.W * g.H)) % g.C,
              n = e / (g.W * g.H * g.C);
    // Window row oh covers h with its row i when oh·s + i = h + pad: i ≡ h + pad (mod s).
    const int hp = h + g.pad, wp = w + g.pad;
    T acc = T(0);
    for (int i = hp % g.stride; i < g.KH && i <= hp; i += g.stride) {
      const int oh = (hp - i) / g.stride;
      if (oh >= g.Ho) continue;
      const T* row = dcol + size_t((c * g.KH + i) * g.KW) * Q + (n * g.Ho + oh) * g.Wo;
      for (int j = wp % g.stride; j < g.KW && j <= wp; j += g.stride) {
        const int ow = (wp - j) / g.stride;
        if (ow < g.Wo) acc += row[size_t(j) * Q + ow];
      }
    }
    dx[e] = bias_act(acc, bias, c, relu);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_swap_leading(T* __restrict__ out, const T* __restrict__ in, int A, int B, int P,
                        const T* __restrict__ bias, bool relu) {
  grid_dependency_prologue();
  const int total = A * B * P;
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    const int p = e % P, a = (e / P) % A, b = e / (P * A);  // out[b, a, p]
    out[e] = bias_act(in[(size_t(a) * B + b) * P + p], bias, a, relu);
  }
}

}  // namespace

template <class T>
void im2col(T* col, const T* x, const ConvLoweringShape& g, cudaStream_t stream) {
  const int Q = g.N * g.Ho * g.Wo, K = g.C * g.KH * g.KW;
  if (Q <= 0 || K <= 0) return;
  const int row_blocks = (K + kIm2colRows - 1) / kIm2colRows;
  const dim3 grid(blocks_for(size_t(Q), kThreads, 1024),
                  unsigned(row_blocks < 65535 ? row_blocks : 65535));
  EQUIVAE_LAUNCH(kernel_im2col<T>, grid, kThreads, 0, stream, col, x, g);
}

template <class T>
void col2im(T* dx, const T* dcol, const ConvLoweringShape& g, cudaStream_t stream, const T* bias,
            bool relu) {
  const int total = g.N * g.C * g.H * g.W;
  if (total <= 0) return;
  EQUIVAE_LAUNCH(kernel_col2im<T>, blocks_for(size_t(total), kThreads), kThreads, 0, stream, dx,
                 dcol, g, total, bias, relu);
}

template <class T>
void swap_leading(T* out, const T* in, int A, int B, int P, cudaStream_t stream, const T* bias,
                  bool relu) {
  const size_t total = size_t(A) * B * P;
  if (total == 0) return;
  EQUIVAE_LAUNCH(kernel_swap_leading<T>, blocks_for(total, kThreads), kThreads, 0, stream, out, in,
                 A, B, P, bias, relu);
}

#define INSTANTIATE(T)                                                                           \
  template void im2col<T>(T*, const T*, const ConvLoweringShape&, cudaStream_t);                 \
  template void col2im<T>(T*, const T*, const ConvLoweringShape&, cudaStream_t, const T*, bool); \
  template void swap_leading<T>(T*, const T*, int, int, int, cudaStream_t, const T*, bool);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
