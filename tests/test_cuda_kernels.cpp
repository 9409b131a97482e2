// Every CUDA kernel (kernels/cuda/*.cu), executed by the CUDA-on-CPU emulator, against the
// CPU double reference (kernels/cpu): normalised MSE ≤ 1e-7 for float, NaN/Inf checks, guard
// sentinels around every output, under several schedule seeds. The double instantiation of
// each kernel is also run and must agree with the double reference to rounding (that checks
// the kernel's logic without float noise). Shapes: small ones that are not multiples of the
// block sizes, and the training step's B = 160, D = 784 for elementwise and row kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"
#include "kernels/philox.h"
#include "tests/op_harness.h"

namespace equivae::test {
namespace {

constexpr uint64_t kSeeds[] = {1, 2, 3};
constexpr cudaStream_t kStream = nullptr;

// Inputs are drawn in double and rounded to float, so float and double runs see the same
// values and only the arithmetic differs.
std::vector<double> draw(uint64_t stream, size_t n, double lo, double hi) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = double(float(random_in(stream, i, lo, hi)));
  return v;
}

// An input buffer: its guards hold NaN instead of the sentinel, so an out-of-bounds read
// surfaces as a non-finite output, and copying an input's guard into an output's guard (an
// off-by-one that reads and writes past the end) cannot leave the output's sentinel intact.
template <class T>
Guarded<T> guarded(const std::vector<double>& v) {
  Guarded<T> g(v.size());
  for (size_t i = 0; i < v.size(); ++i) g[i] = T(v[i]);
  for (int k = 1; k <= Guarded<T>::kGuard; ++k)
    g.data()[-k] = g.data()[v.size() - 1 + k] = std::numeric_limits<T>::quiet_NaN();
  return g;
}
// A buffer the kernel updates in place: sentinel guards, checked like an output's.
template <class T>
Guarded<T> inout(const std::vector<double>& v) {
  Guarded<T> g(v.size());
  for (size_t i = 0; i < v.size(); ++i) g[i] = T(v[i]);
  return g;
}
template <class T>
Guarded<T> nan_buffer(size_t n) {
  return Guarded<T>(n);  // NaN-filled: an element the kernel never writes stays NaN
}
template <class T>
std::vector<double> as_double(const Guarded<T>& g) {
  std::vector<double> v(g.size());
  for (size_t i = 0; i < g.size(); ++i) v[i] = double(g[i]);
  return v;
}

// float: NMSE ≤ 1e-7; double: agreement to rounding.
template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-7 : 1e-24;
}
// Per element, relative to its magnitude above 1% of the RMS (op_harness.h's element_error).
template <class T>
double element_tolerance() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-10;
}

// elementwise: also element_error ≤ element_tolerance (off where the float values carry
// another quantity's rounding, as a parameter's change carries the parameter's).
template <class T>
void expect_matches(const std::vector<double>& ref, const Guarded<T>& got, const std::string& what,
                    bool elementwise = true) {
  ASSERT_EQ(ref.size(), got.size()) << what;
  EXPECT_TRUE(got.guards_intact()) << what << ": write outside its bounds";
  size_t non_finite = 0;
  for (size_t i = 0; i < got.size(); ++i) non_finite += !std::isfinite(double(got[i]));
  EXPECT_EQ(non_finite, 0u) << what << ": NaN/Inf (or never written) elements";
  const std::vector<double> g = as_double(got);
  const double e = nmse(ref.data(), g.data(), ref.size());
  EXPECT_LE(e, tolerance<T>()) << what << (std::is_same_v<T, float> ? " (float)" : " (double)");
  size_t at = 0;
  if (elementwise) {
    EXPECT_LE(element_error(ref.data(), g.data(), ref.size(), &at), element_tolerance<T>())
        << what << (std::is_same_v<T, float> ? " (float)" : " (double)") << ": element " << at;
  }
}

template <class T>
bool bitwise_equal(const Guarded<T>& a, const Guarded<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::string shape(std::initializer_list<int> dims) {
  std::string s;
  for (int d : dims) {
    if (!s.empty()) s.push_back('x');
    s.append(std::to_string(d));
  }
  return s;
}

// ---------------------------------------------------------------- dense epilogues
template <class T>
void check_dense_forward(int B, int in, int out, bool relu) {
  const auto x = draw(1, size_t(B) * in, -1, 1), W = draw(2, size_t(in) * out, -0.3, 0.3),
             b = draw(3, size_t(out), -1, 1);
  std::vector<double> ref(size_t(B) * out);
  cpu::dense_forward(ref.data(), x.data(), W.data(), b.data(), B, in, out, relu);
  // The GEMM is the CPU's (cuBLAS on the GPU); the kernel is the epilogue.
  Guarded<T> xt = guarded<T>(x), Wt = guarded<T>(W), bt = guarded<T>(b);
  std::vector<T> zero(out, T(0));
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<T> y = nan_buffer<T>(size_t(B) * out);
    cpu::dense_forward(y.data(), xt.data(), Wt.data(), zero.data(), B, in, out, false);
    cuda::dense_bias_act(y.data(), bt.data(), B, out, relu, kStream);
    expect_matches(ref, y, "dense_bias_act y " + shape({B, in, out}));
  }
}

TEST(CudaKernels, DenseBiasReluEpilogue) {
  for (bool relu : {true, false}) {
    check_dense_forward<float>(37, 50, 100, relu);
    check_dense_forward<double>(37, 50, 100, relu);
  }
  check_dense_forward<float>(160, 64, 784, true);
  check_dense_forward<float>(160, 64, 512, false);
}

template <class T>
void check_dense_backward(int B, int in, int out, bool relu, size_t scratch_elems = 1 << 20) {
  const auto x = draw(4, size_t(B) * in, -1, 1), W = draw(5, size_t(in) * out, -0.3, 0.3),
             b = draw(6, size_t(out), -0.5, 0.5), dy = draw(7, size_t(B) * out, -1, 1);
  std::vector<double> y(size_t(B) * out), dz = dy, dW(size_t(in) * out), db(out);
  cpu::dense_forward(y.data(), x.data(), W.data(), b.data(), B, in, out, relu);
  cpu::dense_backward<double>(nullptr, dW.data(), db.data(), dz.data(), x.data(), W.data(),
                              y.data(), B, in, out, relu);
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<T> g = inout<T>(dy), yt = guarded<T>(y), dbt = nan_buffer<T>(out);
    const int chunks = cuda::dense_backward_bias_chunks(B, out, scratch_elems);
    Guarded<T> scratch = nan_buffer<T>(std::max<size_t>(1, size_t(chunks) * out));
    cuda::dense_backward_bias(g.data(), dbt.data(), yt.data(), B, out, relu, scratch.data(),
                              scratch_elems, kStream);
    expect_matches(dz, g, "dense_backward_bias dz " + shape({B, out}));
    expect_matches(db, dbt, "dense_backward_bias db " + shape({B, out}));
    // The same in two launches, as the CUDA backend issues them: the mask, then the bias
    // gradient of the masked rows.
    Guarded<T> g2 = inout<T>(dy), db2 = nan_buffer<T>(out);
    if (relu) cuda::relu_mask(g2.data(), yt.data(), size_t(B) * out, kStream);
    cuda::dense_backward_bias(g2.data(), db2.data(), yt.data(), B, out, false, scratch.data(),
                              scratch_elems, kStream);
    expect_matches(dz, g2, "relu_mask dz " + shape({B, out}));
    expect_matches(db, db2, "dense_backward_bias db after relu_mask " + shape({B, out}));
  }
}

