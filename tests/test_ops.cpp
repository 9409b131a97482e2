// Every CPU op through the one harness: float vs double, finite differences,
// NaN/Inf, guard sentinels. Plus the ops' own properties (pooling's dense form,
// Adam against a plain reference) and proof that the harness can fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/cpu_routes.h"
#include "tests/op_harness.h"

namespace equivae::test {
namespace {

// The harness on every GEMM route the build has: the float op (oneDNN's matmul or OpenBLAS)
// against the double one (always OpenBLAS).
template <class Case>
void expect_dense_ok(const Case& c) {
  for (cpu::GemmRoute route : gemm_routes()) {
    SCOPED_TRACE(route_name(route));
    RouteScope scope(route);
    expect_op_ok(check_op(c));
  }
}

struct DenseCase {
  int B = 9, in = 37, out = 19;
  bool relu = true;
  bool accumulate = false;
  std::vector<BufferSpec> inputs() const {
    return {{"x", size_t(B) * in}, {"W", size_t(in) * out, -0.5, 0.5}, {"b", size_t(out)}};
  }
  std::vector<BufferSpec> outputs() const { return {{"y", size_t(B) * out}}; }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::dense_forward(b["y"], b["x"], b["W"], b["b"], B, in, out, relu);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    if (accumulate) std::fill_n(b["dx"], size_t(B) * in, T(0.25));  // added onto 0.25 ...
    cpu::dense_backward(b["dx"], b["dW"], b["db"], b["dy"], b["x"], b["W"], b["y"], B, in, out,
                        relu, accumulate);
    if (accumulate)  // ... which comes off again
      for (size_t i = 0; i < size_t(B) * in; ++i) b["dx"][i] -= T(0.25);
  }
};

TEST(Ops, DenseReluMatchesReferenceAndFiniteDifferences) {
  expect_dense_ok(DenseCase{});
}
TEST(Ops, DenseLinear) {
  expect_dense_ok(DenseCase{.relu = false});
}
TEST(Ops, DenseInputGradientAccumulates) {
  expect_dense_ok(DenseCase{.accumulate = true});
}
TEST(Ops, DenseOddShapes) {
  expect_dense_ok(DenseCase{.B = 1, .in = 1, .out = 3});
}

// Two dense layers, the lower with a ReLU, run backward as LayerStack chains them: the upper
// layer's dense_backward finishes the lower's ReLU mask and bias gradient (input_relu_db), and
// the lower's backward then starts from dz with nothing left to do.
struct DenseOverReluCase {
  int B = 7, in = 13, hidden = 11, out = 5;
  bool top_relu = true;
  std::vector<BufferSpec> inputs() const {
    return {{"x", size_t(B) * in},
            {"W0", size_t(in) * hidden, -0.5, 0.5},
            {"b0", size_t(hidden)},
            {"W1", size_t(hidden) * out, -0.5, 0.5},
            {"b1", size_t(out)}};
  }
  std::vector<BufferSpec> outputs() const {
    BufferSpec h{"h", size_t(B) * hidden};
    h.differentiable = false;  // inside the pair: L sees y only
    return {h, {"y", size_t(B) * out}};
  }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::dense_forward(b["h"], b["x"], b["W0"], b["b0"], B, in, hidden, true);
    cpu::dense_forward(b["y"], b["h"], b["W1"], b["b1"], B, hidden, out, top_relu);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    std::vector<T> dh(size_t(B) * hidden, T(123));  // written whole by the upper layer
    cpu::dense_backward(dh.data(), b["dW1"], b["db1"], b["dy"], b["h"], b["W1"], b["y"], B, hidden,
                        out, top_relu, false, b["db0"]);
    cpu::dense_backward<T>(b["dx"], b["dW0"], nullptr, dh.data(), b["x"], b["W0"], b["h"], B, in,
                           hidden, false);
  }
};

TEST(Ops, DenseBackwardFinishesTheReluLayerBelow) {
  expect_dense_ok(DenseOverReluCase{});
  expect_dense_ok(DenseOverReluCase{.B = 1, .in = 2, .hidden = 1, .out = 1, .top_relu = false});
}

