// 2-D convolution and transposed convolution on im2col + OpenBLAS GEMM, forward and backward.
//
// Both ops are written over one "geometry": an image side (planes of C × H × W, the conv's
// input) and a column side (P = Ho × Wo positions, the conv's output), related by the kernel,
// stride and padding. im2col unfolds image planes into cols[C·KH·KW, P]; col2im folds such
// columns back, summing overlaps. Then, per chunk of G images (columns of all G side by side,
// so that the GEMMs stay wide when P is small):
//   conv2d   forward   cols = im2col(x);        y = W[C_out, K] · cols            (+ b, ReLU)
//            backward  dW += dz · colsᵀ;        dx = col2im(Wᵀ · dz)
//   convT    forward   y = col2im(Wᵀ · x);      (W as [C_in, K], image side = y)  (+ b, ReLU)
//            backward  cols = im2col(dz);  dW += x · colsᵀ;  dx = W · cols
// G is a function of the shape alone (about kTargetColumns columns per chunk), so the
// workspace size is too. Everything is computed in a fixed order: results do not depend on
// the thread count beyond what OpenBLAS's own GEMMs do.
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstddef>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"

namespace equivae::cpu {
namespace {

// Columns per chunk. Measured at the SVHN layers (B = 160, 1 thread, bench_ops): 128 to 512
// columns are equally fast, and ~15% faster than 2,048 (a smaller working set between
// im2col and the GEMM); 512 keeps the GEMMs wide enough to split over threads.
constexpr size_t kTargetColumns = 512;

// Image planes [C, H, W] ↔ columns [C·KH·KW, P], P = Ho·Wo; row (c, ki, kj), column
// (oh, ow) reads image (oh·stride − pad + ki, ow·stride − pad + kj), zero outside.
struct Geometry {
  int C, H, W, KH, KW, stride, pad, Ho, Wo;
  int K() const { return C * KH * KW; }
  int P() const { return Ho * Wo; }
  size_t plane() const { return size_t(H) * W; }
  // The output positions o whose input o·stride − pad + k lies in [0, n): [lo, hi).
  void valid(int k, int n, int out, int& lo, int& hi) const {
    const int shift = pad - k;  // input = o·stride − shift
    lo = shift <= 0 ? 0 : std::min(out, (shift + stride - 1) / stride);
    const int top = n - 1 + shift;  // o·stride ≤ top
    hi = top < 0 ? 0 : std::min(out, top / stride + 1);
    if (hi < lo) hi = lo;  // none valid (padding wider than the image): lo ≤ hi ≤ out
  }
};

Geometry conv_geometry(const Conv2dShape& s) {
  return {s.C_in,
          s.H,
          s.W,
          s.KH,
          s.KW,
          s.stride,
          s.pad,
          conv2d_out_size(s.H, s.KH, s.stride, s.pad),
          conv2d_out_size(s.W, s.KW, s.stride, s.pad)};
}
// The transpose's image side is its output y; its column side its input x.
Geometry transpose_geometry(const Conv2dShape& s) {
  return {s.C_out,
          conv_transpose2d_out_size(s.H, s.KH, s.stride, s.pad, s.output_padding),
          conv_transpose2d_out_size(s.W, s.KW, s.stride, s.pad, s.output_padding),
          s.KH,
          s.KW,
          s.stride,
          s.pad,
          s.H,
          s.W};
}

int chunk_images(int N, int P) {
  const size_t g = (kTargetColumns + size_t(P) - 1) / size_t(P);
  return int(std::min<size_t>(std::max<size_t>(g, 1), size_t(N)));
}

// cols[K, G·P] (leading dimension ld = G·P) from G images of planes [C, H, W]. Each image
// plane is read KH·KW times in a row while it sits in L1, and written to KH·KW rows of cols.
template <class T>
void im2col(T* cols, const T* image, int G, const Geometry& g) {
  const int P = g.P();
  const size_t ld = size_t(G) * P;
#pragma omp parallel for collapse(2) schedule(static) if (size_t(g.K()) * ld > 65536)
  for (int n = 0; n < G; ++n)
    for (int c = 0; c < g.C; ++c) {
      const T* plane = image + (size_t(n) * g.C + c) * g.plane();
      for (int ki = 0; ki < g.KH; ++ki) {
        int oh_lo, oh_hi;
        g.valid(ki, g.H, g.Ho, oh_lo, oh_hi);
        for (int kj = 0; kj < g.KW; ++kj) {
          int ow_lo, ow_hi;
          g.valid(kj, g.W, g.Wo, ow_lo, ow_hi);
          const int r = (c * g.KH + ki) * g.KW + kj;
          T* out = cols + size_t(r) * ld + size_t(n) * P;
          std::fill_n(out, size_t(oh_lo) * g.Wo, T(0));
          for (int oh = oh_lo; oh < oh_hi; ++oh) {
            T* row = out + size_t(oh) * g.Wo;
            // Image offset of column 0 (may be negative: only [ow_lo, ow_hi) is read).
            const ptrdiff_t base = ptrdiff_t(oh * g.stride - g.pad + ki) * g.W - g.pad + kj;
            for (int ow = 0; ow < ow_lo; ++ow) row[ow] = T(0);
            if (g.stride == 1) {
              std::copy(plane + (base + ow_lo), plane + (base + ow_hi), row + ow_lo);
            } else {
              const T* in = plane + (base + ptrdiff_t(ow_lo) * g.stride);
              const int stride = g.stride;
#pragma omp simd
              for (int ow = ow_lo; ow < ow_hi; ++ow) row[ow] = in[ptrdiff_t(ow - ow_lo) * stride];
            }
            for (int ow = ow_hi; ow < g.Wo; ++ow) row[ow] = T(0);
          }
          std::fill_n(out + size_t(oh_hi) * g.Wo, size_t(g.Ho - oh_hi) * g.Wo, T(0));
        }
      }
    }
}

// G images of planes [C, H, W] = the sum of cols[K, G·P] folded back (overwritten).
template <class T>
void col2im(T* image, const T* cols, int G, const Geometry& g) {
  const int P = g.P();
  const size_t ld = size_t(G) * P;
#pragma omp parallel for collapse(2) schedule(static) if (size_t(g.K()) * ld > 65536)
  for (int n = 0; n < G; ++n)
    for (int c = 0; c < g.C; ++c) {
      T* plane = image + (size_t(n) * g.C + c) * g.plane();
      std::fill_n(plane, g.plane(), T(0));
      for (int ki = 0; ki < g.KH; ++ki)
        for (int kj = 0; kj < g.KW; ++kj) {
          const int r = (c * g.KH + ki) * g.KW + kj;
          const T* in = cols + size_t(r) * ld + size_t(n) * P;
          int oh_lo, oh_hi, ow_lo, ow_hi;
          g.valid(ki, g.H, g.Ho, oh_lo, oh_hi);
          g.valid(kj, g.W, g.Wo, ow_lo, ow_hi);
          for (int oh = oh_lo; oh < oh_hi; ++oh) {
            const ptrdiff_t base = ptrdiff_t(oh * g.stride - g.pad + ki) * g.W - g.pad + kj;
            const T* row = in + size_t(oh) * g.Wo;
            for (int ow = ow_lo; ow < ow_hi; ++ow)
              plane[base + ptrdiff_t(ow) * g.stride] += row[ow];
          }
        }
    }
}

// Between NCHW images (G of [C, P]) and the GEMMs' channel-major block [C, G·P].
template <class T>
void images_to_block(T* block, const T* images, int G, int C, int P) {
  const size_t ld = size_t(G) * P;
#pragma omp parallel for collapse(2) schedule(static) if (size_t(C) * ld > 65536)
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < G; ++n)
      std::copy_n(images + (size_t(n) * C + c) * P, P, block + size_t(c) * ld + size_t(n) * P);
}
template <class T>
void block_to_images(T* images, const T* block, int G, int C, int P) {
  const size_t ld = size_t(G) * P;
#pragma omp parallel for collapse(2) schedule(static) if (size_t(C) * ld > 65536)
  for (int n = 0; n < G; ++n)
    for (int c = 0; c < C; ++c)
      std::copy_n(block + size_t(c) * ld + size_t(n) * P, P, images + (size_t(n) * C + c) * P);
}

// y[N, C, P] += b[c], then ReLU (NaN propagates, as in dense_forward).
template <class T>
void bias_act(T* y, const T* b, int N, int C, int P, bool relu) {
  if (!b && !relu) return;
#pragma omp parallel for collapse(2) schedule(static) if (size_t(N) * C * P > 65536)
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) {
      T* plane = y + (size_t(n) * C + c) * P;
      const T bias = b ? b[c] : T(0);
      if (relu)
        for (int p = 0; p < P; ++p) {
          const T z = plane[p] + bias;
          plane[p] = z < T(0) ? T(0) : z;
        }
      else
        for (int p = 0; p < P; ++p) plane[p] += bias;
    }
}