TEST(CudaKernels, DenseBackwardReluMaskAndBiasGradient) {
  for (bool relu : {true, false}) {
    check_dense_backward<float>(37, 20, 100, relu);
    check_dense_backward<double>(37, 20, 100, relu);
  }
  check_dense_backward<float>(160, 16, 784, true);
  check_dense_backward<float>(1, 3, 33, true);
}

TEST(CudaKernels, DenseBackwardBiasSplitsRowsIntoChunks) {
  EXPECT_EQ(cuda::dense_backward_bias_chunks(160, 512, 1 << 20), 1);  // 256 rows a chunk
  EXPECT_EQ(cuda::dense_backward_bias_chunks(10240, 512, 1 << 20), 40);
  EXPECT_EQ(cuda::dense_backward_bias_chunks(20000, 512, 1 << 20), 64);    // capped
  EXPECT_EQ(cuda::dense_backward_bias_chunks(10240, 512, 0), 1);           // no scratch
  EXPECT_EQ(cuda::dense_backward_bias_chunks(1000, 512, 3 * 512 + 7), 3);  // what fits
  check_dense_backward<float>(2100, 4, 40, true);         // 9 chunks of 234 rows, the last short
  check_dense_backward<double>(600, 4, 40, false, 0);     // one chunk, no scratch
  check_dense_backward<float>(600, 4, 40, true, 2 * 40);  // two chunks of 300 rows
}

// ---------------------------------------------------------------- pooling
struct Sets {
  std::vector<int32_t> offsets{0}, members;
};
// Class-balanced leave-one-out sets: C segments of k rows; row i pools m_i others of its
// segment, m_i = 1 + Philox mod (k − 1).
Sets segment_sets(int C, int k) {
  Sets s;
  for (int i = 0; i < C * k; ++i) {
    const int seg = i / k, m = 1 + int(philox_below(uint32_t(k - 1), 7, 1, 0, uint32_t(i)));
    for (int o = 1; o <= m; ++o) s.members.push_back(seg * k + (i % k + o) % k);
    s.offsets.push_back(int32_t(s.members.size()));
  }
  return s;
}
// R sets over N rows with arbitrary members (repeats allowed; some rows never used).
Sets random_sets(int R, int N) {
  Sets s;
  for (int i = 0; i < R; ++i) {
    const int m = 1 + int(philox_below(6, 8, 2, 0, uint32_t(i)));
    for (int o = 0; o < m; ++o)
      s.members.push_back(int32_t(philox_below(uint32_t(N - 3), 8, 3, uint32_t(i), uint32_t(o))));
    s.offsets.push_back(int32_t(s.members.size()));
  }
  return s;
}

template <class T>
void check_pool(const Sets& s, int R, int N, int d, const std::string& name) {
  const auto e = draw(11, size_t(N) * d, -1, 1), dr = draw(12, size_t(R) * d, -1, 1);
  std::vector<double> r(size_t(R) * d), de(size_t(N) * d);
  cpu::pool_forward(r.data(), e.data(), s.offsets.data(), s.members.data(), R, d);
  cpu::pool_backward(de.data(), dr.data(), s.offsets.data(), s.members.data(), R, N, d);
  Guarded<int32_t> offsets(s.offsets.size()), members(s.members.size()), inv_offsets(size_t(N) + 1),
      inv_rows(s.members.size());
  std::copy(s.offsets.begin(), s.offsets.end(), offsets.data());
  std::copy(s.members.begin(), s.members.end(), members.data());
  cpu::pool_transpose(offsets.data(), members.data(), R, N, inv_offsets.data(), inv_rows.data());
  Guarded<T> first;
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<T> et = guarded<T>(e), drt = guarded<T>(dr), rt = nan_buffer<T>(r.size()),
               det = nan_buffer<T>(de.size());
    cuda::pool_forward(rt.data(), et.data(), offsets.data(), members.data(), R, d, kStream);
    cuda::pool_backward(det.data(), drt.data(), offsets.data(), inv_offsets.data(), inv_rows.data(),
                        N, d, kStream);
    expect_matches(r, rt, "pool_forward " + name);
    expect_matches(de, det, "pool_backward " + name);
    if (seed == kSeeds[0])
      first = det;
    else
      EXPECT_TRUE(bitwise_equal(first, det)) << "pool_backward must not depend on the schedule";
  }
  EXPECT_TRUE(offsets.guards_intact() && members.guards_intact() && inv_offsets.guards_intact() &&
              inv_rows.guards_intact());
}

TEST(CudaKernels, LeaveOneOutPoolingForwardAndGatherBackward) {
  const Sets step = segment_sets(10, 16);  // the supervised step: B = 160, k = 16
  check_pool<float>(step, 160, 160, 16, "B=160 d=16");
  check_pool<double>(step, 160, 160, 16, "B=160 d=16");
  const Sets small = segment_sets(3, 5);
  check_pool<float>(small, 15, 15, 37, "B=15 d=37");  // d > 32: two column chunks
  check_pool<double>(small, 15, 15, 37, "B=15 d=37");
  const Sets semi = random_sets(50, 37);  // R ≠ N, repeats, unused rows (de = 0 there)
  check_pool<float>(semi, 50, 37, 8, "R=50 N=37 d=8");
  check_pool<double>(semi, 50, 37, 8, "R=50 N=37 d=8");
  const Sets one = random_sets(3, 5);  // fewer pooled rows than warps in a block
  check_pool<float>(one, 3, 5, 4, "R=3 N=5 d=4");
}

// ---------------------------------------------------------------- sampling + KL
template <class T>
void check_sample_kl(int B, int d) {
  const uint64_t seed = 42, step = 7;
  const uint32_t row0 = 100;
  const auto mulv = draw(13, size_t(B) * 2 * d, -2, 2), dv = draw(14, size_t(B) * d, -1, 1),
             dkl = draw(15, size_t(B), -1, 1);
  std::vector<double> v(size_t(B) * d), eps(size_t(B) * d), kl(B), dmulv(mulv.size());
  cpu::sample_kl_forward(v.data(), eps.data(), kl.data(), mulv.data(), B, d, seed, step, row0);
  cpu::sample_kl_backward(dmulv.data(), dv.data(), dkl.data(), mulv.data(), eps.data(), B, d);
  // The CPU op in T: the kernel's ε must equal it bit for bit (same Philox, same math).
  Guarded<T> mt = guarded<T>(mulv);
  std::vector<T> v_cpu(size_t(B) * d), eps_cpu(size_t(B) * d), kl_cpu(B);
  cpu::sample_kl_forward(v_cpu.data(), eps_cpu.data(), kl_cpu.data(), mt.data(), B, d, seed, step,
                         row0);
  const std::string name = shape({B, d});
  for (uint64_t s : kSeeds) {
    emu::set_schedule_seed(s);
    Guarded<T> vt = nan_buffer<T>(v.size()), et = nan_buffer<T>(eps.size()),
               klt = nan_buffer<T>(kl.size());
    cuda::sample_kl_forward(vt.data(), et.data(), klt.data(), mt.data(), B, d, seed, step, row0,
                            kStream);
    // v and ε carry float Box–Muller's rounding (up to ~1e-6 near a zero of cos): NMSE here,
    // and ε bit for bit against the CPU's float noise below.
    expect_matches(v, vt, "sample_kl v " + name, false);
    expect_matches(eps, et, "sample_kl eps " + name, false);
    expect_matches(kl, klt, "sample_kl kl " + name);
    EXPECT_EQ(std::memcmp(et.data(), eps_cpu.data(), eps_cpu.size() * sizeof(T)), 0)
        << "ε must equal the CPU's bit for bit";
    // The graph-replay form reads the step from device memory: same result.
    const uint64_t step_device = step;
    Guarded<T> v2 = nan_buffer<T>(v.size()), e2 = nan_buffer<T>(eps.size()),
               k2 = nan_buffer<T>(kl.size());
    cuda::sample_kl_forward(v2.data(), e2.data(), k2.data(), mt.data(), B, d, seed, &step_device,
                            row0, kStream);
    EXPECT_TRUE(bitwise_equal(vt, v2) && bitwise_equal(et, e2) && bitwise_equal(klt, k2));

    Guarded<T> dvt = guarded<T>(dv), dklt = guarded<T>(dkl), epst = guarded<T>(eps),
               dm = nan_buffer<T>(dmulv.size());
    cuda::sample_kl_backward(dm.data(), dvt.data(), dklt.data(), mt.data(), epst.data(), B, d,
                             kStream);
    expect_matches(dmulv, dm, "sample_kl_backward dmulv " + name);
  }
}

