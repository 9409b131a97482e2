// Google Benchmark on a CUDA GPU: the supervised step's dense layers (B = 160, the reference
// architecture's three stacks; the encoder's first layer as one GEMM over [x ; r], which the
// engine now runs as W_x·x beside f_inv plus W_r·r) as GEMM chains, each chain captured in one
// CUDA graph and replayed, on the routes the engine could take. It measures what it saves to
//   - fuse the ReLU mask and the bias gradient into the input-gradient GEMM (cuBLASLt's
//     DRELU_BGRAD epilogue, reading the bit mask the forward's RELU_AUX_BIAS wrote) instead of
//     the engine's mask kernel between GEMMs (its bias gradient runs on the side stream) — 6
//     fewer graph nodes on the backward's critical path;
//   - forbid split-K (no reduction kernel after a GEMM, fewer blocks per GEMM);
//   - run the forward's and the input gradients' GEMMs in the engine's own tensor-core GEMM
//     (kernels/cuda/small_gemm.cu, CudaBackendOptions::small_gemm), epilogue included;
// and, GEMM by GEMM (BM_GemmShape), how long each of the step's shapes takes in cuBLAS,
// cuBLASLt and the small GEMM.
// Each run also checks its route against the engine's (cuBLAS + kernels) on the same inputs:
// the counter "grad NMSE" is the normalised squared difference of every dW and db (TF32
// rounding: ~1e-7; a wrong route: ~1). Without a GPU every benchmark reports "no CUDA device".
//
//   build/bench/bench_gemm_chains [--benchmark_filter=Backward]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench/gpu_bench.h"
#include "runtime/backend.h"

#ifdef EQUIVAE_BENCH_CUBLAS
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/cuda/ops.h"
#include "runtime/cuda/lt_gemm.h"
#endif

namespace {

using namespace equivae;
using equivae::bench::skip_without_gpu;

#ifdef EQUIVAE_BENCH_CUBLAS

constexpr int kBatch = 160;
constexpr int kReplays = 100;  // graph replays per benchmark iteration

struct LayerShape {
  int in, out;
  bool relu;
};
// One stack: its layers bottom-up, and which of its input's columns need a gradient
// (dx_from = in: none; the encoder's first layer only needs r's 16 columns).
struct StackShape {
  std::vector<LayerShape> layers;
  int dx_from;
};
// Backward order: decoder, encoder, f_inv (the engine's); the forward runs them reversed.
const std::vector<StackShape> kStacks = {
    {{{32, 512, true}, {512, 512, true}, {512, 784, false}}, 0},
    {{{800, 512, true}, {512, 512, true}, {512, 32, false}}, 784},
    {{{784, 512, true}, {512, 512, true}, {512, 16, false}}, 784},
};

float* device_floats(size_t n, uint64_t seed, float scale) {
  std::vector<float> host(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : host) {  // uniform in (−scale, scale): never zeros (METHOD: zeros hide bugs)
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    v = scale * (float((s >> 40) & 0xFFFFFF) / float(1 << 23) - 1.0f);
  }
  float* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess) return nullptr;
  cudaMemcpy(p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  return p;
}

// A cuBLAS handle on `stream` with its own workspace, TF32 tensor cores allowed (the engine's
// default math).
cublasHandle_t tf32_cublas(cudaStream_t stream, void* workspace, size_t workspace_bytes) {
  cublasHandle_t handle = nullptr;
  cublasCreate(&handle);
  cublasSetStream(handle, stream);
  cublasSetWorkspace(handle, workspace, workspace_bytes);
  cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH);
  return handle;
}

// Row-major C = op(A)·op(B) + β·C in cuBLAS: column-major Cᵀ = op(B)ᵀ·op(A)ᵀ (gemm_shape.h).
bool cublas_gemm(cublasHandle_t handle, const Gemm& g, const float* A, const float* B, float* C) {
  const float one = 1, beta = float(g.beta);
  return cublasSgemm(handle, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                     g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g.N, g.M, g.K, &one, B, g.ldb, A, g.lda,
                     &beta, C, g.ldc) == CUBLAS_STATUS_SUCCESS;
}