// A dense layer fed two inputs [a ; b] without their concatenation, as the encoder's first
// layer runs: y = act(a · W[:in_a] + b · W[in_a:] + bias) by dense_forward_partial and an
// accumulating dense_forward; backward by one dense_backward per row block of W.
struct DenseTwoInputsCase {
  int B = 6, in_a = 9, in_b = 4, out = 7;
  bool relu = true;
  std::vector<BufferSpec> inputs() const {
    return {{"a", size_t(B) * in_a},
            {"b", size_t(B) * in_b},
            {"W", size_t(in_a + in_b) * out, -0.5, 0.5},
            {"bias", size_t(out)}};
  }
  std::vector<BufferSpec> outputs() const { return {{"y", size_t(B) * out}}; }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::dense_forward_partial(b["y"], b["a"], b["W"], B, in_a, out);
    cpu::dense_forward(b["y"], b["b"], b["W"] + size_t(in_a) * out, b["bias"], B, in_b, out, relu,
                       /*accumulate=*/true);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    const size_t rows_b = size_t(in_a) * out;
    std::fill_n(b["db"], size_t(B) * in_b, T(0));  // the b part's gradient is added
    cpu::dense_backward(b["db"], b["dW"] + rows_b, b["dbias"], b["dy"], b["b"], b["W"] + rows_b,
                        b["y"], B, in_b, out, relu, /*accumulate_dx=*/true);
    cpu::dense_backward<T>(b["da"], b["dW"], nullptr, b["dy"], b["a"], b["W"], b["y"], B, in_a, out,
                           false);
  }
};

TEST(Ops, DenseLayerFedTwoInputs) {
  expect_dense_ok(DenseTwoInputsCase{});
  expect_dense_ok(DenseTwoInputsCase{.B = 1, .in_a = 1, .in_b = 1, .out = 2, .relu = false});
}

// Pooling sets: C segments of k rows, row i pools m_i = 1 + (i mod (k−1)) others.
struct PoolCase {
  int C = 3, k = 5, d = 4;
  int rows() const { return C * k; }
  std::pair<std::vector<int32_t>, std::vector<int32_t>> sets() const {
    std::vector<int32_t> offsets{0}, members;
    for (int i = 0; i < rows(); ++i) {
      const int seg = i / k, m = 1 + i % (k - 1);
      for (int o = 1; o <= m; ++o) members.push_back(seg * k + (i % k + o) % k);
      offsets.push_back(int32_t(members.size()));
    }
    return {offsets, members};
  }
  std::vector<BufferSpec> inputs() const { return {{"e", size_t(rows()) * d}}; }
  std::vector<BufferSpec> outputs() const { return {{"r", size_t(rows()) * d}}; }
  IntInputs int_inputs() const {
    auto [offsets, members] = sets();
    return {{"offsets", offsets}, {"members", members}};
  }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::pool_forward(b["r"], b["e"], b.i("offsets"), b.i("members"), rows(), d);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    cpu::pool_backward(b["de"], b["dr"], b.i("offsets"), b.i("members"), rows(), rows(), d);
  }
};

TEST(Ops, LeaveOneOutPooling) {
  expect_op_ok(check_op(PoolCase{}));
}

TEST(Ops, PoolTransposeListsEachItemsPoolingRowsInOrder) {
  // Sets over N = 5 items, one repeat (row 2 uses item 4 twice), item 3 unused.
  const std::vector<int32_t> offsets{0, 2, 3, 6, 7}, members{1, 0, 4, 4, 0, 4, 1};
  std::vector<int32_t> inv_offsets(6), inv_rows(members.size());
  cpu::pool_transpose(offsets.data(), members.data(), 4, 5, inv_offsets.data(), inv_rows.data());
  EXPECT_EQ(inv_offsets, (std::vector<int32_t>{0, 2, 4, 4, 4, 7}));
  EXPECT_EQ(inv_rows, (std::vector<int32_t>{0, 2, 0, 3, 1, 2, 2}));
}