TEST(CudaKernels, SampleAndKlMatchCpuWithTheSameNoise) {
  check_sample_kl<float>(37, 16);
  check_sample_kl<double>(37, 16);
  check_sample_kl<float>(160, 16);
  check_sample_kl<float>(9, 40);  // d > 32: lanes loop
  check_sample_kl<double>(9, 40);
}

// Extreme encoder outputs (log σ² and μ at ±1e4): the clamp of log σ² to [−30, 20] keeps v,
// KL and the gradients finite, log σ² gets a zero gradient outside the range, and the kernel
// agrees with the CPU op (which clamps identically).
template <class T>
void check_sample_kl_extremes() {
  const int B = 12, d = 40;  // d > 32: lanes loop
  std::vector<double> mulv(size_t(B) * 2 * d);
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < 2 * d; ++j) mulv[size_t(i) * 2 * d + j] = (i * 7 + j * 3) % 2 ? 1e4 : -1e4;
  const auto dv = draw(24, size_t(B) * d, -1, 1), dkl = draw(25, size_t(B), -1, 1);
  std::vector<double> v(size_t(B) * d), eps(size_t(B) * d), kl(B), dmulv(mulv.size());
  cpu::sample_kl_forward(v.data(), eps.data(), kl.data(), mulv.data(), B, d, 5, 6, 0);
  cpu::sample_kl_backward(dmulv.data(), dv.data(), dkl.data(), mulv.data(), eps.data(), B, d);
  Guarded<T> mt = guarded<T>(mulv);
  for (uint64_t s : kSeeds) {
    emu::set_schedule_seed(s);
    Guarded<T> vt = nan_buffer<T>(v.size()), et = nan_buffer<T>(eps.size()),
               klt = nan_buffer<T>(kl.size());
    cuda::sample_kl_forward(vt.data(), et.data(), klt.data(), mt.data(), B, d, 5, 6, 0, kStream);
    Guarded<T> dvt = guarded<T>(dv), dklt = guarded<T>(dkl), dm = nan_buffer<T>(dmulv.size());
    cuda::sample_kl_backward(dm.data(), dvt.data(), dklt.data(), mt.data(), et.data(), B, d,
                             kStream);
    for (size_t k = 0; k < v.size(); ++k) ASSERT_TRUE(std::isfinite(vt[k])) << k;
    for (int i = 0; i < B; ++i) ASSERT_TRUE(std::isfinite(klt[i])) << i;
    for (int i = 0; i < B; ++i)
      for (int j = 0; j < d; ++j) {
        ASSERT_TRUE(std::isfinite(dm[size_t(i) * 2 * d + j])) << i << "," << j;
        ASSERT_EQ(dm[size_t(i) * 2 * d + d + j], T(0)) << "log σ² outside the clamp: zero gradient";
      }
    expect_matches(v, vt, "sample_kl extremes v");
    expect_matches(kl, klt, "sample_kl extremes kl");
    expect_matches(dmulv, dm, "sample_kl extremes dmulv");
  }
}

TEST(CudaKernels, SampleAndKlStayFiniteForExtremeLogVarianceAndMean) {
  check_sample_kl_extremes<float>();
  check_sample_kl_extremes<double>();
}

// ---------------------------------------------------------------- inverted dropout
template <class T>
void check_dropout(size_t n, double rate) {
  const auto x = draw(41, n, -2, 2), dy = draw(42, n, -1, 1);
  std::vector<double> y(n), mask(n), dx(n);
  cpu::dropout_forward(y.data(), mask.data(), x.data(), n, rate, 7, 11, 3);
  cpu::dropout_backward(dx.data(), dy.data(), mask.data(), n);
  const std::string what = "dropout n=" + std::to_string(n) + " rate=" + std::to_string(rate);
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<T> xt = guarded<T>(x), dyt = guarded<T>(dy);
    Guarded<T> yt = nan_buffer<T>(n), mt = nan_buffer<T>(n), dxt = nan_buffer<T>(n);
    cuda::dropout_forward(yt.data(), mt.data(), xt.data(), n, T(rate), 7, 11, 3, kStream);
    cuda::dropout_backward(dxt.data(), dyt.data(), mt.data(), n, kStream);
    expect_matches(y, yt, what + " y");
    expect_matches(mask, mt, what + " mask");
    expect_matches(dx, dxt, what + " dx");
    size_t same_decision = 0;  // the keep decisions are the CPU's, element by element
    for (size_t i = 0; i < n; ++i) same_decision += (mt[i] == T(0)) == (mask[i] == 0.0);
    EXPECT_EQ(same_decision, n) << what;
  }
}

TEST(CudaKernels, DropoutKeepsTheCpuMaskAndScales) {
  for (double rate : {0.0, 0.5, 1.0}) {
    check_dropout<float>(4099, rate);
    check_dropout<double>(4099, rate);
  }
  check_dropout<float>(160 * 512, 0.5);  // the benchmark classifier's hidden layer
}

// ---------------------------------------------------------------- Bernoulli likelihood
template <class T>
void check_bernoulli(int B, int D) {
  const auto logits = draw(16, size_t(B) * D, -8, 8), x = draw(17, size_t(B) * D, 0, 1),
             dll = draw(18, size_t(B), -1, 1);
  std::vector<double> ll(B), dlogits(logits.size());
  cpu::bernoulli_ll_forward(ll.data(), logits.data(), x.data(), B, D);
  cpu::bernoulli_ll_backward(dlogits.data(), dll.data(), logits.data(), x.data(), B, D);
  Guarded<T> first;
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<T> lt = guarded<T>(logits), xt = guarded<T>(x), dt = guarded<T>(dll),
               llt = nan_buffer<T>(B), dl = nan_buffer<T>(dlogits.size());
    cuda::bernoulli_ll_forward(llt.data(), lt.data(), xt.data(), B, D, kStream);
    cuda::bernoulli_ll_backward(dl.data(), dt.data(), lt.data(), xt.data(), B, D, kStream);
    expect_matches(ll, llt, "bernoulli_ll_forward " + shape({B, D}));
    expect_matches(dlogits, dl, "bernoulli_ll_backward " + shape({B, D}));
    // Both in one kernel: bit for bit the two.
    Guarded<T> ll_both = nan_buffer<T>(B), dl_both = nan_buffer<T>(dlogits.size());
    cuda::bernoulli_ll_forward_backward(ll_both.data(), dl_both.data(), dt.data(), lt.data(),
                                        xt.data(), B, D, kStream);
    EXPECT_TRUE(bitwise_equal(ll_both, llt)) << "bernoulli_ll_forward_backward's ll";
    EXPECT_TRUE(bitwise_equal(dl_both, dl)) << "bernoulli_ll_forward_backward's dlogits";
    if (seed == kSeeds[0])
      first = llt;
    else
      EXPECT_TRUE(bitwise_equal(first, llt)) << "the row reduction must not depend on the schedule";
  }
}

