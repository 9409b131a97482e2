// The tensors between consecutive convolutions kept in oneDNN's channel-blocked layout
// (Conv2dShape::x_blocked / y_blocked, LayerStack::use_blocked_layouts): which boundaries may
// stay blocked, and a stack that keeps them blocked computes what its NCHW twin computes.
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/philox.h"
#include "model/layer_stack.h"
#include "runtime/arena.h"
#include "runtime/backend.h"
#include "tests/cpu_routes.h"
#include "tests/gemm_exactness.h"

namespace equivae {
namespace {

using cpu::Conv2dShape;

Conv2dShape conv_shape(int N, int C_in, int size, int C_out) {  // k4 s2 p1: size → size / 2
  return {N, C_in, size, size, C_out, 4, 4, 2, 1, 0};
}
Conv2dShape transpose_shape(int N, int C_in, int size, int C_out) {  // k4 s2 p1: size → 2 size
  return {N, C_in, size, size, C_out, 4, 4, 2, 1, 0};
}

bool blocked_layouts_here() {
  return cpu::conv_channel_block() > 0;
}

TEST(BlockedLayouts, OnlyWhereEveryDirectionOfBothSidesTakesOneDnn) {
  if (!blocked_layouts_here()) GTEST_SKIP() << "this build or CPU has no oneDNN blocked layout";
  // The automatic routes, whatever EQUIVAE_CPU_CONV says.
  test::RouteScope<cpu::ConvRoute> automatic(cpu::ConvRoute::automatic);
  const int block = cpu::conv_channel_block();
  EXPECT_TRUE(block == 16 || block == 8) << block;
  const Conv2dShape a = conv_shape(8, 3, 16, 32), b = conv_shape(8, 32, 8, 64);
  EXPECT_TRUE(cpu::conv_blocked_between<float>(a, false, b, false));
  // Double is the im2col reference; the ops refuse blocked sides there.
  EXPECT_FALSE(cpu::conv_blocked_between<double>(a, false, b, false));
  // The two must meet: channels, size and images.
  EXPECT_FALSE(cpu::conv_blocked_between<float>(a, false, conv_shape(8, 32, 4, 64), false));
  EXPECT_FALSE(cpu::conv_blocked_between<float>(a, false, conv_shape(4, 32, 8, 64), false));
  // Channels that leave a block part-filled stay NCHW.
  EXPECT_FALSE(cpu::conv_blocked_between<float>(conv_shape(8, 3, 16, 20), false,
                                                conv_shape(8, 20, 8, 64), false));
  // A transpose's forward into fewer than 64 channels runs faster on im2col (the automatic
  // rule), so its input stays NCHW; into 64 it takes oneDNN, and the input may stay blocked.
  const Conv2dShape trunk_out = conv_shape(8, 32, 8, 64);
  EXPECT_FALSE(
      cpu::conv_blocked_between<float>(trunk_out, false, transpose_shape(8, 64, 4, 32), true));
  EXPECT_TRUE(
      cpu::conv_blocked_between<float>(trunk_out, false, transpose_shape(8, 64, 4, 64), true));
  {
    test::RouteScope<cpu::ConvRoute> im2col(cpu::ConvRoute::im2col);
    EXPECT_FALSE(cpu::conv_blocked_between<float>(a, false, b, false));
  }
  {  // everything on oneDNN: the transpose into 32 channels too
    test::RouteScope<cpu::ConvRoute> onednn(cpu::ConvRoute::onednn);
    EXPECT_TRUE(
        cpu::conv_blocked_between<float>(trunk_out, false, transpose_shape(8, 64, 4, 32), true));
  }
}

// conv2d_forward<T> on s (zeros and constants) throws std::invalid_argument.
template <class T>
void expect_forward_refused(const Conv2dShape& s) {
  const int Ho = cpu::conv_out_h(s, false), Wo = cpu::conv_out_w(s, false);
  std::vector<T> x(size_t(s.N) * s.C_in * s.H * s.W, T(0.5)),
      W(size_t(s.C_out) * s.C_in * s.KH * s.KW, T(0.1)), y(size_t(s.N) * s.C_out * Ho * Wo),
      ws(cpu::conv2d_workspace_size(s));
  EXPECT_THROW(cpu::conv2d_forward<T>(y.data(), x.data(), W.data(), nullptr, s, false, ws.data()),
               std::invalid_argument);
}

TEST(BlockedLayouts, BlockedSidesAreRefusedWhereNoBlockedRouteExists) {
  Conv2dShape s = conv_shape(2, 16, 8, 16);
  s.y_blocked = true;
  expect_forward_refused<double>(s);
  // A backend without a blocked layout answers false and refuses the flags.
  auto cpu_double = make_cpu_backend<double>(1);
  EXPECT_FALSE(cpu_double->conv_blocked_between(conv_shape(2, 3, 16, 16), false, s, false));
  if (!blocked_layouts_here()) return;
  // Float, but a block part-filled (20 channels): oneDNN has no plan for it.
  Conv2dShape odd = conv_shape(2, 16, 8, 20);
  odd.y_blocked = true;
  expect_forward_refused<float>(odd);
}

// A stack of five convolutions over N images, the same parameters whatever N, run on a float
// CPU backend: with blocked layouts or without.
struct ConvStack {
  int N;
  std::unique_ptr<Backend<float>> be = make_cpu_backend<float>(1);
  Arena arena;
  Tensor<float> workspace;
  LayerStack<float> stack{"stack",
                          {
                              LayerSpec::conv2d(3, 16, 16, 32, 4, 2, 1),  // → 32 × 8 × 8
                              LayerSpec::conv2d(32, 8, 8, 64, 4, 2, 1),   // → 64 × 4 × 4
                              LayerSpec::conv_transpose2d(64, 4, 4, 64, 4, 2, 1, 0),  // → 64 × 8²
                              LayerSpec::conv_transpose2d(64, 8, 8, 64, 4, 2, 1, 0),  // → 64 × 16²
                              LayerSpec::conv_transpose2d(64, 16, 16, 3, 4, 2, 1, 0),  // → 3 × 32²
                          }};
  int blocked = 0;

