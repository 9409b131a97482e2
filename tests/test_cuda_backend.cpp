// The CUDA backend (runtime/cuda) against the CPU backend, whole training steps of the tiny
// models (dense MNIST and convolutional Gaussian SVHN-shaped): same loss and metrics, same
// noise ε, same gradients and updated weights, for the supervised and the semi-supervised
// plan, eager (train_step) and as replays of one captured graph (train_steps: batches gathered on
// the device, step and Adam's t read from device counters, metrics recorded on the device); the
// trainer's device path; a short run learns; a window flags the step whose update went
// non-finite and keeps the state that update left.
//
// Built twice from this source:
//  - test_cuda_backend: the backend compiled against the CUDA-on-CPU emulator (GEMMs in
//    OpenBLAS, as the CPU backend calls them): runs everywhere, in CTest;
//  - test_cuda_backend_gpu (EQUIVAE_TEST_REAL_CUDA, where nvcc was found): the real backend
//    (cuBLAS with strict FP32 for the comparisons); every test skips when no GPU is present.
//
// Tolerances. Gradients: normalised MSE ≤ 1e-7 against the CPU float plan, the op harness's
// float bound. The GEMMs are the same calls on the emulator; what differs is the order of
// the kernels' reductions (bias gradient over 8 row lanes, pooling, row sums in warps), a few
// float ulps per element, far under the bound. On the GPU cuBLAS may also split K differently;
// its FP32 error is of the same size. Noise ε: Philox is exact; only the Box–Muller libm
// calls may differ by an ulp on a GPU (NMSE ≤ 1e-12).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/philox.h"
#include "model/equivae.h"
#include "model/idx_dataset.h"
#include "model/sampler.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/backend.h"
#include "runtime/cuda/device_step.h"
#include "runtime/error.h"
#include "runtime/host_floats.h"
#include "tests/conv_fixtures.h"
#include "tests/error_checks.h"
#include "tests/fixtures.h"

#if defined(EQUIVAE_TEST_REAL_CUDA)
#include <cuda_runtime_api.h>
#else
#include "kernels/emu/emu.h"
#include "runtime/cuda/cuda_backend.h"
#endif

namespace equivae {
namespace {

const Dataset& digits() {
  return test::kept_digits<1500>();
}

using test::tiny_config;

using test::tiny_semi_config;

const LabelledSplit& semi_split() {
  static const LabelledSplit split = split_labelled(digits(), 100, 1);
  return split;
}

CudaBackendOptions strict_options() {
  CudaBackendOptions options;
  options.strict_fp32 = true;
  return options;
}
// Strict, with every convolution in order on the main stream (the defaults put the weight
// gradients and the SVHN encoder's trunk on the side stream).
CudaBackendOptions in_order_options() {
  CudaBackendOptions options = strict_options();
  options.side_conv_filter = options.trunk_beside = false;
  return options;
}

// The batch of `step` that config's balanced sampler draws from data's labels.
Batch supervised_batch(const EquiVaeConfig& config, const Dataset& data, uint64_t step) {
  BalancedBatchSampler sampler(data.labels, 10, config.k, config.m_max, config.seed);
  Batch batch;
  sampler.sample(step, batch);
  return batch;
}

// The semi-supervised batch of `step`: config's samplers over split's labelled and unlabelled
// sets, the labelled rows first.
Batch semi_batch(const EquiVaeConfig& config, const LabelledSplit& split, uint64_t step) {
  BalancedBatchSampler labelled(split.labelled.labels, 10, config.k, config.m_max, config.seed);
  UnlabelledSampler unlabelled(split.unlabelled.n, config.unlabelled, 10, config.k, config.m_max,
                               config.seed);
  Batch batch;
  labelled.sample(step, batch);
  unlabelled.sample(step, batch);
  return batch;
}

std::unique_ptr<Backend<float>> device_backend(
    const CudaBackendOptions& options = strict_options()) {
#if defined(EQUIVAE_TEST_REAL_CUDA)
  return make_cuda_backend<float>(options);
#else
  return make_emulated_cuda_backend<float>(options);
#endif
}

class CudaBackend : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(EQUIVAE_TEST_REAL_CUDA)
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: the GPU tests need one";
#endif
  }
};

template <class T>
std::vector<double> host_copy(Backend<T>& backend, const T* device, size_t n) {
  std::vector<T> host(n);
  backend.download(host.data(), device, n * sizeof(T));
  return std::vector<double>(host.begin(), host.end());
}

float* device_copy(Backend<float>& backend, const std::vector<float>& host) {
  float* p = static_cast<float*>(backend.allocate(host.size() * sizeof(float)));
  backend.upload(p, host.data(), host.size() * sizeof(float));
  return p;
}

// n values (int(i·mul mod m) − m/2) / div: both signs, exact in float.
std::vector<float> patterned(size_t n, int mul, int m, float div) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float(int(i * size_t(mul) % size_t(m)) - m / 2) / div;
  return v;
}

// Two dense layers on a device backend, run forward: x[B,in] → ReLU → h[B,hidden], its mask
// kept, → y[B,out]; patterned inputs give pre-activations of both signs. hdy: a gradient of y.
struct TwoDenseLayers {
  int B, in, hidden, out;
  std::vector<float> hx, hW0, hb0, hW1, hdy;
  float *x, *W0, *b0, *W1, *b1, *h, *y;
  void* mask;
  TwoDenseLayers(Backend<float>& be, int B_, int in_, int hidden_, int out_,
                 std::vector<float> b0_host)
      : B(B_),
        in(in_),
        hidden(hidden_),
        out(out_),
        hx(patterned(size_t(B) * in, 7, 11, 4)),
        hW0(patterned(size_t(in) * hidden, 5, 13, 8)),
        hb0(std::move(b0_host)),
        hW1(patterned(size_t(hidden) * out, 3, 7, 4)),
        hdy(patterned(size_t(B) * out, 1, 5, 2)) {
    x = device_copy(be, hx), W0 = device_copy(be, hW0), b0 = device_copy(be, hb0);
    W1 = device_copy(be, hW1), b1 = device_copy(be, std::vector<float>(size_t(out)));
    h = device_copy(be, std::vector<float>(size_t(B) * hidden));
    y = device_copy(be, std::vector<float>(size_t(B) * out));
    mask = be.allocate(be.relu_mask_bytes(B, hidden));
    be.dense_forward(h, x, W0, b0, B, in, hidden, true, mask, false);
    be.dense_forward(y, h, W1, b1, B, hidden, out, false, nullptr, false);
  }
};

double nmse(const std::vector<double>& ref, const std::vector<double>& got) {
  EXPECT_EQ(ref.size(), got.size());
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    err += (ref[i] - got[i]) * (ref[i] - got[i]);
    norm += ref[i] * ref[i];
  }
  return norm == 0 ? err : err / norm;
}

size_t non_finite(const std::vector<double>& v) {
  size_t n = 0;
  for (double x : v) n += !std::isfinite(x);
  return n;
}

void expect_close(double ref, double got, double rel, const std::string& what) {
  EXPECT_NEAR(got, ref, rel * std::fabs(ref) + 1e-6) << what;
}

void expect_metrics(const StepMetrics& ref, const StepMetrics& got, const std::string& what) {
  expect_close(ref.recon, got.recon, 1e-5, what + ": reconstruction");
  expect_close(ref.kl, got.kl, 1e-5, what + ": KL");
  expect_close(ref.classifier_nll, got.classifier_nll, 1e-5, what + ": classifier NLL");
  expect_close(ref.unlabelled_bound, got.unlabelled_bound, 1e-5, what + ": unlabelled bound");
}

// A CPU float plan and a device plan of one configuration, side by side.
struct Pair {
  std::unique_ptr<Backend<float>> cpu_backend = make_cpu_backend<float>(1);
  std::unique_ptr<Backend<float>> gpu_backend;
  std::unique_ptr<EquiVae<float>> cpu, gpu;
  Pair(const EquiVaeConfig& config, const CudaBackendOptions& options = strict_options())
      : gpu_backend(device_backend(options)) {
    cpu = std::make_unique<EquiVae<float>>(config, *cpu_backend);
    gpu = std::make_unique<EquiVae<float>>(config, *gpu_backend);
  }
  std::vector<double> cpu_params() const {
    return host_copy(*cpu_backend, cpu->parameters(), cpu->parameter_count());
  }
  std::vector<double> gpu_params() const {
    return host_copy(*gpu_backend, gpu->parameters(), gpu->parameter_count());
  }
  std::vector<double> cpu_grads() const {
    return host_copy(*cpu_backend, cpu->gradients(), cpu->parameter_count());
  }
  std::vector<double> gpu_grads() const {
    return host_copy(*gpu_backend, gpu->gradients(), gpu->parameter_count());
  }
};

// One eager step on both backends: metrics, ε (through v = μ + σε: the sampled latents),
// gradients, updated weights.
void compare_one_step(const EquiVaeConfig& config, const Batch& batch, const Dataset& data,
                      const Dataset* unlabelled, uint64_t step, double grad_bound,
                      const CudaBackendOptions& options = strict_options()) {
  Pair p(config, options);
  EXPECT_NE(p.gpu_backend->name().find("cuda"), std::string::npos) << p.gpu_backend->name();
  EXPECT_EQ(nmse(p.cpu_params(), p.gpu_params()), 0.0) << "the initial weights differ";
  p.cpu->load_batch(batch, data, unlabelled);
  p.gpu->load_batch(batch, data, unlabelled);
  const StepMetrics a = p.cpu->forward(step), b = p.gpu->forward(step);
  expect_metrics(a, b, "forward");
  p.cpu->backward();
  p.gpu->backward();
  const std::vector<double> ga = p.cpu_grads(), gb = p.gpu_grads();
  EXPECT_EQ(non_finite(gb), 0u);
  const double e = nmse(ga, gb);
  EXPECT_LE(e, grad_bound) << "normalised MSE of the gradients";
  std::printf("[ info ] %s step %llu: recon %.6f vs %.6f, KL %.6f vs %.6f, gradient NMSE %.3g\n",
              config.semi_supervised() ? "semi-supervised" : "supervised", (unsigned long long)step,
              a.recon, b.recon, a.kl, b.kl, e);
  p.cpu->apply_adam();
  p.gpu->apply_adam();
  EXPECT_LE(nmse(p.cpu_params(), p.gpu_params()), 1e-10) << "weights after one Adam step";
}

TEST_F(CudaBackend, SupervisedStepMatchesTheCpuBackend) {
  const EquiVaeConfig config = tiny_config();
  const Batch batch = supervised_batch(config, digits(), 3);
  compare_one_step(config, batch, digits(), nullptr, 3, 1e-7);
}

TEST_F(CudaBackend, SemiSupervisedStepMatchesTheCpuBackend) {
  const EquiVaeConfig config = tiny_semi_config();
  const LabelledSplit& split = semi_split();
  const Batch batch = semi_batch(config, split, 2);
  compare_one_step(config, batch, split.labelled, &split.unlabelled, 2, 1e-7);
}

#if !defined(EQUIVAE_TEST_REAL_CUDA)
// n copies of value in the backend's memory (released with the backend).
float* filled(Backend<float>& be, size_t n, float value) {
  float* p = static_cast<float*>(be.allocate(n * sizeof(float)));
  be.fill(p, value, n);
  return p;
}
// src[n] as a main-stream op that reads it without a join sees it (early: src ⊙ 1 copied by
// dropout_backward), and as a download, which joins first, sees it.
struct EarlyAndJoined {
  std::vector<float> early, joined;
};
EarlyAndJoined read_early_and_joined(Backend<float>& be, const float* src, size_t n) {
  float *ones = filled(be, n, 1.0f), *copy = filled(be, n, -1.0f);
  be.dropout_backward(copy, src, ones, n);
  EarlyAndJoined r{std::vector<float>(n), std::vector<float>(n)};
  be.download(r.early.data(), copy, n * sizeof(float));
  be.download(r.joined.data(), src, n * sizeof(float));
  return r;
}

// The emulator runs side-stream work (here the weight gradient) at the join that waits for
// it: a main-stream op that reads dW without a join copies the old values. Every other test
// runs under this rule, so a missing join in the backend fails them.
TEST_F(CudaBackend, EmulatedSideStreamWorkRunsAtItsJoin) {
  auto be = device_backend();
  const int B = 4, in = 3, out = 2;
  float *x = filled(*be, size_t(B) * in, 1.0f), *W = filled(*be, size_t(in) * out, 0.5f),
        *y = filled(*be, size_t(B) * out, 1.0f), *dy = filled(*be, size_t(B) * out, 0.25f),
        *dW = filled(*be, size_t(in) * out, 7.0f), *db = filled(*be, out, 7.0f);
  be->dense_backward(nullptr, dW, db, dy, x, W, y, B, in, out, false, false, {});
  const EarlyAndJoined r = read_early_and_joined(*be, dW, size_t(in) * out);
  for (size_t i = 0; i < r.early.size(); ++i) {
    EXPECT_EQ(r.early[i], 7.0f) << "dW read before its join";
    EXPECT_EQ(r.joined[i], float(B) * 0.25f) << "dW = xᵀ·dy after the join";
  }
}

