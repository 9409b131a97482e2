// Google Benchmark suite: every CPU op at the shapes of the supervised MNIST step
// (B = 160, H = 512, d = 16), float; the convolutions and the Gaussian likelihood at the SVHN
// shapes (B = 160, 32×32×3 images, k = 4, s = 2, p = 1); each dense layer and convolution on
// each of its routes (OpenBLAS or oneDNN; im2col or oneDNN); and OpenBLAS's sgemm alone, the rate
// a step's FLOP floor is computed at. Counters: FLOP/s for GEMM work, bytes/s for the
// bandwidth-bound ops, so each can be held against the machine's peaks.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <array>
#include <initializer_list>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/philox.h"

namespace {

using namespace equivae;
constexpr int kB = 160, kD = 784, kH = 512, kLatent = 16;

std::vector<float> random_vector(size_t n, float lo, float hi, uint64_t stream) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * philox_uniform<float>(1, stream, 0, i);
  return v;
}

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["FLOP/s"] =
      benchmark::Counter(flops_per_iteration * state.iterations(), benchmark::Counter::kIsRate);
}
void set_bytes(benchmark::State& state, double bytes_per_iteration) {
  state.SetBytesProcessed(int64_t(bytes_per_iteration * state.iterations()));
}

// Sets the GEMM route of the argument (kernels/cpu/ops.h: GemmRoute); false when the build
// lacks it.
bool set_gemm_route(benchmark::State& state, int64_t route) {
  if (cpu::GemmRoute(route) == cpu::GemmRoute::onednn && !cpu::onednn_built()) {
    state.SkipWithError("built without oneDNN");
    return false;
  }
  cpu::set_gemm_route(cpu::GemmRoute(route));
  return true;
}
// Each dense shape on the two GEMM routes (OpenBLAS, oneDNN).
void dense_layers(benchmark::internal::Benchmark* b,
                  std::initializer_list<std::array<int, 2>> layers) {
  b->ArgNames({"in", "out", "route"});
  for (const auto& [in, out] : layers)
    for (auto route : {cpu::GemmRoute::openblas, cpu::GemmRoute::onednn})
      b->Args({in, out, int64_t(route)});
}

// Args: in, out, GEMM route
void BM_DenseForward(benchmark::State& state) {
  const int in = int(state.range(0)), out = int(state.range(1));
  if (!set_gemm_route(state, state.range(2))) return;
  auto x = random_vector(size_t(kB) * in, 0, 1, 1),
       W = random_vector(size_t(in) * out, -.05f, .05f, 2), b = random_vector(out, -.05f, .05f, 3),
       y = std::vector<float>(size_t(kB) * out);
  for (auto _ : state) {
    cpu::dense_forward(y.data(), x.data(), W.data(), b.data(), kB, in, out, true);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, 2.0 * kB * in * out);
  cpu::set_gemm_route(cpu::GemmRoute::automatic);
}
BENCHMARK(BM_DenseForward)->Apply([](auto* b) {
  dense_layers(b, {{kD, kH}, {kH, kH}, {kH, kD}, {kD + kLatent, kH}});
});

void BM_DenseBackward(benchmark::State& state) {
  const int in = int(state.range(0)), out = int(state.range(1));
  if (!set_gemm_route(state, state.range(2))) return;
  auto x = random_vector(size_t(kB) * in, 0, 1, 1),
       W = random_vector(size_t(in) * out, -.05f, .05f, 2),
       y = random_vector(size_t(kB) * out, 0, 1, 3), dy = random_vector(size_t(kB) * out, -1, 1, 4);
  std::vector<float> dx(size_t(kB) * in), dW(W.size()), db(out);
  for (auto _ : state) {
    cpu::dense_backward(dx.data(), dW.data(), db.data(), dy.data(), x.data(), W.data(), y.data(),
                        kB, in, out, true);
    benchmark::DoNotOptimize(dW.data());
  }
  set_flops(state, 4.0 * kB * in * out);  // dW and dx GEMMs
  cpu::set_gemm_route(cpu::GemmRoute::automatic);
}
BENCHMARK(BM_DenseBackward)->Apply([](auto* b) { dense_layers(b, {{kH, kH}, {kH, kD}}); });