  ConvStack(int images, bool blocked_layouts) : N(images) {
    stack.place_parameters(arena);
    stack.place_gradients(arena);
    stack.place_activations(arena, N);
    if (blocked_layouts) blocked = stack.use_blocked_layouts(*be);
    place_shared_workspace(arena, workspace, {&stack}, *be, "test");
    arena.allocate(*be);
    for (size_t l = 0; l < stack.layers().size(); ++l)
      initialise_layer(stack.layers()[l], 5, l, *be);
  }
};

// dx, and each layer's dW and db, of one forward and backward of the stack.
struct Pass {
  std::vector<float> out, dx;
  std::vector<std::vector<float>> dW, db;
};
Pass run(ConvStack& s) {
  const int in = s.stack.in(), out = s.stack.out(), N = s.N;
  std::vector<float> x(size_t(N) * in), dout(size_t(N) * out);
  for (size_t i = 0; i < x.size(); ++i) x[i] = philox_uniform<float>(9, 0, 0, uint32_t(i));
  for (size_t i = 0; i < dout.size(); ++i)
    dout[i] = philox_uniform<float>(9, 1, 0, uint32_t(i)) - 0.5f;
  Tensor<float> dev_x, dev_dx;
  Arena io;
  io.place(dev_x, N, in);
  io.place(dev_dx, N, in);
  io.allocate(*s.be);
  s.be->upload(dev_x.data, x.data(), x.size() * sizeof(float));
  const Tensor<float>& y = s.stack.forward(*s.be, dev_x.data, N);
  Pass p;
  p.out.resize(y.size());
  s.be->download(p.out.data(), y.data, y.size() * sizeof(float));
  s.be->upload(s.stack.output_grad().data, dout.data(), dout.size() * sizeof(float));
  s.stack.backward(*s.be, dev_x.data, N, dev_dx.data);
  p.dx.resize(dev_dx.size());
  s.be->download(p.dx.data(), dev_dx.data, p.dx.size() * sizeof(float));
  for (const Layer<float>& l : s.stack.layers()) {
    p.dW.emplace_back(l.dW.size());
    p.db.emplace_back(l.db.size());
    s.be->download(p.dW.back().data(), l.dW.data, l.dW.size() * sizeof(float));
    s.be->download(p.db.back().data(), l.db.data, l.db.size() * sizeof(float));
  }
  return p;
}

// The stack over N images with blocked layouts against its NCHW twin.
void expect_blocked_twin(int N) {
  SCOPED_TRACE(std::to_string(N) + " images");
  ConvStack blocked(N, true), nchw(N, false);
  // conv → conv (32 channels), conv → transpose into 64, transpose → transpose into 64; the
  // last transpose's forward (into 3 channels) runs on im2col, so its input stays NCHW.
  ASSERT_EQ(blocked.blocked, 3);
  const auto& layers = blocked.stack.layers();
  EXPECT_TRUE(layers[0].conv.y_blocked && layers[1].conv.x_blocked);
  EXPECT_TRUE(layers[2].conv.y_blocked && layers[3].conv.x_blocked);
  EXPECT_FALSE(layers[3].conv.y_blocked || layers[4].conv.x_blocked || layers[4].conv.y_blocked);
  EXPECT_FALSE(layers[0].conv.x_blocked);
  for (const auto& l : nchw.stack.layers()) EXPECT_FALSE(l.conv.x_blocked || l.conv.y_blocked);

  const Pass b = run(blocked), n = run(nchw);
  // The same primitives on the same numbers: only the reorders between them are gone.
  EXPECT_EQ(b.out, n.out);
  for (size_t l = 1; l < b.dW.size(); ++l) EXPECT_EQ(b.dW[l], n.dW[l]) << "layer " << l;
  // Layer 0's weight gradient reads dy blocked; its input gradient takes oneDNN (dy blocked)
  // where the NCHW twin takes im2col (into 3 channels); a blocked bias gradient sums in its
  // own order: equal to rounding.
  test::expect_same_rows(b.dW[0], n.dW[0], /*exact=*/false, "dW of layer 0");
  test::expect_same_rows(b.dx, n.dx, /*exact=*/false, "dx");
  for (size_t l = 0; l < b.db.size(); ++l)
    test::expect_same_rows(b.db[l], n.db[l], /*exact=*/false, "db of layer " + std::to_string(l));
  // And they are not trivially equal: the gradients are there.
  EXPECT_NE(n.dx, std::vector<float>(n.dx.size(), 0.0f));
}

TEST(BlockedLayouts, StackComputesWhatItsNchwTwinComputes) {
  if (!blocked_layouts_here()) GTEST_SKIP() << "this build or CPU has no oneDNN blocked layout";
  test::RouteScope<cpu::ConvRoute> automatic(cpu::ConvRoute::automatic);
  expect_blocked_twin(6);
}

TEST(BlockedLayouts, BatchesOfSeveralOneDnnChunksToo) {
  // Above 512 images oneDNN takes a batch in chunks (600: two of 300), blocked ones included.
  if (!blocked_layouts_here()) GTEST_SKIP() << "this build or CPU has no oneDNN blocked layout";
  test::RouteScope<cpu::ConvRoute> automatic(cpu::ConvRoute::automatic);
  expect_blocked_twin(600);
}

}  // namespace
}  // namespace equivae