TEST(CudaKernels, BernoulliLogLikelihood) {
  check_bernoulli<float>(37, 100);
  check_bernoulli<double>(37, 100);
  check_bernoulli<float>(160, 784);
  check_bernoulli<float>(3, 1);
}

TEST(CudaKernels, BernoulliStableAtExtremeLogits) {
  Guarded<float> logits(4), x(4), ll(1), dl(4), one(1, 1.0f);
  const float l[4] = {1e4f, -1e4f, 88.f, -88.f}, xv[4] = {1, 0, 0.5f, 0.5f};
  for (int i = 0; i < 4; ++i) logits[i] = l[i], x[i] = xv[i];
  cuda::bernoulli_ll_forward(ll.data(), logits.data(), x.data(), 1, 4, kStream);
  cuda::bernoulli_ll_backward(dl.data(), one.data(), logits.data(), x.data(), 1, 4, kStream);
  EXPECT_NEAR(ll[0], -88.f, 1e-2);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isfinite(dl[i]));
  EXPECT_TRUE(ll.guards_intact() && dl.guards_intact());
}

// ---------------------------------------------------------------- softmax cross-entropy
template <class T>
void check_softmax(int B, int C) {
  const auto logits = draw(19, size_t(B) * C, -5, 5), dloss = draw(20, size_t(B), -1, 1);
  std::vector<int32_t> labels(B);
  for (int i = 0; i < B; ++i) labels[i] = int32_t(philox_below(uint32_t(C), 9, 1, 0, uint32_t(i)));
  std::vector<double> loss(B), probs(logits.size()), dlogits(logits.size());
  cpu::softmax_xent_forward(loss.data(), probs.data(), logits.data(), labels.data(), B, C);
  cpu::softmax_xent_backward(dlogits.data(), dloss.data(), probs.data(), labels.data(), B, C);
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<T> lt = guarded<T>(logits), dt = guarded<T>(dloss), losst = nan_buffer<T>(B),
               pt = nan_buffer<T>(probs.size()), dl = nan_buffer<T>(dlogits.size());
    cuda::softmax_xent_forward(losst.data(), pt.data(), lt.data(), labels.data(), B, C, kStream);
    expect_matches(loss, losst, "softmax_xent loss " + shape({B, C}));
    expect_matches(probs, pt, "softmax_xent probs " + shape({B, C}));
    Guarded<T> pref = guarded<T>(probs);
    cuda::softmax_xent_backward(dl.data(), dt.data(), pref.data(), labels.data(), B, C, kStream);
    expect_matches(dlogits, dl, "softmax_xent_backward " + shape({B, C}));
  }
}

TEST(CudaKernels, SoftmaxCrossEntropy) {
  check_softmax<float>(37, 10);
  check_softmax<double>(37, 10);
  check_softmax<float>(160, 10);
  check_softmax<float>(5, 45);  // C > 32: lanes loop over classes
  check_softmax<double>(5, 45);
}

// ---------------------------------------------------------------- exact expectation over labels
template <class T>
void check_expectation(int U, int C) {
  const auto logits = draw(23, size_t(U) * C, -4, 4), ll = draw(24, size_t(U) * C, -200, -50),
             kl = draw(25, size_t(U) * C, 0, 20), log_prior = draw(26, size_t(C), -3, -1),
             dL = draw(27, size_t(U), -1, 1);
  std::vector<double> L(U), q(logits.size()), dlogits(logits.size()), dll(ll.size()),
      dkl(kl.size());
  cpu::expectation_forward(L.data(), q.data(), logits.data(), ll.data(), kl.data(),
                           log_prior.data(), U, C);
  cpu::expectation_backward(dlogits.data(), dll.data(), dkl.data(), dL.data(), q.data(), ll.data(),
                            kl.data(), log_prior.data(), U, C);
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<T> lt = guarded<T>(logits), llt = guarded<T>(ll), klt = guarded<T>(kl),
               lpt = guarded<T>(log_prior), dLt = guarded<T>(dL), Lt = nan_buffer<T>(U),
               qt = nan_buffer<T>(q.size());
    cuda::expectation_forward(Lt.data(), qt.data(), lt.data(), llt.data(), klt.data(), lpt.data(),
                              U, C, kStream);
    expect_matches(L, Lt, "expectation L " + shape({U, C}));
    expect_matches(q, qt, "expectation q " + shape({U, C}));
    Guarded<T> qref = guarded<T>(q), dl = nan_buffer<T>(q.size()), dllt = nan_buffer<T>(q.size()),
               dklt = nan_buffer<T>(q.size());
    cuda::expectation_backward(dl.data(), dllt.data(), dklt.data(), dLt.data(), qref.data(),
                               llt.data(), klt.data(), lpt.data(), U, C, kStream);
    expect_matches(dlogits, dl, "expectation_backward dlogits " + shape({U, C}));
    expect_matches(dll, dllt, "expectation_backward dll " + shape({U, C}));
    expect_matches(dkl, dklt, "expectation_backward dkl " + shape({U, C}));
  }
}

TEST(CudaKernels, ExactExpectationOverLabels) {
  check_expectation<float>(37, 10);
  check_expectation<double>(37, 10);
  check_expectation<float>(5, 45);  // C > 32: lanes loop over labels
  check_expectation<double>(5, 45);
}

// ---------------------------------------------------------------- Adam
template <class T>
void check_adam(size_t n) {
  cpu::AdamConfig config;
  const auto p0 = draw(21, n, -1, 1);
  std::vector<double> p = p0, m(n, 0), v(n, 0);
  Guarded<T> pt = inout<T>(p0), mt(n, T(0)), vt(n, T(0));
  Guarded<T> pd = inout<T>(p0), md(n, T(0)), vd(n, T(0));  // the t-from-device form
  for (int64_t t = 1; t <= 3; ++t) {
    emu::set_schedule_seed(uint64_t(t));
    auto g = draw(100 + uint64_t(t), n, -1, 1);
    for (size_t i = 0; i < n; i += 7) g[i] *= 1e-6;  // tiny gradients: ε matters
    cpu::adam_step(p.data(), m.data(), v.data(), g.data(), n, config, t);
    Guarded<T> gt = guarded<T>(g);
    cuda::adam_step(pt.data(), mt.data(), vt.data(), gt.data(), n, config, t, nullptr, kStream);
    cuda::adam_step(pd.data(), md.data(), vd.data(), gt.data(), n, config, &t, nullptr, kStream);
  }
  // Compare the parameters' change (the parameters themselves hide it) by its NMSE: a float
  // parameter holds a change of 1e-7 only to its own ulp, so per element it is the parameter
  // that is compared. And the moments.
  std::vector<double> dp(n);
  Guarded<T> dpt(n);
  for (size_t i = 0; i < n; ++i) dp[i] = p[i] - p0[i], dpt[i] = T(double(pt[i]) - p0[i]);
  expect_matches(dp, dpt, "adam parameter change n=" + std::to_string(n), false);
  expect_matches(p, pt, "adam parameters n=" + std::to_string(n));
  expect_matches(m, mt, "adam m");
  expect_matches(v, vt, "adam v");
  EXPECT_TRUE(pt.guards_intact() && pd.guards_intact() && md.guards_intact() && vd.guards_intact());
  EXPECT_TRUE(bitwise_equal(pt, pd) && bitwise_equal(mt, md) && bitwise_equal(vt, vd))
      << "t read from device memory must give the same step";
}