TEST(Ops, PoolingBackwardGatherEqualsTheScatterBitForBit) {
  // Random sets of 1 to 6 members over N items (repeats allowed, some items unused), wide
  // enough rows that the gather runs its items in parallel.
  const int R = 300, N = 200, d = 512;
  std::vector<int32_t> offsets{0}, members;
  for (int i = 0; i < R; ++i) {
    const int m = 1 + int(random_in(5, size_t(i), 0, 6));
    for (int s = 0; s < m; ++s) members.push_back(int32_t(random_in(6, members.size(), 0, N - 10)));
    offsets.push_back(int32_t(members.size()));
  }
  std::vector<int32_t> inv_offsets(N + 1), inv_rows(members.size());
  cpu::pool_transpose(offsets.data(), members.data(), R, N, inv_offsets.data(), inv_rows.data());
  std::vector<float> dr(size_t(R) * d), scatter(size_t(N) * d), gather(size_t(N) * d, 7.0f);
  for (size_t i = 0; i < dr.size(); ++i) dr[i] = float(random_in(7, i, -1, 1));
  cpu::pool_backward(scatter.data(), dr.data(), offsets.data(), members.data(), R, N, d);
  cpu::pool_backward_gather(gather.data(), dr.data(), offsets.data(), inv_offsets.data(),
                            inv_rows.data(), N, d);
  EXPECT_EQ(0, std::memcmp(scatter.data(), gather.data(), scatter.size() * sizeof(float)));
  EXPECT_EQ(gather[size_t(N - 1) * d], 0.0f);  // an unused item: zero, not left as it was
}

TEST(Ops, PoolingBackwardEqualsDenseMatrixForm) {
  // r = P e with P[i][j] = 1/m_i for j ∈ S_i, so de = Pᵀ dr.
  PoolCase c;
  auto [offsets, members] = c.sets();
  const int R = c.rows(), d = c.d;
  std::vector<double> P(size_t(R) * R, 0.0), dr(size_t(R) * d), de(size_t(R) * d);
  for (int i = 0; i < R; ++i)
    for (int s = offsets[i]; s < offsets[i + 1]; ++s)
      P[size_t(i) * R + members[s]] += 1.0 / (offsets[i + 1] - offsets[i]);
  for (size_t i = 0; i < dr.size(); ++i) dr[i] = random_in(77, i, -1, 1);
  cpu::pool_backward(de.data(), dr.data(), offsets.data(), members.data(), R, R, d);
  for (int j = 0; j < R; ++j)
    for (int c2 = 0; c2 < d; ++c2) {
      double expected = 0;
      for (int i = 0; i < R; ++i) expected += P[size_t(i) * R + j] * dr[size_t(i) * d + c2];
      EXPECT_NEAR(de[size_t(j) * d + c2], expected, 1e-12) << "row " << j;
    }
}

struct SampleKlCase {
  int B = 7, d = 5;
  // v, ε and dmulv (through ε) carry float Box–Muller's rounding: NMSE only (ε is held bit
  // for bit against the CPU's float noise in test_cuda_kernels).
  std::vector<BufferSpec> inputs() const {
    BufferSpec mulv{"mulv", size_t(B) * 2 * d, -2, 2};
    mulv.elementwise = false;
    return {mulv};
  }
  std::vector<BufferSpec> outputs() const {
    BufferSpec v{"v", size_t(B) * d}, eps{"eps", size_t(B) * d, 0, 0, false};
    v.elementwise = eps.elementwise = false;
    return {v, {"kl", size_t(B)}, eps};
  }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::sample_kl_forward(b["v"], b["eps"], b["kl"], b["mulv"], B, d, 42, 3, 0);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    cpu::sample_kl_backward(b["dmulv"], b["dv"], b["dkl"], b["mulv"], b["eps"], B, d);
  }
};

TEST(Ops, SampleAndKl) {
  expect_op_ok(check_op(SampleKlCase{}));
}

