// The convolution, transposed convolution and Gaussian likelihood CPU ops: through the op
// harness (float vs double, finite differences, NaN/Inf, guards) at shapes with stride 2,
// padding, C_in ≠ C_out, odd and non-square sizes, N > 1; against direct loops (including
// shapes the op splits into several chunks of images and lanes, and every layout of the
// stride-2 fast path); float results bit for bit the same at 1, 2 and 3 threads; the adjoint
// identity between the two convolutions; shape and workspace errors through the CPU backend;
// the Gaussian likelihood at extreme log-variances.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "runtime/backend.h"
#include "runtime/cuda/conv_geometry.h"
#include "runtime/error.h"
#include "tests/cpu_routes.h"
#include "tests/gemm_exactness.h"
#include "tests/op_harness.h"

namespace equivae::test {
namespace {

using cpu::Conv2dShape;

int out_h(const Conv2dShape& s, bool transposed) {
  return cpu::conv_out_h(s, transposed);
}
int out_w(const Conv2dShape& s, bool transposed) {
  return cpu::conv_out_w(s, transposed);
}
size_t input_size(const Conv2dShape& s) {
  return size_t(s.N) * s.C_in * s.H * s.W;
}
size_t output_size(const Conv2dShape& s, bool transposed) {
  return size_t(s.N) * s.C_out * out_h(s, transposed) * out_w(s, transposed);
}
size_t weight_size(const Conv2dShape& s) {
  return size_t(s.C_out) * s.C_in * s.KH * s.KW;
}

// One case for both ops: conv2d or (transposed) conv_transpose2d of shape s.
struct ConvCase {
  Conv2dShape s;
  bool transposed = false, relu = true, bias = true;
  std::vector<BufferSpec> inputs() const {
    std::vector<BufferSpec> in = {{"x", input_size(s)}, {"W", weight_size(s), -0.5, 0.5}};
    if (bias) in.push_back({"b", size_t(s.C_out)});
    return in;
  }
  std::vector<BufferSpec> outputs() const { return {{"y", output_size(s, transposed)}}; }
  size_t workspace() const {
    return transposed ? cpu::conv_transpose2d_workspace_size(s) : cpu::conv2d_workspace_size(s);
  }
  template <class T>
  void forward(Buffers<T>& b) const {
    std::vector<T> ws(workspace());
    const T* bias_ptr = bias ? b["b"] : nullptr;
    if (transposed)
      cpu::conv_transpose2d_forward(b["y"], b["x"], b["W"], bias_ptr, s, relu, ws.data());
    else
      cpu::conv2d_forward(b["y"], b["x"], b["W"], bias_ptr, s, relu, ws.data());
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    std::vector<T> ws(workspace());
    T* db = bias ? b["db"] : nullptr;
    if (transposed)
      cpu::conv_transpose2d_backward(b["dx"], b["dW"], db, b["dy"], b["x"], b["W"], b["y"], s, relu,
                                     ws.data());
    else
      cpu::conv2d_backward(b["dx"], b["dW"], db, b["dy"], b["x"], b["W"], b["y"], s, relu,
                           ws.data());
  }
};

Conv2dShape shape(int N, int C_in, int H, int W, int C_out, int KH, int KW, int stride, int pad,
                  int output_padding = 0) {
  return {N, C_in, H, W, C_out, KH, KW, stride, pad, output_padding};
}

// The op harness on every route: the float op (im2col, or oneDNN where the shape allows)
// against the double one (always im2col), finite differences, NaN/Inf, guards.
void expect_conv_ok(const ConvCase& c) {
  for (const ConvPath& path : conv_paths()) {
    SCOPED_TRACE(path.name());
    ConvPathScope scope(path);
    expect_op_ok(check_op(c));
  }
}

TEST(ConvOps, Conv2dStride2Padding1NonSquareKernel) {
  // 7×9 → 4×4 with a 3×4 kernel: rows and columns clip the padding differently.
  expect_conv_ok(ConvCase{shape(3, 3, 7, 9, 5, 3, 4, 2, 1)});
}
TEST(ConvOps, Conv2dSvhnGeometryK4S2P1) {
  expect_conv_ok(ConvCase{shape(2, 4, 8, 8, 6, 4, 4, 2, 1)});
}
TEST(ConvOps, Conv2dStride1NoPaddingLinear) {
  expect_conv_ok(ConvCase{shape(2, 2, 5, 6, 3, 3, 3, 1, 0), false, false});
}
TEST(ConvOps, Conv2dStride3WidePaddingNoBias) {
  // pad 2 with a 2×3 kernel: whole kernel rows fall into the padding.
  expect_conv_ok(ConvCase{shape(2, 3, 10, 7, 2, 2, 3, 3, 2), false, true, false});
}
TEST(ConvOps, Conv2dOneByOneKernel) {
  expect_conv_ok(ConvCase{shape(3, 5, 3, 4, 2, 1, 1, 1, 0)});
}
TEST(ConvOps, ConvTranspose2dK4S2P1Doubles) {
  // The decoder's upsampling: 4×4 → 8×8.
  expect_conv_ok(ConvCase{shape(2, 6, 4, 4, 3, 4, 4, 2, 1), true});
}
TEST(ConvOps, ConvTranspose2dOutputPadding) {
  // k = 3, s = 2, p = 1 with output_padding 1: 5×3 → 10×6.
  expect_conv_ok(ConvCase{shape(3, 3, 5, 3, 4, 3, 3, 2, 1, 1), true});
}
TEST(ConvOps, ConvTranspose2dStride1Linear) {
  expect_conv_ok(ConvCase{shape(2, 2, 3, 5, 3, 2, 3, 1, 0), true, false});
}
TEST(ConvOps, ConvTranspose2dStride3OutputPadding2NoBias) {
  expect_conv_ok(ConvCase{shape(2, 3, 3, 4, 2, 3, 2, 3, 1, 2), true, true, false});
}

// ---- direct loops (double), the independent reference

// y[n, co, oh, ow] = b[co] + Σ x[n, ci, oh·s − p + ki, ow·s − p + kj] W[co, ci, ki, kj]; and the
// gradients of ⟨y, dy⟩ (no activation).
struct Direct {
  Conv2dShape s;
  bool transposed;
  // Calls f(x index, W index, y index) for every product term of the op.
  template <class F>
  void terms(F&& f) const {
    const int Ho = out_h(s, transposed), Wo = out_w(s, transposed);
    for (int n = 0; n < s.N; ++n)
      for (int ci = 0; ci < s.C_in; ++ci)
        for (int co = 0; co < s.C_out; ++co)
          for (int ki = 0; ki < s.KH; ++ki)
            for (int kj = 0; kj < s.KW; ++kj) {
              const size_t w = transposed ? ((size_t(ci) * s.C_out + co) * s.KH + ki) * s.KW + kj
                                          : ((size_t(co) * s.C_in + ci) * s.KH + ki) * s.KW + kj;
              if (!transposed) {
                for (int oh = 0; oh < Ho; ++oh)
                  for (int ow = 0; ow < Wo; ++ow) {
                    const int ih = oh * s.stride - s.pad + ki, iw = ow * s.stride - s.pad + kj;
                    if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                    f(((size_t(n) * s.C_in + ci) * s.H + ih) * s.W + iw, w,
                      ((size_t(n) * s.C_out + co) * Ho + oh) * Wo + ow);
                  }
              } else {  // input pixel (ih, iw) scatters into output (ih·s − p + ki, iw·s − p + kj)
                for (int ih = 0; ih < s.H; ++ih)
                  for (int iw = 0; iw < s.W; ++iw) {
                    const int oh = ih * s.stride - s.pad + ki, ow = iw * s.stride - s.pad + kj;
                    if (oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                    f(((size_t(n) * s.C_in + ci) * s.H + ih) * s.W + iw, w,
                      ((size_t(n) * s.C_out + co) * Ho + oh) * Wo + ow);
                  }
              }
            }
  }
  void forward(std::vector<double>& y, const std::vector<double>& x, const std::vector<double>& W,
               const std::vector<double>& b) const {
    const size_t plane = size_t(out_h(s, transposed)) * out_w(s, transposed);
    for (size_t i = 0; i < y.size(); ++i) y[i] = b[i / plane % s.C_out];
    terms([&](size_t xi, size_t wi, size_t yi) { y[yi] += x[xi] * W[wi]; });
  }
  void backward(std::vector<double>& dx, std::vector<double>& dW, std::vector<double>& db,
                const std::vector<double>& dy, const std::vector<double>& x,
                const std::vector<double>& W) const {
    std::fill(dx.begin(), dx.end(), 0.0);
    std::fill(dW.begin(), dW.end(), 0.0);
    std::fill(db.begin(), db.end(), 0.0);
    const size_t plane = size_t(out_h(s, transposed)) * out_w(s, transposed);
    for (size_t i = 0; i < dy.size(); ++i) db[i / plane % s.C_out] += dy[i];
    terms([&](size_t xi, size_t wi, size_t yi) {
      dx[xi] += dy[yi] * W[wi];
      dW[wi] += dy[yi] * x[xi];
    });
  }
};

std::vector<double> draw(uint64_t stream, size_t n) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = random_in(stream, i, -1, 1);
  return v;
}

void expect_close(const std::vector<double>& ref, const std::vector<double>& got,
                  const std::string& what) {
  ASSERT_EQ(ref.size(), got.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    worst = std::max(worst, std::fabs(ref[i] - got[i]) / (1 + std::fabs(ref[i])));
  EXPECT_LE(worst, 1e-12) << what;
}

void check_against_direct(const Conv2dShape& s, bool transposed) {
  const std::string name = std::string(transposed ? "conv_transpose2d" : "conv2d") +
                           " N=" + std::to_string(s.N) + " " + std::to_string(s.H) + "x" +
                           std::to_string(s.W);
  const Direct direct{s, transposed};
  const auto x = draw(1, input_size(s)), W = draw(2, weight_size(s)), b = draw(3, s.C_out),
             dy = draw(4, output_size(s, transposed));
  std::vector<double> y_ref(dy.size()), dx_ref(x.size()), dW_ref(W.size()), db_ref(s.C_out);
  direct.forward(y_ref, x, W, b);
  direct.backward(dx_ref, dW_ref, db_ref, dy, x, W);

  std::vector<double> ws(transposed ? cpu::conv_transpose2d_workspace_size(s)
                                    : cpu::conv2d_workspace_size(s)),
      y(dy.size()), dx(x.size()), dW(W.size()), db(s.C_out), g = dy;
  if (transposed) {
    cpu::conv_transpose2d_forward(y.data(), x.data(), W.data(), b.data(), s, false, ws.data());
    cpu::conv_transpose2d_backward(dx.data(), dW.data(), db.data(), g.data(), x.data(), W.data(),
                                   y.data(), s, false, ws.data());
  } else {
    cpu::conv2d_forward(y.data(), x.data(), W.data(), b.data(), s, false, ws.data());
    cpu::conv2d_backward(dx.data(), dW.data(), db.data(), g.data(), x.data(), W.data(), y.data(), s,
                         false, ws.data());
  }
  expect_close(y_ref, y, name + " y");
  expect_close(dx_ref, dx, name + " dx");
  expect_close(dW_ref, dW, name + " dW");
  expect_close(db_ref, db, name + " db");
  EXPECT_EQ(g, dy) << "without ReLU dy is left as it is";

  // Skipping dx leaves dW and db as they were; a null dW or db is skipped too.
  std::vector<double> dW2(W.size()), db2(s.C_out), dx2(x.size());
  g = dy;
  if (transposed) {
    cpu::conv_transpose2d_backward<double>(nullptr, dW2.data(), db2.data(), g.data(), x.data(),
                                           W.data(), y.data(), s, false, ws.data());
    cpu::conv_transpose2d_backward<double>(dx2.data(), nullptr, nullptr, g.data(), x.data(),
                                           W.data(), y.data(), s, false, ws.data());
  } else {
    cpu::conv2d_backward<double>(nullptr, dW2.data(), db2.data(), g.data(), x.data(), W.data(),
                                 y.data(), s, false, ws.data());
    cpu::conv2d_backward<double>(dx2.data(), nullptr, nullptr, g.data(), x.data(), W.data(),
                                 y.data(), s, false, ws.data());
  }
  EXPECT_EQ(dW2, dW) << name;
  EXPECT_EQ(db2, db) << name;
  EXPECT_EQ(dx2, dx) << name;
}

TEST(ConvOps, MatchDirectLoops) {
  check_against_direct(shape(3, 3, 7, 9, 5, 3, 4, 2, 1), false);
  check_against_direct(shape(2, 3, 10, 7, 2, 2, 3, 3, 2), false);
  check_against_direct(shape(3, 3, 5, 3, 4, 3, 3, 2, 1, 1), true);
  check_against_direct(shape(2, 6, 4, 4, 3, 4, 4, 2, 1), true);
  // Padding wider than the image: some kernel offsets see no pixel at all.
  check_against_direct(shape(2, 2, 2, 1, 3, 3, 3, 1, 3), false);
  check_against_direct(shape(2, 2, 1, 2, 3, 5, 5, 1, 2), true);
  check_against_direct(shape(1, 1, 1, 1, 2, 4, 4, 3, 2, 2), true);
}

TEST(ConvOps, MatchDirectLoopsAcrossSeveralChunksOfImages) {
  // Chunks hold ⌈256 / columns⌉ images (kernels/cpu/conv.cpp), dealt to up to 16 lanes.
  // 10×10 outputs: 3 images per chunk, so N = 8 is chunks of 3, 3 and 2 on 3 lanes; 40×40:
  // one image per chunk.
  check_against_direct(shape(8, 2, 10, 10, 3, 3, 3, 1, 1), false);
  check_against_direct(shape(3, 1, 40, 40, 2, 3, 3, 1, 1), false);
  // The transpose chunks over its input's positions: 9×9 = 81 → 4 images, N = 9 is 4 + 4 + 1;
  // 24×24 = 576 → one image per chunk.
  check_against_direct(shape(9, 2, 9, 9, 3, 4, 4, 2, 1), true);
  check_against_direct(shape(3, 2, 24, 24, 3, 4, 4, 2, 1), true);
  // More chunks than lanes, unevenly: 8×8 outputs → 4 images per chunk, N = 71 is 18 chunks
  // on 16 lanes (the first two lanes run two, and their weight gradients accumulate over both).
  check_against_direct(shape(71, 2, 16, 16, 3, 4, 4, 2, 1), false);
  check_against_direct(shape(71, 3, 8, 8, 2, 4, 4, 2, 1), true);
}

TEST(ConvOps, MatchDirectLoopsOnTheStrideTwoFastPath) {
  // The layouts compiled for fixed sizes (kernels/cpu/conv_columns.h: stride 2, a square
  // column side of 4, 8, 16 or 32, image rows twice as wide), against the same direct loops:
  // the SVHN k4 p1 at every side, k3 p1, k2 p0, k6 p2 (windows two phase columns wide), a
  // non-square kernel (3×4, and 2×4 on a 6×8 image), and an odd image height (9 rows, the last
  // reaching the padding).
  check_against_direct(shape(2, 2, 8, 8, 3, 4, 4, 2, 1), false);
  check_against_direct(shape(2, 2, 16, 16, 3, 4, 4, 2, 1), false);
  check_against_direct(shape(1, 2, 32, 32, 2, 4, 4, 2, 1), false);
  check_against_direct(shape(1, 1, 64, 64, 2, 4, 4, 2, 1), false);
  check_against_direct(shape(2, 2, 8, 8, 3, 3, 3, 2, 1), false);
  check_against_direct(shape(2, 2, 8, 8, 3, 2, 2, 2, 0), false);
  check_against_direct(shape(2, 2, 8, 8, 3, 6, 6, 2, 2), false);
  check_against_direct(shape(2, 2, 8, 8, 3, 3, 4, 2, 1), false);
  check_against_direct(shape(2, 2, 6, 8, 3, 2, 4, 2, 1), false);
  check_against_direct(shape(2, 2, 9, 8, 3, 4, 4, 2, 1), false);
  // The transposes whose output rows are twice their input's: 4×4 → 8×8 with k4 p1, k3 p1
  // output_padding 1, k2 p0, k6 p2 and 2×4 (4×4 → 6×8); 8 → 16 and 16 → 32.
  check_against_direct(shape(2, 3, 4, 4, 2, 4, 4, 2, 1), true);
  check_against_direct(shape(2, 3, 4, 4, 2, 3, 3, 2, 1, 1), true);
  check_against_direct(shape(2, 3, 4, 4, 2, 2, 2, 2, 0), true);
  check_against_direct(shape(2, 3, 4, 4, 2, 6, 6, 2, 2), true);
  check_against_direct(shape(2, 3, 4, 4, 2, 2, 4, 2, 1), true);
  check_against_direct(shape(2, 2, 8, 8, 3, 4, 4, 2, 1), true);
  check_against_direct(shape(1, 2, 16, 16, 2, 4, 4, 2, 1), true);
}

// The lanes split the batch the same way at any thread count, and each sum runs in an order
// fixed by the shape: float results are bit for bit those of one thread.
template <bool kTransposed>
void check_thread_count_independence(const Conv2dShape& s, bool exact) {
  const auto draw_float = [](uint64_t stream, size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = float(random_in(stream, i, -1, 1));
    return v;
  };
  const auto x = draw_float(1, input_size(s)), W = draw_float(2, weight_size(s)),
             b = draw_float(3, s.C_out), dy0 = draw_float(4, output_size(s, kTransposed));
  struct Result {
    std::vector<float> y, dx, dW, db, dy;
  };
  const auto run = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    Result r{std::vector<float>(dy0.size()), std::vector<float>(x.size()),
             std::vector<float>(W.size()), std::vector<float>(s.C_out), dy0};
    std::vector<float> ws(kTransposed ? cpu::conv_transpose2d_workspace_size(s)
                                      : cpu::conv2d_workspace_size(s));
    if constexpr (kTransposed) {
      cpu::conv_transpose2d_forward(r.y.data(), x.data(), W.data(), b.data(), s, true, ws.data());
      cpu::conv_transpose2d_backward(r.dx.data(), r.dW.data(), r.db.data(), r.dy.data(), x.data(),
                                     W.data(), r.y.data(), s, true, ws.data());
    } else {
      cpu::conv2d_forward(r.y.data(), x.data(), W.data(), b.data(), s, true, ws.data());
      cpu::conv2d_backward(r.dx.data(), r.dW.data(), r.db.data(), r.dy.data(), x.data(), W.data(),
                           r.y.data(), s, true, ws.data());
    }
    omp_set_num_threads(before);
    return r;
  };
  const Result one = run(1);
  double dW_norm = 0;
  for (float v : one.dW) dW_norm += std::fabs(v);
  EXPECT_GT(dW_norm, 1.0) << "a vacuous comparison";
  for (int threads : {2, 3}) {
    const Result more = run(threads);
    const std::string at = std::to_string(threads) + " threads";
    test::expect_same_rows(more.y, one.y, exact, "y, " + at);
    test::expect_same_rows(more.dx, one.dx, exact, "dx, " + at);
    test::expect_same_rows(more.dW, one.dW, exact, "dW, " + at);
    test::expect_same_rows(more.db, one.db, exact, "db, " + at);
    test::expect_same_rows(more.dy, one.dy, exact, "dy, " + at);
  }
}

TEST(ConvOps, ResultsDoNotDependOnTheThreadCount) {
  // im2col: 19 and 21 chunks on 16 lanes (the SVHN middle layers' geometry at small channel
  // counts), and a shape off the fast path. oneDNN (here at 1–3 threads; its kernels split
  // work over channel blocks and images, and at other thread counts a weight gradient's sum
  // may run in another order): the same, and SVHN's channel counts.
  // oneDNN's AVX2 convolution kernels (DNNL_MAX_CPU_ISA=AVX2, a laptop's ISA; its brgemm
  // matmul is AVX-512's, so onednn_gemm_automatic() tells the two apart) split some sums by the
  // thread count: there its results are compared within 1e-5.
  for (const ConvPath& path : conv_paths()) {
    SCOPED_TRACE(path.name());
    ConvPathScope scope(path);
    const bool exact = path.conv == cpu::ConvRoute::im2col || cpu::onednn_gemm_automatic();
    check_thread_count_independence<false>(shape(75, 8, 16, 16, 16, 4, 4, 2, 1), exact);
    check_thread_count_independence<true>(shape(83, 16, 8, 8, 8, 4, 4, 2, 1), exact);
    check_thread_count_independence<false>(shape(20, 4, 10, 10, 8, 3, 3, 1, 1), exact);
    check_thread_count_independence<false>(shape(24, 32, 16, 16, 64, 4, 4, 2, 1), exact);
    check_thread_count_independence<true>(shape(24, 64, 8, 8, 32, 4, 4, 2, 1), exact);
  }
}

// y, dx, dW and db of one op (with bias and ReLU) on one route, one after another.
template <class T, bool kTransposed>
std::vector<T> forward_and_backward(const Conv2dShape& s, cpu::ConvRoute route) {
  RouteScope scope(route);
  std::vector<T> x(input_size(s)), W(weight_size(s)), b(s.C_out), dy(output_size(s, kTransposed));
  for (size_t i = 0; i < x.size(); ++i) x[i] = T(float(random_in(1, i, -1, 1)));
  for (size_t i = 0; i < W.size(); ++i) W[i] = T(float(random_in(2, i, -0.2, 0.2)));
  for (size_t i = 0; i < b.size(); ++i) b[i] = T(float(random_in(3, i, -0.1, 0.1)));
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = T(float(random_in(4, i, -1, 1)));
  std::vector<T> y(dy.size()), dx(x.size()), dW(W.size()), db(b.size()),
      ws(kTransposed ? cpu::conv_transpose2d_workspace_size(s) : cpu::conv2d_workspace_size(s));
  if constexpr (kTransposed) {
    cpu::conv_transpose2d_forward(y.data(), x.data(), W.data(), b.data(), s, true, ws.data());
    cpu::conv_transpose2d_backward(dx.data(), dW.data(), db.data(), dy.data(), x.data(), W.data(),
                                   y.data(), s, true, ws.data());
  } else {
    cpu::conv2d_forward(y.data(), x.data(), W.data(), b.data(), s, true, ws.data());
    cpu::conv2d_backward(dx.data(), dW.data(), db.data(), dy.data(), x.data(), W.data(), y.data(),
                         s, true, ws.data());
  }
  std::vector<T> all = y;
  for (const auto* part : {&dx, &dW, &db}) all.insert(all.end(), part->begin(), part->end());
  return all;
}

// Every route's float results against the double ones (same float-valued inputs), within
// 1e-5 of the largest magnitude: the finite-difference harness above is too slow at these
// channel counts (every weight perturbed), and its double half is route-independent anyway.
template <bool kTransposed>
void check_routes_against_double(const Conv2dShape& s) {
  const std::vector<double> ref = forward_and_backward<double, kTransposed>(s, {});
  double scale = 0;
  for (double v : ref) scale = std::max(scale, std::fabs(v));
  for (const ConvPath& path : conv_paths()) {
    RouteScope gemm(path.gemm);
    const std::vector<float> got = forward_and_backward<float, kTransposed>(s, path.conv);
    double worst = 0;
    for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(got[i] - ref[i]));
    EXPECT_LE(worst, 1e-5 * scale) << path.name() << (kTransposed ? " transpose" : " conv");
  }
}

TEST(ConvOps, SvhnLayersAtFullChannelCountsOnEveryRoute) {
  // Channel counts at which the automatic route takes oneDNN (blocked layouts of 16 channels)
  // and, with 3 channels, the NCHW side it keeps for narrow tensors.
  check_routes_against_double<false>(shape(5, 3, 32, 32, 32, 4, 4, 2, 1));
  check_routes_against_double<false>(shape(5, 32, 16, 16, 64, 4, 4, 2, 1));
  check_routes_against_double<false>(shape(5, 64, 8, 8, 128, 4, 4, 2, 1));
  check_routes_against_double<true>(shape(5, 128, 4, 4, 64, 4, 4, 2, 1));
  check_routes_against_double<true>(shape(5, 64, 8, 8, 32, 4, 4, 2, 1));
  check_routes_against_double<true>(shape(5, 32, 16, 16, 3, 4, 4, 2, 1));
  // Above 512 images oneDNN takes the batch in near-equal chunks (here 344 + 343 + 343), the
  // weight gradient summed over them.
  check_routes_against_double<false>(shape(1030, 16, 4, 4, 16, 4, 4, 2, 1));
  check_routes_against_double<true>(shape(1030, 16, 2, 2, 16, 4, 4, 2, 1));
}

TEST(ConvOps, OneDnnRouteIsTakenWhereItCanBeAndFallsBackElsewhere) {
  if (!cpu::onednn_built()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev)";
  const auto im2col = cpu::ConvRoute::im2col, onednn = cpu::ConvRoute::onednn;
  // A shape oneDNN takes: its sums run in another order, so some bits differ (and the values
  // agree: the harness tests above hold both routes to the double reference).
  const Conv2dShape taken = shape(8, 32, 8, 8, 64, 4, 4, 2, 1);
  EXPECT_NE((forward_and_backward<float, false>(taken, im2col)),
            (forward_and_backward<float, false>(taken, onednn)));
  EXPECT_NE((forward_and_backward<float, true>(taken, im2col)),
            (forward_and_backward<float, true>(taken, onednn)));
  // So does a batch above 512 images, in chunks (the semi-supervised decoder's 1,160 rows).
  const Conv2dShape many = shape(513, 16, 4, 4, 16, 4, 4, 2, 1);
  EXPECT_NE((forward_and_backward<float, false>(many, im2col)),
            (forward_and_backward<float, false>(many, onednn)));
  // Shapes it cannot take run im2col, bit for bit: a right padding that would be negative
  // (10 → 3 with k 3, s 3, p 0 uses 9 of the 10 pixels; a transpose whose output_padding
  // exceeds its padding).
  const Conv2dShape floor = shape(2, 16, 10, 10, 16, 3, 3, 3, 0);
  EXPECT_EQ((forward_and_backward<float, false>(floor, im2col)),
            (forward_and_backward<float, false>(floor, onednn)));
  const Conv2dShape padded = shape(2, 16, 4, 4, 16, 3, 3, 2, 0, 1);
  EXPECT_EQ((forward_and_backward<float, true>(padded, im2col)),
            (forward_and_backward<float, true>(padded, onednn)));
}

// A backward with both gradients (oneDNN then reorders an NCHW dy once for the two) against
// each gradient alone, bit for bit: a conv, a transpose, and a batch of two oneDNN chunks.
TEST(ConvOps, OneDnnGradientsTogetherEqualEachAlone) {
  if (!cpu::onednn_built()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev)";
  test::RouteScope<cpu::ConvRoute> onednn(cpu::ConvRoute::onednn);
  for (const auto& [s, transposed] : {std::pair{shape(8, 32, 8, 8, 64, 4, 4, 2, 1), false},
                                      std::pair{shape(8, 64, 4, 4, 32, 4, 4, 2, 1), true},
                                      std::pair{shape(600, 16, 4, 4, 32, 4, 4, 2, 1), false}}) {
    SCOPED_TRACE(std::string(transposed ? "transpose " : "conv ") + std::to_string(s.N));
    const size_t in = size_t(s.N) * s.C_in * s.H * s.W,
                 out = size_t(s.N) * s.C_out * cpu::conv_out_h(s, transposed) *
                       cpu::conv_out_w(s, transposed),
                 weights = size_t(s.C_out) * s.C_in * s.KH * s.KW;
    std::vector<float> x(in), W(weights), dy(out);
    for (size_t i = 0; i < in; ++i) x[i] = float(random_in(31, i, -1, 1));
    for (size_t i = 0; i < weights; ++i) W[i] = float(random_in(32, i, -0.2, 0.2));
    for (size_t i = 0; i < out; ++i) dy[i] = float(random_in(33, i, -1, 1));
    // The workspace the query asks for, then guards that the ops must leave as they are (the
    // shared dy takes room the calls' own reorders leave).
    const size_t ws_size =
        transposed ? cpu::conv_transpose2d_workspace_size(s) : cpu::conv2d_workspace_size(s);
    constexpr float kGuard = -1234.5f;
    std::vector<float> ws(ws_size + 4096, kGuard);
    const auto backward = [&](float* dx, float* dW) {
      std::vector<float> dz = dy;  // the op may mask dy in place (not without ReLU)
      if (transposed)
        cpu::conv_transpose2d_backward<float>(dx, dW, nullptr, dz.data(), x.data(), W.data(),
                                              nullptr, s, false, ws.data());
      else
        cpu::conv2d_backward<float>(dx, dW, nullptr, dz.data(), x.data(), W.data(), nullptr, s,
                                    false, ws.data());
    };
    std::vector<float> dx(in), dW(weights), dx_alone(in), dW_alone(weights);
    backward(dx.data(), dW.data());
    backward(dx_alone.data(), nullptr);
    backward(nullptr, dW_alone.data());
    EXPECT_EQ(dx, dx_alone);
    EXPECT_EQ(dW, dW_alone);
    for (size_t i = ws_size; i < ws.size(); ++i)
      ASSERT_EQ(ws[i], kGuard) << "past the workspace, +" << i - ws_size;
  }
}

TEST(ConvOps, RoutesAreNamed) {
  EXPECT_EQ(cpu::conv_route_named("im2col"), cpu::ConvRoute::im2col);
  EXPECT_EQ(cpu::conv_route_named("onednn"), cpu::ConvRoute::onednn);
  EXPECT_EQ(cpu::conv_route_named("auto"), cpu::ConvRoute::automatic);
  EXPECT_EQ(cpu::conv_route_named(""), cpu::ConvRoute::automatic);
  try {
    cpu::conv_route_named("mkl");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'mkl'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("im2col"), std::string::npos) << e.what();
  }
}