void BM_Pooling(benchmark::State& state) {
  // Class segments of 16, each row pooling 7 others: the step's worst case.
  std::vector<int32_t> offsets{0}, members;
  for (int i = 0; i < kB; ++i) {
    for (int o = 1; o <= 7; ++o) members.push_back(i / 16 * 16 + (i % 16 + o) % 16);
    offsets.push_back(int32_t(members.size()));
  }
  auto e = random_vector(size_t(kB) * kLatent, -1, 1, 1);
  std::vector<float> r(e.size()), de(e.size());
  for (auto _ : state) {
    cpu::pool_forward(r.data(), e.data(), offsets.data(), members.data(), kB, kLatent);
    cpu::pool_backward(de.data(), r.data(), offsets.data(), members.data(), kB, kB, kLatent);
    benchmark::DoNotOptimize(de.data());
  }
  set_bytes(state, 2.0 * 8 * kB * kLatent * sizeof(float));
}
BENCHMARK(BM_Pooling);

void BM_SampleKl(benchmark::State& state) {
  auto mulv = random_vector(size_t(kB) * 2 * kLatent, -1, 1, 1);
  std::vector<float> v(size_t(kB) * kLatent), eps(v.size()), kl(kB), dv(v.size(), 0.1f),
      dkl(kB, 0.01f), dmulv(mulv.size());
  uint64_t step = 0;
  for (auto _ : state) {
    cpu::sample_kl_forward(v.data(), eps.data(), kl.data(), mulv.data(), kB, kLatent, 1, ++step, 0);
    cpu::sample_kl_backward(dmulv.data(), dv.data(), dkl.data(), mulv.data(), eps.data(), kB,
                            kLatent);
    benchmark::DoNotOptimize(dmulv.data());
  }
  set_bytes(state, 9.0 * kB * kLatent * sizeof(float));
}
BENCHMARK(BM_SampleKl);

void BM_BernoulliForwardBackward(benchmark::State& state) {
  auto logits = random_vector(size_t(kB) * kD, -5, 5, 1),
       x = random_vector(size_t(kB) * kD, 0, 1, 2);
  std::vector<float> ll(kB), dll(kB, -1.f / kB), dlogits(logits.size());
  for (auto _ : state) {
    cpu::bernoulli_ll_forward(ll.data(), logits.data(), x.data(), kB, kD);
    cpu::bernoulli_ll_backward(dlogits.data(), dll.data(), logits.data(), x.data(), kB, kD);
    benchmark::DoNotOptimize(dlogits.data());
  }
  set_bytes(state, 5.0 * kB * kD * sizeof(float));
}
BENCHMARK(BM_BernoulliForwardBackward);

void BM_SoftmaxXent(benchmark::State& state) {
  const int C = 10;
  auto logits = random_vector(size_t(kB) * C, -3, 3, 1);
  std::vector<int32_t> labels(kB);
  for (int i = 0; i < kB; ++i) labels[i] = i % C;
  std::vector<float> loss(kB), probs(logits.size()), dloss(kB, 1.f), dlogits(logits.size());
  for (auto _ : state) {
    cpu::softmax_xent_forward(loss.data(), probs.data(), logits.data(), labels.data(), kB, C);
    cpu::softmax_xent_backward(dlogits.data(), dloss.data(), probs.data(), labels.data(), kB, C);
    benchmark::DoNotOptimize(dlogits.data());
  }
  set_bytes(state, 4.0 * kB * C * sizeof(float));
}
BENCHMARK(BM_SoftmaxXent);

void BM_Adam(benchmark::State& state) {
  const size_t n = size_t(state.range(0));
  auto p = random_vector(n, -1, 1, 1), g = random_vector(n, -1, 1, 2);
  std::vector<float> m(n), v(n);
  cpu::AdamConfig config;
  int64_t t = 0;
  for (auto _ : state) {
    cpu::adam_step(p.data(), m.data(), v.data(), g.data(), n, config, ++t);
    benchmark::DoNotOptimize(p.data());
  }
  set_bytes(state, 7.0 * n * sizeof(float));  // read p, g, m, v; write p, m, v
}
BENCHMARK(BM_Adam)->Arg(2'000'000);

