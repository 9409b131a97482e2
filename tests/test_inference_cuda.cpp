// The inference API the figures and tools use (embed, encode_v, decode) on the CUDA backend
// against the CPU backend, same weights. Built twice, as test_cuda_backend is:
// test_inference_cuda runs the backend on the CUDA-on-CPU emulator everywhere;
// test_inference_cuda_gpu (EQUIVAE_TEST_REAL_CUDA, where nvcc was found) runs the real one
// and skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "model/equivae.h"
#include "model/idx_dataset.h"
#include "runtime/backend.h"
#include "tests/fixtures.h"

#if !defined(EQUIVAE_TEST_REAL_CUDA)
#include "runtime/cuda/cuda_backend.h"
#endif

namespace equivae {
namespace {

std::unique_ptr<Backend<float>> device_backend() {
  CudaBackendOptions options;
  options.strict_fp32 = true;
#if defined(EQUIVAE_TEST_REAL_CUDA)
  return make_cuda_backend<float>(options);
#else
  return make_emulated_cuda_backend<float>(options);
#endif
}

double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst;
}

class InferenceOnCuda : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
#if defined(EQUIVAE_TEST_REAL_CUDA)
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: the GPU tests need one";
#endif
  }
};

TEST_P(InferenceOnCuda, EmbedEncodeAndDecodeMatchTheCpuBackend) {
  const EquiVaeConfig c = GetParam() ? test::tiny_semi_config() : test::tiny_config();
  auto cpu = make_cpu_backend<float>(1);
  auto gpu = device_backend();
  EquiVae<float> on_cpu(c, *cpu), on_gpu(c, *gpu);          // same seed: the same initial weights
  const Dataset data = test::bundled_digits(c.rows() + 9);  // two chunks, one partial
  const int64_t n = data.n;

  std::vector<float> r_cpu(size_t(n) * c.latent_r), r_gpu(r_cpu.size());
  on_cpu.embed(data.images.data(), n, r_cpu.data());
  on_gpu.embed(data.images.data(), n, r_gpu.data());
  EXPECT_LT(max_abs_difference(r_cpu, r_gpu), 1e-5);

  std::vector<float> v_cpu(size_t(n) * c.latent_v), v_gpu(v_cpu.size());
  on_cpu.encode_v(data.images.data(), r_cpu.data(), n, v_cpu.data());
  on_gpu.encode_v(data.images.data(), r_cpu.data(), n, v_gpu.data());
  EXPECT_LT(max_abs_difference(v_cpu, v_gpu), 1e-5);

  std::vector<float> x_cpu(size_t(n) * c.input_dim), x_gpu(x_cpu.size());
  on_cpu.decode(r_cpu.data(), v_cpu.data(), n, x_cpu.data());
  on_gpu.decode(r_cpu.data(), v_cpu.data(), n, x_gpu.data());
  EXPECT_LT(max_abs_difference(x_cpu, x_gpu), 1e-5);
  double spread = 0;
  for (float p : x_cpu) spread = std::max(spread, std::fabs(double(p) - 0.5));
  EXPECT_GT(spread, 1e-3) << "decoded pixels are not all 1/2";
}

INSTANTIATE_TEST_SUITE_P(SupervisedAndSemiSupervised, InferenceOnCuda, ::testing::Bool());

}  // namespace
}  // namespace equivae