// ⟨conv2d(u), v⟩ = ⟨u, conv_transpose2d(v)⟩ with one weight W[C_out, C_in, KH, KW], which is
// the transpose's W[C_in', C_out', KH, KW] with C_in' = C_out, C_out' = C_in.
void check_adjoint(const Conv2dShape& c) {
  const int Ho = out_h(c, false), Wo = out_w(c, false);
  // output_padding recovers the rows and columns that the conv's floor division dropped.
  const int op_h = (c.H + 2 * c.pad - c.KH) % c.stride, op_w = (c.W + 2 * c.pad - c.KW) % c.stride;
  ASSERT_EQ(op_h, op_w) << "one output_padding for both axes";
  const Conv2dShape t = shape(c.N, c.C_out, Ho, Wo, c.C_in, c.KH, c.KW, c.stride, c.pad, op_h);
  ASSERT_EQ(out_h(t, true), c.H);
  ASSERT_EQ(out_w(t, true), c.W);
  // The transpose as the forward convolution cuDNN's calls speak of (conv_geometry.h) is c.
  const Conv2dShape f = forward_convolution(t, true);
  EXPECT_EQ(std::vector<int>(
                {f.N, f.C_in, f.H, f.W, f.C_out, f.KH, f.KW, f.stride, f.pad, f.output_padding}),
            std::vector<int>({c.N, c.C_in, c.H, c.W, c.C_out, c.KH, c.KW, c.stride, c.pad, 0}));
  EXPECT_EQ(out_h(f, false), t.H);
  EXPECT_EQ(out_w(f, false), t.W);
  const auto u = draw(5, input_size(c)), v = draw(6, output_size(c, false)),
             W = draw(7, weight_size(c));
  std::vector<double> cu(v.size()), tv(u.size()), ws1(cpu::conv2d_workspace_size(c)),
      ws2(cpu::conv_transpose2d_workspace_size(t));
  cpu::conv2d_forward<double>(cu.data(), u.data(), W.data(), nullptr, c, false, ws1.data());
  cpu::conv_transpose2d_forward<double>(tv.data(), v.data(), W.data(), nullptr, t, false,
                                        ws2.data());
  double lhs = 0, rhs = 0, scale = 0;
  for (size_t i = 0; i < v.size(); ++i) lhs += cu[i] * v[i], scale += std::fabs(cu[i] * v[i]);
  for (size_t i = 0; i < u.size(); ++i) rhs += u[i] * tv[i];
  EXPECT_NEAR(lhs, rhs, 1e-12 * scale) << "N=" << c.N << " " << c.H << "x" << c.W;
  EXPECT_GT(std::fabs(lhs), 1e-3) << "a vacuous identity";

  // And the transpose's forward is the conv's input gradient: dx of ⟨conv2d(x), v⟩ = convᵀ(v).
  std::vector<double> dx(u.size()), g = v;
  cpu::conv2d_backward<double>(dx.data(), nullptr, nullptr, g.data(), u.data(), W.data(), nullptr,
                               c, false, ws1.data());
  expect_close(tv, dx, "conv2d dx vs conv_transpose2d");
}

