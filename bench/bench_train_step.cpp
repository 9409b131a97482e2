// Google Benchmark: the whole supervised training step (batch gather, forward,
// backward, Adam) at B = 160 with the reference architecture, its phases, and the
// GEMM floor: the step's 27 GEMMs (forward, dX, dW of 9 layers) alone, in OpenBLAS or oneDNN;
// and the SVHN model's step (conv trunks, transposed-conv decoder, Gaussian likelihood,
// B = 160) on made-up 3×32×32 images, whole and by phase, and semi-supervised.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "bench/made_up_images.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "kernels/philox.h"
#include "model/equivae.h"
#include "model/idx_dataset.h"
#include "model/sampler.h"
#include "model/subsets.h"

namespace {

using namespace equivae;

const Dataset& digits() {
  static const Dataset data = load_idx(EQUIVAE_SOURCE_DIR "/data/mnist10k-images-idx3-ubyte.gz",
                                       EQUIVAE_SOURCE_DIR "/data/mnist10k-labels-idx1-ubyte.gz")
                                  .slice(0, 8000);
  return data;
}

struct StepFixture {
  EquiVaeConfig config;
  std::unique_ptr<Backend<float>> backend = make_cpu_backend<float>();
  EquiVae<float> model{config, *backend};
  BalancedBatchSampler sampler{digits().labels, config.classes, config.k, config.m_max, 1};
  Batch batch;
};

void BM_TrainStep(benchmark::State& state) {
  StepFixture f;
  uint64_t step = 0;
  for (auto _ : state) {
    f.sampler.sample(step, f.batch);
    benchmark::DoNotOptimize(f.model.train_step(f.batch, digits(), step));
    ++step;
  }
  state.counters["examples/s"] = benchmark::Counter(double(f.config.batch()) * state.iterations(),
                                                    benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TrainStep)->Unit(benchmark::kMillisecond)->UseRealTime();

// The semi-supervised step: B labelled + U unlabelled items (×10 labels through encoder head
// and decoder), `labels` of the data set's examples labelled.
void semi_supervised_step(benchmark::State& state, const EquiVaeConfig& config, const Dataset& data,
                          int labels) {
  auto backend = make_cpu_backend<float>();
  EquiVae<float> model(config, *backend);
  const LabelledSplit split = split_labelled(data, labels, 1);
  BalancedBatchSampler labelled(split.labelled.labels, 10, config.k, config.m_max, 1);
  UnlabelledSampler unlabelled(split.unlabelled.n, config.unlabelled, 10, config.k, config.m_max,
                               1);
  Batch batch;
  uint64_t step = 0;
  for (auto _ : state) {
    labelled.sample(step, batch);
    unlabelled.sample(step, batch);
    benchmark::DoNotOptimize(model.train_step(batch, split.labelled, step, &split.unlabelled));
    ++step;
  }
  state.counters["examples/s"] = benchmark::Counter(
      double(config.batch() + config.unlabelled) * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_SemiSupervisedStep(benchmark::State& state) {
  // 160 labelled + 100 unlabelled items (×10 labels: 1,160 rows through encoder and
  // decoder), 8-D latents, m_max 4: the paper's semi-supervised MNIST setting.
  EquiVaeConfig config;
  config.latent_r = config.latent_v = 8;
  config.m_max = 4;
  config.unlabelled = 100;
  semi_supervised_step(state, config, digits(), 3000);
}
BENCHMARK(BM_SemiSupervisedStep)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_StepPhases(benchmark::State& state) {
  // range(0): 0 = sample + load batch, 1 = forward, 2 = backward, 3 = Adam
  StepFixture f;
  const int phase = int(state.range(0));
  f.sampler.sample(0, f.batch);
  f.model.load_batch(f.batch, digits());
  f.model.forward(0);
  uint64_t step = 0;
  for (auto _ : state) {
    switch (phase) {
      case 0:
        f.sampler.sample(++step, f.batch);
        f.model.load_batch(f.batch, digits());
        break;
      case 1:
        f.model.forward(0);
        break;
      case 2:
        f.model.backward();
        break;
      default:
        f.model.apply_adam();
    }
  }
  state.SetLabel(phase == 0   ? "sample+load"
                 : phase == 1 ? "forward"
                 : phase == 2 ? "backward"
                              : "adam");
}
BENCHMARK(BM_StepPhases)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime();

// 1,600 made-up SVHN-shaped images (160 per class): timing only.
const Dataset& svhn_shaped() {
  static const Dataset data = made_up_svhn_images(1600);
  return data;
}

// range(0): −1 = the whole step (sample + load + forward + backward + Adam); 0..3 = one phase
// as BM_StepPhases.
void BM_SvhnTrainStep(benchmark::State& state) {
  const EquiVaeConfig config = svhn_config();
  auto backend = make_cpu_backend<float>();
  EquiVae<float> model(config, *backend);
  BalancedBatchSampler sampler(svhn_shaped().labels, 10, config.k, config.m_max, 1);
  Batch batch;
  const int phase = int(state.range(0));
  sampler.sample(0, batch);
  model.load_batch(batch, svhn_shaped());
  model.forward(0);
  uint64_t step = 0;
  for (auto _ : state) {
    switch (phase) {
      case -1:
        sampler.sample(step, batch);
        benchmark::DoNotOptimize(model.train_step(batch, svhn_shaped(), step));
        ++step;
        break;
      case 0:
        sampler.sample(++step, batch);
        model.load_batch(batch, svhn_shaped());
        break;
      case 1:
        model.forward(0);
        break;
      case 2:
        model.backward();
        break;
      default:
        model.apply_adam();
    }
  }
  if (phase == -1)
    state.counters["examples/s"] = benchmark::Counter(double(config.batch()) * state.iterations(),
                                                      benchmark::Counter::kIsRate);
  state.SetLabel(phase == -1  ? "whole step"
                 : phase == 0 ? "sample+load"
                 : phase == 1 ? "forward"
                 : phase == 2 ? "backward"
                              : "adam");
}
BENCHMARK(BM_SvhnTrainStep)->DenseRange(-1, 3)->Unit(benchmark::kMillisecond)->UseRealTime();

// Table 2's SVHN setting on made-up images: 1,000 labels, U = 100 (the decoder's transposed
// convolutions over 1,160 rows).
void BM_SvhnSemiSupervisedStep(benchmark::State& state) {
  EquiVaeConfig config = svhn_config();
  config.unlabelled = 100;
  semi_supervised_step(state, config, svhn_shaped(), 1000);
}
BENCHMARK(BM_SvhnSemiSupervisedStep)->Unit(benchmark::kMillisecond)->UseRealTime();

// The step's 27 GEMMs alone, on the route of the argument (onednn:0 OpenBLAS, onednn:1 oneDNN's
// matmul), as the dense layers call them.
void BM_GemmFloor(benchmark::State& state) {
  if (state.range(0) && !cpu::onednn_built()) return state.SkipWithError("built without oneDNN");
  cpu::set_gemm_route(state.range(0) ? cpu::GemmRoute::onednn : cpu::GemmRoute::openblas);
  // The 9 layers' (in, out) shapes; each costs 3 GEMMs per step.
  const int B = 160;
  const std::vector<std::pair<int, int>> layers = {{784, 512}, {512, 512}, {512, 16},
                                                   {800, 512}, {512, 512}, {512, 32},
                                                   {32, 512},  {512, 512}, {512, 784}};
  std::vector<std::vector<float>> W, dW, x, y;
  for (auto [in, out] : layers) {
    W.emplace_back(size_t(in) * out, 0.01f);
    dW.emplace_back(size_t(in) * out);
    x.emplace_back(size_t(B) * in, 0.5f);
    y.emplace_back(size_t(B) * out, 0.5f);
  }
  double flops = 0;
  for (auto [in, out] : layers) flops += 6.0 * B * in * out;
  for (auto _ : state) {
    for (size_t l = 0; l < layers.size(); ++l) {
      const auto [in, out] = layers[l];
      cpu::dense_gemm(CblasNoTrans, CblasNoTrans, B, out, in, x[l].data(), in, W[l].data(), out,
                      0.0f, y[l].data(), out);
      cpu::dense_gemm(CblasTrans, CblasNoTrans, in, out, B, x[l].data(), in, y[l].data(), out, 0.0f,
                      dW[l].data(), out);
      cpu::dense_gemm(CblasNoTrans, CblasTrans, B, in, out, y[l].data(), out, W[l].data(), out,
                      0.0f, x[l].data(), in);
    }
    benchmark::DoNotOptimize(x.back().data());
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(flops * state.iterations(), benchmark::Counter::kIsRate);
  cpu::set_gemm_route(cpu::GemmRoute::automatic);
}
BENCHMARK(BM_GemmFloor)
    ->ArgName("onednn")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