TEST(Ops, SampleUsesPhiloxNoiseOfItsRows) {
  // Same (seed, step, row, col) → same ε whatever the batch around it; row0 shifts rows.
  const int d = 3;
  std::vector<double> mulv(4 * 2 * d, 0.0), v(4 * d), eps(4 * d), kl(4);
  cpu::sample_kl_forward(v.data(), eps.data(), kl.data(), mulv.data(), 4, d, 9, 5, 10);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < d; ++j) {
      EXPECT_EQ(eps[i * d + j], (philox_normal<double>(9, 5, 10 + i, j)));
      EXPECT_EQ(v[i * d + j], eps[i * d + j]);  // μ = 0, σ = 1
    }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(kl[i], 0.0);
}

struct BernoulliCase {
  int B = 6, D = 23;
  std::vector<BufferSpec> inputs() const {
    return {{"logits", size_t(B) * D, -6, 6}, {"x", size_t(B) * D, 0, 1, false}};
  }
  std::vector<BufferSpec> outputs() const { return {{"ll", size_t(B)}}; }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::bernoulli_ll_forward(b["ll"], b["logits"], b["x"], B, D);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    cpu::bernoulli_ll_backward(b["dlogits"], b["dll"], b["logits"], b["x"], B, D);
  }
};

TEST(Ops, BernoulliLogLikelihood) {
  expect_op_ok(check_op(BernoulliCase{}));
}

TEST(Ops, BernoulliStableAtExtremeLogits) {
  const float logits[4] = {1e4f, -1e4f, 88.f, -88.f}, x[4] = {1, 0, 0.5f, 0.5f};
  float ll[1], dl[4], one[1] = {1};
  cpu::bernoulli_ll_forward(ll, logits, x, 1, 4);
  cpu::bernoulli_ll_backward(dl, one, logits, x, 1, 4);
  EXPECT_TRUE(std::isfinite(ll[0]));
  EXPECT_NEAR(ll[0], -88.f, 1e-2);  // 0 + 0 + (44 − 88) + (−44 − 0)
  for (float g : dl) EXPECT_TRUE(std::isfinite(g));
}

struct SoftmaxCase {
  int B = 8, C = 10;
  std::vector<BufferSpec> inputs() const { return {{"logits", size_t(B) * C, -4, 4}}; }
  std::vector<BufferSpec> outputs() const {
    return {{"loss", size_t(B)}, {"probs", size_t(B) * C, 0, 0, false}};
  }
  IntInputs int_inputs() const {
    std::vector<int32_t> labels(B);
    for (int i = 0; i < B; ++i) labels[i] = (i * 7) % C;
    return {{"labels", labels}};
  }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::softmax_xent_forward(b["loss"], b["probs"], b["logits"], b.i("labels"), B, C);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    cpu::softmax_xent_backward(b["dlogits"], b["dloss"], b["probs"], b.i("labels"), B, C);
  }
};

TEST(Ops, SoftmaxCrossEntropy) {
  expect_op_ok(check_op(SoftmaxCase{}));
}

struct ExpectationCase {
  int U = 5, C = 4;
  std::vector<BufferSpec> inputs() const {
    return {{"logits", size_t(U) * C, -3, 3},
            {"ll", size_t(U) * C, -200, -50},
            {"kl", size_t(U) * C, 0, 20},
            {"log_prior", size_t(C), -2, -1, false}};
  }
  std::vector<BufferSpec> outputs() const {
    return {{"L", size_t(U)}, {"q", size_t(U) * C, 0, 0, false}};
  }
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::expectation_forward(b["L"], b["q"], b["logits"], b["ll"], b["kl"], b["log_prior"], U, C);
  }
  template <class T>
  void backward(Buffers<T>& b) const {
    cpu::expectation_backward(b["dlogits"], b["dll"], b["dkl"], b["dL"], b["q"], b["ll"], b["kl"],
                              b["log_prior"], U, C);
  }
};

TEST(Ops, ExactExpectationOverLabels) {
  expect_op_ok(check_op(ExpectationCase{}));
}