TEST(ConvOps, TransposeIsTheAdjointOfConv) {
  check_adjoint(shape(3, 3, 32, 32, 8, 4, 4, 2, 1));  // SVHN's first layer, 32 → 16
  check_adjoint(shape(2, 5, 9, 9, 4, 3, 3, 2, 1));    // odd: 9 → 5, output_padding 0
  check_adjoint(shape(2, 4, 8, 8, 3, 3, 3, 2, 1));    // 8 → 4 → 8 needs output_padding 1
  check_adjoint(shape(2, 2, 7, 6, 3, 3, 2, 1, 2));    // stride 1, pad 2
  check_adjoint(shape(4, 2, 40, 40, 3, 3, 3, 1, 1));  // several chunks on both sides
}

TEST(ConvOps, WorkspaceIsBoundedAndDependsOnTheShapeAlone) {
  // SVHN's largest layer: cols + output block + weight accumulators per lane stay within tens
  // of MB, and stop growing with N once every lane has a chunk (16 lanes of 16 images).
  const Conv2dShape big = shape(256, 64, 8, 8, 128, 4, 4, 2, 1);
  EXPECT_LE(cpu::conv2d_workspace_size(big) * sizeof(float), size_t(32) << 20);
  const Conv2dShape bigger = shape(100000, 64, 8, 8, 128, 4, 4, 2, 1);
  EXPECT_EQ(cpu::conv2d_workspace_size(big), cpu::conv2d_workspace_size(bigger));
  EXPECT_LT(cpu::conv2d_workspace_size(shape(160, 64, 8, 8, 128, 4, 4, 2, 1)),
            cpu::conv2d_workspace_size(big));  // B = 160: 10 chunks, so 10 lanes
  EXPECT_LE(
      cpu::conv_transpose2d_workspace_size(shape(160, 32, 16, 16, 3, 4, 4, 2, 1)) * sizeof(float),
      size_t(16) << 20);
}