// ---- SVHN convolutions: encoder 3 → 32 → 64 → 128 channels at 32 → 16 → 8 → 4 pixels, the
// decoder's transposes back. Args: C_in, C_out, input side (square). FLOPs count the GEMM
// work of the op (forward: 2·N·C_out·Ho·Wo·C_in·k², or the transpose's mirror; backward:
// dW and dx, twice that). Then the route (0: automatic, 1: im2col, 2: oneDNN; see
// cpu::ConvRoute) and, for the backward, whether dx is wanted (SVHN's first conv needs none).
cpu::Conv2dShape svhn_shape(const benchmark::State& state) {
  const int C_in = int(state.range(0)), C_out = int(state.range(1)), side = int(state.range(2));
  return {kB, C_in, side, side, C_out, 4, 4, 2, 1, 0};
}
double conv_flops(const cpu::Conv2dShape& s, bool transposed) {
  // The product of the two sides' pixels per image and channel pairs is the same either way:
  // conv: outputs (Ho·Wo) × C_in·k²; transpose: inputs (H·W) × C_out·k².
  const double pixels = transposed ? double(s.H) * s.W
                                   : double(cpu::conv2d_out_size(s.H, s.KH, s.stride, s.pad)) *
                                         cpu::conv2d_out_size(s.W, s.KW, s.stride, s.pad);
  return 2.0 * s.N * pixels * s.C_in * s.C_out * s.KH * s.KW;
}
size_t out_elems(const cpu::Conv2dShape& s, bool transposed) {
  const int Ho = transposed ? cpu::conv_transpose2d_out_size(s.H, s.KH, s.stride, s.pad, 0)
                            : cpu::conv2d_out_size(s.H, s.KH, s.stride, s.pad);
  return size_t(s.N) * s.C_out * Ho * Ho;
}