// A convolution issued in a beside stretch is side-stream work: its output is there only
// after a join.
TEST_F(CudaBackend, EmulatedBesideConvolutionRunsAtItsJoin) {
  const Conv2dShape s{1, 1, 4, 4, 1, 2, 2, 2, 0, 0};  // 2 × 2 windows, no overlap: Ho = Wo = 2
  auto be = device_backend({.strict_fp32 = true, .trunk_beside = true});
  auto* ops = dynamic_cast<DeviceStepOps<float>*>(be.get());
  ASSERT_NE(ops, nullptr);
  const size_t bytes = be->conv2d_workspace_bytes(s);
  float *x = filled(*be, 16, 1.0f), *W = filled(*be, 4, 0.5f), *y = filled(*be, 4, 7.0f),
        *ws = filled(*be, bytes / sizeof(float) + 1, 0.0f);
  ASSERT_TRUE(ops->begin_beside());
  be->conv2d_forward(y, x, W, nullptr, s, false, ws, bytes);
  ops->end_beside();
  const EarlyAndJoined r = read_early_and_joined(*be, y, 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(r.early[i], 7.0f) << "y read before its join";
    EXPECT_EQ(r.joined[i], 2.0f) << "y = Σ of a 2 × 2 window of ones × 0.5";
  }
}

// The Gaussian likelihood's log-variance gradient goes to the side stream with
// side_bias_gradient (only Adam reads it); dμ, which the decoder's backward starts from, stays
// on the main stream. Without the option both are there at once.
TEST_F(CudaBackend, EmulatedLogVarianceGradientRunsBesideTheDecodersBackward) {
  const int B = 2, C = 3, P = 4;
  const size_t n = size_t(B) * C * P;
  for (const bool beside : {true, false}) {
    CudaBackendOptions options = strict_options();
    options.side_bias_gradient = beside;
    auto be = device_backend(options);
    float *mu = filled(*be, n, 0.5f), *x = filled(*be, n, 1.0f), *lv = filled(*be, C, 0.0f),
          *dll = filled(*be, B, 1.0f), *dmu = filled(*be, n, 7.0f), *dlv = filled(*be, C, 7.0f);
    be->gaussian_ll_backward(dmu, dlv, dll, mu, x, lv, B, C, P);
    // Main-stream copies of both before anything joins the side stream, then the joined values.
    float *ones = filled(*be, n, 1.0f), *dlv_early = filled(*be, C, -1.0f),
          *dmu_early = filled(*be, n, -1.0f);
    be->dropout_backward(dlv_early, dlv, ones, C);
    be->dropout_backward(dmu_early, dmu, ones, n);
    std::vector<float> g_early(C), g_joined(C), d_early(n), d_joined(n);
    be->download(g_early.data(), dlv_early, C * sizeof(float));  // joins
    be->download(d_early.data(), dmu_early, n * sizeof(float));
    be->download(g_joined.data(), dlv, C * sizeof(float));
    be->download(d_joined.data(), dmu, n * sizeof(float));
    for (int c = 0; c < C; ++c) {
      // ∂ll/∂lv_c = Σ over the channel's B·P elements of −½ + ½ (x − μ)² e^{−lv}.
      EXPECT_FLOAT_EQ(g_joined[c], float(B * P) * (-0.5f + 0.5f * 0.25f)) << "after the join";
      EXPECT_EQ(g_early[c], beside ? 7.0f : g_joined[c]) << (beside ? "side" : "main") << " stream";
    }
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(d_early[i], d_joined[i]) << "dμ on the main stream";
      EXPECT_NE(d_joined[i], 7.0f) << "dμ written";
    }
  }
}

// A convolution's bias gradient goes beside with side_bias_gradient too; its ReLU's mask, which
// the input gradient reads, stays on the main stream.
TEST_F(CudaBackend, EmulatedConvolutionBiasGradientRunsAtItsJoin) {
  const Conv2dShape s{1, 1, 4, 4, 2, 2, 2, 2, 0, 0};  // 2 × 2 windows: y [1, 2, 2, 2]
  // With and without the workspace split per stream (side_conv_filter): db goes beside either
  // way (the emulator's side stream is the main one, so it shows the deferral, not the stream).
  for (const bool beside : {true, false})
    for (const bool split : {false, true}) {
      CudaBackendOptions options = in_order_options();
      options.side_bias_gradient = beside;
      options.side_conv_filter = split;
      auto be = device_backend(options);
      const size_t bytes = be->conv2d_workspace_bytes(s);
      // y: channel 0 positive, channel 1 ≤ 0 (masked); dy = 0.25 everywhere.
      const std::vector<float> yv = {1, 1, 1, 1, 0, -1, 0, -1};
      float *x = filled(*be, 16, 1.0f), *W = filled(*be, 8, 0.5f), *dy = filled(*be, 8, 0.25f),
            *db = filled(*be, 2, 7.0f), *dx = filled(*be, 16, 0.0f),
            *ws = filled(*be, bytes / sizeof(float) + 1, 0.0f);
      float* y = filled(*be, 8, 0.0f);
      be->upload(y, yv.data(), yv.size() * sizeof(float));
      be->conv2d_backward(dx, nullptr, db, dy, x, W, y, s, true, ws, bytes);
      float *ones = filled(*be, 8, 1.0f), *db_early = filled(*be, 2, -1.0f),
            *dz_early = filled(*be, 8, -1.0f);
      be->dropout_backward(db_early, db, ones, 2);
      be->dropout_backward(dz_early, dy, ones, 8);
      std::vector<float> db_before(2), dz_before(8), db_after(2);
      be->download(db_before.data(), db_early, 2 * sizeof(float));  // joins
      be->download(dz_before.data(), dz_early, 8 * sizeof(float));
      be->download(db_after.data(), db, 2 * sizeof(float));
      EXPECT_EQ(db_after, (std::vector<float>{1.0f, 0.0f})) << "Σ of the masked dy per channel";
      const std::vector<float> untouched = {7.0f, 7.0f};
      EXPECT_EQ(db_before, beside ? untouched : db_after)
          << (beside ? "side" : "main") << " stream";
      EXPECT_EQ(dz_before, (std::vector<float>{0.25f, 0.25f, 0.25f, 0.25f, 0, 0, 0, 0}))
          << "the mask on the main stream";
    }
}

// Which stream each kernel was launched on (the emulator's side stream has a handle of its own,
// the main one is null): the parameter-gradient sums go beside with side_bias_gradient — with
// or without the workspace split — and the mask, dμ and the input gradients stay on the main
// stream; without the option everything is on the main stream.
TEST_F(CudaBackend, EmulatedParameterGradientSumsAreLaunchedOnTheSideStream) {
  const Conv2dShape s{2, 2, 4, 4, 3, 2, 2, 2, 0, 0};
  for (const bool beside : {true, false})
    for (const bool split : {false, true}) {
      SCOPED_TRACE(std::string(beside ? "beside" : "in order") + (split ? ", split" : ""));
      CudaBackendOptions options = in_order_options();
      options.side_bias_gradient = beside;
      options.side_conv_filter = split;
      auto be = device_backend(options);
      std::map<std::string, std::set<bool>> on_side;  // kernel → the streams it ran on
      emu::set_launch_observer([&](const char* kernel, cudaStream_t stream) {
        std::string name(kernel);
        name = name.substr(0, name.find('<'));
        on_side[name].insert(stream != nullptr);
      });
      const size_t bytes = be->conv2d_workspace_bytes(s);
      float *x = filled(*be, 2 * 2 * 16, 0.5f), *W = filled(*be, 3 * 2 * 4, 0.25f),
            *y = filled(*be, 2 * 3 * 4, 1.0f), *dy = filled(*be, 2 * 3 * 4, 0.25f),
            *dx = filled(*be, 2 * 2 * 16, 0.0f), *dW = filled(*be, 3 * 2 * 4, 0.0f),
            *db = filled(*be, 3, 0.0f), *ws = filled(*be, bytes / sizeof(float) + 1, 0.0f);
      be->conv2d_backward(dx, dW, db, dy, x, W, y, s, true, ws, bytes);
      const int B = 2, C = 3, P = 4;
      float *mu = filled(*be, B * C * P, 0.5f), *xg = filled(*be, B * C * P, 1.0f),
            *lv = filled(*be, C, 0.0f), *dll = filled(*be, B, 1.0f),
            *dmu = filled(*be, B * C * P, 0.0f), *dlv = filled(*be, C, 0.0f);
      be->gaussian_ll_backward(dmu, dlv, dll, mu, xg, lv, B, C, P);
      std::vector<float> sink(3);
      be->download(sink.data(), db, 3 * sizeof(float));  // joins: the side work runs
      emu::set_launch_observer({});
      using Streams = std::set<bool>;
      EXPECT_EQ(on_side["kernel_conv_backward_bias"], Streams{beside});
      EXPECT_EQ(on_side["kernel_gaussian_ll_dlogvar"], Streams{beside});
      EXPECT_EQ(on_side["kernel_gaussian_ll_dmu"], Streams{false});
      EXPECT_EQ(on_side["kernel_relu_mask"], beside ? Streams{false} : Streams{})
          << "the mask alone on the main stream (without the option: fused with the sums)";
      EXPECT_EQ(on_side["kernel_col2im"], Streams{}) << "cuDNN's stand-in, no lowering here";
    }
}

// The emulator runs the streams one after the other, so it checks scratch instead: memory a
// side-stream op was given (here the weight gradient's part of a workspace) and a main-stream
// op issued after it is given before the next join would race on a GPU, and is refused.
TEST_F(CudaBackend, EmulatedStreamsSharingScratchBeforeAJoinAreRefused) {
  const Conv2dShape s{1, 1, 4, 4, 1, 2, 2, 2, 0, 0};
  auto be = device_backend({.strict_fp32 = true, .side_conv_filter = true});
  const size_t bytes = be->conv2d_workspace_bytes(s);
  ASSERT_GE(bytes, 512u);
  float *x = filled(*be, 16, 1.0f), *W = filled(*be, 4, 0.5f), *y = filled(*be, 4, 1.0f),
        *dy = filled(*be, 4, 0.25f), *dW = filled(*be, 4, 0.0f),
        *ws = filled(*be, 2 * bytes / sizeof(float), 0.0f);
  be->conv2d_backward(nullptr, dW, nullptr, dy, x, W, y, s, false, ws, bytes);  // dW beside
  // A forward whose workspace starts in the side part the weight gradient still uses.
  float* overlapping = ws + bytes / 2 / sizeof(float);
  EXPECT_THROW(be->conv2d_forward(y, x, W, nullptr, s, false, overlapping, bytes), Error);
  // One that starts after it, or the same one after a join, is fine.
  EXPECT_NO_THROW(
      be->conv2d_forward(y, x, W, nullptr, s, false, ws + bytes / sizeof(float), bytes));
  std::vector<float> host(4);
  be->download(host.data(), dW, sizeof(float) * 4);  // joins
  EXPECT_NO_THROW(be->conv2d_forward(y, x, W, nullptr, s, false, overlapping, bytes));
}

// The same for a convolution's weight gradient with side_conv_filter; without it, dW is there
// at once.
TEST_F(CudaBackend, EmulatedSideStreamConvolutionFilterRunsAtItsJoin) {
  const Conv2dShape s{1, 1, 4, 4, 1, 2, 2, 2, 0, 0};
  for (const bool side : {false, true}) {
    CudaBackendOptions options = strict_options();
    options.side_conv_filter = side;
    auto be = device_backend(options);
    const size_t bytes = be->conv2d_workspace_bytes(s);
    float *x = filled(*be, 16, 1.0f), *W = filled(*be, 4, 0.5f), *y = filled(*be, 4, 1.0f),
          *dy = filled(*be, 4, 0.25f), *dx = filled(*be, 16, 0.0f), *dW = filled(*be, 4, 7.0f),
          *ws = filled(*be, bytes / sizeof(float) + 1, 0.0f);
    be->conv2d_backward(dx, dW, nullptr, dy, x, W, y, s, false, ws, bytes);
    const EarlyAndJoined r = read_early_and_joined(*be, dW, 4);
    for (int i = 0; i < 4; ++i) {
      // Each weight meets 4 windows of x = 1 with dy = 0.25.
      EXPECT_EQ(r.joined[i], 1.0f) << "dW after the join";
      EXPECT_EQ(r.early[i], side ? 7.0f : 1.0f) << (side ? "side stream" : "main stream");
    }
  }
}
#endif