TEST(ConvOps, ShapeProblemsAreNamed) {
  EXPECT_EQ(cpu::conv_shape_problem(shape(2, 3, 8, 8, 4, 3, 3, 2, 1), false), "");
  EXPECT_EQ(cpu::conv_shape_problem(shape(2, 3, 8, 8, 4, 3, 3, 2, 1, 1), true), "");
  auto problem = [](const Conv2dShape& s, bool transposed) {
    return cpu::conv_shape_problem(s, transposed);
  };
  EXPECT_NE(problem(shape(0, 3, 8, 8, 4, 3, 3, 1, 0), false).find("at least 1"), std::string::npos);
  EXPECT_NE(problem(shape(1, 3, 8, 8, 4, 3, 3, 0, 0), false).find("stride"), std::string::npos);
  EXPECT_NE(problem(shape(1, 3, 8, 8, 4, 3, 3, 1, -1), false).find("pad"), std::string::npos);
  EXPECT_NE(problem(shape(1, 3, 2, 2, 4, 5, 5, 1, 1), false).find("empty"), std::string::npos);
  EXPECT_NE(problem(shape(1, 3, 8, 8, 4, 3, 3, 2, 1, 1), false).find("output_padding"),
            std::string::npos);
  EXPECT_NE(problem(shape(1, 3, 8, 8, 4, 3, 3, 2, 1, 2), true).find("output_padding"),
            std::string::npos);
  EXPECT_NE(problem(shape(1, 3, 1, 1, 4, 1, 1, 1, 1), true).find("empty"), std::string::npos);
  EXPECT_NE(problem(shape(4096, 512, 64, 64, 8, 3, 3, 1, 1), false).find("2^31"),
            std::string::npos);
  EXPECT_NE(problem(shape(1, 1, 2000000000, 1, 1, 1, 1, 1, 200000000), false).find("overflow"),
            std::string::npos);
  // The message names the op and the shape.
  EXPECT_NE(problem(shape(1, 3, 8, 8, 4, 3, 3, 0, 0), true).find("conv_transpose2d shape N=1"),
            std::string::npos);
}

