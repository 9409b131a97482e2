// Adam over the one flat parameter buffer: a single fused pass reads p, m, v, g and writes
// p, m, v (16 bytes read + 12 written per float parameter: bandwidth-bound by design).
//
// Launch geometry: 256 threads per block, at most 1024 blocks (≈ the resident capacity of an
// H100's 132 SMs), 1-D grid-stride. Each thread first derives the bias corrections from t in
// double — exactly the CPU's step size and 1/√bc2, rounded to T — once, then streams its
// elements; capping the grid amortises that over ~8 elements per thread for the model's
// ~2 M parameters. With t read from device memory the same launch replays in a CUDA graph.
#include <cmath>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/math.cuh"
#include "kernels/cuda/ops.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 1024;

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_adam_step(T* __restrict__ params, T* __restrict__ m, T* __restrict__ v,
                     const T* __restrict__ grads, size_t n, double lr, double beta1, double beta2,
                     double eps, int64_t t, const int64_t* __restrict__ t_device) {
  grid_dependency_prologue();
  if (t_device) t = *t_device;
  const double bc1 = 1.0 - pow(beta1, double(t));
  const double bc2 = 1.0 - pow(beta2, double(t));
  const T step_size = T(lr / bc1);
  const T inv_sqrt_bc2 = T(1.0 / sqrt(bc2));
  const T b1 = T(beta1), b2 = T(beta2), e = T(eps);
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const T g = grads[i];
    const T mi = b1 * m[i] + (T(1) - b1) * g;
    const T vi = b2 * v[i] + (T(1) - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] -= step_size * mi / (math::sqrt_(vi) * inv_sqrt_bc2 + e);
  }
}

template <class T>
void enqueue(T* params, T* m, T* v, const T* grads, size_t n, const cpu::AdamConfig& c, int64_t t,
             const int64_t* t_device, cudaStream_t stream) {
  if (n == 0) return;
  EQUIVAE_LAUNCH(kernel_adam_step<T>, blocks_for(n, kThreads, kMaxBlocks), kThreads, 0, stream,
                 params, m, v, grads, n, c.lr, c.beta1, c.beta2, c.eps, t, t_device);
}

}  // namespace

template <class T>
void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const cpu::AdamConfig& config,
               int64_t t, cudaStream_t stream) {
  enqueue(params, m, v, grads, n, config, t, nullptr, stream);
}

template <class T>
void adam_step(T* params, T* m, T* v, const T* grads, size_t n, const cpu::AdamConfig& config,
               const int64_t* t_device, cudaStream_t stream) {
  enqueue(params, m, v, grads, n, config, 1, t_device, stream);
}

#define INSTANTIATE(T)                                                                             \
  template void adam_step<T>(T*, T*, T*, const T*, size_t, const cpu::AdamConfig&, int64_t,        \
                             cudaStream_t);                                                        \
  template void adam_step<T>(T*, T*, T*, const T*, size_t, const cpu::AdamConfig&, const int64_t*, \
                             cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
