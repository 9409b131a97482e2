// Google Benchmark on a CUDA GPU: the training step of the reference architecture (B = 160)
// on the CUDA backend, as graph replays (the engine's path: data set on the device, one graph
// launch per step, metrics read back once per window) and eager (one launch per op, the batch
// uploaded and the metrics read back every step), supervised and semi-supervised; the SVHN
// model's step (conv trunks on cuDNN, Gaussian likelihood, B = 160) on made-up 3×32×32 images,
// as graph replays and eager; and the step's ops one by one at its shapes. Without a GPU (or in a
// build without the CUDA backend) every benchmark reports "no CUDA device" and the program exits 0.
//
//   build/bench/bench_cuda_step [--benchmark_filter=Graph] [--benchmark_min_time=1]
//   EQUIVAE_BENCH_STRICT_FP32=1: FP32 GEMMs (default TF32)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "bench/gpu_bench.h"
#include "bench/made_up_images.h"
#include "kernels/cpu/ops.h"
#include "kernels/philox.h"
#include "model/equivae.h"
#include "model/idx_dataset.h"
#include "model/sampler.h"
#include "model/subsets.h"
#include "runtime/backend.h"
#include "runtime/cuda/device_step.h"
#include "runtime/host_floats.h"

#ifdef EQUIVAE_BENCH_CUBLAS
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