// The step's first and last ops on their own: load_step copies the slot the counters point
// at and runs four gathers whose row indices come from that slot's segments; finish_step
// records the means in the step's row of the table and advances the counters.
TEST_F(CudaBackend, LoadStepAndFinishStepReadTheSlotTheCountersPointAt) {
  auto backend = device_backend();
  auto* ops = dynamic_cast<DeviceStepOps<float>*>(backend.get());
  ASSERT_NE(ops, nullptr);
  auto take = [&](size_t bytes) { return backend->allocate(bytes); };
  const int D = 3, N = 9;  // a data set of 9 rows of 3 floats: row i holds 10 i + c
  std::vector<float> data(size_t(N) * D);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) data[size_t(i) * D + c] = float(10 * i + c);
  float* device_data = static_cast<float*>(take(data.size() * sizeof(float)));
  backend->upload(device_data, data.data(), data.size() * sizeof(float));
  // Slot layout: segments of 2, 3 and 1 row indices, then 4 more ints (the pooling sets).
  SlotLayout layout;
  const int counts[] = {2, 3, 1, 4};
  int32_t* copies[4];
  for (int s = 0; s < 4; ++s) {
    copies[s] = static_cast<int32_t*>(take(sizeof(int32_t) * counts[s]));
    layout.dst[s] = copies[s];
    layout.count[s] = counts[s];
  }
  const size_t ints = layout.ints();  // 10 per step; 3 steps, step s holds indices (s + j) % N
  std::vector<int32_t> slots(3 * ints);
  for (size_t step = 0; step < 3; ++step)
    for (size_t j = 0; j < ints; ++j) slots[step * ints + j] = int32_t((step * 7 + j) % N);
  int32_t* device_slots = static_cast<int32_t*>(take(slots.size() * sizeof(int32_t)));
  backend->upload(device_slots, slots.data(), slots.size() * sizeof(int32_t));
  DeviceCounters counters;
  counters.first_step = 40;
  counters.step = 42;  // slot 2
  counters.t = 5;
  auto* device_counters = static_cast<DeviceCounters*>(take(sizeof(DeviceCounters)));
  backend->upload(device_counters, &counters, sizeof(counters));
  float* out[4];
  const int rows[4] = {2, 3, 2, 1}, segment[4] = {0, 1, 0, 2};
  SlotGather<float> gathers[4];
  for (int g = 0; g < 4; ++g) {
    out[g] = static_cast<float*>(take(sizeof(float) * rows[g] * D));
    gathers[g] = {out[g], device_data, segment[g], rows[g], D};
  }
  ops->load_step(layout, device_slots, device_counters, gathers, 4);
  const int32_t* slot = slots.data() + 2 * ints;
  int offset[4] = {0, 2, 5, 6};
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> got(counts[s]);
    backend->download(got.data(), copies[s], got.size() * sizeof(int32_t));
    for (int j = 0; j < counts[s]; ++j) EXPECT_EQ(got[j], slot[offset[s] + j]) << "segment " << s;
  }
  for (int g = 0; g < 4; ++g) {
    std::vector<float> got(size_t(rows[g]) * D);
    backend->download(got.data(), out[g], got.size() * sizeof(float));
    for (int r = 0; r < rows[g]; ++r)
      for (int c = 0; c < D; ++c)
        EXPECT_EQ(got[size_t(r) * D + c], float(10 * slot[offset[segment[g]] + r] + c))
            << "gather " << g << " row " << r;
  }
  // Means of two vectors (and two left empty) into row 2 of a 3-row table.
  const std::vector<float> a = {1, 2, 3, 6}, b = {-4};
  float* device_a = static_cast<float*>(take(sizeof(float) * a.size()));
  float* device_b = static_cast<float*>(take(sizeof(float) * b.size()));
  backend->upload(device_a, a.data(), sizeof(float) * a.size());
  backend->upload(device_b, b.data(), sizeof(float) * b.size());
  double* table = static_cast<double*>(take(sizeof(double) * 3 * kMetricWidth));
  const std::vector<double> poison(3 * kMetricWidth, -1.0);
  backend->upload(table, poison.data(), poison.size() * sizeof(double));
  MeanSet<float> means;
  means.values[0] = device_a;
  means.count[0] = 4;
  means.values[2] = device_b;
  means.count[2] = 1;
  ops->finish_step(table, means, device_counters);
  std::vector<double> got(3 * kMetricWidth);
  backend->download(got.data(), table, got.size() * sizeof(double));
  EXPECT_EQ(got[2 * kMetricWidth + 0], 3.0);
  EXPECT_EQ(got[2 * kMetricWidth + 1], 0.0);
  EXPECT_EQ(got[2 * kMetricWidth + 2], -4.0);
  EXPECT_EQ(got[2 * kMetricWidth + 3], 0.0);
  EXPECT_EQ(got[1 * kMetricWidth], -1.0) << "another step's row was written";
  DeviceCounters after;
  backend->download(&after, device_counters, sizeof(after));
  EXPECT_EQ(after.step, 43u);
  EXPECT_EQ(after.t, 6);
  EXPECT_EQ(after.first_step, 40u);
}

TEST_F(CudaBackend, SampledNoiseIsTheCpuNoise) {
  // The ε buffer itself: v − μ over σ would lose digits, so read both plans' v and compare
  // the draws through the op with μ = 0, log σ² = 0 (v = ε).
  auto cpu = make_cpu_backend<float>(1);
  auto gpu = device_backend();
  const int B = 37, d = 5;
  float* mulv = static_cast<float*>(gpu->allocate(sizeof(float) * B * 2 * d));
  float* v = static_cast<float*>(gpu->allocate(sizeof(float) * B * d));
  float* eps = static_cast<float*>(gpu->allocate(sizeof(float) * B * d));
  float* kl = static_cast<float*>(gpu->allocate(sizeof(float) * B));
  std::vector<float> zeros(size_t(B) * 2 * d, 0.0f), cv(size_t(B) * d), ce(size_t(B) * d), ck(B);
  gpu->upload(mulv, zeros.data(), zeros.size() * sizeof(float));
  for (uint64_t step : {0ull, 1ull, 123456789ull}) {
    gpu->sample_kl_forward(v, eps, kl, mulv, B, d, 99, step, 11);
    cpu->sample_kl_forward(cv.data(), ce.data(), ck.data(), zeros.data(), B, d, 99, step, 11);
    const std::vector<double> ge = host_copy(*gpu, eps, size_t(B) * d),
                              gv = host_copy(*gpu, v, size_t(B) * d);
    const std::vector<double> re(ce.begin(), ce.end());
    EXPECT_LE(nmse(re, ge), 1e-12) << "step " << step;
    EXPECT_LE(nmse(re, gv), 1e-12) << "step " << step;
  }
  for (void* p : {static_cast<void*>(mulv), static_cast<void*>(v), static_cast<void*>(eps),
                  static_cast<void*>(kl)})
    gpu->release(p);
}

// n steps from first_step: eager on the CPU, as graph replays on the device in windows of
// the given sizes (the graph is captured in the first window and replayed in the later ones).
void compare_graph_steps(const EquiVaeConfig& config, const Dataset& data,
                         const Dataset* unlabelled, uint64_t first_step,
                         const std::vector<int>& windows,
                         const CudaBackendOptions& options = strict_options(),
                         GemmTuning* tuning = nullptr,
                         std::array<size_t, DeviceStepOps<float>::kGraphSlots>* replays = nullptr) {
  Pair p(config, options);
  ASSERT_TRUE(p.gpu->device_steps_supported());
  EXPECT_FALSE(p.cpu->device_steps_supported());
  BalancedBatchSampler sampler(data.labels, 10, config.k, config.m_max, config.seed);
  std::unique_ptr<UnlabelledSampler> unl;
  if (unlabelled)
    unl = std::make_unique<UnlabelledSampler>(unlabelled->n, config.unlabelled, 10, config.k,
                                              config.m_max, config.seed);
  p.gpu->upload_datasets(data, unlabelled);
  uint64_t step = first_step;
  for (int n : windows) {
    std::vector<Batch> batches(n);
    std::vector<StepMetrics> ref;
    for (int i = 0; i < n; ++i) {
      sampler.sample(step + i, batches[i]);
      if (unl) unl->sample(step + i, batches[i]);
      ref.push_back(p.cpu->train_step(batches[i], data, step + i, unlabelled));
    }
    const std::vector<StepMetrics> got = p.gpu->train_steps(batches, step);
    ASSERT_EQ(got.size(), size_t(n));
    for (int i = 0; i < n; ++i)
      expect_metrics(ref[i], got[i], "graph step " + std::to_string(step + i));
    step += n;
  }
  EXPECT_EQ(p.gpu->adam_steps(), p.cpu->adam_steps());
  if (tuning) *tuning = p.gpu->gemm_tuning();
  if (replays) {
    auto& ops = dynamic_cast<DeviceStepOps<float>&>(*p.gpu_backend);
    for (int slot = 0; slot < DeviceStepOps<float>::kGraphSlots; ++slot)
      (*replays)[size_t(slot)] = ops.replays(slot);
  }
  const double e = nmse(p.cpu_params(), p.gpu_params());
  std::printf("[ info ] %zu windows, %llu graph steps: weight NMSE vs the CPU %.3g\n",
              windows.size(), (unsigned long long)(step - first_step), e);
  EXPECT_LE(e, 1e-9) << "weights after the graph steps";
  // The eager path still works after the graph and agrees (same weights, same step).
  Batch batch;
  sampler.sample(step, batch);
  if (unl) unl->sample(step, batch);
  expect_metrics(p.cpu->train_step(batch, data, step, unlabelled),
                 p.gpu->train_step(batch, data, step, unlabelled), "eager step after the graph");
}

TEST_F(CudaBackend, SupervisedGraphStepsMatchEagerCpuSteps) {
  compare_graph_steps(tiny_config(), digits(), nullptr, 17, {3, 2});
}

TEST_F(CudaBackend, SemiSupervisedGraphStepsMatchEagerCpuSteps) {
  compare_graph_steps(tiny_semi_config(), semi_split().labelled, &semi_split().unlabelled, 4,
                      {2, 1});
}

TEST_F(CudaBackend, GraphWindowLargerThanTheFirstRecapturesAndStillMatches) {
  // A bigger window moves the slot table: the graph must be captured again.
  compare_graph_steps(tiny_config(), digits(), nullptr, 0, {1, 3});
}

// Several steps per graph: a window replays the graph of steps_per_graph steps as often as it
// fits and the one-step graph for the rest, each step reading its own slot and counters, so
// the steps are the CPU's eager ones in order; windows smaller than a group take the one-step
// graph alone, a larger window moves the slot table and both graphs are captured again.
TEST_F(CudaBackend, SeveralStepsPerGraphMatchEagerCpuSteps) {
  using Ops = DeviceStepOps<float>;
  struct Case {
    int per_graph;
    std::vector<int> windows;
    size_t groups, singles;  // replays of each graph the windows take
  };
  for (const Case& c : {Case{2, {5, 1, 7}, 2 + 0 + 3, 1 + 1 + 1},
                        Case{3, {2, 6, 4}, 0 + 2 + 1, 2 + 0 + 1}, Case{1, {3, 2}, 0, 5}}) {
    SCOPED_TRACE("steps per graph " + std::to_string(c.per_graph));
    CudaBackendOptions options = strict_options();
    options.steps_per_graph = c.per_graph;
    std::array<size_t, Ops::kGraphSlots> replays{};
    compare_graph_steps(tiny_config(), digits(), nullptr, 7, c.windows, options, nullptr, &replays);
    EXPECT_EQ(replays[Ops::kStepsGraph], c.groups);
    EXPECT_EQ(replays[Ops::kOneStepGraph], c.singles);
  }
  // Semi-supervised with early Adam (side-stream updates inside every step of the group) and
  // autotuning (both graphs captured again after the first tuning). The conv model's graph
  // steps take it too (ConvModelGraphStepsMatchEagerCpuSteps). From step 4, as
  // SemiSupervisedGraphStepsMatchEagerCpuSteps: from step 3 the sanitizer build's rounding
  // (Debug flags) moves some weights apart through Adam's first updates, ±lr for a near-zero
  // gradient whatever its size (weight NMSE 7e-8 there, with these options and without them;
  // 2e-12 to 4e-12 from step 4).
  CudaBackendOptions semi = strict_options();
  semi.steps_per_graph = 2;
  semi.early_adam = semi.autotune = true;
  compare_graph_steps(tiny_semi_config(), semi_split().labelled, &semi_split().unlabelled, 4,
                      {3, 2}, semi);
}

TEST_F(CudaBackend, StepsPerGraphOutsideItsRangeIsRefused) {
  for (int bad : {0, -1, CudaBackendOptions::kMaxStepsPerGraph + 1}) {
    CudaBackendOptions options = strict_options();
    options.steps_per_graph = bad;
    try {
      device_backend(options);
      ADD_FAILURE() << "steps per graph " << bad << " was taken";
    } catch (const Error& e) {
      EXPECT_NE(
          std::string(e.what()).find("steps per graph must be 1 to 64, got " + std::to_string(bad)),
          std::string::npos)
          << e.what();
    }
  }
}

// The routes a benchmark may pick give the same step and the same graph steps: cuBLASLt for
// the backward too (with or without split-K), cuBLAS backward without split-K in the forward,
// the bias gradient fused with the ReLU mask on the main stream, the forward without cuBLASLt
// epilogues (cuBLAS + the bias/ReLU kernel), the ReLU backward fused into the input-gradient
// GEMMs (masks kept by the forward; DRELU_BGRAD, or DRELU with the bias gradient after it), with
// the bias gradients on either stream,
// the encoder's W_x·x in order on the main stream, each network's Adam update beside the
// rest of the backward (graph steps), and the engine's kernels launched programmatically
// (on a GPU of compute capability 9.0+ each may start before the one before it ends, and
// waits for it in its prologue; under the emulator nothing changes).
// Under the emulator cuBLASLt is lt_gemm_emulated.h (host GEMMs, the epilogues of
// gemm_epilogue.h; the backward's GEMMs too on the lt-backward routes) and the cuBLAS GEMMs run
// in OpenBLAS.
TEST_F(CudaBackend, EveryGemmRouteMatchesTheCpuBackend) {
  const EquiVaeConfig config = tiny_config();
  const Batch batch = supervised_batch(config, digits(), 5);
  const std::vector<std::pair<const char*, CudaBackendOptions>> routes = {
      {"lt backward", {.strict_fp32 = true, .lt_backward = true}},
      {"lt backward, no split-K", {.strict_fp32 = true, .lt_backward = true, .split_k = false}},
      {"no split-K", {.strict_fp32 = true, .split_k = false}},
      {"lt backward, split-K in place",
       {.strict_fp32 = true, .lt_backward = true, .split_k_in_place = true}},
      {"bias gradient on the main stream", {.strict_fp32 = true, .side_bias_gradient = false}},
      {"no cuBLASLt epilogues", {.strict_fp32 = true, .cublaslt_epilogues = false}},
      {"fused ReLU backward", {.strict_fp32 = true, .fused_relu_backward = true}},
      {"fused ReLU backward, bias gradient on the main stream",
       {.strict_fp32 = true, .fused_relu_backward = true, .side_bias_gradient = false}},
      {"fused ReLU backward, the mask alone (DRELU), bias gradient beside",
       {.strict_fp32 = true, .fused_relu_backward = true, .drelu_alone = true}},
      {"fused ReLU backward, the mask alone (DRELU), bias gradient on the main stream",
       {.strict_fp32 = true,
        .fused_relu_backward = true,
        .drelu_alone = true,
        .side_bias_gradient = false}},
      {"fused ReLU backward without cuBLASLt (masks unused)",
       {.strict_fp32 = true, .cublaslt_epilogues = false, .fused_relu_backward = true}},
      {"encoder's W_x·x on the main stream", {.strict_fp32 = true, .partial_beside = false}},
      {"early Adam", {.strict_fp32 = true, .early_adam = true}},
      {"fused ReLU backward, early Adam",
       {.strict_fp32 = true, .fused_relu_backward = true, .early_adam = true}},
      {"no programmatic launch", {.strict_fp32 = true, .programmatic_launch = false}},
      {"no programmatic launch, fused ReLU backward, early Adam",
       {.strict_fp32 = true,
        .fused_relu_backward = true,
        .early_adam = true,
        .programmatic_launch = false}},
  };
  for (const auto& [name, options] : routes) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(options.strict_fp32) << "the tolerances assume strict FP32 GEMMs";
    compare_one_step(config, batch, digits(), nullptr, 5, 1e-7, options);
    compare_graph_steps(config, digits(), nullptr, 9, {2, 2}, options);
  }
}