TEST(ConvOps, CpuBackendRefusesBadShapesAndShortWorkspaces) {
  auto backend = make_cpu_backend<float>(1);
  const Conv2dShape s = shape(2, 3, 8, 8, 4, 3, 3, 2, 1);
  const size_t bytes = backend->conv2d_workspace_bytes(s);
  EXPECT_EQ(bytes, cpu::conv2d_workspace_size(s) * sizeof(float));
  std::vector<float> x(input_size(s), 0.5f), W(weight_size(s), 0.1f), b(4, 0.0f),
      y(output_size(s, false)), ws(bytes / sizeof(float));
  EXPECT_NO_THROW(
      backend->conv2d_forward(y.data(), x.data(), W.data(), b.data(), s, true, ws.data(), bytes));
  EXPECT_THROW(backend->conv2d_forward(y.data(), x.data(), W.data(), b.data(), s, true, ws.data(),
                                       bytes - 4),
               Error);
  EXPECT_THROW(backend->conv2d_backward(nullptr, W.data(), b.data(), y.data(), x.data(), W.data(),
                                        y.data(), s, true, nullptr, bytes),
               Error);
  Conv2dShape bad = s;
  bad.stride = 0;
  EXPECT_THROW(backend->conv2d_workspace_bytes(bad), Error);
  EXPECT_THROW(backend->conv_transpose2d_forward(y.data(), x.data(), W.data(), b.data(), bad, true,
                                                 ws.data(), bytes),
               Error);
  try {
    backend->conv_transpose2d_workspace_bytes(bad);
    ADD_FAILURE() << "a zero stride was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv_transpose2d: conv_transpose2d shape"),
              std::string::npos)
        << e.what();
  }
}