TEST(CudaKernels, AdamFusedStep) {
  check_adam<float>(100003);  // not a multiple of the block; grid-stride past 1024 blocks
  check_adam<double>(1000);
}

// ---------------------------------------------------------------- Adam's non-finite record
// One element of an update (its p, m, v, g at t = 1) among finite ones, and whether the update
// must record that it left a value NaN or infinite.
template <class T>
struct AdamRecordCase {
  const char* what;
  T p, m, v, g;
  bool recorded;
};

template <class T>
std::vector<AdamRecordCase<T>> adam_record_cases() {
  const T max = std::numeric_limits<T>::max(), inf = std::numeric_limits<T>::infinity(),
          nan = std::numeric_limits<T>::quiet_NaN(), root = std::sqrt(max);
  return {
      {"finite", 0.5, 0.01, 1e-4, 0.3, false},
      {"huge finite parameter and moments", max / 2, max / 4, max / 4, 1, false},
      {"huge gradient, g^2 still finite", 0, 0, 0, root / 2, false},
      {"g^2 overflows v (m finite, p's step 0)", 0, 0, 0, max / 2, true},
      {"NaN gradient", 0.5, 0, 0, nan, true},
      {"infinite gradient", 0.5, 0, 0, -inf, true},
      {"negative v (its square root is NaN)", 0.5, 0, -1, 0, true},
      {"infinite parameter", inf, 0, 0, 0.3, true},
      {"infinite m, finite g and v (p's step is infinite)", 0.5, inf, 1e-4, 0.3, true},
      {"NaN m", 0.5, nan, 1e-4, 0.3, true},
  };
}

// Elements [n] of p, m, v, g: finite draws, case c's values at element `at`.
template <class T>
struct AdamState {
  std::vector<T> p, m, v, g;
};
template <class T>
AdamState<T> adam_state(const AdamRecordCase<T>& c, size_t n, size_t at) {
  auto drawn = [n](uint64_t stream, double lo) {
    const std::vector<double> d = draw(stream, n, lo, 1);
    return std::vector<T>(d.begin(), d.end());
  };
  AdamState<T> s{drawn(301, -1), drawn(302, -1), drawn(303, 0), drawn(304, -1)};  // v ≥ 0
  s.p[at] = c.p, s.m[at] = c.m, s.v[at] = c.v, s.g[at] = c.g;
  return s;
}
template <class T>
Guarded<T> device_copy(const std::vector<T>& v) {
  Guarded<T> g(v.size());
  std::copy(v.begin(), v.end(), g.data());
  return g;
}

// Where an Adam update runs: the CPU op, or a CUDA launcher with t given or read from device
// memory.
enum class AdamRoute { kCpu, kCudaT, kCudaTDevice };
const char* route_name(AdamRoute r) {
  return r == AdamRoute::kCpu     ? "CPU"
         : r == AdamRoute::kCudaT ? "CUDA, t given"
                                  : "CUDA, t on device";
}

// A state in (guarded) buffers, updated by one route with its record.
template <class T>
struct AdamRun {
  Guarded<T> p, m, v, g;
  int64_t record = 0;
  AdamRun(const AdamState<T>& s, int64_t record)
      : p(device_copy(s.p)),
        m(device_copy(s.m)),
        v(device_copy(s.v)),
        g(device_copy(s.g)),
        record(record) {}
  void step(AdamRoute route, int64_t t) {
    const cpu::AdamConfig config;
    const size_t n = p.size();
    if (route == AdamRoute::kCpu)
      cpu::adam_step(p.data(), m.data(), v.data(), g.data(), n, config, t, &record);
    else if (route == AdamRoute::kCudaT)
      cuda::adam_step(p.data(), m.data(), v.data(), g.data(), n, config, t, &record, kStream);
    else
      cuda::adam_step(p.data(), m.data(), v.data(), g.data(), n, config, &t, &record, kStream);
  }
  bool same_state(const AdamRun& o) const {
    const size_t bytes = p.size() * sizeof(T);
    return std::memcmp(p.data(), o.p.data(), bytes) == 0 &&
           std::memcmp(m.data(), o.m.data(), bytes) == 0 &&
           std::memcmp(v.data(), o.v.data(), bytes) == 0;
  }
};

// Each route records step 1 where the case says so and nothing otherwise; after a recorded
// update, step 2 changes nothing; an update of the recorded step itself still runs (a step
// updates its networks' ranges one by one).
template <class T>
void check_adam_record(size_t n, size_t at) {
  for (const AdamRoute route : {AdamRoute::kCpu, AdamRoute::kCudaT, AdamRoute::kCudaTDevice}) {
    emu::set_schedule_seed(uint64_t(route) + 1);
    for (const AdamRecordCase<T>& c : adam_record_cases<T>()) {
      SCOPED_TRACE(std::string(route_name(route)) + ", " + c.what +
                   (std::is_same_v<T, float> ? " (float)" : " (double)"));
      AdamRun<T> run(adam_state(c, n, at), 0);
      run.step(route, 1);
      EXPECT_EQ(run.record, c.recorded ? 1 : 0);
      EXPECT_TRUE(run.p.guards_intact() && run.m.guards_intact() && run.v.guards_intact());
      const AdamRun<T> after_step_1 = run;
      run.step(route, 2);
      EXPECT_EQ(run.record, c.recorded ? 1 : 0) << "step 2";
      EXPECT_EQ(run.same_state(after_step_1), c.recorded)
          << (c.recorded ? "after a recorded update, a later step must change nothing"
                         : "a finite state must go on updating");
    }
    const AdamState<T> finite = adam_state(adam_record_cases<T>()[0], n, at);
    AdamRun<T> same_step(finite, 3);
    same_step.step(route, 3);
    EXPECT_FALSE(same_step.same_state(AdamRun<T>(finite, 3)))
        << route_name(route) << ": an update of the recorded step must run";
    EXPECT_EQ(same_step.record, 3) << route_name(route);
  }
}

TEST(CudaKernels, AdamRecordsTheFirstUpdateThatLeavesAValueNonFinite) {
  check_adam_record<float>(100003, 77777);  // several blocks per thread's grid stride
  check_adam_record<double>(1000, 999);     // the last element
}