#if !defined(EQUIVAE_TEST_REAL_CUDA)
// With fused ReLU backward the forward keeps each ReLU's mask in cuBLASLt's layout, and the
// layer above's input-gradient GEMM reads it rather than the layer's output: a mask cleared by
// hand zeroes that gradient and the bias gradient of the layer below, whatever y says. (Under
// the emulator cuBLASLt always has an algorithm; on a GPU that has none for DRELU_BGRAD the
// backward reads y instead, so this check is the emulator's.)
void expect_the_backward_reads_the_kept_mask(bool drelu_alone) {
  auto be = device_backend(
      {.strict_fp32 = true, .fused_relu_backward = true, .drelu_alone = drelu_alone});
  const int B = 6, in = 5, hidden = 7, out = 3;
  ASSERT_EQ(be->relu_mask_bytes(B, hidden), size_t(128 / 8 * B));
  auto take = [&](const std::vector<float>& host) { return device_copy(*be, host); };
  const TwoDenseLayers layers(*be, B, in, hidden, out, std::vector<float>(hidden, 0.1f));
  const std::vector<float>&hW1 = layers.hW1, &hdy = layers.hdy;
  float *h = layers.h, *W1 = layers.W1, *y = layers.y;
  void* mask = layers.mask;
  std::vector<float> hh(size_t(B) * hidden);
  be->download(hh.data(), h, hh.size() * sizeof(float));
  std::vector<uint8_t> bits(be->relu_mask_bytes(B, hidden));
  be->download(bits.data(), mask, bits.size());
  int positive = 0;
  for (int m = 0; m < B; ++m)
    for (int n = 0; n < hidden; ++n) {
      const size_t k = size_t(n) + size_t(m) * 128;
      EXPECT_EQ((bits[k / 8] >> (k % 8)) & 1, hh[size_t(m) * hidden + n] > 0 ? 1 : 0);
      positive += hh[size_t(m) * hidden + n] > 0;
    }
  ASSERT_GT(positive, 0) << "a mask of zeros would not show which one the backward read";
  auto backward = [&](std::vector<float>& dh_out, std::vector<float>& db0_out) {
    float *dy = take(hdy), *dh = take(std::vector<float>(size_t(B) * hidden, 9.f)),
          *dW1 = take(std::vector<float>(size_t(hidden) * out)), *db1 = take({0, 0, 0}),
          *db0 = take(std::vector<float>(hidden, 9.f));
    be->dense_backward(dh, dW1, db1, dy, h, W1, y, B, hidden, out, false, false,
                       InputRelu<float>{db0, mask});
    dh_out.resize(size_t(B) * hidden);
    db0_out.resize(hidden);
    be->download(dh_out.data(), dh, dh_out.size() * sizeof(float));
    be->download(db0_out.data(), db0, db0_out.size() * sizeof(float));
  };
  std::vector<float> dh, db0;
  backward(dh, db0);
  std::vector<float> expected_dh(size_t(B) * hidden), expected_db0(hidden);
  cpu::dense_backward<float>(expected_dh.data(), std::vector<float>(size_t(hidden) * out).data(),
                             std::vector<float>(out).data(), std::vector<float>(hdy).data(),
                             hh.data(), hW1.data(), nullptr, B, hidden, out, false, false,
                             expected_db0.data());
  EXPECT_EQ(dh, expected_dh);
  EXPECT_EQ(db0, expected_db0);
  be->fill(static_cast<float*>(mask), 0.0f, bits.size() / sizeof(float));  // every bit clear
  backward(dh, db0);
  for (float v : dh) ASSERT_EQ(v, 0.0f) << "the input gradient did not read the cleared mask";
  for (float v : db0) ASSERT_EQ(v, 0.0f);
  auto* ops = dynamic_cast<DeviceStepOps<float>*>(be.get());
  ASSERT_NE(ops, nullptr);
  EXPECT_EQ(ops->fused_relu().masks_kept, 1);
  EXPECT_EQ(ops->fused_relu().masks_read, 1);
}

TEST_F(CudaBackend, FusedReluBackwardReadsTheMaskTheForwardKept) {
  // With drelu_alone the GEMM applies the mask alone and the bias gradient sums its output.
  for (const bool alone : {false, true}) {
    SCOPED_TRACE(alone ? "DRELU, the bias gradient after it" : "DRELU_BGRAD");
    expect_the_backward_reads_the_kept_mask(alone);
  }

  // A whole step: f_inv, encoder and decoder each have two dense ReLU layers under another
  // dense layer, so six masks are kept and read (by DRELU_BGRAD, or DRELU alone).
  for (const bool alone : {false, true}) {
    auto step_backend =
        device_backend({.strict_fp32 = true, .fused_relu_backward = true, .drelu_alone = alone});
    const EquiVaeConfig config = tiny_config();
    EquiVae<float> model(config, *step_backend);
    const Batch batch = supervised_batch(config, digits(), 0);
    model.train_step(batch, digits(), 0);
    auto* ops = dynamic_cast<DeviceStepOps<float>*>(step_backend.get());
    EXPECT_EQ(ops->fused_relu().masks_kept, 6);
    EXPECT_EQ(ops->fused_relu().masks_read, 6) << (alone ? "DRELU" : "DRELU_BGRAD");
  }
}
#endif

// A ReLU mask is read only by the kind of kernel that wrote it: cuBLASLt does not document the
// bit order of its RELU_AUX mask, which the small GEMM takes to be bit n + m·ld. With the small
// GEMM and fused ReLU backward, a layer 4,100 wide keeps its mask in the small GEMM's forward,
// but the layer above's input-gradient GEMM is too wide for the small GEMM's DRELU tail (4,096
// columns): it must not hand that mask to cuBLASLt's DRELU_BGRAD, and reads y instead. A
// layer 64 wide stays in the small GEMM both ways and reads its mask. Either way the input
// gradient and the bias gradient below are the CPU's, within TF32.
TEST_F(CudaBackend, ReluMaskIsReadOnlyByTheKernelKindThatWroteIt) {
  for (const int hidden : {64, 4100}) {
    SCOPED_TRACE("hidden width " + std::to_string(hidden));
    auto be = device_backend({.fused_relu_backward = true, .small_gemm = true});
    const int B = 6, in = 5, out = 3;
    const TwoDenseLayers layers(*be, B, in, hidden, out, patterned(size_t(hidden), 1, 3, 10));
    const std::vector<float>& hW1 = layers.hW1;
    float *h = layers.h, *dh = device_copy(*be, std::vector<float>(size_t(B) * hidden)),
          *db0 = device_copy(*be, std::vector<float>(size_t(hidden)));
    be->dense_backward(dh, device_copy(*be, std::vector<float>(size_t(hidden) * out)),
                       device_copy(*be, std::vector<float>(size_t(out))),
                       device_copy(*be, layers.hdy), h, layers.W1, layers.y, B, hidden, out, false,
                       false, InputRelu<float>{db0, layers.mask});
    std::vector<float> hh(size_t(B) * hidden), got_dh(hh.size()),
        got_db0(static_cast<size_t>(hidden));
    be->download(hh.data(), h, hh.size() * sizeof(float));
    be->download(got_dh.data(), dh, got_dh.size() * sizeof(float));
    be->download(got_db0.data(), db0, got_db0.size() * sizeof(float));
    auto* ops = dynamic_cast<DeviceStepOps<float>*>(be.get());
    ASSERT_NE(ops, nullptr);
    ASSERT_EQ(ops->small_gemm_outputs(), 3) << "h, y and dh: in the small GEMM";
    EXPECT_EQ(ops->fused_relu().masks_kept, 1);
    EXPECT_EQ(ops->fused_relu().masks_read, hidden > 4096 ? 0 : 1);

    // The reference from the device's h, so that only the backward's rounding differs.
    std::vector<float> dh_ref(hh.size()), db0_ref(static_cast<size_t>(hidden)), dy_ref(layers.hdy);
    int positive = 0;
    for (float v : hh) positive += v > 0;
    ASSERT_GT(positive, 0);
    ASSERT_LT(positive, int(hh.size())) << "a mask of ones would not show which one was read";
    cpu::dense_backward<float>(dh_ref.data(), std::vector<float>(size_t(hidden) * out).data(),
                               std::vector<float>(out).data(), dy_ref.data(), hh.data(), hW1.data(),
                               nullptr, B, hidden, out, false, false, db0_ref.data());
    auto expect_close = [](const std::vector<float>& got, const std::vector<float>& want,
                           const char* what) {
      float scale = 0;
      for (float v : want) scale = std::max(scale, std::fabs(v));
      ASSERT_GT(scale, 0.0f) << what;
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 4e-3f * scale) << what << " [" << i << "]";
    };
    expect_close(got_dh, dh_ref, "dh");
    expect_close(got_db0, db0_ref, "db0");
  }
}

// GEMM autotuning (with the backward in cuBLASLt, so every GEMM is tuned on a GPU): the
// first capture is timed and, where an algorithm changed, captured again; the graph steps,
// supervised and semi-supervised (with stream priorities too), still match the CPU backend. Under
// the emulator there is nothing to time, and the backend reports a change so that the capture-again
// path runs.
TEST_F(CudaBackend, AutotunedGemmsRecaptureTheStepAndMatchTheCpuBackend) {
  CudaBackendOptions options = strict_options();
  options.autotune = true;
  options.lt_backward = true;
  GemmTuning tuning;
  compare_graph_steps(tiny_config(), digits(), nullptr, 3, {2, 3}, options, &tuning);
#if defined(EQUIVAE_TEST_REAL_CUDA)
  EXPECT_GT(tuning.timed, 0) << "the step's cuBLASLt GEMMs were timed";
  EXPECT_GT(tuning.chosen_seconds, 0.0);
  EXPECT_LE(tuning.chosen_seconds, tuning.heuristic_seconds * 1.0001);
  std::printf("[ info ] %d GEMM plans timed, %d changed: %.2f µs → %.2f µs summed per call\n",
              tuning.timed, tuning.changed, tuning.heuristic_seconds * 1e6,
              tuning.chosen_seconds * 1e6);
#else
  EXPECT_EQ(tuning.timed, 0);
  EXPECT_EQ(tuning.changed, 1) << "the emulated backend reports its first tuning as a change";
#endif
  options.prioritise_critical_path = true;  // with the streams' priorities kept in the graph
  compare_graph_steps(tiny_semi_config(), semi_split().labelled, &semi_split().unlabelled, 8, {2},
                      options);
  options.autotune = false;  // off: no tuning, no second capture
  compare_graph_steps(tiny_config(), digits(), nullptr, 3, {2}, options, &tuning);
  EXPECT_EQ(tuning.timed, 0);
  EXPECT_EQ(tuning.changed, 0);
}

// The CPU trainer and the device's side by side: 2 epochs of 300 digits, k = 4 (7 steps an
// epoch), device steps in windows of `device_window`.
struct TrainedOnBoth {
  Pair p{tiny_config()};
  Dataset data = digits().slice(0, 300);
  std::vector<EpochRecord> cpu, gpu;
  explicit TrainedOnBoth(int device_window) {
    TrainOptions options = test::quiet_options(2);
    options.device_window = device_window;
    cpu = train(*p.cpu, data, nullptr, options);
    gpu = train(*p.gpu, data, nullptr, options);
  }
};

TEST_F(CudaBackend, TrainerOnTheDeviceMatchesTheCpuTrainerAndLearns) {
  TrainedOnBoth t(512);  // one window an epoch
  ASSERT_EQ(t.cpu.size(), 2u);
  ASSERT_EQ(t.gpu.size(), 2u);
  for (size_t e = 0; e < t.cpu.size(); ++e) {
    expect_close(t.cpu[e].elbo, t.gpu[e].elbo, 1e-5, "epoch " + std::to_string(e + 1) + " ELBO");
    expect_close(t.cpu[e].kl, t.gpu[e].kl, 1e-4, "epoch " + std::to_string(e + 1) + " KL");
  }
  EXPECT_GT(t.gpu[1].elbo, t.gpu[0].elbo + 5) << "two epochs on the device should raise the ELBO";
  EXPECT_LE(nmse(t.p.cpu_params(), t.p.gpu_params()), 1e-9);
  // Evaluation on the device: f_inv embeddings agree.
  const int latent = t.p.cpu->config().latent_r;
  std::vector<float> ec(size_t(50) * latent), eg(ec.size());
  t.p.cpu->embed(t.data.images.data(), 50, ec.data());
  t.p.gpu->embed(t.data.images.data(), 50, eg.data());
  EXPECT_LE(
      nmse(std::vector<double>(ec.begin(), ec.end()), std::vector<double>(eg.begin(), eg.end())),
      1e-10);
}

