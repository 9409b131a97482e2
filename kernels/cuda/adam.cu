// Adam over the one flat parameter buffer: a single fused pass reads p, m, v, g and writes
// p, m, v (16 bytes read + 12 written per float parameter: bandwidth-bound by design).
//
// Launch geometry: 256 threads per block, at most 1024 blocks (≈ the resident capacity of an
// H100's 132 SMs), 1-D grid-stride. Each thread first derives the bias corrections from t in
// double — exactly the CPU's step size and 1/√bc2, rounded to T — once, then streams its
// elements; capping the grid amortises that over ~8 elements per thread for the model's
// ~2 M parameters. With t read from device memory the same launch replays in a CUDA graph.
//
// Non-finite record (cpu::adam_step's non_finite_t): each thread notes whether a p or v it
// wrote is NaN or ±inf (m goes so only with one of them): two compares per element, in
// registers. A warp with such a thread stores t with one atomic from its first lane, only in
// the step that diverges. Every thread reads the record once, beside t; a later step's launch
// that finds it set returns at once, so only one step's updates ever store (all the same t).
#include <cmath>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/math.cuh"
#include "kernels/cuda/ops.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 1024;
// Float: at least 8 blocks per SM, i.e. at most 32 registers, as before the non-finite record
// (left to itself ptxas takes 39-40 for it, 6 blocks per SM: the 1,024-block grid would no
// longer be resident at once on an H100's 132 SMs; an A100's 108 hold 864 at 8, and the grid-
// stride loop covers the rest). Double, the tests' oracle: unbounded (32 would spill).
template <class T>
constexpr int kMinBlocksPerSm = sizeof(T) == sizeof(float) ? 8 : 1;

template <class T>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<T>)
    kernel_adam_step(T* __restrict__ params, T* __restrict__ m, T* __restrict__ v,
                     const T* __restrict__ grads, size_t n, double lr, double beta1, double beta2,
                     double eps, int64_t t, const int64_t* __restrict__ t_device,
                     int64_t* __restrict__ non_finite_t) {
  grid_dependency_prologue();
  if (t_device) t = *t_device;
  // An earlier step's update went non-finite: keep the state it left (the whole grid returns).
  if (non_finite_t && *non_finite_t != 0 && *non_finite_t < t) return;
  const double bc1 = 1.0 - pow(beta1, double(t));
  const double bc2 = 1.0 - pow(beta2, double(t));
  const T step_size = T(lr / bc1);
  const T inv_sqrt_bc2 = T(1.0 / sqrt(bc2));
  const T b1 = T(beta1), b2 = T(beta2), e = T(eps);
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  bool finite = true;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const T g = grads[i];
    const T mi = b1 * m[i] + (T(1) - b1) * g;
    const T vi = b2 * v[i] + (T(1) - b2) * g * g;
    const T pi = params[i] - step_size * mi / (math::sqrt_(vi) * inv_sqrt_bc2 + e);
    m[i] = mi;
    v[i] = vi;
    params[i] = pi;
    finite &= math::finite_(pi) & math::finite_(vi);
  }
  // Every lane of the warp votes (none returned above unless the whole grid did). t ≥ 1, so
  // the unsigned maximum is the signed one (CUDA's 64-bit atomics take unsigned long long).
  if (non_finite_t && __any_sync(0xffffffffu, !finite) && threadIdx.x % 32 == 0)
    atomicMax(reinterpret_cast<unsigned long long*>(non_finite_t), (unsigned long long)t);
}

template <class T>
void enqueue(T* params, T* m, T* v, const T* grads, size_t n, const cpu::AdamConfig& c, int64_t t,
             const int64_t* t_device, int64_t* non_finite_t, cudaStream_t stream) {
  if (n == 0) return;
  EQUIVAE_LAUNCH(kernel_adam_step<T>, blocks_for(n, kThreads, kMaxBlocks), kThreads, 0, stream,
                 params, m, v, grads, n, c.lr, c.beta1, c.beta2, c.eps, t, t_device, non_finite_t);
}

}  // namespace

template <class T>
void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const cpu::AdamConfig& config,
               int64_t t, int64_t* non_finite_t, cudaStream_t stream) {
  enqueue(params, m, v, grads, n, config, t, nullptr, non_finite_t, stream);
}

template <class T>
void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const cpu::AdamConfig& config,
               const int64_t* t_device, int64_t* non_finite_t, cudaStream_t stream) {
  enqueue(params, m, v, grads, n, config, 1, t_device, non_finite_t, stream);
}

#define INSTANTIATE(T)                                                                             \
  template void adam_step<T>(T*, T*, T*, const T*, size_t, const cpu::AdamConfig&, int64_t,        \
                             int64_t*, cudaStream_t);                                              \
  template void adam_step<T>(T*, T*, T*, const T*, size_t, const cpu::AdamConfig&, const int64_t*, \
                             int64_t*, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