// ---------------------------------------------------------------- batch gather
TEST(CudaKernels, GatherRowsFromDeviceDataSet) {
  const int N = 50, D = 100, B = 37;
  std::vector<int32_t> index(B);
  for (int i = 0; i < B; ++i) index[i] = int32_t(philox_below(N, 10, 1, 0, uint32_t(i)));
  Guarded<float> data(size_t(N) * D);
  std::vector<uint8_t> pixels(size_t(N) * D);
  Guarded<int32_t> labels(N);
  for (size_t k = 0; k < data.size(); ++k)
    data[k] = float(random_in(22, k, -1, 1)), pixels[k] = uint8_t(k * 37 % 256);
  for (int k = 0; k < N; ++k) labels[k] = int32_t(k % 10);
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<float> out(size_t(B) * D), outp(size_t(B) * D);
    Guarded<int32_t> outl(B, -1);
    cuda::gather_rows(out.data(), data.data(), index.data(), B, D, kStream);
    cuda::gather_rows(outp.data(), pixels.data(), index.data(), B, D, 1.0f / 255, kStream);
    cuda::gather_rows(outl.data(), labels.data(), index.data(), B, 1, kStream);
    for (int i = 0; i < B; ++i) {
      for (int j = 0; j < D; ++j) {
        ASSERT_EQ(out[size_t(i) * D + j], data[size_t(index[i]) * D + j]);
        ASSERT_EQ(outp[size_t(i) * D + j], float(pixels[size_t(index[i]) * D + j]) * (1.0f / 255));
      }
      ASSERT_EQ(outl[i], labels[index[i]]);
    }
    EXPECT_TRUE(out.guards_intact() && outp.guards_intact() && outl.guards_intact());
  }
}

// ---------------------------------------------------------------- per-channel sums
// Scratch for the per-channel sums over image slices (channel_sum.cuh), the most slices of C
// channels: partials NaN until written, counters zero (the kernels' unsigned counters).
template <class T>
struct SliceScratch {
  Guarded<T> partials;
  Guarded<int32_t> arrivals;
  explicit SliceScratch(int C)
      : partials(size_t(cuda::kMaxChannelSumSlices) * C), arrivals(size_t(C), 0) {}
  cuda::ChannelSumScratch<T> get() {
    return {partials.data(), partials.size(), reinterpret_cast<unsigned*>(arrivals.data()),
            arrivals.size()};
  }
  int slices(int N, int P) const {
    return cuda::channel_sum_slices(N, int(arrivals.size()), P, true, partials.size(),
                                    arrivals.size());
  }
  // Every counter back at zero and nothing written outside the buffers.
  void expect_clean(const std::string& what) const {
    for (size_t c = 0; c < arrivals.size(); ++c)
      EXPECT_EQ(arrivals[c], 0) << what << ": channel " << c << "'s counter left set";
    EXPECT_TRUE(partials.guards_intact() && arrivals.guards_intact()) << what;
  }
};

// ---------------------------------------------------------------- convolution epilogues
// Against loops in double: y = y0 + b[c] then ReLU; backward masks dy by (y > 0) in place and
// sums it per channel — in one block per channel without scratch, over image slices with it
// (partial sums added up in order by each channel's last block; the counters left at zero).
template <class T>
void check_conv_epilogue(int N, int C, int P, bool relu, bool bias, int expected_slices = 0) {
  const size_t n = size_t(N) * C * P;
  const auto y0 = draw(30, n, -1, 1), b = draw(31, size_t(C), -0.5, 0.5), dy = draw(32, n, -1, 1);
  std::vector<double> y(n), dz(n), db(C, 0.0);
  for (size_t i = 0; i < n; ++i) {
    const double z = y0[i] + (bias ? b[i / P % C] : 0.0);
    y[i] = relu && z < 0 ? 0.0 : z;
    dz[i] = relu && !(y[i] > 0) ? 0.0 : dy[i];
    db[i / P % C] += dz[i];
  }
  const std::string name = shape({N, C, P}) + (relu ? " relu" : "") + (bias ? " bias" : "");
  Guarded<T> bt = guarded<T>(b), yref = guarded<T>(y);
  SliceScratch<T> scratch(C);
  const int slices = scratch.slices(N, P);
  if (expected_slices > 0) {
    EXPECT_EQ(slices, expected_slices) << name;
  }
  for (const bool sliced : {false, true}) {
    const std::string what = name + (sliced ? " in " + std::to_string(slices) + " slices" : "");
    Guarded<T> first;
    for (uint64_t seed : kSeeds) {
      emu::set_schedule_seed(seed);
      Guarded<T> yt = inout<T>(y0);
      cuda::conv_bias_act(yt.data(), bias ? bt.data() : nullptr, N, C, P, relu, kStream);
      expect_matches(y, yt, "conv_bias_act " + what);
      Guarded<T> g = inout<T>(dy), dbt = nan_buffer<T>(C);
      cuda::conv_backward_bias(g.data(), dbt.data(), yref.data(), N, C, P, relu,
                               sliced ? scratch.get() : cuda::ChannelSumScratch<T>{}, kStream);
      expect_matches(dz, g, "conv_backward_bias dz " + what);
      expect_matches(db, dbt, "conv_backward_bias db " + what);
      scratch.expect_clean(what);
      if (seed == kSeeds[0])
        first = dbt;
      else
        EXPECT_TRUE(bitwise_equal(first, dbt)) << "db must not depend on the schedule: " << what;
      // A null db only masks (and needs no scratch).
      Guarded<T> g2 = inout<T>(dy);
      cuda::conv_backward_bias<T>(g2.data(), nullptr, yref.data(), N, C, P, relu,
                                  cuda::ChannelSumScratch<T>{}, kStream);
      expect_matches(dz, g2, "conv_backward_bias (db null) dz " + what);
    }
  }
}

TEST(CudaKernels, ConvolutionBiasReluEpilogueAndBiasGradient) {
  for (bool relu : {true, false}) {
    check_conv_epilogue<float>(3, 5, 37, relu, true, 1);
    check_conv_epilogue<double>(3, 5, 37, relu, true, 1);
  }
  check_conv_epilogue<float>(2, 3, 300, true, false);     // no bias: ReLU alone
  check_conv_epilogue<float>(16, 32, 64, true, true, 1);  // a channel's N·P spans several strides
  check_conv_epilogue<float>(1, 1, 1, true, true, 1);
  // Several slices: ~8,192 of a channel's elements each, whole images (P > and < 256).
  check_conv_epilogue<float>(20, 3, 1024, false, true, 3);  // the decoder's last layer, smaller
  check_conv_epilogue<double>(40, 2, 300, true, true, 2);
  check_conv_epilogue<float>(70, 4, 17, true, true, 1);   // 1,190 elements: one slice
  check_conv_epilogue<float>(7, 2, 5000, true, true, 4);  // 2 images per slice, 1 in the last
}

// ---------------------------------------------------------------- programmatic launch scope
// Which launches a ProgrammaticLaunch scope makes programmatic: none when off; every grid, or
// those of at most max_blocks blocks; the thread's setting restored when the scope ends.
TEST(CudaKernels, ProgrammaticLaunchScopeLimitsTheGridsItApplies) {
  EXPECT_FALSE(cuda::programmatic_for(dim3(1)));
  {
    cuda::ProgrammaticLaunch all(true);
    EXPECT_TRUE(cuda::programmatic_for(dim3(100000)));
    {
      cuda::ProgrammaticLaunch small(true, 264);
      EXPECT_TRUE(cuda::programmatic_for(dim3(264)));
      EXPECT_TRUE(cuda::programmatic_for(dim3(4, 2, 33)));
      EXPECT_FALSE(cuda::programmatic_for(dim3(265)));
      EXPECT_FALSE(cuda::programmatic_for(dim3(3, 89)));
      cuda::ProgrammaticLaunch off(false, 264);
      EXPECT_FALSE(cuda::programmatic_for(dim3(1)));
    }
    EXPECT_TRUE(cuda::programmatic_for(dim3(100000))) << "the outer scope's setting is back";
  }
  EXPECT_FALSE(cuda::programmatic_for(dim3(1)));
}