struct Layer {
  LayerShape shape;
  float *W = nullptr, *b = nullptr, *y = nullptr, *dy = nullptr, *dW = nullptr, *db = nullptr;
  void* aux = nullptr;  // ReLU bit mask of y (RELU_AUX_BIAS), aux_ld bits per row of the batch
  int64_t aux_ld = 0;   // out rounded up to 128
};
struct Stack {
  std::vector<Layer> layers;
  float *x, *dx;  // the stack's input [B, in0] and its input gradient [B, in0 − dx_from]
  int dx_from;
};

// Everything a chain reads and writes, on the device.
class Chains {
 public:
  enum class Route { cublas, lt, lt_fused, lt_fused_no_split_k, small };

  Chains() {
    cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking);
    cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming);
    cudaEventCreateWithFlags(&join_, cudaEventDisableTiming);
    cudaMalloc(&workspace_, kWorkspace);
    cudaMalloc(&side_workspace_, kWorkspace);
    cudaMalloc(&scratch_, kScratch * sizeof(float));
    cublas_ = tf32_cublas(stream_, workspace_, kWorkspace);
    side_cublas_ = tf32_cublas(side_, side_workspace_, kWorkspace);
    uint64_t seed = 1;
    for (const StackShape& shape : kStacks) {
      Stack s;
      s.dx_from = shape.dx_from;
      const int in0 = shape.layers.front().in;
      s.x = device_floats(size_t(kBatch) * in0, seed++, 1.f);
      s.dx = device_floats(size_t(kBatch) * std::max(1, in0 - shape.dx_from), seed++, 1.f);
      for (const LayerShape& l : shape.layers) {
        Layer layer{l};
        const size_t wn = size_t(l.in) * l.out, yn = size_t(kBatch) * l.out;
        layer.W = device_floats(wn, seed++, 1.f / std::sqrt(float(l.in)));
        layer.b = device_floats(l.out, seed++, 0.1f);
        layer.y = device_floats(yn, seed++, 1.f);
        layer.dy = device_floats(yn, seed++, 1.f / kBatch);  // the top layer's is the seed
        layer.dW = device_floats(wn, seed++, 1.f);
        layer.db = device_floats(l.out, seed++, 1.f);
        layer.aux_ld = lt_relu_mask_ld(l.out);
        cudaMalloc(&layer.aux, lt_relu_mask_bytes(kBatch, l.out));
        s.layers.push_back(layer);
      }
      stacks_.push_back(s);
    }
  }
  ~Chains() {
    cudaDeviceSynchronize();
    for (Stack& s : stacks_) {
      cudaFree(s.x);
      cudaFree(s.dx);
      for (Layer& l : s.layers)
        for (void* p :
             {static_cast<void*>(l.W), static_cast<void*>(l.b), static_cast<void*>(l.y),
              static_cast<void*>(l.dy), static_cast<void*>(l.dW), static_cast<void*>(l.db), l.aux})
          cudaFree(p);
    }
    for (void* p : {static_cast<void*>(chain_steps_[0]), static_cast<void*>(chain_steps_[1]),
                    static_cast<void*>(chain_barrier_)})
      cudaFree(p);
    lt_.clear();
    cublasDestroy(cublas_);
    cublasDestroy(side_cublas_);
    for (void* p : {workspace_, side_workspace_, static_cast<void*>(scratch_)}) cudaFree(p);
    cudaEventDestroy(fork_);
    cudaEventDestroy(join_);
    cudaStreamDestroy(side_);
    cudaStreamDestroy(stream_);
  }

  cudaStream_t stream() const { return stream_; }

  // The three stacks' forward: y = act(x·W + b), the bit masks too when `aux`, in cuBLASLt or
  // (`small`) the engine's small GEMM. False when cuBLASLt has no algorithm for a layer.
  bool forward(bool aux, bool split_k, bool small = false) {
    LtGemm& lt = lt_for(split_k, false);
    for (auto s = stacks_.rbegin(); s != stacks_.rend(); ++s)
      for (size_t i = 0; i < s->layers.size(); ++i) {
        Layer& l = s->layers[i];
        const float* x = i == 0 ? s->x : s->layers[i - 1].y;
        LtEpilogue e{GemmEpilogue::bias, l.b};
        if (l.shape.relu) {
          e.kind = aux ? GemmEpilogue::relu_aux_bias : GemmEpilogue::relu_bias;
          if (aux) {
            e.aux = l.aux;
            e.aux_ld = l.aux_ld;
          }
        }
        const LayerShape& d = l.shape;
        if (small) {
          const cuda::GemmTail tail = !d.relu ? cuda::GemmTail::bias
                                      : aux   ? cuda::GemmTail::relu_mask_bias
                                              : cuda::GemmTail::relu_bias;
          cuda::small_gemm_tf32(x, l.W, l.y, kBatch, d.out, d.in, d.in, d.out, d.out, false, 0.0f,
                                {tail, l.b, static_cast<uint8_t*>(l.aux), l.aux_ld}, stream_,
                                small_split_.split());
          continue;
        }
        if (!lt.run({false, false, kBatch, d.out, d.in, d.in, d.out, d.out, 0.0}, x, l.W, l.y, e,
                    stream_))
          return false;
      }
    return true;
  }

  // The same forward as one persistent chain of split small GEMMs (cuda::small_gemm_chain: one
  // cooperative launch, a grid barrier between layers, on every block the GPU holds). The
  // steps go to the device on the first call, which must come before a capture.
  void forward_persistent(bool aux) {
    if (!chain_steps_[aux]) {
      std::vector<cuda::SmallGemmStep> steps;
      const cuda::SmallGemmSplit split = small_split_.split();
      for (auto s = stacks_.rbegin(); s != stacks_.rend(); ++s)
        for (size_t i = 0; i < s->layers.size(); ++i) {
          const Layer& l = s->layers[i];
          const LayerShape& d = l.shape;
          cuda::SmallGemmStep step;
          step.A = i == 0 ? s->x : s->layers[i - 1].y;
          step.B = l.W, step.C = l.y;
          step.M = kBatch, step.N = d.out, step.K = d.in;
          step.lda = d.in, step.ldb = d.out, step.ldc = d.out;
          step.tail = {!d.relu ? cuda::GemmTail::bias
                       : aux   ? cuda::GemmTail::relu_mask_bias
                               : cuda::GemmTail::relu_bias,
                       l.b, static_cast<uint8_t*>(l.aux), l.aux_ld};
          step.splits = cuda::small_gemm_splits(kBatch, d.out, d.in, split);
          steps.push_back(step);
        }
      chain_count_ = int(steps.size());
      cudaMalloc(&chain_steps_[aux], steps.size() * sizeof(steps[0]));
      cudaMemcpy(chain_steps_[aux], steps.data(), steps.size() * sizeof(steps[0]),
                 cudaMemcpyHostToDevice);
      if (!chain_barrier_) {
        cudaMalloc(&chain_barrier_, 2 * sizeof(unsigned));
        cudaMemset(chain_barrier_, 0, 2 * sizeof(unsigned));
      }
    }
    cuda::small_gemm_chain(chain_steps_[aux], chain_count_, false, small_split_.split(),
                           {chain_barrier_, chain_barrier_ + 1}, cuda::small_gemm_chain_blocks(),
                           stream_);
  }

  // The three stacks' backward on a route; false (with `failed` naming the GEMM) when
  // cuBLASLt has no algorithm for one of its GEMMs. The fused routes read the bit masks of the
  // last forward(aux = true).
  bool backward(Route route, std::string& failed) {
    const bool lt = route != Route::cublas && route != Route::small;
    const bool fused = route == Route::lt_fused || route == Route::lt_fused_no_split_k;
    const bool split_k = route != Route::lt_fused_no_split_k;
    for (Stack& s : stacks_) {
      for (int i = int(s.layers.size()) - 1; i >= 0; --i) {
        Layer& l = s.layers[size_t(i)];
        const LayerShape& d = l.shape;
        const float* x = i == 0 ? s.x : s.layers[size_t(i) - 1].y;
        // As the engine: dy → dz by the ReLU mask on the critical path, then db and dW on the
        // side stream — unless the GEMM above already wrote dz and db (fused).
        const bool done_above = fused && i < int(s.layers.size()) - 1;
        if (d.relu && !done_above)
          cuda::relu_mask(l.dy, l.y, size_t(kBatch) * size_t(d.out), stream_);
        cudaEventRecord(fork_, stream_);
        cudaStreamWaitEvent(side_, fork_, 0);
        if (!done_above)
          cuda::dense_backward_bias(l.dy, l.db, l.y, kBatch, d.out, false, scratch_, kScratch,
                                    side_);
        const Gemm dW{true, false, d.in, d.out, kBatch, d.in, d.out, d.out, 0.0};
        if (!gemm(lt, split_k, true, dW, x, l.dy, l.dW, LtEpilogue{})) {
          failed = "dW " + std::to_string(d.in) + "x" + std::to_string(d.out);
          return false;
        }
        const int from = i == 0 ? s.dx_from : 0, width = d.in - from;
        if (width <= 0) continue;
        float* dx = i == 0 ? s.dx : s.layers[size_t(i) - 1].dy;
        const Gemm g{false, true, kBatch, width, d.out, d.out, d.out, width, 0.0};
        LtEpilogue e;
        if (fused && i > 0 && s.layers[size_t(i) - 1].shape.relu) {
          const Layer& below = s.layers[size_t(i) - 1];
          e = {GemmEpilogue::drelu_bgrad, below.db, below.aux, below.aux_ld};
        }
        if (route == Route::small) {  // the input gradient in the small GEMM, the rest as cuBLAS
          cuda::small_gemm_tf32(l.dy, l.W + size_t(from) * d.out, dx, kBatch, width, d.out, d.out,
                                d.out, width, true, 0.0f, {}, stream_, small_split_.split());
          continue;
        }
        if (!gemm(lt, split_k, false, g, l.dy, l.W + size_t(from) * d.out, dx, e)) {
          failed = std::string(e.kind == GemmEpilogue::none ? "dX " : "DRELU_BGRAD dX ") +
                   std::to_string(d.out) + "->" + std::to_string(width);
          return false;
        }
      }
    }
    cudaEventRecord(join_, side_);
    cudaStreamWaitEvent(stream_, join_, 0);
    return true;
  }

  // Every layer's y, downloaded.
  std::vector<float> outputs() {
    cudaDeviceSynchronize();
    std::vector<float> all;
    for (Stack& s : stacks_)
      for (Layer& l : s.layers) {
        const size_t at = all.size(), n = size_t(kBatch) * size_t(l.shape.out);
        all.resize(at + n);
        cudaMemcpy(all.data() + at, l.y, n * sizeof(float), cudaMemcpyDeviceToHost);
      }
    return all;
  }

  // Every dW and db, downloaded.
  std::vector<float> gradients() {
    cudaDeviceSynchronize();
    std::vector<float> all;
    for (Stack& s : stacks_)
      for (Layer& l : s.layers)
        for (auto [p, n] : {std::pair{l.dW, size_t(l.shape.in) * l.shape.out},
                            std::pair{l.db, size_t(l.shape.out)}}) {
          const size_t at = all.size();
          all.resize(at + n);
          cudaMemcpy(all.data() + at, p, n * sizeof(float), cudaMemcpyDeviceToHost);
        }
    return all;
  }

 private:
  static constexpr size_t kWorkspace = size_t(32) << 20;
  static constexpr size_t kScratch = size_t(64) * 4096;

  LtGemm& lt_for(bool split_k, bool side) {
    const int key = int(split_k) * 2 + int(side);
    auto found = lt_.find(key);
    if (found == lt_.end())
      found = lt_.emplace(key, std::make_unique<LtGemm>(
                                   false, split_k, side ? side_workspace_ : workspace_, kWorkspace))
                  .first;
    return *found->second;
  }

  bool gemm(bool lt, bool split_k, bool side, const Gemm& g, const float* A, const float* B,
            float* C, const LtEpilogue& e) {
    cudaStream_t stream = side ? side_ : stream_;
    if (lt) return lt_for(split_k, side).run(g, A, B, C, e, stream);
    return cublas_gemm(side ? side_cublas_ : cublas_, g, A, B, C);
  }

  cudaStream_t stream_ = nullptr, side_ = nullptr;
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  void *workspace_ = nullptr, *side_workspace_ = nullptr;
  float* scratch_ = nullptr;
  // The small routes' split-K scratch (on stream_ only): K split as the backend splits it.
  SmallGemmSplitScratch small_split_;
  // The persistent route's steps (without and with the masks) and its grid barrier.
  cuda::SmallGemmStep* chain_steps_[2] = {nullptr, nullptr};
  int chain_count_ = 0;
  unsigned* chain_barrier_ = nullptr;
  cublasHandle_t cublas_ = nullptr, side_cublas_ = nullptr;
  std::map<int, std::unique_ptr<LtGemm>> lt_;
  std::vector<Stack> stacks_;
};