// ---- Gaussian likelihood with a per-channel or global learned log-variance

struct GaussianCase {
  int B = 4, C = 3, P = 7;
  double lv_lo = -2, lv_hi = 2;
  std::vector<BufferSpec> inputs() const {
    return {{"mu", size_t(B) * C * P, -1, 1},
            {"x", size_t(B) * C * P, -1.5, 1.5, false},
            {"logvar", size_t(C), lv_lo, lv_hi}};
  }
  std::vector<BufferSpec> outputs() const { return {{"ll", size_t(B)}}; }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::gaussian_ll_forward(b["ll"], b["mu"], b["x"], b["logvar"], B, C, P);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    cpu::gaussian_ll_backward(b["dmu"], b["dlogvar"], b["dll"], b["mu"], b["x"], b["logvar"], B, C,
                              P);
  }
};

TEST(GaussianOps, PerChannelLogVariance) {
  expect_op_ok(check_op(GaussianCase{}));
}
TEST(GaussianOps, GlobalLogVariance) {
  expect_op_ok(check_op(GaussianCase{.B = 5, .C = 1, .P = 12}));
}
TEST(GaussianOps, SmallVariancesNearTheClampBound) {
  // lv ∈ [−29.9, −29]: e^{−lv} ≈ 4e12..1e13 and mu within 1e-6 of x keeps ll of order 1.
  GaussianCase c{.B = 3, .C = 2, .P = 5, .lv_lo = -29.9, .lv_hi = -29};
  struct Close : GaussianCase {
    std::vector<BufferSpec> inputs() const {
      return {{"mu", size_t(B) * C * P, -1e-6, 1e-6},
              {"x", size_t(B) * C * P, 0, 0, false},
              {"logvar", size_t(C), lv_lo, lv_hi}};
    }
  };
  const OpReport r = check_op(Close{c});
  EXPECT_TRUE(r.finite) << r.problems;
  EXPECT_TRUE(r.guards_intact) << r.problems;
  EXPECT_LE(r.worst_nmse, 1e-7) << r.worst_nmse_at;
  // Derivatives of size 1e13 · 1e-6: finite differences at h = 1e-6 lose ~1e-4 relative.
  EXPECT_LE(r.worst_fd_error, 1e-3) << r.worst_fd_at;
}