namespace {

using namespace equivae;
using equivae::bench::skip_without_gpu;

constexpr int kWindow = 100;  // graph steps per train_steps call

const Dataset& digits() {
  static const Dataset data = load_idx(EQUIVAE_SOURCE_DIR "/data/mnist10k-images-idx3-ubyte.gz",
                                       EQUIVAE_SOURCE_DIR "/data/mnist10k-labels-idx1-ubyte.gz")
                                  .slice(0, 8000);
  return data;
}

// The digits repeated `copies` times: large batches (k = 1024 per class) need every class to
// hold k items, and the bundled 8,000 hold ~800 each. Timing only: rows repeat.
const Dataset& tiled_digits(int copies) {
  static Dataset data;
  if (data.n != digits().n * copies) {
    data = digits();
    data.images.reserve(data.images.size() * size_t(copies));
    for (int c = 1; c < copies; ++c) {
      data.images.insert(data.images.end(), digits().images.begin(), digits().images.end());
      data.labels.insert(data.labels.end(), digits().labels.begin(), digits().labels.end());
    }
    data.n = digits().n * copies;
  }
  return data;
}

std::unique_ptr<Backend<float>> gpu_backend(CudaBackendOptions options = {}) {
  const char* strict = std::getenv("EQUIVAE_BENCH_STRICT_FP32");
  options.strict_fp32 = strict && *strict && *strict != '0';
  return make_cuda_backend<float>(options);
}

// The levers that are not defaults, together (BM_GraphStepGemmRoute/24): the small GEMM with
// its DRELU tail and early Adam, beside the defaults (programmatic launch and, for the conv
// model, the convolutions' weight gradients and the encoder's trunk on the side stream).
CudaBackendOptions with_new_levers() {
  CudaBackendOptions o;
  o.fused_relu_backward = o.small_gemm = o.early_adam = true;
  o.programmatic_launch = o.side_conv_filter = o.trunk_beside = true;
  return o;
}
// A benchmark's "levers" argument: 0 the defaults; 1 with_new_levers; 2 the defaults before
// programmatic launch and the convolutions' side-stream work became defaults (2026-11-27),
// timed beside 0 in one run; 3 (the conv model) 2 with the weight gradients on the side stream;
// 4 (the conv model) the defaults with every convolution lowered to GEMMs (conv_gemm); 5 the
// defaults with programmatic launch only for grids of at most two waves of 132 SMs.
CudaBackendOptions levers_options(int64_t which) {
  CudaBackendOptions o = which == 1 ? with_new_levers() : CudaBackendOptions{};
  if (which == 4) o.conv_gemm = true;
  if (which == 5) o.programmatic_max_blocks = 2 * 132;
  if (which == 2 || which == 3) {
    o.programmatic_launch = o.trunk_beside = false;
    o.side_conv_filter = which == 3;
  }
  return o;
}
std::string levers_label(int64_t which) {
  switch (which) {
    case 1:
      return " small GEMM, fused ReLU backward, early Adam";
    case 2:
      return " previous defaults: no programmatic launch, convolutions in order";
    case 3:
      return " no programmatic launch, side-stream conv dW, trunk in order";
    case 4:
      return " convolutions lowered to GEMMs";
    case 5:
      return " programmatic launch for grids of at most 264 blocks";
    default:
      return "";
  }
}
// kWindow (100) is a multiple of 10: every step of a timed window runs in a group.
CudaBackendOptions with_steps_per_graph(CudaBackendOptions o, int steps) {
  o.steps_per_graph = steps;
  return o;
}
CudaBackendOptions autotuned(CudaBackendOptions o) {
  o.autotune = true;
  return o;
}
CudaBackendOptions with_drelu_alone(CudaBackendOptions o) {
  o.drelu_alone = true;
  return o;
}
CudaBackendOptions with_persistent_chains(CudaBackendOptions o) {
  o.persistent_chains = true;
  return o;
}

void synchronize(Backend<float>& backend) {
  if (auto* ops = dynamic_cast<DeviceStepOps<float>*>(&backend)) ops->synchronize();
}

EquiVaeConfig semi_config() {  // the paper's semi-supervised MNIST setting
  EquiVaeConfig c;
  c.latent_r = c.latent_v = 8;
  c.m_max = 4;
  c.unlabelled = 100;
  return c;
}

// The supervised reference architecture's 9 dense layers (in, out); each costs 3 GEMMs a step.
const std::vector<std::pair<int, int>> kLayers = {{784, 512}, {512, 512}, {512, 16},
                                                  {800, 512}, {512, 512}, {512, 32},
                                                  {32, 512},  {512, 512}, {512, 784}};
double gemm_flops(int B) {
  double flops = 0;
  for (auto [in, out] : kLayers) flops += 6.0 * B * in * out;
  return flops;
}

void per_step_counters(benchmark::State& state, int steps_per_iteration, int examples) {
  state.counters["step"] =
      benchmark::Counter(double(steps_per_iteration) * double(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["examples/s"] = benchmark::Counter(
      double(steps_per_iteration) * double(examples) * double(state.iterations()),
      benchmark::Counter::kIsRate);
}

// Uploads the data sets, samples one window of kWindow batches, captures the step, then
// times one iteration = the window's kWindow steps as graph replays.
void time_graph_windows(benchmark::State& state, EquiVae<float>& model, const Dataset& labelled,
                        const Dataset* unlabelled) {
  const EquiVaeConfig& config = model.config();
  model.upload_datasets(labelled, unlabelled);
  BalancedBatchSampler sampler(labelled.labels, 10, config.k, config.m_max, 1);
  std::unique_ptr<UnlabelledSampler> unl;
  if (unlabelled)
    unl = std::make_unique<UnlabelledSampler>(unlabelled->n, config.unlabelled, 10, config.k,
                                              config.m_max, 1);
  std::vector<Batch> batches(kWindow);
  for (int i = 0; i < kWindow; ++i) {
    sampler.sample(uint64_t(i), batches[i]);
    if (unl) unl->sample(uint64_t(i), batches[i]);
  }
  uint64_t step = 0;
  model.train_steps(batches, step);  // capture + warm-up
  step += kWindow;
  for (auto _ : state) {
    benchmark::DoNotOptimize(model.train_steps(batches, step));
    step += kWindow;
  }
  per_step_counters(state, kWindow, config.batch() + config.unlabelled);
}

// One iteration = kWindow steps as graph replays (batches sampled beforehand: the time is the
// device's plus the window's one index upload and one metric download).
EQUIVAE_GUARDED_BENCHMARK(BM_GraphStep) {
  if (skip_without_gpu(state)) return;
  const bool semi = state.range(0) != 0;
  EquiVaeConfig config = semi ? semi_config() : EquiVaeConfig{};
  config.k = int(state.range(1));  // B = 10·k; classes smaller than k wrap around
  auto backend = gpu_backend(levers_options(state.range(2)));
  EquiVae<float> model(config, *backend);
  LabelledSplit split;
  if (semi) split = split_labelled(digits(), 3000, 1);
  const Dataset& labelled =
      semi ? split.labelled : (config.k > 512 ? tiled_digits(2 * config.k / 512) : digits());
  const Dataset* unlabelled = semi ? &split.unlabelled : nullptr;
  time_graph_windows(state, model, labelled, unlabelled);
  if (!semi)  // the step's GEMM work, to hold against BM_GemmFloor at the same B
    state.counters["GEMM FLOP/s"] =
        benchmark::Counter(gemm_flops(config.batch()) * kWindow * double(state.iterations()),
                           benchmark::Counter::kIsRate);
  state.SetLabel(backend->name() + levers_label(state.range(2)));
}
// The supervised graph step (B = 160) on each route the backend offers (CudaBackendOptions),
// to keep the fastest as the default; each route names what it changes from the defaults.
struct StepRoute {
  const char* name;
  CudaBackendOptions options;
};
const StepRoute kStepRoutes[] = {
    // cuBLASLt forward with fused bias/ReLU, cuBLAS backward, bias gradients on the side stream
    {"default", {}},
    {"lt backward", {.lt_backward = true}},
    {"lt backward, no split-K", {.lt_backward = true, .split_k = false}},
    {"no split-K forward", {.split_k = false}},
    {"bias gradient on the main stream", {.side_bias_gradient = false}},
    {"autotuned", {.autotune = true}},
    {"lt backward, autotuned", {.lt_backward = true, .autotune = true}},
    {"critical path prioritised", {.prioritise_critical_path = true}},
    {"lt backward, autotuned, critical path prioritised",
     {.lt_backward = true, .autotune = true, .prioritise_critical_path = true}},
    {"no cuBLASLt epilogues", {.cublaslt_epilogues = false}},
    {"fused ReLU backward", {.fused_relu_backward = true}},
    {"fused ReLU backward, no split-K forward", {.fused_relu_backward = true, .split_k = false}},
    {"fused ReLU backward, bias gradient on the main stream",
     {.fused_relu_backward = true, .side_bias_gradient = false}},
    {"fused ReLU backward, lt backward, autotuned",
     {.fused_relu_backward = true, .lt_backward = true, .autotune = true}},
    {"split-K in place", {.split_k_in_place = true}},
    {"lt backward, split-K in place", {.lt_backward = true, .split_k_in_place = true}},
    {"encoder's W_x·x on the main stream", {.partial_beside = false}},
    {"early Adam", {.early_adam = true}},
    {"fused ReLU backward, early Adam", {.fused_relu_backward = true, .early_adam = true}},
    {"fused ReLU backward, lt backward, early Adam, autotuned, critical path prioritised",
     {.fused_relu_backward = true,
      .lt_backward = true,
      .early_adam = true,
      .autotune = true,
      .prioritise_critical_path = true}},
    {"small GEMM", {.small_gemm = true}},
    {"small GEMM, fused ReLU backward", {.fused_relu_backward = true, .small_gemm = true}},
    {"small GEMM, fused ReLU backward, early Adam",
     {.fused_relu_backward = true, .early_adam = true, .small_gemm = true}},
    {"no programmatic launch", {.programmatic_launch = false}},
    {"small GEMM, fused ReLU backward, early Adam, programmatic launch", with_new_levers()},
    {"small GEMM where it wins (autotuned), fused ReLU backward, early Adam, programmatic "
     "launch",
     autotuned(with_new_levers())},
    {"small GEMM, fused ReLU backward, lt backward, early Adam, autotuned, critical path "
     "prioritised, programmatic launch",
     {.fused_relu_backward = true,
      .lt_backward = true,
      .early_adam = true,
      .autotune = true,
      .prioritise_critical_path = true,
      .small_gemm = true,
      .programmatic_launch = true}},
    {"10 steps per graph", {.steps_per_graph = 10}},
    {"small GEMM, fused ReLU backward, early Adam, programmatic launch, 10 steps per graph",
     with_steps_per_graph(with_new_levers(), 10)},
    // The input gradients' epilogues apply the mask alone (DRELU); the bias gradients beside.
    {"fused ReLU backward, the mask alone", {.fused_relu_backward = true, .drelu_alone = true}},
    {"small GEMM, fused ReLU backward, the mask alone, early Adam, programmatic launch",
     with_drelu_alone(with_new_levers())},
    // Each network's dense forwards as one persistent launch (a grid barrier between layers).
    {"persistent chains", {.persistent_chains = true}},
    {"persistent chains, small GEMM, fused ReLU backward, the mask alone, early Adam, "
     "programmatic launch",
     with_persistent_chains(with_drelu_alone(with_new_levers()))},
};
constexpr int kStepRouteCount = int(sizeof(kStepRoutes) / sizeof(kStepRoutes[0]));

EQUIVAE_GUARDED_BENCHMARK(BM_GraphStepGemmRoute) {
  if (skip_without_gpu(state)) return;
  const StepRoute& route = kStepRoutes[state.range(0)];
  const CudaBackendOptions& options = route.options;
  auto backend = gpu_backend(options);
  EquiVae<float> model(EquiVaeConfig{}, *backend);
  time_graph_windows(state, model, digits(), nullptr);
  const GemmTuning& tuning = model.gemm_tuning();
  if (options.autotune) {  // what the timing saw, each plan once
    state.counters["tuned plans"] = tuning.timed;
    state.counters["changed"] = tuning.changed;
    state.counters["heuristic us"] = tuning.heuristic_seconds * 1e6;
    state.counters["tuned us"] = tuning.chosen_seconds * 1e6;
  }
  if (options.fused_relu_backward) {  // which route ran: DRELU_BGRAD GEMMs, or the kernels
    const auto fused = dynamic_cast<DeviceStepOps<float>&>(*backend).fused_relu();
    state.counters["masks kept"] = fused.masks_kept;
    state.counters[options.drelu_alone ? "DRELU GEMMs" : "DRELU_BGRAD GEMMs"] = fused.masks_read;
  }
  if (options.small_gemm || options.persistent_chains)  // outputs the small GEMM wrote
    state.counters["small GEMMs"] =                     // (autotuned: plans it won)
        dynamic_cast<DeviceStepOps<float>&>(*backend).small_gemm_outputs();
  if (options.persistent_chains)  // chain launches issued (the captures' and the warm-up's)
    state.counters["chains"] =
        double(dynamic_cast<DeviceStepOps<float>&>(*backend).persistent_chains_run());
  state.SetLabel(backend->name() + " " + route.name);
}
BENCHMARK(BM_GraphStepGemmRoute)
    ->ArgName("route")
    ->DenseRange(0, kStepRouteCount - 1)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

BENCHMARK(BM_GraphStep)
    ->ArgNames({"semi", "k", "levers"})
    ->Args({0, 16, 0})
    ->Args({1, 16, 0})
    ->Args({0, 1024, 0})
    ->Args({1, 16, 1})
    ->Args({0, 1024, 1})
    ->Args({0, 16, 2})
    ->Args({1, 16, 2})
    ->Args({0, 1024, 2})
    ->Args({0, 1024, 5})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// One iteration = one eager step: batch gathered and uploaded by the host, one launch per op,
// metrics read back (a synchronisation) every step.
EQUIVAE_GUARDED_BENCHMARK(BM_EagerStep) {
  if (skip_without_gpu(state)) return;
  const EquiVaeConfig config;
  auto backend = gpu_backend();
  EquiVae<float> model(config, *backend);
  BalancedBatchSampler sampler(digits().labels, 10, config.k, config.m_max, 1);
  Batch batch;
  uint64_t step = 0;
  sampler.sample(step, batch);
  model.train_step(batch, digits(), step++);
  for (auto _ : state) {
    sampler.sample(step, batch);
    benchmark::DoNotOptimize(model.train_step(batch, digits(), step++));
  }
  synchronize(*backend);
  per_step_counters(state, 1, config.batch());
  state.SetLabel(backend->name());
}
BENCHMARK(BM_EagerStep)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The per-epoch state read-back a checkpoint is cut from (parameters, Adam's m and v: 3 ×
// ~2.0 M floats for the reference model), one iteration = one read_state: range(0) = 0 into a
// pageable std::vector (as the trainer did before), 1 into the backend's host memory
// (page-locked: HostFloats, as the trainer does now). bytes/s: the state's bytes.
EQUIVAE_GUARDED_BENCHMARK(BM_ReadState) {
  if (skip_without_gpu(state)) return;
  auto backend = gpu_backend();
  EquiVae<float> model(EquiVaeConfig{}, *backend);
  const bool pinned = state.range(0) != 0;
  std::vector<float> pageable(pinned ? 0 : model.state_size());
  HostFloats<float> host =
      pinned ? HostFloats<float>(*backend, model.state_size()) : HostFloats<float>();
  const std::span<float> into = pinned ? host.span() : std::span<float>(pageable);
  model.read_state(into);  // first touch of the pages, outside the timing
  for (auto _ : state) model.read_state(into);
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(into.size_bytes()));
  state.SetLabel(backend->name() +
                 (pinned ? " into page-locked host memory" : " into a pageable vector"));
}
BENCHMARK(BM_ReadState)
    ->ArgName("pinned")
    ->DenseRange(0, 1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// 3,200 made-up SVHN-shaped images (320 per class): timing only.
const Dataset& svhn_shaped() {
  static const Dataset data = made_up_svhn_images(3200);
  return data;
}

// The SVHN model (svhn_config(): B = 160, m_max = 10) as graph replays, one iteration = kWindow
// steps; range(0) = 1: semi-supervised with U = 100 (1,160 rows through encoder and decoder;
// the first 1,000 images labelled, the rest unlabelled); range(1) = 1: autotuned (cuDNN's
// and cuBLASLt's algorithms timed at start-up); range(2): levers_options (2: the defaults
// before 2026-11-27, every convolution in order; 3: only the weight gradients beside; 4: every
// convolution lowered to GEMMs).
EQUIVAE_GUARDED_BENCHMARK(BM_SvhnGraphStep) {
  if (skip_without_gpu(state)) return;
  const bool semi = state.range(0) != 0;
  EquiVaeConfig config = svhn_config();
  if (semi) config.unlabelled = 100;
  CudaBackendOptions options = levers_options(state.range(2));
  options.autotune = state.range(1) != 0;
  auto backend = gpu_backend(options);
  EquiVae<float> model(config, *backend);
  LabelledSplit split;
  if (semi) split = split_labelled(svhn_shaped(), 1000, 1);
  const Dataset& labelled = semi ? split.labelled : svhn_shaped();
  const Dataset* unlabelled = semi ? &split.unlabelled : nullptr;
  time_graph_windows(state, model, labelled, unlabelled);
  const auto routes = model.convolution_routes();  // autotuned: cuDNN or lowered, per call
  const std::string conv_routes = routes.timed > 0
                                      ? " (" + std::to_string(routes.lowered) + " of " +
                                            std::to_string(routes.timed) + " conv calls lowered)"
                                      : "";
  state.SetLabel(backend->name() + (options.autotune ? " autotuned" + conv_routes : "") +
                 levers_label(state.range(2)));
}
BENCHMARK(BM_SvhnGraphStep)
    ->ArgNames({"semi", "autotuned", "levers"})
    ->Args({0, 0, 0})
    ->Args({1, 0, 0})
    ->Args({0, 1, 0})
    ->Args({0, 0, 2})
    ->Args({0, 0, 3})
    ->Args({0, 0, 1})
    ->Args({1, 0, 1})
    ->Args({1, 0, 2})
    ->Args({0, 0, 4})
    ->Args({1, 0, 4})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// The SVHN model's eager step: batch uploaded by the host, one launch per op, metrics read back.
EQUIVAE_GUARDED_BENCHMARK(BM_SvhnEagerStep) {
  if (skip_without_gpu(state)) return;
  const EquiVaeConfig config = svhn_config();
  auto backend = gpu_backend();
  EquiVae<float> model(config, *backend);
  BalancedBatchSampler sampler(svhn_shaped().labels, 10, config.k, config.m_max, 1);
  Batch batch;
  uint64_t step = 0;
  sampler.sample(step, batch);
  model.train_step(batch, svhn_shaped(), step++);
  for (auto _ : state) {
    sampler.sample(step, batch);
    benchmark::DoNotOptimize(model.train_step(batch, svhn_shaped(), step++));
  }
  synchronize(*backend);
  per_step_counters(state, 1, config.batch());
  state.SetLabel(backend->name());
}
BENCHMARK(BM_SvhnEagerStep)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Every op at the step's shapes (B = 160, H = 512, D = 784; the semi-supervised and SVHN
// ops at theirs), each repeated kRepeat times per iteration and synchronised once: per-op
// device time including launch overhead, with the FLOP/s or bytes/s it reaches.
constexpr int kRepeat = 50;
struct OpBuffers {
  std::unique_ptr<Backend<float>> backend = gpu_backend();  // the defaults, or the given one
  std::vector<void*> blocks;
  float* take(size_t n, float value) {
    float* p = static_cast<float*>(backend->allocate(n * sizeof(float)));
    backend->fill(p, value, n);
    blocks.push_back(p);
    return p;
  }
  ~OpBuffers() {
    for (void* p : blocks) backend->release(p);
  }
};

EQUIVAE_GUARDED_BENCHMARK(BM_Op) {
  if (skip_without_gpu(state)) return;
  const int op = int(state.range(0));
  const int B = 160, H = 512, D = 784, d = 16;
  OpBuffers b;
  Backend<float>& be = *b.backend;
  float* x = b.take(size_t(B) * D, 0.5f);
  float* W = b.take(size_t(D) * H, 0.01f);
  float* bias = b.take(std::max(H, D), 0.1f);
  float* y = b.take(size_t(B) * std::max(H, D), 0.f);
  float* dy = b.take(size_t(B) * std::max(H, D), 0.01f);
  float* dW = b.take(size_t(D) * H, 0.f);
  float* db = b.take(std::max(H, D), 0.f);
  float* dx = b.take(size_t(B) * D, 0.f);
  float* ll = b.take(B, 0.f);
  float* dll = b.take(B, -1.f / float(B));  // the supervised step's
  float* mulv = b.take(size_t(B) * 2 * d, 0.1f);
  float* v = b.take(size_t(B) * d, 0.f);
  float* eps = b.take(size_t(B) * d, 0.f);
  const size_t params = 2'000'000;
  float* p = b.take(params, 0.01f);
  float* m = b.take(params, 0.f);
  float* vv = b.take(params, 0.f);
  float* g = b.take(params, 0.001f);
  std::vector<int32_t> offsets(B + 1), members;
  for (int i = 0; i < B; ++i) {
    offsets[i] = int32_t(members.size());
    for (int j = 1; j <= 4; ++j) members.push_back((i / 16) * 16 + (i % 16 + j) % 16);
  }
  offsets[B] = int32_t(members.size());
  auto* off = static_cast<int32_t*>(be.allocate(offsets.size() * 4));
  auto* mem = static_cast<int32_t*>(be.allocate(members.size() * 4));
  std::vector<int32_t> inverse(B + 1 + members.size());
  cpu::pool_transpose(offsets.data(), members.data(), B, B, inverse.data(), inverse.data() + B + 1);
  auto* inv = static_cast<int32_t*>(be.allocate(inverse.size() * 4));
  b.blocks.push_back(off);
  b.blocks.push_back(mem);
  b.blocks.push_back(inv);
  be.upload(off, offsets.data(), offsets.size() * 4);
  be.upload(mem, members.data(), members.size() * 4);
  be.upload(inv, inverse.data(), inverse.size() * 4);
  AdamConfig adam;
  // The semi-supervised and SVHN ops' shapes: C = 10 labels, U = 100 unlabelled items; a
  // 160 × 3×32×32 image batch; the conv trunk's middle layer 32 → 64 (16×16 → 8×8).
  const int C = 10, U = 100, P = 1024, D3 = 3 * P;
  std::vector<int32_t> label_values(B);
  for (int i = 0; i < B; ++i) label_values[i] = i % C;
  auto* labels = static_cast<int32_t*>(be.allocate(size_t(B) * 4));
  b.blocks.push_back(labels);
  be.upload(labels, label_values.data(), label_values.size() * 4);
  float* logits = b.take(size_t(B) * C, 0.2f);
  float* probs = b.take(size_t(B) * C, 0.f);
  float* per_row = b.take(size_t(U) * C, -100.f);  // per-label ELBO terms of U items
  float* prior = b.take(C, -2.3f);
  float* image = b.take(size_t(B) * D3, 0.5f);
  float* mu = b.take(size_t(B) * D3, 0.4f);
  float* dmu = b.take(size_t(B) * D3, 0.f);
  float* logvar = b.take(3, -4.6f);
  float* mask = b.take(size_t(B) * H, 0.f);
  float* dmulv = b.take(size_t(B) * 2 * d, 0.f);
  Conv2dShape conv;
  conv.N = B, conv.C_in = 32, conv.H = conv.W = 16, conv.C_out = 64, conv.KH = conv.KW = 4;
  conv.stride = 2, conv.pad = 1;
  const bool conv_op = op == 19 || op == 20;
  // The convolutions' bias gradients alone (conv2d_backward with neither dx nor dW): the
  // decoder's last layer (3 channels of 32 × 32, no ReLU), the trunk's first (32 of 16 × 16).
  Conv2dShape last_layer = conv, first_layer = conv;
  last_layer.C_in = 32, last_layer.C_out = 3, last_layer.H = last_layer.W = 32;
  first_layer.C_in = 3, first_layer.C_out = 32, first_layer.H = first_layer.W = 32;
  const size_t last_out = size_t(B) * 3 * 32 * 32, first_out = size_t(B) * 32 * 16 * 16;
  float* bias_dy = op == 21 || op == 22 ? b.take(last_out, 0.01f) : nullptr;
  float* bias_y = op == 21 || op == 22 ? b.take(last_out, 0.5f) : nullptr;
  const Conv2dShape& bias_layer = op == 21 ? last_layer : first_layer;
  const size_t bias_bytes = op == 21 || op == 22 ? be.conv2d_workspace_bytes(bias_layer) : 0;
  void* bias_ws = bias_bytes ? be.allocate(bias_bytes) : nullptr;
  if (bias_ws) b.blocks.push_back(bias_ws);
  const size_t conv_in = size_t(B) * 32 * 16 * 16, conv_out = size_t(B) * 64 * 8 * 8;
  float* conv_x = conv_op ? b.take(conv_in, 0.5f) : nullptr;
  float* conv_W = conv_op ? b.take(size_t(64) * 32 * 16, 0.01f) : nullptr;
  float* conv_y = conv_op ? b.take(conv_out, 0.f) : nullptr;
  float* conv_dy = conv_op ? b.take(conv_out, 0.01f) : nullptr;
  float* conv_dx = conv_op ? b.take(conv_in, 0.f) : nullptr;
  float* conv_dW = conv_op ? b.take(size_t(64) * 32 * 16, 0.f) : nullptr;
  const size_t conv_bytes = conv_op ? be.conv2d_workspace_bytes(conv) : 0;
  void* conv_ws = conv_bytes ? be.allocate(conv_bytes) : nullptr;
  if (conv_ws) b.blocks.push_back(conv_ws);
  auto run = [&] {
    switch (op) {
      case 0:
        be.dense_forward(y, x, W, bias, B, D, H, true, nullptr, false);
        break;
      case 1:
        be.dense_forward(y, x, W, bias, B, H, H, true, nullptr, false);
        break;
      case 2:
        be.dense_forward(y, x, W, bias, B, H, D, false, nullptr, false);
        break;
      case 3:
        be.dense_backward(dx, dW, db, dy, x, W, y, B, H, H, true, false, {});
        break;
      case 4:
        be.dense_backward(dx, dW, db, dy, x, W, y, B, H, D, false, false, {});
        break;
      case 5:
        be.bernoulli_ll_forward(ll, y, x, B, D);
        break;
      case 6:
        be.bernoulli_ll_backward(dy, ll, y, x, B, D);
        break;
      case 7:
        be.pool_forward(v, mulv, off, mem, B, d);
        break;
      case 8:
        be.pool_backward(eps, v, off, mem, inv, inv + B + 1, B, B, d);
        break;
      case 9:
        be.sample_kl_forward(v, eps, ll, mulv, B, d, 1, 2, 0);
        break;
      case 10:
        be.adam_step(p, m, vv, g, params, adam, 1, nullptr);
        break;
      case 11:
        be.sample_kl_backward(dmulv, v, ll, mulv, eps, B, d);
        break;
      case 12:
        be.softmax_xent_forward(ll, probs, logits, labels, B, C);
        break;
      case 13:
        be.softmax_xent_backward(logits, ll, probs, labels, B, C);
        break;
      case 14:
        be.expectation_forward(ll, probs, logits, per_row, per_row, prior, U, C);
        break;
      case 15:
        be.expectation_backward(logits, dy, dx, ll, probs, per_row, per_row, prior, U, C);
        break;
      case 16:
        be.gaussian_ll_forward(ll, mu, image, logvar, B, 3, P);
        break;
      case 17:
        be.gaussian_ll_backward(dmu, db, ll, mu, image, logvar, B, 3, P);
        break;
      case 18:
        be.dropout_forward(y, mask, dy, size_t(B) * H, 0.5f, 1, 2, 0);
        break;
      case 19:
        be.conv2d_forward(conv_y, conv_x, conv_W, bias, conv, true, conv_ws, conv_bytes);
        break;
      case 20:
        be.conv2d_backward(conv_dx, conv_dW, db, conv_dy, conv_x, conv_W, conv_y, conv, true,
                           conv_ws, conv_bytes);
        break;
      case 21:
        be.conv2d_backward(nullptr, nullptr, db, bias_dy, nullptr, nullptr, bias_y, last_layer,
                           false, bias_ws, bias_bytes);
        break;
      case 22:
        be.conv2d_backward(nullptr, nullptr, db, bias_dy, nullptr, nullptr, bias_y, first_layer,
                           true, bias_ws, bias_bytes);
        break;
      case 23:
        be.bernoulli_ll_forward_backward(ll, dy, dll, y, x, B, D);
        break;
    }
  };
  static const char* names[] = {"dense_fwd 784x512 relu",
                                "dense_fwd 512x512 relu",
                                "dense_fwd 512x784",
                                "dense_bwd 512x512 relu",
                                "dense_bwd 512x784",
                                "bernoulli_fwd 160x784",
                                "bernoulli_bwd 160x784",
                                "pool_fwd 160x16 m=4",
                                "pool_bwd 160x16 m=4",
                                "sample_kl_fwd 160x16",
                                "adam 2M params",
                                "sample_kl_bwd 160x16",
                                "softmax_xent_fwd 160x10",
                                "softmax_xent_bwd 160x10",
                                "expectation_fwd 100x10",
                                "expectation_bwd 100x10",
                                "gaussian_fwd 160x3x32x32",
                                "gaussian_bwd 160x3x32x32",
                                "dropout_fwd 160x512",
                                "conv2d_fwd 32->64 16x16 relu",
                                "conv2d_bwd 32->64 16x16 relu",
                                "conv bias grad 160x3x32x32",
                                "conv bias grad + ReLU mask 160x32x16x16",
                                "bernoulli_fwd_bwd 160x784"};
  run();
  synchronize(be);
  for (auto _ : state) {
    for (int r = 0; r < kRepeat; ++r) run();
    synchronize(be);
  }
  state.counters["op"] =
      benchmark::Counter(double(kRepeat) * double(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  // The work each op must do, to hold against the GPU's GEMM rate or memory bandwidth:
  // GEMM FLOPs for the dense ops (2·B·in·out per GEMM), else the fewest bytes moved (each
  // operand read once, each result written once; 4-byte floats, 4-byte indices).
  const double f = 4, BH = double(B) * H, BD = double(B) * D, UC = double(U) * C,
               BC = double(B) * C, BI = double(B) * D3;
  const double conv_flops = 2.0 * double(conv_out) * 32 * 16;  // per output: C_in·KH·KW MACs
  const double flops[] = {
      2 * BD * H, 2 * BH * H, 2 * BH * D, 4 * BH * H, 4 * BH * D, 0,          0,
      0,          0,          0,          0,          0,          0,          0,
      0,          0,          0,          0,          0,          conv_flops, 2 * conv_flops,
      0,          0,          0};
  const double bytes[] = {0,
                          0,
                          0,
                          0,
                          0,
                          f * (2 * BD + B),                     // logits, x → ll
                          f * (3 * BD + B),                     // logits, x, dll → dlogits
                          f * (4 * B * d + B * d + 5 * B + 1),  // e (gathered), sets → r
                          f * (4 * B * d + B * d + 6 * B + 2),  // dr (gathered), transpose → de
                          f * (2 * B * d + 2 * B * d + B),      // μ, log σ² → v, ε, kl
                          f * 7 * double(params),               // p, m, v, g → p, m, v
                          f * (B * d + B + 4 * B * d + 2 * B * d),  // dv, dkl, μ|lv, ε → dμ|dlv
                          f * (2 * BC + 2 * B),       // logits, labels → probs, loss
                          f * (2 * BC + 2 * B),       // probs, labels, dloss → dlogits
                          f * (3 * UC + C + UC + U),  // logits, ll, kl, prior → q, L
                          f * (4 * UC + U + 3 * UC),  // q, ll, kl, dL → 3 gradients
                          f * (2 * BI + 3 + B),       // μ, x, lv → ll
                          f * (2 * BI + B + BI + 3),  // μ, x, dll → dμ, dlv
                          f * 3 * BH,                 // x → y, mask
                          0,
                          0,
                          f * double(last_out),       // dy → db
                          f * 3 * double(first_out),  // dy, y → dz (in place), db
                          f * (3 * BD + 2 * B)};      // logits, x, dll → ll, dlogits
  const double done = double(kRepeat) * double(state.iterations());
  if (flops[op] > 0)
    state.counters["FLOP/s"] = benchmark::Counter(flops[op] * done, benchmark::Counter::kIsRate);
  else
    state.counters["bytes/s"] = benchmark::Counter(bytes[op] * done, benchmark::Counter::kIsRate);
  state.SetLabel(names[op]);
}
BENCHMARK(BM_Op)->DenseRange(0, 23)->Unit(benchmark::kMicrosecond)->UseRealTime();

// One convolution layer of the SVHN model (B = 160) alone, on cuDNN or lowered to GEMMs
// (conv_gemm): range(0) the layer — 0–2 f_inv's trunk 3 → 32 → 64 → 128 (32 × 32 → 4 × 4),
// 3–5 the decoder's transposes 128 → 64 → 32 → 3 (4 × 4 → 32 × 32), k4 s2 p1, bias, ReLU but
// the last; range(1) 0 the forward, 1 the backward (bias gradient, dW, and dx but for the
// first layer, whose input is the image); range(2) 1: lowered to GEMMs. FLOP/s counts the
// convolutions' multiply-adds (2 per MAC; the backward's two products, one for the first layer).
EQUIVAE_GUARDED_BENCHMARK(BM_ConvLayer) {
  if (skip_without_gpu(state)) return;
  struct Layer {
    int C_in, C_out, H;
    bool transposed;
  };
  static constexpr Layer kLayers[] = {{3, 32, 32, false}, {32, 64, 16, false}, {64, 128, 8, false},
                                      {128, 64, 4, true}, {64, 32, 8, true},   {32, 3, 16, true}};
  const int layer = int(state.range(0));
  const bool backward = state.range(1) != 0;
  CudaBackendOptions options;
  options.conv_gemm = state.range(2) != 0;
  OpBuffers b{gpu_backend(options), {}};
  Backend<float>& be = *b.backend;
  const Layer& l = kLayers[layer];
  Conv2dShape s;
  s.N = 160, s.C_in = l.C_in, s.H = s.W = l.H, s.C_out = l.C_out, s.KH = s.KW = 4;
  s.stride = 2, s.pad = 1;
  const bool relu = layer != 5, with_dx = layer != 0;
  const int Ho = cpu::conv_out_h(s, l.transposed), Wo = cpu::conv_out_w(s, l.transposed);
  const size_t in = size_t(s.N) * s.C_in * s.H * s.W, out = size_t(s.N) * s.C_out * Ho * Wo,
               weights = size_t(s.C_in) * s.C_out * 16;
  float *x = b.take(in, 0.5f), *W = b.take(weights, 0.01f), *bias = b.take(s.C_out, 0.1f),
        *y = b.take(out, 0.f), *dy = b.take(out, 0.01f), *dx = b.take(in, 0.f),
        *dW = b.take(weights, 0.f), *db = b.take(s.C_out, 0.f);
  const size_t bytes =
      l.transposed ? be.conv_transpose2d_workspace_bytes(s) : be.conv2d_workspace_bytes(s);
  void* ws = bytes ? be.allocate(bytes) : nullptr;
  if (ws) b.blocks.push_back(ws);
  float* gdx = with_dx ? dx : nullptr;
  auto run = [&] {
    if (l.transposed && backward)
      be.conv_transpose2d_backward(gdx, dW, db, dy, x, W, y, s, relu, ws, bytes);
    else if (l.transposed)
      be.conv_transpose2d_forward(y, x, W, bias, s, relu, ws, bytes);
    else if (backward)
      be.conv2d_backward(gdx, dW, db, dy, x, W, y, s, relu, ws, bytes);
    else
      be.conv2d_forward(y, x, W, bias, s, relu, ws, bytes);
  };
  run();
  synchronize(be);
  for (auto _ : state) {
    for (int r = 0; r < kRepeat; ++r) run();
    synchronize(be);
  }
  const double done = double(kRepeat) * double(state.iterations());
  // Multiply-adds of the forward convolution: one per (larger side's pixel, C_in, C_out, tap).
  const double macs = double(l.transposed ? in : out) * (l.transposed ? s.C_out : s.C_in) * 16;
  const double products = backward ? (with_dx ? 2 : 1) : 1;
  state.counters["op"] =
      benchmark::Counter(done, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["FLOP/s"] =
      benchmark::Counter(2 * macs * products * done, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(l.transposed ? "conv_transpose2d " : "conv2d ") +
                 std::to_string(s.C_in) + "->" + std::to_string(s.C_out) + " " +
                 std::to_string(s.H) + "x" + std::to_string(s.W) +
                 (backward ? " backward" : " forward") +
                 (options.conv_gemm ? ", lowered to GEMMs" : ", cuDNN"));
}
BENCHMARK(BM_ConvLayer)
    ->ArgNames({"layer", "backward", "lowered"})
    ->ArgsProduct({{0, 1, 2, 3, 4, 5}, {0, 1}, {0, 1}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

#ifdef EQUIVAE_BENCH_CUBLAS
// The GEMM floor: the step's 27 GEMMs (forward, dW, dX of the 9 layers) alone in cuBLAS at
// batch B, TF32 unless EQUIVAE_BENCH_STRICT_FP32 — what the step's GEMMs can reach at best.
// One iteration = kWindow rounds of 27 GEMMs, timed with events.
EQUIVAE_GUARDED_BENCHMARK(BM_GemmFloor) {
  if (skip_without_gpu(state)) return;
  const int B = int(state.range(0));
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    state.SkipWithError("cublasCreate failed");
    return;
  }
  const char* strict = std::getenv("EQUIVAE_BENCH_STRICT_FP32");
  const bool fp32 = strict && *strict && *strict != '0';
  cublasSetMathMode(handle, fp32 ? CUBLAS_DEFAULT_MATH : CUBLAS_TF32_TENSOR_OP_MATH);
  std::vector<float*> W, dW, x, y;
  auto take = [](size_t n, float value) {
    float* p = nullptr;
    if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess) return p;
    std::vector<float> host(n);
    for (size_t i = 0; i < n; ++i) host[i] = value * float(1 + int(i % 7) - 3);  // not zeros
    cudaMemcpy(p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    return p;
  };
  for (auto [in, out] : kLayers) {
    W.push_back(take(size_t(in) * out, 0.01f));
    dW.push_back(take(size_t(in) * out, 0.f));
    x.push_back(take(size_t(B) * in, 0.5f));
    y.push_back(take(size_t(B) * out, 0.25f));
  }
  const float one = 1, zero = 0;
  // Row-major Y[B×out] = X[B×in]·W[in×out] read column-major is Yᵀ = Wᵀ·Xᵀ on the same buffers.
  auto round = [&] {
    for (size_t l = 0; l < kLayers.size(); ++l) {
      const auto [in, out] = kLayers[l];
      cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, out, B, in, &one, W[l], out, x[l], in, &zero,
                  y[l], out);  // Y = X·W
      cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, out, in, B, &one, y[l], out, x[l], in, &zero,
                  dW[l], out);  // dW = Xᵀ·dY
      cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, in, B, out, &one, W[l], out, y[l], out, &zero,
                  x[l], in);  // dX = dY·Wᵀ
    }
  };
  round();
  cudaDeviceSynchronize();
  equivae::bench::time_with_events(state, nullptr, kWindow, round);
  state.counters["step"] =
      benchmark::Counter(double(kWindow) * double(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["GEMM FLOP/s"] = benchmark::Counter(
      gemm_flops(B) * kWindow * double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(fp32 ? "cuBLAS FP32" : "cuBLAS TF32");
  for (auto* list : {&W, &dW, &x, &y})
    for (float* p : *list) cudaFree(p);
  cublasDestroy(handle);
}
BENCHMARK(BM_GemmFloor)->Arg(160)->Arg(10240)->Unit(benchmark::kMicrosecond)->UseManualTime();
#endif
