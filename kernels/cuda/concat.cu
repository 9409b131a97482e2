// Column concat [a ; b] and its backward split.
//
// Launch geometry: one thread per element of the concatenated matrix [B, na+nb], 256 threads
// per block, 1-D grid-stride. Reads and writes of the wide side are coalesced; each row of
// the narrow inputs is a contiguous run inside a warp's span. Backward reads dout once and
// writes (or adds into) da or db; a null pointer skips that part.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.h"

namespace equivae::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_concat_forward(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b,
                          int B, int na, int nb) {
  const int n = na + nb, total = B * n;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int row = i / n, c = i - row * n;
    out[i] = c < na ? a[size_t(row) * na + c] : b[size_t(row) * nb + (c - na)];
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kernel_concat_backward(T* __restrict__ da, T* __restrict__ db, const T* __restrict__ dout,
                           int B, int na, int nb, bool accumulate_a, bool accumulate_b) {
  const int n = na + nb, total = B * n;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int row = i / n, c = i - row * n;
    const T g = dout[i];
    if (c < na) {
      if (da) {
        T* p = da + size_t(row) * na + c;
        *p = accumulate_a ? *p + g : g;
      }
    } else if (db) {
      T* p = db + size_t(row) * nb + (c - na);
      *p = accumulate_b ? *p + g : g;
    }
  }
}

}  // namespace

template <class T>
void concat_forward(T* out, const T* a, const T* b, int B, int na, int nb, cudaStream_t stream) {
  const size_t total = size_t(B) * (na + nb);
  if (total == 0) return;
  EQUIVAE_LAUNCH(kernel_concat_forward<T>, blocks_for(total, kThreads), kThreads, 0, stream, out, a,
                 b, B, na, nb);
}

template <class T>
void concat_backward(T* da, T* db, const T* dout, int B, int na, int nb, bool accumulate_a,
                     bool accumulate_b, cudaStream_t stream) {
  const size_t total = size_t(B) * (na + nb);
  if (total == 0 || (!da && !db)) return;
  EQUIVAE_LAUNCH(kernel_concat_backward<T>, blocks_for(total, kThreads), kThreads, 0, stream, da,
                 db, dout, B, na, nb, accumulate_a, accumulate_b);
}

#define INSTANTIATE(T)                                                                  \
  template void concat_forward<T>(T*, const T*, const T*, int, int, int, cudaStream_t); \
  template void concat_backward<T>(T*, T*, const T*, int, int, int, bool, bool, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cuda