TEST(Ops, ExpectationWithOneHotQEqualsTheLabelledElbo) {
  // q(y|x) → one-hot on label 2: L → ELBO_2 + log p(2) (the KL(q‖p) term → −log p(2) + 0).
  const int C = 3;
  const double logits[C] = {-60, -60, 60}, ll[C] = {-10, -20, -30}, kl[C] = {1, 2, 3},
               log_prior[C] = {-1.0, -1.5, -0.5};
  double L, q[C];
  cpu::expectation_forward(&L, q, logits, ll, kl, log_prior, 1, C);
  EXPECT_NEAR(L, (ll[2] - kl[2]) + log_prior[2], 1e-9);
}

TEST(Ops, AdamMatchesPlainReference) {
  // PyTorch's Adam written out in double, three steps, against the fused op in float.
  const size_t n = 1000;
  std::vector<double> p(n), m(n, 0), v(n, 0);
  std::vector<float> pf(n), mf(n, 0), vf(n, 0), gf(n);
  for (size_t i = 0; i < n; ++i) pf[i] = float(p[i] = random_in(5, i, -1, 1));
  cpu::AdamConfig config;
  for (int t = 1; t <= 3; ++t) {
    for (size_t i = 0; i < n; ++i) {
      const double g = random_in(100 + t, i, -1, 1) * (i % 7 == 0 ? 1e-6 : 1.0);
      gf[i] = float(g);
      m[i] = 0.9 * m[i] + 0.1 * double(gf[i]);
      v[i] = 0.999 * v[i] + 0.001 * double(gf[i]) * double(gf[i]);
      const double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.999, t));
      p[i] -= 1e-3 * mhat / (std::sqrt(vhat) + 1e-8);
    }
    cpu::adam_step(pf.data(), mf.data(), vf.data(), gf.data(), n, config, t);
  }
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(pf[i], p[i], 1e-6) << i;
}

// ---- the harness can fail: each broken op must be caught.

struct WrongGradientCase : BernoulliCase {
  template <class T>
  void backward(Buffers<T>& b) const {
    BernoulliCase::backward(b);
    b["dlogits"][3] *= T(1.01);  // a 1% error in one element
  }
};
struct OutOfBoundsCase : DenseTwoInputsCase {
  template <class T>
  void forward(Buffers<T>& b) const {
    DenseTwoInputsCase::forward(b);
    b["y"][B * out] = T(0);  // one past the end
  }
};
struct UnwrittenOutputCase : PoolCase {
  template <class T>
  void forward(Buffers<T>& b) const {
    cpu::pool_forward(b["r"], b["e"], b.i("offsets"), b.i("members"), rows() - 1, d);
  }
};

// A float-only error confined to small elements, as a LeakyReLU whose float backward had its
// slope 3% off would make: the NMSE hardly sees it, the per-element check must.
struct SmallElementsWrongInFloatCase : BernoulliCase {
  template <class T>
  void backward(Buffers<T>& b) const {
    BernoulliCase::backward(b);
    if (!std::is_same_v<T, float>) return;
    T* d = b["dlogits"];
    T largest = 0;
    for (size_t i = 0; i < size_t(B) * D; ++i) largest = std::max(largest, std::fabs(d[i]));
    for (size_t i = 0; i < size_t(B) * D; ++i)
      if (std::fabs(d[i]) < T(0.02) * largest) d[i] *= T(1.03);
  }
};

TEST(OpHarness, CatchesAnErrorConfinedToSmallElements) {
  const OpReport r = check_op(SmallElementsWrongInFloatCase{});
  EXPECT_LE(r.worst_nmse, 1e-7) << "the NMSE alone would have passed it";
  EXPECT_GT(r.worst_element, 1e-4) << r.worst_element_at;
}
TEST(OpHarness, CatchesAWrongGradient) {
  const OpReport r = check_op(WrongGradientCase{});
  EXPECT_GT(r.worst_fd_error, 1e-6);
}
TEST(OpHarness, CatchesAnOutOfBoundsWrite) {
  EXPECT_FALSE(check_op(OutOfBoundsCase{}).guards_intact);
}
TEST(OpHarness, CatchesAnUnwrittenOutput) {
  EXPECT_FALSE(check_op(UnwrittenOutputCase{}).finite);
}

