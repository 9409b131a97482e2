// TimedConvolutions (runtime/cuda/timed_convolutions.h): each call on the implementation a
// measurement chose, with fakes that record what ran. And GemmConvolutions
// (runtime/cuda/gemm_conv.h), the convolutions lowered to GEMMs, with its
// kernels run by the emulator and its GEMMs by OpenBLAS: each of the three calls against the
// CPU's convolution in double (kernels/cpu) on the same forward-convolution geometry, for
// conv2d and transposed shapes, float and double, in one chunk and split into chunks of images
// by a small workspace cap (the weight gradient adding the chunks up); the chunk sizes and the
// workspace check.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "runtime/cuda/conv_geometry.h"
#include "runtime/cuda/gemm_conv.h"
#include "runtime/cuda/timed_convolutions.h"
#include "runtime/error.h"
#include "tests/op_harness.h"

namespace equivae::test {
namespace {

using cpu::Conv2dShape;

// The runner the backend hands in, on host memory (the emulator's device memory).
template <class T>
GemmConvolutions::GemmRunner host_runner() {
  return [](const Gemm& g, const void* A, const void* B, void* C, cudaStream_t) {
    cpu::gemm(g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans, g.M,
              g.N, g.K, static_cast<const T*>(A), g.lda, static_cast<const T*>(B), g.ldb, T(g.beta),
              static_cast<T*>(C), g.ldc);
  };
}

size_t images_bytes(const Conv2dShape& c, bool output) {
  const int H = output ? cpu::conv_out_h(c, false) : c.H,
            W = output ? cpu::conv_out_w(c, false) : c.W;
  return size_t(c.N) * (output ? c.C_out : c.C_in) * H * W;
}

// The three calls of op shape s (conv2d, or the transpose's forward convolution) against the
// CPU's conv2d in double on forward_convolution(s): conv_y, dconv_x and dW.
template <class T>
void check_calls(const Conv2dShape& s, bool transposed, size_t cap, int expected_chunk) {
  const Conv2dShape c = forward_convolution(s, transposed);
  const size_t nx = images_bytes(c, false), ny = images_bytes(c, true),
               nw = size_t(c.C_out) * c.C_in * c.KH * c.KW;
  std::vector<double> x(nx), W(nw), dy(ny);
  for (size_t i = 0; i < nx; ++i) x[i] = double(float(random_in(50, i, -1, 1)));
  for (size_t i = 0; i < nw; ++i) W[i] = double(float(random_in(51, i, -0.5, 0.5)));
  for (size_t i = 0; i < ny; ++i) dy[i] = double(float(random_in(52, i, -1, 1)));
  std::vector<double> y(ny), dx(nx), dW(nw), ws(cpu::conv2d_workspace_size(c)), dz = dy;
  cpu::conv2d_forward(y.data(), x.data(), W.data(), static_cast<const double*>(nullptr), c, false,
                      ws.data());
  cpu::conv2d_backward(dx.data(), dW.data(), static_cast<double*>(nullptr), dz.data(), x.data(),
                       W.data(), static_cast<const double*>(nullptr), c, false, ws.data());

  GemmConvolutions calls(std::is_same_v<T, double>, host_runner<T>(), cap);
  const std::string name = std::string(transposed ? "transposed " : "") +
                           "N=" + std::to_string(s.N) + " " + std::to_string(c.C_in) + "x" +
                           std::to_string(c.H) + "x" + std::to_string(c.W) + " → " +
                           std::to_string(c.C_out) + (sizeof(T) == 4 ? " float" : " double");
  EXPECT_EQ(calls.chunk_images(s, transposed), expected_chunk) << name;
  const size_t bytes = calls.workspace_bytes(s, transposed);
  if (expected_chunk > 1) {
    EXPECT_LE(bytes, cap) << name << ": the chunks' workspace within the cap";
  }
  std::vector<T> tx(x.begin(), x.end()), tW(W.begin(), W.end()), tdy(dy.begin(), dy.end()),
      ty(ny, T(-7)), tdx(nx, T(-7)), tdW(nw, T(-7)), tws(bytes / sizeof(T) + 1);
  calls.forward(s, transposed, ty.data(), tx.data(), tW.data(), tws.data(), bytes, nullptr);
  calls.backward_data(s, transposed, tdx.data(), tdy.data(), tW.data(), tws.data(), bytes, nullptr);
  calls.backward_filter(s, transposed, tdW.data(), tx.data(), tdy.data(), tws.data(), bytes,
                        nullptr);
  const double tol = sizeof(T) == 4 ? 1e-10 : 1e-24;
  auto expect_close = [&](const std::vector<double>& ref, const std::vector<T>& got,
                          const char* what) {
    const std::vector<double> g(got.begin(), got.end());
    EXPECT_LE(nmse(ref.data(), g.data(), ref.size()), tol) << name << " " << what;
  };
  expect_close(y, ty, "conv_y (forward)");
  expect_close(dx, tdx, "dconv_x (backward_data)");
  expect_close(dW, tdW, "dW (backward_filter)");

  // The op's forward with its bias and ReLU in the last pass, against the CPU op's: conv2d's
  // (its output is conv_y's side), or the transpose's (conv_x's side, from an input of conv_y's).
  const int channels = transposed ? c.C_in : c.C_out;
  std::vector<double> bias(channels);
  for (int i = 0; i < channels; ++i) bias[i] = double(float(random_in(53, size_t(i), -0.5, 0.5)));
  const std::vector<T> tbias(bias.begin(), bias.end());
  for (const bool relu : {false, true}) {
    const size_t n_out = transposed ? nx : ny;
    const std::vector<double>& input = transposed ? dy : x;
    std::vector<double> ref(n_out);
    if (transposed) {
      std::vector<double> tws(cpu::conv_transpose2d_workspace_size(s));
      cpu::conv_transpose2d_forward(ref.data(), input.data(), W.data(), bias.data(), s, relu,
                                    tws.data());
    } else {
      cpu::conv2d_forward(ref.data(), input.data(), W.data(), bias.data(), s, relu, ws.data());
    }
    const std::vector<T> tin(input.begin(), input.end());
    std::vector<T> got(n_out, T(-7));
    ASSERT_TRUE(calls.forward_with_epilogue(s, transposed, got.data(), tin.data(), tW.data(),
                                            tbias.data(), relu, tws.data(), bytes, nullptr));
    expect_close(ref, got, relu ? "the op's forward, bias and ReLU" : "the op's forward, bias");
  }
  // A workspace one byte short is refused by each call, naming it.
  auto refused = [&](const std::function<void()>& call, const char* name) {
    try {
      call();
      ADD_FAILURE() << name << " took a short workspace";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  std::vector<T> out(std::max(nx, ny)), out_w(nw);
  refused(
      [&] {
        calls.forward(s, transposed, out.data(), tx.data(), tW.data(), tws.data(), bytes - 1,
                      nullptr);
      },
      "conv forward");
  refused(
      [&] {
        calls.backward_data(s, transposed, out.data(), tdy.data(), tW.data(), tws.data(), bytes - 1,
                            nullptr);
      },
      "conv backward data");
  refused(
      [&] {
        calls.backward_filter(s, transposed, out_w.data(), tx.data(), tdy.data(), tws.data(),
                              bytes - 1, nullptr);
      },
      "conv backward filter");
}

// Bytes per image of the forward convolution's lowering: (K + Co)·P elements.
size_t per_image(const Conv2dShape& s, bool transposed, size_t element) {
  const Conv2dShape c = forward_convolution(s, transposed);
  return size_t(c.C_in * c.KH * c.KW + c.C_out) * cpu::conv_out_h(c, false) *
         cpu::conv_out_w(c, false) * element;
}

TEST(GemmConvolutions, EachCallMatchesTheCpuConvolutionInOneChunk) {
  const Conv2dShape svhn{3, 3, 16, 16, 8, 4, 4, 2, 1, 0};
  check_calls<float>(svhn, false, GemmConvolutions::kDefaultWorkspaceCap, 3);
  check_calls<double>(svhn, false, GemmConvolutions::kDefaultWorkspaceCap, 3);
  check_calls<float>({2, 5, 7, 9, 4, 3, 4, 2, 1, 0}, false, GemmConvolutions::kDefaultWorkspaceCap,
                     2);
  check_calls<float>({3, 8, 4, 4, 6, 4, 4, 2, 1, 0}, true, GemmConvolutions::kDefaultWorkspaceCap,
                     3);
  check_calls<double>({2, 4, 5, 3, 3, 3, 3, 2, 1, 1}, true, GemmConvolutions::kDefaultWorkspaceCap,
                      2);
  check_calls<float>({2, 3, 6, 6, 5, 1, 1, 1, 0, 0}, false, GemmConvolutions::kDefaultWorkspaceCap,
                     2);  // 1 × 1
}

TEST(GemmConvolutions, ChunksOfImagesGiveTheSameResults) {
  // 7 images in chunks of 3, 3 and 1; of 2 (a cap that holds 2.5 images); one at a time (a cap
  // below one image still runs, an image per chunk).
  const Conv2dShape s{7, 3, 8, 8, 4, 4, 4, 2, 1, 0};
  const size_t one = per_image(s, false, sizeof(float));
  check_calls<float>(s, false, 3 * one + 256, 3);
  check_calls<float>(s, false, one * 5 / 2 + 256, 2);
  check_calls<double>(s, false, 1, 1);
  const Conv2dShape t{5, 4, 4, 4, 3, 4, 4, 2, 1, 0};  // a transpose: its output is the x side
  check_calls<float>(t, true, 2 * per_image(t, true, sizeof(float)) + 256, 2);
  check_calls<double>(t, true, 3 * per_image(t, true, sizeof(double)) + 256, 3);
}

// A ConvolutionCalls that records which of its calls ran and needs `bytes` of workspace.
struct RecordingCalls final : ConvolutionCalls {
  explicit RecordingCalls(size_t bytes, bool fuses) : bytes(bytes), fuses(fuses) {}
  size_t workspace_bytes(const Conv2dShape&, bool) override { return bytes; }
  void forward(const Conv2dShape&, bool, void*, const void*, const void*, void*, size_t,
               cudaStream_t) override {
    ran += "f";
  }
  void backward_data(const Conv2dShape&, bool, void*, const void*, const void*, void*, size_t,
                     cudaStream_t) override {
    ran += "d";
  }
  void backward_filter(const Conv2dShape&, bool, void*, const void*, const void*, void*, size_t,
                       cudaStream_t) override {
    ran += "w";
  }
  bool forward_with_epilogue(const Conv2dShape&, bool, void*, const void*, const void*, const void*,
                             bool, void*, size_t, cudaStream_t) override {
    if (fuses) ran += "e";
    return fuses;
  }
  size_t bytes;
  bool fuses;
  std::string ran;
};

TEST(TimedConvolutions, EachCallRunsWhereItWasMeasuredFasterByMoreThanTheMargin) {
  auto cudnn = std::make_unique<RecordingCalls>(1000, false);
  auto lowered = std::make_unique<RecordingCalls>(4000, true);
  RecordingCalls *c = cudnn.get(), *l = lowered.get();
  int measured = 0;
  // conv2d: the forward 10% faster lowered; the input gradient 2% faster (within the margin:
  // cuDNN stays); the weight gradient's lowering failed (infinite). The transpose: cuDNN faster
  // everywhere.
  TimedConvolutions timed(
      std::move(cudnn), std::move(lowered),
      [&](const Conv2dShape&, bool transposed, ConvolutionCalls&, ConvolutionCalls&) {
        ++measured;
        const double never = std::numeric_limits<double>::infinity();
        if (transposed) return TimedConvolutions::Seconds{{{1.0, 2.0}, {1.0, 2.0}, {1.0, 2.0}}};
        return TimedConvolutions::Seconds{{{1.0, 0.9}, {1.0, 0.98}, {1.0, never}}};
      });
  const Conv2dShape s{2, 3, 8, 8, 4, 4, 4, 2, 1, 0};
  EXPECT_EQ(timed.workspace_bytes(s, false), 4000u) << "a lowered call's and cuDNN's";
  EXPECT_EQ(timed.workspace_bytes(s, false), 4000u);
  EXPECT_EQ(measured, 1) << "once per shape";
  timed.forward(s, false, nullptr, nullptr, nullptr, nullptr, 0, nullptr);
  timed.backward_data(s, false, nullptr, nullptr, nullptr, nullptr, 0, nullptr);
  timed.backward_filter(s, false, nullptr, nullptr, nullptr, nullptr, 0, nullptr);
  EXPECT_EQ(l->ran, "f");
  EXPECT_EQ(c->ran, "dw");
  // The op's forward with its epilogue: conv2d's is the forward (lowered, fused); a transpose's
  // is backward_data (cuDNN: the backend adds the epilogue).
  EXPECT_TRUE(timed.forward_with_epilogue(s, false, nullptr, nullptr, nullptr, nullptr, true,
                                          nullptr, 0, nullptr));
  EXPECT_EQ(l->ran, "fe");
  EXPECT_FALSE(timed.forward_with_epilogue(s, true, nullptr, nullptr, nullptr, nullptr, true,
                                           nullptr, 0, nullptr));
  EXPECT_EQ(measured, 2) << "the transpose is another shape";
  EXPECT_EQ(timed.workspace_bytes(s, true), 1000u) << "all on cuDNN: cuDNN's alone";
  EXPECT_EQ(c->ran, "dw");
  EXPECT_EQ(timed.calls_chosen(), 5) << "the failed lowering was not timed on both";
  EXPECT_EQ(timed.calls_lowered(), 1);
  EXPECT_TRUE(timed.lowered(s, false, TimedConvolutions::kForward));
  EXPECT_FALSE(timed.lowered(s, false, TimedConvolutions::kBackwardData));
  EXPECT_FALSE(timed.lowered(s, false, TimedConvolutions::kBackwardFilter));
}

}  // namespace
}  // namespace equivae::test