// With relu, dy[N, C, P] *= (y > 0); db[c] = Σ_{n,p} dy (overwritten, n then p in order).
template <class T>
void mask_and_bias_grad(T* dy, T* db, const T* y, int N, int C, int P, bool relu) {
  if (relu) {
    const size_t total = size_t(N) * C * P;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (size_t i = 0; i < total; ++i) dy[i] = y[i] > T(0) ? dy[i] : T(0);
  }
  if (!db) return;
#pragma omp parallel for schedule(static) if (size_t(N) * C * P > 65536)
  for (int c = 0; c < C; ++c) {
    T acc = T(0);
    for (int n = 0; n < N; ++n) {
      const T* plane = dy + (size_t(n) * C + c) * P;
      T part = T(0);
#pragma omp simd reduction(+ : part)
      for (int p = 0; p < P; ++p) part += plane[p];
      acc += part;
    }
    db[c] = acc;
  }
}

}  // namespace

std::string conv_shape_problem(const Conv2dShape& s, bool transposed) {
  const std::string what = std::string(transposed ? "conv_transpose2d" : "conv2d") +
                           " shape N=" + std::to_string(s.N) + " C_in=" + std::to_string(s.C_in) +
                           " H=" + std::to_string(s.H) + " W=" + std::to_string(s.W) +
                           " C_out=" + std::to_string(s.C_out) + " KH=" + std::to_string(s.KH) +
                           " KW=" + std::to_string(s.KW) + " stride=" + std::to_string(s.stride) +
                           " pad=" + std::to_string(s.pad) +
                           " output_padding=" + std::to_string(s.output_padding) + ": ";
  if (s.N < 1 || s.C_in < 1 || s.H < 1 || s.W < 1 || s.C_out < 1 || s.KH < 1 || s.KW < 1)
    return what + "every size must be at least 1";
  if (s.stride < 1) return what + "stride must be at least 1";
  if (s.pad < 0) return what + "pad must not be negative";
  if (!transposed && s.output_padding != 0) return what + "output_padding is for the transpose";
  if (s.output_padding < 0 || s.output_padding >= s.stride)
    return what + "output_padding must be in [0, stride)";
  // Sizes in 64 bits first: the int formulas below must not overflow.
  const long long big = INT_MAX;
  if (s.H + 2LL * s.pad > big || s.W + 2LL * s.pad > big ||
      (s.H - 1LL) * s.stride + s.KH + s.output_padding > big ||
      (s.W - 1LL) * s.stride + s.KW + s.output_padding > big)
    return what + "sizes overflow int";
  const long long Ho = transposed ? (s.H - 1LL) * s.stride - 2LL * s.pad + s.KH + s.output_padding
                                  : (s.H + 2LL * s.pad - s.KH) / s.stride + 1;
  const long long Wo = transposed ? (s.W - 1LL) * s.stride - 2LL * s.pad + s.KW + s.output_padding
                                  : (s.W + 2LL * s.pad - s.KW) / s.stride + 1;
  if (transposed ? (Ho < 1 || Wo < 1) : (s.H + 2LL * s.pad < s.KH || s.W + 2LL * s.pad < s.KW))
    return what + "the output would be empty (kernel larger than the padded input)";
  const long long in = 1LL * s.N * s.C_in * s.H * s.W, out = 1LL * s.N * s.C_out * Ho * Wo,
                  weight = 1LL * s.C_in * s.C_out * s.KH * s.KW,
                  K = 1LL * (transposed ? s.C_out : s.C_in) * s.KH * s.KW;
  if (in > big || out > big || weight > big || K > big)
    return what + "a tensor exceeds 2^31 elements";
  return "";
}