template <bool kTransposed, bool kBackward>
void BM_Conv(benchmark::State& state) {
  const cpu::Conv2dShape s = svhn_shape(state);
  const auto route = cpu::ConvRoute(state.range(3));
  if (route == cpu::ConvRoute::onednn && !cpu::onednn_built())
    return state.SkipWithError("built without oneDNN");
  cpu::set_conv_route(route);
  const bool want_dx = state.range(4) != 0;
  const size_t nx = size_t(s.N) * s.C_in * s.H * s.W, ny = out_elems(s, kTransposed),
               nw = size_t(s.C_in) * s.C_out * s.KH * s.KW;
  auto x = random_vector(nx, 0, 1, 1), W = random_vector(nw, -.05f, .05f, 2),
       b = random_vector(s.C_out, -.05f, .05f, 3), dy = random_vector(ny, -1, 1, 4);
  std::vector<float> y(ny), dx(nx), dW(nw), db(s.C_out),
      ws(kTransposed ? cpu::conv_transpose2d_workspace_size(s) : cpu::conv2d_workspace_size(s));
  if constexpr (kTransposed)
    cpu::conv_transpose2d_forward(y.data(), x.data(), W.data(), b.data(), s, true, ws.data());
  else
    cpu::conv2d_forward(y.data(), x.data(), W.data(), b.data(), s, true, ws.data());
  for (auto _ : state) {
    if constexpr (kBackward && kTransposed)
      cpu::conv_transpose2d_backward(want_dx ? dx.data() : nullptr, dW.data(), db.data(), dy.data(),
                                     x.data(), W.data(), y.data(), s, true, ws.data());
    else if constexpr (kBackward)
      cpu::conv2d_backward(want_dx ? dx.data() : nullptr, dW.data(), db.data(), dy.data(), x.data(),
                           W.data(), y.data(), s, true, ws.data());
    else if constexpr (kTransposed)
      cpu::conv_transpose2d_forward(y.data(), x.data(), W.data(), b.data(), s, true, ws.data());
    else
      cpu::conv2d_forward(y.data(), x.data(), W.data(), b.data(), s, true, ws.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dW.data());
  }
  set_flops(state, (kBackward ? (want_dx ? 2.0 : 1.0) : 1.0) * conv_flops(s, kTransposed));
  cpu::set_conv_route(cpu::ConvRoute::automatic);
}
// Every SVHN layer on every route; for the backward of the first conv also without dx.
void conv_layers(benchmark::internal::Benchmark* b,
                 std::initializer_list<std::array<int, 3>> layers, bool first_without_dx) {
  b->ArgNames({"C_in", "C_out", "side", "route", "dx"});
  for (const auto& [C_in, C_out, side] : layers)
    for (int route = 0; route < 3; ++route) {
      b->Args({C_in, C_out, side, route, 1});
      if (first_without_dx && C_in == 3) b->Args({C_in, C_out, side, route, 0});
    }
}
void BM_Conv2dForward(benchmark::State& state) {
  BM_Conv<false, false>(state);
}
void BM_Conv2dBackward(benchmark::State& state) {
  BM_Conv<false, true>(state);
}
void BM_ConvTranspose2dForward(benchmark::State& state) {
  BM_Conv<true, false>(state);
}
void BM_ConvTranspose2dBackward(benchmark::State& state) {
  BM_Conv<true, true>(state);
}
BENCHMARK(BM_Conv2dForward)->Apply([](auto* b) {
  conv_layers(b, {{3, 32, 32}, {32, 64, 16}, {64, 128, 8}}, false);
});
BENCHMARK(BM_Conv2dBackward)->Apply([](auto* b) {
  conv_layers(b, {{3, 32, 32}, {32, 64, 16}, {64, 128, 8}}, true);
});
BENCHMARK(BM_ConvTranspose2dForward)->Apply([](auto* b) {
  conv_layers(b, {{128, 64, 4}, {64, 32, 8}, {32, 3, 16}}, false);
});
BENCHMARK(BM_ConvTranspose2dBackward)->Apply([](auto* b) {
  conv_layers(b, {{128, 64, 4}, {64, 32, 8}, {32, 3, 16}}, false);
});

// OpenBLAS's sgemm alone, C[M, N] = A[M, K] · B[K, N]. Args: M, N, K. 64 × 256 × 512 is one
// chunk's GEMM of the 32→64 conv (kernels/cpu/conv.cpp); 2048³ is the square peak.
void BM_Sgemm(benchmark::State& state) {
  const int M = int(state.range(0)), N = int(state.range(1)), K = int(state.range(2));
  auto A = random_vector(size_t(M) * K, -1, 1, 1), B = random_vector(size_t(K) * N, -1, 1, 2);
  std::vector<float> C(size_t(M) * N);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A.data(), K, B.data(), N,
                0.0f, C.data(), N);
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(state, 2.0 * M * N * K);
}
BENCHMARK(BM_Sgemm)->Args({64, 256, 512})->Args({2048, 2048, 2048});

void BM_GaussianForwardBackward(benchmark::State& state) {
  const int C = int(state.range(0)), P = 32 * 32 * 3 / C;  // C = 3: per channel; 1: global
  auto mu = random_vector(size_t(kB) * C * P, 0, 1, 1), x = random_vector(mu.size(), 0, 1, 2),
       logvar = random_vector(C, -2, -1, 3);
  std::vector<float> ll(kB), dll(kB, -1.f / kB), dmu(mu.size()), dlogvar(C);
  for (auto _ : state) {
    cpu::gaussian_ll_forward(ll.data(), mu.data(), x.data(), logvar.data(), kB, C, P);
    cpu::gaussian_ll_backward(dmu.data(), dlogvar.data(), dll.data(), mu.data(), x.data(),
                              logvar.data(), kB, C, P);
    benchmark::DoNotOptimize(dmu.data());
  }
  set_bytes(state, 5.0 * mu.size() * sizeof(float));  // read μ, x twice; write dμ
}
BENCHMARK(BM_GaussianForwardBackward)->Arg(3)->Arg(1);

}  // namespace