// Two models training in turn on one backend: each captures its step graphs into the same
// slots, so each must tell its own graph from the other's (the backend's graph_id) and capture
// again rather than replay the other model's step. Model A's parameters must end where a model
// trained alone on its own backend ends.
TEST_F(CudaBackend, TwoModelsTrainingInTurnOnOneBackendEachRunTheirOwnSteps) {
  const Dataset data = digits().slice(0, 300);
  const TrainOptions options = test::quiet_options(1);
  auto shared = device_backend(), alone_backend = device_backend();
  EquiVaeConfig other_config = tiny_config();
  other_config.seed += 1;
  EquiVae<float> a(tiny_config(), *shared), b(other_config, *shared),
      alone(tiny_config(), *alone_backend);
  train(a, data, nullptr, options);
  train(b, data, nullptr, options);
  train(a, data, nullptr, options);
  train(alone, data, nullptr, options);
  train(alone, data, nullptr, options);
  EXPECT_EQ(host_copy(*shared, a.parameters(), a.parameter_count()),
            host_copy(*alone_backend, alone.parameters(), alone.parameter_count()));
}

// The trainer's validation on the device: the training set and a validation set kept resident,
// each pass replayed as a captured graph (on a GPU: a real CUDA graph), per epoch, matching the
// CPU's errors; the replays counted; the graphs read the parameters each epoch's steps left.
TEST_F(CudaBackend, ValidationPassesReplayCapturedGraphsAndMatchTheCpu) {
  Pair p(tiny_config());
  const Dataset data = digits().slice(0, 300), validation = digits().slice(300, 400);
  TrainOptions options = test::quiet_options(3);
  const std::vector<EpochRecord> cpu = train(*p.cpu, data, &validation, options);
  const std::vector<EpochRecord> gpu = train(*p.gpu, data, &validation, options);
  ASSERT_EQ(cpu.size(), 3u);
  ASSERT_EQ(gpu.size(), 3u);
  for (size_t e = 0; e < cpu.size(); ++e)
    EXPECT_NEAR(gpu[e].validation_error, cpu[e].validation_error, 0.011)
        << "epoch " << e + 1 << " (a row or so may round to another class)";
  using Ops = DeviceStepOps<float>;
  const auto* ops = dynamic_cast<const Ops*>(p.gpu_backend.get());
  ASSERT_NE(ops, nullptr);
  size_t replays = 0;
  std::vector<uint64_t> ids;
  for (int i = 0; i < Ops::kInferenceGraphs; ++i) {
    replays += ops->replays(Ops::kFirstInferenceGraph + i);
    if (const uint64_t id = ops->graph_id(Ops::kFirstInferenceGraph + i)) ids.push_back(id);
  }
  EXPECT_EQ(replays, 6u) << "two passes (training set, validation set) an epoch";
  // Captured once each, in the first epoch, after the step's graph: captures 2 and 3 of the
  // backend (a pass captured again each epoch would hold a later one).
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<uint64_t>{2, 3}));
}

TEST_F(CudaBackend, TrainerWithSeveralWindowsPerEpochMatchesTheCpuTrainer) {
  // Windows of 3, 3 and 1 steps: each window's batches are sampled while the previous one
  // runs, across the epoch boundary too; the numbers are the CPU trainer's.
  TrainedOnBoth t(3);
  ASSERT_EQ(t.gpu.size(), 2u);
  for (size_t e = 0; e < t.cpu.size(); ++e)
    expect_close(t.cpu[e].elbo, t.gpu[e].elbo, 1e-5, "epoch " + std::to_string(e + 1) + " ELBO");
  EXPECT_EQ(t.p.gpu->adam_steps(), 14);
  EXPECT_LE(nmse(t.p.cpu_params(), t.p.gpu_params()), 1e-9);
  TrainOptions zero_window;
  zero_window.device_window = 0;
  EXPECT_THROW(train(*t.p.gpu, t.data, nullptr, zero_window), Error);
}

TEST_F(CudaBackend, AShortGraphRunLowersTheLoss) {
  EquiVaeConfig config = tiny_config();
  auto backend = device_backend();
  EquiVae<float> model(config, *backend);
  model.upload_datasets(digits());
  BalancedBatchSampler sampler(digits().labels, 10, config.k, config.m_max, config.seed);
  std::vector<Batch> batches(30);
  for (size_t i = 0; i < batches.size(); ++i) sampler.sample(i, batches[i]);
  const std::vector<StepMetrics> m = model.train_steps(batches, 0);
  auto loss = [&](size_t from, size_t to) {
    double sum = 0;
    for (size_t i = from; i < to; ++i) sum += m[i].kl - m[i].recon;
    return sum / double(to - from);
  };
  const double first = loss(0, 5), last = loss(25, 30);
  std::printf("[ info ] mean loss of steps 0-4: %.2f, of steps 25-29: %.2f\n", first, last);
  EXPECT_LT(last, first - 50) << "30 Adam steps should lower the loss";
}

// lr = 10 on the tiny model: within a few steps an update overflows Adam's v (as train_mnist
// --lr 10 does). A window of graph steps flags that step, as the CPU's eager steps do, and no
// other; its later steps update nothing, so the state is bit for bit the one a window ending
// at that step leaves — with each network's update on the side stream (early Adam) and
// several steps per graph too. The record starts afresh in the next window.
TEST_F(CudaBackend, AWindowFlagsTheStepWhoseUpdateWentNonFiniteAndKeepsItsState) {
  EquiVaeConfig config = tiny_config();
  config.lr = 10;
  constexpr size_t kWindow = 8;
  BalancedBatchSampler sampler(digits().labels, 10, config.k, config.m_max, config.seed);
  std::vector<Batch> batches(kWindow);
  for (size_t i = 0; i < kWindow; ++i) sampler.sample(i, batches[i]);
  // The CPU's first step whose update went non-finite.
  auto cpu_backend = make_cpu_backend<float>(1);
  EquiVae<float> cpu(config, *cpu_backend);
  size_t bad = kWindow;
  for (size_t i = 0; i < kWindow && bad == kWindow; ++i)
    if (!cpu.train_step(batches[i], digits(), i).update_finite) bad = i;
  ASSERT_LT(bad, kWindow - 1) << "lr = 10 should diverge within the window, before its end";

  CudaBackendOptions early = strict_options();
  early.early_adam = true;
  early.steps_per_graph = 4;
  for (const CudaBackendOptions& options : {strict_options(), early}) {
    SCOPED_TRACE(options.early_adam ? "early Adam, 4 steps per graph" : "one update per step");
    // Steps 0 .. n - 1 in one window on a fresh device plan: the flags and the state.
    auto window = [&](size_t n, std::vector<StepMetrics>& metrics) {
      auto backend = device_backend(options);
      EquiVae<float> model(config, *backend);
      model.upload_datasets(digits());
      metrics = model.train_steps({batches.begin(), batches.begin() + std::ptrdiff_t(n)}, 0);
      Checkpoint state = model.to_checkpoint();
      // The next window starts with no record: its steps run and are flagged on their own.
      const std::vector<StepMetrics> next = model.train_steps({batches[0]}, n);
      EXPECT_FALSE(next[0].update_finite) << "a non-finite state's update stays non-finite";
      return state;
    };
    std::vector<StepMetrics> whole, to_bad;
    const Checkpoint after_whole = window(kWindow, whole);
    const Checkpoint after_bad = window(bad + 1, to_bad);
    for (size_t i = 0; i < kWindow; ++i)
      EXPECT_EQ(whole[i].update_finite, i != bad) << "step " << i;
    EXPECT_FALSE(to_bad[bad].update_finite);
    ASSERT_EQ(after_whole.tensors.size(), after_bad.tensors.size());
    for (size_t t = 0; t < after_whole.tensors.size(); ++t) {
      const std::vector<float>&a = after_whole.tensors[t].data, &b = after_bad.tensors[t].data;
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
          << after_whole.tensors[t].name << ": the steps after the flagged one changed it";
    }
  }
}

// Three graph steps from `first` on the device, eager steps on the CPU: the losses follow the
// CPU's within TF32's drift, and so do the weights.
void expect_tf32_graph_steps(Pair& p, BalancedBatchSampler& sampler, uint64_t first) {
  p.gpu->upload_datasets(digits(), nullptr);
  std::vector<Batch> batches(3);
  std::vector<StepMetrics> ref;
  for (uint64_t i = 0; i < 3; ++i) {
    sampler.sample(first + i, batches[i]);
    ref.push_back(p.cpu->train_step(batches[i], digits(), first + i));
  }
  const std::vector<StepMetrics> got = p.gpu->train_steps(batches, first);
  ASSERT_EQ(got.size(), 3u);
  for (size_t i = 0; i < 3; ++i) expect_close(ref[i].recon, got[i].recon, 1e-3, "graph step");
  EXPECT_LE(nmse(p.cpu_params(), p.gpu_params()), 1e-6) << "weights after the graph steps";
}

// Step 0 eagerly on both backends of a pair whose device GEMMs may round to TF32: the losses
// within 1e-3 of the CPU's; returns the gradients' normalised MSE.
double tf32_step_gradient_nmse(Pair& p, BalancedBatchSampler& sampler) {
  Batch batch;
  sampler.sample(0, batch);
  p.cpu->load_batch(batch, digits());
  p.gpu->load_batch(batch, digits());
  const StepMetrics a = p.cpu->forward(0), b = p.gpu->forward(0);
  expect_close(a.recon, b.recon, 1e-3, "reconstruction");
  expect_close(a.kl, b.kl, 1e-3, "KL");
  p.cpu->backward();
  p.gpu->backward();
  EXPECT_EQ(non_finite(p.gpu_grads()), 0u);
  return nmse(p.cpu_grads(), p.gpu_grads());
}

TEST_F(CudaBackend, Tf32GemmsStayClose) {
  // The default (TF32 allowed on a GPU): gradients within TF32's ~1e-3 relative rounding of
  // the FP32 plan. (Under the emulator the flag changes nothing.)
  const EquiVaeConfig config = tiny_config();
  CudaBackendOptions tf32;
  tf32.strict_fp32 = false;
  Pair p(config, tf32);
  BalancedBatchSampler sampler(digits().labels, 10, config.k, config.m_max, config.seed);
  EXPECT_LE(tf32_step_gradient_nmse(p, sampler), 1e-4);
}

// The engine's tensor-core GEMM (CudaBackendOptions::small_gemm, TF32) for the forward's and
// the input gradients' GEMMs: one eager step and graph steps stay within TF32's rounding of
// the CPU backend, on the default route and with fused ReLU backward (whose masks the small
// GEMM's epilogue writes and its drelu_bgrad tail reads; programmatic launch too, which on a
// GPU lets each small GEMM start before the kernel it waits for has ended). Under the
// emulator only these GEMMs round to TF32 (the rest runs in OpenBLAS), so what differs from
// the CPU is what they compute.
TEST_F(CudaBackend, SmallGemmRouteStaysWithinTf32OfTheCpu) {
  const EquiVaeConfig config = tiny_config();
  int default_route_outputs = 0;
  // The default route; fused ReLU backward (DRELU_BGRAD tails); the same with the mask alone
  // (DRELU tails, the bias gradients after them).
  for (const int route : {0, 1, 2}) {
    const bool fused = route > 0;
    SCOPED_TRACE(route == 0   ? "default route"
                 : route == 1 ? "with fused ReLU backward"
                              : "fused, the mask alone (DRELU)");
    const CudaBackendOptions options{.fused_relu_backward = fused,
                                     .drelu_alone = route == 2,
                                     .small_gemm = true,
                                     .programmatic_launch = fused};
    Pair p(config, options);
    BalancedBatchSampler sampler(digits().labels, 10, config.k, config.m_max, config.seed);
    const double e = tf32_step_gradient_nmse(p, sampler);
    std::printf("[ info ] small GEMM route: gradient NMSE vs the CPU %.3g\n", e);
#if defined(EQUIVAE_TEST_REAL_CUDA)
    EXPECT_LE(e, 1e-4);  // every GEMM in TF32, as Tf32GemmsStayClose
#else
    EXPECT_LE(e, 1e-6);  // only the small GEMMs in TF32 (1.9e-8 and 8.6e-9 seen)
#endif
    auto* ops = dynamic_cast<DeviceStepOps<float>*>(p.gpu_backend.get());
    ASSERT_NE(ops, nullptr);
    // f_inv 3 layers, encoder 2 + the partial + its heads, decoder 3 + its partial, and the
    // input gradients: at least one output per forward layer. With fused ReLU backward the
    // input gradients that read a mask take the small GEMM too (its drelu_bgrad tail), so
    // both routes write the same outputs in it.
    const int outputs = ops->small_gemm_outputs();
    EXPECT_GE(outputs, 10) << "the route did not take the small GEMM";
    if (fused) {
      EXPECT_GT(ops->fused_relu().masks_read, 0);
      EXPECT_EQ(outputs, default_route_outputs) << "an input gradient left the small GEMM";
    }
    default_route_outputs = outputs;

    // Graph steps from here.
    p.cpu->apply_adam();
    p.gpu->apply_adam();
    expect_tf32_graph_steps(p, sampler, 1);
  }
}

