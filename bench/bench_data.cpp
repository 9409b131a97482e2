// Google Benchmark suite: reading the data sets, what a run does before its first step (beside
// the backend's start): the bundled digits and, where Debian's dataset-fashion-mnist is
// installed, Fashion-MNIST's 60,000 training images (gunzip, bytes to float intensities), and
// the pixel check the trainer runs on them. bytes/s: the float images made or checked.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <string>

#include "model/idx_dataset.h"

namespace {

using namespace equivae;

const std::string kFashion = "/usr/share/datasets/fashion-mnist";

// range(0) = 0: the bundled 10,000 digits; 1: Fashion-MNIST's training files.
void BM_LoadIdx(benchmark::State& state) {
  const bool fashion = state.range(0) != 0;
  const std::string images = fashion ? kFashion + "/train-images-idx3-ubyte.gz"
                                     : EQUIVAE_SOURCE_DIR "/data/mnist10k-images-idx3-ubyte.gz";
  const std::string labels = fashion ? kFashion + "/train-labels-idx1-ubyte.gz"
                                     : EQUIVAE_SOURCE_DIR "/data/mnist10k-labels-idx1-ubyte.gz";
  if (!std::filesystem::exists(images)) {
    state.SkipWithError(("no " + images + " (Debian's dataset-fashion-mnist)").c_str());
    return;
  }
  int64_t floats = 0;
  for (auto _ : state) {
    const Dataset data = load_idx(images, labels);
    floats = int64_t(data.images.size());
    benchmark::DoNotOptimize(data.images.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * floats * int64_t(sizeof(float)));
  state.SetLabel(fashion ? "Fashion-MNIST training files" : "the bundled digits");
}
BENCHMARK(BM_LoadIdx)->ArgName("fashion")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_CheckPixels(benchmark::State& state) {
  const Dataset data = load_idx(EQUIVAE_SOURCE_DIR "/data/mnist10k-images-idx3-ubyte.gz",
                                EQUIVAE_SOURCE_DIR "/data/mnist10k-labels-idx1-ubyte.gz");
  for (auto _ : state) data.check_pixels();
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(data.images.size()) *
                          int64_t(sizeof(float)));
}
BENCHMARK(BM_CheckPixels)->Unit(benchmark::kMillisecond);

}  // namespace