double nmse(const std::vector<float>& ref, const std::vector<float>& got) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err += (double(ref[i]) - got[i]) * (double(ref[i]) - got[i]);
    norm += double(ref[i]) * ref[i];
  }
  return norm == 0 ? err : err / norm;
}

// Captures `issue` into a graph and times kReplays replays per iteration with events; false
// (the benchmark skipped with the reason) when the capture failed.
template <class F>
bool time_graph(benchmark::State& state, cudaStream_t stream, F&& issue) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool ok = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  std::string failed, thrown;
  bool issued = false;
  try {  // a throw must still end the capture: left open, it fails every later benchmark
    issued = ok && issue(failed);
  } catch (const std::exception& e) {
    thrown = e.what();
  }
  ok = cudaStreamEndCapture(stream, &graph) == cudaSuccess && issued &&
       cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  size_t nodes = 0;
  if (graph) cudaGraphGetNodes(graph, nullptr, &nodes);
  if (!ok) {
    const std::string why =
        !thrown.empty()  ? thrown
        : failed.empty() ? std::string("capture failed: ") + cudaGetErrorString(cudaGetLastError())
                         : "cuBLASLt has no algorithm for " + failed;
    state.SkipWithError(why.c_str());
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();  // the failed capture's error, not the next benchmark's
    return false;
  }
  for (int r = 0; r < 10; ++r) cudaGraphLaunch(exec, stream);  // warm-up
  bench::time_with_events(state, stream, kReplays, [&] { cudaGraphLaunch(exec, stream); });
  state.counters["chain"] =
      benchmark::Counter(double(kReplays) * double(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["graph nodes"] = double(nodes);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return true;
}

// The forward of the three stacks: /0 RELU_BIAS (the engine's), /1 RELU_AUX_BIAS (writes the
// bit masks the fused backward needs), /2 RELU_BIAS without split-K, /3 the small GEMM with
// bias + ReLU, /4 the small GEMM writing the masks too, /5 and /6 the same as /3 and /4 in one
// persistent launch (cuda::small_gemm_chain). The small GEMM's outputs are checked against
// cuBLASLt's ("y NMSE").
EQUIVAE_GUARDED_BENCHMARK(BM_ForwardChain) {
  if (skip_without_gpu(state)) return;
  const int route = int(state.range(0));
  const bool aux = route == 1 || route == 4 || route == 6, split_k = route != 2, small = route >= 3,
             persistent = route >= 5;
  Chains chains;
  if (small) {
    if (!chains.forward(false, true)) {
      state.SkipWithError("cuBLASLt has no algorithm for the forward");
      return;
    }
    const std::vector<float> reference = chains.outputs();
    if (persistent) {
      chains.forward_persistent(aux);  // outside the capture: its steps go to the device
      cudaStreamSynchronize(chains.stream());
    } else {
      chains.forward(aux, true, true);
    }
    const double e = nmse(reference, chains.outputs());
    state.counters["y NMSE"] = e;
    if (!(e < 1e-4)) {
      state.SkipWithError(("the small GEMM's outputs differ: NMSE " + std::to_string(e)).c_str());
      return;
    }
  }
  time_graph(state, chains.stream(), [&](std::string& failed) {
    if (persistent) {
      chains.forward_persistent(aux);
      return true;
    }
    if (chains.forward(aux, split_k, small)) return true;
    failed = aux ? "RELU_AUX_BIAS forward" : "the forward";
    return false;
  });
  static const char* const kNames[] = {"RELU_BIAS",
                                       "RELU_AUX_BIAS",
                                       "RELU_BIAS, no split-K",
                                       "small GEMM (split K), bias + ReLU",
                                       "small GEMM (split K), bias + ReLU + mask",
                                       "persistent chain of split small GEMMs, bias + ReLU",
                                       "persistent chain of split small GEMMs, bias + ReLU + mask"};
  state.SetLabel(kNames[route]);
}
BENCHMARK(BM_ForwardChain)->DenseRange(0, 6)->Unit(benchmark::kMicrosecond)->UseManualTime();

// The backward of the three stacks (dy of each stack's top layer given): /0 cuBLAS, the mask
// kernel, the bias gradient and dW on the side stream (the engine's), /1 the same in
// cuBLASLt, /2 cuBLASLt with the mask and bias gradient fused into the input-gradient GEMM
// (DRELU_BGRAD), /3 as /2 with no split-K. Checked against /0 on the same inputs
// ("grad NMSE").
EQUIVAE_GUARDED_BENCHMARK(BM_BackwardChain) {
  if (skip_without_gpu(state)) return;
  const auto route = Chains::Route(state.range(0));
  Chains chains;
  if (!chains.forward(/*aux=*/true, /*split_k=*/true)) {
    state.SkipWithError("cuBLASLt has no algorithm for the RELU_AUX_BIAS forward");
    return;
  }
  std::string failed;
  const bool reference_ok = chains.backward(Chains::Route::cublas, failed);
  const std::vector<float> reference = chains.gradients();
  if (!reference_ok || !chains.backward(route, failed)) {
    const std::string why = failed.empty() ? std::string("the cuBLAS route failed")
                                           : "cuBLASLt has no algorithm for " + failed;
    state.SkipWithError(why.c_str());
    return;
  }
  const double e = nmse(reference, chains.gradients());
  if (!(e < 1e-4)) {  // NaN fails too
    const std::string why =
        "the route's gradients differ from the engine's: NMSE " + std::to_string(e);
    state.SkipWithError(why.c_str());
    return;
  }
  time_graph(state, chains.stream(), [&](std::string& why) { return chains.backward(route, why); });
  state.counters["grad NMSE"] = e;
  static const char* const kNames[] = {"cuBLAS + mask kernel", "cuBLASLt + mask kernel",
                                       "cuBLASLt DRELU_BGRAD", "cuBLASLt DRELU_BGRAD, no split-K",
                                       "small GEMM (split K) dX + mask kernel, cuBLAS dW"};
  state.SetLabel(kNames[state.range(0)]);
}
BENCHMARK(BM_BackwardChain)->DenseRange(0, 4)->Unit(benchmark::kMicrosecond)->UseManualTime();

// One GEMM of the step (B = 160), kReplays times in a row in one graph: /route 0 cuBLAS, 1
// cuBLASLt (the heuristic's first algorithm; bias epilogue on the forward shapes), 2 the small
// GEMM walking all of K in a block, 3 the small GEMM with K split as the backend runs it (bias
// tail on the forward shapes), 4 the same kReplays split small GEMMs as one persistent chain
// (cuda::small_gemm_chain: one cooperative launch, a grid barrier between GEMMs, as many blocks
// as the GPU holds), 5 that chain on one block per SM. "GEMM" is the time per GEMM: 4 against 3
// is what a grid barrier saves over a kernel boundary, the question a whole step in one
// persistent kernel stands on.
struct GemmShape {
  const char* name;
  int N, K;
  bool trans_b;  // false: the forward's x·W (bias added); true: an input gradient dy·Wᵀ
};
const GemmShape kGemmShapes[] = {
    {"forward 784->512", 512, 784, false}, {"forward 512->512", 512, 512, false},
    {"forward 512->32", 32, 512, false},   {"forward 16->512", 512, 16, false},
    {"forward 512->784", 784, 512, false}, {"dX 512->512", 512, 512, true},
    {"dX 784->512", 512, 784, true},       {"dX 32->512", 512, 32, true},
};
EQUIVAE_GUARDED_BENCHMARK(BM_GemmShape) {
  if (skip_without_gpu(state)) return;
  const int route = int(state.range(0));
  const GemmShape& s = kGemmShapes[state.range(1)];
  const int M = kBatch, rows_b = s.trans_b ? s.N : s.K, ld_b = s.trans_b ? s.K : s.N;
  float *A = device_floats(size_t(M) * s.K, 1, 1.f),
        *B = device_floats(size_t(rows_b) * ld_b, 2, 0.05f),
        *C = device_floats(size_t(M) * s.N, 3, 1.f), *bias = device_floats(size_t(s.N), 4, 0.1f);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  constexpr size_t kWorkspaceBytes = size_t(32) << 20;
  void* workspace = nullptr;
  cudaMalloc(&workspace, kWorkspaceBytes);
  cublasHandle_t cublas = tf32_cublas(stream, workspace, kWorkspaceBytes);
  LtGemm lt(false, true, workspace, kWorkspaceBytes);
  const SmallGemmSplitScratch split_scratch;
  const cuda::SmallGemmSplit split = route >= 3 ? split_scratch.split() : cuda::SmallGemmSplit{};
  // The persistent routes: kReplays copies of the step on the device, the barrier's counters.
  cuda::SmallGemmStep* steps = nullptr;
  unsigned* barrier = nullptr;
  int chain_blocks = 0;
  if (route >= 4) {
    cuda::SmallGemmStep step;
    step.A = A, step.B = B, step.C = C;
    step.M = M, step.N = s.N, step.K = s.K, step.lda = s.K, step.ldb = ld_b, step.ldc = s.N;
    step.tail = {!s.trans_b ? cuda::GemmTail::bias : cuda::GemmTail::none, bias};
    step.splits = cuda::small_gemm_splits(M, s.N, s.K, split);
    const std::vector<cuda::SmallGemmStep> host(kReplays, step);
    cudaMalloc(&steps, sizeof(step) * host.size());
    cudaMemcpy(steps, host.data(), sizeof(step) * host.size(), cudaMemcpyHostToDevice);
    cudaMalloc(&barrier, 2 * sizeof(unsigned));
    cudaMemset(barrier, 0, 2 * sizeof(unsigned));
    int device = 0, sms = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    chain_blocks = route == 4 ? cuda::small_gemm_chain_blocks() : sms;
  }
  const Gemm g{false, s.trans_b, M, s.N, s.K, s.K, ld_b, s.N, 0.0};
  const bool forward = !s.trans_b;
  const bool timed = time_graph(state, stream, [&](std::string& failed) {
    if (route >= 4) {  // kReplays GEMMs in one launch
      cuda::small_gemm_chain(steps, kReplays, s.trans_b, split, {barrier, barrier + 1},
                             chain_blocks, stream);
      return true;
    }
    for (int r = 0; r < kReplays; ++r) {  // kReplays GEMMs in a row in one graph
      bool ok = true;
      if (route >= 2)
        cuda::small_gemm_tf32(A, B, C, M, s.N, s.K, s.K, ld_b, s.N, s.trans_b, 0.0f,
                              {forward ? cuda::GemmTail::bias : cuda::GemmTail::none, bias}, stream,
                              split);
      else if (route == 1)
        ok = lt.run(g, A, B, C, forward ? LtEpilogue{GemmEpilogue::bias, bias} : LtEpilogue{},
                    stream);
      else
        ok = cublas_gemm(cublas, g, A, B, C);
      if (!ok) {
        if (route == 1) failed = s.name;  // time_graph: "cuBLASLt has no algorithm for ..."
        return false;
      }
    }
    return true;
  });
  if (timed) {  // per GEMM: each iteration replays the graph of kReplays GEMMs kReplays times
    const double gemms = double(kReplays) * kReplays * double(state.iterations());
    state.counters["GEMM"] =
        benchmark::Counter(gemms, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["FLOP/s"] =
        benchmark::Counter(2.0 * M * s.N * s.K * gemms, benchmark::Counter::kIsRate);
  }
  static const char* const kRoutes[] = {"cuBLAS",
                                        "cuBLASLt",
                                        "small GEMM",
                                        "small GEMM, split K",
                                        "persistent chain of split small GEMMs",
                                        "persistent chain, one block per SM"};
  state.SetLabel(
      std::string(kRoutes[route]) + " " + s.name +
      (route >= 3 ? " (" + std::to_string(cuda::small_gemm_splits(M, s.N, s.K, split)) + " splits" +
                        (route >= 4 ? ", " + std::to_string(chain_blocks) + " blocks" : "") + ")"
                  : ""));
  cublasDestroy(cublas);
  cudaStreamSynchronize(stream);
  for (void* p : {static_cast<void*>(A), static_cast<void*>(B), static_cast<void*>(C),
                  static_cast<void*>(bias), workspace, static_cast<void*>(steps),
                  static_cast<void*>(barrier)})
    cudaFree(p);
  cudaStreamDestroy(stream);
}
BENCHMARK(BM_GemmShape)
    ->ArgNames({"route", "shape"})
    ->ArgsProduct({{0, 1, 2, 3, 4, 5}, benchmark::CreateDenseRange(0, 7, 1)})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime();

#else

void BM_BackwardChain(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  state.SkipWithError("a build without cuBLAS");
}
BENCHMARK(BM_BackwardChain);

#endif

}  // namespace