// ---------------------------------------------------------------- convolution lowering
// im2col, col2im and the leading-axes swap (conv_lowering.cu) against loops in double: the
// first and last move values, so they must match exactly; col2im adds each element's windows
// up, in the same order (i, then j) as the loop, and is im2col's adjoint.
template <class T>
void check_conv_lowering(const cuda::ConvLoweringShape& g) {
  const int K = g.C * g.KH * g.KW, Q = g.N * g.Ho * g.Wo;
  const size_t nx = size_t(g.N) * g.C * g.H * g.W, ncol = size_t(K) * Q;
  const auto x = draw(40, nx, -1, 1), dcol = draw(41, ncol, -1, 1);
  std::vector<double> col(ncol, 0.0), dx(nx, 0.0);
  for (int c = 0; c < g.C; ++c)
    for (int i = 0; i < g.KH; ++i)
      for (int j = 0; j < g.KW; ++j)
        for (int n = 0; n < g.N; ++n)
          for (int oh = 0; oh < g.Ho; ++oh)
            for (int ow = 0; ow < g.Wo; ++ow) {
              const int h = oh * g.stride - g.pad + i, w = ow * g.stride - g.pad + j;
              const size_t at = size_t((c * g.KH + i) * g.KW + j) * Q + (n * g.Ho + oh) * g.Wo + ow;
              if (h < 0 || h >= g.H || w < 0 || w >= g.W) continue;
              const size_t xi = ((size_t(n) * g.C + c) * g.H + h) * g.W + w;
              col[at] = x[xi];
              dx[xi] += dcol[at];
            }
  const std::string name = shape({g.N, g.C, g.H, g.W}) + " k" + std::to_string(g.KH) + "x" +
                           std::to_string(g.KW) + " s" + std::to_string(g.stride) + " p" +
                           std::to_string(g.pad);
  const Guarded<T> xt = guarded<T>(x), dcolt = guarded<T>(dcol);
  std::vector<T> dxt_last(nx);  // col2im's output, for its epilogue below
  for (uint64_t seed : kSeeds) {
    emu::set_schedule_seed(seed);
    Guarded<T> colt = nan_buffer<T>(ncol), dxt = nan_buffer<T>(nx);
    cuda::im2col(colt.data(), xt.data(), g, kStream);
    expect_matches(col, colt, "im2col " + name);
    EXPECT_EQ(as_double(colt), col) << "im2col moves values: " << name;
    cuda::col2im(dxt.data(), dcolt.data(), g, kStream);
    expect_matches(dx, dxt, "col2im " + name);
    // The adjoint identity ⟨im2col(x), dcol⟩ = ⟨x, col2im(dcol)⟩, from the kernels' outputs.
    double lhs = 0, rhs = 0;
    for (size_t e = 0; e < ncol; ++e) lhs += double(colt[e]) * dcol[e];
    for (size_t e = 0; e < nx; ++e) rhs += x[e] * double(dxt[e]);
    EXPECT_NEAR(lhs, rhs, 1e-4 * (1 + std::abs(lhs))) << "adjoint " << name;
    for (size_t e = 0; e < nx; ++e) dxt_last[e] = dxt[e];
  }
  // The swap, both ways: y[N, C, P] ↔ [C, N, P] with P = H·W.
  const int P = g.H * g.W;
  std::vector<double> swapped(nx);
  for (int n = 0; n < g.N; ++n)
    for (int c = 0; c < g.C; ++c)
      for (int p = 0; p < P; ++p)
        swapped[(size_t(c) * g.N + n) * P + p] = x[(size_t(n) * g.C + c) * P + p];
  Guarded<T> cn = nan_buffer<T>(nx), back = nan_buffer<T>(nx);
  cuda::swap_leading(cn.data(), xt.data(), g.N, g.C, P, kStream);
  EXPECT_EQ(as_double(cn), swapped) << "NCHW → CNHW " << name;
  EXPECT_TRUE(cn.guards_intact()) << name;
  cuda::swap_leading(back.data(), cn.data(), g.C, g.N, P, kStream);
  EXPECT_EQ(as_double(back), x) << "CNHW → NCHW " << name;
  EXPECT_TRUE(back.guards_intact()) << name;

  // With the epilogue: + bias[channel], then ReLU, as conv_bias_act computes it (bit for bit).
  const auto bias = draw(42, size_t(g.C), -0.5, 0.5);
  const Guarded<T> biast = guarded<T>(bias);
  for (const bool relu : {false, true}) {
    auto act = [&](double v, int c) {
      const T z = T(v) + T(bias[c]);
      return double(relu && z < T(0) ? T(0) : z);
    };
    std::vector<double> back_act(nx), dx_act(nx);
    for (size_t e = 0; e < nx; ++e) {
      const int c = int(e / P % g.C);
      back_act[e] = act(x[e], c);
      dx_act[e] = act(double(dxt_last[e]), c);
    }
    Guarded<T> out = nan_buffer<T>(nx), dxe = nan_buffer<T>(nx);
    cuda::swap_leading(out.data(), cn.data(), g.C, g.N, P, kStream, biast.data(), relu);
    EXPECT_EQ(as_double(out), back_act)
        << "CNHW → NCHW with bias" << (relu ? ", ReLU " : " ") << name;
    EXPECT_TRUE(out.guards_intact()) << name;
    cuda::col2im(dxe.data(), dcolt.data(), g, kStream, biast.data(), relu);
    EXPECT_EQ(as_double(dxe), dx_act) << "col2im with bias" << (relu ? ", ReLU " : " ") << name;
    EXPECT_TRUE(dxe.guards_intact()) << name;
  }
}

cuda::ConvLoweringShape lowering(int N, int C, int H, int W, int KH, int KW, int stride, int pad) {
  return {N,
          C,
          H,
          W,
          KH,
          KW,
          stride,
          pad,
          (H + 2 * pad - KH) / stride + 1,
          (W + 2 * pad - KW) / stride + 1};
}

TEST(CudaKernels, ConvolutionLoweringMatchesLoops) {
  check_conv_lowering<float>(lowering(3, 2, 8, 8, 4, 4, 2, 1));  // the SVHN layers' geometry
  check_conv_lowering<double>(lowering(3, 2, 8, 8, 4, 4, 2, 1));
  check_conv_lowering<float>(lowering(2, 3, 7, 5, 3, 3, 2, 1));   // odd, non-square
  check_conv_lowering<float>(lowering(1, 4, 6, 9, 2, 3, 3, 2));   // stride 3, wide padding
  check_conv_lowering<float>(lowering(2, 3, 5, 4, 1, 1, 1, 0));   // 1 × 1: col is x per channel
  check_conv_lowering<double>(lowering(1, 1, 9, 9, 5, 5, 1, 2));  // stride 1: 25 windows a pixel
  // Many pixels: a patch row spans several blocks.
  check_conv_lowering<float>(lowering(5, 1, 40, 40, 2, 2, 1, 0));
}