TEST(GaussianOps, KnownValues) {
  // μ = x: ll = −½ Σ_c P (log 2π + lv_c).
  const int B = 2, C = 2, P = 3;
  const std::vector<double> mu(B * C * P, 0.25), x = mu, logvar = {0.5, -1.0};
  std::vector<double> ll(B);
  cpu::gaussian_ll_forward(ll.data(), mu.data(), x.data(), logvar.data(), B, C, P);
  const double expected =
      -0.5 * P * ((std::log(2 * std::numbers::pi) + 0.5) + (std::log(2 * std::numbers::pi) - 1.0));
  for (double v : ll) EXPECT_NEAR(v, expected, 1e-12);
  // Unit variance, x − μ = 1 everywhere: ll = −½ D (log 2π + 1).
  const std::vector<double> x1(B * C * P, 1.25), zero = {0.0, 0.0};
  cpu::gaussian_ll_forward(ll.data(), mu.data(), x1.data(), zero.data(), B, C, P);
  for (double v : ll) EXPECT_NEAR(v, -0.5 * C * P * (std::log(2 * std::numbers::pi) + 1), 1e-12);
  // Where (x − μ)² = e^{lv} the log-variance is at its optimum: dlogvar = 0.
  std::vector<double> dmu(B * C * P), dlogvar(2), dll = {1.0, 0.5};
  cpu::gaussian_ll_backward(dmu.data(), dlogvar.data(), dll.data(), mu.data(), x1.data(),
                            zero.data(), B, C, P);
  EXPECT_NEAR(dlogvar[0], 0.0, 1e-12);
  EXPECT_NEAR(dlogvar[1], 0.0, 1e-12);
  EXPECT_NEAR(dmu[0], 1.0, 1e-12);              // dll · (x − μ) / σ²
  EXPECT_NEAR(dmu[size_t(C) * P], 0.5, 1e-12);  // the second row's weight
}