// Persistent chains (CudaBackendOptions::persistent_chains): each network's consecutive dense
// forwards run as one cooperative launch of the small GEMM, a grid barrier between layers. The
// eager step and graph steps stay within TF32 of the CPU on the default route, with fused ReLU
// backward and the small GEMM (whose input gradients then read masks a chain wrote), and with
// fused ReLU backward alone (a chained layer then keeps no mask: only the small GEMM reads one);
// chains ran, and held several layers each.
TEST_F(CudaBackend, PersistentChainsStayWithinTf32OfTheCpu) {
  const EquiVaeConfig config = tiny_config();
  for (const int route : {0, 1, 2}) {
    const bool fused = route > 0, small = route == 1;
    SCOPED_TRACE(route == 0   ? "the default route"
                 : route == 1 ? "with fused ReLU backward and the small GEMM"
                              : "with fused ReLU backward alone");
    const CudaBackendOptions options{
        .fused_relu_backward = fused, .small_gemm = small, .persistent_chains = true};
    Pair p(config, options);
    BalancedBatchSampler sampler(digits().labels, 10, config.k, config.m_max, config.seed);
    const double e = tf32_step_gradient_nmse(p, sampler);
    std::printf("[ info ] persistent chains: gradient NMSE vs the CPU %.3g\n", e);
#if defined(EQUIVAE_TEST_REAL_CUDA)
    EXPECT_LE(e, 1e-4);
#else
    EXPECT_LE(e, 1e-6);  // only the chains' GEMMs in TF32
#endif
    auto* ops = dynamic_cast<DeviceStepOps<float>*>(p.gpu_backend.get());
    ASSERT_NE(ops, nullptr);
    const size_t chains = ops->persistent_chains_run();
    EXPECT_GT(chains, 0u) << "no chain ran";
    if (small) {
      EXPECT_GT(ops->fused_relu().masks_read, 0) << "no chain's mask was read";
    } else {
      EXPECT_GE(size_t(ops->small_gemm_outputs()), 2 * chains) << "chains of one layer";
      EXPECT_EQ(ops->fused_relu().masks_read, 0) << "a mask no kernel here can read was read";
    }
    p.cpu->apply_adam();
    p.gpu->apply_adam();
    expect_tf32_graph_steps(p, sampler, 1);
    EXPECT_GT(ops->persistent_chains_run(), chains) << "the graph steps ran no chain";
  }
}

// A chain still pending when its output is read back runs first: two dense layers, then a
// download (no other op between), equal the CPU's within TF32.
TEST_F(CudaBackend, APendingChainRunsBeforeADownload) {
  auto gpu = device_backend({.persistent_chains = true});
  auto cpu = make_cpu_backend<float>(1);
  constexpr int B = 40, in = 48, hidden = 72, out = 24;
  const auto values = [](size_t n, uint64_t stream) {  // uniform in [−0.5, 0.5)
    std::vector<float> v(n);
    uint64_t s = stream * 0x9E3779B97F4A7C15ull;
    for (float& f : v) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      f = float((s >> 40) & 0xFFFFFF) / float(1 << 24) - 0.5f;
    }
    return v;
  };
  const std::vector<float> x = values(size_t(B) * in, 1), W1 = values(size_t(in) * hidden, 2),
                           b1 = values(hidden, 3), W2 = values(size_t(hidden) * out, 4),
                           b2 = values(out, 5);
  std::vector<float> want(size_t(B) * out), got(want.size(), NAN);
  for (Backend<float>* be : {cpu.get(), gpu.get()}) {
    const auto put = [&](const std::vector<float>& v) {
      auto* p = static_cast<float*>(be->allocate(v.size() * sizeof(float)));
      be->upload(p, v.data(), v.size() * sizeof(float));
      return p;
    };
    float *dx = put(x), *dW1 = put(W1), *db1 = put(b1), *dW2 = put(W2), *db2 = put(b2);
    auto* h = static_cast<float*>(be->allocate(size_t(B) * hidden * sizeof(float)));
    auto* y = static_cast<float*>(be->allocate(size_t(B) * out * sizeof(float)));
    be->dense_forward(h, dx, dW1, db1, B, in, hidden, true, nullptr, false);
    be->dense_forward(y, h, dW2, db2, B, hidden, out, false, nullptr, false);
    be->download(be == cpu.get() ? want.data() : got.data(), y, want.size() * sizeof(float));
    for (float* p : {dx, dW1, db1, dW2, db2, h, y}) be->release(p);
  }
  EXPECT_LE(nmse(std::vector<double>(want.begin(), want.end()),
                 std::vector<double>(got.begin(), got.end())),
            1e-5);
  EXPECT_EQ(dynamic_cast<DeviceStepOps<float>&>(*gpu).persistent_chains_run(), 1u)
      << "the two layers did not run as one chain";
}

// Autotuned, the small GEMM is one more candidate of every cuBLASLt plan it fits (LtGemm::tune
// keeps it where it is faster). Under the emulator it takes every such plan, as if it had won,
// so the graph captured again after the tuning runs it: those steps stay within TF32 of the
// CPU, with fused ReLU backward (its DRELU tail on LtGemm's scratch). On a GPU the timing
// decides, and the steps must stay as close whichever way it went.
TEST_F(CudaBackend, AutotunedSmallGemmTakesThePlansItWins) {
  const EquiVaeConfig config = tiny_config();
  for (const bool alone : {false, true}) {  // DRELU_BGRAD tails, or DRELU ones
    SCOPED_TRACE(alone ? "the mask alone (DRELU)" : "DRELU_BGRAD");
    Pair p(
        config,
        {.fused_relu_backward = true, .drelu_alone = alone, .autotune = true, .small_gemm = true});
    BalancedBatchSampler sampler(digits().labels, 10, config.k, config.m_max, config.seed);
    expect_tf32_graph_steps(p, sampler, 0);
    auto* ops = dynamic_cast<DeviceStepOps<float>*>(p.gpu_backend.get());
    ASSERT_NE(ops, nullptr);
    std::printf("[ info ] plans the small GEMM took after tuning: %d\n", ops->small_gemm_outputs());
#if !defined(EQUIVAE_TEST_REAL_CUDA)
    EXPECT_GE(ops->small_gemm_outputs(), 10) << "the tuned route did not take the small GEMM";
#endif
  }
}

TEST_F(CudaBackend, DropoutAndFillMatchTheCpu) {
  auto cpu = make_cpu_backend<float>(1);
  auto gpu = device_backend();
  const size_t n = 3001;
  std::vector<float> x(n), y(n), mask(n), dx(n);
  for (size_t i = 0; i < n; ++i) x[i] = float(std::sin(0.37 * double(i)));
  float* dxv = static_cast<float*>(gpu->allocate(n * sizeof(float)));
  float* dyv = static_cast<float*>(gpu->allocate(n * sizeof(float)));
  float* dm = static_cast<float*>(gpu->allocate(n * sizeof(float)));
  gpu->upload(dxv, x.data(), n * sizeof(float));
  for (float rate : {0.0f, 0.3f, 1.0f}) {
    cpu->dropout_forward(y.data(), mask.data(), x.data(), n, rate, 3, 9, 2);
    gpu->dropout_forward(dyv, dm, dxv, n, rate, 3, 9, 2);
    EXPECT_EQ(host_copy(*gpu, dm, n), std::vector<double>(mask.begin(), mask.end()))
        << "rate " << rate;
    EXPECT_EQ(host_copy(*gpu, dyv, n), std::vector<double>(y.begin(), y.end())) << "rate " << rate;
    cpu->dropout_backward(dx.data(), y.data(), mask.data(), n);
    gpu->dropout_backward(dyv, dyv, dm, n);  // in place, as the contract allows
    EXPECT_EQ(host_copy(*gpu, dyv, n), std::vector<double>(dx.begin(), dx.end()))
        << "rate " << rate;
  }
  gpu->fill(dm, 2.5f, n - 1);
  const std::vector<double> filled = host_copy(*gpu, dm, n);
  for (size_t i = 0; i + 1 < n; ++i) ASSERT_EQ(filled[i], 2.5) << i;
  EXPECT_NE(filled[n - 1], 2.5) << "fill wrote past its count";
  for (float* p : {dxv, dyv, dm}) gpu->release(p);
}

TEST_F(CudaBackend, HostTrafficInsideACaptureIsRefused) {
  auto gpu = device_backend();
  auto* ops = dynamic_cast<DeviceStepOps<float>*>(gpu.get());
  ASSERT_NE(ops, nullptr);
  float* buf = static_cast<float*>(gpu->allocate(64 * sizeof(float)));
  std::vector<float> host(64, 1.0f);
  ops->begin_capture(DeviceStepOps<float>::kOneStepGraph);
  EXPECT_THROW(gpu->upload(buf, host.data(), 64 * sizeof(float)), Error);
  EXPECT_THROW(gpu->download(host.data(), buf, 64 * sizeof(float)), Error);
  EXPECT_THROW(gpu->allocate(16), Error);
  gpu->fill(buf, 4.0f, 64);  // captured, not run
  ops->end_capture();
  EXPECT_EQ(host_copy(*gpu, buf, 1)[0], 0.0) << "a captured op ran at capture time";
  ops->replay(DeviceStepOps<float>::kOneStepGraph);
  EXPECT_EQ(host_copy(*gpu, buf, 64), std::vector<double>(64, 4.0));
  gpu->release(buf);
}

// ---- convolutions and the Gaussian likelihood: the device backend's ops against the CPU
// backend's (on the emulator the convolutions' linear part is the CPU's im2col + GEMM and the
// bias/ReLU epilogues are the CUDA kernels; on a GPU cuDNN with FMA math).

// A device copy of a host vector, released with the backend's memory.
struct DeviceVector {
  Backend<float>& backend;
  float* data;
  size_t n;
  DeviceVector(Backend<float>& b, const std::vector<float>& host)
      : backend(b),
        data(static_cast<float*>(b.allocate(host.size() * sizeof(float)))),
        n(host.size()) {
    b.upload(data, host.data(), n * sizeof(float));
  }
  ~DeviceVector() { backend.release(data); }
  std::vector<double> get() const { return host_copy(backend, data, n); }
};

std::vector<float> random_floats(uint64_t stream, size_t n, double lo, double hi) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = float(lo + (hi - lo) * philox_uniform<double>(0xC0, stream, 0, uint32_t(i)));
  return v;
}

// Side-stream work still pending when a capture begins is joined before it (a join inside
// would wait on an event recorded outside the capture, which CUDA refuses), and a capture
// aborted with its fork unjoined leaves both streams fit for the next one, its work never run.
// On the emulator: the same values, in order; on a GPU: the capture rules too.
TEST_F(CudaBackend, CapturesAfterPendingAndAbortedSideStreamWork) {
  const int B = 8, in = 5, out = 3;
  const auto x = random_floats(1, size_t(B) * in, -1, 1),
             W = random_floats(2, size_t(in) * out, -0.5, 0.5),
             dy = random_floats(3, size_t(B) * out, -1, 1),
             other_dy = random_floats(4, size_t(B) * out, -1, 1),
             y = random_floats(5, size_t(B) * out, -1, 1);
  auto cpu = make_cpu_backend<float>(1);
  std::vector<float> dx(size_t(B) * in), dW(size_t(in) * out), db(out), dz = dy;
  cpu->dense_backward(dx.data(), dW.data(), db.data(), dz.data(), x.data(), W.data(), y.data(), B,
                      in, out, /*relu=*/false, /*accumulate_dx=*/false, {});

  auto gpu = device_backend();
  auto* ops = dynamic_cast<DeviceStepOps<float>*>(gpu.get());
  ASSERT_NE(ops, nullptr);
  DeviceVector gx(*gpu, x), gW(*gpu, W), gy(*gpu, y), gdy(*gpu, dy), gother(*gpu, other_dy),
      gdx(*gpu, dx), gdW(*gpu, std::vector<float>(dW.size())), gdb(*gpu, db),
      gbuf(*gpu, std::vector<float>(64));
  const auto expect_dW = [&](const char* when) {
    const std::vector<double> want(dW.begin(), dW.end()), got = gdW.get();
    EXPECT_LE(nmse(want, got), 1e-6) << "dW " << when;
  };
  constexpr int kGraph = DeviceStepOps<float>::kOneStepGraph;

  // dW = xᵀ · dy goes to the side stream, and nothing joins it before the capture begins.
  gpu->dense_backward(gdx.data, gdW.data, gdb.data, gdy.data, gx.data, gW.data, gy.data, B, in, out,
                      false, false, {});
  ops->begin_capture(kGraph);
  gpu->fill(gbuf.data, 4.0f, 64);
  ops->end_capture();
  ops->replay(kGraph);
  EXPECT_EQ(gbuf.get(), std::vector<double>(64, 4.0));
  expect_dW("from the eager backward before the capture");

  // A capture that forks the side stream (another dy into the same dW), then is aborted.
  ops->begin_capture(kGraph);
  gpu->dense_backward(gdx.data, gdW.data, gdb.data, gother.data, gx.data, gW.data, gy.data, B, in,
                      out, false, false, {});
  ops->abort_capture();
  EXPECT_FALSE(ops->has_graph(kGraph));
  ops->begin_capture(kGraph);
  gpu->fill(gbuf.data, 5.0f, 64);
  ops->end_capture();
  ops->replay(kGraph);
  EXPECT_EQ(gbuf.get(), std::vector<double>(64, 5.0));
  expect_dW("after the aborted capture, which ran nothing");
  ops->reset_graph();
}