size_t conv2d_workspace_size(const Conv2dShape& s) {
  const Geometry g = conv_geometry(s);
  const size_t columns = size_t(chunk_images(s.N, g.P())) * g.P();
  return (size_t(g.K()) + size_t(s.C_out)) * columns;  // cols + the output / dz block
}

size_t conv_transpose2d_workspace_size(const Conv2dShape& s) {
  const Geometry g = transpose_geometry(s);
  const size_t columns = size_t(chunk_images(s.N, g.P())) * g.P();
  return (size_t(g.K()) + size_t(s.C_in)) * columns;  // cols + the input / dx block
}

template <class T>
void conv2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s, bool relu,
                    T* workspace) {
  const Geometry g = conv_geometry(s);
  const int K = g.K(), P = g.P(), G = chunk_images(s.N, P);
  T* cols = workspace;                     // [K, G·P]
  T* out = workspace + size_t(K) * G * P;  // [C_out, G·P]
  for (int n0 = 0; n0 < s.N; n0 += G) {
    const int n = std::min(G, s.N - n0), ld = n * P;
    im2col(cols, x + size_t(n0) * s.C_in * g.plane(), n, g);
    gemm(CblasNoTrans, CblasNoTrans, s.C_out, ld, K, W, K, cols, ld, T(0), out, ld);
    block_to_images(y + size_t(n0) * s.C_out * P, out, n, s.C_out, P);
  }
  bias_act(y, b, s.N, s.C_out, P, relu);
}