// Log-variances far outside [−30, 20] (and at ±1e4): every output and gradient is finite,
// the forward equals the forward at the clamp bound, the log-variance gradient is 0.
template <class T>
void check_gaussian_extremes() {
  const int B = 3, C = 4, P = 5;
  const std::vector<T> logvar = {T(1e4), T(-1e4), T(25), T(-35)},
                       at_bound = {T(20), T(-30), T(20), T(-30)};
  std::vector<T> mu(size_t(B) * C * P), x(mu.size());
  for (size_t i = 0; i < mu.size(); ++i)
    mu[i] = T(random_in(9, i, -100, 100)), x[i] = T(random_in(10, i, -100, 100));
  std::vector<T> ll(B), ll_bound(B);
  cpu::gaussian_ll_forward(ll.data(), mu.data(), x.data(), logvar.data(), B, C, P);
  cpu::gaussian_ll_forward(ll_bound.data(), mu.data(), x.data(), at_bound.data(), B, C, P);
  for (int i = 0; i < B; ++i) {
    ASSERT_TRUE(std::isfinite(ll[i])) << i;
    EXPECT_EQ(ll[i], ll_bound[i]);
  }
  std::vector<T> dmu(mu.size()), dlogvar(C), dll(B, T(1));
  cpu::gaussian_ll_backward(dmu.data(), dlogvar.data(), dll.data(), mu.data(), x.data(),
                            logvar.data(), B, C, P);
  for (T g : dmu) ASSERT_TRUE(std::isfinite(g));
  for (T g : dlogvar) EXPECT_EQ(g, T(0)) << "outside the clamp: zero gradient";
  // NaN must surface, not be clamped away.
  const std::vector<T> nan_lv = {std::numeric_limits<T>::quiet_NaN(), T(0), T(0), T(0)};
  cpu::gaussian_ll_forward(ll.data(), mu.data(), x.data(), nan_lv.data(), B, C, P);
  EXPECT_TRUE(std::isnan(ll[0]));
  cpu::gaussian_ll_backward(dmu.data(), dlogvar.data(), dll.data(), mu.data(), x.data(),
                            nan_lv.data(), B, C, P);
  EXPECT_TRUE(std::isnan(dlogvar[0]));
  EXPECT_TRUE(std::isfinite(dlogvar[1]));
}

TEST(GaussianOps, FiniteAtExtremeLogVariances) {
  check_gaussian_extremes<float>();
  check_gaussian_extremes<double>();
}

TEST(GaussianOps, NullGradientsAreSkipped) {
  const int B = 2, C = 3, P = 4;
  std::vector<double> mu = draw(11, B * C * P), x = draw(12, B * C * P), logvar = {0.1, -0.2, 0.3},
                      dll = {1.0, -2.0}, dmu(mu.size()), dmu2(mu.size(), 7.0), dlv(C), dlv2(C, 7.0);
  cpu::gaussian_ll_backward(dmu.data(), dlv.data(), dll.data(), mu.data(), x.data(), logvar.data(),
                            B, C, P);
  cpu::gaussian_ll_backward<double>(dmu2.data(), nullptr, dll.data(), mu.data(), x.data(),
                                    logvar.data(), B, C, P);
  cpu::gaussian_ll_backward<double>(nullptr, dlv2.data(), dll.data(), mu.data(), x.data(),
                                    logvar.data(), B, C, P);
  EXPECT_EQ(dmu, dmu2);
  EXPECT_EQ(dlv, dlv2);
}

}  // namespace
}  // namespace equivae::test