// Backend::allocate_host: host floats that downloads land in and uploads read from (on a GPU
// page-locked: the trainer's per-epoch state read-back), released with HostFloats; refused
// inside a capture, like every other allocation.
TEST_F(CudaBackend, HostMemoryTakesDownloadsAndUploadsAndIsPageLockedOnTheDevice) {
  auto gpu = device_backend();
  constexpr size_t n = 3000;
  const std::vector<float> values = random_floats(7, n, -2, 2);
  DeviceVector device(*gpu, std::vector<float>(n));
  {
    HostFloats<float> in(*gpu, n), out(*gpu, n);
    ASSERT_EQ(in.size(), n);
    ASSERT_NE(in.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(in.data()) % 64, 0u) << "not 64-byte aligned";
    std::copy(values.begin(), values.end(), in.data());
    gpu->upload(device.data, in.data(), n * sizeof(float));
    gpu->download(out.data(), device.data, n * sizeof(float));
    EXPECT_TRUE(std::equal(values.begin(), values.end(), out.data()));
#if defined(EQUIVAE_TEST_REAL_CUDA)
    cudaPointerAttributes attributes{};
    ASSERT_EQ(cudaPointerGetAttributes(&attributes, out.data()), cudaSuccess);
    EXPECT_EQ(attributes.type, cudaMemoryTypeHost) << "not page-locked host memory";
#endif
    HostFloats<float> moved = std::move(out);  // the block changes hands, released once
    EXPECT_EQ(out.data(), nullptr);
    EXPECT_EQ(moved.size(), n);
  }
  auto* ops = dynamic_cast<DeviceStepOps<float>*>(gpu.get());
  ASSERT_NE(ops, nullptr);
  ops->begin_capture(DeviceStepOps<float>::kOneStepGraph);
  test::expect_error([&] { HostFloats<float> during(*gpu, n); },
                     {"allocate_host inside a graph capture"});
  ops->abort_capture();
}

void compare_conv(const Conv2dShape& s, bool transposed, bool relu,
                  const CudaBackendOptions& options) {
  const std::string name = std::string(transposed ? "conv_transpose2d" : "conv2d") +
                           " N=" + std::to_string(s.N) + " " + std::to_string(s.C_in) + "x" +
                           std::to_string(s.H) + "x" + std::to_string(s.W) + " → " +
                           std::to_string(s.C_out) + (relu ? " relu" : "") +
                           (options.side_conv_filter ? ", dW on the side stream" : "") +
                           (options.conv_gemm ? ", lowered to GEMMs" : "");
  const int Ho = cpu::conv_out_h(s, transposed);
  const int Wo = cpu::conv_out_w(s, transposed);
  const size_t nx = size_t(s.N) * s.C_in * s.H * s.W, ny = size_t(s.N) * s.C_out * Ho * Wo,
               nw = size_t(s.C_in) * s.C_out * s.KH * s.KW;
  const auto x = random_floats(1, nx, -1, 1), W = random_floats(2, nw, -0.3, 0.3),
             b = random_floats(3, s.C_out, -0.5, 0.5), dy = random_floats(4, ny, -1, 1);

  auto cpu = make_cpu_backend<float>(1);
  const size_t cpu_bytes =
      transposed ? cpu->conv_transpose2d_workspace_bytes(s) : cpu->conv2d_workspace_bytes(s);
  std::vector<float> cws(cpu_bytes / sizeof(float) + 1), y(ny), dx(nx), dW(nw), db(s.C_out),
      dz = dy;
  auto gpu = device_backend(options);
  const size_t bytes =
      transposed ? gpu->conv_transpose2d_workspace_bytes(s) : gpu->conv2d_workspace_bytes(s);
  DeviceVector gx(*gpu, x), gW(*gpu, W), gb(*gpu, b), gy(*gpu, y), gdy(*gpu, dy), gdx(*gpu, dx),
      gdW(*gpu, dW), gdb(*gpu, db), gws(*gpu, std::vector<float>(bytes / sizeof(float) + 1));
  if (transposed) {
    cpu->conv_transpose2d_forward(y.data(), x.data(), W.data(), b.data(), s, relu, cws.data(),
                                  cpu_bytes);
    cpu->conv_transpose2d_backward(dx.data(), dW.data(), db.data(), dz.data(), x.data(), W.data(),
                                   y.data(), s, relu, cws.data(), cpu_bytes);
    gpu->conv_transpose2d_forward(gy.data, gx.data, gW.data, gb.data, s, relu, gws.data, bytes);
    gpu->conv_transpose2d_backward(gdx.data, gdW.data, gdb.data, gdy.data, gx.data, gW.data,
                                   gy.data, s, relu, gws.data, bytes);
  } else {
    cpu->conv2d_forward(y.data(), x.data(), W.data(), b.data(), s, relu, cws.data(), cpu_bytes);
    cpu->conv2d_backward(dx.data(), dW.data(), db.data(), dz.data(), x.data(), W.data(), y.data(),
                         s, relu, cws.data(), cpu_bytes);
    gpu->conv2d_forward(gy.data, gx.data, gW.data, gb.data, s, relu, gws.data, bytes);
    gpu->conv2d_backward(gdx.data, gdW.data, gdb.data, gdy.data, gx.data, gW.data, gy.data, s, relu,
                         gws.data, bytes);
  }
  auto expect_same = [&](const std::vector<float>& ref, const DeviceVector& got,
                         const std::string& what) {
    const std::vector<double> r(ref.begin(), ref.end()), g = got.get();
    EXPECT_EQ(non_finite(g), 0u) << name << " " << what;
    EXPECT_LE(nmse(r, g), 1e-8) << name << " " << what;
  };
  expect_same(y, gy, "y");
  expect_same(dz, gdy, "dy masked by the ReLU");
  expect_same(dx, gdx, "dx");
  expect_same(dW, gdW, "dW");
  expect_same(db, gdb, "db");

  // Captured as a graph and replayed: the same output (cuDNN's calls and the lowering's are
  // capturable).
  auto* ops = dynamic_cast<DeviceStepOps<float>*>(gpu.get());
  ASSERT_NE(ops, nullptr);
  gpu->fill(gy.data, 0.0f, ny);
  ops->begin_capture(DeviceStepOps<float>::kOneStepGraph);
  if (transposed)
    gpu->conv_transpose2d_forward(gy.data, gx.data, gW.data, gb.data, s, relu, gws.data, bytes);
  else
    gpu->conv2d_forward(gy.data, gx.data, gW.data, gb.data, s, relu, gws.data, bytes);
  ops->end_capture();
  ops->replay(DeviceStepOps<float>::kOneStepGraph);
  expect_same(y, gy, "y from a replayed graph");
  ops->reset_graph();
}

TEST_F(CudaBackend, ConvolutionsMatchTheCpuBackend) {
  // The SVHN geometry (k = 4, s = 2, p = 1) at a small batch, odd sizes with output padding;
  // the weight gradient on the main stream, then on the side stream.
  // Each also lowered to GEMMs (conv_gemm), in order and with dW on the side stream.
  CudaBackendOptions side = in_order_options();
  side.side_conv_filter = true;
  CudaBackendOptions lowered = in_order_options(), lowered_side = side;
  lowered.conv_gemm = lowered_side.conv_gemm = true;
  // And the bias gradient with the mask on the main stream (by default it goes beside).
  CudaBackendOptions bias_in_order = in_order_options();
  bias_in_order.side_bias_gradient = false;
  // And autotuned: each call on cuDNN or lowered as timed (the emulator's split: the forward and
  // the weight gradient lowered, the input gradient on cuDNN's stand-in).
  CudaBackendOptions autotuned = side;
  autotuned.autotune = true;
  for (const CudaBackendOptions& options :
       {in_order_options(), side, lowered, lowered_side, bias_in_order, autotuned}) {
    compare_conv({3, 3, 16, 16, 8, 4, 4, 2, 1, 0}, false, true, options);
    compare_conv({2, 5, 7, 9, 4, 3, 4, 2, 1, 0}, false, false, options);
    compare_conv({3, 8, 4, 4, 6, 4, 4, 2, 1, 0}, true, true, options);
    compare_conv({2, 4, 5, 3, 3, 3, 3, 2, 1, 1}, true, false, options);
    // The decoder's last layer in small (3 channels of 32 × 32): the bias gradient in slices.
    compare_conv({10, 4, 16, 16, 3, 4, 4, 2, 1, 0}, true, false, options);
  }
}

// With the weight gradient on the side stream a convolution asks for a second workspace, the
// side stream's, and refuses the main stream's alone.
TEST_F(CudaBackend, SideStreamConvolutionFilterHasItsOwnWorkspace) {
  const Conv2dShape s{2, 3, 8, 8, 4, 4, 4, 2, 1, 0};
  CudaBackendOptions side = in_order_options();
  side.side_conv_filter = true;
  auto one = device_backend(in_order_options()), two = device_backend(side);
  for (const bool transposed : {false, true}) {
    const size_t main =
        transposed ? one->conv_transpose2d_workspace_bytes(s) : one->conv2d_workspace_bytes(s);
    const size_t both =
        transposed ? two->conv_transpose2d_workspace_bytes(s) : two->conv2d_workspace_bytes(s);
    EXPECT_GE(both, 2 * main) << (transposed ? "conv_transpose2d" : "conv2d");
    if (main == 0) continue;  // cuDNN may need none
    const int Ho = cpu::conv_out_h(s, transposed), Wo = cpu::conv_out_w(s, transposed);
    DeviceVector x(*two, std::vector<float>(size_t(s.N) * s.C_in * s.H * s.W)),
        W(*two, std::vector<float>(size_t(s.C_in) * s.C_out * s.KH * s.KW)),
        y(*two, std::vector<float>(size_t(s.N) * s.C_out * Ho * Wo)),
        dy(*two, std::vector<float>(size_t(s.N) * s.C_out * Ho * Wo)),
        dx(*two, std::vector<float>(size_t(s.N) * s.C_in * s.H * s.W)),
        dW(*two, std::vector<float>(size_t(s.C_in) * s.C_out * s.KH * s.KW)),
        ws(*two, std::vector<float>(both / sizeof(float) + 1));
    if (transposed)
      EXPECT_THROW(two->conv_transpose2d_backward(dx.data, dW.data, nullptr, dy.data, x.data,
                                                  W.data, y.data, s, false, ws.data, main),
                   Error);
    else
      EXPECT_THROW(two->conv2d_backward(dx.data, dW.data, nullptr, dy.data, x.data, W.data, y.data,
                                        s, false, ws.data, main),
                   Error);
  }
}

void check_convolution_arguments(const CudaBackendOptions& options) {
  auto gpu = device_backend(options);
  const Conv2dShape s{2, 3, 8, 8, 4, 3, 3, 2, 1, 0};
  const size_t bytes = gpu->conv2d_workspace_bytes(s);
  Conv2dShape bad = s;
  bad.output_padding = 1;  // only the transpose has one
  EXPECT_THROW(gpu->conv2d_workspace_bytes(bad), Error);
  // Blocked sides are the CPU's (oneDNN's layout): this backend keeps NCHW and says so.
  Conv2dShape next{2, 4, 4, 4, 16, 3, 3, 1, 1, 0};
  EXPECT_FALSE(gpu->conv_blocked_between(s, false, next, false));
  next.x_blocked = true;
  EXPECT_THROW(gpu->conv2d_workspace_bytes(next), Error);
  std::vector<float> zeros(2 * 3 * 8 * 8, 0.0f);
  DeviceVector x(*gpu, zeros), y(*gpu, zeros), W(*gpu, std::vector<float>(4 * 3 * 9, 0.0f)),
      ws(*gpu, std::vector<float>(bytes / sizeof(float) + 1));
  EXPECT_THROW(gpu->conv2d_forward(y.data, x.data, W.data, nullptr, bad, false, ws.data, bytes),
               Error);
  if (bytes > 0) {
    EXPECT_THROW(gpu->conv2d_forward(y.data, x.data, W.data, nullptr, s, false, ws.data, bytes - 1),
                 Error);
  }
  EXPECT_NO_THROW(gpu->conv2d_forward(y.data, x.data, W.data, nullptr, s, false, ws.data, bytes));
}

TEST_F(CudaBackend, ConvolutionArgumentsAreChecked) {
  for (const bool lowered : {false, true}) {
    SCOPED_TRACE(lowered ? "lowered to GEMMs" : "cuDNN");
    CudaBackendOptions options = strict_options();
    options.conv_gemm = lowered;
    check_convolution_arguments(options);
  }
}

// Autotuned, each shape's three calls are timed on cuDNN and on the lowering once, and the
// backend says how many went to the lowering (the emulator's split: two of three); cuDNN alone
// or the lowering alone times nothing.
TEST_F(CudaBackend, AutotunedConvolutionsReportTheirRoutes) {
  const Conv2dShape a{2, 3, 8, 8, 4, 4, 4, 2, 1, 0}, b{2, 4, 4, 4, 8, 4, 4, 2, 1, 0};
  for (const bool autotune : {true, false}) {
    for (const bool conv_gemm : {false, true}) {
      CudaBackendOptions options = in_order_options();
      options.autotune = autotune;
      options.conv_gemm = conv_gemm;
      auto gpu = device_backend(options);
      auto* ops = dynamic_cast<DeviceStepOps<float>*>(gpu.get());
      ASSERT_NE(ops, nullptr);
      gpu->conv2d_workspace_bytes(a);
      gpu->conv2d_workspace_bytes(a);  // measured once
      gpu->conv_transpose2d_workspace_bytes(b);
      const auto routes = ops->convolution_routes();
      const bool timed = autotune && !conv_gemm;
      EXPECT_EQ(routes.timed, timed ? 6 : 0) << autotune << conv_gemm;
      EXPECT_EQ(routes.lowered, timed ? 4 : 0) << autotune << conv_gemm;
    }
  }
}