template <class T>
void conv2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                     const Conv2dShape& s, bool relu, T* workspace) {
  const Geometry g = conv_geometry(s);
  const int K = g.K(), P = g.P(), G = chunk_images(s.N, P);
  mask_and_bias_grad(dy, db, y, s.N, s.C_out, P, relu);
  if (!dW && !dx) return;
  T* cols = workspace;                    // [K, G·P]: im2col(x), then Wᵀ·dz
  T* dz = workspace + size_t(K) * G * P;  // [C_out, G·P]
  for (int n0 = 0; n0 < s.N; n0 += G) {
    const int n = std::min(G, s.N - n0), ld = n * P;
    images_to_block(dz, dy + size_t(n0) * s.C_out * P, n, s.C_out, P);
    if (dW) {
      im2col(cols, x + size_t(n0) * s.C_in * g.plane(), n, g);
      gemm(CblasNoTrans, CblasTrans, s.C_out, K, ld, dz, ld, cols, ld, n0 == 0 ? T(0) : T(1), dW,
           K);
    }
    if (dx) {
      gemm(CblasTrans, CblasNoTrans, K, ld, s.C_out, W, K, dz, ld, T(0), cols, ld);
      col2im(dx + size_t(n0) * s.C_in * g.plane(), cols, n, g);
    }
  }
}

template <class T>
void conv_transpose2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s,
                              bool relu, T* workspace) {
  const Geometry g = transpose_geometry(s);
  const int K = g.K(), P = g.P(), G = chunk_images(s.N, P);
  T* cols = workspace;                    // [K, G·P] = Wᵀ · x
  T* in = workspace + size_t(K) * G * P;  // [C_in, G·P]
  for (int n0 = 0; n0 < s.N; n0 += G) {
    const int n = std::min(G, s.N - n0), ld = n * P;
    images_to_block(in, x + size_t(n0) * s.C_in * P, n, s.C_in, P);
    gemm(CblasTrans, CblasNoTrans, K, ld, s.C_in, W, K, in, ld, T(0), cols, ld);
    col2im(y + size_t(n0) * s.C_out * g.plane(), cols, n, g);
  }
  bias_act(y, b, s.N, s.C_out, int(g.plane()), relu);
}

template <class T>
void conv_transpose2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                               const Conv2dShape& s, bool relu, T* workspace) {
  const Geometry g = transpose_geometry(s);
  const int K = g.K(), P = g.P(), G = chunk_images(s.N, P);
  mask_and_bias_grad(dy, db, y, s.N, s.C_out, int(g.plane()), relu);
  if (!dW && !dx) return;
  T* cols = workspace;                       // [K, G·P] = im2col(dz)
  T* block = workspace + size_t(K) * G * P;  // [C_in, G·P]: x, then dx
  for (int n0 = 0; n0 < s.N; n0 += G) {
    const int n = std::min(G, s.N - n0), ld = n * P;
    im2col(cols, dy + size_t(n0) * s.C_out * g.plane(), n, g);
    if (dW) {
      images_to_block(block, x + size_t(n0) * s.C_in * P, n, s.C_in, P);
      gemm(CblasNoTrans, CblasTrans, s.C_in, K, ld, block, ld, cols, ld, n0 == 0 ? T(0) : T(1), dW,
           K);
    }
    if (dx) {
      gemm(CblasNoTrans, CblasNoTrans, s.C_in, ld, K, W, K, cols, ld, T(0), block, ld);
      block_to_images(dx + size_t(n0) * s.C_in * P, block, n, s.C_in, P);
    }
  }
}

#define INSTANTIATE(T)                                                                             \
  template void conv2d_forward<T>(T*, const T*, const T*, const T*, const Conv2dShape&, bool, T*); \
  template void conv2d_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*,                   \
                                   const Conv2dShape&, bool, T*);                                  \
  template void conv_transpose2d_forward<T>(T*, const T*, const T*, const T*, const Conv2dShape&,  \
                                            bool, T*);                                             \
  template void conv_transpose2d_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*,         \
                                             const Conv2dShape&, bool, T*);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cpu