// Extreme encoder outputs: log σ² and μ at ±1e4 (σ² = e^±1e4 overflows / underflows without
// the clamp of log σ² to [−30, 20]). v, KL and every gradient stay finite; outside the range
// log σ² gets a zero gradient and the forward equals the forward at the clamp bound.
template <class T>
void check_sample_kl_extremes() {
  const int B = 4, d = 4;
  const T big = T(1e4);
  std::vector<T> mulv(size_t(B) * 2 * d), at_bound(mulv.size());
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < d; ++j) {
      const T mu = (i + j) % 2 ? big : -big, lv = (i / 2 + j) % 2 ? big : -big;
      mulv[size_t(i) * 2 * d + j] = at_bound[size_t(i) * 2 * d + j] = mu;
      mulv[size_t(i) * 2 * d + d + j] = lv;
      at_bound[size_t(i) * 2 * d + d + j] = lv > 0 ? T(20) : T(-30);
    }
  std::vector<T> v(size_t(B) * d), eps(v.size()), kl(B), v2(v.size()), eps2(v.size()), kl2(B);
  cpu::sample_kl_forward(v.data(), eps.data(), kl.data(), mulv.data(), B, d, 42, 3, 0);
  cpu::sample_kl_forward(v2.data(), eps2.data(), kl2.data(), at_bound.data(), B, d, 42, 3, 0);
  for (size_t k = 0; k < v.size(); ++k) {
    ASSERT_TRUE(std::isfinite(v[k])) << k;
    EXPECT_EQ(v[k], v2[k]) << "the forward must equal the forward at the clamp bound";
  }
  for (int i = 0; i < B; ++i) {
    ASSERT_TRUE(std::isfinite(kl[i])) << i;
    EXPECT_EQ(kl[i], kl2[i]);
  }
  std::vector<T> dv(v.size(), T(1)), dkl(B, T(1)), dmulv(mulv.size());
  cpu::sample_kl_backward(dmulv.data(), dv.data(), dkl.data(), mulv.data(), eps.data(), B, d);
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < d; ++j) {
      const T dmu = dmulv[size_t(i) * 2 * d + j], dlv = dmulv[size_t(i) * 2 * d + d + j];
      ASSERT_TRUE(std::isfinite(dmu) && std::isfinite(dlv)) << i << "," << j;
      EXPECT_EQ(dmu, T(1) + mulv[size_t(i) * 2 * d + j]);
      EXPECT_EQ(dlv, T(0)) << "log σ² outside [−30, 20]: the clamp's derivative is 0";
    }
}

TEST(Ops, SampleAndKlStayFiniteForExtremeLogVarianceAndMean) {
  check_sample_kl_extremes<float>();
  check_sample_kl_extremes<double>();
}

// Inside the clamp, next to its bounds, the backward still matches finite differences.
TEST(Ops, SampleAndKlGradientNearTheClampBoundsMatchesFiniteDifferences) {
  const int d = 2;
  for (double lv : {19.5, -29.5, 0.25}) {
    auto loss = [&](double x) {  // L = Σ v + 0.5 KL, through log σ² of column 0
      std::vector<double> mulv = {0.3, -0.2, x, 0.1}, v(d), eps(d), kl(1);
      cpu::sample_kl_forward(v.data(), eps.data(), kl.data(), mulv.data(), 1, d, 7, 1, 0);
      return v[0] + v[1] + 0.5 * kl[0];
    };
    std::vector<double> mulv = {0.3, -0.2, lv, 0.1}, v(d), eps(d), kl(1), dmulv(4);
    cpu::sample_kl_forward(v.data(), eps.data(), kl.data(), mulv.data(), 1, d, 7, 1, 0);
    const std::vector<double> dv(d, 1.0), dkl(1, 0.5);
    cpu::sample_kl_backward(dmulv.data(), dv.data(), dkl.data(), mulv.data(), eps.data(), 1, d);
    const double h = 1e-5, fd = (loss(lv + h) - loss(lv - h)) / (2 * h);
    EXPECT_NEAR(dmulv[2], fd, 1e-6 * std::max(1.0, std::abs(fd))) << "log σ² = " << lv;
  }
}

}  // namespace
}  // namespace equivae::test