// How many slices a call makes: ~8,192 elements of a channel each, at most 64 and at most one
// per image, none empty, fewer when the scratch has no room for their partials.
TEST(CudaKernels, ConvolutionBiasGradientSlices) {
  const size_t room = 64 * 4096, counters = 4096;
  EXPECT_EQ(cuda::channel_sum_slices(160, 3, 1024, true, room, counters), 20);
  EXPECT_EQ(cuda::channel_sum_slices(160, 32, 256, true, room, counters), 5);
  EXPECT_EQ(cuda::channel_sum_slices(160, 128, 16, true, room, counters), 1);
  EXPECT_EQ(cuda::channel_sum_slices(10'240, 3, 1024, true, room, counters), 64);
  EXPECT_EQ(cuda::channel_sum_slices(3, 1, 100'000, true, room, counters), 3);
  EXPECT_EQ(cuda::channel_sum_slices(160, 3, 1024, true, 30, counters), 10);  // 10 × 3
  EXPECT_EQ(cuda::channel_sum_slices(160, 3, 1024, true, room, 2), 1);        // 2 counters < 3
  EXPECT_EQ(cuda::channel_sum_slices(160, 3, 1024, true, 0, 0), 1);
  EXPECT_EQ(cuda::channel_sum_slices(160, 3, 1024, false, 0, 0), 20);  // mask only
  // 7 images of 5,000 pixels want 5 slices: 2 images each, so 4 slices of whole images.
  EXPECT_EQ(cuda::channel_sum_slices(7, 2, 5000, true, room, counters), 4);
}

// ---------------------------------------------------------------- Gaussian likelihood
template <class T>
void check_gaussian(int B, int C, int P, double lv_lo, double lv_hi, int expected_slices = 1) {
  const size_t n = size_t(B) * C * P;
  const auto mu = draw(33, n, -1, 1), x = draw(34, n, -1.5, 1.5),
             logvar = draw(35, size_t(C), lv_lo, lv_hi), dll = draw(36, size_t(B), -1, 1);
  std::vector<double> ll(B), dmu(n), dlogvar(C);
  cpu::gaussian_ll_forward(ll.data(), mu.data(), x.data(), logvar.data(), B, C, P);
  cpu::gaussian_ll_backward(dmu.data(), dlogvar.data(), dll.data(), mu.data(), x.data(),
                            logvar.data(), B, C, P);
  Guarded<T> mt = guarded<T>(mu), xt = guarded<T>(x), lvt = guarded<T>(logvar),
             dllt = guarded<T>(dll);
  // dlogvar in one block per channel, then over row slices.
  SliceScratch<T> scratch(C);
  EXPECT_EQ(scratch.slices(B, P), expected_slices) << shape({B, C, P});
  for (const bool sliced : {false, true}) {
    const std::string name =
        shape({B, C, P}) + (sliced ? " in " + std::to_string(expected_slices) + " slices" : "");
    Guarded<T> first_ll, first_dlv;
    for (uint64_t seed : kSeeds) {
      emu::set_schedule_seed(seed);
      Guarded<T> llt = nan_buffer<T>(B), dmt = nan_buffer<T>(n), dlvt = nan_buffer<T>(C);
      cuda::gaussian_ll_forward(llt.data(), mt.data(), xt.data(), lvt.data(), B, C, P, kStream);
      cuda::gaussian_ll_backward(dmt.data(), dlvt.data(), dllt.data(), mt.data(), xt.data(),
                                 lvt.data(), B, C, P,
                                 sliced ? scratch.get() : cuda::ChannelSumScratch<T>{}, kStream);
      expect_matches(ll, llt, "gaussian_ll_forward " + name);
      expect_matches(dmu, dmt, "gaussian_ll_backward dmu " + name);
      expect_matches(dlogvar, dlvt, "gaussian_ll_backward dlogvar " + name);
      scratch.expect_clean(name);
      if (seed == kSeeds[0]) {
        first_ll = llt, first_dlv = dlvt;
      } else {
        EXPECT_TRUE(bitwise_equal(first_ll, llt) && bitwise_equal(first_dlv, dlvt))
            << "the reductions must not depend on the schedule: " << name;
      }
    }
  }
}

TEST(CudaKernels, GaussianLogLikelihood) {
  check_gaussian<float>(37, 3, 100, -2, 2);  // per channel
  check_gaussian<double>(37, 3, 100, -2, 2);
  check_gaussian<float>(5, 1, 333, -1, 1);  // one global log-variance
  check_gaussian<double>(5, 1, 333, -1, 1);
  check_gaussian<float>(160, 3, 256, -3, 0, 5);   // the step's batch (16×16 images, to stay quick)
  check_gaussian<double>(40, 3, 1024, -1, 1, 5);  // 32×32 images: 8 per slice
  check_gaussian<float>(2, 4, 1, 0, 1);
}

TEST(CudaKernels, GaussianFiniteAtExtremeLogVariances) {
  const int B = 20, C = 4, P = 1000;  // 3 slices of rows
  const std::vector<double> logvar = {1e4, -1e4, 25, -35};
  const auto mu = draw(37, size_t(B) * C * P, -100, 100),
             x = draw(38, size_t(B) * C * P, -100, 100), dll = draw(39, size_t(B), -1, 1);
  std::vector<double> ll(B), dmu(mu.size()), dlogvar(C);
  cpu::gaussian_ll_forward(ll.data(), mu.data(), x.data(), logvar.data(), B, C, P);
  cpu::gaussian_ll_backward(dmu.data(), dlogvar.data(), dll.data(), mu.data(), x.data(),
                            logvar.data(), B, C, P);
  Guarded<float> mt = guarded<float>(mu), xt = guarded<float>(x), lvt = guarded<float>(logvar),
                 dllt = guarded<float>(dll), llt = nan_buffer<float>(B),
                 dmt = nan_buffer<float>(mu.size()), dlvt = nan_buffer<float>(C);
  cuda::gaussian_ll_forward(llt.data(), mt.data(), xt.data(), lvt.data(), B, C, P, kStream);
  SliceScratch<float> scratch(C);
  ASSERT_EQ(scratch.slices(B, P), 3);
  cuda::gaussian_ll_backward(dmt.data(), dlvt.data(), dllt.data(), mt.data(), xt.data(), lvt.data(),
                             B, C, P, scratch.get(), kStream);
  expect_matches(ll, llt, "gaussian extremes ll");
  expect_matches(dmu, dmt, "gaussian extremes dmu");
  for (int c = 0; c < C; ++c) EXPECT_EQ(dlvt[c], 0.0f) << "outside the clamp: zero gradient";
  scratch.expect_clean("gaussian extremes");
}

// ---------------------------------------------------------------- the checks can fail
TEST(CudaKernels, ComparisonCatchesACorruptedResult) {
  // The same check as above on a result with one wrong element must fail: guards the
  // tolerance and the NaN scan against being vacuous.
  const int B = 37, D = 100;
  const auto logits = draw(16, size_t(B) * D, -8, 8), x = draw(17, size_t(B) * D, 0, 1);
  std::vector<double> ll(B);
  cpu::bernoulli_ll_forward(ll.data(), logits.data(), x.data(), B, D);
  Guarded<float> lt = guarded<float>(logits), xt = guarded<float>(x), llt = nan_buffer<float>(B);
  cuda::bernoulli_ll_forward(llt.data(), lt.data(), xt.data(), B, D, kStream);
  std::vector<double> got = as_double(llt);
  EXPECT_LE(nmse(ll.data(), got.data(), B), 1e-7);
  got[5] *= 1.01;
  EXPECT_GT(nmse(ll.data(), got.data(), B), 1e-7);
  Guarded<float> unwritten = nan_buffer<float>(B);
  EXPECT_FALSE(std::isfinite(unwritten[0]));
}

}  // namespace
}  // namespace equivae::test