// The lowering's workspace holds the patches and the output in CNHW: (C_in·KH·KW + C_out)·N·Ho·Wo
// elements of the forward convolution (its own for a transpose); with a side stream's lever on,
// each stream has a part of that size (twice it, from a 256-byte boundary).
TEST_F(CudaBackend, LoweredConvolutionWorkspaceHoldsThePatches) {
  const Conv2dShape s{2, 3, 8, 8, 4, 4, 4, 2, 1, 0};
  const size_t Q = 2 * 4 * 4;   // conv2d: N·Ho·Wo
  const size_t Qt = 2 * 8 * 8;  // the transpose [2, 3, 8, 8] → [2, 4, 16, 16] runs the
                                // convolution [2, 4, 16, 16] → [2, 3, 8, 8]
  const size_t one = (3 * 16 + 4) * Q * sizeof(float), one_t = (4 * 16 + 3) * Qt * sizeof(float);
  CudaBackendOptions in_order = in_order_options(), sides = strict_options();
  in_order.conv_gemm = sides.conv_gemm = true;
  for (const CudaBackendOptions& options : {in_order, sides}) {
    const size_t parts = options.side_conv_filter || options.trunk_beside ? 2 : 1;
    auto gpu = device_backend(options);
    EXPECT_GE(gpu->conv2d_workspace_bytes(s), parts * one);
    EXPECT_LE(gpu->conv2d_workspace_bytes(s), parts * (one + 256));
    EXPECT_GE(gpu->conv_transpose2d_workspace_bytes(s), parts * one_t);
    EXPECT_LE(gpu->conv_transpose2d_workspace_bytes(s), parts * (one_t + 256));
  }
}

TEST_F(CudaBackend, GaussianLikelihoodMatchesTheCpuBackend) {
  auto cpu = make_cpu_backend<float>(1);
  auto gpu = device_backend();
  for (auto [B, C, P] : {std::tuple{37, 3, 100}, std::tuple{9, 1, 250}}) {
    const size_t n = size_t(B) * C * P;
    const auto mu = random_floats(5, n, -1, 1), x = random_floats(6, n, -1.5, 1.5),
               logvar = random_floats(7, C, -2, 2), dll = random_floats(8, B, -1, 1);
    std::vector<float> ll(B), dmu(n), dlv(C);
    cpu->gaussian_ll_forward(ll.data(), mu.data(), x.data(), logvar.data(), B, C, P);
    cpu->gaussian_ll_backward(dmu.data(), dlv.data(), dll.data(), mu.data(), x.data(),
                              logvar.data(), B, C, P);
    DeviceVector gmu(*gpu, mu), gx(*gpu, x), glv(*gpu, logvar), gdll(*gpu, dll), gll(*gpu, ll),
        gdmu(*gpu, dmu), gdlv(*gpu, dlv);
    gpu->gaussian_ll_forward(gll.data, gmu.data, gx.data, glv.data, B, C, P);
    gpu->gaussian_ll_backward(gdmu.data, gdlv.data, gdll.data, gmu.data, gx.data, glv.data, B, C,
                              P);
    const std::string name = "B=" + std::to_string(B) + " C=" + std::to_string(C);
    EXPECT_LE(nmse(std::vector<double>(ll.begin(), ll.end()), gll.get()), 1e-10) << name;
    EXPECT_LE(nmse(std::vector<double>(dmu.begin(), dmu.end()), gdmu.get()), 1e-10) << name;
    EXPECT_LE(nmse(std::vector<double>(dlv.begin(), dlv.end()), gdlv.get()), 1e-10) << name;
  }
}

// ---- the convolutional model with the Gaussian likelihood (the SVHN model, tiny): its
// convolutions are cuDNN on a GPU, the CPU's im2col + GEMM under the emulator.

const Dataset& blobs() {
  static const Dataset data = test::coloured_blobs(600, 3, 8);
  return data;
}

const LabelledSplit& blob_split() {
  static const LabelledSplit split = split_labelled(blobs(), 100, 1);
  return split;
}

TEST_F(CudaBackend, ConvModelStepMatchesTheCpuBackend) {
  const EquiVaeConfig config = test::tiny_conv_config();
  const Batch batch = supervised_batch(config, blobs(), 3);
  compare_one_step(config, batch, blobs(), nullptr, 3, 1e-7);
  // The conv model's side-stream defaults off: every convolution in order on the main stream.
  compare_one_step(config, batch, blobs(), nullptr, 3, 1e-7, in_order_options());
  // Every convolution lowered to GEMMs, with the side-stream defaults.
  CudaBackendOptions lowered = strict_options();
  lowered.conv_gemm = true;
  compare_one_step(config, batch, blobs(), nullptr, 3, 1e-7, lowered);
}

TEST_F(CudaBackend, ConvModelSemiSupervisedStepMatchesTheCpuBackend) {
  const EquiVaeConfig config = test::tiny_conv_semi_config();
  const LabelledSplit& split = blob_split();
  const Batch batch = semi_batch(config, split, 1);
  // By default the encoder's trunk runs beside f_inv (eager: the same ops, forked and joined);
  // off, in order on the main stream.
  compare_one_step(config, batch, split.labelled, &split.unlabelled, 1, 1e-7);
  compare_one_step(config, batch, split.labelled, &split.unlabelled, 1, 1e-7, in_order_options());
}

// A beside stretch takes convolutions and pooling only, and only where the option is on.
TEST_F(CudaBackend, BesideStretchTakesConvolutionsAndPoolingOnly) {
  auto off = device_backend({.strict_fp32 = true, .trunk_beside = false});
  auto* off_ops = dynamic_cast<DeviceStepOps<float>*>(off.get());
  ASSERT_NE(off_ops, nullptr);
  EXPECT_FALSE(off_ops->begin_beside()) << "trunk_beside is off";
  auto be = device_backend({.strict_fp32 = true, .trunk_beside = true});
  auto* ops = dynamic_cast<DeviceStepOps<float>*>(be.get());
  ASSERT_NE(ops, nullptr);
  float* a = static_cast<float*>(be->allocate(64 * sizeof(float)));
  ASSERT_TRUE(ops->begin_beside());
  EXPECT_THROW(ops->begin_beside(), Error) << "one stretch at a time";
  EXPECT_THROW(be->dense_forward(a, a, a, a, 2, 2, 2, false, nullptr, false), Error);
  EXPECT_THROW(be->fill(a, 0.0f, 4), Error);
  ops->end_beside();
  EXPECT_NO_THROW(be->fill(a, 0.0f, 4));
  be->release(a);
}

TEST_F(CudaBackend, ConvModelGraphStepsMatchEagerCpuSteps) {
  compare_graph_steps(test::tiny_conv_config(), blobs(), nullptr, 5, {2, 1});
  compare_graph_steps(test::tiny_conv_semi_config(), blob_split().labelled,
                      &blob_split().unlabelled, 2, {2});
  // Without the side-stream defaults (convolutions' weight gradients and the encoder's trunk).
  compare_graph_steps(test::tiny_conv_config(), blobs(), nullptr, 5, {2, 1}, in_order_options());
  compare_graph_steps(test::tiny_conv_semi_config(), blob_split().labelled,
                      &blob_split().unlabelled, 2, {2}, in_order_options());
  // With autotuning: cuDNN's algorithms timed (cudnnFind*) when the plan is made, each
  // convolution call then on cuDNN or lowered to GEMMs as timed (the emulator's fixed split runs
  // both), the GEMMs' after the first capture.
  CudaBackendOptions options = strict_options();
  options.autotune = true;
  compare_graph_steps(test::tiny_conv_config(), blobs(), nullptr, 5, {2, 1}, options);
  // Fused ReLU backward where dense layers follow the convolutions (a conv layer below a dense
  // one keeps its own mask step), semi-supervised: the classifier's dense stack too; with the
  // defaults, and with every convolution in order and no programmatic launch (a GPU below
  // compute capability 9.0 has none).
  CudaBackendOptions fused = strict_options();
  fused.fused_relu_backward = true;
  compare_graph_steps(test::tiny_conv_semi_config(), blob_split().labelled,
                      &blob_split().unlabelled, 2, {2}, fused);
  fused = in_order_options();
  fused.fused_relu_backward = true;
  fused.programmatic_launch = false;
  compare_graph_steps(test::tiny_conv_semi_config(), blob_split().labelled,
                      &blob_split().unlabelled, 2, {2}, fused);
  // Early Adam with every convolution in order: the classifier's, the decoder's, the
  // log-variance's and the encoder's with its trunk each updated beside the backward still to
  // come, f_inv's at the end (with the side streams: below).
  CudaBackendOptions early = in_order_options();
  early.early_adam = true;
  compare_graph_steps(test::tiny_conv_semi_config(), blob_split().labelled,
                      &blob_split().unlabelled, 2, {2}, early);
  // Each convolution's weight gradient on the side stream: alone (joined by Adam), and with
  // early Adam (each network's update queued behind its weight gradients on that stream).
  compare_graph_steps(test::tiny_conv_config(), blobs(), nullptr, 5, {2, 1},
                      {.strict_fp32 = true, .side_conv_filter = true, .trunk_beside = false});
  compare_graph_steps(
      test::tiny_conv_semi_config(), blob_split().labelled, &blob_split().unlabelled, 2, {2},
      {.strict_fp32 = true, .side_conv_filter = true, .trunk_beside = false, .early_adam = true});
  // The encoder's trunk beside f_inv: alone; with the encoder's W_x·x in order on the main
  // stream (which must join the trunk first); and with the weight gradients on the side stream
  // and early Adam (the trunk's update after its weight gradients, in side-stream order).
  compare_graph_steps(test::tiny_conv_config(), blobs(), nullptr, 5, {2, 1},
                      {.strict_fp32 = true, .side_conv_filter = false, .trunk_beside = true});
  compare_graph_steps(test::tiny_conv_semi_config(), blob_split().labelled,
                      &blob_split().unlabelled, 2, {2},
                      {.strict_fp32 = true,
                       .partial_beside = false,
                       .side_conv_filter = false,
                       .trunk_beside = true});
  compare_graph_steps(
      test::tiny_conv_semi_config(), blob_split().labelled, &blob_split().unlabelled, 2, {2},
      {.strict_fp32 = true, .side_conv_filter = true, .trunk_beside = true, .early_adam = true});
  // Every convolution lowered to GEMMs: in order, and with every side-stream lever and early
  // Adam (the lowering's workspace split per stream as cuDNN's is).
  CudaBackendOptions lowered = in_order_options();
  lowered.conv_gemm = true;
  compare_graph_steps(test::tiny_conv_config(), blobs(), nullptr, 5, {2, 1}, lowered);
  compare_graph_steps(test::tiny_conv_semi_config(), blob_split().labelled,
                      &blob_split().unlabelled, 2, {2},
                      {.strict_fp32 = true,
                       .side_conv_filter = true,
                       .trunk_beside = true,
                       .conv_gemm = true,
                       .early_adam = true});
  // Every side-stream lever, two steps per graph: one group and one single step.
  compare_graph_steps(test::tiny_conv_semi_config(), blob_split().labelled,
                      &blob_split().unlabelled, 2, {3},
                      {.strict_fp32 = true,
                       .side_conv_filter = true,
                       .trunk_beside = true,
                       .early_adam = true,
                       .steps_per_graph = 2});
}

TEST_F(CudaBackend, ConvModelInferenceMatchesTheCpuBackend) {
  // embed (f_inv), encode_v (trunk + head), decode (transposes, μ clamped), classify (q(y|x)),
  // over more images than one chunk so that a partial chunk runs too.
  const EquiVaeConfig config = test::tiny_conv_semi_config();
  Pair p(config);
  const Dataset& data = blobs();
  const int n = 130, dr = config.latent_r, dv = config.latent_v, D = config.input_dim;
  auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    return nmse(std::vector<double>(a.begin(), a.end()), std::vector<double>(b.begin(), b.end()));
  };
  std::vector<float> ec(size_t(n) * dr), eg(ec.size()), vc(size_t(n) * dv), vg(vc.size()),
      xc(size_t(n) * D), xg(xc.size());
  p.cpu->embed(data.images.data(), n, ec.data());
  p.gpu->embed(data.images.data(), n, eg.data());
  EXPECT_LE(same(ec, eg), 1e-10) << "f_inv";
  p.cpu->encode_v(data.images.data(), ec.data(), n, vc.data());
  p.gpu->encode_v(data.images.data(), ec.data(), n, vg.data());
  EXPECT_LE(same(vc, vg), 1e-10) << "mean of q(v|r,x)";
  p.cpu->decode(ec.data(), vc.data(), n, xc.data());
  p.gpu->decode(ec.data(), vc.data(), n, xg.data());
  EXPECT_LE(same(xc, xg), 1e-10) << "decoded means";
  for (float x : xg) ASSERT_TRUE(x >= 0 && x <= 1) << "decoded means lie in [0, 1]";
  std::vector<int32_t> lc(n), lg(n);
  p.cpu->classify(data.images.data(), n, lc.data());
  p.gpu->classify(data.images.data(), n, lg.data());
  EXPECT_EQ(lc, lg);
}

TEST_F(CudaBackend, DoublePlanRunsEagerButNotOnTheDevice) {
#if defined(EQUIVAE_TEST_REAL_CUDA)
  auto gpu = make_cuda_backend<double>();
#else
  auto gpu = make_emulated_cuda_backend<double>();
#endif
  auto cpu = make_cpu_backend<double>(1);
  const EquiVaeConfig config = tiny_config();
  EquiVae<double> a(config, *cpu), b(config, *gpu);
  EXPECT_FALSE(b.device_steps_supported());
  EXPECT_THROW(b.upload_datasets(digits()), Error);
  const Batch batch = supervised_batch(config, digits(), 1);
  const StepMetrics ma = a.train_step(batch, digits(), 1), mb = b.train_step(batch, digits(), 1);
  EXPECT_NEAR(mb.recon, ma.recon, 1e-9 * std::fabs(ma.recon));
  EXPECT_NEAR(mb.kl, ma.kl, 1e-9 * std::fabs(ma.kl) + 1e-12);
}

}  // namespace
}  // namespace equivae
